"""SAE-Track (Xu et al. 2024): features followed across a model's training checkpoints.

An SAE at the first checkpoint, each next one initialised from the previous and fine-tuned briefly; then
the progress measure
    M_i(t) = mean pairwise cos of feature i's top tokens' activations at t - the same for random tokens
and the decoder drift (cosine of each feature's direction to its final one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from circuitbook.dictionaries.sae import SAE, decoder_cosine, evaluate, steps_to_fvu, train_sae
from circuitbook.diffing.features import top_token


@dataclass(frozen=True, kw_only=True)
class TrackConfig:
    n_features: int = 1024  # dictionary size
    k: int = 16  # TopK: active features per token
    steps_first: int = 3000  # training steps of the first checkpoint's SAE, from scratch
    steps_next: int = 150  # each next checkpoint: steps fine-tuned from the previous (about 1/20)
    steps_scratch: int = 3000  # training steps of the from-scratch comparison at each later checkpoint
    batch_size: int = 1024  # activation rows per step
    lr: float = 1e-3  # learning rate of every run
    seed: int = 0  # seed of the first SAE; checkpoint t's runs use seed + t


@dataclass
class Track:
    steps: list[int]  # the checkpoints' training steps, in order
    saes: dict[int, SAE]  # one dictionary per checkpoint, feature indices aligned
    history: dict[int, dict]


def sae_track(acts: dict[int, Tensor], n_features: int, k: int, steps_first: int, steps_next: int,
              seed: int = 0, progress: bool = True, **kw) -> Track:
    """SAE at the first checkpoint, then each next one initialised from the previous and fine-tuned.

    acts: {checkpoint step: [N, d]}. Keywords go to `train_sae` (batch_size, lr, ...).
    """
    steps = sorted(acts)
    saes, hist = {}, {}
    saes[steps[0]], hist[steps[0]] = train_sae(acts[steps[0]], n_features, k, steps=steps_first, seed=seed,
                                               progress=progress, **kw)
    for prev, t in zip(steps, steps[1:]):
        saes[t], hist[t] = train_sae(acts[t], init=saes[prev], steps=steps_next, seed=seed + t,
                                     progress=progress, **kw)
    return Track(steps, saes, hist)


def track_vs_scratch(acts: dict[int, Tensor], track: Track, steps_scratch: int, seed: int = 0,
                     window: int = 20, progress: bool = True, **kw) -> dict[int, dict]:
    """For each checkpoint after the first: steps to the same FVU, recursive init vs from scratch.

    The target is the tracked fine-tune's final training FVU (mean of its last `window` steps);
    "steps_track" is the first step at which the tracked run's windowed FVU reaches it, "steps_scratch"
    the same for an SAE trained from scratch for `steps_scratch` steps (None: never reached).
    "ratio" = steps_track / steps_scratch (recursive over from-scratch; with None, steps_track /
    steps_scratch-budget, an upper bound, and "bound" is True).
    Returns {step: {"target_fvu", "steps_track", "steps_scratch", "ratio", "bound", "scratch_final_fvu"}}.
    """
    first = track.saes[track.steps[0]]
    out = {}
    for t in track.steps[1:]:
        h = track.history[t]
        target = float(np.mean(h["fvu"][-window:]))
        _, hs = train_sae(acts[t], first.n_features, first.k, steps=steps_scratch, seed=seed + t,
                          progress=progress, **kw)
        s_track = steps_to_fvu(h, target, window) or len(h["fvu"])
        s_scratch = steps_to_fvu(hs, target, window)
        out[t] = {"target_fvu": target, "steps_track": s_track, "steps_scratch": s_scratch,
                  "ratio": s_track / (s_scratch or steps_scratch), "bound": s_scratch is None,
                  "scratch_final_fvu": float(np.mean(hs["fvu"][-window:]))}
    return out


def running_mean(x: Sequence[float], window: int) -> np.ndarray:
    """Mean over the last `window` entries at each position (fewer at the start)."""
    c = np.concatenate([[0.0], np.cumsum(np.asarray(x, dtype=np.float64))])
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def recursive_vs_scratch(acts: Tensor, prev: SAE, steps: int, seed: int = 0, window: int = 20,
                         progress: bool = True, **kw) -> dict:
    """Steps to the from-scratch FVU: a recursively initialised SAE against one trained from scratch.

    Both runs train on `acts` [N, d] for `steps` steps with the same schedule, batches and seed; one starts
    from `prev` (the previous checkpoint's tracked SAE), the other from a fresh init of the same size.
      target          the from-scratch run's final FVU: its training FVU averaged over the last `window` steps
      steps_scratch   first step at which the from-scratch run's `window`-step running-mean FVU <= target
      steps_recursive the same for the recursive run (None: it never gets there within `steps`)
      ratio           steps_recursive / steps_scratch (None when never reached)
    Also the two running-mean curves (every 10th step) and both runs' final FVU.
    """
    _, hs = train_sae(acts, prev.n_features, prev.k, steps=steps, seed=seed, progress=progress, **kw)
    _, hr = train_sae(acts, init=prev, steps=steps, seed=seed, progress=progress, **kw)
    cs, cr = running_mean(hs["fvu"], window), running_mean(hr["fvu"], window)
    target = float(cs[-1])
    n_s = int(np.argmax(cs <= target)) + 1
    reached = np.flatnonzero(cr <= target)
    n_r = int(reached[0]) + 1 if len(reached) else None
    return {"target": target, "steps_scratch": n_s, "steps_recursive": n_r,
            "ratio": None if n_r is None else n_r / n_s, "recursive_final_fvu": float(cr[-1]),
            "first_step_fvu": {"scratch": float(hs["fvu"][0]), "recursive": float(hr["fvu"][0])},
            "curve_scratch": cs[9::10].round(5).tolist(), "curve_recursive": cr[9::10].round(5).tolist()}


def closest_spacing(start_fvu: dict[int, float], final_fvu: float, factor: float = 2.0) -> int | None:
    """The checkpoint spacing for a recursive-init comparison: the smallest candidate spacing at which the
    previous checkpoint's SAE starts on the next checkpoint's activations at an FVU of at least `factor` times
    its own final FVU (close checkpoints, but not the same model). start_fvu: {spacing in training steps: FVU of
    the step-s SAE on the step s + spacing activations}; final_fvu: that SAE's FVU on its own activations.
    None when no candidate is far enough."""
    far = [d for d in sorted(start_fvu) if start_fvu[d] >= factor * final_fvu]
    return far[0] if far else None


def recursive_budgets(acts: Tensor, prev: SAE, budgets: Sequence[int], steps_scratch: int, seed: int = 0,
                      scratch: SAE | None = None, progress: bool = True, **kw) -> dict:
    """Recursive init against from scratch, each run with its own schedule (`train_sae`'s constant LR, then
    decay over its last 20%), compared at equal steps.

    acts [N, d]: the next checkpoint's activations; prev: the previous checkpoint's SAE. The target is the FVU
    (`evaluate` on `acts`) of an SAE trained from scratch for `steps_scratch` steps (`scratch`, when given, is
    that SAE already trained). For each budget n in ascending order, one run of n steps from `prev` and one
    from scratch; both stop at the first budget whose recursive run reaches the target.
      steps_recursive  the smallest budget whose recursive run reaches the target (None: none does)
      ratio            steps_recursive / steps_scratch (None when none does)
    Also start_fvu (prev on acts), fvu_recursive and fvu_scratch {n: FVU} and the from-scratch SAE ("sae").
    """
    if scratch is None:
        scratch, _ = train_sae(acts, prev.n_features, prev.k, steps=steps_scratch, seed=seed, progress=progress, **kw)
    target = float(evaluate(scratch, acts)["fvu"])
    rec, scr, n_r = {}, {}, None
    for n in sorted(budgets):
        r, _ = train_sae(acts, init=prev, steps=n, seed=seed, progress=progress, **kw)
        rec[n] = float(evaluate(r, acts)["fvu"])
        s, _ = train_sae(acts, prev.n_features, prev.k, steps=n, seed=seed, progress=progress, **kw)
        scr[n] = float(evaluate(s, acts)["fvu"])
        if rec[n] <= target:
            n_r = n
            break
    return {"target": target, "steps_scratch": steps_scratch, "steps_recursive": n_r,
            "ratio": None if n_r is None else n_r / steps_scratch, "start_fvu": float(evaluate(prev, acts)["fvu"]),
            "fvu_recursive": rec, "fvu_scratch": scr, "sae": scratch}


def mean_pairwise_cos(x: Tensor) -> Tensor:
    """Mean cosine over distinct pairs of the rows of x [..., m, d]. -> [...]."""
    u = F.normalize(x, dim=-1)
    m = x.shape[-2]
    s = u.sum(-2)  # sum_ij u_i . u_j = |sum u|^2, minus the m diagonal terms (each 1 unless the row is 0)
    diag = u.pow(2).sum((-1, -2))
    return (s.pow(2).sum(-1) - diag) / (m * (m - 1))


def random_set(n_rows: int, m: int, seed: int = 0) -> Tensor:
    """m distinct random row indices of an activation set."""
    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))[:m]


@torch.no_grad()
def progress_measure(acts: dict[int, Tensor], sets: Tensor, rand: Tensor, center: bool = False) -> Tensor:
    """M_i(t) = mean pairwise cos of acts_t[sets[i]] - mean pairwise cos of acts_t[rand] (SAE-Track).

    acts: {step: [N, d]} on the same tokens at every checkpoint; sets [n_f, m] row indices (feature i's
    top tokens, chosen at the final checkpoint); rand [m'] random rows. The paper's measure uses the raw
    activations (`center=False`); `center=True` subtracts each checkpoint's mean activation first (a check
    that the shared offset of the residual stream is not what moves the measure).
    Returns [n_f, n_checkpoints], checkpoints in sorted order.
    """
    out = []
    for t in sorted(acts):
        a = acts[t]
        if center:
            a = a - a.mean(0)
        out.append(mean_pairwise_cos(a[sets]) - mean_pairwise_cos(a[rand]))
    return torch.stack(out, 1)


def decoder_drift(track: Track) -> Tensor:
    """[n_checkpoints, n_features]: cosine of each feature's decoder at each checkpoint to its final one."""
    final = track.saes[track.steps[-1]]
    return torch.stack([decoder_cosine(track.saes[t], final) for t in track.steps])


TRANSITIONS = ("maintain", "shift", "group", "other")


def classify_transitions(
    top_first: Tensor, top_final: Tensor, windows: Tensor, progress: Tensor,
    overlap: float = 0.5, token_level: float = 0.5, rise: float = 0.1,
) -> list[str]:
    """Transition pattern of each feature between the first and the final checkpoint (SAE-Track's three).

    top_first, top_final: [n_f, m] top-activating rows under that checkpoint's SAE (`top_activations`);
    progress: [n_f, n_ckpt] from `progress_measure` (sets chosen at the final checkpoint). A feature is
    token-level when one token id holds >= `token_level` of its top rows.
      maintain  it reads the same thing: Jaccard(top rows first, final) >= overlap, or it is token-level at
                both ends on the same token
      shift     else, if it was token-level at first (it moved to another token, or became concept-level)
      group     else (its first top rows were scattered), if its final top tokens cluster more than at the
                first checkpoint: M(final) - M(first) >= rise
      other     the rest
    """
    id_a, conc_a = top_token(top_first, windows)
    id_b, conc_b = top_token(top_final, windows)
    labels = []
    for f in range(top_first.shape[0]):
        a, b = set(top_first[f].tolist()), set(top_final[f].tolist())
        jac = len(a & b) / max(1, len(a | b))
        same_token = conc_a[f] >= token_level and conc_b[f] >= token_level and id_a[f] == id_b[f]
        if jac >= overlap or same_token:
            labels.append("maintain")
        elif conc_a[f] >= token_level:
            labels.append("shift")
        elif float(progress[f, -1] - progress[f, 0]) >= rise:
            labels.append("group")
        else:
            labels.append("other")
    return labels
