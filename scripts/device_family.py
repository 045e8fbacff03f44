"""Issue 17's recipe-2 family on a lent GPU, in one call of at most ten minutes.

Trains, one process per model (`--jobs` at a time), every family member not yet shipped and the twice-the-tokens
run of each candidate at the target point (the chosen-model rule picks one of them afterwards; the others are reported).
The configs are the CPU builds' (`zoo.sparse_model`); only the device differs, and each artifact records it
(`metrics.trained_on`). A run is not started when the runs so far say it cannot finish; at `--deadline` seconds
every run still going is stopped (its last checkpoint, written
every 64 steps, is kept), and the new artifacts, the unfinished checkpoints that fit and the logs are packed into
`$OUT/family.tar.NN` parts of at most 15 MiB (the device tool brings back 8 files, 64 MiB in all).

    python scripts/device_family.py --deadline 540        # on the device machine, from the repository root
    cat family.tar.* | tar -x                              # here, from the repository root
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from circuitbook.zoo.sparse import FAMILY_R2, TARGET_POINT, sparse_name  # noqa: E402

PART = 15 * 2**20
MAX_PARTS = 4  # 60 MiB, under the tool's 64


def jobs() -> list[tuple[float, int, int]]:
    """(kept, d_model, length): every family member, then the 2x runs of the target point's candidates."""
    out = [(1 / k, d, 1) for members in FAMILY_R2.values() for d, k in members]
    out += [(1 / k, d, 2) for d, k in FAMILY_R2[TARGET_POINT]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deadline", type=float, default=540, help="seconds after which runs are stopped")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per training process")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    ap.add_argument("--then", default="", type=lambda x: [n for n in x.split(",") if n],
                    help="comma-separated runs to put at the end of the queue (e.g. members already trained here)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time (on one H200, eight ran no faster in all than one alone)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    path = os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONPATH=path, PYTHONUNBUFFERED="1",
               TQDM_MININTERVAL="15")
    env.setdefault("CIRCUITBOOK_DEVICE", "cuda")
    by_name = {sparse_name(kept, d, recipe=2, length=n): (kept, d, n) for kept, d, n in jobs()}
    shipped = [n for n in by_name if (ROOT / "data" / "artifacts" / f"{n}.safetensors").exists()]
    queue = [n for n in by_name if n not in shipped and n not in a.then] + [n for n in a.then if n not in shipped]
    print(f"shipped, skipped: {shipped}\nqueue ({a.jobs} at a time): {queue}", flush=True)
    procs, started, took = {}, {}, {}

    def launch(name: str) -> None:
        kept, d, length = by_name[name]
        code = f"from circuitbook import zoo; zoo.sparse_model('full', {kept!r}, {d}, recipe=2, length={length})"
        log = open(out / f"{name}.log", "w")
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        started[name] = time.time()
        print(f"{time.time() - t0:5.0f} s  {name}: started", flush=True)

    while queue or any(p.poll() is None for p in procs.values()):
        left = a.deadline - (time.time() - t0)
        if left <= 0:
            break
        for name, p in procs.items():
            if p.poll() is not None and name not in took:
                took[name] = time.time() - started[name]
                print(f"{time.time() - t0:5.0f} s  {name}: exit {p.returncode} after {took[name]:.0f} s", flush=True)
        running = sum(p.poll() is None for p in procs.values())
        if queue and running < a.jobs:
            length = by_name[queue[0]][2]
            seen = [took[n] / by_name[n][2] * length for n in took if procs[n].returncode == 0]
            if seen and left < 1.2 * max(seen):
                print(f"no time left for {queue}", flush=True)
                queue = []
            else:
                launch(queue.pop(0))
        if int(time.time() - t0) // 60 != int(time.time() - t0 - 5) // 60:
            print(f"{time.time() - t0:5.0f} s  "
                  + ", ".join(f"{n}: {progress(out / f'{n}.log')}" for n in procs if procs[n].poll() is None),
                  flush=True)
        time.sleep(5)
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    for name, p in procs.items():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
        if name not in took:
            print(f"{time.time() - t0:5.0f} s  {name}: exit {p.returncode} (at the deadline)", flush=True)
    pack(out, list(procs))
    print(f"done in {time.time() - t0:.0f} s", flush=True)


def progress(log: Path) -> str:
    """The last `step/steps` a run's progress bar wrote."""
    steps = re.findall(r"(\d+)/(\d+) \[", log.read_text(errors="replace")[-4000:])
    return "/".join(steps[-1]) if steps else "-"


def pack(out: Path, names: list[str]) -> None:
    """New artifacts first, then logs, then unfinished checkpoints (smallest first) while they fit."""
    art = ROOT / "data" / "artifacts"
    files = [p for n in names for p in (art / f"{n}.safetensors", art / f"{n}.json") if p.exists()]
    files += sorted(out.glob("*.log"))
    runs = ROOT / "data" / "cache" / "runs" / "full"
    partial = [(runs / n / "latest.safetensors", runs / n / "latest.json") for n in names
               if not (art / f"{n}.safetensors").exists() and (runs / n / "latest.safetensors").exists()]
    budget = PART * MAX_PARTS - 2**20 - sum(p.stat().st_size for p in files)
    for st, js in sorted(partial, key=lambda x: x[0].stat().st_size):
        size = st.stat().st_size + js.stat().st_size
        if size < budget:
            files += [st, js]
            budget -= size
        else:
            print(f"left behind (too big to bring back): {st}", flush=True)
    tar_path = out / "family.tar"
    with tarfile.open(tar_path, "w") as tf:
        for p in files:
            tf.add(p, arcname=str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else f"logs/{p.name}")
    data = tar_path.read_bytes()
    tar_path.unlink()
    for p in out.glob("*.log"):
        p.unlink()
    for i in range(0, len(data), PART):
        (out / f"family.tar.{i // PART:02d}").write_bytes(data[i:i + PART])
    print(f"packed {len(files)} files, {len(data) / 2**20:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
