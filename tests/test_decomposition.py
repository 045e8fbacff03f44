"""Unit tests of circuitbook.decomposition (SPD / VPD) and the toy models. Runs in seconds on one core."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from circuitbook.decomposition import (
    ComponentModel,
    Faithfulness,
    ImportanceMinimality,
    StochasticRecon,
    StochasticReconLayerwise,
    adversarial_attack,
    decompose,
    identity_ci_error,
    lower_leaky_hard_sigmoid,
    mmcs_ml2r,
    random_mask_loss,
    uniform_subset_routing,
    upper_leaky_hard_sigmoid,
)
from circuitbook.decomposition.losses import annealed_p
from circuitbook.models.toys import TMS, ResidMLP, sparse_features

torch.set_num_threads(1)


def random_tms(n: int = 5, m: int = 2, identity: bool = False, seed: int = 0) -> TMS:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, n, generator=g)  # [m, n]
    b = 0.1 * torch.randn(n, generator=g)
    return TMS.from_weights(W, b, identity=identity)


def set_ci(cm: ComponentModel, value: float) -> None:
    """Make every causal importance a constant: g = clamp(value, 0, 1)."""
    with torch.no_grad():
        for fn in cm.ci_fns.values():
            fn.W2.zero_()
            fn.b2.fill_(value)


def exact_tms_components(tms: TMS) -> ComponentModel:
    """A component model of TMS whose subcomponents are exactly W's columns (C = n)."""
    n = tms.n_features
    cm = ComponentModel(tms, {"linear1": n, "linear2": n})
    W = tms.W.detach()  # [m, n]
    cm.set_from_weights("linear1", U=W.clone(), V=torch.eye(n))  # U Vᵀ = W
    cm.set_from_weights("linear2", U=torch.eye(n), V=W.clone())  # U Vᵀ = Wᵀ
    return cm


def test_all_masks_one_reproduces_target():
    tms = random_tms(identity=True)
    cm = exact_tms_components(tms)
    x = sparse_features(64, 5, 0.3, torch.Generator().manual_seed(1))
    target = tms(x)
    assert torch.allclose(cm(x), target)  # no masks: the target itself
    assert torch.allclose(cm.masked_with(x, 1.0), target, atol=1e-6)
    # masks at 0 ablate every subcomponent: only the frozen bias is left
    assert torch.allclose(cm.masked_with(x, 0.0), torch.relu(tms.linear2.bias).expand_as(target))
    # a wrong decomposition is not faithful: all-ones masks no longer give the target ...
    with torch.no_grad():
        cm.component("linear1").U.mul_(0.5)
    assert not torch.allclose(cm.masked_with(x, 1.0), target, atol=1e-3)
    # ... but with the Δ-component switched on (mask 1) the target is exact again
    assert torch.allclose(cm.masked_with(x, 1.0, use_delta=True), target, atol=1e-5)


def test_routing_keeps_unrouted_layers_original():
    tms = random_tms()
    cm = exact_tms_components(tms)
    x = sparse_features(32, 5, 0.3, torch.Generator().manual_seed(2))
    zeros = {n: torch.zeros(32, 5) for n in cm.names}
    none_routed = {n: torch.zeros(32, dtype=torch.bool) for n in cm.names}
    assert torch.allclose(cm(x, masks=zeros, routing=none_routed), tms(x))
    routes = uniform_subset_routing(cm.names, (1000,), torch.Generator().manual_seed(0))
    k = torch.stack(list(routes.values()), -1).sum(-1)  # [1000] matrices routed per example
    assert k.min() >= 1 and k.max() <= len(cm.names)
    assert set(k.unique().tolist()) == {1, 2}


def test_lower_leaky_hard_sigmoid():
    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    y = lower_leaky_hard_sigmoid(x, 0.01)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.5, 1.0]))
    y.backward(torch.tensor([-1.0, -1.0, -1.0]))  # upstream wants g larger
    assert torch.allclose(x.grad, torch.tensor([-0.01, -1.0, 0.0]))
    x.grad = None
    lower_leaky_hard_sigmoid(x, 0.01).backward(torch.tensor([1.0, 1.0, 1.0]))  # wants g smaller
    assert torch.allclose(x.grad, torch.tensor([0.0, 1.0, 0.0]))  # no leak below 0 for this sign


def test_upper_leaky_hard_sigmoid():
    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    y = upper_leaky_hard_sigmoid(x, 0.01)
    assert torch.allclose(y.detach(), torch.tensor([0.0, 0.5, 1.005]))
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.0, 1.0, 0.01]))


def test_mmcs_ml2r_on_exact_and_perturbed_columns():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(10, 40, generator=g)  # [m, n]
    # subcomponent c = column c of W (plus 10 spare random ones, shuffled)
    U = torch.cat([W, torch.randn(10, 10, generator=g)], 1)  # [m, 50]
    V = torch.cat([torch.eye(40), torch.zeros(40, 10)], 1)  # [n, 50]
    perm = torch.randperm(50, generator=g)
    mmcs, ml2r = mmcs_ml2r(U[:, perm], V[:, perm], W, dim="in")
    assert mmcs == pytest.approx(1.0, abs=1e-6) and ml2r == pytest.approx(1.0, abs=1e-6)
    mmcs_o, ml2r_o = mmcs_ml2r(V[:, perm], U[:, perm], W.T, dim="out")  # the transposed layer
    assert mmcs_o == pytest.approx(1.0, abs=1e-6) and ml2r_o == pytest.approx(1.0, abs=1e-6)
    _, ml2r_half = mmcs_ml2r(0.5 * U, V, W, dim="in")
    assert ml2r_half == pytest.approx(0.5, abs=1e-6)  # shrinkage shows up in ML2R, not MMCS
    noisy, _ = mmcs_ml2r(U + 0.3 * torch.randn(U.shape, generator=g), V, W, dim="in")
    assert noisy < 0.99


def test_identity_ci_error_zero_for_perfect_pattern():
    tms = random_tms(n=5, m=2, identity=True)
    cm = ComponentModel(tms, {"linear1": 5, "hidden": 4, "linear2": 5})
    ci = {
        "linear1": torch.eye(5),
        "hidden": torch.cat([torch.ones(5, 2), torch.zeros(5, 2)], 1),
        "linear2": torch.eye(5),
    }

    class Fixed(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, h):
            return self.v * 1.0

    for n in cm.names:
        cm.ci_fns[n] = Fixed(ci[n])
    assert identity_ci_error(cm, 5, ["linear1", "linear2"], {"hidden": 2}) == {
        "linear1": 0,
        "linear2": 0,
        "hidden": 0,
    }
    cm.ci_fns["linear1"] = Fixed(torch.ones(5, 5))  # every subcomponent on everywhere: 20 errors
    assert identity_ci_error(cm, 5, ["linear1"], {})["linear1"] == 20


def test_importance_minimality_p_annealing():
    assert annealed_p(0.0, 2.0, 0.5, 0.2, 0.8) == 2.0
    assert annealed_p(0.5, 2.0, 0.5, 0.2, 0.8) == pytest.approx(1.25)
    assert annealed_p(0.9, 2.0, 0.5, 0.2, 0.8) == 0.5
    assert annealed_p(0.9, 2.0, None, 0.2, 0.8) == 2.0


def test_short_spd_run_reduces_faithfulness():
    tms = random_tms(seed=3)
    data_fn = lambda b, g: sparse_features(b, 5, 0.05, g)
    losses = [
        Faithfulness(1.0),
        StochasticRecon(1.0),
        StochasticReconLayerwise(1.0),
        ImportanceMinimality(3e-3),
    ]
    d = decompose(
        tms,
        {"linear1": 10, "linear2": 10},
        data_fn,
        losses,
        steps=300,
        batch_size=128,
        lr=3e-3,
        warmup_steps=0,
        use_delta=False,
        log_every=10,
        progress=False,
    )
    f = d.history["faithfulness"]
    assert f[-1] < 0.1 * f[0]
    assert d.history["stochastic_recon"][-1] < d.history["stochastic_recon"][0]
    assert torch.allclose(d.model.target_weight("linear1"), tms.W)  # the target stayed frozen


def test_adversarial_attack_beats_random_masks():
    tms = random_tms(seed=4)
    cm = exact_tms_components(tms)
    set_ci(cm, -10.0)  # g = 0 everywhere: every subcomponent may be ablated
    x = sparse_features(256, 5, 0.3, torch.Generator().manual_seed(5))
    rand = random_mask_loss(cm, x, "mse", n_samples=8)
    hist = adversarial_attack(cm, x, n_steps=20, step_size=0.1, output_loss="mse", use_delta=False)
    assert len(hist) == 21
    assert hist[-1] >= rand and hist[-1] > hist[0]
    # with the true importances (g = 1 on every component) no mask can hurt: the attack finds nothing
    set_ci(cm, 10.0)
    assert adversarial_attack(cm, x, n_steps=5, use_delta=False)[-1] < 1e-10


def test_persistent_pgd_increases_loss_and_trains():
    from circuitbook.decomposition import PersistentPGDRecon, Step

    tms = random_tms(seed=6)
    cm = exact_tms_components(tms)
    x = sparse_features(128, 5, 0.3, torch.Generator().manual_seed(7))
    with torch.no_grad():
        target_out, inputs = cm.run_with_inputs(x)
    ci = cm.causal_importances(inputs)
    pgd = PersistentPGDRecon(n_ascent=1, routing=False)
    s = Step(cm, x, target_out, ci, None, 0.0)
    first = float(pgd(s).detach())
    for _ in range(10):
        last = pgd(s)
    assert float(last.detach()) >= first  # the persistent adversary only gets stronger on a fixed batch
    assert all(((r >= 0) & (r <= 1)).all() for r in pgd.sources.values())
    last.backward()
    assert cm.ci_fns["linear1"].W1.grad is not None  # gradients reach the importance functions


def test_resid_mlp_shapes_and_names():
    model = ResidMLP(100, 1000, 50)
    x = torch.zeros(3, 100)
    assert model(x).shape == (3, 100)
    assert torch.allclose(model.W_E.norm(dim=-1), torch.ones(100))
    cm = ComponentModel(model, {"mlp_in": 100, "mlp_out": 100})
    assert cm.component("mlp_in").U.shape == (50, 100) and cm.component("mlp_in").V.shape == (1000, 100)
    with pytest.raises(ValueError):
        ComponentModel(model, {"W_E": 10})


def test_feature_matches_finds_the_right_subcomponent():
    from circuitbook.decomposition import feature_matches

    g = torch.Generator().manual_seed(1)
    W = torch.randn(3, 6, generator=g)  # [m, n]
    perm = torch.randperm(6, generator=g)
    U, V = W[:, perm], torch.eye(6)[:, perm]  # subcomponent perm⁻¹[j] holds column j
    best, cos, ratio = feature_matches(U, V, W, "in")
    assert torch.equal(perm[best], torch.arange(6))
    assert torch.allclose(cos, torch.ones(6)) and torch.allclose(ratio, torch.ones(6))


def tiny_gpt():
    from circuitbook.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, n_ctx=16, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)).eval()


def test_lm_component_model_exact_and_edit():
    from circuitbook.decomposition.lm import ablation_ce_delta, lm_C, lm_eval
    from circuitbook.zoo import LM_CONFIGS

    gpt = tiny_gpt()
    C = lm_C(replace(LM_CONFIGS["ci"], C_attn=16, C_mlp=32))
    assert len(C) == 6 and C["blocks.0.mlp.W_in"] == 32 and C["blocks.0.attn.W_O"] == 16
    mods = dict(gpt.named_modules())
    C = {n: mods[n].in_features for n in C}  # C = d_in, so V = I gives an exact decomposition
    cm = ComponentModel(gpt, C)
    for n in cm.names:  # U Vᵀ = W exactly: U = W, V = I (C = d_in for every matrix here)
        W = cm.target_weight(n).detach()
        cm.set_from_weights(n, U=W.clone(), V=torch.eye(W.shape[1]))
    x = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(cm.masked_with(x, 1.0), gpt(x), atol=1e-5)
    set_ci(cm, 10.0)  # g = 1 everywhere: the CI-masked model is the target
    ev = lm_eval(cm, x)
    assert ev["ce_masked"] == pytest.approx(ev["ce_target"], abs=1e-5) and ev["kl_masked"] < 1e-8
    assert ev["alive"] == ev["total"] == sum(C.values()) and ev["l0_per_position"] == sum(C.values())
    # removing subcomponent c from W_out equals editing the weight by hand
    name, c = "blocks.0.mlp.W_out", 5
    delta = ablation_ce_delta(cm, x, name, c)  # [3, 15]
    edited = tiny_gpt()
    lin = dict(edited.named_modules())[name]
    with torch.no_grad():
        lin.weight[:, c] = 0.0  # u_c v_cᵀ with V = I is column c of W
    ce = torch.nn.functional.cross_entropy
    by_hand = ce(edited(x)[:, :-1].transpose(1, 2), x[:, 1:], reduction="none") - ce(
        gpt(x)[:, :-1].transpose(1, 2), x[:, 1:], reduction="none"
    )
    assert torch.allclose(delta, by_hand, atol=1e-5) and delta.abs().max() > 1e-4


def test_toy_artifacts_round_trip(tmp_path, monkeypatch):
    from circuitbook import config
    from circuitbook.zoo import toy_decomposition, toy_target

    monkeypatch.setitem(config.PROFILES, "ci", config.Profile("ci", tmp_path, shipped=False))
    target, meta = toy_target("tms_5_2", "ci", progress=False)
    d1, m1 = toy_decomposition("tms_5_2", target, "ci", progress=False, steps=20)
    d2, m2 = toy_decomposition("tms_5_2", target, "ci", progress=False, steps=20)  # loaded, not retrained
    assert m1["metrics"]["seconds"] == m2["metrics"]["seconds"]
    x = sparse_features(64, 5, 0.3, torch.Generator().manual_seed(0))
    _, inputs = d2.model.run_with_inputs(x)
    _, inputs1 = d1.model.run_with_inputs(x)
    g1, g2 = d1.model.causal_importances(inputs1).lower, d2.model.causal_importances(inputs).lower
    assert all(torch.equal(g1[n], g2[n]) for n in g1)
    assert torch.allclose(d2.model.masked_with(x, 1.0, use_delta=True), target(x), atol=1e-5)
    # a changed setting is never silently loaded: a generated (ci) cache entry is trained again
    _, m3 = toy_decomposition("tms_5_2", target, "ci", progress=False, steps=21)
    assert m3["config"] != m2["config"] and m3["metrics"]["seconds"] != m2["metrics"]["seconds"]


def exact_gpt_components(ci_fn: str = "mlp") -> tuple[torch.nn.Module, ComponentModel]:
    """The tiny GPT with every matrix decomposed exactly (C = d_in, U = W, V = I)."""
    from circuitbook.decomposition.lm import lm_C
    from circuitbook.zoo import LM_CONFIGS

    gpt = tiny_gpt()
    mods = dict(gpt.named_modules())
    C = {n: mods[n].in_features for n in lm_C(LM_CONFIGS["ci"])}
    cm = ComponentModel(gpt, C, ci_hidden=8, ci_fn=ci_fn)
    for n in cm.names:
        W = cm.target_weight(n).detach()
        cm.set_from_weights(n, U=W.clone(), V=torch.eye(W.shape[1]))
    return gpt, cm


def test_shared_mlp_ci_reads_the_input_vector():
    gpt, cm = exact_gpt_components("shared_mlp")
    x = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(cm.masked_with(x, 1.0), gpt(x), atol=1e-5)
    _, inputs = cm.run_with_inputs(x)
    ci = cm.causal_importances(inputs)
    n = "blocks.0.mlp.W_in"
    assert ci.lower[n].shape == (2, 16, cm.C[n])
    fn = cm.ci_fns[n.replace(".", "-")]
    expected = (fn.fc2(torch.nn.functional.gelu(fn.fc1(inputs[n])))).clamp(0, 1)  # MLP on x, not on x V
    assert torch.allclose(ci.lower[n], expected, atol=1e-6)
    with pytest.raises(ValueError):
        ComponentModel(tiny_gpt(), {n: 4}, ci_fn="nope")


def test_edited_logits_is_a_weight_edit():
    from circuitbook.decomposition.lm import edited_logits

    gpt, cm = exact_gpt_components()
    x = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(edited_logits(cm, x, {}), gpt(x), atol=1e-5)
    removal = {"blocks.0.mlp.W_out": [1, 7], "blocks.0.attn.W_Q": [3]}
    edited = tiny_gpt()
    mods = dict(edited.named_modules())
    with torch.no_grad():
        for n, cs in removal.items():
            mods[n].weight[:, cs] = 0.0  # with V = I, subcomponent c is column c of W
    out = edited_logits(cm, x, removal)
    assert torch.allclose(out, edited(x), atol=1e-5) and not torch.allclose(out, gpt(x), atol=1e-3)


def test_task_attribution_matches_finite_difference():
    from circuitbook.data.tasks import TaskBatch, logit_diff
    from circuitbook.decomposition.lm import task_attribution

    _, cm = exact_gpt_components()
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 50, (4, 12), generator=g)
    batch = TaskBatch(tokens, torch.tensor([11, 9, 7, 11]), torch.randint(0, 50, (4,), generator=g),
                      torch.randint(0, 50, (4,), generator=g), torch.zeros(4, dtype=torch.long))
    attr = task_attribution(cm, batch, chunk=3)  # chunked: the sum over chunks must still be a mean over prompts
    n, c, eps = "blocks.0.mlp.W_in", 5, 1e-3

    @torch.no_grad()
    def ld(alpha: float) -> float:
        m = torch.ones(4, 12, cm.C[n])
        m[..., c] = alpha
        return float(logit_diff(cm(tokens, masks={n: m}, deltas={n: torch.zeros_like(cm.target_weight(n))}),
                                batch).mean())

    fd = (ld(1.0) - ld(1.0 - eps)) / eps  # d LD / d alpha: removing c lowers LD by about this much
    assert attr[n][c].item() == pytest.approx(fd, rel=2e-2, abs=1e-4) and abs(fd) > 1e-3


def test_select_edit_respects_the_budget():
    from circuitbook.data.tasks import TaskBatch
    from circuitbook.decomposition.lm import select_edit, text_ce

    _, cm = exact_gpt_components()
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 50, (8, 12), generator=g)
    batch = TaskBatch(tokens, torch.full((8,), 11), torch.randint(0, 50, (8,), generator=g),
                      torch.randint(0, 50, (8,), generator=g), torch.zeros(8, dtype=torch.long))
    text = torch.randint(0, 50, (4, 16), generator=g)
    for budget in (0.0, 0.05):
        removal, rows = select_edit(cm, batch, text, n_candidates=6, budget=budget)
        assert len(rows) == 6 and sum(r["kept"] for r in rows) == sum(len(v) for v in removal.values())
        assert float((text_ce(cm, text, removal) - text_ce(cm, text)).mean()) <= budget + 1e-6
        assert all(r["ld_drop"] > 0 for r in rows if r["kept"])


def test_decompose_resumes_from_checkpoint(tmp_path):
    tms = random_tms()
    data = lambda b, g: sparse_features(b, 5, 0.3, g)  # noqa: E731
    kw = dict(steps=12, batch_size=32, warmup_steps=0, log_every=1, progress=False, ckpt_dir=tmp_path, ckpt_every=3,
              ckpt_config={"run": "test"})
    a = decompose(tms, {"linear1": 6, "linear2": 6}, data, [Faithfulness(1.0), StochasticRecon(1.0)], stop_at=5, **kw)
    assert a.history["step"] == list(range(6))
    b = decompose(tms, {"linear1": 6, "linear2": 6}, data, [Faithfulness(1.0), StochasticRecon(1.0)], **kw)
    assert b.history["step"] == list(range(12))  # steps 0-5 from the checkpoint, 6-11 run now
    assert b.history["faithfulness"][:6] == a.history["faithfulness"]
    # a finished run resumes to its end and does no more steps: same weights
    c = decompose(tms, {"linear1": 6, "linear2": 6}, data, [Faithfulness(1.0), StochasticRecon(1.0)], **kw)
    assert torch.equal(c.model.component("linear1").U, b.model.component("linear1").U)
    # another config never resumes
    with pytest.warns(UserWarning, match="another config"):
        decompose(tms, {"linear1": 6, "linear2": 6}, data, [Faithfulness(1.0)], **{**kw, "ckpt_config": {"run": 2}})


def test_zoo_configs_are_what_the_shipped_artifacts_record():
    """The typed configs must reproduce the shipped artifacts' stored configs exactly (or loading raises)."""
    import json
    from dataclasses import asdict

    from circuitbook.config import get_profile
    from circuitbook.decomposition import ToyDecompConfig
    from circuitbook.zoo import TOY_TARGETS, lm_config, toy_decomposition, toy_decomposition_config, toy_target

    stored = json.loads((get_profile("full").artifact_dir / "vpd_lm.json").read_text())["config"]
    assert json.loads(json.dumps({"decomposition": asdict(lm_config("full")), "seed": 0})) == stored
    for name in TOY_TARGETS:  # load_or_train raises ArtifactError on a shipped artifact with another config
        target, _ = toy_target(name, "full")
        toy_decomposition(name, target, "full", "spd")
    toy_decomposition("tms_5_2", toy_target("tms_5_2", "full")[0], "full", "vpd")
    assert toy_decomposition_config("tms_5_2", "ci", "vpd", steps=3).steps == 3
    with pytest.raises(ValueError, match="VPD needs its losses"):
        replace(toy_decomposition_config("tms_5_2", "full"), method="vpd")
    assert isinstance(toy_decomposition_config("resid_mlp", "full"), ToyDecompConfig)
