"""Pod start-up latency on real workers: N pods of a catalog image with a readiness probe.

    .venv/bin/python bench/pod_startup_bench.py [--pods 100] [--workers 3] [--interval S]
                                                [--mode pods|deployment] [--quick] [--json FILE]

Starts its own cluster (3 stores, API server, controller manager, scheduler and W real workers:
node agent + proxy each, loopback network form, time scale 1) in a temporary state dir. Then
creates N pods of `hashicorp/http-echo` with an httpGet readiness probe (periodSeconds 1):
`--mode pods` (default) creates N individual pods through the gRPC cluster API — all at once
(as fast as the API server takes them) or, with `--interval S`, one every S seconds; a pod's
create time is the moment its create call was sent. `--mode deployment` creates one Deployment
of N replicas (a pod's create time is the moment the watch saw it ADDED). A watch follows
every pod and records when it was first seen bound, with status.phase Running and with the
Ready condition True. The scheduler spreads the pods over the workers (printed).

Printed (no pass/fail — figures for the README), p50/p99/max per pod:
- create → bound, → Running, → Ready: watch-observed (ms resolution);
- create → container exec'd (the shim's state.json startedAt, sub-second) and → app listening
  (the time stamp of the app's first log line, "server is listening"): where the time goes;
- create → startedAt / Ready lastTransitionTime as the node agent writes them, minus
  creationTimestamp: Kubernetes' timestamps have 1 s resolution, so these are ±1 s;
- CPU seconds used during the run, RSS now, and seconds spent runnable waiting for a CPU
  (/proc/<pid>/schedstat) of each worker's node agent, proxy, container shims (detached, found
  by their command line under the worker's root dir) and containers;
- the load average before and after (the machine may be shared: figures depend on it).

`--worker-cpu-shares N` is an experiment: during the run the node agent's cgroups
/sys/fs/cgroup/cpu/kubelab (all pods of all workers) and kubelab/worker-N get cpu.shares
N x workers and N instead of the default 1024 (one host process' weight), then are restored.

Reference: Kubernetes' pod start-up SLO is p99 ≤ 5 s for stateless pods excluding image pull
(sig-scalability); kubelab's target is ≤ 1 s p99 (images are built in, nothing is pulled).
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from procstat import descendants, pct, processes

from kubelab.cli import wait_nodes_ready, wait_ready
from kubelab.client import ClusterClient
from kubelab.cluster import Cluster

NS = "bench"
SLO_K8S_P99 = 5.0
TARGET_P99 = 1.0


# ---------------------------------------------------------------------------- /proc accounting
def worker_processes(cluster: Cluster, worker: str) -> dict[str, set[int]]:
    """A worker machine's processes by role: agent, proxy, shims, containers."""
    procs = processes()
    agent = cluster.pid(worker)
    marker = f"{cluster.state_dir}/{worker}/".encode()
    roles: dict[str, set[int]] = {"agent": set(), "proxy": set(), "shims": set(),
                                  "containers": set()}
    if agent:
        roles["agent"].add(agent)
    tree = descendants(procs, {agent} if agent else set())
    for pid in tree - {agent}:
        cmd = procs[pid][1]
        if b"-m\0proxy\0" in cmd:
            roles["proxy"] |= descendants(procs, {pid})
    shims = {pid for pid, (_pp, cmd, *_r) in procs.items()
             if b"nodeagent/shim.py" in cmd and marker in cmd}
    roles["shims"] = shims
    roles["containers"] = descendants(procs, shims) - shims
    # whatever else hangs under the agent (short-lived shim launchers, nsenter...) is the agent's
    roles["agent"] |= tree - roles["proxy"] - roles["shims"] - roles["containers"]
    return roles


def _rfc3339nano(s: str) -> float | None:
    try:
        whole, _, frac = s.rstrip("Z").partition(".")
        return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac
                                                                                    or "0"))
    except ValueError:
        return None


def container_times(cluster: Cluster, workers: list[str]) -> dict[str, tuple[float, float]]:
    """pod -> (first container start from its shim's state.json, epoch s with sub-second
    precision; the time of the app's first log line, i.e. "server is listening")."""
    out = {}
    for w in workers:
        for d in (cluster.state_dir / w / "pods").glob(f"{NS}_*_*"):
            pod = d.name.split("_", 1)[1].rsplit("_", 1)[0]
            started = listening = 0.0
            try:
                started = float(json.loads((d / "web" / "0" / "state.json").read_text())
                                .get("startedAt") or 0.0)
            except (OSError, ValueError):
                pass
            try:
                with open(d / "web" / "0.log") as f:
                    first = f.readline()
                listening = _rfc3339nano(first.split(" ", 1)[0]) or 0.0 if first else 0.0
            except OSError:
                pass
            out[pod] = (started, listening)
    return out


def set_worker_shares(workers: list[str], shares: int,
                      restore: dict[str, str] | None = None) -> dict[str, str]:
    """Experiment: the cpu.shares of the node agent's per-node cgroup
    /sys/fs/cgroup/cpu/kubelab/<node> (1024 by default: all pods of a worker weigh as much as
    ONE host process), and of their parent kubelab/ (1024: all pods of every worker together
    weigh as much as one host process) — set to shares x workers. Returns the previous values; `restore` puts them back. The group is per
    node name, so it is shared with any other cluster on this host that has a worker-N."""
    old: dict[str, str] = {}
    for w in ["", *workers]:  # "": the parent kubelab/ group, all nodes' pods under one weight
        f = Path("/sys/fs/cgroup/cpu/kubelab") / w / "cpu.shares"
        value = shares * len(workers) if w == "" else shares
        try:
            if restore is not None:
                if w in restore:
                    f.write_text(restore[w])
                continue
            if shares:
                f.parent.mkdir(exist_ok=True)
                old[w] = f.read_text().strip()
                f.write_text(str(value))
        except OSError as e:
            print(f"cannot set {f}: {e}", file=sys.stderr)
    return old


def sample(cluster: Cluster, workers: list[str]) -> dict:
    procs = processes()
    res = {}
    for w in workers:
        for role, pids in worker_processes(cluster, w).items():
            res[(w, role)] = {p: (procs[p][2], procs[p][3], procs[p][4]) for p in pids
                              if p in procs}
    for name in cluster.components:  # the control plane, for comparison
        pid = cluster.pid(name)
        if name not in workers and pid in procs:
            res[("control-plane", name)] = {pid: (procs[pid][2], procs[pid][3], procs[pid][4])}
    return res


def usage(before: dict, after: dict) -> dict:
    """(worker, role) -> cpu seconds used between the samples, RSS MB now, process count."""
    out = {}
    for key, now in after.items():
        was = before.get(key, {})
        cpu = sum(c - was.get(p, (0.0, 0.0, 0.0))[0] for p, (c, _r, _w) in now.items())
        wait = sum(w - was.get(p, (0.0, 0.0, 0.0))[2] for p, (_c, _r, w) in now.items())
        out[key] = {"cpu_s": round(cpu, 2), "rss_mb": round(sum(v[1] for v in now.values()), 1),
                    "procs": len(now), "runq_wait_s": round(wait, 1)}
    return out


# ---------------------------------------------------------------------------- helpers
def stats(xs: list[float]) -> dict:
    return {"n": len(xs), "p50_ms": round(pct(xs, 50) * 1000), "p99_ms": round(pct(xs, 99) * 1000),
            "max_ms": round(max(xs) * 1000) if xs else float("nan")}


def ts(s: str | None) -> float | None:
    """RFC 3339 (second resolution) -> epoch seconds."""
    if not s:
        return None
    return calendar.timegm(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S"))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ready(obj: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def pod_spec(labels: dict) -> dict:
    return {"terminationGracePeriodSeconds": 2,
            "containers": [{"name": "web", "image": "hashicorp/http-echo",
                            "args": ["-text=hello", "-listen=:8080"],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": 8080},
                                               "periodSeconds": 1}}]}


# ---------------------------------------------------------------------------- the run
async def run(args) -> dict:
    state = Path(tempfile.mkdtemp(prefix="kubelab-podbench-"))
    cluster = Cluster.create(state / "cluster", port_offset=random.randrange(34000, 38000, 10),
                             workers=args.workers, network="loopback")
    workers = [w.name for w in cluster.workers]
    saved_shares: dict[str, str] = {}
    try:
        t_up = time.monotonic()
        cluster.start_all()
        await wait_ready(cluster, 120)
        await wait_nodes_ready(cluster, args.workers, 120)
        up_s = time.monotonic() - t_up
        client = ClusterClient(cluster.apiserver.grpc_url, cluster.admin_token(), retry_for=30)
        await client.create("Namespace", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NS}})
        # the default ServiceAccount must exist before pods are admitted
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if await client.get_or_none("ServiceAccount", NS, "default"):
                    break
            except Exception:  # noqa: BLE001 - no ServiceAccount kind: nothing to wait for
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.settle)
        saved_shares = set_worker_shares(workers, args.worker_cpu_shares)
        load_before = loadavg()
        before = sample(cluster, workers)
        created: dict[str, float] = {}
        created_wall: dict[str, float] = {}
        bound: dict[str, float] = {}
        running: dict[str, float] = {}
        readyt: dict[str, float] = {}
        last: dict[str, dict] = {}
        done = asyncio.Event()

        async def follow():
            async for _etype, pod in client.watch("Pod", NS, resource_version="0",
                                                  allow_bookmarks=False):
                name = pod["metadata"]["name"]
                now = time.monotonic()
                last[name] = pod
                if name not in created:  # deployment mode: first seen = created
                    created[name] = now
                    created_wall[name] = time.time()
                if (pod.get("spec") or {}).get("nodeName"):
                    bound.setdefault(name, now)
                if (pod.get("status") or {}).get("phase") == "Running":
                    running.setdefault(name, now)
                if ready(pod):
                    readyt.setdefault(name, now)
                    if len(readyt) >= args.pods:
                        done.set()
                        return

        watcher = asyncio.create_task(follow())
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        labels = {"app": "podbench"}
        if args.mode == "deployment":
            await client.create("Deployment", {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "podbench", "namespace": NS},
                "spec": {"replicas": args.pods, "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels},
                                      "spec": pod_spec(labels)}}}, NS)
        else:
            sem = asyncio.Semaphore(args.concurrency)

            async def make(i: int):
                name = f"web-{i:04d}"
                pod = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": NS, "labels": labels},
                       "spec": pod_spec(labels)}
                if args.interval:  # a steady rate instead of a burst
                    await asyncio.sleep(max(0.0, t0 + i * args.interval - time.monotonic()))
                async with sem:
                    created[name] = time.monotonic()
                    created_wall[name] = time.time()
                    await client.create("Pod", pod, NS)

            await asyncio.gather(*(make(i) for i in range(args.pods)))
        t_created = time.monotonic()
        try:
            await asyncio.wait_for(done.wait(), args.timeout)
        except TimeoutError:
            pass
        t_end = time.monotonic()
        watcher.cancel()
        load_after = loadavg()
        after = sample(cluster, workers)
        set_worker_shares(workers, 0, saved_shares)
        saved_shares = {}
        # the final objects (timestamps written by the node agent)
        final = {p["metadata"]["name"]: p for p in (await client.list("Pod", NS))["items"]}
        await client.close()

        node_times = container_times(cluster, workers)
        started_lat = [node_times[n][0] - created_wall[n] for n in node_times
                       if n in created_wall and node_times[n][0]]
        listen_lat = [node_times[n][1] - created_wall[n] for n in node_times
                      if n in created_wall and node_times[n][1]]
        bind_lat = [bound[n] - created[n] for n in bound if n in created]
        run_lat = [running[n] - created[n] for n in running if n in created]
        ready_lat = [readyt[n] - created[n] for n in readyt if n in created]
        srv_run, srv_ready, per_node, restarts = [], [], {}, 0
        for p in final.values():
            c0 = ts(p["metadata"].get("creationTimestamp"))
            node = p["spec"].get("nodeName") or "(unscheduled)"
            per_node[node] = per_node.get(node, 0) + 1
            st = p.get("status") or {}
            for cs in st.get("containerStatuses") or []:
                restarts += cs.get("restartCount") or 0
                s = ts(((cs.get("state") or {}).get("running") or {}).get("startedAt"))
                if c0 is not None and s is not None:
                    srv_run.append(s - c0)
            for c in st.get("conditions") or []:
                if c.get("type") == "Ready" and c.get("status") == "True":
                    r = ts(c.get("lastTransitionTime"))
                    if c0 is not None and r is not None:
                        srv_ready.append(r - c0)
        use = usage(before, after)
        return {
            "mode": args.mode, "pods": args.pods, "interval": args.interval, "workers": args.workers,
            "cluster_up_s": round(up_s, 1),
            "create_s": round(t_created - t0, 2),
            "running": len(running), "ready": len(readyt), "restarts": restarts,
            "all_ready_s": round(max(readyt.values()) - t0, 1) if len(readyt) >= args.pods
            else None,
            "wall_s": round(t_end - t0, 1),
            "create_to_bound": stats(bind_lat),
            "create_to_container_started": stats(started_lat),
            "create_to_running": stats(run_lat),
            "create_to_app_listening": stats(listen_lat),
            "create_to_ready": stats(ready_lat),
            "server_ts_create_to_running": stats(srv_run),
            "server_ts_create_to_ready": stats(srv_ready),
            "pods_per_node": dict(sorted(per_node.items())),
            "workers_usage": {f"{w}/{r}": v for (w, r), v in sorted(use.items())},
            "worker_cpu_shares": args.worker_cpu_shares or None,
            "loadavg_before": load_before, "loadavg_after": load_after,
            "cpus": os.cpu_count(),
        }
    finally:
        if saved_shares:
            set_worker_shares(workers, 0, saved_shares)
        cluster.down()
        try:
            state.rmdir()
        except OSError:
            pass


def report(res: dict) -> None:
    how = ("one Deployment of" if res["mode"] == "deployment" else
           f"individual pods, one every {res['interval']} s," if res.get("interval") else
           "individual pods, all at once,")
    print(f"pod start-up: {res['pods']} pods ({how} hashicorp/http-echo, httpGet readiness "
          f"probe every 1 s) on {res['workers']} workers (loopback network form)")
    print(f"  machine: {res['cpus']} CPUs, load average {res['loadavg_before']} before, "
          f"{res['loadavg_after']} after")
    if res.get("worker_cpu_shares"):
        print(f"  EXPERIMENT: cpu.shares of /sys/fs/cgroup/cpu/kubelab/worker-N set to "
              f"{res['worker_cpu_shares']} and of kubelab/ to {res['worker_cpu_shares']} x "
              f"{res['workers']} during the run (node agent default: 1024 each)")
    print(f"  cluster up (3 stores + {res['workers']} workers Ready) {res['cluster_up_s']} s")
    print(f"  pods created in            {res['create_s']:.2f} s")
    print(f"  Running / Ready            {res['running']} / {res['ready']} "
          f"(container restarts: {res['restarts']})")
    ar = res["all_ready_s"]
    print("  all Ready after            " + (f"{ar:.1f} s" if ar is not None
                                              else f"NOT all Ready after {res['wall_s']} s"))
    print(f"  pods per node              {res['pods_per_node']}")
    print("  latency (ms)                                p50     p99     max   (n)")
    for label, key in (("create -> bound (watch)", "create_to_bound"),
                       ("create -> container exec'd (shim state)", "create_to_container_started"),
                       ("create -> Running (watch)", "create_to_running"),
                       ("create -> app listening (its log line)", "create_to_app_listening"),
                       ("create -> Ready   (watch)", "create_to_ready"),
                       ("create -> startedAt (±1 s)", "server_ts_create_to_running"),
                       ("create -> Ready lastTransition (±1 s)", "server_ts_create_to_ready")):
        s = res[key]
        print(f"  {label:<40} {s['p50_ms']:>6} {s['p99_ms']:>7} {s['max_ms']:>7}   ({s['n']})")
    p99 = res["create_to_running"]["p99_ms"] / 1000
    p99r = res["create_to_ready"]["p99_ms"] / 1000
    print(f"  Kubernetes SLO: create -> Running p99 <= {SLO_K8S_P99:.0f} s (excl. image pull); "
          f"target here <= {TARGET_P99:.0f} s.  measured: Running p99 {p99:.2f} s, "
          f"Ready p99 {p99r:.2f} s")
    print("  processes during the run          cpu s   rss MB  procs  waited for a CPU s")
    totals: dict[str, list[float]] = {}
    for key, v in res["workers_usage"].items():
        if key.startswith("control-plane/"):
            continue
        print(f"  {key:<32} {v['cpu_s']:>6.1f} {v['rss_mb']:>8.1f} {v['procs']:>6} "
              f"{v['runq_wait_s']:>10.1f}")
        role = key.split("/", 1)[1]
        t = totals.setdefault(role, [0.0, 0.0, 0, 0.0])
        t[0] += v["cpu_s"]
        t[1] += v["rss_mb"]
        t[2] += v["procs"]
        t[3] += v["runq_wait_s"]
    for role, (c, r, n, w) in totals.items():
        print(f"  {'all workers/' + role:<32} {c:>6.1f} {r:>8.1f} {int(n):>6} {w:>10.1f}")
    for key, v in res["workers_usage"].items():
        if key.startswith("control-plane/"):
            print(f"  {key:<32} {v['cpu_s']:>6.1f} {v['rss_mb']:>8.1f} {v['procs']:>6} "
                  f"{v['runq_wait_s']:>10.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=100)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--mode", choices=["pods", "deployment"], default="pods",
                   help="N individual pods (default) or one Deployment of N replicas")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent pod creates")
    p.add_argument("--interval", type=float, default=0.0,
                   help="seconds between pod creates (--mode pods; default 0: a burst, as fast "
                        "as the API server takes them)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all Ready")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to let the idle cluster settle before the run")
    p.add_argument("--quick", action="store_true", help="20 pods (a smoke run)")
    p.add_argument("--worker-cpu-shares", type=int, default=0,
                   help="experiment: set cpu.shares of /sys/fs/cgroup/cpu/kubelab/worker-N "
                        "(the node agent's per-node group, 1024) to N and of kubelab/ to N x "
                        "workers during the run, then restore")
    p.add_argument("--json", default=None, help="also write the figures as JSON")
    args = p.parse_args()
    if args.quick:
        args.pods = min(args.pods, 20)
    res = asyncio.run(run(args))
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
