"""Attacks on :func:`run_untrusted`: each one must be contained, under three layer profiles.

* ``all``: every layer, as :class:`~gradbal.tasks.UnitTestReward` runs it.
* ``hook_only``: the audit hook (plus rlimits, empty env, process group) without the kernel
  layers ``nobody_user``, ``network_namespace`` and ``seccomp``.
* ``kernel_only``: the kernel layers without the audit hook. Needs root and an interpreter that
  ``nobody`` can run (the venv's may live under ``/root``), so it may use ``/usr/bin/python3``;
  skipped when no such interpreter exists.

Known gaps are strict xfails: they show up in ``pytest -v`` (and in ``docs/security.md``), and
closing one turns it into a failure that asks for the docs to be updated. Every attack runs with
a 1-2 s timeout; the file takes about 20 s.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from gradbal.tasks import SandboxResult, run_untrusted
from gradbal.tasks.sandbox import _seccomp_filter

SECRET = "hunter2"
MAX_OUTPUT = 65536
# Wall-clock margin over the timeout: interpreter start-up, killing, reaping, on a busy machine.
MARGIN_S = 3.0


@dataclass
class Context:
    """What an attack targets; its code is formatted with ``fields()``."""

    ppid: int
    target: Path  # in the parent's pytest tmp_path
    tmp_target: Path  # directly in /tmp (world-writable)
    server: socket.socket  # listening on 127.0.0.1
    nofile: tuple[int, int]  # the parent's RLIMIT_NOFILE before the attack

    def fields(self) -> dict[str, Any]:
        return {
            "ppid": self.ppid,
            "target": str(self.target),
            "tmp_target": str(self.tmp_target),
            "port": self.server.getsockname()[1],
        }


Check = Callable[[Context, "SandboxResult | None"], None]


@dataclass(frozen=True)
class Attack:
    """``code`` (formatted with :meth:`Context.fields`) and what containment means for it.

    ``check`` gets the result, or None when the attack ran inside a reward (only side effects
    can be checked then). ``kernel_gap`` says why the kernel layers alone do not contain it.
    """

    name: str
    code: str
    check: Check
    timeout_s: float = 2.0
    cpu_s: int = 2
    kernel_gap: str = ""

    def source(self, ctx: Context) -> str:
        return self.code.format(**ctx.fields())


def _failed(ctx: Context, result: SandboxResult | None) -> None:
    assert result is None or not result.ok, result


def _killed(reason: str) -> Check:
    def check(ctx: Context, result: SandboxResult | None) -> None:
        assert result is None or result.killed_reason == reason, result

    return check


def _printed_nothing_of(*markers: str) -> Check:
    def check(ctx: Context, result: SandboxResult | None) -> None:
        if result is not None:
            for marker in markers:
                assert marker not in result.stdout + result.stderr, result

    return check


def _no_file(attribute: str) -> Check:
    def check(ctx: Context, result: SandboxResult | None) -> None:
        path = getattr(ctx, attribute)
        assert not path.exists(), f"{path} was written: {result}"

    return check


def _no_connection(ctx: Context, result: SandboxResult | None) -> None:
    _printed_nothing_of("CONNECTED")(ctx, result)
    ctx.server.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing ever reached the listening socket
        ctx.server.accept()


def _parent_limits_unchanged(ctx: Context, result: SandboxResult | None) -> None:
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == ctx.nofile


def _memory_error(ctx: Context, result: SandboxResult | None) -> None:
    assert result is None or "MemoryError" in result.stderr, result


def _output_limit(ctx: Context, result: SandboxResult | None) -> None:
    # Killed as soon as the limit is passed, long before the (10 s) timeout.
    if result is not None:
        assert result.killed_reason == "output_limit" and result.truncated, result.killed_reason
        assert len(result.stdout) == MAX_OUTPUT and result.duration_s < MARGIN_S


# _posixsubprocess.fork_exec raises no audit event, and is a builtin module (no import event
# either) in some builds, e.g. Debian's python3.11. Its signature is version-specific.
FORK_EXEC = """
import importlib, os, sys
if sys.version_info[:2] != (3, 11):
    raise SystemExit("UNSUPPORTED")
fork_exec = importlib.import_module("_posixsubprocess").fork_exec
r, w = os.pipe()
pid = fork_exec([b"/bin/echo", b"ESCAPED"], [b"/bin/echo"], True, (), None, None, -1, -1, -1,
                -1, -1, -1, r, w, False, False, -1, None, None, None, -1, None, False)
os.waitpid(pid, 0)
"""
ENV = """
import os
print(dict(os.environ))
for path in ["/proc/{ppid}/environ", "/proc/self/environ"]:
    try:
        print(open(path, "rb").read())
    except OSError as err:
        print(path, repr(err))
"""
CONNECT = """
import socket
s = socket.create_connection(("{host}", {port}), timeout=1)
print("CONNECTED")
"""
DAEMON = """
import os, time
if os.fork() == 0:
    os.setsid()
    time.sleep(30)
print("FORKED")
"""
# The hook binds its policy as default arguments and denies gc.get_objects and replacing code.
TAMPER = """
import __main__, builtins
__main__.DENIED_MODULES = frozenset()
builtins.PermissionError = Exception
try:
    import gc
    for f in gc.get_objects():
        if getattr(f, "__name__", "") == "hook":
            f.__code__ = (lambda event, args: None).__code__
except Exception as err:
    print(err)
open({tmp_target!r}, "w").write("pwned")
"""
THREADS = """
import threading, time
threads = []
try:
    while True:
        threads.append(threading.Thread(target=time.sleep, args=(30,), daemon=True))
        threads[-1].start()
finally:
    print(len(threads), "threads")
"""

ATTACKS = [
    Attack("infinite_loop", "while True: pass", _killed("timeout"), timeout_s=1.0),
    Attack("cpu_burn", "while True: pass", _killed("cpu_limit"), timeout_s=10.0, cpu_s=1),
    Attack("fork_bomb", "import os\nwhile True: os.fork()", _failed),
    Attack("daemon_escape", DAEMON, _printed_nothing_of("FORKED")),
    Attack("thread_bomb", THREADS, _failed),
    Attack("memory_10gb", "x = bytearray(10 * 1024**3)", _memory_error),
    Attack("huge_print", "print('x' * 10**9)", _memory_error),
    Attack(
        "output_flood",
        "import sys\nwhile True: sys.stdout.write('x' * 65536)",
        _output_limit,
        timeout_s=10.0,
    ),
    Attack("write_parent_tmp", "open({target!r}, 'w').write('pwned')", _no_file("target")),
    Attack(
        "write_tmp",
        "open({tmp_target!r}, 'w').write('pwned')",
        _no_file("tmp_target"),
        kernel_gap="as nobody the kernel still allows writing to world-writable /tmp",
    ),
    Attack("read_shadow", "print(open('/etc/shadow').read())", _printed_nothing_of("root:")),
    Attack("env_secrets", ENV, _printed_nothing_of(SECRET)),
    Attack("network_localhost", CONNECT.replace("{host}", "127.0.0.1"), _no_connection),
    Attack(
        "network_internet",
        CONNECT.replace("{host}", "8.8.8.8").replace("{port}", "53"),
        _printed_nothing_of("CONNECTED"),
    ),
    Attack("kill_parent", "import os, signal\nos.kill({ppid}, signal.SIGKILL)", _failed),
    Attack(
        "prlimit_parent",
        "import resource\nresource.prlimit({ppid}, resource.RLIMIT_NOFILE, (16, 16))",
        _parent_limits_unchanged,
    ),
    Attack(
        "exec_shell",
        "import os\nos.execv('/bin/sh', ['sh', '-c', 'echo EXECUTED'])",
        _printed_nothing_of("EXECUTED"),
        kernel_gap="execve stays allowed by seccomp (the interpreter starts after the filter)",
    ),
    Attack(
        "ctypes_system",
        "import ctypes\nprint(ctypes.CDLL(None).system(b'echo EXECUTED'))",
        _printed_nothing_of("EXECUTED"),
    ),
    Attack("posixsubprocess_fork_exec", FORK_EXEC, _printed_nothing_of("ESCAPED")),
    Attack(
        "disable_audit_hook",
        TAMPER,
        _no_file("tmp_target"),
        kernel_gap="without the hook, writing to /tmp is the write_tmp gap",
    ),
]


@cache
def _kernel_only_python() -> str | None:
    """An interpreter under which all three kernel layers apply, or None."""
    for python in (None, "/usr/bin/python3"):
        if python is None or os.path.exists(python):
            applied = run_untrusted("pass", audit_hook=False, python=python).isolation
            if {"nobody_user", "network_namespace", "seccomp"} <= set(applied):
                return python or os.path.realpath(sys.executable)
    return None


def _profile(name: str) -> dict[str, Any]:
    if name == "hook_only":
        return {"drop_privileges": False, "isolate_network": False, "seccomp": False}
    if name == "kernel_only":
        python = _kernel_only_python()
        if python is None:
            pytest.skip("needs root, seccomp, network namespaces and an interpreter nobody can run")
        return {"audit_hook": False, "python": python}
    return {}


def _sandbox_pids() -> set[int]:
    """Live processes whose command line names a sandbox working directory."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"gradbal_sandbox_" in cmdline:
                pids.add(int(entry))
    return pids


@contextlib.contextmanager
def attack_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    """Targets for the attacks: a secret in the environment, a listening socket, file paths."""
    monkeypatch.setenv("GRADBAL_SECRET", SECRET)
    tmp_target = Path(f"/tmp/escape_{uuid.uuid4().hex}")
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        try:
            yield Context(os.getpid(), tmp_path / "escape.txt", tmp_target, server, nofile)
        finally:
            tmp_target.unlink(missing_ok=True)
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    with attack_context(tmp_path, monkeypatch) as context:
        yield context


@pytest.mark.parametrize("profile", ["all", "hook_only", "kernel_only"])
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_attack_is_contained(
    attack: Attack, profile: str, ctx: Context, request: pytest.FixtureRequest
) -> None:
    kwargs = _profile(profile)
    if profile == "kernel_only" and attack.kernel_gap:
        request.applymarker(pytest.mark.xfail(strict=True, reason=attack.kernel_gap))
    before = _sandbox_pids()
    start = time.monotonic()
    result = run_untrusted(
        attack.source(ctx),
        timeout_s=attack.timeout_s,
        cpu_s=attack.cpu_s,
        max_output_bytes=MAX_OUTPUT,
        **kwargs,
    )
    elapsed = time.monotonic() - start
    if "UNSUPPORTED" in result.stderr:
        pytest.skip("this attack is written for Python 3.11")
    assert os.getpid() == ctx.ppid  # we are alive and still the same process
    assert elapsed < attack.timeout_s + MARGIN_S, result
    assert len(result.stdout) <= MAX_OUTPUT and len(result.stderr) <= MAX_OUTPUT
    assert not _sandbox_pids() - before, "a sandboxed process outlived run_untrusted"
    attack.check(ctx, result)


def test_runs_code_and_reports_layers() -> None:
    result = run_untrusted("import sys\nprint('hi')\nprint('err', file=sys.stderr)")
    assert result.ok and not result.timed_out and not result.truncated
    assert (result.stdout, result.stderr, result.returncode) == ("hi\n", "err\n", 0)
    assert result.isolation[:3] == ("process", "rlimits", "empty_env")
    assert "audit_hook" in result.isolation
    assert "audit_hook" not in run_untrusted("pass", audit_hook=False).isolation


def test_working_directory_is_empty_writable_and_deleted() -> None:
    code = "import os\nprint(os.listdir('.'))\nopen('out.txt', 'w').write('x')\nprint(os.getcwd())"
    result = run_untrusted(code)
    listing, workdir = result.stdout.splitlines()
    assert result.ok and listing == "[]"
    assert "gradbal_sandbox_" in workdir and not os.path.exists(workdir)


def test_standard_library_and_threads_still_work() -> None:
    code = """
import collections, dataclasses, functools, itertools, json, math, re, tempfile, threading
Point = collections.namedtuple("Point", "x y")
out = []
thread = threading.Thread(target=lambda: out.append(json.dumps(Point(1, 2)._asdict())))
thread.start()
thread.join()
with tempfile.TemporaryDirectory(dir=".") as d:
    open(d + "/f", "w").write("ok")
print(out[0], math.factorial(5), re.sub("a", "b", "aa"))
"""
    result = run_untrusted(code)
    assert result.ok, result.stderr
    assert result.stdout == '{"x": 1, "y": 2} 120 bb\n'


def test_bad_code_fails_without_raising() -> None:
    syntax = run_untrusted("def f(:\n")
    assert syntax.returncode == 1 and "SyntaxError" in syntax.stderr
    error = run_untrusted("raise ValueError('boom')")
    assert not error.ok and "ValueError: boom" in error.stderr
    assert run_untrusted("import sys\nsys.exit(3)").returncode == 3
    assert not run_untrusted("\ud800 = 1").ok  # a lone surrogate does not break the caller


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout_s": 0}, "timeout_s must be a finite number > 0. Got 0"),
        ({"timeout_s": float("inf")}, "timeout_s must be a finite number > 0. Got inf"),
        ({"cpu_s": 0}, "cpu_s must be an int >= 1. Got 0"),
        ({"memory_mb": 8}, "memory_mb must be an int >= 32. Got 8"),
        ({"max_output_bytes": 0}, "max_output_bytes must be an int >= 1. Got 0"),
    ],
)
def test_invalid_limits_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        run_untrusted("pass", **kwargs)


def test_missing_interpreter_is_a_setup_error() -> None:
    with pytest.raises(RuntimeError, match="could not start the sandboxed interpreter"):
        run_untrusted("pass", python="/nonexistent/python")


def test_seccomp_filter_fits_the_kernel_limit() -> None:
    for machine in ("x86_64", "aarch64"):
        program = _seccomp_filter(machine, pid=1234)
        assert program is not None and len(program) < 4096  # BPF_MAXINSNS
        assert program[-1] == (0x06, 0, 0, 0x7FFF0000)  # default: allow
    assert _seccomp_filter("riscv64", pid=1234) is None


def test_seccomp_stops_what_the_audit_hook_cannot_see() -> None:
    """Where ``_posixsubprocess`` is builtin, ``fork_exec`` raises no audit event at all."""
    python = "/usr/bin/python3"
    probe = (
        "import sys\nprint('_posixsubprocess' in sys.builtin_module_names, sys.version_info[:2])"
    )
    if not os.path.exists(python) or run_untrusted(probe, python=python).stdout != "True (3, 11)\n":
        pytest.skip("needs a Python 3.11 with _posixsubprocess built in, e.g. Debian's")
    hook_only = {"drop_privileges": False, "isolate_network": False}
    assert run_untrusted(FORK_EXEC, python=python, seccomp=False, **hook_only).stdout == "ESCAPED\n"
    blocked = run_untrusted(FORK_EXEC, python=python, **hook_only)
    assert "seccomp" in blocked.isolation and "ESCAPED" not in blocked.stdout
    assert "Operation not permitted" in blocked.stderr
