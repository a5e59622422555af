"""Weighting rules (torch only): one statistic per task -> probabilities, stateless."""

from gradbal.weighting.base import Statistic, TaskWeighting, check_stats
from gradbal.weighting.fixed import Fixed
from gradbal.weighting.grad_proportional import GradProportional
from gradbal.weighting.inverse_grad_norm import InverseGradNorm
from gradbal.weighting.learning_gain_proportional import LearningGainProportional
from gradbal.weighting.uniform import Uniform

__all__ = [
    "Fixed",
    "GradProportional",
    "InverseGradNorm",
    "LearningGainProportional",
    "Statistic",
    "TaskWeighting",
    "Uniform",
    "check_stats",
]
