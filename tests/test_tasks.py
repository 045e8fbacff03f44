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
