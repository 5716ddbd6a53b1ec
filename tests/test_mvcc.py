"""Unit tests of the MVCC state machine (etcdlite.mvcc.MVCCStore) against etcd v3.4 semantics.

Pure in-process tests: no sockets, no threads, no cluster. Each test builds its own store.
"""

from __future__ import annotations

import pickle

import pytest

from etcdlite import mvcc
from etcdlite.mvcc import MVCCError, MVCCStore, check_txn
from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb import kv_pb2 as mvccpb

COMPACTED = "etcdserver: mvcc: required revision has been compacted"
FUTURE = "etcdserver: mvcc: required revision is a future revision"
LEASE_NOT_FOUND = "etcdserver: requested lease not found"
DUPLICATE = "etcdserver: duplicate key given in txn request"


# ---------------------------------------------------------------- helpers

def ok(result):
    """An apply result that must be a success: returns (response, revision)."""
    assert not isinstance(result, MVCCError), f"unexpected error: {result.code} {result.message}"
    resp, rev = result
    return resp, rev


def failed(result, code: str, message: str) -> MVCCError:
    assert isinstance(result, MVCCError), f"expected {code} error, got {result!r}"
    assert (result.code, result.message) == (code, message)
    return result


def put(s: MVCCStore, key: bytes, value: bytes = b"", rid=None, **kw):
    return s.apply(rid, "put", pb.PutRequest(key=key, value=value, **kw))


def delete(s: MVCCStore, key: bytes, end: bytes = b"", rid=None, **kw):
    return s.apply(rid, "delete_range", pb.DeleteRangeRequest(key=key, range_end=end, **kw))


def txn(s: MVCCStore, compare=(), success=(), failure=(), rid=None):
    return s.apply(rid, "txn", pb.TxnRequest(compare=list(compare), success=list(success),
                                             failure=list(failure)))


def get(s: MVCCStore, key: bytes, end: bytes = b"", **kw) -> pb.RangeResponse:
    return s.range(pb.RangeRequest(key=key, range_end=end, **kw))


def one(s: MVCCStore, key: bytes, rev: int = 0):
    resp = get(s, key, revision=rev)
    assert len(resp.kvs) <= 1
    return resp.kvs[0] if resp.kvs else None


def keys(resp) -> list[bytes]:
    return [kv.key for kv in resp.kvs]


def op_put(key: bytes, value: bytes = b"", **kw) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


def op_del(key: bytes, end: bytes = b"", **kw) -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=end, **kw))


def op_get(key: bytes, end: bytes = b"", **kw) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, range_end=end, **kw))


def op_txn(compare=(), success=(), failure=()) -> pb.RequestOp:
    return pb.RequestOp(request_txn=pb.TxnRequest(compare=list(compare), success=list(success),
                                                  failure=list(failure)))


def cmp(key: bytes, target: str, result: str, range_end: bytes = b"", **want) -> pb.Compare:
    return pb.Compare(key=key, target=target, result=result, range_end=range_end, **want)


def grant(s: MVCCStore, lease_id: int, ttl: int = 60, rid=None):
    return s.apply(rid, "lease_grant", (lease_id, ttl))


def snapshot(s: MVCCStore) -> tuple:
    """Everything observable about a store's state, for equality checks."""
    all_kvs = get(s, b"\0", b"\0")
    events = [(e.revision, e.type, e.kv, e.prev_kv) for e in s.events_since(0, limit=10**9)]
    leases = {i: (lease.ttl, sorted(lease.keys)) for i, lease in s.leases.items()}
    return (s.revision, s.compact_revision, s.watch_floor, all_kvs.SerializeToString(),
            s.hash_kv(), events, leases, dict(s.members))


@pytest.fixture
def s() -> MVCCStore:
    return MVCCStore()


@pytest.fixture
def abc(s) -> MVCCStore:
    """a, b, c, d, foo, foo/1, foo/2, fop at revisions 2..9."""
    for k in (b"a", b"b", b"c", b"d", b"foo", b"foo/1", b"foo/2", b"fop"):
        ok(put(s, k, b"v-" + k))
    assert s.revision == 9
    return s


# ---------------------------------------------------------------- revisions and versions

def test_fresh_store_is_at_revision_one(s):
    assert s.revision == 1
    assert s.compact_revision == 0
    resp = get(s, b"\0", b"\0")
    assert resp.count == 0 and list(resp.kvs) == [] and not resp.more


def test_each_put_bumps_revision_by_one(s):
    for i in range(5):
        _, rev = ok(put(s, b"k%d" % i, b"v"))
        assert rev == i + 2
        assert s.revision == i + 2


def test_put_sets_create_mod_revision_and_version(s):
    ok(put(s, b"x", b"1"))
    ok(put(s, b"y", b"other"))
    ok(put(s, b"x", b"2"))
    ok(put(s, b"x", b"3"))
    kv = one(s, b"x")
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) == \
        (b"x", b"3", 2, 5, 3, 0)


def test_delete_then_reput_resets_version_and_create_revision(s):
    ok(put(s, b"x", b"1"))
    ok(put(s, b"x", b"2"))
    _, rev = ok(delete(s, b"x"))
    assert rev == 4
    assert one(s, b"x") is None
    _, rev = ok(put(s, b"x", b"3"))
    kv = one(s, b"x")
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value) == (rev, rev, 1, b"3")


# ---------------------------------------------------------------- range

def test_range_single_key(abc):
    resp = get(abc, b"foo")
    assert keys(resp) == [b"foo"]
    assert resp.kvs[0].value == b"v-foo"
    assert resp.count == 1 and not resp.more


def test_range_missing_key(abc):
    resp = get(abc, b"nope")
    assert keys(resp) == [] and resp.count == 0


def test_range_with_range_end_is_half_open(abc):
    assert keys(get(abc, b"b", b"d")) == [b"b", b"c"]


def test_range_with_range_end_before_key_is_empty(abc):
    resp = get(abc, b"d", b"b")
    assert keys(resp) == [] and resp.count == 0


def test_range_prefix(abc):
    # etcd's prefix: range_end is the prefix with its last byte incremented
    assert keys(get(abc, b"foo/", b"foo0")) == [b"foo/1", b"foo/2"]
    assert keys(get(abc, b"foo", b"fop")) == [b"foo", b"foo/1", b"foo/2"]


def test_range_end_nul_means_all_keys_from_key(abc):
    assert keys(get(abc, b"d", b"\0")) == [b"d", b"foo", b"foo/1", b"foo/2", b"fop"]


def test_range_nul_nul_is_every_key(abc):
    resp = get(abc, b"\0", b"\0")
    assert keys(resp) == [b"a", b"b", b"c", b"d", b"foo", b"foo/1", b"foo/2", b"fop"]
    assert resp.count == 8


def test_range_limit_sets_more_and_total_count(abc):
    resp = get(abc, b"\0", b"\0", limit=3)
    assert keys(resp) == [b"a", b"b", b"c"]
    assert resp.more and resp.count == 8
    resp = get(abc, b"\0", b"\0", limit=8)
    assert len(resp.kvs) == 8 and not resp.more and resp.count == 8
    resp = get(abc, b"\0", b"\0", limit=100)
    assert len(resp.kvs) == 8 and not resp.more


def test_range_keys_only_drops_values(abc):
    resp = get(abc, b"a", b"c", keys_only=True)
    assert keys(resp) == [b"a", b"b"]
    assert all(kv.value == b"" for kv in resp.kvs)
    assert all(kv.mod_revision > 0 and kv.version == 1 for kv in resp.kvs)


def test_range_count_only(abc):
    resp = get(abc, b"foo", b"fop", count_only=True)
    assert resp.count == 3 and list(resp.kvs) == [] and not resp.more
    resp = get(abc, b"\0", b"\0", count_only=True, limit=2)
    assert resp.count == 8 and list(resp.kvs) == [] and not resp.more


def test_range_at_historical_revision(s):
    ok(put(s, b"k", b"v1"))  # rev 2
    ok(put(s, b"k", b"v2"))  # rev 3
    ok(put(s, b"j", b"w"))  # rev 4
    kv = one(s, b"k", rev=2)
    assert (kv.value, kv.version, kv.mod_revision) == (b"v1", 1, 2)
    assert one(s, b"k", rev=3).value == b"v2"
    assert one(s, b"j", rev=3) is None
    assert keys(get(s, b"\0", b"\0", revision=3)) == [b"k"]
    assert keys(get(s, b"\0", b"\0", revision=1)) == []


def test_range_reads_deleted_key_at_older_revision(s):
    ok(put(s, b"k", b"v1"))  # 2
    ok(delete(s, b"k"))  # 3
    assert one(s, b"k") is None
    assert one(s, b"k", rev=2).value == b"v1"
    assert one(s, b"k", rev=3) is None
    resp = get(s, b"\0", b"\0", revision=2)
    assert keys(resp) == [b"k"] and resp.count == 1


def test_range_future_revision_is_out_of_range(abc):
    with pytest.raises(MVCCError) as ei:
        get(abc, b"a", revision=abc.revision + 1)
    assert (ei.value.code, ei.value.message) == ("OUT_OF_RANGE", FUTURE)
    # the current revision itself is readable
    assert keys(get(abc, b"a", revision=abc.revision)) == [b"a"]


@pytest.fixture
def sortable(s) -> MVCCStore:
    # key, value, versions; puts interleaved so create/mod revisions differ from key order
    ok(put(s, b"k3", b"zz"))  # 2
    ok(put(s, b"k1", b"mm"))  # 3
    ok(put(s, b"k2", b"aa"))  # 4
    ok(put(s, b"k1", b"mm"))  # 5  k1 version 2
    ok(put(s, b"k1", b"mm"))  # 6  k1 version 3
    ok(put(s, b"k3", b"zz"))  # 7  k3 version 2
    return s


@pytest.mark.parametrize("target,order,want", [
    ("KEY", "ASCEND", [b"k1", b"k2", b"k3"]),
    ("KEY", "DESCEND", [b"k3", b"k2", b"k1"]),
    ("KEY", "NONE", [b"k1", b"k2", b"k3"]),
    ("VERSION", "ASCEND", [b"k2", b"k3", b"k1"]),
    ("VERSION", "DESCEND", [b"k1", b"k3", b"k2"]),
    ("CREATE", "ASCEND", [b"k3", b"k1", b"k2"]),
    ("CREATE", "DESCEND", [b"k2", b"k1", b"k3"]),
    ("MOD", "ASCEND", [b"k2", b"k1", b"k3"]),
    ("MOD", "DESCEND", [b"k3", b"k1", b"k2"]),
    ("VALUE", "ASCEND", [b"k2", b"k1", b"k3"]),
    ("VALUE", "DESCEND", [b"k3", b"k1", b"k2"]),
    # etcd: NONE with a non-KEY target sorts ascending
    ("VERSION", "NONE", [b"k2", b"k3", b"k1"]),
    ("CREATE", "NONE", [b"k3", b"k1", b"k2"]),
    ("MOD", "NONE", [b"k2", b"k1", b"k3"]),
    ("VALUE", "NONE", [b"k2", b"k1", b"k3"]),
])
def test_range_sort(sortable, target, order, want):
    resp = get(sortable, b"k", b"l", sort_target=target, sort_order=order)
    assert keys(resp) == want
    assert resp.count == 3


def test_range_sort_then_limit(sortable):
    resp = get(sortable, b"k", b"l", sort_target="KEY", sort_order="DESCEND", limit=2)
    assert keys(resp) == [b"k3", b"k2"] and resp.more and resp.count == 3
    resp = get(sortable, b"k", b"l", sort_target="MOD", sort_order="ASCEND", limit=1)
    assert keys(resp) == [b"k2"] and resp.more


def test_range_mod_and_create_revision_filters(sortable):
    # k1: create 3, mod 6; k2: create 4, mod 4; k3: create 2, mod 7
    assert keys(get(sortable, b"k", b"l", min_mod_revision=5)) == [b"k1", b"k3"]
    assert keys(get(sortable, b"k", b"l", max_mod_revision=6)) == [b"k1", b"k2"]
    assert keys(get(sortable, b"k", b"l", min_create_revision=3)) == [b"k1", b"k2"]
    assert keys(get(sortable, b"k", b"l", max_create_revision=3)) == [b"k1", b"k3"]
    assert keys(get(sortable, b"k", b"l", min_mod_revision=5, max_create_revision=2)) == [b"k3"]


def test_range_filters_keep_unfiltered_count(sortable):
    resp = get(sortable, b"k", b"l", min_mod_revision=5)
    assert keys(resp) == [b"k1", b"k3"]
    assert resp.count == 3  # etcd counts the keys in range before filtering


def test_range_filters_with_limit_more_reflects_filtered_set(sortable):
    # etcd 3.4 filters first, then truncates to limit: more is set only when the filtered
    # result exceeds the limit.
    resp = get(sortable, b"k", b"l", min_mod_revision=5, limit=2)
    assert keys(resp) == [b"k1", b"k3"]
    assert not resp.more
    resp = get(sortable, b"k", b"l", min_mod_revision=5, limit=1)
    assert keys(resp) == [b"k1"]
    assert resp.more


# ---------------------------------------------------------------- put

def test_put_prev_kv(s):
    resp, _ = ok(put(s, b"k", b"v1", prev_kv=True))
    assert not resp.HasField("prev_kv")
    resp, _ = ok(put(s, b"k", b"v2", prev_kv=True))
    assert (resp.prev_kv.key, resp.prev_kv.value, resp.prev_kv.version) == (b"k", b"v1", 1)
    resp, _ = ok(put(s, b"k", b"v3"))
    assert not resp.HasField("prev_kv")


def test_put_ignore_value_keeps_value(s):
    ok(put(s, b"k", b"keep"))
    _, rev = ok(put(s, b"k", ignore_value=True))
    kv = one(s, b"k")
    assert (kv.value, kv.version, kv.mod_revision) == (b"keep", 2, rev)


def test_put_ignore_lease_keeps_lease(s):
    ok(grant(s, 7))
    ok(put(s, b"k", b"v1", lease=7))
    ok(put(s, b"k", b"v2", ignore_lease=True))
    kv = one(s, b"k")
    assert (kv.value, kv.lease) == (b"v2", 7)
    assert s.leases[7].keys == {b"k"}


@pytest.mark.parametrize("flag", ["ignore_value", "ignore_lease"])
def test_put_ignore_flags_need_existing_key(s, flag):
    ok(put(s, b"other", b"x"))
    failed(put(s, b"k", **{flag: True}), "INVALID_ARGUMENT", "etcdserver: key not found")
    assert s.revision == 2
    assert one(s, b"k") is None


def test_put_ignore_value_on_deleted_key_fails(s):
    ok(put(s, b"k", b"x"))
    ok(delete(s, b"k"))
    failed(put(s, b"k", ignore_value=True), "INVALID_ARGUMENT", "etcdserver: key not found")
    assert s.revision == 3


def test_put_with_unknown_lease_writes_nothing(s):
    ok(put(s, b"k", b"old"))
    before = snapshot(s)
    failed(put(s, b"k", b"new", lease=99), "NOT_FOUND", LEASE_NOT_FOUND)
    failed(put(s, b"fresh", b"new", lease=99), "NOT_FOUND", LEASE_NOT_FOUND)
    assert s.revision == 2
    assert one(s, b"k").value == b"old"
    assert snapshot(s) == before


# ---------------------------------------------------------------- delete

def test_delete_single_key(abc):
    resp, rev = ok(delete(abc, b"b"))
    assert resp.deleted == 1 and rev == 10
    assert keys(get(abc, b"a", b"d")) == [b"a", b"c"]


def test_delete_range_and_prefix_share_one_revision(abc):
    resp, rev = ok(delete(abc, b"foo/", b"foo0"))
    assert resp.deleted == 2 and rev == 10
    assert keys(get(abc, b"foo", b"fop")) == [b"foo"]
    resp, rev = ok(delete(abc, b"a", b"c"))
    assert resp.deleted == 2 and rev == 11
    assert keys(get(abc, b"\0", b"\0")) == [b"c", b"d", b"foo", b"fop"]


def test_delete_from_key_with_nul_end(abc):
    resp, _ = ok(delete(abc, b"foo", b"\0"))
    assert resp.deleted == 4
    assert keys(get(abc, b"\0", b"\0")) == [b"a", b"b", b"c", b"d"]


def test_delete_prev_kv(abc):
    resp, _ = ok(delete(abc, b"a", b"c", prev_kv=True))
    assert [(kv.key, kv.value, kv.mod_revision) for kv in resp.prev_kvs] == \
        [(b"a", b"v-a", 2), (b"b", b"v-b", 3)]
    resp, _ = ok(delete(abc, b"c"))
    assert list(resp.prev_kvs) == []


def test_delete_nothing_keeps_revision(abc):
    events = len(abc.events_since(0))
    resp, rev = ok(delete(abc, b"zzz"))
    assert resp.deleted == 0 and rev == 9 and abc.revision == 9
    resp, rev = ok(delete(abc, b"x", b"y"))
    assert resp.deleted == 0 and rev == 9
    ok(delete(abc, b"a"))
    resp, rev = ok(delete(abc, b"a"))  # already deleted
    assert resp.deleted == 0 and rev == 10
    assert len(abc.events_since(0)) == events + 1


# ---------------------------------------------------------------- txn compares

@pytest.fixture
def cs(s) -> MVCCStore:
    ok(grant(s, 5))
    ok(put(s, b"k", b"v1"))  # 2
    ok(put(s, b"k", b"v2", lease=5))  # 3  k: create 2, mod 3, version 2, lease 5
    return s


def succeeded(s, *compares) -> bool:
    resp, _ = ok(txn(s, compares))
    return resp.succeeded


@pytest.mark.parametrize("c,want", [
    (cmp(b"k", "VALUE", "EQUAL", value=b"v2"), True),
    (cmp(b"k", "VALUE", "EQUAL", value=b"v1"), False),
    (cmp(b"k", "VALUE", "NOT_EQUAL", value=b"v1"), True),
    (cmp(b"k", "VALUE", "GREATER", value=b"v1"), True),
    (cmp(b"k", "VALUE", "LESS", value=b"v3"), True),
    (cmp(b"k", "VALUE", "LESS", value=b"v2"), False),
    (cmp(b"k", "VERSION", "EQUAL", version=2), True),
    (cmp(b"k", "VERSION", "GREATER", version=1), True),
    (cmp(b"k", "VERSION", "LESS", version=2), False),
    (cmp(b"k", "VERSION", "NOT_EQUAL", version=2), False),
    (cmp(b"k", "CREATE", "EQUAL", create_revision=2), True),
    (cmp(b"k", "CREATE", "GREATER", create_revision=2), False),
    (cmp(b"k", "CREATE", "LESS", create_revision=3), True),
    (cmp(b"k", "MOD", "EQUAL", mod_revision=3), True),
    (cmp(b"k", "MOD", "NOT_EQUAL", mod_revision=2), True),
    (cmp(b"k", "MOD", "GREATER", mod_revision=3), False),
    (cmp(b"k", "LEASE", "EQUAL", lease=5), True),
    (cmp(b"k", "LEASE", "NOT_EQUAL", lease=0), True),
    (cmp(b"k", "LEASE", "LESS", lease=5), False),
])
def test_compare_existing_key(cs, c, want):
    assert succeeded(cs, c) is want


@pytest.mark.parametrize("c,want", [
    (cmp(b"missing", "VERSION", "EQUAL", version=0), True),
    (cmp(b"missing", "CREATE", "EQUAL", create_revision=0), True),
    (cmp(b"missing", "MOD", "EQUAL", mod_revision=0), True),
    (cmp(b"missing", "LEASE", "EQUAL", lease=0), True),
    (cmp(b"missing", "VERSION", "GREATER", version=0), False),
    (cmp(b"missing", "CREATE", "LESS", create_revision=1), True),
    # a value compare on a missing key always fails, even against the empty value
    (cmp(b"missing", "VALUE", "EQUAL", value=b""), False),
    (cmp(b"missing", "VALUE", "NOT_EQUAL", value=b"x"), False),
])
def test_compare_missing_key_is_zero(cs, c, want):
    assert succeeded(cs, c) is want


def test_compare_deleted_key_is_missing(cs):
    ok(delete(cs, b"k"))
    assert succeeded(cs, cmp(b"k", "CREATE", "EQUAL", create_revision=0))
    assert not succeeded(cs, cmp(b"k", "VALUE", "EQUAL", value=b"v2"))


def test_all_compares_must_hold(cs):
    assert succeeded(cs, cmp(b"k", "VERSION", "EQUAL", version=2),
                     cmp(b"k", "VALUE", "EQUAL", value=b"v2"))
    assert not succeeded(cs, cmp(b"k", "VERSION", "EQUAL", version=2),
                         cmp(b"k", "VALUE", "EQUAL", value=b"nope"))
    assert succeeded(cs)  # no compares: success


def test_compare_with_range_end_checks_every_key(s):
    ok(put(s, b"p/a", b"1"))
    ok(put(s, b"p/b", b"1"))
    ok(put(s, b"p/c", b"2"))
    ok(put(s, b"q", b"1"))
    assert succeeded(s, cmp(b"p/a", "VALUE", "EQUAL", b"p/c", value=b"1"))
    assert not succeeded(s, cmp(b"p/", "VALUE", "EQUAL", b"p0", value=b"1"))
    assert succeeded(s, cmp(b"p/", "VERSION", "EQUAL", b"p0", version=1))
    assert succeeded(s, cmp(b"p/", "MOD", "LESS", b"p0", mod_revision=5))
    assert not succeeded(s, cmp(b"p/", "MOD", "LESS", b"p0", mod_revision=4))
    assert succeeded(s, cmp(b"p/", "CREATE", "GREATER", b"\0", create_revision=1))


@pytest.mark.parametrize("c,want", [
    # etcd compares an empty range as one zero-valued key (and a value compare fails)
    (cmp(b"none/", "VERSION", "EQUAL", b"none0", version=0), True),
    (cmp(b"none/", "CREATE", "EQUAL", b"none0", create_revision=0), True),
    (cmp(b"none/", "VERSION", "GREATER", b"none0", version=0), False),
    (cmp(b"none/", "CREATE", "NOT_EQUAL", b"none0", create_revision=0), False),
    (cmp(b"none/", "MOD", "GREATER", b"none0", mod_revision=0), False),
    (cmp(b"none/", "VALUE", "EQUAL", b"none0", value=b""), False),
    (cmp(b"none/", "VALUE", "NOT_EQUAL", b"none0", value=b"x"), False),
])
def test_compare_with_range_end_on_empty_range(cs, c, want):
    assert succeeded(cs, c) is want


# ---------------------------------------------------------------- txn execution

def test_txn_success_branch(s):
    ok(put(s, b"k", b"v"))
    resp, rev = ok(txn(s, [cmp(b"k", "VALUE", "EQUAL", value=b"v")],
                       [op_put(b"a", b"yes")], [op_put(b"b", b"no")]))
    assert resp.succeeded and rev == 3
    assert one(s, b"a").value == b"yes" and one(s, b"b") is None
    assert resp.responses[0].WhichOneof("response") == "response_put"


def test_txn_failure_branch(s):
    ok(put(s, b"k", b"v"))
    resp, rev = ok(txn(s, [cmp(b"k", "VALUE", "EQUAL", value=b"other")],
                       [op_put(b"a", b"yes")], [op_put(b"b", b"no"), op_get(b"k")]))
    assert not resp.succeeded and rev == 3
    assert one(s, b"a") is None and one(s, b"b").value == b"no"
    assert [r.WhichOneof("response") for r in resp.responses] == \
        ["response_put", "response_range"]
    assert keys(resp.responses[1].response_range) == [b"k"]


def test_txn_several_writes_share_one_revision(s):
    ok(put(s, b"gone", b"x"))  # 2
    resp, rev = ok(txn(s, success=[op_put(b"a", b"1"), op_put(b"b", b"2"), op_del(b"gone")]))
    assert rev == 3 and s.revision == 3
    assert one(s, b"a").mod_revision == 3 and one(s, b"b").mod_revision == 3
    evs = s.events_since(3)
    assert [(e.revision, e.type, e.kv.key) for e in evs] == [
        (3, mvccpb.Event.PUT, b"a"), (3, mvccpb.Event.PUT, b"b"), (3, mvccpb.Event.DELETE, b"gone")]
    # nested responses carry the txn's revision
    assert [r.WhichOneof("response") for r in resp.responses] == \
        ["response_put", "response_put", "response_delete_range"]
    assert all(getattr(r, r.WhichOneof("response")).header.revision == 3
               for r in resp.responses)
    _, rev = ok(put(s, b"c", b"3"))
    assert rev == 4


def test_read_only_txn_does_not_bump_revision(s):
    ok(put(s, b"k", b"v"))
    resp, rev = ok(txn(s, success=[op_get(b"k"), op_del(b"missing")]))
    assert rev == 2 and s.revision == 2
    assert keys(resp.responses[0].response_range) == [b"k"]


def test_txn_reads_see_earlier_writes_of_same_txn(s):
    ok(put(s, b"k", b"old"))
    resp, _ = ok(txn(s, success=[op_get(b"k"), op_put(b"k", b"new"), op_get(b"k"),
                                 op_del(b"x"), op_put(b"y", b"1"), op_get(b"\0", b"\0")]))
    assert resp.responses[0].response_range.kvs[0].value == b"old"
    after = resp.responses[2].response_range.kvs[0]
    assert (after.value, after.version, after.mod_revision) == (b"new", 2, 3)
    assert keys(resp.responses[5].response_range) == [b"k", b"y"]


def test_txn_delete_with_prev_kv(s):
    ok(put(s, b"k", b"old"))  # 2
    resp, rev = ok(txn(s, success=[op_del(b"k", prev_kv=True)]))
    assert resp.responses[0].response_delete_range.deleted == 1
    assert resp.responses[0].response_delete_range.prev_kvs[0].value == b"old"
    assert one(s, b"k") is None and rev == 3


def test_nested_txn(s):
    ok(put(s, b"k", b"v"))
    resp, rev = ok(txn(s, [cmp(b"k", "VERSION", "EQUAL", version=1)], success=[
        op_put(b"outer", b"1"),
        op_txn([cmp(b"k", "VALUE", "EQUAL", value=b"nope")],
               [op_put(b"inner-yes", b"1")], [op_put(b"inner-no", b"1")]),
    ]))
    assert resp.succeeded and rev == 3
    inner = resp.responses[1].response_txn
    assert not inner.succeeded
    assert inner.responses[0].WhichOneof("response") == "response_put"
    assert inner.responses[0].response_put.header.revision == 3
    assert keys(get(s, b"\0", b"\0")) == [b"inner-no", b"k", b"outer"]
    assert one(s, b"inner-no").mod_revision == one(s, b"outer").mod_revision == 3


def test_nested_txn_compares_see_state_before_the_txn(s):
    # etcd evaluates every compare, nested ones included, before applying any write of the txn
    ok(put(s, b"k", b"v1"))
    resp, _ = ok(txn(s, success=[
        op_put(b"k", b"v2"),
        op_txn([cmp(b"k", "VALUE", "EQUAL", value=b"v1")],
               [op_put(b"saw", b"old")], [op_put(b"saw", b"new")]),
    ]))
    assert resp.responses[1].response_txn.succeeded
    assert one(s, b"saw").value == b"old"


def test_nested_txn_paths_in_execution_order(s):
    ok(put(s, b"k", b"v"))
    yes = [cmp(b"k", "VALUE", "EQUAL", value=b"v")]
    no = [cmp(b"k", "VALUE", "EQUAL", value=b"x")]
    resp, _ = ok(txn(s, no, failure=[
        op_txn(yes, [op_put(b"a1", b"1"), op_txn(no, [op_put(b"bad", b"1")],
                                                  [op_put(b"a2", b"1")])],
               [op_put(b"bad", b"1")]),
        op_txn(no, [op_put(b"bad", b"1")], [op_put(b"b1", b"1")]),
        op_txn(yes, [op_put(b"c1", b"1")]),
    ]))
    assert not resp.succeeded
    r = resp.responses
    assert r[0].response_txn.succeeded
    assert not r[0].response_txn.responses[1].response_txn.succeeded
    assert not r[1].response_txn.succeeded and r[2].response_txn.succeeded
    assert keys(get(s, b"\0", b"\0")) == [b"a1", b"a2", b"b1", b"c1", b"k"]


def test_read_txn_serves_reads_without_changing_state(s):
    ok(put(s, b"k", b"v"))
    before = snapshot(s)
    resp = pb.TxnResponse()
    s.read_txn(pb.TxnRequest(compare=[cmp(b"k", "VERSION", "EQUAL", version=1)],
                             success=[op_get(b"k"), op_txn(success=[op_get(b"\0", b"\0")])],
                             failure=[op_get(b"nothing")]), resp)
    assert resp.succeeded
    assert keys(resp.responses[0].response_range) == [b"k"]
    assert keys(resp.responses[1].response_txn.responses[0].response_range) == [b"k"]
    assert snapshot(s) == before


def test_txn_with_unknown_lease_is_atomic(s):
    ok(put(s, b"keep", b"v"))
    before = snapshot(s)
    failed(txn(s, success=[op_put(b"a", b"1"), op_del(b"keep"),
                           op_txn(success=[op_put(b"b", b"2")]),
                           op_put(b"c", b"3", lease=42)]),
           "NOT_FOUND", LEASE_NOT_FOUND)
    assert s.revision == 2
    assert snapshot(s) == before
    assert keys(get(s, b"\0", b"\0")) == [b"keep"]
    _, rev = ok(put(s, b"z", b"1"))
    assert rev == 3


def test_txn_failure_rollback_restores_lease_attachments(s):
    ok(grant(s, 1))
    ok(grant(s, 2))
    ok(put(s, b"k", b"v", lease=1))
    failed(txn(s, success=[op_put(b"k", b"w", lease=2), op_put(b"x", b"1", lease=3)]),
           "NOT_FOUND", LEASE_NOT_FOUND)
    assert s.leases[1].keys == {b"k"} and s.leases[2].keys == set()
    assert one(s, b"k").lease == 1


def test_txn_ignore_value_on_missing_key_is_atomic(s):
    ok(put(s, b"k", b"v"))
    failed(txn(s, success=[op_put(b"a", b"1"), op_put(b"nokey", ignore_value=True)]),
           "INVALID_ARGUMENT", "etcdserver: key not found")
    assert s.revision == 2 and one(s, b"a") is None


# ---------------------------------------------------------------- check_txn

def _check(r: pb.TxnRequest) -> MVCCError | None:
    try:
        check_txn(r)
    except MVCCError as e:
        return e
    return None


def test_check_txn_accepts_max_ops():
    ops = [op_put(b"k%d" % i) for i in range(128)]
    assert _check(pb.TxnRequest(success=ops, failure=ops)) is None


@pytest.mark.parametrize("branch", ["success", "failure", "compare"])
def test_check_txn_too_many_ops(branch):
    if branch == "compare":
        items = [cmp(b"k%d" % i, "VERSION", "EQUAL") for i in range(129)]
    else:
        items = [op_put(b"k%d" % i) for i in range(129)]
    e = _check(pb.TxnRequest(**{branch: items}))
    assert e is not None
    assert (e.code, e.message) == ("INVALID_ARGUMENT",
                                   "etcdserver: too many operations in txn request")


@pytest.mark.parametrize("ops", [
    [op_put(b"a"), op_put(b"a")],
    [op_del(b"a"), op_put(b"a")],
    [op_put(b"a"), op_del(b"a")],
    [op_del(b"a", b"c"), op_put(b"b")],
    [op_put(b"foo/x"), op_del(b"foo/", b"foo0")],
    # nested txns count too (etcd's checkIntervals)
    [op_put(b"a"), op_txn(success=[op_put(b"a")])],
    [op_txn(failure=[op_put(b"a")]), op_put(b"a")],
    [op_del(b"a", b"c"), op_txn(success=[op_put(b"b")])],
    [op_txn(success=[op_del(b"a", b"c")]), op_put(b"b")],
    [op_txn(success=[op_put(b"a")]), op_txn(success=[op_put(b"a")])],
])
def test_check_txn_duplicate_keys(ops):
    for branch in ("success", "failure"):
        e = _check(pb.TxnRequest(**{branch: ops}))
        assert e is not None, f"{branch}: {ops}"
        assert (e.code, e.message) == ("INVALID_ARGUMENT", DUPLICATE)


@pytest.mark.parametrize("r", [
    pb.TxnRequest(success=[op_put(b"a")], failure=[op_put(b"a")]),
    pb.TxnRequest(success=[op_put(b"a"), op_put(b"b"), op_del(b"c"), op_del(b"c")]),
    pb.TxnRequest(success=[op_del(b"a", b"c"), op_put(b"c")]),
    pb.TxnRequest(success=[op_get(b"a"), op_put(b"a")]),
    # then/else of a nested txn exclude each other
    pb.TxnRequest(success=[op_txn(success=[op_put(b"a")], failure=[op_put(b"a")])]),
])
def test_check_txn_accepts_non_duplicates(r):
    assert _check(r) is None


@pytest.mark.parametrize("r", [
    pb.TxnRequest(compare=[cmp(b"", "VERSION", "EQUAL")]),
    pb.TxnRequest(success=[op_put(b"")]),
    pb.TxnRequest(failure=[op_del(b"")]),
    pb.TxnRequest(success=[op_get(b"")]),
    pb.TxnRequest(success=[op_txn(success=[op_put(b"")])]),
])
def test_check_txn_empty_key(r):
    e = _check(r)
    assert e is not None
    assert (e.code, e.message) == ("INVALID_ARGUMENT", "etcdserver: key is not provided")


# ---------------------------------------------------------------- compaction

@pytest.fixture
def hist(s) -> MVCCStore:
    ok(put(s, b"a", b"a1"))  # 2
    ok(put(s, b"b", b"b1"))  # 3
    ok(put(s, b"a", b"a2"))  # 4
    ok(delete(s, b"b"))  # 5
    ok(put(s, b"c", b"c1"))  # 6
    ok(put(s, b"a", b"a3"))  # 7
    return s


def test_compact_keeps_newest_version_at_or_below_revision(hist):
    _, rev = ok(hist.apply(None, "compact", 6))
    assert rev == 7 and hist.revision == 7 and hist.compact_revision == 6
    assert one(hist, b"a", rev=6).value == b"a2"
    assert one(hist, b"c", rev=6).value == b"c1"
    assert one(hist, b"a").value == b"a3"
    assert keys(get(hist, b"\0", b"\0", revision=6)) == [b"a", b"c"]
    assert keys(get(hist, b"\0", b"\0")) == [b"a", b"c"]


def test_read_below_compact_revision_is_compacted(hist):
    ok(hist.apply(None, "compact", 4))
    for rev in (1, 2, 3):
        with pytest.raises(MVCCError) as ei:
            get(hist, b"a", revision=rev)
        assert (ei.value.code, ei.value.message) == ("OUT_OF_RANGE", COMPACTED)
    # reading at the compact revision works
    assert one(hist, b"a", rev=4).value == b"a2"
    assert one(hist, b"b", rev=4).value == b"b1"
    assert one(hist, b"b", rev=5) is None


def test_compact_drops_keys_deleted_before_it(hist):
    ok(hist.apply(None, "compact", 5))
    assert one(hist, b"b", rev=5) is None
    assert get(hist, b"\0", b"\0", revision=5).count == 1
    assert b"b" not in hist._history
    # the key can be created again from scratch
    _, rev = ok(put(hist, b"b", b"b2"))
    kv = one(hist, b"b")
    assert (kv.version, kv.create_revision) == (1, rev)


def test_compact_at_or_below_current_compact_revision_fails(hist):
    ok(hist.apply(None, "compact", 4))
    before = snapshot(hist)
    failed(hist.apply(None, "compact", 4), "OUT_OF_RANGE", COMPACTED)
    failed(hist.apply(None, "compact", 3), "OUT_OF_RANGE", COMPACTED)
    assert snapshot(hist) == before
    ok(hist.apply(None, "compact", 5))
    assert hist.compact_revision == 5


def test_compact_future_revision_fails(hist):
    before = snapshot(hist)
    failed(hist.apply(None, "compact", 8), "OUT_OF_RANGE", FUTURE)
    assert snapshot(hist) == before
    ok(hist.apply(None, "compact", 7))  # the current revision is allowed
    assert one(hist, b"a", rev=7).value == b"a3"


def test_compact_raises_watch_floor_and_trims_events(hist):
    assert hist.watch_floor == 0
    assert [e.revision for e in hist.events_since(0)] == [2, 3, 4, 5, 6, 7]
    ok(hist.apply(None, "compact", 5))
    # etcd lets a watch start at the compact revision itself, not below it
    assert hist.watch_floor == 5
    assert [e.revision for e in hist.events_since(0)] == [5, 6, 7]
    assert hist.events_since(0) == hist.events_since(hist.watch_floor)
    ok(hist.apply(None, "compact", 7))
    assert hist.watch_floor == 7
    assert [e.revision for e in hist.events_since(0)] == [7]


def test_compact_preserves_hash_at_and_after_compact_revision(hist):
    h6, h7 = hist.hash_kv(6), hist.hash_kv()
    ok(hist.apply(None, "compact", 6))
    assert hist.hash_kv(6) == h6 and hist.hash_kv() == h7


# ---------------------------------------------------------------- leases

def test_lease_grant_does_not_bump_revision(s):
    resp, rev = ok(grant(s, 10, ttl=30))
    assert (resp.ID, resp.TTL) == (10, 30) and rev == 1
    assert s.leases[10].ttl == 30


def test_lease_grant_existing_id_fails(s):
    ok(grant(s, 10, ttl=30))
    failed(grant(s, 10, ttl=99), "FAILED_PRECONDITION", "etcdserver: lease already exists")
    assert s.leases[10].ttl == 30


def test_lease_grant_too_large_ttl(s):
    failed(grant(s, 1, ttl=mvcc.MAX_LEASE_TTL + 1), "OUT_OF_RANGE",
           "etcdserver: too large lease TTL")
    assert 1 not in s.leases


def test_lease_attach_and_revoke_deletes_keys_in_one_revision(s):
    ok(grant(s, 1))
    ok(put(s, b"b", b"1", lease=1))  # 2
    ok(put(s, b"a", b"1", lease=1))  # 3
    ok(put(s, b"c", b"1"))  # 4
    assert s.leases[1].keys == {b"a", b"b"}
    assert one(s, b"a").lease == 1
    _, rev = ok(s.apply(None, "lease_revoke", 1))
    assert rev == 5 and s.revision == 5
    assert keys(get(s, b"\0", b"\0")) == [b"c"]
    assert 1 not in s.leases
    evs = s.events_since(5)
    assert [(e.revision, e.type, e.kv.key) for e in evs] == [
        (5, mvccpb.Event.DELETE, b"a"), (5, mvccpb.Event.DELETE, b"b")]


def test_lease_revoke_without_keys_keeps_revision(s):
    ok(grant(s, 1))
    _, rev = ok(s.apply(None, "lease_revoke", 1))
    assert rev == 1 and 1 not in s.leases


def test_lease_revoke_unknown(s):
    failed(s.apply(None, "lease_revoke", 123), "NOT_FOUND", LEASE_NOT_FOUND)
    ok(grant(s, 1))
    ok(s.apply(None, "lease_revoke", 1))
    failed(s.apply(None, "lease_revoke", 1), "NOT_FOUND", LEASE_NOT_FOUND)


def test_lease_keepalive(s):
    ok(grant(s, 1, ttl=42))
    ok(put(s, b"k", b"v"))
    assert s.apply(None, "lease_keepalive", 1) == (42, 2)
    assert s.apply(None, "lease_keepalive", 2) == (0, 2)
    assert s.revision == 2


def test_reput_with_other_lease_moves_key(s):
    ok(grant(s, 1))
    ok(grant(s, 2))
    ok(put(s, b"k", b"v", lease=1))
    ok(put(s, b"k", b"v", lease=2))
    assert s.leases[1].keys == set() and s.leases[2].keys == {b"k"}
    _, rev = ok(s.apply(None, "lease_revoke", 1))
    assert rev == 3 and one(s, b"k").lease == 2
    ok(s.apply(None, "lease_revoke", 2))
    assert one(s, b"k") is None


def test_reput_without_lease_detaches(s):
    ok(grant(s, 1))
    ok(put(s, b"k", b"v", lease=1))
    ok(put(s, b"k", b"w"))
    assert one(s, b"k").lease == 0 and s.leases[1].keys == set()
    ok(s.apply(None, "lease_revoke", 1))
    assert one(s, b"k").value == b"w"


def test_deleted_key_leaves_its_lease(s):
    ok(grant(s, 1))
    ok(put(s, b"k", b"v", lease=1))
    ok(delete(s, b"k"))
    assert s.leases[1].keys == set()
    _, rev = ok(s.apply(None, "lease_revoke", 1))
    assert rev == 3  # nothing left to delete


# ---------------------------------------------------------------- events

def test_events_in_revision_order_with_prev_kv(s):
    ok(put(s, b"k", b"v1"))  # 2
    ok(put(s, b"k", b"v2"))  # 3
    ok(delete(s, b"k"))  # 4
    evs = s.events_since(2)
    assert [(e.revision, e.type) for e in evs] == [
        (2, mvccpb.Event.PUT), (3, mvccpb.Event.PUT), (4, mvccpb.Event.DELETE)]
    assert evs[0].prev_kv is None
    assert evs[1].prev_kv.value == b"v1"
    assert (evs[1].kv.value, evs[1].kv.version, evs[1].kv.create_revision) == (b"v2", 2, 2)
    assert evs[2].prev_kv.value == b"v2"
    assert [e.revision for e in s.events_since(3)] == [3, 4]
    assert s.events_since(5) == []


def test_delete_event_carries_tombstone(s):
    ok(put(s, b"k", b"v"))
    ok(delete(s, b"k"))
    ev = s.events_since(3)[0]
    pbev = ev.to_pb(with_prev=True)
    assert pbev.type == mvccpb.Event.DELETE
    assert (pbev.kv.key, pbev.kv.mod_revision) == (b"k", 3)
    assert (pbev.kv.create_revision, pbev.kv.version, pbev.kv.value) == (0, 0, b"")
    assert pbev.prev_kv.value == b"v" and pbev.prev_kv.mod_revision == 2
    assert not ev.to_pb(with_prev=False).HasField("prev_kv")


def test_events_since_limit_keeps_whole_revisions(s):
    ok(put(s, b"a", b"1"))  # 2
    ok(txn(s, success=[op_put(b"b", b"1"), op_put(b"c", b"1"), op_put(b"d", b"1")]))  # 3
    ok(put(s, b"e", b"1"))  # 4
    evs = s.events_since(0, limit=2)
    assert [(e.revision, e.kv.key) for e in evs] == [(2, b"a"), (3, b"b"), (3, b"c"), (3, b"d")]
    assert [e.revision for e in s.events_since(4, limit=1)] == [4]


def test_bounded_event_history():
    s = MVCCStore(event_history=10)
    for i in range(50):
        ok(put(s, b"k%d" % (i % 7), b"v%d" % i))
    assert s.revision == 51
    evs = s.events_since(0, limit=10**6)
    assert 10 <= len(evs) <= 11
    assert s.watch_floor == evs[0].revision > 2
    assert [e.revision for e in evs] == list(range(evs[0].revision, 52))
    # the data itself is not trimmed
    assert get(s, b"\0", b"\0").count == 7


def test_bounded_event_history_keeps_whole_revisions():
    s = MVCCStore(event_history=4)
    for i in range(6):
        ok(txn(s, success=[op_put(b"a", b"%d" % i), op_put(b"b", b"%d" % i),
                           op_put(b"c", b"%d" % i)]))
    evs = s.events_since(0, limit=10**6)
    revs = [e.revision for e in evs]
    assert revs[0] == s.watch_floor > 2
    assert all(revs.count(r) == 3 for r in set(revs))
    assert revs[-1] == s.revision


def test_zero_event_history_keeps_only_newest_revision():
    s = MVCCStore(event_history=0)
    ok(put(s, b"a", b"1"))
    ok(put(s, b"b", b"1"))
    _, rev = ok(txn(s, success=[op_put(b"c", b"1"), op_put(b"d", b"1")]))
    assert rev == s.revision == 4
    assert keys(get(s, b"\0", b"\0")) == [b"a", b"b", b"c", b"d"]
    assert [(e.revision, e.kv.key) for e in s.events_since(0)] == [(4, b"c"), (4, b"d")]
    assert s.watch_floor == 4


# ---------------------------------------------------------------- exactly-once

def test_same_request_id_applies_once(s):
    first = put(s, b"k", b"v1", rid="req-1")
    again = put(s, b"k", b"v1", rid="req-1")
    assert again is first
    assert s.revision == 2 and one(s, b"k").version == 1
    assert len(s.events_since(0)) == 1


def test_same_request_id_returns_first_result_even_if_args_differ(s):
    _, rev = ok(put(s, b"k", b"v1", rid="r"))
    resp, rev2 = ok(s.apply("r", "delete_range", pb.DeleteRangeRequest(key=b"k")))
    assert isinstance(resp, pb.PutResponse)  # the put's own response, not a delete's
    assert rev2 == rev == 2
    assert one(s, b"k").value == b"v1"


def test_dedup_of_errors(s):
    first = put(s, b"k", b"v", lease=9, rid="e")
    failed(first, "NOT_FOUND", LEASE_NOT_FOUND)
    ok(grant(s, 9))
    assert put(s, b"k", b"v", lease=9, rid="e") is first
    assert s.revision == 1


def test_dedup_of_txn_and_revoke(s):
    ok(grant(s, 1))
    ok(put(s, b"k", b"v", lease=1))
    r1 = s.apply("rv", "lease_revoke", 1)
    assert s.apply("rv", "lease_revoke", 1) is r1  # not a lease-not-found error
    t1 = txn(s, success=[op_put(b"x", b"1")], rid="t")
    t2 = txn(s, success=[op_put(b"x", b"1")], rid="t")
    assert t2 is t1 and s.revision == 4 and one(s, b"x").version == 1


def test_none_request_id_is_not_deduplicated(s):
    put(s, b"k", b"v")
    put(s, b"k", b"v")
    assert s.revision == 3 and one(s, b"k").version == 2


def test_dedup_window_is_bounded(s, monkeypatch):
    monkeypatch.setattr(mvcc, "DEDUP_WINDOW", 3)
    for i in range(5):
        put(s, b"k", b"v", rid=f"r{i}")
    assert s.revision == 6
    put(s, b"k", b"v", rid="r4")  # still remembered
    assert s.revision == 6
    put(s, b"k", b"v", rid="r0")  # forgotten: applied again
    assert s.revision == 7


# ---------------------------------------------------------------- determinism and snapshots

def _workload(s: MVCCStore) -> None:
    ok(grant(s, 1, ttl=10))
    ok(grant(s, 2, ttl=20))
    for i in range(30):
        put(s, b"k/%02d" % (i % 9), b"v%d" % i, lease=(i % 3) or 0, rid=f"p{i}")
    delete(s, b"k/03", b"k/05", rid="d1")
    txn(s, [cmp(b"k/00", "VERSION", "GREATER", version=1)],
        [op_put(b"t", b"yes"), op_del(b"k/08")], [op_put(b"t", b"no")], rid="t1")
    s.apply("c1", "compact", 20)
    s.apply("rv", "lease_revoke", 2)
    s.apply("pub", "publish", {"id": 7, "name": "m7", "clientURLs": ["http://x"]})
    s.apply(None, "barrier", None)
    put(s, b"k/00", b"last", rid="p-last")


def test_same_commands_give_same_state():
    s1, s2 = MVCCStore(), MVCCStore()
    _workload(s1)
    _workload(s2)
    assert s1.revision == s2.revision > 30
    assert s1.hash_kv() == s2.hash_kv()
    assert get(s1, b"\0", b"\0") == get(s2, b"\0", b"\0")
    for rev in (20, 25, s1.revision):
        assert s1.hash_kv(rev) == s2.hash_kv(rev)
        assert get(s1, b"\0", b"\0", revision=rev) == get(s2, b"\0", b"\0", revision=rev)
    assert snapshot(s1) == snapshot(s2)


def test_hash_kv_differs_when_state_differs():
    s1, s2 = MVCCStore(), MVCCStore()
    put(s1, b"k", b"v1")
    put(s2, b"k", b"v2")
    assert s1.hash_kv() != s2.hash_kv()


def test_pickle_round_trip():
    s = MVCCStore()
    _workload(s)
    restored = pickle.loads(pickle.dumps(s))
    assert snapshot(restored) == snapshot(s)
    for rev in (20, 26, s.revision):
        assert get(restored, b"\0", b"\0", revision=rev) == get(s, b"\0", b"\0", revision=rev)
    # the dedup table survives: a retried command is still answered, not re-applied
    rev = restored.revision
    retried = put(restored, b"k/00", b"last", rid="p-last")
    assert not isinstance(retried, MVCCError) and retried[1] == rev and restored.revision == rev
    assert retried == s._applied["p-last"]
    # and both copies keep evolving identically
    for store in (s, restored):
        put(store, b"new", b"1", lease=1, rid="n1")
        store.apply(None, "lease_revoke", 1)
    assert snapshot(restored) == snapshot(s)


def test_pickle_round_trip_of_error_result():
    s = MVCCStore()
    put(s, b"k", b"v", lease=5, rid="bad")
    restored = pickle.loads(pickle.dumps(s))
    e = put(restored, b"k", b"v", rid="bad")
    failed(e, "NOT_FOUND", LEASE_NOT_FOUND)


# ---------------------------------------------------------------- errors leave state unchanged

@pytest.mark.parametrize("fn,arg", [
    ("put", pb.PutRequest(key=b"a", value=b"x", lease=404)),
    ("put", pb.PutRequest(key=b"zz", ignore_value=True)),
    ("txn", pb.TxnRequest(success=[op_put(b"n", b"1"), op_put(b"m", b"1", lease=404)])),
    ("compact", 1),
    ("compact", 100),
    ("lease_grant", (1, 10)),
    ("lease_revoke", 404),
])
def test_failing_op_leaves_state_unchanged(fn, arg):
    s = MVCCStore()
    ok(grant(s, 1))
    ok(put(s, b"a", b"1", lease=1))
    ok(put(s, b"b", b"2"))
    ok(s.apply(None, "compact", 2))
    before = snapshot(s)
    assert isinstance(s.apply(None, fn, arg), MVCCError)
    assert snapshot(s) == before
    _, rev = ok(put(s, b"c", b"3"))
    assert rev == 4


def test_apply_never_raises_on_internal_errors(s):
    result = s.apply(None, "no_such_op", None)
    assert isinstance(result, MVCCError) and result.code == "INTERNAL"
    assert s.revision == 1
