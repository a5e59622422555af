"""Tests for gradbal.objectives.advantages.

Shared example: rewards = [0, 1, 2 | 1, 1, 4 | 5, 5, 5], group_size = 3.

* group means [1, 2, 5] -> centred = [-1, 0, 1 | -1, -1, 2 | 0, 0, 0]  (scale="none")
* unbiased group stds: sqrt(2 / 2) = 1, sqrt((1 + 1 + 4) / 2) = sqrt(3), 0
  -> scale="group" (eps=0): [-1, 0, 1 | -1/√3, -1/√3, 2/√3 | 0, 0, 0]
* batch mean 24 / 9 = 8/3; sum of squared deviations
  (64 + 25 + 4 + 25 + 25 + 16 + 3 * 49) / 9 = 34; unbiased var 34 / 8 = 4.25
  -> scale="batch" (eps=0): centred / sqrt(4.25)
"""

import math

import pytest
import torch
from torch.testing import assert_close

from gradbal.objectives import group_advantages, zero_std_groups

REWARDS = torch.tensor([0.0, 1.0, 2.0, 1.0, 1.0, 4.0, 5.0, 5.0, 5.0])
CENTRED = torch.tensor([-1.0, 0.0, 1.0, -1.0, -1.0, 2.0, 0.0, 0.0, 0.0])


def test_scale_none_is_centred_rewards() -> None:
    assert_close(group_advantages(REWARDS, 3, scale="none"), CENTRED)


def test_scale_group_divides_by_unbiased_group_std() -> None:
    s3 = math.sqrt(3.0)
    expected = torch.tensor([-1.0, 0.0, 1.0, -1 / s3, -1 / s3, 2 / s3, 0.0, 0.0, 0.0])
    assert_close(group_advantages(REWARDS, 3, scale="group", eps=0.0), expected)


def test_scale_group_default_eps_is_added_to_std() -> None:
    """Group [0, 1, 2] has std 1, so with eps = 1e-4 the advantages are ±1 / 1.0001."""
    out = group_advantages(REWARDS, 3)
    assert_close(out[:3], torch.tensor([-1 / 1.0001, 0.0, 1 / 1.0001]))


def test_scale_group_matches_trl_two_sample_group() -> None:
    """TRL: rewards [0, 1], std (unbiased) = 1/√2 = 0.70711 -> A = ±0.5 / (0.70711 + 1e-4)."""
    out = group_advantages(torch.tensor([0.0, 1.0]), 2)
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    assert_close(out, torch.tensor([-a, a]))


def test_scale_batch_divides_by_batch_std() -> None:
    expected = CENTRED / math.sqrt(4.25)
    assert_close(group_advantages(REWARDS, 3, scale="batch", eps=0.0), expected)


def test_zero_std_groups() -> None:
    assert_close(zero_std_groups(REWARDS, 3), torch.tensor([False, False, True]))


def test_constant_group_is_exactly_zero_even_with_rounding() -> None:
    """mean([0.1, 0.1, 0.1]) != 0.1 in float32; the group must still get exact zeros."""
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.0, 1.0, 0.3])
    for scale in ("group", "batch", "none"):
        out = group_advantages(rewards, 3, scale=scale, eps=0.0)
        assert torch.equal(out[:3], torch.zeros(3)), scale
        assert torch.isfinite(out).all()


def test_output_detached_and_input_unchanged() -> None:
    rewards = REWARDS.clone().requires_grad_(True)
    out = group_advantages(rewards, 3)
    assert not out.requires_grad
    assert torch.equal(rewards.detach(), REWARDS)


def test_group_size_one_batch_and_none_give_zeros() -> None:
    """With one completion per prompt, r - mean_group(r) = 0 for every sample."""
    rewards = torch.tensor([0.0, 1.0, 0.5])
    assert torch.equal(group_advantages(rewards, 1, scale="batch"), torch.zeros(3))
    assert torch.equal(group_advantages(rewards, 1, scale="none"), torch.zeros(3))
    assert zero_std_groups(rewards, 1).all()


def test_group_size_one_with_group_scale_raises() -> None:
    with pytest.raises(ValueError, match=r"group_size >= 2.*Got group_size=1"):
        group_advantages(torch.tensor([0.0, 1.0]), 1, scale="group")


@pytest.mark.parametrize(
    ("rewards", "group_size", "kwargs", "match"),
    [
        (torch.zeros(5), 2, {}, r"multiple of `group_size`. Got 5 rewards and group_size=2"),
        (torch.zeros(4), 0, {}, r"`group_size` must be >= 1. Got 0"),
        (torch.zeros(2, 2), 2, {}, r"must be 1-D.*Got shape \(2, 2\)"),
        (torch.zeros(4), 2, {"scale": "rank"}, r"`scale` must be one of.*Got 'rank'"),
        (torch.zeros(4), 2, {"eps": -1.0}, r"`eps` must be >= 0. Got -1.0"),
        (torch.zeros(1), 1, {"scale": "batch"}, r"at least 2 rewards.*Got 1"),
    ],
)
def test_invalid_arguments_raise(
    rewards: torch.Tensor, group_size: int, kwargs: dict, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards, group_size, **kwargs)


def test_zero_std_groups_validates() -> None:
    with pytest.raises(ValueError, match="multiple of `group_size`"):
        zero_std_groups(torch.zeros(3), 2)
