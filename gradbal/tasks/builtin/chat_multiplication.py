"""ChatMultiplication: "What is 7 times 8? Reply with just the final number, nothing else." -> ``56``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from gradbal.tasks.builtin._chat import chat_row, check_format_reward
from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.rewards import MathAnswerMatch

__all__ = ["ChatMultiplication"]


@dataclass(eq=False)
class ChatMultiplication(GeneratedTask):
    """Multiply two small integers, asked as a chat question (times tables).

    Prompt ``What is {a} times {b}? Reply with just the final number, nothing else.``, answer
    ``str(a * b)``; ``a`` and ``b`` are uniform in ``[min_value, max_value]``. Reward:
    :class:`~gradbal.tasks.MathAnswerMatch`.

    Args:
        name: Task name.
        min_value: Smallest factor (difficulty knob).
        max_value: Largest factor (difficulty knob).
        format_reward: Partial credit for a wrong answer in the asked-for form (a bare number).
        n_train: Number of train rows (prompts may repeat; none is a validation prompt).
        n_val: Number of validation rows (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Example::

        >>> task = ChatMultiplication(n_train=3, n_val=2).load()
        >>> task.validation[0]["prompt"], task.validation[0]["answer"]
        ('What is 12 times 5? Reply with just the final number, nothing else.', '60')
    """

    name: str = "chat_multiplication"
    min_value: int = 3
    max_value: int = 15
    format_reward: float = field(default=0.1, repr=False)
    n_train: int = 5000
    n_val: int = 100
    seed: int = 0

    def _check(self) -> None:
        check_format_reward("ChatMultiplication", self.name, self.format_reward)
        check_range(
            "ChatMultiplication", "min_value", self.min_value, "max_value", self.max_value, floor=0
        )

    def _reward(self) -> MathAnswerMatch:
        return MathAnswerMatch(format_reward=self.format_reward)

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        a = rng.randint(self.min_value, self.max_value)
        b = rng.randint(self.min_value, self.max_value)
        return chat_row(f"What is {a} times {b}?", a * b)
