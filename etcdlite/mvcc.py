"""The MVCC key-value state machine behind etcdlite.

A plain, deterministic class: no sockets, no threads, no clocks, no Raft. Every member applies the
same commands in the same order (replication.py feeds it from the Raft log) and so holds the same
state. It mirrors etcd's mvcc package: one global revision, per-key create/mod revision and version,
reads at past revisions until compaction, leases that own keys, and an event history for watches.

Requests and responses are the etcd protobuf messages (proto/etcdserverpb), so the gRPC layer only
adds headers. Errors carry etcd's gRPC status code name and exact message text, because etcd clients
match on that text.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import zlib
from typing import Iterable, Iterator

from sortedcontainers import SortedDict

from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb import kv_pb2 as mvccpb

MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
MAX_LEASE_TTL = 9_000_000_000  # etcd's MaxLeaseTTL
DEFAULT_EVENT_HISTORY = 100_000
DEDUP_WINDOW = 20_000


class MVCCError(Exception):
    """An etcd error: a gRPC status code name plus etcd's exact message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):  # picklable, so dedup results survive snapshots
        return (MVCCError, (self.code, self.message))


def err_compacted() -> MVCCError:
    return MVCCError("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted")


def err_future_rev() -> MVCCError:
    return MVCCError("OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision")


def err_lease_not_found() -> MVCCError:
    return MVCCError("NOT_FOUND", "etcdserver: requested lease not found")


@dataclasses.dataclass(slots=True, frozen=True)
class KeyValue:
    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes
    lease: int

    def to_pb(self, keys_only: bool = False) -> mvccpb.KeyValue:
        return mvccpb.KeyValue(
            key=self.key, create_revision=self.create_revision, mod_revision=self.mod_revision,
            version=self.version, value=b"" if keys_only else self.value, lease=self.lease)


@dataclasses.dataclass(slots=True, frozen=True)
class Event:
    """One change at one revision. kv is the new value (PUT) or a tombstone carrying only the key
    and the delete revision (DELETE), as etcd reports it."""
    revision: int
    type: int  # mvccpb.Event.PUT / DELETE
    kv: KeyValue
    prev_kv: KeyValue | None

    def to_pb(self, with_prev: bool) -> mvccpb.Event:
        ev = mvccpb.Event(type=self.type, kv=self.kv.to_pb())
        if with_prev and self.prev_kv is not None:
            ev.prev_kv.CopyFrom(self.prev_kv.to_pb())
        return ev


@dataclasses.dataclass(slots=True)
class Lease:
    id: int
    ttl: int
    keys: set[bytes] = dataclasses.field(default_factory=set)


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """etcd's range rule: end empty → the single key; end == b'\\0' → every key >= start."""
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


class MVCCStore:
    """The replicated state. Mutating methods are called only from Raft apply, in log order."""

    def __init__(self, event_history: int = DEFAULT_EVENT_HISTORY):
        self.revision = 1  # etcd's first revision; the first write makes it 2
        self.compact_revision = 0
        # key -> ascending list of (revision, KeyValue | None); None marks a deletion
        self._history: SortedDict = SortedDict()
        self._event_revs: list[int] = []
        self._events: list[Event] = []
        self.event_history = event_history
        # Oldest revision a watch can start from; raised by compaction and by trimming the
        # bounded event history.
        self.watch_floor = 0
        self.leases: dict[int, Lease] = {}
        self.members: dict[int, dict] = {}  # member id -> published attributes (name, clientURLs)
        self._applied: collections.OrderedDict = collections.OrderedDict()  # request id -> result
        self._pending_rev = 0  # revision used by writes of the command being applied
        self._wrote = False
        self._undo: list = []  # undo actions of the command being applied

    # ---------------------------------------------------------------- dedup of retried commands
    def apply(self, request_id: str | None, fn: str, arg) -> object:
        """Apply one client command exactly once. A retried command (same id, e.g. resubmitted
        after a leader change lost its reply) gets the first application's result again."""
        if request_id is not None:
            done = self._applied.get(request_id)
            if done is not None:
                return done
        try:
            result = getattr(self, "op_" + fn)(arg)
        except MVCCError as e:
            self._rollback()
            result = e
        except Exception as e:  # a bug must not wedge the apply loop on every member
            self._rollback()
            result = MVCCError("INTERNAL", f"etcdlite: apply {fn} failed: {e!r}")
        if request_id is not None:
            self._applied[request_id] = result
            while len(self._applied) > DEDUP_WINDOW:
                self._applied.popitem(last=False)
        return result

    # ---------------------------------------------------------------- reads
    def _latest(self, key: bytes, rev: int = 0) -> KeyValue | None:
        hist = self._history.get(key)
        if not hist:
            return None
        if rev <= 0:
            return hist[-1][1]
        # newest entry at or below rev
        i = bisect.bisect_right(hist, rev, key=lambda e: e[0])
        return hist[i - 1][1] if i else None

    def _keys_in(self, start: bytes, end: bytes) -> Iterable[bytes]:
        if not end:
            return [start] if start in self._history else []
        if end == b"\0":
            return self._history.irange(minimum=start)
        return self._history.irange(minimum=start, maximum=end, inclusive=(True, False))

    def _iter_range(self, start: bytes, end: bytes, rev: int) -> Iterator[KeyValue]:
        for key in self._keys_in(start, end):
            kv = self._latest(key, rev)
            if kv is not None:
                yield kv

    def check_read_revision(self, rev: int) -> None:
        if rev > self.revision:
            raise err_future_rev()
        if 0 < rev < self.compact_revision:
            raise err_compacted()

    def range(self, r: pb.RangeRequest) -> pb.RangeResponse:
        self.check_read_revision(r.revision)
        rev = r.revision if r.revision > 0 else 0
        sort_order = r.sort_order
        if sort_order == pb.RangeRequest.NONE and r.sort_target != pb.RangeRequest.KEY:
            sort_order = pb.RangeRequest.ASCEND  # etcd sorts ascending when only a target is given
        filtered = bool(r.min_mod_revision or r.max_mod_revision or r.min_create_revision
                        or r.max_create_revision)
        kvs: list[KeyValue] = []
        count = 0
        # Keys come out in ascending key order, so an unsorted (or key-ascending) limited range
        # can stop early, only counting the rest.
        early_limit = r.limit > 0 and not filtered and sort_order in (
            pb.RangeRequest.NONE, pb.RangeRequest.ASCEND) and r.sort_target == pb.RangeRequest.KEY
        for kv in self._iter_range(r.key, r.range_end, rev):
            count += 1
            if r.count_only or (early_limit and len(kvs) >= r.limit):
                continue
            kvs.append(kv)
        if filtered:
            kvs = [kv for kv in kvs if
                   (not r.min_mod_revision or kv.mod_revision >= r.min_mod_revision) and
                   (not r.max_mod_revision or kv.mod_revision <= r.max_mod_revision) and
                   (not r.min_create_revision or kv.create_revision >= r.min_create_revision) and
                   (not r.max_create_revision or kv.create_revision <= r.max_create_revision)]
        if sort_order != pb.RangeRequest.NONE:
            keyfn = {
                pb.RangeRequest.KEY: lambda kv: kv.key,
                pb.RangeRequest.VERSION: lambda kv: kv.version,
                pb.RangeRequest.CREATE: lambda kv: kv.create_revision,
                pb.RangeRequest.MOD: lambda kv: kv.mod_revision,
                pb.RangeRequest.VALUE: lambda kv: kv.value,
            }[r.sort_target]
            kvs.sort(key=keyfn, reverse=sort_order == pb.RangeRequest.DESCEND)
        resp = pb.RangeResponse(count=count)
        # etcd sets more when the (filtered) result exceeds the limit; count stays unfiltered
        total = len(kvs) if filtered else count
        if r.limit > 0 and len(kvs) > r.limit:
            kvs = kvs[: r.limit]
        resp.more = r.limit > 0 and total > len(kvs) and not r.count_only
        if not r.count_only:
            resp.kvs.extend(kv.to_pb(r.keys_only) for kv in kvs)
        return resp

    def events_since(self, start_rev: int, limit: int = 1000) -> list[Event]:
        """Events with revision >= start_rev, in order, whole revisions only, at most ~limit."""
        i = bisect.bisect_left(self._event_revs, start_rev)
        out = self._events[i:i + limit]
        if len(out) == limit:  # do not split a revision across two responses
            j = i + limit
            while j < len(self._events) and self._events[j].revision == out[-1].revision:
                out.append(self._events[j])
                j += 1
        return out

    # ---------------------------------------------------------------- writes
    def _begin(self) -> None:
        self._pending_rev = self.revision + 1
        self._wrote = False
        self._undo = []

    def _commit(self) -> int:
        if self._wrote:
            self.revision = self._pending_rev
            self._trim_events()
        self._undo = []
        return self.revision

    def _rollback(self) -> None:
        """A command that fails half-way (e.g. a put on an unknown lease inside a txn) leaves
        no partial writes: undo in reverse order."""
        for undo in reversed(self._undo):
            undo()
        self._undo = []
        self._wrote = False

    def _record(self, ev: Event) -> None:
        self._event_revs.append(ev.revision)
        self._events.append(ev)
        self._wrote = True
        self._undo.append(self._unrecord)

    def _unrecord(self) -> None:
        self._event_revs.pop()
        self._events.pop()

    def _append_history(self, key: bytes, entry) -> None:
        hist = self._history.setdefault(key, [])
        hist.append(entry)

        def undo():
            hist.pop()
            if not hist:
                del self._history[key]
        self._undo.append(undo)

    def _lease_key(self, lease_id: int, key: bytes, add: bool) -> None:
        lease = self.leases.get(lease_id)
        if lease is None:
            return
        if add and key not in lease.keys:
            lease.keys.add(key)
            self._undo.append(lambda: lease.keys.discard(key))
        elif not add and key in lease.keys:
            lease.keys.discard(key)
            self._undo.append(lambda: lease.keys.add(key))

    def _trim_events(self) -> None:
        excess = len(self._events) - self.event_history
        if excess > self.event_history // 10:
            # keep whole revisions, and always the newest one (even with event_history=0)
            cut = self._event_revs[min(excess, len(self._event_revs) - 1)]
            i = bisect.bisect_left(self._event_revs, cut)
            del self._events[:i]
            del self._event_revs[:i]
            self.watch_floor = max(self.watch_floor, cut)

    def _put(self, r: pb.PutRequest, resp: pb.PutResponse) -> None:
        prev = self._latest(r.key)
        if r.ignore_value or r.ignore_lease:
            if prev is None:
                raise MVCCError("INVALID_ARGUMENT", "etcdserver: key not found")
        value = prev.value if r.ignore_value else r.value
        lease = prev.lease if r.ignore_lease else r.lease
        if lease and lease not in self.leases:
            raise err_lease_not_found()
        rev = self._pending_rev
        kv = KeyValue(r.key, prev.create_revision if prev else rev, rev,
                      prev.version + 1 if prev else 1, value, lease)
        self._append_history(r.key, (rev, kv))
        if prev is not None and prev.lease and prev.lease != lease:
            self._lease_key(prev.lease, r.key, add=False)
        if lease:
            self._lease_key(lease, r.key, add=True)
        self._record(Event(rev, mvccpb.Event.PUT, kv, prev))
        if r.prev_kv and prev is not None:
            resp.prev_kv.CopyFrom(prev.to_pb())

    def _delete(self, r: pb.DeleteRangeRequest, resp: pb.DeleteRangeResponse) -> None:
        rev = self._pending_rev
        victims = list(self._iter_range(r.key, r.range_end, 0))
        for prev in victims:
            self._append_history(prev.key, (rev, None))
            if prev.lease:
                self._lease_key(prev.lease, prev.key, add=False)
            tomb = KeyValue(prev.key, 0, rev, 0, b"", 0)
            self._record(Event(rev, mvccpb.Event.DELETE, tomb, prev))
            if r.prev_kv:
                resp.prev_kvs.append(prev.to_pb())
        resp.deleted = len(victims)

    def op_put(self, r: pb.PutRequest) -> tuple[pb.PutResponse, int]:
        self._begin()
        resp = pb.PutResponse()
        self._put(r, resp)
        return resp, self._commit()

    def op_delete_range(self, r: pb.DeleteRangeRequest) -> tuple[pb.DeleteRangeResponse, int]:
        self._begin()
        resp = pb.DeleteRangeResponse()
        self._delete(r, resp)
        return resp, self._commit()

    def _compare(self, c: pb.Compare) -> bool:
        keys = [c.key] if not c.range_end else list(self._keys_in(c.key, c.range_end))
        kvs = [self._latest(k) for k in keys]
        if c.range_end:  # a range skips missing keys, but an empty range compares as one
            kvs = [kv for kv in kvs if kv is not None] or [None]  # missing key (zero values)
        for kv in kvs:
            if c.target == pb.Compare.VALUE:
                if kv is None:
                    return False  # etcd: a value compare on a missing key fails
                actual, want = kv.value, c.value
            elif c.target == pb.Compare.VERSION:
                actual, want = (kv.version if kv else 0), c.version
            elif c.target == pb.Compare.CREATE:
                actual, want = (kv.create_revision if kv else 0), c.create_revision
            elif c.target == pb.Compare.MOD:
                actual, want = (kv.mod_revision if kv else 0), c.mod_revision
            elif c.target == pb.Compare.LEASE:
                actual, want = (kv.lease if kv else 0), c.lease
            else:
                return False
            res = c.result
            if res == pb.Compare.EQUAL and not actual == want:
                return False
            if res == pb.Compare.NOT_EQUAL and not actual != want:
                return False
            if res == pb.Compare.GREATER and not actual > want:
                return False
            if res == pb.Compare.LESS and not actual < want:
                return False
        return True

    def _exec_ops(self, ops, resp: pb.TxnResponse, path: Iterator[bool]) -> None:
        for op in ops:
            kind = op.WhichOneof("request")
            out = resp.responses.add()
            if kind == "request_range":
                # reads inside a txn see the txn's own earlier writes
                out.response_range.CopyFrom(self.range(op.request_range))
            elif kind == "request_put":
                out.response_put.SetInParent()
                self._put(op.request_put, out.response_put)
            elif kind == "request_delete_range":
                out.response_delete_range.SetInParent()
                self._delete(op.request_delete_range, out.response_delete_range)
            elif kind == "request_txn":
                out.response_txn.SetInParent()
                self._txn(op.request_txn, out.response_txn, path)

    def _compare_path(self, r: pb.TxnRequest) -> list[bool]:
        """etcd's compareToPath: the outcome of this txn's compares and of every nested txn on
        the chosen branches, in execution order, all judged on the state before the txn runs
        (a nested txn's compares do not see the writes of the ops before it)."""
        ok = all(self._compare(c) for c in r.compare)
        path = [ok]
        for op in r.success if ok else r.failure:
            if op.WhichOneof("request") == "request_txn":
                path.extend(self._compare_path(op.request_txn))
        return path

    def _txn(self, r: pb.TxnRequest, resp: pb.TxnResponse,
             path: Iterator[bool] | None = None) -> None:
        if path is None:
            path = iter(self._compare_path(r))
        ok = next(path)
        resp.succeeded = ok
        self._exec_ops(r.success if ok else r.failure, resp, path)

    def read_txn(self, r: pb.TxnRequest, resp: pb.TxnResponse) -> None:
        """A txn without writes, served from local state (no proposal needed)."""
        self._txn(r, resp)

    def op_txn(self, r: pb.TxnRequest) -> tuple[pb.TxnResponse, int]:
        self._begin()
        resp = pb.TxnResponse()
        self._txn(r, resp)
        rev = self._commit()
        _fill_headers_revision(resp, rev)
        return resp, rev

    def op_compact(self, rev: int) -> tuple[pb.CompactionResponse, int]:
        if rev <= self.compact_revision:
            raise err_compacted()
        if rev > self.revision:
            raise err_future_rev()
        for key in list(self._history.keys()):
            hist = self._history[key]
            i = bisect.bisect_right(hist, rev, key=lambda e: e[0])
            # keep the newest entry at or below rev (unless it is a deletion) and all later ones
            keep_from = i - 1 if i else 0
            if i and hist[i - 1][1] is None:
                keep_from = i
            if keep_from:
                del hist[:keep_from]
            if not hist:
                del self._history[key]
        self.compact_revision = rev
        # etcd keeps revision `rev` itself: a watch may still start at the compact revision
        # (and a compacted watch is told compact_revision=rev, so it can resume from there)
        self.watch_floor = max(self.watch_floor, rev)
        i = bisect.bisect_left(self._event_revs, rev)
        del self._events[:i]
        del self._event_revs[:i]
        return pb.CompactionResponse(), self.revision

    # ---------------------------------------------------------------- leases
    def op_lease_grant(self, arg: tuple[int, int]) -> tuple[pb.LeaseGrantResponse, int]:
        lease_id, ttl = arg
        if lease_id in self.leases:
            raise MVCCError("FAILED_PRECONDITION", "etcdserver: lease already exists")
        if ttl > MAX_LEASE_TTL:
            raise MVCCError("OUT_OF_RANGE", "etcdserver: too large lease TTL")
        self.leases[lease_id] = Lease(lease_id, ttl)
        return pb.LeaseGrantResponse(ID=lease_id, TTL=ttl), self.revision

    def op_lease_revoke(self, lease_id: int) -> tuple[pb.LeaseRevokeResponse, int]:
        lease = self.leases.get(lease_id)
        if lease is None:
            raise err_lease_not_found()
        self._begin()
        for key in sorted(lease.keys):
            self._delete(pb.DeleteRangeRequest(key=key), pb.DeleteRangeResponse())
        del self.leases[lease_id]
        return pb.LeaseRevokeResponse(), self._commit()

    def op_lease_keepalive(self, lease_id: int) -> tuple[int, int]:
        """Renewal goes through the log so the leader, wherever it is, learns of it."""
        lease = self.leases.get(lease_id)
        return (lease.ttl if lease else 0), self.revision

    def op_publish(self, member: dict) -> tuple[None, int]:
        self.members[member["id"]] = member
        return None, self.revision

    def op_barrier(self, _arg) -> tuple[None, int]:
        return None, self.revision

    # ---------------------------------------------------------------- maintenance
    def hash_kv(self, rev: int = 0) -> int:
        h = 0
        for key in self._history:
            kv = self._latest(key, rev)
            if kv is not None:
                h = zlib.crc32(kv.key + kv.value + str(kv.mod_revision).encode(), h)
        return h

    def size_bytes(self) -> int:
        return sum(len(k) + sum(len(kv.value) + 48 for _, kv in hist if kv)
                   for k, hist in self._history.items())


def _fill_headers_revision(resp: pb.TxnResponse, rev: int) -> None:
    """Nested responses carry the txn's revision in their headers, as etcd's do."""
    for out in resp.responses:
        kind = out.WhichOneof("response")
        inner = getattr(out, kind)
        inner.header.revision = rev
        if kind == "response_txn":
            _fill_headers_revision(inner, rev)


def check_txn(r: pb.TxnRequest, max_ops: int = MAX_TXN_OPS) -> None:
    """etcd's request validation, done before proposing: op count and duplicate writes."""
    if max(len(r.compare), len(r.success), len(r.failure)) > max_ops:
        raise MVCCError("INVALID_ARGUMENT", "etcdserver: too many operations in txn request")
    for c in r.compare:
        if not c.key:
            raise MVCCError("INVALID_ARGUMENT", "etcdserver: key is not provided")
    for branch in (r.success, r.failure):
        for op in branch:
            kind = op.WhichOneof("request")
            if kind == "request_txn":
                check_txn(op.request_txn, max_ops)
            elif kind is not None and not getattr(op, kind).key:
                raise MVCCError("INVALID_ARGUMENT", "etcdserver: key is not provided")
        _check_intervals(branch)


def _check_intervals(ops) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """etcd's checkIntervals: a branch may not put a key twice, nor put a key it deletes, counting
    the ops of its nested txns (whose success and failure branches exclude each other).
    Returns the branch's puts and deletes."""
    def dup() -> MVCCError:
        return MVCCError("INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request")

    dels = [(op.request_delete_range.key, op.request_delete_range.range_end) for op in ops
            if op.WhichOneof("request") == "request_delete_range"]
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _check_intervals(op.request_txn.success)
        puts_else, dels_else = _check_intervals(op.request_txn.failure)
        for key in puts_then:
            if key in puts or any(in_range(key, s, e) for s, e in dels):
                raise dup()
            puts.add(key)
        for key in puts_else:
            if (key in puts and key not in puts_then) or any(in_range(key, s, e)
                                                              for s, e in dels):
                raise dup()
            puts.add(key)
        dels += dels_then + dels_else
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        key = op.request_put.key
        if key in puts or any(in_range(key, s, e) for s, e in dels):
            raise dup()
        puts.add(key)
    return puts, dels
