"""RuleSchedule's two hooks for the rules of issue 15, part 3: a rule that reads several
statistics (``GradNormTarget``: one moving average per statistic, each from its own source) and
a rule bound to task names (``SkillGraphWeights``: bound at setup, rebound to the measured
tasks). Unit level: a stand-in Trainer, the schedule's own setup / ingest / probabilities."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from gradbal.callbacks._rule_schedule import RuleSchedule
from gradbal.weighting import GradNormTarget, SkillGraphWeights, TaskWeighting
from tests.unit.callbacks.test_mixing_rules_on_the_bus import Scripted, _trainer

NAN = math.nan


def _schedule(rule: TaskWeighting, ema: float = 0.0) -> RuleSchedule:
    return RuleSchedule("TaskLossReweighter", rule, every=1, ema=ema, floor=0.0, temperature=1.0)


def _step(schedule: RuleSchedule, trainer: object, step: int) -> torch.Tensor | None:
    trainer.global_step = step  # type: ignore[attr-defined]
    schedule.ingest(trainer, None, 0)  # type: ignore[arg-type]
    return schedule.probabilities(trainer)  # type: ignore[arg-type]


def test_a_rule_reading_two_statistics_gets_both_averages() -> None:
    norms, ratios = Scripted("grad_norm_sq"), Scripted("loss_ratio")
    trainer = _trainer(norms, ratios)
    rule = GradNormTarget(alpha=1.0)
    schedule = _schedule(rule, ema=0.5)
    schedule.setup(trainer, ["a", "b", "c"])  # type: ignore[arg-type]
    assert schedule.sources == [norms, ratios]

    norms.put(0, [1.0, 4.0, 16.0])
    assert _step(schedule, trainer, 1) is None  # no ratio yet: no task is measured
    ratios.put(0, [0.5, 1.0, 1.0])
    probs = _step(schedule, trainer, 2)
    assert probs is not None
    assert_close(probs, torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64))

    norms.put(1, [4.0, 4.0, 16.0])  # EMA 0.5 of each statistic on its own
    ratios.put(1, [1.5, 1.0, 1.0])
    probs = _step(schedule, trainer, 3)
    expected = rule(torch.tensor([[2.5, 4.0, 16.0], [1.0, 1.0, 1.0]], dtype=torch.float64))
    assert probs is not None
    assert_close(probs, expected)

    state = schedule.state_dict()
    assert state["average"] == [2.5, 4.0, 16.0]
    assert state["more_statistics"][0]["average"] == [1.0, 1.0, 1.0]
    restored = _schedule(GradNormTarget(alpha=1.0), ema=0.5)
    restored.load_state_dict(state)
    assert restored.state_dict() == state


def test_a_task_missing_one_statistic_keeps_its_share() -> None:
    norms, ratios = Scripted("grad_norm_sq"), Scripted("loss_ratio")
    trainer = _trainer(norms, ratios)
    schedule = _schedule(GradNormTarget(alpha=1.0))
    schedule.setup(trainer, ["a", "b", "c"])  # type: ignore[arg-type]
    norms.put(0, [1.0, 4.0, 16.0])
    ratios.put(0, [1.0, 1.0, NAN])
    with pytest.warns(RuntimeWarning, match=r"\['c'\] keep their current share"):
        probs = _step(schedule, trainer, 1)
    assert probs is not None
    assert probs[2].item() == pytest.approx(1 / 3)
    assert_close(probs[:2] / probs[:2].sum(), torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))


def test_a_graph_rule_is_bound_at_setup_and_rebound_to_the_measured_tasks() -> None:
    source = Scripted("task_loss")
    trainer = _trainer(source)
    rule = SkillGraphWeights({"c": ["a"]}, eta=1.0)
    schedule = _schedule(rule)
    schedule.setup(trainer, ["a", "b", "c"])  # type: ignore[arg-type]

    source.put(0, [1.0, 0.5, NAN])  # c not measured: its edge to a drops, a and b by their loss
    with pytest.warns(RuntimeWarning, match="keep their current share"):
        probs = _step(schedule, trainer, 1)
    assert probs is not None
    sub = SkillGraphWeights()(torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert_close(probs[:2] / probs[:2].sum(), sub)

    source.put(1, [1.0, 0.5, 0.5])  # all measured: c helps a, s = A L = [1, 0.5, 1]
    probs = _step(schedule, trainer, 2)
    assert probs is not None
    assert_close(probs, rule.bind(["a", "b", "c"])(torch.tensor([1.0, 0.5, 0.5])).double())
    assert probs[2].item() == pytest.approx(probs[0].item())  # c: its loss + half of a's
    assert probs[0] > probs[1]


def test_setup_rejects_a_graph_with_an_unknown_task() -> None:
    trainer = _trainer(Scripted("task_loss"))
    schedule = _schedule(SkillGraphWeights({"a": ["z"]}))
    with pytest.raises(ValueError, match=r"F03: .* names tasks \['z'\]"):
        schedule.setup(trainer, ["a", "b", "c"])  # type: ignore[arg-type]
