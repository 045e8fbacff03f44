"""Tests of the second pruning method (issue 16: "pruning that measures size"): the bisection walks an order with
no ties, the size does not depend on how nodes are numbered, the dual update of k_coef moves the right way, the
sufficiency test uses the calibrated loss, and the first method's configs are unchanged."""

import math
from dataclasses import replace

import pytest
import torch
from test_circuits import constructed_task, tiny_gpt

from circuitbook.circuits import (
    SPACE_V2,
    SPACE_V2_K,
    NodeSet,
    PruneConfig,
    circuit_alone,
    mean_activations,
    search,
    top_k_kept,
    train_mask,
)
from circuitbook.circuits.ablation import fast_masked_logit_diff, masked_logit_diff
from circuitbook.circuits.prune import (
    CircuitLoss,
    dual_step,
    heldout_sufficiency,
    measured_order,
    prune,
    smallest_circuit,
    smallest_sufficient,
)
from circuitbook.data.tasks import TaskBatch
from circuitbook.zoo.circuits import cached_search, n_trials_v2, prune_config, prune_config_v2

# ---------------------------------------------------------------- a synthetic circuit with tied scores

N, TARGET = 60, 0.15
NEEDED = [4, 11, 18, 25, 29]  # the only nodes the task needs, spread over the tied group (index order finds 30)


def tied_scores() -> torch.Tensor:
    """Nodes 0..29 all at the clamp (+1, the mask kept them), 30..59 at -1 (rejected): 30 exact ties."""
    return torch.cat([torch.ones(30), -torch.ones(30)])


def needed_loss(needed):
    """loss 0.05 with every needed node kept, +0.3 per needed node missing; other nodes do nothing."""
    needed = torch.tensor(needed)

    def loss_of(kept: torch.Tensor) -> float:
        return 0.05 + 0.3 * float((~kept[needed]).sum())

    return loss_of


def test_bisection_over_tied_scores_finds_the_true_smallest_sufficient_set():
    scores, loss_of = tied_scores(), needed_loss(NEEDED)
    kept, info = smallest_sufficient(loss_of, scores, TARGET)
    assert kept.nonzero()[:, 0].tolist() == NEEDED and info["reached"]
    assert {int(i) for i, e in info["effects"].items() if e > 0} == set(NEEDED)  # measured, 0.3 each
    # the first method's order (ties to the lower index) must keep every node up to the last needed one
    k_v1, _ = smallest_circuit(lambda k: loss_of(top_k_kept(scores, k)), scores, TARGET)
    assert k_v1 == max(NEEDED) + 1
    assert int(smallest_sufficient(loss_of, scores, TARGET, order="index")[0].sum()) == max(NEEDED) + 1


def test_only_the_group_where_the_bisection_lands_is_measured():
    # distinct scores above the tied group: nodes 0..9 at 1.0 are needed, 10..19 at 0.5 are not, 20..29 in between
    scores = torch.cat([torch.ones(10), torch.linspace(0.9, 0.6, 10), torch.full((10,), 0.5), -torch.ones(30)])
    calls = []

    def loss_of(kept):
        calls.append(int(kept.sum()))
        return needed_loss(list(range(10)) + [12, 15])(kept)

    kept, info = smallest_sufficient(loss_of, scores, TARGET)
    assert kept.nonzero()[:, 0].tolist() == list(range(16))  # 0..9 at 1.0, then 10..15 by score: 15 needed
    assert info["effects"] == {}  # the answer ends where scores differ: nothing to measure
    assert len(calls) <= 1 + math.ceil(math.log2(30)) + 1


def test_relabelling_the_nodes_gives_the_same_size():
    scores = tied_scores()
    # needed nodes, and a redundant pair (either of 7 or 21 will do): leave-one-out cannot tell the pair from the
    # nodes that do nothing, so they stay in one group and the answer keeps them all, whatever the numbering
    base = needed_loss(NEEDED)

    def loss_of(kept):
        return base(kept) + (0.0 if kept[7] or kept[21] else 0.3)

    size = int(smallest_sufficient(loss_of, scores, TARGET)[0].sum())
    sizes_by_index = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        perm = torch.randperm(N, generator=g)  # new label j is old node perm[j]
        inv = torch.argsort(perm)
        relabelled = lambda kept, inv=inv: loss_of(kept[inv])  # noqa: E731 (new labels -> old labels)
        kept, _ = smallest_sufficient(relabelled, scores[perm], TARGET)
        assert int(kept.sum()) == size
        assert loss_of(kept[inv]) <= TARGET
        sizes_by_index.add(int(smallest_sufficient(relabelled, scores[perm], TARGET, order="index")[0].sum()))
    assert len(sizes_by_index) > 1  # ties by index: the size is whatever the numbering makes it
    # and with a needed set alone, every numbering finds exactly the needed nodes
    for seed in range(3):
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(seed))
        inv = torch.argsort(perm)
        kept, _ = smallest_sufficient(lambda k, inv=inv: base(k[inv]), scores[perm], TARGET)
        assert sorted(perm[kept].tolist()) == NEEDED


def test_measured_order_keeps_equals_together():
    scores = torch.tensor([0.5, 1.0, 0.5, 0.5, 1.0])
    effects = torch.tensor([0.1, 0.0, 0.3, 0.1, 0.0])
    order, bounds = measured_order(scores, effects)
    assert order.tolist()[:2] in ([1, 4], [4, 1]) and order[2] == 2 and set(order[3:].tolist()) == {0, 3}
    assert bounds == [0, 2, 3, 5]  # (1.0, 0) x2 | (0.5, 0.3) | (0.5, 0.1) x2


# ---------------------------------------------------------------- the dual update of k_coef


def test_dual_step_raises_k_coef_under_the_target_and_lowers_it_over():
    lk = math.log(1e-3)
    assert dual_step(lk, 0.05, 0.15, 0.1) > lk  # loss under target: more sparsity pressure
    assert dual_step(lk, 0.30, 0.15, 0.1) < lk  # over: less
    assert dual_step(lk, 0.15, 0.15, 0.1) == lk
    assert dual_step(lk, 50.0, 0.15, 0.1) == pytest.approx(lk - 0.1)  # clipped: at most a factor e^lr a step


@pytest.fixture(scope="module")
def task():
    return constructed_task()


def test_the_dual_update_moves_k_coef_toward_the_target_and_records_it(task):
    model, nodes, batch, means, _ = task
    base = PruneConfig(k_coef=1e-4, lr=1e-2, steps=40, batch_size=16, dual_lr=0.1, order="ablation",
                       calibrated=True)
    _, hist = train_mask(model, batch, means, nodes, replace(base, target_loss=5.0), False)
    ks = [r["k_coef"] for r in hist]
    assert all(b > a for a, b in zip(ks, ks[1:])) and ks[-1] > 10 * ks[0]  # always under target: k rises
    assert all("loss_ema" in r for r in hist)
    _, hist = train_mask(model, batch, means, nodes, replace(base, target_loss=1e-6), False)
    ks = [r["k_coef"] for r in hist]
    assert all(b < a for a, b in zip(ks, ks[1:]))  # the loss can never get that low: k falls
    _, hist = train_mask(model, batch, means, nodes, replace(base, dual_lr=0.0), False)
    assert "k_coef" not in hist[0]  # no dual update: k_coef is fixed and not recorded


# ---------------------------------------------------------------- the second method end to end


def test_fast_logit_diff_equals_the_full_forward():
    model = tiny_gpt(seed=2)
    nodes = NodeSet.from_model(model)
    means = mean_activations(model, torch.randint(0, 20, (500,)).numpy(), nodes, n_batches=2, batch_size=4)
    g = torch.Generator().manual_seed(1)
    n = 21
    batch = TaskBatch(torch.randint(0, 20, (n, 8), generator=g), torch.randint(0, 8, (n,), generator=g),
                      torch.randint(0, 20, (n,), generator=g), torch.randint(0, 20, (n,), generator=g),
                      torch.zeros(n, dtype=torch.long))
    masks = nodes.split((torch.rand(len(nodes), generator=g) < 0.5).float())
    assert torch.allclose(fast_masked_logit_diff(model, batch, masks, means, chunk=4),
                          masked_logit_diff(model, batch, masks, means), atol=1e-5)


def test_prune_v2_on_a_constructed_model_with_every_score_tied(task):
    model, nodes, batch, means, dead = task
    loss_of = CircuitLoss(model, batch, means, nodes, calibrated=True, lbfgs_steps=5)
    assert loss_of(torch.ones(len(nodes), dtype=torch.bool)) < 0.3
    scores = torch.ones(len(nodes))  # every node kept, all tied: only measurements can order them
    kept, info = smallest_sufficient(loss_of, scores, 0.35)
    assert info["reached"] and not kept[dead].any()
    by_index, _ = smallest_sufficient(loss_of, scores, 0.35, order="index")
    assert kept.sum() < by_index.sum(), (int(kept.sum()), int(by_index.sum()))


def test_prune_v2_reaches_the_calibrated_target_and_reports_held_out_loss(task):
    model, nodes, batch, means, dead = task
    cfg = PruneConfig(k_coef=1e-3, lr=1e-2, steps=80, batch_size=32, target_loss=0.3, lbfgs_steps=5,
                      order="ablation", dual_lr=0.05, calibrated=True)
    c = prune(model, batch, means, cfg, nodes, progress=False)
    assert c.criterion == "calibrated" and c.reached and c.calibrated_loss <= 0.3
    assert c.sufficiency_loss == c.calibrated_loss and not c.kept[dead].any()
    assert c.n_nodes <= c.info["n_kept_by_mask"] and "k_coef" in c.info["history"][-1]
    assert c.info["bisection"][str(c.n_nodes)] == pytest.approx(c.calibrated_loss, abs=1e-4)
    held = heldout_sufficiency(model, c, batch, means)  # on the train prompts it is the train loss again
    assert held["loss"] == pytest.approx(c.calibrated_loss, abs=1e-4) and held["reached"]
    assert held["raw_loss"] == pytest.approx(circuit_alone(model, c, batch, means)["loss"], abs=1e-4)


def test_first_method_configs_are_unchanged():
    old_keys = {"k_coef", "lr", "temperature", "init_noise_scale", "init_noise_bias", "steps", "batch_size",
                "target_loss", "lbfgs_steps", "seed"}  # what the shipped circuits' configs hold
    assert set(PruneConfig().to_dict()) == old_keys and PruneConfig().legacy
    v2 = PruneConfig(order="ablation", dual_lr=0.05, calibrated=True)
    assert not v2.legacy and {"order", "dual_lr", "calibrated"} <= set(v2.to_dict())
    assert PruneConfig(**v2.to_dict()) == v2 and PruneConfig(**PruneConfig().to_dict()) == PruneConfig()


def test_mask_training_through_a_learned_calibration_records_its_scale(task):
    model, nodes, batch, means, _ = task
    cfg = PruneConfig(k_coef=1e-3, lr=1e-2, steps=30, batch_size=16, target_loss=0.3, order="ablation",
                      dual_lr=0.05, calibrated=True, calibration_lr=0.05)
    _, hist = train_mask(model, batch, means, nodes, cfg, progress=False)
    assert hist[0]["logit_scale"] != 1.0 and all(math.isfinite(r["logit_scale"]) for r in hist)
    _, hist = train_mask(model, batch, means, nodes, replace(cfg, calibration_lr=0.0), progress=False)
    assert "logit_scale" not in hist[0]


def test_the_v2_search_is_cached_and_searches_the_dual_step_not_k_coef(task, tmp_data):
    model, nodes, batch, means, _ = task
    base = PruneConfig(steps=15, batch_size=16, target_loss=0.6, lbfgs_steps=2, order="ablation", dual_lr=0.05,
                       calibrated=True, calibration_lr=0.02)
    a = cached_search("search_v2_test", "ci", model, batch, means, base, n_trials=2, progress=False, space=SPACE_V2)
    b = cached_search("search_v2_test", "ci", model, batch, means, base, n_trials=2, progress=False, space=SPACE_V2)
    assert b.study is None and b.trials == a.trials and b.config == a.config and not b.config.legacy
    assert torch.equal(a.circuit.kept, b.circuit.kept) and b.circuit.criterion == "calibrated"
    assert "k_coef" not in a.trials[0] and a.trials[0]["dual_lr"] == base.dual_lr  # the first trial is the base
    reached = [r["n_nodes"] for r in a.trials if r["sufficiency_loss"] <= 0.6]
    assert not reached or a.circuit.n_nodes == min(reached)


def test_the_matched_loss_space_adds_the_starting_k_coef_and_the_search_moves_it(task):
    """The searched matched-loss comparison: SPACE_V2_K is SPACE_V2 plus k_coef, the first trial is the base's
    k_coef, later trials sample others inside the range (a search that kept k_coef fixed would fail this)."""
    assert {k: v for k, v in SPACE_V2_K.items() if k != "k_coef"} == SPACE_V2
    lo, hi = SPACE_V2_K["k_coef"]
    assert lo <= 1e-5 and hi >= 5e-3  # spans the base start and four decades below it
    model, nodes, batch, means, _ = task
    base = PruneConfig(steps=5, batch_size=16, target_loss=0.6, lbfgs_steps=2, order="ablation", dual_lr=0.05,
                       calibrated=True, calibration_lr=0.02, k_coef=5e-3)
    r = search(model, batch, means, base, n_trials=3, nodes=nodes, space=SPACE_V2_K, progress=False)
    ks = [row["k_coef"] for row in r.trials]
    assert ks[0] == base.k_coef and len(set(ks)) == 3 and all(lo <= k <= hi for k in ks)


def test_the_zoo_v2_settings():
    assert n_trials_v2("full") >= 24 and "k_coef" not in SPACE_V2 and "dual_lr" in SPACE_V2
    for profile in ("ci", "full"):
        cfg = prune_config_v2(profile)
        assert not cfg.legacy and cfg.target_loss == 0.15 and cfg.calibrated and cfg.order == "ablation"
        assert cfg.dual_lr > 0 and cfg.calibration_lr > 0
    assert prune_config_v2("ci").steps < prune_config_v2("full").steps
    assert prune_config("full").legacy  # the first method's settings (the shipped searches') are untouched


# ---------------------------------------------------------------- chapter 3's rules for the second method


def test_the_pruning_prompts_are_the_first_set_the_whole_model_reaches():
    from circuitbook.circuits import choose_pruning_prompts

    assert choose_pruning_prompts({"pruning forms": 0.09, "generated train": 0.01}, 0.15) == "pruning forms"
    assert choose_pruning_prompts({"pruning forms": 0.47, "generated train": 0.01}, 0.15) == "generated train"
    assert choose_pruning_prompts({"pruning forms": 0.47, "generated train": 0.3}, 0.15) == "generated train"
    assert choose_pruning_prompts({"pruning forms": 0.15, "generated train": 0.3}, 0.15) == "pruning forms"
    with pytest.raises(ValueError):
        choose_pruning_prompts({}, 0.15)


def test_the_matched_checkpoint_is_the_nearest_in_loss():
    from circuitbook.circuits import matched_checkpoint

    losses = {50: 4.6, 150: 3.37, 400: 2.81, 1000: 2.53, 4000: 2.05}
    assert matched_checkpoint(losses, 2.82) == 400 and matched_checkpoint(losses, 2.6) == 1000
    assert matched_checkpoint(losses, 9.0) == 50 and matched_checkpoint({1: 1.0, 2: 3.0}, 2.0) == 1
    with pytest.raises(ValueError):
        matched_checkpoint({}, 1.0)


def test_removing_the_circuit_but_its_final_reads(task):
    from circuitbook.circuits import FINAL_SITE, Circuit, circuit_removed, evaluate_masked
    from circuitbook.circuits.ablation import all_kept

    model, nodes, batch, means, _ = task
    kept = torch.zeros(len(nodes), dtype=torch.bool)
    off = nodes.offset(FINAL_SITE)
    kept[off: off + nodes.width(FINAL_SITE)] = True  # a "circuit" that is only the final reads
    only_reads = Circuit(nodes, kept, kept.float(), 0.15, 0.0)
    full = evaluate_masked(model, batch, all_kept(nodes), means)
    spared = circuit_removed(model, only_reads, batch, means, spare_sites=(FINAL_SITE,))
    assert spared == pytest.approx(full)  # nothing of the circuit is left to remove: the whole model
    assert circuit_removed(model, only_reads, batch, means)["loss"] > full["loss"] + 0.1  # the reads matter


def test_replayed_steps_split_the_kept_interval_that_brackets_the_target():
    from circuitbook.zoo.dense import between_steps

    kept = {50: 4.6, 150: 3.37, 400: 2.81, 1000: 2.53}
    assert between_steps(kept, 2.86) == (175, 200, 225, 250, 275, 300, 325, 350, 375)
    assert between_steps(kept, 2.6, n=3) == (600, 800)
    assert between_steps(kept, 9.0) == () and between_steps(kept, 1.0) == ()
