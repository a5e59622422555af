"""Pure tensor math for gradbal's objectives (torch only; no Lightning, no transformers)."""

from gradbal.objectives._masking import masked_mean, masked_sum
from gradbal.objectives.advantages import AdvantageScale, group_advantages, zero_std_groups
from gradbal.objectives.balanced_dpo import (
    BalancedDPO,
    Reweight,
    balance_weights,
    balanced_dpo_loss,
)
from gradbal.objectives.bpo import BPO, bpo_loss
from gradbal.objectives.chosen_nll import WithChosenNLL, chosen_nll
from gradbal.objectives.dpo import DPO, RobustDPO, dpo_loss, robust_dpo_loss
from gradbal.objectives.grpo import GRPOTokenLoss, grpo_token_loss
from gradbal.objectives.gsa import (
    GSALoss,
    GSAStats,
    gsa_class_stats,
    gsa_class_weights,
    gsa_loss,
    gsa_ratio,
)
from gradbal.objectives.hinge import Hinge, hinge_loss
from gradbal.objectives.importance_sampling import (
    TISMode,
    TISWeights,
    TruncatedImportanceSampling,
    tis_weights,
)
from gradbal.objectives.ipo import IPO, ipo_loss
from gradbal.objectives.kl import k1_kl, k3_kl
from gradbal.objectives.logprobs import token_entropy, token_logprobs
from gradbal.objectives.loss_aggregation import (
    BNPOAggregation,
    DAPOAggregation,
    DrGRPOAggregation,
    GRPOAggregation,
    LossAggregation,
)
from gradbal.objectives.preference import (
    PreferenceLogps,
    PreferenceLoss,
    PreferenceObjective,
    implicit_rewards,
)
from gradbal.objectives.sft import SFTLoss, sft_loss
from gradbal.objectives.token_window import TokenWindow

__all__ = [
    "BPO",
    "DPO",
    "IPO",
    "AdvantageScale",
    "BNPOAggregation",
    "BalancedDPO",
    "DAPOAggregation",
    "DrGRPOAggregation",
    "GRPOAggregation",
    "GRPOTokenLoss",
    "GSALoss",
    "GSAStats",
    "Hinge",
    "LossAggregation",
    "PreferenceLogps",
    "PreferenceLoss",
    "PreferenceObjective",
    "Reweight",
    "RobustDPO",
    "SFTLoss",
    "TISMode",
    "TISWeights",
    "TokenWindow",
    "TruncatedImportanceSampling",
    "WithChosenNLL",
    "balance_weights",
    "balanced_dpo_loss",
    "bpo_loss",
    "chosen_nll",
    "dpo_loss",
    "group_advantages",
    "grpo_token_loss",
    "gsa_class_stats",
    "gsa_class_weights",
    "gsa_loss",
    "gsa_ratio",
    "hinge_loss",
    "implicit_rewards",
    "ipo_loss",
    "k1_kl",
    "k3_kl",
    "masked_mean",
    "masked_sum",
    "robust_dpo_loss",
    "sft_loss",
    "tis_weights",
    "token_entropy",
    "token_logprobs",
    "zero_std_groups",
]
