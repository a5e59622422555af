"""The ``Task`` contract: a named train/validation pair of datasets plus a verifiable reward."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import datasets

__all__ = ["OnRewardError", "RewardFn", "Scores", "Task", "TaskSource", "score", "score_or_zero"]

#: What to do when a reward raises, returns the wrong length or a non-finite value: ``raise``
#: (stop, naming the task and an example input) or ``zero`` (score the failing samples 0.0 and
#: flag them, see :func:`score_or_zero`).
OnRewardError = Literal["raise", "zero"]

_NAME = re.compile(r"[a-z0-9_]+")
_STRING_DTYPES = ("string", "large_string")
_REQUIRED_COLUMNS = ("prompt", "answer")


@runtime_checkable
class RewardFn(Protocol):
    """A verifiable reward: one float per completion, 1.0 meaning fully correct.

    This is TRL's reward-function convention. ``columns`` holds every dataset column of the
    scored rows except ``prompt`` (so ``answer`` and task-specific columns such as ``target``),
    each as a list aligned with ``prompts``.
    """

    def __call__(
        self, prompts: list[str], completions: list[str], **columns: list[Any]
    ) -> list[float]: ...


@runtime_checkable
class TaskSource(Protocol):
    """Anything with a ``name`` that builds a :class:`Task`; YAML picks one with ``class_path``."""

    name: str

    def load(self) -> Task: ...


@dataclass(frozen=True, eq=False)
class Task:
    """A named task: train and validation datasets and the reward that verifies completions.

    Both splits need string columns ``prompt`` (the text given to the model, already formatted)
    and ``answer`` (one reference answer, the SFT target), plus any columns the reward reads.
    Instances compare by identity (comparing datasets element-wise is never what you want).

    Args:
        name: Unique task name, matching ``[a-z0-9_]+`` (it appears in metric names).
        train: Training split, non-empty.
        validation: Validation split, non-empty, with the same columns as ``train``.
        reward: The task's :class:`RewardFn`.
        success_threshold: A sample counts as correct (``val/accuracy``) when its reward is at
            least this.
        describe_row: ``(split, index) -> str`` naming where row ``index`` (0-based) of
            ``split`` comes from, e.g. ``"file 'qa.jsonl', line 17"`` (set by ``FileTask``);
            used by error messages. ``None``: ``"row <index + 1> of the <split> split"``.

    Raises:
        ValueError: If the name is malformed, a split is empty, a required column is missing or
            not of strings, the two splits have different columns, or ``success_threshold`` is
            not finite.
        TypeError: If a split is not a ``datasets.Dataset`` or ``reward`` is not callable.

    Example::

        >>> from datasets import Dataset
        >>> from gradbal.tasks import ExactMatch
        >>> split = Dataset.from_dict({"prompt": ["add 1+2="], "answer": ["3"]})
        >>> task = Task("tiny_add", train=split, validation=split, reward=ExactMatch())
        >>> score(task, ["add 1+2="], ["3\\n"], [{"answer": "3"}])
        [1.0]
    """

    name: str
    train: datasets.Dataset
    validation: datasets.Dataset
    reward: RewardFn
    success_threshold: float = 1.0
    describe_row: Callable[[str, int], str] | None = None

    def row_location(self, split: str, index: int) -> str:
        """Where row ``index`` (0-based) of ``split`` comes from, as its user would look for it."""
        if self.describe_row is not None:
            return self.describe_row(split, index)
        return f"row {index + 1} of the {split} split"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or _NAME.fullmatch(self.name) is None:
            raise ValueError(
                f"Task name must match [a-z0-9_]+ (lower-case letters, digits, underscores), "
                f"because it is used in metric names. Got {self.name!r}; "
                f"try {_suggest_name(self.name)!r}."
            )
        for split in ("train", "validation"):
            _check_split(self.name, split, getattr(self, split))
        if set(self.train.column_names) != set(self.validation.column_names):
            raise ValueError(
                f"Task {self.name!r}: train and validation must have the same columns, because the "
                f"reward reads the same columns from both. Got train={self.train.column_names} "
                f"and validation={self.validation.column_names}. Add or drop columns so they match."
            )
        if not callable(self.reward):
            raise TypeError(
                f"Task {self.name!r}: reward must be callable as reward(prompts, completions, "
                f"**columns) -> list[float]. Got {type(self.reward).__name__}: {self.reward!r}."
            )
        if not isinstance(self.success_threshold, (int, float)) or not math.isfinite(
            self.success_threshold
        ):
            raise ValueError(
                f"Task {self.name!r}: success_threshold must be a finite number. "
                f"Got {self.success_threshold!r}."
            )


def _suggest_name(name: object) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", str(name).lower()).strip("_") or "my_task"


def _check_split(name: str, split: str, dataset: object) -> None:
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"Task {name!r}: {split} must be a datasets.Dataset (for a DatasetDict, pick one "
            f"split, e.g. dataset_dict['{split}']). Got {type(dataset).__name__}."
        )
    if len(dataset) == 0:
        raise ValueError(
            f"Task {name!r}: the {split} split is empty (0 rows). Give it at least one row."
        )
    for column in _REQUIRED_COLUMNS:
        if column not in dataset.column_names:
            raise ValueError(
                f"Task {name!r}: the {split} split has no {column!r} column. Columns found: "
                f"{dataset.column_names}. Rename the right column to {column!r} "
                f"(dataset.rename_column(...), or FileTask(column_mapping={{'<yours>': "
                f"'{column}'}}))."
            )
        feature = dataset.features[column]
        if getattr(feature, "dtype", None) not in _STRING_DTYPES:
            raise ValueError(
                f"Task {name!r}: column {column!r} of the {split} split must hold strings. "
                f"Got feature {feature}. Convert it, e.g. "
                f"dataset.cast_column({column!r}, datasets.Value('string'))."
            )


def _preview(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _example(prompts: list[str], completions: list[str], index: int) -> str:
    return (
        f"sample {index}: prompt={_preview(prompts[index])}, "
        f"completion={_preview(completions[index])}"
    )


def score(
    task: Task,
    prompts: list[str],
    completions: list[str],
    columns: list[dict[str, Any]],
    *,
    answers: list[str] | None = None,
) -> list[float]:
    """Call ``task.reward`` on a batch and check what it returns.

    Args:
        task: The task whose reward to call.
        prompts: The prompts, length ``B``.
        completions: One completion per prompt, length ``B``.
        columns: Per row, the other dataset columns (``answer``, ``target``, ...); transposed to
            one list per column before calling the reward.
        answers: If given, passed to the reward as the ``answer`` column (for batches that keep
            answers apart from ``columns``).

    Returns:
        One finite float per completion.

    Raises:
        ValueError: If the input lengths differ, rows have different keys, a column is named
            like a reward parameter, or the reward returns the wrong number of values or a value
            that is not a finite number.
        RuntimeError: If the reward raises; the original exception is chained.

    Example::

        >>> from datasets import Dataset
        >>> from gradbal.tasks import ExactMatch
        >>> split = Dataset.from_dict({"prompt": ["add 1+2="], "answer": ["3"]})
        >>> task = Task("tiny_add", train=split, validation=split, reward=ExactMatch())
        >>> score(task, ["add 1+2=", "add 1+2="], ["3\\n", "4\\n"], [{}, {}], answers=["3", "3"])
        [1.0, 0.0]
    """
    transposed = _reward_columns(task, prompts, completions, columns, answers)
    if not prompts:
        return []
    return _call_reward(task, prompts, completions, transposed)


@dataclass(frozen=True)
class Scores:
    """What :func:`score_or_zero` returns: one reward per sample, and which samples failed."""

    values: list[float]
    failed: list[bool]
    first_error: str | None = None  # the first failure's message, for a warning


def score_or_zero(
    task: Task,
    prompts: list[str],
    completions: list[str],
    columns: list[dict[str, Any]],
    *,
    answers: list[str] | None = None,
) -> Scores:
    """Like :func:`score`, but a sample whose reward fails scores 0.0 and is flagged.

    The reward is called once on the whole batch; if that call raises or returns the wrong
    number of values or a non-finite value, it is called again on each sample alone, so only the
    samples that fail score 0.0. Malformed inputs (lengths or column keys that differ) still
    raise: they are bugs of the caller, not of the reward.

    Example::

        >>> from datasets import Dataset
        >>> def picky(prompts, completions, **columns):
        ...     return [float(c) for c in completions]  # raises on non-numbers
        >>> split = Dataset.from_dict({"prompt": ["p"], "answer": ["1"]})
        >>> task = Task("picky", train=split, validation=split, reward=picky)
        >>> scores = score_or_zero(task, ["p", "p"], ["0.5", "oops"], [{}, {}], answers=["1", "1"])
        >>> scores.values, scores.failed
        ([0.5, 0.0], [False, True])
    """
    transposed = _reward_columns(task, prompts, completions, columns, answers)
    n = len(prompts)
    try:
        return Scores(_call_reward(task, prompts, completions, transposed), [False] * n)
    except (ValueError, RuntimeError):
        pass
    values, failed, first_error = [], [], None
    for i in range(n):
        one = {key: [value[i]] for key, value in transposed.items()}
        try:
            values.append(_call_reward(task, [prompts[i]], [completions[i]], one)[0])
            failed.append(False)
        except (ValueError, RuntimeError) as err:
            values.append(0.0)
            failed.append(True)
            first_error = first_error or str(err)
    return Scores(values, failed, first_error)


def _reward_columns(
    task: Task,
    prompts: list[str],
    completions: list[str],
    columns: list[dict[str, Any]],
    answers: list[str] | None,
) -> dict[str, list[Any]]:
    """Check the inputs of a reward call and transpose rows into one list per column."""
    n = len(prompts)
    lengths = {"completions": len(completions), "columns": len(columns)}
    if answers is not None:
        lengths["answers"] = len(answers)
    if any(length != n for length in lengths.values()):
        raise ValueError(
            f"Task {task.name!r}: score() needs one completion and one columns dict per prompt. "
            f"Got {n} prompts and {lengths}."
        )
    keys = list(columns[0]) if columns else []
    for index, row in enumerate(columns):
        if set(row) != set(keys):
            raise ValueError(
                f"Task {task.name!r}: every columns dict must have the same keys. Row 0 has "
                f"{sorted(keys)}, row {index} has {sorted(row)}."
            )
    transposed = {key: [row[key] for row in columns] for key in keys}
    if answers is not None:
        transposed["answer"] = list(answers)
    clashes = {"prompts", "completions"} & set(transposed)
    if clashes:
        raise ValueError(
            f"Task {task.name!r}: columns {sorted(clashes)} clash with the reward's own "
            f"parameter names. Rename those dataset columns."
        )
    return transposed


def _call_reward(
    task: Task, prompts: list[str], completions: list[str], transposed: dict[str, list[Any]]
) -> list[float]:
    try:
        rewards = task.reward(list(prompts), list(completions), **transposed)
    except Exception as err:
        raise RuntimeError(
            f"Task {task.name!r}: reward {task.reward!r} raised {type(err).__name__}: {err}. "
            f"Columns passed: {sorted(transposed)}; first {_example(prompts, completions, 0)}. "
            f"Fix the reward, or set the module's on_reward_error='zero' to score such samples "
            f"0 and count them in train/reward_errors/{task.name}."
        ) from err
    return _check_rewards(task, rewards, prompts, completions)


def _check_rewards(
    task: Task, rewards: object, prompts: list[str], completions: list[str]
) -> list[float]:
    try:
        values = [float(r) for r in rewards]  # type: ignore[attr-defined]
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Task {task.name!r}: reward {task.reward!r} must return a list of floats. "
            f"Got {type(rewards).__name__}: {_preview(repr(rewards))}; "
            f"first {_example(prompts, completions, 0)}."
        ) from err
    if len(values) != len(prompts):
        raise ValueError(
            f"Task {task.name!r}: reward {task.reward!r} returned {len(values)} values for "
            f"{len(prompts)} completions; it must return one per completion. "
            f"First {_example(prompts, completions, 0)}."
        )
    for index, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(
                f"Task {task.name!r}: reward {task.reward!r} returned {value} for "
                f"{_example(prompts, completions, index)}. Rewards must be finite."
            )
    return values
