"""Tests of circuits/: nodes, mean ablation, the Heaviside mask, bisection, edges, learned and
attribution pruning, the search and the drawings, on tiny GPTs built here."""

import matplotlib
import numpy as np
import pytest
import torch

from circuitbook.circuits import (
    FINAL_SITE,
    Circuit,
    NodeSet,
    PruneConfig,
    ablation_hooks,
    all_kept,
    attribution_scores,
    bisect_smallest,
    circuit_alone,
    circuit_edges,
    circuit_removed,
    circuit_size,
    draw_circuit,
    evaluate_masked,
    fit_logit_calibration,
    heaviside,
    mean_activations,
    plotly_circuit,
    prune,
    run_masked,
    search,
    size_loss_curve,
    top_activations,
    top_k_kept,
    train_mask,
)
from circuitbook.data.tasks import TaskBatch, logit_diff
from circuitbook.models.gpt import GPT, GPTConfig
from circuitbook.zoo.circuits import cached_mean_activations, cached_prune, cached_search

matplotlib.use("Agg")
TINY = dict(vocab_size=20, n_ctx=8, d_model=16, n_layers=2, n_heads=2, d_head=4, d_mlp=16)


def tiny_gpt(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**(TINY | kw))).eval()


def stream(n: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 20, n).astype(np.uint16)


# ---------------------------------------------------------------- nodes


def test_nodeset_indexing_round_trips():
    nodes = NodeSet.from_model(tiny_gpt())
    assert nodes.sites[0] == "blocks.0.ln1.hook_normalized" and nodes.sites[-1] == FINAL_SITE
    assert len(nodes.sites) == 2 * 8 + 1
    assert len(nodes) == 2 * (16 + 3 * 8 + 16 + 16 + 16 + 16) + 16
    for i in range(len(nodes)):
        assert nodes.index(*nodes.node(i)) == i
    assert nodes.node(nodes.offset("blocks.1.attn.hook_v") + 5) == ("blocks.1.attn.hook_v", 5)
    assert nodes.label("blocks.1.attn.hook_v", 5) == "L1 v h1.1"
    flat = torch.arange(len(nodes)).float()
    assert torch.equal(nodes.cat(nodes.split(flat)), flat)
    assert NodeSet.from_dict(nodes.to_dict()) == nodes
    neurons = NodeSet.from_model(tiny_gpt(), kinds=("neuron",))
    assert neurons.sites == ("blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post") and len(neurons) == 32


# ---------------------------------------------------------------- mean ablation


def test_full_mask_reproduces_the_model_exactly():
    model = tiny_gpt()
    nodes = NodeSet.from_model(model)
    means = mean_activations(model, stream(), nodes, n_batches=2, batch_size=4)
    tokens = torch.randint(0, 20, (5, 8))
    assert torch.equal(run_masked(model, tokens, all_kept(nodes), means), model(tokens))


def test_mean_activations_are_the_average_over_batch_and_positions():
    model = tiny_gpt()
    nodes = NodeSet.from_model(model)
    toks = stream(200)
    means = mean_activations(model, toks, nodes, n_batches=1, batch_size=3)
    from circuitbook.train import get_batch

    x = get_batch(toks, 10_000_000, 3, 8, 0)  # the window the function draws
    _, cache = model.run_with_cache(x)
    for site in ("blocks.0.attn.hook_k", "blocks.1.mlp.hook_post", FINAL_SITE):
        assert torch.allclose(means[site], cache[site].reshape(24, -1).mean(0), atol=1e-6)


@pytest.mark.parametrize("site", ["blocks.0.mlp.hook_post", "blocks.1.attn.hook_q", "blocks.0.hook_attn_out"])
def test_ablating_every_node_of_a_site_sets_it_to_its_mean(site):
    model = tiny_gpt()
    nodes = NodeSet.from_model(model)
    means = mean_activations(model, stream(), nodes, n_batches=2, batch_size=4)
    masks = all_kept(nodes)
    masks[site] = torch.zeros(nodes.width(site))
    seen = {}
    capture = lambda act, hook: seen.__setitem__("act", act.detach().clone())
    model.run_with_hooks(torch.randint(0, 20, (3, 8)), fwd_hooks=ablation_hooks(masks, means) + [(site, capture)])
    act = seen["act"].reshape(3, 8, -1)  # [batch, pos, width]
    assert torch.equal(act, means[site].expand_as(act))
    # a half mask interpolates: half of the way from each activation to the mean
    _, cache = model.run_with_cache(torch.zeros(1, 8, dtype=torch.long))
    half = {site: torch.full((nodes.width(site),), 0.5)}
    model.run_with_hooks(torch.zeros(1, 8, dtype=torch.long), fwd_hooks=ablation_hooks(half, means) + [(site, capture)])
    clean = cache[site].reshape(1, 8, -1)
    assert torch.allclose(seen["act"].reshape(1, 8, -1), 0.5 * clean + 0.5 * means[site], atol=1e-6)


# ---------------------------------------------------------------- the mask


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0])
def test_heaviside_forward_and_sigmoid_surrogate_gradient(T):
    x = torch.tensor([-1.0, -0.3, 0.0, 1e-4, 0.2, 1.0], requires_grad=True)
    y = heaviside(x, T)
    assert y.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # kept iff > 0
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    (y * w).sum().backward()
    s = torch.sigmoid(x.detach() / T)
    assert torch.allclose(x.grad, w * s * (1 - s) / T)
    # the same as autograd's derivative of sigmoid(x / T)
    x2 = x.detach().clone().requires_grad_(True)
    (torch.sigmoid(x2 / T) * w).sum().backward()
    assert torch.allclose(x.grad, x2.grad)


# ---------------------------------------------------------------- bisection


def test_bisection_finds_the_smallest_count_that_meets_the_target():
    calls = []

    def loss(k):
        calls.append(k)
        return 1.0 / (k + 1)

    k, seen = bisect_smallest(loss, 1000, 0.1)
    assert k == 9 and loss(9) <= 0.1 < loss(8)
    assert len(set(calls[:-2])) <= 12  # O(log n) evaluations
    step = lambda k: 0.0 if k >= 37 else 1.0
    assert bisect_smallest(step, 100, 0.5)[0] == 37
    assert bisect_smallest(step, 37, 0.5)[0] == 37
    assert bisect_smallest(lambda k: 0.0, 100, 0.5)[0] == 0
    assert bisect_smallest(lambda k: 1.0, 100, 0.5)[0] == 100  # unreachable: everything kept


def test_top_k_kept_breaks_ties_toward_the_lower_index():
    s = torch.tensor([0.5, -1.0, 0.5, 0.9, -1.0])
    assert top_k_kept(s, 2).tolist() == [True, False, False, True, False]
    assert top_k_kept(s, 4).tolist() == [True, True, True, True, False]


def test_logit_calibration_lowers_the_loss():
    diff = torch.tensor([0.3, 0.2, 0.4, -0.1, 0.5, 0.6])
    correct, wrong = torch.tensor([3, 3, 3, 4, 4, 4]), torch.tensor([4, 4, 4, 3, 3, 3])
    before = float(torch.nn.functional.softplus(-diff).mean())
    scale, shift, after = fit_logit_calibration(diff, correct, wrong, steps=20)
    assert after < before and scale > 1 and set(shift) == {3, 4}


def test_logit_calibration_stays_finite_when_every_prompt_is_already_right():
    diff = torch.tensor([2.0, 3.0, 1.5, 2.5])  # separable: without the ridge the scale runs off to infinity
    correct, wrong = torch.tensor([3, 3, 4, 4]), torch.tensor([4, 4, 3, 3])
    scale, _, after = fit_logit_calibration(diff, correct, wrong, steps=50)
    assert 1 < scale < 20 and after > 1e-4
    free, _, after_free = fit_logit_calibration(diff, correct, wrong, steps=50, ridge=0.0)
    assert free > scale and after_free < after


# ---------------------------------------------------------------- edges


def hand_built() -> tuple[GPT, NodeSet, torch.Tensor]:
    """A GPT with every weight zero except a few, and a hand-picked kept set."""
    model = tiny_gpt()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith(".w"):  # norm gains stay 1
                p.zero_()
        b0, b1 = model.blocks
        b0.attn.W_Q.weight[2, 3] = 0.5  # read 3 -> q 2
        b0.attn.W_Q.weight[3, 3] = 1.0  # read 3 -> q 3, which is not kept
        b0.attn.W_V.weight[5, 3] = 1.0  # read 3 -> v 5
        b0.attn.W_O.weight[7, 5] = 2.0  # v 5 -> attn-out 7
        b0.mlp.W_in.weight[4, 1] = 1.0  # mlp-read 1 -> neuron 4
        b0.mlp.W_out.weight[7, 4] = -1.0  # neuron 4 -> mlp-out 7
        b1.mlp.W_in.weight[0, 0] = 1.0  # between two nodes that are not kept
        model.embed.weight[5, 3] = 1.0  # token 5 -> channel 3
        model.unembed.weight[0, 7] = 1.0  # channel 7 -> token 0
    nodes = NodeSet.from_model(model)
    keep = [("blocks.0.ln1.hook_normalized", 3), ("blocks.0.attn.hook_q", 2), ("blocks.0.attn.hook_k", 0),
            ("blocks.0.attn.hook_v", 5), ("blocks.0.hook_attn_out", 7), ("blocks.0.ln2.hook_normalized", 1),
            ("blocks.0.ln2.hook_normalized", 7), ("blocks.0.mlp.hook_post", 4), ("blocks.0.hook_mlp_out", 7),
            ("blocks.1.ln1.hook_normalized", 7), (FINAL_SITE, 7)]
    kept = torch.zeros(len(nodes), dtype=torch.bool)
    for n in keep:
        kept[nodes.index(*n)] = True
    return model, nodes, kept


def test_edge_counting_on_a_hand_built_sparse_gpt():
    model, nodes, kept = hand_built()
    edges = circuit_edges(model, kept, nodes)
    by_via = {}
    for e in edges:
        by_via.setdefault(e.via, []).append(e)
    # 5 weights between kept nodes, plus residual paths: attn-out 7 -> (L0 mlp-read 7, L1 attn-read 7,
    # final read 7) and mlp-out 7 -> (L1 attn-read 7, final read 7)
    assert {v: len(es) for v, es in by_via.items()} == {"W_Q": 1, "W_V": 1, "W_O": 1, "W_in": 1, "W_out": 1,
                                                         "resid": 5}
    assert by_via["W_O"][0].src == ("blocks.0.attn.hook_v", 5) and by_via["W_O"][0].weight == 2.0
    assert by_via["W_out"][0].dst == ("blocks.0.hook_mlp_out", 7) and by_via["W_out"][0].weight == -1.0
    size = circuit_size(model, kept, nodes, embed_tokens=[5, 6], unembed_tokens=[0, 1])
    assert size == {"nodes": 11, "edges": 10, "embed_edges": 1, "unembed_edges": 1}
    with torch.no_grad():
        model.blocks[1].ln1.w[7] = 0.0  # the L1 attention read no longer reads channel 7
    assert circuit_size(model, kept, nodes)["edges"] == 8


# ---------------------------------------------------------------- pruning a constructed task


def constructed_task(n: int = 64):
    """A tiny GPT where 32 nodes cannot matter (their outgoing weights are zero), and a task whose
    labels are the model's own sharp predictions between tokens 0 and 1."""
    model = tiny_gpt(seed=1, init_std=0.3)
    with torch.no_grad():
        for blk in model.blocks:
            blk.mlp.W_out.weight[:, 8:] = 0  # neurons 8..15 write nothing
        model.blocks[1].attn.W_O.weight[:, 4:] = 0  # L1 head 1's values go nowhere
        model.unembed.weight[:, 8:] = 0  # final-read channels 8..15 reach no logit
    nodes = NodeSet.from_model(model)
    dead = [(f"blocks.{l}.mlp.hook_post", c) for l in range(2) for c in range(8, 16)]
    dead += [("blocks.1.attn.hook_v", c) for c in range(4, 8)] + [(FINAL_SITE, c) for c in range(8, 16)]
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, 20, (n, 6), generator=g)
    with torch.no_grad():
        last = model(tokens)[:, -1]  # [n, vocab]
        d = last[:, 0] - last[:, 1]
        model.unembed.weight[:2] *= 6 / d.abs().median()  # sharpen: the median |logit diff| becomes 3
    label = (d < 0).long()
    batch = TaskBatch(tokens, torch.full((n,), 5), label, 1 - label, label)
    means = mean_activations(model, stream(), nodes, n_batches=4, batch_size=8)
    return model, nodes, batch, means, [nodes.index(*x) for x in dead]


@pytest.fixture(scope="module")
def task():
    return constructed_task()


def test_learned_mask_prunes_nodes_that_do_not_matter(task):
    model, nodes, batch, means, dead = task
    full = evaluate_masked(model, batch, all_kept(nodes), means)["loss"]
    assert full < 0.3
    cfg = PruneConfig(k_coef=1e-3, lr=1e-2, steps=80, batch_size=32, target_loss=full + 0.1, lbfgs_steps=5)
    mask, history = train_mask(model, batch, means, nodes, cfg, progress=False)
    assert (mask.score.detach()[dead] < 0).all()  # no task gradient reaches them: the penalty wins
    assert mask.n_kept() < len(nodes) - len(dead)
    circuit = prune(model, batch, means, cfg, progress=False)
    assert circuit.loss <= cfg.target_loss and circuit.reached
    assert not circuit.kept[dead].any()
    assert circuit.n_nodes < len(nodes) // 2
    # validation: the circuit alone keeps the task, removing it breaks it
    assert circuit_alone(model, circuit, batch, means)["loss"] == pytest.approx(circuit.loss, abs=1e-5)
    assert circuit_removed(model, circuit, batch, means)["loss"] > 2 * cfg.target_loss
    assert circuit_alone(model, circuit, batch, means, calibrated=True)["loss"] <= circuit.loss + 1e-6
    # an empty removal and a full circuit are the unpruned model
    everything = Circuit(nodes, torch.ones(len(nodes), dtype=torch.bool), circuit.scores, 0.1, full)
    assert circuit_alone(model, everything, batch, means)["loss"] == pytest.approx(full, abs=1e-6)


def test_attribution_gives_dead_nodes_zero_score(task):
    model, nodes, batch, means, dead = task
    scores = attribution_scores(model, batch, means, nodes)
    assert scores.shape == (len(nodes),)
    assert (scores[dead] == 0).all() and (scores > 0).sum() > len(nodes) // 2
    # the per-prompt scale gradient is act * grad summed over positions: check one neuron by hand
    site, ch = "blocks.0.mlp.hook_post", 3
    tokens = batch.tokens[:1]
    _, cache = model.run_with_cache(tokens)
    act = cache[site][0, :, ch].clone().requires_grad_(True)  # [pos]

    def swap(a, hook):
        a = a.clone()
        a[0, :, ch] = act
        return a

    diff = logit_diff(model.run_with_hooks(tokens, fwd_hooks=[(site, swap)]), TaskBatch(
        tokens, batch.last[:1], batch.correct[:1], batch.wrong[:1], batch.labels[:1]))
    torch.nn.functional.softplus(-diff).sum().backward()
    one = attribution_scores(model, TaskBatch(tokens, batch.last[:1], batch.correct[:1], batch.wrong[:1],
                                              batch.labels[:1]), means, nodes)
    assert one[nodes.index(site, ch)] == pytest.approx(float((act.detach() * act.grad).sum().abs()), rel=1e-4)


def test_cached_circuit_round_trips(task, tmp_data):
    model, nodes, batch, means, _ = task
    cfg = PruneConfig(k_coef=1e-3, lr=1e-2, steps=10, batch_size=16, target_loss=1.0, lbfgs_steps=2)
    a = cached_prune("circuit_test", "ci", model, batch, means, cfg, progress=False)
    b = cached_prune("circuit_test", "ci", model, batch, means, cfg, progress=False)
    assert torch.equal(a.kept, b.kept) and torch.equal(a.scores, b.scores)
    assert b.loss == a.loss and b.logit_shift == a.logit_shift and b.nodes == nodes
    m1 = cached_mean_activations("means_test", "ci", model, stream(), nodes, n_batches=2, batch_size=4)
    assert set(m1) == set(nodes.sites)
    m2 = cached_mean_activations("means_test", "ci", model, stream(), nodes, n_batches=2, batch_size=4)
    assert all(torch.equal(m1[s], m2[s]) for s in nodes.sites)
    other = tiny_gpt(seed=5)  # other weights: the stored means are not used, they are computed again
    m3 = cached_mean_activations("means_test", "ci", other, stream(), nodes, n_batches=2, batch_size=4)
    assert torch.allclose(m3[FINAL_SITE], mean_activations(other, stream(), nodes, 2, 4)[FINAL_SITE])
    assert not torch.allclose(m3[FINAL_SITE], m1[FINAL_SITE])


def test_search_runs_and_returns_the_best_trial(task):
    model, nodes, batch, means, _ = task
    base = PruneConfig(steps=15, batch_size=16, target_loss=0.6, lbfgs_steps=2)
    res = search(model, batch, means, base, n_trials=2, seed=0, progress=False)
    assert len(res.trials) == 2 and res.trials[0]["k_coef"] == base.k_coef  # starts at the centre
    assert res.circuit.n_nodes == min(r["n_nodes"] for r in res.trials if r["loss"] <= 0.6)


def test_cached_search_round_trips_and_the_loss_curve_agrees_with_the_circuit(task, tmp_data):
    model, nodes, batch, means, _ = task
    base = PruneConfig(steps=15, batch_size=16, target_loss=0.6, lbfgs_steps=2)
    a = cached_search("search_test", "ci", model, batch, means, base, n_trials=2, progress=False)
    b = cached_search("search_test", "ci", model, batch, means, base, n_trials=2, progress=False)
    assert b.study is None and b.trials == a.trials and b.config == a.config
    assert torch.equal(a.circuit.kept, b.circuit.kept) and b.circuit.loss == a.circuit.loss
    curve = size_loss_curve(model, batch, means, nodes, b.circuit.scores, [b.circuit.n_nodes, len(nodes)])
    assert curve[b.circuit.n_nodes] == pytest.approx(b.circuit.loss, rel=1e-5)


def test_drawings_and_top_activations():
    model, nodes, kept = hand_built()
    circuit = Circuit(nodes, kept, kept.float(), 0.15, 0.1)
    fig = plotly_circuit(model, circuit)
    assert len(fig.data) >= 3
    ax = draw_circuit(model, circuit)
    assert len(ax.collections) >= 2
    model = tiny_gpt()

    class Tok:
        decode = staticmethod(lambda ids: "".join(chr(97 + i) for i in ids))

    ex = top_activations(model, stream(), [("blocks.0.mlp.hook_post", 2)], Tok(), k=3, n_windows=4, context=3)
    rows = ex[("blocks.0.mlp.hook_post", 2)]
    assert len(rows) == 3 and rows[0]["value"] >= rows[1]["value"] >= rows[2]["value"]
    assert len(rows[0]["tokens"]) == len(rows[0]["acts"]) <= 4 and rows[0]["acts"][-1] == rows[0]["value"]


def test_smallest_circuit_searches_within_the_masks_nodes_when_loss_is_not_monotone():
    from circuitbook.circuits.prune import smallest_circuit

    scores = torch.cat([torch.linspace(1.0, 0.1, 10), -torch.linspace(0.1, 1.0, 90)])  # the mask keeps 10

    def loss(k: int) -> float:  # good from 5 to 10 nodes, hurt by rejected nodes, good again near all
        return 1.0 if k < 5 else 0.1 if k <= 10 else 0.1 if k >= 90 else 0.5

    k, trace = smallest_circuit(loss, scores, target=0.15)
    assert k == 5
    assert max(trace) == 10  # never looked past the mask's own nodes
    # a plain bisection over every node is misled by the non-monotone loss
    assert bisect_smallest(loss, 100, 0.15)[0] >= 90
    # and when the mask's nodes miss the target, the search falls back to the full range
    k_all, _ = smallest_circuit(lambda k: 1.0 if k < 95 else 0.1, scores, target=0.15)
    assert k_all == 95


def test_circuit_heads_counts_kept_qkv_channels_per_head():
    model, nodes, kept = hand_built()  # kept: q 2 and k 0 (head 0), v 5 (head 1), all in layer 0
    kept = kept.clone()
    kept[nodes.index("blocks.1.attn.hook_k", 7)] = True  # d_head 4: channel 7 is head 1
    circuit = Circuit(nodes, kept, kept.float(), 0.15, 0.1)
    assert circuit.heads == {(0, 0): 2, (0, 1): 1, (1, 1): 1}
    assert list(circuit.heads) == sorted(circuit.heads)
    assert sum(circuit.heads.values()) == sum(nodes.kind(s) in ("q", "k", "v") for s, _ in circuit.node_list())
    none = Circuit(nodes, torch.zeros(len(nodes), dtype=torch.bool), kept.float(), 0.15, 0.1)
    assert none.heads == {}


def test_a_broken_ci_cache_is_made_again_but_a_broken_shipped_artifact_raises(tmp_data):
    from circuitbook import artifacts

    model, nodes = tiny_gpt(), NodeSet.from_model(tiny_gpt())
    for profile in ("ci", "full"):
        m1 = {s: m.clone() for s, m in cached_mean_activations("means_t", profile, model, stream(), nodes,
                                                                n_batches=2, batch_size=4).items()}
        path = artifacts.artifact_path("means_t", profile)
        path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)  # corrupt: the checksum no longer matches
        if profile == "ci":
            with pytest.warns(UserWarning, match="making means_t again"):
                m2 = cached_mean_activations("means_t", profile, model, stream(), nodes, n_batches=2, batch_size=4)
            assert all(torch.equal(m1[s], m2[s]) for s in nodes.sites)
        else:
            with pytest.raises(artifacts.ArtifactError, match="checksum"):
                cached_mean_activations("means_t", profile, model, stream(), nodes, n_batches=2, batch_size=4)


def test_the_zoo_prune_settings_are_the_shipped_searches_base():
    import json

    from circuitbook.config import get_profile
    from circuitbook.zoo import CIRCUIT_TASKS, n_trials_for, prune_config

    for t in CIRCUIT_TASKS:
        stored = json.loads((get_profile("full").artifact_dir / f"circuit_search_{t}.json").read_text())["config"]
        assert stored["base"] == prune_config("full").to_dict() and stored["n_trials"] == n_trials_for("full")
    assert prune_config("ci", seed=3).seed == 3 and prune_config("ci").steps < prune_config("full").steps
    with pytest.raises(AttributeError):
        prune_config("full").steps = 1  # frozen: settings are replaced, never mutated
