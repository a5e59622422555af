"""What ``gradbal fit`` does about checkpoints before training: run directory, lock, resume check.

A run's checkpoints live in ``<default_root_dir>/checkpoints/<run_name>/``; the default run name
is a hash of the resolved config without the fields that do not change what is trained
(:data:`RUN_ID_IGNORES`: ``ckpt_path``, ``max_steps``, logging, progress bar...). Running the
same command again therefore finds the same directory and resumes from its newest checkpoint that
loads, while another config sharing ``default_root_dir`` gets its own directory. A lock file held
while fitting keeps two processes off one directory.

When a run resumes, :func:`check_resume` reads the checkpoint (memory-mapped) before Lightning
touches anything, compares the config stored in it by :class:`~gradbal.callbacks.CheckpointConfig`
with the new one, prints what differs, and stops on what cannot be resumed.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from gradbal.callbacks.checkpoint_config import CHECKPOINT_KEY
from gradbal.callbacks.checkpoint_files import read_checkpoint

__all__ = [
    "RUN_ID_IGNORES",
    "ResumeError",
    "RunLock",
    "check_resume",
    "config_changes",
    "other_run_notice",
    "remove_stale_temps",
    "run_id",
]

#: Dotted config keys left out of the run id (and out of the resume summary): they change how
#: long a run goes, what it prints or what its checkpoints hold, not what it trains. A key with
#: ``*`` is a pattern (``fnmatch``; ``*`` also spans dots), for keys nested at any depth.
RUN_ID_IGNORES = frozenset(
    {
        "config",
        "ckpt_path",
        "weights_only",
        "resume_lr",
        "run_name",
        "trainer.max_steps",
        "trainer.max_epochs",
        "trainer.max_time",
        "trainer.min_steps",
        "trainer.min_epochs",
        "trainer.default_root_dir",
        "trainer.enable_progress_bar",
        "trainer.enable_model_summary",
        "trainer.log_every_n_steps",
        "trainer.logger",
        "model.*.save_frozen_weights",  # PretrainedPolicy/TinyPolicy: checkpoint contents only
    }
)
_SUMMARY_LINES = 15


class ResumeError(ValueError):
    """A checkpoint cannot be resumed with this config (the file is left as it was)."""


def _ignored(key: str) -> bool:
    return key in RUN_ID_IGNORES or any(
        "*" in pattern and fnmatch.fnmatchcase(key, pattern) for pattern in RUN_ID_IGNORES
    )


def _without_ignored(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config`` without the keys of :data:`RUN_ID_IGNORES`, at any depth of nested dicts.

    Example::

        >>> policy = {"init_args": {"seed": 1, "save_frozen_weights": True}}
        >>> _without_ignored({"model": {"init_args": {"policy": policy}}, "ckpt_path": "x"})
        {'model': {'init_args': {'policy': {'init_args': {'seed': 1}}}}}
    """
    kept: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if not _ignored(key):
            kept[k] = _without_ignored(v, key) if isinstance(v, dict) else v
    return kept


def run_id(config: dict[str, Any]) -> str:
    """``run-`` and 10 hex digits of the config's hash, without :data:`RUN_ID_IGNORES`.

    Example::

        >>> a = run_id({"model": {"lr": 1e-3}, "trainer": {"max_steps": 10}})
        >>> a == run_id({"model": {"lr": 1e-3}, "trainer": {"max_steps": 99}})
        True
        >>> a == run_id({"model": {"lr": 2e-3}, "trainer": {"max_steps": 10}})
        False
    """
    text = json.dumps(_without_ignored(config), sort_keys=True, default=str)
    return "run-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        flat = {}
        for index, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}[{index}]"))
        return flat
    return {prefix: value}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for each leaf that differs, ignored keys left out.

    A key missing on one side has the value ``"<unset>"`` there.

    Example::

        >>> config_changes({"data": {"batch_size": 4}}, {"data": {"batch_size": 8}})
        [('data.batch_size', 4, 8)]
    """
    a, b = _flatten(_without_ignored(old)), _flatten(_without_ignored(new))
    missing = "<unset>"
    return [
        (key, a.get(key, missing), b.get(key, missing))
        for key in sorted(a.keys() | b.keys())
        if a.get(key, missing) != b.get(key, missing)
    ]


def _summary(path: str, step: int, changes: list[tuple[str, Any, Any]]) -> str:
    lines = [f"[gradbal] Resuming {path} (step {step}) with a config that differs from its own:"]
    for key, before, after in changes[:_SUMMARY_LINES]:
        note = "   <- learning rate: see --resume_lr" if key.endswith(".lr") else ""
        lines.append(f"  {key}: {before!r} -> {after!r}{note}")
    if len(changes) > _SUMMARY_LINES:
        lines.append(
            f"  ... and {len(changes) - _SUMMARY_LINES} more (the checkpoint's whole config: "
            f'torch.load(path, weights_only=False)["{CHECKPOINT_KEY}"]["config"])'
        )
    lines.append("[gradbal] The new values apply from the resumed step on.")
    return "\n".join(lines)


def check_resume(
    path: str,
    config: dict[str, Any],
    task_names: Iterable[str] | None,
    fresh_command: str,
    announce: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Read the checkpoint at ``path``, print how ``config`` differs, stop if it cannot resume.

    Returns the checkpoint (tensors memory-mapped). ``announce=False``: print nothing when the
    config is unchanged (the caller already said which checkpoint it resumes); ``quiet``: print
    nothing (ranks other than 0).

    Raises:
        ResumeError: the file does not load, or it was made with another task list.
    """
    try:
        checkpoint = read_checkpoint(path)
    except ValueError as error:
        raise ResumeError(
            f"Cannot resume: {error}. The file is truncated, still being written, or not a "
            "checkpoint; it was left as it is. Pass another --ckpt_path (the run's directory "
            f"keeps last.ckpt and on_exception.ckpt), or start over: {fresh_command}"
        ) from error
    step = int(checkpoint["global_step"])
    record = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(record, dict):
        if quiet:
            return checkpoint
        print(
            f"[gradbal] Resuming {path} (step {step}); it holds no gradbal config to compare.",
            file=sys.stderr,
            flush=True,
        )
        return checkpoint
    saved_tasks, tasks = record.get("task_names"), list(task_names or [])
    if saved_tasks is not None and task_names is not None and list(saved_tasks) != tasks:
        raise ResumeError(
            f"Cannot resume {path}: it was made with tasks {list(saved_tasks)}, this config has "
            f"{tasks}. Sampling state and per-task statistics belong to the task list; resume "
            f"with the same tasks in the same order, or start over: {fresh_command}"
        )
    changes = config_changes(record.get("config") or {}, config)
    if quiet:
        return checkpoint
    if changes:
        print(_summary(path, step, changes), file=sys.stderr, flush=True)
    elif announce:
        print(f"[gradbal] Resuming {path} (step {step}).", file=sys.stderr, flush=True)
    return checkpoint


def other_run_notice(run_dir: str, config: dict[str, Any], command: str) -> str | None:
    """Say how ``config`` differs from the most recent other run beside ``run_dir``, if any.

    A changed config (a new learning rate, another batch size) hashes to a new run directory,
    so the same command with one value changed starts at step 0. This finds the newest
    checkpoint of the other runs in ``run_dir``'s parent that loads and holds a gradbal config,
    and returns a summary of what differs with the command that resumes that run with the new
    config instead (``--ckpt_path``). ``None`` when there is no such run.

    Example::

        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> other_run_notice(os.path.join(root, "run-new"), {}, "gradbal fit") is None
        True
    """
    parent = Path(run_dir).parent
    here = Path(run_dir).resolve()
    candidates = sorted(
        (
            f
            for f in parent.glob("*/*.ckpt")
            if f.parent.resolve() != here and not f.name.startswith(".")
        ),
        key=lambda f: f.stat().st_mtime_ns,
        reverse=True,
    )
    for candidate in candidates[:5]:  # the newest few: a broken file must not hide the rest
        try:
            checkpoint = read_checkpoint(candidate)
        except ValueError:
            continue
        record = checkpoint.get(CHECKPOINT_KEY)
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            continue
        changes = config_changes(record["config"], config)
        if not changes:
            continue
        step = int(checkpoint["global_step"])
        lines = [
            f"[gradbal] This config is a new run; the most recent other run here, "
            f"{candidate.parent} (step {step}), differs in:"
        ]
        lines += [f"  {key}: {old!r} -> {new!r}" for key, old, new in changes[:_SUMMARY_LINES]]
        if len(changes) > _SUMMARY_LINES:
            lines.append(f"  ... and {len(changes) - _SUMMARY_LINES} more")
        lines.append(
            f"[gradbal] To continue that run with this config instead: {command} "
            f"--ckpt_path {candidate}"
        )
        return "\n".join(lines)
    return None


def remove_stale_temps(directory: str) -> list[str]:
    """Delete the partial checkpoint writes (``.<name>.tmp-<pid>``) of processes that are gone.

    A process killed while saving leaves its temp file (as large as a checkpoint) behind; the
    finished file it was replacing is intact. A file whose writer is still alive, or whose pid
    cannot be read, is kept. Returns the removed paths.
    """
    removed = []
    for temp in Path(directory).glob(".*.tmp-*"):
        pid = temp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        temp.unlink(missing_ok=True)
        removed.append(str(temp))
    if removed:
        print(
            f"[gradbal] Removed {len(removed)} partial checkpoint write(s) of a killed process: "
            f"{', '.join(removed)}",
            file=sys.stderr,
            flush=True,
        )
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``, held while this process runs.

    The kernel releases it when the process ends, however it ends (``kill -9`` included), so a
    stale lock never blocks a rerun.
    """

    def __init__(self, run_dir: str) -> None:
        self.path = os.path.join(run_dir, ".lock")
        self._file: IO[str] | None = None

    def acquire(self, free_command: str) -> None:
        """Take the lock or raise ``RuntimeError`` naming the process that holds it."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        file = open(self.path, "a+")  # kept open while running
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            file.close()
            raise RuntimeError(
                f"Another process (pid {holder}) is running this same config, with checkpoints "
                f"in {os.path.dirname(self.path)}. Two processes in one run directory would "
                "overwrite each other's checkpoints. Wait for it to finish (then the same "
                f"command resumes), or run this one as a separate run: {free_command}"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file
        remove_stale_temps(os.path.dirname(self.path))

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
