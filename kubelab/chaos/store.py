"""Store scenarios: quorum (lose the leader, then quorum, then recover) and
store-linearizability (a recorded history under kills, restarts and partitions, checked)."""

from __future__ import annotations

import asyncio
import signal
import time

from kubelab.cli import store_status
from kubelab.cluster import Cluster
from kubelab.etcdclient import EtcdClient, EtcdError
from proto.etcdserverpb import rpc_pb2 as pb

from . import linearizability as lin
from .harness import Run, WriteProber, wait_until

PREFIX = "/chaos/"


async def leader_of(cluster: Cluster) -> str | None:
    rows = await store_status(cluster, timeout=0.5)
    leaders = {r["name"] for r in rows if r.get("role") == "leader"}
    return leaders.pop() if len(leaders) == 1 else None


def _netns_of(cluster: Cluster, name: str) -> str | None:
    """The member's machine namespace (`kubelab up --network netns`), None in the loopback
    form."""
    return ((cluster.settings or {}).get("netns") or {}).get(name)


def _partition(cluster: Cluster, name: str, run: Run) -> None:
    """Cut a member off. With network namespaces its link goes down; in the loopback form
    (one shared network) the member is frozen with SIGSTOP — the others see exactly what a
    partition shows them: silence."""
    netns = _netns_of(cluster, name)
    if netns:
        from kubelab import netns as kn
        kn.partition(netns)
        run.fault(f"partition {name} (its network link is down)")
    else:
        cluster.signal(name, signal.SIGSTOP)
        run.fault(f"partition {name} (loopback form: frozen with SIGSTOP)")


def _heal(cluster: Cluster, name: str, run: Run) -> None:
    netns = _netns_of(cluster, name)
    if netns:
        from kubelab import netns as kn
        kn.heal(netns)
    else:
        cluster.signal(name, signal.SIGCONT)
    run.fault(f"heal {name}")


async def quorum(cluster: Cluster, run: Run, settle: float = 2.0) -> None:
    stores = [c.name for c in cluster.stores]
    if len(stores) < 3:
        run.cannot_run(f"quorum needs at least 3 store members (this cluster has "
                       f"{len(stores)})")
        return
    client = EtcdClient(cluster.store_endpoints(), timeout=2.0, call_timeout=1.0)
    base = f"{PREFIX}q/{run.seed}-{int(time.time() * 1000)}/"  # unique per run
    prober = WriteProber(lambda i: client.put(f"{base}{i}", str(i)))
    try:
        leader = await wait_until(lambda: leader_of(cluster), 15)
        run.check("the store has a leader", leader is not None)
        if leader is None:
            return
        run.observe(f"store leader is {leader}")
        prober.start()
        await asyncio.sleep(settle)
        run.observe(f"{len(prober.acked)} writes acknowledged so far")

        cluster.kill(leader)
        t_kill = time.monotonic()
        run.fault(f"kill -9 {leader} (the leader)")
        new = await wait_until(lambda: leader_of(cluster), 15, 0.02)
        election = time.monotonic() - t_kill
        run.check("a new leader is elected", new is not None and new != leader,
                  f"{new} after {election:.2f}s")
        run.metrics["leader election"] = f"{election:.2f}s (target ≤ 2 s)"
        n0 = len(prober.acked)
        ok = await wait_until(lambda: _async(len(prober.acked) > n0 + 5), 10)
        run.check("writes continue with 2 of 3 members", bool(ok),
                  f"{len(prober.acked) - n0} more writes acknowledged")

        second = run.rng.choice([s for s in stores if s != leader])
        await prober.stop()
        cluster.kill(second)
        run.fault(f"kill -9 {second} (quorum lost: 1 of 3 members left)")
        survivor = next(c for c in cluster.stores if c.name not in (leader, second))
        # one attempt, no client-side retries: what the member itself answers
        one = EtcdClient([survivor.client_url], timeout=5.0, call_timeout=5.0, retry=False)
        try:
            t = time.monotonic()
            try:
                await one.put(f"{base}noquorum", "x")
                run.check("writes fail without quorum", False, "a write was accepted")
            except EtcdError as e:
                took = time.monotonic() - t
                run.observe(f"write refused after {took * 1000:.0f} ms: {e.message}")
                run.check("writes fail fast without quorum", took < 2.5, f"{took:.2f}s")
                run.check("the error says why", "quorum" in e.message or "leader" in e.message,
                          e.message)
            try:
                kv = await one.get(f"{base}1", serializable=True)
                run.check("serializable reads still answer", kv is not None and
                          kv.value == b"1")
            except EtcdError as e:
                run.check("serializable reads still answer", False, e.message)
        finally:
            await one.close()

        cluster.start(leader)
        cluster.start(second)
        t_start = time.monotonic()
        run.fault(f"restart {leader} and {second}")

        async def writable():
            await client.put(f"{base}recovered", "1")
            return True
        ok = await wait_until(writable, 30, 0.1)
        recovery = time.monotonic() - t_start
        run.check("the store recovers", bool(ok), f"writable {recovery:.2f}s after restart")
        run.metrics["recovery after quorum loss"] = f"{recovery:.2f}s"

        resp = await client.get_prefix(base)
        got = {kv.key.decode().rsplit("/", 1)[1]: kv for kv in resp.kvs}
        lost = [i for i in prober.acked if str(i) not in got]
        dup = [k for k, kv in got.items() if kv.version != 1]
        run.check("no acknowledged write lost", not lost,
                  f"{len(prober.acked)} acknowledged" + (f", lost {lost[:10]}" if lost else ""))
        run.check("no write applied twice", not dup, f"versions > 1: {dup[:10]}" if dup else "")
        run.metrics.update(prober.summary())
    finally:
        await prober.stop()
        await client.close()


async def _async(v):
    return v


async def store_linearizability(cluster: Cluster, run: Run, duration: float = 12.0,
                                clients: int = 6, keys: int = 3) -> None:
    """Concurrent clients put/get/compare-and-swap a few keys while members are killed,
    restarted and partitioned; the history is checked for linearizability."""
    ops: list[lin.Op] = []
    stop = asyncio.Event()
    base = f"{PREFIX}lin/{run.seed}-{int(time.time() * 1000)}/"
    names = [c.name for c in cluster.stores]
    t0 = time.monotonic()
    counter = [0]

    async def worker(cid: int):
        rng = __import__("random").Random(run.seed * 1000 + cid)
        c = EtcdClient(cluster.store_endpoints(), timeout=1.5, call_timeout=0.7)
        last: dict[str, str | None] = {}
        try:
            while not stop.is_set():
                key = f"k{rng.randrange(keys)}"
                r = rng.random()
                counter[0] += 1
                val = f"v{cid}-{counter[0]}"
                call = time.monotonic() - t0
                if r < 0.4:
                    op = lin.Op(cid, key, "put", val, None, call)
                    try:
                        await c.put(base + key, val)
                        op.ret = time.monotonic() - t0
                    except EtcdError:
                        pass
                elif r < 0.8:
                    op = lin.Op(cid, key, "get", None, None, call)
                    try:
                        kv = await c.get(base + key)
                        op.output = kv.value.decode() if kv else None
                        op.ret = time.monotonic() - t0
                        last[key] = op.output
                    except EtcdError:
                        pass
                else:
                    old = last.get(key)
                    op = lin.Op(cid, key, "cas", (old, val), None, call)
                    k = (base + key).encode()
                    if old is None:
                        cmp = pb.Compare(key=k, target=pb.Compare.CREATE,
                                         result=pb.Compare.EQUAL, create_revision=0)
                    else:
                        cmp = pb.Compare(key=k, target=pb.Compare.VALUE,
                                         result=pb.Compare.EQUAL, value=old.encode())
                    try:
                        resp = await c.txn([cmp], [pb.RequestOp(
                            request_put=pb.PutRequest(key=k, value=val.encode()))])
                        op.output = bool(resp.succeeded)
                        op.ret = time.monotonic() - t0
                    except EtcdError:
                        pass
                ops.append(op)
                await asyncio.sleep(rng.random() * 0.02)
        finally:
            await c.close()

    tasks = [asyncio.create_task(worker(i)) for i in range(clients)]
    end = time.monotonic() + duration
    try:
        while time.monotonic() < end - 2:
            await asyncio.sleep(run.rng.uniform(0.5, 1.5))
            victim = run.rng.choice(names)
            action = run.rng.choice(["kill", "partition", "kill-leader"])
            if action == "kill-leader":
                victim = await leader_of(cluster) or victim
                action = "kill"
            if action == "kill":
                cluster.kill(victim)
                run.fault(f"kill -9 {victim}")
                await asyncio.sleep(run.rng.uniform(0.5, 2.0))
                cluster.start(victim)
                run.fault(f"restart {victim}")
            else:
                _partition(cluster, victim, run)
                await asyncio.sleep(run.rng.uniform(0.5, 2.0))
                _heal(cluster, victim, run)
            await wait_until(lambda: leader_of(cluster), 10)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for n in names:  # never leave a member frozen or cut off
            cluster.signal(n, signal.SIGCONT)
            ns = _netns_of(cluster, n)
            if ns:
                from kubelab import netns as kn
                try:
                    kn.heal(ns)
                except kn.NetnsError:
                    pass
    done = [o for o in ops if not o.unknown]
    run.observe(f"{len(ops)} operations recorded ({len(done)} completed, "
                f"{len(ops) - len(done)} with unknown outcome)")
    t = time.monotonic()
    results = lin.check(ops)
    run.observe(f"checked in {time.monotonic() - t:.2f}s")
    for key, res in results.items():
        n = sum(1 for o in ops if o.key == key)
        run.check(f"history of {key} is linearizable", res is True,
                  f"{n} operations" + ("" if res is not None else ", search too large"))
    run.check("the history is not trivial", len(done) >= 50, f"{len(done)} completed operations")
    run.metrics["operations"] = len(ops)
    run.metrics["completed"] = len(done)
