"""Why `make test` runs one torch thread per process: the same training steps with 1 and with all cores' threads,
alone and beside one busy neighbour process (what a shared CI machine has). Prints seconds and ratios.

OpenMP worker threads spin while they wait for each other; when a neighbour takes one of the cores, the spinning
thread burns the time slices the working one needs. Run: `python scripts/bench_threads.py [--steps N]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from circuitbook.config import usable_cores

WORK = """
import time, torch
from circuitbook import zoo
from circuitbook.models.gpt import GPT
torch.manual_seed(0)
gcfg, _ = zoo.dense_configs("ci")
model, x = GPT(gcfg), torch.randint(0, gcfg.vocab_size, (4, 32))  # small ops, as in the ci-profile chapters
opt = torch.optim.AdamW(model.parameters())
t0 = time.perf_counter()
for _ in range({steps}):
    model(x).logsumexp(-1).mean().backward()
    opt.step()
    opt.zero_grad()
print(time.perf_counter() - t0)
"""


def timed(threads: int, steps: int, neighbour: bool) -> float:
    """Seconds for `steps` small training steps in a fresh process with `threads` OpenMP threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour else None
    try:
        out = subprocess.run([sys.executable, "-c", WORK.format(steps=steps)], env=env, check=True,
                             capture_output=True, text=True)
        return float(out.stdout.split()[-1])
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    cores = usable_cores()
    if cores < 2:
        print(f"{cores} core: nothing to compare")
        return
    t = {(n, nb): timed(n, args.steps, nb) for nb in (False, True) for n in (1, cores)}
    for nb in (False, True):
        where = "beside a busy neighbour" if nb else "alone"
        print(f"{args.steps} small training steps {where}: 1 thread {t[1, nb]:.1f} s, "
              f"{cores} threads {t[cores, nb]:.1f} s, ratio {t[cores, nb] / t[1, nb]:.2f}")
    print(f"slowdown from the neighbour: 1 thread {t[1, True] / t[1, False]:.2f}x, "
          f"{cores} threads {t[cores, True] / t[cores, False]:.2f}x")


if __name__ == "__main__":
    main()
