"""Faults against real etcdlite processes: leader SIGKILL under load, loss of quorum, full-cluster
SIGKILL and restart. Every acknowledged write must survive, and none may be applied twice: each
key is written exactly once, so any key with version != 1 would be a duplicate."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from kubelab.etcdclient import EtcdClient, EtcdError, prefix_end
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc

from .conftest import StoreCluster, wait_for

pytestmark = pytest.mark.slow


class Writers:
    """N concurrent writers, each putting fresh keys one after another through the client
    (which fails over between endpoints and retries with the same request id)."""

    def __init__(self, endpoints: list[str], prefix: str, n: int = 6):
        self.endpoints = endpoints
        self.prefix = prefix
        self.n = n
        self.acked: dict[str, int] = {}  # key -> revision of the acknowledged put
        self.failures = 0
        self.ack_times: list[float] = []
        self._stop = asyncio.Event()

    async def _one(self, i: int) -> None:
        client = EtcdClient(self.endpoints[i % len(self.endpoints):] +
                            self.endpoints[:i % len(self.endpoints)], timeout=8.0,
                            call_timeout=3.0)
        seq = 0
        try:
            while not self._stop.is_set():
                key = f"{self.prefix}{i:02d}-{seq:06d}"
                seq += 1
                try:
                    resp = await client.put(key, f"v-{key}")
                except EtcdError:
                    self.failures += 1
                    await asyncio.sleep(0.05)
                    continue
                self.acked[key] = resp.header.revision
                self.ack_times.append(time.monotonic())
        finally:
            await client.close()

    async def run_until(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._one(i)) for i in range(self.n)]
        await stop.wait()
        self._stop.set()
        await asyncio.gather(*tasks)


async def verify_all_present(endpoints: list[str], prefix: str, acked: dict[str, int]) -> None:
    async with EtcdClient(endpoints) as client:
        resp = await client.get_prefix(prefix)
    stored = {kv.key.decode(): kv for kv in resp.kvs}
    missing = sorted(set(acked) - set(stored))
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    dup = sorted(k for k, kv in stored.items() if kv.version != 1)
    assert not dup, f"writes applied more than once: {dup[:5]}"
    for k, rev in acked.items():
        assert stored[k].mod_revision == rev, f"{k}: acked at {rev}, stored at " \
                                               f"{stored[k].mod_revision}"
        assert stored[k].value == f"v-{k}".encode()


def test_leader_sigkill_during_write_load(store_cluster: StoreCluster):
    c = store_cluster
    old_leader = c.leader()

    async def scenario():
        w = Writers(c.endpoints, "/load/")
        stop = asyncio.Event()
        run = asyncio.create_task(w.run_until(stop))
        await asyncio.to_thread(wait_for, lambda: len(w.acked) > 200, 20, 0.05, "first writes")
        t_kill = time.monotonic()
        await asyncio.to_thread(c.kill, old_leader)
        before = len(w.acked)
        await asyncio.to_thread(wait_for, lambda: len(w.acked) > before + 200, 20, 0.05,
                                "writes to resume after the leader was killed")
        resumed = next(t for t in sorted(w.ack_times) if t > t_kill + 0.001)
        stop.set()
        await run
        return w, resumed - t_kill

    w, gap = asyncio.run(scenario())
    new_leader = c.leader()
    assert new_leader != old_leader
    assert gap < 10, f"writes did not resume for {gap:.1f}s"
    c.start(old_leader)
    c.wait_ready()
    asyncio.run(verify_all_present(c.endpoints, "/load/", w.acked))


def test_quorum_loss_fails_fast_and_recovers(store_cluster: StoreCluster):
    c = store_cluster
    leader = c.leader()
    survivor = next(n for n in ("store-1", "store-2", "store-3") if n != leader)
    survivor_ep = c.endpoint(survivor)
    c.etcdctl("put", "/q/before", "1")
    for name in ("store-1", "store-2", "store-3"):
        if name != survivor:
            c.kill(name)

    async def probe():
        stub_ch = grpc.aio.insecure_channel(survivor_ep)
        kv = rpc.KVStub(stub_ch)
        try:
            # writes fail with UNAVAILABLE and say quorum is lost, within the bounded time
            t0 = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await kv.Put(pb.PutRequest(key=b"/q/during", value=b"x"), timeout=30)
            took = time.monotonic() - t0
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "no leader" in ei.value.details() and "quorum" in ei.value.details()
            assert took < 6.0, f"write took {took:.1f}s to fail"
            # once quorum loss is known, failures are immediate
            t0 = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError):
                await kv.Put(pb.PutRequest(key=b"/q/during2", value=b"x"), timeout=30)
            assert time.monotonic() - t0 < 1.0
            # linearizable reads fail too; serializable reads answer from local state
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await kv.Range(pb.RangeRequest(key=b"/q/before"), timeout=30)
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
            r = await kv.Range(pb.RangeRequest(key=b"/q/before", serializable=True), timeout=5)
            assert [kv_.value for kv_ in r.kvs] == [b"1"]
        finally:
            await stub_ch.close()

    asyncio.run(probe())
    # etcdctl shows the same clear error
    p = c.etcdctl("put", "/q/x", "y", endpoints=[survivor_ep], check=False)
    assert p.returncode != 0 and "no leader" in p.stderr
    for name in ("store-1", "store-2", "store-3"):
        if name != survivor:
            c.start(name)
    c.wait_ready()
    wait_for(lambda: c.etcdctl("put", "/q/after", "2", check=False).returncode == 0, 15,
             0.2, "writes after quorum returns")
    out = c.etcdctl("get", "/q/", "--prefix", "--keys-only").stdout.split()
    assert out == ["/q/after", "/q/before"]


def test_watch_on_survivor_sees_every_event_once_across_leader_kill(store_cluster: StoreCluster):
    c = store_cluster
    leader = c.leader()
    watched = next(n for n in ("store-1", "store-2", "store-3") if n != leader)

    async def scenario():
        ch = grpc.aio.insecure_channel(c.endpoint(watched))
        call = rpc.WatchStub(ch).Watch()
        await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=b"/w/", range_end=prefix_end(b"/w/"))))
        created = await call.read()
        assert created.created
        events: list[tuple[int, str]] = []

        async def read_events():
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    return
                for e in resp.events:
                    events.append((e.kv.mod_revision, e.kv.key.decode()))

        reader = asyncio.create_task(read_events())
        w = Writers([c.endpoint(n) for n in ("store-1", "store-2", "store-3") if n != watched]
                    + [c.endpoint(watched)], "/w/", n=4)
        stop = asyncio.Event()
        run = asyncio.create_task(w.run_until(stop))
        await asyncio.to_thread(wait_for, lambda: len(w.acked) > 100, 20, 0.05, "writes")
        await asyncio.to_thread(c.kill, leader)
        before = len(w.acked)
        await asyncio.to_thread(wait_for, lambda: len(w.acked) > before + 100, 20, 0.05,
                                "writes after leader kill")
        stop.set()
        await run
        last_rev = max(w.acked.values())
        await asyncio.to_thread(wait_for, lambda: events and events[-1][0] >= last_rev, 15,
                                0.05, "watch to catch up")
        reader.cancel()
        call.cancel()
        await ch.close()
        return w, events

    w, events = asyncio.run(scenario())
    keys = [k for _, k in events]
    assert len(keys) == len(set(keys)), "an event was delivered twice"
    revs = [r for r, _ in events]
    assert revs == sorted(revs), "events out of revision order"
    missing = set(w.acked) - set(keys)
    assert not missing, f"watch missed {len(missing)} acknowledged writes"


def test_full_cluster_sigkill_and_restart_loses_nothing(tmp_path):
    # a small snapshot interval makes the restart go through snapshot + journal replay
    c = StoreCluster(tmp_path / "cluster", store_args=["--snapshot-count", "50"])
    try:
        async def write():
            w = Writers(c.endpoints, "/full/", n=4)
            stop = asyncio.Event()
            run = asyncio.create_task(w.run_until(stop))
            await asyncio.to_thread(wait_for, lambda: len(w.acked) > 400, 30, 0.05, "writes")
            # SIGKILL everything while writes are in flight
            for name in ("store-1", "store-2", "store-3"):
                c.cluster.signal(name, 9)
            await asyncio.sleep(0.5)
            stop.set()
            await run
            return w

        w = asyncio.run(write())
        for name in ("store-1", "store-2", "store-3"):
            wait_for(lambda: c.cluster.pid(name) is None, 10, 0.05, f"{name} to die")
        snapshots = list((tmp_path / "cluster").rglob("raft.snapshot"))
        assert snapshots, "expected the members to have written snapshots"
        c.cluster.start_all()
        c.wait_ready()
        asyncio.run(verify_all_present(c.endpoints, "/full/", w.acked))
    finally:
        c.down()


def test_raft_term_and_vote_reach_the_disk_before_they_count(tmp_path, monkeypatch):
    """Raft's currentTerm/votedFor (pysyncobj's <journal>.meta) are fsynced, file then
    directory, when stored — a member that forgot its vote after a machine crash could vote
    twice in one term. (etcdlite.replication patches pysyncobj's MetaStorer.)"""
    import os

    from pysyncobj.journal import MetaStorer

    import etcdlite.replication  # noqa: F401 - installs the patch
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    store = MetaStorer(str(tmp_path / "raft.journal.meta"))
    store.storeMeta({"currentTerm": 7, "votedForNodeId": "store-2"})
    assert synced == [str(tmp_path / "raft.journal.meta.tmp"), str(tmp_path)]
    assert MetaStorer(str(tmp_path / "raft.journal.meta")).getMeta() == {
        "currentTerm": 7, "votedForNodeId": "store-2"}
    assert not (tmp_path / "raft.journal.meta.tmp").exists()
