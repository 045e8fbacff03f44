"""The book's trained things, built or loaded by profile: tokenizer, token streams, the dense baseline.

Each function goes through `artifacts.load_or_train`, so a shipped artifact is loaded
(after its checksum), a missing one is trained, and `retrain=True` trains again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from circuitbook import artifacts
from circuitbook.config import DATA, Profile, get_profile, pick, seed_everything
from circuitbook.data.corpus import load_corpus
from circuitbook.data.tasks import TASKS, TaskBatch, encode_examples, evaluate_task, sample_examples
from circuitbook.data.tokenizer import CodeTokenizer, train_tokenizer
from circuitbook.models.gpt import ABSTOPK_PAPER_SITES, GPT, GPTConfig, gpt_from_state
from circuitbook.sparsity import WeightSparsifier, kept_fraction, sharkfin, sparse_adamw, total_l0
from circuitbook.train import TrainConfig, cosine_schedule, get_batch, train

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


def _fit_gpt(prof: Profile, name: str, model: GPT, tcfg: TrainConfig, config: dict, progress: bool, **train_kw):
    """Train `model` on the profile's corpus (resumable from data/scratch), keeping checkpoints as artifacts."""
    tok = tokenizer(prof)
    streams = token_streams(prof, tok)
    sets = task_sets(prof, tok, tcfg.seed)
    out = train(model, streams["train"], streams["val"], tcfg, ckpt_dir=scratch_dir(prof, name),
                eval_fn=task_eval_fn(sets), progress=progress, **train_kw)
    for step, sd in out["kept"].items():  # checkpoints along training (chapter 7 follows features across them)
        if step == tcfg.steps:
            continue  # the final checkpoint is the artifact itself
        artifacts.save_tensors(
            artifacts.artifact_path(f"{name}_step{step}", prof), _half(sd),
            {"name": f"{name}_step{step}", "profile": prof.name, "config": config, "step": step},
        )
    return model, {"history": _thin(out["history"]), "tokens_per_s": out["tokens_per_s"]}


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
        seed_everything(seed)
        model, metrics = _fit_gpt(prof, name, GPT(gcfg), tcfg, config, progress, lr_schedule=cosine_schedule())
        return _half(model.state_dict()), metrics

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain)
    return gpt_from_state(tensors, gcfg).eval(), meta


# ---------------------------------------------------------------- weight-sparse models (chapter 2)

# Kept fractions of the family. The paper goes to 1/1000 at d_model 2048; at our widths the floor of 4
# nonzeros per row already binds at 4 / d_in (1/16 for d_model 64), so sparser targets would only sparsify
# the embeddings further. Chapter 2 plots loss against the measured L0, not the nominal fraction.
SPARSE_FRACTIONS = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
THE_SPARSE_MODEL = {"kept": 1 / 16, "d_model": 128}  # the one chapters 3 and 4 explain
CLIP_DEMO = {"kept": 1 / 16, "d_model": 64}  # trained again without gradient normalisation, for chapter 2


def sparse_widths(profile: str | Profile) -> tuple[int, ...]:
    return pick(profile, ci=(16, 32), full=(64, 128))


def sparse_configs(profile: str | Profile, kept: float, d_model: int, clip: str = "rms_normalize"):
    """Model and training settings of a weight-sparse GPT keeping `kept` of every matrix at width `d_model`.

    The paper's recipe: AbsTopK (1/4) at its eight sites, attention sinks, RMSNorm, AdamW (0.9, 0.95),
    weight decay 0.1, eps 0.1, gradient RMS set to 1, sharkfin LR, L0 annealed over the first half.
    """
    if not 0 < kept <= 1:
        raise ValueError(f"kept fraction must be in (0, 1], got {kept}")
    if d_model % 16:
        raise ValueError(f"d_model must be a multiple of the head size 16, got {d_model}")
    gcfg = GPTConfig(
        vocab_size=VOCAB_SIZE, n_ctx=pick(profile, ci=64, full=128), d_model=d_model,
        n_layers=pick(profile, ci=2, full=4), n_heads=d_model // 16, d_head=16, d_mlp=4 * d_model,
        attn_sink=True, abstopk_sites=ABSTOPK_PAPER_SITES, afrac=0.25,
    )
    _, dense_t = dense_configs(profile)
    tcfg = replace(
        dense_t, steps=pick(profile, ci=40, full=1500), batch_size=pick(profile, ci=8, full=16),
        lr=pick(profile, ci=1e-2, full=1e-2), eps=0.1, eval_every=pick(profile, ci=20, full=150),
        clip=clip, clip_value=1.0, keep_steps=(), extra={"kept_fraction": kept, "min_per_row": 4},
    )
    return gcfg, tcfg


def clip_demo(profile: str | Profile) -> dict:
    """Width and kept fraction of the model chapter 2 trains with and without gradient rescaling."""
    return CLIP_DEMO if get_profile(profile).name == "full" else {"kept": 1 / 16, "d_model": sparse_widths(profile)[0]}


def the_sparse_model(profile: str | Profile, seed: int = 0, retrain: bool = False) -> tuple[GPT, dict]:
    """The weight-sparse model whose circuits chapter 3 finds and whose bridges chapter 4 trains."""
    d = THE_SPARSE_MODEL["d_model"] if get_profile(profile).name == "full" else sparse_widths(profile)[-1]
    return sparse_model(profile, THE_SPARSE_MODEL["kept"], d, seed=seed, retrain=retrain)


def sparse_name(kept: float, d_model: int, clip: str = "rms_normalize", seed: int = 0) -> str:
    c = "" if clip == "rms_normalize" else f"_clip-{clip}"
    return f"sparse_d{d_model}_k{round(1 / kept)}{c}{_suffix(seed)}"


def sparse_model(
    profile: str | Profile, kept: float, d_model: int, seed: int = 0, clip: str = "rms_normalize",
    retrain: bool = False, progress: bool = True,
) -> tuple[GPT, dict]:
    """A weight-sparse GPT trained with the chapter-2 recipe (stored sparsely). Returns (model, meta)."""
    prof = get_profile(profile)
    gcfg, tcfg = sparse_configs(prof, kept, d_model, clip)
    tcfg.seed = seed
    name = sparse_name(kept, d_model, clip, seed)
    config = {"model": gcfg.to_dict(), "train": tcfg.to_dict()}
    kept_fn = partial(kept_fraction, target=kept)

    def fit():
        seed_everything(seed)
        model = GPT(gcfg)
        sparsifier = WeightSparsifier(model, lambda s: kept_fn(s, tcfg.steps), min_per_row=4)
        model, metrics = _fit_gpt(
            prof, name, model, tcfg, config, progress, after_step=sparsifier.step,
            lr_schedule=partial(sharkfin, kept=kept_fn), optimizer=lambda ps: sparse_adamw(ps, tcfg.lr),
        )
        metrics |= {"l0": total_l0(model, sparsifier.names),
                    "n_sparsified": sum(model.get_parameter(n).numel() for n in sparsifier.names)}
        return artifacts.pack_sparse(model.state_dict()), metrics

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain)
    state = artifacts.unpack_sparse(tensors, GPT(gcfg).state_dict())
    return gpt_from_state(state, gcfg).eval(), meta


def dense_checkpoints(profile: str | Profile, seed: int = 0) -> dict[int, GPT]:
    """The dense baseline's kept checkpoints {step: model} (trains the baseline if they are missing)."""
    prof = get_profile(profile)
    gcfg, tcfg = dense_configs(prof)
    name = f"dense_baseline{_suffix(seed)}"
    earlier = [s for s in tcfg.keep_steps if s != tcfg.steps]
    if not all(artifacts.exists(f"{name}_step{s}", prof) for s in earlier):
        dense_baseline(prof, seed, retrain=True)
    out = {}
    for s in earlier:
        tensors, _ = artifacts.load_tensors(artifacts.artifact_path(f"{name}_step{s}", prof))
        out[s] = gpt_from_state(tensors, gcfg).eval()
    out[tcfg.steps] = dense_baseline(prof, seed)[0]
    return out


def scratch_dir(profile: str | Profile, name: str) -> Path:
    return DATA / "scratch" / get_profile(profile).name / name


# ---------------------------------------------------------------- chapter 3: circuits

CIRCUIT_TASKS = ("single_double_quote", "bracket_counting", "set_or_string")


def circuit_means(profile: str | Profile, model: GPT, name: str, seed: int = 0, retrain: bool = False):
    """Mean activation of every node of `model` over the pretraining stream (artifact `means_<name>`)."""
    from circuitbook.circuits import NodeSet, cached_mean_activations

    streams = token_streams(profile)
    return cached_mean_activations(f"means_{name}", profile, model, streams["train"], NodeSet.from_model(model),
                                   seed=seed, retrain=retrain)


def circuit_search(profile: str | Profile, task: str, seed: int = 0, retrain: bool = False, progress: bool = True):
    """Chapter 3's circuit for `task` in the chosen sparse model: the best of an Optuna search over the pruning
    hyperparameters (artifact `circuit_search_<task>`). Returns a `circuits.SearchResult`."""
    from circuitbook.circuits import NodeSet, cached_search, n_trials_for, prune_config

    prof = get_profile(profile)
    model = the_sparse_model(prof, seed)[0].float()
    sets = task_sets(prof, tokenizer(prof), seed)
    means = circuit_means(prof, model, sparse_name(THE_SPARSE_MODEL["kept"], model.cfg.d_model, seed=seed), seed)
    return cached_search(f"circuit_search_{task}{_suffix(seed)}", prof, model, sets.train[task], means,
                         prune_config(prof, seed=seed), n_trials_for(prof), NodeSet.from_model(model), seed,
                         retrain, progress)


def pruned_circuit(profile: str | Profile, model: GPT, name: str, task: str, cfg, seed: int = 0,
                   retrain: bool = False, progress: bool = True):
    """`model`'s circuit for `task`, pruned with the given `PruneConfig` (artifact `circuit_<task>_<name>`):
    the dense baseline and the chapter-2 family, pruned with the settings the search chose."""
    from circuitbook.circuits import NodeSet, cached_prune

    prof = get_profile(profile)
    sets = task_sets(prof, tokenizer(prof), seed)
    means = circuit_means(prof, model, name, seed)
    return cached_prune(f"circuit_{task}_{name}", prof, model, sets.train[task], means, cfg,
                        NodeSet.from_model(model), retrain, progress)


# ---------------------------------------------------------------- chapter 4: bridges


def bridge_configs(profile: str | Profile):
    """The bridged sparse model (chapter 2's recipe at the chosen width and sparsity) and its training settings.
    The sparse side starts from chapter 2's trained sparse model (`the_sparse_model`, already at its final
    sparsity) and is fine-tuned beside the dense one at a tenth of its LR while the bridges learn: trained
    from scratch beside the dense model for 1500 steps, it reached a validation loss of 4.1 (2.8 alone) and
    learned none of the four tasks. The bridges start at their least-squares fit (`Bridge.fit_least_squares`
    on `bridge_fit_batches`); the two KL terms weigh 3 (of 1 for 1, 3, and NMSE 10, this gave the lowest
    validation KL of the hybrids). Full: the KL terms use 2 of the 8 sites per step (drawn from the step),
    which halves the step time."""
    from circuitbook.bridges import BridgeTrainConfig

    prof = get_profile(profile)
    d = THE_SPARSE_MODEL["d_model"] if prof.name == "full" else sparse_widths(prof)[-1]
    gcfg, tcfg = sparse_configs(prof, THE_SPARSE_MODEL["kept"], d)
    bcfg = BridgeTrainConfig(
        steps=pick(prof, ci=30, full=600), batch_size=tcfg.batch_size, n_ctx=tcfg.n_ctx, lr=tcfg.lr / 10,
        bridge_lr=3e-3, kl_sites_per_step=pick(prof, ci=None, full=2), eval_every=pick(prof, ci=15, full=100),
        eval_batches=pick(prof, ci=2, full=8), ckpt_every=pick(prof, ci=15, full=50),
        extra={"kept_fraction": THE_SPARSE_MODEL["kept"], "min_per_row": 4, "init": "the_sparse_model",
               "bridge_init": "least_squares", "init_batches": pick(prof, ci=2, full=16),
               "loss_coeffs": {"kl_d2s": 3.0, "kl_s2d": 3.0}},
    )
    return gcfg, bcfg


def bridge_fit_batches(profile: str | Profile, seed: int = 0) -> list[torch.Tensor]:
    """The token batches [batch, n_ctx] the bridges' least-squares start is fitted on (drawn with seed + 1,
    so not the training batches)."""
    prof = get_profile(profile)
    _, bcfg = bridge_configs(prof)
    train_tokens = token_streams(prof)["train"]
    n = bcfg.extra["init_batches"]
    return [get_batch(train_tokens, i, bcfg.batch_size, bcfg.n_ctx, seed + 1) for i in range(n)]


def bridged_pair(profile: str | Profile, seed: int = 0, retrain: bool = False, progress: bool = True):
    """The dense baseline (frozen), a weight-sparse model trained beside it, and the bridges between them
    (artifact `bridged_sparse`; resumable from data/scratch). Returns (dense, sparse, bridge, meta)."""
    from circuitbook.bridges import Bridge, default_losses, train_bridged

    prof = get_profile(profile)
    dense = dense_baseline(prof, seed)[0].float()
    gcfg, bcfg = bridge_configs(prof)
    bcfg.seed = seed
    kept = bcfg.extra["kept_fraction"]
    name = f"bridged_sparse{_suffix(seed)}"
    config = {"model": gcfg.to_dict(), "train": bcfg.to_dict(), "dense": dense_configs(prof)[0].to_dict()}

    def fit():
        sparse = the_sparse_model(prof, seed)[0].float().train()
        seed_everything(seed)
        bridge = Bridge.for_models(dense, sparse)
        sparsifier = WeightSparsifier(sparse, kept, min_per_row=4)  # already at its final sparsity
        streams = token_streams(prof)
        if bcfg.extra.get("bridge_init") == "least_squares":
            bridge.fit_least_squares(dense, sparse, bridge_fit_batches(prof, seed))
        out = train_bridged(dense, sparse, bridge, streams["train"], streams["val"], bcfg, sparsifier,
                            losses=default_losses(**bcfg.extra.get("loss_coeffs", {})),
                            ckpt_dir=scratch_dir(prof, name), progress=progress)
        tensors = {**{f"sparse.{k}": v for k, v in artifacts.pack_sparse(sparse.state_dict()).items()},
                   **{f"bridge.{k}": v for k, v in _half(bridge.state_dict()).items()}}
        return tensors, {"history": _thin(out["history"]), "tokens_per_s": out["tokens_per_s"],
                         "l0": total_l0(sparse, sparsifier.names)}

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain)
    packed = {k[7:]: v for k, v in tensors.items() if k.startswith("sparse.")}
    sparse = gpt_from_state(artifacts.unpack_sparse(packed, GPT(gcfg).state_dict()), gcfg).float().eval()
    bridge = Bridge.for_models(dense, sparse)
    bridge.load_state_dict({k[7:]: v.float() for k, v in tensors.items() if k.startswith("bridge.")})
    return dense.eval(), sparse, bridge.eval(), meta


# ---------------------------------------------------------------- chapter 6: a tiny vision-language model

VLM_N_TEXT = 24  # caption tokens: the longest question, the answer and EOT fit
# Scene mix of the VLM's training set (planet, shuttle, hand, dots, shape): counting dots is the slowest
# skill to learn, so dots get the largest share; hands always have five fingers (the prior).
VLM_KIND_WEIGHTS = (2.0, 0.5, 1.0, 3.0, 1.0)
VLM_DOT_COUNTS = (1, 2, 3, 4, 5, 6)


def vlm_configs(profile: str | Profile):
    """The VLM (a ViT prefix on the chapter-1 dense baseline), its training settings and its data settings."""
    from circuitbook.models.vlm import VLMConfig, VLMTrainConfig

    prof = get_profile(profile)
    gcfg, _ = dense_configs(prof)
    vcfg = VLMConfig(image_size=32, patch_size=4, pool=2, lm=gcfg,
                     **pick(prof, ci=dict(vit_d_model=32, vit_layers=2, vit_heads=2, vit_d_head=16, vit_d_mlp=128),
                            full=dict(vit_d_model=64, vit_layers=4, vit_heads=4, vit_d_head=16, vit_d_mlp=256)))
    tcfg = pick(prof,
                ci=VLMTrainConfig(steps=150, batch_size=16, text_batch_size=4, text_ctx=64, lr=3e-3, lm_lr_mult=0.5,
                                  answer_only=True, eval_every=50, ckpt_every=50),
                full=VLMTrainConfig(steps=4000, batch_size=32, text_batch_size=8, text_ctx=64, lr=2e-3,
                                    lm_lr_mult=0.5, answer_only=True, eval_every=250, ckpt_every=100))
    data = {"n_train": pick(prof, ci=768, full=20_000), "n_val": pick(prof, ci=128, full=500), "n_text": VLM_N_TEXT,
            "kind_weights": list(VLM_KIND_WEIGHTS), "dot_counts": list(VLM_DOT_COUNTS)}
    return vcfg, tcfg, data


def vlm_scenes(profile: str | Profile, split: str, n: int, seed: int = 0, **kw):
    """Scenes drawn like the VLM's training mix (kind weights, dot counts), `kw` overriding (`kinds` alone:
    uniform over those kinds)."""
    from circuitbook.data.scenes import KINDS, make_dataset

    opts = {"kinds": KINDS, "kind_weights": VLM_KIND_WEIGHTS, "dot_counts": VLM_DOT_COUNTS} | kw
    if "kinds" in kw and "kind_weights" not in kw:
        opts["kind_weights"] = None  # other kinds: uniform
    return make_dataset(n, seed=seed, split=split, **opts)


def vlm(profile: str | Profile, seed: int = 0, retrain: bool = False, progress: bool = True):
    """Chapter 6's VLM: a small ViT whose pooled patch tokens the dense baseline reads as a prefix, trained on
    synthetic scenes mixed with the code corpus (artifact `vlm`, fp16; resumable from data/scratch).
    Returns (model, meta)."""
    from circuitbook.models.vlm import VLM, encode_scenes, train_vlm, vlm_from_state

    prof = get_profile(profile)
    vcfg, tcfg, data = vlm_configs(prof)
    tcfg.seed = seed
    name = f"vlm{_suffix(seed)}"
    config = {"model": vcfg.to_dict(), "train": tcfg.to_dict(), "data": data}

    def fit():
        seed_everything(seed)
        tok = tokenizer(prof)
        streams = token_streams(prof, tok)
        train_pairs = encode_scenes(vlm_scenes(prof, "train", data["n_train"], seed), tok, data["n_text"])
        val_pairs = encode_scenes(vlm_scenes(prof, "val", data["n_val"], seed), tok, data["n_text"])
        model = VLM(vcfg, lm=dense_baseline(prof, seed)[0].float())
        out = train_vlm(model, train_pairs, tcfg, text_tokens=streams["train"], val_pairs=val_pairs,
                        ckpt_dir=scratch_dir(prof, name), progress=progress)
        hist = [r for r in out["history"] if "val_pair_loss" in r or r["step"] % 50 == 0]
        return _half(model.state_dict()), {"history": hist, "seconds": out["seconds"],
                                           "pairs_per_s": out["pairs_per_s"]}

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain)
    return vlm_from_state(tensors, vcfg).eval(), meta


def vlm_transcoder_configs(profile: str | Profile) -> dict:
    """Transcoder settings of chapter 6: width, k, steps, and how many sequences of each kind they read."""
    prof = get_profile(profile)
    d = dense_configs(prof)[0].d_model
    return {"n_features": 8 * d, "k": pick(prof, ci=8, full=16), "steps": pick(prof, ci=300, full=1500),
            "batch_size": 512, "n_seq": pick(prof, ci=256, full=3000), "text_ctx": 32}


def text_windows(profile: str | Profile, n: int, split: str = "train", ctx: int = 32) -> torch.Tensor:
    """n evenly spaced windows of `ctx` tokens of the corpus split, [n, ctx] long."""
    s = token_streams(profile)[split]
    starts = np.linspace(0, len(s) - ctx - 1, n).astype(np.int64)
    return torch.from_numpy(np.stack([s[i : i + ctx] for i in starts]).astype(np.int64))


def vlm_transcoders(profile: str | Profile, kind: str, seed: int = 0, retrain: bool = False, progress: bool = False):
    """One TopK transcoder per GPT layer of the chapter-6 VLM, trained on MLP inputs -> outputs of text alone
    (`kind="text"`: corpus windows) or of a multimodal mix (`"multimodal"`: equal numbers of corpus positions
    and image + caption positions, image tokens included). Artifact `vlm_transcoders_<kind>`, fp16.
    Returns (list of Transcoders, meta)."""
    from circuitbook.dictionaries.sae import Transcoder, train_transcoder
    from circuitbook.models.vlm import encode_scenes, mlp_io

    if kind not in ("text", "multimodal"):
        raise ValueError(f"kind must be 'text' or 'multimodal', got {kind!r}")
    prof = get_profile(profile)
    model, vmeta = vlm(prof, seed)
    L, D = model.cfg.lm.n_layers, model.cfg.lm.d_model
    tc = vlm_transcoder_configs(prof)
    name = f"vlm_transcoders_{kind}{_suffix(seed)}"
    config = {"kind": kind, **tc, "vlm": vmeta["config"]}

    def fit():
        seed_everything(seed)
        xt, yt, _ = mlp_io(model, None, text_windows(prof, tc["n_seq"], "train", tc["text_ctx"]), range(L))
        if kind == "multimodal":
            pairs = encode_scenes(vlm_scenes(prof, "transcoder", tc["n_seq"], seed), tokenizer(prof), VLM_N_TEXT)
            xm, ym, _ = mlp_io(model, pairs.images, pairs.tokens, range(L))
        tensors, metrics = {}, {}
        for layer in range(L):
            x, y = xt[layer].reshape(-1, D), yt[layer].reshape(-1, D)
            if kind == "multimodal":  # equal numbers of text and multimodal positions
                xi, yi = xm[layer].reshape(-1, D), ym[layer].reshape(-1, D)
                n = min(len(x), len(xi))
                x, y = torch.cat([x[:n], xi[:n]]), torch.cat([y[:n], yi[:n]])
            t, h = train_transcoder((x, y), tc["n_features"], tc["k"], steps=tc["steps"], seed=seed + layer,
                                    batch_size=tc["batch_size"], progress=progress)
            tensors |= {f"l{layer}.{k}": v.half() for k, v in t.to_tensors().items()}
            metrics[f"l{layer}_train_fvu"] = float(np.mean(h["fvu"][-20:]))
        return tensors, metrics

    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain)
    cfg = {"kind": "Transcoder", "d_in": D, "d_out": D, "n_features": tc["n_features"], "k": tc["k"]}
    return [Transcoder.from_tensors({k[len(f"l{la}."):]: v.float() for k, v in tensors.items()
                                     if k.startswith(f"l{la}.")}, cfg) for la in range(L)], meta
