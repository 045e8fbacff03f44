"""Artifacts: safetensors + JSON meta + sha256, written atomically, loaded only after a checksum.

An artifact `name` of a profile is two files in the profile's directory:
`name.safetensors` (tensors only: nothing is ever unpickled) and `name.json`
(config, metrics, the tensor file's sha256). `load_or_train` loads it if the
checksum and config match, trains it if it is missing (or `retrain=True`), and
raises `ArtifactError` if it is corrupt or was made with another config.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> str:
    """Save tensors to `path` (.safetensors) and `meta` + sha256 beside it (.json), atomically.

    The JSON is written last, so a tensor file without a matching JSON sum is never trusted.
    Returns the sha256 of the tensor file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.chmod(tmp, 0o644)
        digest = sha256(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_json(path.with_suffix(".json"), {**(meta or {}), "sha256": digest, "file": path.name})
    return digest


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load tensors saved by `save_tensors`, after checking the sha256 recorded beside them."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        raise FileNotFoundError(f"artifact {path} (or its {meta_path.name}) is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{meta_path} is not valid JSON ({e}); delete it or retrain") from e
    digest = sha256(path)
    if meta.get("sha256") != digest:
        raise ArtifactError(
            f"checksum mismatch for {path}: expected {meta.get('sha256')}, found {digest}. "
            "The file is corrupt or was changed; delete it or pass retrain=True."
        )
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises several types on a bad header
        raise ArtifactError(f"{path} is not a readable safetensors file ({e})") from e
    return tensors, meta


def artifact_path(name: str, profile: str | Profile) -> Path:
    return get_profile(profile).artifact_dir / f"{name}.safetensors"


def exists(name: str, profile: str | Profile) -> bool:
    p = artifact_path(name, profile)
    return p.exists() and p.with_suffix(".json").exists()


def load_or_train(
    name: str,
    profile: str | Profile,
    train_fn: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]],
    config: dict[str, Any],
    retrain: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load artifact `name` of `profile`, or train it with `train_fn() -> (tensors, metrics)` and save it.

    `config` is stored in the meta and must match on load: a shipped artifact made with another
    config raises ArtifactError instead of being silently used; a generated cache entry (ci profile)
    made with another config is stale and is trained again.
    """
    prof = get_profile(profile)
    path = artifact_path(name, prof)
    config = json.loads(json.dumps(config))  # normalise (tuples -> lists) for comparison
    if not retrain and exists(name, prof):
        tensors, meta = load_tensors(path)
        if meta.get("config") == config:
            return tensors, meta
        if prof.shipped:
            raise ArtifactError(
                f"artifact {path} was made with another config:\n stored: {meta.get('config')}\n"
                f" asked:  {config}\npass retrain=True to train it again."
            )
    tensors, metrics = train_fn()
    meta = {"name": name, "profile": prof.name, "config": config, "metrics": metrics}
    save_tensors(path, tensors, meta)
    if prof.shipped:
        update_manifest()
    return load_tensors(path)


def update_manifest() -> None:
    """Rewrite data/MANIFEST: one line `sha256  relative/path` per shipped artifact file."""
    root = get_profile("full").artifact_dir
    lines = []
    for p in sorted(root.rglob("*.safetensors")):
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
