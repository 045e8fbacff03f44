"""Run by tests/test_train.py under torchrun (2 CPU processes) and alone: the weight-sparse recipe for a few steps.

    torchrun --nproc_per_node 2 tests/ddp_worker.py OUT.safetensors
"""

import sys

import numpy as np
import torch

from circuitbook.artifacts import save_tensors
from circuitbook.models.gpt import ABSTOPK_PAPER_SITES, GPT, GPTConfig
from circuitbook.sparsity import SparsityConfig, WeightSparsifier, sparse_adamw
from circuitbook.train import TrainConfig, init_distributed, train

STEPS = 6


def run() -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_ctx=16, d_model=32, n_layers=2, n_heads=2, d_head=16, d_mlp=64,
                          attn_sink=True, abstopk_sites=ABSTOPK_PAPER_SITES, afrac=0.25))
    toks = np.random.default_rng(0).integers(0, 64, 20_000).astype(np.uint16)
    tcfg = TrainConfig(steps=STEPS, batch_size=8, n_ctx=16, lr=1e-2, eps=0.1, clip="rms_normalize",
                       eval_every=STEPS, eval_batches=1, ckpt_every=STEPS)
    scfg = SparsityConfig(kept_fraction=1 / 8, min_per_row=2)
    kept = scfg.kept()
    sparsifier = WeightSparsifier(model, lambda s: kept(s, tcfg.steps), min_per_row=scfg.min_per_row)
    train(model, toks, toks, tcfg, lr_schedule=scfg.lr_schedule(), after_step=sparsifier.step,
          optimizer=lambda ps: sparse_adamw(ps, tcfg.lr), progress=False)
    return model


if __name__ == "__main__":
    torch.set_num_threads(1)
    rank, n = init_distributed()
    model = run()
    if rank == 0:
        save_tensors(sys.argv[1], model.state_dict(), {"world_size": n})
