"""Weight-sparse training: top-k projection of every matrix, L0 annealing, the sharkfin learning rate.

The recipe of Gao et al. (2025), written against any `nn.Module`:

    after every optimizer step, in every weight matrix (embeddings, unembedding and biases too),
    keep the k entries of largest magnitude and zero the rest; k = kept_fraction * numel,
    the same fraction for every matrix, annealed linearly from dense to the target over the first
    half of training. Gradients and Adam moments stay dense, so a zeroed weight can come back.

Pieces:
    SparsityConfig                                 the recipe's sparsity settings, stored with each model
    kept_fraction(step, total_steps, target=...)   the L0 annealing schedule
    sharkfin(step, total_steps, kept=...)          the learning-rate multiplier
    WeightSparsifier(model, schedule).step(step)   the projection, called after optimizer.step()
    clip_grad_rms_(params)                         joint gradient RMS clipping to 1
    sparse_adamw(params, lr)                       AdamW(betas=(0.9, 0.95), weight_decay=0.1, eps=0.1)
    nonzeros / total_l0 / row_nonzeros / dead_neurons / to_csr / CSRLinear   for the chapter's pictures

Decisions (the paper leaves them open; these are the book's):
- Norm gains, attention-sink logits and the dense bigram table are not projected (`DEFAULT_EXCLUDE`).
  RMSNorm gains fold into the next matrix's columns without changing its L0, so sparsifying them would
  count nothing; a sink logit is one scalar per head; the bigram table is dense by design.
- The "at least j nonzeros per neuron / attention channel" floor is applied to the rows of every
  `nn.Linear` weight (rows = output units: MLP neurons, q/k/v channels, residual channels written by
  W_O / W_out, logits). Embedding rows are tokens, not neurons, and biases are vectors: no floor.
- The floor counts inside the budget: a floored matrix keeps each row's top j, then the largest of the
  rest until exactly k survive. Where j * rows > k (a very sparse matrix with few inputs per row) the
  floor wins and the matrix keeps exactly j * rows. So the kept count is always
  `max(k, min(j, cols) * rows)` -- exact and known in advance (`expected_nonzeros`).
- Exact k: ties in magnitude are broken toward the lower flat index, so exactly k entries survive and
  the same weights always give the same mask.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn as nn

from circuitbook.train import clip_grad_rms_ as clip_grad_rms_  # gradient RMS clipping lives with the loop

# Parameters matching any of these (re.search on the parameter name) are never projected.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    r"(^|\.)(ln\w*|\w*norm\w*)\.",  # norm gains (and LayerNorm biases): folded into the next weights
    r"(^|\.)\w*sink\w*$",  # per-head attention-sink logits
    r"(^|\.)bigram\.",  # the dense bigram table added to the logits
)


# ----------------------------------------------------------------------------- schedules
# Plain functions f(step, total_steps) -> float; bind the keyword arguments with functools.partial.


@dataclass(frozen=True, kw_only=True)
class SparsityConfig:
    """How a weight-sparse model is sparsified while it trains (stored with the model's artifact)."""

    kept_fraction: float  # share of every projected matrix's entries kept once the anneal ends
    min_per_row: int = 4  # j: each nn.Linear row keeps at least this many entries (binds at j / d_in)
    anneal: float = 0.5  # the kept fraction falls from 1 to its target over this share of training
    anneal_shape: str = "linear"  # "linear" (equal steps, the paper's) or "geometric" (equal ratios)
    lr_max_factor: float | None = None  # cap of sharkfin's 1/sqrt(kept) LR factor (None: uncapped, the paper's)

    def __post_init__(self) -> None:
        if not 0 < self.kept_fraction <= 1:
            raise ValueError(f"kept_fraction must be in (0, 1], got {self.kept_fraction}")
        if not 0 < self.anneal <= 1:
            raise ValueError(f"anneal must be in (0, 1], got {self.anneal}")
        if self.anneal_shape not in ("linear", "geometric"):
            raise ValueError(f"anneal_shape must be 'linear' or 'geometric', got {self.anneal_shape!r}")
        if self.lr_max_factor is not None and self.lr_max_factor < 1:
            raise ValueError(f"lr_max_factor must be >= 1 or None, got {self.lr_max_factor}")

    def kept(self) -> Callable[[int, int], float]:
        """The L0 annealing schedule f(step, total_steps) -> kept fraction."""
        return partial(kept_fraction, target=self.kept_fraction, anneal=self.anneal, shape=self.anneal_shape)

    def lr_schedule(self) -> Callable[[int, int], float]:
        """The sharkfin LR multiplier f(step, total_steps) for this sparsity."""
        return partial(sharkfin, kept=self.kept(), max_factor=self.lr_max_factor)

    def to_dict(self) -> dict:
        return asdict(self)


def kept_fraction(step: int, total_steps: int, *, target: float, anneal: float = 0.5, shape: str = "linear") -> float:
    """L0 annealing: the kept fraction falls from 1.0 at step 0 to `target` at `anneal * total_steps`, and
    stays there. `shape="linear"` (the paper's) falls by the same amount each step, so the share of the
    remaining weights pruned per step grows to (1 - target) / (anneal * total_steps * target) at the end;
    `"geometric"` falls by the same factor each step, target ** (1 / (anneal * total_steps))."""
    end = anneal * total_steps
    if step >= end:
        return target
    if shape == "geometric":
        return target ** (step / end)
    if shape != "linear":
        raise ValueError(f"shape must be 'linear' or 'geometric', got {shape!r}")
    return 1.0 - (1.0 - target) * step / end


def sharkfin(
    step: int,
    total_steps: int,
    *,
    kept: Callable[[int, int], float] | None = None,
    warmup: float = 0.01,
    max_factor: float | None = None,
) -> float:
    """Learning-rate multiplier: linear warmup over the first `warmup` of training, linear decay to 0 at
    `total_steps`, times 1/sqrt(kept(step, total_steps)) (sparser weights need a larger step), that factor
    capped at `max_factor` when one is given.

    With W = max(1, round-half-up(warmup * total_steps)) warmup steps: (step + 1) / W for step < W, then
    (total_steps - step) / (total_steps - W), which is 1 at step W and 0 at step total_steps.
    """
    W = max(1, math.floor(warmup * total_steps + 0.5))
    if step < W:
        base = (step + 1) / W
    else:
        base = max(0.0, (total_steps - step) / max(1, total_steps - W))
    factor = 1.0 if kept is None else 1 / math.sqrt(kept(step, total_steps))
    return base * (factor if max_factor is None else min(factor, max_factor))


def n_kept(fraction: float, numel: int) -> int:
    """The number of entries a matrix of `numel` entries keeps at `fraction`: round half up, at least 1."""
    return min(numel, max(1, math.floor(fraction * numel + 0.5)))


# ----------------------------------------------------------------------------- the projection


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries of each row of `scores` [rows, n], 1 <= k <= n.
    Ties go to the lower index, so every row keeps exactly k entries and the mask is deterministic."""
    n = scores.shape[-1]
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 64:  # few per row (the floor): topk is ~10x faster than a selection over the whole row
        v = scores.topk(k, dim=-1).values[..., -1:]  # [rows, 1] the k-th largest value
    else:
        v = scores.kthvalue(n - k + 1, dim=-1, keepdim=True).values  # [rows, 1]
    above = scores > v  # [rows, n] strictly larger: always kept
    tie = scores == v  # equal to the k-th largest: keep the first ones until the row has k
    need = k - above.sum(-1, keepdim=True)  # [rows, 1], 1 <= need <= number of ties
    if bool((tie.sum(-1, keepdim=True) == need).all()):  # the usual case: no tie to break
        return above | tie
    return above | (tie & (tie.cumsum(-1) <= need))


@torch.no_grad()
def project_(w: torch.Tensor, k: int, min_per_row: int = 0) -> torch.Tensor:
    """Zero all but the k largest-magnitude entries of `w` in place; with `min_per_row` = j > 0 (w 2-D
    [rows, cols]) every row first keeps its top min(j, cols), and the rest of the budget goes to the
    largest remaining entries. Keeps exactly max(k, min(j, cols) * rows) entries. Returns the mask."""
    a = w.detach().abs()
    if min_per_row > 0 and w.dim() == 2:
        j = min(min_per_row, w.shape[1])
        protected = topk_mask(a, j)  # [rows, cols]
        rest = k - j * w.shape[0]
        if rest > 0:
            score = a.masked_fill(protected, -1.0).view(1, -1)  # protected entries rank last
            mask = protected | topk_mask(score, rest).view_as(w)
        else:
            mask = protected
    else:
        mask = topk_mask(a.reshape(1, -1), k).view_as(w)
    w.mul_(mask)
    return mask


def _floored(model: nn.Module, floor_exclude: Iterable[str]) -> set[str]:
    """Names of the parameters that get the per-row floor: weights of nn.Linear modules."""
    pats = [re.compile(p) for p in floor_exclude]
    out = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            name = f"{mname}.weight" if mname else "weight"
            if not any(p.search(name) for p in pats):
                out.add(name)
    return out


class WeightSparsifier:
    """Top-k magnitude projection of every matrix of `model`, to be called after each optimizer step.

    kept_fraction_schedule: step -> kept fraction (e.g. `lambda s: kept_fraction(s, T, target=1/64)`),
        or a constant float.
    min_per_row: j, the per-row floor for nn.Linear weights (the paper's j = 4); 0 turns it off.
    exclude: regexes of parameter names never projected (default: norm gains, sink logits, bigram).
    floor_exclude: regexes of nn.Linear weights that get no per-row floor (default: none).

    After `step(s)` every projected parameter holds exactly `expected_nonzeros(s)[name]` kept entries; they
    are all nonzero unless the parameter had fewer nonzero entries than that to begin with (e.g. a
    zero-initialised bias whose gradient is exactly zero). Excluded parameters: `self.excluded`.
    """

    def __init__(
        self,
        model: nn.Module,
        kept_fraction_schedule: Callable[[int], float] | float,
        min_per_row: int = 4,
        exclude: Iterable[str] = DEFAULT_EXCLUDE,
        floor_exclude: Iterable[str] = (),
    ):
        self.schedule = (
            kept_fraction_schedule
            if callable(kept_fraction_schedule)
            else (lambda step, f=float(kept_fraction_schedule): f)
        )
        self.min_per_row = min_per_row
        pats = [re.compile(p) for p in exclude]
        self.params: dict[str, nn.Parameter] = {
            n: p
            for n, p in model.named_parameters()
            if p.is_floating_point() and not any(q.search(n) for q in pats)
        }
        floored = _floored(model, floor_exclude) if min_per_row > 0 else set()
        self.floor: dict[str, int] = {n: (min_per_row if n in floored else 0) for n in self.params}
        self.excluded = [n for n, _ in model.named_parameters() if n not in self.params]
        self.fraction = 1.0

    @property
    def names(self) -> list[str]:
        """The projected parameters, in model order."""
        return list(self.params)

    def expected_nonzeros(self, step: int) -> dict[str, int]:
        """How many entries each projected parameter keeps after `step(step)`: max(k, min(j, cols) * rows)."""
        f = self.schedule(step)
        out = {}
        for n, p in self.params.items():
            k = n_kept(f, p.numel())
            j = self.floor[n]
            out[n] = max(k, min(j, p.shape[1]) * p.shape[0]) if j and p.dim() == 2 else k
        return out

    @torch.no_grad()
    def step(self, step: int) -> float:
        """Project every parameter to its scheduled count; return the kept fraction used."""
        self.fraction = f = self.schedule(step)
        for n, p in self.params.items():
            k = n_kept(f, p.numel())
            if k < p.numel():
                project_(p.data, k, self.floor[n])
        return f


# ----------------------------------------------------------------------------- optimizer pieces


def sparse_adamw(params, lr: float, **overrides) -> torch.optim.AdamW:
    """AdamW with the paper's settings: betas (0.9, 0.95), weight decay 0.1, eps 0.1 (large on purpose:
    it damps the update of weights whose gradients are tiny, e.g. just regrown ones)."""
    kw = dict(betas=(0.9, 0.95), weight_decay=0.1, eps=0.1) | overrides
    return torch.optim.AdamW(params, lr=lr, **kw)


# ----------------------------------------------------------------------------- measuring


def nonzeros(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, int]:
    """Nonzero count of each parameter (all of them, or just `names`)."""
    params = dict(model.named_parameters())
    return {n: int(params[n].count_nonzero()) for n in (params if names is None else names)}


EMBEDDINGS = (r"(^|\.)embed\.", r"(^|\.)unembed\.")  # the token embedding and the unembedding (weights, bias)


def non_embedding_l0(model: nn.Module, names: Iterable[str] | None = None) -> int:
    """Nonzero entries of every parameter in `names` (default: all) except the token embedding and the
    unembedding: the L0 that grows with width at a fixed kept fraction (the embeddings grow only with d)."""
    pats = [re.compile(p) for p in EMBEDDINGS]
    names = [n for n, _ in model.named_parameters()] if names is None else list(names)
    return total_l0(model, [n for n in names if not any(p.search(n) for p in pats)])


def total_l0(model: nn.Module, names: Iterable[str] | None = None) -> int:
    """The model's L0: nonzero weights summed over all parameters (or just `names`)."""
    return sum(nonzeros(model, names).values())


def row_nonzeros(w: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Nonzeros along `dim` of a matrix: dim=1 counts each row's (a Linear's inputs per output unit),
    dim=0 each column's (a Linear's outputs per input unit)."""
    return (w != 0).sum(dim)


def dead_neurons(acts: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """acts [..., width] -> bool [width]: True where the unit never exceeded |eps| on any token."""
    return ~(acts.detach().abs() > eps).reshape(-1, acts.shape[-1]).any(0)


# ----------------------------------------------------------------------------- CSR inference


class CSRLinear(nn.Module):
    """Inference-only nn.Linear with its weight stored as torch.sparse_csr: y = x W^T + b."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            csr = linear.weight.detach().to_sparse_csr()
        self.register_buffer("weight", csr)  # [out, in] CSR
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # [N, in]
        y = torch.sparse.mm(self.weight, x2.T).T  # [out, in] @ [in, N] -> [N, out]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        nnz = self.weight._nnz()
        return f"in={self.in_features}, out={self.out_features}, nnz={nnz}"


def to_csr(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of `model` (or the model itself) with every nn.Linear replaced by a CSRLinear, for inference.
    Everything else (embeddings, norms, hooks) is untouched."""
    m = model if inplace else copy.deepcopy(model)
    for mod in list(m.modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, nn.Linear):
                setattr(mod, cname, CSRLinear(child))
    return m.eval()
