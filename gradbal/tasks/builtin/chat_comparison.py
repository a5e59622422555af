"""ChatComparison: "Which number is larger, 37 or 52? ..." -> ``52``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from gradbal.tasks.builtin._chat import chat_row, check_format_reward
from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.rewards import MathAnswerMatch

__all__ = ["ChatComparison"]


@dataclass(eq=False)
class ChatComparison(GeneratedTask):
    """Pick the larger (or smaller) of two different integers, asked as a chat question.

    Prompt ``Which number is larger, {a} or {b}? Reply with just the final number, nothing
    else.`` (``smaller`` in half the rows when ``ask_smaller``); ``a != b`` uniform in
    ``[min_value, max_value]``. Answer: the larger (smaller) one. Reward:
    :class:`~gradbal.tasks.MathAnswerMatch`. Guessing one of the two numbers is right half the
    time, so this is the easy task of the suite.

    Args:
        name: Task name.
        min_value: Smallest number.
        max_value: Largest number.
        ask_smaller: Also ask for the smaller number (in half the rows).
        format_reward: Partial credit for a wrong answer in the asked-for form (a bare number).
        n_train: Number of train rows (prompts may repeat; none is a validation prompt).
        n_val: Number of validation rows (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Example::

        >>> task = ChatComparison(n_train=3, n_val=2).load()
        >>> task.validation[0]["prompt"].split("?")[0], task.validation[0]["answer"]
        ('Which number is smaller, 13 or 45', '13')
    """

    name: str = "chat_comparison"
    min_value: int = 1
    max_value: int = 99
    ask_smaller: bool = True
    format_reward: float = field(default=0.1, repr=False)
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_format_reward("ChatComparison", self.name, self.format_reward)
        check_range(
            "ChatComparison", "min_value", self.min_value, "max_value", self.max_value - 1, floor=0
        )

    def _reward(self) -> MathAnswerMatch:
        return MathAnswerMatch(format_reward=self.format_reward)

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        a, b = rng.sample(range(self.min_value, self.max_value + 1), 2)
        smaller = self.ask_smaller and rng.random() < 0.5
        word, answer = ("smaller", min(a, b)) if smaller else ("larger", max(a, b))
        return chat_row(f"Which number is {word}, {a} or {b}?", answer)
