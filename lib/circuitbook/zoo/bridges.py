"""Chapter 4: the bridged pair (the dense baseline, a sparse model fine-tuned beside it, and the bridges), and the
second attempt at the paper's own setting: a sparse model trained from scratch beside the dense one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from circuitbook import artifacts
from circuitbook.bridges import Bridge, BridgeTrainConfig, train_bridged
from circuitbook.bridges_tasks import (
    SEPARATES,
    SiteRow,
    TaskMove,
    choose_site,
    control_changes,
    control_logit_changes,
    margin_band,
    scan_sites,
    select_by_margin,
    task_move,
)
from circuitbook.config import Profile, get_profile, pick, seed_everything
from circuitbook.data.forms import examples_sha256
from circuitbook.data.tasks import Example, TaskBatch, encode_examples, logit_margins, sample_examples
from circuitbook.models.gpt import GPT, gpt_from_state
from circuitbook.sparsity import WeightSparsifier, total_l0
from circuitbook.train import get_batch
from circuitbook.zoo.core import (
    batch_fingerprint,
    half,
    parents,
    scratch_dir,
    suffix,
    task_sets,
    tensor_fingerprint,
    thin,
    to_device,
    token_streams,
    tokenizer,
)
from circuitbook.zoo.dense import dense_baseline, dense_configs
from circuitbook.zoo.sparse import the_sparse_configs, the_sparse_model, the_sparse_name


def bridge_configs(profile: str | Profile, seed: int = 0):
    """The bridged sparse model (chapter 2's recipe at the chosen width and sparsity), its training settings
    and its sparsity: (GPTConfig, BridgeTrainConfig, SparsityConfig).
    The sparse side starts from chapter 2's trained sparse model (`the_sparse_model`, already at its final
    sparsity) and is fine-tuned beside the dense one at a tenth of its LR while the bridges learn: trained
    from scratch beside the dense model for 1500 steps, it reached a validation loss of 4.1 (2.8 alone) and
    learned none of the four tasks. The bridges start at their least-squares fit (`Bridge.fit_least_squares`
    on `bridge_fit_batches`); the two KL terms weigh 3 (of 1 for 1, 3, and NMSE 10, this gave the lowest
    validation KL of the hybrids). Full: the KL terms use 2 of the 8 sites per step (drawn from the step),
    which halves the step time."""
    prof = get_profile(profile)
    gcfg, tcfg, scfg = the_sparse_configs(prof)
    bcfg = BridgeTrainConfig(  # 16 sequences per step: the bridges' recipe, not the sparse model's (32 in recipe 2)
        steps=pick(prof, ci=30, full=600), batch_size=pick(prof, ci=8, full=16), n_ctx=tcfg.n_ctx, lr=tcfg.lr / 10,
        bridge_lr=3e-3, kl_sites_per_step=pick(prof, ci=None, full=2), eval_every=pick(prof, ci=15, full=100),
        eval_batches=pick(prof, ci=2, full=8), ckpt_every=pick(prof, ci=15, full=50),
        seed=seed, sparse_init="the_sparse_model", bridge_init="least_squares",
        init_batches=pick(prof, ci=2, full=16), kl_d2s_coef=3.0, kl_s2d_coef=3.0,
    )
    return gcfg, bcfg, scfg


def bridge_fit_batches(profile: str | Profile, seed: int = 0) -> list[torch.Tensor]:
    """The token batches [batch, n_ctx] the bridges' least-squares start is fitted on (drawn with seed + 1,
    so not the training batches)."""
    prof = get_profile(profile)
    _, bcfg, _ = bridge_configs(prof)
    train_tokens = token_streams(prof)["train"]
    return [get_batch(train_tokens, i, bcfg.batch_size, bcfg.n_ctx, seed + 1) for i in range(bcfg.init_batches)]


def cotrain_configs(profile: str | Profile, seed: int = 0):
    """The co-trained pair (issue 17's second attempt at the paper's setting): the sparse side starts from
    scratch and trains beside the frozen dense model with the bridges, on the chosen sparse model's own recipe
    (its steps, batch, learning rate, L0 anneal over the first half, and gradient rescaling to RMS 1); the bridges
    start at random (there is no trained sparse stream to fit them to) and keep the fine-tuned pair's learning
    rate, KL sites and loss weights. -> (GPTConfig, BridgeTrainConfig, SparsityConfig)."""
    prof = get_profile(profile)
    gcfg, tcfg, scfg = the_sparse_configs(prof)
    _, ft, _ = bridge_configs(prof, seed)
    bcfg = replace(ft, steps=tcfg.steps, batch_size=tcfg.batch_size, lr=tcfg.lr, eval_every=tcfg.eval_every,
                   ckpt_every=tcfg.ckpt_every, sparse_init="scratch", bridge_init="random",
                   sparse_grad="rms_normalize")
    return gcfg, bcfg, scfg


def _pair(prof: Profile, name: str, seed: int, retrain: bool, progress: bool, cotrain: bool):
    """Load or train a bridged pair (artifact `name`): the fine-tuned one, or the co-trained one."""
    dense = dense_baseline(prof, seed)[0].float()
    gcfg, bcfg, scfg = (cotrain_configs if cotrain else bridge_configs)(prof, seed)
    config = {"model": gcfg.to_dict(), "train": bcfg.to_dict(), "sparsity": scfg.to_dict(),
              "dense": dense_configs(prof)[0].to_dict()}

    def fit():
        if cotrain:  # from scratch, annealed to the target L0 over the first half, as in chapter 2
            seed_everything(seed)
            sparse = to_device(GPT(gcfg)).train()
            kept_at = scfg.kept()
            sparsifier = WeightSparsifier(sparse, lambda s: kept_at(s, bcfg.steps), min_per_row=scfg.min_per_row)
        else:  # chapter 2's trained model, already at its final sparsity
            sparse = the_sparse_model(prof, seed)[0].float().train()
            sparsifier = WeightSparsifier(sparse, scfg.kept_fraction, min_per_row=scfg.min_per_row)
        seed_everything(seed)
        bridge = to_device(Bridge.for_models(dense, sparse))  # dense and sparse are there already
        streams = token_streams(prof)
        if bcfg.bridge_init == "least_squares":
            bridge.fit_least_squares(dense, sparse, bridge_fit_batches(prof, seed))
        out = train_bridged(dense, sparse, bridge, streams["train"], streams["val"], bcfg, sparsifier,
                            losses=bcfg.losses(), ckpt_dir=scratch_dir(prof, name), progress=progress)
        tensors = {**{f"sparse.{k}": v for k, v in artifacts.pack_sparse(sparse.state_dict()).items()},
                   **{f"bridge.{k}": v for k, v in half(bridge.state_dict()).items()}}
        return tensors, {"history": thin(out["history"]), "tokens_per_s": out["tokens_per_s"],
                         "l0": total_l0(sparse, sparsifier.names),
                         "tokens_trained": bcfg.steps * bcfg.batch_size * bcfg.n_ctx}

    family = [f"dense_baseline{suffix(seed)}"] + ([] if cotrain else [the_sparse_name(prof, seed)])
    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain, parents=parents(prof, *family))
    packed = {k[7:]: v for k, v in tensors.items() if k.startswith("sparse.")}
    sparse = to_device(gpt_from_state(artifacts.unpack_sparse(packed, GPT(gcfg).state_dict()), gcfg).float().eval())
    bridge = to_device(Bridge.for_models(dense, sparse))
    bridge.load_state_dict({k[7:]: v.float() for k, v in tensors.items() if k.startswith("bridge.")})
    return dense.eval(), sparse, bridge.eval(), meta


def bridged_pair(profile: str | Profile, seed: int = 0, retrain: bool = False, progress: bool = True):
    """The dense baseline (frozen), a weight-sparse model trained beside it, and the bridges between them
    (artifact `bridged_sparse`; resumable from data/cache/runs). Returns (dense, sparse, bridge, meta)."""
    return _pair(get_profile(profile), f"bridged_sparse{suffix(seed)}", seed, retrain, progress, cotrain=False)


def cotrained_pair(profile: str | Profile, seed: int = 0, retrain: bool = False, progress: bool = True):
    """The dense baseline (frozen), a weight-sparse model trained from scratch beside it with the bridges
    (`cotrain_configs`), and the bridges (artifact `bridged_cotrained`; resumable from data/cache/runs).
    Returns (dense, sparse, bridge, meta)."""
    return _pair(get_profile(profile), f"bridged_cotrained{suffix(seed)}", seed, retrain, progress, cotrain=True)


# ---------------------------------------------------------------- the chapter's slow, deterministic measurements
# Cached as artifacts (children of the bridged pair, keyed by every setting): chapter 4 reads them in seconds.

BRIDGE_TASKS = ("single_double_quote", "while_return_true")  # the two tasks chapter 4 steers through the bridges


def n_controls_for(profile: str | Profile) -> int:
    """How many random controls make an intervention's null distribution."""
    return pick(profile, ci=20, full=200)


def site_scan(profile: str | Profile, task: str, seed: int = 0, retrain: bool = False) -> list[SiteRow]:
    """`bridges_tasks.scan_sites` of `task` over every bridged site (train prompts choose, held-out prompts
    record the dense response) on the bridged pair (artifact `site_scan_<task>`)."""
    prof = get_profile(profile)
    dense, sparse, bridge, _ = bridged_pair(prof, seed)
    sets = task_sets(prof, tokenizer(prof), seed)
    train, held = sets.train[task], sets.test[task]
    config = {"task": task, "sites": list(bridge.sites), "threshold": SEPARATES,
              "train": batch_fingerprint(train), "held": batch_fingerprint(held)}

    def fit():
        rows = scan_sites(dense, sparse, bridge, train, held, bridge.sites)
        return {"sparse_change": torch.tensor([r.sparse_change for r in rows], dtype=torch.float64)}, {
            "rows": [asdict(r) for r in rows]}

    _, meta = artifacts.load_or_train(f"site_scan_{task}{suffix(seed)}", prof, fit, config, retrain,
                                      parents=parents(prof, f"bridged_sparse{suffix(seed)}"))
    return [SiteRow(**r) for r in meta["metrics"]["rows"]]


def chosen_move(profile: str | Profile, task: str, seed: int = 0) -> TaskMove:
    """Chapter 4's intervention for `task`: the task channels' class move at the site where the sparse model's
    own answer responds most (`choose_site` of `site_scan`), with its seeded control."""
    prof = get_profile(profile)
    _, sparse, bridge, _ = bridged_pair(prof, seed)
    train = task_sets(prof, tokenizer(prof), seed).train[task]
    return task_move(sparse, bridge, train, choose_site(site_scan(prof, task, seed)), seed=seed)


def control_null(profile: str | Profile, task: str, seed: int = 0, retrain: bool = False) -> np.ndarray:
    """`bridges_tasks.control_changes` of `chosen_move` on `task`'s held-out class-0 prompts: the change that
    `n_controls_for(profile)` random controls make (artifact `control_null_<task>`). -> [n_controls]."""
    prof = get_profile(profile)
    dense, _, bridge, _ = bridged_pair(prof, seed)
    held = task_sets(prof, tokenizer(prof), seed).test[task]
    move, n = chosen_move(prof, task, seed), n_controls_for(prof)
    config = {"task": task, "site": move.site, "move": tensor_fingerprint(move.move), "n_controls": n,
              "held": batch_fingerprint(held)}
    fit = lambda: ({"changes": torch.from_numpy(control_changes(dense, bridge, held, move, n))}, {})
    tensors, _ = artifacts.load_or_train(f"control_null_{task}{suffix(seed)}", prof, fit, config, retrain,
                                         parents=parents(prof, f"bridged_sparse{suffix(seed)}"))
    return tensors["changes"].numpy()


MARGIN_REFERENCE = "single_double_quote"  # the task whose dense margins set the band for margin-matched prompts


@dataclass
class MarginPrompts:
    """A task's margin-matched prompts (`margin_matched_prompts`): drawn from a pool of train-split prompts by
    `select_by_margin`, with what the rule saw."""

    batch: TaskBatch  # the chosen prompts, class 0's then class 1's
    examples: list[Example]  # the same, as examples
    margins: torch.Tensor  # the dense model's unedited margins of the chosen prompts [n] (nats)
    band: tuple[float, float]  # the reference task's band of dense margins
    pool_size: int  # prompts in the pool (after removing the prompts that define the move)
    in_band: tuple[int, int]  # pool prompts per class (0, 1) answered correctly with a margin inside the band
    pool_sha256: str  # examples_sha256 of the pool (independent of every model)
    sha256: str  # examples_sha256 of the chosen prompts (depends on the dense model)
    dense_sha256: str  # the dense model's artifact sha256: the chosen set is a function of it


def margin_pool_sizes(profile: str | Profile) -> tuple[int, int]:
    """(prompts drawn into the pool, prompts chosen per class)."""
    return pick(profile, ci=256, full=4000), pick(profile, ci=16, full=200)


def margin_matched_prompts(profile: str | Profile, task: str, seed: int = 0) -> MarginPrompts:
    """Prompts of `task` on which the dense model's margin is like the `MARGIN_REFERENCE` task's: a pool of
    `margin_pool_sizes` train-split prompts (drawn with seed + 1, minus any prompt of the train set that the
    task move is computed from, minus those longer than the context), the band of the reference task's dense
    margins on its train prompts (`margin_band`), and per class the prompts nearest it (`select_by_margin`).
    Nothing here sees an edit; the dense model's unedited answers alone decide."""
    prof = get_profile(profile)
    dense = dense_baseline(prof, seed)[0].float().eval()
    tok = tokenizer(prof)
    sets = task_sets(prof, tok, seed)
    n_pool, n_per_class = margin_pool_sizes(prof)
    taken = {e.prompt for e in sets.train_examples[task]}
    pool = [e for e in sample_examples(task, "train", n_pool, seed + 1)
            if e.prompt not in taken and len(tok.encode(e.prompt)) <= dense.cfg.n_ctx]
    batch = encode_examples(pool, tok)
    margins = logit_margins(dense, batch)  # [n_pool] on the CPU
    band = margin_band(logit_margins(dense, sets.train[MARGIN_REFERENCE]))
    idx = select_by_margin(margins, batch.labels, band, n_per_class)
    inside = (margins >= band[0]) & (margins <= band[1])
    chosen = [pool[i] for i in idx.tolist()]
    dense_sha = artifacts.parent_digests(parents(prof, f"dense_baseline{suffix(seed)}"))
    return MarginPrompts(batch[idx], chosen, margins[idx], band, len(pool),
                         tuple(int((inside & (batch.labels == c)).sum()) for c in (0, 1)),
                         examples_sha256(pool), examples_sha256(chosen), next(iter(dense_sha.values())))


def control_null_logit(
    profile: str | Profile, task: str, seed: int = 0, retrain: bool = False
) -> dict[int, np.ndarray]:
    """`bridges_tasks.control_logit_changes` of `chosen_move` on `margin_matched_prompts`, for each source class:
    the nats that `n_controls_for(profile)` random controls move the answer towards the other class (artifact
    `control_null_logit_<task>`). -> {from_class: [n_controls]}."""
    prof = get_profile(profile)
    dense, _, bridge, _ = bridged_pair(prof, seed)
    mp = margin_matched_prompts(prof, task, seed)
    move, n = chosen_move(prof, task, seed), n_controls_for(prof)
    present = [c for c in (0, 1) if bool((mp.batch.labels == c).any())]
    config = {"task": task, "site": move.site, "move": tensor_fingerprint(move.move), "n_controls": n,
              "prompts": mp.sha256, "classes": present}

    def fit():
        return {f"from_class_{c}": torch.from_numpy(control_logit_changes(dense, bridge, mp.batch, move, c, n))
                for c in present}, {}

    tensors, _ = artifacts.load_or_train(f"control_null_logit_{task}{suffix(seed)}", prof, fit, config, retrain,
                                         parents=parents(prof, f"bridged_sparse{suffix(seed)}"))
    return {c: tensors[f"from_class_{c}"].numpy() for c in present}
