"""An asyncio etcd v3 client over the project's own protos, with endpoint failover and retry.

Used by kubelab's API server (and by the CLI and tests) against etcdlite or a real etcd. Writes
carry an `etcdlite-request-id` so that a retry after a lost reply is applied once by etcdlite
(a real etcd ignores the header; there a retried write may apply twice, as with any etcd client).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import AsyncIterator, Sequence

import grpc

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc
from proto.mvccpb import kv_pb2 as mvccpb

log = logging.getLogger("kubelab.etcdclient")

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.max_receive_message_length", 2 ** 31 - 1),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.enable_retries", 0),
    # a restarted member is found again within a second (gRPC's default backoff grows to 2 min)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# Codes after which another endpoint (or the same one, later) may succeed.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class EtcdError(Exception):
    """An error answered by the store, with its gRPC code and etcd's message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{message} ({code.name})")
        self.code = code
        self.message = message

    @property
    def unavailable(self) -> bool:
        return self.code in RETRYABLE


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes [prefix, end) cover every key starting with prefix."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def _b(x: bytes | str) -> bytes:
    return x.encode() if isinstance(x, str) else x


def _target(url: str) -> str:
    for scheme in ("http://", "https://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    return url.rstrip("/")


@dataclasses.dataclass
class WatchEvent:
    type: str  # "PUT" | "DELETE"
    kv: mvccpb.KeyValue
    prev_kv: mvccpb.KeyValue | None


class WatchCompacted(Exception):
    def __init__(self, compact_revision: int):
        super().__init__(f"watch start revision compacted (compact_revision={compact_revision})")
        self.compact_revision = compact_revision


class EtcdClient:
    """Round-robin over endpoints; a request that fails with UNAVAILABLE moves to the next
    endpoint and is retried until `timeout` (default 10 s) has passed."""

    def __init__(self, endpoints: Sequence[str], timeout: float = 10.0,
                 call_timeout: float = 6.0, retry: bool = True):
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = [_target(e) for e in endpoints]
        self.timeout = timeout
        self.call_timeout = call_timeout
        self.retry = retry  # False: the first answer is final (to see what a member says)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple, object] = {}
        self._next = 0

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
        self._stubs.clear()

    async def __aenter__(self) -> "EtcdClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        ch = self._channels.get(endpoint)
        if ch is None:
            ch = grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
            self._channels[endpoint] = ch
        return ch

    def _stub(self, stub_cls, endpoint: str):
        """Stubs are cached per endpoint (building one per call showed in profiles)."""
        key = (stub_cls, endpoint)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = stub_cls(self._channel(endpoint))
        return stub

    def _rotate(self) -> str:
        ep = self.endpoints[self._next % len(self.endpoints)]
        self._next += 1
        return ep

    async def _call(self, stub_cls, method: str, request, *, idempotent: bool = True,
                    endpoint: str | None = None):
        deadline = time.monotonic() + self.timeout
        metadata = [("etcdlite-request-id", uuid.uuid4().hex)]
        attempt = 0
        while True:
            ep = endpoint or self._rotate()
            stub = self._stub(stub_cls, ep)
            try:
                return await getattr(stub, method)(
                    request, timeout=min(self.call_timeout, max(0.1, deadline - time.monotonic())),
                    metadata=metadata)
            except grpc.aio.AioRpcError as e:
                code = e.code()
                err = EtcdError(code, e.details() or code.name)
                if code not in RETRYABLE or endpoint is not None or not idempotent or \
                        not self.retry:
                    raise err from None
                if time.monotonic() >= deadline:
                    raise err from None
                attempt += 1
                await asyncio.sleep(min(0.05 * attempt, 0.3))

    # ------------------------------------------------------------------ KV
    async def range(self, key: bytes | str, range_end: bytes | str = b"", *, limit: int = 0,
                    revision: int = 0, serializable: bool = False, keys_only: bool = False,
                    count_only: bool = False, sort_order: int = 0,
                    sort_target: int = 0) -> pb.RangeResponse:
        req = pb.RangeRequest(key=_b(key), range_end=_b(range_end), limit=limit,
                              revision=revision, serializable=serializable, keys_only=keys_only,
                              count_only=count_only, sort_order=sort_order,
                              sort_target=sort_target)
        return await self._call(rpc.KVStub, "Range", req)

    async def get(self, key: bytes | str, **kw) -> mvccpb.KeyValue | None:
        resp = await self.range(key, **kw)
        return resp.kvs[0] if resp.kvs else None

    async def get_prefix(self, prefix: bytes | str, **kw) -> pb.RangeResponse:
        p = _b(prefix)
        return await self.range(p, prefix_end(p) if p else b"\0", **kw)

    async def put(self, key: bytes | str, value: bytes | str, *, lease: int = 0,
                  prev_kv: bool = False) -> pb.PutResponse:
        req = pb.PutRequest(key=_b(key), value=_b(value), lease=lease, prev_kv=prev_kv)
        return await self._call(rpc.KVStub, "Put", req)

    async def delete(self, key: bytes | str, range_end: bytes | str = b"", *,
                     prev_kv: bool = False) -> pb.DeleteRangeResponse:
        req = pb.DeleteRangeRequest(key=_b(key), range_end=_b(range_end), prev_kv=prev_kv)
        return await self._call(rpc.KVStub, "DeleteRange", req)

    async def txn(self, compare: list[pb.Compare], success: list[pb.RequestOp],
                  failure: list[pb.RequestOp] = ()) -> pb.TxnResponse:
        req = pb.TxnRequest(compare=compare, success=success, failure=list(failure))
        return await self._call(rpc.KVStub, "Txn", req)

    async def compact(self, revision: int) -> pb.CompactionResponse:
        return await self._call(rpc.KVStub, "Compact", pb.CompactionRequest(revision=revision))

    # ------------------------------------------------------------------ leases
    async def lease_grant(self, ttl: int, lease_id: int = 0) -> pb.LeaseGrantResponse:
        return await self._call(rpc.LeaseStub, "LeaseGrant", pb.LeaseGrantRequest(TTL=ttl,
                                                                                  ID=lease_id))

    async def lease_revoke(self, lease_id: int) -> pb.LeaseRevokeResponse:
        return await self._call(rpc.LeaseStub, "LeaseRevoke", pb.LeaseRevokeRequest(ID=lease_id))

    async def lease_time_to_live(self, lease_id: int, keys: bool = False):
        return await self._call(rpc.LeaseStub, "LeaseTimeToLive",
                                pb.LeaseTimeToLiveRequest(ID=lease_id, keys=keys))

    async def lease_keepalive_once(self, lease_id: int) -> int:
        """Renew once; returns the TTL (0 when the lease is gone)."""
        deadline = time.monotonic() + self.timeout
        while True:
            ep = self._rotate()
            stub = rpc.LeaseStub(self._channel(ep))
            call = stub.LeaseKeepAlive(timeout=self.call_timeout)
            try:
                await call.write(pb.LeaseKeepAliveRequest(ID=lease_id))
                resp = await call.read()
                await call.done_writing()
                return resp.TTL
            except grpc.aio.AioRpcError as e:
                if e.code() not in RETRYABLE or time.monotonic() >= deadline:
                    raise EtcdError(e.code(), e.details() or "") from None
                await asyncio.sleep(0.1)
            finally:
                call.cancel()

    # ------------------------------------------------------------------ cluster
    async def status(self, endpoint: str) -> pb.StatusResponse:
        return await self._call(rpc.MaintenanceStub, "Status", pb.StatusRequest(),
                                endpoint=_target(endpoint))

    async def member_list(self) -> pb.MemberListResponse:
        return await self._call(rpc.ClusterStub, "MemberList", pb.MemberListRequest())

    # ------------------------------------------------------------------ watch
    async def watch(self, key: bytes | str, range_end: bytes | str = b"", *,
                    start_revision: int = 0, prev_kv: bool = False,
                    progress_notify: bool = False) -> AsyncIterator[tuple[int, list[WatchEvent]]]:
        """Yield (header revision, events) per response. Reconnects to another endpoint after a
        failure, resuming after the last revision seen, so no event is lost or repeated.
        Raises WatchCompacted when the start revision has been compacted away."""
        key_b, end_b = _b(key), _b(range_end)
        next_rev = start_revision
        last_header = 0
        while True:
            ep = self._rotate()
            stub = rpc.WatchStub(self._channel(ep))
            call = stub.Watch(metadata=[("hasleader", "true")])
            try:
                await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                    key=key_b, range_end=end_b, start_revision=next_rev, prev_kv=prev_kv,
                    progress_notify=progress_notify)))
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        break
                    if resp.compact_revision:
                        raise WatchCompacted(resp.compact_revision)
                    if resp.canceled:
                        raise EtcdError(grpc.StatusCode.CANCELLED,
                                        resp.cancel_reason or "watch canceled")
                    last_header = resp.header.revision
                    if resp.created and not next_rev:
                        next_rev = last_header + 1
                    if resp.events:
                        evs = [WatchEvent("PUT" if e.type == mvccpb.Event.PUT else "DELETE",
                                          e.kv, e.prev_kv if e.HasField("prev_kv") else None)
                               for e in resp.events]
                        next_rev = resp.events[-1].kv.mod_revision + 1
                        yield last_header, evs
                    elif not resp.created:
                        yield last_header, []
            except grpc.aio.AioRpcError as e:
                if e.code() not in RETRYABLE:
                    raise EtcdError(e.code(), e.details() or "") from None
                log.debug("watch on %s broke (%s); reconnecting", ep, e.details())
                await asyncio.sleep(0.1)
            finally:
                call.cancel()
