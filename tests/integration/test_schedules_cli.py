"""A schedule picked by ``class_path`` in YAML drives the real lr of ``gradbal fit``, also after a
resume (subprocesses: the same command a user types)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradbal.schedules import wsd_multiplier

ROOT = Path(__file__).parents[2]
CONFIG = "configs/debug/tiny_dpo_schedule.yaml"
PEAK = 1.0e-3  # the config's AdamW lr


def formula(step: int) -> float:
    """The config's schedule: WSD, 3 warmup steps, 6 in all, cosine over the last 3 to 10%."""
    return PEAK * wsd_multiplier(
        step, warmup_steps=3, total_steps=6, decay_steps=3, min_lr_ratio=0.1, decay="cosine"
    )


def fit(root: Path, logs: Path, *extra: str) -> None:
    cmd = [
        sys.executable, "-m", "gradbal", "fit", "--config", CONFIG,
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={logs}",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def logged_lr(logs: Path) -> dict[int, float]:
    (metrics,) = logs.rglob("metrics.csv")
    with metrics.open() as f:
        return {
            int(r["step"]): float(r["lr-AdamW"]) for r in csv.DictReader(f) if r.get("lr-AdamW")
        }


def checkpoint_lr(path: Path) -> tuple[float, int]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    (group,) = ckpt["optimizer_states"][0]["param_groups"]
    return group["lr"], ckpt["lr_schedulers"][0]["last_epoch"]


def test_yaml_schedule_sets_the_lr_and_a_resume_continues_it(tmp_path: Path) -> None:
    fit(tmp_path / "a", tmp_path / "logs_a", "--trainer.max_steps=2")
    logged = logged_lr(tmp_path / "logs_a")
    assert logged.keys() == {0, 1}
    for step, lr in logged.items():
        assert lr == pytest.approx(formula(step), rel=1e-9, abs=1e-15)
    (last,) = (tmp_path / "a" / "checkpoints").glob("run-*/last.ckpt")
    lr, position = checkpoint_lr(last)
    assert position == 2
    assert lr == pytest.approx(formula(2), rel=1e-9)  # the lr the next step would use

    fit(tmp_path / "b", tmp_path / "logs_b", "--trainer.max_steps=4", f"--ckpt_path={last}")
    logged = logged_lr(tmp_path / "logs_b")
    assert logged.keys() == {2, 3}  # resumed at step 2, not restarted at 0
    for step, lr in logged.items():
        assert lr == pytest.approx(formula(step), rel=1e-9)
    (resumed,) = (tmp_path / "b" / "checkpoints").glob("run-*/last.ckpt")
    lr, position = checkpoint_lr(resumed)
    assert position == 4
    assert lr == pytest.approx(formula(4), rel=1e-9)
    # Warmup before the checkpoint, decay after the resume: the test sees the schedule move.
    assert formula(1) < formula(2) < formula(3) == PEAK
    assert formula(4) < PEAK
