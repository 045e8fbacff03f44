"""Unit tests of circuitbook.dictionaries (SAEs, transcoders, rollout, graph JSON) and data.scenes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from circuitbook.data.scenes import COLOURS, make_dataset
from circuitbook.dictionaries.graph_json import (
    embedding_node,
    error_node,
    feature_node,
    graph_json_errors,
    graph_to_json,
    influence,
    logit_node,
    normalize_rows,
    prune_graph,
    validate_graph_json,
)
from circuitbook.dictionaries.rollout import (
    attention_rollout,
    iou,
    layer_rollout,
    pool_maps,
    rollout_heatmaps,
    token_maps,
)
from circuitbook.dictionaries.sae import (
    SAE,
    Transcoder,
    decoder_cosine,
    evaluate,
    fvu,
    steps_to_fvu,
    train_sae,
    train_transcoder,
)

torch.set_num_threads(1)


# ---- toys --------------------------------------------------------------------------------------------


def planted(d: int, n_atoms: int, k: int, N: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """x = D c with c k-sparse and positive; D [d, n_atoms] unit columns. Returns (X [N, d], D, C [N, n])."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(d, n_atoms, generator=g)
    D = D / D.norm(dim=0)
    idx = torch.rand(N, n_atoms, generator=g).topk(k, dim=1).indices
    C = torch.zeros(N, n_atoms).scatter(1, idx, torch.rand(N, k, generator=g) + 0.5)
    return C @ D.T, D, C


def sparse_mlp_toy(N: int = 2000, d_in: int = 16, d_out: int = 12, n: int = 10, k: int = 3, seed: int = 0):
    """An "MLP" that is exactly a transcoder: x = E^T c (E orthonormal rows), y = W c + b, c k-sparse >= 0."""
    g = torch.Generator().manual_seed(seed)
    E = torch.linalg.qr(torch.randn(d_in, n, generator=g)).Q.T  # [n, d_in], orthonormal rows
    W = torch.randn(d_out, n, generator=g)
    W = W / W.norm(dim=0)
    b = torch.randn(d_out, generator=g)
    idx = torch.rand(N, n, generator=g).topk(k, dim=1).indices
    C = torch.zeros(N, n).scatter(1, idx, torch.rand(N, k, generator=g) + 0.2)
    return C @ E, C @ W.T + b, (E, W, b)


# ---- SAEs and transcoders ----------------------------------------------------------------------------


def test_transcoder_equal_to_true_map_has_zero_fvu():
    X, Y, (E, W, b) = sparse_mlp_toy()
    tc = Transcoder.from_weights(E, torch.zeros(E.shape[0]), W, b, k=3)
    assert fvu(Y, tc(X)).item() <= 1e-6
    assert evaluate(tc, (X, Y))["fvu"] <= 1e-6
    assert evaluate(tc, (X, Y))["l0"] <= 3
    # the same toy seen as an SAE on shifted data: it subtracts b_dec before encoding, so it is exact
    o = torch.linspace(-1, 1, E.shape[1])
    sae = SAE.from_weights(E, torch.zeros(E.shape[0]), E.T.contiguous(), o, k=3)
    assert evaluate(sae, X + o)["fvu"] <= 1e-6
    # a wrong map is not FVU 0 (the metric can fail)
    assert fvu(Y, tc(X) + 0.1 * torch.randn_like(Y)).item() > 1e-3


def test_topk_keeps_k_and_decoder_unit_norm():
    sae = SAE(8, 32, k=4)
    z = sae.encode(torch.randn(100, 8) * 3)
    assert ((z > 0).sum(-1) <= 4).all() and (z >= 0).all()
    assert torch.allclose(sae.W_dec.norm(dim=0), torch.ones(32), atol=1e-5)


def test_sae_learns_planted_dictionary():
    X, D, _ = planted(d=64, n_atoms=96, k=3, N=8192)
    sae, hist = train_sae(X, 96, 3, steps=700, seed=0, lr=3e-3, progress=False)
    ev = evaluate(sae, X)
    assert ev["fvu"] < 0.05, ev["fvu"]
    assert abs(ev["l0"] - 3) < 0.2
    assert torch.allclose(sae.W_dec.norm(dim=0), torch.ones(96), atol=1e-4)  # unit-norm decoder kept
    recovered = (sae.W_dec.T @ D).abs().max(0).values  # best match of each true atom
    assert (recovered > 0.95).float().mean() > 0.9
    s = steps_to_fvu(hist, 0.1, window=10)
    assert s is not None and s < 700
    assert steps_to_fvu(hist, -1.0) is None


def test_transcoder_training_and_dead_features():
    X, Y, _ = sparse_mlp_toy(N=4096)
    tc, hist = train_transcoder((X, Y), 20, 3, steps=400, seed=0, lr=3e-3, progress=False)
    assert len(hist["fvu"]) == 400
    assert evaluate(tc, (X, Y))["fvu"] < 0.1
    # a feature whose encoder row can never fire is dead over the evaluation set
    with torch.no_grad():
        tc.W_enc[0] = 0.0
        tc.b_enc[0] = -100.0
    ev = evaluate(tc, (X, Y))
    assert bool(ev["dead"][0]) and ev["n_dead"] >= 1


def test_finetune_keeps_feature_indices():
    X, _, _ = planted(d=32, n_atoms=48, k=3, N=4096)
    base, _ = train_sae(X, 48, 3, steps=100, seed=0, progress=False)
    same, hist = train_sae(X, init=base, steps=0, progress=False)
    assert same is not base and hist["fvu"] == []
    assert torch.allclose(decoder_cosine(base, same), torch.ones(48), atol=1e-6)
    before = base.W_dec.detach().clone()
    tuned, _ = train_sae(X * 1.1, init=base, steps=50, seed=1, progress=False)
    assert torch.equal(base.W_dec, before)  # init is copied, never changed
    assert decoder_cosine(base, tuned).mean() > 0.8  # a short fine-tune keeps features in place
    # round trip through the artifact format
    again = SAE.from_tensors(tuned.to_tensors(), tuned.config())
    assert torch.allclose(again(X[:10]), tuned(X[:10]))


def test_callable_data_stream():
    X, _, _ = planted(d=16, n_atoms=24, k=2, N=2048)
    fn = lambda bs, g: X[torch.randint(0, X.shape[0], (bs,), generator=g)]
    sae, hist = train_sae(fn, 24, 2, steps=30, seed=0, progress=False)
    assert len(hist["fvu"]) == 30 and hist["fvu"][-1] < hist["fvu"][0]
    assert 0 <= evaluate(sae, fn, n_batches=2, batch_size=256)["fvu"] < 1.5


# ---- attention rollout -------------------------------------------------------------------------------


def test_rollout_of_identity_is_identity_and_maps_own_patch():
    L, H, grid, patch = 6, 4, (4, 4), 4
    T = 1 + grid[0] * grid[1]  # CLS + patches
    attns = [torch.eye(T).expand(H, T, T).clone() for _ in range(L)]
    R = attention_rollout(attns)
    assert torch.allclose(R, torch.eye(T), atol=1e-6)
    tok = 1 + 6  # patch (row 1, col 2)
    heat = rollout_heatmaps(attns, [tok], grid, image_size=16, patch_start=1)[0]  # [16, 16]
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[1 * patch : 2 * patch, 2 * patch : 3 * patch] = True
    assert heat[mask].min() > heat[~mask].max()
    assert iou(heat, mask) == 1.0
    other = torch.zeros(16, 16, dtype=torch.bool)
    other[:patch, :patch] = True
    assert iou(heat, other) == 0.0
    # a pooled token (2x2 patches) maps to its 8x8 pixel square
    pooled = rollout_heatmaps(attns, [3], grid, image_size=16, patch_start=1, block=2)[0]
    square = torch.zeros(16, 16, dtype=torch.bool)
    square[8:, 8:] = True
    assert iou(pooled, square) == 1.0


def test_rollout_order_and_head_selection():
    g = torch.Generator().manual_seed(0)
    T = 5
    A1, A2 = (torch.rand(1, T, T, generator=g).softmax(-1) for _ in range(2))
    R = attention_rollout([A1, A2], last_k=2, add_identity=False)
    assert torch.allclose(R, A2[0] @ A1[0], atol=1e-6)  # the later layer on the left
    assert not torch.allclose(R, A1[0] @ A2[0], atol=1e-3)
    assert torch.allclose(attention_rollout([A1, A2, A2], last_k=1, add_identity=False), A2[0])
    # 3 of 10 heads kept at q = 0.3: the focused ones (permutations), not the uniform ones
    perm = torch.eye(T)[torch.randperm(T, generator=g)]
    focused = torch.stack([perm, torch.eye(T), perm.T])
    attn = torch.cat([torch.full((7, T, T), 1 / T), focused])
    assert torch.allclose(layer_rollout(attn, q=0.3, add_identity=False), focused.mean(0), atol=1e-6)
    ident = layer_rollout(attn, q=0.3)  # + I, rows renormalised
    assert torch.allclose(ident.sum(-1), torch.ones(T))
    # pooled tokens: 2x2 blocks of a 4x4 grid -> 4 maps
    maps = token_maps(torch.eye(16), range(16), (4, 4)).reshape(4, 4, 4, 4)
    pooled = pool_maps(maps, block=2)
    assert pooled.shape == (4, 4, 4) and pooled[0, :2, :2].eq(1).all() and pooled[0, 2:].eq(0).all()


# ---- attribution graph JSON and pruning --------------------------------------------------------------


def toy_graph():
    """emb0 -> fa -> fb -> logit (strong path); emb1 -> fdangle (no outgoing edge); weak side path."""
    nodes = [
        feature_node(0, 0, 3, activation=1.0),  # 0 fa
        feature_node(1, 1, 7, activation=2.0),  # 1 fb
        feature_node(0, 1, 5, activation=0.5),  # 2 fdangle: has input, no output
        feature_node(1, 0, 9, activation=0.1),  # 3 fweak
        error_node(0, 1),  # 4
        embedding_node(0, 11),  # 5 emb0
        embedding_node(1, 12),  # 6 emb1
        logit_node(1, 42, "Mars", n_layers=2, prob=1.0, target=True),  # 7
        feature_node(1, 1, 8, activation=1.0),  # 8 fbias: strong output, but no input at all
    ]
    A = torch.zeros(9, 9)  # rows = targets, columns = sources
    A[0, 5] = 2.0  # emb0 -> fa
    A[1, 0] = 3.0  # fa -> fb
    A[7, 1] = 5.0  # fb -> logit
    A[2, 6] = 1.0  # emb1 -> fdangle
    A[3, 6] = 0.01  # emb1 -> fweak
    A[7, 3] = 0.01  # fweak -> logit
    A[1, 4] = 0.02  # error -> fb
    A[7, 8] = 5.0  # fbias -> logit
    A[1, 6] = -1.0  # emb1 inhibits fb: influence counts |A|
    return A, nodes


def test_influence_series_equals_inverse():
    A, nodes = toy_graph()
    An = normalize_rows(A)
    w = torch.zeros(9)
    w[7] = 1.0
    assert torch.allclose(influence(An, w), influence(An, w, method="inverse"), atol=1e-5)
    infl = influence(An, w)
    assert (infl >= 0).all() and infl[6] > 0.1  # the inhibiting embedding matters, by |weight|


def test_pruning_keeps_important_path_drops_dangling():
    A, nodes = toy_graph()
    res = prune_graph(A, nodes)
    kept = res.node_mask.tolist()
    assert kept[0] and kept[1]  # the fa -> fb path
    assert kept[5] and kept[6] and kept[7]  # embeddings and logits always
    assert not kept[2]  # dangling feature
    assert not kept[3]  # negligible influence
    assert res.influence[8] > res.influence[0] and not kept[8]  # influential, but a feature needs an input
    assert res.edge_mask[1, 0] and res.edge_mask[7, 1] and res.edge_mask[0, 5]
    assert not res.edge_mask[2].any() and not res.edge_mask[:, 2].any()
    g = graph_to_json(A, nodes, slug="toy", prompt="a b", prompt_tokens=["a", "b"])
    validate_graph_json(g)
    ids = {n["node_id"] for n in g["nodes"]}
    assert {"0_3_0", "1_7_1", "3_42_1", "E_11_0"} <= ids
    assert "0_5_1" not in ids  # dropped: no edges left
    assert {"source": "0_3_0", "target": "1_7_1", "weight": 3.0} in g["links"]
    # keep every node with influence, few edges: the error node loses its only edge, then the node itself
    loose = prune_graph(A, nodes, node_threshold=1.0, edge_threshold=0.9)
    assert loose.node_mask[0] and loose.node_mask[1] and not loose.node_mask[4]


def test_graph_json_validates_and_fails_without_required_fields():
    A, nodes = toy_graph()
    g = json.loads(json.dumps(graph_to_json(A, nodes, slug="toy", prompt="a b", prompt_tokens=["a", "b"])))
    assert graph_json_errors(g) == []
    unpruned = graph_to_json(A, nodes, slug="toy", prompt="a b", prompt_tokens=["a", "b"], prune=False)
    validate_graph_json(unpruned)
    assert len(unpruned["links"]) == int((A != 0).sum())
    breakers = [
        lambda o: o["nodes"][0].pop("node_id"),
        lambda o: o["nodes"][0].pop("feature_type"),
        lambda o: o["nodes"][0].pop("jsNodeId"),
        lambda o: o["links"][0].pop("weight"),
        lambda o: o["links"][0].pop("source"),
        lambda o: o["metadata"].pop("prompt_tokens"),
        lambda o: o["metadata"].pop("slug"),
        lambda o: o["qParams"].pop("supernodes"),
        lambda o: o.pop("links"),
        lambda o: o["nodes"][0].__setitem__("ctx_idx", "zero"),
        lambda o: o["links"][0].__setitem__("target", "no_such_node"),
    ]
    for br in breakers:
        bad = copy.deepcopy(g)
        br(bad)
        with pytest.raises(ValueError):
            validate_graph_json(bad)


# ---- synthetic scenes --------------------------------------------------------------------------------


def test_scenes_deterministic():
    a = make_dataset(40, seed=3)
    b = make_dataset(40, seed=3)
    assert torch.equal(a.images, b.images) and a.texts == b.texts
    assert all(torch.equal(a.masks[i][k], b.masks[i][k]) for i in range(40) for k in a.masks[i])
    head = make_dataset(10, seed=3)
    assert torch.equal(head.images, a.images[:10])  # image i depends on (seed, split, i) only
    assert not torch.equal(make_dataset(10, seed=4).images, head.images)
    assert not torch.equal(make_dataset(10, seed=3, split="test").images, head.images)
    assert a.images.shape == (40, 3, 32, 32) and a.images.dtype == torch.float32
    assert 0 <= a.images.min() and a.images.max() <= 1


def test_scene_masks_match_drawn_pixels():
    s = make_dataset(150, seed=0, noise=0.0, stars=False)
    for i in range(len(s)):
        img = s.images[i].permute(1, 2, 0)  # [H, W, 3]
        at = s.attrs[i]
        bg = torch.zeros(3) if at["background"] == "space" else torch.tensor(at["background"])
        fg = s.object_mask(i)
        assert fg.any()
        assert torch.allclose(img[~fg], bg.expand_as(img[~fg])), (i, at["kind"])
        assert ((img[fg] - bg).abs().amax(-1) > 0.02).all(), (i, at["kind"])
        if at["kind"] == "shape":
            for sh in at["shapes"]:
                m, colour = s.masks[i][sh["shape"]], torch.tensor(COLOURS[sh["colour"]])
                assert m.any() and torch.allclose(img[m], colour.expand_as(img[m]))
        if at["kind"] == "dots":
            dots = [k for k in s.masks[i] if k.startswith("dot_")]
            assert len(dots) == at["count"] and all(s.masks[i][k].any() for k in dots)
            if s.prompts[i].startswith("How many dots"):
                assert s.answers[i] == str(at["count"])
        if at["kind"] == "hand":
            m = s.masks[i]["hand"]
            assert torch.allclose(img[m], torch.tensor(at["skin"]).expand_as(img[m]))
        assert s.texts[i] == f"{s.prompts[i]} {s.answers[i]}"


def test_scene_occlusion():
    """A shuttle in front of a planet hides it: object masks are disjoint and show the front colour."""
    s = make_dataset(60, seed=2, kinds=("planet",), p_shuttle=1.0, noise=0.0, stars=False)
    overlaps = 0
    for i in range(len(s)):
        planet, shuttle = s.masks[i]["planet"], s.masks[i]["shuttle"]
        assert not (planet & shuttle).any()
        assert (s.images[i].permute(1, 2, 0)[shuttle].amin(-1) > 0.7).all()  # white / grey shuttle pixels
        r, (cx, cy) = s.attrs[i]["radius"], s.attrs[i]["center"]
        yy, xx = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
        overlaps += int((shuttle & ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r)).any())
    assert overlaps > 0  # some shuttles do cover part of the planet disc


def _components(m: np.ndarray) -> int:
    """Number of 4-connected components of a boolean image."""
    m, n, (H, W) = m.copy(), 0, m.shape
    for y0 in range(H):
        for x0 in range(W):
            if not m[y0, x0]:
                continue
            n, stack = n + 1, [(y0, x0)]
            m[y0, x0] = False
            while stack:
                y, x = stack.pop()
                for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= yy < H and 0 <= xx < W and m[yy, xx]:
                        m[yy, xx] = False
                        stack.append((yy, xx))
    return n


def test_finger_counts():
    train = make_dataset(30, seed=0, kinds=("hand",))
    assert all(a["n_fingers"] == 5 for a in train.attrs)  # the training prior
    for n in (1, 3, 5, 6, 9):
        s = make_dataset(12, seed=n, split="eval", kinds=("hand",), fingers=n, noise=0.0)
        for i in range(len(s)):
            fingers = [k for k in s.masks[i] if k.startswith("finger_")]
            assert len(fingers) == n == s.attrs[i]["n_fingers"]
            union = np.zeros((32, 32), bool)
            for k in fingers:
                assert s.masks[i][k].sum() >= 3
                union |= s.masks[i][k].numpy()
            assert _components(union) == n  # n separate fingers outside the palm
            if s.prompts[i] == "How many fingers?":
                assert s.answers[i] == str(n)


def test_scene_texts():
    s = make_dataset(200, seed=1)
    for i, a in enumerate(s.attrs):
        if a["kind"] == "planet" and s.prompts[i] == "What planet is this?":
            assert s.answers[i] == a["planet"].capitalize()
        if a["kind"] == "shape" and s.prompts[i].startswith("What colour is the"):
            assert s.answers[i] == a["colour"] and a["shape"] in s.prompts[i]
    planets = [t for t, a in zip(s.texts, s.attrs) if a["kind"] == "planet"]
    assert any("shuttle" in t for t in planets)  # the text association the VLM chapter needs
