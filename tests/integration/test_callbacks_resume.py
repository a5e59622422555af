"""Stateful callbacks resume exactly: uninterrupted run == run stopped at k and resumed.

Compared bit for bit: every callback's ``state_dict`` (moving averages, counters, last
probabilities / weights, reward history), the DataModule's sampling probabilities, the module's
loss weights and parameters. The module is the plain classifier (deterministic steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from gradbal import task_loss_weights
from gradbal.callbacks import (
    LearningGainMonitor,
    TaskGradNormMonitor,
    TaskLossReweighter,
    TaskSamplingScheduler,
)
from gradbal.datamodules import MultiTaskDataModule
from gradbal.weighting import GradProportional, InverseGradNorm, LearningGainProportional
from tests.integration._three_tasks import ThreeTaskClassifier, synthetic_tasks

STEPS_PER_EPOCH, TOTAL = 4, 9

CASES: dict[str, Callable[[], list[pl.Callback]]] = {
    "sampling_every_3_steps": lambda: [
        TaskGradNormMonitor(params="all_linear", every_n_steps=1),
        TaskSamplingScheduler(InverseGradNorm(), every=3, ema=0.5),
    ],
    "sampling_every_epoch": lambda: [
        TaskGradNormMonitor(params="all_linear", every_n_steps=2),
        TaskSamplingScheduler(GradProportional(), every="epoch", floor=0.05),
    ],
    "loss_weights_every_2_steps": lambda: [
        TaskGradNormMonitor(params="all_linear", every_n_steps=1),
        TaskLossReweighter(InverseGradNorm(), every=2, temperature=2.0),
    ],
    "sampling_by_learning_gain": lambda: [
        LearningGainMonitor(window=2, metric="train/accuracy/{task}"),
        TaskSamplingScheduler(LearningGainProportional(), every=2, ema=0.0),
    ],
}


def fit(
    root: Path, max_steps: int, callbacks: list[pl.Callback], ckpt: Path | None = None
) -> tuple[ThreeTaskClassifier, MultiTaskDataModule]:
    module = ThreeTaskClassifier()
    dm = MultiTaskDataModule(synthetic_tasks(), batch_size=24, steps_per_epoch=STEPS_PER_EPOCH)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        callbacks=callbacks,
        default_root_dir=root,
        log_every_n_steps=1,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, dm, ckpt_path=ckpt)
    return module, dm


def same(a: Any, b: Any) -> bool:
    """Equal, bit for bit, with NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@pytest.mark.parametrize(
    ("case", "stop"),
    [
        ("sampling_every_3_steps", 5),
        ("sampling_every_epoch", 3),  # mid-epoch
        ("sampling_every_epoch", 4),  # checkpoint at an epoch's last batch, where it updates
        ("loss_weights_every_2_steps", 5),
        ("sampling_by_learning_gain", 6),
    ],
)
def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, case: str, stop: int) -> None:
    full_callbacks = CASES[case]()
    full, full_dm = fit(tmp_path / "full", TOTAL, list(full_callbacks))

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=stop, save_top_k=-1)
    fit(tmp_path / "part", stop, [*CASES[case](), ckpt])
    path = next((tmp_path / "ckpt").glob(f"*step={stop}*.ckpt"))
    resumed_callbacks = CASES[case]()
    resumed, resumed_dm = fit(tmp_path / "resumed", TOTAL, list(resumed_callbacks), ckpt=path)

    for a, b in zip(full_callbacks, resumed_callbacks, strict=True):
        assert same(a.state_dict(), b.state_dict()), (
            type(a).__name__,
            a.state_dict(),
            b.state_dict(),
        )
    assert full_dm.sampling_probs == resumed_dm.sampling_probs
    weights = task_loss_weights(full), task_loss_weights(resumed)
    assert (weights[0] is None) == (weights[1] is None)
    if weights[0] is not None:
        assert torch.equal(weights[0], weights[1])  # type: ignore[arg-type]
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    # The run did change something (the comparison is not of two untouched defaults).
    changed = any(
        getattr(cb, "schedule", None) is not None and cb.schedule.num_updates > 0  # type: ignore[attr-defined]
        for cb in full_callbacks
    )
    assert changed


def test_a_checkpoint_from_before_task_stream_resumes_exactly(tmp_path: Path) -> None:
    """Until ``TaskStream``, the probabilities were saved three times: the DataModule's
    ``probs``, again in its ``sampler`` entry, and in the scheduler's state. Such a checkpoint
    (rebuilt here from a new one) resumes as the uninterrupted run."""
    full_callbacks = CASES["sampling_every_3_steps"]()
    full, full_dm = fit(tmp_path / "full", TOTAL, list(full_callbacks))

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    fit(tmp_path / "part", 4, [*CASES["sampling_every_3_steps"](), ckpt])
    saved = torch.load(next((tmp_path / "ckpt").glob("*step=4*.ckpt")), weights_only=False)
    dm_state = saved["MultiTaskDataModule"]
    assert "probs" not in dm_state["sampler"]
    dm_state["sampler"]["probs"] = list(dm_state["probs"])
    (key,) = [k for k in saved["callbacks"] if k.startswith("TaskSamplingScheduler")]
    assert "probs" not in saved["callbacks"][key]
    saved["callbacks"][key]["probs"] = list(dm_state["probs"])
    del saved["datamodule_hyper_parameters"]  # not saved before either
    old = tmp_path / "old_format.ckpt"
    torch.save(saved, old)

    resumed_callbacks = CASES["sampling_every_3_steps"]()
    resumed, resumed_dm = fit(tmp_path / "resumed", TOTAL, list(resumed_callbacks), ckpt=old)
    for a, b in zip(full_callbacks, resumed_callbacks, strict=True):
        assert same(a.state_dict(), b.state_dict()), type(a).__name__
    assert full_dm.sampling_probs == resumed_dm.sampling_probs
    assert same(full_dm.state_dict()["undelivered"], resumed_dm.state_dict()["undelivered"])
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
