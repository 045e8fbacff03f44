"""Prompts built to break a circuit where its mechanism predicts it fails (chapter 3's bracket attacks).

The bracket circuit averages `[` signals over the context (the paper's mechanism), so it should be fooled
by brackets that are already closed (a distractor list before the open one) and by long lists, whose many
elements dilute the average. Prompts are drawn from the held-out split only.
"""

from __future__ import annotations

import random

from circuitbook.data.tasks import NAMES, Example, _elems, _filler, _header, is_test

ATTACKS = ("normal", "flat", "distractor", "long", "flat_one", "subscripts", "long_prefix")
# The first three attacks were found after the fact (issue 16: tried until one broke the model); the last three
# were written, with the averaging mechanism's prediction for each depth, before they were first measured.
FOUND_AFTER_THE_FACT = ("flat", "distractor", "long")
REGISTERED = ("flat_one", "subscripts", "long_prefix")
# What averaging `[` signals over the context predicts, per attack and depth: "drop" (accuracy falls by >= 0.1)
# or "none" (|change| <= 0.05). Closed brackets before the list add `[` to the average, so a depth-1 list looks
# deeper (depth-1 prompts fail; depth-2 ones, already deep, do not); bracket-free tokens dilute the average, so a
# depth-2 list looks shallower (depth-2 prompts fail; depth-1 ones do not).
AVERAGING_PREDICTS = {
    "flat": {1: "drop", 2: "none"}, "distractor": {1: "drop", 2: "none"}, "long": {1: "none", 2: "drop"},
    "flat_one": {1: "drop", 2: "none"}, "subscripts": {1: "drop", 2: "none"}, "long_prefix": {1: "none", 2: "drop"},
}


def bracket_prompt(rng: random.Random, depth: int, n_items: int, n_groups: int = 1, before: list[str] = ()) -> str:
    """A function whose last line opens a list of `depth` 1 (`n_items` elements) or 2 (`n_groups` groups of
    `n_items`), after filler and the lines `before`."""
    if depth not in (1, 2):
        raise ValueError(f"depth must be 1 or 2, got {depth}")
    ctx = _filler(rng, "    ", rng.randint(0, 3)) + list(before)
    if depth == 1:
        body = "[" + ", ".join(_elems(rng, n_items))
    else:
        body = "[[" + "], [".join(", ".join(_elems(rng, n_items)) for _ in range(n_groups))
    return "\n".join([_header(rng), *ctx, f"    {rng.choice(NAMES)} = {body}"])


def _example(prompt: str, depth: int) -> Example:
    correct, wrong = ("]", "]]") if depth == 1 else ("]]", "]")
    return Example(prompt, correct, wrong, depth - 1, "bracket_counting")


def bracket_attack_examples(kind: str, n: int = 200, seed: int = 123) -> list[Example]:
    """n held-out bracket prompts (half depth 1, half depth 2) of one kind:
    'normal' as the task; 'flat' three closed flat lists before the list; 'distractor' one closed nested list
    `[[..], [..]]` before it (our tokenizer makes `[[` one token, so this is the distractor that carries a
    depth-2 signal); 'long' 20-30 elements at depth 1, 4-6 groups of 4-6 at depth 2. Registered before measuring:
    'flat_one' one closed flat list before the list; 'subscripts' three lines that index (`a = b[i]`: closed
    brackets that are not list literals); 'long_prefix' 8-12 bracket-free filler lines before the list."""
    if kind not in ATTACKS:
        raise ValueError(f"unknown attack {kind!r}; valid: {', '.join(ATTACKS)}")
    rng = random.Random(f"bracket-attack/{kind}/{seed}")
    out: list[Example] = []
    while len(out) < n:
        depth = 1 + len(out) % 2
        before = []
        if kind == "flat":
            before = [f"    {rng.choice(NAMES)} = [{', '.join(_elems(rng, rng.randint(1, 3)))}]" for _ in range(3)]
        elif kind == "distractor":
            before = [f"    {rng.choice(NAMES)} = [[{', '.join(_elems(rng, 2))}], [{', '.join(_elems(rng, 2))}]]"]
        elif kind == "flat_one":
            before = [f"    {rng.choice(NAMES)} = [{', '.join(_elems(rng, rng.randint(1, 3)))}]"]
        elif kind == "subscripts":
            before = [f"    {a} = {b}[{rng.randrange(4)}]" for a, b in (rng.sample(NAMES, 2) for _ in range(3))]
        elif kind == "long_prefix":
            before = _filler(rng, "    ", rng.randint(8, 12))
        if kind == "long":
            items, groups = (rng.randint(20, 30), 1) if depth == 1 else (rng.randint(4, 6), rng.randint(4, 6))
        else:
            items, groups = (rng.randint(1, 6), 1) if depth == 1 else (rng.randint(1, 3), rng.randint(1, 3))
        prompt = bracket_prompt(rng, depth, items, groups, before)
        if is_test(prompt):
            out.append(_example(prompt, depth))
    return out


def bracket_length_sweep(lengths: list[int], n: int = 40, seed: int = 0) -> dict[int, list[Example]]:
    """{length: n held-out depth-1 prompts whose open list has exactly `length` elements}."""
    out = {}
    for length in lengths:
        rng = random.Random(f"bracket-sweep/{length}/{seed}")
        exs: list[Example] = []
        while len(exs) < n:
            prompt = bracket_prompt(rng, 1, length)
            if is_test(prompt):
                exs.append(_example(prompt, 1))
        out[length] = exs
    return out
