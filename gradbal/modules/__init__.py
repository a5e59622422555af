"""LightningModules: they wire gradbal's objectives to models, data and logging."""

from gradbal.modules.dpo import DPOModule
from gradbal.modules.grpo import GRPOModule, Rollout
from gradbal.modules.online_continual import (
    ER,
    GSA,
    ContinualLoss,
    ContinualObjective,
    ContinualStep,
    FineTune,
    OnlineContinualModule,
)
from gradbal.modules.sft import SFTModule

__all__ = [
    "ER",
    "GSA",
    "ContinualLoss",
    "ContinualObjective",
    "ContinualStep",
    "DPOModule",
    "FineTune",
    "GRPOModule",
    "OnlineContinualModule",
    "Rollout",
    "SFTModule",
]
