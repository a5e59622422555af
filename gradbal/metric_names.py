"""Every metric name gradbal logs, built in one place: ``<stage>/<group>[/<task>]``."""

from __future__ import annotations

from typing import Literal

Stage = Literal["train", "val", "test"]

LOSS = "loss"
REWARD = "reward"
KL = "kl"
CLIP_FRAC = "clip_frac"
COMPLETION_LEN = "completion_len"
ZERO_STD_FRAC = "zero_std_frac"
SAMPLING_PROB = "sampling_prob"
LOSS_WEIGHT = "loss_weight"
ACCURACY = "accuracy"
GRAD_NORM = "grad_norm"
GRAD_NORM_SQ_UNBIASED = "grad_norm_sq_unbiased"
GRAD_NORM_SQ_RATIO = "grad_norm_sq_ratio"
LEARNING_GAIN = "learning_gain"
GRAD_GAIN_SPEARMAN = "grad_gain_spearman"


def metric_name(stage: Stage, group: str, task: str | None = None) -> str:
    """Return ``"<stage>/<group>"`` or ``"<stage>/<group>/<task>"``.

    Example::

        >>> metric_name("train", "reward", "addition")
        'train/reward/addition'
        >>> metric_name("val", "accuracy")
        'val/accuracy'
    """
    return f"{stage}/{group}" if task is None else f"{stage}/{group}/{task}"
