"""PreferenceGradientMonitor: the chosen and rejected parts of the preference gradient, per task."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override

from gradbal.callbacks._capture_session import CaptureSession
from gradbal.callbacks._prerequisites import require_logger, task_names
from gradbal.callbacks._tensorboard import add_task_layout
from gradbal.callbacks.statistics import Measurement, StatisticSource
from gradbal.contracts import fresh_task_losses
from gradbal.gradstats import (
    PreferenceGradParts,
    preference_grad_parts,
    preference_segments,
)
from gradbal.metric_names import (
    GRAD_COS_CHOSEN_REJECTED,
    GRAD_NORM_CHOSEN,
    GRAD_NORM_REJECTED,
    GRAD_RATIO_REJECTED_OVER_CHOSEN,
    metric_name,
)
from gradbal.step_metrics import log_step_metrics
from gradbal.task_losses import task_loss_weights
from gradbal.types import TaskLosses

_PARTS = ("chosen", "rejected")


class PreferenceGradientMonitor(Callback, StatisticSource):
    r"""Logs the norms of the chosen and the rejected part of the gradient, and their ratio.

    DPO's gradient is ``-beta sigma(-beta h) [grad log pi(y_w) - grad log pi(y_l)]``: a part that
    raises the chosen completion and a part that lowers the rejected one (docs/balanced_dpo.md).
    Ma et al. (2025) find the rejected part dominates. This callback measures both, per task,
    inside the one training backward: :class:`gradbal.gradstats.TaskGradCapture` collects the
    gradient flowing through the chosen rows and through the rejected rows of each task (one
    segment per task and part), with no extra forward or backward; other steps cost nothing.
    Changes nothing.

    Values are the norms of this step's gradient parts on the measured layers (not
    noise-corrected). Per-task values have the task's loss weight divided out; the totals are
    the parts of the gradient actually applied. Under DDP each rank measures its own batch and
    the squared norms and inner products are averaged over ranks (so the totals are the
    root-mean-square of the ranks' parts, not the parts of the averaged gradient).

    Logged on measured steps, overall and per task (``/<task>``):

    * ``train/grad_norm/chosen`` and ``train/grad_norm/rejected``: ``||g_chosen||``,
      ``||g_rejected||``;
    * ``train/grad_ratio/rejected_over_chosen``: their ratio (> 1: the rejected part dominates);
    * ``train/grad_cos/chosen_rejected``: the cosine between the two parts.

    Contract with the LightningModule (``gradbal.modules.DPOModule`` fulfils it): in
    ``training_step`` it reports its losses with ``gradbal.report_task_losses(self, losses,
    task_ids, group_ids, parts=rejected)`` (:class:`gradbal.types.TaskLosses`, one entry per
    forward row), ``parts`` being 1 on the rows that are rejected completions and 0 on the chosen
    ones; the rows of the measured layers' inputs are those ``N`` rows. (A module that sets the
    older ``self.rejected_rows``, a ``[N]`` bool tensor, instead of ``parts`` still works, with a
    ``DeprecationWarning``.)

    Args:
        params: The measured layers: ``"last_attention_block"``, ``"last_block"``,
            ``"all_linear"``, ``"trainable"`` or a regular expression on module names relative
            to the LightningModule (``gradbal.gradstats.param_selectors``).
        every_n_steps: Measure every ``n`` optimiser steps; default the Trainer's
            ``log_every_n_steps``.
        include_frozen: Also measure the gradient frozen weights would have (LoRA bases).
        max_memory_fraction: Before the first measured step, refuse (``RuntimeError``, naming
            cheaper selections) if the share buffers, ``segments x`` the measured weights'
            sizes in fp32 on every rank (whole, also under FSDP), exceed this share of the
            device's memory (a GPU's total memory; on CPU, physical memory over processes).

    Raises:
        ValueError: On ``every_n_steps < 1`` or ``max_memory_fraction`` outside ``(0, 1]``; at fit start if ``params`` selects no measurable
            layer.
        RuntimeError: At ``setup`` without a logger, without ``trainer.datamodule.task_names``,
            or with a task named ``chosen`` or ``rejected`` (the metric names would clash); at a
            measured step if the module did not report its ``task_losses`` with ``parts``.

    Attributes:
        parts: The latest :class:`gradbal.gradstats.PreferenceGradParts` (per-task values with
            loss weights divided out), or ``None``.
        parts_step: The optimiser step of ``parts``; ``-1`` before the first.
        provides: ``"grad_ratio_rejected_over_chosen"``: :meth:`latest` gives ``parts.ratio``
            per task to the callbacks that read it (``gradbal.callbacks.statistics``).
        measured_layers: The layers measured now (``[]`` before fit starts); logged once as
            text with :attr:`skipped_layers` after the first measured step.
        skipped_layers: ``{layer: reason}`` for the selected layers not measured. A layer whose
            inputs are not the batch rows is dropped with a warning naming the cause; a step in
            which no layer was captured gives NaN (nothing logged) and a warning.

    Example::

        >>> monitor = PreferenceGradientMonitor(params="all_linear", every_n_steps=10)
        >>> monitor.task_metric_groups[:2]
        ('train/grad_norm/chosen', 'train/grad_norm/rejected')
    """

    provides = "grad_ratio_rejected_over_chosen"
    task_metric_groups = tuple(
        metric_name("train", g)
        for g in (
            GRAD_NORM_CHOSEN,
            GRAD_NORM_REJECTED,
            GRAD_RATIO_REJECTED_OVER_CHOSEN,
            GRAD_COS_CHOSEN_REJECTED,
        )
    )

    def __init__(
        self,
        params: str = "last_attention_block",
        every_n_steps: int | None = None,
        include_frozen: bool = False,
        max_memory_fraction: float = 0.25,
    ):
        self._session = CaptureSession(
            type(self).__name__, params, include_frozen, every_n_steps, max_memory_fraction
        )
        self.max_memory_fraction = max_memory_fraction
        self.params = params
        self.every_n_steps = every_n_steps
        self.include_frozen = include_frozen
        self.parts: PreferenceGradParts | None = None
        self.parts_step = -1
        self._task_names: list[str] = []
        self._present: Tensor | None = None
        self._last_report: TaskLosses | None = None

    @override
    def latest(self) -> Measurement | None:
        """``parts.ratio`` at ``parts_step`` (valid where finite), for the statistic bus."""
        if self.parts is None:
            return None
        ratio = self.parts.ratio
        return Measurement(self.parts_step, ratio, torch.isfinite(ratio))

    @property
    def measured_layers(self) -> list[str]:
        """The layers measured now (``[]`` before fit starts)."""
        return self._session.measured_layers

    @property
    def skipped_layers(self) -> dict[str, str]:
        """``{layer: reason}`` for the selected layers that are not measured."""
        return self._session.skipped_layers

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        owner = type(self).__name__
        require_logger(trainer, owner)
        self._task_names = task_names(trainer, owner)
        clashes = sorted(set(self._task_names) & set(_PARTS))
        if clashes:
            raise RuntimeError(
                f"{owner} logs `train/grad_norm/chosen` and `train/grad_norm/rejected`, which "
                f"would clash with the per-task curves of tasks named {clashes}. Rename those "
                "tasks (their `name` argument)."
            )
        self._session.setup(trainer)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Here, not in setup: the module's layers exist only after `configure_model`.
        self._session.start(pl_module)
        add_task_layout(trainer, self)

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._session.begin_step(trainer)

    @override
    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: Tensor
    ) -> None:
        if not self._session.measuring:
            return
        reported = fresh_task_losses(pl_module, self._last_report)
        rejected = None if reported is None else reported.parts
        if reported is not None and rejected is None:
            rejected = _legacy_rejected_rows(pl_module)
        if reported is None or rejected is None:
            raise RuntimeError(
                f"PreferenceGradientMonitor needs, in every step, each forward row's loss share "
                f"with its task and which rows are rejected completions, but "
                f"{type(pl_module).__name__} did not report both in this step. Use "
                "gradbal.modules.DPOModule, or return `gradbal.report_task_losses(self, losses, "
                "task_ids, group_ids, parts=rejected)` from training_step (`rejected`: [N], 1 on "
                "the rejected completions' rows, 0 on the chosen ones')."
            )
        self._last_report = reported
        k = len(self._task_names)
        segments = preference_segments(reported.task_ids, rejected.to(torch.bool), k)
        self._session.set_segments(segments, 2 * k, reported.losses.device, trainer, pl_module)
        present = torch.bincount(reported.task_ids, minlength=k) > 0  # [K]
        self._present = present if self._present is None else self._present | present

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        session, present = self._session, self._present
        if not session.measuring:
            return
        self._present = None
        if present is None:  # training_step returned None: nothing to measure
            session.end_step()
            return
        with session.gram(trainer, pl_module) as gram:  # [2K, 2K]
            if trainer.world_size > 1:
                gram = trainer.strategy.reduce(gram, reduce_op="mean")
                present = trainer.strategy.reduce(present.float(), reduce_op="sum") > 0
        parts = preference_grad_parts(gram, present)
        self.parts = parts.unweighted(task_loss_weights(pl_module))
        self.parts_step = trainer.global_step
        log_step_metrics(pl_module, self._metrics(self.parts), every_n_steps=1)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._session.close()
        self._present = None

    def _metrics(self, parts: PreferenceGradParts) -> dict[str, float]:
        groups = dict(
            zip(
                (GRAD_NORM_CHOSEN, GRAD_NORM_REJECTED, GRAD_RATIO_REJECTED_OVER_CHOSEN, GRAD_COS_CHOSEN_REJECTED),
                ((parts.total_chosen, parts.chosen), (parts.total_rejected, parts.rejected),
                 (parts.total_ratio, parts.ratio), (parts.total_cosine, parts.cosine)),
                strict=True,
            )
        )  # fmt: skip
        out: dict[str, float] = {}
        for group, (total, per_task) in groups.items():
            if torch.isfinite(total):
                out[metric_name("train", group)] = float(total)
            for name, value in zip(self._task_names, per_task.tolist(), strict=True):
                if not math.isnan(value):  # NaN: the task was not in the batch
                    out[metric_name("train", group, name)] = value
        return out


def _legacy_rejected_rows(module: LightningModule) -> Tensor | None:
    """``module.rejected_rows``, the contract before ``TaskLosses.parts`` (deprecated)."""
    rejected = getattr(module, "rejected_rows", None)
    if not isinstance(rejected, Tensor):
        return None
    warnings.warn(
        f"{type(module).__name__}.rejected_rows is deprecated: pass the split to "
        "`gradbal.report_task_losses(..., parts=rejected_rows)` instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return rejected
