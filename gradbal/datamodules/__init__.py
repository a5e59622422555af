"""LightningDataModules: the multi-task mixture and its resumable task sampler."""

from gradbal.datamodules.multitask import MultiTaskDataModule, collate_rows
from gradbal.datamodules.task_sampler import WeightedTaskSampler, validate_sampling_probs

__all__ = [
    "MultiTaskDataModule",
    "WeightedTaskSampler",
    "collate_rows",
    "validate_sampling_probs",
]
