"""`python -m circuitbook`: list equals data/MANIFEST, verify holds on the shipped artifacts, lineage reports."""

from __future__ import annotations

import torch

from circuitbook import artifacts
from circuitbook.__main__ import main
from circuitbook.zoo import index


def test_list_is_the_manifest_and_every_shipped_artifact_has_a_builder(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines()[1:] if line and not line.startswith("not built")}
    listed.discard("not")
    manifest = {line.split()[1].split("/")[-1].split(".")[0] for line in artifacts.MANIFEST.read_text().splitlines()}
    assert listed == manifest
    known = index.entries("full")
    assert manifest <= set(known), sorted(manifest - set(known))
    assert all(f" {known[n].chapter} " in next(ln for ln in out.splitlines() if ln.startswith(n + " "))
               for n in manifest)


def test_verify_holds_on_the_shipped_artifacts(capsys):
    assert main(["verify"]) == 0
    assert "checksums and lineage hold" in capsys.readouterr().out


def test_unknown_artifact_is_refused(capsys):
    assert main(["build", "no_such_model"]) == 2
    assert "unknown artifact" in capsys.readouterr().err


def test_stale_children_are_named(tmp_data):
    def const(v):
        return lambda: ({"w": torch.full((2,), v)}, {})

    artifacts.load_or_train("a", "full", const(1.0), {})
    a = [artifacts.artifact_path("a", "full")]
    artifacts.load_or_train("b", "full", const(2.0), {}, parents=a)
    artifacts.load_or_train("c", "full", const(3.0), {}, parents=[artifacts.artifact_path("b", "full")])
    assert set(index.children("a", "full")) == {"b", "c"} and index.stale("full") == []
    artifacts.load_or_train("a", "full", const(5.0), {}, retrain=True)
    stale = index.stale("full")
    assert len(stale) == 1 and stale[0].startswith("b: parent a.safetensors")


def test_a_ci_artifact_built_from_the_shipped_corpus_is_not_stale(tmp_data):
    import shutil

    from circuitbook.data.corpus import STDLIB

    shipped = artifacts.artifact_path("x", "full").parent
    shipped.mkdir(parents=True, exist_ok=True)
    for f in (STDLIB, STDLIB.with_name("corpus_stdlib.json")):
        shutil.copy(f, shipped / f.name)
    artifacts.load_or_train("tok", "ci", lambda: ({"w": torch.ones(2)}, {}), {}, parents=[shipped / STDLIB.name])
    assert index.stale("ci") == []
