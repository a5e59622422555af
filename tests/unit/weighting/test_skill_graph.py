"""SkillGraphWeights: Skill-it's multiplicative step over the task graph, by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from gradbal.weighting import SkillGraphWeights
from tests.unit.weighting._properties import (
    STATS,
    assert_probabilities,
    assert_scale_invariant,
)

NAMES = ["addition", "countdown", "reverse"]
GRAPH = {"addition": ["countdown"], "reverse": ["addition", "countdown"]}


def test_skill_it_step_by_hand() -> None:
    """A = [[1, .5, 0], [0, 1, 0], [.5, .5, 1]] (edge_weight 0.5), L = [0.2, 0.8, 0.4]:
    s = A L = [0.6, 0.8, 0.9]; from uniform p, p' ∝ exp(eta s / max s)."""
    losses = [0.2, 0.8, 0.4]
    s = [0.2 + 0.5 * 0.8, 0.8, 0.5 * 0.2 + 0.5 * 0.8 + 0.4]
    eta = 1.5
    e = [math.exp(eta * x / max(s)) for x in s]
    expected = torch.tensor([x / sum(e) for x in e], dtype=torch.float64)
    rule = SkillGraphWeights(GRAPH, eta=eta).bind(NAMES)
    assert_close(rule(torch.tensor(losses, dtype=torch.float64)), expected)


def test_two_steps_equal_one_step_on_the_summed_losses() -> None:
    """p^{t+1} ∝ p^t exp(eta A L_t) twice == one step on L_1 + L_2 (what the EMA sums)."""
    l1 = torch.tensor([0.3, 0.1, 0.5], dtype=torch.float64)
    l2 = torch.tensor([0.2, 0.6, 0.0], dtype=torch.float64)
    rule = SkillGraphWeights(GRAPH, eta=0.7).bind(NAMES)
    a = rule._matrix
    assert a is not None
    scale = (a @ (l1 + l2)).max()
    p = torch.full((3,), 1 / 3, dtype=torch.float64)
    for lam in (l1, l2):
        p = p * torch.exp(0.7 * (a @ lam) / scale)
        p = p / p.sum()
    assert_close(rule(l1 + l2), p)


def test_the_graph_follows_the_task_order() -> None:
    """Binding to another order permutes the probabilities with the tasks."""
    losses = {"addition": 0.2, "countdown": 0.8, "reverse": 0.4}
    order = ["reverse", "addition", "countdown"]
    rule = SkillGraphWeights(GRAPH)
    a = rule.bind(NAMES)(torch.tensor([losses[n] for n in NAMES]))
    b = rule.bind(order)(torch.tensor([losses[n] for n in order]))
    assert_close(b, a[[NAMES.index(n) for n in order]])


def test_the_empty_graph_favours_the_largest_loss() -> None:
    """Skill-it's identity graph: 'sample the tasks with the highest loss'."""
    probs = SkillGraphWeights(eta=2.0)(torch.tensor([0.1, 0.5, 1.0]))
    assert probs.argmax() == 2 and probs.argmin() == 0


def test_a_bound_rule_binds_again_to_the_measured_tasks() -> None:
    """Rebinding to a subset keeps A restricted to it (the unmeasured task's edges drop)."""
    rule = SkillGraphWeights(GRAPH).bind(NAMES)
    sub = rule.bind(["addition", "countdown"])
    full = SkillGraphWeights({"addition": ["countdown"]}).bind(["addition", "countdown"])
    stats = torch.tensor([0.3, 0.9])
    assert_close(sub(stats), full(stats))
    with pytest.raises(ValueError, match="F03"):
        sub.bind(["reverse"])


@pytest.mark.parametrize("stats", [s for s in STATS.values() if s.numel() == 3], ids=str)
def test_bound_properties(stats: torch.Tensor) -> None:
    rule = SkillGraphWeights(GRAPH, eta=2.0).bind(NAMES)
    assert_probabilities(rule, stats)
    assert_scale_invariant(rule, stats)


def test_an_edge_raises_the_helper_above_an_unconnected_task() -> None:
    """Equal losses: the task that helps others has the largest s = A L."""
    probs = SkillGraphWeights(GRAPH).bind(NAMES)(torch.ones(3))
    assert probs[2] > probs[0] > probs[1]


def test_the_caller_graph_is_copied_and_the_repr_rebuilds() -> None:
    graph = {"a": ["b"]}
    rule = SkillGraphWeights(graph, eta=0.5, statistic="reward_shortfall")
    graph["a"].append("c")
    assert rule.graph == {"a": ["b"]}
    rebuilt = eval(repr(rule))
    assert repr(rebuilt) == repr(rule) and rebuilt.statistic == "reward_shortfall"
    assert rule.statistics == ("reward_shortfall",)
