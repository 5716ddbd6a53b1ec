"""Replication of the MVCC state machine with pysyncobj (Raft).

Shape (see ../shared/store-notes.md for the measurements behind it):
- Group commit. Client operations are queued and proposed as one Raft command per batch, one
  batch in flight at a time; while it commits new operations accumulate, so batches grow with
  load. Followers forward their queued operations to the leader (one message per batch), which
  adds them to its own next batch, so the cluster commits one entry per round. Each operation
  is answered when an entry holding its request id has been applied on *this* member.
- Exactly once. Every operation carries a request id; a batch that failed because the leader
  changed is proposed again with the same ids, and MVCCStore.apply answers a repeated id with
  the first result instead of applying it twice.
- Durability. The Raft journal is flushed to disk (fdatasync; pysyncobj's file format, written
  with pwrite into preallocated space instead of through an mmap) after every entry it appends,
  before the entry is acknowledged to the leader (followers) or counted (leader), so an
  acknowledged write survives SIGKILL of any member and a machine crash of a minority.
- Linearizable reads go through the log: a read first proposes a no-op "barrier" (batched with
  everything else) and reads local state once the barrier has been applied here. pysyncobj has no
  ReadIndex, and a leader lease would trust clocks; the barrier costs one batched commit.
- Lease expiry is decided only by the leader's clock: renewals and grants are replicated, every
  member notes a local deadline when it applies them, and only the leader proposes the revoke of
  an expired lease. A new leader first extends every lease by its full TTL, as etcd does.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import pysyncobj.journal as _journal_mod
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
_BARRIER_ID = "barrier:"  # prefix of the ids of barriers (not remembered by the store)
_PB_TYPES = {"put": pb.PutRequest, "delete_range": pb.DeleteRangeRequest, "txn": pb.TxnRequest}


class _PwriteFile(_journal_mod.ResizableFile):
    """The journal's file, written with pwrite and flushed with fdatasync instead of through an
    mmap flushed with msync. Same bytes on disk (the format is FileJournal's), but on these
    machines' ext4 an msync of mmap-written pages took ~2 ms and held the GIL throughout
    (CPython's mmap.flush does not release it, so gRPC's thread stalled on every flush), while
    pwrite + fdatasync takes ~0.2-0.5 ms with the GIL released. `flush` is ResizableFile's own
    (it calls `.flush()` on the object below), so diagnostics that wrap it still see it."""

    class _Syncer:
        def __init__(self, fd: int):
            self.fd = fd

        def flush(self):
            os.fdatasync(self.fd)

        def close(self):
            pass

    PREALLOCATE = 4 << 20  # bytes of zeros written ahead of the journal's end (at least)

    def __init__(self, fileName, initialSize=1024, resizeFactor=2.0, defaultContent=None):
        if not os.path.exists(fileName):
            with open(fileName, "wb") as f:
                if defaultContent is not None:
                    f.write(defaultContent)
        f = open(fileName, "r+b", buffering=0)  # noqa: SIM115 - kept open, closed by _destroy
        self._fd = f.fileno()
        self._ResizableFile__f = f
        self._ResizableFile__mm = self._Syncer(self._fd)
        self._allocated = os.fstat(self._fd).st_size
        if self._allocated < initialSize:
            self._extend(initialSize)

    def _extend(self, size):
        # Real zeros, not a hole or fallocate: overwriting blocks that already hold data makes
        # fdatasync flush data only (~0.25 ms here), while appending or filling holes also
        # commits the filesystem's metadata journal (~2-3x longer) on every sync. As etcd
        # preallocates its WAL.
        start = self._allocated
        target = max(size, start + max(self.PREALLOCATE, start // 4))
        zeros = bytes(1 << 20)
        while start < target:
            n = min(len(zeros), target - start)
            os.pwrite(self._fd, zeros[:n], start)
            start += n
        self._allocated = target

    def write(self, offset, values):
        if offset + len(values) > self._allocated:
            self._extend(offset + len(values))
        view = memoryview(values)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view = view[n:]
            offset += n

    def read(self, offset, size):
        return os.pread(self._fd, size, offset)


class DurableJournal(FileJournal):
    """pysyncobj's file journal never flushes what it writes. Appends only mark it dirty;
    `sync()` flushes (fdatasync, see _PwriteFile) once for everything appended since, and is
    called before a follower acknowledges entries and before the leader counts its own copy
    (see below)."""

    dirty = False

    def __init__(self, journalFile):
        # FileJournal builds its file with the module-level name ResizableFile
        orig = _journal_mod.ResizableFile
        _journal_mod.ResizableFile = _PwriteFile
        try:
            super().__init__(journalFile)
        finally:
            _journal_mod.ResizableFile = orig

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


def _store_meta_durably(self, meta):
    """pysyncobj keeps currentTerm/votedFor (and the commit index) in <journal>.meta, replaced
    by a rename but never fsynced: after a machine crash a member could forget its vote and vote
    twice in one term. Raft needs them on disk before a vote is answered, so: write, fsync the
    file, rename, fsync the directory."""
    path = self.getPath()
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        data = _journal_mod.dumps(meta)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


_journal_mod.MetaStorer.storeMeta = _store_meta_durably


# --- pysyncobj 0.3.17 corrections (private methods, patched before any SyncObj is built) ---
_orig_send_next_idx = SyncObj._SyncObj__sendNextNodeIdx
# id(SyncObj) -> RaftMember. Not an attribute of the SyncObj: pysyncobj's snapshots pickle every
# attribute added after its constructor.
_MEMBERS: dict[int, RaftMember] = {}
_orig_on_message = SyncObj._SyncObj__onMessageReceived


def _sync_then_ack(self, node, reset=False, nextNodeIdx=None, success=False):
    # A follower acknowledges appended entries only once they are on disk.
    journal = self._SyncObj__raftLog
    if isinstance(journal, DurableJournal):
        journal.sync()
    _orig_send_next_idx(self, node, reset=reset, nextNodeIdx=nextNodeIdx, success=success)


def _monotonic_next_index(self, node, message):
    if message.get("type") == "kubelab_fwd":  # a follower's operations (RaftMember._forward)
        member = _MEMBERS.get(id(self))
        if member is not None:
            member._on_forwarded(message["items"])
        return
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
    """pysyncobj compresses every peer message at zlib level 3 on its single tick thread, and
    decompresses every message it receives. Peers are on loopback or a LAN, where bandwidth
    does not matter: level 0 (stored blocks, a valid zlib stream that any peer decompresses)
    costs a copy and a checksum; level 1 took ~35 us and its decompression ~45 us for a
    3.5 KB entry of 10 puts, on every message, on the busiest thread."""
    compress = staticmethod(lambda data, level=3: zlib.compress(data, 0))
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
                if fn == "barrier":
                    request_id = None
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
    # One batch in flight per member: while it commits, new operations accumulate and ride
    # in the next Raft entry together (measured at 64 clients: ~10 operations per entry and
    # one entry per commit round for the whole cluster, against ~3 per entry and an entry per
    # member per round with 4 in flight and no forwarding; 2 in flight was no better).
    MAX_INFLIGHT = 1
    MAX_INFLIGHT_FORWARDS = 1
    RESEND_AFTER = 1.0  # s without an answer before a forwarded batch is sent again
    WATCHDOG_PERIOD = 0.1

    def __init__(self, cfg: RaftConfig, loop: asyncio.AbstractEventLoop,
                 on_applied: Callable[[], None]):
        self.cfg = cfg
        self.loop = loop
        self.lock = threading.Lock()
        self._notify_applied = on_applied
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
            # peers advertised by name (Docker Swarm) come back from a restart with a new
            # address: look names up again within seconds, not pysyncobj's 10 minutes
            dnsCacheTime=2.0,
            dnsFailCacheTime=1.0,
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
        self._pending: list[tuple[str, str, Any]] = []  # (request id, fn, payload)
        self._waiters: dict[str, list[asyncio.Future]] = {}  # request id -> futures
        self._id_prefix = uuid.uuid4().hex[:20] + ":"  # unique per member and start
        self._next_id = 0
        self._inflight = 0
        self._direct_inflight = 0  # batches proposed by the Raft thread (_on_forwarded)
        self._fwd_batches: set[_Batch] = set()
        self._outbox: collections.deque = collections.deque()  # (leader, items) to forward
        self._applied_q: collections.deque = collections.deque()  # (entries, results)
        self._deliver_scheduled = False
        self._flush_scheduled = False
        self._closed = False
        self._last_ping = 0.0
        self.raft = SyncObj(cfg.self_peer, others, conf, consumers=[self.consumer])
        _MEMBERS[id(self.raft)] = self
        self.raft.addOnTickCallback(self._on_tick)

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
        if self._outbox:
            self._send_outbox()
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
            # pysyncobj checks connectionTimeout only when a socket has an event, so a dial to
            # an address where nothing answers (a peer that came back elsewhere: a replaced
            # swarm task, a healed partition) sat in SYN-SENT for the kernel's ~2 minutes
            # instead of being retried (and its name resolved again)
            for conn in list(getattr(transport, "_connections", {}).values()):
                if conn.state == _tcp_connection.CONNECTION_STATE.CONNECTING and \
                        now - conn._TcpConnection__lastReadTime > self.raft.conf.connectionTimeout:
                    conn.disconnect()
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
        self._applied_q.append((entries, results))
        if not self._deliver_scheduled:  # one wake-up of the loop for answers and watches
            self._deliver_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # loop closed during shutdown
                pass

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
    # Every operation carries a request id and waits in self._waiters until this member
    # applies an entry holding that id (any entry: a repeated id is answered by MVCCStore.apply
    # with the first result). Batches are how operations travel:
    # - on the leader, pending operations (its own and those forwarded by followers) are
    #   proposed as one Raft command per batch, at most MAX_INFLIGHT batches at a time, so that
    #   under load many operations ride in each Raft entry;
    # - a follower forwards its pending operations to the leader in one message per batch
    #   ("kubelab_fwd", at most MAX_INFLIGHT_FORWARDS at a time), and the leader adds them to
    #   its own next batch: one Raft entry per round for the whole cluster, instead of one per
    #   member. A forwarded batch is done when this member has applied all its operations; it
    #   is sent again (same ids) if the leader changes or nothing came back for RESEND_AFTER.
    # - without a known leader, a batch is proposed through pysyncobj as before, which fails
    #   fast and is retried until the deadline.

    async def propose(self, fn: str, payload: Any, request_id: str | None = None) -> Any:
        """Commit one operation through Raft and return MVCCStore.apply's result for it.
        Raises Unavailable (no quorum / timeout) or MVCCError (rejected by the state machine)."""
        if self.quorum_lost():
            raise Unavailable(self.no_leader_message())
        if request_id is None:
            # barrier ids only route the answer back; the store does not remember them
            self._next_id += 1
            request_id = f"{_BARRIER_ID if fn == 'barrier' else ''}{self._id_prefix}{self._next_id}"
        fut = self.loop.create_future()
        if isinstance(payload, (pb.PutRequest, pb.DeleteRangeRequest, pb.TxnRequest)):
            payload = payload.SerializeToString()
        waiting = self._waiters.get(request_id)
        if waiting is None:
            self._waiters[request_id] = [fut]
        else:  # a client retried with the same id while the first attempt is in flight
            waiting.append(fut)
        self._pending.append((request_id, fn, payload))
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
        if self._closed or not self._pending:
            return
        leader = self.leader_addr()
        forward = leader is not None and leader != self.cfg.self_peer
        limit = self.MAX_INFLIGHT_FORWARDS if forward else \
            self.MAX_INFLIGHT - self._direct_inflight
        while self._pending and self._inflight < limit:
            items, self._pending = self._pending[:self.MAX_BATCH], self._pending[self.MAX_BATCH:]
            batch = _Batch(items, time.monotonic() + self.cfg.request_timeout)
            self._inflight += 1
            batch.timer = self.loop.call_later(self.WATCHDOG_PERIOD, self._watch_batch, batch)
            if forward:
                self._forward(batch, leader)
            else:
                self._submit(batch)

    def _forward(self, batch: _Batch, leader: str):
        batch.remaining = {it[0] for it in batch.items if it[0] in self._waiters}
        self._send_forward(batch, leader)
        if not batch.remaining:  # nothing of ours in it (operations forwarded to us)
            self._finish(batch)

    def _send_forward(self, batch: _Batch, leader: str):
        """Queue the batch for the Raft thread, which sends it to the leader (see _on_tick)."""
        batch.forwarded_to = leader
        batch.sent_at = time.monotonic()
        self._fwd_batches.add(batch)
        self._outbox.append((leader, batch.items))
        notifier = getattr(self.raft, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()  # wake the Raft thread

    def _send_outbox(self):
        # Raft thread: pysyncobj's transport is used from its own thread only
        while self._outbox:
            leader, items = self._outbox.popleft()
            for node in self.raft.otherNodes:
                if node.id == leader:
                    if self.raft.isNodeConnected(node):
                        self.raft._SyncObj__transport.send(
                            node, {"type": "kubelab_fwd", "items": items})
                    break  # else lost: the batch's watchdog sends it again

    def _on_forwarded(self, items):
        """Raft thread, leader side: a follower's operations join this member's next batch.
        When nothing is in flight or waiting here (light load), they are proposed at once from
        this thread, which saves a round trip through the event loop."""
        if self._direct_inflight == 0 and self._inflight == 0 and not self._pending and \
                self.raft._isLeader():
            self._direct_inflight += 1

            def callback(result, err):  # Raft thread
                self._direct_inflight -= 1
                if err != FAIL_REASON.SUCCESS:  # take the ordinary path (which retries)
                    self._call_loop(self._accept_forwarded, items)
                elif self._pending:
                    self._call_loop(self._schedule_flush)

            self.consumer.apply_batch(list(items), callback=callback)
            return
        self._call_loop(self._accept_forwarded, items)

    def _call_loop(self, fn, *args):
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _accept_forwarded(self, items):
        if self._closed or not self.is_leader():
            return  # the follower sends them again to whoever leads now
        self._pending.extend(items)
        self._schedule_flush()

    def _submit(self, batch: _Batch):
        batch.forwarded_to = None
        entries = [(rid, fn, payload) for rid, fn, payload in batch.items]
        attempt = batch.attempt = batch.attempt + 1

        def callback(result, err):
            try:
                self.loop.call_soon_threadsafe(self._on_batch_done, batch, attempt, result, err)
            except RuntimeError:
                pass

        self.consumer.apply_batch(entries, callback=callback)

    def _on_batch_done(self, batch: _Batch, attempt: int, result, err):
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

    def _resubmit(self, batch: _Batch):
        if not batch.done:
            self._submit(batch)

    def _watch_batch(self, batch: _Batch):
        """A proposal forwarded to a leader that died may never be answered: fail it as soon
        as quorum is known to be lost, or at its deadline; send a forwarded batch again when
        the leader changed or nothing came back for a while."""
        if batch.done:
            return
        now = time.monotonic()
        if self.quorum_lost():
            self._finish(batch, error=Unavailable(self.no_leader_message()))
            return
        if now >= batch.deadline:
            self._finish(batch, error=Unavailable(self._timeout_message()))
            return
        if batch.forwarded_to is not None:
            leader = self.leader_addr()
            if leader != batch.forwarded_to or now - batch.sent_at > self.RESEND_AFTER:
                self._fwd_batches.discard(batch)
                batch.items = [it for it in batch.items if it[0] in batch.remaining]
                if leader is not None and leader != self.cfg.self_peer:
                    self._send_forward(batch, leader)
                else:
                    self._submit(batch)
        batch.timer = self.loop.call_later(self.WATCHDOG_PERIOD, self._watch_batch, batch)

    def _timeout_message(self) -> str:
        if self.leader_addr() is None:
            return self.no_leader_message()
        return TIMED_OUT

    def _deliver(self):
        """Loop thread: answer the operations waiting here that this member has applied."""
        self._deliver_scheduled = False
        self._notify_applied()  # watches
        waiters = self._waiters
        while self._applied_q:
            entries, results = self._applied_q.popleft()
            done = []
            for (rid, _, _), res in zip(entries, results):
                futs = waiters.pop(rid, None)
                if futs is None:
                    continue
                done.append(rid)
                for fut in futs:
                    if not fut.done():
                        fut.set_result(res)
            if done and self._fwd_batches:
                for b in list(self._fwd_batches):
                    b.remaining.difference_update(done)
                    if not b.remaining:
                        self._finish(b)

    def _finish(self, batch: _Batch, results=None, error=None):
        if batch.done:
            return
        batch.done = True
        self._fwd_batches.discard(batch)
        if batch.timer is not None:
            batch.timer.cancel()
        self._inflight -= 1
        # a forwarded batch ends with neither: _deliver answered its operations one by one
        if error is not None or results is not None:
            waiters = self._waiters
            for i, (rid, _, _) in enumerate(batch.items):
                futs = waiters.pop(rid, None)
                if futs is None:
                    continue  # already answered (or not ours)
                for fut in futs:
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
        _MEMBERS.pop(id(self.raft), None)
        try:
            self.raft.destroy()
        except Exception:  # pragma: no cover - best effort at shutdown
            log.exception("raft destroy failed")


@dataclasses.dataclass(eq=False)
class _Batch:
    items: list  # (request id, fn, payload)
    deadline: float
    attempt: int = 0
    done: bool = False
    timer: Any = None
    forwarded_to: str | None = None  # leader it was forwarded to, None = proposed here
    sent_at: float = 0.0
    remaining: set = dataclasses.field(default_factory=set)  # ids not yet applied here
