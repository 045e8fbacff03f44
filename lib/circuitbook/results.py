"""Chapter results: `data/results/<chapter>.json`, the claims registry, the claims table, and drift checks.

A claim is one measured number with its definition and target. Its `kind` says how CI checks it:
`exact` claims are deterministic (computed from shipped artifacts and data) and a re-run must give the
committed value within `tol`; `timing` claims depend on the machine and are checked only for their goal.

`data/results/REGISTRY.json` keeps every claim id ever published, with its definition, target and the
commit that first published it (`scripts/registry.py` writes it from `git log`; never edit it by hand).
The policy: a published id keeps its definition and target; a change gets a new id beside the old one;
an id that can no longer be measured is retired (kept, with its last value and a reason), never deleted.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from circuitbook.artifacts import atomic_write_json
from circuitbook.config import DATA, RESULTS, Profile, get_profile

COMMITTED = DATA / "results"  # the committed results (RESULTS may point elsewhere: nbval writes to a scratch dir)


KINDS = ("exact", "timing")
REGISTRY = "REGISTRY.json"


@dataclass
class Claim:
    """One measured claim. `paper` is the paper's value (or None); `target` is a readable goal. `claim` and
    `target` are the registered definition and hold no measured values: data-dependent numbers the
    definition refers to (a quantile threshold, an entropy) go in `context`."""

    id: str
    claim: str
    measured: Any
    paper: Any = None
    target: str | None = None
    holds: bool | None = None  # None: a number reported, no goal attached
    kind: str = "exact"  # "exact": a re-run must reproduce it within tol; "timing": only its goal is checked
    tol: float = 1e-4  # exact claims: |new - old| <= tol * max(1, |old|)
    context: str | None = None  # data-dependent numbers the definition or target refers to

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id}: kind must be one of {KINDS}, got {self.kind!r}")


def _clean(x: Any) -> Any:
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float):
        return None if math.isnan(x) else round(x, 6)
    return x


def write_results(chapter: str, profile: str | Profile, claims: list[Claim]) -> dict:
    """Write `data/results/<chapter>.json` (ci-profile runs write `<chapter>.ci.json`, leaving the shipped one)."""
    prof = get_profile(profile)
    out = {
        "chapter": chapter,
        "profile": prof.name,
        "claims": [{k: _clean(v) for k, v in asdict(c).items()} for c in claims],
    }
    suffix = "" if prof.name == "full" else f".{prof.name}"
    atomic_write_json(RESULTS / f"{chapter}{suffix}.json", out)
    return out


def load_results(chapter: str, profile: str = "full", root: Path | None = None) -> dict:
    suffix = "" if profile == "full" else f".{profile}"
    return json.loads(((root or RESULTS) / f"{chapter}{suffix}.json").read_text())


def committed_results(root: Path = COMMITTED) -> dict[str, dict]:
    """{chapter: results} of the full-profile results files in `root` (data/results)."""
    return {f.stem: json.loads(f.read_text()) for f in sorted(root.glob("[0-9][0-9]_*.json"))
            if f.name.count(".") == 1}


def drift(old: dict, new: dict) -> list[str]:
    """What changed between two results of one chapter (committed vs re-run), one line per problem: an exact
    claim's value outside its tolerance, a timing claim that no longer meets the goal it met, a claim
    missing from either side, or a changed definition or target. Empty when the re-run agrees."""
    problems = []
    before = {c["id"]: c for c in old["claims"]}
    after = {c["id"]: c for c in new["claims"]}
    for cid in sorted(before.keys() - after.keys()):
        problems.append(f"{cid}: in the committed results, not produced by the re-run")
    for cid in sorted(after.keys() - before.keys()):
        problems.append(f"{cid}: produced by the re-run, not in the committed results (commit them)")
    for cid in sorted(before.keys() & after.keys()):
        a, b = before[cid], after[cid]
        for field in ("claim", "target", "kind"):
            if a.get(field) != b.get(field):
                problems.append(f"{cid}: {field} changed from {a.get(field)!r} to {b.get(field)!r}")
        if b.get("kind", "exact") == "timing":
            if a.get("holds") and not b.get("holds"):
                problems.append(f"{cid} (timing): met its goal {a.get('target')} with {a['measured']}, "
                                f"now {b['measured']}")
            continue
        if not _close(a["measured"], b["measured"], b.get("tol", 1e-4)):
            problems.append(f"{cid}: committed {a['measured']!r}, re-run {b['measured']!r} (tol {b.get('tol', 1e-4)})")
    return problems


def _close(x: Any, y: Any, tol: float) -> bool:
    if isinstance(x, bool) or isinstance(y, bool) or not all(isinstance(v, int | float) for v in (x, y)):
        return x == y
    return abs(x - y) <= tol * max(1.0, abs(x))


def load_registry(root: Path = COMMITTED) -> dict[str, dict]:
    p = root / REGISTRY
    return json.loads(p.read_text())["claims"] if p.exists() else {}


def registry_problems(registry: dict[str, dict], results: dict[str, dict]) -> list[str]:
    """Breaches of the claims policy: a registered id missing from the results and not retired; a results
    id not in the registry; a definition or target that differs from the registered one."""
    problems = []
    current = {c["id"]: (ch, c) for ch, r in results.items() for c in r["claims"]}
    for cid, reg in sorted(registry.items()):
        if cid not in current:
            if not reg.get("retired"):
                problems.append(f"{cid}: registered, missing from data/results and not retired")
            continue
        ch, c = current[cid]
        if ch != reg["chapter"]:
            problems.append(f"{cid}: registered in {reg['chapter']}, now in {ch}")
        for field, key in (("claim", "definition"), ("target", "target")):
            if c.get(field) != reg[key]:
                problems.append(f"{cid}: {key} {c.get(field)!r} differs from the registered {reg[key]!r} "
                                "(a changed definition needs a new id)")
    for cid in sorted(current.keys() - registry.keys()):
        problems.append(f"{cid}: in data/results/{current[cid][0]}.json but not registered "
                        "(python scripts/registry.py update)")
    return problems


def registration(cid: str, registry: dict[str, dict]) -> str:
    """How a claim was registered, for the tables: before its measurement (a protocol commit) or with it."""
    reg = registry.get(cid)
    if reg is None:
        return "unregistered"
    if reg.get("retired"):
        return f"retired ({reg['retired']['date']})"
    if reg.get("protocol"):
        return f"before measurement ({reg['protocol'][:7]})"
    return f"with first measurement ({(reg.get('first_published') or 'uncommitted')[:7]})"


def md_cell(text: str) -> str:
    """Text safe inside a markdown table cell (`|` would split the cell)."""
    return str(text).replace("|", "\\|")


def format_claim(c: dict, registry: dict[str, dict] | None = None) -> dict[str, str]:
    """A claim's cells as table text: measured to 4 significant digits, holds as yes / **no** / (report),
    timing claims marked, the context after the target, the registration status."""
    m = c["measured"]
    target = c["target"] or "–"
    if c.get("context"):
        target += f" ({c['context']})"
    return {
        "measured": (f"{m:.4g}" if isinstance(m, float) else str(m)) + (" (timing)" if c.get("kind") == "timing"
                                                                        else ""),
        "holds": {True: "yes", False: "**no**", None: "(report)"}[c["holds"]],
        "paper": "–" if c["paper"] is None else md_cell(c["paper"]),
        "target": md_cell(target),
        "claim": md_cell(c["claim"]),
        "registered": registration(c["id"], load_registry() if registry is None else registry),
    }


def claims_markdown(results: dict, registry: dict[str, dict] | None = None) -> str:
    """A markdown table of one chapter's claims: claim, paper, target, measured, holds, registration."""
    registry = load_registry() if registry is None else registry
    rows = ["| id | claim | paper | target | measured | holds | registered |", "|---|---|---|---|---|---|---|"]
    for c in results["claims"]:
        f = format_claim(c, registry)
        rows.append(f"| `{c['id']}` | {f['claim']} | {f['paper']} | {f['target']} | {f['measured']} | {f['holds']} "
                    f"| {f['registered']} |")
    return "\n".join(rows)


def claims_table(results: dict):
    """The claims table for display in a notebook (IPython Markdown)."""
    from IPython.display import Markdown

    return Markdown(claims_markdown(results))
