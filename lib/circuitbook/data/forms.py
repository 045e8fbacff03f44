"""The contrast tasks in forms real code uses, off the training template, in two named groups.

`tasks.py` draws each task from one template (a function, filler lines, the answer at a line end), and
the training corpus embeds that template. The generators here write the same contrasts in other forms:
a closing quote merged with the punctuation after it (`")` against its twin `')`), strings as call
arguments, dict keys and comparison operands, several strings on a line; string and set accumulators at
module level and in nested blocks; lists in calls and returns, nested in ways the tokenizer does not merge;
`while True` and `return True` in other blocks. The forms come in two groups of *different* forms:

- **pruning** forms, for finding circuits (a circuit may be fitted on them);
- **held-out** forms, used only to measure (nothing is ever fitted or selected on them).

Neither group enters the training corpus (`corpus_snippet` draws from `tasks.GENERATORS` only), and
nothing here changes what `tasks.py` draws. Every example is a valid single-token contrast under the
tokenizer it is drawn for (`valid_contrast`): `correct` and `wrong` are one token each, and the prompt's
tokens followed by either are how the prompt plus that text tokenizes (the prompt's last token does not
merge with the answer). Labels follow `tasks.py`: quote 0 = `'`, bracket 0 = `]`, set-or-string 0 =
`set()` (`.`), while/return 0 = `while True` (`:`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from circuitbook.data.tasks import (
    FUNCS,
    NAMES,
    WORDS,
    Example,
    _check_task,
    _elems,
    _filler,
    _header,
)

GROUPS = ("pruning", "heldout")


@dataclass(frozen=True)
class FormExample(Example):
    form: str = ""  # the generator (form) it was drawn from


# ---------------------------------------------------------------- the contrast rule


def valid_contrast(tokenizer, prompt: str, correct: str, wrong: str) -> bool:
    """`correct` and `wrong` are one token each, and each appends to the prompt's tokens unmerged:
    encode(prompt + answer) == encode(prompt) + [answer]."""
    ids = tokenizer.encode(prompt)
    for ans in (correct, wrong):
        a = tokenizer.encode(ans)
        if len(a) != 1 or tokenizer.encode(prompt + ans) != ids + a:
            return False
    return True


def examples_sha256(examples: list[Example]) -> str:
    """sha256 of a prompt set (prompt, correct, wrong, label of each example, in order): the set's fingerprint."""
    rows = [[e.prompt, e.correct, e.wrong, e.label] for e in examples]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


# ---------------------------------------------------------------- shared pieces

Form = Callable[[random.Random, int], tuple[str, str, str]]  # (rng, label) -> (prompt, correct, wrong)
IND = "    "


def _quotes(label: int) -> tuple[str, str]:
    return ("'", '"') if label == 0 else ('"', "'")


def _text(rng: random.Random) -> str:
    """String contents that end in a letter or digit (so the closing quote starts a new pre-token)."""
    ws = rng.sample(WORDS, rng.randint(1, 3))
    sep = rng.choice([" ", " ", "_", "-", ".", "/"])
    return sep.join(ws) if rng.random() < 0.8 else f"{sep.join(ws)}{rng.randrange(10)}"


def _cap(word: str) -> str:
    return word[0].upper() + word[1:]


def _block(rng: random.Random, quotes: bool = True) -> tuple[list[str], str]:
    """Lines that open the block the answer line sits in, and that line's indent: a function (the template's
    context), module level, a method, a for loop, or a with block; a few filler lines each."""
    kind = rng.randrange(5)
    if kind == 0:
        return [_header(rng), *_filler(rng, IND, rng.randint(0, 3), quotes)], IND
    if kind == 1:
        return _filler(rng, "", rng.randint(0, 3), quotes), ""
    if kind == 2:
        head = [f"class {_cap(rng.choice(WORDS))}:", f"{IND}def {rng.choice(FUNCS)}(self, {rng.choice(NAMES)}):"]
        return [*head, *_filler(rng, IND * 2, rng.randint(0, 3), quotes)], IND * 2
    a, b = rng.sample(NAMES, 2)
    opener = f"{IND}for {a} in {b}:" if kind == 3 else f"{IND}with open({a}) as {b}:"
    return [_header(rng), *_filler(rng, IND, rng.randint(0, 2), quotes), opener,
            *_filler(rng, IND * 2, rng.randint(0, 2), quotes)], IND * 2


def _join(lines: list[str], last: str) -> str:
    return "\n".join([*lines, last])


# ---------------------------------------------------------------- single_double_quote


def _q_call_argument(rng, label):  # f(x, "text   -> ")
    q, o = _quotes(label)
    lines, ind = _block(rng)
    args = rng.choice(["", f"{rng.choice(NAMES)}, ", f"{rng.choice(NAMES)}, {rng.randrange(100)}, "])
    lead = rng.choice([f"{rng.choice(NAMES)} = ", "", "return "])
    return _join(lines, f"{ind}{lead}{rng.choice(FUNCS)}({args}{q}{_text(rng)}"), f"{q})", f"{o})"


def _q_argument_before_comma(rng, label):  # f("text   -> ",   (more arguments follow)
    q, o = _quotes(label)
    lines, ind = _block(rng)
    obj = rng.choice(["", f"{rng.choice(NAMES)}.", "self."])
    return _join(lines, f"{ind}{obj}{rng.choice(FUNCS)}({q}{_text(rng)}"), f"{q},", f"{o},"


def _q_dict_key(rng, label):  # {"a": 1, "key   -> ":
    q, o = _quotes(label)
    lines, ind = _block(rng)
    pairs = [f"{q}{rng.choice(WORDS)}{q}: {v}" for v in _elems(rng, rng.randint(0, 2))]
    body = "{" + "".join(p + ", " for p in pairs) + q + rng.choice(WORDS)
    return _join(lines, f"{ind}{rng.choice(NAMES)} = {body}"), f"{q}:", f"{o}:"


def _q_several_strings(rng, label):  # x = "a" + "b   -> "    or    ["a", "b   -> ",
    q, o = _quotes(label)
    lines, ind = _block(rng)
    a, b = rng.sample(NAMES, 2)
    strs = [f"{q}{_text(rng)}{q}" for _ in range(rng.randint(1, 2))]
    kind = rng.randrange(3)
    if kind == 0:
        return _join(lines, f"{ind}{a} = {' + '.join(strs)} + {q}{_text(rng)}"), q, o
    if kind == 1:
        return _join(lines, f"{ind}{a}, {b} = {strs[0]}, {q}{_text(rng)}"), q, o
    return _join(lines, f"{ind}{a} = [{', '.join(strs)}, {q}{_text(rng)}"), f"{q},", f"{o},"


def _q_comparison(rng, label):  # if x == "text   -> ":     or    y = x != "text   -> "
    q, o = _quotes(label)
    lines, ind = _block(rng)
    a, b = rng.sample(NAMES, 2)
    op = rng.choice(["==", "!=", "=="])
    if rng.random() < 0.7:
        kw = rng.choice(["if", "while", "if not"])
        return _join(lines, f"{ind}{kw} {a} {op} {q}{_text(rng)}"), f"{q}:", f"{o}:"
    return _join(lines, f"{ind}{b} = {a} {op} {q}{_text(rng)}"), q, o


def _q_method_on_literal(rng, label):  # ", ".join(...) style: x = "text   -> ".
    q, o = _quotes(label)
    lines, ind = _block(rng)
    lead = rng.choice([f"{rng.choice(NAMES)} = ", "return ", f"{rng.choice(FUNCS)}(", f"{rng.choice(NAMES)} += "])
    return _join(lines, f"{ind}{lead}{q}{_text(rng)}"), f"{q}.", f"{o}."


def _q_mixed_quotes(rng, label):  # f('a', "b   -> ")   several strings, the other quote first
    q, o = _quotes(label)
    lines, ind = _block(rng)
    a = rng.choice(NAMES)
    first = f"{o}{_text(rng)}{o}"
    kind = rng.randrange(3)
    if kind == 0:
        return _join(lines, f"{ind}{rng.choice(FUNCS)}({first}, {q}{_text(rng)}"), f"{q})", f"{o})"
    if kind == 1:
        return _join(lines, f"{ind}{a} = {first} + {q}{_text(rng)}"), q, o
    b = rng.choice(NAMES)
    return _join(lines, f"{ind}if {a} == {first} or {b} == {q}{_text(rng)}"), f"{q}:", f"{o}:"


def _q_keyword_argument(rng, label):  # f(x, key="text   -> )     (the opening quote is in the `="` token)
    q, o = _quotes(label)
    lines, ind = _block(rng)
    args = rng.choice(["", f"{rng.choice(NAMES)}, "])
    close, other = (f"{q})", f"{o})") if rng.random() < 0.6 else (f"{q},", f"{o},")
    return (_join(lines, f"{ind}{rng.choice(FUNCS)}({args}{rng.choice(WORDS)}={q}{_text(rng)}"), close, other)


# ---------------------------------------------------------------- bracket_counting


def _list(rng: random.Random, label: int) -> str:
    """A list literal left open: depth 1 (label 0) or depth 2 opened as `[[` (label 1), as in the template."""
    if label == 0:
        return "[" + ", ".join(_elems(rng, rng.randint(1, 6)))
    return "[[" + "], [".join(", ".join(_elems(rng, rng.randint(1, 3))) for _ in range(rng.randint(1, 3)))


def _b_answer(label: int) -> tuple[str, str]:
    return ("]", "]]") if label == 0 else ("]]", "]")


def _b_return(rng, label):  # return [a, b   -> ]
    lines = [_header(rng), *_filler(rng, IND, rng.randint(0, 3))]
    return _join(lines, f"{IND}return {_list(rng, label)}"), *_b_answer(label)


def _b_call_argument(rng, label):  # y = f([a, b   -> ]      y = f(x, [[a], [b   -> ]]
    lines, ind = _block(rng)
    pre = rng.choice(["", f"{rng.choice(NAMES)}, "])
    leads = [f"{rng.choice(NAMES)} = ", "", "return "] if ind else [f"{rng.choice(NAMES)} = ", ""]
    lead = rng.choice(leads)
    return _join(lines, f"{ind}{lead}{rng.choice(FUNCS)}({pre}{_list(rng, label)}"), *_b_answer(label)


def _b_module_assign(rng, label):  # module level or class attribute: NAMES = [a, b   -> ]
    if rng.random() < 0.5:
        lines, ind = _filler(rng, "", rng.randint(0, 3)), ""
    else:
        lines, ind = [f"class {_cap(rng.choice(WORDS))}:", *_filler(rng, IND, rng.randint(0, 2))], IND
    name = rng.choice(WORDS).upper() if not ind or rng.random() < 0.5 else rng.choice(NAMES)
    return _join(lines, f"{ind}{name} = {_list(rng, label)}"), *_b_answer(label)


def _b_mixed_nesting(rng, label):  # [[a, b], c   -> ]   (closed inner list)    [a, [b, c   -> ]]   (unmerged `[`)
    lines, ind = _block(rng)
    inner = "[" + ", ".join(_elems(rng, rng.randint(1, 3)))
    if label == 0:
        body = "[" + inner + "], " + ", ".join(_elems(rng, rng.randint(1, 3)))
    else:
        body = "[" + ", ".join(_elems(rng, rng.randint(1, 3))) + ", " + inner
    return _join(lines, f"{ind}{rng.choice(NAMES)} = {body}"), *_b_answer(label)


def _b_loop_or_test(rng, label):  # for x in [a, b   -> ]      if x in [[a], [b   -> ]]
    lines, ind = _block(rng)
    kw = rng.choice(["for {a} in", "if {a} in", "if {a} not in", "while {a} in"]).format(a=rng.choice(NAMES))
    return _join(lines, f"{ind}{kw} {_list(rng, label)}"), *_b_answer(label)


def _b_comprehension(rng, label):  # [x for x in y   -> ]      [x for x in [a, b   -> ]]
    lines, ind = _block(rng)
    a, b, c = rng.sample(NAMES, 3)
    expr = rng.choice([a, f"{a} + 1", f"{rng.choice(FUNCS)}({a})", f"{a}.{rng.choice(WORDS)}"])
    src = rng.choice([b, f"{rng.choice(FUNCS)}({b})", f"range({rng.randrange(2, 50)})"]) if label == 0 else (
        "[" + ", ".join(_elems(rng, rng.randint(1, 4))))
    cond = f" if {a} > {rng.randrange(10)}" if label == 0 and rng.random() < 0.3 else ""
    return _join(lines, f"{ind}{c} = [{expr} for {a} in {src}{cond}"), *_b_answer(label)


def _b_dict_value(rng, label):  # d = {"key": [a, b   -> ]
    lines, ind = _block(rng)
    q = rng.choice("'\"")
    pre = rng.choice(["", f"{q}{rng.choice(WORDS)}{q}: {rng.randrange(100)}, "])
    key = rng.choice([f"{q}{rng.choice(WORDS)}{q}", rng.choice(NAMES)])
    return _join(lines, f"{ind}{rng.choice(NAMES)} = {{{pre}{key}: {_list(rng, label)}"), *_b_answer(label)


# ---------------------------------------------------------------- set_or_string


def _s_init(rng: random.Random, label: int) -> str:
    return "set()" if label == 0 else rng.choice(['""', "''"])


def _s_answer(label: int) -> tuple[str, str]:
    return (".", " +=") if label == 0 else (" +=", ".")


def _s_loop(rng: random.Random, ind: str, label: int, head: list[str], init_extra: list[str] = ()) -> str:
    """`current = <init>` at `ind` after `head`, a for loop, `current` in its body."""
    it, seq = rng.sample(NAMES, 2)
    lines = [*head, f"{ind}current = {_s_init(rng, label)}", *init_extra,
             *_filler(rng, ind, rng.randint(0, 2), quotes=False), f"{ind}for {it} in {seq}:",
             *_filler(rng, ind + IND, rng.randint(0, 2), quotes=False)]
    return _join(lines, f"{ind}{IND}current")


def _s_module_level(rng, label):  # no function: the accumulator and its loop at column 0
    return _s_loop(rng, "", label, _filler(rng, "", rng.randint(0, 2), quotes=False)), *_s_answer(label)


def _s_class_method(rng, label):
    head = [f"class {_cap(rng.choice(WORDS))}:", f"{IND}def {rng.choice(FUNCS)}(self, {rng.choice(NAMES)}):"]
    return _s_loop(rng, IND * 2, label, head), *_s_answer(label)


def _s_if_block(rng, label):  # the accumulator and its loop inside an if, or `current` inside an if in the loop
    it, seq, c = rng.sample(NAMES, 3)
    if rng.random() < 0.5:
        head = [_header(rng), *_filler(rng, IND, rng.randint(0, 2), quotes=False), f"{IND}if {c}:"]
        return _s_loop(rng, IND * 2, label, head), *_s_answer(label)
    lines = [_header(rng), f"{IND}current = {_s_init(rng, label)}", *_filler(rng, IND, rng.randint(0, 2), quotes=False),
             f"{IND}for {it} in {seq}:", f"{IND * 2}if {it} {rng.choice(['>', '!=', 'is not'])} {c}:"]
    return _join(lines, f"{IND * 3}current"), *_s_answer(label)


def _s_while_loop(rng, label):
    it, seq = rng.sample(NAMES, 2)
    lines = [_header(rng), f"{IND}current = {_s_init(rng, label)}", *_filler(rng, IND, rng.randint(0, 2), quotes=False),
             f"{IND}while {seq}:", f"{IND * 2}{it} = {seq}.pop()",
             *_filler(rng, IND * 2, rng.randint(0, 2), quotes=False)]
    return _join(lines, f"{IND * 2}current"), *_s_answer(label)


def _s_with_block(rng, label):
    path, f = rng.sample(NAMES, 2)
    head = [_header(rng), *_filler(rng, IND, rng.randint(0, 1), quotes=False), f"{IND}with open({path}) as {f}:"]
    lines = [*head, f"{IND * 2}current = {_s_init(rng, label)}", f"{IND * 2}for line in {f}:",
             *_filler(rng, IND * 3, rng.randint(0, 2), quotes=False)]
    return _join(lines, f"{IND * 3}current"), *_s_answer(label)


def _s_try_block(rng, label):
    head = [_header(rng), f"{IND}try:"]
    return _s_loop(rng, IND * 2, label, head), *_s_answer(label)


def _s_nested_for(rng, label):
    a, b, c = rng.sample(NAMES, 3)
    lines = [_header(rng), f"{IND}current = {_s_init(rng, label)}", *_filler(rng, IND, rng.randint(0, 2), quotes=False),
             f"{IND}for {a} in {b}:", *_filler(rng, IND * 2, rng.randint(0, 1), quotes=False),
             f"{IND * 2}for {c} in {a}:"]
    return _join(lines, f"{IND * 3}current"), *_s_answer(label)


def _s_other_body(rng, label):  # other statements around it: counters (`n += 1`), continue, method calls, prints
    it, seq, n = rng.sample(NAMES, 3)
    body = [f"if not {it}:\n{IND * 3}continue", f"{it} = {it}.strip()", f"{n} += 1", f"print({it})",
            f"{n} = {n} + len({it})", f"log.debug({it})"]
    lines = [_header(rng), f"{IND}current = {_s_init(rng, label)}", f"{IND}{n} = 0", f"{IND}for {it} in {seq}:",
             *(f"{IND * 2}{s}" for s in rng.sample(body, rng.randint(1, 3)))]
    return _join(lines, f"{IND * 2}current"), *_s_answer(label)


# ---------------------------------------------------------------- while_return_true


def _w_answer(label: int) -> tuple[str, str, str]:
    return ("while True", ":", "\n") if label == 0 else ("return True", "\n", ":")


def _w_at(rng: random.Random, label: int, head: list[str], ind: str) -> tuple[str, str, str]:
    """`while True` / `return True` at `ind` after `head` and some filler (sometimes inside an if)."""
    kw, correct, wrong = _w_answer(label)
    lines = [*head, *_filler(rng, ind, rng.randint(0, 2))]
    if rng.random() < 0.3:
        lines.append(f"{ind}if {rng.choice(NAMES)}:")
        ind += IND
    return _join(lines, f"{ind}{kw}"), correct, wrong


def _w_class_method(rng, label):
    head = [f"class {_cap(rng.choice(WORDS))}:", f"{IND}def {rng.choice(FUNCS)}(self):"]
    return _w_at(rng, label, head, IND * 2)


def _w_in_for_loop(rng, label):
    a, b = rng.sample(NAMES, 2)
    return _w_at(rng, label, [_header(rng), *_filler(rng, IND, rng.randint(0, 2)), f"{IND}for {a} in {b}:"], IND * 2)


def _w_in_try(rng, label):
    return _w_at(rng, label, [_header(rng), *_filler(rng, IND, rng.randint(0, 1)), f"{IND}try:"], IND * 2)


def _w_in_with(rng, label):
    a, b = rng.sample(NAMES, 2)
    head = [_header(rng), *_filler(rng, IND, rng.randint(0, 1)), f"{IND}with {rng.choice(FUNCS)}({a}) as {b}:"]
    return _w_at(rng, label, head, IND * 2)


def _w_else_branch(rng, label):
    a, b = rng.sample(NAMES, 2)
    kw, correct, wrong = _w_answer(label)
    lines = [_header(rng), *_filler(rng, IND, rng.randint(0, 2)), f"{IND}if {a} > {b}:",
             *_filler(rng, IND * 2, 1), rng.choice([f"{IND}else:", f"{IND}elif {a}:"])]
    return _join(lines, f"{IND * 2}{kw}"), correct, wrong


def _w_nested_def(rng, label):
    head = [_header(rng), *_filler(rng, IND, rng.randint(0, 1)), f"{IND}def {rng.choice(FUNCS)}({rng.choice(NAMES)}):"]
    return _w_at(rng, label, head, IND * 2)


def _w_after_block(rng, label):  # dedented after a loop that returns early: `return True` as the last line
    a, b = rng.sample(NAMES, 2)
    kw, correct, wrong = _w_answer(label)
    lines = [_header(rng), f"{IND}for {a} in {b}:", f"{IND * 2}if not {a}:", f"{IND * 3}return False",
             *_filler(rng, IND * 2, rng.randint(0, 1))]
    return _join(lines, f"{IND}{kw}"), correct, wrong


FORMS: dict[str, dict[str, dict[str, Form]]] = {
    "single_double_quote": {
        "pruning": {"call_argument": _q_call_argument, "argument_before_comma": _q_argument_before_comma,
                    "dict_key": _q_dict_key, "several_strings": _q_several_strings},
        "heldout": {"comparison": _q_comparison, "method_on_literal": _q_method_on_literal,
                    "mixed_quotes": _q_mixed_quotes, "keyword_argument": _q_keyword_argument},
    },
    "bracket_counting": {
        "pruning": {"return": _b_return, "call_argument": _b_call_argument, "module_assign": _b_module_assign},
        "heldout": {"mixed_nesting": _b_mixed_nesting, "loop_or_test": _b_loop_or_test,
                    "comprehension": _b_comprehension, "dict_value": _b_dict_value},
    },
    "set_or_string": {
        "pruning": {"module_level": _s_module_level, "class_method": _s_class_method, "if_block": _s_if_block,
                    "while_loop": _s_while_loop},
        "heldout": {"with_block": _s_with_block, "try_block": _s_try_block, "nested_for": _s_nested_for,
                    "other_body": _s_other_body},
    },
    "while_return_true": {
        "pruning": {"class_method": _w_class_method, "in_for_loop": _w_in_for_loop, "in_try": _w_in_try},
        "heldout": {"in_with": _w_in_with, "else_branch": _w_else_branch, "nested_def": _w_nested_def,
                    "after_block": _w_after_block},
    },
}


def sample_form_examples(task: str, group: str, n: int, seed: int, tokenizer, max_tokens: int = 128,
                         ) -> list[FormExample]:
    """n distinct examples of `task` in the forms of `group` ("pruning" or "heldout"), deterministic in `seed`
    (for a given tokenizer): the forms take turns, a pair of examples (label 0, then label 1) each, so labels
    are balanced and forms nearly so. Only valid contrasts under `tokenizer` whose prompt fits `max_tokens` are kept."""
    _check_task(task)
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    forms = FORMS[task][group]
    names = list(forms)
    rng = random.Random(f"forms/{task}/{group}/{seed}")
    out, seen = [], set()
    for i in range(n):
        form, label = names[(i // 2) % len(names)], i % 2
        for _ in range(1000):
            prompt, correct, wrong = forms[form](rng, label)
            if (prompt not in seen and len(tokenizer.encode(prompt)) <= max_tokens
                    and valid_contrast(tokenizer, prompt, correct, wrong)):
                break
        else:
            raise RuntimeError(f"form {form} of {task} gave no valid contrast in 1000 draws")
        seen.add(prompt)
        out.append(FormExample(prompt, correct, wrong, label, task, form))
    return out



@torch.no_grad()
def accuracy_by(right, keys: list) -> dict:
    """{key: fraction right among the prompts with that key}: right[i] (bool, e.g. `margin > 0`) is prompt i's
    outcome and keys[i] names it (its form, its label, its kind); keys in the order they first appear."""
    out: dict = {}
    for k, r in zip(keys, [bool(r) for r in right], strict=True):
        out.setdefault(k, []).append(r)
    return {k: sum(v) / len(v) for k, v in out.items()}
