"""Issue 15's mixing rules read their statistics by name: any source that provides the name (a
user's as here, or gradbal's ``LearnabilityMonitor``, ``LearningProgressMonitor``,
``ExcessLossMonitor``) drives them through ``RuleSchedule``, unchanged (unit level: a stand-in
Trainer, the schedule's own ``setup`` / ``ingest`` / ``probabilities``)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback
from torch.testing import assert_close

from gradbal.callbacks import Measurement, StatisticSource
from gradbal.callbacks._rule_schedule import RuleSchedule
from gradbal.weighting import (
    ExcessLossWeights,
    LearnabilityProportional,
    LearningProgressBandit,
    TaskWeighting,
    importance_weighted_reward,
)

NAN = math.nan


class Scripted(Callback, StatisticSource):
    """Provides ``name``; ``latest`` is whatever the test set last."""

    def __init__(self, name: str) -> None:
        self.provides = name  # type: ignore[misc]
        self.measured: Measurement | None = None

    def latest(self) -> Measurement | None:
        return self.measured

    def put(self, step: int, values: list[float]) -> None:
        v = torch.tensor(values, dtype=torch.float64)
        self.measured = Measurement(step, v, ~torch.isnan(v))


def _trainer(*callbacks: Any) -> Any:
    strategy = SimpleNamespace(broadcast=lambda obj, src=0: obj)
    names = SimpleNamespace(task_names=["a", "b", "c"])
    return SimpleNamespace(
        callbacks=list(callbacks), global_step=0, strategy=strategy, datamodule=names
    )


def _schedule(rule: TaskWeighting, ema: float = 0.0) -> RuleSchedule:
    return RuleSchedule("TaskSamplingScheduler", rule, every=1, ema=ema, floor=0.0, temperature=1.0)


@pytest.mark.parametrize(
    "rule", [LearnabilityProportional(), LearningProgressBandit(), ExcessLossWeights()], ids=repr
)
def test_each_rule_reads_its_statistic_from_a_source_providing_the_name(
    rule: TaskWeighting,
) -> None:
    source = Scripted(str(rule.statistic))
    trainer = _trainer(source)
    schedule = _schedule(rule)
    schedule.setup(trainer, ["a", "b", "c"])
    assert schedule.source is source
    source.put(0, [0.1, 0.2, 0.4])
    trainer.global_step = 1
    schedule.ingest(trainer, None, 0)  # type: ignore[arg-type]
    probs = schedule.probabilities(trainer)
    assert probs is not None
    assert_close(probs, rule(torch.tensor([0.1, 0.2, 0.4], dtype=torch.float64)))


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("learnability", "LearnabilityMonitor"),
        ("learning_progress", "LearningProgressMonitor"),
        ("excess_loss", "ExcessLossMonitor"),
    ],
)
def test_without_a_source_the_error_names_the_statistic_and_its_source(
    name: str, source: str
) -> None:
    rule = {
        "learnability": LearnabilityProportional(),
        "learning_progress": LearningProgressBandit(),
        "excess_loss": ExcessLossWeights(),
    }[name]
    with pytest.raises(RuntimeError, match=f"reads '{name}'.*Add `{source}\\(\\.\\.\\.\\)`"):
        _schedule(rule).setup(_trainer(), ["a", "b", "c"])


def test_the_bandit_state_is_the_schedules_ema_and_resumes() -> None:
    """ODM's R_hat <- alpha R_hat + (1 - alpha) R / pi for the drawn tasks only is the schedule's
    EMA of importance-weighted rewards (NaN: not drawn); a schedule restored from its
    ``state_dict`` halfway gives the probabilities of the uninterrupted one."""
    rule = LearningProgressBandit(eta=2.0, gamma=0.1)
    alpha = 0.9
    pi = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    draws = [
        ([0.4, 0.1, 0.2], [True, True, True]),
        ([0.5, 0.0, 0.0], [True, False, False]),
        ([0.0, 0.3, 0.1], [False, True, True]),
        ([0.2, 0.0, 0.0], [True, False, False]),
    ]
    steps = [
        importance_weighted_reward(
            torch.tensor(r, dtype=torch.float64), pi, torch.tensor(m)
        ).tolist()
        for r, m in draws
    ]
    r_hat = [NAN, NAN, NAN]  # ODM's recursion by hand (first draw initialises)
    for values in steps:
        r_hat = [
            old
            if math.isnan(new)
            else (new if math.isnan(old) else alpha * old + (1 - alpha) * new)
            for old, new in zip(r_hat, values, strict=True)
        ]

    def run(schedule: RuleSchedule, source: Scripted, todo: list[list[float]], start: int) -> Any:
        trainer = _trainer(source)
        schedule.setup(trainer, ["a", "b", "c"])
        probs = None
        for i, values in enumerate(todo, start):
            source.put(i, values)
            trainer.global_step = i + 1
            schedule.ingest(trainer, None, 0)  # type: ignore[arg-type]
            probs = schedule.probabilities(trainer)
        return probs

    whole = _schedule(rule, ema=alpha)
    straight = run(whole, Scripted("learning_progress"), steps, 0)
    assert whole.average == pytest.approx(r_hat)
    assert_close(straight, rule(torch.tensor(r_hat, dtype=torch.float64)))

    first = _schedule(rule, ema=alpha)
    run(first, Scripted("learning_progress"), steps[:2], 0)
    resumed = _schedule(rule, ema=alpha)
    resumed.load_state_dict(first.state_dict())
    assert_close(run(resumed, Scripted("learning_progress"), steps[2:], 2), straight)


def test_a_restored_state_made_with_other_tasks_is_refused_after_setup() -> None:
    """Lightning restores callback state after ``setup``: the check runs in ``load_state_dict``
    (a reordered or renamed task list would otherwise get another task's average)."""
    rule = LearnabilityProportional()
    source = Scripted(str(rule.statistic))
    saved = _schedule(rule)
    saved.setup(_trainer(source), ["a", "b", "c"])
    state = saved.state_dict()
    assert state["task_names"] == ["a", "b", "c"]
    for tasks in (["a", "c", "b"], ["a", "b"], ["a", "b", "d"]):
        schedule = _schedule(rule)
        schedule.setup(_trainer(source), tasks)
        with pytest.raises(RuntimeError, match="same task list"):
            schedule.load_state_dict(state)
    same = _schedule(rule)
    same.setup(_trainer(source), ["a", "b", "c"])
    same.load_state_dict(state)
    old = {k: v for k, v in state.items() if k not in ("task_names", "measured_step")}
    same.load_state_dict(old)  # a checkpoint from before task names were saved: counts checked
    assert same.measured_step == [-1, -1, -1]
    short = _schedule(rule)
    short.setup(_trainer(source), ["a", "b"])
    with pytest.raises(RuntimeError, match="same task list"):
        short.load_state_dict(old)
