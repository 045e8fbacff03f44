"""The chapter's toy experiments: settings per toy and profile, and one call to run each.

`TOY_CONFIGS[name]` holds the target model's training settings and the decomposition settings
for the `ci` and `full` profiles. The paper trains with batch 4096 for 10k-40k steps on a GPU;
the `full` settings here are cut to fit a few CPU minutes (see each entry's `note`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from circuitbook.config import pick
from circuitbook.decomposition.decompose import DataFn, Decomposition, decompose
from circuitbook.decomposition.losses import (
    Faithfulness,
    ImportanceMinimality,
    StochasticRecon,
    StochasticReconLayerwise,
)
from circuitbook.decomposition.metrics import (
    activation_density,
    alive_count,
    identity_ci_error,
    module_mmcs_ml2r,
)
from circuitbook.decomposition.vpd import FrequencyMinimality, PersistentPGDRecon
from circuitbook.models.toys import resid_mlp_features, sparse_features, train_resid_mlp, train_tms

TOY_CONFIGS: dict[str, dict[str, Any]] = {
    "tms_5_2": {
        "target": {
            "kind": "tms",
            "n_features": 5,
            "n_hidden": 2,
            "identity": False,
            "full": {"steps": 10_000, "batch_size": 1024, "lr": 5e-3},
            "ci": {"steps": 1_000, "batch_size": 512, "lr": 5e-3},
        },
        "C": {"linear1": 20, "linear2": 20},
        "tie": ("linear1", "linear2"),
        "full": {
            "steps": 8_000,
            "batch_size": 1024,
            "lr": 1e-3,
            "lr_schedule": "cosine",
            "importance": {"coeff": 3e-3, "p": 1.0},
        },
        "ci": {
            "steps": 300,
            "batch_size": 256,
            "lr": 1e-3,
            "lr_schedule": "cosine",
            "importance": {"coeff": 3e-3, "p": 1.0},
        },
        "note": "paper: batch 4096, 10k steps; here batch 1024, 8k steps (about 2 min on one core)",
    },
    "tms_40_10": {
        "target": {
            "kind": "tms",
            "n_features": 40,
            "n_hidden": 10,
            "identity": True,
            "bias_init_zero": True,
            "full": {"steps": 10_000, "batch_size": 2048, "lr": 5e-3},
            "ci": {"steps": 1_000, "batch_size": 512, "lr": 5e-3},
        },
        "C": {"linear1": 100, "hidden": 100, "linear2": 100},
        "tie": ("linear1", "linear2"),
        "full": {
            "steps": 5_000,
            "batch_size": 512,
            "lr": 1e-3,
            "lr_schedule": "cosine",
            "importance": {"coeff": 1e-4, "p": 2.0},
        },
        "ci": {
            "steps": 200,
            "batch_size": 256,
            "lr": 1e-3,
            "lr_schedule": "cosine",
            "importance": {"coeff": 1e-4, "p": 2.0},
        },
        "note": "paper: C 200, batch 4096, 20k steps; here C 100, batch 512, 5k steps",
    },
    "resid_mlp": {
        "target": {
            "kind": "resid_mlp",
            "n_features": 100,
            "d_embed": 1000,
            "d_mlp": 50,
            "full": {"steps": 1_000, "batch_size": 2048, "lr": 3e-3},
            "ci": {"steps": 200, "batch_size": 512, "lr": 3e-3},
        },
        "C": {"mlp_in": 100, "mlp_out": 100},
        "tie": None,
        "full": {
            "steps": 4_000,
            "batch_size": 512,
            "lr": 2e-3,
            "lr_schedule": "constant",
            "importance": {"coeff": 1e-5, "p": 2.0},
        },
        "ci": {
            "steps": 200,
            "batch_size": 256,
            "lr": 2e-3,
            "lr_schedule": "constant",
            "importance": {"coeff": 1e-5, "p": 2.0},
        },
        "note": "paper: batch 2048, 20k steps; here batch 512, 4k steps",
    },
}

VPD_EXTRA: dict[str, Any] = {"pgd": {"coeff": 1.0, "n_ascent": 2, "routing": True}, "frequency": None}


def toy_data_fn(name: str) -> DataFn:
    """The toy's input distribution as `data_fn(batch_size, generator)`."""
    t = TOY_CONFIGS[name]["target"]
    if t["kind"] == "tms":
        return lambda b, g: sparse_features(b, t["n_features"], 0.05, g)
    return lambda b, g: resid_mlp_features(b, t["n_features"], 0.01, g)


def train_toy_target(name: str, profile: str = "full", seed: int = 0, progress: bool = True) -> nn.Module:
    """Train the toy's target model with its profile's settings."""
    t = TOY_CONFIGS[name]["target"]
    run = pick(profile, ci=t["ci"], full=t["full"])
    if t["kind"] == "tms":
        model, _ = train_tms(
            t["n_features"],
            t["n_hidden"],
            identity=t["identity"],
            bias_init_zero=t.get("bias_init_zero", False),
            seed=seed,
            progress=progress,
            **run,
        )
    else:
        model, _ = train_resid_mlp(
            t["n_features"], t["d_embed"], t["d_mlp"], seed=seed, progress=progress, **run
        )
    return model


def toy_losses(name: str, profile: str = "full", method: str = "spd", **overrides: Any) -> list:
    """The loss objects for a toy: SPD's (stochastic + layerwise + minimality); VPD adds adversarial recon."""
    cfg = {**pick(profile, ci=TOY_CONFIGS[name]["ci"], full=TOY_CONFIGS[name]["full"]), **overrides}
    losses: list = [
        StochasticRecon(1.0),
        StochasticReconLayerwise(1.0),
        ImportanceMinimality(**cfg["importance"]),
    ]
    if cfg.get("faithfulness"):
        losses.append(Faithfulness(cfg["faithfulness"]))
    if method == "vpd":
        vpd = {**VPD_EXTRA, **cfg.get("vpd", {})}
        losses.append(PersistentPGDRecon(**vpd["pgd"]))
        if vpd["frequency"]:
            losses.append(FrequencyMinimality(**vpd["frequency"]))
    return losses


def toy_metrics(name: str, model, n: int = 10_000) -> dict[str, float]:
    """The toy's success metrics: MMCS/ML2R (TMS), alive counts, identity-insertion CI error."""
    t = TOY_CONFIGS[name]["target"]
    out: dict[str, float] = {}
    alive = alive_count(activation_density(model, toy_data_fn(name), n))
    out.update({f"alive/{k}": v for k, v in alive.items()})
    if t["kind"] == "tms":
        out["mmcs"], out["ml2r"] = module_mmcs_ml2r(model, "linear1", "in")
        out["mmcs/linear2"], out["ml2r/linear2"] = module_mmcs_ml2r(model, "linear2", "out")
        dense = {"hidden": t["n_hidden"]} if t["identity"] else {}
        errs = identity_ci_error(model, t["n_features"], ["linear1", "linear2"], dense)
        out.update({f"ci_error/{k}": v for k, v in errs.items()})
    return out


def decompose_toy(
    name: str,
    target: nn.Module,
    profile: str = "full",
    method: str = "spd",
    seed: int = 0,
    progress: bool = True,
    eval_every: int | None = None,
    **overrides: Any,
) -> Decomposition:
    """Run SPD (or VPD) on a trained toy target with the toy's settings; `overrides` replace any of them."""
    cfg = {**pick(profile, ci=TOY_CONFIGS[name]["ci"], full=TOY_CONFIGS[name]["full"]), **overrides}
    losses = toy_losses(name, profile, method, **overrides)
    C = cfg.get("C", TOY_CONFIGS[name]["C"])
    tie = TOY_CONFIGS[name]["tie"] if "tie" not in cfg else cfg["tie"]
    return decompose(
        target,
        C,
        toy_data_fn(name),
        losses,
        steps=cfg["steps"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        lr_schedule=cfg["lr_schedule"],
        warmup_steps=cfg.get("warmup_steps", 200),
        use_delta=cfg.get("use_delta", True),
        tie=tie,
        seed=seed,
        eval_fn=(lambda m: toy_metrics(name, m, 1024)) if eval_every else None,
        eval_every=eval_every,
        progress=progress,
    )


def toy_inputs(name: str, n: int, seed: int = 123) -> torch.Tensor:
    """A fixed evaluation batch for a toy."""
    return toy_data_fn(name)(n, torch.Generator().manual_seed(seed))
