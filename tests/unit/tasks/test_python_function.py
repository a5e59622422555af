"""The ``python_function`` task and :class:`UnitTestReward`: only correct code scores 1.0.

The attacks of ``_attacks.py`` (also run by ``test_sandbox.py``) are replayed as completions
through the reward (all layers, in one parallel batch): each must score 0.0, leave no side effect,
and the test must survive.
"""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonargparse import ArgumentParser

import gradbal.tasks as tasks
from gradbal.tasks import PythonFunction, RewardFn, TaskSource, UnitTestReward
from gradbal.tasks.sandbox.limits import _NOBODY, _runs_as
from tests.integration._errors_doc import check_doc_rows
from tests.unit.tasks._attacks import ATTACKS, MARGIN_S, TKINTER, attack_context

TESTS = "assert type(f(2)) is int and f(2) == 7\nassert type(f(0)) is int and f(0) == 1\n"


def _reward(completions: list[str], **kwargs: Any) -> list[float]:
    reward = UnitTestReward(**kwargs)
    return reward(
        ["py f(2)=7 f(0)=1:"] * len(completions), completions, tests=[TESTS] * len(completions)
    )


def test_task_loads_with_disjoint_splits_and_reference_answers_pass() -> None:
    task = PythonFunction(n_train=20, n_val=5).load()
    assert task.name == "python_function"
    assert len(task.train) == 20 and len(task.validation) == 5
    assert set(task.train.column_names) == {"prompt", "answer", "tests"}
    val_prompts = set(task.validation["prompt"])
    assert len(val_prompts) == 5 and not val_prompts & set(task.train["prompt"])
    rows = [*task.train, *task.validation]
    for row in rows:
        assert re.fullmatch(r"py( f\(\d\)=-?\d+){3}:", row["prompt"]), row
        assert re.fullmatch(r"def f\(x\): return x\*\d([+-]\d)?", row["answer"]), row
        assert row["tests"].count("assert ") == 6
    prompts = [row["prompt"] for row in rows]
    answers = [row["answer"] for row in rows]
    assert task.reward(prompts, answers, tests=[row["tests"] for row in rows]) == [1.0] * 25
    again = PythonFunction(n_train=20, n_val=5).load()
    assert again.validation.to_dict() == task.validation.to_dict()


def test_correct_wrong_and_broken_code() -> None:
    completions = [
        "def f(x): return x*3+1",
        "f = lambda x: 3 * x + 1",
        "def f(x): return x*3",  # wrong
        "def f(x) return x*3+1",  # syntax error
        "def f(x): return 1/0",  # raises
        "def f(x): return float(x*3+1)",  # right value, wrong type
        "",
    ]
    assert _reward(completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_reward_hacks_score_zero() -> None:
    completions = [
        "import sys; sys.exit(0)",  # exit before the tests run
        "import os; os._exit(0)",
        "raise SystemExit",
        "f = lambda x: type('E', (int,), {'__eq__': lambda s, o: True})(0)",  # equal to all
        "print = lambda *a: None\ndef f(x): return x*3+1",  # hides the end-of-tests token
    ]
    assert _reward(completions) == [0.0] * len(completions)


def test_first_line_only() -> None:
    completion = "def f(x): return x*3+1\npy f(1)=4:"
    assert _reward([completion]) == [0.0]
    assert _reward([completion], first_line_only=True) == [1.0]


# The defaults, and the running interpreter with the root opt-in (as root with a venv under
# /root: every layer but nobody_user).
REWARD_PROFILES = {
    "default": {},
    "allow_root": {"python": os.path.realpath(sys.executable), "allow_root": True},
}


@pytest.mark.parametrize("profile", REWARD_PROFILES)
def test_attacks_score_zero_and_leave_no_trace(
    profile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reward = UnitTestReward(timeout_s=1.0, cpu_s=1, **REWARD_PROFILES[profile])
    with attack_context(tmp_path, monkeypatch) as ctx:
        completions = [attack.source(ctx) for attack in ATTACKS]
        start = time.monotonic()
        rewards = reward(["p"] * len(completions), completions, tests=[TESTS] * len(completions))
        elapsed = time.monotonic() - start
        assert rewards == [0.0] * len(ATTACKS)
        for attack in ATTACKS:
            attack.check(ctx, None)
    # 4 at a time, the slowest killed at the 1 s timeout.
    assert elapsed < len(ATTACKS) / reward.max_workers * (1.0 + MARGIN_S)


@pytest.mark.parametrize("profile", REWARD_PROFILES)
def test_tkinter_file_access_scores_zero(
    profile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tcl's own ``open`` raised no audit event: this completion used to score 1.0 as root."""
    reward = UnitTestReward(**REWARD_PROFILES[profile])
    with attack_context(tmp_path, monkeypatch) as ctx:
        escape = TKINTER.format(**ctx.fields()) + "def f(x): return x*3+1\n"
        completions = [escape, "def f(x): return x*3+1"]
        assert reward(["p"] * 2, completions, tests=[TESTS] * 2) == [0.0, 1.0]
        assert not ctx.target.exists()


def test_root_refusal_is_documented_and_raised_at_construction() -> None:
    check_doc_rows("X", {"X01": RuntimeError})
    running = os.path.realpath(sys.executable)
    if os.geteuid() != 0 or _runs_as(running, _NOBODY):
        pytest.skip("needs root and an interpreter that nobody cannot run")
    with pytest.raises(RuntimeError, match=r"UnitTestReward: refusing .* allow_root=True\.$"):
        PythonFunction(n_train=3, n_val=2, python=running)
    assert PythonFunction(n_train=3, n_val=2, python=running, allow_root=True).reward.allow_root


def test_missing_tests_column_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="reads the column 'tests'"):
        UnitTestReward()(["p"], ["x"], answer=["x"])
    with pytest.raises(ValueError, match="max_workers must be >= 1"):
        UnitTestReward(max_workers=0)
    with pytest.raises(ValueError, match=r"timeout_s must be finite and > 0\. Got 0"):
        UnitTestReward(timeout_s=0)
    with pytest.raises(ValueError, match="raise max_x to at least 12"):
        PythonFunction(n_shown=8, n_hidden=5)
    assert UnitTestReward()([], [], tests=[]) == []


def test_repr_round_trips_and_protocols() -> None:
    reward = UnitTestReward(timeout_s=1.5, python="/usr/bin/python3", allow_root=True)
    assert isinstance(reward, RewardFn)
    assert repr(eval(repr(reward), vars(tasks))) == repr(reward)
    source = PythonFunction(max_coef=5, n_train=7)
    assert isinstance(source, TaskSource)
    assert repr(eval(repr(source), vars(tasks))) == repr(source)


def test_task_and_reward_from_yaml() -> None:
    config = """
    task:
      class_path: gradbal.tasks.PythonFunction
      init_args: {max_coef: 4, timeout_s: 1.0, python: /usr/bin/python3, n_train: 10}
    reward:
      class_path: gradbal.tasks.UnitTestReward
      init_args: {first_line_only: true, memory_mb: 128, allow_root: true}
    """
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--task", type=TaskSource)
    parser.add_argument("--reward", type=RewardFn)
    cfg = parser.parse_object(yaml.safe_load(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = parser.instantiate_classes(cfg)
    assert isinstance(built.task, PythonFunction) and built.task.max_coef == 4
    assert built.task.reward.timeout_s == 1.0 and built.task.reward.python == "/usr/bin/python3"
    assert isinstance(built.reward, UnitTestReward) and built.reward.memory_mb == 128
    assert built.reward.allow_root and not built.task.reward.allow_root
