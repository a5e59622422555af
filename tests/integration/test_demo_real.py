"""`make demo-real`'s entry point end to end on a tiny GRPO config (TinyPolicy, toy tasks)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gradbal.demo_real import main
from gradbal.rollout import HFGenerate, RolloutBatch


class EvalCountingEngine(HFGenerate):
    """HFGenerate counting the unseeded calls: evaluation's (training passes a seed)."""

    unseeded = 0

    def generate(self, *args: Any, **kwargs: Any) -> RolloutBatch:
        if kwargs.get("seed") is None:
            EvalCountingEngine.unseeded += 1
        return super().generate(*args, **kwargs)


TINY = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 3
  log_every_n_steps: 1
  limit_val_batches: 0
  num_sanity_val_steps: 0
  default_root_dir: {root}
  callbacks:
    - class_path: gradbal.callbacks.TaskGradNormMonitor
      init_args: {{params: trainable, every_n_steps: 1}}
model:
  class_path: gradbal.modules.GRPOModule
  init_args:
    policy:
      class_path: gradbal.models.TinyPolicy
      init_args: {{hidden_size: 32, num_layers: 1}}
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {{lr: 1.0e-2}}
    num_generations: 4
    max_new_tokens: 4
    temperature: 0.7
data:
  class_path: gradbal.datamodules.MultiTaskDataModule
  init_args:
    tasks:
      - class_path: gradbal.tasks.Addition
        init_args: {{n_train: 64, n_val: 6}}
      - class_path: gradbal.tasks.Reverse
        init_args: {{n_train: 64, n_val: 6}}
    batch_size: 8
    steps_per_epoch: 3
"""


def test_demo_real_trains_evaluates_and_prints_both_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(root=tmp_path / "runs"))
    main(["--config", str(config), "--samples", "2", "--eval-prompts", "5"])
    out = capsys.readouterr().out
    assert "after 3 GRPO steps" in out and "2 samples per prompt at temperature 0.7" in out
    assert "| task | prompts | base pass@1 | GRPO pass@1 | gain | s.e. |" in out
    for task in ("addition", "reverse"):
        assert re.search(rf"^\| {task} \| 5 \| ", out, re.M), out  # eval-prompts caps the split
        # every step measured both tasks' ||G||^2 (8 prompts: 2+ groups of each, seed 0)
        assert re.search(rf"^\| {task} \| \d+ \| -?\d\.\d{{3}}e[+-]\d\d \| ", out, re.M), out
    assert re.search(r"Mean gain over tasks: [+-]\d+\.\d% \(s\.e\. \d+\.\d%, ", out)
    assert "Wall time: GRPO fit" in out
    assert "Largest / smallest mean ||G||^2 over the" in out or "The spread is not resolved" in out
    # a fresh, timestamped run each time: a second call trains again instead of resuming
    main(["--config", str(config), "--samples", "1", "--eval-prompts", "2"])
    assert "after 3 GRPO steps" in capsys.readouterr().out
    assert len(list((tmp_path / "runs" / "checkpoints").iterdir())) == 2


def test_demo_real_can_evaluate_with_the_training_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--eval-engine train: the config's rollout_engine samples the evaluation too."""
    engine = (
        "    rollout_engine: {{class_path: tests.integration.test_demo_real.EvalCountingEngine}}\n"
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(
        TINY.replace("    temperature: 0.7\n", "    temperature: 0.7\n" + engine).format(
            root=tmp_path / "runs"
        )
    )
    EvalCountingEngine.unseeded = 0
    main(
        ["--config", str(config), "--samples", "1", "--eval-prompts", "2", "--eval-engine", "train"]
    )
    assert "after 3 GRPO steps" in capsys.readouterr().out
    assert EvalCountingEngine.unseeded == 8  # {base, trained} x {sampled, greedy} x 2 tasks
