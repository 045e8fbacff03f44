"""The attribution-pruning baseline: rank nodes by |activation x gradient| of the task loss.

For node i and prompt p (a node is shared over positions, so its score sums over them):

    a_{p,i} = | sum_pos act_{p,pos,i} * dL_p / dact_{p,pos,i} |,      score_i = mean_p a_{p,i}

computed in one backward pass as the gradient of a per-prompt scale s_{p,i} = 1 on each node
(act <- s * act). With `centered=True` the activation is taken relative to its mean,
(act - mean) * grad: the first-order estimate of what mean-ablating the node would change.
The top-ranked nodes are then kept by the same bisection and calibration as learned pruning
(`circuit_from_scores`), so the two methods differ only in the ranking.
"""

from __future__ import annotations

import torch
from torch import Tensor

from circuitbook.circuits.ablation import _device, ablation_hooks
from circuitbook.circuits.circuit import Circuit
from circuitbook.circuits.nodes import NodeSet
from circuitbook.circuits.prune import circuit_from_scores, frozen
from circuitbook.data.tasks import TaskBatch, logit_diff


def attribution_scores(
    model, batch: TaskBatch, means: dict[str, Tensor], nodes: NodeSet | None = None,
    centered: bool = False, chunk: int = 64,
) -> Tensor:
    """score [N]: |activation x gradient| of each prompt's task loss, averaged over prompts."""
    nodes = nodes or NodeSet.from_model(model)
    dev = _device(model)
    batch = batch.to(dev)
    base = means if centered else {s: torch.zeros_like(m) for s, m in means.items()}
    total = torch.zeros(len(nodes), device=dev)
    with frozen(model):
        for i in range(0, len(batch.tokens), chunk):
            sub = batch[i : i + chunk]
            scale = torch.ones(len(sub.tokens), len(nodes), device=dev, requires_grad=True)  # [batch, N]
            with model.hooks(fwd_hooks=ablation_hooks(nodes.split(scale), base)):
                diff = logit_diff(model(sub.tokens), sub)  # [batch]
            torch.nn.functional.softplus(-diff).sum().backward()  # a sum: each prompt's own gradient
            total += scale.grad.abs().sum(0)
    return (total / len(batch.tokens)).cpu()


def attribution_prune(
    model, batch: TaskBatch, means: dict[str, Tensor], nodes: NodeSet | None = None,
    target_loss: float = 0.15, centered: bool = False, lbfgs_steps: int = 20,
) -> Circuit:
    """The smallest top-attributed circuit that reaches `target_loss` (pruned nodes mean-ablated)."""
    nodes = nodes or NodeSet.from_model(model)
    scores = attribution_scores(model, batch, means, nodes, centered)
    return circuit_from_scores(model, batch, means, nodes, scores, target_loss, lbfgs_steps, "attribution",
                               {"centered": centered})
