"""Userspace L4 proxy vs direct vs HAProxy, side by side on loopback.

    .venv/bin/python bench/proxy_bench.py [--duration 10] [--connections 32] [--bulk-mib 1024]
                                          [--haproxy-threads 1] [--json FILE]

Starts one HTTP keep-alive backend (nginx, `return 200`, when installed; else a small uvloop
server), the kubelab proxy's relay (proxy.l4.Proxier, the same code `python -m proxy` runs)
in its own process with a Service VIP 127.96.250.1:80 -> backend, and HAProxy (Debian
haproxy, `mode tcp`, same backend). Then, for each path:
- wrk keep-alive requests/s and p99 latency (`wrk -t1 -c<connections> -d<duration> --latency`),
- bulk throughput: a 1 GiB download from a sendfile() backend, read with recv_into.
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
HAPROXY_IP = "127.32.0.2"
VIP_BULK_PORT = 81


# ----------------------------------------------------------------------- child roles
def serve_proxy() -> None:
    """The kubelab relay with a fixed table (no API server: the data path is the point)."""
    import uvloop

    from proxy.l4 import Proxier
    from proxy.servicetable import ListenerKey, ListenerPlan

    async def main():
        px = Proxier()
        table = {}
        for port, bport in ((80, HTTP_PORT), (VIP_BULK_PORT, BULK_PORT)):
            key = ListenerKey(VIP, port, "TCP")
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


def wrk(url: str, duration: int, connections: int) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url],
                         check=False, capture_output=True, text=True,
                         timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    mult = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    m50 = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p50.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": float(p50.group(1)) * m50,
            "p99_ms": float(p99.group(1)) * mult, "errors": errors.group(0) if errors else ""}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--bulk-mib", type=int, default=1024)
    ap.add_argument("--haproxy-threads", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--role", choices=("proxy", "bulk", "http"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    size = args.bulk_mib << 20
    if args.role == "proxy":
        return serve_proxy()
    if args.role == "bulk":
        return serve_bulk(size)
    if args.role == "http":
        return serve_http_python()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")

    procs = Procs()
    me = [sys.executable, str(Path(__file__).resolve())]
    results: dict = {"paths": {}}
    try:
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td)
            backend = "nginx" if start_nginx(tmp, procs) else None
            if backend is None:
                procs.start([*me, "--role", "http"])
                backend = "python-uvloop"
            procs.start([*me, "--role", "bulk", "--bulk-mib", str(args.bulk_mib)])
            proxy_pid = procs.start([*me, "--role", "proxy"], cwd=ROOT).pid
            have_haproxy = start_haproxy(tmp, procs, args.haproxy_threads)
            haproxy_pid = procs.procs[-1].pid if have_haproxy else None
            pids = {"direct": None, "kubelab-proxy (VIP)": proxy_pid,
                    "haproxy (tcp)": haproxy_pid}
            paths = {"direct": (BACKEND, HTTP_PORT, BULK_PORT),
                     "kubelab-proxy (VIP)": (VIP, 80, VIP_BULK_PORT)}
            if have_haproxy:
                paths["haproxy (tcp)"] = (HAPROXY_IP, 80, VIP_BULK_PORT)
            results.update(backend=backend, cpus=os.cpu_count(), duration=args.duration,
                           connections=args.connections, bulk_bytes=size,
                           haproxy_threads=args.haproxy_threads if have_haproxy else None)
            for name, (ip, hp, bp) in paths.items():
                wrk(f"http://{ip}:{hp}/", 1, args.connections)  # warm-up
                c0 = cpu_seconds(pids[name])
                r = wrk(f"http://{ip}:{hp}/", args.duration, args.connections)
                c1 = cpu_seconds(pids[name])
                b = bulk(ip, bp, size)
                c2 = cpu_seconds(pids[name])
                # the relay's own cost, less sensitive to other load on the machine than
                # wall-clock figures: CPU microseconds per request, CPU seconds per GiB
                r["cpu_us_per_req"] = (c1 - c0) / max(1, r["rps"] * args.duration) * 1e6
                b["cpu_s_per_GiB"] = (c2 - c1) / (size / (1 << 30))
                if b["bytes"] != size:
                    raise RuntimeError(f"{name}: bulk got {b['bytes']} of {size} bytes")
                results["paths"][name] = {**r, "bulk_GBps": b["GBps"],
                                          "bulk_seconds": b["seconds"],
                                          "bulk_cpu_s_per_GiB": b["cpu_s_per_GiB"]}
                cost = (f"  relay CPU {r['cpu_us_per_req']:.1f} us/req "
                        f"{b['cpu_s_per_GiB']:.2f} s/GiB") if pids[name] else ""
                print(f"{name:22s} {r['rps']:>10.0f} req/s  p50 {r['p50_ms']:.3f} ms  "
                      f"p99 {r['p99_ms']:.3f} ms  bulk {b['GBps']:.2f} GB/s{cost} "
                      f"{r['errors']}", flush=True)
    finally:
        procs.stop()
    p = results["paths"]
    kp, d = p["kubelab-proxy (VIP)"], p["direct"]
    summary = {"added_p99_ms": kp["p99_ms"] - d["p99_ms"], "bulk_GBps": kp["bulk_GBps"]}
    if "haproxy (tcp)" in p:
        summary["rps_vs_haproxy"] = kp["rps"] / p["haproxy (tcp)"]["rps"]
    results["summary"] = summary
    print("summary:", json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
