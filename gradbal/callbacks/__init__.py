"""Callbacks: drop-in pieces for any Lightning project."""

from gradbal.callbacks.checkpoint_config import CheckpointConfig
from gradbal.callbacks.fault_checkpoint import FaultCheckpoint
from gradbal.callbacks.learning_gain import LearningGainMonitor
from gradbal.callbacks.periodic_checkpoint import PeriodicCheckpoint
from gradbal.callbacks.preference_gradient_monitor import PreferenceGradientMonitor
from gradbal.callbacks.save_pretrained import SavePretrained
from gradbal.callbacks.statistics import Measurement, StatisticSource, find_source
from gradbal.callbacks.task_grad_norm import TaskGradNormMonitor
from gradbal.callbacks.task_loss_reweighter import TaskLossReweighter
from gradbal.callbacks.task_sampling import TaskSamplingScheduler

__all__ = [
    "CheckpointConfig",
    "FaultCheckpoint",
    "LearningGainMonitor",
    "Measurement",
    "PeriodicCheckpoint",
    "PreferenceGradientMonitor",
    "SavePretrained",
    "StatisticSource",
    "TaskGradNormMonitor",
    "TaskLossReweighter",
    "TaskSamplingScheduler",
    "find_source",
]
