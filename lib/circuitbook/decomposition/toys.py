"""The chapter's toy experiments: settings per toy and profile, and one call to run each.

`TOY_CONFIGS[name]` holds the target model's training settings and the decomposition settings
for the `ci` and `full` profiles. The paper trains with batch 4096 for 10k-40k steps on a GPU;
the `full` settings here are cut to fit a few CPU minutes (see each entry's `note`).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from circuitbook.artifacts import load_or_train
from circuitbook.config import pick
from circuitbook.decomposition.components import ComponentModel
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
from circuitbook.models.toys import TMS, ResidMLP, resid_mlp_features, sparse_features, train_resid_mlp, train_tms

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
            "identity": False,
            "bias_init_zero": True,
            "full": {"steps": 10_000, "batch_size": 2048, "lr": 5e-3},
            "ci": {"steps": 1_000, "batch_size": 512, "lr": 5e-3},
        },
        "C": {"linear1": 200, "linear2": 200},
        "tie": ("linear1", "linear2"),
        "full": {
            "steps": 10_000,
            "batch_size": 512,
            "lr": 3e-3,
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
        "note": "reference: C 200, batch 4096, 10k steps, lr 1e-3; here batch 512 with lr 3e-3 (lr 1e-3 at this batch "
        "had not converged after 5k steps: MMCS 0.77; C 100 stalled at MMCS 0.966)",
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

# TMS 5-2 with a 2x2 identity inserted in the hidden layer: tms_5_2's settings, one more decomposed matrix
TOY_CONFIGS["tms_5_2_id"] = copy.deepcopy(TOY_CONFIGS["tms_5_2"]) | {
    "C": {"linear1": 20, "hidden": 20, "linear2": 20},
    "note": "TMS 5-2 with a 2x2 identity inserted in the hidden layer; settings as tms_5_2",
}
TOY_CONFIGS["tms_5_2_id"]["target"]["identity"] = True

VPD_EXTRA: dict[str, Any] = {"pgd": {"coeff": 1.0, "n_ascent": 2, "routing": True}, "frequency": None}


def toy_data_fn(name: str) -> DataFn:
    """The toy's input distribution as `data_fn(batch_size, generator)`."""
    t = TOY_CONFIGS[name]["target"]
    if t["kind"] == "tms":
        return lambda b, g: sparse_features(b, t["n_features"], 0.05, g)
    return lambda b, g: resid_mlp_features(b, t["n_features"], 0.01, g)


def _train_target(name: str, profile: str, seed: int, progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    t = TOY_CONFIGS[name]["target"]
    run = pick(profile, ci=t["ci"], full=t["full"])
    if t["kind"] == "tms":
        return train_tms(
            t["n_features"],
            t["n_hidden"],
            identity=t["identity"],
            bias_init_zero=t.get("bias_init_zero", False),
            seed=seed,
            progress=progress,
            **run,
        )
    return train_resid_mlp(t["n_features"], t["d_embed"], t["d_mlp"], seed=seed, progress=progress, **run)


def train_toy_target(name: str, profile: str = "full", seed: int = 0, progress: bool = True) -> nn.Module:
    """Train the toy's target model with its profile's settings (no artifact; see `toy_target`)."""
    return _train_target(name, profile, seed, progress)[0]


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
    else:  # residual MLP: one mlp_in subcomponent per feature; mlp_out used densely (not scored)
        out["ci_error/mlp_in"] = identity_ci_error(model, t["n_features"], ["mlp_in"], {})["mlp_in"]
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


# ----------------------------------------------------------------------------- shipped artifacts


def _suffix(seed: int) -> str:
    return "" if seed == 0 else f"_s{seed}"


def _build_target(name: str, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """An untrained toy of the right shape with `tensors` loaded (strictly: every key must match)."""
    t = TOY_CONFIGS[name]["target"]
    if t["kind"] == "tms":
        model: nn.Module = TMS(t["n_features"], t["n_hidden"], identity=t["identity"])
    else:
        model = ResidMLP(t["n_features"], t["d_embed"], t["d_mlp"])
    model.load_state_dict(tensors)
    return model.requires_grad_(False).eval()


def toy_target(
    name: str, profile: str = "full", seed: int = 0, retrain: bool = False, progress: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """The toy's trained target, loaded from its artifact (or trained and saved). Returns (model, meta)."""
    t = TOY_CONFIGS[name]["target"]
    config = {k: v for k, v in t.items() if k not in ("ci", "full")}
    config.update(train=pick(profile, ci=t["ci"], full=t["full"]), seed=seed)

    def fit() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        t0 = time.perf_counter()
        model, metrics = _train_target(name, profile, seed, progress)
        metrics["seconds"] = time.perf_counter() - t0
        return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, metrics

    tensors, meta = load_or_train(f"{name}{_suffix(seed)}", profile, fit, config, retrain)
    return _build_target(name, tensors), meta


def decomposition_config(name: str, profile: str = "full", method: str = "spd", **overrides: Any) -> dict[str, Any]:
    """Every setting of a toy decomposition (what its artifact's config records)."""
    cfg = {**pick(profile, ci=TOY_CONFIGS[name]["ci"], full=TOY_CONFIGS[name]["full"]), **overrides}
    cfg.setdefault("C", TOY_CONFIGS[name]["C"])
    cfg.setdefault("tie", TOY_CONFIGS[name]["tie"])
    cfg["method"] = method
    if method == "vpd":
        cfg["vpd"] = {**VPD_EXTRA, **cfg.get("vpd", {})}
    return cfg


def toy_decomposition(
    name: str,
    target: nn.Module,
    profile: str = "full",
    method: str = "spd",
    seed: int = 0,
    retrain: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> tuple[Decomposition, dict[str, Any]]:
    """SPD/VPD of a toy target, loaded from its artifact `<method>_<name>` (or trained and saved).

    The target is deep-copied, so several decompositions of one target never share hooks.
    Returns (decomposition, meta); meta["metrics"] holds the training history and wall time.
    """
    cfg = decomposition_config(name, profile, method, **overrides)
    config = {"decomposition": cfg, "seed": seed, "target": TOY_CONFIGS[name]["target"]["kind"]}
    target = copy.deepcopy(target)

    def fit() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        d = decompose_toy(name, target, profile, method, seed, progress, **overrides)
        tensors = {k: v.detach().clone() for k, v in d.model.state_dict().items() if not k.startswith("target.")}
        return tensors, {"history": d.history, "seconds": d.seconds}

    tensors, meta = load_or_train(f"{method}_{name}{_suffix(seed)}", profile, fit, config, retrain)
    model = ComponentModel(
        copy.deepcopy(target), cfg["C"], ci_hidden=cfg.get("ci_hidden", 16), use_delta=cfg.get("use_delta", True)
    )
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or any(not k.startswith("target.") for k in missing):
        raise ValueError(f"decomposition artifact does not fit: missing {missing}, unexpected {unexpected}")
    model.requires_grad_(False)
    history = meta["metrics"]["history"]
    return Decomposition(model, history, meta["metrics"]["seconds"]), meta
