"""Code reward: run each completion with its row's unit tests in the sandbox."""

from __future__ import annotations

import math
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gradbal.tasks.rewards import reward_column
from gradbal.tasks.sandbox import check_sandbox_user, run_untrusted

__all__ = ["UnitTestReward"]


class UnitTestReward:
    """1.0 if a completion passes its row's unit tests, run in the sandbox, else 0.0.

    For each completion the program is: the completion (only its first line if
    ``first_line_only``), the row's tests (Python source, typically ``assert`` lines), then a
    line printing a fresh random token. It runs with :func:`~gradbal.tasks.run_untrusted`, and
    scores 1.0 only if it exits with status 0 *and* its last output line is the token, so
    exiting early (``sys.exit(0)``, ``os._exit(0)``) before the tests run scores 0.0. Anything
    else (an exception, a syntax error, a timeout, a resource limit, a blocked operation)
    scores 0.0: bad model code never raises. The completions of a batch run in parallel, each
    in its own process.

    Not proof against a completion crafted to read the token from the running program through
    frame introspection; see ``docs/security.md`` (reward hacking).

    Args:
        tests_column: Column holding the tests.
        first_line_only: Keep only the completion's first line (the built-in tasks end a
            completion at its first newline).
        timeout_s: Wall-clock limit per completion, in seconds.
        cpu_s: CPU-time limit per completion, in seconds.
        memory_mb: Memory (address space) limit per completion, in MiB.
        max_workers: Completions run at once (each is a process; mind the CPU count).
        python: Interpreter for the sandbox; None means the running one, or as root a system
            one of the same version that ``nobody`` can run (see
            :func:`~gradbal.tasks.run_untrusted`).
        allow_root: Run completions as root when the drop to ``nobody`` is impossible for
            ``python`` (e.g. a virtual environment under ``/root``). Off by default: the reward
            then refuses to be built, because only the audit hook would guard root's files.

    Raises:
        ValueError: If a limit is out of range; when called, if the tests column is missing.
        RuntimeError: If running as root, ``nobody`` cannot run ``python`` and ``allow_root``
            is False; when called, if the sandboxed interpreter cannot start at all.

    Example::

        >>> reward = UnitTestReward()
        >>> tests = "assert f(2) == 7\\nassert f(0) == 1\\n"
        >>> completions = ["def f(x): return x*3+1", "def f(x): return 7", "import os; os._exit(0)"]
        >>> reward(["py f(2)=7:"] * 3, completions, tests=[tests] * 3)
        [1.0, 0.0, 0.0]
    """

    def __init__(
        self,
        tests_column: str = "tests",
        first_line_only: bool = False,
        timeout_s: float = 2.0,
        cpu_s: int = 2,
        memory_mb: int = 256,
        max_workers: int = 4,
        python: str | None = None,
        allow_root: bool = False,
    ) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(
                f"UnitTestReward: timeout_s must be finite and > 0. Got {timeout_s!r}."
            )
        for arg, value, low in (("cpu_s", cpu_s, 1), ("memory_mb", memory_mb, 32)):
            if value < low:
                raise ValueError(f"UnitTestReward: {arg} must be >= {low}. Got {value!r}.")
        if max_workers < 1:
            raise ValueError(
                f"UnitTestReward: max_workers must be >= 1 (completions run at once). "
                f"Got {max_workers!r}."
            )
        self.tests_column = tests_column
        self.first_line_only = first_line_only
        self.timeout_s = timeout_s
        self.cpu_s = cpu_s
        self.memory_mb = memory_mb
        self.max_workers = max_workers
        self.python = python
        self.allow_root = allow_root
        check_sandbox_user(python, allow_root=allow_root, caller="UnitTestReward")

    def __repr__(self) -> str:
        return (
            f"UnitTestReward(tests_column={self.tests_column!r}, "
            f"first_line_only={self.first_line_only}, timeout_s={self.timeout_s}, "
            f"cpu_s={self.cpu_s}, memory_mb={self.memory_mb}, max_workers={self.max_workers}, "
            f"python={self.python!r}, allow_root={self.allow_root})"
        )

    def _score(self, completion: str, tests: str) -> float:
        if self.first_line_only:
            completion = completion.split("\n", 1)[0]
        token = secrets.token_hex(16)
        result = run_untrusted(
            f"{completion}\n{tests}\nprint({token!r})\n",
            timeout_s=self.timeout_s,
            cpu_s=self.cpu_s,
            memory_mb=self.memory_mb,
            python=self.python,
            allow_root=self.allow_root,
        )
        last_line = result.stdout.rstrip("\n").rpartition("\n")[2]
        return float(result.ok and last_line == token)

    def __call__(
        self, prompts: list[str], completions: list[str], **columns: list[Any]
    ) -> list[float]:
        tests = reward_column(columns, self.tests_column, self, len(completions))
        if not completions:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(completions))) as pool:
            return list(pool.map(self._score, completions, map(str, tests)))
