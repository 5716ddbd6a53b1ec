#!/usr/bin/env python3
"""Side-by-side benchmark: real etcd 3.4 vs etcdlite, 3 members each, same etcd v3 load generator.

    .venv/bin/python bench/store_bench.py [--quick] [--json FILE] [--only etcd|etcdlite]
        [--scenarios put1,...] [--procs 4] [--channels 1] [--duration S] [--attempt-timeout S]
        [--instrument] [--profile DIR] [--keep-logs DIR]      (--help for all)

One run starts a 3-member real etcd cluster (127.0.0.1, free ports, temp data dirs, stopped by
PID at the end, also on Ctrl-C/SIGTERM/exception) and a 3-member etcdlite cluster
(kubelab.cluster.Cluster in a temp state dir, port offset chosen free, `.down()` at the end).
Both stay up; the scenarios run one at a time, alternately on each store (etcd first, then
etcdlite first, ...), so both see the same background load; an idle cluster costs ~0.05 cores.
Against each it measures:

- put throughput and p50/p99 latency at 1, 16 and 64 concurrent clients (256-byte values,
  distinct keys), for a fixed window after a short warm-up;
- linearizable and serializable single-key range at 64 clients;
- watch event latency: sequential puts on the leader, a watch on a follower, latency from the
  put's acknowledgement to the event's arrival (matched by mod_revision);
- failover: 8 writers spread over all endpoints (a failed or timed-out write is retried, same
  key/value/request id, on the next endpoint; --attempt-timeout per attempt, default 0.5 s);
  the leader (found with Maintenance.Status) is SIGKILLed; the gap is the time from the kill to
  the first successful write whose attempt started after the kill. The coordinator also notes
  when Status on the survivors first shows a new leader. The killed member is restarted and
  every acknowledged key is read back (linearizable, and serializable on each member).

The load generator runs as --procs worker processes (multiprocessing, spawn; default 4), each
with its share of the clients, using grpc.aio on uvloop and --channels channels per endpoint
(distinct TCP connections; default 1, which costs less CPU per op than 2), requests going
round-robin over the channels and so over all three members. The coordinator samples the CPU
time of the workers, of the store members and of the whole machine over every measurement
window and prints it, so one can see whether the load generator is the limit and whether
processes outside the benchmark were competing for the 2 cores.

Diagnostics (not needed for the headline numbers): --instrument loads
bench/instrument/sitecustomize.py into the etcdlite members (Raft/journal counters, per-thread
CPU, a Raft event trace around the failover); --profile DIR records py-spy profiles of the
members (summarise with bench/pyspy_summary.py); --keep-logs DIR keeps the members' logs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc

VALUE_SIZE = 256
RANGE_KEYS = 1000
CHANNELS_PER_ENDPOINT = 1
FAILOVER_ATTEMPT_TIMEOUT = 0.5
FAILOVER_RETRY_SLEEP = 0.01

# Distinct TCP connections per channel (grpc-core would otherwise share one subchannel between
# channels with identical arguments), no hidden retries, fast reconnect after a member restart.
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.enable_retries", 0),
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]

mono = time.monotonic  # CLOCK_MONOTONIC: one clock for every process on this machine


def prefix_end(prefix: bytes) -> bytes:
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def value_for(key: bytes) -> bytes:
    return ((key + b"|") * (VALUE_SIZE // (len(key) + 1) + 1))[:VALUE_SIZE]


def target(url: str) -> str:
    for scheme in ("http://", "https://"):
        url = url.removeprefix(scheme)
    return url.rstrip("/")


# =====================================================================================
# Load-generator worker processes
# =====================================================================================

def worker_main(conn, index: int, channels_per_endpoint: int = CHANNELS_PER_ENDPOINT) -> None:
    global CHANNELS_PER_ENDPOINT
    CHANNELS_PER_ENDPOINT = channels_per_endpoint
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator handles Ctrl-C
    import uvloop
    uvloop.run(_worker_loop(conn, index))


async def _worker_loop(conn, index: int) -> None:
    loop = asyncio.get_running_loop()
    handlers = {"load": _w_load, "watch": _w_watch, "failover": _w_failover,
                "verify": _w_verify, "preload": _w_preload, "ping": _w_ping}
    while True:
        try:
            task = await loop.run_in_executor(None, conn.recv)
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            result = await handlers[task["kind"]](task, index)
        except Exception:  # noqa: BLE001 - reported to the coordinator, which raises it
            result = {"exception": traceback.format_exc()}
        conn.send(result)


async def _w_ping(task, wi):
    return {"pid": os.getpid()}


async def _open_channels(endpoints, wi, per_ep=None):
    per_ep = per_ep or CHANNELS_PER_ENDPOINT
    n = len(endpoints) * per_ep
    chans = [grpc.aio.insecure_channel(endpoints[(j + wi) % len(endpoints)],
                                       options=CHANNEL_OPTIONS) for j in range(n)]
    await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 15) for c in chans))
    return chans


async def _close_channels(chans):
    await asyncio.gather(*(c.close() for c in chans), return_exceptions=True)


async def _sleep_until(t):
    d = t - mono()
    if d > 0:
        await asyncio.sleep(d)


async def _w_load(task, wi):
    """n closed-loop clients; ops completing inside [ws, we) are counted."""
    chans = await _open_channels(task["endpoints"], wi)
    nch = len(chans)
    stubs = [rpc.KVStub(c) for c in chans]
    op = task["op"]
    calls = [s.Put if op == "put" else s.Range for s in stubs]
    ser = bool(task.get("serializable"))
    ws = task["start_at"] + task["warm"]
    we = ws + task["duration"]
    lat = array("d")
    errors: collections.Counter = collections.Counter()
    value = b"x" * VALUE_SIZE
    rkeys = [f"{task.get('range_prefix', '')}{i:05d}".encode() for i in range(RANGE_KEYS)]

    async def client(ci):
        n = 0
        prefix = f"{task['key_prefix']}/{wi}/{ci}/".encode()
        k0 = ci * 7919 + wi * 104729
        while True:
            if op == "put":
                req = pb.PutRequest(key=prefix + b"%08d" % n, value=value)
            else:
                req = pb.RangeRequest(key=rkeys[(k0 + n) % RANGE_KEYS], serializable=ser)
            call = calls[(ci + n) % nch]
            n += 1
            t0 = mono()
            if t0 >= we:
                return
            try:
                await call(req, timeout=10)
            except grpc.aio.AioRpcError as e:
                if ws <= t0 < we:
                    errors[e.code().name] += 1
                await asyncio.sleep(0.01)
                continue
            t1 = mono()
            if ws <= t1 < we:
                lat.append(t1 - t0)

    await _sleep_until(task["start_at"])
    await asyncio.gather(*(client(ci) for ci in range(task["clients"])))
    await _close_channels(chans)
    return {"lat": lat.tobytes(), "errors": dict(errors)}


async def _w_preload(task, wi):
    chans = await _open_channels(task["endpoints"], wi, per_ep=1)
    stubs = [rpc.KVStub(c) for c in chans]
    keys = [f"{task['range_prefix']}{i:05d}".encode() for i in range(RANGE_KEYS)]
    q = collections.deque(keys)

    errors = collections.Counter()

    async def client(ci):
        i = ci
        while q:
            k = q.popleft()
            for attempt in range(20):
                i += 1
                try:
                    await stubs[i % len(stubs)].Put(pb.PutRequest(key=k, value=value_for(k)),
                                                    timeout=10)
                    break
                except grpc.aio.AioRpcError as e:
                    errors[f"{e.code().name}: {e.details()}"] += 1
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"preload: cannot put {k!r}: {dict(errors)}")

    await asyncio.gather(*(client(ci) for ci in range(16)))
    await _close_channels(chans)
    return {"n": len(keys), "errors": dict(errors)}


async def _w_watch(task, wi):
    """Sequential puts on the leader; one watch on a follower; ack -> event latency."""
    lch = grpc.aio.insecure_channel(task["leader"], options=CHANNEL_OPTIONS)
    fch = grpc.aio.insecure_channel(task["follower"], options=CHANNEL_OPTIONS)
    await asyncio.gather(lch.channel_ready(), fch.channel_ready())
    kv = rpc.KVStub(lch)
    prefix = task["key_prefix"].encode()
    call = rpc.WatchStub(fch).Watch(metadata=[("hasleader", "true")])
    await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(
        key=prefix, range_end=prefix_end(prefix))))
    first = await call.read()
    assert first.created, first
    ev_time: dict[int, float] = {}
    waiters: dict[int, asyncio.Future] = {}

    async def reader():
        while True:
            r = await call.read()
            if r is grpc.aio.EOF:
                return
            now = mono()
            for e in r.events:
                rev = e.kv.mod_revision
                ev_time[rev] = now
                f = waiters.pop(rev, None)
                if f is not None and not f.done():
                    f.set_result(None)

    rt = asyncio.create_task(reader())
    value = b"w" * VALUE_SIZE
    lat = array("d")
    send_lat = array("d")
    put_lat = array("d")
    missed = 0
    await _sleep_until(task["start_at"])
    end = task["start_at"] + task["duration"]
    n = 0
    while mono() < end:
        t0 = mono()
        resp = await kv.Put(pb.PutRequest(key=prefix + b"%08d" % n, value=value), timeout=10)
        t1 = mono()
        n += 1
        put_lat.append(t1 - t0)
        rev = resp.header.revision
        if rev not in ev_time:
            f = asyncio.get_running_loop().create_future()
            waiters[rev] = f
            try:
                await asyncio.wait_for(f, 2.0)
            except TimeoutError:
                missed += 1
                waiters.pop(rev, None)
                continue
        lat.append(ev_time[rev] - t1)
        send_lat.append(ev_time[rev] - t0)
        await asyncio.sleep(0.005)
    rt.cancel()
    call.cancel()
    await _close_channels([lch, fch])
    return {"lat": lat.tobytes(), "put_lat": put_lat.tobytes(), "send_lat": send_lat.tobytes(),
            "missed": missed, "puts": n}


async def _w_failover(task, wi):
    """Closed-loop writers; a failed attempt is retried (same key, value and request id) on the
    next endpoint. Returns every acknowledged write with its successful attempt's times."""
    chans = await _open_channels(task["endpoints"], wi, per_ep=1)
    nch = len(chans)
    calls = [rpc.KVStub(c).Put for c in chans]
    end = task["end_at"]
    acks = []  # (client, key, attempt_start, ack_time)
    fails = []  # (client, attempt_start, fail_time, code)

    async def client(ci):
        n = 0
        ep = (ci + wi) % nch
        prefix = f"{task['key_prefix']}/{wi}/{ci}/".encode()
        while mono() < end:
            key = prefix + b"%08d" % n
            req = pb.PutRequest(key=key, value=value_for(key))
            md = (("etcdlite-request-id", uuid.uuid4().hex),)
            while True:
                t0 = mono()
                if t0 >= end:
                    return
                try:
                    await calls[ep](req, timeout=task["attempt_timeout"], metadata=md)
                except grpc.aio.AioRpcError as e:
                    fails.append((ci, t0, mono(), e.code().name))
                    ep = (ep + 1) % nch
                    await asyncio.sleep(FAILOVER_RETRY_SLEEP)
                    continue
                acks.append((ci, key.decode(), t0, mono()))
                break
            ep = (ep + 1) % nch
            n += 1

    await _sleep_until(task["start_at"])
    await asyncio.gather(*(client(ci) for ci in range(task["clients"])))
    await _close_channels(chans)
    return {"acks": acks, "fails": fails}


async def _w_verify(task, wi):
    """Read back every acknowledged key: one linearizable prefix range, then (once each member
    has caught up with that revision) a serializable prefix range on every member."""
    prefix = task["prefix"].encode()
    acked = task["keys"]
    out = {}
    chans = {ep: grpc.aio.insecure_channel(ep, options=CHANNEL_OPTIONS)
             for ep in task["endpoints"]}
    try:
        deadline = mono() + 30
        resp = None
        while resp is None:
            for ep, ch in chans.items():
                try:
                    resp = await rpc.KVStub(ch).Range(
                        pb.RangeRequest(key=prefix, range_end=prefix_end(prefix)), timeout=10)
                    break
                except grpc.aio.AioRpcError:
                    if mono() > deadline:
                        raise
                    await asyncio.sleep(0.2)

        def lost_in(r):
            got = {kv.key: kv.value for kv in r.kvs}
            return sum(1 for k in acked if got.get(k.encode()) != value_for(k.encode()))

        out["linearizable"] = lost_in(resp)
        out["stored_keys"] = len(resp.kvs)
        rev = resp.header.revision
        out["per_member"] = {}
        for ep, ch in chans.items():
            deadline = mono() + 30
            while True:
                try:
                    st = await rpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=5)
                    if st.header.revision >= rev:
                        r = await rpc.KVStub(ch).Range(pb.RangeRequest(
                            key=prefix, range_end=prefix_end(prefix), serializable=True),
                            timeout=10)
                        out["per_member"][ep] = lost_in(r)
                        break
                except grpc.aio.AioRpcError:
                    pass
                if mono() > deadline:
                    out["per_member"][ep] = "not caught up"
                    break
                await asyncio.sleep(0.2)
    finally:
        await _close_channels(list(chans.values()))
    return out


class Workers:
    def __init__(self, n: int, channels_per_endpoint: int = CHANNELS_PER_ENDPOINT):
        ctx = mp.get_context("spawn")
        self.procs = []
        self.conns = []
        for i in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(child, i, channels_per_endpoint),
                            daemon=True,
                            name=f"loadgen-{i}")
            p.start()
            child.close()
            self.procs.append(p)
            self.conns.append(parent)
        for r in self.run([{"kind": "ping"}] * n):
            pass

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def send(self, tasks):
        """tasks: one per worker (None = idle)."""
        used = []
        for c, t in zip(self.conns, tasks):
            if t is not None:
                c.send(t)
                used.append(c)
        return used

    def collect(self, used, timeout=120):
        out = []
        for c in used:
            if not c.poll(timeout):
                raise RuntimeError("a load-generator worker did not answer")
            r = c.recv()
            if "exception" in r:
                raise RuntimeError("load-generator worker failed:\n" + r["exception"])
            out.append(r)
        return out

    def run(self, tasks, timeout=120):
        return self.collect(self.send(tasks), timeout)

    def close(self):
        for c in self.conns:
            try:
                c.send(None)
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join(2)


# =====================================================================================
# Process CPU accounting (from /proc)
# =====================================================================================

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    f = stat.rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle, summed over all CPUs (from /proc/stat)."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    v = [int(x) for x in f]
    idle = v[3] + v[4]  # idle + iowait
    return (sum(v[:8]) - idle) / CLK_TCK


def rss_mb(pid: int | None) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, TypeError):
        pass
    return 0.0


# =====================================================================================
# The two clusters
# =====================================================================================

def port_free(host: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def status(endpoint: str, timeout=1.0) -> pb.StatusResponse | None:
    with grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS) as ch:
        try:
            return rpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None


class EtcdCluster:
    """Three real etcd members on 127.0.0.1, default settings; stopped by PID."""

    kind = "etcd"

    def __init__(self, base_dir: Path):
        self.base = base_dir
        self.base.mkdir(parents=True, exist_ok=True)
        host = "127.0.0.1"
        for _ in range(200):
            port = random.randrange(20000, 30000, 10)
            if all(port_free(host, port + i) for i in range(6)):
                break
        else:
            raise RuntimeError("no free port range for etcd")
        self.names = ["etcd-1", "etcd-2", "etcd-3"]
        self.client = {n: f"{host}:{port + 2 * i}" for i, n in enumerate(self.names)}
        self.peer = {n: f"{host}:{port + 2 * i + 1}" for i, n in enumerate(self.names)}
        initial = ",".join(f"{n}=http://{self.peer[n]}" for n in self.names)
        token = f"bench-{uuid.uuid4().hex[:8]}"
        self.argv = {n: ["etcd", "--name", n, "--data-dir", str(self.base / n),
                         "--listen-client-urls", f"http://{self.client[n]}",
                         "--advertise-client-urls", f"http://{self.client[n]}",
                         "--listen-peer-urls", f"http://{self.peer[n]}",
                         "--initial-advertise-peer-urls", f"http://{self.peer[n]}",
                         "--initial-cluster", initial, "--initial-cluster-token", token,
                         "--initial-cluster-state", "new"] for n in self.names}
        self.procs: dict[str, subprocess.Popen] = {}

    def endpoints(self) -> list[str]:
        return [self.client[n] for n in self.names]

    def member_endpoint(self, name):
        return self.client[name]

    def pid(self, name):
        p = self.procs.get(name)
        return p.pid if p is not None and p.poll() is None else None

    def pids(self):
        return [self.pid(n) for n in self.names]

    def start(self, name):
        if self.pid(name) is not None:
            return
        with open(self.base / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(self.argv[name], stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def start_all(self):
        for n in self.names:
            self.start(n)

    def kill(self, name):
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def down(self):
        self.stop_all()
        shutil.rmtree(self.base, ignore_errors=True)

    def wait_ready(self, timeout=60):
        deadline = mono() + timeout
        while True:
            sts = [status(ep) for ep in self.endpoints()]
            if all(s is not None and s.leader for s in sts):
                return
            if mono() > deadline:
                raise RuntimeError(f"etcd not ready after {timeout}s; see {self.base}/*.log")
            time.sleep(0.1)


class LiteCluster:
    """Three etcdlite members through kubelab.cluster.Cluster."""

    kind = "etcdlite"

    def __init__(self, base_dir: Path):
        import inspect

        from kubelab import cluster as kc
        hosts = [f"127.30.0.{10 + i}" for i in (1, 2, 3)]
        ports = [getattr(kc, n) for n in ("STORE_CLIENT_PORT", "STORE_PEER_PORT",
                                          "STORE_METRICS_PORT") if hasattr(kc, n)]
        for _ in range(200):
            off = random.randrange(10000, 25000, 10)
            if all(port_free(h, p + off) for h in hosts for p in ports):
                break
        else:
            raise RuntimeError("no free port offset for etcdlite")
        self.port_offset = off
        kw = {}
        if "apiserver" in inspect.signature(kc.Cluster.create).parameters:
            kw["apiserver"] = False  # the store only
        self.cluster = kc.Cluster.create(base_dir, stores=3, port_offset=off, **kw)
        self.names = [c.name for c in self.cluster.stores]
        self.started: set[int] = set()

    def endpoints(self):
        return [target(u) for u in self.cluster.store_endpoints()]

    def member_endpoint(self, name):
        return target(self.cluster.component(name).client_url)

    def pid(self, name):
        return self.cluster.pid(name)

    def pids(self):
        return [self.pid(n) for n in self.names]

    def start(self, name):
        self.started.add(self.cluster.start(name))

    def start_all(self):
        for n in self.names:
            self.start(n)

    def kill(self, name):
        self.cluster.kill(name)
        self._reap()

    def down(self):
        self.cluster.down()
        self._reap()

    def _reap(self):
        """Cluster leaves its exited children as zombies; reap the ones this run started."""
        for pid in list(self.started):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.started.discard(pid)

    def wait_ready(self, timeout=60):
        from kubelab.cli import wait_ready
        asyncio.run(wait_ready(self.cluster, timeout))


def find_leader(cl) -> tuple[str, str]:
    """(leader member name, a follower's name), from Maintenance.Status on every member."""
    ids = {}
    leader_id = 0
    for n in cl.names:
        st = status(cl.member_endpoint(n))
        if st is None:
            continue
        ids[st.header.member_id] = n
        leader_id = leader_id or st.leader
    if leader_id not in ids:
        raise RuntimeError("no leader found")
    leader = ids[leader_id]
    follower = next(n for n in cl.names if n != leader)
    return leader, follower


def wait_caught_up(cl, timeout=30):
    """Every member up, with a leader, and applied the same raft index."""
    deadline = mono() + timeout
    while mono() < deadline:
        sts = [status(cl.member_endpoint(n)) for n in cl.names]
        if all(s is not None and s.leader for s in sts) and \
                len({s.header.revision for s in sts}) == 1:
            return True
        time.sleep(0.1)
    return False


# =====================================================================================
# Scenarios (coordinator side)
# =====================================================================================

def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def split(n, parts):
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _py_spy() -> str:
    """py-spy next to this interpreter, else $PY_SPY, else on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    if here.exists():
        return str(here)
    found = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not found:
        raise RuntimeError("--profile needs py-spy (pip install py-spy, or set PY_SPY)")
    return found


class Bench:
    def __init__(self, args, workers: Workers):
        self.args = args
        self.w = workers
        self.duration = args.duration or (2.0 if args.quick else 5.0)
        self.warm = 0.5 if args.quick else 1.0
        self.run_id = uuid.uuid4().hex[:6]
        self.clusters = []

    def _instr(self, cl):
        d = getattr(self.args, "instrument_dir", None)
        if not d or cl.kind != "etcdlite":
            return None
        out = {}
        for n in cl.names:
            try:
                out[n] = json.loads((Path(d) / f"{n}.json").read_text())
            except (OSError, ValueError):
                pass
        return out

    def _sample(self, cl):
        """CPU seconds so far: load-generator workers, the measured cluster's members, and the
        machine minus the other (idle) cluster this benchmark runs."""
        idle_cluster = sum(cpu_seconds(p) for c in self.clusters if c is not cl
                           for p in c.pids() if p)
        return ({p: cpu_seconds(p) for p in self.w.pids},
                {p: cpu_seconds(p) for p in cl.pids() if p},
                machine_busy_seconds() - idle_cluster)

    def load(self, cl, name, op, clients, serializable=False, profile=None):
        P = len(self.w.procs)
        shares = split(clients, P)
        start_at = mono() + 1.0
        tasks = [None if s == 0 else {
            "kind": "load", "op": op, "clients": s, "serializable": serializable,
            "endpoints": cl.endpoints(), "start_at": start_at, "warm": self.warm,
            "duration": self.duration, "key_prefix": f"b/{self.run_id}/{name}",
            "range_prefix": f"r/{self.run_id}/"} for s in shares]
        used = self.w.send(tasks)
        ws = start_at + self.warm
        we = ws + self.duration
        time.sleep(max(0, ws - mono()))
        spies = self._start_profile(cl, name, profile) if profile else []
        lg0, sv0, m0 = self._sample(cl)
        in0 = self._instr(cl)
        time.sleep(max(0, we - mono()))
        lg1, sv1, m1 = self._sample(cl)
        in1 = self._instr(cl)
        res = self.w.collect(used)
        for sp in spies:
            try:
                sp.wait(self.duration + 20)
            except subprocess.TimeoutExpired:
                sp.kill()
        lat = array("d")
        errors: collections.Counter = collections.Counter()
        for r in res:
            a = array("d")
            a.frombytes(r["lat"])
            lat.extend(a)
            errors.update(r["errors"])
        lat = sorted(lat)
        lg = sum(lg1[p] - lg0[p] for p in lg0)
        sv = sum(sv1.get(p, 0) - sv0[p] for p in sv0)
        ops = len(lat) / self.duration
        instr = instrument_delta(in0, in1, cl) if in0 and in1 else None
        return {"instrument": instr, "ops_s": ops, "p50_ms": pct(lat, .5) * 1e3,
                "p99_ms": pct(lat, .99) * 1e3,
                "n": len(lat), "errors": dict(errors), "clients": clients,
                "loadgen_cores": lg / self.duration, "server_cores": sv / self.duration,
                "loadgen_busiest_worker_cores": max(lg1[p] - lg0[p] for p in lg0) / self.duration,
                "other_cores": max(0.0, (m1 - m0) - lg - sv) / self.duration,
                "machine_idle_cores": max(0.0, (os.cpu_count() or 2) - (m1 - m0) / self.duration),
                "loadgen_us_per_op": (lg / len(lat) * 1e6) if lat else None}

    def _start_profile(self, cl, scen, outdir):
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        spies = []
        for n in cl.names:
            pid = cl.pid(n)
            if pid is None:
                continue
            out = outdir / f"{cl.kind}-{scen}-{n}.txt"
            spies.append(subprocess.Popen(
                [_py_spy(), "record", "--pid", str(pid),
                 "--duration", str(int(self.duration)), "--rate", "100", "--format", "raw",
                 "--threads", "--nonblocking", "--output", str(out)] +
                {"cpu": [], "idle": ["--idle"], "gil": ["--gil"]}[self.args.profile_mode],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return spies

    def preload(self, cl):
        r = self.w.run([{"kind": "preload", "endpoints": cl.endpoints(),
                         "range_prefix": f"r/{self.run_id}/"}] + [None] * (len(self.w.procs) - 1))
        if r[0]["errors"]:
            print(f"    preload of {RANGE_KEYS} keys needed retries: {r[0]['errors']}", flush=True)

    def watch(self, cl):
        leader, follower = find_leader(cl)
        start_at = mono() + 1.0
        r = self.w.run([{"kind": "watch", "leader": cl.member_endpoint(leader),
                         "follower": cl.member_endpoint(follower), "start_at": start_at,
                         "duration": self.duration,
                         "key_prefix": f"w/{self.run_id}/"}] + [None] * (len(self.w.procs) - 1))
        r = r[0]
        lat, pl, sl = array("d"), array("d"), array("d")
        lat.frombytes(r["lat"])
        pl.frombytes(r["put_lat"])
        sl.frombytes(r["send_lat"])
        lat, pl, sl = sorted(lat), sorted(pl), sorted(sl)
        return {"p50_ms": pct(lat, .5) * 1e3, "p99_ms": pct(lat, .99) * 1e3,
                "min_ms": (lat[0] * 1e3) if lat else None, "n": len(lat),
                "missed": r["missed"], "put_p50_ms": pct(pl, .5) * 1e3,
                "put_p99_ms": pct(pl, .99) * 1e3, "send_to_event_p50_ms": pct(sl, .5) * 1e3,
                "send_to_event_p99_ms": pct(sl, .99) * 1e3, "leader": leader,
                "follower": follower}

    def failover(self, cl):
        P = len(self.w.procs)
        clients = 8
        shares = split(clients, P)
        pre = 1.5 if self.args.quick else 3.0
        post = 5.0 if self.args.quick else 8.0
        start_at = mono() + 1.0
        kill_at = start_at + pre
        end_at = kill_at + post
        prefix = f"f/{self.run_id}/"
        tasks = [None if s == 0 else {
            "kind": "failover", "clients": s, "endpoints": cl.endpoints(),
            "start_at": start_at, "end_at": end_at, "key_prefix": prefix + str(i),
            "attempt_timeout": self.args.attempt_timeout} for i, s in enumerate(shares)]
        used = self.w.send(tasks)
        time.sleep(max(0, kill_at - 0.4 - mono()))
        for _ in range(20):
            leader, _ = find_leader(cl)
            st = status(cl.member_endpoint(leader))
            if st is not None:
                break
            time.sleep(0.05)
        old_id = st.header.member_id
        survivors = [cl.member_endpoint(n) for n in cl.names if n != leader]
        time.sleep(max(0, kill_at - mono()))
        t_kill = mono()
        cl.kill(leader)
        # when do the survivors agree on a new leader? (Status every 25 ms)
        elected = None
        while mono() < end_at - 0.5 and elected is None:
            sts = [status(ep, timeout=0.2) for ep in survivors]
            ls = {s.leader for s in sts if s is not None}
            if len(ls) == 1 and all(s is not None for s in sts) and 0 not in ls \
                    and old_id not in ls:
                elected = mono() - t_kill
            else:
                time.sleep(0.025)
        res = self.w.collect(used, timeout=post + 60)
        trace = []
        for n, snap in (self._instr(cl) or {}).items():
            if n == leader:
                continue
            for t, what in snap.get("events", []):
                if t_kill - 0.5 <= t <= t_kill + post:
                    trace.append((round(t - t_kill, 3), n, what))
        trace.sort()
        acks = [a for r in res for a in r["acks"]]
        fails = [f for r in res for f in r["fails"]]
        # every (worker, client) pair is a distinct writer
        after = [a for a in acks if a[2] >= t_kill]
        gap = (min(a[3] for a in after) - t_kill) if after else None
        # also: when had every writer resumed?
        first_after: dict = {}
        for ri, r in enumerate(res):
            for ci, key, t0, t1 in r["acks"]:
                if t0 >= t_kill:
                    k = (ri, ci)
                    first_after[k] = min(first_after.get(k, 1e18), t1)
        all_resumed = (max(first_after.values()) - t_kill) if len(first_after) == clients \
            else None
        before = sum(1 for a in acks if a[3] < t_kill)
        rate_before = before / (t_kill - start_at)
        # restart the killed member, then read back every acknowledged key
        t_restart = mono()
        cl.start(leader)
        cl.wait_ready(60)
        caught_up = wait_caught_up(cl, 60)
        rejoin = mono() - t_restart
        keys = [a[1] for a in acks]
        v = self.w.run([{"kind": "verify", "endpoints": cl.endpoints(), "prefix": prefix,
                         "keys": keys}] + [None] * (P - 1), timeout=120)[0]
        lost = v["linearizable"]
        per_member = {ep: v["per_member"][ep] for ep in v["per_member"]}
        codes = collections.Counter(f[3] for f in fails)
        return {"gap_s": gap, "all_writers_resumed_s": all_resumed, "killed": leader,
                "new_leader_seen_s": elected, "attempt_timeout_s": self.args.attempt_timeout,
                "raft_trace": trace,
                "acked": len(acks), "lost": lost, "lost_per_member": per_member,
                "stored_keys": v["stored_keys"], "failed_attempts": dict(codes),
                "write_rate_before_kill": rate_before, "rejoin_s": rejoin,
                "caught_up": caught_up}

    def setup(self, cl):
        out = {}
        print(f"=== {cl.kind}: starting 3 members", flush=True)
        t = mono()
        cl.start_all()
        cl.wait_ready(60)
        print(f"    ready in {mono() - t:.1f}s; endpoints {', '.join(cl.endpoints())}",
              flush=True)
        time.sleep(1.0)
        idle0 = {p: cpu_seconds(p) for p in cl.pids()}
        time.sleep(2.0)
        out["idle_server_cores"] = sum(cpu_seconds(p) - idle0[p] for p in idle0) / 2.0
        return out

    def scenario(self, cl, name, out):
        a = self.args
        prof = a.profile if cl.kind == "etcdlite" else None
        pscen = set(a.profile_scenarios.split(","))
        if name in LOADS:
            op, n, ser = LOADS[name]
            if op == "range" and "preloaded" not in out:
                self.preload(cl)
                out["preloaded"] = RANGE_KEYS
            r = self.load(cl, name, op, n, ser, profile=prof if name in pscen else None)
            out[name] = r
            self._print_row(cl.kind, name, r)
            if r.get("instrument"):
                print_instrument(r["instrument"])
        elif name == "watch":
            r = self.watch(cl)
            out["watch"] = r
            print(f"    {cl.kind:<8} {'watch':<12} p50 {r['p50_ms']:.2f} ms  p99 "
                  f"{r['p99_ms']:.2f} ms  (n={r['n']}, missed={r['missed']}, min "
                  f"{r['min_ms']:.2f} ms; put-send->event p50 {r['send_to_event_p50_ms']:.2f} "
                  f"p99 {r['send_to_event_p99_ms']:.2f} ms; put on {r['leader']}, watch on "
                  f"{r['follower']})", flush=True)
        elif name == "failover":
            out["rss_mb"] = {n: round(rss_mb(cl.pid(n)), 1) for n in cl.names}
            r = self.failover(cl)
            out["failover"] = r
            gap = f"{r['gap_s']:.2f}s" if r["gap_s"] is not None else "no write succeeded"
            res_s = r["all_writers_resumed_s"]
            res_s = f"{res_s:.2f}s" if res_s is not None else "never"
            el = r["new_leader_seen_s"]
            el = f"{el:.2f}s" if el is not None else "not seen"
            print(f"    {cl.kind:<8} {'failover':<12} killed {r['killed']}: gap {gap} (new "
                  f"leader seen by Status after {el}; all 8 writers resumed after {res_s}), "
                  f"acked {r['acked']} (before the kill {r['write_rate_before_kill']:.0f}/s), "
                  f"lost {r['lost']} (per member {r['lost_per_member']}), failed attempts "
                  f"{r['failed_attempts']}, rejoin+catch-up {r['rejoin_s']:.1f}s", flush=True)
            for t, n, what in r.get("raft_trace") or []:
                print(f"        t{t:+.3f}s {n}: {what}")

    @staticmethod
    def _print_row(kind, name, r):
        err = f" errors {r['errors']}" if r["errors"] else ""
        print(f"    {kind:<8} {name:<12} {r['ops_s']:6.0f} ops/s  p50 {r['p50_ms']:7.2f} ms  "
              f"p99 {r['p99_ms']:7.2f} ms  | loadgen {r['loadgen_cores']:.2f} cores "
              f"({r['loadgen_us_per_op'] or 0:.0f} us/op, busiest worker "
              f"{r['loadgen_busiest_worker_cores']:.2f}), members "
              f"{r['server_cores']:.2f}, other procs {r['other_cores']:.2f}, idle "
              f"{r['machine_idle_cores']:.2f}{err}", flush=True)


def instrument_delta(a, b, cl):
    """Per member, what happened between two instrument snapshots (see bench/instrument/)."""
    leader = None
    try:
        leader = find_leader(cl)[0]
    except RuntimeError:
        pass
    out = {}
    for n in b:
        if n not in a:
            continue
        x, y = a[n], b[n]
        dt = y["t"] - x["t"]
        if dt <= 0:
            continue

        def d(k, x=x, y=y):
            return y.get(k, 0) - x.get(k, 0)
        entries = d("raft_apply_entry_calls")
        r = {"role": "leader" if n == leader else "follower", "window_s": round(dt, 2),
             "raft_entries_applied_per_s": d("raft_apply_entry_calls") / dt,
             "mvcc_ops_per_s": d("mvcc_apply_calls") / dt,
             "ops_per_entry": d("mvcc_apply_calls") / entries if entries else None,
             "journal_adds_per_applied_entry": d("journal_add_calls") / entries
             if entries else None,
             "journal_entries_deleted_per_s": d("journal_delete_from_items") / dt,
             "journal_truncations_per_s": d("journal_delete_from_calls") / dt,
             "flushes_per_s": d("journal_flush_calls") / dt,
             "flush_ms_avg": d("journal_flush_s") / d("journal_flush_calls") * 1e3
             if d("journal_flush_calls") else None,
             "raft_thread_busy_in_flush": d("journal_flush_s") / dt,
             "raft_thread_in_poll_wait": d("raft_poll_s") / dt,
             "raft_send_append_entries_per_s": d("raft_send_append_entries_calls") / dt,
             "raft_tcp_sends_per_s": d("raft_tcp_send_calls") / dt,
             "raft_ticks_per_s": d("raft_tick_calls") / dt}
        cpu = {}
        for k, v in y.get("thread_cpu", {}).items():
            label = k.split(":", 1)[1]
            cpu[label] = cpu.get(label, 0) + (v - x.get("thread_cpu", {}).get(k, 0)) / dt
        r["thread_cores"] = {k: round(v, 3) for k, v in sorted(cpu.items(),
                                                               key=lambda kv: -kv[1]) if v > 0.005}
        out[n] = r
    return out


def print_instrument(instr):
    for n, r in sorted(instr.items()):
        f = r["flush_ms_avg"]
        print(f"        {n} ({r['role']}): {r['raft_entries_applied_per_s']:.0f} raft entries/s, "
              f"{r['mvcc_ops_per_s']:.0f} ops/s ({r['ops_per_entry'] or 0:.1f} ops/entry); "
              f"journal adds per applied entry {r['journal_adds_per_applied_entry'] or 0:.2f}, "
              f"truncations {r['journal_truncations_per_s']:.0f}/s removing "
              f"{r['journal_entries_deleted_per_s']:.0f} entries/s; msync "
              f"{r['flushes_per_s']:.0f}/s x {f or 0:.2f} ms = "
              f"{100 * r['raft_thread_busy_in_flush']:.0f}% "
              f"of the Raft thread, poll wait {100 * r['raft_thread_in_poll_wait']:.0f}%, "
              f"{r['raft_ticks_per_s']:.0f} ticks/s, "
              f"{r['raft_tcp_sends_per_s']:.0f} peer messages sent/s; "
              f"threads (cores) {r['thread_cores']}", flush=True)


# =====================================================================================
# Report
# =====================================================================================

# scenario -> (operation, concurrent clients, serializable)
LOADS = {"put1": ("put", 1, False), "put16": ("put", 16, False), "put64": ("put", 64, False),
         "range_lin64": ("range", 64, False), "range_ser64": ("range", 64, True)}
ALL_SCENARIOS = ["put1", "put16", "put64", "range_lin64", "range_ser64", "watch", "failover"]
LABELS = {"put1": "put, 1 client", "put16": "put, 16 clients", "put64": "put, 64 clients",
          "range_lin64": "get linearizable, 64 cl", "range_ser64": "get serializable, 64 cl",
          "watch": "watch put-ack->event"}


def report(results, args):
    e = results.get("etcd", {})
    l_ = results.get("etcdlite", {})
    rows = [["scenario", "etcd ops/s", "etcdlite ops/s", "ratio", "etcd p50/p99 ms",
             "etcdlite p50/p99 ms"]]

    def lat(r):
        return f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}" if r else "-"

    for s in ("put1", "put16", "put64", "range_lin64", "range_ser64", "watch"):
        a, b = e.get(s), l_.get(s)
        ops_a = f"{a['ops_s']:,.0f}" if a and "ops_s" in a else "-"
        ops_b = f"{b['ops_s']:,.0f}" if b and "ops_s" in b else "-"
        ratio = f"{b['ops_s'] / a['ops_s']:.2f}" if a and b and "ops_s" in a and a["ops_s"] \
            else "-"
        rows.append([LABELS[s], ops_a, ops_b, ratio, lat(a), lat(b)])
    fa, fb = e.get("failover"), l_.get("failover")

    def gap(f):
        if not f:
            return "-"
        return f"{f['gap_s']:.2f} s" if f["gap_s"] is not None else "none"

    def lost(f):
        return f"{f['lost']} of {f['acked']}" if f else "-"

    rows.append(["failover gap (leader SIGKILL)", gap(fa), gap(fb), "", "", ""])
    rows.append(["lost acknowledged writes", lost(fa), lost(fb), "", "", ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    print("=" * (sum(widths) + 3 * (len(widths) - 1)))
    for i, r in enumerate(rows):
        print(" | ".join(c.ljust(w) if j == 0 else c.rjust(w)
                         for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print("=" * (sum(widths) + 3 * (len(widths) - 1)))

    # load generator note
    print(f"\nCPU during each measurement window, in cores (machine: {os.cpu_count()} cores). "
          f"Load generator = {args.procs} worker processes x grpc.aio+uvloop, {args.channels} "
          f"channel(s) per endpoint each; 'other' = processes this benchmark did not start:")
    crow = [["scenario", "store", "loadgen", "busiest worker", "us/op", "members", "other",
             "idle"]]
    peak_worker, peak_other = 0.0, 0.0
    for s_ in ("put1", "put16", "put64", "range_lin64", "range_ser64"):
        for kind, res in (("etcd", e), ("etcdlite", l_)):
            r = res.get(s_)
            if not r:
                continue
            peak_worker = max(peak_worker, r["loadgen_busiest_worker_cores"])
            peak_other = max(peak_other, r["other_cores"])
            crow.append([s_, kind, f"{r['loadgen_cores']:.2f}",
                         f"{r['loadgen_busiest_worker_cores']:.2f}",
                         f"{r['loadgen_us_per_op'] or 0:.0f}", f"{r['server_cores']:.2f}",
                         f"{r['other_cores']:.2f}", f"{r['machine_idle_cores']:.2f}"])
    if len(crow) > 1:
        cw = [max(len(r[i]) for r in crow) for i in range(len(crow[0]))]
        for r in crow:
            print("  " + "  ".join(c.rjust(w) if i > 1 else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(r, cw))))
        print(f"  The busiest load-generator process used at most {peak_worker:.2f} of a core "
              f"(a worker near 1.00 would mean the generator itself is the limit).")
        if peak_other > 0.1:
            print(f"  WARNING: processes not started by this benchmark used up to "
                  f"{peak_other:.2f} cores during a window; absolute figures are depressed and "
                  f"noisy (run on a quiet machine for reference numbers).")
    for kind, res in (("etcd", e), ("etcdlite", l_)):
        if res.get("rss_mb"):
            print(f"  {kind} member RSS after the load scenarios (MB): {res['rss_mb']}")

    targets = []
    if e.get("put64") and l_.get("put64"):
        ratio = l_["put64"]["ops_s"] / e["put64"]["ops_s"]
        targets.append(("put throughput at 64 clients >= 0.5x etcd", f"{ratio:.2f}x",
                        ratio >= 0.5))
    if e.get("put16") and l_.get("put16"):
        ratio = l_["put16"]["p99_ms"] / e["put16"]["p99_ms"]
        val = (f"{ratio:.2f}x ({l_['put16']['p99_ms']:.1f} vs "
               f"{e['put16']['p99_ms']:.1f} ms)")
        targets.append(("put p99 at 16 clients <= 3x etcd", val, ratio <= 3.0))
    if fb:
        g = fb["gap_s"]
        targets.append(("failover gap <= 2 s", f"{g:.2f} s" if g is not None else "none",
                        g is not None and g <= 2.0))
        targets.append(("0 lost acknowledged writes", f"{fb['lost']} lost of {fb['acked']}",
                        fb["lost"] == 0 and all(v == 0 for v in
                                                fb["lost_per_member"].values())))
    if targets:
        print("\nTargets (etcdlite):")
        w = max(len(t[0]) for t in targets)
        for name, val, ok in targets:
            print(f"  {'PASS' if ok else 'MISS'}  {name:<{w}}  {val}")
    results["targets"] = [{"target": n, "value": v, "pass": ok} for n, v, ok in targets]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 s windows instead of 5 s")
    p.add_argument("--duration", type=float, help="measurement window per scenario, seconds")
    p.add_argument("--procs", type=int, default=4, help="load-generator worker processes")
    p.add_argument("--channels", type=int, default=CHANNELS_PER_ENDPOINT,
                   help="gRPC channels (TCP connections) per endpoint in each worker")
    p.add_argument("--json", metavar="FILE", help="save the results as JSON")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the members' logs to DIR")
    p.add_argument("--only", choices=["etcd", "etcdlite"], help="benchmark one store only")
    p.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--attempt-timeout", type=float, default=FAILOVER_ATTEMPT_TIMEOUT,
                   help="failover: seconds before a write attempt is abandoned and retried "
                        "on the next endpoint (default %(default)s)")
    p.add_argument("--profile", metavar="DIR",
                   help="py-spy the etcdlite members during the put and linearizable get "
                        "scenarios (raw collapsed stacks, per thread, into DIR)")
    p.add_argument("--profile-mode", choices=["cpu", "idle", "gil"], default="cpu",
                   help="cpu: on-CPU samples; idle: all samples (wall clock); gil: only the "
                        "thread holding the GIL")
    p.add_argument("--profile-scenarios", default="put1,put16,put64,range_lin64")
    p.add_argument("--instrument", action="store_true",
                   help="diagnostics: load bench/instrument/sitecustomize.py into the etcdlite "
                        "members (counters for Raft entries, journal writes/msyncs, threads' "
                        "CPU) and print them per scenario; not for the headline numbers")
    args = p.parse_args(argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C must stop the clusters even when started from a shell that ignores SIGINT for
    # background jobs
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="store-bench-"))
    args.instrument_dir = None
    if args.instrument:
        args.instrument_dir = str(tmp / "instrument")
        os.makedirs(args.instrument_dir)
        os.environ["ETCDLITE_BENCH_INSTRUMENT"] = args.instrument_dir
        extra = str(Path(__file__).resolve().parent / "instrument")
        os.environ["PYTHONPATH"] = extra + (os.pathsep + os.environ["PYTHONPATH"]
                                            if os.environ.get("PYTHONPATH") else "")
    clusters = []
    workers = None
    results = {"settings": {"quick": args.quick, "procs": args.procs,
                            "value_size": VALUE_SIZE, "cpus": os.cpu_count()}}
    try:
        workers = Workers(args.procs, args.channels)
        bench = Bench(args, workers)
        results["settings"]["duration_s"] = bench.duration
        print(f"store_bench: {args.procs} load-generator processes, window {bench.duration:.0f}s "
              f"(+{bench.warm:.1f}s warm-up) per scenario, data under {tmp}", flush=True)
        kinds = [args.only] if args.only else ["etcd", "etcdlite"]
        for kind in kinds:
            cl = EtcdCluster(tmp / "etcd") if kind == "etcd" else LiteCluster(tmp / "etcdlite")
            clusters.append(cl)
            bench.clusters.append(cl)
            results[kind] = bench.setup(cl)
        # Scenario by scenario, alternating which store goes first, so that both see the same
        # background load; the failover (which kills and restarts a member) comes last.
        want = [s_ for s_ in ALL_SCENARIOS if s_ in args.scenarios.split(",")]
        print(flush=True)
        for i, scen in enumerate(want):
            for cl in (clusters if i % 2 == 0 else list(reversed(clusters))):
                bench.scenario(cl, scen, results[cl.kind])
        if args.keep_logs:
            for cl in clusters:
                src = cl.base if cl.kind == "etcd" else cl.cluster.state_dir / "logs"
                dst = Path(args.keep_logs) / cl.kind
                dst.mkdir(parents=True, exist_ok=True)
                for f in Path(src).glob("*.log"):
                    shutil.copy(f, dst / f.name)
        for cl in clusters:
            cl.down()
        report(results, args)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
            print(f"\nresults saved to {args.json}")
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the clusters", file=sys.stderr)
        return 130
    finally:
        for cl in clusters:
            try:
                cl.down()
            except Exception:  # noqa: BLE001 - keep stopping the other cluster
                traceback.print_exc()
        if workers is not None:
            workers.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
