"""What every engine's stream shares: its settings, Automatic Burst Detection,
its statistics and live reconfiguration.

An engine's stream class derives from :class:`FlowStream` (and from
:class:`~anyio_iocp._flow.send_chain.WriteBehind` for its sends) and calls
:meth:`FlowStream._init_flow` first in its ``__init__``.
"""

from __future__ import annotations

import socket

from anyio_iocp._flow.abd import BurstDetector
from anyio_iocp._flow.yield_first import START_CREDIT
from anyio_iocp._interface.engine import StreamIO
from anyio_iocp._interface.settings import STREAM_SETTINGS, Tuning, check_settings
from anyio_iocp._interface.stats import EngineCounters, StreamStatistics


class FlowStream(StreamIO):
    #: the credit of a new stream for looking once more before it waits
    #: (yield_first); an engine whose failed look costs more may start lower
    start_credit = START_CREDIT
    #: the run's counters
    counters: EngineCounters
    #: Automatic Burst Detection: k receives to post ahead, within 1..recvburst
    abd: BurstDetector
    #: write-behind sends counted in the statistics
    sends_queued: int

    def _init_flow(self, sock: socket.socket, tuning: Tuning, counters: EngineCounters) -> None:
        """Every attribute set here, in one order, so that the streams' attribute
        dictionaries keep sharing their keys (an attribute added later, in
        varying order, would split them and slow every attribute access of the
        stream)."""
        self.sock = sock
        self.counters = counters
        self.bytes_in = self.bytes_out = self.sends_queued = 0
        self.abd = BurstDetector(sock, counters, tuning.recvburst)
        self.sendcap = tuning.sendcap
        self.buffersize = tuning.buffersize
        #: whether a receive that would wait yields once first (yield_first)
        self.yield_credit = self.start_credit
        #: the last scheduler pass in which the stream handed bytes to the
        #: kernel (look_after_send), as the engine's budget counts them
        self.send_pass = -1

    @property
    def recvburst(self) -> int:
        """The cap of Automatic Burst Detection's k."""
        return self.abd.cap

    @recvburst.setter
    def recvburst(self, value: int) -> None:
        self.abd.set_cap(value)

    def statistics(self) -> StreamStatistics:
        abd = self.abd
        return StreamStatistics(
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            recvburst=abd.k,
            recvburst_cap=abd.cap,
            recvburst_peak=abd.peak,
            recvburst_changes=abd.changes,
            sends_queued=self.sends_queued,
        )

    def configure(self, **settings: int) -> None:
        """Change settings of the live stream (validated first, all or nothing)."""
        checked = check_settings(settings, STREAM_SETTINGS, "a stream")
        for name, value in checked.items():
            setattr(self, name, value)
