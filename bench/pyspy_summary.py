#!/usr/bin/env python3
"""Summarise py-spy raw (collapsed) profiles written by store_bench.py --profile.

    .venv/bin/python bench/pyspy_summary.py DIR/etcdlite-put64-store-1.txt [...] [--top 25]

Prints, per file: samples per thread, then the functions with the most self time and the most
inclusive time (share of all samples in the file), as "file:function".
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    f = m.group("file")
    for cut in ("site-packages/", "/work/main/", "python3.11/"):
        if cut in f:
            f = f.split(cut, 1)[1]
    return f"{f}:{m.group('func')}"


def load(path):
    stacks = []
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines:
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        stacks.append((frames, int(n)))
    return stacks


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--thread", help="only threads whose label contains this")
    a = p.parse_args(argv)
    for path in a.files:
        stacks = load(path)
        total = sum(n for _, n in stacks)
        threads = collections.Counter()
        selfc = collections.Counter()
        incl = collections.Counter()
        for frames, n in stacks:
            thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "?"
            if frames and frames[0].startswith("process"):
                thread = ";".join(frames[:2])
            threads[thread] += n
            if a.thread and a.thread not in thread:
                continue
            body = [f for f in frames if not f.startswith(("thread (", "process "))]
            if not body:
                continue
            selfc[short(body[-1])] += n
            for f in {short(x) for x in body}:
                incl[f] += n
        print(f"== {path}: {total} samples")
        for t, n in threads.most_common():
            print(f"   {100 * n / total:5.1f}%  {t}")
        print("   -- self")
        for f, n in selfc.most_common(a.top):
            print(f"   {100 * n / total:5.1f}%  {f}")
        print("   -- inclusive")
        for f, n in incl.most_common(a.top):
            print(f"   {100 * n / total:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
