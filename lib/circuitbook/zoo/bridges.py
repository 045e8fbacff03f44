"""Chapter 4: the bridged pair (the dense baseline, a sparse model fine-tuned beside it, and the bridges)."""

from __future__ import annotations

import torch

from circuitbook import artifacts
from circuitbook.bridges import Bridge, BridgeTrainConfig, train_bridged
from circuitbook.config import Profile, get_profile, pick, seed_everything
from circuitbook.models.gpt import GPT, gpt_from_state
from circuitbook.sparsity import WeightSparsifier, total_l0
from circuitbook.train import get_batch
from circuitbook.zoo.core import half, parents, scratch_dir, suffix, thin, to_device, token_streams
from circuitbook.zoo.dense import dense_baseline, dense_configs
from circuitbook.zoo.sparse import THE_SPARSE_MODEL, sparse_configs, sparse_name, sparse_widths, the_sparse_model


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
    d = THE_SPARSE_MODEL["d_model"] if prof.name == "full" else sparse_widths(prof)[-1]
    gcfg, tcfg, scfg = sparse_configs(prof, THE_SPARSE_MODEL["kept"], d)
    bcfg = BridgeTrainConfig(
        steps=pick(prof, ci=30, full=600), batch_size=tcfg.batch_size, n_ctx=tcfg.n_ctx, lr=tcfg.lr / 10,
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


def bridged_pair(profile: str | Profile, seed: int = 0, retrain: bool = False, progress: bool = True):
    """The dense baseline (frozen), a weight-sparse model trained beside it, and the bridges between them
    (artifact `bridged_sparse`; resumable from data/scratch). Returns (dense, sparse, bridge, meta)."""
    prof = get_profile(profile)
    dense = dense_baseline(prof, seed)[0].float()
    gcfg, bcfg, scfg = bridge_configs(prof, seed)
    name = f"bridged_sparse{suffix(seed)}"
    config = {"model": gcfg.to_dict(), "train": bcfg.to_dict(), "sparsity": scfg.to_dict(),
              "dense": dense_configs(prof)[0].to_dict()}

    def fit():
        sparse = the_sparse_model(prof, seed)[0].float().train()
        seed_everything(seed)
        bridge = to_device(Bridge.for_models(dense, sparse))  # dense and sparse are there already
        # already at its final sparsity
        sparsifier = WeightSparsifier(sparse, scfg.kept_fraction, min_per_row=scfg.min_per_row)
        streams = token_streams(prof)
        if bcfg.bridge_init == "least_squares":
            bridge.fit_least_squares(dense, sparse, bridge_fit_batches(prof, seed))
        out = train_bridged(dense, sparse, bridge, streams["train"], streams["val"], bcfg, sparsifier,
                            losses=bcfg.losses(), ckpt_dir=scratch_dir(prof, name), progress=progress)
        tensors = {**{f"sparse.{k}": v for k, v in artifacts.pack_sparse(sparse.state_dict()).items()},
                   **{f"bridge.{k}": v for k, v in half(bridge.state_dict()).items()}}
        return tensors, {"history": thin(out["history"]), "tokens_per_s": out["tokens_per_s"],
                         "l0": total_l0(sparse, sparsifier.names)}

    family = parents(prof, f"dense_baseline{suffix(seed)}", sparse_name(scfg.kept_fraction, gcfg.d_model, seed=seed))
    tensors, meta = artifacts.load_or_train(name, prof, fit, config, retrain, parents=family)
    packed = {k[7:]: v for k, v in tensors.items() if k.startswith("sparse.")}
    sparse = to_device(gpt_from_state(artifacts.unpack_sparse(packed, GPT(gcfg).state_dict()), gcfg).float().eval())
    bridge = to_device(Bridge.for_models(dense, sparse))
    bridge.load_state_dict({k[7:]: v.float() for k, v in tensors.items() if k.startswith("bridge.")})
    return dense.eval(), sparse, bridge.eval(), meta


