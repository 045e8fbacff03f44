"""The book's trained things, built or loaded by profile: tokenizer, token streams, the dense baseline.

Each function goes through `artifacts.load_or_train`, so a shipped artifact is loaded
(after its checksum), a missing one is trained, and `retrain=True` trains again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from circuitbook import artifacts
from circuitbook.config import DATA, Profile, get_profile, pick, seed_everything
from circuitbook.data.corpus import load_corpus
from circuitbook.data.tasks import TASKS, encode_examples, evaluate_task, sample_examples
from circuitbook.data.tokenizer import CodeTokenizer, train_tokenizer
from circuitbook.models.gpt import GPT, GPTConfig, gpt_from_state
from circuitbook.train import TrainConfig, cosine_schedule, train

VOCAB_SIZE = 2048


def _suffix(seed: int) -> str:
    return "" if seed == 0 else f"_s{seed}"


def tokenizer(profile: str | Profile, retrain: bool = False) -> CodeTokenizer:
    """The BPE tokenizer trained on the profile's training corpus (vocab 2048)."""

    def fit():
        tok = train_tokenizer([load_corpus(profile)["train"]], VOCAB_SIZE)
        return {"tokenizer_json": tok.to_tensor()}, {"vocab_size": tok.vocab_size}

    t, _ = artifacts.load_or_train("tokenizer", profile, fit, {"vocab_size": VOCAB_SIZE}, retrain)
    return CodeTokenizer.from_tensor(t["tokenizer_json"])


def token_streams(profile: str | Profile, tok: CodeTokenizer | None = None) -> dict[str, np.ndarray]:
    """The corpus as uint16 token streams {"train", "val"}, cached under data/cache/<profile>/."""
    prof = get_profile(profile)
    tok = tok or tokenizer(prof)
    corpus = load_corpus(prof)
    key = hashlib.sha1((tok.tok.to_str() + str(len(corpus["train"])) + corpus["val"][:1000]).encode()).hexdigest()
    out = {}
    for split, text in corpus.items():
        path = DATA / "cache" / prof.name / f"tokens_{key[:10]}_{split}.npy"
        if path.exists():
            out[split] = np.load(path, allow_pickle=False)
            continue
        ids = np.array(tok.encode(text), dtype=np.uint16)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, ids, allow_pickle=False)
        tmp.replace(path)
        out[split] = ids
    return out


# ---------------------------------------------------------------- tasks


@dataclass
class TaskSets:
    """Encoded train/test contrast sets for every task."""

    train: dict
    test: dict
    examples: dict


def task_sets(profile: str | Profile, tok: CodeTokenizer, seed: int = 0) -> TaskSets:
    n_test = pick(profile, ci=64, full=400)
    n_train = pick(profile, ci=64, full=400)
    tr, te, ex = {}, {}, {}
    for t in TASKS:
        ex[t] = sample_examples(t, "test", n_test, seed)
        te[t] = encode_examples(ex[t], tok)
        tr[t] = encode_examples(sample_examples(t, "train", n_train, seed), tok)
    return TaskSets(tr, te, ex)


def task_eval_fn(sets: TaskSets, n: int = 200):
    """An eval_fn for `train`: held-out accuracy of each task on the first n test prompts."""
    from circuitbook.data.tasks import TaskBatch

    small = {t: TaskBatch(*(getattr(b, f)[:n] for f in ("tokens", "last", "correct", "wrong", "labels")))
             for t, b in sets.test.items()}

    def f(model) -> dict[str, float]:
        model.eval()
        out = {f"acc_{t}": evaluate_task(model, b)["acc"] for t, b in small.items()}
        model.train()
        return out

    return f


# ---------------------------------------------------------------- the dense baseline


def dense_configs(profile: str | Profile) -> tuple[GPTConfig, TrainConfig]:
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
    return gcfg, tcfg


def _thin(history: list[dict], every: int = 10) -> list[dict]:
    return [r for r in history if "val_loss" in r or r["step"] % every == 0]


def _half(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}


def dense_baseline(
    profile: str | Profile, seed: int = 0, retrain: bool = False, progress: bool = True
) -> tuple[GPT, dict]:
    """The dense GPT every later chapter compares against. Returns (model, meta with metrics)."""
    prof = get_profile(profile)
    gcfg, tcfg = dense_configs(prof)
    tcfg.seed = seed
    name = f"dense_baseline{_suffix(seed)}"
    config = {"model": gcfg.to_dict(), "train": tcfg.to_dict()}

    def fit():
        tok = tokenizer(prof)
        streams = token_streams(prof, tok)
        sets = task_sets(prof, tok, seed)
        seed_everything(seed)
        model = GPT(gcfg)
        ckpt = DATA / "scratch" / prof.name / name
        out = train(model, streams["train"], streams["val"], tcfg, ckpt_dir=ckpt, lr_schedule=cosine_schedule(),
                    eval_fn=task_eval_fn(sets), progress=progress)
        for step, sd in out["kept"].items():  # checkpoints along training, for chapter 7
            artifacts.save_tensors(
                artifacts.artifact_path(f"{name}_step{step}", prof), _half(sd),
                {"name": f"{name}_step{step}", "profile": prof.name, "config": config, "step": step},
            )
        return _half(model.state_dict()), {"history": _thin(out["history"]), "tokens_per_s": out["tokens_per_s"]}

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain)
    return gpt_from_state(tensors, gcfg).eval(), meta


def dense_checkpoints(profile: str | Profile, seed: int = 0) -> dict[int, GPT]:
    """The dense baseline's kept checkpoints {step: model} (trains the baseline if they are missing)."""
    prof = get_profile(profile)
    gcfg, tcfg = dense_configs(prof)
    name = f"dense_baseline{_suffix(seed)}"
    if not all(artifacts.exists(f"{name}_step{s}", prof) for s in tcfg.keep_steps):
        dense_baseline(prof, seed, retrain=True)
    out = {}
    for s in tcfg.keep_steps:
        tensors, _ = artifacts.load_tensors(artifacts.artifact_path(f"{name}_step{s}", prof))
        out[s] = gpt_from_state(tensors, gcfg).eval()
    return out


def scratch_dir(profile: str | Profile, name: str) -> Path:
    return DATA / "scratch" / get_profile(profile).name / name
