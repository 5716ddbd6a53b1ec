"""The etcd v3 gRPC front end of one etcdlite member (KV, Watch, Lease, Cluster, Maintenance).

It knows nothing of the key index: writes and linearizable reads go through RaftMember.propose,
serializable reads read the local MVCCStore under its lock, and watches follow the store's event
history as this member applies it (so a client sees every event exactly once, in order, from
whichever member it is connected to).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import secrets
import struct
import time
from typing import AsyncIterator

import grpc

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc
from proto.mvccpb import kv_pb2 as mvccpb

from .mvcc import MAX_LEASE_TTL, MVCCError, check_txn, in_range
from .replication import NO_LEADER, RaftConfig, RaftMember, Unavailable

log = logging.getLogger("etcdlite.server")

VERSION = "3.4.23"  # the etcd API version this member speaks (etcdctl and clients check it)
MAX_REQUEST_BYTES = 1536 * 1024  # etcd's --max-request-bytes default
GRPC_OPTIONS = [
    # etcdctl pings every 10 s while a stream is open; grpcio's defaults would answer with
    # GOAWAY too_many_pings after ~30 s of an idle watch (store-notes.md)
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES + 512 * 1024),
    ("grpc.max_send_message_length", 2 ** 31 - 1),
    ("grpc.so_reuseport", 0),
]


def member_id_for(peer_urls: list[str], token: str) -> int:
    """etcd derives a member's ID from its sorted peer URLs and the cluster token."""
    h = hashlib.sha1(("".join(sorted(peer_urls)) + token).encode()).digest()
    return struct.unpack(">Q", h[:8])[0]


def cluster_id_for(member_ids: list[int]) -> int:
    b = b"".join(struct.pack(">Q", m) for m in sorted(member_ids))
    return struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0]


def _abort_code(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)


class EtcdMember:
    """Everything one member runs: Raft, the watch hub, lease expiry, and the gRPC services."""

    def __init__(self, *, name: str, data_dir: str, peers: dict[str, str],
                 client_urls: list[str], advertise_client_urls: list[str],
                 cluster_token: str = "etcd-cluster", heartbeat_ms: int = 100,
                 election_ms: int = 1000, request_timeout: float = 5.0,
                 event_history: int = 100_000, progress_notify_interval: float = 600.0,
                 snapshot_count: int = 10_000):
        self.name = name
        self.peers = peers  # name -> peer URL
        self.client_urls = client_urls
        self.advertise_client_urls = advertise_client_urls or client_urls
        self.member_ids = {n: member_id_for([u], cluster_token) for n, u in peers.items()}
        self.member_id = self.member_ids[name]
        self.cluster_id = cluster_id_for(list(self.member_ids.values()))
        self._addr_to_id = {_hostport(u): self.member_ids[n] for n, u in peers.items()}
        self.election_ms = election_ms
        self.min_lease_ttl = max(1, math.ceil(1.5 * election_ms / 1000.0))
        self.progress_notify_interval = progress_notify_interval
        self.data_dir = data_dir
        self._raft_cfg = RaftConfig(
            name=name, self_peer=_hostport(peers[name]),
            peers={n: _hostport(u) for n, u in peers.items()}, data_dir=data_dir,
            heartbeat_ms=heartbeat_ms, election_ms=election_ms,
            request_timeout=request_timeout, event_history=event_history,
            snapshot_entries=snapshot_count)
        self.raft: RaftMember | None = None
        self._changed = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        # SyncObj binds its peer port and starts its tick thread in the constructor
        self.raft = await loop.run_in_executor(
            None, lambda: RaftMember(self._raft_cfg, loop, self._on_applied))
        server = grpc.aio.server(options=GRPC_OPTIONS)
        rpc.add_KVServicer_to_server(KVService(self), server)
        rpc.add_WatchServicer_to_server(WatchService(self), server)
        rpc.add_LeaseServicer_to_server(LeaseService(self), server)
        rpc.add_ClusterServicer_to_server(ClusterService(self), server)
        rpc.add_MaintenanceServicer_to_server(MaintenanceService(self), server)
        for url in self.client_urls:
            server.add_insecure_port(_hostport(url))
        await server.start()
        self._server = server
        self._tasks = [asyncio.create_task(self._lease_expiry_loop()),
                       asyncio.create_task(self._publish_loop())]
        log.info("member %s (%x) serving clients on %s", self.name, self.member_id,
                 ",".join(self.client_urls))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._server is not None:
            await self._server.stop(grace=0.5)
        if self.raft is not None:
            self.raft.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    def _on_applied(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    async def wait_applied(self, timeout: float | None = None) -> None:
        """Wait until something new has been applied to the local store."""
        ev = self._changed
        if timeout is None:
            await ev.wait()
        else:
            try:
                await asyncio.wait_for(ev.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _lease_expiry_loop(self) -> None:
        """Only the leader expires leases, by its own clock, through the log."""
        while True:
            await asyncio.sleep(0.25)
            for lease_id in self.raft.expired_leases():
                try:
                    await self.raft.propose("lease_revoke", lease_id,
                                            request_id=f"expire:{lease_id}:{time.time():.0f}")
                except (Unavailable, MVCCError):
                    pass

    async def _publish_loop(self) -> None:
        """Publish this member's name and client URLs through the log, as etcd does."""
        attrs = {"id": self.member_id, "name": self.name,
                 "clientURLs": list(self.advertise_client_urls)}
        while True:
            with self.raft.lock:
                if self.raft.store.members.get(self.member_id) == attrs:
                    return
            try:
                await self.raft.propose("publish", attrs)
            except (Unavailable, MVCCError):
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ helpers
    def header(self, revision: int | None = None) -> pb.ResponseHeader:
        if revision is None:
            revision = self.raft.store.revision
        return pb.ResponseHeader(cluster_id=self.cluster_id, member_id=self.member_id,
                                 revision=revision, raft_term=self.raft.raft.raftCurrentTerm)

    def leader_id(self) -> int:
        addr = self.raft.leader_addr()
        return self._addr_to_id.get(addr, 0) if addr else 0

    async def propose(self, context, fn: str, payload, request_id: str | None = None):
        try:
            return await self.raft.propose(fn, payload, request_id=request_id)
        except Unavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except MVCCError as e:
            await context.abort(_abort_code(e.code), e.message)

    async def linearize(self, context) -> None:
        """Wait until every write committed before this call has been applied here."""
        await self.propose(context, "barrier", None)

    async def fail_without_leader(self, context) -> None:
        """Streams opened with `hasleader: true` metadata need a leader (etcd's rule)."""
        md = dict(context.invocation_metadata() or ())
        if md.get("hasleader") == "true" and self.raft.quorum_lost():
            await context.abort(grpc.StatusCode.UNAVAILABLE, NO_LEADER)


def _hostport(url: str) -> str:
    u = url.strip()
    for scheme in ("http://", "https://", "unix://"):
        if u.startswith(scheme):
            u = u[len(scheme):]
    return u.rstrip("/")


def _request_id(context) -> str | None:
    """Clients may name a request so that their own retries are deduplicated too."""
    for k, v in context.invocation_metadata() or ():
        if k == "etcdlite-request-id":
            return v
    return None


def _need_key(key: bytes) -> None:
    if not key:
        raise MVCCError("INVALID_ARGUMENT", "etcdserver: key is not provided")


class KVService(rpc.KVServicer):
    def __init__(self, m: EtcdMember):
        self.m = m

    async def Range(self, request: pb.RangeRequest, context) -> pb.RangeResponse:
        m = self.m
        try:
            _need_key(request.key)
        except MVCCError as e:
            await context.abort(_abort_code(e.code), e.message)
        if not request.serializable:
            await m.linearize(context)
        try:
            with m.raft.lock:
                resp = m.raft.store.range(request)
                rev = m.raft.store.revision
        except MVCCError as e:
            await context.abort(_abort_code(e.code), e.message)
        resp.header.CopyFrom(m.header(rev))
        return resp

    async def Put(self, request: pb.PutRequest, context) -> pb.PutResponse:
        try:
            _need_key(request.key)
            if len(request.value) + len(request.key) > MAX_REQUEST_BYTES:
                raise MVCCError("INVALID_ARGUMENT", "etcdserver: request is too large")
        except MVCCError as e:
            await context.abort(_abort_code(e.code), e.message)
        resp, rev = await self.m.propose(context, "put", request, _request_id(context))
        resp.header.CopyFrom(self.m.header(rev))
        return resp

    async def DeleteRange(self, request: pb.DeleteRangeRequest, context):
        try:
            _need_key(request.key)
        except MVCCError as e:
            await context.abort(_abort_code(e.code), e.message)
        resp, rev = await self.m.propose(context, "delete_range", request, _request_id(context))
        resp.header.CopyFrom(self.m.header(rev))
        return resp

    async def Txn(self, request: pb.TxnRequest, context) -> pb.TxnResponse:
        try:
            check_txn(request)
        except MVCCError as e:
            await context.abort(_abort_code(e.code), e.message)
        if _txn_is_read_only(request):
            # etcd serves read-only txns without a proposal when serializable; a linearizable
            # one still needs the barrier
            if not all(op.request_range.serializable for op in
                       list(request.success) + list(request.failure)):
                await self.m.linearize(context)
            resp = pb.TxnResponse()
            try:
                with self.m.raft.lock:
                    self.m.raft.store.read_txn(request, resp)
                    rev = self.m.raft.store.revision
            except MVCCError as e:
                await context.abort(_abort_code(e.code), e.message)
            resp.header.CopyFrom(self.m.header(rev))
            _stamp_headers(resp, rev)
            return resp
        # the state machine already put the txn's revision in the nested headers
        resp, rev = await self.m.propose(context, "txn", request, _request_id(context))
        resp.header.CopyFrom(self.m.header(rev))
        return resp

    async def Compact(self, request: pb.CompactionRequest, context):
        resp, rev = await self.m.propose(context, "compact", request.revision,
                                         _request_id(context))
        resp.header.CopyFrom(self.m.header(rev))
        return resp


def _txn_is_read_only(r: pb.TxnRequest) -> bool:
    for op in list(r.success) + list(r.failure):
        kind = op.WhichOneof("request")
        if kind in ("request_put", "request_delete_range"):
            return False
        if kind == "request_txn" and not _txn_is_read_only(op.request_txn):
            return False
    return True


def _stamp_headers(resp: pb.TxnResponse, rev: int) -> None:
    """etcd's nested txn responses carry only the revision in their headers (no cluster_id,
    member_id or raft_term), which `etcdctl txn -w json` shows."""
    for out in resp.responses:
        inner = getattr(out, out.WhichOneof("response"))
        inner.header.Clear()
        inner.header.revision = rev
        if out.WhichOneof("response") == "response_txn":
            _stamp_headers(inner, rev)


class _Watcher:
    def __init__(self, watch_id: int, req: pb.WatchCreateRequest, next_rev: int):
        self.id = watch_id
        self.key = req.key
        self.range_end = req.range_end
        self.prev_kv = req.prev_kv
        self.progress_notify = req.progress_notify
        self.no_put = pb.WatchCreateRequest.NOPUT in req.filters
        self.no_delete = pb.WatchCreateRequest.NODELETE in req.filters
        self.next_rev = next_rev
        self.task: asyncio.Task | None = None

    def wants(self, ev) -> bool:
        if ev.type == mvccpb.Event.PUT and self.no_put:
            return False
        if ev.type == mvccpb.Event.DELETE and self.no_delete:
            return False
        return in_range(ev.kv.key, self.key, self.range_end)


class WatchService(rpc.WatchServicer):
    def __init__(self, m: EtcdMember):
        self.m = m

    async def Watch(self, request_iterator: AsyncIterator[pb.WatchRequest], context):
        m = self.m
        await m.fail_without_leader(context)
        md = dict(context.invocation_metadata() or ())
        require_leader = md.get("hasleader") == "true"
        out: asyncio.Queue = asyncio.Queue()
        watchers: dict[int, _Watcher] = {}
        next_id = 0

        async def follow(w: _Watcher) -> None:
            last_sent = time.monotonic()
            while True:
                with m.raft.lock:
                    store = m.raft.store
                    if w.next_rev < store.watch_floor:
                        compact = max(store.compact_revision, store.watch_floor)
                        out.put_nowait(pb.WatchResponse(
                            header=m.header(store.revision), watch_id=w.id, canceled=True,
                            compact_revision=compact))
                        watchers.pop(w.id, None)
                        return
                    events = store.events_since(w.next_rev) if \
                        store.revision >= w.next_rev else []
                    rev = store.revision
                if events:
                    w.next_rev = events[-1].revision + 1
                    chosen = [e.to_pb(w.prev_kv) for e in events if w.wants(e)]
                    if chosen:
                        out.put_nowait(pb.WatchResponse(header=m.header(rev), watch_id=w.id,
                                                        events=chosen))
                        last_sent = time.monotonic()
                    continue
                timeout = None
                if w.progress_notify:
                    timeout = max(0.0, last_sent + m.progress_notify_interval - time.monotonic())
                    if timeout == 0.0:
                        out.put_nowait(pb.WatchResponse(header=m.header(rev), watch_id=w.id))
                        last_sent = time.monotonic()
                        continue
                await m.wait_applied(timeout)

        async def read_requests() -> None:
            nonlocal next_id
            async for req in request_iterator:
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    cr = req.create_request
                    wid = cr.watch_id if cr.watch_id else next_id
                    if wid in watchers:
                        out.put_nowait(pb.WatchResponse(
                            header=m.header(), watch_id=wid, created=True, canceled=True,
                            cancel_reason="etcdserver: duplicate watch ID provided on the "
                                          "WatchStream"))
                        continue
                    next_id = max(next_id, wid) + 1
                    with m.raft.lock:
                        rev = m.raft.store.revision
                    start = cr.start_revision if cr.start_revision > 0 else rev + 1
                    w = _Watcher(wid, cr, start)
                    watchers[wid] = w
                    # "created" must precede any event of this watch (etcdctl pairs them)
                    out.put_nowait(pb.WatchResponse(header=m.header(rev), watch_id=wid,
                                                    created=True))
                    w.task = asyncio.create_task(follow(w))
                elif kind == "cancel_request":
                    wid = req.cancel_request.watch_id
                    w = watchers.pop(wid, None)
                    if w is not None:
                        w.task.cancel()
                        out.put_nowait(pb.WatchResponse(header=m.header(), watch_id=wid,
                                                        canceled=True))
                elif kind == "progress_request":
                    out.put_nowait(pb.WatchResponse(header=m.header(), watch_id=-1))
            out.put_nowait(None)  # client closed its side

        async def leader_monitor() -> None:
            while True:
                await asyncio.sleep(m.election_ms / 1000.0)
                if require_leader and m.raft.quorum_lost():
                    out.put_nowait(grpc.StatusCode.UNAVAILABLE)
                    return

        reader = asyncio.create_task(read_requests())
        monitor = asyncio.create_task(leader_monitor())
        try:
            while True:
                item = await out.get()
                if item is None:
                    return
                if item is grpc.StatusCode.UNAVAILABLE:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, NO_LEADER)
                await context.write(item)
        finally:
            reader.cancel()
            monitor.cancel()
            for w in watchers.values():
                if w.task:
                    w.task.cancel()


class LeaseService(rpc.LeaseServicer):
    def __init__(self, m: EtcdMember):
        self.m = m

    async def LeaseGrant(self, request: pb.LeaseGrantRequest, context):
        m = self.m
        if request.TTL > MAX_LEASE_TTL:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")
        lease_id = request.ID or (secrets.randbits(62) + 1)
        ttl = max(request.TTL, m.min_lease_ttl)
        resp, rev = await m.propose(context, "lease_grant", (lease_id, ttl), _request_id(context))
        resp.header.CopyFrom(m.header(rev))
        return resp

    async def LeaseRevoke(self, request: pb.LeaseRevokeRequest, context):
        resp, rev = await self.m.propose(context, "lease_revoke", request.ID,
                                         _request_id(context))
        resp.header.CopyFrom(self.m.header(rev))
        return resp

    async def LeaseKeepAlive(self, request_iterator, context):
        m = self.m
        await m.fail_without_leader(context)
        async for req in request_iterator:
            ttl, rev = await m.propose(context, "lease_keepalive", req.ID)
            yield pb.LeaseKeepAliveResponse(header=m.header(rev), ID=req.ID, TTL=ttl)

    async def LeaseTimeToLive(self, request: pb.LeaseTimeToLiveRequest, context):
        m = self.m
        await m.linearize(context)
        with m.raft.lock:
            lease = m.raft.store.leases.get(request.ID)
            if lease is None:
                return pb.LeaseTimeToLiveResponse(header=m.header(), ID=request.ID, TTL=-1)
            resp = pb.LeaseTimeToLiveResponse(
                header=m.header(), ID=request.ID, TTL=m.raft.remaining_ttl(request.ID),
                grantedTTL=lease.ttl)
            if request.keys:
                resp.keys.extend(sorted(lease.keys))
        return resp

    async def LeaseLeases(self, request, context):
        m = self.m
        await m.linearize(context)
        with m.raft.lock:
            ids = sorted(m.raft.store.leases)
        return pb.LeaseLeasesResponse(header=m.header(),
                                      leases=[pb.LeaseStatus(ID=i) for i in ids])


class ClusterService(rpc.ClusterServicer):
    def __init__(self, m: EtcdMember):
        self.m = m

    async def MemberList(self, request, context):
        m = self.m
        with m.raft.lock:
            published = dict(m.raft.store.members)
        members = []
        for name, url in m.peers.items():
            mid = m.member_ids[name]
            attrs = published.get(mid, {})
            members.append(pb.Member(ID=mid, name=attrs.get("name", ""), peerURLs=[url],
                                     clientURLs=attrs.get("clientURLs", [])))
        return pb.MemberListResponse(header=m.header(), members=members)

    async def _unsupported(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "etcdlite: runtime membership changes are not supported; restart "
                            "the members with a new --initial-cluster")

    MemberAdd = MemberRemove = MemberUpdate = MemberPromote = _unsupported


class MaintenanceService(rpc.MaintenanceServicer):
    def __init__(self, m: EtcdMember):
        self.m = m

    async def Status(self, request, context):
        m = self.m
        leader = m.leader_id()
        size = 0
        for f in ("raft.journal", "raft.snapshot"):
            try:
                size += os.path.getsize(os.path.join(m.data_dir, f))
            except OSError:
                pass
        with m.raft.lock:
            in_use = m.raft.store.size_bytes()
        resp = pb.StatusResponse(
            header=m.header(), version=VERSION, dbSize=size, leader=leader,
            raftIndex=m.raft.raft.raftCommitIndex, raftTerm=m.raft.raft.raftCurrentTerm,
            raftAppliedIndex=m.raft.raft.raftLastApplied, dbSizeInUse=in_use)
        if not leader:
            resp.errors.append(NO_LEADER)
        return resp

    async def Alarm(self, request, context):
        return pb.AlarmResponse(header=self.m.header())

    async def Defragment(self, request, context):
        return pb.DefragmentResponse(header=self.m.header())

    async def Hash(self, request, context):
        with self.m.raft.lock:
            h = self.m.raft.store.hash_kv()
        return pb.HashResponse(header=self.m.header(), hash=h)

    async def HashKV(self, request, context):
        try:
            with self.m.raft.lock:
                store = self.m.raft.store
                store.check_read_revision(request.revision)
                h = store.hash_kv(request.revision)
                compact = store.compact_revision
        except MVCCError as e:
            await context.abort(_abort_code(e.code), e.message)
        return pb.HashKVResponse(header=self.m.header(), hash=h, compact_revision=compact)

    async def Snapshot(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "etcdlite: snapshot save is not supported (the store is not bbolt)")

    async def MoveLeader(self, request, context):
        m = self.m
        target = {v: k for k, v in m.member_ids.items()}.get(request.targetID)
        if target is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "etcdserver: bad leader transferee")
        if not m.raft.is_leader():
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "etcdserver: not leader")
        m.raft.raft.transferLeadership(_hostport(m.peers[target]))
        return pb.MoveLeaderResponse(header=m.header())
