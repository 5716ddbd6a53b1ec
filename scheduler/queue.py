"""kube-scheduler's scheduling queue: activeQ (higher priority first, then first come),
backoffQ (pods waiting out their back-off: 1 s doubling to 10 s), unschedulablePods (pods no
node fits, parked until a cluster event may have made room, or for at most 5 minutes) and the
pods held back by scheduling gates. Keys are "namespace/name"; the pods themselves are read
from the informer cache when popped, so the newest version is always scheduled."""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import time
from collections.abc import Callable, Iterable

POD_INITIAL_BACKOFF = 1.0
POD_MAX_BACKOFF = 10.0
POD_MAX_IN_UNSCHEDULABLE = 300.0
UNSCHEDULABLE_FLUSH_PERIOD = 30.0


@dataclasses.dataclass
class QueuedPod:
    priority: int = 0
    attempts: int = 0
    backoff_until: float = 0.0
    unschedulable_since: float = 0.0
    plugins: frozenset = frozenset()  # the plugins that rejected it last time


class SchedulingQueue:
    def __init__(self, initial_backoff: float = POD_INITIAL_BACKOFF,
                 max_backoff: float = POD_MAX_BACKOFF,
                 max_in_unschedulable: float = POD_MAX_IN_UNSCHEDULABLE,
                 clock: Callable[[], float] = time.monotonic):
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_in_unschedulable = max_in_unschedulable
        self.clock = clock
        self._heap: list[tuple[int, int, str]] = []
        self._seq = itertools.count()
        self.active: dict[str, int] = {}  # key -> seq of its live heap entry
        self.backoff: dict[str, asyncio.TimerHandle | None] = {}
        self.unschedulable: set[str] = set()
        self.gated: set[str] = set()
        self.info: dict[str, QueuedPod] = {}
        self._wake = asyncio.Event()

    # ----------------------------------------------------------------- queries
    def __contains__(self, key: str) -> bool:
        return key in self.active or key in self.backoff or key in self.unschedulable or \
            key in self.gated

    def lengths(self) -> dict[str, int]:
        return {"active": len(self.active), "backoff": len(self.backoff),
                "unschedulable": len(self.unschedulable), "gated": len(self.gated)}

    # ----------------------------------------------------------------- moves
    def _push_active(self, key: str) -> None:
        self._remove(key)
        seq = next(self._seq)
        self.active[key] = seq
        heapq.heappush(self._heap, (-self.info[key].priority, seq, key))
        self._wake.set()

    def _remove(self, key: str) -> None:
        self.active.pop(key, None)  # its heap entry goes stale and is skipped
        h = self.backoff.pop(key, None)
        if h is not None:
            h.cancel()
        self.unschedulable.discard(key)
        self.gated.discard(key)

    def _backoff_duration(self, attempts: int) -> float:
        d = self.initial_backoff
        for _ in range(1, attempts):
            d *= 2
            if d >= self.max_backoff:
                return self.max_backoff
        return d

    def _to_backoff_or_active(self, key: str) -> None:
        left = self.info[key].backoff_until - self.clock()
        if left <= 0:
            self._push_active(key)
            return
        self._remove(key)
        try:
            handle = asyncio.get_running_loop().call_later(left, self._backoff_done, key)
        except RuntimeError:  # no loop (unit tests): the pod stays until flushed
            handle = None
        self.backoff[key] = handle

    def _backoff_done(self, key: str) -> None:
        if key in self.backoff:
            self.backoff.pop(key)
            self._push_active(key)

    def flush_backoff(self) -> None:
        """Move pods whose back-off has expired (timers normally do this)."""
        now = self.clock()
        for key in [k for k in self.backoff if self.info[k].backoff_until <= now]:
            self._backoff_done(key)

    # ----------------------------------------------------------------- events
    def add(self, key: str, priority: int = 0) -> None:
        """A new pending pod (or one seen again after a relist)."""
        if key in self:
            return
        self.info.setdefault(key, QueuedPod())
        self.info[key].priority = priority
        self._push_active(key)

    def update(self, key: str, priority: int = 0) -> None:
        """The pod's spec or labels changed: an unschedulable or gated pod gets another try."""
        info = self.info.setdefault(key, QueuedPod())
        info.priority = priority
        if key in self.gated or key not in self:
            self._push_active(key)
        elif key in self.unschedulable:
            self._to_backoff_or_active(key)

    def gate(self, key: str, priority: int = 0) -> None:
        self._remove(key)
        self.info.setdefault(key, QueuedPod()).priority = priority
        self.gated.add(key)

    def delete(self, key: str) -> None:
        self._remove(key)
        self.info.pop(key, None)

    def forget(self, key: str) -> None:
        """The pod was scheduled: drop its attempt history."""
        self._remove(key)
        self.info.pop(key, None)

    def add_unschedulable(self, key: str, plugins: Iterable[str] = ()) -> None:
        """No node fits: park the pod until an event may help (or the periodic flush)."""
        info = self.info.setdefault(key, QueuedPod())
        info.attempts += 1
        now = self.clock()
        info.backoff_until = now + self._backoff_duration(info.attempts)
        info.unschedulable_since = now
        info.plugins = frozenset(plugins)
        self._remove(key)
        self.unschedulable.add(key)

    def add_backoff(self, key: str) -> None:
        """An error (not a fit failure): retry after the back-off."""
        info = self.info.setdefault(key, QueuedPod())
        info.attempts += 1
        info.backoff_until = self.clock() + self._backoff_duration(info.attempts)
        self._to_backoff_or_active(key)

    def move_all(self, plugins: Iterable[str] | None = None) -> int:
        """A cluster event: unschedulable pods (those rejected by one of `plugins`, or all)
        go back to the active queue, or to back-off if it has not expired."""
        want = None if plugins is None else set(plugins)
        moved = 0
        for key in list(self.unschedulable):
            if want is not None and not (self.info[key].plugins & want):
                continue
            self._to_backoff_or_active(key)
            moved += 1
        return moved

    def flush_unschedulable_leftover(self) -> int:
        """Pods parked longer than podMaxInUnschedulablePodsDuration are retried anyway."""
        now = self.clock()
        moved = 0
        for key in list(self.unschedulable):
            if now - self.info[key].unschedulable_since >= self.max_in_unschedulable:
                self._to_backoff_or_active(key)
                moved += 1
        return moved

    # ----------------------------------------------------------------- pop
    def pop_nowait(self) -> str | None:
        while self._heap:
            _, seq, key = heapq.heappop(self._heap)
            if self.active.get(key) == seq:
                del self.active[key]
                return key
        return None

    async def pop(self) -> str:
        while True:
            key = self.pop_nowait()
            if key is not None:
                return key
            self._wake.clear()
            await self._wake.wait()
