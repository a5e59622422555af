"""Which interpreter the sandboxed code runs under, and as which user; the root refusal.

As root, the ``nobody_user`` layer (uid 65534) is what keeps root's files out of reach of C code
that raises no audit event (``spwd`` compiled into the interpreter, Tcl, a CPython bug). It
needs an interpreter that ``nobody`` can run, which a virtual environment under ``/root`` is
not. So by default the sandbox then uses the system interpreter of the same version if
``nobody`` can run it, and refuses to run the code as root without the drop unless the caller
passes ``allow_root=True``.
"""

from __future__ import annotations

import functools
import os
import sys

from gradbal.tasks.sandbox.limits import _NOBODY, _runs_as

_SYSTEM_DIRS = ("/usr/bin", "/usr/local/bin", "/bin")


@functools.cache
def _default_python(want_nobody: bool) -> str:
    """The running interpreter, or, if ``nobody`` must run it and cannot, a system one of the
    same ``major.minor`` version that it can run (the sandbox needs only the standard library).
    """
    running = os.path.realpath(sys.executable)
    if not want_nobody or _runs_as(running, _NOBODY):
        return running
    name = "python{}.{}".format(*sys.version_info[:2])
    for directory in _SYSTEM_DIRS:
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate) and _runs_as(os.path.realpath(candidate), _NOBODY):
            return os.path.realpath(candidate)
    return running


def _sandbox_user(
    python: str | None, *, drop_privileges: bool, allow_root: bool, caller: str
) -> tuple[str, int | None]:
    """``(interpreter, uid to switch to or None)``; raises if root would stay root unasked."""
    root = os.geteuid() == 0
    python = python or _default_python(root and drop_privileges)
    if not os.access(python, os.X_OK):
        raise RuntimeError(
            f"{caller}: could not start the sandboxed interpreter {python!r}: it does not exist "
            f"or is not executable. Pass python= the path of a Python interpreter, or None for "
            f"the running one."
        )
    if not root:
        return python, None
    if drop_privileges and _runs_as(python, _NOBODY):
        return python, _NOBODY
    if allow_root:
        return python, None
    why = (
        "drop_privileges=False"
        if not drop_privileges
        else f"the user nobody (uid {_NOBODY}) cannot run the interpreter {python!r} (for "
        f"example, it lives under /root, which is mode 700)"
    )
    raise RuntimeError(
        f"{caller}: refusing to run untrusted code as root without the drop to nobody, because "
        f"{why}. Without that drop only the audit hook guards root's files, and C code that "
        f"raises no audit event gets around it (docs/security.md). Fix: pass "
        f'python="/usr/bin/python3" (any interpreter outside /root that nobody can run; in '
        f"YAML, init_args: {{python: /usr/bin/python3}}), or run the trainer as a non-root user, "
        f"or accept the risk with allow_root=True."
    )


def check_sandbox_user(
    python: str | None = None, *, allow_root: bool = False, caller: str = "run_untrusted"
) -> None:
    """Raise now what :func:`~gradbal.tasks.run_untrusted` would raise about the user.

    Lets a reward fail when it is built (from YAML) rather than at its first call. Starts the
    interpreter once as ``nobody`` when running as root (cached).

    Args:
        python: The interpreter, as given to :func:`~gradbal.tasks.run_untrusted`.
        allow_root: As given to :func:`~gradbal.tasks.run_untrusted`.
        caller: Name that starts the error message.

    Raises:
        RuntimeError: When running as root, the drop to ``nobody`` is impossible for
            ``python`` and ``allow_root`` is False.
    """
    _sandbox_user(python, drop_privileges=True, allow_root=allow_root, caller=caller)
