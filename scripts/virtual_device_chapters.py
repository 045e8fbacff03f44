"""Run chapters at the `ci` profile on a virtual device and list what a GPU would refuse (no GPU needed).

    python scripts/virtual_device_chapters.py [NN ...]      (default: every chapter)

Sets CIRCUITBOOK_DEVICE=cpu:0 and executes each chapter's code cells (notebooks/NN_*.py) in one namespace
under `tests/virtual_device.VirtualDevice`, which tracks device / host placement of every tensor. It prints
each op that mixes device and host tensors, each `.numpy()` of a device tensor, and the matrix products that
ran on the host (analysis the chapter does on the CPU, or a model left there). CIRCUITBOOK_DATA and
CIRCUITBOOK_RESULTS choose where artifacts are read / trained and results written (default: a temporary dir
with the frozen corpus, so every ci artifact is trained, on the virtual device).
"""

from __future__ import annotations

import contextlib
import io
import linecache
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cells(path: Path) -> list[tuple[str, str]]:
    """(header, source) of every code cell of a jupytext percent file."""
    out, header, lines = [], None, []
    for line in path.read_text().splitlines() + ["# %%"]:
        if line.startswith("# %%"):
            if header is not None and "[markdown]" not in header:
                out.append((header, "\n".join(lines)))
            header, lines = line, []
        elif header is not None:
            lines.append(line)
    return out


def main(argv: list[str]) -> int:
    if "CIRCUITBOOK_DATA" not in os.environ:
        data = Path(tempfile.mkdtemp(prefix="cb_vdev_")) / "data"
        (data / "artifacts").mkdir(parents=True)
        for f in ("corpus_stdlib.json.gz", "corpus_stdlib.json"):
            shutil.copy(ROOT / "data" / "artifacts" / f, data / "artifacts" / f)
        os.environ["CIRCUITBOOK_DATA"] = str(data)
    os.environ.setdefault("CIRCUITBOOK_RESULTS", tempfile.mkdtemp(prefix="cb_vdev_results_"))
    os.environ["CIRCUITBOOK_DEVICE"] = "cpu:0"
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.path.insert(0, str(ROOT / "tests"))
    from virtual_device import VirtualDevice

    chapters = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    if argv:
        chapters = [c for c in chapters if c.name[:2] in argv]
    bad = 0
    os.chdir(ROOT / "notebooks")
    for nb in chapters:
        t0 = time.perf_counter()
        ns: dict = {"__name__": "__main__"}
        error = None
        with VirtualDevice() as vd:
            for i, (header, src) in enumerate(cells(nb)):
                name = f"{nb.name}:cell{i}"
                linecache.cache[name] = (len(src), None, src.splitlines(True), name)  # source lines in reports
                try:
                    with contextlib.redirect_stdout(io.StringIO()):  # the chapter's own output is not the point
                        exec(compile(src, name, "exec"), ns)
                except Exception:
                    error = f"cell {i}:\n{traceback.format_exc()}"
                    break
                if re.search(r"tags=\[.*\"parameters\"", header):
                    ns["profile"] = "ci"
        host = {op: n for (op, dev), n in vd.heavy.items() if not dev}
        print(f"== {nb.name} ({time.perf_counter() - t0:.0f} s): {len(vd.violations)} refused, host products {host}")
        for v in vd.violations:
            print("  ", v)
        for where, n in vd.host_sites.most_common(8):
            print(f"   host products ({n}x) at {where}")
        if error:
            print(error)
        bad += bool(vd.violations or error)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
