import pytest
import torch

from circuitbook.models.gpt import ABSTOPK_PAPER_SITES, GPT, GPTConfig, abstopk

SMALL = dict(vocab_size=50, n_ctx=16, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32)


@pytest.mark.parametrize("positions", ["learned", "none"])
@pytest.mark.parametrize("sink", [False, True])
def test_every_hook_name_appears_in_run_with_cache(positions, sink):
    m = GPT(GPTConfig(**SMALL, positions=positions, attn_sink=sink, abstopk_sites=ABSTOPK_PAPER_SITES))
    _, cache = m.run_with_cache(torch.randint(0, 50, (2, 7)))
    assert list(cache.keys()) == m.hook_names  # every site, in forward order
    assert "blocks.1.mlp.hook_post" in cache and cache["blocks.0.attn.hook_q"].shape == (2, 7, 2, 8)


def test_abstopk_keeps_exactly_k_per_position():
    x = torch.randn(4, 9, 40)
    x[0, 0, :6] = 1.0  # ties must not break the exact count
    y = abstopk(x, 10)
    assert ((y != 0).sum(-1) == 10).all()
    kept = y != 0
    assert (x.abs()[kept].view(4, 9, 10).min(-1).values >= x.abs().masked_fill(kept, 0).max(-1).values).all()
    assert torch.equal(y[kept], x[kept])


def test_abstopk_sites_in_the_model():
    cfg = GPTConfig(**SMALL, abstopk_sites=ABSTOPK_PAPER_SITES, afrac=0.25)
    _, cache = GPT(cfg).run_with_cache(torch.randint(0, 50, (3, 11)))
    assert ((cache["blocks.0.mlp.hook_post"] != 0).sum(-1) == 8).all()  # 32 * 1/4
    assert ((cache["blocks.1.attn.hook_v"].flatten(-2) != 0).sum(-1) == 4).all()  # 16 * 1/4
    assert ((cache["blocks.1.ln1.hook_normalized"] != 0).sum(-1) == 4).all()
    dense = GPT(GPTConfig(**SMALL)).run_with_cache(torch.randint(0, 50, (3, 11)))[1]
    assert ((dense["blocks.0.mlp.hook_post"] != 0).sum(-1) > 8).all()


def test_sink_at_minus_inf_is_attention_without_a_sink():
    torch.manual_seed(0)
    with_sink = GPT(GPTConfig(**SMALL, attn_sink=True))
    plain = GPT(GPTConfig(**SMALL))
    plain.load_state_dict({k: v for k, v in with_sink.state_dict().items() if "sink" not in k})
    tokens = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        for b in with_sink.blocks:
            b.attn.sink.fill_(float("-inf"))
        assert torch.allclose(with_sink(tokens), plain(tokens), atol=1e-6)
        for b in with_sink.blocks:
            b.attn.sink.fill_(0.0)
        # a finite sink takes probability mass: rows of the pattern sum to less than one
        _, cache = with_sink.run_with_cache(tokens)
        assert (cache["blocks.0.attn.hook_pattern"].sum(-1) < 1 - 1e-4).all()


def test_run_with_hooks_ablation_changes_the_output_and_causality_holds():
    m = GPT(GPTConfig(**SMALL))
    tokens = torch.randint(0, 50, (1, 8))
    base = m(tokens)
    zero = lambda act, hook: torch.zeros_like(act)
    out = m.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_attn_out", zero)])
    assert not torch.allclose(out, base)
    changed = tokens.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 50
    assert torch.allclose(m(changed)[0, :-1], base[0, :-1], atol=1e-6)  # no position sees the future


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="unknown AbsTopK sites"):
        GPTConfig(abstopk_sites=("mlp.hook_pre",))
    with pytest.raises(ValueError, match="norm"):
        GPTConfig(norm="batch")
    with pytest.raises(ValueError, match="exceeds n_ctx"):
        GPT(GPTConfig(**SMALL))(torch.zeros(1, 17, dtype=torch.long))
