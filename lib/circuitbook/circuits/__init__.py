"""Circuits (chapter 3): nodes, mean ablation, learned pruning, the attribution baseline, edges, drawing.

    nodes = NodeSet.from_model(model)                       # every (site, channel) node
    means = mean_activations(model, streams["train"], nodes)
    circuit = prune(model, task_batch, means, PruneConfig(steps=500, k_coef=1e-3))   # the first method
    circuit = prune(model, task_batch, means, zoo.PRUNE_CONFIGS_V2["full"])           # the second (issue 16)
    heldout_sufficiency(model, circuit, test_batch, means)  # the loss the bisection used, on other prompts
    circuit_alone(model, circuit, test_batch, means), circuit_removed(model, circuit, test_batch, means)
    circuit_size(model, circuit)                            # {"nodes", "edges", ...}
    plotly_circuit(model, circuit)

The book's settings per profile, and its cached means, searches and circuits: `circuitbook.zoo.circuits`.
"""

from circuitbook.circuits.ablation import (
    ablate,
    ablation_hooks,
    all_kept,
    circuit_alone,
    circuit_removed,
    evaluate_masked,
    fast_masked_logit_diff,
    masked_logit_diff,
    mean_activations,
    run_masked,
)
from circuitbook.circuits.attribution import attribution_prune, attribution_scores
from circuitbook.circuits.circuit import Circuit
from circuitbook.circuits.draw import (
    draw_circuit,
    examples_html,
    examples_text,
    node_examples,
    plotly_circuit,
    top_activations,
)
from circuitbook.circuits.edges import Edge, circuit_edges, circuit_size, task_tokens
from circuitbook.circuits.masks import HeavisideSigmoid, NodeMask, heaviside
from circuitbook.circuits.nodes import FINAL_SITE, KINDS, NodeSet, node_sites, site_kind
from circuitbook.circuits.prune import (
    CircuitLoss,
    PruneConfig,
    bisect_smallest,
    circuit_from_scores,
    dual_step,
    fit_logit_calibration,
    heldout_sufficiency,
    measured_order,
    prune,
    prune_v2,
    size_loss_curve,
    smallest_sufficient,
    top_k_kept,
    train_mask,
)
from circuitbook.circuits.search import (
    SPACE,
    SPACE_V2,
    SPACE_V2_K,
    SearchResult,
    choose_pruning_prompts,
    matched_checkpoint,
    objective_value,
    search,
)

__all__ = [
    "Circuit", "CircuitLoss", "Edge", "FINAL_SITE", "HeavisideSigmoid", "KINDS", "NodeMask", "NodeSet",
    "PruneConfig", "SPACE", "SPACE_V2", "SPACE_V2_K", "SearchResult", "ablate", "ablation_hooks", "all_kept",
    "attribution_prune",
    "attribution_scores", "bisect_smallest", "choose_pruning_prompts", "circuit_alone", "circuit_edges",
    "circuit_from_scores", "circuit_removed", "circuit_size", "draw_circuit", "dual_step", "evaluate_masked",
    "examples_html", "examples_text", "fast_masked_logit_diff", "fit_logit_calibration", "heaviside",
    "heldout_sufficiency", "masked_logit_diff", "matched_checkpoint", "mean_activations", "measured_order",
    "node_examples", "node_sites", "objective_value", "plotly_circuit", "prune", "prune_v2", "run_masked", "search",
    "site_kind", "size_loss_curve", "smallest_sufficient", "task_tokens", "top_activations", "top_k_kept",
    "train_mask",
]
