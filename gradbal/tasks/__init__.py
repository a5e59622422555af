"""Tasks: the data sources of gradbal, each a train/validation pair plus a verifiable reward.

A task source is a small class with a typed ``__init__`` (so YAML builds it with
``class_path``) and a ``load() -> Task`` method; see ``docs/design.md``.
"""

from gradbal.tasks.builtin import (
    Addition,
    CountChar,
    Countdown,
    PreferenceArithmetic,
    PreferenceFormat,
    PreferenceSort,
    Reverse,
    Sort,
)
from gradbal.tasks.expression import Evaluation, evaluate_expression
from gradbal.tasks.file_task import FileTask
from gradbal.tasks.preference import (
    PREFERENCE_COLUMNS,
    check_preference_task,
    preference_row,
    preference_task,
    prompt_messages,
)
from gradbal.tasks.preference_file_task import PreferenceFileTask
from gradbal.tasks.rewards import CharSimilarity, CountdownReward, ExactMatch, NumericMatch
from gradbal.tasks.task import RewardFn, Task, TaskSource, score

__all__ = [
    "PREFERENCE_COLUMNS",
    "Addition",
    "CharSimilarity",
    "CountChar",
    "Countdown",
    "CountdownReward",
    "Evaluation",
    "ExactMatch",
    "FileTask",
    "NumericMatch",
    "PreferenceArithmetic",
    "PreferenceFileTask",
    "PreferenceFormat",
    "PreferenceSort",
    "Reverse",
    "RewardFn",
    "Sort",
    "Task",
    "TaskSource",
    "check_preference_task",
    "evaluate_expression",
    "preference_row",
    "preference_task",
    "prompt_messages",
    "score",
]
