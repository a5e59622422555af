"""PeriodicCheckpoint's schedule, AtomicCheckpointIO, FaultCheckpoint, and the rules that protect files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from gradbal.callbacks import FaultCheckpoint, PeriodicCheckpoint
from gradbal.callbacks.checkpoint_files import save_target, written_here
from gradbal.checkpoint_io import AtomicCheckpointIO


class Recording(PeriodicCheckpoint):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps: list[int] = []

    def save(self, trainer: pl.Trainer) -> None:
        super().save(trainer)
        self.steps.append(trainer.global_step)


def train(tmp_path: Path, callback: PeriodicCheckpoint, max_steps: int = 7) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=max_steps,
        callbacks=[callback],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())
    return trainer


@pytest.mark.parametrize(
    ("steps", "minutes", "saved"),
    [(3, None, [3, 6, 7]), (None, 1e-9, [1, 2, 3, 4, 5, 6, 7]), (None, 60.0, [7])],
    ids=["every_3_steps", "every_instant", "end_only"],
)
def test_periodic_checkpoint_saves_on_its_schedule_and_at_the_end(
    tmp_path: Path, steps: int | None, minutes: float | None, saved: list[int]
) -> None:
    callback = Recording(
        dirpath=str(tmp_path / "ckpt"), every_n_steps=steps, every_n_minutes=minutes
    )
    train(tmp_path, callback)
    assert callback.steps == saved
    last = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 7
    assert written_here(last)
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no temp file left


def test_a_later_checkpoint_this_process_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    other = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "global_step": 10}, other)
    assert not written_here(other)
    assert save_target(str(other), 5) == str(tmp_path / "last-2.ckpt")
    assert save_target(str(other), 10) == str(tmp_path / "last-2.ckpt")
    assert save_target(str(other), 11) == str(other)  # an older state of the run: replaced
    callback = Recording(dirpath=str(tmp_path), every_n_steps=2, every_n_minutes=None)
    train(tmp_path, callback, max_steps=4)
    assert torch.load(other, weights_only=False)["global_step"] == 10
    assert torch.load(tmp_path / "last-2.ckpt", weights_only=False)["global_step"] == 4


def test_the_side_file_skips_later_foreign_files_too(tmp_path: Path) -> None:
    for name in ("last.ckpt", "last-2.ckpt"):
        torch.save({"state_dict": {}, "global_step": 10}, tmp_path / name)
    assert save_target(str(tmp_path / "last.ckpt"), 5) == str(tmp_path / "last-3.ckpt")


class BoomAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("boom")


def fault_fit(root: Path, fault: FaultCheckpoint, *extra: pl.Callback, **fit: Any) -> None:
    trainer = pl.Trainer(
        max_steps=4,
        callbacks=[fault, *extra],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
    )
    trainer.fit(BoringModel(), **fit)


@pytest.mark.parametrize("resume", [True, False], ids=["resumed_from_it", "started_over"])
def test_fault_checkpoint_deletes_only_its_own_file_and_never_the_resumed_one(
    tmp_path: Path, resume: bool
) -> None:
    fault = FaultCheckpoint(str(tmp_path / "ckpt"))
    with pytest.raises(RuntimeError, match="boom"):
        fault_fit(tmp_path, fault, BoomAt(2))
    saved = Path(fault.ckpt_path)
    assert torch.load(saved, weights_only=False)["global_step"] == 2
    fault_fit(tmp_path, fault, ckpt_path=saved if resume else None)
    assert saved.exists() == resume


class BoomBeforeFirstStep(pl.Callback):
    def on_before_optimizer_step(self, *args: Any) -> None:
        raise RuntimeError("boom")


def test_an_exception_before_the_first_step_saves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fault = FaultCheckpoint(str(tmp_path / "ckpt"))
    with pytest.raises(RuntimeError, match="boom"):
        fault_fit(tmp_path, fault, BoomBeforeFirstStep())
    assert not (tmp_path / "ckpt").exists()
    assert "before the first optimiser step of this run completed" in capsys.readouterr().err
