"""half_split_segments, group_segments, count_groups_per_segment."""

from __future__ import annotations

import pytest
import torch

from gradbal.gradstats import count_groups_per_segment, group_segments, half_split_segments


def _split(seed: int) -> torch.Tensor:
    task_ids = torch.tensor([0] * 10 + [1] * 6 + [2] * 2)
    group_ids = torch.arange(18) // 2  # 5 groups of task 0, 3 of task 1, 1 of task 2
    return half_split_segments(
        task_ids, group_ids, 3, generator=torch.Generator().manual_seed(seed)
    )


def test_groups_stay_whole_and_halves_are_balanced() -> None:
    segments = _split(0)
    assert torch.equal(segments[0::2], segments[1::2])  # both rows of every group together
    counts = count_groups_per_segment(segments, torch.arange(18) // 2, 6)
    assert counts.tolist() == [2, 3, 1, 2, 0, 1]  # n // 2 in half A, the rest in half B


def test_split_is_seeded_and_random() -> None:
    assert torch.equal(_split(1), _split(1))
    assert any(not torch.equal(_split(0), _split(s)) for s in range(1, 5))


def test_group_spanning_two_tasks_raises() -> None:
    with pytest.raises(ValueError, match="spans two tasks"):
        half_split_segments(torch.tensor([0, 1]), torch.tensor([3, 3]), 2, generator=None)
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        half_split_segments(torch.tensor([0, 2]), torch.tensor([3, 4]), 2, generator=None)


def test_group_segments_give_one_segment_per_group() -> None:
    segments, segment_tasks = group_segments(
        torch.tensor([1, 1, 0, 0]), torch.tensor([9, 9, 4, 2]), 2
    )
    assert segments.tolist() == [2, 2, 1, 0]
    assert segment_tasks.tolist() == [0, 0, 1]
