"""One operation posted to the io_uring engine's ring, and the memory it holds."""

from __future__ import annotations

import errno
from typing import Any

from anyio_iocp._engines.io_uring._uring import ffi
from anyio_iocp._interface.completion import CompletionOp

#: results of an operation the kernel cancelled
_CANCELLED = (-errno.ECANCELED, -errno.EINTR)


class UringOp(CompletionOp):
    """One posted operation.  ``keep`` holds the memory the kernel may touch.

    ``pins`` are the ``ffi.from_buffer`` views among it (data lent by the
    caller, not allocated here).  They are released as soon as the final
    completion is reaped: the kernel is done with the memory then, and an
    export held longer would keep a ``memoryview`` pinned.  CPython's cycle
    collector cannot clear a memoryview that has exports, and clearing its
    managed buffer around it corrupts memory, so a finished op that ends up in
    cyclic garbage (a traceback's frames hold ops and their data) must not hold
    one.
    """

    __slots__ = ("cancel_requested", "pins", "result", "user_data")

    def __init__(self, user_data: int, keep: object, pins: tuple[Any, ...] = ()) -> None:
        # the fields of CompletionOp are set here: one call per posted op
        self.user_data = user_data
        self.keep = keep
        self.pins = pins
        #: what it is, for the statistics: a name ("recv", "send"), or the
        #: shim's preparing function it was posted with
        self.kind = ""
        self.result = 0
        self.done = False
        self.cancel_requested = False
        self.task = None
        self.drainers = None

    def release_pins(self) -> None:
        """Release the views of ``pins``, once: they are cleared."""
        pins, self.pins = self.pins, ()
        for pin in pins:
            ffi.release(pin)

    @property
    def cancelled(self) -> bool:
        return self.result in _CANCELLED

    def complete(self, res: int, flags: int) -> None:
        self.result = res
        self.done = True
        self.wake()
