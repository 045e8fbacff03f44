"""VPD on a small language model: the book's dense GPT with its attention and MLP matrices decomposed.

The target is chapter 1's dense baseline (4 layers, d_model 128). Every chosen matrix
(`blocks.{l}.attn.W_Q` ... `blocks.{l}.mlp.W_out`) gets C rank-one subcomponents; the losses are VPD's
(stochastic reconstruction, persistent-PGD adversarial reconstruction with subset routing, importance
minimality with p annealing, faithfulness) with KL(target ‖ masked) as the divergence.

The causal importances come from one shared MLP per matrix on the layer's input vector (the reference
code's choice for language models), and p anneals from 2 to 0.5. Training resumes from a checkpoint.

Evaluation helpers: cross-entropy of the CI-masked model, L0 per position, alive subcomponents,
top-activating tokens of a subcomponent. Edits: `task_attribution` (first-order effect of removing each
subcomponent on a task's logit difference), `select_edit` (attribution, screening by real removals, a
greedy set under an off-target budget, all on training data), `edited_logits` (W -> W − Σ u_c v_cᵀ).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from circuitbook.data.tasks import TaskBatch, logit_diff
from circuitbook.decomposition.components import ComponentModel
from circuitbook.decomposition.decompose import DataFn, Decomposition, decompose
from circuitbook.decomposition.losses import Faithfulness, Minimality, StochasticRecon
from circuitbook.decomposition.vpd import PGDSettings

LM_MATRICES = ("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.W_out")


@dataclass(frozen=True, kw_only=True)
class AnnealedMinimality(Minimality):
    """Importance minimality with p annealed linearly over training."""

    p_final: float  # p at the end of training


@dataclass(frozen=True, kw_only=True)
class LMDecompConfig:
    """Every setting of VPD on a GPT (what the artifact's config records, as `asdict`)."""

    layers: tuple[int, ...]  # blocks whose six matrices are decomposed
    C_attn: int  # subcomponents per attention matrix (W_Q, W_K, W_V, W_O)
    C_mlp: int  # subcomponents per MLP matrix (W_in, W_out)
    steps: int  # Adam steps
    batch_size: int  # windows per step
    n_ctx: int  # tokens per window
    lr: float  # Adam learning rate
    lr_schedule: str  # "cosine" (to 0) or "constant"
    warmup_steps: int  # faithfulness warm-up steps before the main loop
    ci_fn: str  # causal-importance function: "mlp" (per subcomponent) or "shared_mlp" (per matrix)
    ci_hidden: int  # hidden width of the causal-importance MLPs
    importance: AnnealedMinimality  # importance minimality
    stochastic: float  # coefficient of the stochastic reconstruction loss
    pgd: PGDSettings  # persistent-PGD adversarial reconstruction with subset routing
    faithfulness: float  # coefficient of the faithfulness loss


def lm_C(cfg: LMDecompConfig) -> dict[str, int]:
    """Subcomponents per decomposed matrix: {"blocks.0.attn.W_Q": C_attn, ..., "blocks.3.mlp.W_out": C_mlp}."""
    return {f"blocks.{l}.{m}": cfg.C_mlp if m.startswith("mlp") else cfg.C_attn
            for l in cfg.layers for m in LM_MATRICES}


def window_fn(stream: np.ndarray, n_ctx: int) -> DataFn:
    """Random windows of `n_ctx` tokens from a token stream: data_fn(batch, generator) -> [batch, n_ctx]."""
    data = torch.from_numpy(stream.astype(np.int64))

    def fn(batch: int, gen: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(data) - n_ctx, (batch,), generator=gen)
        return torch.stack([data[s : s + n_ctx] for s in starts.tolist()])

    return fn


def lm_losses(cfg: LMDecompConfig) -> list:
    """VPD's losses for a language model (KL divergences; subset routing instead of layerwise terms)."""
    return [StochasticRecon(cfg.stochastic), cfg.pgd.loss(), cfg.importance.loss(), Faithfulness(cfg.faithfulness)]


def lm_component_model(target: nn.Module, cfg: LMDecompConfig) -> ComponentModel:
    """An untrained component model of `target` with `cfg`'s matrices and CI functions."""
    return ComponentModel(target, lm_C(cfg), ci_hidden=cfg.ci_hidden, ci_fn=cfg.ci_fn)


def decompose_lm(
    target: nn.Module,
    train_stream: np.ndarray,
    cfg: LMDecompConfig,
    val_stream: np.ndarray | None = None,
    seed: int = 0,
    ckpt_dir: Path | None = None,
    ckpt_config: dict | None = None,
    progress: bool = True,
) -> Decomposition:
    """VPD of the GPT `target` on random windows of `train_stream` (checkpoints in `ckpt_dir`, resumed when
    `ckpt_config` matches). With `val_stream`, the CI-masked CE ratio, L0 and alive count on 16 fixed held-out
    windows are logged 20 times during training."""
    eval_fn = None
    if val_stream is not None:
        val = window_fn(val_stream, cfg.n_ctx)(16, torch.Generator().manual_seed(seed + 1))

        def eval_fn(model: ComponentModel) -> dict[str, float]:
            ev = lm_eval(model, val)
            return {"ce_ratio": ev["ce_masked"] / ev["ce_target"], "l0": ev["l0_per_position"], "alive": ev["alive"]}

    return decompose(
        target,
        lm_C(cfg),
        window_fn(train_stream, cfg.n_ctx),
        lm_losses(cfg),
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_schedule=cfg.lr_schedule,
        warmup_steps=cfg.warmup_steps,
        ci_fn=cfg.ci_fn,
        ci_hidden=cfg.ci_hidden,
        output_loss="kl",
        seed=seed,
        log_every=max(cfg.steps // 200, 1),
        eval_fn=eval_fn,
        eval_every=max(cfg.steps // 20, 1),
        ckpt_dir=ckpt_dir,
        ckpt_every=max(cfg.steps // 40, 1),
        ckpt_config=ckpt_config,
        progress=progress,
    )


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device  # where the model is: its inputs are moved there


def _next_token_ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-position next-token cross-entropy: logits [B, T, V], tokens [B, T] -> [B, T-1]."""
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")


@torch.no_grad()
def lm_eval(model: ComponentModel, tokens: torch.Tensor, batch: int = 8, threshold: float = 0.1) -> dict[str, Any]:
    """CE of the target and of the CI-masked model (m = g, Δ dropped), L0 per position, alive subcomponents.

    tokens: [N, T]. Returns scalars plus "density" (name -> [C], fraction of positions with g > threshold).
    """
    ce_t, ce_m, kl, l0, n_pos = 0.0, 0.0, 0.0, 0.0, 0
    dev = _device(model)
    counts = {n: torch.zeros(model.C[n], device=dev) for n in model.names}
    for i in range(0, len(tokens), batch):
        x = tokens[i : i + batch].to(dev)  # [b, T]
        logits, inputs = model.run_with_inputs(x)
        g = model.causal_importances(inputs).lower  # name -> [b, T, C]
        masked = model(x, masks=g)
        ce_t += float(_next_token_ce(logits, x).sum())
        ce_m += float(_next_token_ce(masked, x).sum())
        logp, logq = F.log_softmax(logits, -1), F.log_softmax(masked, -1)
        kl += float((logp.exp() * (logp - logq)).sum())
        for n in model.names:
            on = g[n] > threshold  # [b, T, C]
            counts[n] += on.flatten(0, 1).float().sum(0)
            l0 += float(on.sum())
        n_pos += x.numel()
    n_pred = n_pos - len(tokens)  # positions with a next token
    density = {n: c / n_pos for n, c in counts.items()}
    return {
        "ce_target": ce_t / n_pred,
        "ce_masked": ce_m / n_pred,
        "kl_masked": kl / n_pos,
        "l0_per_position": l0 / n_pos,
        "alive": int(sum(int((d > 0).sum()) for d in density.values())),
        "total": int(sum(model.C.values())),
        "density": density,
    }


@torch.no_grad()
def component_ci(model: ComponentModel, tokens: torch.Tensor, name: str, batch: int = 8) -> torch.Tensor:
    """Causal importances of every subcomponent of one matrix on `tokens` [N, T] -> [N, T, C]."""
    out = []
    for i in range(0, len(tokens), batch):
        _, inputs = model.run_with_inputs(tokens[i : i + batch].to(_device(model)))
        out.append(model.causal_importances(inputs).lower[name])  # [b, T, C]
    return torch.cat(out)


@torch.no_grad()
def ablation_ce_delta(
    model: ComponentModel, tokens: torch.Tensor, name: str, c: int, batch: int = 8
) -> torch.Tensor:
    """Per-position CE change [N, T-1] when subcomponent c is removed from its matrix (W -> W − u_c v_cᵀ).

    Only that matrix changes: its masks are 1 except c (0), and its Δ-component is kept in full.
    """
    out = []
    for i in range(0, len(tokens), batch):
        x = tokens[i : i + batch].to(_device(model))  # [b, T]
        base = _next_token_ce(model(x), x)
        m = torch.ones(*x.shape, model.C[name], device=x.device)
        m[..., c] = 0.0
        delta = {name: model.target_weight(name) - model.component(name).weight}
        edited = _next_token_ce(model(x, masks={name: m}, deltas=delta), x)
        out.append(edited - base)
    return torch.cat(out)


@torch.no_grad()
def token_purity(
    ci: torch.Tensor, tokens: torch.Tensor, threshold: float = 0.5, min_count: int = 20, offset: int = 0
) -> list[tuple[int, int, int, float]]:
    """How token-specific each subcomponent is: [(c, n_firings, top_token, purity)], purest first.

    ci [N, T, C]; a firing is a position with g > threshold; purity is the fraction of firings whose token
    (the current one for offset 0, the previous one for offset -1) is the most common such token.
    Subcomponents firing fewer than `min_count` times are left out.
    """
    tokens = tokens.to(ci.device)
    tok = tokens if offset == 0 else torch.roll(tokens, -offset, dims=1)  # tok[:, t] = tokens[:, t + offset]
    valid = torch.ones_like(tokens, dtype=torch.bool)
    if offset < 0:
        valid[:, : -offset] = False  # positions whose previous token lies outside the window
    out = []
    for c in range(ci.shape[-1]):
        on = (ci[..., c] > threshold) & valid  # [N, T]
        n = int(on.sum())
        if n < min_count:
            continue
        values, counts = tok[on].unique(return_counts=True)
        i = int(counts.argmax())
        out.append((c, n, int(values[i]), float(counts[i]) / n))
    return sorted(out, key=lambda r: (-r[3], -r[1]))


# ---------------------------------------------------------------- edits: remove subcomponents tied to a behaviour

Removal = dict[str, list[int]]  # matrix name -> subcomponents taken out of it


def edited_logits(model: ComponentModel, x: torch.Tensor, removal: Removal) -> torch.Tensor:
    """Logits with the subcomponents in `removal` taken out of their matrices, W -> W − Σ_c u_c v_cᵀ.

    Every other subcomponent and each matrix's Δ-component stay in full, so an empty removal is the target.
    """
    masks, deltas = {}, {}
    x = x.to(_device(model))
    for n, cs in removal.items():
        m = torch.ones(*x.shape, model.C[n], device=x.device)  # [B, T, C]: the layer input's leading shape is x's
        m[..., list(cs)] = 0.0
        masks[n] = m
        deltas[n] = model.target_weight(n) - model.component(n).weight
    return model(x, masks=masks, deltas=deltas)


def task_attribution(model: ComponentModel, batch: TaskBatch, chunk: int = 64) -> dict[str, torch.Tensor]:
    """Per subcomponent [C], the first-order effect of removing it on a task's logit difference (mean over prompts).

    At m = 1 (Δ kept) removing c everywhere changes the logit difference by about −Σ_t ∂LD/∂m_{c,t}; we return
    minus that: positive means removing c lowers the correct-vs-wrong margin. `batch` is a `TaskBatch`.
    """
    dev = _device(model)
    total = {n: torch.zeros(model.C[n], device=dev) for n in model.names}
    deltas = {n: d.detach() for n, d in model.weight_deltas().items()}
    for i in range(0, len(batch.tokens), chunk):
        sub = batch[i : i + chunk].to(dev)
        x = sub.tokens  # [b, T]
        masks = {n: torch.ones(*x.shape, model.C[n], device=dev, requires_grad=True) for n in model.names}
        with torch.enable_grad():
            ld = logit_diff(model(x, masks=masks, deltas=deltas), sub).sum()
            grads = torch.autograd.grad(ld, list(masks.values()))
        for n, g in zip(model.names, grads):
            total[n] += g.sum((0, 1))  # [C], summed over prompts and positions
    return {n: t / len(batch.tokens) for n, t in total.items()}


@torch.no_grad()
def task_last_logits(
    model: ComponentModel, batch: TaskBatch, removal: Removal | None = None, chunk: int = 128
) -> torch.Tensor:
    """Logits [N, vocab] at each task prompt's last position, with `removal` applied (None: the target)."""
    out = []
    dev = _device(model)
    for i in range(0, len(batch.tokens), chunk):
        x = batch.tokens[i : i + chunk].to(dev)  # [b, T]
        logits = model(x) if not removal else edited_logits(model, x, removal)
        out.append(logits[torch.arange(len(x), device=dev), batch.last[i : i + chunk].to(dev)])
    return torch.cat(out)


def task_metrics(last_logits: torch.Tensor, batch: TaskBatch) -> dict[str, torch.Tensor]:
    """Per prompt: the correct token's next-token CE over the whole vocabulary ("ce"), the correct-minus-wrong
    logit difference ("ld") and whether it is positive ("acc")."""
    batch = batch.to(last_logits.device)
    ce = F.cross_entropy(last_logits, batch.correct, reduction="none")
    ld = last_logits.gather(-1, batch.correct[:, None])[:, 0] - last_logits.gather(-1, batch.wrong[:, None])[:, 0]
    return {"ce": ce, "ld": ld, "acc": (ld > 0).float()}


@torch.no_grad()
def text_ce(
    model: ComponentModel, tokens: torch.Tensor, removal: Removal | None = None, batch: int = 16
) -> torch.Tensor:
    """Per-position next-token CE [N, T-1] on text windows `tokens` [N, T], with `removal` applied."""
    out = []
    for i in range(0, len(tokens), batch):
        x = tokens[i : i + batch].to(_device(model))
        out.append(_next_token_ce(model(x) if not removal else edited_logits(model, x, removal), x))
    return torch.cat(out)


def select_edit(
    model: ComponentModel,
    batch: TaskBatch,
    text: torch.Tensor,
    n_candidates: int = 20,
    budget: float = 0.01,
) -> tuple[Removal, list[dict[str, Any]]]:
    """Choose subcomponents whose removal hurts one task (a `TaskBatch`) and little else, on *training* data only.

    1. Rank every subcomponent by `task_attribution` and keep the top `n_candidates`.
    2. Remove each candidate alone: the drop of the task's logit difference ("ld_drop") and the CE increase on
       the text windows `text` [N, T] ("text_cost").
    3. Greedily add the candidates, most specific first (ld_drop / text_cost), keeping a candidate only while
       the joint removal costs at most `budget` nats of CE on `text`.
    Returns (removal, one row per candidate with its numbers and whether it was kept).
    """
    attr = task_attribution(model, batch)
    flat = sorted(((float(v), n, c) for n, a in attr.items() for c, v in enumerate(a.tolist())), reverse=True)
    ld0 = task_metrics(task_last_logits(model, batch), batch)["ld"]
    ce0 = text_ce(model, text)
    rows = []
    for a, n, c in flat[:n_candidates]:
        ld = task_metrics(task_last_logits(model, batch, {n: [c]}), batch)["ld"]
        cost = float((text_ce(model, text, {n: [c]}) - ce0).mean())
        rows.append({"name": n, "c": c, "attribution": a, "ld_drop": float((ld0 - ld).mean()), "text_cost": cost})
    rows.sort(key=lambda r: -r["ld_drop"] / max(r["text_cost"], 1e-4))
    removal: Removal = {}
    for r in rows:
        r["kept"] = False
        if r["ld_drop"] <= 0:
            continue
        trial = {k: list(v) for k, v in removal.items()}
        trial.setdefault(r["name"], []).append(r["c"])
        if float((text_ce(model, text, trial) - ce0).mean()) <= budget:
            removal, r["kept"] = trial, True
    return removal, rows
