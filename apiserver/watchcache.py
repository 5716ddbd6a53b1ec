"""One shared watch cache per resource: a single store watch on /registry/<plural>/ feeds an
in-memory copy of every object plus a bounded history of recent events, and fans events out to
every client watch (REST and gRPC) — not one store watch per client, as in kube-apiserver.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from typing import Callable

from kubelab import fastjson
from kubelab.etcdclient import EtcdClient, EtcdError, WatchCompacted, prefix_end

from .kinds import Kind

log = logging.getLogger("apiserver.watchcache")

HISTORY = 10_000


@dataclasses.dataclass(slots=True)
class Event:
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict
    old: dict | None
    rev: int
    encoded: bytes | None = None

    def json(self) -> bytes:
        """The object as JSON, encoded once however many watchers it goes to."""
        if self.encoded is None:
            self.encoded = fastjson.dumps(self.obj)
        return self.encoded


class Expired(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def decode(value: bytes, rev: int) -> dict:
    obj = fastjson.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(rev)
    return obj


class Subscriber:
    """One client watch: filtered events through a bounded queue of (type, Event) — the type
    as this watcher sees it (a MODIFIED can be its ADDED or DELETED), then None when closed."""

    def __init__(self, cache: "WatchCache", match: Callable[[dict], bool], max_queue: int = 20000,
                 index_value: str | None = None):
        self.cache = cache
        self.match = match
        self.index_value = index_value  # set: offered only events whose index field has it
        self.queue: asyncio.Queue = asyncio.Queue()
        self.max_queue = max_queue
        self.closed_reason: str | None = None

    def offer(self, ev: Event) -> None:
        if self.closed_reason is not None:
            return
        new_match = self.match(ev.obj)
        old_match = ev.old is not None and self.match(ev.old)
        if ev.type == "ADDED":
            out = "ADDED" if new_match else None
        elif ev.type == "DELETED":
            out = "DELETED" if new_match else None
        else:  # MODIFIED, with selector transitions as Kubernetes reports them
            if new_match and old_match:
                out = "MODIFIED"
            elif new_match:
                out = "ADDED"
            elif old_match:
                out = "DELETED"
            else:
                out = None
        if out is None:
            return
        if self.queue.qsize() >= self.max_queue:
            self.close("watch consumer too slow")
            return
        self.queue.put_nowait((out, ev))

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self.queue.put_nowait(None)

    def unsubscribe(self) -> None:
        if self.index_value is None:
            self.cache.subscribers.discard(self)
            return
        subs = self.cache.indexed.get(self.index_value)
        if subs is not None:
            subs.discard(self)
            if not subs:
                del self.cache.indexed[self.index_value]


class WatchCache:
    """index_field: a field selector field (pods: spec.nodeName, as in kube-apiserver) whose
    equality watches are kept by value, so an event is matched against the watchers of its
    object's value (one node's agent) instead of against every node's."""

    def __init__(self, etcd: EtcdClient, kind: Kind, index_field: str | None = None):
        self.etcd = etcd
        self.kind = kind
        self.index_field = index_field
        self.indexed: dict[str, set[Subscriber]] = {}
        self.prefix = kind.prefix().encode()
        self.objects: dict[str, dict] = {}
        self.history: collections.deque[Event] = collections.deque(maxlen=HISTORY)
        self.rev = 0  # everything up to rev is reflected in objects
        self.oldest = 0  # events after `oldest` are in history
        self.ready = asyncio.Event()
        self.subscribers: set[Subscriber] = set()
        self._advanced = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watchcache-{self.kind.plural}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for s in self.all_subscribers():
            s.close("server shutting down")

    async def _run(self) -> None:
        while True:
            try:
                await self._list()
                await self._follow()
            except asyncio.CancelledError:
                raise
            except WatchCompacted as e:
                log.warning("%s: watch compacted at %d; relisting", self.kind.plural,
                            e.compact_revision)
                for s in self.all_subscribers():
                    s.close(f"too old resource version: {self.rev} ({e.compact_revision})")
            except EtcdError as e:
                log.warning("%s: store error %s; retrying", self.kind.plural, e.message)
                await asyncio.sleep(0.5)
            except Exception:  # noqa: BLE001 - keep the cache alive
                log.exception("%s: watch cache failed; retrying", self.kind.plural)
                await asyncio.sleep(1.0)

    async def _list(self) -> None:
        resp = await self.etcd.range(self.prefix, prefix_end(self.prefix))
        rev = resp.header.revision
        objects = {kv.key.decode(): decode(kv.value, kv.mod_revision) for kv in resp.kvs}
        if self.ready.is_set():
            # relist after a gap: report the differences so subscribers stay consistent
            for key, obj in objects.items():
                old = self.objects.get(key)
                if old is None:
                    self._emit(Event("ADDED", obj, None, rev))
                elif old["metadata"].get("resourceVersion") != obj["metadata"]["resourceVersion"]:
                    self._emit(Event("MODIFIED", obj, old, rev))
            for key, old in self.objects.items():
                if key not in objects:
                    gone = dict(old)
                    gone["metadata"] = dict(old["metadata"], resourceVersion=str(rev))
                    self._emit(Event("DELETED", gone, old, rev))
        self.objects = objects
        self.rev = rev
        if not self.ready.is_set():
            self.oldest = rev
        self.ready.set()
        self._wake()

    async def _follow(self) -> None:
        async for header_rev, events in self.etcd.watch(
                self.prefix, prefix_end(self.prefix), start_revision=self.rev + 1, prev_kv=True,
                progress_notify=True):
            for e in events:
                key = e.kv.key.decode()
                rev = e.kv.mod_revision
                old = self.objects.get(key)
                if e.type == "PUT":
                    obj = decode(e.kv.value, rev)
                    self.objects[key] = obj
                    self._emit(Event("MODIFIED" if old is not None else "ADDED", obj, old, rev))
                else:
                    if old is None and e.prev_kv is not None:
                        old = decode(e.prev_kv.value, e.prev_kv.mod_revision)
                    self.objects.pop(key, None)
                    if old is not None:
                        gone = dict(old)
                        gone["metadata"] = dict(old["metadata"], resourceVersion=str(rev))
                        self._emit(Event("DELETED", gone, old, rev))
                self.rev = max(self.rev, rev)
            if header_rev > self.rev and not events:
                self.rev = header_rev  # progress notification
            self._wake()

    def _emit(self, ev: Event) -> None:
        if len(self.history) == self.history.maxlen:
            self.oldest = self.history[0].rev
        self.history.append(ev)
        for s in list(self.subscribers):
            s.offer(ev)
        if self.indexed:
            values = {self.index_of(ev.obj)}
            if ev.old is not None:
                values.add(self.index_of(ev.old))  # a watcher the object moves away from
            for v in values:
                for s in list(self.indexed.get(v, ())):
                    s.offer(ev)

    def all_subscribers(self) -> list[Subscriber]:
        return [*self.subscribers, *(s for subs in self.indexed.values() for s in subs)]

    def index_of(self, obj: dict) -> str:
        return self.kind.fields(obj).get(self.index_field, "")

    def _wake(self) -> None:
        ev, self._advanced = self._advanced, asyncio.Event()
        ev.set()

    async def wait_for_rev(self, rev: int, timeout: float = 3.0) -> bool:
        """Wait until the cache reflects at least `rev` (it trails the store slightly)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await asyncio.wait_for(self.ready.wait(), timeout)
        while self.rev < rev:
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._advanced.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True

    def subscribe(self, match: Callable[[dict], bool], since: int | None,
                  index_value: str | None = None) -> tuple[Subscriber, list[tuple[str, Event]]]:
        """Register a subscriber and return the initial events, atomically (no await between
        reading history/objects and subscribing, so nothing is missed or duplicated).

        since None: synthetic ADDED for every current object, then changes.
        since N: changes after N (raises Expired when history does not reach back to N).
        index_value: the value `match` requires of index_field (None: no such requirement)."""
        initial: list[tuple[str, Event]] = []
        if since is None:
            for obj in sorted(self.objects.values(),
                              key=lambda o: int(o["metadata"]["resourceVersion"])):
                if match(obj):
                    rev = int(obj["metadata"]["resourceVersion"])
                    initial.append(("ADDED", Event("ADDED", obj, None, rev)))
        else:
            if since < self.oldest:
                raise Expired(f"too old resource version: {since} ({self.oldest + 1})")
            tmp = Subscriber(self, match)
            for ev in self.history:
                if ev.rev > since:
                    tmp.offer(ev)
            while not tmp.queue.empty():
                item = tmp.queue.get_nowait()
                if item is not None:
                    initial.append(item)
        if self.index_field is None:
            index_value = None
        sub = Subscriber(self, match, index_value=index_value)
        if index_value is None:
            self.subscribers.add(sub)
        else:
            self.indexed.setdefault(index_value, set()).add(sub)
        return sub, initial
