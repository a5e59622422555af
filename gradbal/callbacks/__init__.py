"""Callbacks: drop-in pieces for any Lightning project."""

from gradbal.callbacks.abs_advantage import MeanAbsAdvantageMonitor
from gradbal.callbacks.checkpoint_config import CheckpointConfig
from gradbal.callbacks.excess_loss import ExcessLossMonitor
from gradbal.callbacks.famo_reweighter import FAMOReweighter
from gradbal.callbacks.fault_checkpoint import FaultCheckpoint
from gradbal.callbacks.generation_budget import GenerationBudget
from gradbal.callbacks.learnability import LearnabilityMonitor
from gradbal.callbacks.learning_gain import LearningGainMonitor
from gradbal.callbacks.learning_progress import (
    LearningProgressMonitor,
    SignedLearningProgressMonitor,
)
from gradbal.callbacks.loss_ratio import LossRatioMonitor
from gradbal.callbacks.nonzero_advantage import NonZeroAdvantageMonitor
from gradbal.callbacks.periodic_checkpoint import PeriodicCheckpoint
from gradbal.callbacks.pooled_grad_norm import PooledGradNormMonitor
from gradbal.callbacks.preference_gradient_monitor import PreferenceGradientMonitor
from gradbal.callbacks.reward_accuracy import RewardAccuracyMonitor
from gradbal.callbacks.reward_margin import RewardMarginMonitor
from gradbal.callbacks.reward_shortfall import RewardShortfallMonitor
from gradbal.callbacks.save_pretrained import SavePretrained
from gradbal.callbacks.statistics import Measurement, StatisticSource, find_source
from gradbal.callbacks.task_grad_norm import TaskGradNormMonitor
from gradbal.callbacks.task_loss import TaskLossMonitor
from gradbal.callbacks.task_loss_reweighter import TaskLossReweighter
from gradbal.callbacks.task_sampling import TaskSamplingScheduler

__all__ = [
    "CheckpointConfig",
    "ExcessLossMonitor",
    "FAMOReweighter",
    "FaultCheckpoint",
    "GenerationBudget",
    "LearnabilityMonitor",
    "LearningGainMonitor",
    "LearningProgressMonitor",
    "LossRatioMonitor",
    "MeanAbsAdvantageMonitor",
    "Measurement",
    "NonZeroAdvantageMonitor",
    "PeriodicCheckpoint",
    "PooledGradNormMonitor",
    "PreferenceGradientMonitor",
    "RewardAccuracyMonitor",
    "RewardMarginMonitor",
    "RewardShortfallMonitor",
    "SavePretrained",
    "SignedLearningProgressMonitor",
    "StatisticSource",
    "TaskGradNormMonitor",
    "TaskLossMonitor",
    "TaskLossReweighter",
    "TaskSamplingScheduler",
    "find_source",
]
