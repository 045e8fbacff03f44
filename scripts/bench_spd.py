"""Time SPD on TMS 5-2 with the full-profile settings (goal: under 5 minutes on 2 cores).

    python scripts/bench_spd.py [--threads 2] [--steps N]

Prints the seconds taken to train the target and to decompose it, and the decomposition's metrics.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from circuitbook import zoo
from circuitbook.decomposition import decompose_toy, toy_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="override the full profile's step count")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    target = zoo.train_toy_target("tms_5_2", "full", progress=False)
    t_target = time.perf_counter() - t0
    overrides = {} if args.steps is None else {"steps": args.steps}
    t0 = time.perf_counter()
    cfg = zoo.toy_decomposition_config("tms_5_2", "full", **overrides)
    d = decompose_toy(zoo.TOY_TARGETS["tms_5_2"], target, cfg, progress=False)
    t_spd = time.perf_counter() - t0
    print(f"settings: steps={cfg.steps} batch={cfg.batch_size} threads={args.threads}")
    print(f"target training: {t_target:.1f} s")
    print(f"SPD decomposition: {t_spd:.1f} s (goal <= 300 s on 2 cores: {'met' if t_spd <= 300 else 'missed'}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores during the run)")
    print({k: round(float(v), 4) for k, v in toy_metrics(zoo.TOY_TARGETS["tms_5_2"], d.model).items()})


if __name__ == "__main__":
    main()
