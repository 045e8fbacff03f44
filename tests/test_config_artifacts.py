import json
import os
from pathlib import Path

import numpy as np
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
    lines = dict(reversed(ln.split()) for ln in (tmp_data / "MANIFEST").read_text().splitlines())
    assert set(lines) == {"artifacts/m.safetensors", "artifacts/m.json"}  # tensors and metadata
    assert all(d == artifacts.sha256(tmp_data / f) for f, d in lines.items())
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


# ---------------------------------------------------------------- lineage


def _const(value: float, calls: list):
    def fit():
        calls.append(value)
        return {"w": torch.full((2,), value)}, {}

    return fit


def test_child_of_a_retrained_shipped_parent_raises(tmp_data):
    calls = []
    artifacts.load_or_train("parent", "full", _const(1.0, calls), {"v": 1})
    parent = [artifacts.artifact_path("parent", "full")]
    artifacts.load_or_train("child", "full", _const(2.0, calls), {"c": 1}, parents=parent)
    meta = artifacts.load_tensors(artifacts.artifact_path("child", "full"))[1]
    assert meta["parents"] == {"parent.safetensors": artifacts.sha256(parent[0])}
    artifacts.load_or_train("child", "full", _const(2.0, calls), {"c": 1}, parents=parent)  # unchanged: loads
    assert calls == [1.0, 2.0]
    artifacts.load_or_train("parent", "full", _const(3.0, calls), {"v": 1}, retrain=True)  # new weights
    with pytest.raises(artifacts.ArtifactError, match=r"stale: its parent parent\.safetensors"):
        artifacts.load_or_train("child", "full", _const(2.0, calls), {"c": 1}, parents=parent)
    assert calls == [1.0, 2.0, 3.0]  # the shipped child was not retrained
    # the same parent retrained to identical tensors leaves its children valid
    artifacts.load_or_train("child", "full", _const(2.0, calls), {"c": 1}, parents=parent, retrain=True)
    artifacts.load_or_train("parent", "full", _const(3.0, calls), {"v": 1}, retrain=True)
    artifacts.load_or_train("child", "full", _const(2.0, calls), {"c": 1}, parents=parent)


def test_child_of_a_changed_generated_parent_is_retrained(tmp_data):
    calls = []
    artifacts.load_or_train("parent", "ci", _const(1.0, calls), {})
    parent = [artifacts.artifact_path("parent", "ci")]
    artifacts.load_or_train("child", "ci", _const(2.0, calls), {}, parents=parent)
    artifacts.load_or_train("parent", "ci", _const(5.0, calls), {}, retrain=True)
    artifacts.load_or_train("child", "ci", _const(2.0, calls), {}, parents=parent)
    assert calls == [1.0, 2.0, 5.0, 2.0]


def test_missing_parent_is_named(tmp_data):
    with pytest.raises(artifacts.ArtifactError, match="parent artifact .*nothing"):
        artifacts.load_or_train("child", "ci", _const(2.0, []), {},
                                parents=[artifacts.artifact_path("nothing", "ci")])


# ---------------------------------------------------------------- atomicity under a kill


def _save_killed_at(path, k: int) -> bool:
    """In a forked child, save new tensors over `path` and die (os._exit, no cleanup) at the k-th step of the
    write: before and after every file operation. Returns True if the child finished without being killed."""
    pid = os.fork()
    if pid == 0:  # the child
        n = [0]

        def tick():
            n[0] += 1
            if n[0] == k:
                os._exit(9)

        def wrap(f):
            def g(*a, **kw):
                tick()
                out = f(*a, **kw)
                tick()
                return out

            return g

        artifacts.save_file = wrap(artifacts.save_file)
        artifacts.os.replace = wrap(os.replace)
        artifacts.os.link = wrap(os.link)
        artifacts.Path.write_text = wrap(artifacts.Path.write_text)
        artifacts.Path.unlink = wrap(artifacts.Path.unlink)
        artifacts.save_tensors(path, {"w": torch.ones(64)}, {"v": 2})
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def test_a_kill_at_any_point_of_a_write_leaves_the_old_or_the_new_artifact(tmp_path):
    outcomes = []
    for k in range(1, 40):
        p = tmp_path / f"k{k}" / "a.safetensors"
        artifacts.save_tensors(p, {"w": torch.zeros(64)}, {"v": 1})
        finished = _save_killed_at(p, k)
        back, meta = artifacts.load_tensors(p)
        assert (meta["v"], float(back["w"].sum())) in ((1, 0.0), (2, 64.0)), k
        outcomes.append(meta["v"])
        assert artifacts.load_tensors(p)[1]["v"] == meta["v"]  # stable on a second load
        if finished:
            break
    assert finished and outcomes[-1] == 2  # the last run was not killed and wrote the new one
    assert outcomes.count(1) >= 5  # kills before the JSON's replace (the commit point) leave the old artifact
    assert 1 not in outcomes[outcomes.index(2):]  # once committed, always the new one


def _save_many(path_str: str, seed: int) -> None:
    for _ in range(20):
        artifacts.atomic_save_npy(Path(path_str), np.full(200_000, seed, dtype=np.uint16))


def test_two_processes_write_the_token_cache_at_once(tmp_path):
    import multiprocessing as mp

    path = tmp_path / "tokens.npy"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_save_many, args=(str(path), s)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    arr = np.load(path, allow_pickle=False)
    assert arr.shape == (200_000,) and len(set(arr.tolist())) == 1  # one whole writer's file, never a mix
    assert not list(tmp_path.glob("*.tmp*"))


def test_device_comes_from_circuitbook_device(monkeypatch):
    from circuitbook.config import device

    monkeypatch.setenv("CIRCUITBOOK_DEVICE", "cpu")
    assert device() == torch.device("cpu")
    monkeypatch.setenv("CIRCUITBOOK_DEVICE", "meta")
    assert device() == torch.device("meta")
    monkeypatch.setenv("CIRCUITBOOK_DEVICE", "gpu-please")
    with pytest.raises(ValueError, match="CIRCUITBOOK_DEVICE"):
        device()


def test_two_processes_asking_for_a_missing_artifact_train_it_once(tmp_data):
    """Chapters run in parallel: the second process waits on the training lock, then loads what the first made."""
    import time

    calls = tmp_data / "calls"

    def fit():
        with open(calls, "a") as f:
            f.write("trained\n")
        time.sleep(0.5)
        return {"w": torch.ones(3)}, {}

    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                artifacts.load_or_train("shared", "ci", fit, {"a": 1})
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    assert calls.read_text().splitlines() == ["trained"]
    assert torch.equal(artifacts.load_or_train("shared", "ci", fit, {"a": 1})[0]["w"], torch.ones(3))
    assert calls.read_text().splitlines() == ["trained"]
