"""ChatAddition: "What is 23 + 58? Reply with just the final number, nothing else." -> ``81``."""

from __future__ import annotations

import random
from typing import Any

from gradbal.tasks.builtin._chat import chat_row, check_chat, load_chat_task
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.task import Task

__all__ = ["ChatAddition"]


class ChatAddition:
    """Add two integers, asked as a chat question; the easiest chat task.

    Prompt ``What is {a} + {b}? Reply with just the final number, nothing else.``, answer ``str(a + b)``;
    ``a`` and ``b`` are uniform in ``[min_value, max_value]``. Reward:
    :class:`~gradbal.tasks.MathAnswerMatch` (the reply's final answer, see
    :func:`~gradbal.tasks.extract_answer`).

    Args:
        name: Task name.
        min_value: Smallest operand (difficulty knob).
        max_value: Largest operand (difficulty knob).
        format_reward: Partial credit for a wrong answer in the asked-for form (a bare number).
        n_train: Number of train rows (prompts may repeat; none is a validation prompt).
        n_val: Number of validation rows (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Example::

        >>> task = ChatAddition(n_train=3, n_val=2).load()
        >>> task.validation[0]["prompt"], task.validation[0]["answer"]
        ('What is 29 + 4? Reply with just the final number, nothing else.', '33')
        >>> task.reward(["q"] * 2, ["29 + 4 = 33", "#### 32"], answer=["33"] * 2)
        [1.0, 0.1]
    """

    def __init__(
        self,
        name: str = "chat_addition",
        min_value: int = 1,
        max_value: int = 60,
        format_reward: float = 0.1,
        n_train: int = 5000,
        n_val: int = 200,
        seed: int = 0,
    ) -> None:
        check_chat("ChatAddition", name, n_train, n_val, format_reward)
        check_range("ChatAddition", "min_value", min_value, "max_value", max_value, floor=0)
        self.name = name
        self.min_value = min_value
        self.max_value = max_value
        self.format_reward = format_reward
        self.n_train = n_train
        self.n_val = n_val
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"ChatAddition(name={self.name!r}, min_value={self.min_value}, "
            f"max_value={self.max_value}, n_train={self.n_train}, n_val={self.n_val}, "
            f"seed={self.seed})"
        )

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        a = rng.randint(self.min_value, self.max_value)
        b = rng.randint(self.min_value, self.max_value)
        return chat_row(f"What is {a} + {b}?", a + b)

    def load(self) -> Task:
        """Generate the splits (columns ``prompt`` and ``answer``)."""
        return load_chat_task(self, self._sample, salt="ChatAddition")
