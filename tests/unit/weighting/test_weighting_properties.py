"""Every weighting rule on random and extreme statistics (hypothesis), beyond test_properties.py.

test_properties.py checks the shared properties on six fixed vectors; here hypothesis draws the
number of tasks (1..8), the rule's power, the statistics (zeros and magnitudes from 1e-300 to
1e300, so one vector can span 600 orders of magnitude) and a permutation, and named extreme
vectors (subnormal, the largest float, one huge value among tiny ones) are checked on every
rule. Properties: the output is finite, non-negative and sums to 1; permuting the tasks permutes
the output (for ``Fixed``, permuting its values too); scaling every statistic by a power of two
changes nothing.
"""

from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.testing import assert_close

from gradbal.weighting import (
    ExcessLossWeights,
    Fixed,
    GradProportional,
    InverseGradNorm,
    LearnabilityProportional,
    LearningGainProportional,
    LearningProgressBandit,
    TaskWeighting,
    Uniform,
)

MAX = sys.float_info.max  # 1.797e308
SUBNORMAL = 5e-324

# Magnitudes 1e-300 .. 1e300: m * 10**e is a normal float, and stays one after scaling by 2**+-20.
magnitude = st.builds(lambda m, e: m * 10.0**e, st.floats(1.0, 9.99), st.integers(-300, 299))
stat_entry = st.one_of(st.just(0.0), magnitude)
# Powers from mild to absurd: 1e300 makes exponent * log(stats) overflow unless computed stably.
power = st.one_of(st.floats(1e-3, 1e3), st.sampled_from([1e-300, 1e-6, 1e6, 1e300, MAX]))
PowerRule = (
    type[GradProportional]
    | type[InverseGradNorm]
    | type[LearningGainProportional]
    | type[LearnabilityProportional]
)
POWER_RULES: tuple[PowerRule, ...] = (
    GradProportional,
    InverseGradNorm,
    LearningGainProportional,
    LearnabilityProportional,
)
# Exponential-weight rules: eta from mild to the largest float, uniform share from 0 to 1.
ExpRule = type[LearningProgressBandit] | type[ExcessLossWeights]
EXP_RULES: tuple[ExpRule, ...] = (LearningProgressBandit, ExcessLossWeights)
uniform_share = st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1e-300, 1.0]))


def exp_rule(cls: ExpRule, eta: float, share: float) -> TaskWeighting:
    if cls is LearningProgressBandit:
        return LearningProgressBandit(eta=eta, gamma=share)
    return ExcessLossWeights(eta=eta, smoothing=share)


@st.composite
def rule_and_stats(draw: st.DrawFn) -> tuple[TaskWeighting, Tensor]:
    k = draw(st.integers(1, 8), label="k")
    stats = torch.tensor(draw(st.lists(stat_entry, min_size=k, max_size=k)), dtype=torch.float64)
    kind = draw(st.sampled_from(("uniform", "fixed", "power", "exp")), label="kind")
    rule: TaskWeighting
    if kind == "uniform":
        rule = Uniform()
    elif kind == "fixed":
        values = draw(st.lists(stat_entry, min_size=k, max_size=k))
        if sum(values) <= 0:
            values[0] = 1.0
        rule = Fixed(values)
    elif kind == "exp":
        cls_exp = draw(st.sampled_from(EXP_RULES), label="rule")
        rule = exp_rule(cls_exp, draw(power, label="eta"), draw(uniform_share, label="share"))
    else:
        cls = draw(st.sampled_from(POWER_RULES), label="rule")
        rule = cls(power=draw(power, label="power"))
    return rule, stats


def permuted(rule: TaskWeighting, perm: list[int]) -> TaskWeighting:
    """The rule for the permuted tasks: ``Fixed``'s values belong to task positions."""
    if isinstance(rule, Fixed):
        return Fixed([rule.probs[i] for i in perm])
    return rule


def assert_probabilities(probs: Tensor, stats: Tensor) -> None:
    assert probs.shape == stats.shape
    assert torch.isfinite(probs).all() and (probs >= 0).all(), (stats.tolist(), probs.tolist())
    assert_close(probs.sum(), torch.ones((), dtype=probs.dtype))


@settings(max_examples=300, deadline=None)
@given(case=rule_and_stats(), data=st.data())
def test_probabilities_and_permutation_equivariance(
    case: tuple[TaskWeighting, Tensor], data: st.DataObject
) -> None:
    rule, stats = case
    probs = rule(stats)
    assert_probabilities(probs, stats)
    perm = data.draw(st.permutations(range(stats.numel())), label="perm")
    # Equal up to the rounding of the normalising sum, whose order the permutation changes.
    assert_close(permuted(rule, perm)(stats[perm]), probs[perm], rtol=1e-12, atol=1e-300)


@settings(max_examples=150, deadline=None)
@given(case=rule_and_stats(), exponent=st.integers(-20, 20))
def test_scaling_by_a_power_of_two_changes_nothing(
    case: tuple[TaskWeighting, Tensor], exponent: int
) -> None:
    """Scaling is exact in floating point, so only the rules' own rounding remains. Powers up to
    1e3: a larger power turns a rounding error in ``log(stats)`` into a visible change."""
    rule, stats = case
    if isinstance(rule, POWER_RULES) and rule.power > 1e3:
        rule = type(rule)(power=1e3)
    assert_close(rule(stats * 2.0**exponent), rule(stats), rtol=1e-9, atol=1e-300)


@settings(max_examples=100, deadline=None)
@given(case=rule_and_stats(), exponent=st.integers(-40, 35))
def test_float32_statistics(case: tuple[TaskWeighting, Tensor], exponent: int) -> None:
    """float32 inputs (the monitors' dtype): finite float32 probabilities summing to 1."""
    rule, stats = case
    stats32 = (stats / stats.max().clamp_min(1e-300) * 10.0**exponent).float()
    probs = rule(stats32)
    assert probs.dtype == torch.float32
    assert_probabilities(probs, stats32)


EXTREME = {
    "all_1e-300": [1e-300] * 4,
    "all_1e300": [1e300] * 4,
    "span_600_orders": [1e-300, 1e-100, 1.0, 1e100, 1e300],
    "all_equal": [3.0] * 5,
    "one_huge_rest_tiny": [1e-300, MAX, 1e-300, 1e-300],
    "largest_float": [MAX, MAX, MAX],
    "subnormal": [SUBNORMAL, 1.0, 2.0],
    "subnormal_and_largest": [SUBNORMAL, MAX],
    "zeros_and_huge": [0.0, 0.0, 1e300],
    "one_task": [1e300],
}
RULES = [
    Uniform(),
    *(cls(power=p) for cls in POWER_RULES for p in (1e-300, 0.5, 1.0, 2.0, 50.0, 1e300, MAX)),
    *(
        exp_rule(cls, e, c)
        for cls in EXP_RULES
        for e in (1e-300, 1.0, 50.0, MAX)
        for c in (0.0, 0.1)
    ),
]


@pytest.mark.parametrize("name", EXTREME)
def test_extreme_statistics(name: str) -> None:
    stats = torch.tensor(EXTREME[name], dtype=torch.float64)
    k = stats.numel()
    fixed = [Fixed(values) for values in ([MAX] * k, [SUBNORMAL] * k, [1e-300, *[MAX] * (k - 1)])]
    for rule in [*RULES, *fixed]:
        probs = rule(stats)
        assert_probabilities(probs, stats)
        perm = list(reversed(range(k)))
        assert_close(permuted(rule, perm)(stats[perm]), probs[perm], rtol=1e-12, atol=1e-300)


def test_extreme_cases_have_the_limit_values() -> None:
    """Spot values where the limit is known: equal statistics give uniform probabilities,
    a huge power puts all the mass on the largest (smallest, for the inverse rule) statistic,
    and ``Fixed`` values near the largest float are still normalised."""
    equal = torch.full((5,), 1e300, dtype=torch.float64)
    for rule in RULES:
        assert_close(rule(equal), torch.full((5,), 0.2, dtype=torch.float64))
    spread = torch.tensor([100.0, 1000.0], dtype=torch.float64)
    assert GradProportional(power=MAX)(spread).tolist() == [0.0, 1.0]
    assert InverseGradNorm(power=MAX)(spread).tolist() == [1.0, 0.0]
    assert Fixed([MAX, MAX])(torch.ones(2)).tolist() == [0.5, 0.5]
