"""An engine's stream keeps its attributes in a dictionary that shares its keys.

CPython stores the attributes of instances of one class in dictionaries that
share one table of keys, as long as that table holds fewer than 30 names
(CPython 3.11 to 3.13).  An instance with a 30th attribute gets a dictionary of
its own: it grows from about 300 to about 1,600 bytes, and every attribute
read on the per-message paths gets slower.  The io_uring stream has 29; a 30th,
added for the look after a send, cost 3K-4K instructions per message on
echo 1 (``docs/performance.md``, eighteenth pass).  This test catches the next
one.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest
from helpers import open_pair


def shares_its_keys(obj: object) -> bool:
    """A dictionary that shares its keys is smaller than a copy of itself
    (which holds its keys and its values)."""
    attributes = vars(obj)
    return sys.getsizeof(attributes) < sys.getsizeof(dict(attributes))


@pytest.mark.anyio
async def test_a_streams_attributes_share_their_keys(anyio_backend: Any) -> None:
    listener, client, server = await open_pair()
    async with listener, client, server:
        for _ in range(3):  # (attributes set lazily by sends and receives)
            await client.send(b"ping")
            assert await server.receive() == b"ping"
            await server.send(b"pong")
            assert await client.receive() == b"pong"
        await anyio.sleep(0.01)
        for stream in (client, server):
            io: Any = stream._io  # type: ignore[attr-defined]
            names = list(vars(io))
            assert shares_its_keys(io), (
                f"{type(io).__name__} has {len(names)} attributes: its dictionary no "
                f"longer shares its keys (CPython shares at most 29 per class): {names}"
            )


@pytest.mark.skipif(
    sys.implementation.name != "cpython" or sys.version_info[:2] not in {(3, 11), (3, 12), (3, 13)},
    reason="the limit of 29 shared names was measured on CPython 3.11 to 3.13",
)
def test_the_check_tells_a_shared_dictionary_from_one_of_its_own() -> None:
    def with_attributes(count: int) -> object:
        body = "".join(f"        self.a{i} = {i}\n" for i in range(count))
        namespace: dict[str, Any] = {}
        exec(f"class C:\n    def __init__(self):\n{body}", namespace)
        return namespace["C"]()

    assert shares_its_keys(with_attributes(29))
    assert not shares_its_keys(with_attributes(30))
