"""LightningModules: they wire gradbal's objectives to models, data and logging."""

from gradbal.modules.grpo import GRPOModule, Rollout
from gradbal.modules.sft import SFTModule

__all__ = ["GRPOModule", "Rollout", "SFTModule"]
