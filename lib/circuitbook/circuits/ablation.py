"""Mean ablation: replace a node's activation by its mean over the pretraining distribution.

With a mask m per node (1 = kept, 0 = ablated; fractional values interpolate),

    act <- m * act + (1 - m) * mean          # per site, m and mean broadcast over batch and positions

applied by forward hooks on the node sites (`run_with_hooks` / `model.hooks`). A mask of all ones
gives the unpruned model exactly (1 * act + 0 * mean == act in floating point).

"Circuit alone" ablates every node outside the circuit; "circuit removed" ablates the circuit's own
nodes. A good circuit keeps the task alone and loses it when removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from circuitbook import artifacts
from circuitbook.circuits.circuit import Circuit
from circuitbook.circuits.nodes import NodeSet
from circuitbook.config import Profile
from circuitbook.data.tasks import TaskBatch, logit_diff
from circuitbook.train import get_batch

Hook = tuple[str, Callable]


def _device(model) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------- means over the pretraining distribution


@torch.no_grad()
def mean_activations(
    model,
    tokens: np.ndarray,
    nodes: NodeSet,
    n_batches: int = 16,
    batch_size: int = 16,
    n_ctx: int | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """{site: [width]} each node site's activation averaged over batch and positions of random
    `n_ctx`-token windows of the training stream (the same windows for the same seed)."""
    n_ctx = n_ctx or model.cfg.n_ctx
    sums = {s: torch.zeros(w, dtype=torch.float64, device=_device(model)) for s, w in zip(nodes.sites, nodes.widths)}
    count = 0
    for b in range(n_batches):
        x = get_batch(tokens, 10_000_000 + b, batch_size, n_ctx, seed).to(_device(model))  # [batch, n_ctx]
        _, cache = model.run_with_cache(x, names_filter=lambda name: name in nodes.sites)
        for s in nodes.sites:
            sums[s] += cache[s].reshape(-1, sums[s].shape[0]).double().sum(0)
        count += x.numel()
    return {s: (v / count).float() for s, v in sums.items()}


def model_fingerprint(model) -> str:
    """A short sha1 of the model's weights: means are cached per exact model."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_mean_activations(
    name: str,
    profile: str | Profile,
    model,
    tokens: np.ndarray,
    nodes: NodeSet,
    n_batches: int = 16,
    batch_size: int = 16,
    seed: int = 0,
    retrain: bool = False,
) -> dict[str, Tensor]:
    """`mean_activations` through `artifacts.load_or_train` as artifact `name` (e.g. 'means_dense_baseline').

    The config holds a fingerprint of the model's weights; means made for other weights (or settings)
    are recomputed rather than used.
    """
    config = {"model": model_fingerprint(model), "sites": list(nodes.sites), "n_batches": n_batches,
              "batch_size": batch_size, "n_ctx": model.cfg.n_ctx, "seed": seed, "n_tokens": int(len(tokens))}
    fit = lambda: (mean_activations(model, tokens, nodes, n_batches, batch_size, None, seed), {})
    try:
        tensors, _ = artifacts.load_or_train(name, profile, fit, config, retrain)
    except artifacts.ArtifactError:  # made for another model or corrupt: means are cheap, recompute
        tensors, _ = artifacts.load_or_train(name, profile, fit, config, retrain=True)
    return {s: tensors[s].to(_device(model)) for s in nodes.sites}


# ---------------------------------------------------------------- the masking forward


def ablate(act: Tensor, m: Tensor, mean: Tensor) -> Tensor:
    """act [batch, pos, ...] with trailing dims flattening to width; m [width] or [batch, width];
    mean [width] -> m * act + (1 - m) * mean, same shape as act."""
    flat = act.reshape(act.shape[0], act.shape[1], -1)  # [batch, pos, width]
    m = m[:, None, :] if m.dim() == 2 else m  # per-prompt masks broadcast over positions
    return (m * flat + (1 - m) * mean).reshape(act.shape)


def ablation_hooks(masks: dict[str, Tensor], means: dict[str, Tensor]) -> list[Hook]:
    """Forward hooks that mean-ablate each site of `masks` (sites not in `masks` are untouched)."""
    return [(site, lambda act, hook, m=m, mu=means[site]: ablate(act, m, mu)) for site, m in masks.items()]


def run_masked(model, tokens: Tensor, masks: dict[str, Tensor], means: dict[str, Tensor]) -> Tensor:
    """tokens [batch, pos] -> logits [batch, pos, vocab] with the masks applied (gradients flow to masks)."""
    with model.hooks(fwd_hooks=ablation_hooks(masks, means)):
        return model(tokens)


def sub_batch(batch: TaskBatch, idx) -> TaskBatch:
    """Rows `idx` (a slice or index tensor) of a TaskBatch."""
    return TaskBatch(*(getattr(batch, f)[idx] for f in ("tokens", "last", "correct", "wrong", "labels")))


def to_device(batch: TaskBatch, device: torch.device) -> TaskBatch:
    return TaskBatch(*(getattr(batch, f).to(device) for f in ("tokens", "last", "correct", "wrong", "labels")))


@torch.no_grad()
def masked_logit_diff(
    model, batch: TaskBatch, masks: dict[str, Tensor], means: dict[str, Tensor], chunk: int = 128
) -> Tensor:
    """Correct-minus-wrong logit at the last position under the masks, [batch], in chunks."""
    batch = to_device(batch, _device(model))
    out = []
    for i in range(0, len(batch.tokens), chunk):
        sub = sub_batch(batch, slice(i, i + chunk))
        out.append(logit_diff(run_masked(model, sub.tokens, masks, means), sub))
    return torch.cat(out)


def _metrics(diff: Tensor) -> dict[str, float]:
    return {"loss": float(torch.nn.functional.softplus(-diff).mean()), "acc": float((diff > 0).float().mean())}


def evaluate_masked(model, batch: TaskBatch, masks: dict[str, Tensor], means: dict[str, Tensor]) -> dict[str, float]:
    """Task loss and accuracy under the masks."""
    return _metrics(masked_logit_diff(model, batch, masks, means))


def circuit_alone(model, circuit: Circuit, batch: TaskBatch, means: dict[str, Tensor],
                  calibrated: bool = False) -> dict[str, float]:
    """Task loss/accuracy with every node outside the circuit mean-ablated (optionally with the
    circuit's fitted logit scale and shift)."""
    masks = {s: m.to(_device(model)) for s, m in circuit.masks().items()}
    diff = masked_logit_diff(model, batch, masks, means)
    if calibrated:
        diff = circuit.calibrate(diff, batch.correct.to(diff.device), batch.wrong.to(diff.device))
    return _metrics(diff)


def circuit_removed(model, circuit: Circuit, batch: TaskBatch, means: dict[str, Tensor]) -> dict[str, float]:
    """Task loss/accuracy with the circuit's own nodes mean-ablated and everything else kept."""
    masks = {s: (1 - m).to(_device(model)) for s, m in circuit.masks().items()}
    return evaluate_masked(model, batch, masks, means)


def all_kept(nodes: NodeSet, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Masks that keep every node (the unpruned model)."""
    return nodes.split(torch.ones(len(nodes), device=device))
