"""Runs a Python snippet with io_uring_setup refused by a seccomp filter, the way
a container runtime's default policy refuses it.

Usage: python seccomp_deny.py ERRNO_NAME CODE
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct
import sys

IO_URING_SETUP = 425  # the same number on every architecture since Linux 5.1
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06


def deny_io_uring_setup(err: int) -> None:
    arch = AUDIT_ARCH[platform.machine()]
    program = [
        (LD_W_ABS, 0, 0, 4),  # A = seccomp_data.arch
        (JEQ_K, 0, 3, arch),  # other architecture: allow
        (LD_W_ABS, 0, 0, 0),  # A = seccomp_data.nr
        (JEQ_K, 0, 1, IO_URING_SETUP),
        (RET_K, 0, 0, SECCOMP_RET_ERRNO | err),
        (RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    raw = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    filters = ctypes.create_string_buffer(raw)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(program), ctypes.addressof(filters))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


if __name__ == "__main__":
    deny_io_uring_setup(getattr(errno, sys.argv[1]))
    exec(sys.argv[2])
