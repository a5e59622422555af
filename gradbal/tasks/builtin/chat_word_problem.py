"""ChatWordProblem: "Mia has 12 apples. She buys 5 more. How many apples does Mia have now?"."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from gradbal.tasks.builtin._chat import chat_row, check_format_reward
from gradbal.tasks.builtin._generated import GeneratedTask
from gradbal.tasks.builtin._splits import check_range
from gradbal.tasks.rewards import MathAnswerMatch

__all__ = ["ChatWordProblem"]

_PEOPLE = (("Mia", "She"), ("Tom", "He"), ("Ana", "She"), ("Sam", "He"), ("Lea", "She"))
_THINGS = ("apples", "books", "marbles", "pencils", "stickers", "cards")


@dataclass(eq=False)
class ChatWordProblem(GeneratedTask):
    """A one-step word problem (gain or loss of items), asked as a chat question.

    Prompt e.g. ``Tom has 12 marbles. He gives away 5 of them. How many marbles does Tom have
    now? Reply with just the final number, nothing else.``; the start count is uniform in
    ``[min_value, max_value]``, the change is at most that; half the problems add, half
    subtract (never below 0). Answer: the final count. Reward:
    :class:`~gradbal.tasks.MathAnswerMatch`.

    Args:
        name: Task name.
        min_value: Smallest starting count (difficulty knob).
        max_value: Largest starting count (difficulty knob).
        format_reward: Partial credit for a wrong answer in the asked-for form (a bare number).
        n_train: Number of train rows (prompts may repeat; none is a validation prompt).
        n_val: Number of validation rows (distinct prompts).
        seed: Seed; equal arguments give identical datasets.

    Example::

        >>> task = ChatWordProblem(n_train=3, n_val=2).load()
        >>> task.validation[0]["answer"]
        '12'
        >>> task.validation[0]["prompt"].split("?")[0]
        'Sam has 19 cards. He gives away 7 of them. How many cards does Sam have now'
    """

    name: str = "chat_word_problem"
    min_value: int = 2
    max_value: int = 20
    format_reward: float = field(default=0.1, repr=False)
    n_train: int = 5000
    n_val: int = 200
    seed: int = 0

    def _check(self) -> None:
        check_format_reward("ChatWordProblem", self.name, self.format_reward)
        check_range(
            "ChatWordProblem", "min_value", self.min_value, "max_value", self.max_value, floor=1
        )

    def _reward(self) -> MathAnswerMatch:
        return MathAnswerMatch(format_reward=self.format_reward)

    def _sample(self, rng: random.Random) -> dict[str, Any]:
        person, pronoun = rng.choice(_PEOPLE)
        things = rng.choice(_THINGS)
        start = rng.randint(self.min_value, self.max_value)
        if rng.random() < 0.5:
            change = rng.randint(1, self.max_value)
            story, answer = f"{pronoun} buys {change} more.", start + change
        else:
            change = rng.randint(1, start)
            story, answer = f"{pronoun} gives away {change} of them.", start - change
        question = (
            f"{person} has {start} {things}. {story} How many {things} does {person} have now?"
        )
        return chat_row(question, answer)
