"""What the benchmarks share: /proc accounting (every process's parent, command line, CPU time,
RSS and time spent waiting for a CPU, and process trees) and percentiles of samples."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[int, bytes, float, float, float]]:
    """pid -> (ppid, cmdline, cpu seconds incl. reaped children, rss MB, seconds spent runnable
    but waiting for a CPU (schedstat run delay)) of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            rss = 0.0
            for line in Path(f"/proc/{d}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                    break
            try:
                wait = int(Path(f"/proc/{d}/schedstat").read_text().split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                wait = 0.0
        except (OSError, IndexError):
            continue
        cpu = sum(int(x) for x in stat[11:15]) / TICKS  # utime stime cutime cstime
        out[int(d)] = (int(stat[1]), cmd, cpu, rss, wait)
    return out


def descendants(procs: dict, roots: set[int]) -> set[int]:
    """The roots and every process below them."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen or p not in procs:
            continue
        seen.add(p)
        todo.extend(children.get(p, []))
    return seen


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile of the samples (nearest rank; NaN without samples)."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]
