"""Linux /proc, read for what the benchmarks (and the tests that stop servers by pid) need:
each process's stat fields, its descendants, its CPU time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def stat_fields(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after "pid (comm) ", so [0] is the state, [1] the parent pid,
    [3] the session id, [11] and [12] user and system CPU in clock ticks; None if it left."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def all_stat_fields() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields) of every live process."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(entry.name)
            if fields is not None:
                yield int(entry.name), fields


def descendants(root: int) -> list[int]:
    """Every process below `root`, nearest first."""
    children: dict[int, list[int]] = {}
    for pid, fields in all_stat_fields():
        children.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a live process has used so far, else None."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid: int | str = "self") -> int:
    """A process's peak resident set (VmHWM, in KiB). VmHWM, not ru_maxrss: Linux carries
    ru_maxrss over from the forking parent across exec."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")
