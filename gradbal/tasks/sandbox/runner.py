"""Start the sandboxed interpreter, feed it the code, read its output within bounds, clean up.

:func:`run_untrusted` applies the limits, starts ``python -I -S -B`` with the bootstrap script in
a new session, exchanges stdin/stdout/stderr under the wall-clock deadline and the output limit,
then kills the whole process group and deletes the working directory.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from gradbal.tasks.sandbox.bootstrap import _BOOTSTRAP
from gradbal.tasks.sandbox.limits import (
    _CLONE_NEWNET,
    _CLONE_NEWUSER,
    _MAX_OPEN_FILES,
    _make_preexec,
)
from gradbal.tasks.sandbox.result import SandboxResult
from gradbal.tasks.sandbox.user import _sandbox_user

# How often the read loop checks whether the child exited while its pipes stay open.
_POLL_S = 0.02
_CHUNK = 65536


def _check_limits(timeout_s: float, **minimums: tuple[float, float]) -> None:
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(
            f"run_untrusted: timeout_s must be a finite number > 0. Got {timeout_s!r}."
        )
    for name, (value, low) in minimums.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"run_untrusted: {name} must be an int >= {low}. Got {value!r}.")


def run_untrusted(
    code: str,
    *,
    timeout_s: float = 2.0,
    cpu_s: int = 2,
    memory_mb: int = 256,
    max_processes: int = 16,
    max_file_mb: int = 1,
    max_output_bytes: int = 65536,
    python: str | None = None,
    drop_privileges: bool = True,
    isolate_network: bool = True,
    seccomp: bool = True,
    audit_hook: bool = True,
    allow_root: bool = False,
) -> SandboxResult:
    """Run ``code`` as ``__main__`` in a fresh, resource-limited interpreter and collect its output.

    Never raises because of what ``code`` does: errors, crashes, timeouts and limits all come
    back as a :class:`SandboxResult`. Safe to call from several threads at once.

    Args:
        code: Python source. Only the standard library is importable (minus the modules the
            audit hook denies).
        timeout_s: Wall-clock limit; then the whole process group is killed.
        cpu_s: CPU-time limit in seconds (RLIMIT_CPU; SIGXCPU, then SIGKILL a second later).
        memory_mb: Address-space limit (RLIMIT_AS) in MiB.
        max_processes: RLIMIT_NPROC: processes and threads of the user the code runs as,
            counting other processes of that user (other concurrent sandboxes when running as
            ``nobody``). Not enforced for root, hence ``drop_privileges``.
        max_file_mb: Largest file the code may write (RLIMIT_FSIZE) in MiB.
        max_output_bytes: Kept bytes per output stream; more kills the process group.
        python: Interpreter to run; defaults to the one running this function (resolved out of
            any virtual environment: the sandbox needs only the standard library), or, as root,
            when ``nobody`` cannot run that one, the system's ``pythonX.Y`` of the same version
            (``/usr/bin``, ``/usr/local/bin``, ``/bin``) if ``nobody`` can run it.
        drop_privileges: When running as root, switch to ``nobody`` (it must be able to run
            ``python``).
        isolate_network: Enter a new, empty network namespace if the kernel allows it.
        seccomp: Install the seccomp filter (x86_64 and aarch64).
        audit_hook: Install the audit hook. The last four flags exist to test each layer alone;
            keep them on.
        allow_root: Run the code as root when the drop to ``nobody`` is impossible (or
            ``drop_privileges=False``). Off by default: the code is then refused with a
            RuntimeError, because the audit hook alone does not keep C code from root's files
            (``docs/security.md``).

    Returns:
        The result; ``isolation`` says which layers were applied.

    Raises:
        ValueError: If a limit is out of range.
        RuntimeError: If not on Linux, if the interpreter cannot be started at all (a setup
            problem, not something ``code`` did), or if running as root without the drop to
            ``nobody`` and ``allow_root`` is False.

    Example::

        >>> result = run_untrusted("print(sum(range(10)))")
        >>> result.ok, result.stdout
        (True, '45\\n')
        >>> result = run_untrusted("import socket")
        >>> result.ok, result.stderr.splitlines()[-1]
        (False, 'ImportError: sandbox: import socket is not allowed')
        >>> run_untrusted("while True: pass", timeout_s=0.5).killed_reason
        'timeout'
    """
    _check_limits(
        timeout_s,
        cpu_s=(cpu_s, 1),
        memory_mb=(memory_mb, 32),
        max_processes=(max_processes, 1),
        max_file_mb=(max_file_mb, 0),
        max_output_bytes=(max_output_bytes, 1),
    )
    if not sys.platform.startswith("linux"):
        raise RuntimeError(
            f"run_untrusted needs Linux (rlimits, namespaces, seccomp). Got sys.platform="
            f"{sys.platform!r}. Compute code rewards inside a Linux container."
        )
    python, user = _sandbox_user(
        python, drop_privileges=drop_privileges, allow_root=allow_root, caller="run_untrusted"
    )
    root = os.geteuid() == 0
    unshare_flags = 0
    if isolate_network:
        unshare_flags = _CLONE_NEWNET if root else _CLONE_NEWUSER | _CLONE_NEWNET
    mib = 1024 * 1024
    limits = [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_AS, memory_mb * mib, memory_mb * mib),
        (resource.RLIMIT_FSIZE, max_file_mb * mib, max_file_mb * mib),
        (resource.RLIMIT_NPROC, max_processes, max_processes),
    ]
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="gradbal_sandbox_"))
    status_r, status_w = os.pipe()
    try:
        if user is not None:
            os.chown(workdir, user, user)
        preexec = _make_preexec(limits, unshare_flags, user, seccomp, status_w)
        # -I: no PYTHON* variables, no user site; -S: no site-packages; -B: write no .pyc.
        command = [python, "-I", "-S", "-B", "-X", "utf8", "-c", _BOOTSTRAP, str(status_w)]
        command += [workdir, str(_MAX_OPEN_FILES), "audit_hook" if audit_hook else "-"]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                cwd=workdir,
                close_fds=True,
                pass_fds=(status_w,),
                start_new_session=True,
                preexec_fn=preexec,
            )
        except (OSError, subprocess.SubprocessError) as err:
            raise RuntimeError(
                f"run_untrusted: could not start the sandboxed interpreter {python!r}: {err}. "
                f"Check that it exists and runs; an EAGAIN here means more than "
                f"max_processes={max_processes} processes of the sandbox user exist."
            ) from err
        os.close(status_w)
        status_w = -1
        try:
            stdout, stderr, reason = _exchange(proc, code, start + timeout_s, max_output_bytes)
        finally:
            _kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)  # SIGKILLed; only a hung kernel call would delay it
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        duration = time.monotonic() - start
        returncode = -signal.SIGKILL if proc.returncode is None else proc.returncode
        applied = _read_status(status_r)
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
    order = ("nobody_user", "network_namespace", "seccomp", "audit_hook")
    return SandboxResult(
        returncode=returncode,
        stdout=bytes(stdout[:max_output_bytes]).decode("utf-8", "replace"),
        stderr=bytes(stderr[:max_output_bytes]).decode("utf-8", "replace"),
        killed_reason=reason or _signal_reason(returncode),
        truncated=max(len(stdout), len(stderr)) > max_output_bytes,
        duration_s=duration,
        isolation=("process", "rlimits", "empty_env", *(x for x in order if x in applied)),
    )


def _exchange(
    proc: subprocess.Popen[bytes], code: str, deadline: float, limit: int
) -> tuple[bytearray, bytearray, str | None]:
    """Feed ``code`` to stdin and read both outputs until exit, the deadline or ``limit``.

    Keeps at most ``limit + 1`` bytes per stream, so the caller's memory stays bounded however
    much the child writes. Returns ``(stdout, stderr, reason)``, reason being why the caller
    must kill the child (``"timeout"`` or ``"output_limit"``), or None if it exited.
    """
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin_fd, out_fd, err_fd = proc.stdin.fileno(), proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out_fd: bytearray(), err_fd: bytearray()}
    pending = memoryview(code.encode("utf-8", "replace"))
    with selectors.DefaultSelector() as selector:
        for fd in (stdin_fd, out_fd, err_fd):
            os.set_blocking(fd, False)
        selector.register(stdin_fd, selectors.EVENT_WRITE)
        selector.register(out_fd, selectors.EVENT_READ)
        selector.register(err_fd, selectors.EVENT_READ)
        while not any(len(buffer) > limit for buffer in buffers.values()):
            if _has_exited(proc.pid):
                # Everything it wrote is in the pipes now: take what is there, without waiting.
                for fd, buffer in buffers.items():
                    if fd in selector.get_map():
                        _read_available(fd, buffer, limit)
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return buffers[out_fd], buffers[err_fd], "timeout"
            for key, _ in selector.select(min(remaining, _POLL_S)):
                if key.fd != stdin_fd:
                    if not _read_available(key.fd, buffers[key.fd], limit):
                        selector.unregister(key.fd)
                    continue
                try:
                    pending = pending[os.write(stdin_fd, pending[:_CHUNK]) :]
                except BlockingIOError:
                    continue
                except BrokenPipeError:  # it stopped reading; its own business
                    pending = pending[:0]
                if not pending:
                    selector.unregister(stdin_fd)
                    proc.stdin.close()
    over = any(len(buffer) > limit for buffer in buffers.values())
    return buffers[out_fd], buffers[err_fd], "output_limit" if over else None


def _read_available(fd: int, buffer: bytearray, limit: int) -> bool:
    """Append what can be read now, keeping ``limit + 1`` bytes at most. False at end of file."""
    while len(buffer) <= limit:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        buffer += chunk[: limit + 1 - len(buffer)]
    return True


def _has_exited(pid: int) -> bool:
    # WNOWAIT leaves the child unreaped, so its pid (= the process group id) cannot be reused
    # before _kill_group runs.
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pid: int) -> None:
    """SIGKILL the child's process group, stragglers included, if the child is still unreaped."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped by someone else: the group id may name another group now
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _read_status(fd: int) -> set[str]:
    os.set_blocking(fd, False)
    try:
        return set(os.read(fd, 4096).decode("ascii", "replace").split())
    except BlockingIOError:
        return set()


def _signal_reason(returncode: int) -> str | None:
    if returncode >= 0:
        return None
    number = -returncode
    if number == signal.SIGXCPU:
        return "cpu_limit"
    if number == signal.SIGXFSZ:
        return "file_size_limit"
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
