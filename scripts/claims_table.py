"""Regenerate the README's reproduced-claims table from data/results/*.json (full profile only)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from circuitbook.results import format_claim, load_registry

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- claims:start -->", "<!-- claims:end -->"


def table() -> str:
    rows = ["| chapter | claim | paper | target | measured | holds | registered |", "|---|---|---|---|---|---|---|"]
    registry = load_registry()
    for f in sorted((ROOT / "data" / "results").glob("[0-9][0-9]_*.json")):
        if f.name.count(".") > 1:  # ci-profile results (<chapter>.ci.json) are not the book's numbers
            continue
        r = json.loads(f.read_text())
        for c in r["claims"]:
            f = format_claim(c, registry)
            rows.append(f"| {r['chapter']} | `{c['id']}`: {f['claim']} | {f['paper']} | {f['target']} | "
                        f"{f['measured']} | {f['holds']} | {f['registered']} |")
    return "\n".join(rows)


def main(check: bool = False) -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = re.sub(f"{START}.*?{END}", f"{START}\n{table()}\n{END}", text, flags=re.S)
    if check:
        return 0 if new == text else 1
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv))
