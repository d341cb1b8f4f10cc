"""CPU time and resident memory of a running process, from /proc/PID.

Also usable from Windows Python under Wine (``bench/wine_wait_cost.py``),
which sees Linux's ``/proc`` through Wine's ``Z:`` drive.
"""

from __future__ import annotations

import os
import sys

# a plain variable, not ``sys.platform`` in the tests: mypy on Linux would
# treat the Windows branches as unreachable
_UNDER_WINE = sys.platform == "win32"
#: Linux's /proc, as this interpreter sees it
PROC = "Z:/proc" if _UNDER_WINE else "/proc"
# Linux's USER_HZ, which /proc/PID/stat counts in (100 on every Linux
# architecture this runs on; Windows has no sysconf to ask)
_TICKS_PER_SECOND = 100 if _UNDER_WINE else os.sysconf("SC_CLK_TCK")
#: the process names of Wine's server
WINESERVER_NAMES = ("wineserver", "wineserver64")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by all threads of process `pid`."""
    with open(f"{PROC}/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces, so split after its ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat
    return (utime + stime) / _TICKS_PER_SECOND


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` now (VmRSS)."""
    with open(f"{PROC}/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def find_wineserver() -> int | None:
    """The process id of a running wineserver (None if there is none).  The
    first one found: with several Wine prefixes running, it may be another
    prefix's."""
    for entry in os.listdir(PROC):
        if entry.isdigit():
            try:
                with open(f"{PROC}/{entry}/comm", encoding="ascii") as f:
                    if f.read().strip() in WINESERVER_NAMES:
                        return int(entry)
            except OSError:
                continue
    return None
