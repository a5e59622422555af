"""Preference rows: ``prompt`` / ``chosen`` / ``rejected``, plain text or conversational.

A preference task is an ordinary :class:`~gradbal.tasks.Task` whose splits also hold string
columns ``chosen`` and ``rejected``; ``answer`` is a copy of ``chosen`` (so the Task contract, the
DataModule and SFT work unchanged: SFT on a preference task trains on the chosen completions).
Batches then carry ``chosen`` and ``rejected`` in ``batch["columns"]``.

Conversational rows (TRL's format: lists of ``{"role", "content"}`` messages) keep their prompt
messages as JSON in a ``prompt_messages`` column; the module that owns the tokenizer applies its
chat template to them. ``prompt`` then holds a plain-text rendering, ``chosen`` and ``rejected``
the assistant replies' text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import datasets

from gradbal.tasks.rewards import ExactMatch
from gradbal.tasks.task import RewardFn, Task

__all__ = [
    "PREFERENCE_COLUMNS",
    "check_preference_task",
    "preference_row",
    "preference_task",
    "prompt_messages",
]

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
_MESSAGES = "prompt_messages"


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, Mapping) and "role" in m and "content" in m for m in value
    )


def _common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _render(messages: Sequence[Mapping[str, Any]]) -> str:
    """Plain text of prompt messages: a lone user message is its content, else role-tagged."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return str(messages[0]["content"])
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def _reply(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(str(m["content"]) for m in messages)


def preference_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise one raw preference row to gradbal's string columns.

    Accepted rows (TRL's preference formats): ``prompt``, ``chosen``, ``rejected`` as strings;
    the same as lists of messages; or ``chosen`` and ``rejected`` only (an *implicit* prompt:
    their longest common prefix, in characters for text, in whole messages for conversations).

    Returns:
        ``{"prompt", "chosen", "rejected", "answer"}`` strings, plus ``prompt_messages`` (JSON) for
        conversational rows. Other keys of ``row`` are not included.

    Raises:
        ValueError: If a column is missing or of the wrong kind, a conversational completion
            has no message after the prompt, or chosen equals rejected.

    Example::

        >>> preference_row({"prompt": "2+2=", "chosen": "4", "rejected": "5"})
        {'prompt': '2+2=', 'chosen': '4', 'rejected': '5', 'answer': '4'}
        >>> msgs = [{"role": "user", "content": "2+2?"}]
        >>> row = preference_row({
        ...     "chosen": msgs + [{"role": "assistant", "content": "4"}],
        ...     "rejected": msgs + [{"role": "assistant", "content": "5"}],
        ... })  # implicit prompt: the common first message
        >>> row["prompt"], row["chosen"], json.loads(row["prompt_messages"])[0]["content"]
        ('2+2?', '4', '2+2?')
    """
    missing = [c for c in ("chosen", "rejected") if c not in row]
    if missing:
        raise ValueError(
            f"A preference row needs 'chosen' and 'rejected' (and usually 'prompt'). Missing "
            f"{missing}; keys found: {sorted(row)}. Map your columns with column_mapping."
        )
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if _is_messages(chosen) and _is_messages(rejected):
        if prompt is None:
            n = _common_prefix(chosen, rejected)
            prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
        if not _is_messages(prompt) or not prompt or not chosen or not rejected:
            raise ValueError(
                "A conversational preference row needs a non-empty list of prompt messages and "
                "at least one message in each of chosen and rejected after it. Got prompt="
                f"{prompt!r}, chosen={chosen!r}, rejected={rejected!r}."
            )
        out = {"prompt": _render(prompt), "chosen": _reply(chosen), "rejected": _reply(rejected)}
        out[_MESSAGES] = json.dumps([{"role": m["role"], "content": m["content"]} for m in prompt])
    elif isinstance(chosen, str) and isinstance(rejected, str):
        if prompt is None:
            n = _common_prefix(chosen, rejected)
            prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
        if not isinstance(prompt, str):
            raise ValueError(
                f"Text preference rows need a string prompt. Got {type(prompt).__name__}: "
                f"{prompt!r}. Use either strings or message lists for all three columns."
            )
        out = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    else:
        raise ValueError(
            "'chosen' and 'rejected' must both be strings or both be lists of {'role', "
            f"'content'}} messages. Got {type(chosen).__name__} and {type(rejected).__name__}."
        )
    if out["chosen"] == out["rejected"]:
        raise ValueError(
            f"A preference row has identical chosen and rejected completions "
            f"({out['chosen']!r}) for prompt {out['prompt']!r}; it carries no preference. "
            "Drop such rows."
        )
    out["answer"] = out["chosen"]
    return out


def prompt_messages(columns: Mapping[str, Any]) -> list[dict[str, str]] | None:
    """The prompt messages of a conversational row's other columns, or ``None`` for text rows.

    Example::

        >>> prompt_messages({"prompt_messages": '[{"role": "user", "content": "hi"}]'})
        [{'role': 'user', 'content': 'hi'}]
        >>> prompt_messages({"chosen": "a"}) is None
        True
    """
    raw = columns.get(_MESSAGES)
    return json.loads(raw) if raw else None


def preference_task(
    name: str,
    train_rows: Sequence[Mapping[str, Any]],
    validation_rows: Sequence[Mapping[str, Any]],
    reward: RewardFn | None = None,
) -> Task:
    """Build a :class:`Task` from raw preference rows (normalised with :func:`preference_row`).

    Args:
        name: Task name.
        train_rows: Raw rows of the train split.
        validation_rows: Raw rows of the validation split.
        reward: Scores a generated completion; default ``ExactMatch(answer_column="chosen")``
            (1.0 when the completion's first line is the chosen completion).

    Example::

        >>> rows = [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}]
        >>> task = preference_task("tiny_pref", rows, rows)
        >>> sorted(task.train.column_names)
        ['answer', 'chosen', 'prompt', 'rejected']
    """
    train = datasets.Dataset.from_list([preference_row(r) for r in train_rows])
    validation = datasets.Dataset.from_list([preference_row(r) for r in validation_rows])
    return Task(name, train, validation, reward or ExactMatch(answer_column="chosen"))


def check_preference_task(task: Task, owner: str) -> None:
    """Raise a ``ValueError`` unless both splits of ``task`` have ``chosen`` and ``rejected``.

    Example::

        >>> split = datasets.Dataset.from_dict({"prompt": ["q"], "answer": ["a"]})
        >>> check_preference_task(Task("qa", split, split, ExactMatch()), "DPOModule")
        Traceback (most recent call last):
        ...
        ValueError: DPOModule trains on preference pairs, but task 'qa' has columns ['prompt', 'answer'] (no 'chosen'/'rejected'). Use a preference task: gradbal.tasks.PreferenceFileTask, the built-in PreferenceArithmetic / PreferenceFormat / PreferenceSort, or rows normalised with gradbal.tasks.preference_row.
    """
    for split in (task.train, task.validation):
        if not {"chosen", "rejected"} <= set(split.column_names):
            raise ValueError(
                f"{owner} trains on preference pairs, but task {task.name!r} has columns "
                f"{split.column_names} (no 'chosen'/'rejected'). Use a preference task: "
                "gradbal.tasks.PreferenceFileTask, the built-in PreferenceArithmetic / "
                "PreferenceFormat / PreferenceSort, or rows normalised with "
                "gradbal.tasks.preference_row."
            )
