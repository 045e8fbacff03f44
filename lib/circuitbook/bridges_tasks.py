"""A task through the bridges: which sparse channels carry it, at which site, and how far moving them
steers the dense model (chapter 4's recipe; the mechanics are in `bridges`).

    task_channels(sparse, batch, site)       channels whose midpoint separation is >= SEPARATES (at least one)
    scan_sites(dense, sparse, bridge, ...)   per site: the task channels, and what moving them does to the
                                             sparse model's own answer (and, for the record, the dense one's)
    choose_site(rows)                        the site where the sparse model itself responds most
    task_move(sparse, bridge, batch, site)   the chosen channels' class move, its best-channel-only version
                                             and its control
    steering_curve(dense, sparse, bridge, batch, move, strengths)   p_diff at each steering strength
    control_changes(dense, bridge, batch, move, n)   the null: the same change for n random controls
    margin_band(reference)                   the band of a reference task's margins (its central 80%)
    select_by_margin(margins, labels, band, n)   per class, the n correctly answered prompts nearest the band
    directed_change(dense, bridge, batch, move, from_class)   one direction of the move, per prompt, in
                                             logit differences and probabilities, with its control
    control_logit_changes(dense, bridge, batch, move, from_class, n)   that direction's null in nats

Every choice uses the sparse model and the training prompts only; the dense model is measured, never
consulted (except by `select_by_margin`, which picks prompts by the dense model's unedited margin, never
by an edit's effect). Prompts are `TaskBatch`es with labels 0/1; moves go from class 0 towards class 1, and
are read on the class-0 prompts as P(class 0's answer) - P(class 1's answer); `directed_change` also runs the
reverse move, -move, on the class-1 prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from circuitbook.bridges import Bridge, class_means, class_move, control_move, sparse_activations, steer, steer_sparse
from circuitbook.data.tasks import TaskBatch
from circuitbook.models.gpt import GPT
from circuitbook.separation import midpoint_separation

SEPARATES = 0.9  # a channel "carries the task" at this midpoint separation or more


def channels_at_least(sep: torch.Tensor, threshold: float = SEPARATES) -> list[int]:
    """The channels whose separation sep [d] is >= threshold, best first (ties: lower index first); if none
    reaches it, the single best channel, so that a task always has one."""
    if sep.numel() == 0:
        raise ValueError("no channels to choose from")
    order = sep.argsort(descending=True, stable=True).tolist()
    return [c for c in order if sep[c] >= threshold] or order[:1]


def task_channels(
    sparse: GPT, batch: TaskBatch, site: str, threshold: float = SEPARATES
) -> tuple[list[int], torch.Tensor]:
    """The sparse residual channels at `site` that tell the batch's two classes apart at each prompt's last
    token (`channels_at_least` of their midpoint separation), and every channel's separation [d_sparse]."""
    sep = midpoint_separation(sparse_activations(site, batch.tokens, batch.last, sparse=sparse), batch.labels)
    return channels_at_least(sep, threshold), sep


def task_class_means(sparse: GPT, batch: TaskBatch, site: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The sparse model's class-0 and class-1 mean residuals [d_sparse] at `site` (last tokens)."""
    y = batch.labels
    return class_means(site, batch.tokens[y == 0], batch.tokens[y == 1], batch.last[y == 0], batch.last[y == 1],
                       sparse=sparse)


def class0_prompts(batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The class-0 prompts' tokens [n, pos] and readout positions [n], and the targets [class 0's answer,
    class 1's answer] (token ids, from the first class-0 prompt: a task's answers are the same throughout)."""
    c0 = batch[batch.labels == 0]
    return c0.tokens, c0.last, [int(c0.correct[0]), int(c0.wrong[0])]


@dataclass
class SiteRow:
    """One site of `scan_sites`. Changes are in P(class 0's answer) - P(class 1's answer), strength 1 - 0."""

    site: str
    channels: list[int]  # the task channels, best first
    best_separation: float  # the best channel's midpoint separation
    sparse_change: float  # the sparse model's own answer, on the training class-0 prompts (decides the site)
    dense_change: float  # the dense model's, through the decoder, on the held-out class-0 prompts (a record)


def scan_sites(
    dense: GPT,
    sparse: GPT,
    bridge: Bridge,
    train: TaskBatch,
    held: TaskBatch,
    sites: Sequence[str],
    threshold: float = SEPARATES,
) -> list[SiteRow]:
    """At each site: the task channels (on `train`), and the change of the answer when they are moved from
    their class-0 to their class-1 means (`class_move`, strength 1), in the sparse model itself on train's
    class-0 prompts and in the dense model through the decoder on held's. The targets are train's."""
    tokens, last, targets = class0_prompts(train)
    held_tokens, held_last, _ = class0_prompts(held)
    rows = []
    for s in sites:
        chans, sep = task_channels(sparse, train, s, threshold)
        move = class_move(*task_class_means(sparse, train, s), chans)
        own = (steer_sparse(sparse, tokens, s, move, 1.0, targets, at=last).p_diff
               - steer_sparse(sparse, tokens, s, move, 0.0, targets, at=last).p_diff)
        via = (steer(dense, bridge, held_tokens, s, move, 1.0, targets, at=held_last).p_diff
               - steer(dense, bridge, held_tokens, s, move, 0.0, targets, at=held_last).p_diff)
        rows.append(SiteRow(s, chans, float(sep[chans[0]]), own, via))
    return rows


def choose_site(rows: Sequence[SiteRow]) -> str:
    """The site where the sparse model's own answer changes most (largest |sparse_change|; the earliest site
    on a tie). The dense model's response plays no part."""
    if not rows:
        raise ValueError("no sites to choose from")
    return max(rows, key=lambda r: abs(r.sparse_change)).site  # max keeps the first of equals


@dataclass
class TaskMove:
    """The intervention for a task at one site: moves are [d_sparse] sparse-space changes (strength 1)."""

    site: str
    channels: list[int]  # the task channels, best first
    separations: list[float]  # their midpoint separations
    move: torch.Tensor  # every task channel from its class-0 to its class-1 mean
    best_move: torch.Tensor  # the best channel alone
    control: torch.Tensor  # control_move(move): as many other channels, same dense-space norm


def task_move(
    sparse: GPT, bridge: Bridge, train: TaskBatch, site: str, seed: int = 0, threshold: float = SEPARATES
) -> TaskMove:
    """The task channels at `site` (on `train`), their class move, the best channel's alone, and the control
    (seeded)."""
    chans, sep = task_channels(sparse, train, site, threshold)
    m0, m1 = task_class_means(sparse, train, site)
    move = class_move(m0, m1, chans)
    return TaskMove(site, chans, [float(sep[c]) for c in chans], move, class_move(m0, m1, chans[:1]),
                    control_move(bridge, site, move, seed=seed))


def steering_curve(
    dense: GPT, sparse: GPT, bridge: Bridge, held: TaskBatch, move: TaskMove, strengths: Sequence[float]
) -> list[dict[str, float]]:
    """P(class 0's answer) - P(class 1's answer) on held's class-0 prompts at each strength, for the move
    through the decoder ("dense"), its control ("control"), the best channel alone ("dense_best_channel")
    and the same move in the sparse model itself ("sparse"). -> one row per strength."""
    tokens, last, targets = class0_prompts(held)
    s = move.site
    return [{"strength": st,
             "dense": steer(dense, bridge, tokens, s, move.move, st, targets, at=last).p_diff,
             "control": steer(dense, bridge, tokens, s, move.control, st, targets, at=last).p_diff,
             "sparse": steer_sparse(sparse, tokens, s, move.move, st, targets, at=last).p_diff,
             "dense_best_channel": steer(dense, bridge, tokens, s, move.best_move, st, targets, at=last).p_diff}
            for st in strengths]


def control_changes(dense: GPT, bridge: Bridge, held: TaskBatch, move: TaskMove, n_controls: int) -> np.ndarray:
    """The intervention's null distribution: the change (strength 1 against the unsteered answer) in
    P(class 0's answer) - P(class 1's answer) on held's class-0 prompts for `n_controls` controls
    (`control_move` with seeds 0 .. n_controls - 1). -> [n_controls]."""
    tokens, last, targets = class0_prompts(held)
    base = steer(dense, bridge, tokens, move.site, move.move, 0.0, targets, at=last).p_diff
    return np.array([steer(dense, bridge, tokens, move.site, control_move(bridge, move.site, move.move, seed=i), 1.0,
                           targets, at=last).p_diff - base for i in range(n_controls)])



# ---------------------------------------------------------------- prompts by margin, and both directions

MARGIN_QUANTILES = (0.1, 0.9)  # the band: a reference task's margins between these quantiles


def margin_band(reference: torch.Tensor, quantiles: tuple[float, float] = MARGIN_QUANTILES) -> tuple[float, float]:
    """(lo, hi): the `quantiles` of a reference task's margins [n] (the model's correct minus wrong logit,
    nats): the margins a prompt should have to be "like" the reference task's."""
    if reference.numel() == 0:
        raise ValueError("no reference margins")
    q = torch.quantile(reference.double().flatten(), torch.tensor(quantiles, dtype=torch.float64))
    return float(q[0]), float(q[1])


def band_distance(margins: torch.Tensor, band: tuple[float, float]) -> torch.Tensor:
    """How far each margin [n] lies outside [lo, hi] (0 inside), [n]."""
    lo, hi = band
    return (lo - margins).clamp(min=0) + (margins - hi).clamp(min=0)


def select_by_margin(
    margins: torch.Tensor, labels: torch.Tensor, band: tuple[float, float], n_per_class: int
) -> torch.Tensor:
    """The prompt-selection rule, fixed before any edit is measured. Per class (labels 0 and 1), among the
    prompts the model answers correctly (margin > 0), the `n_per_class` whose margin [n] lies nearest the band
    (inside it: distance 0; equals in pool order); fewer if the class has fewer. The rule reads only the
    unedited margins. -> indices into the pool, class 0's then class 1's, each in pool order."""
    dist = band_distance(margins, band)
    out = []
    for c in (0, 1):
        idx = torch.nonzero((labels == c) & (margins > 0)).flatten()  # pool order
        order = torch.argsort(dist[idx], stable=True)  # nearest the band first; equals keep pool order
        out.append(idx[order[:n_per_class]].sort().values)
    return torch.cat(out)


@dataclass
class DirectedChange:
    """One direction of a task move on its source class's prompts, per prompt [n]: the logit difference
    (the source class's answer minus the other class's, nats) and the same difference in probabilities,
    unedited ("before"), after the move ("after") and after its control ("control")."""

    from_class: int
    logit_before: torch.Tensor
    logit_after: torch.Tensor
    logit_control: torch.Tensor
    p_before: torch.Tensor
    p_after: torch.Tensor
    p_control: torch.Tensor

    @property
    def delta_logit(self) -> float:
        """Mean nats the move shifts the answer towards the other class (positive: towards it)."""
        return float((self.logit_before - self.logit_after).mean())

    @property
    def control_delta_logit(self) -> float:
        return float((self.logit_before - self.logit_control).mean())

    @property
    def delta_p(self) -> float:
        """Mean decrease of P(source answer) - P(other answer) (positive: towards the other class)."""
        return float((self.p_before - self.p_after).mean())

    @property
    def control_delta_p(self) -> float:
        return float((self.p_before - self.p_control).mean())


def directed_change(
    dense: GPT, bridge: Bridge, batch: TaskBatch, move: TaskMove, from_class: int, strength: float = 1.0
) -> DirectedChange:
    """The move from class `from_class` towards the other one, through the decoder, on batch's prompts of that
    class: class 0's get `move.move` (class 0 -> 1 means), class 1's get -move.move (class 1 -> 0); the control
    is `move.control` with the same sign (as many other channels, the same dense-space norm). Read at each
    prompt's last token as the source class's answer minus the other class's."""
    if from_class not in (0, 1):
        raise ValueError(f"from_class must be 0 or 1, got {from_class}")
    sub = batch[batch.labels == from_class]
    if len(sub.labels) == 0:
        raise ValueError(f"no prompts of class {from_class}")
    targets = [int(sub.correct[0]), int(sub.wrong[0])]  # a task's answers are the same throughout
    sign = 1.0 if from_class == 0 else -1.0
    run = lambda m, st: steer(dense, bridge, sub.tokens, move.site, sign * m, st, targets, at=sub.last)
    before, after, ctl = run(move.move, 0.0), run(move.move, strength), run(move.control, strength)
    pd = lambda s: (s.probs[:, 0] - s.probs[:, 1]).cpu()
    return DirectedChange(from_class, before.logit_diffs.cpu(), after.logit_diffs.cpu(), ctl.logit_diffs.cpu(),
                          pd(before), pd(after), pd(ctl))


def control_logit_changes(
    dense: GPT, bridge: Bridge, batch: TaskBatch, move: TaskMove, from_class: int, n_controls: int
) -> np.ndarray:
    """The null of `directed_change` in nats: for `control_move` with seeds 0 .. n_controls - 1 (seed 0 is
    `move.control`), signed as the edit is in that direction, the mean nats the control moves batch's
    `from_class` prompts towards the other class at strength 1. -> [n_controls]."""
    if from_class not in (0, 1):
        raise ValueError(f"from_class must be 0 or 1, got {from_class}")
    sub = batch[batch.labels == from_class]
    targets = [int(sub.correct[0]), int(sub.wrong[0])]
    sign = 1.0 if from_class == 0 else -1.0
    run = lambda m, st: steer(dense, bridge, sub.tokens, move.site, sign * m, st, targets, at=sub.last).logit_diffs
    before = run(move.move, 0.0)
    return np.array([float((before - run(control_move(bridge, move.site, move.move, seed=i), 1.0)).mean())
                     for i in range(n_controls)])
