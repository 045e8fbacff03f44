import re

import pytest
import torch

from circuitbook.data.corpus import CorpusConfig, build_corpus
from circuitbook.data.tasks import TASKS, TaskBatch, is_test, logit_diff, sample_examples, task_loss
from circuitbook.data.tokenizer import TASK_TOKENS, train_tokenizer


@pytest.fixture(scope="module")
def tok():
    corpus = build_corpus(CorpusConfig(max_files=20, n_snippets=2000))
    return train_tokenizer([corpus["train"]], 2048), corpus


@pytest.mark.parametrize("task", TASKS)
def test_train_and_test_prompts_are_disjoint_and_balanced(task):
    tr = sample_examples(task, "train", 300, 0)
    te = sample_examples(task, "test", 300, 0)
    assert not {e.prompt for e in tr} & {e.prompt for e in te}
    assert all(is_test(e.prompt) for e in te) and not any(is_test(e.prompt) for e in tr)
    assert sum(e.label for e in te) == 150
    assert sample_examples(task, "test", 20, 0) == te[:20] or len({e.prompt for e in te}) == 300


def test_corpus_never_contains_a_test_prompt(tok):
    _, corpus = tok
    for task in TASKS:
        for e in sample_examples(task, "test", 200, 0):
            assert e.prompt + e.correct not in corpus["train"]


@pytest.mark.parametrize("task", TASKS)
def test_targets_are_single_tokens_that_continue_the_prompt(tok, task):
    t, _ = tok
    for e in sample_examples(task, "test", 50, 1):
        c = t.single_token(e.correct)
        t.single_token(e.wrong)
        # the prompt's tokens followed by the target token are how the full text tokenizes
        assert t.encode(e.prompt + e.correct + "\n")[: len(t.encode(e.prompt)) + 1] == t.encode(e.prompt) + [c]
    assert all(len(t.encode(x)) == 1 for x in TASK_TOKENS)


def test_task_loss_is_binary_cross_entropy_over_two_tokens():
    logits = torch.zeros(2, 3, 5)
    logits[0, 1, 2], logits[0, 1, 4] = 2.0, -1.0  # example 0 reads position 1
    logits[1, 2, 2], logits[1, 2, 4] = -3.0, 0.0
    b = TaskBatch(torch.zeros(2, 3, dtype=torch.long), torch.tensor([1, 2]), torch.tensor([2, 2]),
                  torch.tensor([4, 4]), torch.tensor([0, 1]))
    d = logit_diff(logits, b)
    assert torch.allclose(d, torch.tensor([3.0, -3.0]))
    expect = -(torch.sigmoid(torch.tensor(3.0)).log() + torch.sigmoid(torch.tensor(-3.0)).log()) / 2
    assert torch.allclose(task_loss(logits, b), expect)


def test_string_labels_mark_contents_openings_and_docstrings(tok):
    from circuitbook.data.strings import (
        IN_DOUBLE,
        IN_SINGLE,
        IN_TRIPLE,
        OPEN_DOUBLE,
        OPEN_SINGLE,
        OUTSIDE,
        string_literals,
        token_string_labels,
    )

    src = 'x = \'hello world\'\ny = "spam eggs"\ndef f():\n    """a doc string"""\n    return x\n'
    spans = string_literals(src)
    assert [(q, triple) for _, _, _, q, triple in spans] == [("'", False), ('"', False), ('"', True)]
    assert [src[cs:ce] for _, cs, ce, _, _ in spans] == ["hello world", "spam eggs", "a doc string"]
    ids, lab = token_string_labels(src, tok[0])
    enc = tok[0].tok.encode(src)
    text_of = {int(k): "".join(src[a:b] for (a, b), lk in zip(enc.offsets, lab) if lk == k) for k in set(lab)}
    assert "hello" in text_of[IN_SINGLE] and "spam" not in text_of[IN_SINGLE]
    assert "spam" in text_of[IN_DOUBLE] and "hello" not in text_of[IN_DOUBLE]
    assert "doc" in text_of[IN_TRIPLE] and "doc" not in text_of[IN_DOUBLE]
    assert "'" in text_of[OPEN_SINGLE] and '"' in text_of[OPEN_DOUBLE]
    assert "return" in text_of[OUTSIDE] and "hello" not in text_of[OUTSIDE]
    assert len(ids) == len(lab)


def test_bracket_attacks_are_held_out_balanced_and_do_what_they_say(tok):
    from circuitbook.data.attacks import bracket_attack_examples, bracket_length_sweep

    for kind in ("normal", "flat", "distractor", "long"):
        exs = bracket_attack_examples(kind, n=20)
        assert all(is_test(e.prompt) for e in exs) and sum(e.label for e in exs) == 10
        for e in exs:
            last = e.prompt.splitlines()[-1]
            depth = 1 + e.label
            assert last.count("[") - last.count("]") == depth and e.correct == "]" * depth
            earlier = "\n".join(e.prompt.splitlines()[:-1])
            assert ("[[" in earlier) == (kind == "distractor")
            if kind == "long" and depth == 1:
                assert last.count(",") >= 19
    from circuitbook.data.attacks import ATTACKS, AVERAGING_PREDICTS, FOUND_AFTER_THE_FACT, REGISTERED

    assert set(AVERAGING_PREDICTS) == set(ATTACKS) - {"normal"} == set(FOUND_AFTER_THE_FACT) | set(REGISTERED)
    for kind in REGISTERED:  # the attacks written before they were measured
        exs = bracket_attack_examples(kind, n=20)
        assert all(is_test(e.prompt) for e in exs) and sum(e.label for e in exs) == 10
        for e in exs:
            lines = e.prompt.splitlines()
            assert lines[-1].count("[") - lines[-1].count("]") == 1 + e.label
            earlier = "\n".join(lines[1:-1])
            assert earlier.count("[") == earlier.count("]") and "[[" not in earlier  # every earlier bracket closed
            if kind == "long_prefix":
                assert "[" not in earlier and len(lines) >= 10
            if kind == "subscripts":
                assert sum(bool(re.search(r"= \w+\[\d\]$", ln)) for ln in lines) == 3
            if kind == "flat_one":
                assert sum(bool(re.search(r"= \[[^\[\]]*\]$", ln)) for ln in lines) == 1
    sweep = bracket_length_sweep([3, 25], n=5)
    assert all(e.prompt.splitlines()[-1].count(",") == 24 for e in sweep[25])
    with pytest.raises(ValueError, match="valid"):
        bracket_attack_examples("nonsense")


def test_last_occurrence_finds_the_opening_quote():
    from circuitbook.data.tasks import last_occurrence

    b = TaskBatch(tokens=torch.tensor([[5, 7, 1, 7, 2], [7, 3, 3, 0, 0], [1, 1, 1, 1, 7]]),
                  last=torch.tensor([4, 2, 3]), correct=torch.zeros(3), wrong=torch.zeros(3), labels=torch.zeros(3))
    assert last_occurrence(b, [7]).tolist() == [3, 0, -1]


def test_task_batch_rows_and_device():
    b = TaskBatch(tokens=torch.arange(12).view(4, 3), last=torch.tensor([0, 1, 2, 1]),
                  correct=torch.tensor([5, 6, 7, 8]), wrong=torch.tensor([9, 10, 11, 12]),
                  labels=torch.tensor([0, 1, 0, 1]))
    for idx in (slice(1, 3), torch.tensor([3, 0]), b.labels == 1):
        sub = b[idx]
        assert isinstance(sub, TaskBatch)
        for f in ("tokens", "last", "correct", "wrong", "labels"):
            assert torch.equal(getattr(sub, f), getattr(b, f)[idx])
    assert b[b.labels == 1].labels.tolist() == [1, 1] and b[:0].tokens.shape == (0, 3)
    moved = b.to("cpu")
    assert moved is not b and all(torch.equal(getattr(moved, f), getattr(b, f)) for f in ("tokens", "labels"))
    assert moved.to(torch.device("cpu")).tokens.device.type == "cpu"
