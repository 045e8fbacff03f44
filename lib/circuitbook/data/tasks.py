"""Binary next-token contrast tasks on Python code (the sparse-circuits paper's task style).

Each example is a prompt and two candidate next tokens, `correct` and `wrong`. The
task loss is binary cross-entropy over just those two logits at the last position.
Prompts are split into train and test by a hash of their text, so the test prompts
never occur in the training corpus (which embeds train-split examples only).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

TASKS = ("single_double_quote", "bracket_counting", "set_or_string", "while_return_true")

WORDS = (
    "alpha beta gamma delta value result error warning hello world spam eggs name path file data item "
    "index count total buffer token parse check load save open close read write start stop begin end "
    "left right upper lower first last next prev node tree leaf root key cache query table row column "
    "field record entry header footer body title label message reason detail status state mode level"
).split()
NAMES = (
    "x y z a b n i j k val obj res out tmp acc num size width height offset limit step part chunk "
    "block line text word char flag done ok found seen args opts conf info meta"
).split()
FUNCS = "run main process handle build update compute parse render apply visit walk scan merge split".split()


@dataclass(frozen=True)
class Example:
    prompt: str
    correct: str  # the correct next token's text
    wrong: str  # the contrasting token's text
    label: int  # which class (0 or 1) the example belongs to, e.g. 0 = single quote
    task: str


def is_test(prompt: str) -> bool:
    """The split rule: a quarter of all possible prompts belong to the test set."""
    return hashlib.sha1(prompt.encode()).digest()[0] % 4 == 0


# ---------------------------------------------------------------- context lines


def _filler(rng: random.Random, indent: str, n: int, quotes: bool = True) -> list[str]:
    """n neutral statements (no brackets, no `current`); with `quotes`, some closed strings."""
    lines = []
    for _ in range(n):
        a, b = rng.sample(NAMES, 2)
        kind = rng.randrange(6 if quotes else 4)
        if kind == 0:
            lines.append(f"{indent}{a} = {b} + {rng.randrange(1, 100)}")
        elif kind == 1:
            lines.append(f"{indent}{a} = {rng.choice(FUNCS)}({b})")
        elif kind == 2:
            lines.append(f"{indent}if {a} > {b}:\n{indent}    {a} = {b}")
        elif kind == 3:
            lines.append(f"{indent}# {rng.choice(WORDS)} {rng.choice(WORDS)}")
        else:
            q = rng.choice("'\"")
            lines.append(f"{indent}{a} = {q}{' '.join(rng.sample(WORDS, rng.randint(1, 3)))}{q}")
    return lines


def _header(rng: random.Random) -> str:
    return f"def {rng.choice(FUNCS)}_{rng.choice(WORDS)}({', '.join(rng.sample(NAMES, rng.randint(0, 3)))}):"


def _elems(rng: random.Random, n: int) -> list[str]:
    if rng.random() < 0.5:
        return [str(rng.randrange(100)) for _ in range(n)]
    return rng.sample(NAMES, n)


# ---------------------------------------------------------------- the four tasks


def _quote(rng: random.Random) -> tuple[str, str, str, int, str]:
    label = rng.randrange(2)
    q, other = ("'", '"') if label == 0 else ('"', "'")
    ind = "    "
    ctx = _filler(rng, ind, rng.randint(0, 3))
    words = " ".join(rng.sample(WORDS, rng.randint(1, 4)))
    lead = rng.choice([f"{rng.choice(NAMES)} = ", "return ", f"{rng.choice(NAMES)} += ", "yield "])
    prompt = "\n".join([_header(rng), *ctx, f"{ind}{lead}{q}{words}"])
    return prompt, q, other, label, "\n"


def _bracket(rng: random.Random) -> tuple[str, str, str, int, str]:
    label = rng.randrange(2)  # 0: depth 1 -> "]", 1: depth 2 -> "]]"
    ind = "    "
    ctx = _filler(rng, ind, rng.randint(0, 3))
    if label == 0:
        body = "[" + ", ".join(_elems(rng, rng.randint(1, 6)))
    else:
        groups = [", ".join(_elems(rng, rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]
        body = "[[" + "], [".join(groups)
    prompt = "\n".join([_header(rng), *ctx, f"{ind}{rng.choice(NAMES)} = {body}"])
    correct, wrong = ("]", "]]") if label == 0 else ("]]", "]")
    return prompt, correct, wrong, label, "\n"


def _set_or_string(rng: random.Random) -> tuple[str, str, str, int, str]:
    label = rng.randrange(2)  # 0: set() -> ".", 1: "" -> " +="
    ind = "    "
    init = "set()" if label == 0 else rng.choice(['""', "''"])
    it, seq = rng.sample(NAMES, 2)
    lines = [_header(rng), f"{ind}current = {init}", *_filler(rng, ind, rng.randint(0, 2), quotes=False)]
    lines += [f"{ind}for {it} in {seq}:", *_filler(rng, ind * 2, rng.randint(0, 2), quotes=False)]
    prompt = "\n".join([*lines, f"{ind * 2}current"])
    correct, wrong = (".", " +=") if label == 0 else (" +=", ".")
    rest = f"add({it})\n" if label == 0 else f" str({it})\n"
    return prompt, correct, wrong, label, rest


def _while_return(rng: random.Random) -> tuple[str, str, str, int, str]:
    label = rng.randrange(2)  # 0: while True -> ":", 1: return True -> newline
    ind = "    " * rng.randint(1, 2)
    ctx = _filler(rng, "    ", rng.randint(0, 3))
    if ind == "    " * 2:
        ctx.append(f"    if {rng.choice(NAMES)}:")
    kw = "while" if label == 0 else "return"
    prompt = "\n".join([_header(rng), *ctx, f"{ind}{kw} True"])
    correct, wrong = (":", "\n") if label == 0 else ("\n", ":")
    rest = f"\n{ind}    {rng.choice(NAMES)} = {rng.choice(FUNCS)}()\n" if label == 0 else ""
    return prompt, correct, wrong, label, rest


GENERATORS: dict[str, Callable[[random.Random], tuple[str, str, str, int, str]]] = {
    "single_double_quote": _quote,
    "bracket_counting": _bracket,
    "set_or_string": _set_or_string,
    "while_return_true": _while_return,
}


def _check_task(task: str) -> None:
    if task not in GENERATORS:
        raise ValueError(f"unknown task {task!r}; valid tasks are: {', '.join(TASKS)}")


def sample_examples(task: str, split: str, n: int, seed: int, balanced: bool = True) -> list[Example]:
    """n distinct examples of `task` from `split` ("train" or "test"), deterministic in `seed`."""
    _check_task(task)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = random.Random(f"{task}/{split}/{seed}")
    out, seen, per_label = [], set(), [0, 0]
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise RuntimeError(f"could not draw {n} distinct {split} examples of {task}")
        prompt, correct, wrong, label, _ = GENERATORS[task](rng)
        if prompt in seen or is_test(prompt) != (split == "test"):
            continue
        if balanced and per_label[label] >= (n + 1) // 2:
            continue
        seen.add(prompt)
        per_label[label] += 1
        out.append(Example(prompt, correct, wrong, label, task))
    return out


def corpus_snippet(rng: random.Random) -> str:
    """One train-split task example written out in full (prompt + answer + continuation), for the corpus."""
    while True:
        task = rng.choice(TASKS)
        prompt, correct, _, _, rest = GENERATORS[task](rng)
        if not is_test(prompt):
            return prompt + correct + rest


# ---------------------------------------------------------------- tokens, loss, accuracy


@dataclass
class TaskBatch:
    tokens: torch.Tensor  # [batch, pos] right-padded prompts (causal attention: padding never affects them)
    last: torch.Tensor  # [batch] index of each prompt's last token, where the prediction is read
    correct: torch.Tensor  # [batch] token id
    wrong: torch.Tensor  # [batch] token id
    labels: torch.Tensor  # [batch]

    def __getitem__(self, idx) -> TaskBatch:
        """The prompts `idx` (a slice, an index tensor or a bool mask [batch]) of every field."""
        return TaskBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def encode_examples(examples: list[Example], tokenizer, pad_id: int | None = None) -> TaskBatch:
    """Tokenize prompts (right-padded) and the two single-token targets."""
    ids = [tokenizer.encode(e.prompt) for e in examples]
    correct = [tokenizer.single_token(e.correct) for e in examples]
    wrong = [tokenizer.single_token(e.wrong) for e in examples]
    T = max(len(x) for x in ids)
    pad = tokenizer.pad_id if pad_id is None else pad_id
    tokens = torch.full((len(ids), T), pad, dtype=torch.long)
    for i, x in enumerate(ids):
        tokens[i, : len(x)] = torch.tensor(x)
    return TaskBatch(
        tokens=tokens,
        last=torch.tensor([len(x) - 1 for x in ids]),
        correct=torch.tensor(correct),
        wrong=torch.tensor(wrong),
        labels=torch.tensor([e.label for e in examples]),
    )


def logit_diff(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """logits [batch, pos, vocab] -> correct minus wrong logit at the last position, [batch]."""
    last = logits[torch.arange(len(batch.last), device=logits.device), batch.last]  # [batch, vocab]
    return last.gather(-1, batch.correct[:, None])[:, 0] - last.gather(-1, batch.wrong[:, None])[:, 0]


def task_loss(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Binary cross-entropy over the two candidate tokens: mean of -log sigmoid(logit diff)."""
    return F.softplus(-logit_diff(logits, batch)).mean()


def task_accuracy(logits: torch.Tensor, batch: TaskBatch) -> float:
    return float((logit_diff(logits, batch) > 0).float().mean())


@torch.no_grad()
def logit_margins(model, batch: TaskBatch, chunk: int = 256) -> torch.Tensor:
    """Correct minus wrong logit at each prompt's last token, [n] on the CPU, computed in chunks."""
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    dev = params[0].device if params else batch.tokens.device
    diffs = []
    for i in range(0, len(batch.tokens), chunk):
        sub = batch[i : i + chunk].to(dev)
        diffs.append(logit_diff(model(sub.tokens), sub).cpu())
    return torch.cat(diffs)


def evaluate_task(model, batch: TaskBatch, chunk: int = 256) -> dict[str, float]:
    """Task loss and accuracy of `model` (tokens -> logits) on a TaskBatch (`logit_margins`)."""
    d = logit_margins(model, batch, chunk)
    return {"loss": float(F.softplus(-d).mean()), "acc": float((d > 0).float().mean())}


def last_occurrence(batch: TaskBatch, ids: list[int]) -> torch.Tensor:
    """[batch] position of the last token in `ids` at or before each prompt's `last` (-1 if there is none),
    e.g. the opening quote of a quote-task prompt."""
    T = batch.tokens.shape[1]
    hit = torch.isin(batch.tokens, torch.tensor(ids)) & (torch.arange(T)[None] <= batch.last[:, None])
    pos = torch.where(hit, torch.arange(T)[None], torch.full_like(batch.tokens, -1))
    return pos.max(dim=1).values
