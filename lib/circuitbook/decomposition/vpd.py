"""VPD: adversarial parameter decomposition.

SPD ablates the unimportant subcomponents with *random* masks m = g + (1 − g) r. VPD asks for more:
the output must survive the *worst* r ∈ [0, 1]. Three pieces:

- `PersistentPGDRecon` (training): mask sources r [batch, C (+1 for Δ)] persist across training
  steps and are pushed uphill on the reconstruction loss by Adam (lr 0.01, betas 0.5/0.99) for a
  few ascent steps per training step, clamped to [0, 1]; the decomposition then trains against them.
  With `routing=True` each example masks a random subset of the matrices (subset routing).
- `FrequencyMinimality`: penalises subcomponents important on many inputs,
  Σ_c mean_x |g_c|^p · log2(1 + Σ_x |g_c|^p).
- `adversarial_attack` (evaluation): fresh sources shared by the whole batch, N sign-gradient steps
  of size 0.1; returns the divergence after 0, 1, …, N steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from circuitbook.decomposition.components import ComponentModel
from circuitbook.decomposition.losses import LossSettings, Minimality, OutputLoss, Step, recon_loss, stochastic_masks


def uniform_subset_routing(
    names: list[str], lead: tuple[int, ...], generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Per position, draw k ~ U{1..n_matrices} and route a random k-subset of matrices to their components.
    The draws come from `generator` where it lives, else from `device`'s default generator; the masks are on
    `device` (default: the CPU)."""
    n = len(names)
    where = generator.device if generator is not None else device
    k = torch.randint(1, n + 1, lead, generator=generator, device=where)  # [...]
    rank = torch.rand((*lead, n), generator=generator, device=where).argsort(-1).argsort(-1)  # [..., n] permutation
    chosen = rank < k.unsqueeze(-1)  # [..., n] bool
    if device is not None:
        chosen = chosen.to(device)
    return {name: chosen[..., i] for i, name in enumerate(names)}


def _masked_loss(
    model: ComponentModel,
    x: torch.Tensor,
    target_out: torch.Tensor,
    ci: dict[str, torch.Tensor],
    sources: dict[str, torch.Tensor],  # name -> [..., C (+1)], broadcastable to ci's leading shape
    deltas: dict[str, torch.Tensor] | None,
    routing: dict[str, torch.Tensor] | None,
    output_loss: OutputLoss,
) -> torch.Tensor:
    """Divergence with masks m = g + (1 − g) r from the given sources r."""
    masks, dmasks = {}, None if deltas is None else {}
    for n, g in ci.items():
        r = sources[n].expand(*g.shape[:-1], sources[n].shape[-1])
        masks[n] = g + (1 - g) * r[..., : g.shape[-1]]
        if dmasks is not None:
            dmasks[n] = r[..., -1]
    out = model(x, masks=masks, delta_masks=dmasks, routing=routing, deltas=deltas)
    return recon_loss(out, target_out, output_loss)


@dataclass
class PersistentPGDRecon:
    """Reconstruction under adversarial masks found by persistent PGD (Adam ascent on the sources)."""

    coeff: float = 1.0
    n_ascent: int = 2
    lr: float = 0.01
    betas: tuple[float, float] = (0.5, 0.99)
    routing: bool = True
    name: str = "pgd_recon"
    sources: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _opt: torch.optim.Optimizer | None = field(default=None, repr=False)

    def _init_sources(self, s: Step) -> None:
        extra = 0 if s.deltas is None else 1
        self.sources = {
            n: torch.rand(*g.shape[:-1], g.shape[-1] + extra, device=g.device).requires_grad_(True)
            for n, g in s.ci.lower.items()
        }
        self._opt = torch.optim.Adam(list(self.sources.values()), lr=self.lr, betas=self.betas, maximize=True)

    def __call__(self, s: Step) -> torch.Tensor:
        first = next(iter(s.ci.lower.values()))
        if not self.sources or next(iter(self.sources.values())).shape[:-1] != first.shape[:-1]:
            self._init_sources(s)
        lead = tuple(first.shape[:-1])
        routing = uniform_subset_routing(s.model.names, lead, device=first.device) if self.routing else None
        ci_fixed = {n: g.detach() for n, g in s.ci.lower.items()}
        deltas_fixed = None if s.deltas is None else {n: d.detach() for n, d in s.deltas.items()}
        for _ in range(self.n_ascent):  # the adversary moves; the decomposition is held fixed
            loss = _masked_loss(
                s.model, s.x, s.target_out, ci_fixed, self.sources, deltas_fixed, routing, s.output_loss
            )
            grads = torch.autograd.grad(loss, list(self.sources.values()))
            for src, gr in zip(self.sources.values(), grads):
                src.grad = gr
            self._opt.step()
            with torch.no_grad():
                for src in self.sources.values():
                    src.clamp_(0.0, 1.0)
        fixed = {n: r.detach() for n, r in self.sources.items()}
        return _masked_loss(s.model, s.x, s.target_out, s.ci.lower, fixed, s.deltas, routing, s.output_loss)


@dataclass
class FrequencyMinimality:
    """Σ_c mean_x |g_c|^p · log2(1 + Σ_x |g_c|^p), summed over matrices: costly for often-important c."""

    coeff: float = 1e-4
    p: float = 1.0
    eps: float = 1e-12
    name: str = "frequency_minimality"

    def __call__(self, s: Step) -> torch.Tensor:
        total = 0.0
        for g in s.ci.upper.values():
            a = ((g + self.eps) ** self.p).reshape(-1, g.shape[-1])  # [N, C]
            total = total + (a.mean(0) * torch.log2(1 + a.sum(0))).sum()
        return total


def adversarial_attack(
    model: ComponentModel,
    x: torch.Tensor,
    n_steps: int = 20,
    step_size: float = 0.1,
    output_loss: OutputLoss = "mse",
    use_delta: bool | None = None,
    seed: int = 0,
) -> list[float]:
    """Divergence after 0..n_steps sign-gradient ascent steps on fresh sources shared across the batch."""
    use_delta = model.use_delta if use_delta is None else use_delta
    gen = torch.Generator().manual_seed(seed)
    x = x.to(next(model.parameters()).device)
    with torch.no_grad():
        target_out, inputs = model.run_with_inputs(x)
        ci = model.causal_importances(inputs).lower
        deltas = model.weight_deltas() if use_delta else None
    extra = 1 if use_delta else 0
    dev = next(iter(ci.values())).device
    sources = {n: torch.rand(1, model.C[n] + extra, generator=gen).to(dev).requires_grad_(True) for n in model.names}
    history = []
    for t in range(n_steps + 1):
        with torch.enable_grad():
            loss = _masked_loss(model, x, target_out, ci, sources, deltas, None, output_loss)
        history.append(float(loss.detach()))
        if t == n_steps:
            break
        grads = torch.autograd.grad(loss, list(sources.values()))
        with torch.no_grad():
            for src, gr in zip(sources.values(), grads):
                src.add_(step_size * gr.sign()).clamp_(0.0, 1.0)
    return history


@torch.no_grad()
def random_mask_loss(
    model: ComponentModel, x: torch.Tensor, output_loss: OutputLoss = "mse", n_samples: int = 8, seed: int = 0
) -> float:
    """Mean divergence under SPD's random masks m = g + (1 − g) r (the baseline an attack should beat)."""
    gen = torch.Generator().manual_seed(seed)
    x = x.to(next(model.parameters()).device)
    target_out, inputs = model.run_with_inputs(x)
    ci = model.causal_importances(inputs).lower
    deltas = model.weight_deltas() if model.use_delta else None
    total = 0.0
    for _ in range(n_samples):
        masks, dmasks = stochastic_masks(ci, deltas, generator=gen)
        total += float(
            recon_loss(model(x, masks=masks, delta_masks=dmasks, deltas=deltas), target_out, output_loss)
        )
    return total / n_samples


@dataclass(frozen=True, kw_only=True)
class PGDSettings(LossSettings):
    """The settings of `PersistentPGDRecon` that a run records."""

    loss_type = PersistentPGDRecon
    coeff: float  # weight of the adversarial reconstruction loss
    n_ascent: int  # Adam ascent steps on the adversarial sources per training step
    routing: bool  # uniform subset routing: mask a random subset of matrices per example


@dataclass(frozen=True, kw_only=True)
class FrequencySettings(Minimality):
    """The settings of `FrequencyMinimality` (coeff, p) that a run records."""

    loss_type = FrequencyMinimality
