"""Learned pruning: the smallest set of nodes that still does the task (Gao et al. 2025, "Pruning").

1. Train one mask score per node (`NodeMask`: Heaviside forward, sigmoid surrogate backward) with
   Adam on
        loss = task BCE(circuit) + k_coef * (number of kept nodes)
   where every node whose gate is 0 is mean-ablated; scores are clamped to [-1, 1] after each step.
2. Rank nodes by score and bisect the number kept, k, to the smallest circuit (the top k) whose
   task loss reaches the target (paper: 0.15).
3. Fit a logit scale and shift for that circuit with a few LBFGS steps (mean ablation shifts and
   shrinks the logits; calibration measures what the circuit knows, not how it is scaled).

`circuit_from_scores` (steps 2-3) is shared with the attribution baseline, so the two methods differ
only in how they rank nodes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import trange

from circuitbook.circuits.ablation import _device, masked_logit_diff, run_masked
from circuitbook.circuits.circuit import Circuit
from circuitbook.circuits.masks import NodeMask
from circuitbook.circuits.nodes import NodeSet
from circuitbook.data.tasks import TaskBatch, task_loss


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Hyperparameters of learned pruning; defaults are the paper's search centres. `asdict` is what a
    circuit artifact records (field names and order are part of the stored configs)."""

    k_coef: float = 1e-4  # penalty per kept node
    lr: float = 3e-3  # Adam learning rate of the node scores
    temperature: float = 1.0  # of the sigmoid surrogate gradient
    init_noise_scale: float = 1e-2  # score_i = init_noise_bias + init_noise_scale * N(0, 1)
    init_noise_bias: float = 1e-1  # > 0: every node starts kept
    steps: int = 1000  # Adam steps of mask training
    batch_size: int = 64  # prompts per step
    target_loss: float = 0.15  # task loss the bisection must reach on the train prompts
    lbfgs_steps: int = 20  # LBFGS iterations of the logit calibration
    seed: int = 0  # initial scores and prompt sampling

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@contextmanager
def frozen(model):
    """Eval mode and no weight gradients inside; the previous state is restored after."""
    flags = [p.requires_grad for p in model.parameters()]
    was = model.training
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was)


# ---------------------------------------------------------------- 1. training the mask


def train_mask(
    model, batch: TaskBatch, means: dict[str, Tensor], nodes: NodeSet, cfg: PruneConfig, progress: bool = True
) -> tuple[NodeMask, list[dict]]:
    """Train node scores on `batch`; returns the mask and a history [{step, task_loss, n_kept}]."""
    dev = _device(model)
    batch = batch.to(dev)
    mask = NodeMask(nodes, cfg.init_noise_scale, cfg.init_noise_bias, cfg.temperature, cfg.seed).to(dev)
    opt = torch.optim.Adam(mask.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    n, bs = len(batch.tokens), min(cfg.batch_size, len(batch.tokens))
    history = []
    with frozen(model):
        bar = trange(cfg.steps, desc="mask", disable=not progress, leave=False)
        for step in bar:
            sub = batch[torch.randperm(n, generator=g)[:bs].to(dev)]
            gates = mask()  # [N] 0/1
            task = task_loss(run_masked(model, sub.tokens, nodes.split(gates), means), sub)
            loss = task + cfg.k_coef * gates.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            mask.clamp_()
            if step % 10 == 0 or step == cfg.steps - 1:
                row = {"step": step, "task_loss": task.item(), "n_kept": int(gates.detach().sum())}
                history.append(row)
                bar.set_postfix(task=f"{row['task_loss']:.3f}", kept=row["n_kept"])
    return mask, history


# ---------------------------------------------------------------- 2. bisection on the kept count


def top_k_kept(scores: Tensor, k: int) -> Tensor:
    """bool [N]: the k highest scores (ties go to the lower index)."""
    order = torch.argsort(-scores.detach().float().cpu(), stable=True)
    kept = torch.zeros(len(scores), dtype=torch.bool)
    kept[order[:k]] = True
    return kept


def bisect_smallest(loss_at: Callable[[int], float], n: int, target: float) -> tuple[int, dict[int, float]]:
    """The smallest k in [0, n] with loss_at(k) <= target, assuming loss_at falls as k grows.
    Returns (k, {k: loss} of every k evaluated). If even k = n misses the target, returns n."""
    seen: dict[int, float] = {}

    def f(k: int) -> float:
        if k not in seen:
            seen[k] = float(loss_at(k))
        return seen[k]

    if f(n) > target:
        return n, seen
    lo, hi = 0, n  # invariant: f(hi) <= target; every k < lo has f(k) > target
    while lo < hi:
        mid = (lo + hi) // 2
        if f(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return hi, seen


def smallest_circuit(loss_at: Callable[[int], float], scores: Tensor, target: float) -> tuple[int, dict[int, float]]:
    """Bisect the number of top-scored nodes kept, within the nodes the mask itself keeps (score > 0)
    when those already reach `target`, else over all nodes.

    Past the mask's own nodes the loss need not fall as k grows (adding nodes the mask rejected can hurt),
    and a bisection over every node can then end at thousands of nodes. Returns (k, {k: loss}).
    """
    seen: dict[int, float] = {}

    def f(k: int) -> float:
        if k not in seen:
            seen[k] = float(loss_at(k))
        return seen[k]

    n_all, n_mask = len(scores), int((scores > 0).sum())
    n = n_mask if 0 < n_mask < n_all and f(n_mask) <= target else n_all
    k, _ = bisect_smallest(f, n, target)
    return k, seen


# ---------------------------------------------------------------- 3. logit calibration


def fit_logit_calibration(
    diff: Tensor, correct: Tensor, wrong: Tensor, steps: int = 20, ridge: float = 1e-3
) -> tuple[float, dict[int, float], float]:
    """Fit logits' = a * logits + b_t (a scalar scale, a shift b_t per candidate token t) to minimise
    the task loss. A shift shared by all tokens would cancel in the logit difference, so the shift is
    per token: diff' = a * diff + b[correct] - b[wrong]. Returns (a, {token: b_t}, task loss after).

    `ridge` * ((a - 1)^2 + |b|^2) keeps the fit finite: when the circuit already separates every prompt,
    the unregularised optimum is a -> infinity, which is perfect on these prompts and bad on new ones."""
    diff = diff.detach().float().cpu()
    correct, wrong = correct.cpu(), wrong.cpu()
    toks = torch.unique(torch.cat([correct, wrong]))  # [n_tok]
    ci, wi = torch.searchsorted(toks, correct), torch.searchsorted(toks, wrong)
    a = torch.ones(1, requires_grad=True)
    b = torch.zeros(len(toks), requires_grad=True)
    loss_of = lambda: F.softplus(-(a * diff + b[ci] - b[wi])).mean()
    penalty = lambda: ridge * ((a - 1).pow(2).sum() + b.pow(2).sum())
    if steps > 0:
        opt = torch.optim.LBFGS([a, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = loss_of() + penalty()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        b = b - b.mean()  # only differences matter
        final = float(loss_of())
    return a.item(), {int(t): float(v) for t, v in zip(toks, b.tolist())}, final


# ---------------------------------------------------------------- scores -> circuit


def circuit_from_scores(
    model,
    batch: TaskBatch,
    means: dict[str, Tensor],
    nodes: NodeSet,
    scores: Tensor,
    target_loss: float = 0.15,
    lbfgs_steps: int = 20,
    method: str = "learned",
    info: dict | None = None,
) -> Circuit:
    """Bisect the number of top-scored nodes to the smallest circuit reaching `target_loss` on `batch`
    (`smallest_circuit`), then fit its logit scale and shift."""
    dev = _device(model)

    def diff_at(k: int) -> Tensor:
        masks = {s: m.to(dev) for s, m in nodes.split(top_k_kept(scores, k).float()).items()}
        return masked_logit_diff(model, batch, masks, means)  # [batch]

    with frozen(model):
        k, trace = smallest_circuit(lambda k: float(F.softplus(-diff_at(k)).mean()), scores, target_loss)
        diff = diff_at(k)
    scale, shift, cal = fit_logit_calibration(diff, batch.correct, batch.wrong, lbfgs_steps)
    info = {**(info or {}), "bisection": {str(i): trace[i] for i in sorted(trace)}}
    return Circuit(nodes, top_k_kept(scores, k), scores.detach().float().cpu(), target_loss,
                   float(F.softplus(-diff).mean()), cal, scale, shift, method, info)


def size_loss_curve(
    model, batch: TaskBatch, means: dict[str, Tensor], nodes: NodeSet, scores: Tensor, sizes: list[int]
) -> dict[int, float]:
    """{k: task loss on `batch` of the top-k scored nodes alone} for each k in `sizes` (the curve the
    bisection walks; chapter 3 reads circuits for other target losses off it)."""
    dev = _device(model)
    out = {}
    with frozen(model):
        for k in sizes:
            masks = {s: m.to(dev) for s, m in nodes.split(top_k_kept(scores, k).float()).items()}
            out[int(k)] = float(F.softplus(-masked_logit_diff(model, batch, masks, means)).mean())
    return out


def prune(
    model,
    batch: TaskBatch,
    means: dict[str, Tensor],
    cfg: PruneConfig | None = None,
    nodes: NodeSet | None = None,
    progress: bool = True,
) -> Circuit:
    """Learned pruning of `model` on the task `batch`: train the mask, bisect, calibrate.
    `means` from `mean_activations`; `nodes` defaults to every node of the model."""
    cfg = cfg or PruneConfig()
    nodes = nodes or NodeSet.from_model(model)
    mask, history = train_mask(model, batch, means, nodes, cfg, progress)
    info = {"config": cfg.to_dict(), "history": history, "n_kept_by_mask": mask.n_kept()}
    return circuit_from_scores(model, batch, means, nodes, mask.score.detach(), cfg.target_loss,
                               cfg.lbfgs_steps, "learned", info)
