"""`kubelab`: bring a cluster up, look at it, break it, take it down.

    kubelab up [--state-dir DIR] [--stores 3] [--workers N] [--port-offset N] [--network auto|loopback]
    kubelab status [--state-dir DIR] [-o json]
    kubelab stop|start|kill <component> [--state-dir DIR]
    kubelab logs <component> [-f] [--state-dir DIR]
    kubelab down [--state-dir DIR]
    kubelab chaos <scenario> [--state-dir DIR] [--seed N] [--record FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from .cluster import Cluster, ClusterError, default_state_dir
from .etcdclient import EtcdClient, EtcdError


def _state_dir(args) -> str:
    return args.state_dir or os.environ.get("KUBELAB_STATE_DIR") or str(
        default_state_dir(args.name))


async def store_status(cluster: Cluster, timeout: float = 1.0) -> list[dict]:
    """One row per store member: process state and, when it answers, its Raft view."""
    client = EtcdClient(cluster.store_endpoints(), timeout=timeout, call_timeout=timeout)
    try:
        async def one(comp):
            row = {"name": comp.name, "pid": cluster.pid(comp.name), "address": comp.client_url,
                   "healthy": False}
            if row["pid"] is None:
                row["state"] = "down"
                return row
            row["state"] = "up"
            try:
                st = await client.status(comp.client_url)
            except EtcdError as e:
                row["error"] = e.message
                return row
            row.update(member_id=f"{st.header.member_id:x}", leader_id=f"{st.leader:x}",
                       role="leader" if st.leader and st.leader == st.header.member_id else
                       ("follower" if st.leader else "no leader"),
                       term=st.raftTerm, commit_index=st.raftIndex,
                       applied_index=st.raftAppliedIndex, revision=st.header.revision,
                       healthy=bool(st.leader), errors=list(st.errors))
            return row
        return list(await asyncio.gather(*(one(c) for c in cluster.stores)))
    finally:
        await client.close()


def _print_status(cluster: Cluster, rows: list[dict]) -> None:
    hdr = ["COMPONENT", "STATE", "PID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED",
           "REVISION"]
    table = [hdr]
    for r in rows:
        table.append([r["name"], r["state"], str(r["pid"] or "-"), r["address"],
                      r.get("role", r.get("error", "-") if r["state"] == "up" else "-"),
                      str(r.get("term", "-")), str(r.get("commit_index", "-")),
                      str(r.get("applied_index", "-")), str(r.get("revision", "-"))])
    widths = [max(len(row[i]) for row in table) for i in range(len(hdr))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    up = sum(1 for r in rows if r["state"] == "up")
    leaders = [r["name"] for r in rows if r.get("role") == "leader"]
    need = len(rows) // 2 + 1
    print()
    if leaders and up >= need:
        print(f"store quorum: ok ({up}/{len(rows)} members up, {need} needed; "
              f"leader {leaders[0]})")
    else:
        print(f"WARNING: store quorum lost ({up}/{len(rows)} members up, {need} needed): "
              "writes fail with 'etcdserver: no leader' until members return")


async def apiserver_status(cluster: Cluster, timeout: float = 1.0) -> dict | None:
    """GET /readyz on the API server with the admin token."""
    api = cluster.apiserver
    if api is None:
        return None
    row = {"name": api.name, "pid": cluster.pid(api.name), "address": api.client_url,
           "state": "down", "ready": False}
    if row["pid"] is None:
        return row
    row["state"] = "up"
    token = cluster.admin_token()
    import ssl
    import aiohttp
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(api.client_url + "/readyz", ssl=ctx,
                             headers={"Authorization": f"Bearer {token}"}) as r:
                row["ready"] = r.status == 200
                row["detail"] = (await r.text()).strip()[:80]
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        row["detail"] = type(e).__name__
    return row


async def api_get(cluster: Cluster, path: str, timeout: float = 2.0) -> dict | None:
    """GET a path on the API server as admin; None when it does not answer."""
    api = cluster.apiserver
    if api is None or cluster.pid(api.name) is None:
        return None
    import ssl
    import aiohttp
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(api.client_url + path, ssl=ctx, headers={
                    "Authorization": f"Bearer {cluster.admin_token()}"}) as r:
                if r.status != 200:
                    return None
                return await r.json()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
        return None


async def components_status(cluster: Cluster) -> list[dict]:
    """Every component that is not a store member or the API server: process state, and for
    leader-elected ones the Lease holder; plus the nodes' Ready state."""
    rows = []
    leases = {}
    for lease in ("kube-controller-manager", "kube-scheduler"):
        obj = await api_get(cluster, f"/apis/coordination.k8s.io/v1/namespaces/kube-system/"
                                     f"leases/{lease}")
        if obj:
            leases[lease] = (obj.get("spec") or {}).get("holderIdentity", "")
    for comp in cluster.components.values():
        if comp.kind in ("store", "apiserver"):
            continue
        row = {"name": comp.name, "pid": cluster.pid(comp.name), "address": comp.client_url}
        row["state"] = "up" if row["pid"] else "down"
        lease = {"controller-manager": "kube-controller-manager",
                 "scheduler": "kube-scheduler"}.get(comp.kind)
        if lease:
            row["leader"] = leases.get(lease, "")
        rows.append(row)
    nodes = await api_get(cluster, "/api/v1/nodes")
    ready = total = 0
    for n in (nodes or {}).get("items", []):
        total += 1
        if any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in n.get("status", {}).get("conditions", [])):
            ready += 1
    return rows + ([{"name": "nodes", "ready": ready, "total": total}] if nodes else [])


async def wait_ready(cluster: Cluster, timeout: float, progress=None) -> list[dict]:
    deadline = time.monotonic() + timeout
    shown = None
    while True:
        rows = await store_status(cluster)
        ready = [r for r in rows if r.get("healthy")]
        msg = f"stores ready: {len(ready)}/{len(rows)}"
        api_ok = True
        if cluster.apiserver is not None:
            api = await apiserver_status(cluster)
            api_ok = bool(api and api["ready"])
            msg += f", apiserver {'ready' if api_ok else 'starting'}"
        if progress and msg != shown:
            progress(msg)
            shown = msg
        if len(ready) == len(rows) and api_ok:
            cluster.write_kubeconfig()
            return rows
        if time.monotonic() > deadline:
            raise ClusterError(f"cluster not ready after {timeout:.0f}s ({msg}); see "
                               f"{cluster.state_dir}/logs/")
        await asyncio.sleep(0.1)


async def wait_nodes_ready(cluster: Cluster, count: int, timeout: float,
                           progress=None) -> None:
    """Until `count` Nodes report Ready (the workers have registered and heartbeat)."""
    deadline = time.monotonic() + timeout
    shown = None
    while True:
        nodes = await api_get(cluster, "/api/v1/nodes")
        ready = sum(1 for n in (nodes or {}).get("items", [])
                    if any(c.get("type") == "Ready" and c.get("status") == "True"
                           for c in (n.get("status") or {}).get("conditions") or []))
        msg = f"nodes ready: {ready}/{count}"
        if progress and msg != shown:
            progress(msg)
            shown = msg
        if ready >= count:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"nodes not ready after {timeout:.0f}s ({msg}); see "
                               f"{cluster.state_dir}/logs/")
        await asyncio.sleep(0.1)


def cmd_up(args) -> int:
    sd = _state_dir(args)
    cluster = Cluster(sd)
    t0 = time.monotonic()
    if not cluster.components:
        cluster = Cluster.create(sd, stores=args.stores, port_offset=args.port_offset,
                                 network=args.network, time_scale=args.time_scale,
                                 hollow_workers=args.hollow_workers,
                                 replicas=args.control_plane_replicas, workers=args.workers)
        print(f"creating cluster in {cluster.state_dir}")
    else:
        print(f"starting existing cluster in {cluster.state_dir}")
    # the store and the API server first; every other component talks to the API server
    core = [c for c in cluster.components.values() if c.kind in ("store", "apiserver")]
    rest = [c for c in cluster.components.values() if c not in core]
    for comp in core:
        pid = cluster.start(comp.name)
        print(f"  started {comp.name} (pid {pid}) on {comp.client_url}")
    rows = asyncio.run(wait_ready(cluster, args.timeout, progress=lambda m: print("  " + m)))
    for comp in rest:
        pid = cluster.start(comp.name)
        print(f"  started {comp.name} (pid {pid}) on {comp.client_url}")
    if cluster.workers:
        asyncio.run(wait_nodes_ready(cluster, len(cluster.workers), args.timeout,
                                     progress=lambda m: print("  " + m)))
    leader = next((r["name"] for r in rows if r.get("role") == "leader"), "?")
    print(f"cluster ready in {time.monotonic() - t0:.1f}s; store leader: {leader}")
    eps = ",".join(cluster.store_endpoints())
    if cluster.kubeconfig_path.exists():
        print()
        print(f"  export KUBECONFIG={cluster.kubeconfig_path}")
        print("  kubectl get namespaces")
    print()
    print("Try:")
    print(f"  ETCDCTL_API=3 etcdctl --endpoints {eps} put hello world")
    print(f"  ETCDCTL_API=3 etcdctl --endpoints {eps} endpoint status -w table")
    print(f"  kubelab status --state-dir {cluster.state_dir}")
    print(f"  kubelab kill {leader} --state-dir {cluster.state_dir}   # and watch quorum hold")
    return 0


def cmd_status(args) -> int:
    cluster = _existing(args)
    rows = asyncio.run(store_status(cluster))
    api = asyncio.run(apiserver_status(cluster))
    others = asyncio.run(components_status(cluster))
    if args.output == "json":
        print(json.dumps({"stateDir": str(cluster.state_dir), "stores": rows, "apiserver": api,
                          "components": others}, indent=2))
    else:
        _print_status(cluster, rows)
        if api is not None:
            print(f"apiserver: {api['state']}, {'ready' if api['ready'] else 'NOT ready'} "
                  f"(pid {api['pid'] or '-'}, {api['address']}"
                  + (f"; {api.get('detail')}" if not api['ready'] and api.get('detail') else "")
                  + ")")
            if cluster.kubeconfig_path.exists():
                print(f"kubeconfig: {cluster.kubeconfig_path}")
        for r in others:
            if r["name"] == "nodes":
                print(f"nodes: {r['ready']}/{r['total']} Ready")
                continue
            lead = ""
            if "leader" in r:
                lead = f"; leader: {r['leader'] or 'none'}"
            print(f"{r['name']}: {r['state']} (pid {r['pid'] or '-'}, {r['address']}{lead})")
    return 0


def _existing(args) -> Cluster:
    cluster = Cluster(_state_dir(args))
    if not cluster.components:
        raise ClusterError(f"no cluster in {cluster.state_dir} (run kubelab up first)")
    return cluster


def cmd_component(args) -> int:
    cluster = _existing(args)
    cluster.component(args.component)
    if args.cmd == "start":
        pid = cluster.start(args.component)
        print(f"{args.component} started (pid {pid})")
    elif args.cmd == "stop":
        cluster.stop(args.component)
        print(f"{args.component} stopped")
    elif args.cmd == "kill":
        pid = cluster.pid(args.component)
        cluster.kill(args.component)
        print(f"{args.component} killed" + (f" (pid {pid})" if pid else " (was not running)"))
    return 0


def cmd_logs(args) -> int:
    cluster = _existing(args)
    cluster.component(args.component)
    path = cluster.log_path(args.component)
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        sys.stdout.buffer.write(f.read())
        sys.stdout.flush()
        while args.follow:
            chunk = f.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    return 0


def cmd_down(args) -> int:
    cluster = Cluster(_state_dir(args))
    existed = cluster.state_dir.exists()
    cluster.down()
    print(f"cluster in {cluster.state_dir} removed" if existed else
          f"no cluster in {cluster.state_dir}")
    return 0


def cmd_chaos(args) -> int:
    from kubelab import chaos
    cluster = _existing(args)
    if args.scenario not in chaos.names():
        raise ClusterError(f"no chaos scenario {args.scenario!r}; scenarios: "
                           f"{', '.join(chaos.names())}")
    return chaos.run(args.scenario, cluster, args.seed, args.record)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubelab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="cluster state directory (default ~/.kubelab/NAME)")
    common.add_argument("--name", default="default", help="cluster name (default: default)")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", parents=[common], help="create or restart a cluster")
    up.add_argument("--stores", type=int, default=3)
    up.add_argument("--port-offset", type=int, default=0,
                    help="shift every port (run several clusters side by side)")
    up.add_argument("--network", default="auto", choices=["auto", "loopback", "netns"])
    up.add_argument("--time-scale", type=float, default=1.0,
                    help="multiply Kubernetes' timers (0.1 = ten times faster)")
    up.add_argument("--control-plane-replicas", type=int, default=1,
                    help="controller managers and schedulers to run (one leads, via a Lease)")
    up.add_argument("--workers", type=int, default=0,
                    help="worker nodes that run pods (node agent + proxy each)")
    up.add_argument("--hollow-workers", type=int, default=0,
                    help="simulated nodes that run pods without processes (like kubemark)")
    up.add_argument("--timeout", type=float, default=30.0)
    up.set_defaults(fn=cmd_up)
    st = sub.add_parser("status", parents=[common], help="components, store roles, quorum")
    st.add_argument("-o", "--output", choices=["table", "json"], default="table")
    st.set_defaults(fn=cmd_status)
    for verb in ("start", "stop", "kill"):
        s = sub.add_parser(verb, parents=[common], help=f"{verb} one component")
        s.add_argument("component")
        s.set_defaults(fn=cmd_component)
    lg = sub.add_parser("logs", parents=[common], help="print a component's log")
    lg.add_argument("component")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.set_defaults(fn=cmd_logs)
    dn = sub.add_parser("down", parents=[common], help="stop everything and remove the state")
    dn.set_defaults(fn=cmd_down)
    ch = sub.add_parser("chaos", parents=[common], help="run a chaos scenario (a verdict and an "
                        "exit code)")
    ch.add_argument("scenario", help="quorum, store-linearizability, control-plane, "
                    "worker-loss, pod-chaos, partition, latency")
    ch.add_argument("--seed", type=int, default=None, help="replay a run with its seed")
    ch.add_argument("--record", default=None, help="write the timeline and verdict as JSON")
    ch.set_defaults(fn=cmd_chaos)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.fn(args))
    except ClusterError as e:
        print(f"kubelab: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
