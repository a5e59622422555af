"""WeightedTaskSampler: frequencies, passes over rows, validation, exact state round trip."""

from __future__ import annotations

import math

import pytest
import torch

from gradbal.datamodules import WeightedTaskSampler, validate_sampling_probs


def test_task_frequencies_match_probabilities() -> None:
    """20,000 draws with p = (0.5, 0.3, 0.2): each count is within 4 binomial sd of n*p.

    (sd for p=0.5 is sqrt(20000*0.25) = 70.7, so the band is +-283 around 10,000.)
    """
    probs = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    sampler = WeightedTaskSampler([100, 100, 100], probs, seed=123)
    n = 20_000
    counts = torch.bincount(torch.tensor([t for t, _ in sampler.draw(n)]), minlength=3).double()
    sd = torch.sqrt(n * probs * (1 - probs))
    assert ((counts - n * probs).abs() <= 4 * sd).all(), counts
    # and a wrong hypothesis is rejected: the test can fail
    uniform = torch.full((3,), 1 / 3, dtype=torch.float64)
    assert not ((counts - n * uniform).abs() <= 4 * torch.sqrt(n * uniform * (1 - uniform))).all()


def test_zero_probability_task_is_never_drawn() -> None:
    sampler = WeightedTaskSampler([5, 5], [1.0, 0.0], seed=0)
    assert {t for t, _ in sampler.draw(500)} == {0}


def test_every_row_seen_once_per_pass() -> None:
    sampler = WeightedTaskSampler([7], [1.0], seed=0)
    first = [r for _, r in sampler.draw(7)]
    second = [r for _, r in sampler.draw(7)]
    assert sorted(first) == list(range(7)) and sorted(second) == list(range(7))
    assert first != second  # a fresh shuffle each pass


def test_state_round_trip_continues_the_same_stream() -> None:
    a = WeightedTaskSampler([13, 29, 5], [0.2, 0.5, 0.3], seed=7)
    a.draw(40)
    state = a.state_dict()
    expected = a.draw(100)
    b = WeightedTaskSampler([13, 29, 5], [1, 1, 1], seed=999)
    b.load_state_dict(state)
    assert b.draw(100) == expected
    assert torch.allclose(b.probs, a.probs)


def test_restore_with_other_task_sizes_is_refused() -> None:
    state = WeightedTaskSampler([3, 4], [1, 1]).state_dict()
    with pytest.raises(ValueError, match=r"task sizes \[3, 4\].*\[3, 5\]"):
        WeightedTaskSampler([3, 5], [1, 1]).load_state_dict(state)


@pytest.mark.parametrize(
    ("probs", "match"),
    [
        ([0.5, -0.1, 0.6], "non-negative"),
        ([0.5, math.nan, 0.5], "finite"),
        ([0.5, math.inf, 0.5], "finite"),
        ([0.0, 0.0, 0.0], "positive sum"),
        ([0.5, 0.5], r"one value per task: 3 tasks"),
    ],
)
def test_bad_probabilities_are_rejected_with_the_value(probs: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_sampling_probs(probs, ["a", "b", "c"])


def test_probabilities_are_normalised() -> None:
    out = validate_sampling_probs([2.0, 6.0], ["a", "b"])
    torch.testing.assert_close(out, torch.tensor([0.25, 0.75], dtype=torch.float64))


# ---- measured-step coverage: at least m of each listed task per slice ------------------------


def test_min_per_task_tops_up_every_slice() -> None:
    sampler = WeightedTaskSampler([20, 20, 20], [0.96, 0.02, 0.02], seed=3)
    for _ in range(50):
        tasks = [t for t, _ in sampler.draw(16, min_per_task={0: 2, 1: 2, 2: 2}, slices=2)]
        for part in (tasks[:8], tasks[8:]):
            assert min(part.count(t) for t in range(3)) >= 2, part
    # without it the rare tasks almost never reach 2 in a slice of 8 (~1% per task)
    plain = [[t for t, _ in sampler.draw(8)] for _ in range(50)]
    assert sum(min(p.count(1), p.count(2)) >= 2 for p in plain) <= 2


def test_min_per_task_changes_nothing_when_the_draw_already_has_it() -> None:
    a = WeightedTaskSampler([9, 9], [0.5, 0.5], seed=1)
    b = WeightedTaskSampler([9, 9], [0.5, 0.5], seed=1)
    for _ in range(20):
        plain = a.draw(8)
        counts = [[t for t, _ in plain].count(k) for k in (0, 1)]
        if min(counts) >= 1:
            assert b.draw(8, min_per_task={0: 1, 1: 1}) == plain
        else:  # the top-up moved one slot (and drew a random donor): resynchronise
            b.load_state_dict(a.state_dict())


def test_min_per_task_takes_slots_only_from_tasks_above_their_minimum() -> None:
    sampler = WeightedTaskSampler([50, 50, 50], [0.5, 0.5, 0.0], seed=0)
    for _ in range(30):
        tasks = [t for t, _ in sampler.draw(6, min_per_task={1: 2, 2: 3})]
        assert tasks.count(1) >= 2 and tasks.count(2) == 3  # task 2 only via the top-up


def test_min_per_task_state_round_trip_continues_the_same_stream() -> None:
    a = WeightedTaskSampler([13, 29, 5], [0.9, 0.05, 0.05], seed=7)
    a.draw(12, min_per_task={1: 2, 2: 2}, slices=2)
    state = a.state_dict()
    expected = [a.draw(12, min_per_task={1: 2, 2: 2}, slices=2) for _ in range(5)]
    b = WeightedTaskSampler([13, 29, 5], [1, 1, 1], seed=999)
    b.load_state_dict(state)
    assert [b.draw(12, min_per_task={1: 2, 2: 2}, slices=2) for _ in range(5)] == expected


@pytest.mark.parametrize(
    ("n", "minimum", "slices"), [(8, {0: 2, 1: 2}, 3), (8, {0: 3, 1: 2}, 2), (4, {0: 5}, 1)]
)
def test_min_per_task_that_cannot_fit_is_refused(
    n: int, minimum: dict[int, int], slices: int
) -> None:
    with pytest.raises(ValueError, match="slices must be equal and hold the minimums"):
        WeightedTaskSampler([5, 5], [1, 1]).draw(n, min_per_task=minimum, slices=slices)
