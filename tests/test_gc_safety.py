"""Memory safety when finished operations end up in cyclic garbage.

A send that waits on the ring pins the caller's data with ``ffi.from_buffer``
(an export of a ``memoryview``).  If that export outlived the completion, a
traceback cycle holding the op and the view made CPython's cycle collector
clear the view's managed buffer under the export, and the interpreter crashed
in a later collection.  The scenario is AnyIO's own ``test_close_after_cancelled_io``
(send variant): a server fills the socket, its send is posted and waits, then
the send is cancelled and the stream closed.  It runs in a subprocess with
CPython's debug allocator, which reports the pinned view (``memoryview has 1
exported buffer``) and makes use-after-free crash at once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import ENGINES

SCENARIO = textwrap.dedent(
    """
    import gc, sys, tempfile
    from contextlib import suppress
    import anyio
    from anyio.abc import SocketAttribute, SocketStream

    family, engine = sys.argv[1], sys.argv[2]

    async def main() -> None:
        async def handler(stream: SocketStream) -> None:
            async def operate() -> None:
                with suppress(anyio.ClosedResourceError):
                    while True:
                        await stream.send(b"\\0" * 4096)

            async with anyio.create_task_group() as tg:
                tg.start_soon(operate)
                try:
                    await anyio.sleep_forever()
                finally:
                    await stream.aclose()

        path = tempfile.mktemp()
        if family == "unix":
            listener = await anyio.create_unix_listener(path)
        else:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        client = None
        try:
            async with listener, anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, handler)
                if family == "unix":
                    client = await anyio.connect_unix(path)
                else:
                    port = listener.extra(SocketAttribute.local_port)
                    client = await anyio.connect_tcp("127.0.0.1", port)
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
        finally:
            if client is not None:
                await client.aclose()

    for _ in range(5):
        anyio.run(main, backend="iocp", backend_options={"engine": engine})
        gc.collect()
    print("done")
    """
)


@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest.mark.parametrize("engine", ["io_uring", "iocp", "readiness"])
def test_cancelled_send_then_close_leaves_no_pinned_buffer(family: str, engine: str) -> None:
    if engine not in ENGINES:
        pytest.skip(f"engine {engine} not under test")
    if family == "unix" and not hasattr(socket, "AF_UNIX"):
        pytest.skip("this Python has no socket.AF_UNIX (Windows CPython)")
    result = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", SCENARIO, family, engine],
        env={**os.environ, "PYTHONMALLOC": "debug"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exported buffer" not in result.stderr
    assert result.stdout.strip() == "done"
