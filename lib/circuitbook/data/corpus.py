"""A deterministic Python-code corpus: a frozen copy of Python 3.11's standard library plus generated idioms.

Documents are the standard-library source files (sorted, test suites left out)
and blocks of generated snippets that exercise the book's tasks (train-split task
examples only, see `tasks.corpus_snippet`). Documents are split train/validation
by a hash of their name, shuffled with a fixed seed and joined with `EOT`.

The standard library is read from `data/artifacts/corpus_stdlib.json.gz` (shipped, sha256 in
`data/MANIFEST`, with the PSF licence), not from the running interpreter, so the corpus, the
tokenizer and every number of chapter 1 are the same on any Python (Colab's included).
`freeze_stdlib` wrote that file once, from CPython 3.11.7. The built text is cached under
`data/cache/<profile>/` (generated, git-ignored).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import sys
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

from circuitbook.artifacts import atomic_write_bytes, atomic_write_json, load_shipped_json_gz, sha256
from circuitbook.config import DATA, Profile, get_profile, pick
from circuitbook.data.tasks import corpus_snippet

EOT = "<|endoftext|>"
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3", "turtledemo"}
FROZEN_CHARS = 200_000  # the frozen copy keeps the first 200k characters of each file (CorpusConfig's default)
STDLIB = DATA / "artifacts" / "corpus_stdlib.json.gz"  # the frozen standard library (shipped)


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    """What goes into the corpus."""

    max_files: int | None  # standard-library files, sampled with `seed` (None: every file)
    n_snippets: int  # generated task idioms
    snippets_per_doc: int = 16  # idioms per document
    val_fraction: float = 0.05  # share of documents (by a hash of the name) held out for validation
    max_file_chars: int = FROZEN_CHARS  # a file's text is cut here (at most FROZEN_CHARS: the frozen copy's cut)
    seed: int = 0  # file sample and document order


def corpus_config(profile: str | Profile) -> CorpusConfig:
    return pick(profile, ci=CorpusConfig(max_files=120, n_snippets=4_000),
                full=CorpusConfig(max_files=None, n_snippets=60_000))


def stdlib_files(root: Path | None = None) -> list[Path]:
    """Standard-library .py files under `root` (default: the running interpreter's), sorted by relative path."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def read_stdlib(root: Path | None = None) -> list[tuple[str, str | None]]:
    """(relative name, text cut at FROZEN_CHARS, or None if unreadable) of every standard-library file."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    out = []
    for p in stdlib_files(root):
        try:
            text = p.read_text(encoding="utf-8")[:FROZEN_CHARS]
        except (UnicodeDecodeError, OSError):
            text = None
        out.append((p.relative_to(root).as_posix(), text))
    return out


def freeze_stdlib(path: Path = STDLIB, root: Path | None = None) -> str:
    """Write the standard library under `root` (default: this interpreter's) to `path` (gzipped JSON with the
    PSF licence) and its sha256 beside it; return the sha256. Run once; the book ships the result."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    licence = (root / "LICENSE.txt").read_text(encoding="utf-8")
    doc = {"python": sys.version.split()[0], "licence": licence, "files": read_stdlib(root)}
    data = gzip.compress(json.dumps(doc, ensure_ascii=False).encode("utf-8"), mtime=0)
    atomic_write_bytes(path, data)
    digest = sha256(path)
    atomic_write_json(path.with_name(path.name.removesuffix(".json.gz") + ".json"),
                      {"name": "corpus_stdlib", "file": path.name, "sha256": digest, "python": doc["python"],
                       "n_files": len(doc["files"]), "licence": "PSF License Agreement (in the file's 'licence')"})
    return digest


def frozen_stdlib(path: Path = STDLIB) -> list[tuple[str, str | None]]:
    """The shipped standard library, after its sha256 check: [(name, text or None)]."""
    return [tuple(f) for f in load_shipped_json_gz(path, "the frozen corpus")["files"]]


def _is_val(name: str, frac: float) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < frac


def build_corpus(cfg: CorpusConfig, stdlib: list[tuple[str, str | None]] | None = None) -> dict[str, str]:
    """Return {"train": text, "val": text} from `stdlib` [(name, text)] (default: the frozen copy)."""
    if cfg.max_file_chars > FROZEN_CHARS:
        raise ValueError(f"max_file_chars {cfg.max_file_chars} exceeds the frozen copy's {FROZEN_CHARS}")
    files = frozen_stdlib() if stdlib is None else stdlib
    if cfg.max_files is not None:
        files = random.Random(cfg.seed).sample(files, min(cfg.max_files, len(files)))
        files.sort(key=lambda f: f[0].split("/"))  # as pathlib sorts paths (by parts)
    docs: list[tuple[str, str]] = []
    for name, text in files:
        if text is None or EOT in text or not text.strip():
            continue
        docs.append((name, text[: cfg.max_file_chars]))
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
    key = hashlib.sha1(json.dumps([asdict(cfg), sha256(STDLIB)]).encode()).hexdigest()[:10]
    d = DATA / "cache" / prof.name
    paths = {s: d / f"corpus_{key}_{s}.txt" for s in ("train", "val")}
    if all(p.exists() for p in paths.values()):
        return {s: p.read_text(encoding="utf-8") for s, p in paths.items()}
    corpus = build_corpus(cfg)
    for s, p in paths.items():
        atomic_write_bytes(p, corpus[s].encode("utf-8"))
    atomic_write_json(d / f"corpus_{key}.json", {"config": asdict(cfg), "stdlib_sha256": sha256(STDLIB)})
    return corpus
