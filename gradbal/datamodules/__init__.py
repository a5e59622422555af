"""LightningDataModules: the multi-task mixture, the class-incremental stream, their state."""

from gradbal.datamodules.continual import ClassIncrementalDataModule
from gradbal.datamodules.multitask import MultiTaskDataModule, collate_rows
from gradbal.datamodules.replay_buffer import ReplaySample, ReservoirBuffer
from gradbal.datamodules.task_sampler import WeightedTaskSampler, validate_sampling_probs

__all__ = [
    "ClassIncrementalDataModule",
    "MultiTaskDataModule",
    "ReplaySample",
    "ReservoirBuffer",
    "WeightedTaskSampler",
    "collate_rows",
    "validate_sampling_probs",
]
