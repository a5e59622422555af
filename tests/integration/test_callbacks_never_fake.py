"""Per-task gradient statistics are never fake: foreign modules that break the row contract.

Two LightningModules a user could plausibly write, each breaking the contract that row ``i`` of
``losses`` is row ``i`` of the batch the measured layers see. Before, both logged plausible
numbers silently (0.0 marked valid; norms 16-280% off). Now one is NaN with a warning naming
the cause, the other an error at the first measured step.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from gradbal import report_task_losses
from gradbal.callbacks import TaskGradNormMonitor, TaskLossReweighter, TaskSamplingScheduler
from gradbal.weighting import InverseGradNorm
from tests.integration._errors_doc import check_doc_rows
from tests.integration._three_tasks import DIM, NAMES, ThreeTaskClassifier
from tests.integration.test_callbacks_drop_in import data, events, trainer


def _xy(batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
    x = torch.tensor([row["x"] for row in batch["columns"]], dtype=torch.float32)
    return x, torch.tensor([row["y"] for row in batch["columns"]])


class HeadPerRow(ThreeTaskClassifier):
    """A shared trunk and one head per task, applied row by row: ``heads[t](h[i])``."""

    def __init__(self) -> None:
        super().__init__()
        del self.net
        self.trunk = nn.Linear(DIM, 16)
        self.heads = nn.ModuleList(nn.Linear(16, 2) for _ in NAMES)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        x, y = _xy(batch)
        h = torch.tanh(self.trunk(x))  # [N, 16]
        task_ids = batch["task_id"]
        logits = torch.stack([self.heads[t](h[i]) for i, t in enumerate(task_ids.tolist())])
        losses = nn.functional.cross_entropy(logits, y, reduction="none") / len(y)
        return report_task_losses(self, losses, task_ids)


class ConcatenatedByTask(ThreeTaskClassifier):
    """Per-row losses of the whole batch, but reported task by task (not in batch-row order)."""

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        x, y = _xy(batch)
        task_ids = batch["task_id"]
        per_row = nn.functional.cross_entropy(self.net(x), y, reduction="none") / len(y)
        order = [task_ids == k for k in range(len(NAMES))]
        losses = torch.cat([per_row[m] for m in order])  # [N] task 0's rows, then task 1's...
        return report_task_losses(self, losses, torch.cat([task_ids[m] for m in order]))


def test_heads_applied_row_by_row_are_nan_with_the_cause_and_the_scheduler_waits(
    tmp_path: Path,
) -> None:
    monitor = TaskGradNormMonitor(params=r"^heads\.", every_n_steps=1)
    scheduler = TaskSamplingScheduler(InverseGradNorm(), every=2, ema=0.5, floor=0.0)
    reweighter = TaskLossReweighter(InverseGradNorm(), every=2, floor=0.0)
    dm = data()
    t = trainer(tmp_path, 4, [monitor, scheduler, reweighter])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.fit(HeadPerRow(), dm)
    messages = [str(w.message) for w in caught]
    dropped = [m for m in messages if m.startswith("TaskGradCapture no longer measures `heads.")]
    assert dropped and all(
        re.search(r"called \d+ times in the step with 1 row\(s\) each, but the batch has 24 "
                  r"rows: the layer is applied to each row separately \(e\.g\. `head\(h\[i\]\)`\)", m)
        for m in dropped
    ), dropped  # fmt: skip
    assert any(re.search(r"captured no gradient at step 0.*NaN.*`heads\.0`: it was called", m, re.S)
               for m in messages)  # fmt: skip
    assert not any("could not check" in m for m in messages)
    assert monitor.measured_layers == []
    assert set(monitor.skipped_layers) == {"heads.0", "heads.1", "heads.2"}
    assert monitor.stats is not None and not monitor.stats.valid.any()
    assert torch.isnan(monitor.stats.unbiased_sq).all()  # was 0.0, marked valid
    # Nothing reached the logger, and the scheduler never took NaN for a measurement.
    tags = set(events(t).Tags()["scalars"])
    assert not any(tag.startswith("train/grad_norm") for tag in tags)
    assert scheduler.schedule.num_updates == 0
    assert all(v != v for v in scheduler.schedule.average)  # NaN: never measured
    assert dm.sampling_probs == pytest.approx([1 / 3] * 3)
    assert reweighter.schedule.num_updates == 0 and reweighter.weights == [1.0] * 3


def test_heads_row_by_row_under_all_linear_measure_the_trunk_only(tmp_path: Path) -> None:
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    t = trainer(tmp_path, 2, [monitor])
    with pytest.warns(UserWarning, match=r"no longer measures `heads\.\d`.*each row separately"):
        t.fit(HeadPerRow(), data())
    assert monitor.measured_layers == ["trunk"]
    assert monitor.stats is not None and monitor.stats.valid.all()
    assert "params='last_attention_block'" in monitor.skipped_layers["heads.0"]
    # The layer report went to TensorBoard once, as text.
    ea = events(t)
    found = [
        e.tensor_proto.string_val[0].decode()
        for tag in ea.Tags()["tensors"]
        if tag.startswith("TaskGradNormMonitor/layers")
        for e in ea.Tensors(tag)
    ]
    assert len(found) == 1, found
    assert found[0].startswith("TaskGradNormMonitor measures 1 layer(s): trunk. Skipped 3: ")
    assert "heads.0 (it was called" in found[0]


def test_losses_concatenated_by_task_raise_at_the_first_measured_step(tmp_path: Path) -> None:
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    t = trainer(tmp_path, 3, [monitor])
    match = (
        r"row \d+ of the batch seen by layer `net\.\d` carries the gradient of `losses\[\d+\]`, "
        r"not of `losses\[\d+\]`: the rows of `losses` are not in batch-row order \(e\.g\. "
        r"concatenated task by task\).*losses\[task_ids == k\] = loss_k"
    )
    with pytest.raises(RuntimeError, match=match):
        t.fit(ConcatenatedByTask(), data())
    assert t.global_step == 0 and monitor.stats is None


def test_probe_runs_once_and_changes_nothing_for_a_correct_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The brute-force equality of the drop-in tests holds with the probe; it runs only once."""
    calls = []
    original = torch.autograd.grad

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    monitor = TaskGradNormMonitor(params="all_linear", every_n_steps=1)
    trainer(tmp_path, 3, [monitor]).fit(ThreeTaskClassifier(), data())
    assert len(calls) == 3  # reference + 2 base-8 digits of 24 groups, at the first step only
    assert monitor.stats is not None and monitor.stats.valid.all()


def test_errors_doc_rows() -> None:
    check_doc_rows(
        "G",
        {"G01": RuntimeError, "G02": UserWarning, "G03": RuntimeWarning, "G04": RuntimeWarning},
    )
