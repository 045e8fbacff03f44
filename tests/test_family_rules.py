"""Issue 17's rules on constructed cases: the chosen-model rule, wider-is-better at shared non-embedding L0
points, the 2x loss gain, and the whole-model CSR linear-layer ratio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitbook.bench import csr_linears_speedup
from circuitbook.sparsity import WeightSparsifier
from circuitbook.zoo.sparse import (
    FAMILY_R2,
    TARGET_POINT,
    choose_the_model,
    loss_gain_2x,
    the_sparse_name,
    wider_is_better_at_points,
    wider_is_better_total_l0,
)

DENSE = {"quote": 0.98, "bracket": 0.63, "sos": 0.99, "while": 1.0}  # the dense baseline fails bracket


def cand(val, quote, bracket, sos, wh):
    return {"val_loss": val, "heldout": {"quote": quote, "bracket": bracket, "sos": sos, "while": wh}}


def test_the_rule_counts_only_tasks_the_dense_model_can_do_and_then_takes_the_best_loss():
    c = {"a": cand(2.50, 0.80, 0.9, 0.95, 1.0),  # best loss, but misses quote
         "b": cand(2.60, 0.95, 0.5, 0.92, 1.0),  # qualifies although bracket is at chance (dense fails it too)
         "c": cand(2.55, 0.91, 0.6, 0.90, 0.99)}  # qualifies with a better loss than b
    name, tasks = choose_the_model(c, DENSE)
    assert tasks == ["quote", "sos", "while"] and name == "c"


def test_with_no_qualifier_the_rule_takes_the_best_mean_accuracy_then_the_loss():
    c = {"a": cand(2.50, 0.80, 0.9, 0.85, 1.0), "b": cand(2.70, 0.85, 0.1, 0.85, 1.0),
         "c": cand(2.60, 0.85, 0.2, 0.85, 1.0)}
    assert choose_the_model(c, DENSE)[0] == "c"  # b and c tie on the mean over counted tasks; c's loss is lower
    with pytest.raises(ValueError):
        choose_the_model({}, DENSE)


def test_the_target_point_is_on_the_grid_and_holds_todays_chosen_model():
    assert (128, 16) in FAMILY_R2[TARGET_POINT] and any(d == 256 for d, _ in FAMILY_R2[TARGET_POINT])
    for members in FAMILY_R2.values():  # one non-embedding L0 per point: 48 d^2 / k equal across members
        assert len({48 * d * d // k for d, k in members}) == 1


def rows(losses: dict[str, dict[int, float]]) -> list[dict]:
    return [{"point": p, "d_model": d, "val_loss": v} for p, by in losses.items() for d, v in by.items()]


def test_wider_is_better_needs_every_pair_at_three_points_with_width_256():
    good = {"a": {64: 3.0, 128: 2.9, 256: 2.8}, "b": {64: 2.9, 128: 2.8, 256: 2.7}, "c": {128: 2.7, 256: 2.6}}
    holds, pairs = wider_is_better_at_points(rows(good))
    assert holds and len(pairs) == 3 + 3 + 1
    bad = {**good, "b": {64: 2.9, 128: 2.8, 256: 2.85}}  # d256 beats d64 but not d128 at one point
    holds, pairs = wider_is_better_at_points(rows(bad))
    assert not holds and sum(not p["wide_better"] for p in pairs) == 1
    assert not wider_is_better_at_points(rows({k: good[k] for k in ("a", "b")}))[0]  # two points only
    no256 = {p: {d: v for d, v in by.items() if d != 256} for p, by in good.items()}
    assert not wider_is_better_at_points(rows(no256))[0]
    with pytest.raises(ValueError):
        wider_is_better_at_points([{"point": "a", "d_model": 64, "val_loss": 1.0}] * 2)


def test_wider_is_better_total_l0_interpolates_the_wider_curve_in_log_l0_for_every_pair_of_widths():
    fam = [{"d_model": 64, "l0": 1e4, "val_loss": 3.0}, {"d_model": 64, "l0": 1e5, "val_loss": 2.9},
           {"d_model": 128, "l0": 1e3, "val_loss": 3.2}, {"d_model": 128, "l0": 1e5, "val_loss": 2.7}]
    holds, out = wider_is_better_total_l0(fam)
    # at 1e4 (half-way from 1e3 to 1e5 in log L0) the d128 curve is at 3.2 - 0.5 / 2 = 2.95 < 3.0
    assert holds and len(out) == 2 and out[0]["wide_loss"] == pytest.approx(2.95)
    fam[0]["val_loss"] = 2.8  # the narrow model now beats the interpolated wide curve at 1e4
    assert not wider_is_better_total_l0(fam)[0]
    fam.append({"d_model": 256, "l0": 5e4, "val_loss": 2.0})  # one point only: no range, so no comparison
    assert len(wider_is_better_total_l0(fam)[1]) == 2
    assert not wider_is_better_total_l0([{"d_model": 64, "l0": 1e4, "val_loss": 3.0}])[0]  # nothing compared


def test_the_sparse_model_is_the_one_chapter_2s_rule_chose():
    results = json.loads((Path(__file__).parents[1] / "data" / "results" / "02_weight_sparse.json").read_text())
    ctx = next(c for c in results["claims"] if c["id"] == "sparse_tokens_trained")["context"]
    assert ctx == f"chosen: {the_sparse_name('full')}"


def test_loss_gain_2x():
    assert loss_gain_2x(2.5, 2.45) == pytest.approx(0.02) and loss_gain_2x(2.5, 2.6) < 0


def test_csr_linears_speedup_runs_every_linear_and_reads_the_kept_fraction():
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    WeightSparsifier(model, 1 / 16, min_per_row=0).step(0)
    r = csr_linears_speedup(model, n_tokens=16, repeats=1)
    assert r["n_linears"] == 2 and r["kept"] == pytest.approx(1 / 16, rel=0.05) and r["speedup"] > 0
