"""What every pooled statistic source shares: per-task sums over a window, reduced, then divided.

Each source of issue 15 (``learnability.py``, ``task_loss.py``, ...) is a one-level subclass of
:class:`PooledSource` that says how one batch becomes per-task sums (:meth:`PooledSource.collect`
or :meth:`PooledSource.add`) and how the window's sums become an estimate
(:meth:`PooledSource.estimate`); the window, the reduction across ranks, the measurement, the
logging and the checkpoint state live here once.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from gradbal.callbacks._prerequisites import task_names
from gradbal.callbacks._tensorboard import add_task_layout
from gradbal.callbacks.statistics import Measurement, StatisticSource
from gradbal.gradstats import RATIO_SUMS, PooledEstimate, pooled_ratio
from gradbal.metric_names import STDERR_SUFFIX, metric_name
from gradbal.step_metrics import log_step_metrics

Window = Literal["epoch"] | int


class PooledSource(Callback, StatisticSource):
    """A statistic source that pools per-task sums over a window of optimiser steps.

    After every training batch the batch's per-task sums (``[S, K]`` float64) are summed over
    the data-parallel ranks (``trainer.strategy.reduce``) and added to the window's; at the end
    of a window the estimate and its standard error become :meth:`latest` (a task with fewer
    than ``min_units`` units in the window is not valid: NaN), are logged as
    ``train/<provides>/<task>`` and ``train/<provides>_stderr/<task>`` when the Trainer has a
    logger, and the sums restart. The window's sums are in :meth:`state_dict`, identical on every
    rank, so a run resumed mid-window measures what the uninterrupted one does.

    Args:
        window: ``"epoch"``: the window ends at the last batch of each training epoch; an int
            ``n``: every ``n`` optimiser steps (at the batch that completes step ``n``, ``2n``...).
        min_units: Units (groups, pairs, measured steps) a task needs in a window to be valid.
    """

    provides: ClassVar[str]
    #: Rows of the per-task sums.
    num_sums: ClassVar[int] = RATIO_SUMS
    #: Whether a batch's sums are rank-local (summed over ranks) or already global.
    rank_local: ClassVar[bool] = True

    def __init__(self, window: Window = "epoch", min_units: int = 2):
        owner = type(self).__name__
        if not (window == "epoch" or (isinstance(window, int) and window >= 1)):
            raise ValueError(
                f"{owner} `window` must be 'epoch' or an int >= 1 (optimiser steps). Got "
                f"{window!r}."
            )
        if not isinstance(min_units, int) or min_units < 1:
            raise ValueError(f"{owner} `min_units` must be an int >= 1. Got {min_units!r}.")
        self.window, self.min_units = window, min_units
        group = metric_name("train", self.provides)
        self.task_metric_groups: tuple[str, ...] = (group, group + STDERR_SUFFIX)
        self.measurement: Measurement | None = None
        self._task_names: list[str] = []
        self._sums: Tensor | None = None  # [S, K] float64, CPU, reduced across ranks
        self._pending: Tensor | None = None  # [S, K] this batch's local sums (add())
        self._window_start = 0  # global_step when the window opened
        self._batch_step = -1  # global_step at the start of the current batch
        self._done: tuple[int, int] | None = None  # (epoch, batch_idx) folded in
        self._logging = True

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(window=self.window, min_units=self.min_units)

    # ---- what a subclass says ----------------------------------------------------------------

    def check_module(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Raise at ``setup`` if the module cannot feed this source (default: nothing)."""

    def collect(
        self, trainer: Trainer, pl_module: LightningModule, batch_idx: int
    ) -> Tensor | None:
        """``[S, K]`` sums of the batch that just ended, or ``None`` (default: none; sources
        that read the batch earlier, in ``on_before_backward``, call :meth:`add` there)."""
        return None

    def estimate(self, sums: Tensor) -> PooledEstimate:
        """The window's estimate from its sums (default: :func:`gradbal.gradstats.pooled_ratio`)."""
        return pooled_ratio(sums)

    def finish(
        self, values: Tensor, stderr: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Last transformation of a window's valid estimates (default: none)."""
        return values, stderr, valid

    # ---- machinery ---------------------------------------------------------------------------

    def add(self, sums: Tensor) -> None:
        """Add local ``[S, K]`` sums to the current batch's."""
        sums = sums.detach().to(torch.float64)
        self._pending = sums if self._pending is None else self._pending + sums.to(self._pending)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        owner = type(self).__name__
        self._task_names = task_names(trainer, owner)
        if self._sums is None:
            self._sums = torch.zeros(self.num_sums, len(self._task_names), dtype=torch.float64)
        self._logging = bool(trainer.loggers)
        self.check_module(trainer, pl_module)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Here, not in setup: a checkpoint's callback state is restored after setup.
        k = len(self._task_names)
        if self._sums is not None and self._sums.shape != (self.num_sums, k):
            raise RuntimeError(
                f"{type(self).__name__}'s restored state has {self._sums.shape[1]} tasks, the "
                f"DataModule {k} ({self._task_names}). Resume with the same task list, or drop "
                "the callback's state from the checkpoint to start its window afresh."
            )
        if self._logging:
            add_task_layout(trainer, self)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.window == "epoch" and not math.isfinite(trainer.num_training_batches):
            raise RuntimeError(
                f"{type(self).__name__}(window='epoch') closes its window at the last batch of "
                "an epoch, but the training dataloader has no length. Set `window` to a number "
                "of optimiser steps."
            )

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_step = trainer.global_step

    @override
    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.update(trainer, pl_module, batch_idx)

    @override
    def update(self, trainer: Trainer, pl_module: LightningModule, batch_idx: int) -> None:
        """Fold the batch that just ended in (once), and close the window if it ends here."""
        key = (trainer.current_epoch, batch_idx)
        if key == self._done:
            return
        self._done = key
        assert self._sums is not None, "setup() runs before the first batch"
        batch = self._pending
        self._pending = None
        collected = self.collect(trainer, pl_module, batch_idx)
        if collected is not None:
            collected = collected.detach().to(torch.float64)
            batch = collected if batch is None else batch + collected.to(batch)
        if self.rank_local and trainer.world_size > 1:  # every rank, every batch: one collective
            local = torch.zeros_like(self._sums) if batch is None else batch
            batch = trainer.strategy.reduce(local.to(pl_module.device), reduce_op="sum")
        if batch is not None:
            self._sums += batch.to(self._sums)
        if self._window_ends(trainer, batch_idx):
            self._close(trainer, pl_module)

    @override
    def latest(self) -> Measurement | None:
        """The last window's measurement (``step``: ``global_step`` at its end), or ``None``."""
        return self.measurement

    def _window_ends(self, trainer: Trainer, batch_idx: int) -> bool:
        step = trainer.global_step
        if self.window == "epoch":
            return batch_idx + 1 == trainer.num_training_batches
        return step > self._window_start and step % self.window == 0

    def _close(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self._sums is not None
        est = self.estimate(self._sums)
        valid = torch.isfinite(est.values) & (est.units >= self.min_units)
        values, stderr, valid = self.finish(est.values, est.stderr, valid)
        nan = torch.full_like(values, float("nan"))
        values, stderr = torch.where(valid, values, nan), torch.where(valid, stderr, nan)
        self.measurement = Measurement(trainer.global_step, values, valid, stderr)
        self._sums = torch.zeros_like(self._sums)
        self._window_start = trainer.global_step
        if not self._logging:
            return
        logged: dict[str, float] = {}
        for name, v, se, ok in zip(
            self._task_names, values.tolist(), stderr.tolist(), valid.tolist(), strict=True
        ):
            if ok:
                logged[metric_name("train", self.provides, name)] = v
                if math.isfinite(se):
                    logged[metric_name("train", self.provides + STDERR_SUFFIX, name)] = se
        if logged:
            log_step_metrics(pl_module, logged, every_n_steps=1)

    @override
    def state_dict(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "sums": None if self._sums is None else self._sums.tolist(),
            "window_start": self._window_start,
            "measurement": None
            if m is None
            else {
                "step": m.step,
                "values": m.values.tolist(),
                "valid": m.valid.tolist(),
                "stderr": None if m.stderr is None else m.stderr.tolist(),
            },
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sums = state_dict.get("sums")
        self._sums = None if sums is None else torch.tensor(sums, dtype=torch.float64)
        self._window_start = int(state_dict.get("window_start", 0))
        m = state_dict.get("measurement")
        self.measurement = (
            None
            if m is None
            else Measurement(
                int(m["step"]),
                torch.tensor(m["values"], dtype=torch.float64),
                torch.tensor(m["valid"], dtype=torch.bool),
                None if m["stderr"] is None else torch.tensor(m["stderr"], dtype=torch.float64),
            )
        )
