"""The built-in generated tasks are pinned: rows, ``repr`` and reward, and their YAML build.

The digests were computed before the tasks became dataclass configs over
``GeneratedTask`` (issue 14), from the hand-written classes, so they prove the refactor kept every
row of every task identical for the same seed and sizes. A change to a task's data must change
its digest here on purpose (and say so in the CHANGELOG: runs with the same config would train on
different rows).
"""

from __future__ import annotations

import hashlib
import json

import pytest
from jsonargparse import ArgumentParser

from gradbal.tasks import TaskSource, builtin

# (class, sha256[:16] of the train and validation rows, repr), for n_train=40, n_val=10, seed=3;
# ChatPreference wraps ChatSequence(n_train=40, n_val=10, seed=3) with seed=2.
PINNED = [
    ("Addition", "9db64b7054e65225", "Addition(name='addition', min_digits=1, max_digits=2, n_train=40, n_val=10, seed=3)"),
    ("ChatAddition", "5ec9a11ca9565b6d", "ChatAddition(name='chat_addition', min_value=1, max_value=60, n_train=40, n_val=10, seed=3)"),
    ("ChatComparison", "8b3aeaf0861dbdcb", "ChatComparison(name='chat_comparison', min_value=1, max_value=99, ask_smaller=True, n_train=40, n_val=10, seed=3)"),
    ("ChatMultiplication", "92e73f9412edb687", "ChatMultiplication(name='chat_multiplication', min_value=3, max_value=15, n_train=40, n_val=10, seed=3)"),
    ("ChatPreference", "cb8e8f5147d01840", "ChatPreference(source=ChatSequence(name='chat_sequence', length=5, min_step=1, max_step=3, n_train=40, n_val=10, seed=3), name='pref_chat_sequence', seed=2)"),
    ("ChatSequence", "cbfff76da43405cc", "ChatSequence(name='chat_sequence', length=5, min_step=1, max_step=3, n_train=40, n_val=10, seed=3)"),
    ("ChatWordProblem", "0e6e88e60c1eb603", "ChatWordProblem(name='chat_word_problem', min_value=2, max_value=20, n_train=40, n_val=10, seed=3)"),
    ("CountChar", "d3e59fd0576db490", "CountChar(name='count', min_len=3, max_len=8, alphabet='abcde', n_train=40, n_val=10, seed=3)"),
    ("Countdown", "bfef6d177a9cf06b", "Countdown(name='countdown', num_numbers=3, max_number=9, min_used=2, max_target=100, operators='+-*/', format_reward=0.1, n_train=40, n_val=10, seed=3)"),
    ("PreferenceArithmetic", "42209af1140f8be2", "PreferenceArithmetic(name='pref_add', min_digits=1, max_digits=2, n_train=40, n_val=10, seed=3)"),
    ("PreferenceFormat", "00082ca6f746e410", "PreferenceFormat(name='pref_format', min_key_len=2, max_key_len=4, max_value=99, n_train=40, n_val=10, seed=3)"),
    ("PreferenceSort", "c594b0041993350b", "PreferenceSort(name='pref_sort', min_len=4, max_len=8, alphabet='abcdefghij', n_train=40, n_val=10, seed=3)"),
    ("PythonFunction", "23544cc5178723af", "PythonFunction(name='python_function', max_coef=9, max_x=9, n_shown=3, n_hidden=3, timeout_s=2.0, memory_mb=256, max_workers=4, python=None, allow_root=False, n_train=40, n_val=10, seed=3)"),
    ("Reverse", "432cfb52c9b17ebe", "Reverse(name='reverse', min_len=3, max_len=6, alphabet='abcdefghij', n_train=40, n_val=10, seed=3)"),
    ("Sort", "def05dd5d35d683e", "Sort(name='sort', min_len=3, max_len=6, alphabet='abcdefghij', n_train=40, n_val=10, seed=3)"),
]  # fmt: skip

# The reward each task builds (its repr), pinned with the rows.
REWARDS = {
    "Addition": "ExactMatch(answer_column='answer', strip=True, case_sensitive=True)",
    "ChatAddition": "MathAnswerMatch(answer_column='answer', format_reward=0.1)",
    "ChatComparison": "MathAnswerMatch(answer_column='answer', format_reward=0.1)",
    "ChatMultiplication": "MathAnswerMatch(answer_column='answer', format_reward=0.1)",
    "ChatPreference": "MathAnswerMatch(answer_column='chosen', format_reward=0.0)",
    "ChatSequence": "MathAnswerMatch(answer_column='answer', format_reward=0.1)",
    "ChatWordProblem": "MathAnswerMatch(answer_column='answer', format_reward=0.1)",
    "CountChar": "ExactMatch(answer_column='answer', strip=True, case_sensitive=True)",
    "Countdown": "CountdownReward(format_reward=0.1)",
    "PreferenceArithmetic": "ExactMatch(answer_column='chosen', strip=True, case_sensitive=True)",
    "PreferenceFormat": "ExactMatch(answer_column='chosen', strip=True, case_sensitive=True)",
    "PreferenceSort": "ExactMatch(answer_column='chosen', strip=True, case_sensitive=True)",
    "PythonFunction": "UnitTestReward(tests_column='tests', first_line_only=True, timeout_s=2.0, cpu_s=2, memory_mb=256, max_workers=4, python=None, allow_root=False)",
    "Reverse": "CharSimilarity(answer_column='answer', strip=True)",
    "Sort": "CharSimilarity(answer_column='answer', strip=True)",
}


def _make(class_name: str, **kwargs: str) -> TaskSource:
    cls = getattr(builtin, class_name)
    if class_name == "ChatPreference":
        return cls(builtin.ChatSequence(n_train=40, n_val=10, seed=3), seed=2, **kwargs)
    return cls(n_train=40, n_val=10, seed=3, **kwargs)


def _digest(source: TaskSource) -> str:
    task = source.load()
    rows = {
        "train": [dict(r) for r in task.train],
        "validation": [dict(r) for r in task.validation],
    }
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def test_every_builtin_task_is_pinned():
    assert sorted(name for name, _, _ in PINNED) == sorted(builtin.__all__)


@pytest.mark.parametrize(("name", "digest", "expected_repr"), PINNED, ids=[p[0] for p in PINNED])
def test_rows_repr_and_reward_are_unchanged(name, digest, expected_repr):
    source = _make(name)
    assert repr(source) == expected_repr
    assert _digest(source) == digest
    task = source.load()
    assert task.name == source.name
    assert repr(task.reward) == REWARDS[name]


@pytest.mark.parametrize("name", [p[0] for p in PINNED if p[0] != "ChatPreference"])
def test_builds_through_class_path(name):
    """Each task builds from ``class_path``/``init_args`` as LightningCLI builds it from YAML."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--tasks", type=list[TaskSource])
    config = parser.parse_string(
        f"tasks:\n"
        f"  - class_path: gradbal.tasks.{name}\n"
        f"    init_args: {{name: my_task, n_train: 40, n_val: 10, seed: 3}}\n"
    )
    (source,) = parser.instantiate(config).tasks
    assert type(source) is getattr(builtin, name)
    expected = _make(name, name="my_task")
    assert repr(source) == repr(expected)
    assert _digest(source) == _digest(expected)


def test_chat_preference_source_keeps_its_class_from_yaml():
    """The chat sources share their fields: YAML's ``class_path`` must still pick the class."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--tasks", type=list[TaskSource])
    config = parser.parse_string(
        "tasks:\n"
        "  - class_path: gradbal.tasks.ChatPreference\n"
        "    init_args:\n"
        "      source: {class_path: gradbal.tasks.ChatMultiplication, init_args: {n_train: 4, n_val: 2}}\n"
    )
    (source,) = parser.instantiate(config).tasks
    assert type(source) is builtin.ChatPreference
    assert type(source.source) is builtin.ChatMultiplication
    assert source.name == "pref_chat_multiplication"
