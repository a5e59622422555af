"""The lifecycle of a gradient capture inside a Lightning fit, shared by the gradient monitors.

``TaskGradNormMonitor`` and ``PreferenceGradientMonitor`` differ in how they cut a batch into
segments and what they compute from the segments' Gram matrix; everything around that is here
once: the capture is built when the module's layers exist, attached on measured steps only, its
share buffers checked against the device's memory before the first one, the Gram matrix read
with the fp16 loss scale and the module's gradient rescale divided out, a step in which no layer
was captured warned about, the buffers reset (kept for reuse when every step is measured) and the
hooks removed whatever happens, and the measured layers said once (private).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from gradbal.callbacks._capture_report import log_layers, nothing_captured_warning
from gradbal.callbacks._memory_guard import check_buffer_memory
from gradbal.gradstats import TaskGradCapture
from gradbal.task_losses import gradient_rescale


class CaptureSession:
    """One monitor's :class:`~gradbal.gradstats.TaskGradCapture`, from fit start to teardown.

    The monitor calls, in its hooks: :meth:`setup` (``setup``), :meth:`start` (``on_fit_start``),
    :meth:`begin_step` (``on_train_batch_start``), :meth:`set_segments` for each backward of a
    measured step (``on_before_backward``), :meth:`gram` as a context manager
    (``on_before_optimizer_step``) and :meth:`close` (``teardown``).
    """

    def __init__(
        self,
        owner: str,
        params: str,
        include_frozen: bool,
        every_n_steps: int | None,
        max_memory_fraction: float,
    ):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be >= 1 (or None). Got {every_n_steps}.")
        if not 0 < max_memory_fraction <= 1:
            raise ValueError(f"`max_memory_fraction` must be in (0, 1]. Got {max_memory_fraction}.")
        self.owner, self.params, self.include_frozen = owner, params, include_frozen
        self.every_n_steps, self.max_memory_fraction = every_n_steps, max_memory_fraction
        self.every = every_n_steps or 1
        self.capture: TaskGradCapture | None = None
        self.measuring = False
        self._memory_checked = False
        self._layers_logged = False

    @property
    def measured_layers(self) -> list[str]:
        return [] if self.capture is None else self.capture.measured_layers

    @property
    def skipped_layers(self) -> dict[str, str]:
        return {} if self.capture is None else dict(self.capture.skipped)

    def setup(self, trainer: Trainer) -> None:
        """Measure every ``every_n_steps``, default the Trainer's ``log_every_n_steps``."""
        log_every = int(trainer.log_every_n_steps)  # type: ignore[attr-defined]
        self.every = self.every_n_steps or max(log_every, 1)

    def start(self, pl_module: LightningModule) -> TaskGradCapture:
        """Build the capture (the module's layers exist only after ``configure_model``)."""
        self.capture = TaskGradCapture(pl_module, self.params, include_frozen=self.include_frozen)
        return self.capture

    def begin_step(self, trainer: Trainer) -> bool:
        """Attach the hooks if this optimiser step is measured (the logger's own condition,
        so measured values are written at this very step); return whether it is."""
        if self.capture is not None and (trainer.global_step + 1) % self.every == 0:
            self.capture.attach()
            self.measuring = True
        return self.measuring

    def set_segments(
        self,
        segments: Tensor,
        num_segments: int,
        device: torch.device,
        trainer: Trainer,
        pl_module: LightningModule,
        group_ids: Tensor | None = None,
    ) -> None:
        """The next backward's segments; before the first, refuse buffers that do not fit."""
        assert self.capture is not None
        if not self._memory_checked:
            check_buffer_memory(
                self.owner, self.capture, num_segments, device, self.max_memory_fraction,
                trainer, pl_module, self.params, self.include_frozen,
            )  # fmt: skip
            self._memory_checked = True
        self.capture.set_segments(segments, num_segments, group_ids)

    @contextmanager
    def gram(self, trainer: Trainer, pl_module: LightningModule) -> Iterator[Tensor]:
        """The measured step's ``[S, S]`` Gram matrix of the gradient shares, in the units of
        the reported losses; on leaving, the buffers are reset and the hooks removed (also on
        an error), and after the first measured step the measured layers are said once."""
        capture = self.capture
        assert capture is not None
        self.measuring = False
        try:
            gram = capture.gram(loss_scale=_loss_scale(trainer) / gradient_rescale(pl_module))
            if not capture.captured_layers:
                rank_zero_warn(
                    nothing_captured_warning(self.owner, trainer.global_step, capture),
                    category=RuntimeWarning,
                )
            yield gram
        finally:
            # measuring every step: the next step zeroes and reuses the buffers (allocating
            # them anew costs more); otherwise they are released until the next measured step
            capture.reset(keep_buffers=self.every == 1)
            capture.detach()
        if not self._layers_logged:
            self._layers_logged = True
            log_layers(trainer, self.owner, self.measured_layers, self.skipped_layers)

    def end_step(self) -> None:
        """A measured step with nothing to measure: remove the hooks, drop the buffers."""
        self.measuring = False
        if self.capture is not None:
            self.capture.reset()
            self.capture.detach()

    def close(self) -> None:
        """``teardown``: no hook or buffer outlives the fit."""
        self.end_step()


def _loss_scale(trainer: Trainer) -> float:
    """The fp16 loss scale the backward ran with (1 without a grad scaler).

    The module's :func:`~gradbal.task_losses.gradient_rescale` is divided out beside it: the
    captured shares are of the gradient before the module rescales it.
    """
    plugin = trainer.precision_plugin
    scaler = plugin.scaler if isinstance(plugin, MixedPrecision) else None
    return float(scaler.get_scale()) if scaler is not None else 1.0
