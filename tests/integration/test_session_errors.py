"""docs/errors.md's Y rows: each bad input raises the documented error, with the value and a fix."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gradbal.callbacks import TaskSamplingScheduler
from gradbal.contracts import prompt_refill
from gradbal.datamodules import TaskMixtureSampler
from gradbal.modules import DynamicSampling
from gradbal.weighting import Uniform
from tests.integration._errors_doc import check_doc_rows


def test_the_doc_rows_match_these_cases() -> None:
    check_doc_rows(
        "Y",
        {
            "Y01": ValueError,
            "Y02": ValueError,
            "Y03": RuntimeError,
            "Y04": ValueError,
            "Y05": RuntimeError,
        },
    )


def test_y01_y02_dynamic_sampling_arguments() -> None:
    with pytest.raises(ValueError, match=r"max_rounds=\.\.\.\) must be an int >= 1, got 0"):
        DynamicSampling(max_rounds=0)
    with pytest.raises(ValueError, match=r"min_keep_rate=\.\.\.\) must be in \(0, 1\], got 0.0"):
        DynamicSampling(min_keep_rate=0.0)


def test_y03_a_datamodule_without_draw_prompts() -> None:
    class Plain:
        pass

    trainer = SimpleNamespace(datamodule=Plain())
    with pytest.raises(
        RuntimeError, match=r"but Plain has none\. Use gradbal\.datamodules\.MultiTaskDataModule"
    ):
        prompt_refill(trainer, "GRPOModule")  # type: ignore[arg-type]


def test_y04_a_task_without_rows() -> None:
    with pytest.raises(ValueError, match=r"Tasks \['b'\] have no rows in task_ids"):
        TaskMixtureSampler([0, 0], ["a", "b"])


def test_y05_a_restored_scheduler_state_with_other_tasks() -> None:
    saved = TaskSamplingScheduler(Uniform(), every=1)
    saved.schedule.setup(SimpleNamespace(callbacks=[]), ["a", "b", "c"])  # type: ignore[arg-type]
    state = saved.state_dict()
    resumed = TaskSamplingScheduler(Uniform(), every=1)
    resumed.schedule.setup(SimpleNamespace(callbacks=[]), ["a", "c", "b"])  # type: ignore[arg-type]
    with pytest.raises(
        RuntimeError,
        match=r"made with tasks \['a', 'b', 'c'\], but the DataModule has \['a', 'c', 'b'\]",
    ):
        resumed.load_state_dict(state)
