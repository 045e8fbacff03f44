"""Mine the wild prompts (lib/circuitbook/data/wild.py) into data/artifacts/wild_prompts.json.gz.

    python scripts/extract_wild.py [--root SITE_PACKAGES]

Reads the pinned, MIT-licensed packages (`wild.SOURCES`) installed under `--root` (default: this
interpreter's site-packages), the frozen standard library (to drop what the models saw) and the shipped
`full` tokenizer; writes the file and its meta (sha256, the tokenizer it was mined with, counts), and
rewrites data/MANIFEST. Deterministic: files are read in sorted order and every subsample has a fixed seed,
so a rerun on the same package versions writes the same bytes. The book only reads the shipped file.
"""

from __future__ import annotations

import argparse
import json
import time

from circuitbook import zoo
from circuitbook.data.wild import WILD


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="the site-packages directory holding the sources (default: this interpreter's)")
    a = ap.parse_args()
    t0 = time.time()
    path = zoo.freeze_wild_prompts(a.root)
    meta = json.loads(path.with_name("wild_prompts.json").read_text())
    print(json.dumps({k: meta[k] for k in ("sha256", "n", "counts", "parents")}, indent=1))
    print(f"wrote {WILD} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
