"""Bridges: explaining a dense model with a weight-sparse one (Gao et al. 2025, section "Bridges").

A sparse model is trained beside a frozen dense one. At every sublayer boundary of the residual
stream (before each attention block and before each MLP block) a *bridge* joins the two streams:

    encoder  dense -> sparse:  h = AbsTopK(W_enc x + b_enc)      (a sparse residual, k = afrac * width)
    decoder  sparse -> dense:  x = W_dec h + b_dec

and the training asks that the two models can swap halves at any site:

    dense prefix -> encoder -> sparse suffix    should give the dense model's output    (kl_d2s)
    sparse prefix -> decoder -> dense suffix    should give the dense model's output    (kl_s2d)

plus NMSE both ways at every site and the sparse model's own language-modelling loss. Once trained, a
sparse channel can be read as a direction in the dense model: change the channel, decode the change, add
it to the dense residual stream and watch the dense model's output move (`steer`).

Pieces:
    bridge_sites(model)                                   the sites: blocks.{l}.hook_resid_pre / hook_resid_mid
                                                          (partial runs are the GPT's own: GPT.run_to,
                                                          GPT.run_from, GPT.run_with_resids)
    Bridge(sites, d_dense, d_sparse, afrac)               encoders and decoders, one pair per site
    Bridge.fit_least_squares(dense, sparse, batches)      start each map at its affine least-squares fit
    hybrid_dense_to_sparse / hybrid_sparse_to_dense       the two hybrid passes
    nmse, kl_div, entropy                                 the measures
    SparseLM, NMSELoss("d2s" | "s2d"),
    KLLoss("d2s" | "s2d"), default_losses()               the losses, each an object with its coefficient
    BridgeTrainConfig, train_bridged(...)                 the training loop (dense frozen), checkpoints, resume
    hybrid_kl_per_site(...)                               evaluation, with the dense entropy for scale
    class_means, contrast_channels, class_move            which sparse channels carry a task, and their move
                                                          (how they are chosen for a task: `bridges_tasks`)
    steer, steer_sparse, control_move                     interventions through the decoder (and in the
                                                          sparse model itself), with a control

The paper publishes no bridge code; every choice below that it leaves open is the book's and says so.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from circuitbook.models.gpt import GPT, AbsTopK, lm_loss
from circuitbook.sparsity import WeightSparsifier, clip_grad_rms_, sharkfin
from circuitbook.train import Checkpoint, get_batch, val_batches

# ----------------------------------------------------------------------------- sites

def bridge_sites(model: GPT | int) -> list[str]:
    """Every sublayer boundary, in forward order: before each attention block (`blocks.{l}.hook_resid_pre`)
    and before each MLP block (`blocks.{l}.hook_resid_mid`). Accepts a GPT or its number of layers."""
    n_layers = model if isinstance(model, int) else model.cfg.n_layers
    return [f"blocks.{l}.hook_resid_{k}" for l in range(n_layers) for k in ("pre", "mid")]


# ----------------------------------------------------------------------------- the bridge


def _key(site: str) -> str:
    return site.replace(".", "__")  # nn.ModuleDict keys may not contain dots


class Bridge(nn.Module):
    """One encoder (dense -> sparse: Linear + AbsTopK) and one decoder (sparse -> dense: Linear) per site.

    afrac: the encoder keeps k = round(afrac * d_sparse) entries per position (the paper's AbsTopK;
    afrac = 1 turns it off). Parameter names: `enc.<site with __ for .>.weight`, `dec.<...>.weight`.
    """

    def __init__(self, sites: Sequence[str], d_dense: int, d_sparse: int, afrac: float = 0.25, bias: bool = True):
        super().__init__()
        self.sites = list(sites)
        self.d_dense, self.d_sparse, self.afrac = d_dense, d_sparse, afrac
        self.enc = nn.ModuleDict({_key(s): nn.Linear(d_dense, d_sparse, bias=bias) for s in self.sites})
        self.dec = nn.ModuleDict({_key(s): nn.Linear(d_sparse, d_dense, bias=bias) for s in self.sites})
        self.topk = AbsTopK(d_sparse, afrac, 1, enabled=afrac < 1)

    @classmethod
    def for_models(cls, dense: GPT, sparse: GPT, afrac: float = 0.25, sites: Sequence[str] | None = None) -> Bridge:
        """A bridge at every site (or `sites`) between two GPTs with the same number of layers."""
        if dense.cfg.n_layers != sparse.cfg.n_layers:
            raise ValueError(f"layer counts differ: dense {dense.cfg.n_layers}, sparse {sparse.cfg.n_layers}")
        return cls(sites or bridge_sites(dense), dense.cfg.d_model, sparse.cfg.d_model, afrac)

    @classmethod
    def identity(cls, sites: Sequence[str], d_model: int) -> Bridge:
        """Encoder and decoder are the identity and AbsTopK is off: two copies of one model, bridged."""
        b = cls(sites, d_model, d_model, afrac=1.0)
        with torch.no_grad():
            for lin in [*b.enc.values(), *b.dec.values()]:
                lin.weight.copy_(torch.eye(d_model))
                lin.bias.zero_()
        return b

    @torch.no_grad()
    def fit_least_squares(
        self, dense: GPT, sparse: GPT, batches: Sequence[torch.Tensor], ridge: float = 1e-6
    ) -> dict[str, tuple[float, float]]:
        """Set every encoder and decoder to the affine least-squares map between the two streams on `batches`
        ([batch, pos] tokens): decoder = argmin ||W h + b - x||^2 (sparse h -> dense x), encoder likewise the
        other way (fitted before its AbsTopK). These are the NMSE terms' optima for fixed models, a starting
        point for training (the book's choice; the paper does not say how it initializes its bridges).
        `ridge` is relative to the mean eigenvalue of each Gram matrix. -> {site: (nmse_d2s, nmse_s2d)} on
        the fitting tokens, AbsTopK included."""
        dev = next(dense.parameters()).device
        batches = [b.to(dev) for b in batches]
        grams: dict[str, dict[str, torch.Tensor]] = {}
        for b in batches:
            _, dr = dense.run_with_resids(b, self.sites)
            _, sr = sparse.run_with_resids(b, self.sites)
            for s in self.sites:
                x = _with_ones(dr[s].reshape(-1, self.d_dense).double())  # [N, d_dense + 1]
                h = _with_ones(sr[s].reshape(-1, self.d_sparse).double())  # [N, d_sparse + 1]
                g = grams.setdefault(s, {k: 0 for k in ("xx", "hh", "xh")})
                g["xx"] = g["xx"] + x.T @ x
                g["hh"] = g["hh"] + h.T @ h
                g["xh"] = g["xh"] + x.T @ h
        for s, g in grams.items():
            for lin, gram, cross in ((self.enc[_key(s)], g["xx"], g["xh"]), (self.dec[_key(s)], g["hh"], g["xh"].T)):
                reg = ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
                reg[-1, -1] = 0  # the bias is not shrunk
                sol = torch.linalg.solve(gram + reg, cross)[:, :-1]  # [d_in + 1, d_out] (drop the ones column)
                lin.weight.copy_(sol[:-1].T.to(lin.weight.dtype))
                if lin.bias is not None:
                    lin.bias.copy_(sol[-1].to(lin.bias.dtype))
        out = {s: (0.0, 0.0) for s in self.sites}
        for b in batches:
            _, dr = dense.run_with_resids(b, self.sites)
            _, sr = sparse.run_with_resids(b, self.sites)
            for s in self.sites:
                d2s, s2d = float(nmse(self.encode(s, dr[s]), sr[s])), float(nmse(self.decode(s, sr[s]), dr[s]))
                out[s] = (out[s][0] + d2s / len(batches), out[s][1] + s2d / len(batches))
        return out

    def encode(self, site: str, x: torch.Tensor) -> torch.Tensor:
        """Dense residual x [..., d_dense] -> sparse residual [..., d_sparse] with k nonzeros."""
        return self.topk(self.enc[_key(site)](x))

    def decode(self, site: str, h: torch.Tensor) -> torch.Tensor:
        """Sparse residual h [..., d_sparse] -> dense residual [..., d_dense]."""
        return self.dec[_key(site)](h)

    def decoder_matrix(self, site: str) -> torch.Tensor:
        """W_dec [d_dense, d_sparse]: column c is the dense direction of sparse channel c."""
        return self.dec[_key(site)].weight


def _with_ones(x: torch.Tensor) -> torch.Tensor:
    """[N, d] -> [N, d + 1] with a column of ones (the bias of an affine fit)."""
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1)


def hybrid_dense_to_sparse(
    dense: GPT, sparse: GPT, bridge: Bridge, tokens: torch.Tensor, site: str, dense_resid: torch.Tensor | None = None
) -> torch.Tensor:
    """Dense prefix -> encoder -> sparse suffix: tokens [batch, pos] -> logits [batch, pos, vocab].
    Pass `dense_resid` (the dense stream at `site`) to skip the prefix."""
    x = dense.run_to(tokens, site) if dense_resid is None else dense_resid
    return sparse.run_from(site, bridge.encode(site, x), tokens)


def hybrid_sparse_to_dense(
    dense: GPT, sparse: GPT, bridge: Bridge, tokens: torch.Tensor, site: str, sparse_resid: torch.Tensor | None = None
) -> torch.Tensor:
    """Sparse prefix -> decoder -> dense suffix: tokens [batch, pos] -> logits [batch, pos, vocab].
    Pass `sparse_resid` (the sparse stream at `site`) to skip the prefix."""
    h = sparse.run_to(tokens, site) if sparse_resid is None else sparse_resid
    return dense.run_from(site, bridge.decode(site, h), tokens)


# ----------------------------------------------------------------------------- measures


def nmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalized mean squared error of `pred` against `target`, both [..., d]:

        NMSE = sum_n ||pred_n - target_n||^2 / sum_n ||target_n - mean(target)||^2

    where n runs over every vector (all leading dims: batch and positions) and mean(target) [d] is the one
    mean vector over them. So predicting the mean gives exactly 1, predicting the target exactly gives 0.
    It is a ratio of sums (not a mean of per-token ratios), and it does not change when pred and target
    are scaled together. Gradients flow through both arguments (a scalar tensor)."""
    t = target.reshape(-1, target.shape[-1])  # [N, d]
    p = pred.reshape(-1, pred.shape[-1])  # [N, d]
    return (p - t).pow(2).sum() / (t - t.mean(0)).pow(2).sum().clamp_min(1e-12)


def kl_div(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) = sum_v p_v (log p_v - log q_v), with P = softmax(logits_p), Q = softmax(logits_q),
    averaged over every position: [..., vocab] x2 -> scalar, in nats."""
    return _kl_from_logp(logits_p.log_softmax(-1), logits_q)


def _kl_from_logp(logp: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """kl_div with P given as log-probabilities (computed once per step and shared by every site)."""
    return (logp.exp() * (logp - logits_q.log_softmax(-1))).sum(-1).mean()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of softmax(logits) over every position, in nats: [..., vocab] -> scalar."""
    lp = logits.log_softmax(-1)
    return -(lp.exp() * lp).sum(-1).mean()


# ----------------------------------------------------------------------------- losses


@dataclass
class BridgeRun:
    """Everything one training step computes once and the losses share. The dense side is detached."""

    dense: GPT
    sparse: GPT
    bridge: Bridge
    tokens: torch.Tensor  # [batch, pos]
    dense_logits: torch.Tensor  # [batch, pos, vocab], no grad
    dense_logp: torch.Tensor  # [batch, pos, vocab] log-probabilities of the dense output, no grad
    dense_resids: dict[str, torch.Tensor]  # site -> [batch, pos, d_dense], no grad
    sparse_logits: torch.Tensor  # [batch, pos, vocab]
    sparse_resids: dict[str, torch.Tensor]  # site -> [batch, pos, d_sparse]
    kl_sites: list[str]  # the sites the KL losses use this step (all, or a sample)

    @classmethod
    def make(cls, dense: GPT, sparse: GPT, bridge: Bridge, tokens: torch.Tensor, kl_sites=None) -> BridgeRun:
        with torch.no_grad():
            dl, dr = dense.run_with_resids(tokens, bridge.sites)
        sl, sr = sparse.run_with_resids(tokens, bridge.sites)
        return cls(dense, sparse, bridge, tokens, dl, dl.log_softmax(-1), dr, sl, sr, list(kl_sites or bridge.sites))


@dataclass
class SparseLM:
    """The sparse model's own next-token loss."""

    coeff: float = 1.0
    name: str = "sparse_lm"

    def __call__(self, run: BridgeRun) -> torch.Tensor:
        return lm_loss(run.sparse_logits, run.tokens)


@dataclass
class _DirectedLoss:
    """A loss on one bridge direction: "d2s" (dense -> sparse) or "s2d" (sparse -> dense), named
    `<measure>_<direction>`."""

    direction: str  # "d2s" | "s2d"
    coeff: float = 1.0
    measure: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if self.direction not in ("d2s", "s2d"):
            raise ValueError(f"direction must be 'd2s' or 's2d', got {self.direction!r}")

    @property
    def name(self) -> str:
        return f"{self.measure}_{self.direction}"


@dataclass
class NMSELoss(_DirectedLoss):
    """Mean over sites of one direction's NMSE. "d2s": NMSE(encoder(dense resid), sparse resid), which trains
    the encoder and the sparse model (the target is the sparse model's stream; NMSE is scale-free, so
    shrinking it gains nothing). "s2d": NMSE(decoder(sparse resid), dense resid), which trains the decoder and
    the sparse model."""

    measure: ClassVar[str] = "nmse"

    def __call__(self, run: BridgeRun) -> torch.Tensor:
        b, dr, sr = run.bridge, run.dense_resids, run.sparse_resids
        if self.direction == "d2s":
            return torch.stack([nmse(b.encode(s, dr[s]), sr[s]) for s in b.sites]).mean()
        return torch.stack([nmse(b.decode(s, sr[s]), dr[s]) for s in b.sites]).mean()


@dataclass
class KLLoss(_DirectedLoss):
    """Mean over `run.kl_sites` of KL(dense output || one hybrid pass). "d2s": the sparse suffix run on the
    encoded dense stream. "s2d": the dense suffix run on the decoded sparse stream (the dense weights are
    frozen, but gradients flow through its suffix to the decoder and the sparse prefix)."""

    measure: ClassVar[str] = "kl"

    def hybrid(self, run: BridgeRun, site: str) -> torch.Tensor:
        """This direction's hybrid logits at `site`, from the residuals the run already holds."""
        args = run.dense, run.sparse, run.bridge, run.tokens, site
        if self.direction == "d2s":
            return hybrid_dense_to_sparse(*args, dense_resid=run.dense_resids[site])
        return hybrid_sparse_to_dense(*args, sparse_resid=run.sparse_resids[site])

    def __call__(self, run: BridgeRun) -> torch.Tensor:
        return torch.stack([_kl_from_logp(run.dense_logp, self.hybrid(run, s)) for s in run.kl_sites]).mean()


BridgeLoss = SparseLM | NMSELoss | KLLoss


def default_losses(
    lm: float = 1.0, nmse_d2s: float = 1.0, nmse_s2d: float = 1.0, kl_d2s: float = 1.0, kl_s2d: float = 1.0
) -> list[BridgeLoss]:
    """The paper's five terms. Its coefficients are not published; 1 each is the book's default."""
    return [SparseLM(lm), NMSELoss("d2s", nmse_d2s), NMSELoss("s2d", nmse_s2d), KLLoss("d2s", kl_d2s),
            KLLoss("s2d", kl_s2d)]


def compute_losses(run: BridgeRun, losses: Sequence[BridgeLoss]) -> tuple[torch.Tensor, dict[str, float]]:
    """-> (sum of coeff * loss, {name: unweighted value}). A loss with coefficient 0 is skipped."""
    terms, values = [], {}
    for loss in losses:
        if loss.coeff == 0:
            continue
        v = loss(run)
        terms.append(loss.coeff * v)
        values[loss.name] = float(v.detach())
    total = torch.stack(terms).sum()
    values["total"] = float(total.detach())
    return total, values


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True, kw_only=True)
class BridgeTrainConfig:
    """Settings of `train_bridged`. The sparse side follows chapter 2: AdamW(0.9, 0.95, wd 0.1, eps 0.1),
    sharkfin LR (times 1/sqrt(kept fraction) when a sparsifier is given), gradient RMS clipped to 1."""

    steps: int  # optimizer steps
    batch_size: int = 32  # windows per step
    n_ctx: int = 128  # tokens per window
    lr: float = 3e-3  # sparse model's base LR
    bridge_lr: float = 3e-3  # encoders' and decoders' base LR (same sharkfin shape, no 1/sqrt(kept))
    bridge_eps: float = 1e-8  # plain Adam eps for the bridge (eps 0.1 is a sparse-weights device)
    bridge_weight_decay: float = 0.0  # AdamW weight decay of the bridge
    warmup: float = 0.01  # sharkfin warmup share
    clip_rms: float = 1.0  # sparse model and bridge are each clipped to this gradient RMS
    kl_sites_per_step: int | None = None  # sample this many sites for the KL terms each step (None: all)
    eval_every: int = 200  # steps between validation evaluations
    eval_batches: int = 8  # validation batches per evaluation
    ckpt_every: int = 200  # steps between resumable checkpoints
    seed: int = 0  # seeds the init (by the caller), the batch order and the KL sites
    sparse_init: str = "scratch"  # where the sparse side starts: "scratch" or "the_sparse_model" (chapter 2's)
    bridge_init: str = "random"  # where the bridges start: "random" or "least_squares" (`Bridge.fit_least_squares`)
    init_batches: int = 16  # batches the least-squares start is fitted on
    lm_coef: float = 1.0  # weight of the sparse model's own LM loss
    nmse_d2s_coef: float = 1.0  # weight of NMSE(encoded dense, sparse) at every site
    nmse_s2d_coef: float = 1.0  # weight of NMSE(decoded sparse, dense) at every site
    kl_d2s_coef: float = 1.0  # weight of KL(dense || sparse suffix run on the encoded dense stream)
    kl_s2d_coef: float = 1.0  # weight of KL(dense || dense suffix run on the decoded sparse stream)
    # the sparse side's gradient: "clip" (RMS at most clip_rms) or "rms_normalize" (RMS exactly clip_rms, small
    # gradients scaled up: chapter 2's recipe, without which Adam's eps of 0.1 swamps the sparse model's steps)
    sparse_grad: str = "clip"

    def __post_init__(self) -> None:
        if self.sparse_init not in ("scratch", "the_sparse_model"):
            raise ValueError(f"sparse_init must be 'scratch' or 'the_sparse_model', got {self.sparse_init!r}")
        if self.bridge_init not in ("random", "least_squares"):
            raise ValueError(f"bridge_init must be 'random' or 'least_squares', got {self.bridge_init!r}")
        if self.sparse_grad not in ("clip", "rms_normalize"):
            raise ValueError(f"sparse_grad must be 'clip' or 'rms_normalize', got {self.sparse_grad!r}")

    def losses(self) -> list[BridgeLoss]:
        """The five loss terms with this config's coefficients."""
        return default_losses(self.lm_coef, self.nmse_d2s_coef, self.nmse_s2d_coef, self.kl_d2s_coef,
                              self.kl_s2d_coef)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def _kl_sites(sites: list[str], step: int, n: int | None, seed: int) -> list[str]:
    """All sites, or n of them drawn from (seed, step) alone (so a resumed run draws the same ones)."""
    if n is None or n >= len(sites):
        return sites
    idx = np.random.default_rng([seed, step, 1]).choice(len(sites), size=n, replace=False)
    return [sites[i] for i in sorted(idx)]


@torch.no_grad()
def evaluate_bridged(
    dense: GPT, sparse: GPT, bridge: Bridge, batches: list[torch.Tensor], losses: Sequence[BridgeLoss]
) -> dict[str, float]:
    """Each loss (unweighted, every site) averaged over `batches`, prefixed `val_`."""
    was = sparse.training, bridge.training
    sparse.eval()
    bridge.eval()
    acc: dict[str, float] = {}
    n = 0
    for b in batches:
        _, vals = compute_losses(BridgeRun.make(dense, sparse, bridge, b), losses)
        for k, v in vals.items():
            acc[k] = acc.get(k, 0.0) + v * b.shape[0]
        n += b.shape[0]
    sparse.train(was[0])
    bridge.train(was[1])
    return {f"val_{k}": v / n for k, v in acc.items()}


def train_bridged(
    dense: GPT,
    sparse: GPT,
    bridge: Bridge,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    cfg: BridgeTrainConfig,
    sparsifier: WeightSparsifier | None = None,
    losses: Sequence[BridgeLoss] | None = None,
    ckpt_dir: Path | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> dict:
    """Train `sparse` and `bridge` together against the frozen `dense` model; resume from
    `ckpt_dir/latest.safetensors` if it exists.

    Each step: one dense pass (no grad) and one sparse pass record the residual stream at every site;
    `losses` (default: `default_losses()`) are summed with their coefficients; the sparse model's and the
    bridge's gradients are each clipped to RMS `cfg.clip_rms`; AdamW steps; then `sparsifier.step(step)`
    projects the sparse weights (chapter 2). The dense model's weights are never changed.
    stop_at simulates an interruption (stops after that step, leaving a checkpoint).
    Returns {"history": [rows], "tokens_per_s": float}; rows with "val_*" keys hold evaluations
    (the first row, step 0, evaluates the untrained pair).
    """
    losses = list(losses or default_losses())
    if dense.cfg.n_layers != sparse.cfg.n_layers:
        raise ValueError("dense and sparse models must have the same number of layers")
    sparse_params = [p for p in sparse.parameters() if p.requires_grad]
    bridge_params = [p for p in bridge.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": sparse_params, "eps": 0.1, "weight_decay": 0.1},  # = sparsity.sparse_adamw
            {"params": bridge_params, "eps": cfg.bridge_eps, "weight_decay": cfg.bridge_weight_decay},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    history: list[dict] = []
    start = 0
    ckpt = Checkpoint(ckpt_dir, {"sparse": sparse, "bridge": bridge}, opt, cfg.to_dict())
    if (meta := ckpt.resume()) is not None:
        start, history = meta["step"], meta["history"]
    dev = next(sparse.parameters()).device
    val = [b.to(dev) for b in val_batches(val_tokens, cfg.eval_batches, cfg.batch_size, cfg.n_ctx)]

    frozen = [(p, p.requires_grad) for p in dense.parameters()]
    dense_was_training = dense.training
    for p, _ in frozen:
        p.requires_grad_(False)  # gradients still flow *through* the dense suffix to the decoder
    dense.eval()
    try:
        if start == 0:
            history.append({"step": 0, **evaluate_bridged(dense, sparse, bridge, val, losses)})
        sparse.train()
        bridge.train()
        t0, tokens_seen = time.perf_counter(), 0
        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress, desc="bridges")
        for step in bar:
            base = sharkfin(step, cfg.steps, warmup=cfg.warmup)
            kept = sparsifier.schedule(step) if sparsifier is not None else 1.0
            opt.param_groups[0]["lr"] = cfg.lr * base / math.sqrt(kept)
            opt.param_groups[1]["lr"] = cfg.bridge_lr * base
            batch = get_batch(train_tokens, step, cfg.batch_size, cfg.n_ctx, cfg.seed).to(dev)
            kl_sites = _kl_sites(bridge.sites, step, cfg.kl_sites_per_step, cfg.seed)
            total, vals = compute_losses(BridgeRun.make(dense, sparse, bridge, batch, kl_sites), losses)
            opt.zero_grad(set_to_none=True)
            total.backward()
            g_sparse = clip_grad_rms_(sparse_params, cfg.clip_rms, normalize=cfg.sparse_grad == "rms_normalize")
            g_bridge = clip_grad_rms_(bridge_params, cfg.clip_rms)
            opt.step()
            if sparsifier is not None:
                sparsifier.step(step)
            tokens_seen += batch.numel()
            done = step + 1
            row = {"step": done, **vals, "lr": opt.param_groups[0]["lr"], "kept": kept,
                   "grad_rms_sparse": g_sparse, "grad_rms_bridge": g_bridge}
            if done % cfg.eval_every == 0 or done == cfg.steps:
                row.update(evaluate_bridged(dense, sparse, bridge, val, losses))
                bar.set_postfix(total=f"{vals['total']:.3f}", val=f"{row['val_total']:.3f}")
            history.append(row)
            if ckpt.step_done(done, cfg.steps, cfg.ckpt_every, stop_at, history):
                break
        bar.close()
        dt = time.perf_counter() - t0
    finally:
        for p, rg in frozen:
            p.requires_grad_(rg)
        dense.train(dense_was_training)
    sparse.eval()
    bridge.eval()
    return {"history": history, "tokens_per_s": tokens_seen / dt if dt > 0 else float("nan")}


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def hybrid_kl_per_site(
    dense: GPT,
    sparse: GPT,
    bridge: Bridge,
    batches: torch.Tensor | list[torch.Tensor],
    sites: Sequence[str] | None = None,
) -> list[dict]:
    """Per site: KL of each hybrid pass from the dense output, and NMSE each way, averaged over `batches`
    ([batch, pos] token tensors). Each row also carries the dense model's mean output entropy (the KL's
    natural scale: a KL far below it means the hybrid keeps most of what the dense model predicts) and
    the KL of the whole sparse model from the dense one. -> [{"site", "kl_d2s", "kl_s2d", "nmse_d2s",
    "nmse_s2d", "dense_entropy", "sparse_kl"}], one row per site, in forward order."""
    batches = [batches] if torch.is_tensor(batches) else list(batches)
    sites = list(sites or bridge.sites)
    sums: dict[str, dict[str, float]] = {s: {} for s in sites}
    ent = skl = 0.0
    n = 0
    for b in batches:
        dl, dr = dense.run_with_resids(b, sites)
        sl, sr = sparse.run_with_resids(b, sites)
        w = b.shape[0]
        ent += float(entropy(dl)) * w
        skl += float(kl_div(dl, sl)) * w
        for s in sites:
            vals = {
                "kl_d2s": kl_div(dl, hybrid_dense_to_sparse(dense, sparse, bridge, b, s, dense_resid=dr[s])),
                "kl_s2d": kl_div(dl, hybrid_sparse_to_dense(dense, sparse, bridge, b, s, sparse_resid=sr[s])),
                "nmse_d2s": nmse(bridge.encode(s, dr[s]), sr[s]),
                "nmse_s2d": nmse(bridge.decode(s, sr[s]), dr[s]),
            }
            for k, v in vals.items():
                sums[s][k] = sums[s].get(k, 0.0) + float(v) * w
        n += w
    return [{"site": s, **{k: v / n for k, v in sums[s].items()}, "dense_entropy": ent / n, "sparse_kl": skl / n}
            for s in sites]


# ----------------------------------------------------------------------------- interventions


def _last(tokens: torch.Tensor, at: torch.Tensor | None) -> torch.Tensor:
    """Readout position per prompt [batch]: `at`, or the last position."""
    return at if at is not None else torch.full((tokens.shape[0],), tokens.shape[1] - 1, device=tokens.device)


@torch.no_grad()
def sparse_activations(
    site: str,
    tokens: torch.Tensor,
    at: torch.Tensor | None = None,
    sparse: GPT | None = None,
    dense: GPT | None = None,
    bridge: Bridge | None = None,
) -> torch.Tensor:
    """The sparse residual at `site`, at one position per prompt (`at` [batch], default the last):
    the sparse model's own stream (pass `sparse`), or the encoded dense stream (pass `dense` and
    `bridge`: the sparse view of the dense model). -> [batch, d_sparse]."""
    if sparse is not None:
        h = sparse.run_to(tokens, site)
    elif dense is not None and bridge is not None:
        h = bridge.encode(site, dense.run_to(tokens, site))
    else:
        raise ValueError("pass `sparse`, or `dense` and `bridge`")
    return h[torch.arange(tokens.shape[0]), _last(tokens, at)]


def class_means(
    site: str,
    tokens_a: torch.Tensor,
    tokens_b: torch.Tensor,
    at_a: torch.Tensor | None = None,
    at_b: torch.Tensor | None = None,
    **source,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean sparse residual [d_sparse] at `site` over prompts of class A and of class B (readout at `at_*`,
    default the last position). `source`: sparse=... or dense=..., bridge=... (see sparse_activations)."""
    return (sparse_activations(site, tokens_a, at_a, **source).mean(0),
            sparse_activations(site, tokens_b, at_b, **source).mean(0))


def contrast_channels(mean_a: torch.Tensor, mean_b: torch.Tensor, k: int = 5) -> list[int]:
    """The k sparse channels whose class means differ most, |mean_b - mean_a|, largest first."""
    return (mean_b - mean_a).abs().topk(k).indices.tolist()


def class_move(mean_from: torch.Tensor, mean_to: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
    """The sparse-space change that moves `channels` from their class-A means to their class-B means and
    leaves every other channel alone: [d_sparse] x2 -> [d_sparse]."""
    move = torch.zeros_like(mean_from)
    idx = torch.as_tensor(list(channels), dtype=torch.long)
    move[idx] = (mean_to - mean_from)[idx]
    return move


@torch.no_grad()
def run_with_delta(
    model: GPT, tokens: torch.Tensor, site: str, delta: torch.Tensor, at: torch.Tensor | None = None
) -> torch.Tensor:
    """Add delta [d_model] to `model`'s residual stream at `site` (at position `at` [batch] of each prompt;
    None: every position) and run the suffix. -> logits [batch, pos, vocab]."""
    x = model.run_to(tokens, site).clone()  # [batch, pos, d_model]
    delta = delta.to(x.device)
    if at is None:
        x = x + delta
    else:
        x[torch.arange(tokens.shape[0]), at] += delta
    return model.run_from(site, x, tokens)


@dataclass
class Steering:
    """The result of one intervention. probs and logits [batch, n_targets] at the readout position."""

    probs: torch.Tensor
    channels: list[int]  # the sparse channels moved
    move: torch.Tensor  # the sparse-space change at this strength [d_sparse]
    delta_norm: float  # ||the dense-space change||
    logits: torch.Tensor  # the targets' logits [batch, n_targets]

    @property
    def p_diff(self) -> float:
        """Mean over prompts of P(first target) - P(second target)."""
        return float((self.probs[:, 0] - self.probs[:, 1]).mean())

    @property
    def logit_diffs(self) -> torch.Tensor:
        """Per prompt, the first target's logit minus the second's (nats) [batch]."""
        return self.logits[:, 0] - self.logits[:, 1]

    @property
    def logit_diff(self) -> float:
        """Mean over prompts of the first target's logit minus the second's (nats)."""
        return float(self.logit_diffs.mean())


def _readout(model: GPT, tokens, site, vec, at, readout, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, logits) of `targets` [batch, n_targets] at `readout` after adding vec at `at`."""
    logits = run_with_delta(model, tokens, site, vec, at)[torch.arange(tokens.shape[0]), _last(tokens, readout)]
    idx = torch.as_tensor(targets, device=logits.device)
    return logits.softmax(-1)[:, idx], logits[:, idx]  # softmax over the whole vocabulary


def _support(move: torch.Tensor) -> list[int]:
    return torch.nonzero(move).flatten().tolist()


@torch.no_grad()
def steer(
    dense: GPT,
    bridge: Bridge,
    tokens: torch.Tensor,
    site: str,
    move: torch.Tensor,
    strength: float,
    targets: Sequence[int],
    at: torch.Tensor | None = None,
    readout: torch.Tensor | None = None,
) -> Steering:
    """Change the sparse residual at `site` by strength * move ([d_sparse]; e.g. `class_move`: strength 0
    changes nothing, 1 moves the chosen channels the whole way from one class to the other) and let the
    *dense* model respond: the change is decoded as W_dec (strength * move) (equal to decoder(h + change) -
    decoder(h) for every h, since the decoder is affine), added to the dense residual at `site` at positions
    `at` ([batch]; default the last position; pass `at=...` explicitly for padded prompts), then the dense
    suffix runs. Returns the dense probabilities and logits of `targets` (token ids) at `readout` (default:
    `at`)."""
    W = bridge.decoder_matrix(site).detach()  # [d_dense, d_sparse]
    m = float(strength) * move.to(W.device)
    vec = W @ m  # [d_dense]
    at = _last(tokens, at)
    probs, logits = _readout(dense, tokens, site, vec, at, at if readout is None else readout, targets)
    return Steering(probs, _support(move), m, float(vec.norm()), logits)


@torch.no_grad()
def steer_sparse(
    sparse: GPT,
    tokens: torch.Tensor,
    site: str,
    move: torch.Tensor,
    strength: float,
    targets: Sequence[int],
    at: torch.Tensor | None = None,
    readout: torch.Tensor | None = None,
) -> Steering:
    """The same change made in the sparse model itself (no bridge): what the sparse circuit predicts the
    dense model should do. delta_norm is the sparse-space norm."""
    m = float(strength) * move
    at = _last(tokens, at)
    probs, logits = _readout(sparse, tokens, site, m, at, at if readout is None else readout, targets)
    return Steering(probs, _support(move), m, float(m.norm()), logits)


def control_move(bridge: Bridge, site: str, move: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The control for a move: the same per-channel values on as many *other* channels (a seeded random
    choice among those with a nonzero decoder column, in random order), rescaled so that the decoded
    dense-space change has the same norm as the real move's. If the real channels' effect is specific,
    the control's is much smaller. [d_sparse] -> [d_sparse]."""
    W = bridge.decoder_matrix(site).detach()  # [d_dense, d_sparse]
    move = move.to(W.device)
    real = _support(move)
    others = [c for c in torch.nonzero(W.norm(dim=0) > 0).flatten().tolist() if c not in set(real)]
    if len(others) < len(real):
        raise ValueError(f"only {len(others)} other live channels at {site} for a control of {len(real)}")
    g = torch.Generator().manual_seed(seed)
    pick = [others[i] for i in torch.randperm(len(others), generator=g)[: len(real)].tolist()]
    ctl = torch.zeros_like(move)
    ctl[torch.as_tensor(pick, dtype=torch.long)] = move[torch.as_tensor(real, dtype=torch.long)]
    norm_ctl, norm_real = float((W @ ctl).norm()), float((W @ move).norm())
    return ctl * (norm_real / norm_ctl) if norm_ctl > 0 else ctl
