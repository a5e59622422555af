"""ChatAddition: "What is 23 + 58? Reply with just the final number, nothing else." -> ``81``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from gradbal.tasks.builtin._chat import chat_row, check_format_reward
from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.rewards import MathAnswerMatch

__all__ = ["ChatAddition"]


@dataclass(eq=False)
class ChatAddition(GeneratedTask):
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

    name: str = "chat_addition"
    min_value: int = 1
    max_value: int = 60
    format_reward: float = field(default=0.1, repr=False)
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_format_reward("ChatAddition", self.name, self.format_reward)
        check_range(
            "ChatAddition", "min_value", self.min_value, "max_value", self.max_value, floor=0
        )

    def _reward(self) -> MathAnswerMatch:
        return MathAnswerMatch(format_reward=self.format_reward)

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        a = rng.randint(self.min_value, self.max_value)
        b = rng.randint(self.min_value, self.max_value)
        return chat_row(f"What is {a} + {b}?", a + b)
