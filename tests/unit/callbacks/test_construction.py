"""Constructor validation, state keys and state round-trips of the callbacks, without a Trainer."""

from __future__ import annotations

import math
from typing import Any

import pytest

from gradbal.callbacks import (
    LearningGainMonitor,
    TaskGradNormMonitor,
    TaskLossReweighter,
    TaskSamplingScheduler,
)
from gradbal.weighting import Fixed, GradProportional, InverseGradNorm

SCHEDULERS = [TaskSamplingScheduler, TaskLossReweighter]


@pytest.mark.parametrize("cls", SCHEDULERS)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every": 0}, "`every` must be 'epoch' or an int >= 1. Got 0"),
        ({"every": "step"}, "`every` must be 'epoch'"),
        ({"ema": 1.0}, r"`ema` must be in \[0, 1\). Got 1.0"),
        ({"floor": -0.1}, "`floor`"),
        ({"temperature": 0.0}, "`temperature` must be finite and > 0"),
    ],
)
def test_scheduler_arguments_are_validated(cls: type, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(InverseGradNorm(), **kwargs)


@pytest.mark.parametrize("cls", SCHEDULERS)
def test_rule_must_be_a_task_weighting(cls: type) -> None:
    with pytest.raises(TypeError, match="TaskWeighting"):
        cls(lambda stats: stats)


@pytest.mark.parametrize("cls", SCHEDULERS)
def test_state_key_comes_from_configuration(cls: type) -> None:
    a, b = cls(InverseGradNorm()), cls(GradProportional())
    assert a.state_key != b.state_key
    assert a.state_key == cls(InverseGradNorm()).state_key
    assert "InverseGradNorm(power=1.0)" in a.state_key


@pytest.mark.parametrize("cls", SCHEDULERS)
def test_state_round_trip_and_defaults_for_missing_keys(cls: type) -> None:
    callback = cls(Fixed([1.0, 1.0]))
    state = {
        "task_names": ["a", "b"],
        "average": [0.5, math.nan],
        "measured_step": [7, -1],
        "ingested_step": 7,
        "updated_step": 6,
        "num_updates": 2,
        "variance": [0.01, 0.04],
        "num_held": 1,
    }
    if cls is TaskLossReweighter:  # the sampling probabilities are the DataModule's state
        state["weights"] = [0.25, 0.75]
    callback.load_state_dict(state)
    restored = callback.state_dict()
    assert restored.keys() == state.keys()
    assert restored["average"][0] == 0.5 and math.isnan(restored["average"][1])
    assert {k: v for k, v in restored.items() if k != "average"} == {
        k: v for k, v in state.items() if k != "average"
    }
    fresh = cls(Fixed([1.0, 1.0]))
    fresh.load_state_dict({})  # a checkpoint from before these keys existed
    assert fresh.state_dict()["updated_step"] == -1
    older = cls(Fixed([1.0, 1.0]))
    older.load_state_dict({"average": [0.5, 0.5]})  # before the measurement guarantee
    variance = older.state_dict()["variance"]
    assert len(variance) == 2 and all(math.isnan(v) for v in variance)


def test_a_scheduler_state_from_before_the_datamodule_owned_the_mixture_loads() -> None:
    """Checkpoints written before TaskStream also saved the probabilities in the scheduler's
    state; they load (as the scheduler's record) and are not saved again."""
    old = {
        "task_names": ["a", "b"],
        "average": [0.5, 0.25],
        "measured_step": [7, 7],
        "ingested_step": 7,
        "updated_step": 6,
        "num_updates": 2,
        "probs": [0.25, 0.75],
    }
    scheduler = TaskSamplingScheduler(InverseGradNorm())
    scheduler.load_state_dict(old)
    assert scheduler.probs == [0.25, 0.75]
    assert scheduler.schedule.average == [0.5, 0.25] and scheduler.schedule.num_updates == 2
    assert "probs" not in scheduler.state_dict()


def test_monitor_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="estimator"):
        TaskGradNormMonitor(estimator="naive")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every_n_steps"):
        TaskGradNormMonitor(every_n_steps=0)


def test_learning_gain_monitor_arguments_and_state() -> None:
    with pytest.raises(ValueError, match="window"):
        LearningGainMonitor(window=0)
    with pytest.raises(ValueError, match=r"\{task\}"):
        LearningGainMonitor(metric="train/reward")
    with pytest.raises(ValueError, match=r"\{task\}"):
        LearningGainMonitor(metric="train/{group}/{task}")
    with pytest.raises(ValueError, match="mode"):
        LearningGainMonitor(mode="up")  # type: ignore[arg-type]
    monitor = LearningGainMonitor(window=2, metric="val/score/{task}", mode="min")
    assert monitor.task_metric_groups == ("train/learning_gain", "val/score")
    assert monitor.state_key != LearningGainMonitor(window=3).state_key
    monitor.load_state_dict({"history": [[1.0, 2.0]] * 5, "gains": [0.1, -0.1], "gains_step": 4})
    state = monitor.state_dict()
    assert state["history"] == [[1.0, 2.0]] * 4  # only 2 * window rows are kept
    assert state["gains"] == [0.1, -0.1] and state["gains_step"] == 4
