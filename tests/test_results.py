"""Claims: the drift check CI runs after nbval, the registry's policy, and the tables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circuitbook import results as R


def _res(*claims: dict) -> dict:
    return {"chapter": "09_x", "profile": "full", "claims": list(claims)}


def _c(cid: str, measured, kind: str = "exact", holds=None, target: str | None = "report", tol: float = 1e-4,
       claim: str = "a definition") -> dict:
    return {"id": cid, "claim": claim, "measured": measured, "paper": None, "target": target, "holds": holds,
            "kind": kind, "tol": tol, "context": None}


def test_drift_names_a_changed_exact_claim_with_both_values():
    old = _res(_c("acc", 0.9975), _c("n_nodes", 50))
    assert R.drift(old, _res(_c("acc", 0.99751), _c("n_nodes", 50))) == []  # within tol
    problems = R.drift(old, _res(_c("acc", 0.9950), _c("n_nodes", 51)))
    assert len(problems) == 2
    assert "acc: committed 0.9975, re-run 0.995" in problems[0] and "n_nodes" in problems[1]
    assert R.drift(_res(_c("flag", True)), _res(_c("flag", False)))  # bools and strings compare exactly
    assert R.drift(_res(_c("s", "0.1 -> 0.2")), _res(_c("s", "0.1 -> 0.3")))


def test_drift_checks_timing_claims_only_against_their_goal():
    old = _res(_c("speedup", 2.5, kind="timing", holds=True, target=">= 2"))
    assert R.drift(old, _res(_c("speedup", 3.9, kind="timing", holds=True, target=">= 2"))) == []
    assert "timing" in R.drift(old, _res(_c("speedup", 1.5, kind="timing", holds=False, target=">= 2")))[0]
    failing = _res(_c("speedup", 0.9, kind="timing", holds=False, target=">= 2"))
    assert R.drift(failing, _res(_c("speedup", 0.8, kind="timing", holds=False, target=">= 2"))) == []


def test_drift_reports_missing_new_and_redefined_claims():
    old = _res(_c("a", 1.0), _c("b", 2.0))
    problems = R.drift(old, _res(_c("a", 1.0, target=">= 2"), _c("c", 3.0)))
    assert any(p.startswith("b: in the committed") for p in problems)
    assert any(p.startswith("c: produced by the re-run") for p in problems)
    assert any("a: target changed" in p for p in problems)


def test_registry_policy():
    reg = {"a": {"chapter": "09_x", "definition": "a definition", "target": "report", "retired": None},
           "old": {"chapter": "09_x", "definition": "gone", "target": "report", "retired": None}}
    res = {"09_x": _res(_c("a", 1.0), _c("new", 2.0))}
    problems = R.registry_problems(reg, res)
    assert any(p.startswith("old: registered, missing") for p in problems)
    assert any(p.startswith("new: in data/results") for p in problems)
    reg["old"]["retired"] = {"reason": "no longer measurable", "date": "2026-11-30", "last_value": 3}
    reg["new"] = {"chapter": "09_x", "definition": "a definition", "target": "report", "retired": None}
    assert R.registry_problems(reg, res) == []
    res["09_x"]["claims"][0]["target"] = ">= 0.5"  # a published id's target changed in place
    assert "differs from the registered" in R.registry_problems(reg, res)[0]


def test_claim_kind_is_checked_and_tables_escape_pipes():
    with pytest.raises(ValueError, match="kind"):
        R.Claim("x", "d", 1.0, kind="approximate")
    c = {**_c("ctl", 0.01, target="|x| <= 0.05"), "context": "dense entropy 1.94"}
    table = R.claims_markdown(_res(c), registry={})
    row = table.splitlines()[2]
    assert row.count(" | ") + 2 == table.splitlines()[0].count("|")  # no cell split by the |x|
    assert "\\|x\\|" in row and "dense entropy 1.94" in row and "unregistered" in row


def test_committed_results_follow_the_registry():
    assert R.registry_problems(R.load_registry(), R.committed_results()) == []


NBVAL_RESULTS = os.environ.get("CIRCUITBOOK_NBVAL_RESULTS")


@pytest.mark.skipif(not NBVAL_RESULTS, reason="runs after nbval (make nbval sets CIRCUITBOOK_NBVAL_RESULTS)")
@pytest.mark.parametrize("chapter", sorted(R.committed_results()))
def test_rerun_reproduces_committed_claims(chapter):
    rerun = Path(NBVAL_RESULTS) / f"{chapter}.json"
    assert rerun.exists(), f"the nbval run of {chapter} wrote no results"
    problems = R.drift(R.committed_results()[chapter], R.load_results(chapter, root=Path(NBVAL_RESULTS)))
    assert not problems, f"{chapter}: the re-run changed claims:\n" + "\n".join(problems)
