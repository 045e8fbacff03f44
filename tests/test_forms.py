"""Off-template task forms (data/forms.py) and the wild split (data/wild.py): valid single-token contrasts,
balanced, kept out of training, and the template's outputs unchanged."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from circuitbook import artifacts, zoo
from circuitbook.data import wild
from circuitbook.data.forms import FORMS, GROUPS, examples_sha256, sample_form_examples, valid_contrast
from circuitbook.data.tasks import TASKS, corpus_snippet, sample_examples

# sha256 of what the template generators drew before the forms existed: the frozen corpus, the trained models
# and every published claim depend on these staying byte-identical
TEMPLATE_SHA = {
    ("single_double_quote", "train"): "57ecfcd40acb8911c1855f9e5aec205dd96ff15710fda6c6c722f6e7962f8b0f",
    ("single_double_quote", "test"): "04a9296982dfc9989eb08dd3e10e4c527382f3ba54f439669bafbfead46db271",
    ("bracket_counting", "train"): "385af12e2259fe18b3916ba786e206f8f3474a1e654e379e2f15664424d48c39",
    ("bracket_counting", "test"): "6e3ff161b8d2f366d7f4e3388fe331d3458d296a54ac2f227b2b104e2ffb7981",
    ("set_or_string", "train"): "1060dddba13bf934e1e7aac91ea11a7deb5ff866064e7f1626196f1438194172",
    ("set_or_string", "test"): "0d516ca99e4ef36b03987b6a3019a38b57c5ec6c93aa429656b907eb20f28390",
    ("while_return_true", "train"): "8916ea50efe7042490d12466c28d6a5c1e6cd88e0157f9a48fd39c02688f530b",
    ("while_return_true", "test"): "6c9800290648f4717fdb18385462834ff9c9a83631e420e739623fd37177a592",
}
SNIPPETS_SHA = "7dcb1a12e2ac5191d12b344fc5de16dde5d2b6c9b00ae5f5fb1f4228aa29f1c4"  # 1000 corpus snippets, seed 0


def _sha(x) -> str:
    return hashlib.sha256(json.dumps(x).encode()).hexdigest()


@pytest.fixture(scope="module")
def tok():
    return zoo.tokenizer("full")


@pytest.mark.parametrize("task", TASKS)
def test_template_outputs_are_unchanged(task):
    for split in ("train", "test"):
        exs = sample_examples(task, split, 400, 0)
        assert _sha([[e.prompt, e.correct, e.wrong, e.label, e.task] for e in exs]) == TEMPLATE_SHA[task, split]


def test_corpus_snippets_are_unchanged():
    rng = random.Random("snippets/0")
    assert _sha([corpus_snippet(rng) for _ in range(1000)]) == SNIPPETS_SHA


@pytest.mark.parametrize("task", TASKS)
def test_forms_are_valid_balanced_contrasts_of_their_group(tok, task):
    drawn = {}
    for group in GROUPS:
        exs = sample_form_examples(task, group, 48, 0, tok)
        drawn[group] = exs
        assert len(exs) == 48 and sum(e.label for e in exs) == 24
        assert {e.form for e in exs} == set(FORMS[task][group])  # every form of the group, no other
        assert len({e.prompt for e in exs}) == 48
        for e in exs:
            c, w = tok.single_token(e.correct), tok.single_token(e.wrong)
            ids = tok.encode(e.prompt)
            assert tok.encode(e.prompt + e.correct) == ids + [c] and tok.encode(e.prompt + e.wrong) == ids + [w]
            assert len(ids) <= 128 and e.task == task and e.correct != e.wrong
        assert sample_form_examples(task, group, 48, 0, tok) == exs  # deterministic
        assert examples_sha256(sample_form_examples(task, group, 48, 1, tok)) != examples_sha256(exs)
    assert not set(FORMS[task]["pruning"]) & set(FORMS[task]["heldout"])  # different forms, not samples
    assert not {e.prompt for e in drawn["pruning"]} & {e.prompt for e in drawn["heldout"]}


def test_quote_forms_use_merged_closing_tokens(tok):
    answers = {e.correct for g in GROUPS for e in sample_form_examples("single_double_quote", g, 96, 0, tok)}
    assert {'")', "')", '":', "':", '",', "',"} <= answers and {'".', "'."} <= answers


def test_forms_never_enter_the_training_corpus(tok):
    rng = random.Random("snippets/0")
    corpus = "\n".join(corpus_snippet(rng) for _ in range(3000))
    for task in TASKS:
        for group in GROUPS:
            for e in sample_form_examples(task, group, 40, 0, tok):
                assert e.prompt + e.correct not in corpus


def test_valid_contrast_rejects_merges(tok):
    assert valid_contrast(tok, 'f(x, "abc', '")', "')")
    assert not valid_contrast(tok, 'x = "abc.', '"', "'")  # `."` is one token: the prompt's `.` merges
    assert not valid_contrast(tok, "x = [a, b", "]),", "]])")  # not single tokens


def test_tokens_never_straddle_a_newline(tok):
    """mine_file checks a contrast on the prompt's last line only: the rest of the prompt tokenizes apart."""
    rng = random.Random(0)
    for e in sample_examples("single_double_quote", "test", 20, 0):
        lines = e.prompt.split("\n")
        cut = rng.randrange(1, len(lines))
        head, tail = "\n".join(lines[:cut]) + "\n", "\n".join(lines[cut:])
        assert tok.encode(head + tail) == tok.encode(head) + tok.encode(tail)


def test_candidates_and_the_boundary_rule(tok):
    src = ('x = f("abc")\n'                # quote merged with `)`: ")
           "y = 'end.'\n"                  # `.'` merges across the quote: no token starts there, skipped
           "z = [[1, 2], [3, 4]]\n"        # list, label 1 at the first `]` of `]]`
           "w: Dict[str, List[int]] = {}\n"  # subscripts: `]]` label 1
           "v = [a, b]\n"                  # label 0
           "def g():\n"
           "    while True:\n"
           "        return True\n")
    found = {(t, lab, kind, row) for t, lab, kind, row, _, _ in wild.candidates(src)}
    assert ("single_double_quote", 1, "", 1) in found and ("single_double_quote", 0, "", 2) in found
    assert ("bracket_counting", 1, "list", 3) in found and ("bracket_counting", 1, "subscript", 4) in found
    assert ("bracket_counting", 0, "list", 5) in found
    assert ("while_return_true", 0, "", 7) in found and ("while_return_true", 1, "", 8) in found
    mined = {(e.task, e.line): e for e in wild.mine_file("t.py", src, tok)}
    assert mined["single_double_quote", 1].correct == '")' and mined["single_double_quote", 1].wrong == "')"
    assert ("single_double_quote", 2) not in mined
    assert mined["single_double_quote", 1].prompt == 'x = f("abc'
    assert mined["while_return_true", 8].prompt.endswith("    while True:\n        return True")
    assert (mined["while_return_true", 8].correct, mined["while_return_true", 8].wrong) == ("\n", ":")
    assert mined["bracket_counting", 5].correct == "]" and mined["bracket_counting", 5].wrong == "]]"


def test_seen_in_the_standard_library():
    follow = wild._follow([("a.py", "def f():\n    x = 1\n    return True\n")])
    stdlib = "def f():\n    x = 1\n    return True\n"
    assert wild.seen_in("def f():\n    x = 1\n    return True", "\n", follow, stdlib)
    assert not wild.seen_in("def g():\n    x = 1\n    return True", "\n", follow, stdlib)
    assert wild.seen_in("q = 0\ndef f():\n    x = 1\n    return", " True", follow, stdlib)


def test_shipped_wild_prompts(tok):
    doc = wild.wild_document()
    exs = wild.load_wild()
    assert set(exs) == set(wild.WILD_TASKS)
    meta = json.loads(wild.WILD.with_name("wild_prompts.json").read_text())
    assert meta["parents"] == artifacts.parent_digests([artifacts.artifact_path("tokenizer", "full")])
    for e in exs.values():
        assert len(e) >= 200 and sum(x.label for x in e) * 2 == len(e)  # balanced
        for x in e[::7]:
            assert valid_contrast(tok, x.prompt, x.correct, x.wrong) and len(tok.encode(x.prompt)) <= wild.MAX_TOKENS
            assert x.source.split("/")[0] in {p for s in wild.SOURCES for p in s.packages}
    for s in doc["sources"]:
        assert s["licence"] == "MIT" and any("MIT" in n or "Permission is hereby granted" in n
                                             for n in s["notices"].values())
    ws = zoo.wild_sets("full", tok)  # at full every shipped prompt is used as shipped
    assert ws.dropped == {t: 0 for t in wild.WILD_TASKS} and ws.file_sha256 == meta["sha256"]
    assert {t: len(b.labels) for t, b in ws.test.items()} == meta["n"]


def test_form_sets_hold_both_groups(tok):
    fs = zoo.form_sets("full", tok)
    for g in GROUPS:
        assert set(getattr(fs, g)) == set(TASKS) and all(len(b.labels) == 400 for b in getattr(fs, g).values())
        assert fs.sha256[g] == {t: examples_sha256(e) for t, e in fs.examples[g].items()}
