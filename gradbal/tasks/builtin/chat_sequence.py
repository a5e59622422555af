"""ChatSequence: "What number comes after 12 in the sequence 4, 6, 8, 10, 12? ..." -> ``14``."""

from __future__ import annotations

import random
from typing import Any

from gradbal.tasks.builtin._chat import chat_row, check_chat, load_chat_task
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.task import Task

__all__ = ["ChatSequence"]


class ChatSequence:
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

    def __init__(
        self,
        name: str = "chat_sequence",
        length: int = 5,
        max_start: int = 20,
        min_step: int = 1,
        max_step: int = 3,
        format_reward: float = 0.1,
        n_train: int = 5000,
        n_val: int = 200,
        seed: int = 0,
    ) -> None:
        check_chat("ChatSequence", name, n_train, n_val, format_reward)
        check_range("ChatSequence", "min_step", min_step, "max_step", max_step, floor=1)
        if length < 2 or max_start < 0:
            raise ValueError(
                f"ChatSequence({name!r}): need length >= 2 and max_start >= 0. "
                f"Got length={length!r}, max_start={max_start!r}."
            )
        self.name = name
        self.length = length
        self.max_start = max_start
        self.min_step = min_step
        self.max_step = max_step
        self.format_reward = format_reward
        self.n_train = n_train
        self.n_val = n_val
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"ChatSequence(name={self.name!r}, length={self.length}, "
            f"min_step={self.min_step}, max_step={self.max_step}, n_train={self.n_train}, "
            f"n_val={self.n_val}, seed={self.seed})"
        )

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        start = rng.randint(0, self.max_start)
        step = rng.randint(self.min_step, self.max_step)
        values = [start + i * step for i in range(self.length)]
        terms = ", ".join(map(str, values))
        question = f"What number comes after {values[-1]} in the sequence {terms}?"
        return chat_row(question, start + self.length * step)

    def load(self) -> Task:
        """Generate the splits (columns ``prompt`` and ``answer``)."""
        return load_chat_task(self, self._sample, salt="ChatSequence")
