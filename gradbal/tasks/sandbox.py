"""Run untrusted Python code in a separate, resource-limited process: a best-effort sandbox.

:func:`run_untrusted` is what :class:`~gradbal.tasks.UnitTestReward` uses to run model-written
code. It stacks independent layers. Each one is applied when the platform allows it, and
:attr:`SandboxResult.isolation` lists the layers that were actually applied:

===================== ================================================================ =========
layer                 what it contains                                                 enforced
===================== ================================================================ =========
``process``           a fresh interpreter (``python -I -S -B``: no site-packages, no   kernel
                      ``PYTHON*`` variables) in its own session; the whole process
                      group is killed at the wall-clock timeout or when an output
                      stream passes ``max_output_bytes`` (read with a bounded reader)
``rlimits``           RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE, RLIMIT_NPROC,      kernel
                      RLIMIT_NOFILE, RLIMIT_CORE=0; soft = hard, so they cannot be
                      raised
``empty_env``         ``env={}`` and an empty temporary working directory, deleted     kernel
                      afterwards; the code arrives on stdin
``nobody_user``       root only: switch to uid/gid 65534, so root's files are not      kernel
                      writable, root's processes cannot be signalled and RLIMIT_NPROC
                      applies (it does not for root). Skipped when that user cannot
                      run ``python`` (e.g. an interpreter under ``/root``)
``network_namespace`` a new, empty network namespace (no interfaces; loopback down)    kernel
``seccomp``           a seccomp-bpf filter (x86_64, aarch64) denying fork/vfork/clone  kernel
                      of processes (threads are allowed), sockets, signals, ptrace,
                      prlimit and scheduling calls aimed at other processes,
                      namespaces, mounts, device nodes, io_uring, bpf, kernel modules;
                      plus ``no_new_privs``
``audit_hook``        a :func:`sys.addaudithook` hook installed before the code runs:  the
                      no writes outside the working directory, no reads outside it     interpreter
                      and the standard library, no ``import`` of ctypes, socket,       (best
                      subprocess, multiprocessing, ...; no ``os.exec*``, ``os.fork``,  effort)
                      ``os.system``, ``subprocess``, ``os.kill``, ``os.chdir``,
                      symlinks, ``gc.get_objects``; the hook cannot be replaced
===================== ================================================================ =========

What this does *not* give (see ``docs/security.md`` for the tested attacks):

* ``execve`` stays allowed by the kernel (the interpreter starts after the filter is installed);
  only the audit hook denies ``os.exec*``. ``no_new_privs`` keeps an exec from gaining
  privileges.
* The audit hook is not a security boundary (PEP 578 says so): C code that raises no audit
  event, e.g. builtin modules such as ``_posixsubprocess`` or ``spwd`` in some builds, or a
  memory-corruption bug in CPython, gets around it. The kernel layers then still hold.
* Without the ``nobody_user`` layer, file access is limited only by the audit hook. Even as
  ``nobody`` the kernel lets the code write to world-writable directories (``/tmp``,
  ``/dev/shm``), read world-readable files and fill the working directory (each file is capped
  by RLIMIT_FSIZE, their number is not). Concurrent sandboxes share the ``nobody`` user.
* No cgroup: CPU and memory are per process (RLIMIT_AS is address space, not resident memory).

For hostile code in production, run the reward inside a container or VM boundary (gVisor,
Firecracker, nsjail, bubblewrap) and keep this as an inner layer.

Linux only.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import resource
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SandboxResult", "run_untrusted"]

_NOBODY = 65534
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_MAX_OPEN_FILES = 64  # RLIMIT_NOFILE
# How often the read loop checks whether the child exited while its pipes stay open.
_POLL_S = 0.02
_CHUNK = 65536

# Runs in the child before the untrusted code (which it reads from stdin). Everything the hook
# uses is bound as a default argument or passed as an argument, never looked up in a namespace
# the untrusted code can change; replacing a function's __code__, or the hook's defaults, needs
# an audited setattr, which the hook denies. Paths are normalised lexically: the working
# directory holds no symlinks and creating one is denied.
_BOOTSTRAP = r"""
import os, sys

DENIED_EVENTS = frozenset({
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
    "os.killpg", "os.startfile", "os.chdir", "os.chmod", "os.chown", "os.chflags", "os.link",
    "os.symlink", "os.mknod", "os.setxattr", "os.removexattr", "os.unshare", "os.setns",
    "signal.pthread_kill", "subprocess.Popen", "resource.setrlimit", "resource.prlimit",
    "sys.addaudithook", "cpython.PyInterpreterState_New", "gc.get_objects",
    "gc.get_referrers", "gc.get_referents", "webbrowser.open",
})
DENIED_PREFIXES = ("socket.", "ctypes.", "syslog.", "sqlite3.", "_winapi.", "winreg.")
DENIED_MODULES = frozenset({
    "ctypes", "_ctypes", "socket", "_socket", "ssl", "_ssl", "subprocess", "_posixsubprocess",
    "multiprocessing", "_multiprocessing", "_posixshmem", "pty", "sqlite3", "_sqlite3", "dbm",
    "_dbm", "_gdbm", "readline", "spwd", "_xxsubinterpreters", "_xxinterpchannels",
    "_interpreters", "_interpchannels", "_interpqueues",
})
PATH_EVENTS = frozenset({
    "os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.truncate", "os.utime", "os.mkfifo",
})
LIST_EVENTS = frozenset({"os.listdir", "os.scandir"})
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def normpath(path, cwd, _type, _issub, _str, _bytes):
    kind = _type(path)
    if _issub(kind, _bytes):
        path = _bytes.decode(path, "utf-8", "surrogateescape")
    elif _issub(kind, _str):
        path = _str.__str__(path)
    else:
        return None
    if not _str.startswith(path, "/"):
        path = cwd + path
    parts = []
    for part in _str.split(path, "/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def make_hook(cwd):
    builtins = (type, issubclass, str, bytes)
    cwd = normpath(cwd, "/", *builtins) + "/"
    roots = tuple(r + "/" for r in (normpath(p, cwd, *builtins) for p in sys.path if p) if r)
    hook_code = [c for c in make_hook.__code__.co_consts if getattr(c, "co_name", "") == "hook"]

    def hook(event, args, _cwd=cwd, _readable=(cwd,) + roots, _norm=normpath, _b=builtins,
             _str=str, _type=type, _int=int, _getattr=getattr, _code=hook_code[0],
             _deny=PermissionError, _noimport=ImportError, _events=DENIED_EVENTS,
             _prefixes=DENIED_PREFIXES, _modules=DENIED_MODULES, _paths=PATH_EVENTS,
             _lists=LIST_EVENTS, _wflags=WRITE_FLAGS):
        if event in _events or _str.startswith(event, _prefixes):
            raise _deny("sandbox: " + event + " is not allowed")
        if event == "import":
            name = _str.partition(_str.__str__(args[0]), ".")[0]
            if name in _modules:
                raise _noimport("sandbox: import " + name + " is not allowed")
        elif event == "open":
            path, mode, flags = args
            if _type(path) is _int:
                return
            p = _norm(path, _cwd, *_b)
            if p is None:
                raise _deny("sandbox: open() needs a str or bytes path")
            if _str.startswith(p + "/", _cwd):
                return
            if mode is None or flags & _wflags or _str.strip(_str.__str__(mode), "rbtU"):
                raise _deny("sandbox: writing " + p + " is not allowed (only the working "
                            "directory is writable)")
            if not _str.startswith(p + "/", _readable):
                raise _deny("sandbox: reading " + p + " is not allowed")
        elif event in _paths:
            for arg in args:
                p = _norm(arg, _cwd, *_b)
                if p is not None and not _str.startswith(p + "/", _cwd):
                    raise _deny("sandbox: " + event + " outside the working directory is not "
                                "allowed")
        elif event in _lists:
            p = _norm(args[0], _cwd, *_b)
            if p is not None and not _str.startswith(p + "/", _readable):
                raise _deny("sandbox: listing " + p + " is not allowed")
        elif event == "object.__setattr__" and (
            args[1] == "__code__"
            or (args[1] in ("__defaults__", "__kwdefaults__")
                and _getattr(args[0], "__code__", None) is _code)
        ):
            raise _deny("sandbox: replacing " + args[1] + " is not allowed here")

    return hook


def main():
    import resource

    code = sys.stdin.buffer.read()
    status_fd, cwd, max_open_files, layers = sys.argv[1:]
    del sys.argv[1:]
    # Set here rather than before exec: a low limit there could stop close_fds from closing
    # descriptors numbered above it on systems without close_range().
    n = int(max_open_files)
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    status_fd = int(status_fd)
    if layers == "audit_hook":
        sys.addaudithook(make_hook(cwd))
        os.write(status_fd, b"audit_hook\n")
    os.close(status_fd)
    exec(compile(code, "<sandbox>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})


main()
"""


# Seccomp: syscall numbers as (x86_64, aarch64); -1 where the architecture has no such call.
_AUDIT_ARCH = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}
_DENIED_SYSCALLS = (
    (57, -1),  # fork
    (58, -1),  # vfork
    (41, 198),  # socket
    (101, 117),  # ptrace
    (310, 270),  # process_vm_readv
    (311, 271),  # process_vm_writev
    (200, 130),  # tkill
    (424, 424),  # pidfd_send_signal
    (434, 434),  # pidfd_open
    (438, 438),  # pidfd_getfd
    (141, 140),  # setpriority
    (133, -1),  # mknod
    (259, 33),  # mknodat
    (161, 51),  # chroot
    (155, 41),  # pivot_root
    (165, 40),  # mount
    (166, 39),  # umount2
    (272, 97),  # unshare
    (308, 268),  # setns
    (175, 105),  # init_module
    (313, 273),  # finit_module
    (176, 106),  # delete_module
    (246, 104),  # kexec_load
    (320, 294),  # kexec_file_load
    (248, 217),  # add_key
    (249, 218),  # request_key
    (250, 219),  # keyctl
    (321, 280),  # bpf
    (298, 241),  # perf_event_open
    (323, 282),  # userfaultfd
    (425, 425),  # io_uring_setup (io_uring operations bypass seccomp)
    (303, 264),  # name_to_handle_at
    (304, 265),  # open_by_handle_at
)
_CLONE, _CLONE3 = (56, 220), (435, 435)
_SELF_PID_SYSCALLS = (
    (62, 129),
    (234, 131),
    (129, 138),
    (297, 240),
)  # kill, tgkill, rt_(tg)sigqueueinfo
# prlimit64, sched_setaffinity, sched_setscheduler, sched_setparam: pid 0 means the caller.
_SELF_OR_ZERO_SYSCALLS = ((302, 261), (203, 122), (144, 119), (142, 118))
_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _EPERM, _ENOSYS, _KILL = 0x7FFF0000, 0x00050001, 0x00050026, 0x80000000
_CLONE_THREAD = 0x00010000
_ARG0 = 16  # offsetof(struct seccomp_data, args[0]); the low 32 bits on little-endian


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _seccomp_filter(machine: str, pid: int) -> list[tuple[int, int, int, int]] | None:
    """The BPF program (``(code, jt, jf, k)`` rows), or None on an unsupported architecture."""
    if machine not in _AUDIT_ARCH:
        return None
    col, arch = _AUDIT_ARCH[machine]
    prog = [(_LD, 0, 0, 4), (_JEQ, 1, 0, arch), (_RET, 0, 0, _KILL), (_LD, 0, 0, 0)]
    if machine == "x86_64":
        prog += [(_JGE, 0, 1, 0x40000000), (_RET, 0, 0, _EPERM)]  # x32 aliases of every call
    for numbers in _DENIED_SYSCALLS:
        if numbers[col] >= 0:
            prog += [(_JEQ, 0, 1, numbers[col]), (_RET, 0, 0, _EPERM)]
    # glibc falls back from clone3 (flags behind a pointer, not inspectable) to clone on ENOSYS.
    prog += [(_JEQ, 0, 1, _CLONE3[col]), (_RET, 0, 0, _ENOSYS)]
    prog += [(_JEQ, 0, 4, _CLONE[col]), (_LD, 0, 0, _ARG0), (_JSET, 0, 1, _CLONE_THREAD)]
    prog += [(_RET, 0, 0, _ALLOW), (_RET, 0, 0, _EPERM)]
    for numbers in _SELF_PID_SYSCALLS:
        prog += [(_JEQ, 0, 4, numbers[col]), (_LD, 0, 0, _ARG0), (_JEQ, 0, 1, pid)]
        prog += [(_RET, 0, 0, _ALLOW), (_RET, 0, 0, _EPERM)]
    for numbers in _SELF_OR_ZERO_SYSCALLS:
        prog += [(_JEQ, 0, 5, numbers[col]), (_LD, 0, 0, _ARG0), (_JEQ, 1, 0, 0)]
        prog += [(_JEQ, 0, 1, pid), (_RET, 0, 0, _ALLOW), (_RET, 0, 0, _EPERM)]
    return [*prog, (_RET, 0, 0, _ALLOW)]


@functools.cache
def _libc() -> tuple[Callable[..., int], Callable[..., int]]:
    """``(unshare, prctl)``, resolved in the parent: the forked child must not call dlsym."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare, libc.prctl


@functools.cache
def _runs_as(python: str, uid: int) -> bool:
    """Whether ``uid`` can start ``python`` (it cannot if the interpreter is under ``/root``)."""

    def drop() -> None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)

    try:
        done = subprocess.run(
            [python, "-I", "-S", "-c", "pass"],
            env={},
            cwd="/",
            preexec_fn=drop,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _make_preexec(
    limits: list[tuple[int, int, int]],
    unshare_flags: int,
    user: int | None,
    seccomp: bool,
    status_fd: int,
) -> Callable[[], None]:
    """What the forked child does before exec. Only syscalls and pre-resolved libc calls."""
    unshare, prctl = _libc()
    outer_uid, outer_gid = os.getuid(), os.getgid()

    def preexec() -> None:
        report = []
        for which, soft, hard in limits:
            resource.setrlimit(which, (soft, hard))
        if unshare_flags and unshare(ctypes.c_int(unshare_flags)) == 0:
            if unshare_flags & _CLONE_NEWUSER:  # map our own ids, or file creation fails
                for name, text in (
                    ("setgroups", "deny"),
                    ("uid_map", f"{outer_uid} {outer_uid} 1"),
                    ("gid_map", f"{outer_gid} {outer_gid} 1"),
                ):
                    fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
                    os.write(fd, text.encode())
                    os.close(fd)
            report.append("network_namespace")
        if user is not None:
            os.setgroups([])
            os.setresgid(user, user, user)
            os.setresuid(user, user, user)
            report.append("nobody_user")
        program = _seccomp_filter(os.uname().machine, os.getpid()) if seccomp else None
        if program is not None:
            raw = b"".join(struct.pack("=HBBI", *row) for row in program)
            buffer = ctypes.create_string_buffer(raw, len(raw))
            fprog = _SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
            one, zero = ctypes.c_ulong(1), ctypes.c_ulong(0)
            mode = ctypes.c_ulong(_SECCOMP_MODE_FILTER)
            if prctl(ctypes.c_int(_PR_SET_NO_NEW_PRIVS), one, zero, zero, zero) == 0 and (
                prctl(ctypes.c_int(_PR_SET_SECCOMP), mode, ctypes.byref(fprog), zero, zero) == 0
            ):
                report.append("seccomp")
        os.write(status_fd, "".join(f"{layer}\n" for layer in report).encode())

    return preexec


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
        isolation: The layers actually applied (see the module docstring), in order.
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
            any virtual environment: the sandbox needs only the standard library).
        drop_privileges: When running as root, switch to ``nobody`` if it can run ``python``.
        isolate_network: Enter a new, empty network namespace if the kernel allows it.
        seccomp: Install the seccomp filter (x86_64 and aarch64).
        audit_hook: Install the audit hook. The last four flags exist to test each layer alone;
            keep them on.

    Returns:
        The result; ``isolation`` says which layers were applied.

    Raises:
        ValueError: If a limit is out of range.
        RuntimeError: If not on Linux, or if the interpreter cannot be started at all (a setup
            problem, not something ``code`` did).

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
    python = python or os.path.realpath(sys.executable)
    root = os.geteuid() == 0
    user = _NOBODY if drop_privileges and root and _runs_as(python, _NOBODY) else None
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
