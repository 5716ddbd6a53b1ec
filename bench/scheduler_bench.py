"""Scheduling throughput and latency: N pods across M hollow nodes.

    .venv/bin/python bench/scheduler_bench.py [--pods 3000] [--nodes 100] [--backlog]

Starts its own cluster (3 stores, API server, controller manager, scheduler, M hollow nodes) in
a temporary state dir, creates N pods through the gRPC cluster API as fast as the API server
takes them, and follows them with a watch: pods/s bound, time until all are Running, p50/p99
create→bound and create→Running, and the CPU seconds and RSS of every component. Targets (issue):
≥ 200 pods/s scheduled and all 3,000 Running within 30 s on this 2-core machine.

--backlog measures the scheduler itself, as Kubernetes' scheduler_perf does with pods created
far faster than they are scheduled: the scheduler is stopped while the N pods are created, then
started; pods/s bound is counted from its first binding to its last. (Without --backlog the
binding rate cannot exceed the rate at which the API server takes creates.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from procstat import pct, processes

from kubelab.cli import wait_ready
from kubelab.client import ClusterClient
from kubelab.cluster import Cluster


def proc_stats(pids: dict[str, int | None]) -> dict[str, tuple[float, float]]:
    """(cpu seconds, rss MB) per component (0, 0 when its process is gone)."""
    procs = processes()
    return {n: (procs[p][2], procs[p][3]) if p in procs else (0.0, 0.0)
            for n, p in pids.items()}


async def run(args) -> dict:
    state = Path(tempfile.mkdtemp(prefix="kubelab-schedbench-"))
    cluster = Cluster.create(state / "cluster", port_offset=random.randrange(30000, 34000, 10),
                             hollow_workers=args.nodes)
    try:
        for c in cluster.components.values():
            cluster.start(c.name)
        await wait_ready(cluster, 60)
        client = ClusterClient(cluster.apiserver.grpc_url, cluster.admin_token(), retry_for=30)
        deadline = time.monotonic() + 120
        while True:
            nodes = (await client.list("Node"))["items"]
            ready = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True"
                                             for c in n["status"].get("conditions", []))]
            if len(ready) >= args.nodes:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(ready)}/{args.nodes} nodes Ready")
            await asyncio.sleep(0.5)
        await client.create("Namespace", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": "bench"}})
        pids = {n: cluster.pid(n) for n in cluster.components}
        before = proc_stats(pids)
        created: dict[str, float] = {}
        bound: dict[str, float] = {}
        running: dict[str, float] = {}
        done = asyncio.Event()

        async def follow():
            async for etype, pod in client.watch("Pod", "bench", resource_version="0",
                                                 allow_bookmarks=False):
                name = pod["metadata"]["name"]
                now = time.monotonic()
                if pod.get("spec", {}).get("nodeName") and name not in bound:
                    bound[name] = now
                if pod.get("status", {}).get("phase") == "Running" and name not in running:
                    running[name] = now
                    if len(running) >= args.pods:
                        done.set()
                        return

        if args.backlog:
            cluster.stop("scheduler")
        watcher = asyncio.create_task(follow())
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        sem = asyncio.Semaphore(args.concurrency)

        async def make(i: int):
            name = f"p-{i:05d}"
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
                   "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause",
                                            "resources": {"requests": {"cpu": "10m",
                                                                       "memory": "10Mi"}}}]}}
            async with sem:
                created[name] = time.monotonic()
                await client.create("Pod", pod, "bench")

        await asyncio.gather(*(make(i) for i in range(args.pods)))
        t_created = time.monotonic()
        t_sched = None
        if args.backlog:
            pids["scheduler"] = cluster.start("scheduler")
            before["scheduler"] = (0.0, 0.0)  # a new process
            t_sched = time.monotonic()
        try:
            await asyncio.wait_for(done.wait(), args.timeout)
        except TimeoutError:
            pass
        t_end = time.monotonic()
        watcher.cancel()
        after = proc_stats(pids)
        await client.close()
        bind_lat = [bound[n] - created[n] for n in bound if n in created]
        run_lat = [running[n] - created[n] for n in running if n in created]
        first_bind = min(bound.values()) if bound else t0
        last_bind = max(bound.values()) if bound else t0
        res = {
            "pods": args.pods, "nodes": args.nodes,
            "create_seconds": t_created - t0, "backlog": args.backlog,
            "scheduler_start_to_all_bound_seconds": (last_bind - t_sched) if t_sched and bound
            else None,
            "bound": len(bound), "running": len(running),
            "scheduled_pods_per_s": len(bound) / max(1e-9, last_bind - first_bind)
            if len(bound) > 1 else 0.0,
            "all_running_seconds": (max(running.values()) - t0) if len(running) >= args.pods
            else None,
            "create_to_bound_p50_ms": pct(bind_lat, 50) * 1000,
            "create_to_bound_p99_ms": pct(bind_lat, 99) * 1000,
            "create_to_running_p50_ms": pct(run_lat, 50) * 1000,
            "create_to_running_p99_ms": pct(run_lat, 99) * 1000,
            "components": {n: {"cpu_seconds": round(after[n][0] - before[n][0], 2),
                               "rss_mb": round(after[n][1], 1)} for n in pids},
            "wall_seconds": t_end - t0,
        }
        return res
    finally:
        cluster.down()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=3000)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=64, help="concurrent pod creates")
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument("--backlog", action="store_true",
                   help="create every pod with the scheduler stopped, then start it")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    res = asyncio.run(run(args))
    print(f"pods {res['pods']} on {res['nodes']} hollow nodes")
    print(f"  created in                 {res['create_seconds']:.1f} s")
    print(f"  bound / Running            {res['bound']} / {res['running']}")
    print(f"  scheduled                  {res['scheduled_pods_per_s']:.0f} pods/s"
          + (" (backlog: first to last binding)" if res["backlog"] else ""))
    if res["backlog"]:
        print(f"  scheduler start->all bound {res['scheduler_start_to_all_bound_seconds']:.1f} s "
              "(includes its start-up and cache sync)")
    ar = res["all_running_seconds"]
    print("  all Running after          " + (f"{ar:.1f} s" if ar else "NOT all Running"))
    print(f"  create->bound   p50/p99    {res['create_to_bound_p50_ms']:.0f} / "
          f"{res['create_to_bound_p99_ms']:.0f} ms")
    print(f"  create->Running p50/p99    {res['create_to_running_p50_ms']:.0f} / "
          f"{res['create_to_running_p99_ms']:.0f} ms")
    print("  component          cpu s   rss MB")
    for n, v in res["components"].items():
        print(f"  {n:<18} {v['cpu_seconds']:>6.1f}  {v['rss_mb']:>7.1f}")
    ok1 = res["scheduled_pods_per_s"] >= 200
    ok2 = ar is not None and ar <= 30 and res["pods"] >= 3000
    print(f"  {'PASS' if ok1 else 'MISS'}  >= 200 pods/s scheduled")
    print(f"  {'PASS' if ok2 else 'MISS'}  all 3,000 Running within 30 s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
