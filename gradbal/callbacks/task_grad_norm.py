"""TaskGradNormMonitor: log each task's gradient norm, measured inside the training backward."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override

from gradbal.callbacks._capture_session import CaptureSession
from gradbal.callbacks._prerequisites import task_names
from gradbal.callbacks._tensorboard import add_task_layout
from gradbal.callbacks.statistics import Measurement, StatisticSource
from gradbal.contracts import GradSums, fresh_task_losses, reported_task_losses
from gradbal.gradstats import (
    RowAlignment,
    TaskGradStats,
    check_row_alignment,
    group_segments,
    half_split_segments,
    task_grad_stats,
)
from gradbal.metric_names import GRAD_NORM, GRAD_NORM_SQ_RATIO, GRAD_NORM_SQ_UNBIASED, metric_name
from gradbal.sharding import is_sharded
from gradbal.step_metrics import log_step_metrics
from gradbal.task_losses import task_loss_weights
from gradbal.types import TaskLosses

Estimator = Literal["cross_product", "all_pairs"]


class TaskGradNormMonitor(Callback, StatisticSource):
    r"""Logs each task's gradient norm on a set of layers, measured in the normal backward.

    On measured steps, :class:`gradbal.gradstats.TaskGradCapture` collects each task's share of
    the selected layers' gradient during the one training backward (no extra backward), and the
    cross-product estimator turns the shares of two random halves of each task's groups into an
    unbiased estimate of ``||G_k||^2``, the squared norm of the gradient of task ``k``'s mean
    per-group loss (Wu et al. 2025, arXiv:2510.19178; the last attention block is their proxy
    for the whole model). Other steps cost nothing: the hooks are removed. Changes nothing.

    The estimate is of the *unweighted* task gradient: loss weights set by
    :class:`TaskLossReweighter` are divided out, and sampling probabilities do not enter a
    per-group mean, so the numbers describe the task at the current parameters, whatever the
    rebalancing. Under DDP, sums are all-reduced (``trainer.strategy.reduce``) before dividing,
    so every rank holds the same statistics. Under fp16 AMP the shares are divided by the step's
    loss scale; ``.grad`` is never read, so fused optimizers (which unscale inside ``step``) are
    fine, and overflow steps are left out.

    Logged on measured steps (a task with fewer than 2 groups in the step is left out):

    * ``train/grad_norm/<task>``: signed square root of the estimate;
    * ``train/grad_norm_sq_unbiased/<task>``: the estimate itself (negative when noise
      dominates; never clamped here);
    * ``train/grad_norm_sq_ratio``: largest over smallest estimate across tasks (the paper's
      "up to 15x"), when at least two tasks are measured and all are positive.

    With a TensorBoard logger, each ``<group>/<task>`` family is also one chart (custom scalars).
    Without a logger (``Trainer(logger=False)``) nothing is logged, with one warning, and the
    statistics are still measured and kept in :attr:`stats`, for a scheduler or reweighter.

    Contract with the LightningModule: ``training_step`` sets ``self.task_losses``
    (:class:`gradbal.types.TaskLosses`), most simply by returning
    ``gradbal.report_task_losses(self, losses, task_ids, group_ids)``; the rows of the measured
    layers' inputs are the samples of ``task_losses`` (batch-first, one row per sample), in the
    same order: ``losses[i]`` is the loss of batch row ``i``.

    What the monitor checks, so that a number it logs is never a fake one:

    * On its first measured step (until the check is conclusive, at most 3 steps) it probes that
      the gradient of ``losses[i]`` reaches the first and the last measured layer through batch
      row ``i`` (or rows of ``i``'s group) only, with ``1 + ceil(log8(groups))`` partial
      ``torch.autograd.grad`` calls on the kept layer outputs (no weight gradients), and raises
      if not (e.g. losses concatenated task by task). See
      :func:`gradbal.gradstats.check_row_alignment`.
      The probe does not run under FSDP (its backward hooks do not support partial backwards);
      the monitor says so once.
    * A layer whose inputs are not the batch rows (``head(h[i])`` row by row, a per-task head on
      ``h[task_ids == k]``, position ids ``[1, T]``) is dropped with a warning naming the cause;
      if no measured layer is captured in a step, every task is NaN and invalid (not logged,
      not used by schedulers) and a warning says why.
    * :attr:`measured_layers` and :attr:`skipped_layers` are logged once as text after the first
      measured step (TensorBoard text, else an info message).

    Args:
        params: The measured layers: ``"last_attention_block"``, ``"last_block"``,
            ``"all_linear"``, ``"trainable"`` or a regular expression on module names relative to
            the LightningModule (``gradbal.gradstats.param_selectors``).
        estimator: ``"cross_product"``: two random halves per task (2 share buffers per task);
            ``"all_pairs"``: one segment per group, the lower-variance U-statistic (one buffer
            per group; needs ``accumulate_grad_batches=1``).
        every_n_steps: Measure every ``n`` optimiser steps. Default: the Trainer's
            ``log_every_n_steps``, so every measurement reaches the logger (values measured
            between logger steps are only used by schedulers).
        include_frozen: Also measure the gradient frozen weights would have (e.g. LoRA bases).
        seed: Seeds the random halves; derived per step and identical on every rank, so a
            resumed run splits exactly as the uninterrupted one.
        max_memory_fraction: Before the first measured step, refuse (``RuntimeError``, naming
            cheaper selections) if the share buffers, ``segments x`` the measured weights'
            sizes in fp32 on every rank (whole, also under FSDP), exceed this share of the
            device's memory (a GPU's total memory; on CPU, physical memory over processes).

    Raises:
        ValueError: On an unknown ``estimator``, ``every_n_steps < 1`` or
            ``max_memory_fraction`` outside ``(0, 1]``; at fit start if
            ``params`` selects no measurable layer (the message lists what was skipped).
        RuntimeError: At ``setup`` without ``trainer.datamodule.task_names``, or with
            ``all_pairs`` and gradient accumulation; at a measured step if the module did not set
            ``task_losses`` in that step.

    Attributes:
        stats: The latest :class:`gradbal.gradstats.TaskGradStats` (``[K]`` tensors, reduced
            across ranks, loss weights divided out), or ``None``. Schedulers read it.
        stats_step: The optimiser step (``trainer.global_step`` before it) of ``stats``; ``-1``.
        provides: ``"grad_norm_sq"``: :meth:`latest` gives ``stats.unbiased_sq`` and
            ``stats.valid`` to the callbacks that read it (``gradbal.callbacks.statistics``).
        measured_layers: The layers measured now (``[]`` before fit starts).
        skipped_layers: ``{layer: reason}`` for the selected layers not measured (unsupported,
            frozen, or dropped at a backward because their inputs are not the batch rows).

    Example::

        >>> monitor = TaskGradNormMonitor(params="last_attention_block", every_n_steps=10)
        >>> monitor.task_metric_groups
        ('train/grad_norm', 'train/grad_norm_sq_unbiased')
    """

    provides = "grad_norm_sq"
    task_metric_groups = (
        metric_name("train", GRAD_NORM),
        metric_name("train", GRAD_NORM_SQ_UNBIASED),
    )

    def __init__(
        self,
        params: str = "last_attention_block",
        estimator: Estimator = "cross_product",
        every_n_steps: int | None = None,
        include_frozen: bool = False,
        seed: int = 0,
        max_memory_fraction: float = 0.25,
    ):
        if estimator not in ("cross_product", "all_pairs"):
            raise ValueError(
                f"`estimator` must be 'cross_product' or 'all_pairs'. Got {estimator!r}."
            )
        self._session = CaptureSession(
            type(self).__name__, params, include_frozen, every_n_steps, max_memory_fraction
        )
        self.max_memory_fraction = max_memory_fraction
        self.params = params
        self.estimator: Estimator = estimator
        self.every_n_steps = every_n_steps
        self.include_frozen = include_frozen
        self.seed = seed
        self.stats: TaskGradStats | None = None
        self.stats_step = -1
        self._task_names: list[str] = []
        self._backwards = 0  # backwards captured in the current step
        self._segment_tasks: Tensor | None = None
        self._last_report: TaskLosses | None = None
        self._probe_tries = 0  # row-alignment probes run; -1: done
        self._logging = True  # the Trainer has a logger (set at setup)
        self._warned_no_logger = False

    @override
    def latest(self) -> Measurement | None:
        """``stats.unbiased_sq`` and ``stats.valid`` at ``stats_step``, for the statistic bus."""
        if self.stats is None:
            return None
        return Measurement(self.stats_step, self.stats.unbiased_sq, self.stats.valid)

    def grad_sums(self) -> GradSums | None:
        """The cross sums and pair counts of ``stats`` (:class:`gradbal.contracts.GradSums`,
        loss weights divided out; 0 pairs where a task is not valid), for pooling over steps."""
        stats = self.stats
        if stats is None or stats.cross is None or stats.pairs is None:
            return None
        valid = stats.valid
        cross = torch.where(valid, stats.cross, float("nan"))
        return GradSums(self.stats_step, cross, torch.where(valid, stats.pairs, 0.0))

    @override
    def measured_every_n_steps(self, trainer: Trainer) -> int | None:
        """The measured steps need >= 2 groups of a task for its cross-product estimate."""
        return self.every_n_steps or max(int(trainer.log_every_n_steps), 1)  # type: ignore[attr-defined]

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
        self._task_names = task_names(trainer, owner)
        if self.estimator == "all_pairs" and trainer.accumulate_grad_batches != 1:
            raise RuntimeError(
                "TaskGradNormMonitor(estimator='all_pairs') gives every group its own segment, "
                "which cannot span accumulated batches (group ids repeat across them). Got "
                f"accumulate_grad_batches={trainer.accumulate_grad_batches}. Use "
                "estimator='cross_product', or accumulate_grad_batches=1."
            )
        self._session.setup(trainer)
        self._logging = bool(trainer.loggers)
        if not self._logging and not self._warned_no_logger:
            self._warned_no_logger = True
            rank_zero_warn(
                f"{owner}: the Trainer has no logger, so nothing is logged. The statistics are "
                f"still measured every {self._session.every} steps and kept in `{owner}.stats` for "
                "schedulers and reweighters. Pass a logger to see them, or set "
                "`every_n_steps` to measure at another interval."
            )

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Here, not in setup: the module's layers exist only after `configure_model`.
        self._session.start(pl_module)
        if is_sharded(pl_module) and self._probe_tries >= 0:
            # The probe's partial backwards stop at the measured outputs, which FSDP's
            # backward hooks do not support (its resharded weights are missing there).
            self._probe_tries = -1
            rank_zero_info(
                "TaskGradNormMonitor: the row-alignment probe does not run under FSDP; the "
                "statistics assume that losses[i] is the loss of batch row i."
            )
        if self._logging:
            add_task_layout(trainer, self)

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._session.begin_step(trainer) and self._probe_tries >= 0:
            assert self._session.capture is not None
            self._session.capture.keep_outputs()

    @override
    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: Tensor
    ) -> None:
        if not self._session.measuring:
            return
        reported = fresh_task_losses(pl_module, self._last_report)
        if reported is None:
            set_before = reported_task_losses(pl_module) is not None
            raise RuntimeError(
                f"TaskGradNormMonitor needs each sample's loss share with its task in every step, "
                f"but {type(pl_module).__name__}.task_losses was "
                f"{'not updated in this step' if set_before else 'not set'}. "
                "In training_step, return `gradbal.report_task_losses(self, losses, task_ids)` "
                "(per-sample losses, reduction='none'), or set `self.task_losses = TaskLosses(...)`."
            )
        self._last_report = reported
        task_ids, group_ids = reported.task_ids, reported.group_ids
        if self._probe_tries >= 0:
            self._check_rows(trainer, pl_module, reported)
        k = len(self._task_names)
        if self.estimator == "cross_product":
            seed = hash((self.seed, trainer.global_step, self._backwards)) & (2**63 - 1)
            generator = torch.Generator(device=task_ids.device).manual_seed(seed)
            segments = half_split_segments(task_ids, group_ids, k, generator=generator)
            num_segments = 2 * k
        else:
            segments, self._segment_tasks = group_segments(task_ids, group_ids, k)
            num_segments = self._segment_tasks.numel()
        self._session.set_segments(
            segments, num_segments, reported.losses.device, trainer, pl_module, group_ids
        )
        self._backwards += 1

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        session, backwards = self._session, self._backwards
        if not session.measuring:
            return
        self._backwards = 0
        if backwards == 0:  # training_step returned None: nothing to measure
            session.end_step()
            return
        reduce = None
        if trainer.world_size > 1:
            reduce = lambda t: trainer.strategy.reduce(t, reduce_op="sum")  # noqa: E731
        assert session.capture is not None
        groups = session.capture.groups_per_segment()
        with session.gram(trainer, pl_module) as gram:
            stats = task_grad_stats(
                gram,
                groups,
                segment_tasks=self._segment_tasks,
                num_tasks=len(self._task_names),
                all_reduce=reduce,
            )
        self.stats = stats.unweighted(task_loss_weights(pl_module))
        self.stats_step = trainer.global_step
        if self._logging:
            log_step_metrics(pl_module, self._metrics(self.stats), every_n_steps=1)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._session.close()
        self._backwards = 0

    def _check_rows(
        self, trainer: Trainer, pl_module: LightningModule, reported: TaskLosses
    ) -> None:
        """Probe that ``losses[i]`` reaches the measured layers through batch row ``i``."""
        capture = self._session.capture
        assert capture is not None
        outputs = capture.take_outputs()
        if outputs:  # the first and the last measured layer called: bounds memory and time
            names = list(outputs)
            outputs = {name: outputs[name] for name in dict.fromkeys([names[0], names[-1]])}
            with capture.paused():
                result = check_row_alignment(reported.losses, reported.group_ids, outputs)
        else:
            result = RowAlignment(0)
        verdict = torch.tensor(
            [result.layer is not None, result.checked_rows > 0],
            dtype=torch.float32,
            device=reported.losses.device,
        )
        if trainer.world_size > 1:  # one decision on every rank
            verdict = trainer.strategy.reduce(verdict, reduce_op="sum")
        if verdict[0] > 0:
            raise RuntimeError(_misaligned_message(type(pl_module).__name__, result))
        self._probe_tries += 1
        if verdict[1] == trainer.world_size:
            self._probe_tries = -1
        elif self._probe_tries >= 3:
            self._probe_tries = -1
            if not self.measured_layers:
                return  # every layer was dropped: the NaN warning of each step says why
            rank_zero_warn(
                "TaskGradNormMonitor could not check that `losses[i]` is the loss of batch row i "
                "in 3 measured steps: no loss had a gradient at the measured layers "
                f"{self.measured_layers} (or the forward ran under reentrant activation "
                "checkpointing). Its statistics assume that the rows line up.",
                category=RuntimeWarning,
            )

    def _metrics(self, stats: TaskGradStats) -> dict[str, float]:
        squares, norms, valid = (
            stats.unbiased_sq.tolist(),
            stats.norm.tolist(),
            stats.valid.tolist(),
        )
        out: dict[str, float] = {}
        for name, sq, norm, ok in zip(self._task_names, squares, norms, valid, strict=True):
            if ok:
                out[metric_name("train", GRAD_NORM, name)] = norm
                out[metric_name("train", GRAD_NORM_SQ_UNBIASED, name)] = sq
        measured = [sq for sq, ok in zip(squares, valid, strict=True) if ok]
        if len(measured) >= 2 and min(measured) > 0:
            out[metric_name("train", GRAD_NORM_SQ_RATIO)] = max(measured) / min(measured)
        return out


def _misaligned_message(module: str, result: RowAlignment) -> str:
    if result.layer is None:
        what = "another rank found a batch row that carries the gradient of another row's loss"
    elif result.source >= 0:
        what = (
            f"row {result.row} of the batch seen by layer `{result.layer}` carries the gradient "
            f"of `losses[{result.source}]`, not of `losses[{result.row}]`: the rows of `losses` "
            "are not in batch-row order (e.g. concatenated task by task)"
        )
    else:
        what = (
            f"row {result.row} of the batch seen by layer `{result.layer}` carries the gradients "
            "of the losses of several groups, so a row's loss depends on other rows (e.g. a "
            "batch statistic with a gradient, batch norm) or `losses` are not in batch-row order"
        )
    return (
        f"TaskGradNormMonitor: row i of `losses` reported by {module} must be the loss of row i "
        f"of the batch its measured layers see, but {what}. Per-task gradient norms would be "
        "wrong. Report losses in batch-row order (`losses[i]` computed from input row i; for "
        "per-task computations write each task's losses back to its rows, "
        "`losses[task_ids == k] = loss_k`), make each loss depend only on its own row (detach "
        "batch-wide normalisers), or give rows that share a loss the same `group_ids`."
    )
