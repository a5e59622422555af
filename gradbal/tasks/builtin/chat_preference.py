"""ChatPreference: a chat task's prompts with the right number (chosen) over a near miss."""

from __future__ import annotations

import random

from gradbal.tasks.builtin._splits import check_common
from gradbal.tasks.builtin.chat_addition import ChatAddition
from gradbal.tasks.builtin.chat_comparison import ChatComparison
from gradbal.tasks.builtin.chat_multiplication import ChatMultiplication
from gradbal.tasks.builtin.chat_sequence import ChatSequence
from gradbal.tasks.builtin.chat_word_problem import ChatWordProblem
from gradbal.tasks.preference import preference_task
from gradbal.tasks.rewards import MathAnswerMatch
from gradbal.tasks.task import Task

__all__ = ["ChatPreference"]

ChatTask = ChatAddition | ChatComparison | ChatMultiplication | ChatSequence | ChatWordProblem

_OFFSETS = (-10, -2, -1, 1, 2, 10)


class ChatPreference:
    """Preference pairs for DPO from a chat task: ``chosen`` is the answer, ``rejected`` a near miss.

    Every row of ``source`` (a chat task, with its own sizes and seed) becomes a pair with the
    same prompt: ``chosen`` is the reference number, ``rejected`` that number plus an offset
    drawn from ``{-10, -2, -1, 1, 2, 10}`` (never negative). Both are bare numbers, as the
    prompts ask. Reward (for generated replies): :class:`~gradbal.tasks.MathAnswerMatch` against
    ``chosen``.

    Args:
        source: The chat task whose prompts and answers to use (``class_path`` in YAML).
        name: Task name (default: ``pref_`` + the source's name).
        seed: Seed of the near-miss draws.

    Example::

        >>> task = ChatPreference(ChatAddition(n_train=2, n_val=1)).load()
        >>> row = task.validation[0]
        >>> task.name, row["chosen"], row["rejected"]
        ('pref_chat_addition', '33', '32')
    """

    def __init__(self, source: ChatTask, name: str | None = None, seed: int = 0) -> None:
        self.source = source
        self.name = name or f"pref_{source.name}"
        self.seed = seed
        check_common("ChatPreference", self.name, 1, 1)

    def __repr__(self) -> str:
        return f"ChatPreference(source={self.source!r}, name={self.name!r}, seed={self.seed})"

    def load(self) -> Task:
        """Pairs for both splits (columns ``prompt``, ``chosen``, ``rejected``, ``answer``)."""
        task = self.source.load()
        splits = []
        for split_name, split in (("train", task.train), ("validation", task.validation)):
            rng = random.Random(f"ChatPreference:{self.seed}:{split_name}")
            rows = []
            for row in split:
                answer = int(row["answer"])
                rejected = answer + rng.choice([d for d in _OFFSETS if answer + d >= 0])
                rows.append(
                    {"prompt": row["prompt"], "chosen": str(answer), "rejected": str(rejected)}
                )
            splits.append(rows)
        return preference_task(self.name, splits[0], splits[1], MathAnswerMatch("chosen"))
