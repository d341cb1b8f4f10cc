"""Typed attributes through which streams and listeners report their settings.

Queried with AnyIO's ``extra()``, which also looks through wrappers such as
``TLSStream``::

    stream.extra(TuningAttribute.sendcap)      # Usage(cap=20, in_use=3)
    stream.extra(TuningAttribute.configure)(recvburst=8)
"""

from __future__ import annotations

from collections.abc import Callable

from anyio import TypedAttributeSet, typed_attribute

from anyio_iocp._interface.engine import EngineInfo
from anyio_iocp._interface.settings import Usage
from anyio_iocp._interface.stats import StreamStatistics


class TuningAttribute(TypedAttributeSet):
    #: listeners: connections accepted ahead of the application, and the cap
    backlog: Usage = typed_attribute()
    #: streams: sends pending (handed over, not yet completed), and the cap;
    #: listeners: the default for accepted streams, with 0 in use
    sendcap: Usage = typed_attribute()
    #: streams: receive buffers in use right now (posted to the kernel, or
    #: filled and not yet taken by the reader), and the cap of Automatic
    #: Burst Detection
    recvburst: Usage = typed_attribute()
    #: streams: bytes received ahead of the reader, and the receive buffer size
    buffersize: Usage = typed_attribute()
    #: listeners: the idle timeout in milliseconds (0: off), and how many
    #: accepted connections are waiting for their first byte
    idletimeout: Usage = typed_attribute()
    #: the engine that moves this object's bytes
    engine: EngineInfo = typed_attribute()
    #: a function that changes settings of the live object (like Tcl's fconfigure)
    configure: Callable[..., None] = typed_attribute()


class StatisticsAttribute(TypedAttributeSet):
    #: streams: a snapshot of the stream's counters (bytes, ABD, write-behind)
    stream: StreamStatistics = typed_attribute()
