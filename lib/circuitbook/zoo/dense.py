"""Chapter 1: the dense baseline and its kept checkpoints."""

from __future__ import annotations

import json
from dataclasses import replace

import torch

from circuitbook import artifacts
from circuitbook.config import Profile, get_profile, pick, seed_everything
from circuitbook.models.gpt import GPT, GPTConfig, gpt_from_state, lm_loss
from circuitbook.train import Checkpoint, TrainConfig, clip_gradients, cosine_schedule, get_batch, train
from circuitbook.zoo.core import (
    VOCAB_SIZE,
    fit_gpt,
    half,
    parents,
    scratch_dir,
    suffix,
    task_eval_fn,
    task_sets,
    to_device,
    token_streams,
    tokenizer,
)


def dense_configs(profile: str | Profile, seed: int = 0) -> tuple[GPTConfig, TrainConfig]:
    """Model and training settings of the dense baseline for a profile."""
    gcfg = pick(
        profile,
        ci=GPTConfig(vocab_size=VOCAB_SIZE, n_ctx=64, d_model=32, n_layers=2, n_heads=2, d_head=16, d_mlp=128),
        full=GPTConfig(vocab_size=VOCAB_SIZE, n_ctx=128, d_model=128, n_layers=4, n_heads=4, d_head=32, d_mlp=512),
    )
    tcfg = pick(
        profile,
        ci=TrainConfig(steps=60, batch_size=8, n_ctx=64, lr=3e-3, eval_every=20, eval_batches=2, ckpt_every=20,
                       keep_steps=(10, 20, 40, 60)),
        full=TrainConfig(steps=4000, batch_size=32, n_ctx=128, lr=3e-3, eval_every=250, eval_batches=16,
                         ckpt_every=100, keep_steps=(50, 150, 400, 1000, 2000, 4000)),
    )
    return gcfg, replace(tcfg, seed=seed)



def dense_baseline(
    profile: str | Profile, seed: int = 0, retrain: bool = False, progress: bool = True
) -> tuple[GPT, dict]:
    """The dense GPT every later chapter compares against. Returns (model, meta with metrics)."""
    prof = get_profile(profile)
    gcfg, tcfg = dense_configs(prof, seed)
    name = f"dense_baseline{suffix(seed)}"
    config = {"model": gcfg.to_dict(), "train": tcfg.to_dict()}

    def fit():
        seed_everything(seed)
        model, metrics = fit_gpt(prof, name, GPT(gcfg), tcfg, config, progress, lr_schedule=cosine_schedule())
        return half(model.state_dict()), metrics

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain, parents=parents(prof, "tokenizer"))
    return to_device(gpt_from_state(tensors, gcfg).eval()), meta



def dense_checkpoints(profile: str | Profile, seed: int = 0) -> dict[int, GPT]:
    """The dense baseline's kept checkpoints {step: model}. Missing ones are trained (the whole baseline again)
    only for a generated profile; a shipped profile raises instead of silently retraining its shipped model."""
    prof = get_profile(profile)
    gcfg, tcfg = dense_configs(prof)
    name = f"dense_baseline{suffix(seed)}"
    earlier = [s for s in tcfg.keep_steps if s != tcfg.steps]
    missing = [s for s in earlier if not artifacts.exists(f"{name}_step{s}", prof)]
    if missing and prof.shipped:
        raise artifacts.ArtifactError(f"shipped checkpoints {name}_step{missing} are missing; restore them from git, "
                                      f"or rebuild the dense baseline (retrain=True) and everything built on it")
    if missing:
        dense_baseline(prof, seed, retrain=True)
    out = {}
    for s in earlier:
        tensors, _ = artifacts.load_tensors(artifacts.artifact_path(f"{name}_step{s}", prof))
        out[s] = to_device(gpt_from_state(tensors, gcfg).eval())
    out[tcfg.steps] = dense_baseline(prof, seed)[0]
    return out




def between_steps(losses: dict[int, float], target: float, n: int = 10) -> tuple[int, ...]:
    """Where to add checkpoints when no kept one is near `target`: the n - 1 steps that split the interval between
    the two kept steps whose losses bracket `target` into n equal parts (steps in `losses`, loss falling with step).
    Empty when no two kept steps bracket it."""
    steps = sorted(losses)
    for lo, hi in zip(steps, steps[1:]):
        if losses[lo] >= target >= losses[hi]:
            return tuple(sorted({lo + round(i * (hi - lo) / n) for i in range(1, n)} - {lo, hi}))
    return ()


def _must_build(prof: Profile, names: list[str], config: dict) -> bool:
    """Whether the checkpoint artifacts `names` of one run must be (re)built: one is missing or was stored with
    another config. A shipped one made with another config is an error, not something to overwrite."""
    fresh = [artifacts.exists(n, prof) and artifacts.load_tensors(artifacts.artifact_path(n, prof))[1]["config"]
             == json.loads(json.dumps(config)) for n in names]
    if all(fresh):
        return False
    if prof.shipped and any(artifacts.exists(n, prof) for n in names):
        raise artifacts.ArtifactError(f"shipped {sorted(names)} were made with another config; "
                                      "delete them to continue the run again")
    return True


def replay_name(step: int, seed: int = 0) -> str:
    return f"dense_baseline{suffix(seed)}_replay_step{step}"


def dense_replayed(profile: str | Profile, steps: tuple[int, ...], seed: int = 0,
                   progress: bool = True) -> dict[int, GPT]:
    """The dense baseline's recipe replayed from its step 0 (the same init, settings, data order and evaluations)
    up to max(steps), keeping `steps` (artifacts `dense_baseline_replay_step<s>`, children of the tokenizer). Not
    the baseline's own run bit for bit: float sums in another order (another thread count) drift apart within a few
    hundred steps (about 6% relative in the weights by step 400), so a caller that needs the replay to stand for the
    baseline keeps one of its kept steps too and compares the losses there (`zoo.circuits.dense_matched`)."""
    prof = get_profile(profile)
    gcfg, tcfg = dense_configs(prof, seed)
    names = {s: replay_name(s, seed) for s in steps}
    config = {"model": gcfg.to_dict(), "train": tcfg.to_dict(), "replayed_to": max(steps)}
    if _must_build(prof, list(names.values()), config):
        rtcfg = replace(tcfg, keep_steps=tuple(sorted(steps)))
        seed_everything(seed)
        model = to_device(GPT(gcfg))
        tok = tokenizer(prof)
        streams = token_streams(prof, tok)
        out = train(model, streams["train"], streams["val"], rtcfg, ckpt_dir=None, lr_schedule=cosine_schedule(),
                    eval_fn=task_eval_fn(task_sets(prof, tok, seed)), stop_at=max(steps), progress=progress)
        for s in steps:
            artifacts.save_tensors(
                artifacts.artifact_path(names[s], prof), half({k: v.cpu() for k, v in out["kept"][s].items()}),
                {"name": names[s], "profile": prof.name, "config": config, "step": s,
                 "parents": artifacts.parent_digests(parents(prof, "tokenizer"))})
    models = {}
    for s in steps:
        tensors, _ = artifacts.load_tensors(artifacts.artifact_path(names[s], prof))
        models[s] = to_device(gpt_from_state(tensors, gcfg).eval())
    return models


def continued_name(start: int, step: int, seed: int = 0) -> str:
    return f"dense_baseline{suffix(seed)}_from{start}_step{step}"


def _continue_run(prof: Profile, start: int, keep: tuple[int, ...], stop: int, seed: int, warm: int,
                  progress: bool) -> dict[int, dict]:
    """Continue the dense baseline's own run from its kept checkpoint `start` with its recipe (the same LR
    schedule at the same global steps, the same batches) up to `stop`, keeping `keep`. Only the weights were
    kept at `start`, not the optimizer: AdamW's moments are first rebuilt from the gradients of the `warm`
    batches before `start` at learning rate 0 (no weight moves), so the run does not start with the large
    sign-like steps of an empty Adam state. Resumable (data/cache/runs). Returns {step: state dict (CPU)}."""
    gcfg, tcfg = dense_configs(prof, seed)
    tcfg = replace(tcfg, keep_steps=tuple(sorted(keep)))
    name = f"dense_baseline{suffix(seed)}_from{start}"
    ckpt_dir = scratch_dir(prof, name)
    tensors, _ = artifacts.load_tensors(artifacts.artifact_path(f"dense_baseline{suffix(seed)}_step{start}", prof))
    model = to_device(gpt_from_state({k: v.float() for k, v in tensors.items()}, gcfg))
    streams = token_streams(prof, tokenizer(prof))
    latest = ckpt_dir / "latest.safetensors"
    if not latest.exists() or artifacts.load_tensors(latest)[1].get("config") != tcfg.to_dict():
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": tcfg.weight_decay},
                                 {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                lr=0.0, betas=tcfg.betas, eps=tcfg.eps)
        dev = next(model.parameters()).device
        model.train()
        for step in range(start - warm, start):  # lr 0: the moments fill, the weights stay
            batch = get_batch(streams["train"], step, tcfg.batch_size, tcfg.n_ctx, tcfg.seed).to(dev)
            opt.zero_grad(set_to_none=True)
            lm_loss(model(batch), batch).backward()
            clip_gradients(params, tcfg.clip, tcfg.clip_value)
            opt.step()
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        Checkpoint(ckpt_dir, {"model": model}, opt, tcfg.to_dict()).save(start, [], kept=[])
    out = train(model, streams["train"], streams["val"], tcfg, ckpt_dir=ckpt_dir, lr_schedule=cosine_schedule(),
                stop_at=stop, progress=progress)
    return {**out["kept"], "history": out["history"]}


def dense_continued(profile: str | Profile, steps: tuple[int, ...], start: int, keep: tuple[int, ...] = (),
                    warm: int = 50, seed: int = 0, progress: bool = True) -> dict[int, GPT]:
    """The dense baseline's run continued from its kept checkpoint `start` (`_continue_run`), keeping `steps`
    as artifacts `dense_baseline_from<start>_step<s>` (fp16, children of the kept checkpoint). `keep`: every
    step the continuation keeps in its run directory (a pilot reads them there), a superset of `steps`;
    it is part of the stored config. Returns {step: model}."""
    prof = get_profile(profile)
    gcfg, tcfg = dense_configs(prof, seed)
    keep = tuple(sorted(set(keep) | set(steps)))
    names = {s: continued_name(start, s, seed) for s in steps}
    config = {"model": gcfg.to_dict(), "train": replace(tcfg, keep_steps=keep).to_dict(), "continued_from": start,
              "warm": warm}
    if _must_build(prof, list(names.values()), config):
        run = _continue_run(prof, start, keep, max(steps), seed, warm, progress)
        hist = [r for r in run["history"] if "val_loss" in r]
        for s in steps:
            artifacts.save_tensors(
                artifacts.artifact_path(names[s], prof), half(run[s]),
                {"name": names[s], "profile": prof.name, "config": config, "step": s, "history": hist,
                 "parents": artifacts.parent_digests(parents(prof, f"dense_baseline{suffix(seed)}_step{start}"))})
        if prof.shipped:
            artifacts.update_manifest()
    models = {}
    for s in steps:
        tensors, _ = artifacts.load_tensors(artifacts.artifact_path(names[s], prof))
        models[s] = to_device(gpt_from_state(tensors, gcfg).eval())
    return models


def continued_states(profile: str | Profile, steps: tuple[int, ...], start: int, keep: tuple[int, ...],
                     warm: int = 50, seed: int = 0, progress: bool = True) -> dict[int, GPT]:
    """Models of the continuation at `steps` (all in `keep`) read from its run directory, trained there when
    missing; nothing is shipped (a pilot's candidates)."""
    prof = get_profile(profile)
    gcfg, _ = dense_configs(prof, seed)
    run = _continue_run(prof, start, tuple(sorted(keep)), max(steps), seed, warm, progress)
    return {s: to_device(gpt_from_state({k: v.float() for k, v in run[s].items()}, gcfg).eval()) for s in steps}
