"""Colab, simulated: chapter 1's first cells make `circuitbook` importable in the running interpreter.

The simulated Colab is a fresh interpreter of a new venv that holds every package of this environment except
circuitbook (symlinked into its site-packages), a stub `google.colab` module, the repository URL pointed at a local
git repository made from this working tree, and pip without an index (the test needs no network). The chapter's
cells run in that one process, as in a kernel: the install must be usable without a restart, so an editable
install (read only at start-up) fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import set_repo_url  # noqa: E402

CHAPTER = ROOT / "notebooks" / "01_dense_baseline.ipynb"
DRIVER = """
import json, os, sys, types
sys.modules["google.colab"] = types.ModuleType("google.colab")  # what Colab's kernel has imported
ns = {}
for i, src in enumerate(json.load(open(sys.argv[1]))):
    exec(compile(src, f"<cell {i}>", "exec"), ns)
import circuitbook
from circuitbook import zoo
tok = zoo.tokenizer("full")
print("RESULT", json.dumps({"file": circuitbook.__file__, "cwd": os.getcwd(), "vocab": tok.vocab_size,
                            "ids": tok.encode("def f(x):\\n    return x"),
                            "data": str(circuitbook.config.DATA), "profile": ns["prof"].name}))
"""


def first_cells(n: int = 3) -> list[str]:
    """Chapter 1's first n code cells (the Colab cell, parameters, imports and setup), as the .ipynb holds them."""
    cells = [c for c in json.loads(CHAPTER.read_text())["cells"] if c["cell_type"] == "code"
             and "injected-parameters" not in c["metadata"].get("tags", [])]
    return ["".join(c["source"]) for c in cells[:n]]


def source_repo(dest: Path, mutate: str | None) -> Path:
    """A git repository holding this working tree's files (committed or not), as the cell would clone it."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    if mutate == "editable":  # a mutation the test must catch: the install step made editable
        script = dest / "scripts" / "colab_install.py"
        text = script.read_text()
        assert "*build_isolation(), str(ROOT))" in text
        script.write_text(text.replace("*build_isolation(), str(ROOT))", '*build_isolation(), "-e", str(ROOT))'))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run([*git, *args], cwd=dest, check=True)
    return dest


def colab_venv(dest: Path) -> Path:
    """A venv with this environment's packages (symlinked) but not circuitbook; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    py = dest / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "circuitbook" not in entry.name.lower() and not (site / entry.name).exists():
            (site / entry.name).symlink_to(entry)
    return py


def run_colab(tmp: Path, mutate: str | None = None, cells: list[str] | None = None) -> subprocess.CompletedProcess:
    src = source_repo(tmp / "src", mutate)
    py = colab_venv(tmp / "venv")
    (tmp / "cells.json").write_text(json.dumps(cells or first_cells()))
    (tmp / "driver.py").write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CIRCUITBOOK_", "PIP_", "VIRTUAL_ENV"))}
    env |= {"CIRCUITBOOK_REPO_URL": src.as_uri(), "CIRCUITBOOK_CLONE_DIR": str(tmp / "content" / "cb"),
            "PIP_NO_INDEX": "1", "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run([py, tmp / "driver.py", tmp / "cells.json"], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=600)


def test_colab_cell_installs_into_the_running_kernel(tmp_path):
    r = run_colab(tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(r.stdout.split("RESULT ", 1)[1])
    clone = tmp_path / "content" / "cb"
    assert Path(out["file"]).is_relative_to(tmp_path / "venv"), out  # installed, not the clone's or this tree's lib
    assert Path(out["cwd"]) == clone / "notebooks"
    assert Path(out["data"]) == clone / "data"  # the shipped artifacts come from the clone
    assert out["vocab"] == 2048 and len(out["ids"]) > 2 and out["profile"] == "full"


OLD_INSTALL = ('subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "-e", _cb], '
               "check=True)")


@pytest.mark.parametrize("mutation", ["editable-script", "editable-cell"])
def test_colab_editable_install_is_caught(tmp_path, mutation):
    """Mutations: `pip install -e` (in the install script, or inline in the cell as the book's first cell once had
    it) would need a kernel restart; the simulation must fail on it."""
    cells = first_cells()
    if mutation == "editable-cell":
        run = re.search(r"runpy\.run_path\(.*\)", cells[0])
        assert run, "the Colab cell runs scripts/colab_install.py"
        cells[0] = cells[0].replace(run[0], OLD_INSTALL)
    r = run_colab(tmp_path, mutate="editable" if mutation == "editable-script" else None, cells=cells)
    assert r.returncode != 0 and "No module named 'circuitbook'" in r.stderr, r.stdout[-2000:] + r.stderr[-2000:]


def test_repository_url_has_one_source():
    """README badges and every chapter's first cell use _config.yml's repository.url."""
    assert set_repo_url.problems() == []
    url, branch = set_repo_url.configured()
    slug = url.removeprefix("https://github.com/")
    readme = (ROOT / "README.md").read_text()
    badges = re.findall(r"colab\.research\.google\.com/github/(\S+?)/blob/(\S+?)/notebooks/", readme)
    assert len(badges) == len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))) and set(badges) == {(slug, branch)}
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cell = next(c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        assert f'"CIRCUITBOOK_REPO_URL", "{url}")' in "".join(cell["source"]), nb.name
        assert "-e" not in re.findall(r'"(-e)"', "".join(cell["source"])), nb.name


@pytest.mark.parametrize("url", ["https://github.com/someone/fork"])
def test_set_repo_url_rewrites_every_copy(url):
    text = (ROOT / "README.md").read_text() + (ROOT / "notebooks" / "01_dense_baseline.ipynb").read_text()
    new = set_repo_url.rewrite(text, url, "main")
    assert "circuitbook/circuitbook" not in new and new.count("someone/fork") == text.count("circuitbook/circuitbook")


def test_install_only_what_is_missing_and_hold_the_rest():
    """Colab's own torch and numpy stay: installed pins become constraints at the installed version."""
    import colab_install

    missing, present = colab_install.missing_and_present(["numpy==0.0.1", "transformer-lens==0.0.1",
                                                          "no-such-package-cb==1.0"])
    assert missing == ["no-such-package-cb==1.0"]
    assert present["numpy"] == np.__version__ and "transformer-lens" in present
