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


# ----------------------------------------------------------------------------- partial execution


def every_option(norm="rms", positions="learned", sink=True, topk=True, bigram=True, seed=0) -> GPT:
    """A tiny GPT with the chosen options; bigram table, sink logits and norm gains random so that they matter."""
    torch.manual_seed(seed)
    cfg = GPTConfig(**SMALL, norm=norm, positions=positions, attn_sink=sink,
                    abstopk_sites=ABSTOPK_PAPER_SITES if topk else (), bigram=bigram, init_std=0.2)
    m = GPT(cfg).eval()
    with torch.no_grad():
        if bigram:
            m.bigram.weight.normal_(0, 0.5)
        for b in m.blocks:
            if sink:
                b.attn.sink.normal_(0, 1)
            b.ln1.w.uniform_(0.5, 1.5)
    return m


def _fired(m: GPT, fn) -> list[str]:
    """The hook names that fire, in order, while fn() runs."""
    seen = []
    for name in m.hook_names:
        m.add_hook(name, lambda act, hook: seen.append(hook.name))
    try:
        fn()
    finally:
        m.reset_hooks()
    return seen


@pytest.mark.parametrize("norm", ["rms", "layer"])
@pytest.mark.parametrize("positions", ["learned", "none"])
@pytest.mark.parametrize("sink,topk,bigram", [(False, False, False), (True, False, False), (False, True, False),
                                              (False, False, True), (True, True, True)])
def test_run_from_of_run_to_is_forward_at_every_residual_site(norm, positions, sink, topk, bigram):
    m = every_option(norm, positions, sink, topk, bigram)
    tokens = torch.randint(0, 50, (3, 11))
    assert m.resid_sites == [f"blocks.{l}.hook_resid_{k}" for l in range(2) for k in ("pre", "mid", "post")]
    assert set(m.resid_sites) <= set(m.hook_names)  # named in the one vocabulary
    with torch.no_grad():
        full = m(tokens)
        _, cache = m.run_with_cache(tokens)
        everything = _fired(m, lambda: m(tokens))
        for site in m.resid_sites:
            resid = m.run_to(tokens, site)
            assert torch.equal(resid, cache[site]), site  # the residual stream forward computes there
            assert torch.equal(m.run_from(site, resid, tokens), full), site  # the same ops: bit for bit
            # every hook fires once, in forward's order, the site's own hook on the run_to side
            before = _fired(m, lambda s=site: m.run_to(tokens, s))
            after = _fired(m, lambda s=site, r=resid: m.run_from(s, r, tokens))
            assert before[-1] == site and before + after == everything, site
        logits, resids = m.run_with_resids(tokens, m.resid_sites[::2])
        assert torch.equal(logits, full) and all(torch.equal(r, cache[s]) for s, r in resids.items())
        assert torch.equal(m.head(m.run_to(tokens, m.resid_sites[-1]), tokens), full)
        assert torch.equal(m.embed_tokens(tokens), m.run_to(tokens, "blocks.0.hook_resid_pre"))
    if bigram:
        with pytest.raises(ValueError, match="bigram"):
            m.run_from(m.resid_sites[0], resid)  # the bigram logits need the tokens
    else:
        assert torch.equal(m.run_from(m.resid_sites[0], m.run_to(tokens, m.resid_sites[0])), full)


def test_run_from_responds_to_the_residual_causally():
    m = every_option()
    tokens = torch.randint(0, 50, (2, 9))
    site = "blocks.1.hook_resid_pre"
    with torch.no_grad():
        r = m.run_to(tokens, site)
        r2 = r.clone()
        r2[:, 5] += 3.0
        a, b = m.run_from(site, r, tokens), m.run_from(site, r2, tokens)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)  # causal: earlier positions untouched
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("site", ["blocks.2.hook_resid_pre", "blocks.0.hook_attn_out", "hook_embed",
                                  "blocks.0.hook_resid_final", "resid_pre", "blocks.0.ln1.hook_normalized"])
def test_a_site_outside_the_residual_vocabulary_is_refused(site):
    m = every_option()
    tokens = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="not a residual-stream site"):
        m.run_to(tokens, site)
    with pytest.raises(ValueError, match="not a residual-stream site"):
        m.run_from(site, torch.zeros(1, 3, 16), tokens)
    with pytest.raises(ValueError, match="not a residual-stream site"):
        m.run_with_resids(tokens, ["blocks.0.hook_resid_mid", site])
