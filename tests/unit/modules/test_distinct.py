"""Distinct completions per group (train/distinct_frac) and the identical-groups warning."""

from __future__ import annotations

import warnings

import pytest
import torch

from gradbal.modules._distinct import IdenticalGroupsWatch, distinct_fraction


def test_distinct_fraction_hand_computed_groups() -> None:
    ids = torch.tensor(
        [
            [1, 2, 3],
            [1, 2, 3],
            [1, 2, 3],
            [1, 2, 3],  # one distinct of 4
            [1, 2, 3],
            [1, 2, 4],
            [1, 2, 3],
            [9, 9, 9],  # three distinct
            [4, 0, 0],
            [5, 0, 0],
            [6, 0, 0],
            [7, 0, 0],  # all four differ
        ]
    )
    mask = torch.ones_like(ids, dtype=torch.bool)
    assert distinct_fraction(ids, mask, 4).tolist() == [0.25, 0.75, 1.0]


def test_tokens_after_the_counted_ones_are_ignored() -> None:
    # Same text up to eos (id 0), different padding junk after it: identical completions.
    ids = torch.tensor([[3, 0, 7], [3, 0, 8], [3, 5, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 1]]).bool()
    assert distinct_fraction(ids, mask, 3).tolist() == pytest.approx([2 / 3])


def _steps(watch: IdenticalGroupsWatch, identical: list[bool], task_ids: list[int]) -> list[str]:
    distinct = torch.tensor([0.5 if same else 1.0 for same in identical])
    return watch.update(distinct, torch.tensor(task_ids), group_size=2)


def test_watch_warns_after_patience_steps_once_per_run_per_task() -> None:
    watch = IdenticalGroupsWatch(["add", "rev"], patience=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _steps(watch, [True, False], [0, 1]) == []
        assert _steps(watch, [True, True], [0, 0]) == []  # one varied group would reset
        assert _steps(watch, [False], [1]) == []  # add absent: its streak stays at 2
        assert _steps(watch, [True], [0]) == ["add"]
        assert _steps(watch, [True], [0]) == []  # no second warning in the same run
        assert _steps(watch, [True, False], [0, 0]) == []  # a varied group resets
        assert watch.streaks == {"add": 0, "rev": 0}
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "Task 'add'" in message and "3 consecutive steps" in message
    assert issubclass(caught[0].category, RuntimeWarning)


def test_watch_patience_none_never_warns_and_zero_is_refused() -> None:
    watch = IdenticalGroupsWatch(["add"], patience=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(50):
            _steps(watch, [True], [0])
    with pytest.raises(ValueError, match="identical_groups_patience must be >= 1"):
        IdenticalGroupsWatch(["add"], patience=0)
