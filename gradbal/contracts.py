"""Typed hand-offs from a LightningModule (or a monitor) to the statistic sources that read it.

A source never reaches into a module with ``getattr``: it checks in ``setup`` that the module
implements one of these ``Protocol``s (``isinstance`` against the ``runtime_checkable``
protocol) and reads the typed report it sets in ``training_step``. A user's own module joins by
setting the same attribute.

* :class:`ReportsTaskLosses`: a module that sets ``task_losses`` (:class:`gradbal.types.TaskLosses`)
  in every ``training_step`` (every gradbal module, through ``gradbal.report_task_losses``).
* :class:`ReportsRollout`: a module that samples groups of completions and scores them (GRPO):
  ``last_rollout`` is a :class:`RolloutReport`.
* :class:`ReportsPreferences`: a module that scores preference pairs (DPO): ``last_preferences``
  is a :class:`PreferenceReport`.
* :class:`ReportsGradSums`: a gradient monitor that exposes the raw cross sums and pair counts of
  its unbiased squared-norm estimate (``TaskGradNormMonitor``), so another callback can pool them.

Example::

    >>> import torch
    >>> class MyModule:
    ...     last_rollout: RolloutReport | None = None
    >>> isinstance(MyModule(), ReportsRollout)
    True
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from torch import Tensor

from gradbal.types import TaskLosses


class RolloutReport(NamedTuple):
    """One training batch's rollout, per completion row (detached; on any device).

    Attributes:
        step: ``trainer.global_step`` in the ``training_step`` that set it (optimiser steps done
            before this batch).
        batch_idx: The ``batch_idx`` of that ``training_step``. ``(step, batch_idx)`` says which
            batch a report belongs to, so a source never counts a stale one.
        task_ids: ``[N]`` long, index into the DataModule's ``task_names``.
        group_ids: ``[N]`` long; rows with equal id are the completions of one prompt.
        rewards: ``[N]`` float, each completion's reward.
        advantages: ``[N]`` float, each completion's advantage.
        new: ``True`` the first time these rows are trained on; ``False`` when a rollout is
            reused (``num_iterations > 1``), so statistics count each rollout once.
    """

    step: int
    batch_idx: int
    task_ids: Tensor
    group_ids: Tensor
    rewards: Tensor
    advantages: Tensor
    new: bool = True


class PreferenceReport(NamedTuple):
    """One training batch's preference pairs (detached; on any device).

    Attributes:
        step: ``trainer.global_step`` in the ``training_step`` that set it.
        batch_idx: The ``batch_idx`` of that ``training_step``.
        task_ids: ``[B]`` long, each pair's task.
        chosen_rewards: ``[B]`` float, the implicit reward of each chosen completion
            (DPO: ``beta * (log pi - log pi_ref)``).
        rejected_rewards: ``[B]`` float, the same for each rejected completion.
    """

    step: int
    batch_idx: int
    task_ids: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


class GradSums(NamedTuple):
    """The raw sums behind one measurement of ``||G_k||^2``, reduced across ranks.

    ``cross / pairs`` is the unbiased estimate (``gradbal.gradstats.task_grad_stats``): the sum
    over pairs of segments ``s != r`` of ``<g_s, g_r>``, and of ``n_s n_r``. Loss weights are
    divided out of ``cross``.

    Attributes:
        step: The optimiser step measured (``trainer.global_step`` before it).
        cross: ``[K]`` float, NaN where the task was not measured.
        pairs: ``[K]`` float, 0 where the task was not measured.
    """

    step: int
    cross: Tensor
    pairs: Tensor


@runtime_checkable
class ReportsTaskLosses(Protocol):
    """A module that sets ``task_losses`` in every ``training_step`` (``report_task_losses``)."""

    task_losses: TaskLosses | None


@runtime_checkable
class ReportsRollout(Protocol):
    """A module that sets ``last_rollout`` in every ``training_step`` (``GRPOModule`` does)."""

    last_rollout: RolloutReport | None


@runtime_checkable
class ReportsPreferences(Protocol):
    """A module that sets ``last_preferences`` in every ``training_step`` (``DPOModule`` does)."""

    last_preferences: PreferenceReport | None


@runtime_checkable
class ReportsGradSums(Protocol):
    """A gradient monitor that exposes the sums of its newest measurement."""

    def grad_sums(self) -> GradSums | None:
        """The newest measurement's sums, or ``None`` before the first."""
        ...
