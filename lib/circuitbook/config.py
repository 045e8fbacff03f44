"""Profiles ("ci", "full"), paths, seeding and device choice."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("CIRCUITBOOK_DATA", REPO / "data"))
RESULTS = Path(os.environ.get("CIRCUITBOOK_RESULTS", DATA / "results"))  # nbval writes elsewhere


@dataclass(frozen=True)
class Profile:
    """A named size setting. `ci` runs every code path at toy size; `full` is the real result."""

    name: str
    artifact_dir: Path  # where this profile's artifacts live
    shipped: bool  # whether artifacts of this profile are committed (and listed in data/MANIFEST)

    @property
    def is_ci(self) -> bool:
        return self.name == "ci"


PROFILES: dict[str, Profile] = {
    "ci": Profile("ci", DATA / "ci", shipped=False),
    "full": Profile("full", DATA / "artifacts", shipped=True),
}


def get_profile(name: str | Profile) -> Profile:
    """Return the profile called `name`; an unknown name raises ValueError listing the valid ones."""
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles are: {', '.join(sorted(PROFILES))}")
    return PROFILES[name]


def pick(profile: str | Profile, *, ci, full):
    """Choose a value by profile: `pick(profile, ci=100, full=20_000)`."""
    return ci if get_profile(profile).is_ci else full


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, lowered by a cgroup CPU quota (containers, CI)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return n


def set_threads(at_most: int | None = None) -> int:
    """Set torch's thread count and return it: OMP_NUM_THREADS when set (`make test` sets 1), else the usable
    cores, capped at `at_most`. More threads than free cores is worse than one: OpenMP threads spin while
    they wait, so a busy neighbour slows a multi-threaded run down many times (scripts/bench_threads.py)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    n = int(env) if env.isdigit() and int(env) > 0 else usable_cores()
    if at_most is not None:
        n = min(n, at_most)
    torch.set_num_threads(n)
    return n


def device() -> torch.device:
    """Where the book trains: `CIRCUITBOOK_DEVICE` when set (cpu, cuda, cuda:1, ...), else CUDA when present,
    else CPU. The book never requires a GPU; shipped artifacts are stored on CPU and load anywhere."""
    env = os.environ.get("CIRCUITBOOK_DEVICE", "").strip()
    if env:
        try:
            return torch.device(env)
        except RuntimeError as e:
            raise ValueError(f"CIRCUITBOOK_DEVICE={env!r} is not a torch device ({e})") from e
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def in_colab() -> bool:
    return "COLAB_RELEASE_TAG" in os.environ or "google.colab" in str(os.environ.get("PYTHONPATH", ""))
