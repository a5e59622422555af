"""Weighting rules (torch only): one statistic per task -> probabilities, stateless."""

from gradbal.weighting.base import Statistic, TaskWeighting, check_stats
from gradbal.weighting.excess_loss_weights import ExcessLossWeights
from gradbal.weighting.fixed import Fixed
from gradbal.weighting.grad_norm_target import GradNormTarget
from gradbal.weighting.grad_proportional import GradProportional
from gradbal.weighting.inverse_grad_norm import InverseGradNorm
from gradbal.weighting.learnability_proportional import LearnabilityProportional
from gradbal.weighting.learning_gain_proportional import LearningGainProportional
from gradbal.weighting.learning_progress_bandit import (
    LearningProgressBandit,
    importance_weighted_reward,
)
from gradbal.weighting.skill_graph import SkillGraphWeights
from gradbal.weighting.uniform import Uniform

__all__ = [
    "ExcessLossWeights",
    "Fixed",
    "GradNormTarget",
    "GradProportional",
    "InverseGradNorm",
    "LearnabilityProportional",
    "LearningGainProportional",
    "LearningProgressBandit",
    "SkillGraphWeights",
    "Statistic",
    "TaskWeighting",
    "Uniform",
    "check_stats",
    "importance_weighted_reward",
]
