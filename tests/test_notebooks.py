"""Every chapter executes end to end with the `ci` profile, from scratch (no artifacts), under papermill."""

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.notebooks
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_with_ci_profile(nb, tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv("CIRCUITBOOK_DATA", str(tmp_path / "data"))  # no shipped or cached artifacts...
    (tmp_path / "data" / "artifacts").mkdir(parents=True)
    inputs = ("corpus_stdlib.json.gz", "corpus_stdlib.json", "wild_prompts.json.gz", "wild_prompts.json")
    for f in inputs:  # ...but the book's input data: the frozen corpus and the wild prompts
        shutil.copy(ROOT / "data" / "artifacts" / f, tmp_path / "data" / "artifacts" / f)
    out = tmp_path / nb.name
    papermill.execute_notebook(str(nb), str(out), parameters={"profile": "ci"}, cwd=str(nb.parent),
                               kernel_name="python3", progress_bar=False,
                               execution_timeout=1200)  # a hung cell fails here, not at the CI limit
    results = list((tmp_path / "data" / "results").glob("*.ci.json"))
    assert results, "the chapter must write its results file"
    for r in results:
        claims = json.loads(r.read_text())["claims"]
        assert claims and all({"id", "claim", "paper", "measured", "target", "holds"} <= set(c) for c in claims)


def test_every_py_notebook_is_paired_and_in_the_toc():
    toc = (ROOT / "book" / "_toc.yml").read_text()
    for py in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        assert py.with_suffix(".ipynb").exists(), f"{py.name} has no .ipynb twin (make sync)"
        assert f"notebooks/{py.stem}" in toc, f"{py.stem} is missing from book/_toc.yml"


def test_notebooks_start_with_colab_cell_and_parameters():
    for nb in NOTEBOOKS:
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        assert "google.colab" in "".join(cells[0]["source"]), f"{nb.name}: first code cell must be the Colab install"
        params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, f"{nb.name}: exactly one cell tagged 'parameters'"
        src = "".join(params[0]["source"])
        assert 'profile = "full"' in src and "seed = 0" in src and "retrain = False" in src


def test_readme_claims_table_matches_results():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "claims_table.py"), "--check"], env=os.environ)
    assert r.returncode == 0, "README claims table is stale: run `make readme`"


def test_shipped_artifacts_match_manifest_and_stay_small():
    from circuitbook import artifacts

    assert artifacts.verify_manifest() == []
    total = sum(p.stat().st_size for p in (ROOT / "data").rglob("*") if p.is_file() and "cache" not in p.parts
                and "ci" not in p.parts and "scratch" not in p.parts)
    assert total < 100 * 2**20, f"data/ holds {total / 2**20:.1f} MB"
