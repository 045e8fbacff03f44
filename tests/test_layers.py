"""The library's layers (book/design.md): each module imports only from its own layer or the ones below, and
no module outside zoo/ hides a dependency in a function-local import."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "lib" / "circuitbook"
LAYERS = {"config": 0, "artifacts": 0, "results": 0, "data": 1, "models": 1, "train": 1, "zoo": 3, "__main__": 4}
METHODS = 2  # sparsity, circuits, bridges, bridges_tasks, separation, decomposition, dictionaries, diffing, viz, bench


def layer(module: str) -> int:
    top = module.removeprefix("circuitbook.").split(".")[0]
    return LAYERS.get(top, METHODS)


def modules() -> dict[str, str]:
    return {"circuitbook." + ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"):
            p.read_text() for p in ROOT.rglob("*.py")}


def test_every_import_points_down():
    upward = []
    for mod, src in modules().items():
        for imp in re.findall(r"^\s*from (circuitbook[\w.]*) import", src, re.M):
            if imp != "circuitbook" and layer(imp) > layer(mod):
                upward.append(f"{mod} (layer {layer(mod)}) imports {imp} (layer {layer(imp)})")
    assert not upward, "\n".join(upward)


def test_no_function_local_circuitbook_import_outside_the_zoo():
    local = [f"{mod}: {line.strip()}" for mod, src in modules().items() if not mod.startswith("circuitbook.zoo")
             for line in src.splitlines() if re.match(r"^\s+(from circuitbook|import circuitbook)", line)]
    assert not local, "\n".join(local)


def test_method_modules_take_no_profile():
    methods = [m for m in modules() if layer(m) == METHODS]
    offenders = [m for m in methods if re.search(r"def \w+\([^)]*\bprofile\b", modules()[m], re.S)]
    assert not offenders, offenders


def test_only_the_zoo_and_the_chapters_choose_the_device():
    """Below the zoo, code takes its device from its inputs (the model's parameters) or a `device` argument."""
    chooses = re.compile(r"from circuitbook(\.config)? import[^\n]*\bdevice\b|config\.device\(")
    exempt = ("circuitbook.config", "circuitbook.__init__")  # where it is defined and exported
    offenders = [m for m, src in modules().items()
                 if layer(m) < LAYERS["zoo"] and m not in exempt and chooses.search(src)]
    assert not offenders, offenders
