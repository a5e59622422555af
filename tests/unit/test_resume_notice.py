"""A changed config starts a new run; ``gradbal fit`` then says how it differs from the last one."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from gradbal.callbacks.checkpoint_config import CHECKPOINT_KEY
from gradbal.resume import other_run_notice


def _checkpoint(path: Path, step: int, lr: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"model": {"lr": lr}, "trainer": {"max_steps": 10}}
    record = {"config": config, "run_id": path.parent.name, "task_names": ["a"]}
    torch.save({"state_dict": {}, "global_step": step, CHECKPOINT_KEY: record}, path)


def test_names_the_newest_other_run_what_differs_and_how_to_continue_it(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "run-old" / "last.ckpt", 3, lr=1e-3)
    time.sleep(0.01)
    _checkpoint(tmp_path / "run-newer" / "last.ckpt", 7, lr=5e-4)
    (tmp_path / "run-broken").mkdir()
    (tmp_path / "run-broken" / "last.ckpt").write_bytes(b"truncated")
    os.utime(tmp_path / "run-broken" / "last.ckpt")  # the newest file, but it does not load
    notice = other_run_notice(
        str(tmp_path / "run-this"), {"model": {"lr": 2e-3}, "trainer": {"max_steps": 99}}, "cmd"
    )
    assert notice is not None
    assert "run-newer (step 7), differs in:" in notice
    assert "model.lr: 0.0005 -> 0.002" in notice
    assert "max_steps" not in notice  # how long a run goes does not make it another run
    assert notice.endswith(f"cmd --ckpt_path {tmp_path / 'run-newer' / 'last.ckpt'}")


def test_silent_without_other_runs_or_differences(tmp_path: Path) -> None:
    config = {"model": {"lr": 1e-3}, "trainer": {"max_steps": 10}}
    assert other_run_notice(str(tmp_path / "run-this"), config, "cmd") is None
    _checkpoint(tmp_path / "run-this" / "last.ckpt", 3, lr=1e-3)  # this run's own: not "other"
    assert other_run_notice(str(tmp_path / "run-this"), config, "cmd") is None
    _checkpoint(tmp_path / "run-same" / "last.ckpt", 3, lr=1e-3)  # same config (another name)
    assert other_run_notice(str(tmp_path / "run-this"), config, "cmd") is None


def test_stale_partial_writes_of_killed_processes_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from gradbal.resume import RunLock

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = tmp_path / f".last.ckpt.tmp-{int(gone.stdout)}"
    live = tmp_path / f".last.ckpt.tmp-{os.getpid()}"
    kept = tmp_path / "last.ckpt"
    for path in (dead, live, kept):
        path.write_bytes(b"x")
    lock = RunLock(str(tmp_path))
    lock.acquire("cmd")
    lock.release()
    assert not dead.exists() and live.exists() and kept.exists()
