"""Container logs as the kubelet serves them (GET /containerLogs/...), read from the CRI log
files the shim writes: `<RFC3339Nano timestamp> stdout|stderr F|P <content>` per line (P marks
a partial line continued by the next record). The current file is `<restart>.log`, rotated
ones `<restart>.log.1` (newest) … `.log.N` (oldest); reads go over all of them oldest first.

Parsing and option handling are pure functions; `stream_logs` does the file I/O (follow polls
the current file, reopens it across rotation, and ends once the container is gone and the file
is drained).
"""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path


class LogOptionError(ValueError):
    pass


@dataclass(frozen=True)
class LogLine:
    timestamp: str
    time: float
    stream: str
    partial: bool
    content: bytes  # without the trailing newline


def parse_time(s: str) -> float:
    return datetime.datetime.fromisoformat(s).timestamp()


def parse_cri_line(raw: bytes) -> LogLine | None:
    """One file line (with or without its newline) → LogLine; None when malformed."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    parts = raw.split(b" ", 3)
    if len(parts) < 3:
        return None
    ts = parts[0].decode("ascii", "replace")
    try:
        t = parse_time(ts)
    except ValueError:
        return None
    stream = parts[1].decode("ascii", "replace")
    tag = parts[2]
    content = parts[3] if len(parts) > 3 else b""
    return LogLine(ts, t, stream, tag.split(b":")[0] == b"P", content)


@dataclass
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    timestamps: bool = False
    since_time: float | None = None
    limit_bytes: int | None = None
    previous: bool = False

    @classmethod
    def from_query(cls, q, now: float | None = None) -> LogOptions:
        def flag(name: str) -> bool:
            return (q.get(name) or "").lower() in ("1", "true", "yes")

        def integer(name: str) -> int | None:
            v = q.get(name)
            if v in (None, ""):
                return None
            try:
                return int(v)
            except ValueError:
                raise LogOptionError(f"{name}: invalid value {v!r}") from None

        o = cls(follow=flag("follow"), timestamps=flag("timestamps"), previous=flag("previous"),
                tail_lines=integer("tailLines"), limit_bytes=integer("limitBytes"))
        if o.tail_lines is not None and o.tail_lines < 0:
            raise LogOptionError(f"tailLines: Invalid value: {o.tail_lines}: must be greater "
                                 f"than or equal to 0")
        if o.limit_bytes is not None and o.limit_bytes < 1:
            raise LogOptionError(f"limitBytes: Invalid value: {o.limit_bytes}: must be greater "
                                 f"than 0")
        since_s = integer("sinceSeconds")
        since_t = q.get("sinceTime")
        if since_s is not None and since_t:
            raise LogOptionError("at most one of `sinceTime` or `sinceSeconds` may be specified")
        if since_s is not None:
            if since_s < 1:
                raise LogOptionError(f"sinceSeconds: Invalid value: {since_s}: must be greater "
                                     f"than 0")
            o.since_time = (now if now is not None else _now()) - since_s
        elif since_t:
            try:
                o.since_time = parse_time(since_t)
            except ValueError:
                raise LogOptionError(f"sinceTime: invalid value {since_t!r}") from None
        return o


def _now() -> float:
    import time
    return time.time()


def format_line(line: LogLine, opts: LogOptions) -> bytes:
    body = line.content if line.partial else line.content + b"\n"
    if opts.timestamps:
        return line.timestamp.encode() + b" " + body
    return body


def log_files(current: Path) -> list[Path]:
    """Rotated files oldest first, then the current one (only those that exist)."""
    rotated = []
    n = 1
    while True:
        p = current.with_name(f"{current.name}.{n}")
        if not p.exists():
            break
        rotated.append(p)
        n += 1
    out = list(reversed(rotated))
    if current.exists():
        out.append(current)
    return out


def select_lines(raw_lines: list[bytes], opts: LogOptions) -> list[LogLine]:
    """Apply tailLines (counted in file lines) then sinceTime, in the kubelet's order."""
    if opts.tail_lines is not None:
        raw_lines = raw_lines[max(0, len(raw_lines) - opts.tail_lines):] if opts.tail_lines else []
    lines = [ln for ln in (parse_cri_line(r) for r in raw_lines) if ln is not None]
    if opts.since_time is not None:
        lines = [ln for ln in lines if ln.time >= opts.since_time]
    return lines


class _Limiter:
    def __init__(self, limit: int | None):
        self.left = limit

    def cut(self, data: bytes) -> bytes:
        if self.left is None:
            return data
        data = data[:self.left]
        self.left -= len(data)
        return data

    @property
    def exhausted(self) -> bool:
        return self.left is not None and self.left <= 0


def read_existing(current: Path, opts: LogOptions) -> tuple[bytes, int, int | None]:
    """The selected content of all files now; returns (bytes, offset reached in the current
    file, its inode) so a follower can continue from there."""
    files = log_files(current)
    raw: list[bytes] = []
    offset, inode = 0, None
    for p in files:
        try:
            with open(p, "rb") as f:
                data = f.read()
                if p == current:
                    inode = os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            continue
        # an unfinished last line (no newline yet) stays for the follower
        end = data.rfind(b"\n") + 1 if p == current else len(data)
        if p == current:
            offset = end
        raw.extend(data[:end].splitlines(keepends=True))
    out = b"".join(format_line(ln, opts) for ln in select_lines(raw, opts))
    lim = _Limiter(opts.limit_bytes)
    return lim.cut(out), offset, inode


async def stream_logs(current: Path, opts: LogOptions, write: Callable[[bytes], Awaitable[None]],
                      still_running: Callable[[], bool], poll: float = 0.1) -> None:
    data, offset, inode = read_existing(current, opts)
    lim = _Limiter(opts.limit_bytes)
    if data:
        await write(lim.cut(data))
    if not opts.follow or lim.exhausted:
        return
    pending = b""
    while True:
        progressed = False
        try:
            st = os.stat(current)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_ino != inode or st.st_size < offset):
            # rotated: finish the old file (now <current>.1) then start the new one at 0
            if inode is not None:
                old = current.with_name(current.name + ".1")
                try:
                    with open(old, "rb") as f:  # noqa: ASYNC230 - local file, short read
                        if os.fstat(f.fileno()).st_ino == inode:
                            f.seek(offset)
                            pending += f.read()
                except FileNotFoundError:
                    pass
            inode, offset = st.st_ino, 0
        if st is not None:
            with open(current, "rb") as f:  # noqa: ASYNC230 - local file, short read
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            pending += chunk
        if b"\n" in pending:
            end = pending.rfind(b"\n") + 1
            complete, pending = pending[:end], pending[end:]
            out = b""
            for raw in complete.splitlines(keepends=True):
                ln = parse_cri_line(raw)
                if ln is None or (opts.since_time is not None and ln.time < opts.since_time):
                    continue
                out += format_line(ln, opts)
            if out:
                await write(lim.cut(out))
                progressed = True
                if lim.exhausted:
                    return
        if not progressed:
            if not still_running():
                # one last look so nothing written right before the exit is lost
                try:
                    size = os.stat(current).st_size
                except FileNotFoundError:
                    size = offset
                if size <= offset and b"\n" not in pending:
                    return
                continue
            await asyncio.sleep(poll)
