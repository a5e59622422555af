"""Countdown-specific tests: every generated solution is valid and the knobs are honoured."""

from __future__ import annotations

import re
from collections import Counter

from gradbal.tasks import Countdown, evaluate_expression


def test_generated_solutions_are_valid() -> None:
    task = Countdown(n_train=2000, n_val=200).load()
    for split in (task.train, task.validation):
        for row in split:
            evaluation = evaluate_expression(row["answer"])
            assert evaluation is not None, row
            assert evaluation.value == row["target"], row
            assert not Counter(evaluation.numbers) - Counter(row["numbers"]), row
            assert 2 <= len(evaluation.numbers) <= 3
            assert 1 <= row["target"] <= 100
            assert len(row["numbers"]) == 3 and all(1 <= n <= 9 for n in row["numbers"])
            assert row["prompt"] == f"cd {' '.join(map(str, row['numbers']))}>{row['target']}="


def test_parentheses_appear_only_where_needed() -> None:
    answers = Countdown(n_train=2000, n_val=10).load().train["answer"]
    assert any("(" in a for a in answers)
    for answer in answers:
        assert not re.search(r"\(\d+\)", answer), answer  # never around a single number
        # never around the whole expression: the first "(" closes before the end
        if answer.startswith("("):
            depth = 0
            for i, char in enumerate(answer):
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth == 0:
                    assert i < len(answer) - 1, answer
                    break


def test_knobs() -> None:
    task = Countdown(
        num_numbers=5,
        max_number=20,
        min_used=4,
        max_target=500,
        operators="+*",
        n_train=300,
        n_val=30,
    ).load()
    for row in task.train:
        evaluation = evaluate_expression(row["answer"])
        assert evaluation is not None
        assert len(row["numbers"]) == 5 and max(row["numbers"]) <= 20
        assert len(evaluation.numbers) >= 4 and row["target"] <= 500
        assert set(row["answer"]) <= set("0123456789+*()")


def test_format_reward_is_passed_to_the_reward() -> None:
    reward = Countdown(format_reward=0.3).reward
    assert reward(["cd 3 5 7>22="], ["3+5"], numbers=[[3, 5, 7]], target=[22]) == [0.3]
