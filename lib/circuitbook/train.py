"""The one training loop: AdamW, a pluggable LR schedule, gradient clipping, evaluation,
a progress bar, periodic checkpoints, resume after interruption, kept checkpoints.

Determinism: the batch at step s depends only on (seed, s), there is no dropout, and a
checkpoint holds the weights, the optimizer state and the history, so a run killed at
any point and resumed ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from circuitbook.artifacts import load_tensors, save_tensors
from circuitbook.models.gpt import lm_loss

# ---------------------------------------------------------------- data


def get_batch(tokens: np.ndarray, step: int, batch_size: int, n_ctx: int, seed: int) -> torch.Tensor:
    """Random windows of `n_ctx` tokens; the choice depends only on (seed, step). Returns [batch, n_ctx]."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(tokens) - n_ctx, size=batch_size)
    return torch.from_numpy(np.stack([tokens[s : s + n_ctx] for s in starts]).astype(np.int64))


def val_batches(tokens: np.ndarray, n_batches: int, batch_size: int, n_ctx: int) -> list[torch.Tensor]:
    """Fixed, non-overlapping validation windows spread evenly over `tokens`."""
    n = min(n_batches * batch_size, len(tokens) // n_ctx)
    starts = np.linspace(0, len(tokens) - n_ctx, n).astype(np.int64)
    w = torch.from_numpy(np.stack([tokens[s : s + n_ctx] for s in starts]).astype(np.int64))
    return list(w.split(batch_size))


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    """Mean next-token loss per token over `batches`."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    total = sum(float(lm_loss(model(b.to(dev)), b.to(dev))) * b.shape[0] for b in batches)
    loss = total / sum(b.shape[0] for b in batches)
    model.train(was)
    return loss


# ---------------------------------------------------------------- schedules


def cosine_schedule(warmup_frac: float = 0.02, final: float = 0.1) -> Callable[[int, int], float]:
    """LR multiplier: linear warmup, then cosine decay to `final`."""

    def f(step: int, total: int) -> float:
        w = max(1, int(warmup_frac * total))
        if step < w:
            return (step + 1) / w
        t = (step - w) / max(1, total - w)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))

    return f


# ---------------------------------------------------------------- config and loop


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings of `train` (stored with each artifact it trains)."""

    steps: int  # optimizer steps
    batch_size: int = 32  # windows per step
    n_ctx: int = 128  # tokens per window
    lr: float = 3e-3  # peak learning rate (the schedule multiplies it)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    eps: float = 1e-8  # AdamW eps (the weight-sparse recipe uses 0.1)
    weight_decay: float = 0.1  # AdamW weight decay
    clip: str = "norm"  # "norm" (global L2 norm), "rms" (global RMS), "rms_normalize" (RMS set to clip_value), "none"
    clip_value: float = 1.0  # the clipping threshold (norm or RMS)
    eval_every: int = 200  # steps between validation evaluations
    eval_batches: int = 8  # validation batches per evaluation
    ckpt_every: int = 200  # steps between resumable checkpoints
    keep_steps: tuple[int, ...] = ()  # steps whose weights are kept (chapter 7 tracks features across them)
    seed: int = 0  # seeds the init (by the caller) and the batch order

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@torch.no_grad()
def clip_grad_rms_(params: Iterable[torch.Tensor], max_rms: float = 1.0, normalize: bool = False) -> float:
    """Scale all gradients jointly so their RMS over every entry is at most `max_rms`
    (with `normalize=True`: exactly `max_rms`, scaling small gradients up as well).
    Returns the RMS before scaling. Parameters without a gradient are skipped."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    sq = torch.stack([g.pow(2).sum() for g in grads]).sum()
    rms = float((sq / sum(g.numel() for g in grads)).sqrt())
    if rms > max_rms or (normalize and rms > 0):
        for g in grads:
            g.mul_(max_rms / rms)
    return rms


def clip_gradients(params: list[torch.Tensor], mode: str, value: float) -> float:
    """Clip in place; return the pre-clip global L2 norm ("norm") or global RMS (the other modes).

    "rms" scales the gradient down to RMS `value` when it is larger; "rms_normalize" scales it to exactly
    RMS `value` every step (the weight-sparse recipe, see chapter 2)."""
    if mode == "none":  # measure only
        return clip_grad_rms_(params, float("inf"))
    if mode in ("rms", "rms_normalize"):
        return clip_grad_rms_(params, value, normalize=mode == "rms_normalize")
    if mode == "norm":
        return float(torch.nn.utils.clip_grad_norm_(params, value))
    raise ValueError(f"clip must be 'norm', 'rms', 'rms_normalize' or 'none', got {mode!r}")


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state as flat tensors (for safetensors) plus its JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Inverse of `optimizer_tensors`."""
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialised (torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Under `torchrun`, join the process group (NCCL on GPUs, gloo on CPU) and return (rank, world size);
    alone, return (0, 1). On GPUs each process takes the device of its LOCAL_RANK."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    return world()


class Checkpoint:
    """`ckpt_dir/latest.safetensors` of a training loop: each module's weights (keys `<name>.<param>`), the
    optimizer state and a meta (step = steps done, history, config, extras). Shared by every loop of the book
    (`train`, `bridges.train_bridged`, `models.vlm.train_vlm`, `decomposition.decompose`). A checkpoint
    written with another config is discarded with a warning rather than resumed; `ckpt_dir=None` turns
    checkpointing off."""

    def __init__(self, ckpt_dir: Path | None, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer,
                 config: dict):
        self.path = Path(ckpt_dir) / "latest.safetensors" if ckpt_dir else None
        self.modules, self.opt, self.config = modules, opt, config

    def resume(self) -> dict | None:
        """Load the checkpoint into the modules and the optimizer; returns its meta, or None if there is none."""
        if self.path is None or not self.path.exists():
            return None
        tensors, meta = load_tensors(self.path)
        if meta["config"] != self.config:
            warnings.warn(f"{self.path} was written by a run with another config; starting from scratch",
                          stacklevel=3)
            self.path.unlink()
            return None
        for name, module in self.modules.items():
            n = len(name) + 1
            module.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(f"{name}.")})
        load_optimizer(self.opt, tensors, meta)
        return meta

    def step_done(self, done: int, total: int, every: int, stop_at: int | None, history: list[dict],
                  **extra) -> bool:
        """The tail of every training step: save when `done` is a multiple of `every`, the last step or
        `stop_at` (a simulated interruption); returns True when the loop must stop there."""
        if done % every == 0 or done == total or done == stop_at:
            self.save(done, history, **extra)
        return stop_at is not None and done >= stop_at

    def save(self, step: int, history: list[dict], **extra) -> None:
        if self.path is None or world()[0] != 0:  # one writer: rank 0
            return
        ot, om = optimizer_tensors(self.opt)
        mt = {f"{name}.{k}": v for name, m in self.modules.items() for k, v in m.state_dict().items()}
        save_tensors(self.path, {**mt, **ot}, {"step": step, "history": history, "config": self.config, **extra, **om})


def train(
    model: torch.nn.Module,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    cfg: TrainConfig,
    ckpt_dir: Path | None = None,
    lr_schedule: Callable[[int, int], float] | None = None,
    optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None,
    after_step: Callable[[int], None] | None = None,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> dict:
    """Train `model` on next-token prediction; resume from `ckpt_dir/latest` if it exists.

    lr_schedule(step, total) multiplies cfg.lr; after_step(step) runs after each optimizer
    step (the weight sparsifier plugs in here); eval_fn(model) adds metrics at each
    evaluation; stop_at simulates an interruption (the run stops after that step, leaving a
    checkpoint). Returns {"history": [...], "kept": {step: state_dict}, "tokens_per_s": ...}.

    Batches go to the model's device. Under torchrun (`init_distributed`), each of the W processes runs
    its 1/W slice of the same global batch through DistributedDataParallel, which averages the gradients,
    so every rank ends with the weights one process would reach on the whole batch; rank 0 writes the
    checkpoints.
    """
    lr_schedule = lr_schedule or cosine_schedule()
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=cfg.betas,
            eps=cfg.eps,
        )
    else:
        opt = optimizer(params)
    history: list[dict] = []
    kept: dict[int, dict[str, torch.Tensor]] = {}
    start = 0
    ckpt = Checkpoint(ckpt_dir, {"model": model}, opt, cfg.to_dict())
    if (meta := ckpt.resume()) is not None:
        start, history = meta["step"], meta["history"]
        for s in meta["kept"]:
            kept[s] = load_tensors(Path(ckpt_dir) / f"kept_{s}.safetensors")[0]
    val = val_batches(val_tokens, cfg.eval_batches, cfg.batch_size, cfg.n_ctx)
    dev = next(model.parameters()).device
    rank, n_proc = world()
    if cfg.batch_size % n_proc:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {n_proc} processes")
    fwd = DistributedDataParallel(model) if n_proc > 1 else model

    model.train()
    t0, tokens_seen = time.perf_counter(), 0
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress, desc="train")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_schedule(step, cfg.steps)
        batch = get_batch(train_tokens, step, cfg.batch_size, cfg.n_ctx, cfg.seed).chunk(n_proc)[rank].to(dev)
        loss = lm_loss(fwd(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gstat = clip_gradients(params, cfg.clip, cfg.clip_value)
        opt.step()
        if after_step is not None:
            after_step(step)
        tokens_seen += batch.numel() * n_proc
        done = step + 1
        row = {"step": done, "train_loss": loss.item(), "lr": opt.param_groups[0]["lr"], "grad_stat": gstat}
        if done % cfg.eval_every == 0 or done == cfg.steps:
            row["val_loss"] = evaluate_lm(model, val)
            if eval_fn is not None:
                row.update(eval_fn(model))
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{row['val_loss']:.3f}")
        history.append(row)
        if done in cfg.keep_steps:
            kept[done] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}  # stored on the CPU
            if ckpt_dir is not None and rank == 0:
                save_tensors(Path(ckpt_dir) / f"kept_{done}.safetensors", kept[done], {"step": done})
        if ckpt.step_done(done, cfg.steps, cfg.ckpt_every, stop_at, history, kept=sorted(kept)):
            break
    bar.close()
    dt = time.perf_counter() - t0
    return {"history": history, "kept": kept, "tokens_per_s": tokens_seen / dt if dt > 0 else float("nan")}
