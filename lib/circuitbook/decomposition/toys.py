"""The toy experiments' pieces: a toy target (TMS or the residual MLP) as a spec that builds, trains and
samples it, a decomposition config, and one call to decompose a toy.

The book's chosen toys and their settings per profile live in `circuitbook.zoo.decomposition`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from circuitbook.decomposition.decompose import DataFn, Decomposition, decompose
from circuitbook.decomposition.losses import Minimality, StochasticRecon, StochasticReconLayerwise
from circuitbook.decomposition.metrics import (
    activation_density,
    alive_count,
    identity_ci_error,
    module_mmcs_ml2r,
)
from circuitbook.decomposition.vpd import FrequencySettings, PGDSettings
from circuitbook.models.toys import TMS, ResidMLP, resid_mlp_features, sparse_features, train_resid_mlp, train_tms


@dataclass(frozen=True, kw_only=True)
class ToyTrain:
    """How a toy target is trained."""

    steps: int  # optimizer steps
    batch_size: int  # inputs per step
    lr: float  # learning rate


@dataclass(frozen=True, kw_only=True)
class TMSTarget:
    """A toy model of superposition: n_features sparse features (each on with probability 0.05) through
    n_hidden dimensions, x̂ = ReLU(Wᵀ W x + b)."""

    kind: ClassVar[str] = "tms"
    n_features: int  # input features
    n_hidden: int  # hidden dimensions
    identity: bool = False  # insert an n_hidden x n_hidden identity matrix ("hidden") between W and Wᵀ
    bias_init_zero: bool = False  # start the output bias at zero

    def data_fn(self) -> DataFn:
        return lambda b, g: sparse_features(b, self.n_features, 0.05, g)

    def build(self) -> TMS:
        return TMS(self.n_features, self.n_hidden, identity=self.identity)

    def train(self, run: ToyTrain, seed: int = 0, progress: bool = True,
              device: torch.device | str = "cpu") -> tuple[TMS, dict[str, Any]]:
        return train_tms(self.n_features, self.n_hidden, identity=self.identity, bias_init_zero=self.bias_init_zero,
                         seed=seed, progress=progress, device=device, **asdict(run))


@dataclass(frozen=True, kw_only=True)
class ResidMLPTarget:
    """The residual MLP: n_features features (each on with probability 0.01) in a d_embed-wide residual
    stream, one ReLU MLP of d_mlp neurons trained to add ReLU(x)."""

    kind: ClassVar[str] = "resid_mlp"
    n_features: int  # input features
    d_embed: int  # residual stream width (fixed random embedding)
    d_mlp: int  # MLP neurons

    def data_fn(self) -> DataFn:
        return lambda b, g: resid_mlp_features(b, self.n_features, 0.01, g)

    def build(self) -> ResidMLP:
        return ResidMLP(self.n_features, self.d_embed, self.d_mlp)

    def train(self, run: ToyTrain, seed: int = 0, progress: bool = True,
              device: torch.device | str = "cpu") -> tuple[ResidMLP, dict[str, Any]]:
        return train_resid_mlp(self.n_features, self.d_embed, self.d_mlp, seed=seed, progress=progress,
                               device=device, **asdict(run))


ToyTarget = TMSTarget | ResidMLPTarget


@dataclass(frozen=True, kw_only=True)
class VPDLosses:
    """The losses VPD adds to SPD's on a toy."""

    pgd: PGDSettings  # persistent-PGD adversarial reconstruction
    frequency: FrequencySettings | None = None  # frequency minimality (off in the book)


@dataclass(frozen=True, kw_only=True)
class ToyDecompConfig:
    """Every setting of a toy decomposition. Stochastic and layerwise reconstruction (coefficient 1), importance
    minimality, and for VPD the `vpd` losses; faithfulness warm-up 200 steps, Δ-component on, CI MLPs of 16."""

    C: dict[str, int]  # subcomponents per decomposed matrix
    tie: tuple[str, str] | None  # (a, b): b's subcomponents start as a's transpose (TMS: linear2 = linear1ᵀ)
    steps: int  # Adam steps
    batch_size: int  # inputs per step
    lr: float  # Adam learning rate
    lr_schedule: str  # "cosine" (to 0) or "constant"
    importance: Minimality  # importance minimality
    method: str = "spd"  # "spd" or "vpd"
    vpd: VPDLosses | None = None  # VPD's extra losses (method "vpd" only)

    def __post_init__(self) -> None:
        if (self.method == "vpd") != (self.vpd is not None):
            raise ValueError(f"method {self.method!r} with vpd={self.vpd}: VPD needs its losses, SPD has none")


def toy_losses(cfg: ToyDecompConfig) -> list:
    """The loss objects: SPD's (stochastic + layerwise + minimality); VPD adds adversarial recon."""
    losses: list = [StochasticRecon(1.0), StochasticReconLayerwise(1.0), cfg.importance.loss()]
    if cfg.vpd is not None:
        losses += [cfg.vpd.pgd.loss()] + ([cfg.vpd.frequency.loss()] if cfg.vpd.frequency else [])
    return losses


def toy_metrics(spec: ToyTarget, model, n: int = 10_000) -> dict[str, float]:
    """The toy's success metrics: MMCS/ML2R (TMS), alive counts, identity-insertion CI error."""
    out: dict[str, float] = {}
    alive = alive_count(activation_density(model, spec.data_fn(), n))
    out.update({f"alive/{k}": v for k, v in alive.items()})
    if isinstance(spec, TMSTarget):
        out["mmcs"], out["ml2r"] = module_mmcs_ml2r(model, "linear1", "in")
        out["mmcs/linear2"], out["ml2r/linear2"] = module_mmcs_ml2r(model, "linear2", "out")
        dense = {"hidden": spec.n_hidden} if spec.identity else {}
        errs = identity_ci_error(model, spec.n_features, ["linear1", "linear2"], dense)
        out.update({f"ci_error/{k}": v for k, v in errs.items()})
    else:  # residual MLP: one mlp_in subcomponent per feature; mlp_out used densely (not scored)
        out["ci_error/mlp_in"] = identity_ci_error(model, spec.n_features, ["mlp_in"], {})["mlp_in"]
    return out


def toy_inputs(spec: ToyTarget, n: int, seed: int = 123) -> torch.Tensor:
    """A fixed evaluation batch of `n` inputs of a toy."""
    return spec.data_fn()(n, torch.Generator().manual_seed(seed))


def decompose_toy(
    spec: ToyTarget,
    target: nn.Module,
    cfg: ToyDecompConfig,
    seed: int = 0,
    progress: bool = True,
    eval_every: int | None = None,
) -> Decomposition:
    """Run SPD (or VPD) with `cfg` on a trained toy `target` of `spec` (toy metrics every `eval_every` steps)."""
    return decompose(
        target,
        cfg.C,
        spec.data_fn(),
        toy_losses(cfg),
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_schedule=cfg.lr_schedule,
        tie=cfg.tie,
        seed=seed,
        eval_fn=(lambda m: toy_metrics(spec, m, 1024)) if eval_every else None,
        eval_every=eval_every,
        progress=progress,
    )
