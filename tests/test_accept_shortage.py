"""A completion engine's listener survives a descriptor shortage, on every
platform: accepts that complete with the shortage's error (EMFILE on Linux,
Winsock's WSAEMFILE on Windows) pause accepting with back-off, a task in
``accept()`` keeps waiting, and every client is served once the fault stops.

The fault is injected at the listener's primitive that posts one accept
(``_post_accept``): while it is on, each accept the listener posts is a
stand-in that takes no connection from the listen queue and whose completion
reaches the listener's completion handler with the shortage's error, as a
real accept failing for want of a descriptor does.

* io_uring: a no-op on the ring, completed as -EMFILE
  (``tests/enfile_script.py`` does the same with ENFILE);
* IOCP: a packet queued on Trio's completion port with
  ``PostQueuedCompletionStatus`` for the op's ``OVERLAPPED``, completed as
  ``WSAEMFILE`` (10024), the error ``AcceptEx`` reports.

Runs on the io_uring engine on Linux and on the IOCP engine under Wine
(``bash scripts/wine_test.sh tests/test_accept_shortage.py``).  The
POSIX-only descriptor-limit tests are in ``tests/test_exhaustion.py``.  The
last test checks the pool's probe alone (no engine), on stand-in accepts.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import anyio
import pytest
import trio
from anyio.abc import SocketAttribute, SocketStream
from helpers import (
    AddFails,
    MovedClock,
    first_listener,
    listener_class,
    post_failing_iocp_accept,
    post_failing_ring_accept,
    recv_exactly,
)

import anyio_iocp
from anyio_iocp._flow.accept_pool import PostedAcceptPool
from anyio_iocp._interface.settings import Tuning
from anyio_iocp._interface.stats import EngineCounters

pytestmark = pytest.mark.anyio

CLIENTS = 20
BACKLOG = 4
STARVED_SECONDS = 0.5
WSAEMFILE = 10024


class AcceptFault:
    """While ``on``, every accept the listener posts fails as a shortage."""

    def __init__(self) -> None:
        self.on = True
        #: stand-in accepts posted (each one an attempt to accept)
        self.refused = 0

    def install(self, monkeypatch: pytest.MonkeyPatch, engine_name: str) -> None:
        cls = listener_class(engine_name)
        real_post_accept = cls._post_accept
        fault = self

        def post_accept(listener: Any) -> Any:
            if not fault.on:
                return real_post_accept(listener)
            fault.refused += 1
            if engine_name == "io_uring":
                return post_failing_ring_accept(listener, errno.EMFILE)
            return post_failing_iocp_accept(listener, WSAEMFILE)

        monkeypatch.setattr(cls, "_post_accept", post_accept)


async def test_listener_survives_descriptor_shortage(
    engine_name: str,
    monkeypatch: pytest.MonkeyPatch,
    trace_events: list[anyio_iocp.TraceEvent],
) -> None:
    if engine_name not in ("io_uring", "iocp"):
        pytest.skip(f"the {engine_name} engine posts no accepts")
    fault = AcceptFault()
    fault.install(monkeypatch, engine_name)
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=BACKLOG)
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    accepted: list[SocketStream] = []
    clients: list[socket.socket] = []

    async def serve() -> None:
        while True:  # an error of accept() ends the test here
            accepted.append(await listener.accept())

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        await anyio.sleep(0.05)
        for _ in range(CLIENTS):  # the kernel completes these handshakes
            client = socket.create_connection(("127.0.0.1", port))
            client.settimeout(5)
            clients.append(client)
        passes_before = anyio_iocp.statistics().passes
        await anyio.sleep(STARVED_SECONDS)
        passes = anyio_iocp.statistics().passes - passes_before
        refused = fault.refused
        assert not accepted, "no accept may succeed while the fault is on"
        # back-off, not a spin: the pool, then one probe per pause (10 ms
        # doubling); a listener that reposted at once would post thousands
        assert BACKLOG < refused < 40, refused
        assert passes < 500, f"{passes} scheduler passes while starved: a busy loop"
        fault.on = False  # descriptors are free again
        with anyio.fail_after(10):
            while len(accepted) < CLIENTS:
                await anyio.sleep(0.01)
        # every client is answered, matched to its connection by port
        by_port = {s.extra(SocketAttribute.remote_port): s for s in accepted}
        for i, client in enumerate(clients):
            client.sendall(b"client %03d" % i)
            stream = by_port[client.getsockname()[1]]
            assert await recv_exactly(stream, 10) == b"client %03d" % i
            await stream.send(b"answer %03d" % i)
            # (in a thread: send() may return before the bytes reach the kernel)
            assert await anyio.to_thread.run_sync(client.recv, 10) == b"answer %03d" % i
        tg.cancel_scope.cancel()

    pauses = [e for e in trace_events if e.kind == "accept.backoff"]
    assert pauses and all(e.fields["errno"] == "EMFILE" for e in pauses)
    assert anyio_iocp.statistics().accept_backoffs == len(pauses)
    assert [e.kind for e in trace_events if e.kind == "accept.resumed"] == ["accept.resumed"]
    for stream in accepted:
        await stream.aclose()
    for client in clients:
        client.close()
    await multi.aclose()


class StandInPool(PostedAcceptPool[object]):
    """The pool's policy alone: no engine, stand-in objects as its accepts
    (each test says how they are posted)."""

    def _post_accept(self) -> object:
        raise NotImplementedError

    def _withdraw(self, op: object) -> None:
        raise AssertionError("nothing is withdrawn here")

    async def _drain(self, ops: list[object]) -> None:
        raise AssertionError("not closed here")

    def _forget(self) -> None:
        pass


def test_a_second_shortage_probes_again_after_an_older_accept_ended_the_first(
    moved_clock: MovedClock,
) -> None:
    """A shortage may end because an accept posted before it succeeds while
    the probe is still posted; the next shortage must post a probe of its own
    (the stale one may never complete: see
    tests/test_exhaustion.py::test_accept_storm_out_of_descriptors).  The pool's
    policy alone, on stand-in accepts."""
    posted: list[object] = []

    class Pool(StandInPool):
        """The pool's policy, its accepts stand-in objects."""

        def _post_accept(self) -> object:
            posted.append(object())
            return posted[-1]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        listener = Pool(sock, Tuning(backlog=4), EngineCounters())
        pool = list(posted)
        assert len(pool) == 4
        listener.exhausted(pool[0], errno.EMFILE)  # a shortage
        moved_clock.now += 1.0  # the pause is over
        listener._refill()
        first_probe = posted[-1]
        assert len(posted) == 5 and listener._probe is first_probe
        connection = socket.socket()  # stands for an accepted connection
        listener.accepted(pool[1], connection)  # an older accept ends it
        assert not listener._backoff.starving
        listener.exhausted(pool[2], errno.EMFILE)  # the next shortage
        moved_clock.now += 1.0
        listener._refill()
        assert len(posted) == 6, "the second shortage must probe with a new accept"
        assert listener._probe is posted[-1] is not first_probe
        listener.discard_queued()  # closes the stand-in connection
        assert connection.fileno() == -1


async def test_accept_retries_when_posting_the_probe_itself_fails() -> None:
    """A shortage met while *posting* an accept (on IOCP each posted accept
    needs a socket of its own) leaves nothing posted: ``accept()`` must wake at
    the end of each pause and try again, and take the connection once
    descriptors are free.  Parked without a deadline, it would wait forever."""
    attempts: list[float] = []
    free_at = anyio.current_time() + 0.3

    class Pool(StandInPool):
        """An accept pool whose every post fails with EMFILE until ``free_at``;
        an accept posted after that completes at once with a connection."""

        def _post_accept(self) -> object:
            attempts.append(anyio.current_time())
            if anyio.current_time() < free_at:
                raise OSError(errno.EMFILE, "Too many open files")
            op = object()
            trio_token.run_sync_soon(self.accepted, op, socket.socket())
            return op

    trio_token = trio.lowlevel.current_trio_token()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        listener = Pool(sock, Tuning(backlog=1), EngineCounters())
        assert len(attempts) == 1 and listener._backoff.starving  # nothing posted
        with anyio.fail_after(5):
            conn = await listener.accept()
        conn.close()
        listener.discard_queued()
    after = [t for t in attempts if t >= free_at]
    assert after, "accept() never tried again once descriptors were free"
    # retried at the end of each pause (10 ms, doubling), not in a busy loop
    assert 3 <= len(attempts) <= 10


class HoardingPool(StandInPool):
    """A pool whose accepts each hold a descriptor, in a process with
    ``free`` descriptors: posting fails with EMFILE once they are all taken,
    and a given-back accept frees its descriptor at once."""

    accepts_hold_descriptors = True

    def __init__(self, free: int, backlog: int) -> None:
        self.free = free
        self.given_back: list[object] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        super().__init__(self.sock, Tuning(backlog=backlog), EngineCounters())

    def _post_accept(self) -> object:
        if not self.free:
            raise OSError(errno.EMFILE, "Too many open files")
        self.free -= 1
        return object()

    def _give_back(self, op: object) -> None:
        assert op in self._posted and op not in self.given_back
        self.given_back.append(op)
        self.free += 1


def test_a_pool_that_takes_the_last_descriptors_gives_half_back(
    caplog: pytest.LogCaptureFixture, trace_events: list[anyio_iocp.TraceEvent]
) -> None:
    """IOCP's posted accepts own their sockets: a backlog larger than the
    descriptors left must not leave the process without any.  The pool gives
    half of its accepts back at once, keeps at most the rest (the cap the
    query reports), does not pause, and posts no more than that later."""
    with caplog.at_level("WARNING", logger="anyio_iocp"):
        pool = HoardingPool(free=101, backlog=500)
    try:
        assert len(pool.given_back) == 50
        assert pool.free == 50, "the given-back descriptors are free at once"
        assert pool.usage("backlog") == (51, 0)
        assert not pool._backoff.failures, "the pool still accepts: no pause"
        assert "gave 50 back" in caplog.text and "at most 51 of backlog 500" in caplog.text
        (event,) = [e for e in trace_events if e.kind == "accept.giveback"]
        assert (event.fields["given"], event.fields["ceiling"]) == (50, 51)
        assert event.fields["errno"] == "EMFILE"
        for op in pool.given_back:  # their completions: cancelled, no error
            pool.accept_failed(op, None)
        assert len(pool._posted) == 51
        # ten connections come in and are taken: the ceiling rises by one
        # each, and the refill posts up to it and no further
        for op in list(pool._posted)[:10]:
            pool.accepted(op, socket.socket())
        assert pool.usage("backlog") == (61, 10)
        while pool._queue:
            pool._queue.popleft().close()
        pool._refill()
        assert len(pool._posted) == 61 and pool.free == 30
        # set again, the pool tries the whole backlog: it takes the 30 left,
        # and the shortage gives half of its 91 back again
        pool.configure(backlog=500)
        assert len(pool.given_back) == 50 + 45 and pool.free == 45
        assert pool.usage("backlog") == (46, 0)
    finally:
        pool.discard_queued()
        pool.sock.close()


def test_the_ceiling_rises_with_each_connection_short_of_the_shortage() -> None:
    """A shortage the pool did not cause (the application's own sockets took
    the last descriptor) must not halve the pool for good: each connection
    accepted raises the ceiling by one, up to three quarters of the size
    that met the shortage (climbing back to that size would meet the same
    shortage again); configure(backlog=...) lifts it."""
    pool = HoardingPool(free=40, backlog=100)
    try:
        assert len(pool.given_back) == 20 and pool.usage("backlog").cap == 20
        for op in pool.given_back:
            pool.accept_failed(op, None)
        pool.free = 1000  # descriptors are free again
        for expected in [*range(21, 31), 30, 30]:
            op = next(iter(pool._posted))
            pool.accepted(op, socket.socket())
            pool._queue.popleft().close()
            pool._refill()
            assert pool.usage("backlog").cap == expected
            assert len(pool._posted) == expected
        pool.configure(backlog=100)
        assert pool.usage("backlog").cap == 100 and len(pool._posted) == 100
    finally:
        pool.discard_queued()
        pool.sock.close()


@pytest.mark.parametrize(("posted", "holds"), [(1, True), (5, False)])
def test_a_shortage_with_no_accepts_to_spare_pauses(posted: int, holds: bool) -> None:
    """With one accept posted there is none to give back; and where posted
    accepts hold no descriptor (io_uring), giving them back frees nothing: a
    shortage while posting pauses, as before."""

    class Pool(HoardingPool):
        accepts_hold_descriptors = holds

    pool = Pool(free=posted, backlog=10)
    try:
        assert not pool.given_back and len(pool._posted) == posted
        assert pool._backoff.failures == 1 and pool.usage("backlog").cap == 10
    finally:
        pool.discard_queued()
        pool.sock.close()


async def test_a_backlog_beyond_the_descriptors_left_leaves_the_process_some(
    engine_name: str,
) -> None:
    """Under Wine every socket is a Linux descriptor (20,000 here): a pool of
    65,535 posted AcceptEx, each with its own socket, would take them all.
    The process can still open a socket and connect, and the pool is capped."""
    from helpers import under_wine

    if engine_name != "iocp" or not under_wine():
        pytest.skip("the IOCP engine under Wine, where descriptors run out first")
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=65535)
    async with multi:
        listener = first_listener(multi)
        cap, _ = listener.extra(anyio_iocp.TuningAttribute.backlog)
        assert 1 <= cap < 65535
        socket.socket().close()  # a descriptor is left for the process
        port = listener.extra(SocketAttribute.local_port)
        client = await anyio.connect_tcp("127.0.0.1", port)
        async with client, await listener.accept() as server:
            await client.send(b"still served")
            assert await recv_exactly(server, 12) == b"still served"


def test_a_connection_taken_is_handed_out_when_the_refill_runs_out_of_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``accept()`` takes a connection from its queue, then refills the pool:
    a refill that fails for want of memory must not lose the connection."""
    pool = HoardingPool(free=10, backlog=1)
    conn = socket.socket()
    try:
        pool.accepted(next(iter(pool._posted)), conn)

        def no_memory() -> object:
            raise MemoryError("no memory for the accept")

        pool._post_accept = no_memory  # type: ignore[method-assign]
        with caplog.at_level("ERROR", logger="anyio_iocp"):
            assert trio.run(pool.accept) is conn
        assert "could not refill the accept pool" in caplog.text
    finally:
        conn.close()
        pool.discard_queued()
        pool.sock.close()


def test_an_accept_the_pool_cannot_list_is_withdrawn() -> None:
    """An accept posted while the pool's set of posted accepts cannot grow
    is withdrawn at once: the pool would not know of it (``close()`` would
    not wait for it, the cap would not count it).  The MemoryError reaches
    the caller, and the accept's completion, here a connection that came
    first, is taken as any other's."""
    made: list[object] = []
    withdrawn: list[object] = []

    class Pool(StandInPool):
        def _post_accept(self) -> object:
            made.append(object())
            return made[-1]

        def _withdraw(self, op: object) -> None:
            withdrawn.append(op)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        pool = Pool(sock, Tuning(backlog=2), EngineCounters())
        assert pool._posted == set(made) and len(made) == 2
        pool.accept_failed(made[0], None)  # one accept ended (cancelled)
        pool._posted = AddFails(pool._posted)
        with pytest.raises(MemoryError):
            pool._refill()
        assert withdrawn == [made[2]]
        assert pool._posted == {made[1]}
        conn = socket.socket()
        pool.accepted(made[2], conn)  # it was completed before the cancel
        assert list(pool._queue) == [conn]
        pool.discard_queued()
        assert conn.fileno() == -1
