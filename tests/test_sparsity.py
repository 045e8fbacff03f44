"""The weight-sparse training recipe: exact top-k projection, schedules, RMS clipping, CSR inference."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from circuitbook.sparsity import (
    SparsityConfig,
    WeightSparsifier,
    clip_grad_rms_,
    dead_neurons,
    kept_fraction,
    nonzeros,
    project_,
    row_nonzeros,
    sharkfin,
    sparse_adamw,
    to_csr,
    total_l0,
)

torch.set_num_threads(1)

VOCAB, D, D_MLP = 50, 16, 64


class Tiny(nn.Module):
    """Embedding -> norm -> MLP -> unembed, with a norm gain and a sink-like logit that must stay dense."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)  # [50, 16]
        self.ln = nn.Module()
        self.ln.w = nn.Parameter(torch.ones(D))
        self.W_in = nn.Linear(D, D_MLP)  # [64, 16] + [64]
        self.W_out = nn.Linear(D_MLP, D)  # [16, 64] + [16]
        self.unembed = nn.Linear(D, VOCAB)  # [50, 16] + [50]
        self.sink = nn.Parameter(torch.zeros(2))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        x = x / x.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * self.ln.w
        x = x + self.W_out(F.gelu(self.W_in(x)))
        return self.unembed(x) + self.sink.sum()


def by_hand(frac: float) -> dict[str, int]:
    """Scheduled counts computed from the rule: k = round-half-up(frac * numel) (>= 1); Linear weights
    keep at least 4 per row, and the floor counts inside the budget: max(k, 4 * rows)."""
    k = lambda n: max(1, math.floor(frac * n + 0.5))
    return {
        "embed.weight": k(VOCAB * D),
        "W_in.weight": max(k(D_MLP * D), 4 * D_MLP),
        "W_in.bias": k(D_MLP),
        "W_out.weight": max(k(D * D_MLP), 4 * D),
        "W_out.bias": k(D),
        "unembed.weight": max(k(VOCAB * D), 4 * VOCAB),
        "unembed.bias": k(VOCAB),
    }


def test_training_keeps_exact_counts_every_step():
    torch.manual_seed(0)
    model, T, target = Tiny(), 40, 1 / 8
    kept = partial(kept_fraction, target=target)
    sp = WeightSparsifier(model, lambda s: kept(s, T), min_per_row=4)
    assert set(sp.names) == set(by_hand(1.0)) and set(sp.excluded) == {"ln.w", "sink"}
    opt = sparse_adamw(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: sharkfin(s, T, kept=kept))
    tokens = torch.randint(0, VOCAB, (8, 12))
    losses = []
    for step in range(T):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        clip_grad_rms_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        frac = sp.step(step)
        assert frac == pytest.approx(1 - (1 - target) * step / 20 if step < 20 else target)
        want = by_hand(frac)
        assert sp.expected_nonzeros(step) == want, step
        assert nonzeros(model, sp.names) == want, step  # exactly, every step
        for name in ("W_in.weight", "W_out.weight", "unembed.weight"):
            assert int(row_nonzeros(model.get_parameter(name)).min()) >= 4, (step, name)
        losses.append(loss.item())
    # at the target: the floor binds for W_in (k=128 < 4*64) and unembed (100 < 200), not for W_out
    assert by_hand(target)["W_in.weight"] == 256 and by_hand(target)["W_out.weight"] == 128
    assert torch.equal(model.ln.w.ne(0), torch.ones(D, dtype=torch.bool))  # excluded: stays dense
    assert total_l0(model, sp.names) == sum(by_hand(target).values())
    assert losses[-1] < losses[0]


def test_projection_keeps_largest_and_breaks_ties_deterministically():
    torch.manual_seed(1)
    w = torch.randn(30, 40)
    a = w.abs().clone()
    mask = project_(w, 100)  # no floor: pure global top-k
    assert int(mask.sum()) == 100 and int(w.count_nonzero()) == 100
    assert a[mask].min() >= a[~mask].max()
    # all-equal magnitudes: exactly k survive, the first k in flat order
    t = torch.ones(5, 8) * torch.tensor([1.0, -1.0]).repeat(4)
    project_(t, 7)
    assert int(t.count_nonzero()) == 7 and t.flatten()[:7].ne(0).all()
    # floor: every row keeps its top 4 even where the global top-k would starve it
    w = torch.randn(6, 10)
    w[0] *= 1e-3  # row 0 would lose everything to a global top-k of 30
    keep = w.abs()[0].topk(4).indices
    project_(w, 30, min_per_row=4)
    assert int(w.count_nonzero()) == 30 and int(row_nonzeros(w).min()) >= 4
    assert w[0, keep].ne(0).all() and int(w[0].count_nonzero()) == 4
    # floor bigger than the budget: exactly 4 per row
    w = torch.randn(6, 10)
    project_(w, 5, min_per_row=4)
    assert row_nonzeros(w).tolist() == [4] * 6
    # ties inside the floor too: each row keeps its first 4 columns, and the next 2 in flat order
    t = torch.ones(3, 10)
    project_(t, 14, min_per_row=4)
    assert t[:, :4].ne(0).all() and t.ne(0).sum().item() == 14 and t[0, 4:6].ne(0).all()


def test_kept_fraction_schedule_by_hand():
    f = partial(kept_fraction, target=1 / 64)
    assert f(0, 1000) == 1.0  # 0%: dense
    assert f(10, 1000) == pytest.approx(1 - (63 / 64) * (10 / 500))  # 1%: 0.9803125
    assert f(10, 1000) == pytest.approx(0.9803125)
    assert f(250, 1000) == pytest.approx(1 - 63 / 128)  # halfway through the anneal
    assert f(500, 1000) == 1 / 64  # 50%: the target
    assert f(1000, 1000) == 1 / 64  # 100%
    assert kept_fraction(250, 1000, target=0.01, anneal=0.25) == 0.01  # configurable anneal length


def test_sharkfin_schedule_by_hand():
    kept = partial(kept_fraction, target=1 / 64)
    lr = partial(sharkfin, total_steps=1000, kept=kept)
    # W = 1% of 1000 = 10 warmup steps
    assert lr(0) == pytest.approx(1 / 10)  # 0%: first warmup step, dense
    assert lr(9) == pytest.approx(1.0 / math.sqrt(1 - (63 / 64) * (9 / 500)))  # last warmup step
    assert lr(10) == pytest.approx(1.0 / math.sqrt(0.9803125))  # 1%: peak of the fin, barely sparse
    assert lr(500) == pytest.approx((500 / 990) * 8.0)  # 50%: half decayed, x 1/sqrt(1/64) = 8
    assert lr(1000) == 0.0  # 100%
    assert sharkfin(500, 1000) == pytest.approx(500 / 990)  # without sparsity: plain warmup-decay


def test_sparsity_config_schedules_and_cap():
    cfg = SparsityConfig(kept_fraction=1 / 64)
    assert cfg.kept()(250, 1000) == pytest.approx(1 - 63 / 128)
    assert cfg.lr_schedule()(500, 1000) == pytest.approx(sharkfin(500, 1000, kept=cfg.kept()))
    capped = SparsityConfig(kept_fraction=1 / 64, lr_max_factor=2.0).lr_schedule()
    assert capped(500, 1000) == pytest.approx((500 / 990) * 2.0)  # 1/sqrt(1/64) = 8, capped at 2
    assert capped(10, 1000) == pytest.approx(1.0 / math.sqrt(0.9803125))  # below the cap: unchanged
    geo = SparsityConfig(kept_fraction=1 / 64, anneal_shape="geometric").kept()
    assert geo(0, 1000) == 1.0 and geo(250, 1000) == pytest.approx(1 / 8) and geo(500, 1000) == 1 / 64
    ratios = [geo(s + 1, 1000) / geo(s, 1000) for s in range(499)]
    assert max(ratios) == pytest.approx(min(ratios))  # the same share pruned every step
    lin = cfg.kept()
    assert lin(499, 1000) / lin(498, 1000) < min(ratios)  # linear prunes a larger share at the end
    with pytest.raises(ValueError, match="anneal_shape"):
        SparsityConfig(kept_fraction=0.5, anneal_shape="cosine")
    with pytest.raises(ValueError, match="kept_fraction"):
        SparsityConfig(kept_fraction=0)
    with pytest.raises(ValueError, match="lr_max_factor"):
        SparsityConfig(kept_fraction=0.5, lr_max_factor=0.5)
    with pytest.raises(TypeError):
        SparsityConfig(1 / 64)  # keyword-only
    with pytest.raises(AttributeError):
        cfg.kept_fraction = 0.5  # frozen


def test_clip_grad_rms():
    torch.manual_seed(2)
    ps = [nn.Parameter(torch.zeros(100)), nn.Parameter(torch.zeros(10, 30)), nn.Parameter(torch.zeros(3))]
    for p in ps[:2]:
        p.grad = torch.randn_like(p) * 5
    # ps[2] has no grad: skipped, not counted
    g0 = [p.grad.clone() for p in ps[:2]]
    rms = clip_grad_rms_(ps, max_rms=1.0)
    all0 = torch.cat([g.flatten() for g in g0])
    assert rms == pytest.approx(float(all0.pow(2).mean().sqrt()), rel=1e-5) and rms > 4
    after = torch.cat([p.grad.flatten() for p in ps[:2]])
    assert float(after.pow(2).mean().sqrt()) <= 1.0 + 1e-6
    assert torch.allclose(after, all0 / rms, atol=1e-6)  # one joint scale: direction kept
    small = [nn.Parameter(torch.zeros(50))]
    small[0].grad = torch.full((50,), 0.3)
    before = small[0].grad.clone()
    assert clip_grad_rms_(small) == pytest.approx(0.3)
    assert torch.equal(small[0].grad, before)  # below the limit: untouched


def test_sparse_adamw_settings():
    opt = sparse_adamw([nn.Parameter(torch.zeros(3))], lr=1e-2)
    g = opt.param_groups[0]
    assert (g["betas"], g["weight_decay"], g["eps"], g["lr"]) == ((0.9, 0.95), 0.1, 0.1, 1e-2)


def test_csr_forward_equals_dense():
    torch.manual_seed(3)
    model = Tiny().eval()
    WeightSparsifier(model, 1 / 16).step(0)
    sparse = to_csr(model)
    assert type(sparse.W_in).__name__ == "CSRLinear" and isinstance(model.W_in, nn.Linear)
    assert sparse.W_in.weight.layout == torch.sparse_csr
    tokens = torch.randint(0, VOCAB, (3, 7))
    with torch.no_grad():
        assert torch.allclose(sparse(tokens), model(tokens), atol=1e-5)


def test_dead_neurons():
    acts = torch.zeros(4, 5, 6)
    acts[1, 2, 0] = 0.5
    acts[0, 0, 3] = -2.0
    assert dead_neurons(acts).tolist() == [False, True, True, False, True, True]
    assert dead_neurons(acts, eps=1.0).tolist() == [True, True, True, False, True, True]


def test_non_embedding_l0_leaves_out_the_token_embedding_and_the_unembedding():
    from circuitbook.models.gpt import GPT, GPTConfig
    from circuitbook.sparsity import non_embedding_l0, total_l0

    m = GPT(GPTConfig(vocab_size=50, n_ctx=8, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32))
    with torch.no_grad():
        m.unembed.bias.fill_(1.0)
    emb = int((m.embed.weight != 0).sum() + (m.unembed.weight != 0).sum() + (m.unembed.bias != 0).sum())
    assert non_embedding_l0(m) == total_l0(m) - emb
    assert non_embedding_l0(m) >= int((m.pos_embed.weight != 0).sum())  # positions count: not the token embedding
    assert non_embedding_l0(m, ["embed.weight", "blocks.0.mlp.W_in.weight"]) == 16 * 32
