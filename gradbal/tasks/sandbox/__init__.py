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
                      applies (it does not for root). Needs an interpreter that user
                      can run; without one the code is refused unless
                      ``allow_root=True``
``network_namespace`` a new, empty network namespace (no interfaces; loopback down)    kernel
``seccomp``           a seccomp-bpf filter (x86_64, aarch64) denying fork/vfork/clone  kernel
                      of processes (threads are allowed), sockets, signals, ptrace,
                      prlimit and scheduling calls aimed at other processes, real-time
                      scheduling, namespaces, mounts, device nodes, io_uring, bpf,
                      kernel modules; plus ``no_new_privs``
``audit_hook``        a :func:`sys.addaudithook` hook installed before the code runs:  the
                      no writes outside the working directory, no reads outside it     interpreter
                      and the standard library; imports limited to an allowlist        (best
                      (:mod:`~gradbal.tasks.sandbox.modules`), extension modules       effort)
                      judged by their file; no ``os.exec*``, ``os.fork``,
                      ``os.system``, ``subprocess``, ``os.kill``, ``os.chdir``,
                      symlinks, ``gc.get_objects``; the hook cannot be replaced
===================== ================================================================ =========

What this does *not* give (see ``docs/security.md`` for the tested attacks):

* ``execve`` stays allowed by the kernel (the interpreter starts after the filter is installed);
  only the audit hook denies ``os.exec*``. ``no_new_privs`` keeps an exec from gaining
  privileges.
* The audit hook is not a security boundary (PEP 578 says so): C code that raises no audit
  event, e.g. modules compiled into the interpreter such as ``_posixsubprocess`` or ``spwd``
  in some builds (they load without an event, allowlist or not), or a memory-corruption bug
  in CPython, gets around it. The kernel layers then still hold.
* As root, the interpreter defaults to one ``nobody`` can run (the running one, else the
  system's of the same version), and without the ``nobody_user`` layer the code is refused
  unless ``allow_root=True``: then file access is limited only by the audit hook. Even as
  ``nobody`` the kernel lets the code write to world-writable directories (``/tmp``,
  ``/dev/shm``), read world-readable files and fill the working directory (each file is capped
  by RLIMIT_FSIZE, their number is not). Concurrent sandboxes share the ``nobody`` user.
* No cgroup: CPU and memory are per process (RLIMIT_AS is address space, not resident memory).

For hostile code in production, run the reward inside a container or VM boundary (gVisor,
Firecracker, nsjail, bubblewrap) and keep this as an inner layer.

Linux only.
"""

from gradbal.tasks.sandbox.result import SandboxResult
from gradbal.tasks.sandbox.runner import run_untrusted

# Private; re-exported because tests/unit/tasks/test_sandbox.py imports it from here.
from gradbal.tasks.sandbox.seccomp import _seccomp_filter as _seccomp_filter
from gradbal.tasks.sandbox.user import check_sandbox_user

__all__ = ["SandboxResult", "check_sandbox_user", "run_untrusted"]
