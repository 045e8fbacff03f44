"""Regenerate lib/circuitbook/zoo/__init__.py: re-export every public function, class and UPPER constant of the
zoo's chapter modules (not `index`), with a sorted __all__. Run after adding a public name to a zoo module."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ZOO = Path(__file__).resolve().parents[1] / "lib" / "circuitbook" / "zoo"
DOC = '''"""The book's trained things, one module per chapter (`core` holds what they share).

Every function here takes a profile and goes through `artifacts.load_or_train`: a shipped artifact is
loaded (after its checksum), a missing one is trained, `retrain=True` trains again. Method modules never
load or save artifacts and never see a profile; this package is where the two meet. Notebooks call
`zoo.<name>` (every public name of the submodules is re-exported here).
"""
'''


def public_names(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            names.append(node.name)
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        names += [t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper() and not t.id.startswith("_")]
    return sorted(set(names))


def isort_key(name: str) -> tuple[int, str]:
    """isort's order by type: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def main() -> None:
    out, every = [DOC], []
    for mod in sorted(p for p in ZOO.glob("*.py") if p.stem not in ("__init__", "index")):
        names = sorted(public_names(mod), key=isort_key)
        every += names
        out.append(f"from circuitbook.zoo.{mod.stem} import (\n" + "".join(f"    {n},\n" for n in names) + ")")
    body = textwrap.fill(", ".join(repr(n) for n in sorted(every)), 116, initial_indent="    ",
                         subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)
    out.append(f"\n__all__ = [\n{body},\n]\n")
    (ZOO / "__init__.py").write_text("\n".join(out[:1]) + "\n" + "\n".join(out[1:]))


if __name__ == "__main__":
    main()
