"""`make bench`: the chapters' wall times from the last `make book`, this machine's matmul GFLOP/s, the dense
model's training tokens/s and MFU against it, then every other scripts/bench_*.py. Prints ratios; nothing here is
a timed test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from circuitbook import zoo
from circuitbook.bench import csr_inference_speedup, matmul_gflops, sparse_step_time_ratio, train_flops_per_token
from circuitbook.models.gpt import GPT
from circuitbook.sparsity import WeightSparsifier
from circuitbook.train import TrainConfig, train

TIMES = Path(__file__).resolve().parents[1] / "_build" / "chapter_times.tsv"


def chapter_times(path: Path = TIMES) -> None:
    """Each chapter's wall time in the last `make notebooks` (run JOBS at a time), and their sum."""
    if not path.exists():
        print("chapter times: none recorded yet (`make book` writes _build/chapter_times.tsv)")
        return
    rows = sorted(line.split("\t") for line in path.read_text().splitlines() if line.strip())
    print(f"chapter times of the last `make book` ({len(rows)} chapters):")
    for name, secs in rows:
        print(f"  {name:36s} {int(secs):5d} s")
    print(f"  {'sum':36s} {sum(int(s) for _, s in rows):5d} s")


def main() -> None:
    chapter_times()
    threads = torch.get_num_threads()
    gf = matmul_gflops()
    print(f"torch threads: {threads}")
    print(f"matmul (1024x1024 fp32): {gf:.1f} GFLOP/s")
    gcfg, tcfg = zoo.dense_configs("full")
    model = GPT(gcfg)
    toks = np.random.default_rng(0).integers(0, gcfg.vocab_size, 2_000_000).astype(np.uint16)
    steps = 30
    cfg = TrainConfig(steps=steps, batch_size=tcfg.batch_size, n_ctx=tcfg.n_ctx, eval_every=10**9)
    out = train(model, toks, toks, cfg, progress=False)
    tps = out["tokens_per_s"]
    achieved = tps * train_flops_per_token(model) / 1e9
    print(f"dense baseline ({model.n_params():,} params, batch {cfg.batch_size} x {cfg.n_ctx}): "
          f"{tps:,.0f} training tokens/s = {achieved:.1f} GFLOP/s, MFU {achieved / gf:.2f} of this machine's matmul")
    # chapter 2: the cost of the per-step projection, and CSR inference of a sparse model
    gcfg, _, _ = zoo.the_sparse_configs("full")
    r = sparse_step_time_ratio(gcfg, zoo.THE_SPARSE_MODEL["kept"], batch_size=16, steps=8)
    print(f"sparse model training step: {r['sparse_s'] * 1e3:.0f} ms with the top-k projection, "
          f"{r['dense_s'] * 1e3:.0f} ms without: ratio {r['ratio']:.2f} (goal <= 1.2)")
    for frac in (1 / 64, 1 / 256):
        m = GPT(gcfg)
        WeightSparsifier(m, frac, min_per_row=0).step(0)
        c = csr_inference_speedup(m)
        print(f"inference at kept 1/{round(1 / frac)}: dense {c['dense_s'] * 1e3:.0f} ms, "
              f"CSR {c['csr_s'] * 1e3:.0f} ms, speedup {c['speedup']:.2f}x")
    for script in sorted(Path(__file__).parent.glob("bench_*.py")):
        print(f"\n== {script.name}", flush=True)
        subprocess.run([sys.executable, str(script)], check=False)


if __name__ == "__main__":
    main()
