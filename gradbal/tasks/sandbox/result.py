"""What one sandboxed run observed: exit status, bounded output, why it was stopped, layers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxResult:
    """What :func:`run_untrusted` observed.

    Attributes:
        returncode: Exit status; negative for a signal (``-9`` is SIGKILL).
        stdout: Standard output, decoded as UTF-8 (invalid bytes replaced), at most
            ``max_output_bytes`` bytes of it.
        stderr: Standard error, likewise.
        killed_reason: Why the process was stopped: ``"timeout"`` (wall clock) or
            ``"output_limit"`` (killed by the caller), ``"cpu_limit"`` (SIGXCPU from
            RLIMIT_CPU), ``"file_size_limit"`` (SIGXFSZ), another signal's name such as
            ``"SIGSEGV"``, or None if it exited by itself. Running out of memory shows as a
            ``MemoryError`` in ``stderr`` and ``returncode`` 1.
        truncated: Whether an output stream was cut at ``max_output_bytes``.
        duration_s: Wall-clock time from start to the end of the process group.
        isolation: The layers actually applied (see :mod:`gradbal.tasks.sandbox`), in order.
    """

    returncode: int
    stdout: str
    stderr: str
    killed_reason: str | None
    truncated: bool
    duration_s: float
    isolation: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Exited by itself with status 0."""
        return self.returncode == 0 and self.killed_reason is None

    @property
    def timed_out(self) -> bool:
        """Killed at the wall-clock timeout."""
        return self.killed_reason == "timeout"
