"""The training loop: decompose a frozen target's chosen matrices into rank-one subcomponents.

One step: run the target (caching each decomposed layer's input), compute causal importances,
evaluate every loss object on the same `Step`, sum coeff × loss, take an Adam step on U, V and
the importance MLPs. An optional faithfulness warm-up first fits U Vᵀ to W alone.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from circuitbook.config import seed_everything
from circuitbook.decomposition.components import ComponentModel
from circuitbook.decomposition.losses import OutputLoss, Step
from circuitbook.decomposition.metrics import ci_l0
from circuitbook.train import Checkpoint

DataFn = Callable[[int, torch.Generator], torch.Tensor]  # (batch_size, generator) -> inputs


@dataclass
class Decomposition:
    """A trained component model and what happened while training it."""

    model: ComponentModel
    history: dict[str, list[float]] = field(
        default_factory=dict
    )  # "step", each loss, "total", "l0/<name>", ...
    seconds: float = 0.0


def faithfulness_warmup(
    model: ComponentModel, steps: int, lr: float = 0.01, weight_decay: float = 0.1
) -> float:
    """Fit U Vᵀ to W alone (AdamW) before the main loop; returns the final faithfulness loss."""
    params = [p for c in model.components.values() for p in c.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        deltas = model.weight_deltas()
        loss = sum((d**2).sum() for d in deltas.values()) / sum(d.numel() for d in deltas.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def decompose(
    target: nn.Module,
    C: dict[str, int],
    data_fn: DataFn,
    losses: list,
    *,
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    lr_schedule: str = "cosine",  # "cosine" (to 0) or "constant"
    warmup_steps: int = 200,
    use_delta: bool = True,
    ci_hidden: int = 16,
    ci_fn: str = "mlp",
    output_loss: OutputLoss = "mse",
    tie: tuple[str, str] | None = None,
    seed: int = 0,
    log_every: int = 100,
    eval_fn: Callable[[ComponentModel], dict[str, float]] | None = None,
    eval_every: int | None = None,
    ckpt_dir: Path | None = None,
    ckpt_every: int = 250,
    ckpt_config: dict | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> Decomposition:
    """Decompose `target`'s nn.Linear layers named in `C` (name -> number of subcomponents).

    `losses` are loss objects (Faithfulness, StochasticRecon, ..., PersistentPGDRecon) each with its
    own `coeff`. `tie=(a, b)` starts b's subcomponents as the transpose of a's (TMS: linear2 = linear1ᵀ).
    `eval_fn(model) -> {metric: value}` is logged every `eval_every` steps and at the end.

    With `ckpt_dir`, a `train.Checkpoint` (subcomponents, importance functions, optimizer, history) is
    written every `ckpt_every` steps and a rerun resumes from it (only if `ckpt_config`, the run's
    settings, is the same). On resume the data generator is reseeded from (seed, step) and the
    adversary's persistent sources start afresh; `stop_at` ends the run after that step (a simulated
    interruption, for tests).
    """
    seed_everything(seed)
    model = ComponentModel(target, C, ci_hidden=ci_hidden, use_delta=use_delta, ci_fn=ci_fn)
    if tie is not None:
        a, b = model.component(tie[0]), model.component(tie[1])
        with torch.no_grad():
            b.U.copy_(a.V)
            b.V.copy_(a.U)
    gen = torch.Generator().manual_seed(seed)
    dev = next(target.parameters()).device
    if warmup_steps:
        faithfulness_warmup(model, warmup_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = (
        (lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))) if lr_schedule == "cosine" else (lambda s: 1.0)
    )
    history: dict[str, list[float]] = {"step": []}
    eval_every = eval_every or max(steps // 10, 1)
    run_config = json.loads(json.dumps({"ckpt_config": ckpt_config, "steps": steps, "batch_size": batch_size,
                                        "seed": seed}))  # as it reads back from the checkpoint's meta
    ckpt = Checkpoint(ckpt_dir, {"components": model.components, "ci_fns": model.ci_fns}, opt, run_config)
    start, seconds_before = 0, 0.0
    meta = ckpt.resume()
    if meta is not None:
        start, history, seconds_before = meta["step"], meta["history"], meta.get("seconds", 0.0)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + start)
    stop = None if stop_at is None else stop_at + 1  # stop_at is a step index, step_done counts steps done
    t0 = time.perf_counter()
    bar = tqdm(range(start, steps), desc="decompose", disable=not progress, initial=start, total=steps)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * sched(step)
        x = data_fn(batch_size, gen).to(dev)  # drawn on the CPU, used where the target is
        with torch.no_grad():
            target_out, inputs = model.run_with_inputs(x)
        ci = model.causal_importances(inputs)
        deltas = model.weight_deltas() if use_delta else None  # the Δ-component, when used
        s = Step(model, x, target_out, ci, deltas, step / steps, output_loss)
        terms = {f.name: f(s) for f in losses}
        total = sum(f.coeff * terms[f.name] for f in losses)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            history["step"].append(step)
            for k, v in terms.items():
                history.setdefault(k, []).append(float(v.detach()))
            history.setdefault("total", []).append(float(total.detach()))
            for k, v in ci_l0(ci.lower).items():
                history.setdefault(f"l0/{k}", []).append(v)
            bar.set_postfix(loss=f"{float(total.detach()):.3g}")
        if eval_fn is not None and (step % eval_every == 0 or step == steps - 1):
            history.setdefault("eval_step", []).append(step)
            with torch.no_grad():
                for k, v in eval_fn(model).items():
                    history.setdefault(f"eval/{k}", []).append(float(v))
        seconds = seconds_before + time.perf_counter() - t0
        if ckpt.step_done(step + 1, steps, ckpt_every, stop, history, seconds=seconds):
            break
    return Decomposition(model, history, seconds_before + time.perf_counter() - t0)
