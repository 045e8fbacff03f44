"""Dictionaries: TopK SAEs and transcoders, attention rollout, attribution-graph JSON and pruning."""

from circuitbook.dictionaries.graph_json import (
    embedding_node,
    error_node,
    feature_node,
    graph_to_json,
    logit_node,
    prune_graph,
    save_graph_json,
    validate_graph_json,
)
from circuitbook.dictionaries.rollout import attention_rollout, iou, rollout_heatmaps
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

__all__ = [
    "SAE", "Transcoder", "attention_rollout", "decoder_cosine", "embedding_node", "error_node", "evaluate",
    "feature_node", "fvu", "graph_to_json", "iou", "logit_node", "prune_graph", "rollout_heatmaps",
    "save_graph_json", "steps_to_fvu", "train_sae", "train_transcoder", "validate_graph_json",
]
