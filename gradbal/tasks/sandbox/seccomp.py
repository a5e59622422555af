"""The seccomp-bpf filter the sandboxed child installs on itself, in ``preexec_fn``, before exec.

It denies fork/vfork/clone of processes (threads are allowed), sockets, signals, ptrace, prlimit
and scheduling calls aimed at other processes, any change of scheduling policy (real-time),
namespaces, mounts, device nodes, io_uring, bpf and kernel modules, on x86_64 and aarch64.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

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
    (144, 119),  # sched_setscheduler (root could make itself real-time and starve the machine)
    (314, 274),  # sched_setattr (likewise)
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
# prlimit64, sched_setaffinity, sched_setparam: pid 0 means the caller. (sched_setparam cannot
# change the policy, and a SCHED_OTHER process's priority is always 0.)
_SELF_OR_ZERO_SYSCALLS = ((302, 261), (203, 122), (142, 118))
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


def _install_seccomp(prctl: Callable[..., int]) -> bool:
    """Set ``no_new_privs`` and install the filter on the calling process; True if both worked.

    Runs in the forked child (``preexec_fn``): only syscalls and the pre-resolved libc ``prctl``.
    False on an unsupported architecture.
    """
    program = _seccomp_filter(os.uname().machine, os.getpid())
    if program is None:
        return False
    raw = b"".join(struct.pack("=HBBI", *row) for row in program)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    fprog = _SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    one, zero = ctypes.c_ulong(1), ctypes.c_ulong(0)
    mode = ctypes.c_ulong(_SECCOMP_MODE_FILTER)
    return prctl(ctypes.c_int(_PR_SET_NO_NEW_PRIVS), one, zero, zero, zero) == 0 and (
        prctl(ctypes.c_int(_PR_SET_SECCOMP), mode, ctypes.byref(fprog), zero, zero) == 0
    )
