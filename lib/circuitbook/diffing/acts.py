"""Activation sources: token windows of a stream and a model's activations on them.

A token position and its activation row share an index into `windows.flatten()`, so top-activating
contexts can be read back from the windows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from circuitbook.train import get_batch


def sample_windows(tokens: np.ndarray, n_tokens: int, n_ctx: int, seed: int, batch_size: int = 32) -> Tensor:
    """Random windows of a token stream, enough to hold `n_tokens` tokens. -> [n_windows, n_ctx] int64.

    Uses the training loop's `get_batch`, so the windows depend only on (seed, n_ctx, count).
    """
    n_win = -(-n_tokens // n_ctx)
    out = [get_batch(tokens, s, batch_size, n_ctx, seed) for s in range(-(-n_win // batch_size))]
    return torch.cat(out)[:n_win]


@torch.no_grad()
def collect_acts(
    model, token_stream: np.ndarray | Tensor, site: str, n_tokens: int, seed: int = 0,
    n_ctx: int | None = None, batch_size: int = 32, progress: bool = True,
) -> Tensor:
    """Activations of `model` at hook `site` on `n_tokens` tokens. -> [n_tokens, d] float32 on CPU.

    `token_stream`: a 1-D stream (windows are sampled with `sample_windows(stream, n_tokens, n_ctx, seed)`)
    or ready windows [n_windows, T]. Row j is position j % T of window j // T.
    """
    n_ctx = n_ctx or model.cfg.n_ctx
    if isinstance(token_stream, np.ndarray):
        windows = sample_windows(token_stream, n_tokens, n_ctx, seed, batch_size)
    else:
        windows = token_stream
    dev = next(model.parameters()).device
    out = []
    for batch in tqdm(windows.split(batch_size), desc=f"acts {site}", disable=not progress, mininterval=1.0):
        _, cache = model.run_with_cache(batch.to(dev), names_filter=[site])
        out.append(cache[site].reshape(-1, cache[site].shape[-1]).float().cpu())
    return torch.cat(out)[:n_tokens]
