"""Cluster start-up time, idle cost and recovery times (chaos scenarios), as one table.

    .venv/bin/python bench/cluster_bench.py [--network loopback|netns|both] [--workers 3]
                                            [--chaos quorum,worker-loss,control-plane]
                                            [--up-repeat N] [--wait-netns S]
                                            [--idle-seconds 10] [--seed 1] [--quick]
                                            [--json FILE]
    KUBELAB_BENCH_COMPOSE=1 .venv/bin/python bench/cluster_bench.py ...   # + docker compose

For each network form asked for (`both`, the default: loopback always, netns when this process
is root, `ip netns` works and 172.30.0.0/24 is free — `--wait-netns S` waits for it — otherwise
the row says why it was skipped):

- start-up: runs `python -m kubelab up --stores 3 --workers 3 --state-dir <tmp> --network F`
  and times it from invocation to (a) the stores and API server ready, (b) every Node Ready,
  (c) the cluster DNS answering kubernetes.default.svc.cluster.local on every worker (`kubelab
  up` waits for all three; their progress lines are timestamped as they appear) and (d) the
  command's exit (`--up-repeat N`: N start-ups, each on a fresh state dir, min/median/max of
  the time to every node Ready). The DNS answer is then checked once more with a query on the
  cluster DNS address from cluster.settings (in the loopback form every cluster on the host shares
  127.96.0.10:53 through SO_REUSEPORT, so another cluster's proxy may answer);
- idle cost: after a settle period, CPU (% of one core) over --idle-seconds and RSS of the whole
  cluster — every component's process tree plus anything else whose command line names the
  state dir — and per component.

Recovery (loopback cluster): `python -m kubelab chaos <scenario> --state-dir D --seed N
--record F.json` and the metrics it records — quorum: store leader election after kill -9 of
the leader, recovery after quorum loss, write availability; worker-loss and control-plane
run on a second cluster started with `--time-scale` (default 0.1: Kubernetes' timers — node
monitor grace 40 s, NoExecute toleration 300 s, lease 15 s — run 10x faster; the figures are
reported as measured, with the scale next to them) and `--control-plane-replicas 2`.

With KUBELAB_BENCH_COMPOSE=1 and docker-compose installed and the images built: `docker-compose
up -d --no-build` (BASE_IMAGE=kubelab/base:bookworm) from the repo root, timed until `kubectl
--kubeconfig kubeconfig/config get nodes` shows 3 Ready, then `docker-compose down -v`. Never
while a netns cluster runs (both use 172.30.0.0/24; checked).

Targets (issue 8): native up ≤ 10 s, compose up ≤ 30 s (images built), store leader election
≤ 2 s. The machine may be shared: the load average is printed with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from procstat import descendants, processes

from kubelab.cli import DNS_PROBE_NAME, dns_answer
from kubelab.cluster import Cluster, machine_network_users, netns_available

PY = sys.executable
TARGETS = {"native": 10.0, "compose": 30.0, "election": 2.0}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---------------------------------------------------------------------------- /proc accounting
def cluster_sample(cluster: Cluster) -> dict[str, dict[int, tuple[float, float]]]:
    """component -> {pid: (cpu s, rss MB)} over every process of the cluster."""
    procs = processes()
    owned: set[int] = set()
    res: dict[str, dict[int, tuple[float, float]]] = {}
    for name in cluster.components:
        pid = cluster.pid(name)
        tree = descendants(procs, {pid}) if pid else set()
        res[name] = {p: (procs[p][2], procs[p][3]) for p in tree}
        owned |= tree
    marker = str(cluster.state_dir).encode() + b"/"
    strays = {p for p, (_pp, cmd, *_r) in procs.items() if marker in cmd} - owned
    strays = descendants(procs, strays) - owned
    res["(shims, pods)"] = {p: (procs[p][2], procs[p][3]) for p in strays}
    return res


def idle_cost(cluster: Cluster, seconds: float) -> dict:
    before = cluster_sample(cluster)
    t = time.monotonic()
    time.sleep(seconds)
    after = cluster_sample(cluster)
    dt = time.monotonic() - t
    comps = {}
    for name, now in after.items():
        was = before.get(name, {})
        cpu = sum(c - was.get(p, (c, 0))[0] for p, (c, _r) in now.items())
        comps[name] = {"cpu_pct": round(100 * cpu / dt, 1),
                       "rss_mb": round(sum(r for _c, r in now.values()), 1),
                       "procs": len(now)}
    return {"seconds": round(dt, 1),
            "cpu_pct": round(sum(v["cpu_pct"] for v in comps.values()), 1),
            "rss_mb": round(sum(v["rss_mb"] for v in comps.values()), 1),
            "procs": sum(v["procs"] for v in comps.values()),
            "components": comps, "loadavg": loadavg()}


# ---------------------------------------------------------------------------- start-up
def kubelab(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "kubelab", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False, **kw)


def timed_up(state_dir: Path, network: str, workers: int, stores: int, port_offset: int,
             time_scale: float = 1.0, replicas: int = 1, timeout: float = 90) -> dict:
    """`kubelab up`, its progress lines timestamped as they appear."""
    argv = [PY, "-m", "kubelab", "up", "--stores", str(stores), "--workers", str(workers),
            "--state-dir", str(state_dir), "--port-offset", str(port_offset),
            "--network", network, "--timeout", str(timeout), "--time-scale", str(time_scale),
            "--control-plane-replicas", str(replicas)]
    load = loadavg()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    marks: dict[str, float] = {}
    lines = []
    for line in proc.stdout:
        t = time.monotonic() - t0
        lines.append(line.rstrip())
        if "apiserver ready" in line and re.search(rf"stores ready: {stores}/{stores}", line):
            marks.setdefault("control_plane_s", t)
        elif f"nodes ready: {workers}/{workers}" in line:
            marks.setdefault("nodes_ready_s", t)
        elif "cluster DNS answering" in line and f"{workers}/{workers}" in line:
            marks.setdefault("dns_s", t)
        elif line.startswith("cluster ready in"):
            marks.setdefault("ready_line_s", t)
    rc = proc.wait()
    total = time.monotonic() - t0
    res = {"network": network, "rc": rc, "total_s": round(total, 2), "loadavg": load,
           **{k: round(v, 2) for k, v in marks.items()}}
    if rc != 0:
        res["error"] = "\n".join(lines[-5:])
    dns_line = next((ln for ln in lines if ln.startswith("cluster DNS ")), "")
    res["dns_line"] = dns_line
    if "dns_s" not in res and dns_line and workers:
        res["dns_s"] = res.get("ready_line_s", res["total_s"])
    return res


def check_dns(cluster: Cluster) -> str:
    if not cluster.workers:
        return "no workers"
    t = time.monotonic()
    ans = asyncio.run(dns_answer(cluster, cluster.workers[0].name))
    dns = cluster.settings.get("cluster_dns")
    port = cluster.settings.get("dns_port")
    ms = (time.monotonic() - t) * 1000
    return (f"{DNS_PROBE_NAME} @{dns}:{port} -> {', '.join(ans)} ({ms:.0f} ms incl. dig)"
            if ans else f"no answer from {dns}:{port}")


# ---------------------------------------------------------------------------- chaos
def chaos(state_dir: Path, scenario: str, seed: int, out_dir: Path) -> dict:
    rec = out_dir / f"chaos-{scenario}.json"
    load = loadavg()
    t = time.monotonic()
    p = kubelab("chaos", scenario, "--state-dir", str(state_dir), "--seed", str(seed),
                "--record", str(rec), timeout=900)
    res = {"scenario": scenario, "rc": p.returncode, "wall_s": round(time.monotonic() - t, 1),
           "loadavg": load}
    verdict = next((ln for ln in p.stdout.splitlines() if ln.startswith("VERDICT")), "")
    res["verdict"] = verdict or (p.stdout + p.stderr).strip().splitlines()[-1:]
    try:
        data = json.loads(rec.read_text())
        res["metrics"] = data.get("metrics", {})
        res["passed"] = data.get("passed")
    except (OSError, ValueError):
        res["metrics"] = {}
        res["passed"] = False
    return res


# ---------------------------------------------------------------------------- compose
def compose(timeout: float = 180) -> dict:
    if os.environ.get("KUBELAB_BENCH_COMPOSE") != "1":
        return {"skipped": "set KUBELAB_BENCH_COMPOSE=1 to measure"}
    dc = shutil.which("docker-compose")
    if not dc:
        return {"skipped": "docker-compose not installed"}
    img = subprocess.run(["docker", "image", "inspect", "kubelab/kubelab:dev"],
                         capture_output=True, check=False)
    if img.returncode != 0:
        return {"skipped": "image kubelab/kubelab:dev not built (BASE_IMAGE=kubelab/base:"
                           "bookworm docker-compose build)"}
    users = machine_network_users()
    if users:
        return {"skipped": f"172.30.0.0/24 in use on this host ({', '.join(sorted(users))}):"
                           " a netns cluster or a compose network runs"}
    ps = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}", "--filter",
                         "ancestor=kubelab/kubelab:dev"], capture_output=True, text=True,
                        check=False)
    if ps.stdout.strip():
        return {"skipped": "kubelab containers exist (another compose cluster: "
                           f"{', '.join(ps.stdout.split()[:3])})"}
    env = dict(os.environ, BASE_IMAGE="kubelab/base:bookworm")
    kubeconfig = ROOT / "kubeconfig" / "config"
    load = loadavg()
    t0 = time.monotonic()
    res: dict = {"loadavg": load}
    try:
        up = subprocess.run([dc, "up", "-d", "--no-build"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False, timeout=timeout)
        res["compose_up_returned_s"] = round(time.monotonic() - t0, 2)
        if up.returncode != 0:
            res["error"] = (up.stderr or up.stdout).strip().splitlines()[-3:]
            return res
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            g = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", "nodes",
                                "-o", "json", "--request-timeout=2s"], capture_output=True,
                               text=True, check=False)
            if g.returncode == 0:
                try:
                    items = json.loads(g.stdout).get("items", [])
                except ValueError:
                    items = []
                ready = sum(1 for n in items if any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (n.get("status") or {}).get("conditions") or []))
                if ready >= 3:
                    res["nodes_ready_s"] = round(time.monotonic() - t0, 2)
                    break
            time.sleep(0.25)
        else:
            res["error"] = f"3 nodes not Ready after {timeout:.0f}s"
        return res
    finally:
        d = subprocess.run([dc, "down", "-v"], cwd=ROOT, env=env, capture_output=True,
                           text=True, check=False, timeout=180)
        res["down_rc"] = d.returncode


# ---------------------------------------------------------------------------- the run
def netns_reason() -> str | None:
    ok, why = netns_available()
    if not ok:
        return why
    users = machine_network_users()
    if users:
        return (f"172.30.0.0/24 already in use on this host ({', '.join(sorted(set(users)))}): "
                "another netns cluster or the compose network")
    return None


def run(args) -> dict:
    out_dir = Path(tempfile.mkdtemp(prefix="kubelab-clusterbench-"))
    results: dict = {"cpus": os.cpu_count(), "workers": args.workers, "stores": args.stores,
                     "up": {}, "idle": {}, "dns": {}, "chaos": [], "skipped": {}}
    forms = ["loopback", "netns"] if args.network == "both" else [args.network]
    for form in forms:
        if form == "netns":
            why = netns_reason()
            deadline = time.monotonic() + args.wait_netns
            if why and "in use" in why and args.wait_netns:
                print(f"netns form: waiting up to {args.wait_netns:.0f} s ({why})", flush=True)
            while why and "in use" in why and time.monotonic() < deadline:
                time.sleep(2)
                why = netns_reason()
            if why:
                results["skipped"]["netns"] = why
                print(f"netns form skipped: {why}", flush=True)
                continue
        sd = out_dir / f"cluster-{form}"
        off = random.randrange(38000, 42000, 10) if form == "loopback" else 0
        print(f"[{form}] kubelab up --stores {args.stores} --workers {args.workers} ...",
              flush=True)
        ups = []
        for i in range(args.up_repeat):  # extra start-ups, each on a fresh state dir
            if i < args.up_repeat - 1:
                extra = out_dir / f"cluster-{form}-{i}"
                ups.append(timed_up(extra, form, args.workers, args.stores, off,
                                    timeout=args.timeout))
                print(f"[{form}]   {ups[-1]}", flush=True)
                Cluster(extra).down()
        up = timed_up(sd, form, args.workers, args.stores, off, timeout=args.timeout)
        ups.append(up)
        results["up"][form] = up
        print(f"[{form}]   {up}", flush=True)
        if len(ups) > 1:
            ok = [u for u in ups if u["rc"] == 0]
            results.setdefault("up_repeats", {})[form] = {
                k: sorted(u.get(k) for u in ok if u.get(k) is not None)
                for k in ("control_plane_s", "nodes_ready_s", "dns_s", "total_s")}
            results["up_repeats"][form]["loadavg"] = [u["loadavg"] for u in ups]
        cluster = Cluster(sd)
        try:
            if up["rc"] == 0:
                results["dns"][form] = check_dns(cluster)
                time.sleep(args.settle)
                print(f"[{form}] idle for {args.idle_seconds:.0f} s ...", flush=True)
                results["idle"][form] = idle_cost(cluster, args.idle_seconds)
                if form == "loopback" and "quorum" in args.chaos:
                    print(f"[{form}] chaos quorum ...", flush=True)
                    results["chaos"].append(chaos(sd, "quorum", args.seed, out_dir))
        finally:
            cluster.down()
    scaled = [s for s in args.chaos if s in ("worker-loss", "control-plane")]
    if scaled:
        sd = out_dir / "cluster-scaled"
        print(f"[scaled] kubelab up --time-scale {args.time_scale} --control-plane-replicas 2 "
              "...", flush=True)
        up = timed_up(sd, "loopback", args.workers, args.stores,
                      random.randrange(42000, 46000, 10), time_scale=args.time_scale,
                      replicas=2, timeout=args.timeout)
        results["up"]["scaled"] = up
        cluster = Cluster(sd)
        try:
            if up["rc"] == 0:
                for s in scaled:
                    print(f"[scaled] chaos {s} ...", flush=True)
                    r = chaos(sd, s, args.seed, out_dir)
                    r["time_scale"] = args.time_scale
                    results["chaos"].append(r)
        finally:
            cluster.down()
    results["compose"] = ({"skipped": "--no-compose"} if args.no_compose or args.quick
                          else compose())
    shutil.rmtree(out_dir, ignore_errors=True)
    return results


def _f(v, unit="s") -> str:
    return "-" if v is None else f"{v:.1f} {unit}" if isinstance(v, float) else str(v)


def table(res: dict) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for form, up in res["up"].items():
        if form == "scaled":
            continue
        where = f"{res['stores']} stores + {res['workers']} workers, {form}"
        if up["rc"] != 0:
            rows.append((f"kubelab up ({where})", "FAILED: " + up.get("error", "")[-80:],
                         "≤ 10 s", up["loadavg"]))
            continue
        rows.append((f"kubelab up → API ready ({where})", _f(up.get("control_plane_s")), "",
                     up["loadavg"]))
        rows.append((f"kubelab up → all nodes Ready ({where})", _f(up.get("nodes_ready_s")),
                     "≤ 10 s", up["loadavg"]))
        rows.append((f"kubelab up → cluster DNS answers ({where})", _f(up.get("dns_s")), "",
                     up["loadavg"]))
        rows.append((f"kubelab up, command exits ({where})", _f(up["total_s"]), "≤ 10 s",
                     up["loadavg"]))
        rep = (res.get("up_repeats") or {}).get(form)
        if rep and rep["nodes_ready_s"]:
            xs = rep["nodes_ready_s"]
            rows.append((f"kubelab up → all nodes Ready, {len(xs)} runs min/median/max ({form})",
                         f"{xs[0]:.1f} / {xs[len(xs) // 2]:.1f} / {xs[-1]:.1f} s", "≤ 10 s",
                         " | ".join(ld.split()[0] for ld in rep["loadavg"])))
        idle = res["idle"].get(form)
        if idle:
            rows.append((f"idle CPU, whole cluster ({form}, {idle['seconds']:.0f} s)",
                         f"{idle['cpu_pct']:.1f} % of one core", "", idle["loadavg"]))
            rows.append((f"RSS, whole cluster ({form}, {idle['procs']} processes)",
                         f"{idle['rss_mb']:.0f} MB", "", idle["loadavg"]))
    for form, why in res["skipped"].items():
        rows.append((f"kubelab up ({form})", f"skipped: {why}", "≤ 10 s", ""))
    c = res.get("compose") or {}
    if "nodes_ready_s" in c:
        rows.append(("docker-compose up -d → 3 nodes Ready (images built)",
                     _f(c["nodes_ready_s"]), "≤ 30 s", c["loadavg"]))
    else:
        rows.append(("docker-compose up -d → 3 nodes Ready (images built)",
                     "skipped: " + c["skipped"] if "skipped" in c else
                     f"FAILED: {c.get('error')}", "≤ 30 s", c.get("loadavg", "")))
    for ch in res["chaos"]:
        scale = f", time-scale {ch['time_scale']}" if "time_scale" in ch else ""
        verdict = "" if ch.get("passed") else " (scenario FAILED)"
        for k, v in ch["metrics"].items():
            target = "≤ 2 s" if k == "leader election" else ""
            v = str(v).replace(" (target ≤ 2 s)", "")
            if k.startswith("traffic "):  # HTTP GETs through a NodePort, not writes
                k = k.replace("write ", "request ").replace("longest request gap",
                                                            "longest gap")
                v = v.split(" (Kubernetes SLO")[0]
            rows.append((f"chaos {ch['scenario']}: {k}{scale}", v + verdict, target,
                         ch["loadavg"]))
        if not ch["metrics"]:
            rows.append((f"chaos {ch['scenario']}{scale}", f"no metrics: {ch['verdict']}", "",
                         ch["loadavg"]))
    return rows


def report(res: dict) -> None:
    rows = table(res)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print()
    print(f"machine: {res['cpus']} CPUs; load average (1/5/15 min) shown per figure")
    print(f"{'metric':<{w0}}  {'value':<{w1}}  {'target':<7}  load")
    print(f"{'-' * w0}  {'-' * w1}  {'-' * 7}  {'-' * 14}")
    for m, v, t, ld in rows:
        print(f"{m:<{w0}}  {v:<{w1}}  {t:<7}  {ld}")
    for form, idle in res["idle"].items():
        print(f"\nidle cost per component ({form}):   cpu % of one core   rss MB   procs")
        for name, v in idle["components"].items():
            print(f"  {name:<28} {v['cpu_pct']:>8.1f} {v['rss_mb']:>14.1f} {v['procs']:>7}")
    for form, d in res["dns"].items():
        print(f"\ncluster DNS ({form}): {d}")
    for ch in res["chaos"]:
        print(f"chaos {ch['scenario']}: {ch['verdict']} ({ch['wall_s']} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", choices=["loopback", "netns", "both"], default="both")
    p.add_argument("--wait-netns", type=float, default=0.0,
                   help="seconds to wait for 172.30.0.0/24 to be free for the netns form")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--stores", type=int, default=3)
    p.add_argument("--chaos", default="quorum,worker-loss,control-plane",
                   help="comma-separated scenarios ('' for none)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--time-scale", type=float, default=0.1,
                   help="time scale of the cluster for worker-loss/control-plane")
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("--up-repeat", type=int, default=1,
                   help="start-ups per network form (min/median/max when > 1)")
    p.add_argument("--settle", type=float, default=5.0,
                   help="seconds after start-up before the idle measurement")
    p.add_argument("--timeout", type=float, default=90.0, help="kubelab up --timeout")
    p.add_argument("--quick", action="store_true",
                   help="loopback only, quorum only, 5 s idle")
    p.add_argument("--no-compose", action="store_true",
                   help="skip docker compose even with KUBELAB_BENCH_COMPOSE=1")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.chaos = [s for s in args.chaos.split(",") if s]
    if args.quick:
        args.network, args.chaos, args.idle_seconds, args.settle = "loopback", ["quorum"], 5, 2
    res = run(args)
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
