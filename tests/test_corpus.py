"""The corpus is frozen: the same text on any Python, because the standard library comes from the shipped copy."""

from __future__ import annotations

import gzip
import hashlib
import json
import sysconfig

import pytest

from circuitbook.artifacts import ArtifactError
from circuitbook.data import corpus as C

# sha256 of the full corpus text as CPython 3.11.7's standard library built it before the freeze: the tokenizer
# and every model of the book were trained on exactly these bytes.
FULL_TRAIN_SHA = "26f72050275b5931654a7026eb344cfe53e73f7496a2ab3a758209f2832071ef"
FULL_VAL_SHA = "aeaa37626b274efb213c7ea44a7684ffbe2cd6c2b759b08d6650d00d7d3ce745"


@pytest.fixture
def other_python(tmp_path, monkeypatch):
    """Another interpreter: its stdlib path holds different files (as Colab's Python 3.12 would)."""
    root = tmp_path / "python3.99"
    (root / "json").mkdir(parents=True)
    (root / "json" / "__init__.py").write_text("MARKER_FROM_ANOTHER_PYTHON = 1\n")
    (root / "LICENSE.txt").write_text("licence\n")
    real = sysconfig.get_paths
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {**real(*a, **k), "stdlib": str(root)})
    return root


def test_full_corpus_is_the_same_under_another_python(other_python):
    assert C.stdlib_files() == [other_python / "json" / "__init__.py"]  # the interpreter's stdlib did change
    corpus = C.build_corpus(C.corpus_config("full"))
    assert "MARKER_FROM_ANOTHER_PYTHON" not in corpus["train"] + corpus["val"]
    assert hashlib.sha256(corpus["train"].encode()).hexdigest() == FULL_TRAIN_SHA
    assert hashlib.sha256(corpus["val"].encode()).hexdigest() == FULL_VAL_SHA


def test_ci_corpus_samples_the_frozen_files(other_python):
    frozen = C.frozen_stdlib()
    corpus = C.build_corpus(C.corpus_config("ci"))
    assert corpus == C.build_corpus(C.corpus_config("ci"), stdlib=frozen)
    own = C.build_corpus(C.corpus_config("ci"), stdlib=C.read_stdlib(other_python))
    assert corpus != own and "MARKER_FROM_ANOTHER_PYTHON" in own["train"] + own["val"]


def test_frozen_copy_carries_the_psf_licence_and_is_checked(tmp_path):
    doc = json.loads(gzip.decompress(C.STDLIB.read_bytes()))
    assert "PSF" in doc["licence"] or "Python Software Foundation" in doc["licence"]
    assert doc["python"].startswith("3.11") and len(doc["files"]) > 500
    bad = tmp_path / "corpus_stdlib.json.gz"
    bad.write_bytes(gzip.compress(b'{"files": []}'))
    (tmp_path / "corpus_stdlib.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(ArtifactError, match="checksum"):
        C.frozen_stdlib(bad)


def test_freeze_round_trip(tmp_path, other_python):
    path = tmp_path / "corpus_stdlib.json.gz"
    digest = C.freeze_stdlib(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert C.frozen_stdlib(path) == [("json/__init__.py", "MARKER_FROM_ANOTHER_PYTHON = 1\n")]
    assert C.freeze_stdlib(path) == digest  # deterministic bytes (gzip mtime 0)
