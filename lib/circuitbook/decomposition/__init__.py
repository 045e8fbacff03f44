"""Parameter decomposition (chapter 5): SPD and its adversarial successor VPD.

components.py  ComponentModel: a frozen target's chosen nn.Linear layers as Σ_c u_c v_cᵀ, masked forward
importance.py  causal-importance MLPs and the leaky hard sigmoids
losses.py      faithfulness, stochastic (layerwise) reconstruction, importance minimality
vpd.py         persistent-PGD adversarial masks, subset routing, frequency minimality, evaluation attack
metrics.py     MMCS, ML2R, alive subcomponents, L0, identity-insertion CI error
decompose.py   the training loop
toys.py        TOY_CONFIGS and one-call runs for TMS 5-2, TMS 40-10 (+identity), the residual MLP
"""

from circuitbook.decomposition.components import CausalImportances, ComponentModel, LinearComponents
from circuitbook.decomposition.decompose import Decomposition, decompose, faithfulness_warmup
from circuitbook.decomposition.importance import CIMLP, lower_leaky_hard_sigmoid, upper_leaky_hard_sigmoid
from circuitbook.decomposition.losses import (
    Faithfulness,
    ImportanceMinimality,
    Step,
    StochasticRecon,
    StochasticReconLayerwise,
    recon_loss,
    stochastic_masks,
)
from circuitbook.decomposition.metrics import (
    activation_density,
    alive_count,
    ci_l0,
    feature_matches,
    identity_ci_error,
    mmcs_ml2r,
    module_mmcs_ml2r,
    single_feature_ci,
)
from circuitbook.decomposition.toys import (
    TOY_CONFIGS,
    decompose_toy,
    decomposition_config,
    toy_data_fn,
    toy_decomposition,
    toy_inputs,
    toy_losses,
    toy_metrics,
    toy_target,
    train_toy_target,
)
from circuitbook.decomposition.vpd import (
    FrequencyMinimality,
    PersistentPGDRecon,
    adversarial_attack,
    random_mask_loss,
    uniform_subset_routing,
)

__all__ = [
    "CIMLP",
    "TOY_CONFIGS",
    "CausalImportances",
    "ComponentModel",
    "Decomposition",
    "Faithfulness",
    "FrequencyMinimality",
    "ImportanceMinimality",
    "LinearComponents",
    "PersistentPGDRecon",
    "Step",
    "StochasticRecon",
    "StochasticReconLayerwise",
    "adversarial_attack",
    "alive_count",
    "ci_l0",
    "decompose",
    "decompose_toy",
    "decomposition_config",
    "faithfulness_warmup",
    "feature_matches",
    "identity_ci_error",
    "lower_leaky_hard_sigmoid",
    "activation_density",
    "mmcs_ml2r",
    "module_mmcs_ml2r",
    "random_mask_loss",
    "recon_loss",
    "single_feature_ci",
    "stochastic_masks",
    "toy_data_fn",
    "toy_decomposition",
    "toy_inputs",
    "toy_losses",
    "toy_metrics",
    "toy_target",
    "train_toy_target",
    "uniform_subset_routing",
    "upper_leaky_hard_sigmoid",
]
