"""What gradbal's own sources put on the statistic bus, and how a consumer finds them."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from gradbal.callbacks import (
    LearningGainMonitor,
    PreferenceGradientMonitor,
    StatisticSource,
    TaskGradNormMonitor,
    find_source,
)
from gradbal.callbacks.statistics import statistic_sources
from gradbal.gradstats import PreferenceGradParts, TaskGradStats

NAN = math.nan


def _trainer(*callbacks: Any) -> Any:
    return SimpleNamespace(callbacks=list(callbacks))


def test_grad_norm_monitor_provides_the_unbiased_squared_norms() -> None:
    monitor = TaskGradNormMonitor()
    assert monitor.provides == "grad_norm_sq" and monitor.latest() is None
    sq = torch.tensor([0.5, NAN, -0.1], dtype=torch.float64)
    valid = torch.tensor([True, False, True])
    other = torch.zeros(3, dtype=torch.float64)
    monitor.stats = TaskGradStats(sq, other, other, other, other, other, other, valid)
    monitor.stats_step = 7
    latest = monitor.latest()
    assert latest is not None and latest.step == 7
    assert latest.values is sq and latest.valid.tolist() == [True, False, True]


def test_learning_gain_monitor_provides_its_gains_valid_where_finite() -> None:
    monitor = LearningGainMonitor(window=1)
    assert monitor.provides == "learning_gain" and monitor.latest() is None
    monitor.load_state_dict({"history": [], "gains": [0.1, NAN, -0.2], "gains_step": 4})
    latest = monitor.latest()
    assert latest is not None and latest.step == 4
    assert latest.valid.tolist() == [True, False, True]
    assert latest.values[[0, 2]].tolist() == [0.1, -0.2]


def test_preference_monitor_provides_the_rejected_over_chosen_ratio() -> None:
    monitor = PreferenceGradientMonitor()
    assert monitor.provides == "grad_ratio_rejected_over_chosen" and monitor.latest() is None
    ratio = torch.tensor([2.0, NAN], dtype=torch.float64)
    zero, per_task = torch.tensor(0.0), torch.zeros(2)
    monitor.parts = PreferenceGradParts(per_task, per_task, ratio, per_task, zero, zero, zero, zero)
    monitor.parts_step = 3
    latest = monitor.latest()
    assert latest is not None and latest.step == 3 and latest.valid.tolist() == [True, False]


def test_find_source_picks_the_one_provider() -> None:
    grad, gain = TaskGradNormMonitor(), LearningGainMonitor()
    trainer = _trainer(object(), grad, gain)
    assert find_source(trainer, "learning_gain", "Owner", "reads it") is gain
    assert statistic_sources(trainer) == [grad, gain]


def test_find_source_error_names_the_known_provider_and_what_is_provided() -> None:
    with pytest.raises(RuntimeError) as err:
        find_source(_trainer(LearningGainMonitor()), "grad_norm_sq", "Owner", "reads norms")
    message = str(err.value)
    assert "Owner reads norms, so it needs exactly one TaskGradNormMonitor" in message
    assert "found 0. Add `TaskGradNormMonitor(...)`" in message
    assert "{'LearningGainMonitor': 'learning_gain'}" in message


def test_find_source_error_for_a_statistic_nobody_provides() -> None:
    with pytest.raises(RuntimeError, match=r"subclasses gradbal\.callbacks\.StatisticSource"):
        find_source(_trainer(), "nobody_provides_this", "Owner", "reads it")


def test_a_source_must_implement_latest() -> None:
    class Incomplete(StatisticSource):
        provides = "x"

    with pytest.raises(NotImplementedError, match="Incomplete must implement `latest\\(\\)`"):
        Incomplete().latest()
