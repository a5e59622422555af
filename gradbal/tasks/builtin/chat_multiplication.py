"""ChatMultiplication: "What is 7 times 8? Reply with just the final number, nothing else." -> ``56``."""

from __future__ import annotations

import random
from typing import Any

from gradbal.tasks.builtin._chat import chat_row, check_chat, load_chat_task
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.task import Task

__all__ = ["ChatMultiplication"]


class ChatMultiplication:
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

    def __init__(
        self,
        name: str = "chat_multiplication",
        min_value: int = 3,
        max_value: int = 15,
        format_reward: float = 0.1,
        n_train: int = 5000,
        n_val: int = 100,
        seed: int = 0,
    ) -> None:
        check_chat("ChatMultiplication", name, n_train, n_val, format_reward)
        check_range("ChatMultiplication", "min_value", min_value, "max_value", max_value, floor=0)
        self.name = name
        self.min_value = min_value
        self.max_value = max_value
        self.format_reward = format_reward
        self.n_train = n_train
        self.n_val = n_val
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"ChatMultiplication(name={self.name!r}, min_value={self.min_value}, "
            f"max_value={self.max_value}, n_train={self.n_train}, n_val={self.n_val}, "
            f"seed={self.seed})"
        )

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        a = rng.randint(self.min_value, self.max_value)
        b = rng.randint(self.min_value, self.max_value)
        return chat_row(f"What is {a} times {b}?", a * b)

    def load(self) -> Task:
        """Generate the splits (columns ``prompt`` and ``answer``)."""
        return load_chat_task(self, self._sample, salt="ChatMultiplication")
