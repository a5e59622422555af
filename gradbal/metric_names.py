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
DISTINCT_FRAC = "distinct_frac"
ABS_ADVANTAGE = "abs_advantage"
REWARD_ERRORS = "reward_errors"
# Mean |trainer - rollout engine| sampled-token log-prob per completion token (GRPO).
ENGINE_LOGPROB_GAP = "engine_logprob_gap"
# DAPO dynamic sampling (GRPO): groups filtered out, completions of extra rounds, rounds run.
DS_DROPPED_GROUPS = "dynamic_sampling/dropped_groups"
DS_EXTRA = "dynamic_sampling/extra_completions"
DS_ROUNDS = "dynamic_sampling/rounds"
# Truncated importance sampling (GRPO with a rollout engine): the share of completions (sequence
# modes) or tokens (token modes) whose ratio exceeded the cap, and the mean weight per token.
TIS_CAPPED_FRAC = "tis_capped_frac"
TIS_WEIGHT = "tis_weight"
SAMPLING_PROB = "sampling_prob"
LOSS_WEIGHT = "loss_weight"
# Optimiser steps since a task's statistic was last measured, as a scheduler / reweighter sees it.
SAMPLING_STAT_AGE = "sampling_stat_age"
LOSS_WEIGHT_STAT_AGE = "loss_weight_stat_age"
ACCURACY = "accuracy"
GRAD_NORM = "grad_norm"
GRAD_NORM_SQ_UNBIASED = "grad_norm_sq_unbiased"
GRAD_NORM_SQ_RATIO = "grad_norm_sq_ratio"
LEARNING_GAIN = "learning_gain"
GRAD_GAIN_SPEARMAN = "grad_gain_spearman"
# Statistic sources of issue 15 (gradbal/callbacks/*_source*): pooled over a window, each logged
# as train/<statistic>/<task> and its standard error as train/<statistic>_stderr/<task>.
LEARNABILITY = "learnability"
NONZERO_ADVANTAGE_SHARE = "nonzero_advantage_share"
MEAN_ABS_ADVANTAGE = "mean_abs_advantage"
TASK_LOSS = "task_loss"
EXCESS_LOSS = "excess_loss"
LEARNING_PROGRESS = "learning_progress"
LEARNING_PROGRESS_SIGNED = "learning_progress_signed"
REWARD_MARGIN = "reward_margin"
REWARD_ACCURACY = "reward_accuracy"
GRAD_NORM_SQ_POOLED = "grad_norm_sq_pooled"
STDERR_SUFFIX = "_stderr"
# Preference training (DPOModule, PreferenceGradientMonitor); TRL's grouping.
REWARDS_CHOSEN = "rewards/chosen"
REWARDS_REJECTED = "rewards/rejected"
REWARDS_MARGINS = "rewards/margins"
REWARDS_ACCURACIES = "rewards/accuracies"
LOGPS_CHOSEN = "logps/chosen"
LOGPS_REJECTED = "logps/rejected"
GRAD_NORM_CHOSEN = "grad_norm/chosen"
GRAD_NORM_REJECTED = "grad_norm/rejected"
GRAD_RATIO_REJECTED_OVER_CHOSEN = "grad_ratio/rejected_over_chosen"
GRAD_COS_CHOSEN_REJECTED = "grad_cos/chosen_rejected"


def metric_name(stage: Stage, group: str, task: str | None = None) -> str:
    """Return ``"<stage>/<group>"`` or ``"<stage>/<group>/<task>"``.

    Example::

        >>> metric_name("train", "reward", "addition")
        'train/reward/addition'
        >>> metric_name("val", "accuracy")
        'val/accuracy'
    """
    return f"{stage}/{group}" if task is None else f"{stage}/{group}/{task}"
