"""ChatComparison: "Which number is larger, 37 or 52? ..." -> ``52``."""

from __future__ import annotations

import random
from typing import Any

from gradbal.tasks.builtin._chat import chat_row, check_chat, load_chat_task
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.task import Task

__all__ = ["ChatComparison"]


class ChatComparison:
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

    def __init__(
        self,
        name: str = "chat_comparison",
        min_value: int = 1,
        max_value: int = 99,
        ask_smaller: bool = True,
        format_reward: float = 0.1,
        n_train: int = 5000,
        n_val: int = 200,
        seed: int = 0,
    ) -> None:
        check_chat("ChatComparison", name, n_train, n_val, format_reward)
        check_range("ChatComparison", "min_value", min_value, "max_value", max_value - 1, floor=0)
        self.name = name
        self.min_value = min_value
        self.max_value = max_value
        self.ask_smaller = ask_smaller
        self.format_reward = format_reward
        self.n_train = n_train
        self.n_val = n_val
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"ChatComparison(name={self.name!r}, min_value={self.min_value}, "
            f"max_value={self.max_value}, ask_smaller={self.ask_smaller}, "
            f"n_train={self.n_train}, n_val={self.n_val}, seed={self.seed})"
        )

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        a, b = rng.sample(range(self.min_value, self.max_value + 1), 2)
        smaller = self.ask_smaller and rng.random() < 0.5
        word, answer = ("smaller", min(a, b)) if smaller else ("larger", max(a, b))
        return chat_row(f"Which number is {word}, {a} or {b}?", answer)

    def load(self) -> Task:
        """Generate the splits (columns ``prompt`` and ``answer``)."""
        return load_chat_task(self, self._sample, salt="ChatComparison")
