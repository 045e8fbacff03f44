"""Circuits (chapter 3): nodes, mean ablation, learned pruning, the attribution baseline, edges, drawing.

    nodes = NodeSet.from_model(model)                       # every (site, channel) node
    means = mean_activations(model, streams["train"], nodes)  # or cached_mean_activations(...)
    circuit = prune(model, task_batch, means, prune_config(profile))
    circuit_alone(model, circuit, test_batch, means), circuit_removed(model, circuit, test_batch, means)
    circuit_size(model, circuit)                            # {"nodes", "edges", ...}
    plotly_circuit(model, circuit)
"""

from circuitbook.circuits.ablation import (
    ablate,
    ablation_hooks,
    all_kept,
    cached_mean_activations,
    circuit_alone,
    circuit_removed,
    evaluate_masked,
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
    PruneConfig,
    bisect_smallest,
    cached_prune,
    circuit_from_scores,
    fit_logit_calibration,
    prune,
    prune_config,
    size_loss_curve,
    top_k_kept,
    train_mask,
)
from circuitbook.circuits.search import SearchResult, cached_search, n_trials_for, search

__all__ = [
    "FINAL_SITE", "KINDS", "Circuit", "Edge", "HeavisideSigmoid", "NodeMask", "NodeSet", "PruneConfig",
    "SearchResult", "ablate", "ablation_hooks", "all_kept", "attribution_prune", "attribution_scores",
    "bisect_smallest", "cached_mean_activations", "cached_search", "cached_prune", "circuit_alone", "circuit_edges",
    "circuit_from_scores", "circuit_removed", "circuit_size", "draw_circuit", "evaluate_masked",
    "examples_html", "examples_text", "fit_logit_calibration", "heaviside", "masked_logit_diff",
    "mean_activations", "n_trials_for", "node_examples", "node_sites", "plotly_circuit", "prune",
    "prune_config", "run_masked", "search", "site_kind", "size_loss_curve", "task_tokens", "top_activations",
    "top_k_kept", "train_mask",
]
