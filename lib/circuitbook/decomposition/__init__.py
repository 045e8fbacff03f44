"""Parameter decomposition (chapter 5): SPD and its adversarial successor VPD.

components.py  ComponentModel: a frozen target's chosen nn.Linear layers as Σ_c u_c v_cᵀ, masked forward
importance.py  causal-importance MLPs and the leaky hard sigmoids
losses.py      faithfulness, stochastic (layerwise) reconstruction, importance minimality
vpd.py         persistent-PGD adversarial masks, subset routing, frequency minimality, evaluation attack
metrics.py     MMCS, ML2R, alive subcomponents, L0, identity-insertion CI error
decompose.py   the training loop
toys.py        toy targets (TMS, the residual MLP) as specs, the toy decomposition config, one call to run it
lm.py          VPD of a GPT: its config, evaluation, edits

The book's toys and settings per profile, and the stored decompositions: circuitbook.zoo.decomposition.
"""

from circuitbook.decomposition.components import CausalImportances, ComponentModel, LinearComponents
from circuitbook.decomposition.decompose import Decomposition, decompose, faithfulness_warmup
from circuitbook.decomposition.importance import CIMLP, lower_leaky_hard_sigmoid, upper_leaky_hard_sigmoid
from circuitbook.decomposition.losses import (
    Faithfulness,
    ImportanceMinimality,
    LossSettings,
    Minimality,
    Step,
    StochasticRecon,
    StochasticReconLayerwise,
    recon_loss,
    stochastic_masks,
    stochastic_recon,
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
    ResidMLPTarget,
    TMSTarget,
    ToyDecompConfig,
    ToyTarget,
    ToyTrain,
    VPDLosses,
    decompose_toy,
    toy_inputs,
    toy_losses,
    toy_metrics,
)
from circuitbook.decomposition.vpd import (
    FrequencyMinimality,
    FrequencySettings,
    PersistentPGDRecon,
    PGDSettings,
    adversarial_attack,
    random_mask_loss,
    uniform_subset_routing,
)

__all__ = [
    "CIMLP",
    "CausalImportances",
    "ComponentModel",
    "Decomposition",
    "Faithfulness",
    "FrequencyMinimality",
    "FrequencySettings",
    "ImportanceMinimality",
    "LinearComponents",
    "LossSettings",
    "Minimality",
    "PGDSettings",
    "PersistentPGDRecon",
    "ResidMLPTarget",
    "Step",
    "StochasticRecon",
    "StochasticReconLayerwise",
    "TMSTarget",
    "ToyDecompConfig",
    "ToyTarget",
    "ToyTrain",
    "VPDLosses",
    "activation_density",
    "adversarial_attack",
    "alive_count",
    "ci_l0",
    "decompose",
    "decompose_toy",
    "faithfulness_warmup",
    "feature_matches",
    "identity_ci_error",
    "lower_leaky_hard_sigmoid",
    "mmcs_ml2r",
    "module_mmcs_ml2r",
    "random_mask_loss",
    "recon_loss",
    "single_feature_ci",
    "stochastic_masks",
    "stochastic_recon",
    "toy_inputs",
    "toy_losses",
    "toy_metrics",
    "uniform_subset_routing",
    "upper_leaky_hard_sigmoid",
]
