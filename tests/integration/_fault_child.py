"""``gradbal fit`` in a child process that a signal stops at a chosen moment (test_resume.py).

    python tests/integration/_fault_child.py MODE N fit --config ... [gradbal arguments]

MODE ``kill_after_step``: SIGKILL right after optimiser step N (and its periodic save, if any).
MODE ``kill_in_save``: SIGKILL in the middle of this process's N-th checkpoint write, after half
of the bytes reached the file. MODE ``sigterm_after_step``: SIGTERM after step N, as a cluster
sends before pre-empting a job. Everything else is the real ``gradbal fit`` with these arguments
(``sys.argv`` is rewritten, so the printed resume command is the plain one).
"""

from __future__ import annotations

import io
import os
import signal
import sys
from typing import Any

import torch

from gradbal.callbacks import PeriodicCheckpoint


def _after_step(n: int, sig: signal.Signals) -> None:
    original = PeriodicCheckpoint.on_train_batch_end

    def hook(self: PeriodicCheckpoint, trainer: Any, *args: Any, **kwargs: Any) -> None:
        original(self, trainer, *args, **kwargs)
        if trainer.global_step == n:
            os.kill(os.getpid(), sig)

    PeriodicCheckpoint.on_train_batch_end = hook  # type: ignore[method-assign]


def _in_save(n: int) -> None:
    original = torch.save
    calls = [0]

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] < n or not hasattr(f, "write"):
            original(obj, f, *args, **kwargs)
            return
        buffer = io.BytesIO()
        original(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    if mode == "kill_after_step":
        _after_step(n, signal.SIGKILL)
    elif mode == "sigterm_after_step":
        _after_step(n, signal.SIGTERM)
    elif mode == "kill_in_save":
        _in_save(n)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    sys.argv = [sys.argv[0], *sys.argv[3:]]
    from gradbal.cli import cli

    cli()


if __name__ == "__main__":
    main()
