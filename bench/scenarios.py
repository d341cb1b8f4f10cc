"""The benchmark tests: which server mode each needs and how to load it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
BASE_BACKLOG = 4096


@dataclass(frozen=True)
class Settings:
    seconds: float = 5.0
    msgsize: int = 64
    churn_concurrency: int = 16
    bulk_conns: int = 4
    storm_n: int = 3000
    storm_timeout: float = 30.0
    idle_n: int = 10000
    idle_hold: float = 3.0
    http_conns: int = 64


@dataclass(frozen=True)
class Scenario:
    name: str
    server_mode: str
    # (settings, port) -> loadgen arguments after the binary
    loadgen_args: Callable[[Settings, int], list[str]]
    # how long the load generator may run before it is considered hung
    timeout: Callable[[Settings], float]
    # loadgen result key used to pick the median of repeated runs
    primary: str
    # how many load generators run at once (their results are merged)
    processes: Callable[[Settings], int] = lambda s: 1
    # the load generator: "loadgen" (bench/loadgen.c) or "wrk"
    tool: str = "loadgen"
    # whether the C floor server (bench/floor.c) speaks this test's protocol
    has_floor: bool = True

    def backlog(self, settings: Settings) -> int:
        if self.name == "storm":
            return max(BASE_BACKLOG, 2 * settings.storm_n)
        return BASE_BACKLOG


def _echo(conns: int) -> Callable[[Settings, int], list[str]]:
    def args(s: Settings, port: int) -> list[str]:
        return ["echo", HOST, str(port), str(conns), str(s.msgsize), str(s.seconds)]

    return args


#: connections one load generator opens at most: a process can hold only
#: RLIMIT_NOFILE descriptors (20,000 hard on the machines this was written on)
STORM_PER_PROCESS = 10000


def storm_processes(s: Settings) -> int:
    """Load generators for the storm: its connections are split evenly."""
    return -(-s.storm_n // STORM_PER_PROCESS)


WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_json.lua"


def wrk_args(s: Settings, port: int) -> list[str]:
    """wrk: one thread, keep-alive connections, its report as JSON."""
    return [
        "-t1",
        f"-c{s.http_conns}",
        f"-d{max(1, round(s.seconds))}s",
        "-s",
        str(WRK_SCRIPT),
        f"http://{HOST}:{port}/",
    ]


def _timed(s: Settings) -> float:
    return s.seconds + 60.0


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("echo1", "echo", _echo(1), _timed, "ops_per_s"),
        Scenario("echo64", "echo", _echo(64), _timed, "ops_per_s"),
        Scenario(
            "churn",
            "hello",
            lambda s, port: ["churn", HOST, str(port), str(s.churn_concurrency), str(s.seconds)],
            _timed,
            "exchanges_per_s",
        ),
        Scenario(
            "bulk",
            "sink",
            lambda s, port: ["bulk", HOST, str(port), str(s.bulk_conns), str(s.seconds)],
            _timed,  # includes the loadgen's own 30 s drain limit
            "mb_per_s",
        ),
        Scenario(
            "idle",
            "echo",
            lambda s, port: ["idle", HOST, str(port), str(s.idle_n), str(s.idle_hold)],
            lambda s: s.idle_hold + 90.0,
            "held",
        ),
        Scenario(
            "storm",
            "hello",
            lambda s, port: [
                "storm",
                HOST,
                str(port),
                str(-(-s.storm_n // storm_processes(s))),
                str(s.storm_timeout),
            ],
            lambda s: s.storm_timeout + 30.0,
            "elapsed_s",
            storm_processes,
        ),
        Scenario("http", "http", wrk_args, _timed, "requests_per_s", tool="wrk", has_floor=False),
    )
}
