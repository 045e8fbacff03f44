"""The wild split: natural instances of the contrast tasks, mined from code the models never trained on.

The training corpus is CPython's standard library (`corpus.STDLIB`). The wild prompts come from pure-Python,
MIT-licensed packages (pip, setuptools, pytest, ...; `SOURCES` pins each version; vendored copies of other
projects and setuptools' copy of the stdlib's distutils are left out). `freeze_wild` mined them once, with
the book's `full` tokenizer, into `data/artifacts/wild_prompts.json.gz` (shipped, sha256 in `data/MANIFEST`,
each source's licence notice inside); `load_wild` reads that file only, so nothing here needs the packages
or a network at run time.

Instances, found with Python's own tokenizer (`tokenize`):

- **single_double_quote**: the closing quote of every one-line, non-triple-quoted string literal (any
  prefix: f, r, b); label 0 = `'`, 1 = `"`.
- **bracket_counting**: a closing `]` when it is the only `[` open (label 0: `]` against `]]`, which would
  close a bracket that is not open), and a closing `]]` (label 1: `]]` against `]`), as in `tasks._bracket`.
  Nested list displays (`[[1, 2], [3, 4]]`) are rare in real code (10 instances in all the sources), so the
  brackets of subscripts and type hints (`Optional[List[str]]`) count too; each instance records its
  `kind`, "list" (every bracket it closes opens a list display) or "subscript", and labels are balanced
  within each kind.
- **while_return_true**: `while True` followed by `:` (label 0) and `return True` ending its line (label 1).
- set_or_string has no natural idiom (an accumulator named `current` initialised to `set()` or `""`): it
  is measured off-template only (`forms.py`).

**The token-boundary rule** (where a prompt ends when the pre-tokenizer merges punctuation runs). The
prompt is the code up to the answer's first character (the closing quote, the `]`, the `:` or newline after
`True`), and it is kept only if the book's tokenizer starts a new token there *in the real code*: the
tokens of the real line up to that character must be exactly the tokens of the prompt's last line, and the
correct answer is the real code's next token. The pre-tokenizer groups a run of punctuation and BPE splits
it, so that token may be the quote merged with what follows (`")`, `":`, `",`, `".`), which is then the
answer; when BPE merges the quote with what precedes it (`."`, `""`, ` "`, `']`), no token starts at the
quote and the instance is skipped. The wrong answer is the twin of the correct one: the same text with the
other quote (`")` against `')`), one closing bracket more or fewer (`]` against `]]`), `:` against a
newline. Both must be single tokens that append cleanly to the prompt (`forms.valid_contrast`); an
instance whose twin is not a token (`'),` has no `"),`) is skipped. So the wild split asks each model the
question the template asks, at the token the real code has there.

The prompt is the longest run of whole lines before the answer (the answer's line cut at the answer) that
fits in `MAX_TOKENS` tokens and holds the line that opens the construct (the string, or the outermost of
the closing brackets). An instance is dropped as seen in training when its last `TAIL_LINES` lines occur
in the standard library (the two whole lines before the answer's line, followed by a line that starts as
the answer's line does, up to and including the answer). Identical prompts count once; at most `PER_FILE`
instances per file, task, kind and label are kept (sampled with a fixed seed); then each label is sampled
down to the smaller label's count (at most `PER_LABEL` per label, over the kinds), so labels are balanced.
"""

from __future__ import annotations

import gzip
import io
import json
import keyword
import random
import tokenize
from dataclasses import dataclass
from pathlib import Path

from circuitbook.artifacts import ArtifactError, atomic_write_bytes, atomic_write_json, load_shipped_json_gz, sha256
from circuitbook.config import DATA
from circuitbook.data.forms import valid_contrast
from circuitbook.data.tasks import Example

WILD = DATA / "artifacts" / "wild_prompts.json.gz"  # the shipped wild prompts
WILD_TASKS = ("single_double_quote", "bracket_counting", "while_return_true")
MAX_TOKENS = 128  # a prompt's tokens (the models' context)
PER_FILE = 10  # instances kept per file, task and label
PER_LABEL = 300  # instances kept per task and label
TAIL_LINES = 3  # lines (to the answer) that, found in the standard library, mark an instance as seen
SKIP_DIRS = {"_vendor", "vendor", "_distutils", "third_party", "__pycache__"}  # copies of other projects' code


@dataclass(frozen=True)
class Source:
    dist: str  # the distribution, as its dist-info directory names it
    version: str  # the version mined (a rebuild refuses another)
    packages: tuple[str, ...]  # its top-level package directories


SOURCES = (  # MIT-licensed, pure Python, not the standard library (checked from each METADATA on extraction)
    Source("pip", "23.2.1", ("pip",)),
    Source("setuptools", "84.2.1", ("setuptools",)),
    Source("pytest", "9.2.0", ("_pytest", "pytest")),
    Source("pluggy", "1.7.0", ("pluggy",)),
    Source("attrs", "26.1.0", ("attr", "attrs")),
    Source("jedi", "0.20.1", ("jedi",)),
    Source("parso", "0.8.7", ("parso",)),
    Source("lark", "1.3.1", ("lark",)),
    Source("mako", "1.4.3", ("mako",)),
    Source("jupytext", "1.19.6", ("jupytext",)),
    Source("markdown_it_py", "3.0.0", ("markdown_it",)),
    Source("mdit_py_plugins", "0.7.0", ("mdit_py_plugins",)),
    Source("myst_parser", "3.0.1", ("myst_parser",)),
    Source("anyio", "4.16.0", ("anyio",)),
    Source("optuna", "5.0.0", ("optuna",)),
    Source("pybtex", "0.26.1", ("pybtex",)),
    Source("beartype", "0.23.1", ("beartype",)),
    Source("executing", "2.3.0", ("executing",)),
    Source("h11", "0.16.0", ("h11",)),
    Source("rich", "15.0.0", ("rich",)),
    Source("urllib3", "2.8.0", ("urllib3",)),
    Source("filelock", "4.3.1", ("filelock",)),
    Source("typer", "0.29.2", ("typer",)),
    Source("soupsieve", "4.1.3", ("soupsieve",)),
    Source("pyyaml", "6.0.4", ("yaml",)),
    Source("execnet", "2.1.2", ("execnet",)),
)


@dataclass(frozen=True)
class WildExample(Example):
    source: str = ""  # the file, relative to site-packages
    line: int = 0  # the answer's line (1-based)
    kind: str = ""  # bracket_counting: "list" (every bracket closed is a list display) or "subscript"


# ---------------------------------------------------------------- finding instances


def _is_subscript(prev: tokenize.TokenInfo | None) -> bool:
    """A `[` after a name, a literal or a closing bracket indexes (x[0], f()[0]); otherwise it opens a list."""
    if prev is None:
        return False
    if prev.type == tokenize.NAME:
        return not keyword.iskeyword(prev.string)
    return prev.type in (tokenize.STRING, tokenize.NUMBER) or prev.string in (")", "]", "}")


def _kind(*brackets: tuple[str, bool, tuple[int, int]]) -> str:
    return "list" if all(b[1] for b in brackets) else "subscript"


def candidates(text: str) -> list[tuple[str, int, str, int, int, int]]:
    """(task, label, kind, row, col, first row) of every instance in `text`: the answer's first character is
    at line `row` (1-based), column `col`; the construct opens on line `first row`; `kind` is "list" or
    "subscript" for brackets, "" otherwise. Unparsable files give none."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    out = []
    stack: list[tuple[str, bool, tuple[int, int]]] = []  # (bracket, is a list display, where it opens)
    prev = None
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)
    for i, t in enumerate(toks):
        if t.type == tokenize.STRING and t.start[0] == t.end[0]:
            body = t.string.lstrip("rbfuRBFU")
            if body[:3] not in ('"""', "'''") and len(body) >= 2 and body[0] == body[-1]:
                out.append(("single_double_quote", int(body[0] == '"'), "", t.end[0], t.end[1] - 1, t.start[0]))
        elif t.type == tokenize.OP and t.string in "([{":
            stack.append((t.string, t.string == "[" and not _is_subscript(prev), t.start))
        elif t.type == tokenize.OP and t.string in ")]}":
            top = stack[-1] if stack else None
            if t.string == "]" and top and top[0] == "[" and prev and prev.start != top[2]:  # a non-empty [...]
                if sum(s[0] == "[" for s in stack) == 1:
                    out.append(("bracket_counting", 0, _kind(top), *t.start, top[2][0]))
                nxt = toks[i + 1] if i + 1 < len(toks) else None
                if nxt is not None and nxt.string == "]" and nxt.start == t.end and len(stack) >= 2 \
                        and stack[-2][0] == "[":
                    out.append(("bracket_counting", 1, _kind(top, stack[-2]), *t.start, stack[-2][2][0]))
            if stack:
                stack.pop()
        elif t.type == tokenize.NAME and t.string in ("while", "return") and i + 2 < len(toks):
            n1, n2 = toks[i + 1], toks[i + 2]
            if n1.string == "True" and n1.start == (t.end[0], t.end[1] + 1) and n2.start == n1.end:
                if t.string == "while" and n2.string == ":":
                    out.append(("while_return_true", 0, "", *n2.start, t.start[0]))
                elif t.string == "return" and n2.type == tokenize.NEWLINE and n2.string == "\n":
                    out.append(("while_return_true", 1, "", *n2.start, t.start[0]))
        if t.type not in skip:
            prev = t
    return out


def _twin(task: str, label: int, correct: str) -> str | None:
    """The wrong answer for the real code's next token `correct` (None: `correct` is not this task's answer)."""
    if task == "single_double_quote":
        q, o = ("'", '"') if label == 0 else ('"', "'")
        return o + correct[1:] if correct.startswith(q) else None
    if task == "bracket_counting":
        return {(0, "]"): "]]", (1, "]]"): "]"}.get((label, correct))
    return {(0, ":"): "\n", (1, "\n"): ":"}.get((label, correct))


def _follow(stdlib: list[tuple[str, str | None]]) -> dict[str, list[str]]:
    """{TAIL_LINES - 1 consecutive whole lines of the standard library: the lines that follow them}."""
    out: dict[str, list[str]] = {}
    for _, text in stdlib:
        if text:
            lines = text.split("\n")
            for i in range(len(lines) - TAIL_LINES + 1):
                out.setdefault("\n".join(lines[i: i + TAIL_LINES - 1]), []).append(lines[i + TAIL_LINES - 1])
    return out


def seen_in(prompt: str, correct: str, follow: dict[str, list[str]], stdlib_text: str) -> bool:
    """The prompt's last TAIL_LINES lines with the answer (the last line cut after it) occur in the standard
    library: its TAIL_LINES - 1 whole lines before the answer's line, then a line that starts as the answer's."""
    lines = (prompt + correct).split("\n")
    if correct == "\n":  # the answer ends its line: that line is whole
        lines = lines[:-1]
        last_whole = True
    else:
        last_whole = False
    if len(lines) < TAIL_LINES:
        return "\n".join(lines) in stdlib_text
    last = lines[-1]
    return any(nxt == last if last_whole else nxt.startswith(last)
               for nxt in follow.get("\n".join(lines[-TAIL_LINES:-1]), ()))


def mine_file(rel: str, text: str, tok) -> list[WildExample]:
    """Every instance of `text` that the token-boundary rule keeps, with its prompt (see the module doc)."""
    found = candidates(text)
    if not found:
        return []
    lines = text.splitlines(keepends=True)
    counts = [len(ids) for ids in tok.encode_batch(lines)]
    out = []
    for task, label, kind, row, col, first in found:
        line = lines[row - 1]
        head, real = tok.encode(line[:col]), tok.encode(line)
        if len(real) <= len(head) or real[: len(head)] != head:
            continue  # no token starts at the answer in the real code
        correct = tok.decode([real[len(head)]])
        wrong = _twin(task, label, correct)
        if wrong is None or not line[col:].startswith(correct):
            continue
        n, start = len(head) + sum(counts[first - 1: row - 1]), first - 1
        if n > MAX_TOKENS:
            continue  # the construct opens too far up
        while start > 0 and n + counts[start - 1] <= MAX_TOKENS:
            start -= 1
            n += counts[start]
        prompt = "".join(lines[start: row - 1]) + line[:col]
        # tokens never straddle a newline, so the contrast is valid on the prompt iff on its last line
        if valid_contrast(tok, line[:col], correct, wrong):
            out.append(WildExample(prompt, correct, wrong, label, task, rel, row, kind))
    return out


# ---------------------------------------------------------------- the sources and their licences


def dist_info(root: Path, src: Source) -> Path:
    """The dist-info directory of `src` under `root`, after checking its version and its MIT licence."""
    found = sorted(root.glob(f"{src.dist}-*.dist-info"), key=lambda p: p.name.lower())
    found = [p for p in found if p.name.lower().startswith(f"{src.dist.lower()}-{src.version}")]
    if len(found) != 1:
        raise ArtifactError(f"{src.dist} {src.version} is not installed under {root} (the wild prompts were mined "
                            "from that version; install it to rebuild them)")
    meta = (found[0] / "METADATA").read_text(encoding="utf-8")
    heads = [ln for ln in meta.splitlines() if ln.startswith(("License", "Classifier: License"))]
    if not any(ln.split(":", 1)[1].strip() in ("MIT", "MIT License") or ln.endswith(":: MIT License") for ln in heads):
        raise ArtifactError(f"{src.dist} does not declare the MIT licence: {heads}")
    return found[0]


def notices(info: Path) -> dict[str, str]:
    """The licence files shipped with a distribution (LICENSE, AUTHORS, NOTICE, licenses/...): {name: text}."""
    names = ("LICEN", "COPYING", "AUTHORS", "NOTICE")
    files = [p for p in sorted(info.rglob("*")) if p.is_file() and p.name.upper().startswith(names)]
    if not files:
        raise ArtifactError(f"{info} carries no licence file")
    return {p.relative_to(info).as_posix(): p.read_text(encoding="utf-8") for p in files}


def source_files(root: Path) -> list[tuple[str, Path]]:
    """(path relative to `root`, path) of every .py file of the sources, vendored copies left out, sorted."""
    out = []
    for src in SOURCES:
        for pkg in src.packages:
            for p in (root / pkg).rglob("*.py"):
                rel = p.relative_to(root)
                if not SKIP_DIRS & set(rel.parts[:-1]):
                    out.append((rel.as_posix(), p))
    return sorted(out)


def mine(root: Path, tok, stdlib: list[tuple[str, str | None]], seed: int = 0) -> dict:
    """The wild prompts of the sources under `root` (a site-packages directory), as the shipped document."""
    sources = []
    for src in SOURCES:
        info = dist_info(root, src)
        sources.append({"dist": src.dist, "version": src.version, "packages": list(src.packages),
                        "licence": "MIT", "notices": notices(info)})
    pools: dict[tuple[str, str, int], list[WildExample]] = {}  # (task, kind, label): instances
    counts = {t: {"candidates": 0, "kept_by_rule": 0} for t in WILD_TASKS}
    unique = set()
    for rel, path in source_files(root):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for task, *_ in candidates(text):
            counts[task]["candidates"] += 1
        per_file: dict[tuple[str, str, int], list[WildExample]] = {}
        for e in mine_file(rel, text, tok):
            counts[e.task]["kept_by_rule"] += 1
            if (e.prompt, e.correct) not in unique:  # a file copied into two packages counts once
                unique.add((e.prompt, e.correct))
                per_file.setdefault((e.task, e.kind, e.label), []).append(e)
        for key, exs in per_file.items():
            if len(exs) > PER_FILE:
                exs = sorted(random.Random(f"wild/{seed}/{rel}/{key}").sample(exs, PER_FILE), key=lambda e: e.line)
            pools.setdefault(key, []).extend(exs)
    follow, stdlib_text = _follow(stdlib), "\n".join(t for _, t in stdlib if t)
    tasks = {}
    for t in WILD_TASKS:
        counts[t]["seen_in_stdlib"] = 0
        kept = []
        for kind in sorted({k for task, k, _ in pools if task == t}):
            by_label = []
            for lab in (0, 1):
                pool = pools.get((t, kind, lab), [])
                fresh = [e for e in pool if not seen_in(e.prompt, e.correct, follow, stdlib_text)]
                counts[t]["seen_in_stdlib"] += len(pool) - len(fresh)
                counts[t][f"pool_{kind + '_' if kind else ''}label_{lab}"] = len(fresh)
                by_label.append(fresh)
            k = min(len(by_label[0]), len(by_label[1]), PER_LABEL - len(kept) // 2)
            rng = random.Random(f"wild/{seed}/{t}/{kind}")
            kept += [e for fresh in by_label for e in rng.sample(fresh, k)]
        counts[t]["kept_per_label"] = len(kept) // 2
        bad = [e for e in kept if not valid_contrast(tok, e.prompt, e.correct, e.wrong)]
        if bad:
            raise AssertionError(f"{len(bad)} {t} prompts are not valid contrasts, e.g. {bad[0]}")
        kept.sort(key=lambda e: (e.source, e.line, e.label, e.prompt))
        tasks[t] = [[e.prompt, e.correct, e.wrong, e.label, e.source, e.line, e.kind] for e in kept]
    settings = {"max_tokens": MAX_TOKENS, "per_file": PER_FILE, "per_label": PER_LABEL, "tail_lines": TAIL_LINES,
                "seed": seed, "skip_dirs": sorted(SKIP_DIRS)}
    return {"rule": __doc__, "settings": settings, "sources": sources, "counts": counts, "tasks": tasks}


def freeze_wild(tok, stdlib: list[tuple[str, str | None]], parents: dict[str, str], root: Path,
                path: Path = WILD) -> str:
    """Mine the sources under `root` with `tok` (the book's tokenizer, whose file digest is in `parents`) and
    write `path` (gzipped JSON) and its meta beside it; return the sha256. Run once; the book ships the result."""
    doc = mine(Path(root), tok, stdlib)
    atomic_write_bytes(path, gzip.compress(json.dumps(doc, ensure_ascii=False).encode("utf-8"), mtime=0))
    digest = sha256(path)
    atomic_write_json(path.with_name(path.name.removesuffix(".json.gz") + ".json"), {
        "name": "wild_prompts", "file": path.name, "sha256": digest, "parents": parents,
        "n": {t: len(v) for t, v in doc["tasks"].items()}, "counts": doc["counts"],
        "sources": [f"{s['dist']} {s['version']}" for s in doc["sources"]],
        "licence": "MIT (each source's notices in the file's 'sources')"})
    return digest


def wild_document(path: Path = WILD) -> dict:
    """The shipped wild-prompts document, after its sha256 check."""
    return load_shipped_json_gz(path, "the wild prompts")


def load_wild(path: Path = WILD) -> dict[str, list[WildExample]]:
    """{task: its wild examples} from the shipped file (WILD_TASKS only: set_or_string has none)."""
    doc = wild_document(path)
    return {t: [WildExample(p, c, w, lab, t, src, line, kind) for p, c, w, lab, src, line, kind in rows]
            for t, rows in doc["tasks"].items()}
