"""A circuit: the kept nodes of a NodeSet, the scores that ranked them, and how well they do the task.

Saved through `artifacts` as two tensors (`kept`, `scores`) plus the logit calibration, with the
NodeSet, losses and hyperparameters in the JSON meta.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from circuitbook.circuits.nodes import NodeSet


@dataclass
class Circuit:
    nodes: NodeSet
    kept: Tensor  # bool [N]
    scores: Tensor  # float [N] the ranking (mask parameter, or attribution score); higher = kept first
    target_loss: float
    loss: float  # task loss with everything outside the circuit mean-ablated
    calibrated_loss: float = float("nan")  # the same after the fitted logit scale and shift
    logit_scale: float = 1.0
    logit_shift: dict[int, float] = field(default_factory=dict)  # token id -> added logit
    method: str = "learned"  # "learned" | "attribution"
    info: dict = field(default_factory=dict)  # hyperparameters, bisection trace, training history

    @property
    def n_nodes(self) -> int:
        return int(self.kept.sum())

    @property
    def criterion(self) -> str:
        """The loss the bisection tested: "raw" (the first method, and attribution) or "calibrated"."""
        return self.info.get("criterion", "raw")

    @property
    def sufficiency_loss(self) -> float:
        """The loss compared with the target: `calibrated_loss` or `loss`, as the bisection measured it."""
        return self.calibrated_loss if self.criterion == "calibrated" else self.loss

    @property
    def reached(self) -> bool:
        """Whether the circuit meets the target loss, measured as the bisection measured it (`criterion`)."""
        return self.sufficiency_loss <= self.target_loss

    def masks(self) -> dict[str, Tensor]:
        """{site: float [width]} 1 for kept nodes, 0 for ablated ones."""
        return self.nodes.split(self.kept.float())

    def node_list(self) -> list[tuple[str, int]]:
        """Kept nodes as (site, channel), in forward order."""
        return [self.nodes.node(int(i)) for i in self.kept.nonzero()[:, 0]]

    @property
    def heads(self) -> dict[tuple[int, int], int]:
        """{(layer, head): number of kept q/k/v channels of that head}, in (layer, head) order; q/k/v channel j
        belongs to head j // d_head."""
        count: dict[tuple[int, int], int] = {}
        for s, ch in self.node_list():
            if self.nodes.kind(s) in ("q", "k", "v"):
                key = (self.nodes.layer(s), ch // self.nodes.d_head)
                count[key] = count.get(key, 0) + 1
        return dict(sorted(count.items()))

    def by_site(self) -> dict[str, list[int]]:
        """{site: kept channels} for sites with at least one kept node."""
        return {s: ix.tolist() for s, ix in self.nodes.by_site(self.kept).items() if len(ix)}

    def calibrate(self, diff: Tensor, correct: Tensor, wrong: Tensor) -> Tensor:
        """Apply the fitted logit scale and shift to logit differences [batch] of (correct, wrong) tokens."""
        shift = lambda t: torch.tensor([self.logit_shift.get(int(i), 0.0) for i in t], device=diff.device)
        return self.logit_scale * diff + shift(correct) - shift(wrong)

    def summary(self) -> str:
        return (f"{self.method} circuit: {self.n_nodes}/{len(self.nodes)} nodes, loss {self.loss:.3f} "
                f"(target {self.target_loss:.3g}, calibrated {self.calibrated_loss:.3f})")

    # ------------------------------------------------------------ artifacts

    def to_artifact(self) -> tuple[dict[str, Tensor], dict]:
        toks = sorted(self.logit_shift)
        tensors = {"kept": self.kept.to(torch.uint8).cpu(), "scores": self.scores.float().cpu(),
                   "shift_tokens": torch.tensor(toks, dtype=torch.long),
                   "shift_values": torch.tensor([self.logit_shift[t] for t in toks], dtype=torch.float32)}
        meta = {"nodes": self.nodes.to_dict(), "target_loss": self.target_loss, "loss": self.loss,
                "calibrated_loss": self.calibrated_loss, "logit_scale": self.logit_scale,
                "method": self.method, "info": self.info, "n_nodes": self.n_nodes}
        return tensors, meta

    @classmethod
    def from_artifact(cls, tensors: dict[str, Tensor], meta: dict) -> Circuit:
        shift = dict(zip(tensors["shift_tokens"].tolist(), tensors["shift_values"].tolist()))
        return cls(NodeSet.from_dict(meta["nodes"]), tensors["kept"].bool(), tensors["scores"],
                   meta["target_loss"], meta["loss"], meta["calibrated_loss"], meta["logit_scale"], shift,
                   meta["method"], meta.get("info", {}))
