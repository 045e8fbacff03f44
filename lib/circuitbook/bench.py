"""Measured speed, as ratios: matmul GFLOP/s, training throughput, the cost of the sparse recipe, CSR inference.

Used by `make bench` (scripts/bench.py) and by the chapters that report a speed claim. Timings alternate
the two things compared, step by step, so a busy machine slows both alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from circuitbook.models.gpt import GPT, GPTConfig, lm_loss
from circuitbook.sparsity import CSRLinear, WeightSparsifier, clip_grad_rms_, n_kept, project_, sparse_adamw, to_csr


def best_time(fn: Callable[[], object], repeats: int = 5) -> float:
    """Fastest of `repeats` runs after one warm-up, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_time(lambda: a @ b, repeats) / 1e9


def train_flops_per_token(model: GPT) -> float:
    """6 x (non-embedding parameters incl. unembedding) + attention's 12 x layers x n_ctx x heads x d_head."""
    cfg = model.cfg
    n = model.n_params() - model.embed.weight.numel() - (model.pos_embed.weight.numel() if model.pos_embed else 0)
    return 6 * n + 12 * cfg.n_layers * cfg.n_ctx * cfg.n_heads * cfg.d_head


def _step_fn(model: GPT, batch: torch.Tensor, sparsifier: WeightSparsifier | None) -> Callable[[], None]:
    opt = sparse_adamw(model.parameters(), 1e-3)

    def step() -> None:
        loss = lm_loss(model(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_rms_(list(model.parameters()), 1.0, normalize=True)
        opt.step()
        if sparsifier is not None:
            sparsifier.step(0)

    return step


def sparse_step_time_ratio(cfg: GPTConfig, kept: float, batch_size: int = 32, steps: int = 10) -> dict:
    """Training step of the sparse recipe (with the top-k projection) over the same model without it.

    Both models have the same shape and options; only the per-step projection differs. Steps alternate
    between the two and each side's fastest step is compared: interference from other work only ever
    adds time, so the minimum is the stable estimate on a shared machine.
    """
    torch.manual_seed(0)
    batch = torch.randint(0, cfg.vocab_size, (batch_size, cfg.n_ctx))
    dense, sparse = GPT(cfg), GPT(cfg)
    run_d = _step_fn(dense, batch, None)
    run_s = _step_fn(sparse, batch, WeightSparsifier(sparse, kept, min_per_row=4))
    td, ts = [], []
    for i in range(steps + 1):
        for fn, out in ((run_d, td), (run_s, ts)):
            t0 = time.perf_counter()
            fn()
            if i:  # the first step of each is a warm-up
                out.append(time.perf_counter() - t0)
    d, s = min(td), min(ts)
    return {"dense_s": d, "sparse_s": s, "ratio": s / d}


@torch.no_grad()
def csr_inference_speedup(model: GPT, batch_size: int = 8, repeats: int = 5) -> dict:
    """Forward time of `model` with dense weights over the same model with every Linear stored as CSR."""
    csr = to_csr(model)
    tokens = torch.randint(0, model.cfg.vocab_size, (batch_size, model.cfg.n_ctx))
    assert torch.allclose(model(tokens), csr(tokens), atol=1e-4), "CSR model must compute the same logits"
    td, ts = [], []
    for _ in range(repeats):
        td.append(best_time(lambda: model(tokens), 1))
        ts.append(best_time(lambda: csr(tokens), 1))
    d, s = min(td), min(ts)
    return {"dense_s": d, "csr_s": s, "speedup": d / s}


@torch.no_grad()
def csr_linear_speedup(linear: torch.nn.Linear, kept: float, n_tokens: int = 1024, repeats: int = 5) -> dict:
    """One Linear layer alone: dense over CSR forward time after keeping `kept` of its weights (no row floor)."""
    lin = torch.nn.Linear(linear.in_features, linear.out_features)
    lin.load_state_dict(linear.state_dict())
    project_(lin.weight.data, n_kept(kept, lin.weight.numel()))
    csr = CSRLinear(lin)
    x = torch.randn(n_tokens, lin.in_features)
    d = best_time(lambda: lin(x), repeats)
    s = best_time(lambda: csr(x), repeats)
    return {"dense_s": d, "csr_s": s, "speedup": d / s}


@torch.no_grad()
def csr_linears_speedup(model: torch.nn.Module, n_tokens: int = 128, repeats: int = 5) -> dict:
    """Every nn.Linear of `model` with its own (already sparse) weights, dense over CSR: each layer runs on a random
    [n_tokens, in] input, the two storages alternating layer by layer; the ratio is of the summed best times.
    `csr_linear_speedup_d256` runs it on the d256 model of the target L0 point, one 128-token sequence."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear layers")
    d = s = 0.0
    nnz = total = 0
    for lin in linears:
        csr = CSRLinear(lin)
        x = torch.randn(n_tokens, lin.in_features)
        assert torch.allclose(lin(x), csr(x), atol=1e-4), "CSR must compute the same outputs"
        d += best_time(lambda lin=lin, x=x: lin(x), repeats)
        s += best_time(lambda csr=csr, x=x: csr(x), repeats)
        nnz, total = nnz + int((lin.weight != 0).sum()), total + lin.weight.numel()
    return {"dense_s": d, "csr_s": s, "speedup": d / s, "n_linears": len(linears), "kept": nnz / total}

