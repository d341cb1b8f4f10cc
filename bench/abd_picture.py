"""Automatic Burst Detection, pictured (after iocpsock's netio.jpg).

Two processes on loopback, both AnyIO on the ``iocp`` backend with the io_uring
engine forced:

* the receiver accepts one connection (``recvburst`` 32, ``buffersize`` 16 KiB
  by default) and reads as fast as it can; a second task samples, every
  ~20 ms, ``stream.extra(TuningAttribute.recvburst).in_use`` (receive buffers
  in use: posted, or filled and not yet taken) and the bytes read since the
  previous sample;
* the sender writes 64 KiB chunks without pause and raises its ``sendcap`` with
  ``anyio_iocp.configure`` step by step (1, 2, 4, 8, 16, 32; ~1.5 s each).

Both processes stamp events with ``time.monotonic()`` (CLOCK_MONOTONIC, shared
by all processes), so the receiver's samples line up with the sender's steps.

Output: a CSV of the samples (time_s, sendcap, recvburst_in_use, mb_per_s) and
a PNG chart (needs matplotlib) of throughput and in_use over time with the
sendcap steps marked.

Usage: python bench/abd_picture.py [--png docs/images/abd.png] [--recvburst 32]
           [--buffersize 16384] [--steps 1,2,4,8,16,32] [--step-seconds 1.5]
           [--pin split|same|none]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import select
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream
from pinning import pin_to

import anyio_iocp
from anyio_iocp import TuningAttribute

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_PNG = BENCH_DIR.parent / "docs" / "images" / "abd.png"
HOST = "127.0.0.1"
CHUNK = 65536
SAMPLE_SECONDS = 0.02
START_TIMEOUT = 30.0
RUN_OPTIONS: dict[str, Any] = {"engine": "io_uring"}
PIN_MODES = ("split", "same", "none")


# -- receiver process -------------------------------------------------------


def _check_engine(stream: SocketStream) -> None:
    engine = stream.extra(TuningAttribute.engine)
    if engine.name != "io_uring":
        raise SystemExit(f"abd_picture: expected the io_uring engine, got {engine}")


async def _receiver(recvburst: int, buffersize: int) -> None:
    listener = await anyio_iocp.create_tcp_listener(
        local_host=HOST, local_port=0, recvburst=recvburst, buffersize=buffersize
    )
    async with listener:
        print(listener.extra(SocketAttribute.local_port), flush=True)
        stream: SocketStream = await listener.listeners[0].accept()
    _check_engine(stream)
    cap = stream.extra(TuningAttribute.recvburst).cap
    if cap != recvburst:
        raise SystemExit(f"abd_picture: accepted stream has recvburst {cap}, not {recvburst}")
    received = 0
    samples: list[tuple[float, int, int]] = []  # (monotonic, in_use, bytes so far)
    done = anyio.Event()

    async def sample() -> None:
        while not done.is_set():
            in_use = stream.extra(TuningAttribute.recvburst).in_use
            samples.append((time.monotonic(), in_use, received))
            await anyio.sleep(SAMPLE_SECONDS)

    async with stream, anyio.create_task_group() as tg:
        tg.start_soon(sample)
        try:
            while True:
                received += len(await stream.receive(CHUNK))
        except anyio.EndOfStream:
            pass
        done.set()
    print(json.dumps({"received": received, "samples": samples}), flush=True)


# -- sender process ---------------------------------------------------------


async def _sender(port: int, steps: list[int], step_seconds: float) -> None:
    payload = bytes(CHUNK)  # immutable: write-behind sends need no copy
    stream: SocketStream = await anyio_iocp.connect_tcp(HOST, port, sendcap=steps[0])
    _check_engine(stream)
    marks: list[tuple[float, int]] = []  # (monotonic, sendcap from then on)
    pending: list[tuple[float, int]] = []  # (monotonic, sends pending: sendcap in_use)
    sent = 0
    sending = True

    async def sample() -> None:
        while sending:
            pending.append((time.monotonic(), stream.extra(TuningAttribute.sendcap).in_use))
            await anyio.sleep(SAMPLE_SECONDS)

    async with stream, anyio.create_task_group() as tg:
        tg.start_soon(sample)
        for sendcap in steps:
            anyio_iocp.configure(stream, sendcap=sendcap)
            started = time.monotonic()
            marks.append((started, stream.extra(TuningAttribute.sendcap).cap))
            deadline = started + step_seconds
            while time.monotonic() < deadline:
                await stream.send(payload)
                sent += CHUNK
        marks.append((time.monotonic(), 0))  # end of sending
        sending = False
        await stream.send_eof()
        # wait for the receiver to close (it has read everything)
        try:
            while True:
                await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    print(json.dumps({"sent": sent, "marks": marks, "pending": pending}), flush=True)


# -- driver -----------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    time_s: float
    sendcap: int
    in_use: int
    mb_per_s: float


def _cpus(mode: str) -> tuple[int | None, int | None]:
    """(receiver CPU, sender CPU) for a pin mode."""
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "split":
        return cpus[-1], cpus[0]
    if mode == "same":
        return cpus[-1], cpus[-1]
    return None, None


def _read_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if not line.strip().isdigit():
        proc.kill()
        raise SystemExit(f"abd_picture: receiver did not print its port (got {line!r})")
    return int(line)


def _last_json(proc: subprocess.Popen[str], who: str, timeout: float) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SystemExit(f"abd_picture: {who} hung (killed after {timeout:.0f} s)") from None
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"abd_picture: {who} exited with status {proc.returncode}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_pair(
    recvburst: int, buffersize: int, steps: list[int], step_seconds: float, pin: str
) -> tuple[list[Sample], dict[str, Any]]:
    me = [sys.executable, str(Path(__file__).resolve())]
    rcpu, scpu = _cpus(pin)
    receiver = subprocess.Popen(
        [*me, "receiver", str(recvburst), str(buffersize)],
        preexec_fn=pin_to(None if rcpu is None else frozenset([rcpu])),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = _read_port(receiver)
        steps_arg = ",".join(map(str, steps))
        sender = subprocess.Popen(
            [*me, "sender", str(port), steps_arg, str(step_seconds)],
            preexec_fn=pin_to(None if scpu is None else frozenset([scpu])),
            stdout=subprocess.PIPE,
            text=True,
        )
        limit = len(steps) * step_seconds + 60.0
        sent = _last_json(sender, "sender", limit)
        got = _last_json(receiver, "receiver", 30.0)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    marks: list[tuple[float, int]] = [(float(t), int(c)) for t, c in sent["marks"]]
    raw: list[tuple[float, int, int]] = [(float(t), int(u), int(b)) for t, u, b in got["samples"]]
    t0 = marks[0][0]
    samples: list[Sample] = []
    for (t_prev, _, b_prev), (t, in_use, b) in pairwise(raw):
        if t < t0 or t > marks[-1][0]:
            continue
        sendcap = next(c for mt, c in reversed(marks) if mt <= t)
        mbps = (b - b_prev) / (t - t_prev) / 1e6 if t > t_prev else 0.0
        samples.append(Sample(round(t - t0, 4), sendcap, in_use, round(mbps, 2)))
    pending: dict[int, list[int]] = {}  # sendcap -> the sender's in_use samples
    for t, in_use in sent["pending"]:
        if marks[0][0] <= t < marks[-1][0]:
            cap = next(c for mt, c in reversed(marks) if mt <= t)
            pending.setdefault(cap, []).append(int(in_use))
    info = {
        "sent": sent["sent"],
        "received": got["received"],
        "marks": [(round(t - t0, 4), c) for t, c in marks],
        "pending": pending,
    }
    return samples, info


def write_csv(path: Path, samples: Sequence[Sample]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s", "sendcap", "recvburst_in_use", "mb_per_s"])
        for s in samples:
            w.writerow([f"{s.time_s:.4f}", s.sendcap, s.in_use, f"{s.mb_per_s:.2f}"])


def _rolling_mean(values: Sequence[float], width: int) -> list[float]:
    out: list[float] = []
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


def draw(
    path: Path,
    samples: Sequence[Sample],
    marks: Sequence[tuple[float, int]],
    recvburst: int,
    buffersize: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.time_s for s in samples]
    mbps = [s.mb_per_s for s in samples]
    in_use = [float(s.in_use) for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 6.5), height_ratios=(3, 2))
    top.plot(t, mbps, color="#9ecae1", linewidth=0.8, label="per 20 ms sample")
    top.plot(t, _rolling_mean(mbps, 10), color="#08519c", linewidth=1.8, label="mean of 10")
    top.set_ylabel("received MB/s")
    top.set_ylim(bottom=0)
    top.legend(loc="lower right", fontsize=9)
    bottom.plot(t, in_use, ".", color="#fc9272", markersize=3, label="in_use per sample")
    bottom.plot(t, _rolling_mean(in_use, 10), color="#a50f15", linewidth=1.8, label="mean of 10")
    bottom.axhline(recvburst, color="grey", linestyle=":", linewidth=1)
    bottom.set_ylabel(f"receive buffers in use\n(recvburst in_use, cap {recvburst})")
    bottom.set_ylim(-0.5, recvburst + 1.5)
    bottom.set_xlabel("seconds since the first sendcap step")
    bottom.legend(loc="upper left", fontsize=9)
    bottom.set_title(
        "in_use: receive buffers posted to the kernel or filled and not yet taken; "
        "it falls from k to 0 as the reader takes a chain's bytes",
        fontsize=9,
        loc="left",
    )
    ymax = top.get_ylim()[1]
    for (start, cap), (end, _) in pairwise(marks):
        for ax in (top, bottom):
            ax.axvline(start, color="black", linewidth=0.8, linestyle="--")
        top.text((start + end) / 2, ymax * 0.97, f"sendcap {cap}", ha="center", va="top")
    for ax in (top, bottom):
        ax.axvline(marks[-1][0], color="black", linewidth=0.8, linestyle="--")
        ax.grid(True, alpha=0.3)
    fig.suptitle(
        "anyio-iocp, io_uring engine: Automatic Burst Detection on the receiver "
        f"(recvburst {recvburst}, buffersize {buffersize // 1024} KiB)\n"
        "while the sender (64 KiB writes) raises sendcap step by step, loopback",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _steps(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str]) -> int:
    if argv[:1] == ["receiver"]:
        anyio.run(
            _receiver, int(argv[1]), int(argv[2]), backend="iocp", backend_options=RUN_OPTIONS
        )
        return 0
    if argv[:1] == ["sender"]:
        anyio.run(
            _sender,
            int(argv[1]),
            _steps(argv[2]),
            float(argv[3]),
            backend="iocp",
            backend_options=RUN_OPTIONS,
        )
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--png", type=Path, default=DEFAULT_PNG, help="chart (CSV goes beside it)")
    p.add_argument("--recvburst", type=int, default=32)
    p.add_argument("--buffersize", type=int, default=16384)
    p.add_argument("--steps", type=_steps, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--step-seconds", type=float, default=1.5)
    p.add_argument(
        "--pin",
        choices=PIN_MODES,
        default="split",
        help="split: receiver and sender on different CPUs (default); same; none",
    )
    args = p.parse_args(argv)
    samples, info = run_pair(
        args.recvburst, args.buffersize, args.steps, args.step_seconds, args.pin
    )
    args.png.parent.mkdir(parents=True, exist_ok=True)
    csv_path = args.png.with_suffix(".csv")
    write_csv(csv_path, samples)
    draw(args.png, samples, info["marks"], args.recvburst, args.buffersize)
    print(f"Command: `{shlex.join([sys.executable, *sys.argv])}`")
    print(f"sent {info['sent']:,} bytes, received {info['received']:,} bytes")
    print(
        "| sendcap | samples | mean MB/s | recvburst in_use mean / max "
        "| sender's sendcap in_use mean / max |"
    )
    print("|---:|---:|---:|---:|---:|")
    for cap in args.steps:
        mine = [s for s in samples if s.sendcap == cap]
        if mine:
            mean_mb = sum(s.mb_per_s for s in mine) / len(mine)
            mean_use = sum(s.in_use for s in mine) / len(mine)
            peak = max(s.in_use for s in mine)
            sends = info["pending"].get(cap) or [0]
            print(
                f"| {cap} | {len(mine)} | {mean_mb:.1f} | {mean_use:.2f} / {peak} "
                f"| {sum(sends) / len(sends):.2f} / {max(sends)} |"
            )
    print(f"wrote {csv_path} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
