"""The claims registry, data/results/REGISTRY.json: every claim id ever published. Never edit it by hand.

    python scripts/registry.py update                    register every new id of data/results/*.json
                                                         ("registered with its first measurement") and fill
                                                         in the commit that first published each id
    python scripts/registry.py register --protocol REV   the same, marking the new ids as registered before
                                                         their measurement, by the protocol commit REV
    python scripts/registry.py retire ID --reason TEXT   keep ID with its last value, marked retired
    python scripts/registry.py check                     exit 1 on a breach of the policy (results.registry_problems)

The commit that first published an id, and the earlier definitions and targets an id had before the registry
existed, come from `git log` of data/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

from circuitbook.artifacts import atomic_write_json
from circuitbook.results import COMMITTED, REGISTRY, committed_results, load_registry, registry_problems

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def first_published(cid: str, chapter: str) -> str | None:
    """The first commit whose data/results/<chapter>.json holds the id (None: not committed yet)."""
    out = git("log", "--format=%H", "--reverse", f"-S\"id\": \"{cid}\"", "--", f"data/results/{chapter}.json")
    return out.split()[0] if out.split() else None


def earlier_versions(cid: str, chapter: str, definition: str, target: str | None) -> list[dict]:
    """Every other (definition, target) the id had in the committed history, oldest first, with its commit."""
    seen, out = {(definition, target)}, []
    for rev in git("log", "--format=%H", "--reverse", "--", f"data/results/{chapter}.json").split():
        try:
            r = json.loads(git("show", f"{rev}:data/results/{chapter}.json"))
        except (subprocess.CalledProcessError, json.JSONDecodeError):
            continue
        for c in r["claims"]:
            if c["id"] == cid and (c["claim"], c.get("target")) not in seen:
                seen.add((c["claim"], c.get("target")))
                out.append({"definition": c["claim"], "target": c.get("target"), "measured": c["measured"],
                            "commit": rev})
    return out


def save(claims: dict[str, dict]) -> None:
    atomic_write_json(COMMITTED / REGISTRY, {
        "policy": "A published id keeps its definition and target; a change gets a new id; an id that can no "
                  "longer be measured is retired with its last value and a reason, never deleted. Written by "
                  "scripts/registry.py; never edited by hand.",
        "claims": dict(sorted(claims.items())),
    })


def update(protocol: str | None) -> None:
    registry = load_registry()
    for chapter, r in committed_results().items():
        for c in r["claims"]:
            reg = registry.get(c["id"])
            if reg is None:
                reg = registry[c["id"]] = {
                    "chapter": chapter, "definition": c["claim"], "target": c.get("target"),
                    "paper": c.get("paper"), "kind": c.get("kind", "exact"),
                    "registered": f"before its measurement, by protocol {protocol}" if protocol
                    else "with its first measurement",
                    "protocol": protocol, "first_published": None, "retired": None,
                    "earlier": earlier_versions(c["id"], chapter, c["claim"], c.get("target")),
                }
            if reg["first_published"] is None:
                reg["first_published"] = first_published(c["id"], chapter)
    save(registry)


def retire(cid: str, reason: str) -> None:
    registry = load_registry()
    last = next((c["measured"] for r in committed_results().values() for c in r["claims"] if c["id"] == cid), None)
    registry[cid]["retired"] = {"reason": reason, "date": datetime.date.today().isoformat(), "last_value": last}
    save(registry)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("update")
    reg = sub.add_parser("register")
    reg.add_argument("--protocol", required=True, help="the commit that wrote the protocol (definition, prompts)")
    ret = sub.add_parser("retire")
    ret.add_argument("id")
    ret.add_argument("--reason", required=True)
    sub.add_parser("check")
    a = ap.parse_args()
    if a.cmd == "update":
        update(None)
    elif a.cmd == "register":
        update(git("rev-parse", a.protocol).strip())
    elif a.cmd == "retire":
        retire(a.id, a.reason)
    problems = registry_problems(load_registry(), committed_results())
    for p in problems:
        print(p)
    return 1 if problems and a.cmd == "check" else 0


if __name__ == "__main__":
    sys.exit(main())
