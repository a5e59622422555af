"""The typed hand-offs between gradbal's LightningModules, Callbacks and DataModules.

gradbal's callbacks drop into foreign projects, so they see a module, a DataModule or another
callback only through these contracts, never through its class: a callback checks that the
object implements a ``runtime_checkable`` ``Protocol`` and reads the typed report it sets. A
user's own module joins by setting the same attribute.

* :class:`ReportsTaskLosses`: a LightningModule that, in every ``training_step``, sets
  ``task_losses`` (:class:`gradbal.types.TaskLosses`) with :func:`gradbal.report_task_losses`.
  The gradient monitors, the statistic sources, the learning-gain monitor and the
  non-finite-loss handler read it.
* :class:`ReportsRollout`: a module that samples groups of completions and scores them (GRPO):
  ``last_rollout`` is a :class:`RolloutReport`.
* :class:`ReportsPreferences`: a module that scores preference pairs (DPO): ``last_preferences``
  is a :class:`PreferenceReport`.
* :class:`ReportsGradSums`: a gradient monitor that exposes the raw cross sums and pair counts of
  its unbiased squared-norm estimate (``TaskGradNormMonitor``), so another callback can pool them.
* :class:`TaskMixture`: a DataModule with named tasks whose sampling probabilities can change
  while training runs (:class:`gradbal.datamodules.MultiTaskDataModule`); the sampling scheduler
  writes to it.
* :class:`PromptRefill`: a DataModule that draws extra prompts on demand (GRPO's dynamic
  sampling).

:func:`reported_task_losses`, :func:`fresh_task_losses`, :func:`prompt_refill` and
:func:`trainer_of` are the one way gradbal code reads them.

Example::

    >>> class MyModule:
    ...     last_rollout: RolloutReport | None = None
    >>> isinstance(MyModule(), ReportsRollout)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from torch import Tensor

from gradbal.types import TaskLosses

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

__all__ = [
    "GradSums",
    "PreferenceReport",
    "PromptRefill",
    "ReportsGradSums",
    "ReportsPreferences",
    "ReportsRollout",
    "ReportsTaskLosses",
    "RolloutReport",
    "TaskMixture",
    "fresh_task_losses",
    "prompt_refill",
    "reported_task_losses",
    "trainer_of",
]


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
        generated: Completions generated for this rollout on this rank, groups filtered out by
            dynamic sampling included (the generation cost); ``None``: one per row.
    """

    step: int
    batch_idx: int
    task_ids: Tensor
    group_ids: Tensor
    rewards: Tensor
    advantages: Tensor
    new: bool = True
    generated: int | None = None


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


@runtime_checkable
class ReportsTaskLosses(Protocol):
    """A module that reports each sample's share of the step's loss with its task.

    Attributes:
        task_losses: The latest training step's :class:`~gradbal.types.TaskLosses` (``None``
            before the first). ``TaskLosses.step`` says which training batch it belongs to, so a
            reader can tell a fresh report from the previous step's.
    """

    task_losses: TaskLosses | None


@runtime_checkable
class TaskMixture(Protocol):
    """A DataModule with named tasks and sampling probabilities that can change mid-run.

    Attributes:
        task_names: The tasks, in the order the batches' ``task_id`` index.
        sampling_probs: The current ``[K]`` probabilities (a sequence of floats).
    """

    task_names: Sequence[str]

    @property
    def sampling_probs(self) -> Sequence[float]: ...

    def set_sampling_probs(self, probs: Sequence[float]) -> None: ...


@runtime_checkable
class PromptRefill(Protocol):
    """A DataModule that draws extra training prompts on demand (GRPO's dynamic sampling).

    ``draw_prompts(n, seed)`` returns a batch of ``n`` prompts like the training stream's, drawn
    with the current task mixture from a generator seeded by ``seed`` alone, without moving the
    stream.
    """

    def draw_prompts(self, n: int, seed: int) -> dict[str, Any]: ...


def prompt_refill(trainer: Trainer | None, owner: str) -> PromptRefill:
    """The trainer's DataModule as a :class:`PromptRefill`, or a ``RuntimeError`` saying how."""
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    if not isinstance(dm, PromptRefill):
        raise RuntimeError(
            f"{owner}(dynamic_sampling=...) refills the rollout with extra prompts through "
            f"`trainer.datamodule.draw_prompts(n, seed)`, but {type(dm).__name__} has none. Use "
            "gradbal.datamodules.MultiTaskDataModule, give your DataModule that method, or turn "
            "dynamic sampling off."
        )
    return dm


def reported_task_losses(module: Any) -> TaskLosses | None:
    """The module's ``task_losses`` if it reports them (:class:`ReportsTaskLosses`), else ``None``."""
    reported = getattr(module, "task_losses", None)
    return reported if isinstance(reported, TaskLosses) else None


def fresh_task_losses(module: Any, last: TaskLosses | None) -> TaskLosses | None:
    """The module's report if it is newer than ``last`` (the report the reader saw before), else
    ``None``: the module did not report in this training step.

    Reports made inside a fit are told apart by :attr:`~gradbal.types.TaskLosses.step`; reports
    made outside one (``step == -1``) by identity.
    """
    reported = reported_task_losses(module)
    if reported is None or last is None:
        return reported
    if reported.step >= 0 and last.step >= 0:
        return reported if reported.step != last.step else None
    return reported if reported is not last else None


def trainer_of(module: Any) -> Trainer | None:
    """The Trainer a LightningModule is attached to, or ``None`` (not attached; a plain
    ``nn.Module``). Unlike ``LightningModule.trainer`` it never raises."""
    return getattr(module, "_trainer", None)
