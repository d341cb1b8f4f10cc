"""The demo's table: medians over interleaved rounds, ranges, and verdicts that
call overlapping ranges a tie (the demo itself runs in test_cli.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    path = REPO_ROOT / "demo.py"
    if not path.exists():
        pytest.skip("demo.py is in the checkout only")
    spec = importlib.util.spec_from_file_location("anyio_iocp_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_verdict_needs_ranges_that_do_not_overlap(demo: ModuleType) -> None:
    assert demo.compare([12, 13, 14], [9, 10, 11]) == "1.30x, ahead"
    assert demo.compare([9, 10, 11], [12, 13, 14]) == "0.77x, behind"
    # medians apart, ranges overlapping: a tie, whatever the ratio says
    assert demo.compare([10, 13, 14], [9, 10, 11]) == "1.30x, a tie (the ranges overlap)"


def test_fewer_than_three_rounds_give_no_verdict(demo: ModuleType) -> None:
    assert demo.compare([20], [10]) == "2.00x (fewer than 3 rounds: no verdict)"
    assert demo.compare([20, 21, 22], [10, 11]) == "2.00x (fewer than 3 rounds: no verdict)"
    assert demo.compare([], [10, 11, 12]) == "not measured"


def test_the_table_shows_medians_ranges_and_every_rounds_checks(
    demo: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    def rounds(label: str, hello: list[float], failed_round: int | None = None) -> list[object]:
        results = []
        for i, value in enumerate(hello):
            r = demo.Result(label=label, hello_per_s=value, echo_per_s=None, bulk_mb_s=5.0)
            if i == failed_round:
                r.failures.append("echo: timed out")
            results.append(r)
        return results

    columns = [rounds("iocp", [300, 100, 200]), rounds("trio", [150, 250, 120], failed_round=2)]
    demo.print_table(columns, demo.QUICK_SIZES)
    lines = {
        line.split("  ")[0].strip(): line.split()[-2:]
        for line in capsys.readouterr().out.split("\n")
    }
    assert lines["hello exchanges/s (200)"] == ["200", "150"]  # medians, not the first round
    assert lines["echo msgs/s (4x50)"] == ["-", "-"]
    assert lines["verified"] == ["yes", "no"]  # one failed round marks the column
    demo.print_comparisons(["iocp", "trio"], columns)
    out = capsys.readouterr().out
    assert "iocp against trio (median ratio): hello 1.33x, a tie (the ranges overlap)" in out
    assert "echo not measured; bulk 1.00x, a tie (the ranges overlap)" in out


def test_repeat_must_be_at_least_one(demo: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--repeat", "0"])
    assert exit_info.value.code == 2
    assert (
        "--repeat must be a whole number of rounds, at least 1 (got 0)" in capsys.readouterr().err
    )


class _Garbling:
    """A client stream that changes one byte of the ``nth`` chunk it receives,
    or (``cut``) leaves out the last byte of the stream."""

    def __init__(self, stream: Any, nth: int, cut: bool) -> None:
        self._stream = stream
        self._nth = nth
        self._cut = cut
        self._seen = 0
        self._held: bytes | None = None  # (cut) the chunk received ahead

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def __aenter__(self) -> _Garbling:
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stream.__aexit__(*exc)

    def __aiter__(self) -> _Garbling:
        return self

    async def _next(self) -> bytes | None:
        try:
            chunk: bytes = await self._stream.receive()
        except anyio.EndOfStream:
            return None
        return chunk

    async def __anext__(self) -> bytes:
        if not self._cut:
            chunk = await self._next()
            if chunk is None:
                raise StopAsyncIteration
            self._seen += 1
            if self._seen == self._nth:
                chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
            return chunk
        if self._held is None:
            self._held = await self._next()
        held, self._held = self._held, await self._next()
        if held is None:
            raise StopAsyncIteration
        if self._held is None and len(held) > 1:
            return held[:-1]
        return held


@pytest.mark.parametrize("garble", [None, "byte", "cut"])
def test_the_echo_phase_checks_every_byte_it_gets_back(
    demo: ModuleType, monkeypatch: pytest.MonkeyPatch, garble: str | None
) -> None:
    sizes = demo.QUICK_SIZES
    payload = demo.make_payload(sizes, 1)
    real_connect = anyio.connect_tcp
    connections = 0

    async def connect(*args: object, **kwargs: object) -> object:
        nonlocal connections
        stream = await real_connect(*args, **kwargs)  # type: ignore[call-overload]
        connections += 1
        if garble is None or connections != 2:
            return stream
        return _Garbling(stream, nth=3, cut=garble == "cut")

    monkeypatch.setattr(demo.anyio, "connect_tcp", connect)
    failures: list[str] = []

    async def main() -> float:
        rate: float = await demo.run_echo(sizes, payload, failures)
        return rate

    anyio.run(main, backend="iocp")
    if garble is None:
        assert failures == []
        return
    # (the server's side of the changed connection may see it closed under it)
    failures = [f for f in failures if "server connection error" not in f]
    if garble == "byte":
        assert len(failures) == 1
        assert failures[0].startswith("echo: connection ") and "differs at byte" in failures[0]
    else:
        assert len(failures) == 1
        assert failures[0].startswith("echo: connection ") and failures[0].endswith(" bytes")
        got, expected = failures[0].split()[-2].split("/")
        assert int(got) == int(expected) - 1
