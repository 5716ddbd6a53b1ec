"""control-plane: kill the active controller manager and the active scheduler while a standby
of each runs; measure the takeover through the Lease, and check that nothing was done twice
(no surplus pods from the ReplicaSet, every pod bound once)."""

from __future__ import annotations

import time

from kubelab.client import APIError, ClusterClient
from kubelab.cluster import Cluster

from .harness import Run, wait_until

NS = "default"


async def lease_holder(client: ClusterClient, name: str) -> str | None:
    lease = await client.get_or_none("Lease", "kube-system", name)
    return ((lease or {}).get("spec") or {}).get("holderIdentity") or None


def _deployment(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c",
                                                           "image": "registry.k8s.io/pause"}]}}}}


async def _pods(client: ClusterClient, app: str) -> list[dict]:
    return [p for p in (await client.list("Pod", NS, label_selector=f"app={app}"))["items"]
            if not p["metadata"].get("deletionTimestamp")]


async def control_plane(cluster: Cluster, run: Run) -> None:
    names = set(cluster.components)
    if not {"controller-manager-2", "scheduler-2"} <= names:
        run.cannot_run("control-plane needs standbys: kubelab up --control-plane-replicas 2")
        return
    api = cluster.apiserver
    client = ClusterClient(api.grpc_url, cluster.admin_token())
    app = f"chaos-cp-{run.seed}"
    try:
        for kind, lease in (("controller-manager", "kube-controller-manager"),
                            ("scheduler", "kube-scheduler")):
            holder = await wait_until(lambda lease=lease: lease_holder(client, lease), 30)
            run.check(f"{kind} has a leader", holder is not None, str(holder))
            if holder is None:
                return
            run.observe(f"{lease} Lease held by {holder}")
        await client.create("Deployment", _deployment(app, 3), NS)
        ok = await wait_until(lambda: _count(client, app, 3, scheduled=True), 60)
        run.check("3 pods scheduled before any fault", bool(ok))

        for kind, lease in (("controller-manager", "kube-controller-manager"),
                            ("scheduler", "kube-scheduler")):
            holder = await lease_holder(client, lease)
            victim = holder if holder in names else kind
            cluster.kill(victim)
            t = time.monotonic()
            run.fault(f"kill -9 {victim} (the active {kind})")
            # work that only the killed component's role can do, queued during the takeover
            replicas = 6 if kind == "controller-manager" else 8
            await client.patch("Deployment", NS, app, {"spec": {"replicas": replicas}})
            run.say(f"scaled {app} to {replicas} while no {kind} is active")
            new = await wait_until(lambda lease=lease, holder=holder:
                                   _other_holder(client, lease, holder), 120, 0.1)
            takeover = time.monotonic() - t
            run.check(f"a standby {kind} takes over", bool(new), f"{new} after {takeover:.2f}s")
            run.metrics[f"{kind} takeover"] = f"{takeover:.2f}s"
            ok = await wait_until(lambda n=replicas: _count(client, app, n, scheduled=True), 60)
            pods = await _pods(client, app)
            run.check(f"exactly {replicas} pods, all scheduled, after the {kind} takeover",
                      bool(ok), f"{len(pods)} pods")
            cluster.start(victim)
            run.fault(f"restart {victim} (now the standby)")
        # no double actions: exactly one ReplicaSet, one binding per pod
        rss = [r for r in (await client.list("ReplicaSet", NS))["items"]
               if r["metadata"]["name"].startswith(app + "-")]
        run.check("one ReplicaSet for the Deployment", len(rss) == 1, f"{len(rss)}")
        events = (await client.list("Event", NS))["items"]
        bound: dict[str, int] = {}
        for e in events:
            if e.get("reason") == "Scheduled" and \
                    e["involvedObject"].get("name", "").startswith(app + "-"):
                bound[e["involvedObject"]["name"]] = bound.get(e["involvedObject"]["name"], 0) + \
                    int(e.get("count") or 1)
        twice = {k: v for k, v in bound.items() if v > 1}
        run.check("every pod bound once", not twice, f"{twice}" if twice else
                  f"{len(bound)} pods, one Scheduled event each")
    finally:
        try:
            await client.delete("Deployment", NS, app, propagation="Background")
        except APIError:
            pass
        await client.close()


async def _other_holder(client: ClusterClient, lease: str, old: str | None):
    h = await lease_holder(client, lease)
    return h if h and h != old else None


async def _count(client: ClusterClient, app: str, n: int, scheduled: bool = False) -> bool:
    pods = await _pods(client, app)
    if len(pods) != n:
        return False
    return all((p.get("spec") or {}).get("nodeName") for p in pods) if scheduled else True

