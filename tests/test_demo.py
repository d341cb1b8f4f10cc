"""The demo's table: medians over interleaved rounds, ranges, and verdicts that
call overlapping ranges a tie (the demo itself runs in test_cli.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

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
