"""Replication of the MVCC state machine with pysyncobj (Raft).

Shape (see ../shared/store-notes.md for the measurements behind it):
- Group commit. Client operations are queued and proposed as one Raft command per batch; while
  batches are in flight new operations accumulate, so batches grow with load. Each operation is
  answered when its batch has been applied on *this* member.
- Exactly once. Every operation carries a request id; a batch that failed because the leader
  changed is proposed again with the same ids, and MVCCStore.apply answers a repeated id with
  the first result instead of applying it twice.
- Durability. The Raft journal is flushed to disk (msync) after every entry it appends, before
  the entry is acknowledged to the leader (followers) or counted (leader), so an acknowledged
  write survives SIGKILL of any member and a machine crash of a minority.
- Linearizable reads go through the log: a read first proposes a no-op "barrier" (batched with
  everything else) and reads local state once the barrier has been applied here. pysyncobj has no
  ReadIndex, and a leader lease would trust clocks; the barrier costs one batched commit.
- Lease expiry is decided only by the leader's clock: renewals and grants are replicated, every
  member notes a local deadline when it applies them, and only the leader proposes the revoke of
  an expired lease. A new leader first extends every lease by its full TTL, as etcd does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
import uuid
import zlib
from typing import Any, Callable

import pysyncobj.syncobj as _syncobj_mod
import pysyncobj.tcp_connection as _tcp_connection
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.journal import FileJournal, MemoryJournal

from proto.etcdserverpb import rpc_pb2 as pb

from .mvcc import MVCCError, MVCCStore

log = logging.getLogger("etcdlite.raft")

NO_LEADER = "etcdserver: no leader"
TIMED_OUT = "etcdserver: request timed out"

# Payload codecs: protobuf requests travel through the Raft log as bytes.
_PB_TYPES = {"put": pb.PutRequest, "delete_range": pb.DeleteRangeRequest, "txn": pb.TxnRequest}


class DurableJournal(FileJournal):
    """pysyncobj's file journal writes through an mmap and never flushes it. Appends only mark
    it dirty; `sync()` flushes (msync) once for everything appended since, and is called before
    a follower acknowledges entries and before the leader counts its own copy (see below)."""

    dirty = False

    def add(self, command, idx, term):
        super().add(command, idx, term)
        self.dirty = True

    def deleteEntriesFrom(self, entryFrom):
        super().deleteEntriesFrom(entryFrom)
        self.dirty = True

    def sync(self):
        if self.dirty:
            self.dirty = False
            self.flush()


def _create_journal(journal_file=None):
    return MemoryJournal() if journal_file is None else DurableJournal(journal_file)


_syncobj_mod.createJournal = _create_journal


# --- pysyncobj 0.3.17 corrections (private methods, patched before any SyncObj is built) ---
_orig_send_next_idx = SyncObj._SyncObj__sendNextNodeIdx
_orig_on_message = SyncObj._SyncObj__onMessageReceived


def _sync_then_ack(self, node, reset=False, nextNodeIdx=None, success=False):
    # A follower acknowledges appended entries only once they are on disk.
    journal = self._SyncObj__raftLog
    if isinstance(journal, DurableJournal):
        journal.sync()
    _orig_send_next_idx(self, node, reset=reset, nextNodeIdx=nextNodeIdx, success=success)


def _monotonic_next_index(self, node, message):
    # The leader pipelines entries (nextIndex advances when it sends), but on each success
    # ack pysyncobj moved nextIndex back to just after the acknowledged entry, so entries in
    # flight were sent again and followers truncated and re-appended them (even committed
    # ones). A success ack may only move nextIndex forward.
    if message.get("type") == "next_node_idx" and message.get("success") and \
            not message.get("reset"):
        before = self._SyncObj__raftNextIndex.get(node)
        _orig_on_message(self, node, message)
        after = self._SyncObj__raftNextIndex.get(node)
        if before is not None and after is not None and after < before:
            self._SyncObj__raftNextIndex[node] = before
        return
    _orig_on_message(self, node, message)


SyncObj._SyncObj__sendNextNodeIdx = _sync_then_ack
SyncObj._SyncObj__onMessageReceived = _monotonic_next_index


class _FastZlib:
    """pysyncobj compresses every peer message at zlib level 3 on its single tick thread;
    level 1 costs far less CPU per entry on loopback links (any level decompresses)."""
    compress = staticmethod(lambda data, level=3: zlib.compress(data, 1))
    decompress = staticmethod(zlib.decompress)


_tcp_connection.zlib = _FastZlib


class StoreConsumer(SyncObjConsumer):
    """The replicated part: one Raft command applies one batch to the MVCC store."""

    def __init__(self, lock: threading.Lock, on_applied: Callable[[list, list], None],
                 event_history: int):
        # attributes set before SyncObjConsumer.__init__ are not part of snapshots
        self._lock = lock
        self._on_applied = on_applied
        super().__init__()
        self.store = MVCCStore(event_history=event_history)

    @replicated
    def apply_batch(self, entries):
        results = []
        with self._lock:
            for request_id, fn, payload in entries:
                pb_type = _PB_TYPES.get(fn)
                arg = pb_type.FromString(payload) if pb_type is not None else payload
                results.append(self.store.apply(request_id, fn, arg))
        self._on_applied(entries, results)
        return results


class Unavailable(Exception):
    """The operation could not be committed: no leader / quorum, or timed out."""


@dataclasses.dataclass
class RaftConfig:
    name: str
    self_peer: str  # host:port of this member's Raft listener
    peers: dict[str, str]  # name -> host:port, including self
    data_dir: str
    heartbeat_ms: int = 100
    election_ms: int = 1000
    request_timeout: float = 5.0
    event_history: int = 100_000
    snapshot_entries: int = 10_000


class RaftMember:
    """One member's Raft node plus the asyncio-side proposer. Owns the store lock."""

    MAX_BATCH = 2000
    MAX_INFLIGHT = 4
    WATCHDOG_PERIOD = 0.1

    def __init__(self, cfg: RaftConfig, loop: asyncio.AbstractEventLoop,
                 on_applied: Callable[[], None]):
        self.cfg = cfg
        self.loop = loop
        self.lock = threading.Lock()
        self._notify_applied = on_applied
        self._notify_scheduled = False
        self.lease_deadlines: dict[int, float] = {}  # local, volatile
        self._leaderless_since: float | None = time.monotonic()
        self._minority_since: float | None = None
        self.consumer = StoreConsumer(self.lock, self._on_applied, cfg.event_history)
        os.makedirs(cfg.data_dir, exist_ok=True)
        election = cfg.election_ms / 1000.0
        heartbeat = cfg.heartbeat_ms / 1000.0
        conf = SyncObjConf(
            appendEntriesUseBatch=False,  # ~1 ms commits instead of ~100 ms (store-notes.md)
            commandsWaitLeader=False,  # fail fast; the proposer retries until its deadline
            raftMinTimeout=election,
            raftMaxTimeout=election * 1.6,
            appendEntriesPeriod=heartbeat,
            leaderFallbackTimeout=election * 1.6,  # a cut-off leader steps down quickly
            connectionTimeout=max(3.5, election * 1.6),
            connectionRetryTime=0.3,  # a restarted member rejoins quickly
            journalFile=os.path.join(cfg.data_dir, "raft.journal"),
            fullDumpFile=os.path.join(cfg.data_dir, "raft.snapshot"),
            logCompactionMinEntries=cfg.snapshot_entries,
            logCompactionMinTime=600,
            useFork=False,  # fork() beside gRPC's threads is unsafe
            autoTickPeriod=0.05,
            onStateChanged=self._on_state_changed,
            bindAddress=cfg.self_peer,  # not 0.0.0.0: members share a port on their own IPs
            appendEntriesBatchSizeBytes=2 ** 20,
            sendBufferSize=2 ** 20,
            recvBufferSize=2 ** 20,
        )
        others = [addr for name, addr in cfg.peers.items() if addr != cfg.self_peer]
        self.raft = SyncObj(cfg.self_peer, others, conf, consumers=[self.consumer])
        self._last_ping = 0.0
        self.raft.addOnTickCallback(self._on_tick)
        self._pending: list[tuple[str | None, str, Any, asyncio.Future]] = []
        self._inflight = 0
        self._flush_scheduled = False
        self._closed = False

    # ------------------------------------------------------------------ state
    @property
    def store(self) -> MVCCStore:
        return self.consumer.store

    def leader_addr(self) -> str | None:
        """The leader this member follows, if it can reach it. pysyncobj keeps a dead leader's
        address until an election happens, and a member that reaches no one never starts one."""
        node = self.raft._getLeader()
        if node is None:
            return None
        if node.id != self.cfg.self_peer and not self.raft.isNodeConnected(node):
            return None
        return node.id

    def is_leader(self) -> bool:
        return self.leader_addr() == self.cfg.self_peer

    def reachable_members(self) -> int:
        return 1 + sum(1 for n in self.raft.otherNodes if self.raft.isNodeConnected(n))

    def quorum_lost(self) -> bool:
        """True when this member has had no leader for longer than an election and cannot reach
        a majority: waiting longer would not help, so requests fail at once."""
        leader = self.leader_addr()
        if leader == self.cfg.self_peer:
            # CheckQuorum, as etcd's leaders do: a leader that has heard from no majority for
            # an election timeout is not one any more (pysyncobj's never steps down by itself)
            minority = self._minority_since
            return minority is not None and \
                time.monotonic() - minority > self.cfg.election_ms / 1000.0
        since = self._leaderless_since
        if since is None or leader is not None:
            return False
        # a member that reaches only a minority cannot elect anyone: after one election
        # timeout without a leader, waiting longer would not help
        return time.monotonic() - since > self.cfg.election_ms / 1000.0 and \
            self.reachable_members() <= len(self.cfg.peers) // 2

    def _on_tick(self):
        # Raft thread, every tick, before pysyncobj's next commit computation: the leader's own
        # copy of new entries is on disk before it counts towards a majority.
        journal = self.raft._SyncObj__raftLog
        if isinstance(journal, DurableJournal):
            journal.sync()
        # Keep every peer connection busy: pysyncobj closes a connection that received nothing
        # for connectionTimeout when it next sends on it, and followers never talk to each
        # other, so the first vote request after a leader dies used to be dropped (a split
        # vote and a second election, ~1 s more).
        now = time.monotonic()
        if now - self._last_ping > self.cfg.heartbeat_ms / 1000.0:
            self._last_ping = now
            transport = self.raft._SyncObj__transport
            for node in self.raft.otherNodes:
                if self.raft.isNodeConnected(node):
                    transport.send(node, {"type": "kubelab_ping"})
        # note when this member lost its leader, and since when it reaches only a minority
        if self.reachable_members() <= len(self.cfg.peers) // 2:
            if self._minority_since is None:
                self._minority_since = now
        else:
            self._minority_since = None
        if self.leader_addr() is None:
            if self._leaderless_since is None:
                self._leaderless_since = time.monotonic()
        else:
            self._leaderless_since = None

    def no_leader_message(self) -> str:
        n = len(self.cfg.peers)
        return (f"{NO_LEADER} (quorum lost: {self.reachable_members()} of {n} members reachable,"
                f" {n // 2 + 1} needed)")

    def _on_state_changed(self, old, new):
        # called from the Raft thread
        if new == 2:  # _RAFT_STATE.LEADER: extend every lease by its full TTL, as etcd does
            now = time.monotonic()
            with self.lock:
                for lease in self.store.leases.values():
                    self.lease_deadlines[lease.id] = max(
                        self.lease_deadlines.get(lease.id, 0), now + lease.ttl)

    def _on_applied(self, entries, results):
        # called from the Raft thread, store lock released
        now = time.monotonic()
        for (rid, fn, payload), res in zip(entries, results):
            if isinstance(res, MVCCError):
                continue
            if fn == "lease_grant":
                self.lease_deadlines[payload[0]] = now + payload[1]
            elif fn == "lease_keepalive" and res[0] > 0:
                self.lease_deadlines[payload] = now + res[0]
            elif fn == "lease_revoke":
                self.lease_deadlines.pop(payload, None)
        if not self._notify_scheduled:
            self._notify_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._run_notify)
            except RuntimeError:  # loop closed during shutdown
                pass

    def _run_notify(self):
        self._notify_scheduled = False
        self._notify_applied()

    def expired_leases(self) -> list[int]:
        if not self.is_leader():
            return []
        now = time.monotonic()
        with self.lock:
            live = self.store.leases
            return [lid for lid in live if self.lease_deadlines.get(lid, now + 1) <= now]

    def remaining_ttl(self, lease_id: int) -> int:
        deadline = self.lease_deadlines.get(lease_id)
        if deadline is None:
            return -1
        return max(0, int(deadline - time.monotonic()))  # etcd truncates

    # ------------------------------------------------------------------ proposing
    async def propose(self, fn: str, payload: Any, request_id: str | None = None) -> Any:
        """Commit one operation through Raft and return MVCCStore.apply's result for it.
        Raises Unavailable (no quorum / timeout) or MVCCError (rejected by the state machine)."""
        if self.quorum_lost():
            raise Unavailable(self.no_leader_message())
        if request_id is None and fn != "barrier":
            request_id = uuid.uuid4().hex
        fut = self.loop.create_future()
        if isinstance(payload, (pb.PutRequest, pb.DeleteRangeRequest, pb.TxnRequest)):
            payload = payload.SerializeToString()
        self._pending.append((request_id, fn, payload, fut))
        self._schedule_flush()
        result = await fut
        if isinstance(result, MVCCError):
            raise result
        return result

    def _schedule_flush(self):
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self):
        self._flush_scheduled = False
        while self._pending and self._inflight < self.MAX_INFLIGHT:
            batch, self._pending = self._pending[:self.MAX_BATCH], self._pending[self.MAX_BATCH:]
            self._inflight += 1
            deadline = time.monotonic() + self.cfg.request_timeout
            self._submit(_Batch(batch, deadline))

    def _submit(self, batch: "_Batch"):
        entries = [(rid, fn, payload) for rid, fn, payload, _ in batch.items]
        attempt = batch.attempt = batch.attempt + 1

        def callback(result, err):
            try:
                self.loop.call_soon_threadsafe(self._on_batch_done, batch, attempt, result, err)
            except RuntimeError:
                pass

        if batch.timer is None:
            batch.timer = self.loop.call_later(self.WATCHDOG_PERIOD, self._watch_batch, batch)
        self.consumer.apply_batch(entries, callback=callback)

    def _on_batch_done(self, batch: "_Batch", attempt: int, result, err):
        if batch.done or attempt != batch.attempt:
            return
        if err == FAIL_REASON.SUCCESS:
            self._finish(batch, results=result)
            return
        # Leader missing/changed or entry discarded: propose the same batch again (same request
        # ids, so an entry that did commit is not applied twice) until the deadline.
        if self.quorum_lost():
            self._finish(batch, error=Unavailable(self.no_leader_message()))
            return
        delay = 0.02 if err in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.NOT_LEADER,
                                FAIL_REASON.DISCARDED) else 0.05
        if time.monotonic() + delay >= batch.deadline:
            self._finish(batch, error=Unavailable(self._timeout_message()))
            return
        self.loop.call_later(delay, self._resubmit, batch)

    def _resubmit(self, batch: "_Batch"):
        if not batch.done:
            self._submit(batch)

    def _watch_batch(self, batch: "_Batch"):
        """A proposal forwarded to a leader that died may never be answered: fail it as soon
        as quorum is known to be lost, or at its deadline."""
        if batch.done:
            return
        if self.quorum_lost():
            self._finish(batch, error=Unavailable(self.no_leader_message()))
        elif time.monotonic() >= batch.deadline:
            self._finish(batch, error=Unavailable(self._timeout_message()))
        else:
            batch.timer = self.loop.call_later(self.WATCHDOG_PERIOD, self._watch_batch, batch)

    def _timeout_message(self) -> str:
        if self.leader_addr() is None:
            return self.no_leader_message()
        return TIMED_OUT

    def _finish(self, batch: "_Batch", results=None, error=None):
        batch.done = True
        if batch.timer is not None:
            batch.timer.cancel()
        self._inflight -= 1
        for i, (_, _, _, fut) in enumerate(batch.items):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(results[i])
        if self._pending:
            self._schedule_flush()

    def close(self):
        self._closed = True
        try:
            self.raft.destroy()
        except Exception:  # pragma: no cover - best effort at shutdown
            log.exception("raft destroy failed")


@dataclasses.dataclass(eq=False)
class _Batch:
    items: list
    deadline: float
    attempt: int = 0
    done: bool = False
    timer: Any = None
