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

Every choice uses the sparse model and the training prompts only; the dense model is measured, never
consulted. Prompts are `TaskBatch`es with labels 0/1; moves go from class 0 towards class 1, and are read
on the class-0 prompts as P(class 0's answer) - P(class 1's answer).
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

