"""The gradbal command: a few real steps, a rich progress bar, and a checkpoint on a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar

from gradbal.callbacks import FaultCheckpoint
from gradbal.cli import cli

CONFIG = str(Path(__file__).parents[2] / "configs/debug/tiny_grpo.yaml")


class Boom(Callback):
    """Raises in the middle of training, as a crash would."""

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.global_step == 2:
            raise RuntimeError("boom")


def test_fit_runs_and_a_crash_leaves_a_resumable_checkpoint(tmp_path: Path) -> None:
    args = ["fit", "--config", CONFIG, f"--trainer.default_root_dir={tmp_path}"]
    with pytest.raises(RuntimeError, match="boom"):
        cli([*args, "--trainer.callbacks+=tests.integration.test_cli.Boom"])
    (ckpt,) = (tmp_path / "checkpoints").glob("run-*/on_exception.ckpt")
    resumed = cli([*args, f"--ckpt_path={ckpt}"])
    assert resumed.trainer.global_step == 4
    # The resumed run (no Boom: another config, so another run directory) ends with its own
    # last.ckpt and keeps the checkpoint it resumed from.
    assert ckpt.exists()
    (last,) = (tmp_path / "checkpoints").glob("run-*/last.ckpt")
    assert last.parent != ckpt.parent


def test_progress_bar_is_rich_unless_disabled(tmp_path: Path) -> None:
    base = ["--config", CONFIG, f"--trainer.default_root_dir={tmp_path}"]
    shown = cli([*base, "--trainer.enable_progress_bar=true"], run=False)
    assert isinstance(shown.trainer.progress_bar_callback, RichProgressBar)
    hidden = cli(base, run=False)  # the config sets enable_progress_bar: false
    assert hidden.trainer.progress_bar_callback is None
    assert any(isinstance(c, FaultCheckpoint) for c in hidden.trainer.callbacks)


def test_task_list_is_linked_into_the_model(tmp_path: Path) -> None:
    run = cli(["--config", CONFIG, f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert isinstance(run.model, LightningModule)
    assert run.model.task_names == run.datamodule.task_names == ["addition", "reverse"]


def test_print_config_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["fit", "--config", CONFIG, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: gradbal.modules.GRPOModule" in printed
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    args = ["fit", "--config", str(saved), "--trainer.max_steps=1"]
    run = cli([*args, "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path}"])
    assert run.datamodule.task_names == ["addition", "reverse"] and run.trainer.global_step == 1
