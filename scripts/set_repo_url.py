"""The book's repository URL lives in `_config.yml` (`repository.url`); this writes it everywhere else.

    python scripts/set_repo_url.py https://github.com/you/circuitbook   set it (a fork does this once)
    python scripts/set_repo_url.py                                     rewrite the copies from _config.yml
    python scripts/set_repo_url.py --check                             exit 1 if a copy disagrees

The copies: the README's Colab badges (`colab.research.google.com/github/OWNER/NAME/blob/BRANCH/...`) and the
first cell of every chapter, which must hold the URL itself because in Colab it runs before the repository is
cloned. The book's launch button reads `_config.yml` directly.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
CELL_URL = re.compile(r'(CIRCUITBOOK_REPO_URL\\?", \\?")([^"\\]+)')  # in the .py and in the .ipynb's JSON
BADGE = re.compile(r"(colab\.research\.google\.com/github/)([^/)\s]+/[^/)\s]+)/blob/([^/)\s]+)/")


def configured() -> tuple[str, str]:
    """(url, branch) from _config.yml."""
    repo = yaml.safe_load(CONFIG.read_text())["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def copies() -> list[Path]:
    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")) + sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return [ROOT / "README.md", *nbs]


def rewrite(text: str, url: str, branch: str) -> str:
    slug = re.sub(r"^https?://github\.com/", "", url).removesuffix(".git")
    text = CELL_URL.sub(lambda m: m[1] + url, text)
    return BADGE.sub(lambda m: f"{m[1]}{slug}/blob/{branch}/", text)


def problems() -> list[str]:
    """Every copy whose URL differs from _config.yml's, and every chapter without one."""
    url, branch = configured()
    out = []
    for p in copies():
        text = p.read_text()
        if rewrite(text, url, branch) != text:
            out.append(f"{p.relative_to(ROOT)}: a repository URL differs from _config.yml's {url}")
        if p.suffix in (".py", ".ipynb") and not CELL_URL.search(text):
            out.append(f"{p.relative_to(ROOT)}: first cell has no CIRCUITBOOK_REPO_URL default")
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        bad = problems()
        print("\n".join(bad) or "repository URL: every copy agrees with _config.yml")
        return 1 if bad else 0
    if argv:
        url = argv[0].rstrip("/")
        text = CONFIG.read_text()
        CONFIG.write_text(re.sub(r"(?m)^(repository:\n  url: ).*$", lambda m: m[1] + url, text, count=1))
    url, branch = configured()
    for p in copies():
        text = p.read_text()
        if (new := rewrite(text, url, branch)) != text:
            p.write_text(new)
            print(f"rewrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
