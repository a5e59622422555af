"""LearningGainMonitor: each task's learning gain, and whether gradient size predicts it."""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._prerequisites import require_logger, task_names
from gradbal.callbacks._tensorboard import add_task_layout
from gradbal.callbacks.statistics import Measurement, StatisticSource, statistic_sources
from gradbal.contracts import reported_task_losses
from gradbal.gradstats import learning_gain, spearman
from gradbal.metric_names import GRAD_GAIN_SPEARMAN, LEARNING_GAIN, metric_name
from gradbal.step_metrics import log_step_metrics

# What the epoch's rank correlation reads, from the callback that provides it.
GRAD_NORM_SQ = "grad_norm_sq"


class LearningGainMonitor(Callback, StatisticSource):
    """Logs each task's learning gain and its rank correlation with the task's gradient norm.

    The learning gain of Wu et al. 2025 ("Imbalanced Gradients in RL Post-Training of
    Multi-Task LLMs", arXiv:2510.19178, §3.1) is the mean training reward over the next ``s``
    steps minus the mean over the previous ``s``. After every training batch this callback reads
    each task's reward from the logged metric ``metric.format(task=...)``, keeps the last
    ``2 * window`` batches (a task absent from a batch is skipped in the means), and logs the
    gain of the batch ``window`` batches ago (:func:`gradbal.gradstats.learning_gain`).

    At the last batch of each epoch it logs Spearman's rank correlation across tasks between the
    epoch's mean squared gradient norm (``"grad_norm_sq"`` from the source among the callbacks
    that provides it, :class:`TaskGradNormMonitor`) and mean learning gain: the paper's central claim, "larger gradients do not mean
    larger gains", made checkable on any run (a value near 1 would contradict it).

    Logged: ``train/learning_gain/<task>`` (every batch, once ``2 * window`` batches were seen)
    and ``train/grad_gain_spearman`` (last batch of an epoch, with a gradient monitor and at
    least 3 tasks having both numbers).

    Contract with the LightningModule: it sets ``self.task_losses`` every step (which tasks the
    step trained on: ``gradbal.report_task_losses`` does it) and logs ``metric`` for every task
    in the step with ``on_step=True``, reduced over ranks (gradbal's modules log
    ``train/reward/<task>`` this way; elsewhere use ``sync_dist=True``). Under DDP, rank 0's
    values are used on every rank.

    Args:
        window: ``s``, training batches per window, >= 1.
        metric: Name of the per-task training metric, with ``{task}`` where the task name goes.
        mode: ``"max"``: the gain is the increase of the metric (rewards, accuracies);
            ``"min"``: its decrease (losses).

    Raises:
        ValueError: On ``window < 1``, a ``metric`` without ``{task}``, or an unknown ``mode``.
        RuntimeError: At ``setup`` without a logger or ``trainer.datamodule.task_names``; at a
            step whose module did not set ``task_losses`` or did not log ``metric`` for a task
            it trained on (the message lists the logged metrics).

    Attributes:
        gains: The latest ``[K]`` float64 gains (NaN where unknown), or ``None``.
        gains_step: ``trainer.global_step`` after the batch of ``gains``; ``-1`` before.
        provides: ``"learning_gain"``: :meth:`latest` gives ``gains`` (valid where finite) to
            the callbacks that read it (``gradbal.callbacks.statistics``).

    Example::

        >>> monitor = LearningGainMonitor(window=20, metric="train/accuracy/{task}")
        >>> monitor.task_metric_groups
        ('train/learning_gain', 'train/accuracy')
        >>> monitor.state_key
        "LearningGainMonitor{'window': 20, 'metric': 'train/accuracy/{task}', 'mode': 'max'}"
    """

    provides = "learning_gain"

    def __init__(
        self,
        window: int = 10,
        metric: str = "train/reward/{task}",
        mode: Literal["max", "min"] = "max",
    ):
        if window < 1:
            raise ValueError(f"`window` must be >= 1. Got {window}.")
        if "{task}" not in metric or not _formats(metric):
            raise ValueError(
                f"`metric` must contain '{{task}}' where the task name goes (and no other "
                f"braces), e.g. 'train/reward/{{task}}'. Got {metric!r}."
            )
        if mode not in ("max", "min"):
            raise ValueError(f"`mode` must be 'max' or 'min'. Got {mode!r}.")
        self.window, self.metric, self.mode = window, metric, mode
        groups = [metric_name("train", LEARNING_GAIN)]
        if metric.endswith("/{task}") and metric.count("{task}") == 1:
            groups.append(metric[: -len("/{task}")])
        self.task_metric_groups = tuple(groups)
        self.gains: Tensor | None = None
        self.gains_step = -1
        self._task_names: list[str] = []
        self._grad_source: StatisticSource | None = None
        self._history: deque[list[float]] = deque(maxlen=2 * window)
        self._sums: dict[str, list[float]] = {}  # per-epoch gain / grad sums and counts
        self._grad_seen = -1
        self._recorded: tuple[int, int] | None = None  # (epoch, batch_idx) last recorded

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(window=self.window, metric=self.metric, mode=self.mode)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        owner = type(self).__name__
        require_logger(trainer, owner)
        self._task_names = task_names(trainer, owner)
        sources = statistic_sources(trainer, GRAD_NORM_SQ)
        self._grad_source = sources[0] if len(sources) == 1 else None
        if self._grad_source is None:
            rank_zero_warn(
                f"LearningGainMonitor logs {metric_name('train', GRAD_GAIN_SPEARMAN)} only with "
                f"one TaskGradNormMonitor (one callback providing {GRAD_NORM_SQ!r}) among the "
                f"callbacks (found {len(sources)}); add one to check whether gradient size "
                "predicts learning gain."
            )
        k = len(self._task_names)
        if any(len(row) != k for row in self._history):
            raise RuntimeError(
                f"LearningGainMonitor's restored state is for a different number of tasks than "
                f"the DataModule's {k}. Resume with the same task list."
            )
        if not self._sums:
            self._reset_sums()

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        add_task_layout(trainer, self)

    @override
    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.record_batch(trainer, pl_module, batch_idx)

    @override
    def latest(self) -> Measurement | None:
        """``gains`` at ``gains_step`` (valid where finite), for the statistic bus."""
        if self.gains is None:
            return None
        return Measurement(self.gains_step, self.gains, torch.isfinite(self.gains))

    @override
    def update(self, trainer: Trainer, pl_module: LightningModule, batch_idx: int) -> None:
        """Record the batch that just ended, if this callback's own hook has not yet."""
        self.record_batch(trainer, pl_module, batch_idx)

    def record_batch(self, trainer: Trainer, pl_module: LightningModule, batch_idx: int) -> None:
        """Record the batch that just ended and update ``gains`` (once per batch).

        Called from ``on_train_batch_end`` by this callback and (through :meth:`update`) by a
        scheduler reading the gains, whichever runs first, so the scheduler sees this batch's gains in either callback order.
        """
        key = (trainer.current_epoch, batch_idx)
        if key == self._recorded:
            return
        self._recorded = key
        self._history.append(self._step_metric(trainer, pl_module).tolist())
        gains = learning_gain(torch.tensor(list(self._history), dtype=torch.float64), self.window)
        self.gains = gains if self.mode == "max" else -gains
        self.gains_step = trainer.global_step
        logged: dict[str, float] = {}
        for t, (name, gain) in enumerate(zip(self._task_names, self.gains.tolist(), strict=True)):
            if math.isfinite(gain):
                logged[metric_name("train", LEARNING_GAIN, name)] = gain
                self._sums["gain"][t] += gain
                self._sums["gain_count"][t] += 1
        self._add_grad_norms()
        if batch_idx + 1 == trainer.num_training_batches:
            rho = self._epoch_correlation()
            if rho is not None:
                logged[metric_name("train", GRAD_GAIN_SPEARMAN)] = rho
            self._reset_sums()
        if logged:
            log_step_metrics(pl_module, logged, every_n_steps=1)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(row) for row in self._history],
            "gains": None if self.gains is None else self.gains.tolist(),
            "gains_step": self.gains_step,
            "sums": {key: list(values) for key, values in self._sums.items()},
            "grad_seen": self._grad_seen,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._history = deque(
            ([float(v) for v in row] for row in state_dict.get("history", [])),
            maxlen=2 * self.window,
        )
        gains = state_dict.get("gains")
        self.gains = None if gains is None else torch.tensor(gains, dtype=torch.float64)
        self.gains_step = int(state_dict.get("gains_step", -1))
        self._sums = {k: list(v) for k, v in state_dict.get("sums", {}).items()}
        self._grad_seen = int(state_dict.get("grad_seen", -1))

    def _step_metric(self, trainer: Trainer, pl_module: LightningModule) -> Tensor:
        """``[K]`` float64: this batch's metric per task, NaN for tasks not in the global batch."""
        reported = reported_task_losses(pl_module)
        if reported is None:
            raise RuntimeError(
                f"LearningGainMonitor needs to know which tasks each step trained on, but "
                f"{type(pl_module).__name__}.task_losses is not set. In training_step, return "
                "`gradbal.report_task_losses(self, losses, task_ids)`."
            )
        k = len(self._task_names)
        present = torch.bincount(reported.task_ids.detach().flatten().cpu(), minlength=k)[:k]
        logged = trainer.callback_metrics
        keys = [self.metric.format(task=name) for name in self._task_names]
        values = [float(logged[key]) if key in logged else math.nan for key in keys]
        packed = torch.tensor([present.tolist(), values], dtype=torch.float64)  # [2, K]
        if trainer.world_size > 1:
            packed[1] *= float(trainer.global_rank == 0)  # NaN stays NaN: rank 0 decides
            packed = trainer.strategy.reduce(packed.to(pl_module.device), reduce_op="sum").cpu()
        in_step = packed[0] > 0
        missing = in_step & torch.isnan(packed[1])
        if missing.any():
            absent = [keys[i] for i in missing.nonzero().flatten().tolist()]
            raise RuntimeError(
                f"LearningGainMonitor reads {absent} for the tasks this step trained on, but they "
                f"were not logged. Logged: {sorted(logged)}. Log them from training_step with "
                "`self.log(name, value, on_step=True)`, or set `metric` to a logged per-task name."
            )
        return torch.where(in_step, packed[1], math.nan)

    def _add_grad_norms(self) -> None:
        latest = None if self._grad_source is None else self._grad_source.latest()
        if latest is None or latest.step <= self._grad_seen:
            return
        self._grad_seen = latest.step
        for t, (sq, ok) in enumerate(
            zip(latest.values.tolist(), latest.valid.tolist(), strict=True)
        ):
            if ok:
                self._sums["grad"][t] += sq
                self._sums["grad_count"][t] += 1

    def _epoch_correlation(self) -> float | None:
        s = {key: torch.tensor(values, dtype=torch.float64) for key, values in self._sums.items()}
        gain, grad = s["gain"] / s["gain_count"], s["grad"] / s["grad_count"]  # NaN if count 0
        both = torch.isfinite(gain) & torch.isfinite(grad)
        if int(both.sum()) < 3:
            return None
        rho = float(spearman(grad[both], gain[both]))
        return rho if math.isfinite(rho) else None

    def _reset_sums(self) -> None:
        k = len(self._task_names)
        self._sums = {key: [0.0] * k for key in ("gain", "gain_count", "grad", "grad_count")}


def _formats(metric: str) -> bool:
    try:
        metric.format(task="t")
    except (KeyError, IndexError, ValueError):
        return False
    return True
