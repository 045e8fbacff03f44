"""Attention rollout for a ViT: where in the image does an image token get its information?

Convention. A layer's attention pattern A[h, i, j] is the weight query token i puts on
key token j (rows sum to 1), so the attention sublayer writes, at token i, a mix of the
tokens j. With the residual stream, one layer is roughly h_out = A~ h_in with

    A~ = rownorm(mean_{kept heads} A + I)                 # [T, T]

(token index first, features second). Composing the last K of L layers:

    R = A~(L) A~(L-1) ... A~(L-K+1)                        # [T, T], rows sum to 1

R[i, j] is how much output token i draws on input token j: row i of R, restricted to
the patch tokens and reshaped to the patch grid, is token i's heatmap. The paper writes
the same product as A~(L-K+1) ... A~(L): that is the transposed, column-vector view
(R.T = A~(L-K+1).T ... A~(L).T, information flowing from inputs to outputs). The reference
implementation (vlm-circuit-tracing) accumulates `rollout = A~(l) @ rollout` for l
increasing, which is our R.

Heads: per layer only the fraction q (default 0.30, at least one) of heads with the lowest
mean row entropy are kept: the focused heads, not the ones that spread attention evenly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def head_entropy(attn: Tensor) -> Tensor:
    """Mean row entropy (nats) of each head. attn: [..., H, T, T] -> [..., H]."""
    p = attn / attn.sum(-1, keepdim=True).clamp_min(1e-12)
    ent = -(p * p.clamp_min(1e-12).log()).sum(-1)  # [..., H, T]
    return ent.mean(-1)


def n_kept_heads(n_heads: int, q: float) -> int:
    return max(1, int(round(n_heads * q)))


def layer_rollout(attn: Tensor, q: float = 0.30, add_identity: bool = True) -> Tensor:
    """One layer's rollout matrix A~. attn: [..., H, T, T] -> [..., T, T] (rows sum to 1).

    Keeps the n = max(1, round(q H)) lowest-entropy heads, averages them, adds I, renormalises rows.
    """
    H, T = attn.shape[-3], attn.shape[-1]
    keep = (-head_entropy(attn)).topk(n_kept_heads(H, q), dim=-1).indices  # [..., n]
    idx = keep[..., None, None].expand(*keep.shape, T, T)
    a = torch.take_along_dim(attn, idx, dim=-3).mean(-3)  # [..., T, T]
    if add_identity:
        a = a + torch.eye(T, dtype=a.dtype, device=a.device)
    return a / a.sum(-1, keepdim=True).clamp_min(1e-12)


def attention_rollout(
    attns: Sequence[Tensor] | Tensor, last_k: int = 4, q: float = 0.30, add_identity: bool = True
) -> Tensor:
    """R = A~(L) ... A~(L-K+1) over the last `last_k` layers (see the module docstring for the order).

    attns: per-layer patterns, a list of [..., H, T, T] or a tensor [L, ..., H, T, T], first layer first.
    Returns R: [..., T, T]; R[i, j] = share of output token i that comes from input token j.
    """
    layers = list(attns)
    if last_k < 1:
        raise ValueError("last_k must be >= 1")
    R = None
    for attn in layers[-last_k:]:  # earliest kept layer first
        a = layer_rollout(attn, q=q, add_identity=add_identity)
        R = a if R is None else a @ R  # the later layer multiplies from the left
    return R


def token_maps(
    R: Tensor,
    tokens: Sequence[int] | Tensor,
    grid: tuple[int, int],
    patch_start: int = 0,
    along: str = "row",
) -> Tensor:
    """Rollout maps of chosen tokens on the patch grid. R: [T, T] -> [n_tokens, gh, gw].

    Patch tokens are R's indices patch_start .. patch_start + gh*gw - 1, row-major over the grid
    (a CLS token at 0 gives patch_start=1). along="row": where token i draws from (the usual
    heatmap); along="col": where token j's information went.
    """
    gh, gw = grid
    tokens = torch.as_tensor(tokens, dtype=torch.long, device=R.device)
    patches = slice(patch_start, patch_start + gh * gw)
    m = R[tokens, patches] if along == "row" else R[patches, tokens].T  # [n, gh*gw]
    return m.reshape(len(tokens), gh, gw)


def pool_maps(maps_by_patch: Tensor, block: int, reduce: str = "max") -> Tensor:
    """Maps of pooled image tokens (a `block` x `block` square of patches each, as a VLM projector pools).

    maps_by_patch: [gh, gw, gh, gw] (map of every patch token, e.g. `token_maps(R, range(P), grid)` reshaped)
    -> [gh/block * gw/block, gh, gw]: per pooled token, the max (or mean) of its patches' maps.
    """
    gh, gw = maps_by_patch.shape[:2]
    if gh % block or gw % block:
        raise ValueError(f"grid {gh}x{gw} is not divisible by block={block}")
    m = maps_by_patch.reshape(gh // block, block, gw // block, block, gh, gw).permute(0, 2, 1, 3, 4, 5)
    m = m.reshape((gh // block) * (gw // block), block * block, gh, gw)
    return m.amax(1) if reduce == "max" else m.mean(1)


def upsample(maps: Tensor, image_size: int | tuple[int, int], mode: str = "nearest") -> Tensor:
    """[n, gh, gw] -> [n, H, W]; mode "nearest" (no smoothing, as the paper) or "bilinear"."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(maps[:, None].float(), size=size, mode=mode, **kw)[:, 0]


def rollout_heatmaps(
    attns: Sequence[Tensor] | Tensor,
    tokens: Sequence[int] | Tensor,
    grid: tuple[int, int],
    image_size: int | tuple[int, int],
    patch_start: int = 0,
    last_k: int = 4,
    q: float = 0.30,
    mode: str = "nearest",
    along: str = "row",
    block: int = 1,
    reduce: str = "max",
) -> Tensor:
    """Rollout heatmaps of `tokens` at image resolution: [n_tokens, H, W]. See `attention_rollout`.

    With block > 1, `tokens` index pooled image tokens (row-major over the grid of block x block
    squares, as a projector that pools patches hands them to the language model), and each map is the
    max (or mean) over the square's patch maps.
    """
    R = attention_rollout(attns, last_k=last_k, q=q)
    if block == 1:
        maps = token_maps(R, tokens, grid, patch_start, along)
    else:
        gh, gw = grid
        every = token_maps(R, range(patch_start, patch_start + gh * gw), grid, patch_start, along)
        maps = pool_maps(every.reshape(gh, gw, gh, gw), block, reduce)[torch.as_tensor(tokens)]
    return upsample(maps, image_size, mode)


def top_region(heatmap: Tensor, top_fraction: float) -> Tensor:
    """Boolean mask of the top `top_fraction` of pixels by value (ties at the cut-off are all kept)."""
    flat = heatmap.flatten().float()
    n = max(1, int(round(top_fraction * flat.numel())))
    cut = flat.topk(n).values[-1]
    return heatmap >= cut


def iou(heatmap: Tensor, mask: Tensor, top_fraction: float | None = None) -> float:
    """IoU between the heatmap's top region and a ground-truth mask ([H, W] each).

    top_fraction defaults to the mask's own area fraction, so both regions are about the same size.
    """
    mask = mask.to(heatmap.device).bool()
    if top_fraction is None:
        top_fraction = float(mask.float().mean())
    region = top_region(heatmap, top_fraction)
    union = (region | mask).sum()
    return float((region & mask).sum() / union) if union > 0 else 0.0
