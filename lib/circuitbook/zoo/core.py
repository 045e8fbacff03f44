"""What every chapter's trained things share: the tokenizer, the token streams, the task prompts, and the
GPT training step that keeps checkpoints as artifacts. Every function here takes a profile."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from circuitbook import artifacts
from circuitbook.config import DATA, Profile, device, get_profile, pick
from circuitbook.data.corpus import STDLIB, load_corpus
from circuitbook.data.tasks import TASKS, encode_examples, evaluate_task, sample_examples
from circuitbook.data.tokenizer import CodeTokenizer, train_tokenizer
from circuitbook.models.gpt import GPT
from circuitbook.train import TrainConfig, train

VOCAB_SIZE = 2048


def suffix(seed: int) -> str:
    return "" if seed == 0 else f"_s{seed}"


def tokenizer(profile: str | Profile, retrain: bool = False) -> CodeTokenizer:
    """The BPE tokenizer trained on the profile's training corpus (vocab 2048)."""

    def fit():
        tok = train_tokenizer([load_corpus(profile)["train"]], VOCAB_SIZE)
        return {"tokenizer_json": tok.to_tensor()}, {"vocab_size": tok.vocab_size}

    t, _ = artifacts.load_or_train("tokenizer", profile, fit, {"vocab_size": VOCAB_SIZE}, retrain, parents=[STDLIB])
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
        artifacts.atomic_save_npy(path, ids)
        out[split] = ids
    return out




@dataclass
class TaskSets:
    """Encoded train/test contrast sets for every task."""

    train: dict
    test: dict
    examples: dict


def task_sets(profile: str | Profile, tok: CodeTokenizer, seed: int = 0) -> TaskSets:
    """Train and held-out prompts of every task; prompts longer than the profile's context are dropped
    (none at `full`, whose context of 128 tokens holds every prompt; a few at `ci`)."""
    n_test = pick(profile, ci=64, full=400)
    n_train = pick(profile, ci=64, full=400)
    n_ctx = pick(profile, ci=64, full=128)
    fits = lambda exs: [e for e in exs if len(tok.encode(e.prompt)) <= n_ctx]
    tr, te, ex = {}, {}, {}
    for t in TASKS:
        ex[t] = fits(sample_examples(t, "test", n_test, seed))
        te[t] = encode_examples(ex[t], tok)
        tr[t] = encode_examples(fits(sample_examples(t, "train", n_train, seed)), tok)
    return TaskSets(tr, te, ex)


def task_eval_fn(sets: TaskSets, n: int = 200):
    """An eval_fn for `train`: held-out accuracy of each task on the first n test prompts."""
    small = {t: b[:n] for t, b in sets.test.items()}

    def f(model) -> dict[str, float]:
        model.eval()
        out = {f"acc_{t}": evaluate_task(model, b)["acc"] for t, b in small.items()}
        model.train()
        return out

    return f



def thin(history: list[dict], every: int = 10) -> list[dict]:
    return [r for r in history if "val_loss" in r or r["step"] % every == 0]


def half(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}


def to_device(x):
    """A model (or a tensor, or a dict or list of them) on the book's device, `config.device()`: where the zoo
    trains and where the models it returns live. Artifacts are stored from the CPU and load onto it; on the CPU
    this is a no-op."""
    dev = device()
    if isinstance(x, dict):
        return {k: to_device(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(to_device(v) for v in x)
    return x.to(dev)


def parents(profile: str | Profile, *names: str) -> list[Path]:
    """The files of the named artifacts of `profile`: the `parents` a child artifact records and checks."""
    return [artifacts.artifact_path(n, profile) for n in names]


def fit_gpt(prof: Profile, name: str, model: GPT, tcfg: TrainConfig, config: dict, progress: bool, **train_kw):
    """Train `model` on the profile's corpus (resumable from data/scratch), keeping checkpoints as artifacts
    (children of the tokenizer, like the final model)."""
    tok = tokenizer(prof)
    streams = token_streams(prof, tok)
    sets = task_sets(prof, tok, tcfg.seed)
    to_device(model)  # CIRCUITBOOK_DEVICE, else CUDA when present (the artifact is stored from CPU)
    out = train(model, streams["train"], streams["val"], tcfg, ckpt_dir=scratch_dir(prof, name),
                eval_fn=task_eval_fn(sets), progress=progress, **train_kw)
    model.cpu()
    for step, sd in out["kept"].items():  # checkpoints along training (chapter 7 follows features across them)
        if step == tcfg.steps:
            continue  # the final checkpoint is the artifact itself
        artifacts.save_tensors(
            artifacts.artifact_path(f"{name}_step{step}", prof), half(sd),
            {"name": f"{name}_step{step}", "profile": prof.name, "config": config, "step": step,
             "parents": artifacts.parent_digests(parents(prof, "tokenizer"))},
        )
    return model, {"history": thin(out["history"]), "tokens_per_s": out["tokens_per_s"]}


def scratch_dir(profile: str | Profile, name: str) -> Path:
    """Where a training run of artifact `name` keeps its resumable checkpoints (generated, git-ignored)."""
    return DATA / "cache" / "runs" / get_profile(profile).name / name

