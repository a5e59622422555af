"""Pooled per-task estimates (gradbal.gradstats.pooled, group_stats) against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradbal.gradstats import (
    group_summary,
    group_totals,
    pooled_ratio,
    pooled_slope,
    ratio_sums,
    slope_sums,
)


def test_ratio_of_sums_and_its_delta_method_error() -> None:
    """Task 0: units (x, r) = (2, 1), (3, 2), (7, 3): R = 12 / 6 = 2; residuals x - 2r = 0, -1,
    1; se^2 = 3/2 * 2 / 36 = 1/12. Task 1 has one unit: a value, no standard error."""
    x, r = torch.tensor([2.0, 3.0, 7.0, 5.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    est = pooled_ratio(ratio_sums(x, r, torch.tensor([0, 0, 0, 1]), 3))
    assert est.values[:2].tolist() == [2.0, 1.25] and math.isnan(est.values[2])
    assert est.stderr[0].item() == pytest.approx(math.sqrt(1 / 12))
    assert math.isnan(est.stderr[1]) and math.isnan(est.stderr[2])
    assert est.units.tolist() == [3.0, 1.0, 0.0]


def test_sums_add_over_steps() -> None:
    gen = torch.Generator().manual_seed(0)
    x, r, t = (
        torch.randn(40, generator=gen),
        torch.rand(40, generator=gen) + 0.5,
        torch.arange(40) % 3,
    )
    whole = ratio_sums(x, r, t, 3)
    parts = ratio_sums(x[:13], r[:13], t[:13], 3) + ratio_sums(x[13:], r[13:], t[13:], 3)
    torch.testing.assert_close(pooled_ratio(whole), pooled_ratio(parts))


def test_plain_mean_error_is_the_sample_sd_over_root_n() -> None:
    values = [0.25, 0.0, 0.1875, 0.25, 0.0]
    est = pooled_ratio(
        ratio_sums(torch.tensor(values), torch.ones(5), torch.zeros(5, dtype=torch.long), 1)
    )
    assert est.values.item() == pytest.approx(np.mean(values))
    assert est.stderr.item() == pytest.approx(np.std(values, ddof=1) / math.sqrt(5))


def test_slope_and_its_standard_error_match_numpy() -> None:
    t = torch.tensor([0.0, 0.0, 1.0, 2.0, 2.0, 3.0])
    y = torch.tensor([0.1, 0.3, 0.2, 0.6, 0.4, 0.7])
    est = pooled_slope(slope_sums(t, y, torch.zeros(6, dtype=torch.long), 1))
    (slope, intercept), cov = np.polyfit(t.numpy(), y.numpy(), 1, cov="unscaled")
    ssr = float(((y.numpy() - slope * t.numpy() - intercept) ** 2).sum())
    assert est.values.item() == pytest.approx(slope)
    assert est.stderr.item() == pytest.approx(math.sqrt(ssr / 4 * cov[0, 0]))


def test_a_slope_needs_two_distinct_steps() -> None:
    one_step = slope_sums(torch.full((4,), 5.0), torch.rand(4), torch.zeros(4, dtype=torch.long), 1)
    assert math.isnan(pooled_slope(one_step).values.item())


def test_group_summary_of_non_contiguous_groups() -> None:
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    group_ids = torch.tensor([7, 3, 7, 3, 7, 7])  # group 3: [0, 1], group 7: [1, 1, 1, 0]
    task_ids = torch.tensor([1, 0, 1, 0, 1, 1])
    s = group_summary(rewards, rewards - 0.5, task_ids, group_ids)
    assert s.task_ids.tolist() == [0, 1] and s.size.tolist() == [2.0, 4.0]
    assert s.reward_var.tolist() == [0.25, 0.1875]  # p(1-p): 1/2 * 1/2, 3/4 * 1/4
    assert s.informative.tolist() == [True, True] and s.abs_advantage_sum.tolist() == [1.0, 2.0]
    same = group_summary(
        torch.ones(3),
        torch.zeros(3),
        torch.zeros(3, dtype=torch.long),
        torch.zeros(3, dtype=torch.long),
    )
    assert same.informative.tolist() == [False] and same.reward_var.tolist() == [0.0]


def test_a_group_of_two_tasks_is_refused() -> None:
    with pytest.raises(ValueError, match="different tasks"):
        group_totals(torch.ones(2), torch.tensor([0, 1]), torch.tensor([4, 4]))
