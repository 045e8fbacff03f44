import json

import pytest
import torch

from circuitbook import artifacts
from circuitbook.config import get_profile, pick


def test_unknown_profile_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown profile 'fast'.*ci, full"):
        get_profile("fast")
    assert pick("ci", ci=1, full=2) == 1 and pick("full", ci=1, full=2) == 2


def test_roundtrip_and_checksum(tmp_path):
    p = tmp_path / "a.safetensors"
    t = {"w": torch.randn(3, 4), "i": torch.arange(5)}
    digest = artifacts.save_tensors(p, t, {"config": {"x": 1}})
    back, meta = artifacts.load_tensors(p)
    assert meta["sha256"] == digest == artifacts.sha256(p)
    assert all(torch.equal(back[k], t[k]) for k in t)


def test_corrupted_artifact_is_detected(tmp_path):
    p = tmp_path / "a.safetensors"
    artifacts.save_tensors(p, {"w": torch.randn(64, 64)}, {})
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0xFF  # flip one byte of the tensor data
    p.write_bytes(bytes(raw))
    with pytest.raises(artifacts.ArtifactError, match="checksum mismatch"):
        artifacts.load_tensors(p)


def test_load_or_train_trains_once_then_loads_and_rejects_other_config(tmp_data):
    calls = []

    def fit():
        calls.append(1)
        return {"w": torch.ones(2)}, {"loss": 0.5}

    t, meta = artifacts.load_or_train("m", "full", fit, {"lr": 1})
    t2, _ = artifacts.load_or_train("m", "full", fit, {"lr": 1})
    assert len(calls) == 1 and torch.equal(t["w"], t2["w"]) and meta["metrics"]["loss"] == 0.5
    with pytest.raises(artifacts.ArtifactError, match="another config"):
        artifacts.load_or_train("m", "full", fit, {"lr": 2})
    artifacts.load_or_train("m", "full", fit, {"lr": 2}, retrain=True)
    assert len(calls) == 2
    # a shipped profile keeps data/MANIFEST up to date
    line = (tmp_data / "MANIFEST").read_text().split()
    assert line[1] == "artifacts/m.safetensors" and line[0] == artifacts.sha256(tmp_data / line[1])
    assert artifacts.verify_manifest() == []


def test_stale_generated_cache_is_trained_again(tmp_data):
    calls = []

    def fit():
        calls.append(1)
        return {"w": torch.full((2,), float(len(calls)))}, {}

    artifacts.load_or_train("m", "ci", fit, {"lr": 1})
    t, meta = artifacts.load_or_train("m", "ci", fit, {"lr": 2})  # ci is generated, not shipped: no error
    assert len(calls) == 2 and meta["config"] == {"lr": 2} and float(t["w"][0]) == 2.0


def test_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "a.safetensors"
    artifacts.save_tensors(p, {"w": torch.zeros(3)}, {"v": 1})

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        artifacts.save_tensors(p, {"w": torch.ones(3)}, {"v": 2})
    back, meta = artifacts.load_tensors(p)
    assert torch.equal(back["w"], torch.zeros(3)) and meta["v"] == 1
    assert not list(tmp_path.glob("*.tmp"))
    json.loads(p.with_suffix(".json").read_text())


def test_set_threads_follows_omp_num_threads_then_cores_and_caps(monkeypatch):
    import torch

    from circuitbook.config import set_threads, usable_cores

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
        assert set_threads() == usable_cores() >= 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads(at_most=1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
