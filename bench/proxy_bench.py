"""Userspace L4 proxy vs direct vs HAProxy, side by side on loopback.

    .venv/bin/python bench/proxy_bench.py [--duration 10] [--connections 32] [--bulk-mib 1024]
                                          [--haproxy-threads 1] [--rounds 1] [--json FILE]
                                          [--paced-connections 8] [--paced-delay-ms 1]
                                          [--baseline-l4 OTHER/l4.py]

Starts one HTTP keep-alive backend (nginx, `return 200`, when installed; else a small uvloop
server), the kubelab proxy's relay (proxy.l4.Proxier, the same code `python -m proxy` runs)
in its own process with a Service VIP 127.96.250.1:80 -> backend, and HAProxy (Debian
haproxy, `mode tcp`, same backend). Then, for each path:
- saturation: wrk keep-alive requests/s and p50/p99 latency
  (`wrk -t1 -c<connections> -d<duration> --latency`); on a small machine the p99 here is
  mostly queueing (wrk, backend and relay share the cores),
- paced: the same requests at a fixed moderate rate, `--paced-connections` keep-alive
  connections each waiting `--paced-delay-ms` between a response and its next request
  (wrk with a Lua `delay()`), p50/p90/p99: the latency a path adds when it is not saturated,
- bulk throughput: a 1 GiB download from a sendfile() backend, read with recv_into.
`--rounds N` repeats everything N times (paths interleaved) and reports medians.
`--baseline-l4 FILE` also runs another version of proxy/l4.py (e.g. a saved copy) as the path
"kubelab-baseline", VIP 127.96.250.2, for before/after figures in the same conditions.
Targets (issue 7): >= 0.5x HAProxy's requests/s, <= 1 ms added p99, >= 1 GB/s bulk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BACKEND = "127.32.1.1"
HTTP_PORT, BULK_PORT = 18080, 18081
VIP = "127.96.250.1"
BASELINE_VIP = "127.96.250.2"
HAPROXY_IP = "127.32.0.2"
VIP_BULK_PORT = 81


# ----------------------------------------------------------------------- child roles
def serve_proxy(baseline: str | None = None) -> None:
    """The kubelab relay with a fixed table (no API server: the data path is the point).
    `baseline`: the path of another version of proxy/l4.py to run instead (on BASELINE_VIP)."""
    import importlib.util

    import uvloop

    from proxy.servicetable import ListenerKey, ListenerPlan

    vip = VIP
    if baseline:  # loaded as proxy._l4_baseline, so that its `from .servicetable` works
        spec = importlib.util.spec_from_file_location("proxy._l4_baseline", baseline)
        l4 = importlib.util.module_from_spec(spec)
        l4.__package__ = "proxy"
        sys.modules[spec.name] = l4
        spec.loader.exec_module(l4)
        vip = BASELINE_VIP
    else:
        from proxy import l4

    async def main():
        px = l4.Proxier()
        table = {}
        for port, bport in ((80, HTTP_PORT), (VIP_BULK_PORT, BULK_PORT)):
            key = ListenerKey(vip, port, "TCP")
            b = ((BACKEND, bport),)
            table[key] = ListenerPlan(key, ("default", "bench"), "", "clusterIP", b,
                                      frozenset(b), None, True)
        await px.apply(table)
        assert not px.failed, px.failed
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await px.close()
    uvloop.run(main())


def serve_bulk(size: int) -> None:
    """On every connection: send `size` bytes with sendfile, then close."""
    blob = Path(tempfile.gettempdir()) / "kubelab-bench-blob"
    chunk = 64 << 20
    if not blob.exists() or blob.stat().st_size != chunk:
        blob.write_bytes(os.urandom(chunk))
    srv = socket.create_server((BACKEND, BULK_PORT), reuse_port=True)
    print("ready", flush=True)
    with open(blob, "rb") as f:
        while True:
            c, _ = srv.accept()
            left = size
            try:
                while left > 0:
                    n = min(left, chunk)
                    sent = c.sendfile(f, 0, n)
                    left -= sent
            except OSError:
                pass
            c.close()


def serve_http_python() -> None:
    import uvloop

    resp = (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n")

    class P(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
            self.buf = b""

        def data_received(self, data):
            self.buf += data
            n = self.buf.count(b"\r\n\r\n")
            if n:
                self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
                self.t.write(resp * n)

    async def main():
        await asyncio.get_running_loop().create_server(P, BACKEND, HTTP_PORT, backlog=4096)
        print("ready", flush=True)
        await asyncio.Event().wait()
    uvloop.run(main())


# ---------------------------------------------------------------------- orchestration
class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], ready_line: bool = True, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, text=True, **kw)
        self.procs.append(p)
        if ready_line:
            line = p.stdout.readline()
            if "ready" not in line:
                raise RuntimeError(f"{argv} did not start")
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_port(ip: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((ip, port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{ip}:{port} not listening")


def start_nginx(tmp: Path, procs: Procs) -> bool:
    if not shutil.which("nginx"):
        return False
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{ listen {BACKEND}:{HTTP_PORT} reuseport; location / {{ return 200 "ok\\n"; }} }}
}}
""")
    procs.start(["nginx", "-c", str(conf), "-p", str(tmp)], ready_line=False)
    wait_port(BACKEND, HTTP_PORT)
    return True


def start_haproxy(tmp: Path, procs: Procs, threads: int) -> bool:
    if not shutil.which("haproxy"):
        return False
    conf = tmp / "haproxy.cfg"
    conf.write_text(f"""
global
  nbthread {threads}
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen http
  bind {HAPROXY_IP}:80
  server b1 {BACKEND}:{HTTP_PORT}
listen bulk
  bind {HAPROXY_IP}:{VIP_BULK_PORT}
  server b1 {BACKEND}:{BULK_PORT}
""")
    procs.start(["haproxy", "-db", "-f", str(conf)], ready_line=False)
    wait_port(HAPROXY_IP, 80)
    return True


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """user+system CPU seconds of a process (0 when unknown)."""
    if not pid:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def _ms(m: re.Match) -> float:
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def wrk(url: str, duration: int, connections: int, script: Path | None = None) -> dict:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], check=False, capture_output=True, text=True,
                         timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {q: _ms(re.search(rf"{q}%\s+([\d.]+)(us|ms|s)\b", out)) for q in (50, 90, 99)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": pct[50], "p90_ms": pct[90], "p99_ms": pct[99],
            "errors": errors.group(0) if errors else ""}


def bulk(ip: str, port: int, size: int) -> dict:
    s = socket.create_connection((ip, port))
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    got = 0
    t0 = time.perf_counter()
    while True:
        n = s.recv_into(view)
        if not n:
            break
        got += n
    dt = time.perf_counter() - t0
    s.close()
    return {"bytes": got, "seconds": dt, "GBps": got / dt / 1e9}


def median_of(rounds: list[dict]) -> dict:
    out = {}
    for k, v in rounds[0].items():
        if isinstance(v, (int, float)):
            out[k] = statistics.median(r[k] for r in rounds)
        else:
            out[k] = "; ".join(sorted({r[k] for r in rounds if r[k]}))
    return out


def line(name: str, r: dict, relay: bool) -> str:
    cost = (f"  relay CPU {r['cpu_us_per_req']:.1f} us/req {r['bulk_cpu_s_per_GiB']:.2f} s/GiB"
            if relay else "")
    return (f"{name:22s} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:.3f}  p99 {r['p99_ms']:.3f} ms"
            f" | paced {r['paced_rps']:>6.0f} req/s  p50 {r['paced_p50_ms']:.3f}  "
            f"p90 {r['paced_p90_ms']:.3f}  p99 {r['paced_p99_ms']:.3f} ms"
            f" | bulk {r['bulk_GBps']:.2f} GB/s{cost} {r['errors']}{r['paced_errors']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--bulk-mib", type=int, default=1024)
    ap.add_argument("--haproxy-threads", type=int, default=1)
    ap.add_argument("--paced-connections", type=int, default=8)
    ap.add_argument("--paced-delay-ms", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--baseline-l4", help="another proxy/l4.py to run side by side")
    ap.add_argument("--json")
    ap.add_argument("--role", choices=("proxy", "bulk", "http"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    size = args.bulk_mib << 20
    if args.role == "proxy":
        return serve_proxy(args.baseline_l4)
    if args.role == "bulk":
        return serve_bulk(size)
    if args.role == "http":
        return serve_http_python()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")

    procs = Procs()
    me = [sys.executable, str(Path(__file__).resolve())]
    results: dict = {"paths": {}, "rounds": []}
    try:
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td)
            paced = tmp / "paced.lua"
            paced.write_text(f"function delay()\n  return {args.paced_delay_ms}\nend\n")
            backend = "nginx" if start_nginx(tmp, procs) else None
            if backend is None:
                procs.start([*me, "--role", "http"])
                backend = "python-uvloop"
            procs.start([*me, "--role", "bulk", "--bulk-mib", str(args.bulk_mib)])
            pids = {"direct": None,
                    "kubelab-proxy (VIP)": procs.start([*me, "--role", "proxy"], cwd=ROOT).pid}
            paths = {"direct": (BACKEND, HTTP_PORT, BULK_PORT),
                     "kubelab-proxy (VIP)": (VIP, 80, VIP_BULK_PORT)}
            if args.baseline_l4:
                base = str(Path(args.baseline_l4).resolve())
                pids["kubelab-baseline"] = procs.start(
                    [*me, "--role", "proxy", "--baseline-l4", base], cwd=ROOT).pid
                paths["kubelab-baseline"] = (BASELINE_VIP, 80, VIP_BULK_PORT)
            if start_haproxy(tmp, procs, args.haproxy_threads):
                pids["haproxy (tcp)"] = procs.procs[-1].pid
                paths["haproxy (tcp)"] = (HAPROXY_IP, 80, VIP_BULK_PORT)
            results.update(backend=backend, cpus=os.cpu_count(), duration=args.duration,
                           connections=args.connections, bulk_bytes=size,
                           paced_connections=args.paced_connections,
                           paced_delay_ms=args.paced_delay_ms, rounds=[],
                           haproxy_threads=args.haproxy_threads
                           if "haproxy (tcp)" in paths else None,
                           loadavg_before=os.getloadavg())
            for rnd in range(args.rounds):
                this: dict = {}
                for name, (ip, hp, bp) in paths.items():
                    url = f"http://{ip}:{hp}/"
                    wrk(url, 1, args.connections)  # warm-up
                    c0 = cpu_seconds(pids[name])
                    r = wrk(url, args.duration, args.connections)
                    c1 = cpu_seconds(pids[name])
                    b = bulk(ip, bp, size)
                    c2 = cpu_seconds(pids[name])
                    pc = wrk(url, args.duration, args.paced_connections, paced)
                    # the relay's own cost, less sensitive to other load on the machine than
                    # wall-clock figures: CPU microseconds per request, CPU seconds per GiB
                    r["cpu_us_per_req"] = (c1 - c0) / max(1, r["rps"] * args.duration) * 1e6
                    if b["bytes"] != size:
                        raise RuntimeError(f"{name}: bulk got {b['bytes']} of {size} bytes")
                    this[name] = {**r, "bulk_GBps": b["GBps"], "bulk_seconds": b["seconds"],
                                  "bulk_cpu_s_per_GiB": (c2 - c1) / (size / (1 << 30)),
                                  **{f"paced_{k}": v for k, v in pc.items()}}
                    tag = f"[round {rnd + 1}] " if args.rounds > 1 else ""
                    print(tag + line(name, this[name], bool(pids[name])), flush=True)
                results["rounds"].append(this)
            results["loadavg_after"] = os.getloadavg()
    finally:
        procs.stop()
    p = results["paths"] = {name: median_of([r[name] for r in results["rounds"]])
                            for name in results["rounds"][0]}
    if args.rounds > 1:
        print(f"medians of {args.rounds} rounds:")
        for name, r in p.items():
            print(line(name, r, bool(pids[name])))
    kp, d = p["kubelab-proxy (VIP)"], p["direct"]
    summary = {"added_p99_ms": kp["p99_ms"] - d["p99_ms"],
               "added_paced_p50_ms": kp["paced_p50_ms"] - d["paced_p50_ms"],
               "added_paced_p99_ms": kp["paced_p99_ms"] - d["paced_p99_ms"],
               "bulk_GBps": kp["bulk_GBps"]}
    if "haproxy (tcp)" in p:
        h = p["haproxy (tcp)"]
        summary["rps_vs_haproxy"] = kp["rps"] / h["rps"]
        summary["haproxy_added_p99_ms"] = h["p99_ms"] - d["p99_ms"]
        summary["haproxy_added_paced_p99_ms"] = h["paced_p99_ms"] - d["paced_p99_ms"]
    if "kubelab-baseline" in p:
        bl = p["kubelab-baseline"]
        summary["baseline_added_p99_ms"] = bl["p99_ms"] - d["p99_ms"]
        summary["baseline_added_paced_p99_ms"] = bl["paced_p99_ms"] - d["paced_p99_ms"]
        summary["baseline_bulk_GBps"] = bl["bulk_GBps"]
    summary = {k: round(v, 3) for k, v in summary.items()}
    results["summary"] = summary
    print("summary:", json.dumps(summary))
    before, after = results["loadavg_before"], results["loadavg_after"]
    print("load average before/after:", " ".join(f"{x:.2f}" for x in before), "/",
          " ".join(f"{x:.2f}" for x in after))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
