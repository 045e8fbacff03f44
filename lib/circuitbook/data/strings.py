"""Where the string literals are in real code, token by token (chapter 3's quote-type check on the corpus).

Python's own `tokenize` finds every literal (with prefixes, escapes, triple quotes; f-strings split into
parts on Python >= 3.12); the BPE tokenizer's character offsets then map each literal onto our tokens.
"""

from __future__ import annotations

import io
import tokenize

import numpy as np
import torch

OUTSIDE, IN_SINGLE, IN_DOUBLE, OPEN_SINGLE, OPEN_DOUBLE, IN_TRIPLE = range(6)  # token labels


def string_literals(src: str) -> list[tuple[int, int, int, str, bool]]:
    """Every string literal of `src` as (opening quote offset, content start, content end, quote char,
    triple-quoted). Offsets are character indices into `src`; source that does not tokenize ends the list."""
    starts = np.cumsum([0] + [len(x) for x in src.splitlines(keepends=True)])
    off = lambda rc: int(starts[rc[0] - 1] + rc[1])
    out, fstrings = [], []
    try:
        for t in tokenize.generate_tokens(io.StringIO(src).readline):
            kind = tokenize.tok_name[t.type]
            if kind == "STRING":
                i = next(j for j, ch in enumerate(t.string) if ch in "'\"")  # skip prefixes like r, b, f
                q = t.string[i]
                n = 3 if t.string[i : i + 3] == q * 3 else 1
                a, b = off(t.start), off(t.end)
                out.append((a + i, a + i + n, b - n, q, n == 3))
            elif kind == "FSTRING_START":  # Python >= 3.12
                q, end = t.string[-1], off(t.end)
                n = 3 if t.string.endswith(q * 3) else 1
                fstrings.append((end - n, end, q, n == 3))
            elif kind == "FSTRING_END" and fstrings:
                qpos, cs, q, triple = fstrings.pop()
                out.append((qpos, cs, off(t.start), q, triple))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return sorted(out)


def token_string_labels(text: str, tokenizer) -> tuple[list[int], np.ndarray]:
    """Token ids of `text` and a label per token: OUTSIDE, IN_SINGLE / IN_DOUBLE (a token wholly inside a
    one-line literal's content), OPEN_SINGLE / OPEN_DOUBLE (the token holding the opening quote), IN_TRIPLE."""
    enc = tokenizer.tok.encode(text)
    lab = np.full(len(enc.ids), OUTSIDE, dtype=np.int64)
    spans = string_literals(text)
    qpos = np.array([s[0] for s in spans])
    for k, (a, b) in enumerate(enc.offsets):
        j = int(np.searchsorted(qpos, b, side="right")) - 1  # the last literal opening before this token's end
        if j < 0:
            continue
        q0, cs, ce, q, triple = spans[j]
        if a <= q0 < b:
            lab[k] = OPEN_SINGLE if q == "'" else OPEN_DOUBLE
        elif cs <= a < b <= ce:
            lab[k] = IN_TRIPLE if triple else (IN_SINGLE if q == "'" else IN_DOUBLE)
    return enc.ids, lab


def string_windows(docs: list[str], tokenizer, n_ctx: int, n_windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of `n_ctx` tokens from `docs` (in order) with their labels: (tokens [W, n_ctx],
    labels [W, n_ctx]), W <= n_windows."""
    windows, labels = [], []
    for doc in docs:
        ids, lab = token_string_labels(doc, tokenizer)
        for i in range(0, len(ids) - n_ctx + 1, n_ctx):
            windows.append(ids[i : i + n_ctx])
            labels.append(lab[i : i + n_ctx])
        if len(windows) >= n_windows:
            break
    if not windows:
        raise ValueError(f"no document has {n_ctx} tokens")
    return torch.tensor(windows[:n_windows]), torch.from_numpy(np.stack(labels[:n_windows]))
