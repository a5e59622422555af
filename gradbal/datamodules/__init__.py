"""LightningDataModules: the multi-task mixture and its sampler.

``ClassIncrementalDataModule`` and the replay buffer live in :mod:`gradbal.continual`; they are
importable here too, for old configs.
"""

from gradbal.continual import ClassIncrementalDataModule, ReplaySample, ReservoirBuffer
from gradbal.datamodules.multitask import MultiTaskDataModule, collate_rows
from gradbal.datamodules.task_mixture_sampler import TaskMixtureSampler
from gradbal.datamodules.task_sampler import WeightedTaskSampler, validate_sampling_probs
from gradbal.datamodules.task_stream import TaskStream

__all__ = [
    "ClassIncrementalDataModule",
    "MultiTaskDataModule",
    "ReplaySample",
    "ReservoirBuffer",
    "TaskMixtureSampler",
    "TaskStream",
    "WeightedTaskSampler",
    "collate_rows",
    "validate_sampling_probs",
]
