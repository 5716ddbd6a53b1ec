"""`kubelab`: bring a cluster up, look at it, break it, take it down.

    kubelab up [--state-dir DIR] [--stores 3] [--workers N] [--port-offset N]
               [--network auto|netns|loopback]
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
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .cluster import CLUSTER_DOMAIN, Cluster, ClusterError, Component, default_state_dir
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
            if comp.netns:
                row["netns"] = comp.netns
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
    netns = cluster.network == "netns"
    if netns:
        hdr.append("NETNS")
    table = [hdr]
    for r in rows:
        table.append([r["name"], r["state"], str(r["pid"] or "-"), r["address"],
                      "unreachable" if r.get("partitioned") and "role" not in r else
                      r.get("role", r.get("error", "-") if r["state"] == "up" else "-"),
                      str(r.get("term", "-")), str(r.get("commit_index", "-")),
                      str(r.get("applied_index", "-")), str(r.get("revision", "-"))]
                     + ([_netns_cell(r)] if netns else []))
    widths = [max(len(row[i]) for row in table) for i in range(len(hdr))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    # a partitioned member runs but takes no part in the quorum
    cut = [r["name"] for r in rows if r["state"] == "up" and r.get("partitioned")]
    up = sum(1 for r in rows if r["state"] == "up" and not r.get("partitioned"))
    leaders = [r["name"] for r in rows if r.get("role") == "leader" and not r.get("partitioned")]
    need = len(rows) // 2 + 1
    counts = f"{up}/{len(rows)} members up" + (f", {len(cut)} partitioned ({', '.join(cut)})"
                                                if cut else "")
    print()
    if leaders and up >= need:
        print(f"store quorum: ok ({counts}, {need} needed; leader {leaders[0]})")
    else:
        print(f"WARNING: store quorum lost ({counts}, {need} needed): "
              "writes fail with 'etcdserver: no leader' until members return")


def _netns_cell(row: dict) -> str:
    ns = row.get("netns") or "-"
    return ns + (" (PARTITIONED)" if row.get("partitioned") else "")


def _mark_partitions(cluster: Cluster, rows: list[dict]) -> None:
    """netns form: flag machines whose link is cut (kubelab.netns.partition)."""
    if cluster.network != "netns":
        return
    from . import netns as kn
    for r in rows:
        ns = r.get("netns")
        if ns and kn.netns_exists(ns):
            try:
                r["partitioned"] = kn.is_partitioned(ns)
            except Exception as e:  # noqa: BLE001 - status never fails on this
                r["partitioned_error"] = str(e)


async def apiservers_status(cluster: Cluster) -> list[dict]:
    """apiserver_status of every API server, in their order."""
    return list(await asyncio.gather(*(apiserver_status(cluster, a)
                                       for a in cluster.apiservers)))


async def apiserver_status(cluster: Cluster, api: Component, timeout: float = 1.0) -> dict:
    """GET /readyz on an API server with the admin token."""
    row = {"name": api.name, "pid": cluster.pid(api.name), "address": api.client_url,
           "state": "down", "ready": False}
    if api.netns:
        row["netns"] = api.netns
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
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.get(api.client_url + "/readyz", ssl=ctx,
                      headers={"Authorization": f"Bearer {token}"}) as r:
            row["ready"] = r.status == 200
            row["detail"] = (await r.text()).strip()[:80]
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        row["detail"] = type(e).__name__
    return row


async def api_get(cluster: Cluster, path: str, timeout: float = 2.0) -> dict | None:
    """GET a path on a running API server as admin; None when it does not answer."""
    api = next((a for a in cluster.apiservers if cluster.pid(a.name) is not None), None)
    if api is None:
        return None
    import ssl

    import aiohttp
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.get(api.client_url + path, ssl=ctx, headers={
                    "Authorization": f"Bearer {cluster.admin_token()}"}) as r:
            if r.status != 200:
                return None
            return await r.json()
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
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
        if comp.netns:
            row["netns"] = comp.netns
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
        listening = await asyncio.gather(*(_accepts(c.client_url) for c in cluster.stores))
        if all(listening):
            rows = await store_status(cluster)
        else:  # not all serving yet: no gRPC status calls (and their timeouts) until they are
            rows = [{"name": c.name} for c in cluster.stores]
        ready = [r for r in rows if r.get("healthy")]
        msg = f"stores ready: {len(ready)}/{len(rows)}"
        api_ok = True
        if cluster.apiservers:
            apis = await apiservers_status(cluster)
            api_ok = all(a["ready"] for a in apis)
            if len(apis) == 1:
                msg += f", apiserver {'ready' if api_ok else 'starting'}"
            else:
                msg += f", apiservers ready: {sum(bool(a['ready']) for a in apis)}/{len(apis)}"
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


async def _accepts(url: str, timeout: float = 0.3) -> bool:
    """Whether something accepts TCP connections at the URL's host:port."""
    hostport = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (OSError, ValueError, TimeoutError):
        return False
    w.close()
    return True


def _heartbeat_after(cond: dict, since: float | None) -> bool:
    if since is None:
        return True
    from datetime import datetime
    try:
        t = datetime.fromisoformat(cond.get("lastHeartbeatTime", ""))
    except ValueError:
        return False
    return t.timestamp() >= since - 1.0  # RFC 3339 seconds


async def wait_nodes_ready(cluster: Cluster, count: int, timeout: float,
                           progress=None, since: float | None = None) -> None:
    """Until `count` Nodes report Ready (the workers have registered and heartbeat) — with
    `since` (a wall-clock time), Ready as reported by a node agent after that time, not a
    stale status left from before a restart."""
    deadline = time.monotonic() + timeout
    shown = None
    while True:
        nodes = await api_get(cluster, "/api/v1/nodes")
        ready = sum(1 for n in (nodes or {}).get("items", [])
                    if any(c.get("type") == "Ready" and c.get("status") == "True"
                           and _heartbeat_after(c, since)
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


DNS_PROBE_NAME = f"kubernetes.default.svc.{CLUSTER_DOMAIN}"


def proxy_running(cluster: Cluster, worker: str) -> bool:
    """Whether the worker's node agent has its proxy child (same process group) running."""
    pid = cluster.pid(worker)
    if pid is None:
        return False
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if int((d / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pid:
                continue
            if b"-m\0proxy\0" in (d / "cmdline").read_bytes():
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def dns_query_argv(cluster: Cluster, worker: str, name: str = DNS_PROBE_NAME) -> list[str]:
    """A one-shot A query for `name` against the cluster DNS as seen from the worker (inside
    its namespace in the netns form)."""
    dns = cluster.settings.get("cluster_dns", cluster.plan.cluster_dns)
    port = str(cluster.settings.get("dns_port", 53))
    if shutil.which("dig"):
        argv = ["dig", "+short", "+time=1", "+tries=1", f"@{dns}", "-p", port, name, "A"]
    else:
        code = ("import sys,socket\nfrom dnslib import DNSRecord\n"
                "q=DNSRecord.question(sys.argv[3])\n"
                "r=DNSRecord.parse(q.send(sys.argv[1],int(sys.argv[2]),timeout=1))\n"
                "print('\\n'.join(str(a.rdata) for a in r.rr))")
        argv = [sys.executable, "-c", code, dns, port, name]
    comp = cluster.component(worker)
    if comp.netns:
        from . import netns as kn
        argv = kn.wrap(argv, comp.netns)
    return argv


async def dns_answer(cluster: Cluster, worker: str, name: str = DNS_PROBE_NAME) -> list[str]:
    """The addresses the cluster DNS answers for `name` from the worker ([] when none)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *dns_query_argv(cluster, worker, name), stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), 5)
    except (TimeoutError, OSError):
        return []
    if proc.returncode != 0:
        return []
    return [w for w in out.decode().split() if w[:1].isdigit()]


async def wait_dns(cluster: Cluster, timeout: float, progress=None) -> str:
    """Until the cluster DNS answers on every worker whose proxy runs. Returns a summary."""
    deadline = time.monotonic() + timeout
    workers = [w.name for w in cluster.workers]
    # the agent starts its proxy child before it registers the Node: give it a moment
    while True:
        running = [w for w in workers if proxy_running(cluster, w)]
        if len(running) == len(workers) or time.monotonic() > deadline - timeout + 2:
            break
        await asyncio.sleep(0.1)
    if not running:
        return "cluster DNS not checked (no proxy running on the workers)"
    shown = None
    while True:
        answers = await asyncio.gather(*(dns_answer(cluster, w) for w in running))
        ok = sum(1 for a in answers if a)
        msg = f"cluster DNS answering: {ok}/{len(running)} workers"
        if progress and msg != shown:
            progress(msg)
            shown = msg
        if ok == len(running):
            ip = next(a[0] for a in answers if a)
            return (f"cluster DNS {cluster.settings.get('cluster_dns')} answers "
                    f"{DNS_PROBE_NAME} = {ip}")
        if time.monotonic() > deadline:
            raise ClusterError(f"the cluster DNS does not answer after {timeout:.0f}s ({msg}); "
                               f"see {cluster.state_dir}/logs/worker-*.log")
        await asyncio.sleep(0.1)


def cmd_up(args) -> int:
    sd = _state_dir(args)
    cluster = Cluster(sd)
    t0 = time.monotonic()
    since = time.time()
    say = (lambda m: print(m, flush=True))
    if not cluster.components:
        cluster = Cluster.create(sd, stores=args.stores, port_offset=args.port_offset,
                                 network=args.network, time_scale=args.time_scale,
                                 hollow_workers=args.hollow_workers,
                                 replicas=args.control_plane_replicas, workers=args.workers,
                                 apiservers=args.apiservers)
        say(f"creating cluster in {cluster.state_dir}")
    else:
        say(f"starting existing cluster in {cluster.state_dir}")
    if cluster.network == "netns":
        cluster.ensure_network()
        say(f"  network: netns — every machine in its own network namespace on bridge "
            f"{cluster.settings['bridge']} (172.30.0.0/24, host 172.30.0.1)")
    else:
        say("  network: loopback — every address is a local 127.x address"
            + ("" if args.network == "loopback" else
               " (netns form needs root, `ip netns` and a free 172.30.0.0/24)"))
    # everything at once: the components wait for the API server (and it for the store)
    # while the others load; the store members and the API server go first
    order = sorted(cluster.components.values(),
                   key=lambda c: {"store": 0, "apiserver": 1}.get(c.kind, 2))
    for comp in order:
        pid = cluster.start(comp.name)
        where = comp.client_url + (f" in netns {comp.netns}" if comp.netns else "")
        say(f"  started {comp.name} (pid {pid}) on {where}")
    rows = asyncio.run(wait_ready(cluster, args.timeout, progress=lambda m: say("  " + m)))
    dns = None
    if cluster.workers:
        asyncio.run(wait_nodes_ready(cluster, len(cluster.workers), args.timeout,
                                     progress=lambda m: say("  " + m), since=since))
        dns = asyncio.run(wait_dns(cluster, args.timeout, progress=lambda m: say("  " + m)))
    leader = next((r["name"] for r in rows if r.get("role") == "leader"), "?")
    say(f"cluster ready in {time.monotonic() - t0:.1f}s; store leader: {leader}")
    if dns:
        say(dns)
    eps = ",".join(cluster.store_endpoints())
    sdir = cluster.state_dir
    if cluster.kubeconfig_path.exists():
        print()
        print(f"  export KUBECONFIG={cluster.kubeconfig_path}")
        print("  kubectl get nodes -o wide" if cluster.workers else "  kubectl get namespaces")
    print()
    print("Try:")
    if cluster.workers:
        w = cluster.workers[0]
        dns = cluster.settings["cluster_dns"]
        port = cluster.settings.get("dns_port", 53)
        print("  kubectl create deployment web --image nginx --replicas 3")
        print("  kubectl expose deployment web --port 80 --type NodePort")
        print("  kubectl get pods -o wide"
              + ("   # pod IPs 10.244.N.x, reachable from this host" if w.netns else ""))
        print(f"  dig +short @{dns}" + (f" -p {port}" if port != 53 else "")
              + " web.default.svc.cluster.local   # the cluster DNS")
        print("  curl -s http://$(kubectl get svc web -o jsonpath='{.spec.clusterIP}')/"
              "   # the Service VIP")
        print(f"  curl -s http://{w.address}:"
              "$(kubectl get svc web -o jsonpath='{.spec.ports[0].nodePort}')/   # a NodePort")
        if w.netns:
            print(f"  ip netns exec {w.netns} ip -br addr   # inside the worker-1 machine")
    print(f"  ETCDCTL_API=3 etcdctl --endpoints {eps} put hello world")
    print(f"  ETCDCTL_API=3 etcdctl --endpoints {eps} endpoint status -w table")
    print(f"  kubelab status --state-dir {sdir}")
    print(f"  kubelab kill {leader} --state-dir {sdir}   # and watch quorum hold")
    if cluster.network == "netns":
        print(f"  kubelab chaos partition --state-dir {sdir}   # cut a machine off the network")
    return 0


def cmd_status(args) -> int:
    cluster = _existing(args)
    rows = asyncio.run(store_status(cluster))
    apis = asyncio.run(apiservers_status(cluster))
    api = apis[0] if apis else None
    others = asyncio.run(components_status(cluster))
    _mark_partitions(cluster, rows + apis + others)
    if args.output == "json":
        net = {"network": cluster.network}
        if cluster.network == "netns":
            net.update(bridge=cluster.settings.get("bridge"),
                       machineCIDR=cluster.settings.get("machine_cidr"))
        print(json.dumps({"stateDir": str(cluster.state_dir), **net, "stores": rows,
                          "apiserver": api, "apiservers": apis, "components": others},
                         indent=2))
    else:
        if cluster.network == "netns":
            print(f"network: netns (bridge {cluster.settings.get('bridge')}, "
                  f"{cluster.settings.get('machine_cidr')}, host {cluster.settings.get('host_ip')})")
            print()
        _print_status(cluster, rows)

        def where(r: dict) -> str:
            ns = f", netns {_netns_cell(r)}" if r.get("netns") else ""
            return f"pid {r['pid'] or '-'}, {r['address']}{ns}"
        for a in apis:
            print(f"{a['name']}: {a['state']}, {'ready' if a['ready'] else 'NOT ready'} "
                  f"({where(a)}"
                  + (f"; {a.get('detail')}" if not a['ready'] and a.get('detail') else "")
                  + ")")
        if api is not None:
            if cluster.kubeconfig_path.exists():
                print(f"kubeconfig: {cluster.kubeconfig_path}")
        for r in others:
            if r["name"] == "nodes":
                print(f"nodes: {r['ready']}/{r['total']} Ready")
                continue
            lead = ""
            if "leader" in r:
                lead = f"; leader: {r['leader'] or 'none'}"
            print(f"{r['name']}: {r['state']} ({where(r)}{lead})")
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
    up.add_argument("--apiservers", type=int, default=1,
                    help="API servers (apiserver, apiserver-2, ...; components fail over "
                         "between them)")
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
