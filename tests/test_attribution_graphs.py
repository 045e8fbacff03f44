"""Attribution graphs (completeness, edges checked against ablations in an independently frozen model),
their JSON export, and feature interventions, on tiny random GPTs and a tiny random VLM."""

from __future__ import annotations

import pytest
import torch

from circuitbook.dictionaries.attribution import (
    Intervention,
    attribute_gpt,
    attribute_vlm,
    effective_feature_values,
    intervention_hooks,
)
from circuitbook.dictionaries.graph_json import validate_graph_json
from circuitbook.dictionaries.sae import Transcoder
from circuitbook.dictionaries.swap import random_control_features, random_control_hooks, swap_interventions
from circuitbook.models.gpt import GPT, GPTConfig
from circuitbook.models.vlm import VLM, VLMConfig

torch.set_num_threads(1)

D, L, V = 16, 3, 50


def random_gpt(norm: str = "rms", dtype: torch.dtype = torch.float32, seed: int = 0, **kw) -> GPT:
    """A random GPT with large weights and nonzero biases everywhere (so every bias path is exercised)."""
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=V, n_ctx=24, d_model=D, n_layers=L, n_heads=2, d_head=8, d_mlp=32, norm=norm,
                    init_std=0.3, **kw)
    g = GPT(cfg).to(dtype).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("bias") or name.endswith(".b") or "sink" in name or "bigram" in name:
                p.normal_(0, 0.1)
    return g


def random_transcoders(d: int, n_layers: int, dtype: torch.dtype = torch.float32, n: int = 64, k: int = 8):
    tcs = []
    for layer in range(n_layers):
        tc = Transcoder(d, n, k, seed=layer + 1).to(dtype)
        with torch.no_grad():
            tc.b_enc.normal_(0, 0.1)
            tc.b_dec.normal_(0, 0.1)
        tcs.append(tc)
    return tcs


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-6)).max())


# ---- completeness ------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm,extra", [("rms", {}), ("layer", {"attn_sink": True, "bigram": True})])
@pytest.mark.parametrize("demean", [True, False])
def test_completeness_gpt(norm, extra, demean):
    g = random_gpt(norm, **extra)
    tcs = random_transcoders(D, L)
    tokens = torch.randint(0, V, (12,), generator=torch.Generator().manual_seed(1))
    G = attribute_gpt(g, tokens, tcs, demean_logits=demean)
    sl = G.slices()
    assert G.n_features == L * 12 * 8  # k active features at every layer and position (random TC, b_enc ~ 0)
    # the targets' values are the model's own numbers
    with torch.no_grad():
        logits = g(tokens[None])[0, -1]
        ref = logits[G.logit_tokens] - (logits.mean() if demean else 0.0)
        _, cache = g.run_with_cache(tokens[None])
    assert torch.allclose(G.value[sl["logits"]], ref, atol=1e-5)
    for k in [0, G.n_features // 2, G.n_features - 1]:
        layer, pos, f = G.features[k].tolist()
        pre = tcs[layer].pre_acts(cache[f"blocks.{layer}.ln2.hook_normalized"][0, pos])[f]
        assert torch.allclose(G.value[k], pre, atol=1e-5)
    # completeness: value = sum of incoming edges (features, errors, inputs) + bias, to 1e-4 relative
    rows = torch.cat([torch.arange(G.n_features), torch.arange(len(G.nodes))[sl["logits"]]])
    total = G.adjacency[rows].sum(1) + G.bias[rows]
    assert rel_err(total, G.value[rows]) < 1e-4
    assert float(G.completeness_error().max()) < 1e-4
    # the edges carry the value, not the bias: dropping any one kind of source breaks completeness
    for kind in ("features", "errors", "inputs"):
        partial = total - G.adjacency[rows][:, sl[kind]].sum(1)
        assert rel_err(partial, G.value[rows]) > 1e-2, kind


def test_completeness_float64_is_exact_and_sources_never_have_rows():
    g = random_gpt("layer", torch.float64, seed=3)
    tcs = random_transcoders(D, L, torch.float64)
    G = attribute_gpt(g, torch.randint(0, V, (9,), generator=torch.Generator().manual_seed(2)), tcs)
    assert float(G.completeness_error().max()) < 1e-10
    sl = G.slices()
    for kind in ("errors", "inputs"):
        assert not G.adjacency[sl[kind]].any()


def test_completeness_with_a_centring_dictionary():
    """An SAE-style encoder (W_enc (x - b_dec) + b_enc) has one more constant; the bias must carry it."""
    from circuitbook.dictionaries.sae import SAE

    g = random_gpt(seed=8)
    tcs = random_transcoders(D, L)
    sae = SAE(D, 64, 8, seed=9)
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.5)
    G = attribute_gpt(g, torch.randint(0, V, (7,), generator=torch.Generator().manual_seed(9)), [tcs[0], sae, tcs[2]])
    assert float(G.completeness_error().max()) < 1e-4


def test_completeness_vlm():
    torch.manual_seed(0)
    lm = GPTConfig(vocab_size=V, n_ctx=32, d_model=D, n_layers=2, n_heads=2, d_head=8, d_mlp=32, init_std=0.3)
    cfg = VLMConfig(image_size=16, patch_size=4, vit_d_model=16, vit_layers=2, vit_heads=2, vit_d_head=8,
                    vit_d_mlp=32, pool=2, lm=lm)
    vlm = VLM(cfg).eval()
    tcs = random_transcoders(D, 2)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, V, (6,), generator=torch.Generator().manual_seed(1))
    G = attribute_vlm(vlm, image, tokens, tcs)
    assert G.n_pos == cfg.n_img + 6 == 10
    assert float(G.completeness_error().max()) < 1e-4
    assert float(G.completeness_error("terms").max()) < 1e-6
    G64 = attribute_vlm(vlm, image, tokens, tcs, dtype=torch.float64)  # copies: the model stays float32
    assert float(G64.completeness_error().max()) < 1e-10 and vlm.lm.embed.weight.dtype == torch.float32
    assert torch.allclose(G64.adjacency.float(), G.adjacency, atol=1e-4)
    with torch.no_grad():
        logits = vlm(image[None], tokens[None])[0, -1]
    assert torch.allclose(G.value[G.slices()["logits"]], logits[G.logit_tokens] - logits.mean(), atol=1e-5)
    inputs = [n for n in G.nodes if n["feature_type"] == "embedding"]
    assert [n["node_id"] for n in inputs[:2]] == [f"E_{V}_0", f"E_{V}_1"]  # image tokens share one id
    assert inputs[0]["clerp"].startswith("<img")
    named = attribute_vlm(vlm, image, tokens, tcs, token_strings=lambda t: f"t{t}")
    assert named.input_labels[cfg.n_img:] == [f"t{t}" for t in tokens.tolist()]
    # image tokens matter: some feature in the text reads from the image prefix
    assert G.adjacency[: G.n_features, G.slices()["inputs"]][:, : cfg.n_img].abs().sum() > 0


# ---- each edge equals the effect of removing its source in an independently frozen model -----------


def frozen_run(g: GPT, tokens: torch.Tensor, cache, edit: tuple[str, int, torch.Tensor] | None):
    """The model with patterns, norm scales and every MLP output frozen at their clean values (the
    replacement model for fixed features and errors), optionally subtracting a vector at one site/position.
    Returns (MLP inputs per layer [S, d], logits [S, V])."""
    hooks, mlp_in = [], {}
    for name in cache.keys():
        if name.endswith("hook_scale") or name.endswith("hook_pattern") or name.endswith("hook_mlp_out"):
            hooks.append((name, lambda act, hook, v=cache[name]: v.clone()))
    for layer in range(g.cfg.n_layers):
        hooks.append((f"blocks.{layer}.ln2.hook_normalized",
                      lambda act, hook, layer=layer: mlp_in.__setitem__(layer, act[0]) or act))
    if edit is not None:
        site, pos, vec = edit

        def sub(act, hook):
            act = act.clone()
            act[0, pos] -= vec
            return act

        hooks.append((site, sub))  # registered last: runs after a freezing hook on the same site
    with torch.no_grad():
        logits = g.run_with_hooks(tokens[None], fwd_hooks=hooks)[0]
    return mlp_in, logits


def test_edges_equal_source_ablations_in_the_frozen_model():
    g = random_gpt("rms", torch.float64, seed=5)
    tcs = random_transcoders(D, L, torch.float64)
    tokens = torch.randint(0, V, (8,), generator=torch.Generator().manual_seed(3))
    G = attribute_gpt(g, tokens, tcs, demean_logits=False)
    with torch.no_grad():
        _, cache = g.run_with_cache(tokens[None])
    base_in, base_logits = frozen_run(g, tokens, cache, None)
    sl = G.slices()
    S = G.n_pos

    def target_values(mlp_in, logits):
        vals = torch.stack([tcs[la].pre_acts(mlp_in[la][p])[f] for la, p, f in G.features.tolist()])
        return torch.cat([vals, logits[G.logit_pos, G.logit_tokens]])

    base = target_values(base_in, base_logits)
    rows = torch.cat([torch.arange(G.n_features), torch.arange(len(G.nodes))[sl["logits"]]])
    gen = torch.Generator().manual_seed(0)
    picks = {"features": torch.randint(0, G.n_features, (6,), generator=gen).tolist(),
             "errors": [sl["errors"].start + 0 * S + 2, sl["errors"].start + 1 * S + 5],
             "inputs": [sl["inputs"].start + 0, sl["inputs"].start + 4]}
    with torch.no_grad():
        x0 = g.embed(tokens) + g.pos_embed(torch.arange(S))
    for kind, cols in picks.items():
        for col in cols:
            if kind == "features":
                la, p, f = G.features[col].tolist()
                vec = G.activation[col] * tcs[la].W_dec[:, f]
                site = f"blocks.{la}.hook_mlp_out"
            elif kind == "errors":
                la, p = divmod(col - sl["errors"].start, S)
                x_in = cache[f"blocks.{la}.ln2.hook_normalized"][0, p]
                vec = cache[f"blocks.{la}.hook_mlp_out"][0, p] - tcs[la](x_in)
                site = f"blocks.{la}.hook_mlp_out"
            else:
                p = col - sl["inputs"].start
                vec, site = x0[p], "blocks.0.hook_resid_pre"
            effect = base - target_values(*frozen_run(g, tokens, cache, (site, p, vec)))
            assert torch.allclose(G.adjacency[rows, col], effect, atol=1e-9, rtol=1e-7), (kind, col)
            assert effect.abs().max() > 1e-6  # the ablation did something


def test_edges_respect_causality():
    g = random_gpt()
    G = attribute_gpt(g, torch.randint(0, V, (10,), generator=torch.Generator().manual_seed(4)),
                      random_transcoders(D, L))
    F = G.features
    A = G.adjacency[: G.n_features, : G.n_features]
    later_layer = F[None, :, 0] >= F[:, None, 0]  # [target, source]: source not strictly before the target
    later_pos = F[None, :, 1] > F[:, None, 1]
    assert not A[later_layer | later_pos].any()
    assert A[~(later_layer | later_pos)].abs().sum() > 0
    err = G.adjacency[: G.n_features, G.slices()["errors"]].reshape(G.n_features, L, G.n_pos)
    for la in range(L):
        assert not err[F[:, 0] <= la, la].any()


def test_graph_json_export_validates_and_prunes():
    g = random_gpt()
    tokens = torch.randint(0, V, (10,), generator=torch.Generator().manual_seed(4))
    G = attribute_gpt(g, tokens, random_transcoders(D, L), token_strings=lambda t: f"t{t}")
    full = G.to_json("test", "a prompt", prune=False)
    pruned = G.to_json("test", "a prompt")
    validate_graph_json(full)
    validate_graph_json(pruned)
    assert len(pruned["nodes"]) < len(full["nodes"]) and len(pruned["links"]) < len(full["links"])
    logits = [n for n in pruned["nodes"] if n["feature_type"] == "logit"]
    assert len(logits) == len(G.logit_tokens) and sum(n["is_target_logit"] for n in logits) == 1
    assert abs(sum(n["token_prob"] for n in logits) - float(G.logit_probs.sum())) < 1e-6
    # a link's weight is the adjacency entry of (target row, source column)
    index = {n["node_id"]: i for i, n in enumerate(G.nodes)}
    link = max(full["links"], key=lambda l: abs(l["weight"]))
    assert link["weight"] == pytest.approx(float(G.adjacency[index[link["target"]], index[link["source"]]]))


# ---- interventions --------------------------------------------------------------------------------


def mlp_sites(model, args: tuple, hooks, prefix=""):
    """Per layer: (MLP input, MLP output as the model saw it, the true MLP of that input), with hooks on."""
    names = [f"{prefix}blocks.{la}.{s}" for la in range(L) for s in ("ln2.hook_normalized", "hook_mlp_out")]
    store = {}
    keep = [(n, lambda act, hook, n=n: store.__setitem__(n, act.detach().clone())) for n in names]
    with torch.no_grad():
        logits = model.run_with_hooks(*args, fwd_hooks=hooks + keep)
    blocks = model.lm.blocks if prefix else model.blocks
    out = []
    for la in range(L):
        x = store[f"{prefix}blocks.{la}.ln2.hook_normalized"]
        with torch.no_grad():
            out.append((x, store[f"{prefix}blocks.{la}.hook_mlp_out"], blocks[la].mlp(x)))
    return out, logits


def test_intervention_sets_feature_values_where_intended():
    g = random_gpt("rms", torch.float64, seed=7)
    tcs = random_transcoders(D, L, torch.float64)
    tokens = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(5))
    clean, clean_logits = mlp_sites(g, (tokens,), [])
    f2 = int(tcs[2].encode(clean[2][0]).sum((0, 1)).argmax())  # a feature that is active at layer 2
    ivs = [Intervention(0, 3, 5, 2.5), Intervention(0, 3, 11, 0.0), Intervention(1, 6, 7, -1.0),
           Intervention(2, None, f2, 4.0)]
    sites, logits = mlp_sites(g, (tokens,), intervention_hooks(tcs, ivs))
    for la, (x, out, true) in enumerate(sites):
        mine = [iv for iv in ivs if iv.layer == la]
        feats = sorted({iv.feature for iv in mine})
        vals, outside = effective_feature_values(tcs[la], x, true, out, feats)  # [B, S, n], [B, S, d]
        assert outside.abs().max() < 1e-9  # the edit is made of the intervened features' decoder columns only
        touched = torch.zeros(x.shape[:2], dtype=torch.bool)
        for iv in mine:
            pos = slice(None) if iv.pos is None else iv.pos
            got = vals[:, pos, feats.index(iv.feature)]
            assert torch.allclose(got, torch.full_like(got, iv.value), atol=1e-9), iv
            touched[:, pos] = True
        assert torch.equal(out[~touched], true[~touched])  # untouched positions: the MLP's own output
    # layer 0 is edited at position 3 only: earlier positions see nothing, later layers and positions do
    assert torch.equal(sites[0][0], clean[0][0])
    assert torch.equal(sites[1][0][:, :3], clean[1][0][:, :3])
    assert not torch.allclose(sites[1][0][:, 3:], clean[1][0][:, 3:])
    assert not torch.allclose(logits, clean_logits)
    # z is read live: at layer 2 it differs from the clean run's, so a cached z would miss the target value
    z_clean = tcs[2].encode(clean[2][0])[..., f2]
    assert (z_clean - tcs[2].encode(sites[2][0])[..., f2]).abs().max() > 1e-3


def test_intervention_to_the_current_value_is_a_no_op_and_works_on_a_vlm():
    torch.manual_seed(0)
    lm = GPTConfig(vocab_size=V, n_ctx=32, d_model=D, n_layers=L, n_heads=2, d_head=8, d_mlp=32, init_std=0.3)
    cfg = VLMConfig(image_size=16, patch_size=4, vit_d_model=16, vit_layers=1, vit_heads=2, vit_d_head=8,
                    vit_d_mlp=32, pool=2, lm=lm)
    vlm = VLM(cfg).eval()
    tcs = random_transcoders(D, L)
    images = torch.rand(2, 3, 16, 16)
    tokens = torch.randint(0, V, (2, 5))
    base, base_logits = mlp_sites(vlm, (images, tokens), [], prefix="lm.")
    z = tcs[1].encode(base[1][0]).detach()  # [B, S, F]
    f = int(z[0, 2].argmax())
    assert z[0, 2, f] > 0
    same = intervention_hooks(tcs, [Intervention(1, 2, f, float(z[0, 2, f]))], prefix="lm.")
    _, same_logits = mlp_sites(vlm, (images[:1], tokens[:1]), same, prefix="lm.")
    assert torch.allclose(same_logits, base_logits[:1], atol=1e-5)
    off = intervention_hooks(tcs, [Intervention(1, 2, f, 0.0)], prefix="lm.")
    sites, off_logits = mlp_sites(vlm, (images, tokens), off, prefix="lm.")
    x, out, true = sites[1]
    vals, _ = effective_feature_values(tcs[1], x, true, out, [f])
    assert torch.allclose(vals[:, 2, 0], torch.zeros(2), atol=1e-5)
    assert not torch.allclose(off_logits, base_logits)


def test_supernodes_merge_links_and_the_view_draws():
    from circuitbook.dictionaries.graph_json import merge_supernodes, plot_graph

    g = random_gpt()
    tokens = torch.randint(0, V, (8,), generator=torch.Generator().manual_seed(6))
    G = attribute_gpt(g, tokens, random_transcoders(D, L))
    obj = G.to_json("t", "p")
    feats = [n["node_id"] for n in obj["nodes"] if n["feature_type"] == "cross layer transcoder"]
    group = ["grp", *feats[:3]]
    merged = merge_supernodes(obj, [group])
    validate_graph_json(merged)
    assert merged["qParams"]["supernodes"] == [group]
    ids = {n["node_id"] for n in merged["nodes"]}
    assert "S_grp" in ids and not ids & set(feats[:3]) and len(ids) == len(obj["nodes"]) - 2
    # every link leaving the group, to one target, becomes one link with the summed weight
    out = {}
    for link in obj["links"]:
        if link["source"] in feats[:3] and link["target"] not in feats[:3]:
            out[link["target"]] = out.get(link["target"], 0.0) + link["weight"]
    got = {l["target"]: l["weight"] for l in merged["links"] if l["source"] == "S_grp"}
    assert got.keys() == out.keys() and all(abs(got[k] - out[k]) < 1e-9 for k in out)
    assert not any(l["source"] == l["target"] for l in merged["links"])
    fig = plot_graph(merged)
    names = {t.name for t in fig.data if t.name}
    assert {"supernode", "embedding", "logit"} <= names


# ---- a transcoder that is the true MLP ----------------------------------------------------------------


def linear_transcoder(W: torch.Tensor, b: torch.Tensor) -> Transcoder:
    """A transcoder equal to the linear map x -> W x + b: features relu(x_i) and relu(-x_i), all kept (k = 2d),
    decoded by W and -W, so W relu(x) - W relu(-x) + b = W x + b exactly."""
    d = W.shape[1]
    eye = torch.eye(d, dtype=W.dtype)
    return Transcoder.from_weights(torch.cat([eye, -eye]), torch.zeros(2 * d, dtype=W.dtype), torch.cat([W, -W], 1),
                                   b.clone(), k=2 * d).to(W.dtype)


def test_transcoder_equal_to_a_linear_mlp_has_zero_fvu_and_zero_error_nodes():
    from circuitbook.dictionaries.sae import evaluate

    g = random_gpt(dtype=torch.float64)
    torch.manual_seed(3)
    mlps = [torch.nn.Linear(D, D).double() for _ in range(L)]
    for block, lin in zip(g.blocks, mlps):
        block.mlp = lin  # a linear toy: each MLP is an affine map
    tcs = [linear_transcoder(lin.weight.detach(), lin.bias.detach()) for lin in mlps]
    X = torch.randn(500, D, dtype=torch.float64)
    with torch.no_grad():
        Y = mlps[0](X)
    assert evaluate(tcs[0], (X, Y))["fvu"] < 1e-20
    off = Transcoder.from_weights(tcs[0].W_enc, tcs[0].b_enc, tcs[0].W_dec * 1.01, tcs[0].b_dec,
                                  k=2 * D).double()
    assert evaluate(off, (X, Y))["fvu"] > 1e-5  # the measure sees a 1% error in the decoder
    # in a graph, the transcoders explain every MLP exactly: every error node carries nothing
    tokens = torch.randint(0, V, (9,), generator=torch.Generator().manual_seed(7))
    G = attribute_gpt(g, tokens, tcs, logit_tokens=[1, 2])
    assert float(G.activation[G.slices()["errors"]].max()) < 1e-12
    assert float(G.completeness_error().max()) < 1e-10
    with_off = attribute_gpt(g, tokens, [off, *tcs[1:]], logit_tokens=[1, 2])
    assert float(with_off.activation[with_off.slices()["errors"]].max()) > 1e-4


# ---- late fusion and the feature swap's random control -----------------------------------------------


def test_late_fusion_graph_has_no_image_edges_into_early_text_features():
    torch.manual_seed(0)
    lm = GPTConfig(vocab_size=V, n_ctx=32, d_model=D, n_layers=L, n_heads=2, d_head=8, d_mlp=32, init_std=0.3)
    cfg = VLMConfig(image_size=16, patch_size=4, vit_d_model=16, vit_layers=1, vit_heads=2, vit_d_head=8,
                    vit_d_mlp=32, pool=2, lm=lm, late_fusion_layer=2)
    vlm = VLM(cfg).eval()
    tcs = random_transcoders(D, L)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, V, (6,), generator=torch.Generator().manual_seed(1))
    G = attribute_vlm(vlm, image, tokens, tcs, dtype=torch.float64)
    assert float(G.completeness_error().max()) < 1e-10
    n_img, sl = cfg.n_img, G.slices()
    text_feat = G.features[:, 1] >= n_img
    from_img = torch.cat([G.adjacency[:, : G.n_features][:, ~text_feat],  # image-position features
                          G.adjacency[:, sl["inputs"]][:, :n_img]], 1).abs().sum(1)  # image tokens
    early_text = text_feat & (G.features[:, 0] < 2)
    assert early_text.any() and (text_feat & (G.features[:, 0] == 2)).any()
    assert float(from_img[: G.n_features][early_text].max()) == 0.0  # layers 0-1 at the text: no image edge
    assert float(from_img[: G.n_features][text_feat & (G.features[:, 0] == 2)].max()) > 0  # layer 2 reads it


def test_swap_rule_and_its_same_norm_random_control():
    g = random_gpt("rms", torch.float64, seed=3)
    tcs = random_transcoders(D, L, torch.float64)
    gen = torch.Generator().manual_seed(0)
    z_a = {la: torch.rand(5, 4, 64, generator=gen, dtype=torch.float64) for la in range(L)}
    z_b = {la: torch.rand(5, 4, 64, generator=gen, dtype=torch.float64) for la in range(L)}
    z_a[1][:, 2, 9] += 5.0  # the most A-specific feature at (1, 2)
    z_b[1][:, 2, 30] += 3.0  # the most B-specific one
    ivs = swap_interventions(z_a, z_b, [0, 1], [2, 3], n=4)
    assert len(ivs) == 2 * 2 * 8
    at = [iv for iv in ivs if (iv.layer, iv.pos) == (1, 2)]
    assert Intervention(1, 2, 9, 0.0) in at[:4]
    assert at[4].feature == 30 and abs(at[4].value - float(z_b[1][:, 2, 30].mean())) < 1e-12
    ctrl = random_control_features(ivs, 64, n=4, seed=0)
    assert ctrl == random_control_features(ivs, 64, n=4, seed=0) != random_control_features(ivs, 64, n=4, seed=1)
    for (la, p), (down, up) in ctrl.items():
        chosen = {iv.feature for iv in ivs if (iv.layer, iv.pos) == (la, p)}
        assert len(down) == len(up) == 4 and len(set(down + up)) == 8 and not chosen & set(down + up)
    tokens = torch.randint(0, V, (3, 6), generator=torch.Generator().manual_seed(5))
    clean, _ = mlp_sites(g, (tokens,), [])
    swap, _ = mlp_sites(g, (tokens,), intervention_hooks(tcs, ivs))
    rand, _ = mlp_sites(g, (tokens,), random_control_hooks(tcs, ivs, ctrl))
    # layer 0 sees the same inputs in all three runs: the control moves it exactly as far, along its own features
    x0, out_swap, true0 = swap[0]
    _, out_rand, _ = rand[0]
    assert torch.equal(rand[0][0], clean[0][0])
    d_swap, d_rand = out_swap - true0, out_rand - true0  # [B, S, d]
    assert torch.allclose(d_rand.norm(dim=-1), d_swap.norm(dim=-1), atol=1e-10)
    assert float(d_swap[:, 2:4].norm(dim=-1).min()) > 0 and float(d_rand[:, [0, 1, 4, 5]].abs().max()) == 0
    for p in (2, 3):
        down, up = ctrl[(0, p)]
        _, outside = effective_feature_values(tcs[0], x0[:, p], true0[:, p], out_rand[:, p], down + up)
        assert outside.abs().max() < 1e-9  # made of the random features' decoder columns only
        cos = torch.nn.functional.cosine_similarity(d_rand[:, p], d_swap[:, p], dim=-1)
        assert float(cos.abs().max()) < 0.99  # a different direction
