"""A linearizability checker for key-value registers (Wing & Gong's search with Lowe's
just-in-time linearization and a memo of visited (linearized set, state) pairs — the algorithm
Porcupine uses), partitioned per key: a history is linearizable iff each key's sub-history is.

An operation is (client, key, kind, argument, output, call time, return time). kind is "put"
(argument: value), "get" (output: value or None) or "cas" (argument: (expected, new); output:
True/False). An operation whose outcome is unknown (a timeout, a dropped connection) has return
time None: it may take effect at any point after its call, or never — that is what a client can
conclude after an error.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any


@dataclasses.dataclass
class Op:
    client: int
    key: str
    kind: str  # put | get | cas
    arg: Any = None
    output: Any = None
    call: float = 0.0
    ret: float | None = None  # None: the outcome is unknown

    @property
    def unknown(self) -> bool:
        return self.ret is None


def step(state: Any, op: Op) -> tuple[bool, Any]:
    """The register model: may `op` (with its observed output) happen in `state`, and the state
    after it."""
    if op.kind == "put":
        return True, op.arg
    if op.kind == "get":
        return op.unknown or op.output == state, state
    if op.kind == "cas":
        expected, new = op.arg
        if state == expected:
            return op.unknown or op.output is True, new
        return op.unknown or op.output is False, state
    raise ValueError(f"unknown operation {op.kind!r}")


class _Entry:
    __slots__ = ("idx", "is_call", "match", "next", "op", "prev")

    def __init__(self, op: Op | None, idx: int, is_call: bool):
        self.op, self.idx, self.is_call = op, idx, is_call
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _entries(ops: list[Op]) -> _Entry:
    """A doubly linked list of call/return events by time (a sentinel head). Unknown outcomes
    return at +infinity; at equal times calls come before returns (the weaker order)."""
    events = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i, True))
        events.append((math.inf if op.ret is None else op.ret, 1, i, False))
    events.sort()
    head = _Entry(None, -1, False)
    calls: dict[int, _Entry] = {}
    cur = head
    for _, _, i, is_call in events:
        e = _Entry(ops[i], i, is_call)
        if is_call:
            calls[i] = e
        else:
            calls[i].match = e
        cur.next, e.prev = e, cur
        cur = e
    return head


def _lift(e: _Entry) -> None:
    e.prev.next = e.next
    if e.next:
        e.next.prev = e.prev
    m = e.match
    m.prev.next = m.next
    if m.next:
        m.next.prev = m.prev


def _unlift(e: _Entry) -> None:
    m = e.match
    m.prev.next = m
    if m.next:
        m.next.prev = m
    e.prev.next = e
    if e.next:
        e.next.prev = e


def check_register(ops: list[Op], initial: Any = None, max_steps: int = 5_000_000) -> bool | None:
    """True if linearizable, False if not, None if the search gave up after max_steps."""
    if not ops:
        return True
    head = _entries(ops)
    state, linearized = initial, 0
    memo: set[tuple[int, Any]] = set()
    stack: list[tuple[_Entry, Any]] = []
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > max_steps:
            return None
        if entry.is_call:
            ok, new_state = step(state, entry.op)
            if ok:
                bits = linearized | (1 << entry.idx)
                if (bits, new_state) not in memo:
                    memo.add((bits, new_state))
                    stack.append((entry, state))
                    state, linearized = new_state, bits
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            entry = None  # a return whose call could not be placed before it
        while entry is None:  # undo the last choice (also after running off the end)
            if not stack:
                return False
            entry, state = stack.pop()
            linearized &= ~(1 << entry.idx)
            _unlift(entry)
            entry = entry.next
    return True


def check(ops: list[Op]) -> dict[str, bool | None]:
    """Per key: True (linearizable), False (not), None (undecided: search too large)."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind == "get" and op.unknown:
            continue  # a failed read has no effect and observed nothing
        by_key[op.key].append(op)
    return {k: check_register(v) for k, v in sorted(by_key.items())}
