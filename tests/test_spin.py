"""The io_uring engine's look for completions before a sleep
(``anyio_iocp._engines.io_uring.spin``): it looks while the loop's sleeps are
short, finds the answers of a fast peer, stops looking when the loop idles,
and its setting is refused clearly when wrong."""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute
from conftest import GUEST_OPTION
from helpers import first_listener, recv_exactly, wait_for_unreaped_completion

from anyio_iocp._face.runstate import current_engine, current_state
from anyio_iocp._face.schedule import MAX_SPIN_SECONDS, SPIN_ENV, SPIN_SECONDS
from anyio_iocp._interface.budget import ScheduleBudget
from anyio_iocp._internals.pass_hooks import HOOKS_ENV

EXCHANGES = 300


def uring_engine(engine_name: str, anyio_backend: Any) -> Any:
    """The run's io_uring engine, with the look on (it is off where Trio's
    instrument calls the engine: guest mode)."""
    if engine_name != "io_uring":
        pytest.skip("the look before a sleep is the io_uring engine's")
    engine = current_engine()
    if GUEST_OPTION in anyio_backend[1] or os.environ.get(HOOKS_ENV) == "instrument":
        assert engine.spin_seconds == 0.0
        pytest.skip("no look where Trio's instrument calls the engine (guest mode)")
    return engine


#: a peer in its own process (no GIL shared with the loop): echoes what it reads
ECHO_PEER = """
import socket, sys
peer = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while data := peer.recv(64):
    peer.sendall(data)
"""


async def ping_pong(exchanges: int) -> None:
    """A stream of the engine exchanges small messages with a peer in another
    process, one at a time: the loop may sleep until each answer."""
    listener = first_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    port = listener.extra(SocketAttribute.local_port)
    async with await anyio.open_process([sys.executable, "-c", ECHO_PEER, str(port)]) as peer:
        with anyio.fail_after(30):
            stream = await listener.accept()
        await listener.aclose()
        async with stream:
            for i in range(exchanges):
                message = b"%8d" % i
                await stream.send(message)
                assert await recv_exactly(stream, len(message)) == message
        await peer.wait()


@pytest.mark.anyio
async def test_a_peer_that_answers_during_the_look_is_found(
    engine_name: str, anyio_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receive that must wait (strict mode: no look for the answer by a
    yield first) parks, and the loop's pass that may block looks at the ring
    first, because its last sleep was short; a peer that answers while the
    look yields the CPU is found: the pass does not sleep, and the receive
    gets the answer.

    The peer answers from inside the look's first ``sched_yield`` (a socket
    of this process), where a peer process sharing the CPU would run: a
    peer in its own process answers within the window only when the machine
    is not loaded (such a test failed in CI with 1 look and 0 found)."""
    import socket

    engine = uring_engine(engine_name, anyio_backend)
    assert engine.spin_seconds == SPIN_SECONDS
    engine.budget = ScheduleBudget("strict")
    # A window far beyond any setting (the attribute takes it unchecked): the
    # look ends as soon as it finds the answer, which the peer sends in its
    # first yield, so only a loop preempted for this long between the start
    # of the look and its first check could miss the peer (with 1 ms, a
    # preemption made the look give up before it yielded).  The look is
    # bounded by the pass's timeout too, within the receive's fail_after.
    engine.spin_seconds = 1.0
    answers: list[bytes] = []
    real_yield = os.sched_yield  # (the look calls it through the os module)

    def peer_answers_during_the_yield() -> None:
        if answers:
            peer.sendall(answers.pop(0))
        real_yield()

    listener = first_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    port = listener.extra(SocketAttribute.local_port)
    with socket.create_connection(("127.0.0.1", port)) as peer:
        async with listener, await listener.accept() as stream:
            monkeypatch.setattr(os, "sched_yield", peer_answers_during_the_yield)
            before_looks, before_found = engine.spin.looks, engine.spin.found
            for i in range(3):
                answer = b"answer %d" % i
                answers.append(answer)
                engine.spin.last_sleep = 0.0  # the loop's last sleep was short
                with anyio.fail_after(5):
                    assert await stream.receive() == answer
                assert answers == [], "the look yielded the CPU to the peer"
            assert engine.spin.looks - before_looks == 3
            assert engine.spin.found - before_found == 3


@pytest.mark.anyio
async def test_a_look_that_finds_completions_leaves_the_ring_watch_alone(
    engine_name: str, anyio_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look that found completions makes the pass's wait return at once, so
    the ring's watch is not armed for it: no ``epoll_ctl`` between the
    completion and its task.  A look that finds nothing arms it: the wait
    after it may block."""
    import socket

    engine = uring_engine(engine_name, anyio_backend)
    listener = first_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    watch = engine._watch
    if watch is None:
        await listener.aclose()
        pytest.skip("the ring is watched by a task here ($ANYIO_IOCP_RING_WAKEUP=task)")
    arms: list[None] = []
    arm = watch.arm

    def counted_arm() -> None:
        arms.append(None)
        arm()

    monkeypatch.setattr(watch, "arm", counted_arm)
    port = listener.extra(SocketAttribute.local_port)
    with socket.create_connection(("127.0.0.1", port)) as peer:
        async with listener, await listener.accept() as stream:
            with anyio.move_on_after(0.01):
                await stream.receive()  # has to wait: a receive stays armed
            peer.sendall(b"x")
            wait_for_unreaped_completion(engine)
            engine.spin.last_sleep = 0.0  # the loop's sleeps are short: it looks
            watch.armed = False
            arms.clear()  # (the loop's own waits armed it)
            assert engine.before_io_wait(1.0) == 0.0, "the look found the completion"
            assert arms == []
            assert await stream.receive() == b"x"  # (the next pass reaps it)
            engine.spin.last_sleep = 0.0
            watch.armed = False
            arms.clear()
            assert engine.before_io_wait(0.001) is not None  # looked, found nothing
            assert len(arms) == 1, "a wait that may block has the watch armed"


@pytest.mark.anyio
async def test_no_look_when_it_is_off(engine_name: str, anyio_backend: Any) -> None:
    engine = uring_engine(engine_name, anyio_backend)
    engine.spin_seconds = 0.0
    engine.budget = ScheduleBudget("strict")
    engine.spin.last_sleep = 0.0  # (a short sleep would turn the look on)
    before = engine.spin.looks
    await ping_pong(EXCHANGES // 3)
    assert engine.spin.looks == before


@pytest.mark.anyio
async def test_an_idle_loop_stops_looking(engine_name: str, anyio_backend: Any) -> None:
    """After a short sleep the loop looks once; that look finds nothing and
    its sleep is long (nothing to do for 20 ms), which turns the look off
    for the sleeps after it."""
    engine = uring_engine(engine_name, anyio_backend)
    engine.spin.last_sleep = 0.0  # the last sleep was short: the look is on
    before = engine.spin.looks
    for _ in range(10):
        await anyio.sleep(0.02)
    assert engine.spin.looks - before == 1


@pytest.mark.anyio
async def test_no_look_after_a_wake_up_the_ring_did_not_bring(
    engine_name: str, anyio_backend: Any
) -> None:
    """A sleep ended by something a look cannot see (here a worker thread's
    result, which wakes the loop through Trio's own wake-up, outside the
    ring) turns the look off: a look there would spend its whole window
    for nothing, every second pass."""
    engine = uring_engine(engine_name, anyio_backend)
    engine.budget = ScheduleBudget("strict")
    engine.spin.last_sleep = 0.0  # a short sleep that the ring ended: the look is on
    before = engine.spin.looks
    for _ in range(40):
        await anyio.to_thread.run_sync(int)
    assert engine.spin.looks - before == 1


async def spin_seconds() -> float:
    """The run's setting (the engine's own is 0 where Trio's instrument calls it)."""
    seconds: float = current_state().spin_seconds
    return seconds


def test_the_spin_setting_and_its_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SPIN_ENV, raising=False)
    run: Any = anyio.run
    assert run(spin_seconds, backend="iocp") == SPIN_SECONDS
    assert run(spin_seconds, backend="iocp", backend_options={"spin": 0}) == 0.0
    assert run(spin_seconds, backend="iocp", backend_options={"spin": 0.0005}) == 0.0005
    monkeypatch.setenv(SPIN_ENV, "0.0002")
    assert run(spin_seconds, backend="iocp") == 0.0002
    # the option wins over the environment
    assert run(spin_seconds, backend="iocp", backend_options={"spin": 0.0001}) == 0.0001
    for bad in (-0.001, MAX_SPIN_SECONDS * 2, float("inf"), float("nan"), True, "fast", 10**400):
        with pytest.raises(ValueError, match="backend option 'spin' must be a number of seconds"):
            run(spin_seconds, backend="iocp", backend_options={"spin": bad})
    monkeypatch.setenv(SPIN_ENV, " ")  # blank: the default, as when unset
    assert run(spin_seconds, backend="iocp") == SPIN_SECONDS
    for bad_env in ("soon", "-1", "5"):
        monkeypatch.setenv(SPIN_ENV, bad_env)
        with pytest.raises(ValueError, match=f"{SPIN_ENV}='{bad_env}' must be a number"):
            run(spin_seconds, backend="iocp")
