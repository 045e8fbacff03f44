"""What every chapter's trained things share: the tokenizer, the token streams, the task prompts, and the
GPT training step that keeps checkpoints as artifacts. Every function here takes a profile."""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from circuitbook import artifacts
from circuitbook.config import DATA, Profile, device, get_profile, pick
from circuitbook.data.corpus import STDLIB, frozen_stdlib, load_corpus
from circuitbook.data.forms import GROUPS, examples_sha256, sample_form_examples, valid_contrast
from circuitbook.data.tasks import TASKS, TaskBatch, encode_examples, evaluate_task, logit_margins, sample_examples
from circuitbook.data.tokenizer import CodeTokenizer, train_tokenizer
from circuitbook.data.wild import WILD, freeze_wild, load_wild, wild_document
from circuitbook.models.gpt import GPT
from circuitbook.train import TrainConfig, evaluate_lm, train, val_batches

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
    examples: dict  # {task: [Example]} of the test sets
    train_examples: dict  # {task: [Example]} of the train sets


def task_sets(profile: str | Profile, tok: CodeTokenizer, seed: int = 0) -> TaskSets:
    """Train and held-out prompts of every task; prompts longer than the profile's context are dropped
    (none at `full`, whose context of 128 tokens holds every prompt; a few at `ci`)."""
    n_test = pick(profile, ci=64, full=400)
    n_train = pick(profile, ci=64, full=400)
    n_ctx = pick(profile, ci=64, full=128)
    fits = lambda exs: [e for e in exs if len(tok.encode(e.prompt)) <= n_ctx]
    tr, te, ex, ex_tr = {}, {}, {}, {}
    for t in TASKS:
        ex[t] = fits(sample_examples(t, "test", n_test, seed))
        te[t] = encode_examples(ex[t], tok)
        ex_tr[t] = fits(sample_examples(t, "train", n_train, seed))
        tr[t] = encode_examples(ex_tr[t], tok)
    return TaskSets(tr, te, ex, ex_tr)


@dataclass
class FormSets:
    """Encoded off-template contrast sets (`data.forms`) of every task: the pruning forms (for finding
    circuits) and the held-out forms (only to measure), with their examples and each prompt set's sha256."""

    pruning: dict
    heldout: dict
    examples: dict  # {group: {task: [FormExample]}}
    sha256: dict  # {group: {task: sha256 of the prompt set}}


def form_sets(profile: str | Profile, tok: CodeTokenizer, seed: int = 0) -> FormSets:
    """400 prompts (ci: 64) per task and group, valid contrasts under `tok` that fit the profile's context."""
    n = pick(profile, ci=64, full=400)
    n_ctx = pick(profile, ci=64, full=128)
    ex = {g: {t: sample_form_examples(t, g, n, seed, tok, max_tokens=n_ctx) for t in TASKS} for g in GROUPS}
    enc = {g: {t: encode_examples(e, tok) for t, e in ex[g].items()} for g in GROUPS}
    digests = {g: {t: examples_sha256(e) for t, e in ex[g].items()} for g in GROUPS}
    return FormSets(enc["pruning"], enc["heldout"], ex, digests)


@dataclass
class WildSets:
    """Encoded wild prompts (`data.wild`: natural instances from code the models never trained on) of the
    tasks that have them; `file_sha256` is the shipped file's, `sha256` each prompt set's as used here."""

    test: dict
    examples: dict
    sha256: dict
    file_sha256: str
    dropped: dict  # {task: prompts not usable under this tokenizer and context (none at `full`)}


def wild_sets(profile: str | Profile, tok: CodeTokenizer) -> WildSets:
    """The shipped wild prompts, encoded. At `full` (the tokenizer they were mined with, context 128) every
    prompt is used as shipped; another profile's tokenizer may not make every answer one token (those are
    dropped) and its shorter context loses leading lines of a prompt (a prompt that still does not fit is
    dropped)."""
    n_ctx = pick(profile, ci=64, full=128)
    ex, dropped = {}, {}
    for t, exs in load_wild().items():
        kept = []
        for e in exs:
            prompt = e.prompt
            while len(tok.encode(prompt)) > n_ctx and "\n" in prompt:
                prompt = prompt.split("\n", 1)[1]
            if len(tok.encode(prompt)) <= n_ctx and valid_contrast(tok, prompt, e.correct, e.wrong):
                kept.append(e if prompt == e.prompt else replace(e, prompt=prompt))
        ex[t], dropped[t] = kept, len(exs) - len(kept)
    return WildSets({t: encode_examples(e, tok) for t, e in ex.items() if e}, ex,
                    {t: examples_sha256(e) for t, e in ex.items()}, artifacts.sha256(WILD), dropped)


def freeze_wild_prompts(root: Path | None = None) -> Path:
    """Mine the wild prompts again from the pinned packages installed under `root` (default: this interpreter's
    site-packages) with the `full` tokenizer, rewrite the shipped file and data/MANIFEST (scripts/extract_wild.py)."""
    root = Path(root or sysconfig.get_paths()["purelib"])
    freeze_wild(tokenizer("full"), frozen_stdlib(), artifacts.parent_digests(parents("full", "tokenizer")), root)
    artifacts.update_manifest()
    return WILD


def wild_summary() -> dict:
    """What the shipped wild file holds: its settings, counts per task and sources (with versions)."""
    doc = wild_document()
    return {"settings": doc["settings"], "counts": doc["counts"],
            "sources": [f"{s['dist']} {s['version']}" for s in doc["sources"]]}


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
    where = next(model.parameters()).device
    trained_on = {"device": str(where), "torch": torch.__version__,
                  "device_name": torch.cuda.get_device_name(where) if where.type == "cuda" else platform.machine()}
    model.cpu()
    for step, sd in out["kept"].items():  # checkpoints along training (chapter 7 follows features across them)
        if step == tcfg.steps:
            continue  # the final checkpoint is the artifact itself
        artifacts.save_tensors(
            artifacts.artifact_path(f"{name}_step{step}", prof), half(sd),
            {"name": f"{name}_step{step}", "profile": prof.name, "config": config, "step": step,
             "parents": artifacts.parent_digests(parents(prof, "tokenizer"))},
        )
    return model, {"history": thin(out["history"]), "tokens_per_s": out["tokens_per_s"], "trained_on": trained_on}


def scratch_dir(profile: str | Profile, name: str) -> Path:
    """Where a training run of artifact `name` keeps its resumable checkpoints (generated, git-ignored)."""
    return DATA / "cache" / "runs" / get_profile(profile).name / name


# ---------------------------------------------------------------- fingerprints and cached evaluations


def model_fingerprint(model) -> str:
    """A short sha1 of the model's weights: what is cached per exact model is only used for that model."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def batch_fingerprint(batch: TaskBatch) -> str:
    """A short sha1 of a task batch's prompts and answers (labels follow from them)."""
    h = hashlib.sha1()
    for f in ("tokens", "last", "correct", "wrong"):
        h.update(getattr(batch, f).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def tensor_fingerprint(t: torch.Tensor) -> str:
    """A short sha1 of a tensor's values (the scores a curve is drawn from, a steering move)."""
    return hashlib.sha1(t.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]


VAL_WINDOWS = (20, 32)  # chapter 2's validation set: val_batches(val, 20, 32, n_ctx), 640 windows over the split


def model_eval(profile: str | Profile, name: str, model: GPT, seed: int = 0, retrain: bool = False) -> dict:
    """{"val_loss": loss on chapter 2's `VAL_WINDOWS`, "acc": {task: held-out accuracy}} of `model`, the
    artifact `name`, cached as artifact `eval_<name>` (a sparse model's AbsTopK makes this minutes at full)."""
    prof = get_profile(profile)
    tok = tokenizer(prof)
    sets = task_sets(prof, tok, seed)
    n_batches, batch_size = VAL_WINDOWS
    config = {"model": model_fingerprint(model), "val": [n_batches, batch_size, model.cfg.n_ctx],
              "tasks": {t: batch_fingerprint(b) for t, b in sets.test.items()}}

    def fit():
        val = val_batches(token_streams(prof, tok)["val"], n_batches, batch_size, model.cfg.n_ctx)
        acc = {t: evaluate_task(model, b)["acc"] for t, b in sets.test.items()}
        return {"val_loss": torch.tensor([evaluate_lm(model, val)], dtype=torch.float64)}, {"acc": acc}

    tensors, meta = artifacts.load_or_train(f"eval_{name}", prof, fit, config, retrain, parents=parents(prof, name))
    return {"val_loss": float(tensors["val_loss"][0]), "acc": meta["metrics"]["acc"]}


def split_margins(profile: str | Profile, name: str, model: GPT, seed: int = 0,
                  retrain: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """{split: {task: per-prompt logit margin [n]}} of `model` (the artifact `name`) on chapter 2's three
    splits: "test" (generated), "heldout" (the held-out forms) and "wild", cached as artifact `margins_<name>`.
    A prompt is right when its margin is > 0, so accuracies of any grouping (per form, per answer) follow."""
    prof = get_profile(profile)
    tok = tokenizer(prof)
    splits = {"test": task_sets(prof, tok, seed).test, "heldout": form_sets(prof, tok, seed).heldout,
              "wild": wild_sets(prof, tok).test}
    config = {"model": model_fingerprint(model),
              "prompts": {s: {t: batch_fingerprint(b) for t, b in bs.items()} for s, bs in splits.items()}}
    fit = lambda: ({f"{s}.{t}": logit_margins(model, b) for s, bs in splits.items() for t, b in bs.items()}, {})
    tensors, _ = artifacts.load_or_train(f"margins_{name}", prof, fit, config, retrain,
                                         parents=parents(prof, name) + [WILD])
    return {s: {t: tensors[f"{s}.{t}"] for t in bs} for s, bs in splits.items()}

