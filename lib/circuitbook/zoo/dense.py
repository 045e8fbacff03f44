"""Chapter 1: the dense baseline and its kept checkpoints."""

from __future__ import annotations

from dataclasses import replace

from circuitbook import artifacts
from circuitbook.config import Profile, get_profile, pick, seed_everything
from circuitbook.models.gpt import GPT, GPTConfig, gpt_from_state
from circuitbook.train import TrainConfig, cosine_schedule
from circuitbook.zoo.core import VOCAB_SIZE, fit_gpt, half, parents, suffix, to_device


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


