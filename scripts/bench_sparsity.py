"""Micro-benchmark of weight-sparse models on CPU.

1. Inference: a Linear(d_model, 4 d_model) applied to a batch of tokens, weight stored dense vs as
   torch.sparse_csr (circuitbook.sparsity.CSRLinear), at kept fractions 1/64 and 1/256.
2. Training overhead: the top-k projection (WeightSparsifier.step) vs one forward + backward + RMS clip
   + AdamW step, for a stack of MLP blocks Linear(d, 4d) -> GELU -> Linear(4d, d).

Prints times and ratios. Usage: python scripts/bench_sparsity.py [--tokens 2048] [--d-model 256 512 1024]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from circuitbook.bench import best_time
from circuitbook.sparsity import CSRLinear, WeightSparsifier, clip_grad_rms_, sparse_adamw

FRACS = {"1/64": 1 / 64, "1/256": 1 / 256}


@torch.no_grad()
def bench_inference(tokens: int, d: int, repeats: int) -> None:
    lin = nn.Linear(d, 4 * d)
    x = torch.randn(tokens, d)  # [tokens, d_model]
    for label, frac in FRACS.items():
        # no per-row floor here: measure the nominal fraction (with j = 4 and only d inputs per row, the
        # floor alone keeps 4/d of the entries, i.e. 1/64 at d = 256)
        floored = WeightSparsifier(lin, frac, min_per_row=4).expected_nonzeros(0)["weight"]
        WeightSparsifier(lin, frac, min_per_row=0).step(0)
        csr = CSRLinear(lin)
        assert torch.allclose(csr(x), lin(x), atol=1e-4)
        dense_sparse_s = best_time(lambda: lin(x), repeats)  # dense kernel on the zeroed matrix
        csr_s = best_time(lambda c=csr: c(x), repeats)
        nnz = int(lin.weight.count_nonzero())
        print(
            f"  d={d:5d} kept {label:>5} (nnz {nnz:7d}): dense {dense_sparse_s * 1e3:7.2f} ms"
            f"  csr {csr_s * 1e3:7.2f} ms  speedup dense/csr = {dense_sparse_s / csr_s:5.2f}x"
            f"  (with the j=4 row floor: nnz {floored})"
        )


def bench_projection(tokens: int, d: int, n_blocks: int, repeats: int) -> None:
    torch.manual_seed(0)
    layers = []
    for _ in range(n_blocks):
        layers += [nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)]
    model = nn.Sequential(*layers)
    opt = sparse_adamw(model.parameters(), lr=1e-3)
    x = torch.randn(tokens, d)  # [tokens, d_model]
    y = torch.randn(tokens, d)

    def train_step() -> None:
        loss = F.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_rms_(model.parameters())
        opt.step()

    train_s = best_time(train_step, repeats)
    n = sum(p.numel() for p in model.parameters())
    for label, frac in FRACS.items():
        sp = WeightSparsifier(model, frac, min_per_row=4)
        proj_s = best_time(
            lambda s=sp: s.step(0), repeats
        )  # same work on a dense or an already-sparse matrix
        print(
            f"  d={d:5d} {n_blocks} MLP blocks ({n / 1e6:.1f}M params), {tokens} tokens, kept {label:>5}:"
            f" train step {train_s * 1e3:8.1f} ms  projection {proj_s * 1e3:7.1f} ms"
            f"  ratio projection/step = {proj_s / train_s:.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per batch (batch x context)")
    ap.add_argument("--d-model", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--blocks", type=int, default=2, help="MLP blocks in the training-overhead stack")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print("Inference, Linear(d, 4d) on a batch of tokens: dense matmul vs CSR sparse-dense matmul")
    for d in args.d_model:
        bench_inference(args.tokens, d, args.repeats)
    print("Training overhead: top-k projection vs forward+backward+clip+AdamW")
    for d in args.d_model:
        bench_projection(args.tokens, d, args.blocks, args.repeats)


if __name__ == "__main__":
    main()
