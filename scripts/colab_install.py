"""Install circuitbook into a running Colab kernel so that `import circuitbook` works without a restart.

Each chapter's first cell clones the book and runs this file *in the kernel's own process*
(`runpy.run_path`), so the path and import-cache changes below reach the running kernel:

1. dependencies: only the ones that are missing are installed, at the versions `pyproject.toml` pins, with
   every dependency already present (Colab's torch, numpy, ...) held at its installed version;
2. circuitbook itself: a normal (not editable) install, `--no-deps`. An editable install is a `.pth` hook
   that Python reads only at start-up, so the running kernel would not see it;
3. `site.addsitedir` for a site directory that did not exist when the kernel started, then
   `importlib.invalidate_caches()` so the new package is found;
4. `CIRCUITBOOK_DATA` points at the clone's data/ (the installed package does not live in the repository).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import re
import site
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def missing_and_present(requirements: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split pinned requirements ("name==1.2") into the missing ones and the installed {name: version}."""
    missing, present = [], {}
    for req in requirements:
        name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
        try:
            present[name] = md.version(name)
        except md.PackageNotFoundError:
            missing.append(req)
    return missing, present


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def build_isolation() -> list[str]:
    """Build in this environment when it has a new enough setuptools (offline, faster); else let pip fetch one."""
    try:
        return ["--no-build-isolation"] if int(md.version("setuptools").split(".")[0]) >= 77 else []
    except md.PackageNotFoundError:
        return []


def main() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing, present = missing_and_present(deps)
    if missing:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("".join(f"{name}=={version}\n" for name, version in present.items()))
        print("circuitbook: installing", ", ".join(missing))
        pip(*missing, "-c", f.name)
    pip("--no-deps", *build_isolation(), str(ROOT))
    for d in [*site.getsitepackages(), site.getusersitepackages()]:
        if os.path.isdir(d) and d not in sys.path:
            site.addsitedir(d)
    importlib.invalidate_caches()
    os.environ.setdefault("CIRCUITBOOK_DATA", str(ROOT / "data"))


if __name__ == "__main__":
    main()
