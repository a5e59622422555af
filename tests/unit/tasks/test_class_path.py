"""Task sources and rewards can be built from YAML with ``class_path`` (as LightningCLI does)."""

from __future__ import annotations

import warnings

import yaml
from jsonargparse import ArgumentParser

from gradbal.tasks import (
    Addition,
    Countdown,
    ExactMatch,
    FileTask,
    NumericMatch,
    RewardFn,
    TaskSource,
)

CONFIG = """
tasks:
  - class_path: gradbal.tasks.Addition
    init_args: {max_digits: 3, n_train: 10}
  - class_path: gradbal.tasks.Countdown
    init_args: {num_numbers: 4, format_reward: 0.2}
  - class_path: gradbal.tasks.FileTask
    init_args:
      name: gsm
      data_files: {train: train.jsonl}
      column_mapping: {question: prompt}
      reward:
        class_path: gradbal.tasks.NumericMatch
        init_args: {tolerance: 0.5}
"""


def _instantiate(parser: ArgumentParser, config: str) -> object:
    cfg = parser.parse_object(yaml.safe_load(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # instantiate_classes is deprecated in newer versions
        return parser.instantiate_classes(cfg)


def test_task_sources_from_yaml() -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--tasks", type=list[TaskSource])
    tasks = _instantiate(parser, CONFIG).tasks  # type: ignore[attr-defined]
    assert isinstance(tasks[0], Addition) and tasks[0].max_digits == 3
    assert isinstance(tasks[1], Countdown) and tasks[1].reward.format_reward == 0.2
    assert isinstance(tasks[2], FileTask)
    assert tasks[2].column_mapping == {"question": "prompt"}
    assert isinstance(tasks[2].reward, NumericMatch) and tasks[2].reward.tolerance == 0.5


def test_file_task_default_reward_from_yaml() -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--task", type=TaskSource)
    config = "task: {class_path: gradbal.tasks.FileTask, init_args: {name: x, data_files: a.jsonl}}"
    task = _instantiate(parser, config).task  # type: ignore[attr-defined]
    assert isinstance(task.reward, ExactMatch)


def test_reward_from_yaml() -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--reward", type=RewardFn)
    config = "reward: {class_path: gradbal.tasks.CharSimilarity, init_args: {strip: false}}"
    reward = _instantiate(parser, config).reward  # type: ignore[attr-defined]
    assert repr(reward) == "CharSimilarity(answer_column='answer', strip=False)"
