"""Dictionaries: TopK SAEs and transcoders, attribution graphs and interventions, attention rollout,
attribution-graph JSON and pruning."""

from circuitbook.dictionaries.attribution import (
    AttributionGraph,
    Intervention,
    attribute,
    attribute_gpt,
    attribute_vlm,
    effective_feature_values,
    intervention_hooks,
)
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
    "SAE", "AttributionGraph", "Intervention", "Transcoder", "attention_rollout", "attribute", "attribute_gpt",
    "attribute_vlm", "decoder_cosine", "effective_feature_values", "embedding_node", "error_node", "evaluate",
    "feature_node", "fvu", "graph_to_json", "intervention_hooks", "iou", "logit_node", "prune_graph",
    "rollout_heatmaps", "save_graph_json", "steps_to_fvu", "train_sae", "train_transcoder", "validate_graph_json",
]
