"""Put each sample of ``perf script`` (a server sampled by bench/py_map.sh)
to the innermost Python function on its stack, and print the shares.

A sample's stack, read from the top: the frame that ran, then its callers.
With Python's perf trampoline, each Python function's frames show as
``py::QUALNAME:FILE`` (from /tmp/perf-PID.map); the first such frame is the
function whose own code, or whose call into C, was running.  Samples with
no Python frame (a thread outside the interpreter, or an unwinding that
failed) are put to their top symbol, marked ``[no Python frame]``.  A
sample whose top frame is the kernel's counts as kernel time of its
function (a system call, or an interrupt while it ran).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable, Iterator

# "    7fb708ed63bc py::UringEngine._submit:/path/engine.py+0x5 (/tmp/perf-3325.map)"
# (a file may have spaces: "py::f:<frozen posixpath>+0x5 (...)")
_PY_FRAME = re.compile(r"py::(?P<name>[^:]+):(?P<file>.+?)(?:\+0x[0-9a-f]+)? \([^()]*\)\s*$")
_SYMBOL = re.compile(r"^\s*(?P<address>[0-9a-f]+) (?P<symbol>\S+?)(?:\+0x[0-9a-f]+)? \(")


def stacks(lines: Iterable[str]) -> Iterator[list[str]]:
    """The frames of each sample (its header line dropped)."""
    frames: list[str] = []
    header = False
    for line in lines:
        if not line.strip():
            if header:
                yield frames
            frames, header = [], False
        elif not header:
            header = True  # "comm pid time: period event:"
        else:
            frames.append(line.rstrip("\n"))
    if header:
        yield frames


def short_file(path: str) -> str:
    """The path from the package or library folder on (site-packages dropped)."""
    for marker in ("site-packages/", "/anyio_iocp/", "/bench/"):
        at = path.find(marker)
        if at >= 0:
            return path[at + len(marker) :] if marker == "site-packages/" else path[at + 1 :]
    return path


def owner(frames: list[str]) -> str:
    """The innermost Python function of a stack, or its top symbol."""
    for frame in frames:
        found = _PY_FRAME.search(frame)
        if found:
            return f"{found['name']} ({short_file(found['file'])})"
    top = _SYMBOL.match(frames[0]) if frames else None
    return f"[no Python frame] {top['symbol'] if top else '?'}"


def is_kernel(frame: str) -> bool:
    """A frame in the kernel: by its object, or by its address (x86-64's
    kernel half) where the symbol could not be resolved."""
    if "[kernel.kallsyms]" in frame:
        return True
    found = _SYMBOL.match(frame)
    if found is None:
        return False
    address = found["address"]
    return len(address) == 16 and address.startswith("ffff")


def tally(lines: Iterable[str]) -> tuple[int, Counter[str], Counter[str]]:
    """Samples in all; samples by function; of those, the kernel's."""
    total, own, kernel = 0, Counter[str](), Counter[str]()
    for frames in stacks(lines):
        total += 1
        name = owner(frames)
        own[name] += 1
        if frames and is_kernel(frames[0]):
            kernel[name] += 1
    return total, own, kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("script", help="the output of perf script")
    parser.add_argument("--top", type=int, default=30, help="rows to print (30)")
    args = parser.parse_args()
    with open(args.script, errors="replace") as lines:
        total, own, kernel = tally(lines)
    if not total:
        raise SystemExit("no samples: was perf allowed to sample the server?")
    print(f"{total} samples, {100 * sum(kernel.values()) / total:.1f}% in the kernel")
    print("  share  kernel  innermost Python function")
    for name, count in own.most_common(args.top):
        print(f"{100 * count / total:6.1f}% {100 * kernel[name] / total:6.1f}%  {name}")


if __name__ == "__main__":
    main()
