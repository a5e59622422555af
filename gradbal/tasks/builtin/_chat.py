"""What the chat tasks share: the answer instruction, the format-reward check and the row."""

from __future__ import annotations

from typing import Any

#: Appended to every chat prompt (a 135M instruct model follows it about half the time, so
#: answers are also extracted from sentences, see ``extract_answer``).
ANSWER_INSTRUCTION = "Reply with just the final number, nothing else."


def check_format_reward(cls: str, name: str, format_reward: float) -> None:
    if not 0.0 <= format_reward < 1.0:
        raise ValueError(
            f"{cls}({name!r}): format_reward must be in [0, 1), below the reward of a correct "
            f"answer. Got {format_reward!r}."
        )


def chat_row(question: str, answer: int) -> dict[str, Any]:
    return {"prompt": f"{question} {ANSWER_INSTRUCTION}", "answer": str(answer)}
