"""Worker scenarios: worker-loss, pod-chaos, partition, latency. Each drives a small app (a
Deployment of hashicorp/http-echo with a readiness probe behind a NodePort Service) and measures
what a user of that Service saw while the fault happened."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Self

import aiohttp

from kubelab.client import APIError, ClusterClient
from kubelab.cluster import Cluster

from .harness import Run, WriteProber, wait_until

NS = "default"


def app_manifests(name: str, replicas: int) -> tuple[dict, dict]:
    labels = {"app": name}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                    "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                    "template": {"metadata": {"labels": labels}, "spec": {
                        "terminationGracePeriodSeconds": 2,
                        "containers": [{
                            "name": "web", "image": "hashicorp/http-echo",
                            "args": [f"-text={name}", "-listen=:8080"],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": 8080},
                                               "periodSeconds": 1}}]}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
           "spec": {"type": "NodePort", "selector": labels,
                    "ports": [{"port": 80, "targetPort": 8080}]}}
    return dep, svc


def _ready(obj: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


class App:
    """The app under test and an HTTP prober through one worker's NodePort."""

    def __init__(self, cluster: Cluster, run: Run, replicas: int = 4):
        self.cluster, self.run, self.replicas = cluster, run, replicas
        self.name = f"chaos-{run.name.split('-')[0]}-{run.seed}"
        self.client = ClusterClient(cluster.apiserver.grpc_url, cluster.admin_token())
        self.node_port = 0
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        dep, svc = app_manifests(self.name, self.replicas)
        await self.client.create("Deployment", dep, NS)
        svc = await self.client.create("Service", svc, NS)
        self.node_port = svc["spec"]["ports"][0]["nodePort"]
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        return self

    async def __aexit__(self, *exc) -> None:
        for kind in ("Service", "Deployment"):
            try:
                await self.client.delete(kind, NS, self.name, propagation="Background")
            except APIError:
                pass
        if self.session:
            await self.session.close()
        await self.client.close()

    async def pods(self) -> list[dict]:
        return [p for p in (await self.client.list("Pod", NS,
                                                   label_selector=f"app={self.name}"))["items"]
                if not p["metadata"].get("deletionTimestamp")]

    async def ready_pods(self) -> list[dict]:
        return [p for p in await self.pods() if _ready(p)]

    async def nodes_ready(self) -> dict[str, bool]:
        return {n["metadata"]["name"]: _ready(n)
                for n in (await self.client.list("Node"))["items"]}

    async def get(self, worker: str) -> str:
        ip = self.cluster.component(worker).address
        async with self.session.get(f"http://{ip}:{self.node_port}/") as r:
            body = await r.text()
            if r.status != 200 or self.name not in body:
                raise RuntimeError(f"HTTP {r.status}")
            return body

    def prober(self, worker: str) -> WriteProber:
        return WriteProber(lambda i: self.get(worker), interval=0.05, what="request")


def _workers(cluster: Cluster) -> list[str]:
    return [c.name for c in cluster.workers]


async def _start(app: App, run: Run) -> bool:
    ok = await wait_until(lambda: _count_ready(app, app.replicas), 90, 0.2)
    run.check(f"{app.replicas} pods Ready before any fault", bool(ok))
    return bool(ok)


async def _count_ready(app: App, n: int) -> bool:
    return len(await app.ready_pods()) >= n


def _by_node(pods: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in pods:
        node = (p.get("spec") or {}).get("nodeName") or ""
        out[node] = out.get(node, 0) + 1
    return out


async def worker_loss(cluster: Cluster, run: Run) -> None:
    workers = _workers(cluster)
    if len(workers) < 2:
        run.cannot_run(f"worker-loss needs at least 2 workers (this cluster has {len(workers)})")
        return
    async with App(cluster, run) as app:
        if not await _start(app, run):
            return
        placement = _by_node(await app.pods())
        victim = max(workers, key=lambda w: (placement.get(w, 0), run.rng.random()))
        entry = next(w for w in workers if w != victim)
        run.observe(f"pods per node: {placement}; traffic enters through {entry}")
        prober = app.prober(entry)
        prober.start()
        await asyncio.sleep(1.0)
        cluster.kill(victim)
        t = time.monotonic()
        run.fault(f"kill {victim} (node agent, proxy and its pods' processes)")
        notready = await wait_until(lambda: _node_not_ready(app, victim), 300, 0.2)
        run.check(f"{victim} becomes NotReady", bool(notready),
                  f"after {time.monotonic() - t:.1f}s")

        async def replaced():
            pods = await app.ready_pods()
            return len(pods) >= app.replicas and \
                all(p["spec"].get("nodeName") != victim for p in pods)
        ok = await wait_until(replaced, 600, 0.5)
        took = time.monotonic() - t
        run.check(f"{app.replicas} pods Ready on the other workers", bool(ok), f"{took:.1f}s")
        run.metrics["worker loss → pods Ready elsewhere"] = f"{took:.1f}s"
        await asyncio.sleep(1.0)
        await prober.stop()
        s = prober.summary()
        run.metrics.update({f"Service traffic: {k}": v for k, v in s.items()})
        run.check("Service traffic recovered", prober.acked and prober.acked[-1] == prober.total,
                  f"{prober.failed} of {prober.total} requests failed, longest gap "
                  f"{prober.longest_gap:.2f}s")
        cluster.start(victim)
        run.fault(f"restart {victim}")
        back = await wait_until(lambda: _node_ready(app, victim), 120, 0.2)
        run.check(f"{victim} rejoins Ready", bool(back))


async def _node_not_ready(app: App, node: str) -> bool:
    return (await app.nodes_ready()).get(node) is False


async def _node_ready(app: App, node: str) -> bool:
    return (await app.nodes_ready()).get(node) is True


async def pod_chaos(cluster: Cluster, run: Run, kills: int = 6) -> None:
    workers = _workers(cluster)
    if not workers:
        run.cannot_run("this scenario needs workers (kubelab up --workers N)")
        return
    async with App(cluster, run) as app:
        if not await _start(app, run):
            return
        entry = run.rng.choice(workers)
        prober = app.prober(entry)
        prober.start()
        for _ in range(kills):
            pods = await app.ready_pods()
            if not pods:
                await asyncio.sleep(0.5)
                continue
            victim = run.rng.choice(sorted(p["metadata"]["name"] for p in pods))
            await app.client.delete("Pod", NS, victim)
            run.fault(f"delete pod {victim}")
            await wait_until(lambda: _count_ready(app, app.replicas), 60, 0.2)
            await asyncio.sleep(run.rng.uniform(0.2, 1.0))
        await asyncio.sleep(1.0)
        await prober.stop()
        run.metrics.update({f"Service traffic: {k}": v for k, v in prober.summary().items()})
        run.check("no failed requests while pods were deleted", prober.failed == 0,
                  f"{prober.failed} of {prober.total} failed"
                  + (f" ({prober.errors[0]})" if prober.errors else ""))
        ok = await wait_until(lambda: _count_ready(app, app.replicas), 60, 0.2)
        run.check(f"{app.replicas} pods Ready at the end", bool(ok))


async def partition(cluster: Cluster, run: Run) -> None:
    """A worker cut off: its Node goes NotReady, its pods keep running, and it rejoins cleanly.
    In the loopback form (one shared network) the worker's agent and proxy are frozen with
    SIGSTOP: the control plane sees exactly the silence a partition causes."""
    workers = _workers(cluster)
    if not workers:
        run.cannot_run("this scenario needs workers (kubelab up --workers N)")
        return
    netns = (cluster.settings or {}).get("netns", {})
    async with App(cluster, run, replicas=2) as app:
        if not await _start(app, run):
            return
        victim = run.rng.choice(workers)
        before = {p["metadata"]["name"] for p in await app.pods()
                  if p["spec"].get("nodeName") == victim}
        procs = _container_pids(cluster, victim)
        if netns.get(victim):
            from kubelab import netns as kn
            kn.partition(netns[victim])
            run.fault(f"partition {victim} (its network link is down)")
        else:
            cluster.signal(victim, signal.SIGSTOP)
            run.fault(f"partition {victim} (loopback form: agent and proxy frozen)")
        t = time.monotonic()
        try:
            ok = await wait_until(lambda: _node_not_ready(app, victim), 300, 0.2)
            run.check(f"{victim} becomes NotReady", bool(ok), f"{time.monotonic() - t:.1f}s")
            alive = [p for p in procs if _alive(p)]
            run.check(f"{victim}'s pods keep running while it is cut off",
                      len(alive) == len(procs), f"{len(alive)} of {len(procs)} container "
                      "processes alive")
        finally:
            if netns.get(victim):
                from kubelab import netns as kn
                kn.heal(netns[victim])
            else:
                cluster.signal(victim, signal.SIGCONT)
            run.fault(f"heal {victim}")
        ok = await wait_until(lambda: _node_ready(app, victim), 120, 0.2)
        run.check(f"{victim} rejoins Ready", bool(ok), f"{time.monotonic() - t:.1f}s")
        after = await app.pods()
        names = [p["metadata"]["name"] for p in after]
        run.check("no duplicate pods", len(names) == len(set(names)))
        ok = await wait_until(lambda: _count_ready(app, app.replicas), 120, 0.2)
        run.check(f"{app.replicas} pods Ready after healing", bool(ok))
        run.observe(f"pods that were on {victim}: {sorted(before)}")


def _container_pids(cluster: Cluster, worker: str) -> list[int]:
    """The running container processes the worker's node agent recorded (its shims' state)."""
    import json
    out = []
    for f in (cluster.state_dir / worker / "pods").glob("*/*/*/state.json"):
        try:
            st = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if st.get("pid") and not st.get("finishedAt") and _alive(int(st["pid"])):
            out.append(int(st["pid"]))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


async def latency(cluster: Cluster, run: Run, delay_ms: int = 50) -> None:
    """Network delay and loss on a store member (tc netem, or an NFQUEUE delayer where the
    kernel has no netem): its effect on write latency and on elections."""
    netns = (cluster.settings or {}).get("netns", {})
    stores = [c.name for c in cluster.stores]
    if not all(netns.get(s) for s in stores):
        run.cannot_run("latency needs kubelab up --network netns (the loopback form has no "
                       "links to slow down)")
        return
    from kubelab import netns as kn
    from kubelab.etcdclient import EtcdClient

    from .store import PREFIX, leader_of
    client = EtcdClient(cluster.store_endpoints(), timeout=5.0, call_timeout=3.0)
    base = f"{PREFIX}lat/{run.seed}-{int(time.time() * 1000)}/"
    try:
        async def phase(label: str, seconds: float = 3.0) -> WriteProber:
            p = WriteProber(lambda i: client.put(f"{base}{label}/{i}", "x"), interval=0.0)
            p.start()
            await asyncio.sleep(seconds)
            await p.stop()
            s = p.summary()
            run.observe(f"{label}: {len(p.acked)} writes, {p.failed} failed, {s['write p99']}")
            run.metrics[f"{label} write p99"] = s["write p99"]
            return p
        await phase("baseline")
        leader = await leader_of(cluster)
        target = leader or stores[0]
        how = kn.add_delay(netns[target], delay_ms, 1.0)
        run.fault(f"delay {delay_ms} ms ({'tc netem' if how == 'netem' else 'NFQUEUE delayer'})"
                  f" + 1% loss on {target}" + (" (the leader)" if leader else ""))
        try:
            p = await phase("degraded", 5.0)
            run.check("writes keep succeeding with a slow leader", len(p.acked) > 0)
            after = await leader_of(cluster)
            run.observe(f"leader during the fault: {after} (before: {leader})")
        finally:
            kn.clear_delay(netns[target])
            run.fault(f"clear the delay on {target}")
        p = await phase("recovered")
        run.check("writes succeed after the fault", len(p.acked) > 0)
    finally:
        await client.close()


SCENARIOS = {
    "worker-loss": (worker_loss, ("kill a worker: NotReady, pods evicted and Running "
                                  "elsewhere, Service traffic recovers")),
    "pod-chaos": (pod_chaos, "delete random pods of a Deployment under traffic"),
    "partition": (partition, "cut a worker off and heal it"),
    "latency": (latency, "network delay on the store leader"),
}
