"""Time learned pruning of one task on the chosen full-profile sparse model.

    python scripts/bench_circuits.py [--threads 2] [--task single_double_quote] [--method v2|v1] [--profile]

One prune, never cached and not a search: mask training, then the bisection, then the calibration. `--method v2`
(the default; `zoo.prune_config_v2("full")`, goal: under 60 s on 2 idle cores) prints where the time goes (mask
steps, the bisection's forward passes, the calibration); `--method v1` times the first method
(`zoo.prune_config("full")`, goal: under 5 minutes). `--profile` adds the operators that dominate one mask step
and one bisection probe (AbsTopK's `torch.topk` leads both). Needs the shipped artifacts (model, means).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from circuitbook import zoo
from circuitbook.circuits import NodeSet, circuit_size, heldout_sufficiency, prune
from circuitbook.circuits.ablation import last_logit_diff
from circuitbook.circuits.masks import NodeMask
from circuitbook.circuits.prune import CircuitLoss, frozen


def profile(model, batch, means, nodes, cfg) -> None:
    """The top operators (self CPU time) of one mask step of `cfg.batch_size` prompts and of one bisection probe."""
    mask = NodeMask(nodes, cfg.init_noise_scale, cfg.init_noise_bias, cfg.temperature, cfg.seed)
    sub = batch[torch.randperm(len(batch.tokens), generator=torch.Generator().manual_seed(0))[: cfg.batch_size]]
    probe = CircuitLoss(model, batch, means, nodes, cfg.calibrated, cfg.lbfgs_steps)
    with frozen(model):
        gates = mask()
        F.softplus(-last_logit_diff(model, sub, nodes.split(gates), means)).mean().backward()  # warm up
        with torch.profiler.profile() as step:
            gates = mask()
            F.softplus(-last_logit_diff(model, sub, nodes.split(gates), means)).mean().backward()
        with torch.profiler.profile() as fwd:
            probe(mask.kept)
    for name, prof in (("one mask step", step), (f"one bisection probe ({len(batch.tokens)} prompts)", fwd)):
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in rows)
        top = ", ".join(f"{e.key} {e.self_cpu_time_total / total:.0%}" for e in rows[:5])
        print(f"  {name}: {total / 1e6:.2f} s of CPU; {top}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--task", default=zoo.CIRCUIT_TASKS[0], choices=zoo.CIRCUIT_TASKS)
    ap.add_argument("--method", default="v2", choices=("v1", "v2"))
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = zoo.the_sparse_model("full")[0].float()
    name = zoo.the_sparse_name("full")
    means = zoo.circuit_means("full", model, name)
    sets = zoo.task_sets("full", zoo.tokenizer("full"))
    nodes = NodeSet.from_model(model)
    cfg = zoo.prune_config_v2("full") if args.method == "v2" else zoo.prune_config("full")
    goal = 60 if args.method == "v2" else 300
    t0, c0 = time.perf_counter(), time.process_time()
    c = prune(model, sets.train[args.task], means, cfg, nodes, progress=False)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    size = circuit_size(model, c)
    print(f"pruning {args.task} ({args.method}, {len(nodes):,} nodes, {cfg.steps} mask steps x {cfg.batch_size} "
          f"prompts, {args.threads} threads): {secs:.0f} s = {secs / goal:.2f} of the {goal} s goal "
          f"({cpu:.0f} s of CPU: wall time above that is waiting for a busy machine); {size['nodes']} nodes, "
          f"{size['edges']} edges, train loss {c.loss:.3f} (calibrated {c.calibrated_loss:.3f})")
    if args.method == "v2":
        s = c.info["seconds"]
        held = heldout_sufficiency(model, c, sets.test[args.task], means)
        print(f"  mask training {s['mask']:.1f} s ({s['mask'] / cfg.steps * 1e3:.0f} ms a step); bisection "
              f"{s['order_and_bisection']:.1f} s ({s['probes']} forwards of {len(sets.train[args.task].tokens)} "
              f"prompts, {s['probe_seconds']:.1f} s, {len(c.info['effects'])} effects measured); calibration "
              f"{s['calibration']:.1f} s; held-out calibrated loss {held['loss']:.3f}")
        if args.profile:
            profile(model, sets.train[args.task], means, nodes, cfg)


if __name__ == "__main__":
    main()
