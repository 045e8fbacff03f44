import copy
import math

import numpy as np
import pytest
import torch

from circuitbook.bridges import (
    Bridge,
    BridgeTrainConfig,
    NMSELoss,
    bridge_sites,
    class_means,
    class_move,
    control_move,
    default_losses,
    hybrid_dense_to_sparse,
    hybrid_kl_per_site,
    hybrid_sparse_to_dense,
    kl_div,
    nmse,
    steer,
    steer_sparse,
    train_bridged,
)
from circuitbook.bridges_tasks import (
    MARGIN_QUANTILES,
    SEPARATES,
    SiteRow,
    band_distance,
    channels_at_least,
    choose_site,
    control_logit_changes,
    directed_change,
    margin_band,
    scan_sites,
    select_by_margin,
    steering_curve,
    task_channels,
    task_class_means,
    task_move,
)
from circuitbook.data.tasks import TaskBatch
from circuitbook.models.gpt import ABSTOPK_PAPER_SITES, GPT, GPTConfig
from circuitbook.sparsity import WeightSparsifier, kept_fraction

SMALL = dict(vocab_size=40, n_ctx=16, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32)


def every_option(norm: str = "rms", seed: int = 0, **kw) -> GPT:
    """A tiny GPT with every option on; bigram table and sink logits random so that they matter."""
    torch.manual_seed(seed)
    cfg = GPTConfig(**{**SMALL, **kw}, norm=norm, positions="learned", attn_sink=True,
                    abstopk_sites=ABSTOPK_PAPER_SITES, bigram=True, init_std=0.2)
    m = GPT(cfg).eval()
    with torch.no_grad():
        m.bigram.weight.normal_(0, 0.5)
        for b in m.blocks:
            b.attn.sink.normal_(0, 1)
            b.ln1.w.uniform_(0.5, 1.5)
    return m


def test_sites_are_the_sublayer_boundaries():
    m = every_option()
    assert bridge_sites(m) == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid",
                               "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid"]
    assert set(bridge_sites(m)) <= set(m.hook_names)  # named with the model's hook names
    assert set(bridge_sites(m)) <= set(m.resid_sites)  # the GPT runs to and from each of them


def test_identity_bridge_between_copies_gives_zero_kl_at_every_site():
    dense = every_option()
    sparse = copy.deepcopy(dense)
    bridge = Bridge.identity(bridge_sites(dense), dense.cfg.d_model)
    tokens = torch.randint(0, 40, (3, 12))
    with torch.no_grad():
        ref = dense(tokens)
        for site in bridge.sites:
            assert kl_div(ref, hybrid_dense_to_sparse(dense, sparse, bridge, tokens, site)) < 1e-6
            assert kl_div(ref, hybrid_sparse_to_dense(dense, sparse, bridge, tokens, site)) < 1e-6
        rows = hybrid_kl_per_site(dense, sparse, bridge, tokens)
    assert [r["site"] for r in rows] == bridge.sites
    for r in rows:
        assert max(r["kl_d2s"], r["kl_s2d"], r["nmse_d2s"], r["nmse_s2d"], r["sparse_kl"]) < 1e-6
        assert r["dense_entropy"] > 0.1


def test_random_bridge_hybrids_run_with_finite_positive_kl():
    dense = every_option(seed=0)
    sparse = every_option(seed=1, d_model=24, d_mlp=48)  # a different width: the bridge maps 16 <-> 24
    torch.manual_seed(2)
    bridge = Bridge.for_models(dense, sparse, afrac=0.25)
    tokens = torch.randint(0, 40, (2, 10))
    with torch.no_grad():
        ref = dense(tokens)
        for site in bridge.sites:
            h = bridge.encode(site, dense.run_to(tokens, site))
            assert h.shape == (2, 10, 24) and ((h != 0).sum(-1) == 6).all()  # AbsTopK: k = 24 / 4
            for hyb in (hybrid_dense_to_sparse, hybrid_sparse_to_dense):
                kl = float(kl_div(ref, hyb(dense, sparse, bridge, tokens, site)))
                assert math.isfinite(kl) and kl > 1e-4, (site, hyb.__name__)


def test_nmse_definition():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 3)
    assert float(nmse(x, x)) == 0.0
    mean = x.reshape(-1, 3).mean(0).expand_as(x)
    assert float(nmse(mean, x)) == pytest.approx(1.0, abs=1e-6)
    # by hand: targets (0,0), (2,0), (1,3): mean (1,1); sum ||t - mean||^2 = 2 + 2 + 4 = 8
    t = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]])
    p = torch.tensor([[1.0, 0.0], [2.0, 2.0], [1.0, 3.0]])  # squared errors 1 + 4 + 0 = 5
    assert float(nmse(p, t)) == pytest.approx(5 / 8)
    assert float(nmse(10 * p, 10 * t)) == pytest.approx(5 / 8)  # scale-free
    assert float(nmse(p[None], t[None])) == pytest.approx(5 / 8)  # leading dims all pooled


def test_kl_is_zero_for_equal_and_matches_by_hand():
    p = torch.tensor([[0.0, math.log(3.0)]])  # P = (1/4, 3/4)
    q = torch.zeros(1, 2)  # Q = (1/2, 1/2)
    assert float(kl_div(p, p)) == 0.0
    assert float(kl_div(p, q)) == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-6)


def _stream(n: int = 3000, seed: int = 0) -> np.ndarray:
    """A learnable token stream: a noisy cycle through 40 tokens."""
    rng = np.random.default_rng(seed)
    x = (np.arange(n) * 7 + rng.integers(0, 3, n)) % 40
    return x.astype(np.uint16)


def _pair():
    torch.manual_seed(0)
    dense = GPT(GPTConfig(**SMALL, init_std=0.2)).eval()
    torch.manual_seed(1)
    sparse = GPT(GPTConfig(**SMALL, abstopk_sites=("mlp.hook_post",)))
    torch.manual_seed(2)
    return dense, sparse, Bridge.for_models(dense, sparse, afrac=0.5)


def test_train_bridged_reduces_the_bridge_losses_and_leaves_dense_alone():
    dense, sparse, bridge = _pair()
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    cfg = BridgeTrainConfig(steps=30, batch_size=4, n_ctx=12, lr=1e-2, bridge_lr=1e-2, eval_every=30,
                            eval_batches=2, kl_sites_per_step=2)
    sp = WeightSparsifier(sparse, lambda s: kept_fraction(s, cfg.steps, target=0.25), min_per_row=2)
    out = train_bridged(dense, sparse, bridge, _stream(), _stream(seed=1), cfg, sparsifier=sp, progress=False)
    h = out["history"]
    first, last = h[0], h[-1]
    assert first["step"] == 0 and last["step"] == 30
    for k in ("val_nmse_d2s", "val_nmse_s2d", "val_kl_d2s", "val_kl_s2d", "val_sparse_lm", "val_total"):
        assert last[k] < first[k], k
    assert all(k in h[5] for k in ("nmse_d2s", "kl_s2d", "sparse_lm", "lr", "kept"))
    assert all(torch.equal(v, dense.state_dict()[k]) for k, v in before.items())  # dense frozen
    assert all(p.requires_grad for p in dense.parameters())  # and given back as it was
    w = sparse.blocks[0].mlp.W_in.weight
    assert int((w != 0).sum()) == sp.expected_nonzeros(29)["blocks.0.mlp.W_in.weight"]  # weight-sparse


def test_train_bridged_resumes_exactly(tmp_path):
    cfg = BridgeTrainConfig(steps=6, batch_size=2, n_ctx=8, eval_every=3, eval_batches=1, ckpt_every=2,
                            kl_sites_per_step=1)
    stream, val = _stream(500), _stream(500, seed=1)
    dense, sparse, bridge = _pair()
    ref = train_bridged(dense, sparse, bridge, stream, val, cfg, progress=False)
    dense2, sparse2, bridge2 = _pair()
    train_bridged(dense2, sparse2, bridge2, stream, val, cfg, ckpt_dir=tmp_path, stop_at=3, progress=False)
    dense3, sparse3, bridge3 = _pair()  # a fresh process: weights come from the checkpoint
    out = train_bridged(dense3, sparse3, bridge3, stream, val, cfg, ckpt_dir=tmp_path, progress=False)
    assert [r["step"] for r in out["history"]] == [r["step"] for r in ref["history"]]
    for a, b in zip([sparse, bridge], [sparse3, bridge3]):
        for (k, v), v3 in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(v, v3, atol=1e-6), k


def test_steering_through_the_decoder():
    dense, sparse, bridge = _pair()
    tokens = torch.randint(0, 40, (4, 9))
    site, targets = "blocks.1.hook_resid_pre", [3, 5]
    ma, mb = class_means(site, tokens[:2], tokens[2:], sparse=sparse)
    assert ma.shape == (dense.cfg.d_model,)
    chans = (mb - ma).abs().topk(3).indices.tolist()
    move = class_move(ma, mb, chans)
    assert set(torch.nonzero(move).flatten().tolist()) == set(chans)
    assert torch.equal(move[chans], (mb - ma)[chans])
    s0 = steer(dense, bridge, tokens, site, move, 0.0, targets)
    base = dense(tokens)[:, -1].softmax(-1)[:, targets]
    assert torch.allclose(s0.probs, base, atol=1e-6)  # strength 0 changes nothing
    big = move * 20 / move.norm()
    s1 = steer(dense, bridge, tokens, site, big, 1.0, targets)
    assert not torch.allclose(s1.probs, base, atol=1e-4)
    assert s1.p_diff == pytest.approx(float((s1.probs[:, 0] - s1.probs[:, 1]).mean()))
    # the decoded change is decoder(h + m) - decoder(h) = W_dec m
    W = bridge.decoder_matrix(site).detach()
    h = torch.randn(dense.cfg.d_model)
    assert torch.allclose(bridge.decode(site, h + big) - bridge.decode(site, h), W @ big, atol=1e-5)
    assert s1.delta_norm == pytest.approx(float((W @ big).norm()), rel=1e-5)
    # the same move in the sparse model itself: strength 0 is the sparse model's own answer
    sp0 = steer_sparse(sparse, tokens, site, big, 0.0, targets)
    assert torch.allclose(sp0.probs, sparse(tokens)[:, -1].softmax(-1)[:, targets], atol=1e-6)
    # the control: same values on as many other channels, same dense-space norm
    ctl = control_move(bridge, site, big, seed=0)
    assert set(torch.nonzero(ctl).flatten().tolist()).isdisjoint(chans)
    assert int((ctl != 0).sum()) == len(chans)
    assert float((W @ ctl).norm()) == pytest.approx(float((W @ big).norm()), rel=1e-5)
    assert not torch.equal(control_move(bridge, site, big, seed=1), ctl) or len(chans) == dense.cfg.d_model


def test_least_squares_bridge_between_copies_is_exact():
    dense = every_option()
    sparse = copy.deepcopy(dense)
    torch.manual_seed(3)
    bridge = Bridge(bridge_sites(dense), dense.cfg.d_model, dense.cfg.d_model, afrac=1.0)
    tokens = [torch.randint(0, 40, (8, 16)) for _ in range(4)]
    fit = bridge.fit_least_squares(dense, sparse, tokens)
    assert set(fit) == set(bridge.sites)
    assert max(max(v) for v in fit.values()) < 1e-6  # NMSE both ways, every site
    with torch.no_grad():
        test = torch.randint(0, 40, (3, 12))
        ref = dense(test)
        for site in bridge.sites:
            assert kl_div(ref, hybrid_sparse_to_dense(dense, sparse, bridge, test, site)) < 1e-5
            assert kl_div(ref, hybrid_dense_to_sparse(dense, sparse, bridge, test, site)) < 1e-5
    # between two different models the fit is the best affine map: it beats a random bridge's NMSE
    other = every_option(seed=1, d_model=24, d_mlp=48)
    fitted, rand = Bridge.for_models(dense, other, afrac=1.0), Bridge.for_models(dense, other, afrac=1.0)
    fitted.fit_least_squares(dense, other, tokens)
    with torch.no_grad():
        _, dr = dense.run_with_resids(tokens[0], fitted.sites)
        _, sr = other.run_with_resids(tokens[0], fitted.sites)
        for site in fitted.sites:
            assert nmse(fitted.decode(site, sr[site]), dr[site]) < min(1.0, nmse(rand.decode(site, sr[site]), dr[site]))


def test_default_losses_have_names_and_coefficients():
    ls = default_losses(kl_s2d=0.5)
    assert [l.name for l in ls] == ["sparse_lm", "nmse_d2s", "nmse_s2d", "kl_d2s", "kl_s2d"]
    assert ls[-1].coeff == 0.5
    with pytest.raises(ValueError, match="direction"):
        NMSELoss("dense_to_sparse")


# ----------------------------------------------------------------------------- a task through the bridges


def _task_batch(n: int = 24, T: int = 7, seed: int = 0) -> TaskBatch:
    """Random prompts with varied lengths; class-0 prompts end in tokens 0..19, class-1 in 20..39; class 0's
    answer is token 3 and class 1's token 5."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    tokens = torch.randint(0, 40, (n, T), generator=g)
    last = torch.randint(3, T, (n,), generator=g)
    tokens[torch.arange(n), last] = torch.randint(0, 20, (n,), generator=g) + 20 * labels
    correct, wrong = torch.where(labels == 0, 3, 5), torch.where(labels == 0, 5, 3)
    return TaskBatch(tokens, last, correct, wrong, labels)


def _class_channel_model() -> GPT:
    """A GPT whose residual at blocks.0.hook_resid_pre (no positions: the token embedding) has channel 3 =
    7 for tokens 20..39 and 5 for the rest: a shift, no sign change, that gives the class of the last token."""
    torch.manual_seed(4)
    m = GPT(GPTConfig(**SMALL, positions="none", init_std=0.5)).eval()
    with torch.no_grad():
        m.embed.weight[:, 3] = 5.0
        m.embed.weight[20:, 3] = 7.0
    return m


def test_channels_at_least_threshold_best_first_and_never_empty():
    sep = torch.tensor([0.5, 0.95, 0.9, 0.99, 0.95])
    assert channels_at_least(sep) == [3, 1, 4, 2]  # >= 0.9, best first, ties in channel order
    assert channels_at_least(sep, threshold=0.96) == [3]
    assert channels_at_least(torch.tensor([0.3, 0.6, 0.6, 0.5])) == [1]  # none reaches it: the best one
    assert SEPARATES == 0.9
    with pytest.raises(ValueError):
        channels_at_least(torch.zeros(0))


def test_task_channels_picks_the_channel_that_separates_and_only_it():
    m, batch = _class_channel_model(), _task_batch()
    site = "blocks.0.hook_resid_pre"
    chans, sep = task_channels(m, batch, site)
    assert sep.shape == (16,) and sep[3] == 1
    assert chans == [3] and (sep[torch.arange(16) != 3] < SEPARATES).all()
    # with the labels shuffled, nothing separates: still one channel, the best
    perm = torch.randperm(len(batch.labels), generator=torch.Generator().manual_seed(0))
    shuffled = TaskBatch(batch.tokens, batch.last, batch.correct, batch.wrong, batch.labels[perm])
    chans2, sep2 = task_channels(m, shuffled, site)
    assert len(chans2) >= 1 and sep2[3] < SEPARATES and chans2[0] == int(sep2.argmax())
    # the class means differ exactly on channel 3 by the shift
    m0, m1 = task_class_means(m, batch, site)
    assert float(m1[3] - m0[3]) == pytest.approx(2.0)


def test_choose_site_is_where_the_sparse_model_responds_most():
    rows = [SiteRow("a", [0], 1.0, 0.1, 0.9), SiteRow("b", [1], 1.0, -0.5, 0.0), SiteRow("c", [2], 1.0, 0.3, 0.0)]
    assert choose_site(rows) == "b"  # |sparse change| decides, either sign; the dense response plays no part
    assert choose_site([SiteRow("a", [0], 1.0, 0.2, 0.0), SiteRow("b", [0], 1.0, -0.2, 1.0)]) == "a"  # tie: first
    with pytest.raises(ValueError):
        choose_site([])


def test_scan_and_steering_curve_through_an_identity_bridge_match_the_sparse_model():
    sparse, batch, held = _class_channel_model(), _task_batch(), _task_batch(seed=1)
    dense = copy.deepcopy(sparse)
    bridge = Bridge.identity(bridge_sites(sparse), sparse.cfg.d_model)
    rows = scan_sites(dense, sparse, bridge, batch, batch, bridge.sites)
    assert [r.site for r in rows] == bridge.sites
    assert rows[0].channels == [3] and rows[0].best_separation == 1
    for r in rows:  # the dense model is a copy and the bridge the identity: the same response both ways
        assert r.dense_change == pytest.approx(r.sparse_change, abs=1e-6)
    site = choose_site(rows)
    assert abs(next(r for r in rows if r.site == site).sparse_change) == max(abs(r.sparse_change) for r in rows)

    move = task_move(sparse, bridge, batch, site, seed=0)
    assert move.channels == rows[bridge.sites.index(site)].channels
    assert set(torch.nonzero(move.move).flatten().tolist()) == set(move.channels)
    assert torch.nonzero(move.best_move).flatten().tolist() == move.channels[:1]
    assert set(torch.nonzero(move.control).flatten().tolist()).isdisjoint(move.channels)
    curve = steering_curve(dense, sparse, bridge, held, move, [0.0, 1.0, 2.0])
    assert [r["strength"] for r in curve] == [0.0, 1.0, 2.0]
    zero = curve[0]
    assert zero["dense"] == zero["control"] == zero["dense_best_channel"]  # strength 0 moves nothing
    for r in curve:
        assert r["dense"] == pytest.approx(r["sparse"], abs=1e-6)


# ----------------------------------------------------------------------------- prompts by margin, both directions


def test_margin_band_is_the_reference_quantiles():
    ref = torch.arange(101, dtype=torch.float32)  # 0 .. 100: the q-quantile is 100 q
    assert MARGIN_QUANTILES == (0.1, 0.9)
    assert margin_band(ref) == pytest.approx((10.0, 90.0))
    assert margin_band(ref[torch.randperm(101)], (0.25, 0.5)) == pytest.approx((25.0, 50.0))  # order is irrelevant
    with pytest.raises(ValueError):
        margin_band(torch.zeros(0))


def test_band_distance_is_zero_inside_and_the_gap_outside():
    d = band_distance(torch.tensor([-1.0, 2.0, 4.0, 6.0, 9.0]), (2.0, 6.0))
    assert torch.allclose(d, torch.tensor([3.0, 0.0, 0.0, 0.0, 3.0]))


def test_select_by_margin_takes_the_band_first_then_the_nearest_and_never_a_wrong_answer():
    band = (4.0, 6.0)
    #                      0     1    2    3    4     5    6    7    8     9
    margins = torch.tensor([12.0, 5.0, 9.0, -5.0, 4.0, 7.0, 5.5, 0.5, 30.0, 6.0])
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    # class 0: inside 1, 4 (pool order); then 2 (3 away), 0 (6 away); 3 answers wrong and is never chosen
    assert select_by_margin(margins, labels, band, 2).tolist() == [1, 4, 6, 9]
    assert select_by_margin(margins, labels, band, 3).tolist() == [1, 2, 4, 5, 6, 9]  # each class in pool order
    # class 1: inside 6, 9; then 5 (1 away), 7 (3.5 away), 8 (24 away)
    assert select_by_margin(margins, labels, band, 4).tolist() == [0, 1, 2, 4, 5, 6, 7, 9]
    # fewer than asked when a class runs out; the wrong answer stays out
    assert select_by_margin(margins, labels, band, 10).tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    # a band nobody reaches: the least saturated (nearest) prompts, ties in pool order
    far = select_by_margin(torch.tensor([8.0, 7.0, 7.0, 9.0]), torch.tensor([0, 0, 0, 0]), (1.0, 2.0), 2)
    assert far.tolist() == [1, 2]
    # the rule reads the margins only: relabelling the prompts moves the choice with them
    perm = torch.randperm(len(margins), generator=torch.Generator().manual_seed(0))
    got = select_by_margin(margins[perm], labels[perm], band, 2)
    assert sorted(perm[got].tolist()) == [1, 4, 6, 9]


def test_directed_change_runs_each_class_towards_the_other_with_its_signed_control():
    sparse, batch = _class_channel_model(), _task_batch()
    dense = copy.deepcopy(sparse)
    bridge = Bridge.identity(bridge_sites(sparse), sparse.cfg.d_model)
    site = "blocks.0.hook_resid_pre"
    move = task_move(sparse, bridge, batch, site, seed=0)
    for c, sign in ((0, 1.0), (1, -1.0)):
        sub = batch[batch.labels == c]
        targets = [int(sub.correct[0]), int(sub.wrong[0])]  # the source class's answer first
        d = directed_change(dense, bridge, batch, move, c)
        assert d.from_class == c and d.logit_before.shape == (int((batch.labels == c).sum()),)
        base = dense(sub.tokens)[torch.arange(len(sub.tokens)), sub.last][:, targets]
        assert torch.allclose(d.logit_before, base[:, 0] - base[:, 1], atol=1e-5)
        moved = steer(dense, bridge, sub.tokens, site, sign * move.move, 1.0, targets, at=sub.last)
        assert torch.allclose(d.logit_after, moved.logit_diffs, atol=1e-6)
        assert torch.allclose(d.p_after, moved.probs[:, 0] - moved.probs[:, 1], atol=1e-6)
        ctl = steer(dense, bridge, sub.tokens, site, sign * move.control, 1.0, targets, at=sub.last)
        assert torch.allclose(d.logit_control, ctl.logit_diffs, atol=1e-6)
        assert d.delta_logit == pytest.approx(float((d.logit_before - d.logit_after).mean()), abs=1e-6)
        assert d.control_delta_p == pytest.approx(float((d.p_before - d.p_control).mean()), abs=1e-6)
        null = control_logit_changes(dense, bridge, batch, move, c, 3)  # seed 0 is the control above
        assert null.shape == (3,) and null[0] == pytest.approx(d.control_delta_logit, abs=1e-6)
        assert len(set(null.round(6).tolist())) > 1  # other seeds, other channels
        still = directed_change(dense, bridge, batch, move, c, strength=0.0)  # strength 0 moves nothing
        assert still.delta_logit == still.control_delta_logit == still.delta_p == 0.0
    with pytest.raises(ValueError):
        directed_change(dense, bridge, batch, move, 2)


def test_sparse_grad_rms_normalize_rescales_the_sparse_gradient_to_rms_one():
    """"clip" leaves a small gradient alone; "rms_normalize" scales it up to RMS 1 (chapter 2's recipe), so the
    first AdamW step, lr * g / (|g| + eps) with eps 0.1, is far longer."""
    with pytest.raises(ValueError):
        BridgeTrainConfig(steps=1, sparse_grad="normalise")
    moved = {}
    for mode in ("clip", "rms_normalize"):
        dense, sparse, bridge = _pair()
        before = copy.deepcopy(sparse.state_dict())
        small = dict(lm_coef=1e-4, nmse_d2s_coef=1e-4, nmse_s2d_coef=1e-4, kl_d2s_coef=1e-4, kl_s2d_coef=1e-4)
        cfg = BridgeTrainConfig(steps=1, batch_size=2, n_ctx=8, lr=1e-3, eval_every=1, eval_batches=1,
                                sparse_grad=mode, **small)  # a gradient far below RMS 1, as an LM loss's is
        train_bridged(dense, sparse, bridge, _stream(500), _stream(500, seed=1), cfg, losses=cfg.losses(),
                      progress=False)
        moved[mode] = math.sqrt(sum(float((v - before[k]).pow(2).sum()) for k, v in sparse.state_dict().items()))
    # Adam's step is lr * g / (sqrt(v) + eps): with eps 0.1 a gradient of RMS << 0.1 moves the weights far less
    assert moved["rms_normalize"] > 2 * moved["clip"]


def test_cotrain_configs_train_from_scratch_on_the_chosen_models_recipe():
    from circuitbook import zoo

    for prof in ("ci", "full"):
        gcfg, bcfg, scfg = zoo.cotrain_configs(prof)
        g2, t2, s2 = zoo.the_sparse_configs(prof)
        assert gcfg == g2 and scfg == s2
        assert (bcfg.steps, bcfg.batch_size, bcfg.lr) == (t2.steps, t2.batch_size, t2.lr)
        assert (bcfg.sparse_init, bcfg.bridge_init, bcfg.sparse_grad) == ("scratch", "random", "rms_normalize")
        ft = zoo.bridge_configs(prof)[1]
        assert (bcfg.bridge_lr, bcfg.kl_d2s_coef, bcfg.kl_sites_per_step) == (ft.bridge_lr, ft.kl_d2s_coef,
                                                                             ft.kl_sites_per_step)
