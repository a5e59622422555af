"""What the forked child does to itself before exec: rlimits, namespaces, user switch, seccomp.

:func:`_make_preexec` builds the ``preexec_fn`` that :func:`~gradbal.tasks.run_untrusted` gives
to :class:`subprocess.Popen`. The child reports the layers it applied on a status pipe.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import subprocess
from collections.abc import Callable

from gradbal.tasks.sandbox.seccomp import _install_seccomp

_NOBODY = 65534
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_MAX_OPEN_FILES = 64  # RLIMIT_NOFILE, set by the bootstrap script


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
        if seccomp and _install_seccomp(prctl):
            report.append("seccomp")
        os.write(status_fd, "".join(f"{layer}\n" for layer in report).encode())

    return preexec
