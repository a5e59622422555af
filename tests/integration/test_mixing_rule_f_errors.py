"""docs/errors.md F01..F11 (Skill-it, FAMO, GradNorm rules and their sources): each bad input
triggered, with its documented message.

The doc's "what you get" cell is the message with ``…`` where it is abbreviated; every piece
between the ``…`` must appear in the real message, in order. F11 (two callbacks that set the
task loss weights) is also checked through ``gradbal fit --config`` in a subprocess, in either
order of the callbacks, and with two of one kind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch import Tensor

from gradbal import report_task_losses
from gradbal.callbacks import (
    FAMOReweighter,
    RewardShortfallMonitor,
    TaskLossMonitor,
    TaskLossReweighter,
    TaskSamplingScheduler,
)
from gradbal.datamodules import MultiTaskDataModule
from gradbal.weighting import GradNormTarget, InverseGradNorm, SkillGraphWeights, Uniform
from tests.integration._errors_doc import FitStarted, assert_documented, check_doc_rows, doc_rows
from tests.integration._rollout_toy import RolloutClassifier
from tests.integration._three_tasks import ThreeTaskClassifier, synthetic_tasks

ROOT: list[Path] = []


def fit(callbacks: list[pl.Callback], module: pl.LightningModule | None = None) -> None:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        callbacks=callbacks,
        default_root_dir=ROOT[0],
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    dm = MultiTaskDataModule(list(synthetic_tasks()), batch_size=24, steps_per_epoch=4)
    trainer.fit(module or ThreeTaskClassifier(), dm)


class NegativeLoss(ThreeTaskClassifier):
    """Reports minus the cross-entropy: a loss that is negative."""

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        super().training_step(batch, batch_idx)
        losses = self.task_losses.losses
        return report_task_losses(self, -losses, self.task_losses.task_ids)


def restored_for_two_tasks() -> FAMOReweighter:
    famo = FAMOReweighter()
    famo.load_state_dict({"task_names": ["small", "large"], "logits": [0.0, 0.0]})
    return famo


CASES: dict[str, Callable[[], object]] = {
    "F01": lambda: SkillGraphWeights({"small": "large"}),  # type: ignore[dict-item]
    "F02": lambda: SkillGraphWeights(edge_weight=0.0),
    "F03": lambda: fit(
        [TaskLossMonitor(window=1), TaskSamplingScheduler(SkillGraphWeights({"small": ["huge"]}))]
    ),
    "F04": lambda: SkillGraphWeights({"small": ["large"]})(torch.ones(3)),
    "F05": lambda: GradNormTarget(alpha=-1.0),
    "F06": lambda: FAMOReweighter(lr=0.0),
    "F07": lambda: fit([TaskLossMonitor(window=1), FAMOReweighter()], RolloutClassifier()),
    "F08": lambda: fit([TaskLossMonitor(window=1), FAMOReweighter()], NegativeLoss()),
    "F09": lambda: RewardShortfallMonitor(max_reward=float("inf")),
    "F10": lambda: fit([TaskLossMonitor(window=1), restored_for_two_tasks()]),
    "F11": lambda: fit(
        [TaskLossMonitor(window=1), FAMOReweighter(), TaskLossReweighter(Uniform())]
    ),
}
TYPES: dict[str, type[BaseException] | type[Warning]] = {
    "F01": ValueError,
    "F02": ValueError,
    "F03": ValueError,
    "F04": RuntimeError,
    "F05": ValueError,
    "F06": ValueError,
    "F07": RuntimeError,
    "F08": RuntimeError,
    "F09": ValueError,
    "F10": RuntimeError,
    "F11": RuntimeError,
}


def test_the_doc_lists_the_f_rows() -> None:
    check_doc_rows("F", TYPES)


@pytest.mark.parametrize("row", CASES)
def test_each_f_row_gives_the_documented_message(row: str, tmp_path: Path) -> None:
    ROOT[:] = [tmp_path]
    with pytest.raises(TYPES[row]) as err:  # type: ignore[call-overload]
        CASES[row]()
    message = str(err.value)
    assert message.startswith(f"{row}: "), message
    assert_documented(message, "F", row)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (TaskLossReweighter(Uniform()), FAMOReweighter()),
        (FAMOReweighter(), TaskLossReweighter(Uniform())),
        (TaskLossReweighter(Uniform()), TaskLossReweighter(InverseGradNorm())),
        (FAMOReweighter(), FAMOReweighter(lr=0.1)),
    ],
    ids=["reweighter_then_famo", "famo_then_reweighter", "two_reweighters", "two_famo"],
)
def test_f11_names_both_writers_whichever_sets_up_first(
    first: pl.Callback, second: pl.Callback, tmp_path: Path
) -> None:
    ROOT[:] = [tmp_path]
    FitStarted.started = False
    with pytest.raises(RuntimeError) as err:
        fit([first, TaskLossMonitor(window=1), second, FitStarted()])
    names = [type(first).__name__, type(second).__name__]
    assert str(err.value).startswith(f"F11: {names[0]} and {names[1]} both set"), err.value
    assert f"Keep only one of {names}" in str(err.value)
    assert not FitStarted.started


def test_one_writer_alone_is_accepted(tmp_path: Path) -> None:
    """The check does not fire on a single writer (FAMO beside its source and a monitor)."""
    ROOT[:] = [tmp_path]
    famo = FAMOReweighter()
    fit([TaskLossMonitor(window=1), famo])
    assert famo.weights is not None and len(famo.weights) == 3


TINY_DPO = Path(__file__).parents[2] / "configs" / "debug" / "tiny_dpo.yaml"


def test_f11_through_gradbal_fit(tmp_path: Path) -> None:
    """``gradbal fit --config`` with FAMO and a TaskLossReweighter: exits before any step, the
    documented message on stderr, no checkpoint written."""
    config = yaml.safe_load(TINY_DPO.read_text())
    config["trainer"] |= {"default_root_dir": str(tmp_path), "max_steps": 2}
    config["trainer"]["callbacks"] += [
        {"class_path": "gradbal.callbacks.TaskLossMonitor", "init_args": {"window": 1}},
        {"class_path": "gradbal.callbacks.FAMOReweighter", "init_args": {"lr": 0.05}},
        {
            "class_path": "gradbal.callbacks.TaskLossReweighter",
            "init_args": {"rule": {"class_path": "gradbal.weighting.Uniform"}},
        },
    ]
    path = tmp_path / "famo_and_reweighter.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "gradbal", "fit", "--config", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TINY_DPO.parents[2])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    documented = doc_rows("F")["F11"].split(": ", 1)[1].strip("`")
    assert f"RuntimeError: {documented}" in " ".join(done.stderr.split()), done.stderr[-3000:]
    assert not list(tmp_path.rglob("*.ckpt")), "nothing was trained, so nothing is saved"
