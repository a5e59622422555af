"""gradbal's callbacks on a LightningModule that is not gradbal's: a plain 3-task classifier.

The module (tests/integration/_three_tasks.py) meets the whole contract with one line,
``return report_task_losses(self, losses, task_ids)``, and logs ``train/accuracy/<task>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor
from torch.testing import assert_close
from torch.utils.data import DataLoader

from gradbal import set_task_loss_weights
from gradbal.callbacks import (
    LearningGainMonitor,
    TaskGradNormMonitor,
    TaskLossReweighter,
    TaskSamplingScheduler,
)
from gradbal.datamodules import MultiTaskDataModule
from gradbal.weighting import Fixed, InverseGradNorm, LearningGainProportional, Uniform
from tests.integration._three_tasks import NAMES, ThreeTaskClassifier, synthetic_tasks


def data(batch_size: int = 24, steps_per_epoch: int = 4) -> MultiTaskDataModule:
    return MultiTaskDataModule(
        synthetic_tasks(), batch_size=batch_size, steps_per_epoch=steps_per_epoch, seed=0
    )


def trainer(tmp_path: Path, max_steps: int, callbacks: list[Any], **kwargs: Any) -> pl.Trainer:
    kwargs = {"log_every_n_steps": 1, "default_root_dir": tmp_path, **kwargs}
    return pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        callbacks=callbacks,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def events(t: pl.Trainer) -> EventAccumulator:
    assert t.logger is not None and t.logger.log_dir is not None
    ea = EventAccumulator(t.logger.log_dir, size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def test_monitor_scheduler_and_learning_gain_on_a_plain_module(tmp_path: Path) -> None:
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    scheduler = TaskSamplingScheduler(InverseGradNorm(), every=2, ema=0.5)
    gains = LearningGainMonitor(window=2, metric="train/accuracy/{task}")
    dm = data()
    t = trainer(tmp_path, 8, [monitor, scheduler, gains])
    t.fit(ThreeTaskClassifier(), dm)

    ea = events(t)
    tags = set(ea.Tags()["scalars"])
    for group in ("grad_norm", "grad_norm_sq_unbiased", "sampling_prob", "learning_gain"):
        assert {f"train/{group}/{name}" for name in NAMES} <= tags, group
    assert {"train/grad_norm_sq_ratio", "train/grad_gain_spearman"} <= tags
    assert len(ea.Scalars("train/grad_gain_spearman")) == 2  # one per epoch
    # The scheduler is the one emitter of the sampling probabilities: every step.
    assert len(ea.Scalars("train/sampling_prob/small")) == 8
    layout = (
        ea.Tensors("custom_scalars__config__")[0]
        .tensor_proto.string_val[0]
        .decode(errors="replace")
    )
    for group in ("train/grad_norm", "train/sampling_prob", "train/learning_gain"):
        assert group in layout

    # The probabilities went to the DataModule: InverseGradNorm favours small-gradient tasks.
    assert scheduler.probs == pytest.approx(dm.sampling_probs, rel=1e-12)
    assert scheduler.schedule.num_updates == 4
    average = torch.tensor(scheduler.schedule.average)
    probs = torch.tensor(dm.sampling_probs)
    assert torch.equal(torch.argsort(average), torch.argsort(probs, descending=True))
    assert monitor.stats is not None and monitor.stats_step == 7


def test_reweighter_sets_module_weights_and_logs_them(tmp_path: Path) -> None:
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    reweighter = TaskLossReweighter(InverseGradNorm(), every=3)
    module = ThreeTaskClassifier()
    t = trainer(tmp_path, 6, [monitor, reweighter])
    t.fit(module, data())
    weights = module.task_loss_weights
    assert weights.tolist() == pytest.approx(reweighter.weights)
    assert float(weights.mean()) == pytest.approx(1.0)  # weights average 1
    assert len(set(reweighter.weights or [])) == 3
    tags = set(events(t).Tags()["scalars"])
    assert {f"train/loss_weight/{name}" for name in NAMES} <= tags


def test_rules_without_a_statistic_apply_before_the_first_batch(tmp_path: Path) -> None:
    scheduler = TaskSamplingScheduler(Fixed([0.6, 0.3, 0.1]), floor=0.0)  # every epoch
    reweighter = TaskLossReweighter(Fixed([2.0, 1.0, 1.0]), floor=0.0)
    module, dm = ThreeTaskClassifier(), data()
    t = trainer(tmp_path, 2, [scheduler, reweighter])
    t.fit(module, dm)
    assert dm.sampling_probs == pytest.approx([0.6, 0.3, 0.1])
    assert module.task_loss_weights.tolist() == pytest.approx([1.5, 0.75, 0.75])
    ea = events(t)
    assert [e.value for e in ea.Scalars("train/sampling_prob/small")] == pytest.approx([0.6] * 2)
    assert [e.value for e in ea.Scalars("train/loss_weight/small")] == pytest.approx([1.5] * 2)


class _RecordBatch(pl.Callback):
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, i: int) -> None:
        self.batch = batch


def _brute_force_unbiased_sq(module: ThreeTaskClassifier, batch: dict[str, Any]) -> Tensor:
    """All-pairs U-statistic of each task from per-sample gradients of the unweighted shares."""
    x = torch.tensor([row["x"] for row in batch["columns"]], dtype=torch.float32)
    y = torch.tensor([row["y"] for row in batch["columns"]])
    shares = torch.nn.functional.cross_entropy(module.net(x), y, reduction="none") / len(y)
    params = list(module.net.parameters())
    grads = torch.stack(
        [
            torch.cat([g.flatten() for g in torch.autograd.grad(s, params, retain_graph=True)])
            for s in shares
        ]
    ).double()  # [N, P]
    out = []
    for t in range(len(NAMES)):
        g = grads[batch["task_id"] == t]
        n = g.shape[0]
        out.append((g.sum(0).square().sum() - g.square().sum()) / (n * (n - 1)))
    return torch.stack(out)


def test_monitor_estimate_is_the_all_pairs_statistic_with_weights_divided_out(
    tmp_path: Path,
) -> None:
    """One step at lr 0 with loss weights: the all-pairs estimate equals brute force."""
    monitor = TaskGradNormMonitor(params="all_linear", estimator="all_pairs", every_n_steps=1)
    record = _RecordBatch()
    module = ThreeTaskClassifier(lr=0.0)
    set_task_loss_weights(module, [0.5, 2.0, 3.0])
    trainer(tmp_path, 1, [monitor, record]).fit(module, data())
    assert monitor.stats is not None and monitor.stats.valid.all()
    expected = _brute_force_unbiased_sq(module, record.batch)
    assert_close(monitor.stats.unbiased_sq.double(), expected, rtol=1e-4, atol=1e-10)


def test_monitor_without_a_logger_keeps_statistics_for_a_scheduler(tmp_path: Path) -> None:
    """``logger=False``: one warning that nothing is logged; the statistics are the same as with
    a logger, and a scheduler still acts on them."""
    with_logger = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    trainer(tmp_path / "a", 3, [with_logger]).fit(ThreeTaskClassifier(), data())

    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    scheduler = TaskSamplingScheduler(InverseGradNorm(), every=1)
    dm = data()
    with pytest.warns(UserWarning) as record:
        trainer(tmp_path / "b", 3, [monitor, scheduler], logger=False).fit(
            ThreeTaskClassifier(), dm
        )
        # A second fit with the same monitor does not repeat the warning.
        trainer(tmp_path / "c", 1, [monitor], logger=False).fit(ThreeTaskClassifier(), data())
    no_logger = [w for w in record if "has no logger, so nothing is logged" in str(w.message)]
    assert len(no_logger) == 1, [str(w.message) for w in record]
    assert "TaskGradNormMonitor.stats" in str(no_logger[0].message)

    assert with_logger.stats is not None and with_logger.stats_step == 2
    assert scheduler.schedule.num_updates == 3
    assert dm.sampling_probs != pytest.approx([1 / 3] * 3)  # the scheduler used the statistics
    assert monitor.stats is not None and monitor.stats_step == 0  # the 1-step second fit
    # Same seeds and steps: the statistics without a logger equal those with one.
    first = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    trainer(tmp_path / "d", 3, [first], logger=False).fit(ThreeTaskClassifier(), data())
    assert first.stats is not None
    assert_close(first.stats.unbiased_sq, with_logger.stats.unbiased_sq)


class _NoTaskLosses(ThreeTaskClassifier):
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        super().training_step(batch, batch_idx)
        del self.task_losses  # computes the loss but does not report it
        return torch.zeros((), requires_grad=True) + sum(p.sum() for p in self.parameters())


class _NoSampling(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.task_names = list(NAMES)

    def train_dataloader(self) -> DataLoader[Any]:
        return data().train_dataloader()


SETUP_ERRORS = {
    "no task names": (
        lambda: [TaskGradNormMonitor()],
        {},
        lambda: None,
        "there is no DataModule.*`task_names`",
    ),
    "no set_sampling_probs": (
        lambda: [TaskSamplingScheduler(Uniform())],
        {},
        _NoSampling,
        r"set_sampling_probs\(probs\)`, which _NoSampling does not have.*add that method",
    ),
    "no monitor": (
        lambda: [TaskSamplingScheduler(InverseGradNorm())],
        {},
        data,
        "needs exactly one TaskGradNormMonitor.*found 0. Add",
    ),
    "no gain monitor": (
        lambda: [TaskLossReweighter(LearningGainProportional())],
        {},
        data,
        "exactly one LearningGainMonitor",
    ),
    "floor too high": (
        lambda: [TaskSamplingScheduler(Uniform(), floor=0.5)],
        {},
        data,
        "floor=0.5 with 3 tasks.*Set floor <= 0.3333",
    ),
    "fixed of another length": (
        lambda: [TaskSamplingScheduler(Fixed([1.0, 1.0]))],
        {},
        data,
        "2 values but there are 3 tasks",
    ),
    "all pairs with accumulation": (
        lambda: [TaskGradNormMonitor(estimator="all_pairs")],
        {"accumulate_grad_batches": 2},
        data,
        "accumulate_grad_batches=2",
    ),
}


@pytest.mark.parametrize("case", SETUP_ERRORS)
def test_missing_prerequisites_fail_at_setup_with_a_fix(tmp_path: Path, case: str) -> None:
    callbacks, kwargs, make_data, match = SETUP_ERRORS[case]
    module = ThreeTaskClassifier()
    t = trainer(tmp_path, 2, callbacks(), **kwargs)
    with pytest.raises((RuntimeError, ValueError), match=match):
        dm = make_data()
        if dm is None:
            t.fit(module, train_dataloaders=data().train_dataloader())
        else:
            t.fit(module, dm)
    assert t.global_step == 0


@pytest.mark.parametrize(
    ("callback", "match"),
    [
        (TaskGradNormMonitor(params="all_linear"), "task_losses was not set.*report_task_losses"),
        (TaskLossReweighter(Uniform()), "task_losses is not set.*report_task_losses"),
        (LearningGainMonitor(window=1), "task_losses is not set"),
    ],
)
def test_a_module_that_reports_nothing_fails_at_its_first_step(
    tmp_path: Path, callback: pl.Callback, match: str
) -> None:
    with pytest.raises(RuntimeError, match=match):
        trainer(tmp_path, 2, [callback]).fit(_NoTaskLosses(), data())


def test_learning_gain_monitor_lists_logged_metrics_when_its_metric_is_missing(
    tmp_path: Path,
) -> None:
    with pytest.raises(RuntimeError, match=r"'train/reward/small'.*Logged: \['train/accuracy/"):
        trainer(tmp_path, 2, [LearningGainMonitor()]).fit(ThreeTaskClassifier(), data())
