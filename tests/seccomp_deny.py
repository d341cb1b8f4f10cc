"""Seccomp filters for the tests, built by hand (no libseccomp binding needed).

As a script it runs a Python snippet with io_uring_setup refused by a seccomp
filter, the way a container runtime's default policy refuses it:

    python seccomp_deny.py ERRNO_NAME CODE

:class:`AcceptNotifier` hands the calling thread's ``accept``/``accept4``
system calls to a supervisor thread (``SECCOMP_RET_USER_NOTIF``), which makes
each one fail with an errno of its choice, or lets it run, while the test
switches the fault on and off.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
import threading

IO_URING_SETUP = 425  # the same number on every architecture since Linux 5.1
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
#: (accept, accept4, seccomp) system call numbers
SYSCALLS = {"x86_64": (43, 288, 317), "aarch64": (202, 242, 277)}
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
#: _IOWR('!', 0, struct seccomp_notif) and _IOWR('!', 1, struct seccomp_notif_resp)
NOTIF_RECV, NOTIF_SIZE = 0xC0502100, 80
NOTIF_SEND, RESP_FORMAT = 0xC0182101, "=QqiI"
LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06

libc = ctypes.CDLL(None, use_errno=True)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def filter_program(syscalls: tuple[int, ...], action: int) -> tuple[SockFprog, object]:
    """A filter that answers ``action`` to ``syscalls`` (this architecture's)
    and allows everything else.  Returns the program and the buffer it points
    to (keep both alive until installed)."""
    n = len(syscalls)
    program = [
        (LD_W_ABS, 0, 0, 4),  # A = seccomp_data.arch
        (JEQ_K, 0, n + 1, AUDIT_ARCH[platform.machine()]),  # other: allow
        (LD_W_ABS, 0, 0, 0),  # A = seccomp_data.nr
        *((JEQ_K, n - i, 0, nr) for i, nr in enumerate(syscalls)),
        (RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (RET_K, 0, 0, action),
    ]
    raw = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in program))
    return SockFprog(len(program), ctypes.addressof(raw)), raw


def no_new_privs() -> None:
    """Required to install a filter without CAP_SYS_ADMIN (this thread only)."""
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")


def deny_io_uring_setup(err: int) -> None:
    prog, _raw = filter_program((IO_URING_SETUP,), SECCOMP_RET_ERRNO | err)
    no_new_privs()
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


class AcceptNotifier:
    """While :attr:`errno` is set, every ``accept``/``accept4`` system call of
    the thread that called :meth:`install` (and of threads it starts later)
    fails with it, returned by the kernel as the call's result; otherwise the
    call runs as usual.  :attr:`refused` counts the failed calls."""

    def __init__(self) -> None:
        self.errno = 0
        self.refused = 0
        self._fd = -1

    def install(self) -> None:
        accept, accept4, seccomp = SYSCALLS[platform.machine()]
        prog, _raw = filter_program((accept, accept4), SECCOMP_RET_USER_NOTIF)
        no_new_privs()
        fd = libc.syscall(
            seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, ctypes.byref(prog)
        )
        if fd < 0:
            raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)")
        self._fd = fd
        threading.Thread(target=self._supervise, name="accept supervisor", daemon=True).start()

    def _supervise(self) -> None:
        request = ctypes.create_string_buffer(NOTIF_SIZE)
        while True:
            ctypes.memset(request, 0, NOTIF_SIZE)
            if libc.ioctl(self._fd, NOTIF_RECV, request) != 0:
                if ctypes.get_errno() in (errno.EINTR, errno.ENOENT):
                    continue  # the caller was interrupted: nothing to answer
                return  # the filter is gone
            (notification_id,) = struct.unpack_from("=Q", request, 0)
            if self.errno:
                self.refused += 1
                reply = struct.pack(RESP_FORMAT, notification_id, 0, -self.errno, 0)
            else:
                reply = struct.pack(
                    RESP_FORMAT, notification_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE
                )
            # ENOENT: the caller was interrupted meanwhile (it retries the call)
            libc.ioctl(self._fd, NOTIF_SEND, ctypes.create_string_buffer(reply, len(reply)))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


if __name__ == "__main__":
    deny_io_uring_setup(getattr(errno, sys.argv[1]))
    exec(sys.argv[2])
