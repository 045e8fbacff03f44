"""Chapter results: `data/results/<chapter>.json`, the claims table, and the README table built from them."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from circuitbook.artifacts import atomic_write_json
from circuitbook.config import RESULTS, Profile, get_profile


@dataclass
class Claim:
    """One measured claim. `paper` is the paper's value (or None); `target` is a readable goal."""

    id: str
    claim: str
    measured: Any
    paper: Any = None
    target: str | None = None
    holds: bool | None = None  # None: a number reported, no goal attached


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


def load_results(chapter: str, profile: str = "full") -> dict:
    suffix = "" if profile == "full" else f".{profile}"
    return json.loads((RESULTS / f"{chapter}{suffix}.json").read_text())


def format_claim(c: dict) -> dict[str, str]:
    """A claim's cells as table text: measured to 4 significant digits, holds as yes / **no** / (report)."""
    m = c["measured"]
    return {
        "measured": f"{m:.4g}" if isinstance(m, float) else str(m),
        "holds": {True: "yes", False: "**no**", None: "(report)"}[c["holds"]],
        "paper": "–" if c["paper"] is None else str(c["paper"]),
        "target": c["target"] or "–",
    }


def claims_markdown(results: dict) -> str:
    """A markdown table of one chapter's claims: claim, paper, target, measured, holds."""
    rows = ["| id | claim | paper | target | measured | holds |", "|---|---|---|---|---|---|"]
    for c in results["claims"]:
        f = format_claim(c)
        rows.append(f"| `{c['id']}` | {c['claim']} | {f['paper']} | {f['target']} | {f['measured']} | {f['holds']} |")
    return "\n".join(rows)


def claims_table(results: dict):
    """The claims table for display in a notebook (IPython Markdown)."""
    from IPython.display import Markdown

    return Markdown(claims_markdown(results))
