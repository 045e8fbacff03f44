"""Time learned pruning of one task on the chosen full-profile sparse model (goal: under 5 minutes on 2 cores).

    python scripts/bench_circuits.py [--threads 2] [--task single_double_quote]

Prunes with the base settings (`zoo.prune_config("full")`: mask training plus bisection plus calibration), never
cached, and prints the seconds taken and the circuit. Needs the shipped artifacts (model, means).
"""

from __future__ import annotations

import argparse
import time

import torch

from circuitbook import zoo
from circuitbook.circuits import NodeSet, circuit_size, prune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--task", default=zoo.CIRCUIT_TASKS[0], choices=zoo.CIRCUIT_TASKS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = zoo.the_sparse_model("full")[0].float()
    name = zoo.sparse_name(zoo.THE_SPARSE_MODEL["kept"], zoo.THE_SPARSE_MODEL["d_model"])
    means = zoo.circuit_means("full", model, name)
    sets = zoo.task_sets("full", zoo.tokenizer("full"))
    cfg = zoo.prune_config("full")
    t0 = time.perf_counter()
    c = prune(model, sets.train[args.task], means, cfg, NodeSet.from_model(model), progress=False)
    secs = time.perf_counter() - t0
    size = circuit_size(model, c)
    print(f"pruning {args.task} ({len(c.nodes):,} nodes, {cfg.steps} mask steps x {cfg.batch_size} prompts, "
          f"{args.threads} threads): {secs:.0f} s = {secs / 300:.2f} of the 5-minute goal; "
          f"{size['nodes']} nodes, {size['edges']} edges, train loss {c.loss:.3f}")


if __name__ == "__main__":
    main()
