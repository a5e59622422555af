"""Tasks: the data sources of gradbal, each a train/validation pair plus a verifiable reward.

A task source is a small class with a typed ``__init__`` (so YAML builds it with
``class_path``) and a ``load() -> Task`` method; see ``docs/design.md``. Code rewards
(:class:`UnitTestReward`) run model-written code with :func:`run_untrusted`, a sandboxed
subprocess; see ``docs/security.md``.
"""

from gradbal.tasks._validation import check_rows, column_values
from gradbal.tasks.answer_extraction import extract_answer, is_formatted_answer, math_equal
from gradbal.tasks.builtin import (
    Addition,
    ChatAddition,
    ChatComparison,
    ChatMultiplication,
    ChatPreference,
    ChatSequence,
    ChatWordProblem,
    CountChar,
    Countdown,
    PreferenceArithmetic,
    PreferenceFormat,
    PreferenceSort,
    PythonFunction,
    Reverse,
    Sort,
)
from gradbal.tasks.code_reward import UnitTestReward
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
from gradbal.tasks.rewards import (
    AnswerFormat,
    CharSimilarity,
    CountdownReward,
    ExactMatch,
    MathAnswerMatch,
    NumericMatch,
)
from gradbal.tasks.sandbox import SandboxResult, run_untrusted
from gradbal.tasks.task import (
    OnRewardError,
    RewardFn,
    Scores,
    Task,
    TaskSource,
    score,
    score_or_zero,
)

__all__ = [
    "PREFERENCE_COLUMNS",
    "Addition",
    "AnswerFormat",
    "CharSimilarity",
    "ChatAddition",
    "ChatComparison",
    "ChatMultiplication",
    "ChatPreference",
    "ChatSequence",
    "ChatWordProblem",
    "CountChar",
    "Countdown",
    "CountdownReward",
    "Evaluation",
    "ExactMatch",
    "FileTask",
    "MathAnswerMatch",
    "NumericMatch",
    "OnRewardError",
    "PreferenceArithmetic",
    "PreferenceFileTask",
    "PreferenceFormat",
    "PreferenceSort",
    "PythonFunction",
    "Reverse",
    "RewardFn",
    "SandboxResult",
    "Scores",
    "Sort",
    "Task",
    "TaskSource",
    "UnitTestReward",
    "check_preference_task",
    "check_rows",
    "column_values",
    "evaluate_expression",
    "extract_answer",
    "is_formatted_answer",
    "math_equal",
    "preference_row",
    "preference_task",
    "prompt_messages",
    "run_untrusted",
    "score",
    "score_or_zero",
]
