"""What the chat tasks share: the answer instruction, argument checks and the task build."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from gradbal.tasks.builtin._splits import check_common, generate_splits
from gradbal.tasks.rewards import MathAnswerMatch
from gradbal.tasks.task import Task

#: Appended to every chat prompt (a 135M instruct model follows it about half the time, so
#: answers are also extracted from sentences, see ``extract_answer``).
ANSWER_INSTRUCTION = "Reply with just the final number, nothing else."


def check_chat(cls: str, name: str, n_train: int, n_val: int, format_reward: float) -> None:
    check_common(cls, name, n_train, n_val)
    if not 0.0 <= format_reward < 1.0:
        raise ValueError(
            f"{cls}({name!r}): format_reward must be in [0, 1), below the reward of a correct "
            f"answer. Got {format_reward!r}."
        )


def chat_row(question: str, answer: int) -> dict[str, Any]:
    return {"prompt": f"{question} {ANSWER_INSTRUCTION}", "answer": str(answer)}


def load_chat_task(
    source: Any, sample: Callable[[random.Random], dict[str, Any]], salt: str
) -> Task:
    """Generate the splits of a chat task and attach :class:`MathAnswerMatch`."""
    train, validation = generate_splits(
        source.name,
        sample,
        n_train=source.n_train,
        n_val=source.n_val,
        seed=source.seed,
        salt=salt,
    )
    reward = MathAnswerMatch(format_reward=source.format_reward)
    return Task(source.name, train=train, validation=validation, reward=reward)
