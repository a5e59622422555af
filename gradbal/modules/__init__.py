"""LightningModules: they wire gradbal's objectives to models, data and logging."""

from gradbal.continual import (  # moved to gradbal.continual; importable here for old configs
    ER,
    GSA,
    ContinualLoss,
    ContinualObjective,
    ContinualStep,
    FineTune,
    OnlineContinualModule,
)
from gradbal.modules.dpo import DPOModule
from gradbal.modules.dynamic_sampling import DynamicSampling
from gradbal.modules.grpo import GRPOModule, Rollout
from gradbal.modules.reference import (
    AdapterDisabled,
    FrozenCopy,
    InitialPolicy,
    Precomputed,
    Reference,
)
from gradbal.modules.sft import SFTModule

__all__ = [
    "ER",
    "GSA",
    "AdapterDisabled",
    "ContinualLoss",
    "ContinualObjective",
    "ContinualStep",
    "DPOModule",
    "DynamicSampling",
    "FineTune",
    "FrozenCopy",
    "GRPOModule",
    "InitialPolicy",
    "OnlineContinualModule",
    "Precomputed",
    "Reference",
    "Rollout",
    "SFTModule",
]
