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

The second method (`prune_v2`, issue 16: "pruning that measures size"), chosen by any `PruneConfig` whose
second-method fields are not at their defaults (`PruneConfig.legacy` is False):

- k_coef is a dual variable (`dual_lr`): log k_coef += dual_lr * clip((target - loss_ema) / target, -1, 1) after
  each step, so the mask settles where its task loss is at the target rather than wherever a fixed k_coef leaves
  it (the first method's quote mask sat at 0.017 against a target of 0.12). Its trajectory is in the history.
- The mask can train through a logit scale and per-token shift learned along with it (`calibration_lr`), so the
  loss the dual update holds at the target is the calibrated loss the bisection tests.
- The bisection tests the calibrated loss (`calibrated`; `CircuitLoss`), the loss the circuit is reported with, on
  the train prompts; `heldout_sufficiency` measures the same loss on other prompts.
- It walks an order with no ties (`order="ablation"`, `smallest_sufficient`): score, then, within a group of equal
  scores (the clamp at 1 makes many), the measured leave-one-out effect, never the node index; nodes no
  measurement tells apart are kept or dropped together, so the size does not depend on the numbering.
- It walks the mask's own nodes (or, if they miss the target, every node above the clamp floor), and its forward
  passes compute only each prompt's last position (`fast_masked_logit_diff`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import trange

from circuitbook.circuits.ablation import (
    _device,
    fast_masked_logit_diff,
    last_logit_diff,
    masked_logit_diff,
    run_masked,
)
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
    # The second method (issue 16: "pruning that measures size"). At these defaults the method is the first one
    # exactly, and `to_dict` leaves these fields out, so the configs stored with the first method's circuits match.
    order: str = "index"  # nodes of equal score: "index" (lower index first) | "ablation" (measured effect first)
    dual_lr: float = 0.0  # > 0: dual update log k_coef += dual_lr * clip((target - loss_ema) / target, -1, 1)
    dual_ema: float = 0.9  # decay of the running mean of the minibatch task loss the dual update reads
    calibrated: bool = False  # bisect on the loss after the logit calibration, not the raw task loss
    walk_floor: float = -1.0  # v2: past the mask's own nodes, the bisection walks only nodes scored above this
    calibration_lr: float = 0.0  # > 0: the mask trains through a logit scale and shift learned along (Adam, this lr)

    def to_dict(self) -> dict:
        d = json.loads(json.dumps(asdict(self)))
        return {k: v for k, v in d.items() if k not in V1_DEFAULTS or v != V1_DEFAULTS[k]}

    @property
    def legacy(self) -> bool:
        """Every second-method field at its default: the first method, unchanged (`prune_v1`)."""
        return all(getattr(self, k) == v for k, v in V1_DEFAULTS.items())


# The second method's fields at their first-method values (left out of `PruneConfig.to_dict`).
V1_DEFAULTS = {"order": "index", "dual_lr": 0.0, "dual_ema": 0.9, "calibrated": False, "walk_floor": -1.0,
               "calibration_lr": 0.0}


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


def dual_step(log_k: float, loss_ema: float, target: float, lr: float) -> float:
    """One dual (Lagrangian) ascent step on log k_coef for the constraint task loss <= target: the sparsity
    pressure rises while the running task loss is under the target (the circuit can afford to lose nodes) and falls
    while it is over. The gap is relative to the target and clipped to [-1, 1], so one step moves k_coef by a factor
    of at most e^lr whatever the loss (a far-off first minibatch does not throw it away)."""
    return log_k + lr * max(-1.0, min(1.0, (target - loss_ema) / target))


def train_mask(
    model, batch: TaskBatch, means: dict[str, Tensor], nodes: NodeSet, cfg: PruneConfig, progress: bool = True
) -> tuple[NodeMask, list[dict]]:
    """Train node scores on `batch`; returns the mask and a history [{step, task_loss, n_kept}], every 10 steps.

    With `cfg.dual_lr` > 0, k_coef is the dual variable of the constraint task loss <= `cfg.target_loss`: it starts
    at `cfg.k_coef` and after each step takes a `dual_step` on the running mean of the minibatch task loss (decay
    `cfg.dual_ema`), so the mask settles where its task loss is at the target instead of wherever a fixed k_coef
    leaves it; each history row then also has `loss_ema` and `k_coef`. A non-legacy config computes the forward
    with `last_logit_diff` (only what the last position needs)."""
    dev = _device(model)
    batch = batch.to(dev)
    mask = NodeMask(nodes, cfg.init_noise_scale, cfg.init_noise_bias, cfg.temperature, cfg.seed).to(dev)
    groups = [{"params": list(mask.parameters()), "lr": cfg.lr}]
    if cfg.calibration_lr > 0:  # diff' = exp(log_a) * diff + b[correct] - b[wrong], as `fit_logit_calibration`
        toks = torch.unique(torch.cat([batch.correct, batch.wrong]))
        log_a = torch.zeros(1, device=dev, requires_grad=True)
        shift = torch.zeros(len(toks), device=dev, requires_grad=True)
        groups.append({"params": [log_a, shift], "lr": cfg.calibration_lr})
    opt = torch.optim.Adam(groups)
    g = torch.Generator().manual_seed(cfg.seed)
    n, bs = len(batch.tokens), min(cfg.batch_size, len(batch.tokens))
    log_k, ema = math.log(cfg.k_coef), None
    history = []
    with frozen(model):
        bar = trange(cfg.steps, desc="mask", disable=not progress, leave=False)
        for step in bar:
            sub = batch[torch.randperm(n, generator=g)[:bs].to(dev)]
            gates = mask()  # [N] 0/1
            if cfg.legacy:
                task = task_loss(run_masked(model, sub.tokens, nodes.split(gates), means), sub)
            else:
                diff = last_logit_diff(model, sub, nodes.split(gates), means)
                if cfg.calibration_lr > 0:
                    ci, wi = torch.searchsorted(toks, sub.correct), torch.searchsorted(toks, sub.wrong)
                    diff = log_a.exp() * diff + shift[ci] - shift[wi]
                task = F.softplus(-diff).mean()
            k_coef = math.exp(log_k) if cfg.dual_lr > 0 else cfg.k_coef
            loss = task + k_coef * gates.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            mask.clamp_()
            if cfg.dual_lr > 0:
                ema = task.item() if ema is None else cfg.dual_ema * ema + (1 - cfg.dual_ema) * task.item()
                log_k = dual_step(log_k, ema, cfg.target_loss, cfg.dual_lr)
            if step % 10 == 0 or step == cfg.steps - 1:
                row = {"step": step, "task_loss": task.item(), "n_kept": int(gates.detach().sum())}
                if cfg.dual_lr > 0:
                    row |= {"loss_ema": ema, "k_coef": k_coef}
                if cfg.calibration_lr > 0:
                    row["logit_scale"] = float(log_a.detach().exp())
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


def measured_order(scores: Tensor, effects: Tensor) -> tuple[Tensor, list[int]]:
    """Rank nodes by score, nodes of equal score by measured effect (both descending). Returns (order [N], bounds):
    `bounds` are the prefix sizes 0 < ... < N at which (score, effect) changes, the only prefixes a bisection
    should try: nodes that no measurement tells apart stay together (all kept or none), so the size found does not
    depend on how the nodes are numbered (the sort is stable, but no prefix ends inside a group of equals)."""
    scores, effects = scores.detach().float().cpu(), effects.detach().float().cpu()
    order = torch.argsort(-effects, stable=True)
    order = order[torch.argsort(-scores[order], stable=True)]
    s, e = scores[order], effects[order]
    change = ((s[1:] != s[:-1]) | (e[1:] != e[:-1])).nonzero()[:, 0] + 1
    return order, [0, *change.tolist(), len(scores)]


def flip_effects(loss_of: Callable[[Tensor], float], kept: Tensor, idx: Tensor, base: float | None = None) -> Tensor:
    """The measured effect of each node of `idx` on the circuit `kept`: the loss with the node off minus the loss
    with it on, the other nodes as in `kept` (leave-one-out for a kept node, add-one for another). [len(idx)]:
    larger means the circuit needs the node more."""
    kept = kept.bool().cpu()
    base = float(loss_of(kept)) if base is None else base
    out = []
    for i in idx.tolist():
        flipped = kept.clone()
        flipped[i] = ~flipped[i]
        delta = float(loss_of(flipped)) - base
        out.append(delta if kept[i] else -delta)
    return torch.tensor(out)


def smallest_sufficient(
    loss_of: Callable[[Tensor], float],
    scores: Tensor,
    target: float,
    order: str = "ablation",
    floor: float = -1.0,
    effects_of: Callable[..., Tensor] | None = None,
) -> tuple[Tensor, dict]:
    """The second method's bisection: the smallest prefix of an order with no ties that is sufficient
    (loss_of(kept) <= target). `loss_of`: bool [N] -> loss (the calibrated loss in `prune`).

    The walk is the mask's own nodes (score > 0) when they are sufficient, else every node scored above `floor`
    (the clamp: nodes the mask pushed all the way down stay out). Along it, nodes are ranked by score and, within a
    group of equal scores, by their measured effect on the mask's circuit (`flip_effects`, leave-one-out);
    order="index" keeps the first method's lower-index-first instead, for comparison.

    Why measured effects and not unclamped mask logits: Adam scales each score's step to about lr whatever the size
    of its gradient, so every node whose gradient keeps its sign climbs at the same rate, and an unclamped score
    says for how long a node was pushed up, not how much the circuit needs it. A leave-one-out loss measures the
    thing the bisection then tests.

    The effects are measured lazily, one forward pass per node: the bisection first runs over the ends of the groups
    of equal score (where the order does not depend on effects), and only the group in which the smallest
    sufficient prefix ends is measured and bisected inside. This is the same order: every earlier group is kept
    whole by the prefix. Nodes that no measurement tells apart stay together (all kept or none), so the size found
    does not depend on how the nodes are numbered.

    Returns (kept bool [N], info): info has the bisection trace {k: loss}, the walk length, the mask's own loss,
    the measured effects {node: effect}, `ranked` (the walk, best first: the circuit is its first k nodes, and
    a size-loss curve reads other prefixes of it) and `reached`. If the whole walk misses the target, it is all
    kept."""
    if order not in ("ablation", "index"):
        raise ValueError(f"order must be 'ablation' or 'index', got {order!r}")
    scores = scores.detach().float().cpu()
    n_all = len(scores)
    mask_kept = scores > 0
    base = float(loss_of(mask_kept))
    walk = mask_kept if base <= target else scores > floor
    w = walk.nonzero()[:, 0]
    sub_order, bounds = measured_order(scores[w], torch.zeros(len(w)))  # groups of equal score
    ranked = w[sub_order]  # walk nodes, best first (equal scores: lower index first, until measured)
    if order == "index":
        bounds = list(range(len(w) + 1))
    seen: dict[int, float] = {len(w): base} if walk.equal(mask_kept) else {}

    def kept_at(k: int) -> Tensor:
        kept = torch.zeros(n_all, dtype=torch.bool)
        kept[ranked[:k]] = True
        return kept

    def bisect(bs: list[int]) -> int:
        def f(j: int) -> float:
            if bs[j] not in seen:
                seen[bs[j]] = float(loss_of(kept_at(bs[j])))
            return seen[bs[j]]

        return bs[bisect_smallest(f, len(bs) - 1, target)[0]]

    k = bisect(bounds)
    effects: dict[str, float] = {}
    j = bounds.index(k)
    if order == "ablation" and j > 0 and k - bounds[j - 1] > 1 and seen[k] <= target:
        lo = bounds[j - 1]  # the smallest sufficient prefix ends inside the group ranked[lo:k] of equal scores
        group = ranked[lo:k].clone()
        eff = (effects_of or flip_effects)(loss_of, mask_kept, group, base)
        g_order, g_bounds = measured_order(torch.zeros(len(group)), eff)
        ranked[lo:k] = group[g_order]
        effects = {str(int(i)): float(e) for i, e in zip(group, eff)}
        k = bisect([lo + b for b in g_bounds])
    info = {"bisection": {str(i): seen[i] for i in sorted(seen)}, "walk": len(w), "mask_loss": base,
            "effects": effects, "ranked": ranked.tolist(), "reached": seen[k] <= target}
    return kept_at(k), info


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


class CircuitLoss:
    """bool [N] kept -> the task loss on `batch` with every other node mean-ablated: after the best logit
    calibration for that circuit (`fit_logit_calibration`, `lbfgs_steps`) if `calibrated`, else raw. The second
    method's sufficiency test; it counts its forward passes and their seconds."""

    def __init__(self, model, batch: TaskBatch, means: dict[str, Tensor], nodes: NodeSet, calibrated: bool = True,
                 lbfgs_steps: int = 20, chunk: int = 64):
        self.model, self.batch, self.means, self.nodes = model, batch.to(_device(model)), means, nodes
        self.calibrated, self.lbfgs_steps, self.chunk = calibrated, lbfgs_steps, chunk
        self.calls, self.seconds = 0, 0.0
        self._seen: dict[bytes, Tensor] = {}  # kept -> diff: the answer was measured during the bisection

    def diff(self, kept: Tensor) -> Tensor:
        """Logit differences [batch] of the circuit `kept`, uncalibrated."""
        key = kept.bool().cpu().numpy().tobytes()
        if key in self._seen:
            return self._seen[key]
        t0 = time.perf_counter()
        masks = {s: m.to(_device(self.model)) for s, m in self.nodes.split(kept.float()).items()}
        with frozen(self.model):
            out = fast_masked_logit_diff(self.model, self.batch, masks, self.means, self.chunk)
        self.calls, self.seconds = self.calls + 1, self.seconds + time.perf_counter() - t0
        self._seen[key] = out
        return out

    def of_diff(self, diff: Tensor) -> float:
        if not self.calibrated:
            return float(F.softplus(-diff).mean())
        return fit_logit_calibration(diff, self.batch.correct, self.batch.wrong, self.lbfgs_steps)[2]

    def __call__(self, kept: Tensor) -> float:
        return self.of_diff(self.diff(kept))


def prune_v2(
    model, batch: TaskBatch, means: dict[str, Tensor], cfg: PruneConfig, nodes: NodeSet, progress: bool = True
) -> Circuit:
    """The second method (issue 16): train the mask (with the dual update of k_coef if `cfg.dual_lr` > 0), then
    `smallest_sufficient` on `CircuitLoss` (calibrated if `cfg.calibrated`), then the calibration of the circuit
    found. info: config, history, n_kept_by_mask, the bisection trace, the walk, the measured effects, the criterion
    ("calibrated" | "raw": which loss `Circuit.reached` compares) and seconds per phase."""
    t0 = time.perf_counter()
    mask, history = train_mask(model, batch, means, nodes, cfg, progress)
    t1 = time.perf_counter()
    loss_of = CircuitLoss(model, batch, means, nodes, cfg.calibrated, cfg.lbfgs_steps)
    kept, found = smallest_sufficient(loss_of, mask.score.detach(), cfg.target_loss, cfg.order, cfg.walk_floor)
    t2 = time.perf_counter()
    diff = loss_of.diff(kept)
    scale, shift, cal = fit_logit_calibration(diff, batch.correct, batch.wrong, cfg.lbfgs_steps)
    t3 = time.perf_counter()
    found.pop("reached")
    info = {"config": cfg.to_dict(), "history": history, "n_kept_by_mask": mask.n_kept(), **found,
            "criterion": "calibrated" if cfg.calibrated else "raw",
            "seconds": {"mask": t1 - t0, "order_and_bisection": t2 - t1, "probes": loss_of.calls,
                        "probe_seconds": loss_of.seconds, "calibration": t3 - t2}}
    return Circuit(nodes, kept, mask.score.detach().float().cpu(), cfg.target_loss, float(F.softplus(-diff).mean()),
                   cal, scale, shift, "learned", info)


def prune(
    model,
    batch: TaskBatch,
    means: dict[str, Tensor],
    cfg: PruneConfig | None = None,
    nodes: NodeSet | None = None,
    progress: bool = True,
) -> Circuit:
    """Learned pruning of `model` on the task `batch`: train the mask, bisect, calibrate.
    `means` from `mean_activations`; `nodes` defaults to every node of the model. A config with every
    second-method field at its default (`cfg.legacy`) runs the first method unchanged; any other runs `prune_v2`."""
    cfg = cfg or PruneConfig()
    nodes = nodes or NodeSet.from_model(model)
    if not cfg.legacy:
        return prune_v2(model, batch, means, cfg, nodes, progress)
    mask, history = train_mask(model, batch, means, nodes, cfg, progress)
    info = {"config": cfg.to_dict(), "history": history, "n_kept_by_mask": mask.n_kept()}
    return circuit_from_scores(model, batch, means, nodes, mask.score.detach(), cfg.target_loss,
                               cfg.lbfgs_steps, "learned", info)


def heldout_sufficiency(model, circuit: Circuit, batch: TaskBatch, means: dict[str, Tensor]) -> dict[str, float]:
    """How the circuit does on other prompts (`batch`, e.g. the test split), measured with the loss its bisection
    used: every node outside it mean-ablated, then the logit scale and shift fitted on the train prompts (never
    refitted here) when the circuit's criterion is "calibrated". -> {loss, raw_loss, acc, reached} (acc of the
    same logits as loss)."""
    masks = {s: m.to(_device(model)) for s, m in circuit.masks().items()}
    with frozen(model):
        diff = fast_masked_logit_diff(model, batch, masks, means)
    if circuit.criterion == "calibrated":
        used = circuit.calibrate(diff, batch.correct.to(diff.device), batch.wrong.to(diff.device))
    else:
        used = diff
    loss = float(F.softplus(-used).mean())
    return {"loss": loss, "raw_loss": float(F.softplus(-diff).mean()), "acc": float((used > 0).float().mean()),
            "reached": loss <= circuit.target_loss}
