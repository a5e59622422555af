"""OnlineContinualModule + ClassIncrementalDataModule under a real Trainer, on CPU.

Digits (scikit-learn, 5 tasks of 2 classes, ~27 stream batches per task) takes about a second per
run with a small MLP, so these runs are complete streams.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradbal.callbacks import TaskGradNormMonitor
from gradbal.continual import (
    ER,
    GSA,
    ClassIncrementalDataModule,
    ContinualObjective,
    FineTune,
    OnlineContinualModule,
)
from tests._compare import same_state

DIGIT_TASKS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def fit(
    objective: ContinualObjective,
    root: Path,
    *,
    dm: ClassIncrementalDataModule | None = None,
    max_steps: int = -1,
    ckpt: Path | None = None,
    callbacks: list[pl.Callback] | None = None,
    lr: float = 1e-3,
    logger: Logger | bool = False,
) -> tuple[OnlineContinualModule, pl.Trainer]:
    pl.seed_everything(0, verbose=False)
    dm = dm or ClassIncrementalDataModule(DIGIT_TASKS)
    module = OnlineContinualModule(
        objective,
        optimizer=lambda params: torch.optim.Adam(params, lr=lr),
        buffer_size=100,
        hidden_sizes=[32],
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=len(dm.task_names),
        max_steps=max_steps,
        callbacks=callbacks or [],
        default_root_dir=root,
        logger=logger,
        log_every_n_steps=5,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks or []),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, dm, ckpt_path=ckpt)
    return module, trainer


def test_gsa_fits_digits_and_logs_the_documented_keys(tmp_path: Path) -> None:
    # The per-task gradient monitor is drop-in: one loss row per forward row, task ids set.
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=20)
    logger = TensorBoardLogger(tmp_path)  # the TensorBoard curves of the issue
    module, trainer = fit(GSA(), tmp_path, callbacks=[monitor], logger=logger)
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    logged = set(events.Tags()["scalars"])
    expected = {"train/loss", "val/avg_accuracy", "val/forgetting"}
    expected |= {f"train/grad_norm/task_{t}" for t in range(5)}
    expected |= {f"val/accuracy/task_{t}" for t in range(5)}
    expected |= {f"train/gsa_{kind}/class_{c}" for kind in ("ratio", "weight") for c in range(10)}
    assert expected <= logged, sorted(expected - logged)
    a = module.accuracy_matrix
    assert a.shape == (5, 5)
    assert not a.tril().isnan().any() and a.triu(1)[a.triu(1) != 0].isnan().all()
    final = a[4]
    assert math.isclose(float(trainer.logged_metrics["val/avg_accuracy"]), float(final.mean()))
    drops = [float(a[j:4, j].max() - a[4, j]) for j in range(4)]
    assert math.isclose(float(trainer.logged_metrics["val/forgetting"]), sum(drops) / 4)
    assert final.mean() > 0.5  # replay keeps old digits (fine-tuning ends near 0.2)
    # Every stream sample went through the reservoir once.
    assert module.buffer.num_seen == sum(len(s.y) for s in trainer.datamodule._train)  # type: ignore[attr-defined]


def test_fine_tuning_forgets_and_replay_does_not(tmp_path: Path) -> None:
    finetuned, ft_trainer = fit(FineTune(), tmp_path / "ft")
    replayed, er_trainer = fit(ER(replay_batch_size=32), tmp_path / "er")
    ft_forgetting = float(ft_trainer.logged_metrics["val/forgetting"])
    er_forgetting = float(er_trainer.logged_metrics["val/forgetting"])
    assert ft_forgetting > er_forgetting + 0.3, (ft_forgetting, er_forgetting)
    assert replayed.accuracy_matrix[4].mean() > finetuned.accuracy_matrix[4].mean() + 0.2


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_resumed_mid_task_equals_uninterrupted(tmp_path: Path) -> None:
    """Buffer contents and generator, GSA's running statistics, stream position, weights."""
    full, _ = fit(GSA(), tmp_path / "full")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=40, save_top_k=-1)
    fit(GSA(), tmp_path / "part", max_steps=40, callbacks=[checkpoint])
    path = next((tmp_path / "ckpt").glob("*step=40*.ckpt"))  # mid task 1
    resumed, _ = fit(GSA(), tmp_path / "resumed", ckpt=path)
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert same_state(full.buffer.state_dict(), resumed.buffer.state_dict())
    assert same_state(full.objective.state_dict(), resumed.objective.state_dict())
    assert torch.equal(full.accuracy_matrix.nan_to_num(-1), resumed.accuracy_matrix.nan_to_num(-1))


def _toy_rows(n_per_class: int, classes: int) -> dict[str, list[Any]]:
    """Class c sits around (c, -c) in a scalar and a 3-vector column: easy to separate."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    noise = 0.1 * torch.randn(len(labels), 4, generator=g)
    return {
        "a": (labels.float() + noise[:, 0]).tolist(),
        "v": (torch.stack([-labels.float()] * 3, 1) + noise[:, 1:]).tolist(),
        "target": labels.tolist(),
        "note": ["ignored"] * len(labels),
    }


def test_any_datasets_classification_dataset(tmp_path: Path) -> None:
    rows = _toy_rows(n_per_class=20, classes=4)
    dm = ClassIncrementalDataModule(
        [[3, 1], [0, 2]],
        dataset=datasets.Dataset.from_dict(rows),
        feature_columns=["a", "v"],
        label_column="target",
        test_size=0.25,
        batch_size=4,
    )
    module, trainer = fit(ER(replay_batch_size=8), tmp_path, dm=dm, lr=0.02)
    assert dm.num_features == 4 and dm.num_classes == 4
    assert [len(s.y) for s in dm._train] == [30, 30] and [len(s.y) for s in dm._test] == [10, 10]
    assert trainer.global_step == 2 * math.ceil(30 / 4)
    assert module.accuracy_matrix[0, 0] > 0.9  # the first task is learned from these columns
    assert {"val/accuracy/task_1", "val/forgetting"} <= set(trainer.logged_metrics)


def test_dataset_dict_uses_its_test_split() -> None:
    train, test = _toy_rows(10, 2), _toy_rows(3, 2)
    dm = ClassIncrementalDataModule(
        [[0], [1]],
        dataset=datasets.DatasetDict(
            train=datasets.Dataset.from_dict(train), test=datasets.Dataset.from_dict(test)
        ),
        feature_columns=["a", "v"],
        label_column="target",
    )
    dm.setup("fit")
    assert [len(s.y) for s in dm._train] == [10, 10] and [len(s.y) for s in dm._test] == [3, 3]


def test_stream_is_each_task_once_in_order_never_mixed() -> None:
    dm = ClassIncrementalDataModule(DIGIT_TASKS, batch_size=10)
    dm.setup("fit")
    seen: list[torch.Tensor] = []
    for task in range(5):
        dm.trainer = SimpleNamespace(current_epoch=task)  # type: ignore[assignment]
        batches = list(dm.train_dataloader())
        for batch in batches:
            assert set(batch["task_id"].tolist()) == {task}
            assert set(batch["y"].tolist()) <= set(DIGIT_TASKS[task])
            seen.append(batch["x"])
        assert [b["stream_step"] for b in batches] == list(range(len(batches)))
        evaluated = {t for b in dm.val_dataloader() for t in b["task_id"].tolist()}
        assert evaluated == set(range(task + 1))  # validation: the tasks trained so far
    rows = torch.cat(seen)
    assert len(rows) == len(torch.unique(rows, dim=0)) == sum(len(s.y) for s in dm._train)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no")
def test_wrong_setups_fail_with_a_fix() -> None:
    with pytest.raises(ValueError, match=r"disjoint.*repeated: \[1\]"):
        ClassIncrementalDataModule([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="at most one data source"):
        ClassIncrementalDataModule([[0]], hub_name="mnist", data_files="x.csv")
    dm = ClassIncrementalDataModule(DIGIT_TASKS)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_progress_bar=False)
    with pytest.raises(RuntimeError, match=r"Set trainer\.max_epochs: 5"):
        trainer.fit(OnlineContinualModule(FineTune()), dm)
    with pytest.raises(RuntimeError, match="ClassIncrementalDataModule"):
        pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False).fit(
            OnlineContinualModule(FineTune()), pl.LightningDataModule()
        )
    with pytest.raises(ValueError, match=r"Task task_1 .* has 0 training"):
        ClassIncrementalDataModule([[0], [42]]).setup("fit")
    with pytest.raises(TypeError, match="ContinualObjective"):
        OnlineContinualModule("GSA")  # type: ignore[arg-type]
