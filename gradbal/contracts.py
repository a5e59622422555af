"""The typed hand-offs between gradbal's LightningModules, Callbacks and DataModules.

gradbal's callbacks drop into foreign projects, so they see a module or a DataModule only
through these contracts, never through its class:

* :class:`ReportsTaskLosses`: a LightningModule that, in every ``training_step``, sets
  ``task_losses`` (:class:`gradbal.types.TaskLosses`) with :func:`gradbal.report_task_losses`.
  The gradient monitors, the learning-gain monitor and the non-finite-loss handler read it.
* :class:`TaskMixture`: a DataModule with named tasks whose sampling probabilities can change
  while training runs (:class:`gradbal.datamodules.MultiTaskDataModule`); the sampling scheduler
  writes to it.

:func:`reported_task_losses` and :func:`trainer_of` are the one way gradbal code reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gradbal.types import TaskLosses

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

__all__ = [
    "PromptRefill",
    "ReportsTaskLosses",
    "TaskMixture",
    "fresh_task_losses",
    "prompt_refill",
    "reported_task_losses",
    "trainer_of",
]


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
