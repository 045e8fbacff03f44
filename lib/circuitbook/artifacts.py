"""Artifacts: safetensors + JSON meta + sha256, written atomically, loaded only after a checksum.

An artifact `name` of a profile is two files in the profile's directory:
`name.safetensors` (tensors only: nothing is ever unpickled) and `name.json`
(config, metrics, the tensor file's sha256, and the sha256 of every artifact it
was built from: its `parents`). `load_or_train` loads it if the checksum, the config
and the parents match, trains it if it is missing (or `retrain=True`), and raises
`ArtifactError` if a shipped one is corrupt, was made with another config, or was
built from a parent that has changed since (a generated `ci` one is trained again).

Writes are atomic as a pair: the old tensors stay reachable (a hard link named after
their sha256) until the new JSON is in place, so a process killed at any point leaves
the old artifact loadable, or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from circuitbook.config import DATA, Profile, get_profile

MANIFEST = DATA / "MANIFEST"


class ArtifactError(RuntimeError):
    """An artifact is corrupt, mismatched or unreadable."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; artifacts are for everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """`np.save` to `path` atomically, through a unique temporary name (two processes may race to build it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _tmp_path(path: Path) -> Path:
    """A fresh, unique temporary name beside `path` (so concurrent writers never share one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _backup(path: Path, digest: str) -> Path:
    """Where the tensors of `path` with sha256 `digest` are kept while a new version is being committed."""
    return path.with_name(f"{path.stem}.{digest[:16]}.bak")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> str:
    """Save tensors to `path` (.safetensors) and `meta` + sha256 beside it (.json), atomically as a pair.

    Both files are written to unique temporary names first. The old tensor file is hard-linked to a backup
    named after its sha256 before the new one replaces it, and the backup is removed only after the new
    JSON is in place; `load_tensors` falls back to that backup when the JSON still describes the old
    tensors. So a kill at any point leaves the old artifact loadable, or the new one. Returns the sha256.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_path = path.with_suffix(".json")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    tmp, tmp_meta, backup = _tmp_path(path), None, None
    try:
        save_file(tensors, str(tmp))
        os.chmod(tmp, 0o644)
        digest = sha256(tmp)
        tmp_meta = _tmp_path(meta_path)
        tmp_meta.write_text(json.dumps({**(meta or {}), "sha256": digest, "file": path.name}, indent=2,
                                       sort_keys=True) + "\n")
        os.chmod(tmp_meta, 0o644)
        old = _read_meta(meta_path) if path.exists() and meta_path.exists() else None
        if old and old.get("sha256"):
            backup = _backup(path, old["sha256"])
            backup.unlink(missing_ok=True)
            os.link(path, backup)  # the old tensors stay reachable until the new JSON is in place
        os.replace(tmp, path)
        os.replace(tmp_meta, meta_path)  # the commit point
    except BaseException:
        tmp.unlink(missing_ok=True)
        if tmp_meta is not None:
            tmp_meta.unlink(missing_ok=True)
        raise
    if backup is not None:
        backup.unlink(missing_ok=True)
    return digest


def _read_meta(meta_path: Path) -> dict[str, Any]:
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{meta_path} is not valid JSON ({e}); delete it or retrain") from e


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load tensors saved by `save_tensors`, after checking the sha256 recorded beside them. When a write was
    interrupted after the tensors were replaced but before the JSON was, the old tensors are read from
    their backup (and put back)."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        raise FileNotFoundError(f"artifact {path} (or its {meta_path.name}) is missing")
    meta = _read_meta(meta_path)
    digest = sha256(path)
    if meta.get("sha256") != digest:
        backup = _backup(path, str(meta.get("sha256")))
        if backup.exists() and sha256(backup) == meta.get("sha256"):
            os.replace(backup, path)  # roll back the interrupted write
            digest = meta["sha256"]
        else:
            raise ArtifactError(
                f"checksum mismatch for {path}: expected {meta.get('sha256')}, found {digest}. "
                "The file is corrupt or was changed; delete it or pass retrain=True."
            )
    try:
        tensors = load_file(str(path), device="cpu")  # stored from, and loaded onto, the CPU; models then move
    except Exception as e:  # safetensors raises several types on a bad header
        raise ArtifactError(f"{path} is not a readable safetensors file ({e})") from e
    return tensors, meta


def load_shipped_json_gz(path: Path, what: str) -> Any:
    """A shipped gzipped JSON input (the frozen corpus, the wild prompts), after the sha256 recorded in the JSON
    meta beside it (`<name>.json`). `what` names it in the errors."""
    path = Path(path)
    meta_path = path.with_name(path.name.removesuffix(".json.gz") + ".json")
    if not path.exists() or not meta_path.exists():
        raise FileNotFoundError(f"{what} {path} (or {meta_path.name}) is missing; it is shipped with the book "
                                "(git checkout data/artifacts)")
    expected = json.loads(meta_path.read_text())["sha256"]
    if sha256(path) != expected:
        raise ArtifactError(f"checksum mismatch for {path}: expected {expected}; restore it from git")
    return json.loads(gzip.decompress(path.read_bytes()))


def artifact_path(name: str, profile: str | Profile) -> Path:
    return get_profile(profile).artifact_dir / f"{name}.safetensors"


def exists(name: str, profile: str | Profile) -> bool:
    p = artifact_path(name, profile)
    return p.exists() and p.with_suffix(".json").exists()


def parent_digests(parents: Sequence[Path]) -> dict[str, str]:
    """{parent file name: its sha256 as recorded in its JSON meta} for artifact files (any profile)."""
    out = {}
    for p in parents:
        p = Path(p)
        meta_path = p.with_name(p.name.split(".")[0] + ".json")
        if not meta_path.exists():
            raise ArtifactError(f"parent artifact {p} is missing (its meta {meta_path.name} is not there)")
        out[p.name] = _read_meta(meta_path)["sha256"]
    return out


@contextlib.contextmanager
def training_lock(name: str, profile: str | Profile) -> Iterator[None]:
    """Hold an exclusive lock on training artifact `name` of `profile` (a file under data/cache/locks), so
    that chapters run in parallel train a missing artifact once: the second waits, then loads it."""
    lock = DATA / "cache" / "locks" / f"{get_profile(profile).name}_{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _load_if_current(path: Path, prof: Profile, config: dict[str, Any], parents: Sequence[Path]):
    """(tensors, meta) of the artifact at `path` when it was made with `config` from `parents` as they are
    now; None when it is missing, or (a generated cache entry) stale. A stale shipped artifact raises."""
    if not path.exists() or not path.with_suffix(".json").exists():
        return None
    tensors, meta = load_tensors(path)
    lineage = parent_digests(parents)
    if meta.get("config") == config and meta.get("parents", {}) == lineage:
        return tensors, meta
    if prof.shipped:
        if meta.get("config") != config:
            raise ArtifactError(
                f"artifact {path} was made with another config:\n stored: {meta.get('config')}\n"
                f" asked:  {config}\npass retrain=True to train it again."
            )
        changed = [f"{p} (built from {meta.get('parents', {}).get(p, 'nothing recorded')[:12]}, now "
                   f"{d[:12]})" for p, d in lineage.items() if meta.get("parents", {}).get(p) != d]
        raise ArtifactError(
            f"artifact {path} is stale: its parent {', '.join(changed) or sorted(meta.get('parents', {}))} "
            "changed since it was built. Rebuild it (retrain=True, or `python -m circuitbook build NAME`), "
            "then its own children."
        )
    return None


def load_or_train(
    name: str,
    profile: str | Profile,
    train_fn: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]],
    config: dict[str, Any],
    retrain: bool = False,
    parents: Sequence[Path] = (),
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load artifact `name` of `profile`, or train it with `train_fn() -> (tensors, metrics)` and save it.

    `config` is stored in the meta and must match on load, and so must the sha256 of every artifact in
    `parents` (the files it is built from: `artifact_path(...)`, `corpus.STDLIB`). A shipped artifact
    made with another config, or from a parent that has changed since, raises ArtifactError naming the
    difference and the way to rebuild it, instead of being silently used or silently retrained; a
    generated cache entry (ci profile) in that state is stale and is trained again. Training holds
    `training_lock`, so two processes asking for the same missing artifact train it once.
    """
    prof = get_profile(profile)
    path = artifact_path(name, prof)
    config = json.loads(json.dumps(config))  # normalise (tuples -> lists) for comparison
    if not retrain and (found := _load_if_current(path, prof, config, parents)) is not None:
        return found
    with training_lock(name, prof):
        if not retrain and (found := _load_if_current(path, prof, config, parents)) is not None:
            return found  # trained by another process while this one waited
        tensors, metrics = train_fn()
        meta = {"name": name, "profile": prof.name, "config": config, "metrics": metrics,
                "parents": parent_digests(parents)}
        save_tensors(path, tensors, meta)
        if prof.shipped:
            update_manifest()
    return load_tensors(path)


def update_manifest() -> None:
    """Rewrite data/MANIFEST: one line `sha256  relative/path` per shipped file (tensors, metadata, corpus)."""
    root = get_profile("full").artifact_dir
    lines = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith((".tmp", ".bak")):
            lines.append(f"{sha256(p)}  {p.relative_to(DATA).as_posix()}")
    atomic_write_bytes(MANIFEST, ("\n".join(lines) + "\n").encode() if lines else b"")


def verify_manifest() -> list[str]:
    """Return the shipped files whose sha256 differs from data/MANIFEST (empty when all match)."""
    bad = []
    if not MANIFEST.exists():
        return bad
    for line in MANIFEST.read_text().splitlines():
        if not line.strip():
            continue
        digest, rel = line.split(maxsplit=1)
        p = DATA / rel
        if not p.exists() or sha256(p) != digest:
            bad.append(rel)
    return bad


def pack_sparse(state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Store mostly-zero tensors as flat int32 indices + values (`name.idx`, `name.val`), others densely.

    Weight-sparse models keep a few percent of their weights, so this is several times smaller than
    dense storage. Shapes come back from the model the tensors are loaded into (`unpack_sparse`).
    """
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        flat = v.flatten()
        nz = flat.nonzero()[:, 0]
        if v.is_floating_point() and v.dim() >= 1 and 3 * len(nz) < len(flat):
            out[f"{k}.idx"] = nz.to(torch.int32)
            out[f"{k}.val"] = flat[nz].to(dtype)
        else:
            out[k] = v.to(dtype) if v.is_floating_point() else v
    return out


def unpack_sparse(tensors: dict[str, torch.Tensor], template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `pack_sparse`, given a state dict of the right shapes (e.g. a fresh model's)."""
    out = {}
    for k, t in template.items():
        if k in tensors:
            out[k] = tensors[k].to(t.dtype)
        elif f"{k}.idx" in tensors:
            flat = torch.zeros(t.numel(), dtype=t.dtype)
            flat[tensors[f"{k}.idx"].long()] = tensors[f"{k}.val"].to(t.dtype)
            out[k] = flat.view_as(t)
        else:
            raise ArtifactError(f"tensor {k!r} is missing from the artifact")
    return out
