"""What a receive takes from the bytes received ahead of the reader
(anyio_iocp._flow.read_ahead), on its own: every engine that receives ahead
(the multishot receiver, the receive pool, the readiness engine's burst
reads) takes through it."""

from __future__ import annotations

import pytest
from helpers import SliceFails

from anyio_iocp._flow.read_ahead import take_ready


def take_all(ready: list[bytes], max_bytes: int, buffersize: int) -> list[bytes]:
    taken = []
    while ready:
        taken.append(take_ready(ready, max_bytes, buffersize))
    return taken


def test_one_chunk_is_taken_whole() -> None:
    ready = [b"abc"]
    assert take_ready(ready, 10, 10) == b"abc"
    assert ready == []


def test_whole_chunks_that_fit_are_joined_in_order() -> None:
    ready = [b"ab", b"cd", b"ef", b"gh"]
    assert take_ready(ready, 6, 100) == b"abcdef"
    assert ready == [b"gh"]


def test_the_join_stops_at_the_first_chunk_that_does_not_fit() -> None:
    # "e" would fit after "a" if "bcd" were skipped: bytes stay in order
    ready = [b"a", b"bcd", b"e"]
    assert take_all(ready, 3, 3) == [b"a", b"bcd", b"e"]


def test_no_more_than_a_buffer_is_joined() -> None:
    ready = [b"ab", b"cd", b"ef"]
    assert take_all(ready, 100, 4) == [b"abcd", b"ef"]


def test_a_first_chunk_longer_than_max_bytes_is_cut_and_its_tail_stays_first() -> None:
    ready = [b"abcdef", b"gh"]
    assert take_ready(ready, 4, 100) == b"abcd"
    assert ready == [b"ef", b"gh"]
    assert take_ready(ready, 4, 100) == b"efgh"


def test_a_first_chunk_longer_than_a_buffer_is_handed_whole_within_max_bytes() -> None:
    # (buffersize lowered while its bytes waited: nothing is joined to it)
    ready = [b"abcdef", b"gh"]
    assert take_all(ready, 100, 4) == [b"abcdef", b"gh"]


def test_every_byte_comes_out_once_in_order() -> None:
    chunks = [bytes([i]) * (1 + i * 7 % 13) for i in range(40)]
    expected = b"".join(chunks)
    for max_bytes, buffersize in ((1, 1), (5, 100), (100, 5), (16, 16), (1000, 1000)):
        ready = list(chunks)
        taken = take_all(ready, max_bytes, buffersize)
        assert b"".join(taken) == expected
        assert all(len(piece) <= max_bytes for piece in taken)
        # a piece longer than a buffer's worth is one chunk (each is one byte
        # value repeated), never a join
        limit = min(max_bytes, buffersize)
        assert all(len(set(piece)) == 1 for piece in taken if len(piece) > limit)


def test_a_take_whose_slice_fails_changes_nothing() -> None:
    class Held(SliceFails):
        fail_stop = 2

    ready: list[bytes] = [Held(b"abcd"), b"ef"]
    with pytest.raises(MemoryError):
        take_ready(ready, 2, 100)
    assert ready == [b"abcd", b"ef"]
    assert take_all(ready, 2, 100) == [b"ab", b"cd", b"ef"]


class NotBytes:
    """A chunk that b"".join refuses (TypeError): a join that fails."""

    def __len__(self) -> int:
        return 2


def test_a_take_whose_join_fails_changes_nothing() -> None:
    chunk = NotBytes()
    ready: list[bytes] = [b"ab", chunk]  # type: ignore[list-item]
    with pytest.raises(TypeError):
        take_ready(ready, 10, 10)
    assert ready == [b"ab", chunk]
