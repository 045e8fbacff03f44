"""How good is a decomposition? Metrics against known answers (toys) and sparsity of importances.

- MMCS: mean over ground-truth features j of max_c cos(subcomponent c's slice j, W's slice j).
  For a matrix whose features are its inputs (TMS `linear1`), the slice is column j: u_c v_c[j].
  For one whose features are its outputs (`linear2`), it is row j: u_c[j] v_c.
- ML2R: mean over j of ‖best-matching slice‖ / ‖W's slice‖ (1: the right size, < 1: shrinkage).
- Alive subcomponents: important (g > 0.1) on some inputs (SPD's activation density > 0).
- L0: number of subcomponents with g > threshold per input, averaged.
- Identity-insertion CI error: on single-feature inputs, count CI entries that break the expected
  pattern (identity: one subcomponent per feature; dense: the same k subcomponents for every input).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from circuitbook.decomposition.components import ComponentModel


def _slices(U: torch.Tensor, V: torch.Tensor, dim: Literal["in", "out"]) -> torch.Tensor:
    """Subcomponent slices per feature: [n_features, C, d]. U: [d_out, C], V: [d_in, C]."""
    if dim == "in":  # column j of u_c v_cᵀ is u_c v_c[j]
        return torch.einsum("jc,oc->jco", V, U)
    return torch.einsum("jc,ic->jci", U, V)  # row j is u_c[j] v_c


@torch.no_grad()
def feature_matches(
    U: torch.Tensor, V: torch.Tensor, W: torch.Tensor, dim: Literal["in", "out"] = "in"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each ground-truth feature j: (best subcomponent [n], its cosine [n], its norm ratio [n]).

    U [d_out, C], V [d_in, C]: the subcomponents; W [d_out, d_in]: the target matrix.
    """
    S = _slices(U, V, dim)  # [n, C, d]
    truth = W.T if dim == "in" else W  # [n, d]: feature j's true slice
    cos = F.cosine_similarity(S, truth.unsqueeze(1), dim=-1)  # [n, C]
    best = cos.argmax(-1)  # [n]
    norms = S.norm(dim=-1).gather(1, best.unsqueeze(1)).squeeze(1)  # [n]
    return best, cos.max(-1).values, norms / truth.norm(dim=-1)


def mmcs_ml2r(
    U: torch.Tensor, V: torch.Tensor, W: torch.Tensor, dim: Literal["in", "out"] = "in"
) -> tuple[float, float]:
    """(MMCS, ML2R) of subcomponents U [d_out, C], V [d_in, C] against ground truth W [d_out, d_in]."""
    _, cos, ratio = feature_matches(U, V, W, dim)
    return float(cos.mean()), float(ratio.mean())


def module_mmcs_ml2r(
    model: ComponentModel, name: str, dim: Literal["in", "out"] = "in"
) -> tuple[float, float]:
    """MMCS and ML2R of one decomposed matrix against its own target weight."""
    c = model.component(name)
    return mmcs_ml2r(c.U, c.V, model.target_weight(name), dim)


@torch.no_grad()
def activation_density(
    model: ComponentModel,
    data_fn: Callable[[int, torch.Generator], torch.Tensor],
    n: int = 10_000,
    threshold: float = 0.1,
    seed: int = 1,
) -> dict[str, torch.Tensor]:
    """Fraction of `n` inputs from `data_fn(n, generator)` on which g_c > threshold: name -> [C]."""
    x = data_fn(n, torch.Generator().manual_seed(seed)).to(next(model.parameters()).device)
    _, inputs = model.run_with_inputs(x)
    ci = model.causal_importances(inputs).lower
    return {k: (g > threshold).float().reshape(-1, g.shape[-1]).mean(0) for k, g in ci.items()}


def alive_count(density: dict[str, torch.Tensor], min_density: float = 0.0) -> dict[str, int]:
    """Subcomponents per matrix that are important (g > 0.1) on more than `min_density` of inputs.

    This is SPD's activation-density notion of "alive". (A mean-g > 0.1 rule would call every
    TMS subcomponent dead: each feature is present on only 5% of inputs.)
    """
    return {k: int((v > min_density).sum()) for k, v in density.items()}


def ci_l0(ci: dict[str, torch.Tensor], threshold: float = 0.1) -> dict[str, float]:
    """Mean number of subcomponents with g > threshold per input, per matrix."""
    return {k: float((g > threshold).float().sum(-1).mean()) for k, g in ci.items()}


@torch.no_grad()
def single_feature_ci(
    model: ComponentModel, n_features: int, magnitude: float = 0.75
) -> dict[str, torch.Tensor]:
    """Causal importances on the n inputs with one feature at `magnitude`: name -> [n, C]."""
    _, inputs = model.run_with_inputs(torch.eye(n_features, device=next(model.parameters()).device) * magnitude)
    return model.causal_importances(inputs).lower


def identity_pattern_error(ci: torch.Tensor, tol: float = 0.1) -> int:
    """Entries of ci [n, C] off a one-subcomponent-per-feature pattern (greedy column matching)."""
    n, C = ci.shape
    used: list[int] = []
    for j in range(n):
        order = ci[j].argsort(descending=True).tolist()
        used.append(next((c for c in order if c not in used), order[0]))
    perm = used + [c for c in range(C) if c not in used]
    p = ci[:, perm]
    diag = torch.zeros_like(p, dtype=torch.bool)
    diag[torch.arange(n), torch.arange(n)] = True
    return int((p[~diag] > tol).sum() + (p[diag] < 1 - tol).sum())


def dense_pattern_error(ci: torch.Tensor, k: int, tol: float = 0.1) -> int:
    """Entries of ci [n, C] off a pattern where the same k subcomponents are fully important everywhere."""
    order = ci.sum(0).argsort(descending=True)
    p = ci[:, order]
    return int((p[:, :k] < 1 - tol).sum() + (p[:, k:] > tol).sum())


def identity_ci_error(
    model: ComponentModel,
    n_features: int,
    identity: list[str],
    dense: dict[str, int],
    magnitude: float = 0.75,
) -> dict[str, int]:
    """CI pattern errors on single-feature inputs: identity pattern for `identity` matrices,
    dense-k pattern for `dense` ({name: k}, e.g. the inserted m×m identity: k = m)."""
    ci = single_feature_ci(model, n_features, magnitude)
    out = {n: identity_pattern_error(ci[n]) for n in identity}
    out.update({n: dense_pattern_error(ci[n], k) for n, k in dense.items()})
    return out
