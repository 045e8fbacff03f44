"""A deterministic Python-code corpus: the interpreter's standard library plus generated idioms.

Documents are the standard-library source files (sorted, test suites left out)
and blocks of generated snippets that exercise the book's tasks (train-split task
examples only, see `tasks.corpus_snippet`). Documents are split train/validation
by a hash of their name, shuffled with a fixed seed and joined with `EOT`.
The text is cached under `data/cache/<profile>/` (generated, git-ignored).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

from circuitbook.artifacts import atomic_write_bytes, atomic_write_json
from circuitbook.config import DATA, Profile, get_profile, pick
from circuitbook.data.tasks import corpus_snippet

EOT = "<|endoftext|>"
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3", "turtledemo"}


@dataclass(frozen=True)
class CorpusConfig:
    max_files: int | None  # None: every standard-library file
    n_snippets: int  # generated task idioms
    snippets_per_doc: int = 16
    val_fraction: float = 0.05
    max_file_chars: int = 200_000
    seed: int = 0


def corpus_config(profile: str | Profile) -> CorpusConfig:
    return pick(profile, ci=CorpusConfig(max_files=120, n_snippets=4_000), full=CorpusConfig(None, 60_000))


def stdlib_files() -> list[Path]:
    """Standard-library .py files of the running interpreter, sorted by relative path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _is_val(name: str, frac: float) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < frac


def build_corpus(cfg: CorpusConfig) -> dict[str, str]:
    """Return {"train": text, "val": text}."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[tuple[str, str]] = []
    files = stdlib_files()
    if cfg.max_files is not None:
        files = random.Random(cfg.seed).sample(files, min(cfg.max_files, len(files)))
        files.sort()
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if EOT in text or not text.strip():
            continue
        docs.append((p.relative_to(root).as_posix(), text[: cfg.max_file_chars]))
    rng = random.Random(f"snippets/{cfg.seed}")
    for i in range(0, cfg.n_snippets, cfg.snippets_per_doc):
        n = min(cfg.snippets_per_doc, cfg.n_snippets - i)
        docs.append((f"idioms/{i}", "\n".join(corpus_snippet(rng) for _ in range(n))))
    random.Random(cfg.seed).shuffle(docs)
    split = {"train": [], "val": []}
    for name, text in docs:
        split["val" if _is_val(name, cfg.val_fraction) else "train"].append(text)
    return {k: EOT.join(v) for k, v in split.items()}


def load_corpus(profile: str | Profile) -> dict[str, str]:
    """The corpus of `profile`, built once and cached as text under data/cache/<profile>/."""
    prof = get_profile(profile)
    cfg = corpus_config(prof)
    key = hashlib.sha1(json.dumps([asdict(cfg), sys.version_info[:2]]).encode()).hexdigest()[:10]
    d = DATA / "cache" / prof.name
    paths = {s: d / f"corpus_{key}_{s}.txt" for s in ("train", "val")}
    if all(p.exists() for p in paths.values()):
        return {s: p.read_text(encoding="utf-8") for s, p in paths.items()}
    corpus = build_corpus(cfg)
    for s, p in paths.items():
        atomic_write_bytes(p, corpus[s].encode("utf-8"))
    atomic_write_json(d / f"corpus_{key}.json", {"config": asdict(cfg), "python": sys.version})
    return corpus
