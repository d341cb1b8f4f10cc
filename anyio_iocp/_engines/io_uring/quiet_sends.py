"""Quiet sends: ring sends whose successful completions cost Python nothing.

The model
---------
A stream whose ``send()`` finds nothing of its own pending can hand the bytes
to the ring and return at once: the submission entry is prepared now and goes
to the kernel with every other entry of the scheduler pass, in the pass's one
``io_uring_enter``.  Sending one message then costs no system call of its own,
and a pass that answers many streams makes one system call for all of them
(a direct ``send`` per message makes one each, and each can hand the CPU to
the peer it wakes).

What the completion of such a send says is nearly always "every byte went
out", and handing that to Python (an operation object, a table lookup, a
method call per send) cost as much as the system call saved.  So the C reaper
keeps it: the entry's ``user_data`` carries a tag, the stream's *slot* and the
send's length, and the reaper adds one to the slot's count of completed quiet
sends (``iou_quiet.done``) without copying the completion out.  Any other
result (an error, a short send, a cancel) is copied out as usual, and so is
every completion of a *watched* slot: a task that waits for the send (a second
``send()``, a flush, a close) watches it.

The traps
---------
* Memory: the bytes stay referenced (``keep``, by slot, held by the engine so
  that a stream dropped without ``close()`` cannot free them) until the slot's
  count covers the send.  A mutable buffer is copied first, so the caller may
  reuse it when ``send()`` returns, as with write-behind sends.
* Order: a stream has at most one quiet send in flight, and posts nothing else
  (no direct send, no ring send, no queued chain) until the count says it is
  done: the kernel does not order independent sends on one socket when one of
  them has to wait for room.  A quiet send posted in the current pass has not
  reached the kernel yet, so a second send of its stream in the same pass
  submits the ring at once (:meth:`UringEngine.submit_now`) instead of
  waiting a whole pass for it; on loopback it is then done.
* Short sends: the sends carry ``MSG_WAITALL``, with which the kernel finishes
  a short send on a stream socket by itself; a result below the length is an
  error, copied out.
* Errors are the write-behind ones: the first is recorded on the stream and
  raised by its next operation (a receive too, or the close); nothing queued
  behind a failed send goes out.
* Closing, and the end of the run, need an operation to cancel and to wait
  for: a quiet send still in flight then becomes one (:meth:`QuietSends.op`,
  registered under the send's ``user_data``), and the slot is watched so that
  its completion reaches the operation.
* Slots: ``SLOTS - 1`` streams may have a slot at once (a stream takes one at
  its first quiet send and gives it back at close); a stream that finds none
  sends directly.
* When ("auto"): a stream's first ``QUIET_AFTER`` sends go directly, and later
  ones go quiet while the engine's recent passes had ``MANY_SENDERS`` or more
  sending streams each (:class:`SendersPerPass`), except on a stream that
  sent more than once in this pass or the last one: a stream that streams
  (a writer's loop, an echo handler that finds more bytes at once) sends
  directly, one system call each, where quiet sends would make every second
  send of a pass wait for the first (the demo's echo phase ran at half the
  rate).  ``$ANYIO_IOCP_SEND``: ``ring`` sends quietly whenever the stream
  can, ``direct`` never does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anyio_iocp._engines.io_uring._uring import ffi, lib
from anyio_iocp._engines.io_uring.multishot import LOAD_WINDOW
from anyio_iocp._engines.io_uring.op import UringOp

if TYPE_CHECKING:
    from anyio_iocp._engines.io_uring.stream import UringStreamIO

#: slots for streams with quiet sends (slot 0 means "none")
SLOTS = 1 << 16
#: the tag of a quiet send's user_data (the shim's IOU_QUIET_TAG)
QUIET_TAG = 1 << 63
#: the largest send that goes quiet: a bigger one may not fit the socket's
#: buffer, and waits in the kernel either way
QUIET_MAX = 64 * 1024
#: the completion counts wrap at 2**32
COUNT_MASK = 0xFFFFFFFF
#: sending streams per scheduler pass from which sends go quiet ("auto")
MANY_SENDERS = 4
#: sends a stream makes directly before its sends may go quiet: a short
#: connection (a request, an answer, the close) would pay for a slot and a
#: wait at close, and save nothing
QUIET_AFTER = 4


class SendersPerPass:
    """Streams that sent something, per scheduler pass, averaged over windows
    of ``LOAD_WINDOW`` passes: what decides between quiet and direct sends.

    A quiet send waits for the end of the pass, and saves a system call only
    when the pass's one submission carries the sends of several streams.  A
    lone busy stream (one connection exchanging small messages) sends many
    times per pass on a budget, but each message then waits a whole pass, so
    the count is of *streams*, not of sends."""

    __slots__ = ("_many", "_passes_then", "_senders_then", "senders", "window_ends")

    def __init__(self) -> None:
        #: streams counted so far (a stream once per pass it sends in)
        self.senders = 0
        #: the pass count at which the current window is complete (the engine
        #: asks :meth:`many` again from then on, not on every pass)
        self.window_ends = LOAD_WINDOW
        self._passes_then = 0
        self._senders_then = 0
        self._many = False  # direct sends until a window says otherwise

    def many(self, passes: int) -> bool:
        """Whether the last complete window had ``MANY_SENDERS`` or more
        sending streams per pass (``passes``: the engine's pass count)."""
        window = passes - self._passes_then
        if window >= LOAD_WINDOW:
            self._many = self.senders - self._senders_then >= MANY_SENDERS * window
            self._passes_then, self._senders_then = passes, self.senders
            self.window_ends = passes + LOAD_WINDOW
        return self._many


def quiet_user_data(slot: int, length: int) -> int:
    """The user_data the shim gives a quiet send (``iou_prep_send_quiet``)."""
    return QUIET_TAG | slot << 32 | length


class QuietSends:
    """The engine's table of quiet sends: counts by slot (shared with the C
    reaper), the bytes each slot has in flight, and the slot's stream."""

    __slots__ = ("_free", "_next", "done", "keep", "posted", "streams", "table", "watch")

    def __init__(self, ring: Any) -> None:
        #: per slot, quiet sends completed (the reaper adds to it)
        self.done = ffi.new("uint32_t[]", SLOTS)
        #: per slot, non-zero: the reaper copies every completion out
        self.watch = ffi.new("uint8_t[]", SLOTS)
        self.table = ffi.new("iou_quiet *")
        self.table.done = self.done
        self.table.watch = self.watch
        self.table.slots = SLOTS
        lib.iou_set_quiet(ring, self.table)
        #: the stream of each slot in use (for what the reaper copies out)
        self.streams: dict[int, UringStreamIO] = {}
        #: the bytes of each slot's last quiet send (alive until it completed)
        self.keep: dict[int, bytes] = {}
        #: quiet sends posted (every slot)
        self.posted = 0
        self._free: list[int] = []
        self._next = 1

    def acquire(self, stream: UringStreamIO) -> int:
        """A slot for ``stream``, or 0 when every slot is taken."""
        if self._free:
            slot = self._free.pop()
        elif self._next < SLOTS:
            slot = self._next
            self._next += 1
        else:
            return 0
        self.streams[slot] = stream
        self.watch[slot] = 0
        return slot

    def release(self, slot: int) -> None:
        """Give back a slot whose sends have all completed."""
        del self.streams[slot]
        self.keep.pop(slot, None)
        self.watch[slot] = 0
        self._free.append(slot)

    def in_flight(self) -> int:
        """Quiet sends posted and not completed, every slot."""
        return self.posted - int(self.table.completed)

    def op(self, slot: int, length: int, ops: dict[int, Any]) -> UringOp:
        """The in-flight quiet send of ``slot`` as an operation in ``ops`` (the
        engine's table), so that it can be cancelled and waited for.  From
        now on the reaper copies the slot's completions out."""
        uid = quiet_user_data(slot, length)
        op = ops.get(uid)
        if op is None:
            op = ops[uid] = UringOp(uid, self.keep.get(slot))
            op.kind = "send_quiet"
        self.watch[slot] = 1
        return op

    def reported(self, uid: int, res: int) -> None:
        """A completion the reaper copied out (watched, or not every byte sent)."""
        slot = uid >> 32 & 0x7FFFFFFF
        stream = self.streams.get(slot)
        if stream is not None:
            self.watch[slot] = 0
            stream.on_quiet_send_complete(res, uid & COUNT_MASK)
