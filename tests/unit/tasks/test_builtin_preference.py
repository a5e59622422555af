"""Tests for the built-in preference tasks: seeded, disjoint splits, well-formed pairs."""

from __future__ import annotations

import pytest

from gradbal.tasks import (
    PreferenceArithmetic,
    PreferenceFormat,
    PreferenceSort,
    check_preference_task,
    score,
)

SOURCES = [
    PreferenceArithmetic(n_train=200, n_val=50),
    PreferenceArithmetic(min_digits=3, max_digits=3, n_train=50, n_val=20, seed=1),
    PreferenceFormat(n_train=200, n_val=50),
    PreferenceSort(n_train=200, n_val=50),
]


@pytest.mark.parametrize("source", SOURCES, ids=repr)
def test_pairs_are_distinct_and_splits_disjoint(source: object) -> None:
    task = source.load()  # type: ignore[attr-defined]
    check_preference_task(task, "test")
    for split in (task.train, task.validation):
        assert all(c != r for c, r in zip(split["chosen"], split["rejected"], strict=True))
        assert split["answer"] == split["chosen"]
    assert not set(task.train["prompt"]) & set(task.validation["prompt"])
    assert task.validation.to_dict() == source.load().validation.to_dict()  # type: ignore[attr-defined]
    row = task.validation[0]
    columns = [{k: v for k, v in row.items() if k not in ("prompt", "answer")}] * 2
    assert score(task, [row["prompt"]] * 2, [row["chosen"], row["rejected"]], columns) == [1, 0]


def test_arithmetic_rejects_are_wrong_sums_near_the_right_one() -> None:
    task = PreferenceArithmetic(n_train=300, n_val=10).load()
    for row in task.train:
        a, b = (int(x) for x in row["prompt"][4:-1].split("+"))
        assert int(row["chosen"]) == a + b != int(row["rejected"]) >= 0


def test_sort_reject_is_one_adjacent_swap() -> None:
    task = PreferenceSort(n_train=300, n_val=10).load()
    for row in task.train:
        c, r = row["chosen"], row["rejected"]
        assert sorted(r) == list(c)
        diff = [i for i in range(len(c)) if c[i] != r[i]]
        assert len(diff) == 2 and diff[1] == diff[0] + 1


def test_format_reject_is_malformed() -> None:
    task = PreferenceFormat(n_train=300, n_val=10).load()
    for row in task.train:
        key, value = row["prompt"][4:-1].split(" ")
        assert row["chosen"] == "{" + key + ":" + value + "}"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least two distinct"):
        PreferenceSort(alphabet="aa")
    with pytest.raises(ValueError, match="max_value"):
        PreferenceFormat(max_value=-1)
    with pytest.raises(ValueError, match="min_digits"):
        PreferenceArithmetic(min_digits=3, max_digits=2)
