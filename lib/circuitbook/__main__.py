"""Rebuild one thing: `python -m circuitbook list | build NAME | verify`.

    list                       every artifact of the profile: chapter, size, parents, shipped or not
    build NAME [--profile P] [--device D] [--threads N]
                               train NAME again exactly as its chapter does, then name the artifacts built
                               from it that are now stale (rebuild those next, parents first)
    verify                     checksums (data/MANIFEST) and lineage: every artifact's recorded parents
                               are the parents present now
"""

from __future__ import annotations

import argparse
import os
import sys

from circuitbook import artifacts
from circuitbook.config import get_profile, set_threads
from circuitbook.zoo import index


def cmd_list(profile: str) -> int:
    prof = get_profile(profile)
    known = index.entries(prof)
    by_name: dict[str, list] = {}
    for p in index.files(prof):
        by_name.setdefault(index.artifact_name(p), []).append(p)
    print(f"{'artifact':44} {'ch':>2} {'MB':>7}  {'shipped':7}  parents")
    for name, paths in sorted(by_name.items(), key=lambda kv: (known[kv[0]].chapter if kv[0] in known else 99, kv[0])):
        ch = known[name].chapter if name in known else "?"
        mb = sum(p.stat().st_size for p in paths) / 2**20
        parents = ", ".join(k.split(".")[0] for k in index.meta_of(name, prof).get("parents", {})) or "-"
        print(f"{name:44} {ch!s:>2} {mb:7.2f}  {'yes' if prof.shipped else 'no':7}  {parents}")
    missing = sorted(set(known) - set(by_name))
    if missing:
        print(f"\nnot built ({len(missing)}): {', '.join(missing)}")
    return 0


def cmd_build(name: str, profile: str) -> int:
    prof = get_profile(profile)
    known = index.entries(prof)
    if name not in known:
        print(f"unknown artifact {name!r}; `python -m circuitbook list` shows the {len(known)} known ones",
              file=sys.stderr)
        return 2
    before = index.meta_of(name, prof).get("sha256")
    known[name].build(prof, True)
    after = index.meta_of(name, prof).get("sha256")
    print(f"{name}: {'unchanged' if before == after else 'rebuilt'} (sha256 {str(after)[:12]})")
    stale = index.stale(prof)
    kids = index.children(name, prof)
    if kids:
        print("built from it (directly or not): " + ", ".join(sorted(kids)))
    if stale:
        print("stale now, rebuild them (parents first):\n  " + "\n  ".join(stale))
    return 0


def cmd_verify(profile: str) -> int:
    prof = get_profile(profile)
    bad = artifacts.verify_manifest() if prof.shipped else []
    for rel in bad:
        print(f"checksum: {rel} differs from data/MANIFEST")
    stale = index.stale(prof)
    for line in stale:
        print(f"lineage: {line}")
    if not bad and not stale:
        print(f"{len(index.files(prof))} files of profile {prof.name}: checksums and lineage hold")
    return 1 if bad or stale else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m circuitbook", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for c in ("list", "build", "verify"):
        s = sub.add_parser(c)
        s.add_argument("--profile", default="full", help="full (shipped) or ci")
        if c == "build":
            s.add_argument("name")
            s.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CIRCUITBOOK_DEVICE, else auto)")
            s.add_argument("--threads", type=int, help="torch threads (default: OMP_NUM_THREADS, else all cores)")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        return cmd_list(a.profile)
    if a.cmd == "verify":
        return cmd_verify(a.profile)
    if a.device:
        os.environ["CIRCUITBOOK_DEVICE"] = a.device
    set_threads(a.threads)
    return cmd_build(a.name, a.profile)


if __name__ == "__main__":
    sys.exit(main())
