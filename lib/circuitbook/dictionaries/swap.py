"""Feature swaps: edit the transcoder features that tell class A inputs from class B so that A reads as B
(chapter 6's Mars -> Earth), and the same-norm random-feature control of that edit.

The rule: at each edited (layer, position), rank features by their mean activation on A inputs minus on B
inputs; set the top n (A's) to 0 and the bottom n (B's) to their mean on B (`intervention_hooks` applies
it). The control draws 2n other features at random per (layer, position) and moves the MLP output along
them by exactly as much as the swap moves it, input by input, so it differs from the swap in direction alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from circuitbook.dictionaries.attribution import Intervention, live_mlp_edit_hooks
from circuitbook.dictionaries.sae import Transcoder


def swap_interventions(
    z_a: dict[int, Tensor], z_b: dict[int, Tensor], layers: Iterable[int], positions: Iterable[int], n: int
) -> list[Intervention]:
    """The swap A -> B. z_a, z_b {layer: [B, S, F]}: feature activations on A and B inputs (the selection half).
    Per (layer, position): the n features with the largest mean(A) - mean(B) set to 0, the n with the
    smallest set to their mean on B."""
    ivs = []
    for la in layers:
        for p in positions:
            diff = z_a[la][:, p].mean(0) - z_b[la][:, p].mean(0)  # [F]
            ivs += [Intervention(la, p, f, 0.0) for f in diff.topk(n).indices.tolist()]
            ivs += [Intervention(la, p, f, float(z_b[la][:, p, f].mean())) for f in (-diff).topk(n).indices.tolist()]
    return ivs


def random_control_features(
    interventions: Sequence[Intervention], n_features: int, n: int, seed: int
) -> dict[tuple[int, int], tuple[list[int], list[int]]]:
    """Per (layer, position) of a swap of n features each way: (down, up), n random features each, drawn
    without replacement from the features the swap does not touch there (a seeded CPU generator, the
    (layer, position) pairs in sorted order)."""
    by_site: dict[tuple[int, int], list[Intervention]] = {}
    for iv in interventions:
        if iv.pos is None:
            raise ValueError("the control needs a position per intervention")
        by_site.setdefault((iv.layer, iv.pos), []).append(iv)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for site, ivs in sorted(by_site.items()):
        used = torch.zeros(n_features, dtype=torch.bool)
        used[[iv.feature for iv in ivs]] = True
        free = torch.nonzero(~used)[:, 0]
        pick = free[torch.randperm(len(free), generator=g)[: 2 * n]].tolist()
        out[site] = (pick[:n], pick[n:])
    return out


def random_control_hooks(
    transcoders: Sequence[Transcoder],
    interventions: Sequence[Intervention],
    control: dict[tuple[int, int], tuple[list[int], list[int]]],
    prefix: str = "",
) -> list[tuple[str, Callable]]:
    """Forward hooks for the control of a swap: at each site (layer, position) the MLP output moves by
    |delta| u / |u|, u = the sum of the random up features' decoder columns minus the down ones' (`control`,
    from `random_control_features`), delta = the edit `intervention_hooks` makes there on that input
    (sum (v - z) d, z live). prefix: "" for a GPT, "lm." for a VLM's language model."""
    by_site: dict[int, dict[int, list[Intervention]]] = {}
    for iv in interventions:
        by_site.setdefault(iv.layer, {}).setdefault(iv.pos, []).append(iv)
    hooks: list[tuple[str, Callable]] = []
    for layer, sites in sorted(by_site.items()):
        tc = transcoders[layer]

        def delta_of(z: Tensor, out: Tensor, tc: Transcoder = tc, sites: dict = sites, layer: int = layer) -> Tensor:
            W = tc.W_dec.detach()  # [d, F]
            delta = torch.zeros_like(out)  # [B, S, d]
            for pos, ivs in sites.items():
                feats = [iv.feature for iv in ivs]
                coef = torch.tensor([iv.value for iv in ivs], device=out.device) - z[:, pos, feats]  # [B, n]
                norm = (coef @ W[:, feats].T).norm(dim=-1, keepdim=True)  # [B, 1]: the swap's edit's norm
                down, up = control[(layer, pos)]
                u = W[:, up].sum(1) - W[:, down].sum(1)  # [d]
                delta[:, pos] += norm * (u / u.norm())
            return delta

        hooks += live_mlp_edit_hooks(tc, layer, delta_of, prefix)
    return hooks
