"""Pure tensor math for gradbal's objectives (torch only; no Lightning, no transformers)."""

from gradbal.objectives._masking import masked_mean, masked_sum
from gradbal.objectives.advantages import AdvantageScale, group_advantages, zero_std_groups
from gradbal.objectives.grpo import GRPOTokenLoss, grpo_token_loss
from gradbal.objectives.kl import k1_kl, k3_kl
from gradbal.objectives.logprobs import token_entropy, token_logprobs
from gradbal.objectives.loss_aggregation import (
    BNPOAggregation,
    DAPOAggregation,
    DrGRPOAggregation,
    GRPOAggregation,
    LossAggregation,
)
from gradbal.objectives.sft import SFTLoss, sft_loss

__all__ = [
    "AdvantageScale",
    "BNPOAggregation",
    "DAPOAggregation",
    "DrGRPOAggregation",
    "GRPOAggregation",
    "GRPOTokenLoss",
    "LossAggregation",
    "SFTLoss",
    "group_advantages",
    "grpo_token_loss",
    "k1_kl",
    "k3_kl",
    "masked_mean",
    "masked_sum",
    "sft_loss",
    "token_entropy",
    "token_logprobs",
    "zero_std_groups",
]
