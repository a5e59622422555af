"""Attacks on :func:`run_untrusted` (``_attacks.py``): each must be contained, under four profiles.

* ``all``: every layer, with the defaults :class:`~gradbal.tasks.UnitTestReward` uses (as root,
  an interpreter ``nobody`` can run: the running one or the system's of the same version);
  skipped when running as root and there is none, since the sandbox then refuses.
* ``allow_root``: the running interpreter with ``allow_root=True``: as root with a venv under
  ``/root``, every layer but ``nobody_user`` (the case of the issue that led to the allowlist).
* ``hook_only``: the audit hook (plus rlimits, empty env, process group) without the kernel
  layers ``nobody_user``, ``network_namespace`` and ``seccomp`` (``allow_root=True``).
* ``kernel_only``: the kernel layers without the audit hook. Needs root and an interpreter that
  ``nobody`` can run; skipped when there is none.

Known gaps are strict xfails: they show up in ``pytest -v`` (and in ``docs/security.md``), and
closing one turns it into a failure that asks for the docs to be updated. Every attack runs with
a 1-2 s timeout; the file takes about 40 s.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from gradbal.tasks import UnitTestReward, run_untrusted
from gradbal.tasks.sandbox import _seccomp_filter, check_sandbox_user
from gradbal.tasks.sandbox.limits import _NOBODY, _runs_as
from gradbal.tasks.sandbox.modules import ALLOWED_MODULES, PUBLIC_MODULES
from tests.unit.tasks._attacks import (
    ATTACKS,
    FORK_EXEC,
    MARGIN_S,
    MAX_OUTPUT,
    Attack,
    Context,
    attack_context,
)

RUNNING = os.path.realpath(sys.executable)
ROOT = os.geteuid() == 0
HOOK_ONLY = {"drop_privileges": False, "isolate_network": False, "seccomp": False}


@cache
def _applied(profile: str) -> frozenset[str] | None:
    """The layers a profile applies here, or None if the sandbox refuses to run under it."""
    try:
        return frozenset(run_untrusted("pass", **_kwargs(profile)).isolation)
    except RuntimeError:
        return None


def _kwargs(profile: str) -> dict[str, Any]:
    if profile == "allow_root":
        return {"python": RUNNING, "allow_root": True}
    if profile == "hook_only":
        return {**HOOK_ONLY, "allow_root": True}
    if profile == "kernel_only":
        return {"audit_hook": False}
    return {}


def _profile(name: str) -> dict[str, Any]:
    applied = _applied(name)
    if applied is None:
        pytest.skip("running as root and nobody can run no interpreter of this version")
    kernel = {"nobody_user", "network_namespace", "seccomp"}
    if name == "kernel_only" and not kernel <= applied:
        pytest.skip("needs root, seccomp, network namespaces and an interpreter nobody can run")
    return _kwargs(name)


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


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    with attack_context(tmp_path, monkeypatch) as context:
        yield context


def _builtin_gap(attack: Attack, profile: str) -> str:
    """Why ``attack`` escapes under ``profile`` here, if its module is compiled in, else ''."""
    if not (attack.builtin and profile in ("allow_root", "hook_only")):
        return ""
    if attack.builtin_stopped_by == "nobody_user" and not ROOT:
        return ""  # the user's own permissions stop it
    applied = _applied(profile) or frozenset()
    if attack.builtin_stopped_by in applied or attack.builtin not in sys.builtin_module_names:
        return ""
    return (
        f"{attack.builtin} is compiled into this interpreter: loading it raises no audit event, "
        f"and only {attack.builtin_stopped_by} contains it"
    )


@pytest.mark.parametrize("profile", ["all", "allow_root", "hook_only", "kernel_only"])
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_attack_is_contained(
    attack: Attack, profile: str, ctx: Context, request: pytest.FixtureRequest
) -> None:
    kwargs = _profile(profile)
    gap = {"kernel_only": attack.kernel_gap, "hook_only": attack.hook_gap}.get(profile, "")
    gap = gap or _builtin_gap(attack, profile)
    if gap:
        request.applymarker(pytest.mark.xfail(strict=True, reason=gap))
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
    if "UNSUPPORTED: " in result.stderr:
        pytest.skip(result.stderr.rpartition("UNSUPPORTED: ")[2].strip())
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
    hook_only = {"drop_privileges": False, "isolate_network": False, "allow_root": True}
    assert run_untrusted(FORK_EXEC, python=python, seccomp=False, **hook_only).stdout == "ESCAPED\n"
    blocked = run_untrusted(FORK_EXEC, python=python, **hook_only)
    assert "seccomp" in blocked.isolation and "ESCAPED" not in blocked.stdout
    assert "Operation not permitted" in blocked.stderr


def _needs_root() -> None:
    if not ROOT:
        pytest.skip("the root refusal and the drop to nobody apply only when running as root")


def test_root_without_the_nobody_drop_is_refused_unless_allowed() -> None:
    _needs_root()
    with pytest.raises(RuntimeError, match=r"refusing .* because drop_privileges=False\."):
        run_untrusted("pass", drop_privileges=False)
    result = run_untrusted("import os\nprint(os.geteuid())", drop_privileges=False, allow_root=True)
    assert result.stdout == "0\n" and "nobody_user" not in result.isolation
    if _runs_as(RUNNING, _NOBODY):
        pytest.skip("nobody can run this interpreter: nothing else to refuse")
    fix = re.escape('pass python="/usr/bin/python3"')
    message = rf"nobody \(uid 65534\) cannot run the interpreter '{re.escape(RUNNING)}'.*{fix}"
    with pytest.raises(RuntimeError, match=r"^run_untrusted: refusing .*" + message):
        run_untrusted("pass", python=RUNNING)
    with pytest.raises(RuntimeError, match=r"^UnitTestReward: refusing .*allow_root=True"):
        UnitTestReward(python=RUNNING)  # at construction, before any completion is scored
    with pytest.raises(RuntimeError, match="allow_root=True"):
        check_sandbox_user(RUNNING)
    check_sandbox_user(RUNNING, allow_root=True)
    assert "nobody_user" not in run_untrusted("pass", python=RUNNING, allow_root=True).isolation


def test_default_interpreter_drops_to_nobody_as_root() -> None:
    _needs_root()
    applied = _applied("all")
    if applied is None:
        pytest.skip("nobody can run no interpreter of this version here")
    assert "nobody_user" in applied
    assert run_untrusted("import os\nprint(os.geteuid())").stdout == f"{_NOBODY}\n"
    version = run_untrusted("import sys\nprint(sys.version_info[:2])").stdout
    assert version == f"{tuple(sys.version_info[:2])}\n"  # the same version as the trainer's


@pytest.mark.parametrize("profile", ["all", "allow_root"])
def test_allowed_modules_import_and_others_are_refused_by_name(profile: str) -> None:
    kwargs = _profile(profile)
    imports = "\n".join(f"import {name}" for name in sorted(PUBLIC_MODULES))
    code = f"{imports}\nimport dataclasses, fractions, statistics, tempfile, unittest\nprint('ok')"
    result = run_untrusted(code, timeout_s=10.0, **kwargs)
    assert result.stdout == "ok\n", result.stderr
    # Refused by the policy before any file lookup, installed or not (python3-tk or not).
    for name in ("tkinter", "_tkinter", "readline", "ctypes", "socket", "mmap", "pickle", "imp"):
        assert name not in ALLOWED_MODULES
        denied = run_untrusted(f"import {name}", **kwargs).stderr.splitlines()[-1]
        assert denied == f"ImportError: sandbox: import {name} is not allowed"


def test_allowed_extension_loads_from_its_own_file_only() -> None:
    """The file rule refuses aliases and copies, not every load by path."""
    code = """
import os, sys
external, bootstrap = sys.modules["_frozen_importlib_external"], sys.modules["_frozen_importlib"]
dirs = [p for p in sys.path if p.endswith("lib-dynload")]
path = [os.path.join(d, n) for d in dirs for n in os.listdir(d) if n.startswith("_json.")][0]
module = bootstrap._load(external.spec_from_file_location("_json", path))
print(module.encode_basestring("ok"))
"""
    result = run_untrusted(code)
    assert result.stdout == '"ok"\n', result.stderr


@pytest.mark.parametrize("seccomp", [True, False])
def test_seccomp_denies_real_time_scheduling(seccomp: bool) -> None:
    """``sched_setattr`` has no Python wrapper: call it through ctypes, with the hook off."""
    _needs_root()
    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("the seccomp filter covers x86_64 and aarch64")
    number = {"x86_64": 314, "aarch64": 274}[os.uname().machine]
    code = f"""
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
attr = ctypes.create_string_buffer(struct.pack("IIQiIQQQ", 48, 1, 0, 0, 1, 0, 0, 0))  # FIFO, 1
print(libc.syscall({number}, 0, attr, 0), os.strerror(ctypes.get_errno()))
os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
"""
    kwargs = {"python": RUNNING, "audit_hook": False, "drop_privileges": False, "allow_root": True}
    result = run_untrusted(code, seccomp=seccomp, **kwargs)
    if seccomp:
        assert "seccomp" in result.isolation
        assert result.stdout == "-1 Operation not permitted\n", result.stderr
    else:  # root may: the filter is what stops it
        assert result.stdout.startswith("0 "), result.stderr
