"""Whether io_uring can run here, and why not: probed, never assumed.

io_uring can be missing or refused in several ways, each reported by name:

* the shim was not built (not Linux, no compiler when installed, or
  ``ANYIO_IOCP_NO_URING=1`` at install time);
* ``kernel.io_uring_disabled`` is 1 (only for members of
  ``kernel.io_uring_group``) or 2 (off for everyone);
* ``io_uring_setup`` fails with ENOSYS (kernel built without io_uring, or a
  seccomp filter that fakes ENOSYS), EPERM (a container's seccomp policy, or
  the sysctl above), ENOMEM (locked-memory limit on old kernels);
* an opcode this backend needs is missing (found with ``IORING_REGISTER_PROBE``).

The optional kernel features the engine uses (multishot accept and receive,
cooperative task running) are probed on a scratch ring.  The result is
computed once per process and cached.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import sys
from typing import Any

#: how the reason starts when the io_uring shim cannot be imported
SHIM_NOT_BUILT = "the io_uring shim (anyio_iocp._engines.io_uring._uring) is not built"

_SETUP_ERRORS = {
    errno.ENOSYS: "io_uring_setup failed with ENOSYS: the kernel has no io_uring, "
    "or a seccomp filter hides it",
    errno.EPERM: "io_uring_setup failed with EPERM: refused by a seccomp policy "
    "(containers) or by kernel.io_uring_disabled",
    errno.EACCES: "io_uring_setup failed with EACCES: refused by a security module",
    errno.ENOMEM: "io_uring_setup failed with ENOMEM: locked-memory limit "
    "(RLIMIT_MEMLOCK) too low for the ring",
    errno.EINVAL: "io_uring_setup failed with EINVAL: the kernel is too old for "
    "the ring parameters used",
}

# opcode name -> why it is needed
_REQUIRED_OPCODES = {
    "IORING_OP_RECV": "receive",
    "IORING_OP_SEND": "send",
    "IORING_OP_ACCEPT": "accept",
    "IORING_OP_POLL_ADD": "connect (the wait for a handshake under way)",
    "IORING_OP_ASYNC_CANCEL": "cancellation",
}


def _read_sysctl_disabled() -> int | None:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


@functools.cache
def probe_io_uring() -> tuple[bool, str, tuple[tuple[str, Any], ...]]:
    """(usable, reason, details) for the io_uring engine on this machine."""
    return _probe_io_uring(_required_opcodes())


def _required_opcodes() -> dict[int, str]:
    """opcode number -> "NAME (purpose)" for every opcode the engine posts."""
    try:
        from anyio_iocp._engines.io_uring._uring import lib
    except ImportError:
        return {}
    return {
        getattr(lib, name): f"{name} ({purpose})" for name, purpose in _REQUIRED_OPCODES.items()
    }


def _probe_io_uring(required: dict[int, str]) -> tuple[bool, str, tuple[tuple[str, Any], ...]]:
    if not sys.platform.startswith("linux"):
        return False, f"io_uring exists only on Linux (this is {sys.platform})", ()
    try:
        from anyio_iocp._engines.io_uring._uring import ffi, lib
        from anyio_iocp._engines.io_uring.engine import RING_CQ_ENTRIES, RING_ENTRIES
    except ImportError as exc:
        return False, f"{SHIM_NOT_BUILT}: {exc}", ()

    disabled = _read_sysctl_disabled()
    ring_pp = ffi.new("iou_ring **")
    # the engine's own sizes, so that a run never meets a failure the probe missed
    rc = lib.iou_open(ring_pp, RING_ENTRIES, RING_CQ_ENTRIES, 0)
    if rc < 0:
        reason = _SETUP_ERRORS.get(-rc, f"io_uring_setup failed: {os.strerror(-rc)}")
        if disabled:
            reason += f" (kernel.io_uring_disabled = {disabled})"
        return False, reason, ()
    ring = ring_pp[0]
    try:
        supported = ffi.new("unsigned char[256]")
        last = lib.iou_probe(ring, supported, 256)
        if last < 0:
            return False, f"IORING_REGISTER_PROBE failed: {os.strerror(-last)}", ()
        missing = [label for opcode, label in required.items() if not supported[opcode]]
        features = lib.iou_features(ring)
    finally:
        lib.iou_close(ring)
    if missing:
        return False, "the kernel lacks io_uring opcodes: " + ", ".join(missing), ()
    details = (
        ("features", hex(features)),
        ("nodrop", bool(features & lib.IORING_FEAT_NODROP)),
        ("fast_poll", bool(features & lib.IORING_FEAT_FAST_POLL)),
        ("multishot_accept", _probe_multishot_accept()),
        ("multishot_recv", _probe_multishot_recv()),
        ("coop_taskrun", _probe_coop_taskrun()),
    )
    return True, "io_uring_setup succeeded and every opcode needed is supported", details


def _probe_coop_taskrun() -> bool:
    """``IORING_SETUP_COOP_TASKRUN`` (Linux 5.19): completions wait for the
    loop's next system call instead of interrupting it; older kernels refuse
    the flag with EINVAL."""
    from anyio_iocp._engines.io_uring._uring import lib

    ring = _scratch_ring(lib.IORING_SETUP_COOP_TASKRUN)
    if ring is None:
        return False
    lib.iou_close(ring)
    return True


def _scratch_ring(flags: int = 0) -> Any:
    """A small ring for one probe (the caller closes it), or None."""
    from anyio_iocp._engines.io_uring._uring import ffi, lib

    ring_pp = ffi.new("iou_ring **")
    if lib.iou_open(ring_pp, 8, 0, flags) < 0:
        return None
    return ring_pp[0]


def _probe_multishot_accept() -> bool:
    """Multishot accept has no probe flag: try it once on a loopback listener."""
    from anyio_iocp._engines.io_uring._uring import ffi, lib

    ring = _scratch_ring()
    if ring is None:
        return False
    listener = socket.socket()
    client = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        lib.iou_prep_accept(ring, listener.fileno(), 1, 1)
        lib.iou_submit(ring, 0)
        client.connect(listener.getsockname())
        lib.iou_submit(ring, 1)
        cqes = ffi.new("iou_cqe[]", 4)
        n = lib.iou_reap(ring, cqes, 4)
        ok = False
        for i in range(n):
            if cqes[i].res >= 0:
                os.close(cqes[i].res)
                ok = bool(cqes[i].flags & lib.IORING_CQE_F_MORE)
        # cancel the multishot accept and wait for its final completion
        lib.iou_prep_cancel(ring, 1, 0)
        lib.iou_submit(ring, 2 if ok else 1)
        lib.iou_reap(ring, cqes, 4)
        return ok
    except OSError:
        return False
    finally:
        client.close()
        listener.close()
        lib.iou_close(ring)


def _probe_multishot_recv() -> bool:
    """Multishot receive into a provided buffer ring, capped in total bytes
    (the cap is Linux 6.17's; multishot receive itself is 6.0's): try it once.

    Armed with a cap of 1 byte and given 2, a kernel that honours the cap ends
    the operation with the first completion (no ``IORING_CQE_F_MORE``).  One
    that ignores the cap would keep it armed, and a stream could not bound what
    it reads ahead: streams then post single receives with buffers of their own."""
    from anyio_iocp._engines.io_uring._uring import ffi, lib

    ring = _scratch_ring()
    if ring is None:
        return False
    pool_pp = ffi.new("iou_pbuf **")
    left, right = socket.socketpair()
    try:
        if lib.iou_pbuf_open(ring, pool_pp, 0, 2, 64) < 0:
            return False
        lib.iou_prep_recv_multishot(ring, left.fileno(), 0, 1, 1)
        lib.iou_submit(ring, 0)
        right.send(b"xy")
        lib.iou_submit(ring, 1)
        cqes = ffi.new("iou_cqe[]", 4)
        n = lib.iou_reap(ring, cqes, 4)
        ok = n >= 1 and all(
            cqes[i].res > 0
            and not cqes[i].flags & lib.IORING_CQE_F_MORE
            and cqes[i].flags & lib.IORING_CQE_F_BUFFER
            for i in range(n)
        )
        more = any(cqes[i].flags & lib.IORING_CQE_F_MORE for i in range(n))
        if more:  # still armed: cancel it and wait for the final completion
            lib.iou_prep_cancel(ring, 1, 0)
            lib.iou_submit(ring, 2)
            lib.iou_reap(ring, cqes, 4)
        return ok
    except OSError:
        return False
    finally:
        left.close()
        right.close()
        lib.iou_close(ring)
        if pool_pp[0] != ffi.NULL:
            lib.iou_pbuf_close(ffi.NULL, pool_pp[0])
