"""What ``receive(max_bytes)`` takes from the bytes a stream received ahead of
its reader, written once for every engine that receives ahead.

A completion engine receives in chunks: one per completion of a multishot
receive, one per posted receive.  When the reader comes back, several chunks
may be waiting, and a ``recv`` on a readiness engine would have taken all of
their bytes in one call.  Handing out one chunk per ``receive()`` costs the
reader a call per chunk instead, and a server that answers what it received
(an echo, a proxy) a ``send`` per chunk too.  Measured on the demo's
in-process echo (``docs/performance.md``, twenty-seventh pass): the io_uring
engine made 1.4 stream receives for each one of the readiness engine's, 2.2
with the phase pinned to one CPU.

So a take joins the whole chunks that fit, in order, within
``min(max_bytes, buffersize)``: a receive returns no more than one buffer's
worth, as a ``recv`` into one buffer would, and as ``docs/tuning.md`` says
(a chunk received before ``buffersize`` was lowered may be longer; it is
handed out whole within ``max_bytes``, with nothing joined to it).
It never cuts a chunk to fill what is left: the cut would copy the rest of
that chunk again, for bytes the next call takes anyway.  A first chunk
longer than ``max_bytes`` is cut, as before: its head is handed out and its
tail stays first in the queue.

Every path makes its new objects (the slice, the join) before it changes the
queue: a ``MemoryError`` leaves the queue as it was, and no byte is lost.
"""

from __future__ import annotations


def take_ready(ready: list[bytes], max_bytes: int, buffersize: int) -> bytes:
    """Take, from the front of ``ready`` (not empty), at most ``max_bytes``
    bytes: the first chunk with the whole chunks after it that fit in
    ``min(max_bytes, buffersize)``, joined, or the head of a first chunk
    longer than ``max_bytes``.  Both sizes are at least 1."""
    data = ready[0]
    size = len(data)
    if size > max_bytes:
        head = data[:max_bytes]
        ready[0] = data[max_bytes:]
        return head
    limit = buffersize if buffersize < max_bytes else max_bytes
    count = 1
    waiting = len(ready)
    while count < waiting:
        size += len(ready[count])
        if size > limit:
            break
        count += 1
    if count == 1:
        del ready[0]
        return data
    joined = b"".join(ready[:count])
    del ready[:count]
    return joined
