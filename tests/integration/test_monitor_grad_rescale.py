"""The gradient monitor measures the gradient the optimiser uses, also when GRPO rescales it.

Under gradient accumulation GRPO's DAPO token mean is applied after the backward
(``GRPOModule.grad_rescale``, in the module's ``on_before_optimizer_step``, which runs after
the callbacks'). With one task, the monitor's ``update_naive_sq`` is the squared norm of the
task's whole share of the step's gradient on the measured layers, so it must equal the squared
norm of the final gradient there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from gradbal.callbacks import TaskGradNormMonitor
from gradbal.datamodules import MultiTaskDataModule
from gradbal.models import TinyPolicy
from gradbal.modules import GRPOModule
from gradbal.tasks import Reverse


class FinalGradients(GRPOModule):
    """Records the squared norm of the final gradient of the given layers at every step."""

    layers: list[str]

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        super().on_before_optimizer_step(optimizer)  # applies grad_rescale
        assert self.model is not None
        total = 0.0
        for name in self.layers:
            for p in self.get_submodule(name).parameters(recurse=False):
                total += float(p.grad.double().pow(2).sum()) if p.grad is not None else 0.0
        self.final_sq.append(total)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_update_norm_equals_the_final_gradient_norm(tmp_path: Path, accumulate: int) -> None:
    pl.seed_everything(0)
    module = FinalGradients(
        TinyPolicy(hidden_size=32, num_layers=1), num_generations=4, max_new_tokens=6
    )
    module.final_sq = []
    monitor = TaskGradNormMonitor(every_n_steps=1, seed=1)

    class Layers(pl.Callback):
        def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            module.layers = monitor.measured_layers

    dm = MultiTaskDataModule([Reverse(n_train=64, n_val=4)], batch_size=4, steps_per_epoch=8)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        accumulate_grad_batches=accumulate,
        limit_val_batches=0,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor, Layers()],
    )
    measured: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            if monitor.stats is not None and monitor.stats_step == len(measured):
                measured.append(float(monitor.stats.update_naive_sq[0]))

    trainer.callbacks.append(Record())  # type: ignore[attr-defined]
    trainer.fit(module, dm)
    assert module.layers, "the monitor measured no layer"
    assert len(measured) == len(module.final_sq) == 2
    torch.testing.assert_close(
        torch.tensor(measured), torch.tensor(module.final_sq), rtol=1e-4, atol=0
    )
