"""ChatSequence: "What number comes after 12 in the sequence 4, 6, 8, 10, 12? ..." -> ``14``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from gradbal.tasks.builtin._chat import chat_row, check_format_reward
from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.rewards import MathAnswerMatch

__all__ = ["ChatSequence"]


@dataclass(eq=False)
class ChatSequence(GeneratedTask):
    """Continue an arithmetic progression, asked as a chat question.

    Prompt ``What number comes next: {x0}, {x1}, ..., {xk}? Reply with just the final number, nothing else.``
    with ``length`` shown terms, a start uniform in ``[0, max_start]`` and a step uniform in
    ``[min_step, max_step]``; answer: the next term. Reward:
    :class:`~gradbal.tasks.MathAnswerMatch`.

    Args:
        name: Task name.
        length: Number of terms shown (>= 2).
        max_start: Largest first term.
        min_step: Smallest step (difficulty knob).
        max_step: Largest step (difficulty knob).
        format_reward: Partial credit for a wrong answer in the asked-for form (a bare number).
        n_train: Number of train rows (prompts may repeat; none is a validation prompt).
        n_val: Number of validation rows (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Example::

        >>> task = ChatSequence(n_train=3, n_val=2).load()
        >>> task.validation[0]["prompt"], task.validation[0]["answer"]
        ('What number comes after 23 in the sequence 19, 20, 21, 22, 23? Reply with just the final number, nothing else.', '24')
    """

    name: str = "chat_sequence"
    length: int = 5
    max_start: int = field(default=20, repr=False)
    min_step: int = 1
    max_step: int = 3
    format_reward: float = field(default=0.1, repr=False)
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_format_reward("ChatSequence", self.name, self.format_reward)
        check_range("ChatSequence", "min_step", self.min_step, "max_step", self.max_step, floor=1)
        if self.length < 2 or self.max_start < 0:
            raise ValueError(
                f"ChatSequence({self.name!r}): need length >= 2 and max_start >= 0. "
                f"Got length={self.length!r}, max_start={self.max_start!r}."
            )

    def _reward(self) -> MathAnswerMatch:
        return MathAnswerMatch(format_reward=self.format_reward)

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        start = rng.randint(0, self.max_start)
        step = rng.randint(self.min_step, self.max_step)
        values = [start + i * step for i in range(self.length)]
        terms = ", ".join(map(str, values))
        question = f"What number comes after {values[-1]} in the sequence {terms}?"
        return chat_row(question, start + self.length * step)
