#!/usr/bin/env python3
"""Cluster DNS benchmark: queries/s and latency with dnsperf (Debian `dnsperf`) against the
kubelab cluster DNS and against dnsmasq (Debian `dnsmasq`) answering the same names from a
hosts file, side by side in one run, on loopback.

    .venv/bin/python bench/dns_bench.py [--services 1000] [--duration 5] [--rate 5000]
        [--clients 4] [--outstanding 200] [--rounds 3] [--json FILE] [--keep DIR]

One run:
- writes --services ClusterIP Services (`svc-N` in namespaces `ns-0`..`ns-9`, ClusterIPs in
  127.96.0.0/16) as JSON objects, and a hosts file with the same names and addresses;
- starts the cluster DNS (`python -m proxy.dns --objects FILE`, uvloop, one process: what one
  worker's proxy runs) and dnsmasq (`--no-resolv --no-hosts --addn-hosts FILE
  --local=/cluster.local/`, cache sized for every name, one process) each on its own 127.53.9.x
  address and a free port;
- for each server, the same query file (one `A` query per Service name, in random order):
  * throughput: dnsperf for --duration s with --clients sockets and --outstanding queries in
    flight, --rounds times alternating between the two servers: the median queries/s;
  * saturation latency: the same load once more with dnsperf -v (every query's latency, which
    costs dnsperf CPU, hence a separate run): p50/p99;
  * paced: dnsperf -Q --rate queries/s for --duration s: p50/p99 latency of an unloaded server;
- then, cluster DNS only, a mixed query file (A, AAAA NODATA, SRV, PTR, NXDOMAIN, TXT) at
  saturation, for reference (dnsmasq cannot answer those from a hosts file).
Everything it starts is stopped at the end (also on errors and Ctrl-C).
Target (issue 7): cluster DNS >= 0.5x dnsmasq's queries/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from proxy.dns.static import free_port

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
KUBE_IP = "127.53.9.1"
MASQ_IP = "127.53.9.2"




def make_world(n: int) -> tuple[list[dict], list[tuple[str, str]]]:
    objs: list[dict] = []
    names: list[tuple[str, str]] = []
    nss = sorted({f"ns-{i % 10}" for i in range(n)})
    for ns in nss:
        objs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for i in range(n):
        ns = f"ns-{i % 10}"
        ip = f"127.96.{10 + i // 250}.{i % 250 + 1}"
        objs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": f"svc-{i}", "namespace": ns},
                     "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                              "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
        names.append((f"svc-{i}.{ns}.svc.cluster.local", ip))
    # one headless Service with endpoints for the mixed run
    objs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "db", "namespace": "ns-0"},
                 "spec": {"clusterIP": "None", "clusterIPs": ["None"],
                          "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}})
    objs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                 "metadata": {"name": "db-1", "namespace": "ns-0",
                              "labels": {"kubernetes.io/service-name": "db"}},
                 "addressType": "IPv4",
                 "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                 "endpoints": [{"addresses": [f"127.244.1.{k}"], "hostname": f"db-{k}",
                                "conditions": {"ready": True}} for k in range(2, 5)]})
    return objs, names


def wait_answer(ip: str, port: int, name: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = subprocess.run(["dig", f"@{ip}", "-p", str(port), name, "+short", "+tries=1",
                            "+time=1"], capture_output=True, text=True, check=False)
        if p.stdout.strip() and not p.stdout.startswith(";"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{ip}:{port} does not answer {name}")


def dnsperf(ip: str, port: int, qfile: Path, *, duration: float, clients: int,
            outstanding: int, rate: int | None = None, verbose: bool = True) -> dict:
    cmd = ["dnsperf", "-s", ip, "-p", str(port), "-d", str(qfile), "-l", str(duration),
           "-c", str(clients), "-q", str(outstanding), "-t", "2"] + (["-v"] if verbose else [])
    if rate:
        cmd += ["-Q", str(rate)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    out = p.stdout
    lat = [float(m.group(2)) for m in re.finditer(r"^> (\S+) \S+ \S+ ([0-9.]+)$", out, re.MULTILINE)]
    codes: dict[str, int] = {}
    for m in re.finditer(r"^> (\S+) ", out, re.MULTILINE):
        codes[m.group(1)] = codes.get(m.group(1), 0) + 1

    def stat(label: str) -> float:
        m = re.search(label + r":\s+([0-9.]+)", out)
        return float(m.group(1)) if m else float("nan")

    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else float("nan")

    return {"cmd": " ".join(cmd), "qps": stat("Queries per second"),
            "sent": int(stat("Queries sent")), "completed": int(stat("Queries completed")),
            "lost": int(stat("Queries lost")), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "avg_ms": (statistics.fmean(lat) * 1e3 if lat
                       else stat(r"Average Latency \(s\)") * 1e3), "rcodes": codes}


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=5000, help="paced run queries/s")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--outstanding", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds per server")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--keep", help="keep the work dir (query files, logs) here")
    args = ap.parse_args()
    for tool in ("dnsperf", "dnsmasq", "dig"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (apt-get install dnsperf dnsmasq bind9-dnsutils)")

    work = Path(args.keep or tempfile.mkdtemp(prefix="dns-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    objs, names = make_world(args.services)
    (work / "objects.json").write_text(json.dumps({"items": objs}))
    (work / "hosts").write_text("".join(f"{ip} {n}\n" for n, ip in names))
    rnd = random.Random(7)
    order = names[:]
    rnd.shuffle(order)
    qa = work / "queries-a.txt"
    qa.write_text("".join(f"{n} A\n" for n, _ in order))
    mixed = []
    for n, ip in order[:200]:
        a, b, c, d = ip.split(".")
        mixed += [f"{n} A", f"{n} AAAA", f"_http._tcp.{n} SRV", f"{d}.{c}.{b}.{a}.in-addr.arpa PTR",
                  f"nope-{d}.ns-1.svc.cluster.local A"]
    mixed += ["db.ns-0.svc.cluster.local A", "db-2.db.ns-0.svc.cluster.local A",
              "_pg._tcp.db.ns-0.svc.cluster.local SRV", "dns-version.cluster.local TXT"] * 20
    rnd.shuffle(mixed)
    qm = work / "queries-mixed.txt"
    qm.write_text("\n".join(mixed) + "\n")

    kport, mport = free_port(KUBE_IP), free_port(MASQ_IP)
    procs: list[subprocess.Popen] = []
    kube_log = open(work / "kubelab-dns.log", "wb")  # noqa: SIM115 - closed in finally
    results: dict = {"services": args.services, "duration_s": args.duration}
    try:
        kube = subprocess.Popen(
            [PY, "-m", "proxy.dns", "--objects", str(work / "objects.json"), "--listen",
             KUBE_IP, "--port", str(kport), "--upstream", "127.53.9.99:9", "--log-level",
             "warning"], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=kube_log, start_new_session=True)
        procs.append(kube)
        masq = subprocess.Popen(
            ["dnsmasq", "-k", "--no-resolv", "--no-hosts", f"--addn-hosts={work / 'hosts'}",
             f"--listen-address={MASQ_IP}", "--bind-interfaces", f"--port={mport}",
             f"--cache-size={max(10000, 2 * args.services)}", "--local=/cluster.local/",
             "--user=root", f"--pid-file={work / 'dnsmasq.pid'}",
             f"--log-facility={work / 'dnsmasq.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(masq)
        wait_answer(KUBE_IP, kport, names[0][0])
        wait_answer(MASQ_IP, mport, names[0][0])
        servers = [("cluster DNS (kubelab)", KUBE_IP, kport), ("dnsmasq", MASQ_IP, mport)]
        for label, ip, port in servers:
            # warm-up (the cluster DNS caches packed answers)
            dnsperf(ip, port, qa, duration=1, clients=args.clients, outstanding=args.outstanding)
        # throughput rounds alternate between the servers (the machine may be shared: the
        # median of the rounds is reported, every round's figure is kept)
        rounds: dict[str, list[dict]] = {label: [] for label, _, _ in servers}
        for _ in range(args.rounds):
            for label, ip, port in servers:
                rounds[label].append(dnsperf(ip, port, qa, duration=args.duration,
                                             clients=args.clients, outstanding=args.outstanding,
                                             verbose=False))
        for label, ip, port in servers:
            runs = sorted(rounds[label], key=lambda r: r["qps"])
            thr = dict(runs[len(runs) // 2], rounds_qps=[r["qps"] for r in rounds[label]])
            sat = dnsperf(ip, port, qa, duration=args.duration, clients=args.clients,
                          outstanding=args.outstanding)
            paced = dnsperf(ip, port, qa, duration=args.duration, clients=1, outstanding=100,
                            rate=args.rate)
            results[label] = {"throughput": thr, "saturation": sat, "paced": paced}
        results["cluster DNS (kubelab), mixed types"] = {
            "throughput": dnsperf(KUBE_IP, kport, qm, duration=args.duration,
                                  clients=args.clients, outstanding=args.outstanding,
                                  verbose=False),
            "saturation": dnsperf(KUBE_IP, kport, qm, duration=args.duration,
                                  clients=args.clients, outstanding=args.outstanding)}
    finally:
        for p in procs:
            stop(p)
        kube_log.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nDNS benchmark: {args.services} Services, dnsperf {args.duration:g} s per run, "
          f"{args.clients} clients x {args.outstanding} outstanding (saturation), "
          f"{args.rate}/s (paced), loopback, one process each\n")
    hdr = (f"{'server':36} {'queries/s':>10} {'avg ms':>7} {'p50 ms':>8} {'p99 ms':>8} "
           f"{'lost':>6}   {'paced p50':>9} {'paced p99':>9}  rcodes")
    print(hdr)
    print("-" * len(hdr))
    for label in ("cluster DNS (kubelab)", "dnsmasq", "cluster DNS (kubelab), mixed types"):
        r = results[label]
        t, s = r["throughput"], r["saturation"]
        pc = r.get("paced")
        paced = (f"{pc['p50_ms']:9.3f} {pc['p99_ms']:9.3f}" if pc else f"{'-':>9} {'-':>9}")
        rc = ",".join(f"{k}:{v}" for k, v in sorted(s["rcodes"].items()))
        print(f"{label:36} {t['qps']:10.0f} {t['avg_ms']:7.3f} {s['p50_ms']:8.3f} "
              f"{s['p99_ms']:8.3f} {t['lost']:6d}   {paced}  {rc}")
    print("(queries/s, avg: median of the rounds, dnsperf without -v; p50/p99: a saturation "
          "run with -v, every query's latency; paced: -Q rate)")
    for label, _, _ in servers:
        print(f"  {label} rounds: " + ", ".join(
            f"{q:.0f}" for q in results[label]["throughput"]["rounds_qps"]) + " queries/s")
    ratio = results["cluster DNS (kubelab)"]["throughput"]["qps"] / \
        results["dnsmasq"]["throughput"]["qps"]
    results["ratio_vs_dnsmasq"] = ratio
    print(f"\ncluster DNS / dnsmasq queries/s: {ratio:.2f}x (target >= 0.5x): "
          f"{'OK' if ratio >= 0.5 else 'BELOW TARGET'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
