"""SPD's losses, each a small object with its own coefficient.

Every loss is called on a `Step` (what one training step knows) and returns an unweighted scalar;
`decompose` multiplies by `coeff` and sums. Output divergences are MSE for the toys and
KL(target ‖ masked) for language models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from circuitbook.decomposition.components import CausalImportances, ComponentModel

OutputLoss = Literal["mse", "kl"]


@dataclass
class Step:
    """Everything a loss may use at one training step."""

    model: ComponentModel
    x: torch.Tensor  # [batch, ...] inputs
    target_out: torch.Tensor  # [batch, ..., d] the target's output (detached)
    ci: CausalImportances
    deltas: dict[str, torch.Tensor] | None  # name -> W − U Vᵀ, when the Δ-component is used
    frac: float  # fraction of training done, in [0, 1]
    output_loss: OutputLoss = "mse"


def recon_loss(pred: torch.Tensor, target: torch.Tensor, kind: OutputLoss) -> torch.Tensor:
    """MSE over all entries, or KL(softmax(target) ‖ softmax(pred)) averaged over positions."""
    if kind == "mse":
        return F.mse_loss(pred, target)
    logp, logq = F.log_softmax(target, -1), F.log_softmax(pred, -1)
    return (logp.exp() * (logp - logq)).sum(-1).mean()


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U(0, 1) noise of `shape` on `device`: drawn from `generator` where it lives and then moved (a CPU generator
    gives the same numbers on every device), or, without one, from `device`'s default generator."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def stochastic_masks(
    ci: dict[str, torch.Tensor],
    deltas: dict[str, torch.Tensor] | None,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """m = g + (1 − g) r with r ~ U(0, 1): important subcomponents are kept, the rest randomly ablated.

    The Δ-component (if any) gets a uniform random mask of its own. Returns (masks, delta_masks).
    """
    masks = {}
    for n, g in ci.items():
        r = uniform(g.shape, generator, g.device)  # [..., C]
        masks[n] = g + (1 - g) * r
    delta_masks = None
    if deltas is not None:
        first = next(iter(ci.values()))
        delta_masks = {n: uniform(first.shape[:-1], generator, first.device) for n in ci}
    return masks, delta_masks


@dataclass
class Faithfulness:
    """Mean over all decomposed entries of (W − U Vᵀ)²."""

    coeff: float = 1.0
    name: str = "faithfulness"

    def __call__(self, s: Step) -> torch.Tensor:
        deltas = s.deltas if s.deltas is not None else s.model.weight_deltas()
        total = sum((d**2).sum() for d in deltas.values())
        return total / sum(d.numel() for d in deltas.values())


def _only(d: dict | None, names: list[str]) -> dict | None:
    return None if d is None else {n: d[n] for n in names}


def stochastic_recon(s: Step, n_samples: int = 1, layerwise: bool = False) -> torch.Tensor:
    """D(f(x | stochastically masked), f(x)) averaged over `n_samples` draws of the masks, with every matrix
    masked at once or, `layerwise`, one matrix at a time (the others keep their original weights)."""
    losses = []
    for _ in range(n_samples):
        masks, dmasks = stochastic_masks(s.ci.lower, s.deltas)
        for names in [[n] for n in masks] if layerwise else [list(masks)]:
            out = s.model(s.x, masks=_only(masks, names), delta_masks=_only(dmasks, names),
                          deltas=_only(s.deltas, names))
            losses.append(recon_loss(out, s.target_out, s.output_loss))
    return sum(losses) / len(losses)


@dataclass
class StochasticRecon:
    """D(f(x | all matrices stochastically masked), f(x))."""

    coeff: float = 1.0
    n_samples: int = 1
    name: str = "stochastic_recon"

    def __call__(self, s: Step) -> torch.Tensor:
        return stochastic_recon(s, self.n_samples)


@dataclass
class StochasticReconLayerwise(StochasticRecon):
    """The same with one matrix masked at a time (the others keep their original weights), averaged."""

    name: str = "stochastic_recon_layerwise"

    def __call__(self, s: Step) -> torch.Tensor:
        return stochastic_recon(s, self.n_samples, layerwise=True)


def annealed_p(frac: float, p: float, p_final: float | None, start: float, end: float) -> float:
    """Linear anneal of the exponent p from `p` to `p_final` between fractions `start` and `end`."""
    if p_final is None or frac <= start:
        return p
    if frac >= end:
        return p_final
    return p + (p_final - p) * (frac - start) / (end - start)


@dataclass
class ImportanceMinimality:
    """Σ_c mean_x |g_c(x)|^p summed over matrices (on the upper-leaky g), with p optionally annealed."""

    coeff: float = 1e-3
    p: float = 1.0
    p_final: float | None = None
    anneal_start: float = 0.0
    anneal_end: float = 1.0
    eps: float = 1e-12
    name: str = "importance_minimality"

    def current_p(self, frac: float) -> float:
        return annealed_p(frac, self.p, self.p_final, self.anneal_start, self.anneal_end)

    def __call__(self, s: Step) -> torch.Tensor:
        p = self.current_p(s.frac)
        total = 0.0
        for g in s.ci.upper.values():  # [..., C]
            total = total + ((g + self.eps) ** p).reshape(-1, g.shape[-1]).mean(0).sum()
        return total


@dataclass(frozen=True, kw_only=True)
class LossSettings:
    """The settings of a loss that a run records (`asdict`); `loss()` makes the loss object of `loss_type`."""

    loss_type: ClassVar[type]

    def loss(self):
        return self.loss_type(**asdict(self))


@dataclass(frozen=True, kw_only=True)
class Minimality(LossSettings):
    """The settings of `ImportanceMinimality` that a run records."""

    loss_type = ImportanceMinimality
    coeff: float  # weight of the loss
    p: float  # exponent of |g|^p

