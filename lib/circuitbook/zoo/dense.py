"""Chapter 1: the dense baseline and its kept checkpoints."""

from __future__ import annotations

from dataclasses import replace

from circuitbook import artifacts
from circuitbook.config import Profile, get_profile, pick, seed_everything
from circuitbook.models.gpt import GPT, GPTConfig, gpt_from_state
from circuitbook.train import TrainConfig, cosine_schedule, train
from circuitbook.zoo.core import (
    VOCAB_SIZE,
    fit_gpt,
    half,
    parents,
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
    if any(not artifacts.exists(n, prof) for n in names.values()):
        rtcfg = replace(tcfg, keep_steps=tuple(sorted(steps)))
        seed_everything(seed)
        model = to_device(GPT(gcfg))
        tok = tokenizer(prof)
        streams = token_streams(prof, tok)
        out = train(model, streams["train"], streams["val"], rtcfg, ckpt_dir=None, lr_schedule=cosine_schedule(),
                    eval_fn=task_eval_fn(task_sets(prof, tok, seed)), stop_at=max(steps), progress=progress)
        config = {"model": gcfg.to_dict(), "train": tcfg.to_dict(), "replayed_to": max(steps)}
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
