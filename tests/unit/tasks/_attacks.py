"""The attacks on :func:`~gradbal.tasks.run_untrusted`, shared by the sandbox and reward tests.

``test_sandbox.py`` runs each one under three layer profiles; ``test_python_function.py`` replays
them as completions through :class:`~gradbal.tasks.UnitTestReward`. Each :class:`Attack` carries
its code (formatted with :meth:`Context.fields`) and the check that says it was contained.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gradbal.tasks import SandboxResult

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
    shm_victim: Path  # a root-owned file in /dev/shm (world-writable, sticky)

    def fields(self) -> dict[str, Any]:
        return {
            "ppid": self.ppid,
            "target": str(self.target),
            "tmp_target": str(self.tmp_target),
            "port": self.server.getsockname()[1],
            "shm_name": "/" + self.shm_victim.name,
        }


Check = Callable[[Context, "SandboxResult | None"], None]


@dataclass(frozen=True)
class Attack:
    """``code`` (formatted with :meth:`Context.fields`) and what containment means for it.

    ``check`` gets the result, or None when the attack ran inside a reward (only side effects
    can be checked then). ``kernel_gap`` says why the kernel layers alone do not contain it,
    ``hook_gap`` why the audit hook alone (as root) does not. ``builtin`` names a module that,
    when compiled into the interpreter, loads without any audit event: then only the kernel
    layer ``builtin_stopped_by`` contains the attack. An attack that cannot run on the
    interpreter at hand prints ``UNSUPPORTED: <why>`` on stderr (the test then skips).
    """

    name: str
    code: str
    check: Check
    timeout_s: float = 2.0
    cpu_s: int = 2
    kernel_gap: str = ""
    hook_gap: str = ""
    builtin: str = ""
    builtin_stopped_by: str = "nobody_user"

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


def _shadow_marker() -> str:
    """The start of root's line in /etc/shadow (name, hash, date), or ``root:`` if unreadable."""
    try:
        lines = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        return "root:"
    return next(
        (":".join(line.split(":")[:3]) for line in lines if line.startswith("root:")), "root:"
    )


def _no_shadow(ctx: Context, result: SandboxResult | None) -> None:
    _printed_nothing_of(_shadow_marker())(ctx, result)


def _no_connection(ctx: Context, result: SandboxResult | None) -> None:
    _printed_nothing_of("CONNECTED")(ctx, result)
    ctx.server.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing ever reached the listening socket
        ctx.server.accept()


def _parent_limits_unchanged(ctx: Context, result: SandboxResult | None) -> None:
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == ctx.nofile


def _all(*checks: Check) -> Check:
    def check(ctx: Context, result: SandboxResult | None) -> None:
        for each in checks:
            each(ctx, result)

    return check


def _shm_victim_alive(ctx: Context, result: SandboxResult | None) -> None:
    assert ctx.shm_victim.exists(), f"{ctx.shm_victim} was deleted: {result}"


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
    raise SystemExit("UNSUPPORTED: fork_exec's signature is CPython 3.11's")
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
__main__.ALLOWED_MODULES = __main__.ALLOWED_MODULES | {{"gc", "ctypes"}}
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

# Loads a shared object of the standard library under any module name: the PyInit_ that runs is
# picked by the name's last part, so "x.readline" runs readline's without an "import readline".
_LOAD = """
import os, sys
def find(stem):
    dirs = [p for p in sys.path if p.endswith("lib-dynload")]
    found = [os.path.join(d, n) for d in dirs for n in os.listdir(d) if n.startswith(stem + ".")]
    if not found:
        raise SystemExit("UNSUPPORTED: no " + stem + " shared object in this interpreter")
    return found[0]
def load(name, path):
    spec = sys.modules["_frozen_importlib_external"].spec_from_file_location(name, path)
    return sys.modules["_frozen_importlib"]._load(spec)
"""
# Tcl's own `open` is C code that raises no audit event.
TKINTER = """
import tkinter
tcl = tkinter.Tcl()
channel = tcl.call("open", {target!r}, "w")
tcl.call("puts", channel, "pwned")
tcl.call("close", channel)
channel = tcl.call("open", "/etc/shadow", "r")
print(tcl.call("read", channel))
"""
READLINE_ALIAS = (
    _LOAD
    + """
readline = load("x.readline", find("readline"))
try:
    readline.read_history_file("/etc/shadow")
except OSError as err:
    print(repr(err))
n = readline.get_current_history_length()
print([readline.get_history_item(i) for i in range(1, n + 1)])
readline.write_history_file({target!r})
"""
)
POSIXSHMEM_ALIAS = (
    _LOAD
    + """
load("x._posixshmem", find("_posixshmem")).shm_unlink({shm_name!r})
print("UNLINKED")
"""
)
CTYPES_BY_PATH = (
    _LOAD
    + """
_ctypes = load("x._ctypes", find("_ctypes"))
class c_int(_ctypes._SimpleCData):
    _type_ = "i"
class c_char_p(_ctypes._SimpleCData):
    _type_ = "z"
class Function(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL
    _restype_ = c_int
    _argtypes_ = (c_char_p,)
print(Function(_ctypes.dlsym(_ctypes.dlopen(None), "system"))(b"echo EXECUTED"))
"""
)
# A shared object written to the working directory is native code of the attacker's choosing;
# a copy of an allowed module's own file, loaded under its own name, stands in for one.
NATIVE_FROM_CWD = (
    _LOAD
    + """
source = find("_json")
copy = os.path.join(os.getcwd(), os.path.basename(source))
with open(source, "rb") as src, open(copy, "wb") as dst:
    dst.write(src.read())
print("LOADED", load("_json", copy))
"""
)
BUILTIN_SPWD = (
    _LOAD
    + """
bootstrap = sys.modules["_frozen_importlib"]
spec = bootstrap.BuiltinImporter.find_spec("spwd")  # compiled in: no audit event on loading
spwd = bootstrap._load(spec) if spec else load("x.spwd", find("spwd"))
print(":".join(map(str, spwd.getspnam("root"))))
"""
)
REALTIME = """
import os
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
print("REALTIME", os.sched_getscheduler(0))
"""
LOW_LEVEL_OPEN = """
import _io, io, posix
for opener in (
    lambda: posix.open("/etc/shadow", posix.O_RDONLY),
    lambda: _io.FileIO("/etc/shadow").fileno(),
    lambda: io.open_code("/etc/shadow").fileno(),
):
    try:
        print(posix.read(opener(), 4096))
    except OSError as err:
        print(repr(err))
"""
POSIX_SPAWN = """
import os
os.waitpid(os.posix_spawn("/bin/echo", ["echo", "EXECUTED"], dict()), 0)
"""
MEMFD_EXEC = """
import os
fd = os.memfd_create("script", 0)
os.write(fd, b"#!/bin/sh\\necho EXECUTED\\n")
os.execv("/proc/self/fd/%d" % fd, ["script"])
"""
# Overwrite the start of the hook's bytecode through /proc/self/mem with `return None`.
PROC_SELF_MEM = """
import sys
if sys.version_info[:2] != (3, 11):
    raise SystemExit("UNSUPPORTED: the bytecode below is CPython 3.11's")
make_hook = sys.modules["__main__"].make_hook
code = [c for c in make_hook.__code__.co_consts if getattr(c, "co_name", "") == "hook"][0]
try:
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(id(code) + type(code).__basicsize__)
        mem.write(bytes([151, 0, 100, 0, 83, 0]))  # RESUME; LOAD_CONST 0 (None); RETURN_VALUE
except OSError as err:
    print(repr(err))
open({target!r}, "w").write("pwned")
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
    Attack("read_shadow", "print(open('/etc/shadow').read())", _no_shadow),
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
    Attack(
        "posixsubprocess_fork_exec",
        FORK_EXEC,
        _printed_nothing_of("ESCAPED"),
        builtin="_posixsubprocess",
        builtin_stopped_by="seccomp",
    ),
    Attack(
        "disable_audit_hook",
        TAMPER,
        _no_file("tmp_target"),
        kernel_gap="without the hook, writing to /tmp is the write_tmp gap",
    ),
    Attack(
        "tkinter_tcl_files",
        TKINTER,
        _all(_no_file("target"), _no_shadow),
    ),
    Attack(
        "readline_alias_history",
        READLINE_ALIAS,
        _all(_no_file("target"), _no_shadow),
    ),
    Attack("posixshmem_alias_unlink", POSIXSHMEM_ALIAS, _shm_victim_alive),
    Attack("ctypes_by_path", CTYPES_BY_PATH, _printed_nothing_of("EXECUTED")),
    Attack(
        "native_code_from_cwd",
        NATIVE_FROM_CWD,
        _printed_nothing_of("LOADED"),
        kernel_gap="without the hook, a shared object in the working directory can be loaded "
        "(its code then runs as nobody under seccomp, as in exec_shell)",
    ),
    Attack("builtin_spwd", BUILTIN_SPWD, _no_shadow, builtin="spwd"),
    Attack(
        "realtime_priority",
        REALTIME,
        _printed_nothing_of("REALTIME"),
        hook_gap="sched_setscheduler raises no audit event; as root without seccomp the code "
        "may make itself real-time",
    ),
    Attack("low_level_open", LOW_LEVEL_OPEN, _no_shadow),
    Attack("posix_spawn", POSIX_SPAWN, _printed_nothing_of("EXECUTED")),
    Attack(
        "memfd_exec",
        MEMFD_EXEC,
        _printed_nothing_of("EXECUTED"),
        kernel_gap="execve stays allowed by seccomp; a memfd needs no file on disk",
    ),
    Attack("proc_self_mem_patch_hook", PROC_SELF_MEM, _no_file("target")),
]


@contextlib.contextmanager
def attack_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    """Targets for the attacks: a secret in the environment, a listening socket, file paths."""
    monkeypatch.setenv("GRADBAL_SECRET", SECRET)
    tmp_target = Path(f"/tmp/escape_{uuid.uuid4().hex}")
    shm_victim = Path(f"/dev/shm/gradbal_victim_{uuid.uuid4().hex}")
    shm_victim.write_text("victim")
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        try:
            yield Context(
                os.getpid(), tmp_path / "escape.txt", tmp_target, server, nofile, shm_victim
            )
        finally:
            tmp_target.unlink(missing_ok=True)
            shm_victim.unlink(missing_ok=True)
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
