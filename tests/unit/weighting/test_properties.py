"""The shared properties, parametrised over every rule, and what all rules have in common."""

from __future__ import annotations

import pytest
import torch
from jsonargparse import ArgumentParser

from gradbal.weighting import (
    ExcessLossWeights,
    Fixed,
    GradNormTarget,
    GradProportional,
    InverseGradNorm,
    LearnabilityProportional,
    LearningGainProportional,
    LearningProgressBandit,
    SkillGraphWeights,
    TaskWeighting,
    Uniform,
    check_stats,
)
from tests.unit.weighting._properties import (
    STATS,
    assert_monotone,
    assert_permutation_equivariant,
    assert_probabilities,
    assert_scale_invariant,
)

# (rule, direction of the probability in the statistic)
EQUIVARIANT = [
    (Uniform(), 0),
    (GradProportional(), 1),
    (GradProportional(power=1.0), 1),
    (InverseGradNorm(), -1),
    (InverseGradNorm(power=0.5), -1),
    (LearningGainProportional(), 1),
    (LearningGainProportional(power=3.0), 1),
    (LearnabilityProportional(), 1),
    (LearnabilityProportional(power=2.0), 1),
    (LearningProgressBandit(), 1),
    (LearningProgressBandit(eta=5.0, gamma=0.0), 1),
    (LearningProgressBandit(eta=1.0, gamma=1.0), 0),
    (ExcessLossWeights(), 1),
    (ExcessLossWeights(eta=3.0, smoothing=0.2), 1),
    (SkillGraphWeights(), 1),  # the identity graph; a task graph is checked in its own file
    (SkillGraphWeights(eta=3.0, statistic="reward_shortfall"), 1),
]
ALL = [rule for rule, _ in EQUIVARIANT] + [Fixed([1.0, 2.0, 3.0])]


def _stats_for(rule: TaskWeighting) -> list[torch.Tensor]:
    if isinstance(rule, Fixed):
        return [s for s in STATS.values() if s.numel() == len(rule.probs)]
    return list(STATS.values())


@pytest.mark.parametrize("rule", ALL, ids=repr)
def test_outputs_are_probabilities(rule: TaskWeighting) -> None:
    for stats in _stats_for(rule):
        assert_probabilities(rule, stats)


@pytest.mark.parametrize("rule", ALL, ids=repr)
def test_scale_invariant(rule: TaskWeighting) -> None:
    for stats in _stats_for(rule):
        assert_scale_invariant(rule, stats)


@pytest.mark.parametrize(("rule", "direction"), EQUIVARIANT, ids=lambda x: repr(x))
def test_permutation_equivariant_and_monotone(rule: TaskWeighting, direction: int) -> None:
    for stats in STATS.values():
        assert_permutation_equivariant(rule, stats)
        assert_monotone(rule, stats, direction)


@pytest.mark.parametrize("rule", ALL, ids=repr)
def test_stateless_and_repr_echoes_arguments(rule: TaskWeighting) -> None:
    stats = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(rule(stats), rule(stats))
    rebuilt = eval(repr(rule))  # the repr is the constructor call
    assert type(rebuilt) is type(rule) and repr(rebuilt) == repr(rule)


@pytest.mark.parametrize(
    ("stats", "error", "match"),
    [
        (torch.tensor([1.0, -0.1]), ValueError, "non-negative"),
        (torch.tensor([1.0, float("nan")]), ValueError, "finite"),
        (torch.tensor([1.0, float("inf")]), ValueError, "finite"),
        (torch.ones(2, 2), ValueError, "1-D"),
        (torch.ones(0), ValueError, "1-D"),
        ([1.0, 2.0], TypeError, "tensor"),
    ],
)
def test_every_rule_rejects_bad_statistics(stats: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        check_stats(stats)  # type: ignore[arg-type]
    for rule in ALL:
        with pytest.raises(error, match=match):
            rule(stats)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "rule",
    [GradProportional, InverseGradNorm, LearningGainProportional, LearnabilityProportional],
)
@pytest.mark.parametrize("power", [0.0, -1.0, float("inf"), float("nan")])
def test_power_must_be_positive(rule: type, power: float) -> None:
    with pytest.raises(ValueError, match="power"):
        rule(power=power)


def test_statistic_declares_the_source() -> None:
    assert GradProportional.statistic == InverseGradNorm.statistic == "grad_norm_sq"
    assert LearningGainProportional.statistic == "learning_gain"
    assert Uniform.statistic is None and Fixed.statistic is None
    assert LearnabilityProportional.statistic == "learnability"
    assert LearningProgressBandit.statistic == "learning_progress"
    assert ExcessLossWeights.statistic == "excess_loss"
    assert SkillGraphWeights().statistic == "task_loss"
    assert GradNormTarget().statistics == ("grad_norm_sq", "loss_ratio")
    assert Uniform().statistics == () and InverseGradNorm().statistics == ("grad_norm_sq",)


@pytest.mark.parametrize("rule", [LearningProgressBandit, ExcessLossWeights])
@pytest.mark.parametrize("eta", [0.0, -1.0, float("inf"), float("nan")])
def test_eta_must_be_positive(rule: type, eta: float) -> None:
    with pytest.raises(ValueError, match="eta"):
        rule(eta=eta)


@pytest.mark.parametrize(
    ("rule", "arg"), [(LearningProgressBandit, "gamma"), (ExcessLossWeights, "smoothing")]
)
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_uniform_share_must_be_in_the_unit_interval(rule: type, arg: str, value: float) -> None:
    with pytest.raises(ValueError, match=arg):
        rule(**{arg: value})


def test_rules_are_chosen_in_yaml_by_class_path() -> None:
    """An ABC (not a Protocol) is what jsonargparse builds subclasses of."""
    parser = ArgumentParser()
    parser.add_argument("--rule", type=TaskWeighting)
    for config, expected in [
        ('{"class_path": "gradbal.weighting.InverseGradNorm"}', "InverseGradNorm(power=1.0)"),
        (
            '{"class_path": "gradbal.weighting.Fixed", "init_args": {"probs": [1, 2]}}',
            "Fixed(probs=[1.0, 2.0])",
        ),
        (
            '{"class_path": "gradbal.weighting.LearningProgressBandit", "init_args": {"gamma": 0}}',
            "LearningProgressBandit(eta=1.0, gamma=0.0)",
        ),
        (
            '{"class_path": "gradbal.weighting.SkillGraphWeights", "init_args": '
            '{"graph": {"a": ["b", "c"]}, "statistic": "reward_shortfall"}}',
            "SkillGraphWeights(graph={'a': ['b', 'c']}, eta=1.0, edge_weight=0.5, "
            "statistic='reward_shortfall')",
        ),
        (
            '{"class_path": "gradbal.weighting.GradNormTarget", "init_args": {"alpha": 0.5}}',
            "GradNormTarget(alpha=0.5)",
        ),
    ]:
        rule = parser.instantiate_classes(parser.parse_args(["--rule", config])).rule
        assert repr(rule) == expected
