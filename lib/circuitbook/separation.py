"""How well one activation tells two classes of prompts apart: the share of prompts on their class's side.

Both measures split the prompts at a threshold and score a channel by the mean, over the two classes, of
the fraction of each class strictly on its own side, in whichever orientation is better:

    score = max( (P_A(h > t) + P_B(h < t)) / 2,  (P_A(h < t) + P_B(h > t)) / 2 )     in [0, 1]

1 means every prompt is on its class's side, 0.5 is chance. Sides are strict, so a value exactly at the
threshold counts for neither class (a channel that never changes scores 0 under either measure). They
differ only in the threshold t:

    sign_separation       t = 0: the *sign* of the activation carries the class. Use it for a node whose
                          sign is its meaning, e.g. chapter 3's quote-type node (positive for one quote,
                          negative for the other), where a node that is merely larger for one class but
                          positive for both should not count.
    midpoint_separation   t = the midpoint between the two class means, per channel: *any* consistent
                          shift carries the class, whatever the offset. Use it to find channels that
                          carry a task when activations need not be centred, e.g. chapter 4's sparse
                          residual channels (`bridges_tasks.task_channels`).

A channel that is always positive, larger for class B, scores 1 under midpoint_separation and 0.5 under
sign_separation.
"""

from __future__ import annotations

import torch


def _separation_at(h: torch.Tensor, labels: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """The share of prompts strictly on their class's side of `threshold`, best orientation. h [batch, ...]."""
    a, b = h[labels == 0], h[labels == 1]
    up = ((a > threshold).float().mean(0) + (b < threshold).float().mean(0)) / 2
    down = ((a < threshold).float().mean(0) + (b > threshold).float().mean(0)) / 2
    return torch.maximum(up, down)


def sign_separation(h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How well the sign of each channel tells the labels apart (threshold 0): h [batch, ...] (one channel:
    [batch]), labels [batch] in {0, 1} -> [...] in [0, 1] (1: each class entirely on its own side of zero,
    0.5: chance)."""
    return _separation_at(h, labels, 0.0)


def midpoint_separation(h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How well each channel's side of the midpoint between its two class means tells the labels apart:
    h [batch, ...], labels [batch] in {0, 1} -> [...] in [0, 1] (1: every prompt on its class's side, 0.5:
    chance). Strict on both sides, so a channel that never changes scores 0, not 1."""
    mid = (h[labels == 0].mean(0) + h[labels == 1].mean(0)) / 2
    return _separation_at(h, labels, mid)


def best_sign_separating(values: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[str, float]:
    """The node whose sign best tells the labels apart: `values` {node: activation [batch]} (in a fixed order,
    e.g. forward order), labels [batch] in {0, 1} -> (node, its `sign_separation`). Ties go to the first node of
    `values`, so the choice does not depend on anything but that order. Chapter 3's rule for the quote-type node,
    fixed before it is measured."""
    if not values:
        raise ValueError("no candidate nodes")
    scores = {k: float(sign_separation(v, labels)) for k, v in values.items()}
    best = max(scores.values())
    node = next(k for k, v in scores.items() if v == best)
    return node, best
