"""Tests for the reward classes."""

from __future__ import annotations

import random

import pytest

from gradbal.tasks import (
    CharSimilarity,
    CountdownReward,
    ExactMatch,
    NumericMatch,
    RewardFn,
)


@pytest.mark.parametrize(
    "reward", [ExactMatch(), NumericMatch(), CharSimilarity(), CountdownReward()], ids=repr
)
def test_rewards_satisfy_the_protocol_and_repr_round_trips(reward: RewardFn) -> None:
    import gradbal.tasks as tasks

    assert isinstance(reward, RewardFn)
    assert repr(eval(repr(reward), vars(tasks))) == repr(reward)


def test_exact_match_compares_first_line() -> None:
    reward = ExactMatch()
    completions = ["46", "46\n", " 46 \nmore", "46 apples", "4", "", "\n46"]
    assert reward(["p"] * 7, completions, answer=["46"] * 7) == [1, 1, 1, 0, 0, 0, 0]


def test_exact_match_options() -> None:
    assert ExactMatch(strip=False)(["p"] * 2, [" ab", "ab"], answer=["ab"] * 2) == [0.0, 1.0]
    assert ExactMatch()(["p"], ["AB"], answer=["ab"]) == [0.0]
    assert ExactMatch(case_sensitive=False)(["p"], ["AB"], answer=["ab"]) == [1.0]
    assert ExactMatch(answer_column="label")(["p"], ["x"], label=["x"], answer=["y"]) == [1.0]
    assert ExactMatch()(["p"], ["12"], answer=[12]) == [1.0]  # non-string answers compare as str


def test_missing_column_error_lists_columns() -> None:
    with pytest.raises(ValueError, match=r"reads the column 'label'.*\['answer', 'target'\]"):
        ExactMatch(answer_column="label")(["p"], ["x"], answer=["x"], target=[1])


def test_numeric_match() -> None:
    reward = NumericMatch()
    completions = ["46", "= 46.0 done", "1,046", "-46", "forty-six", "46e0", "1e999"]
    answers = ["46", "46", "1046", "-46", "46", "46", "1"]
    assert reward(["p"] * 7, completions, answer=answers) == [1, 1, 1, 1, 0, 1, 0]
    assert NumericMatch(tolerance=0.5)(["p"] * 2, ["3.4", "3.6"], answer=["3", "3"]) == [1, 0]


def test_numeric_match_errors() -> None:
    with pytest.raises(ValueError, match=r"tolerance must be >= 0\. Got -1"):
        NumericMatch(tolerance=-1)
    with pytest.raises(ValueError, match=r"the answer 'n/a' holds no number"):
        NumericMatch()(["p"], ["1"], answer=["n/a"])


def test_char_similarity_values() -> None:
    reward = CharSimilarity()
    completions = ["abcd", "abcd\nzz", "abcx", "abc", "abcde", "dcba", "", " abcd "]
    assert reward(["p"] * 8, completions, answer=["abcd"] * 8) == [
        1.0,
        1.0,
        0.75,
        0.75,
        0.8,
        0.0,
        0.0,
        1.0,
    ]
    assert reward(["p"], [""], answer=[""]) == [1.0]
    assert CharSimilarity(strip=False)(["p"], [" abcd"], answer=["abcd"]) == [0.0]


def test_char_similarity_is_in_unit_interval_and_one_only_when_equal() -> None:
    rng = random.Random(0)
    answers = ["".join(rng.choices("abc", k=rng.randint(0, 5))) for _ in range(500)]
    completions = ["".join(rng.choices("abc", k=rng.randint(0, 5))) for _ in range(500)]
    rewards = CharSimilarity()(["p"] * 500, completions, answer=answers)
    for reward, completion, answer in zip(rewards, completions, answers, strict=True):
        assert 0.0 <= reward <= 1.0
        assert (reward == 1.0) == (completion == answer)


def test_countdown_reward() -> None:
    reward = CountdownReward(format_reward=0.2)
    cases = [
        ("3*5+7", 1.0),  # correct
        ("(3*5+7)\n= 22", 1.0),  # text after the first newline is ignored
        ("7+3*5", 1.0),  # any order
        ("3+5+7", 0.2),  # well-formed, wrong value
        ("3*5", 0.2),  # not all numbers needed
        ("3*5+7+7", 0.0),  # 7 used twice but given once
        ("22", 0.0),  # 22 not given
        ("3*5+8", 0.0),  # 8 not given
        ("7/(5-5)", 0.0),  # division by zero
        ("3*5+7=22", 0.0),  # not an expression
        ("", 0.0),
        ("__import__('os')", 0.0),
    ]
    completions = [c for c, _ in cases]
    n = len(cases)
    got = reward(["cd 3 5 7>22="] * n, completions, numbers=[[3, 5, 7]] * n, target=[22] * n)
    assert got == [r for _, r in cases]


def test_countdown_reward_duplicates_and_exact_fractions() -> None:
    reward = CountdownReward()
    got = reward(
        ["p"] * 3,
        ["3*3+5", "7/2*2", "7/2*2"],
        numbers=[[3, 3, 5], [7, 2, 2], [7, 2]],
        target=[14, 7, 7],
    )
    assert got == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("format_reward", [-0.1, 1.0, 2.0])
def test_countdown_reward_rejects_bad_format_reward(format_reward: float) -> None:
    with pytest.raises(ValueError, match=r"format_reward must be in \[0, 1\)"):
        CountdownReward(format_reward=format_reward)
