#!/usr/bin/env python3
"""API server benchmark: latency and throughput of the REST (HTTPS) and gRPC front ends.

    .venv/bin/python bench/apiserver_bench.py [--quick] [--json FILE] [--procs 3]
        [--duration S] [--clients 10] [--watchers 100] [--watch-updates N] [--watch-rate R]
        [--list-clients 1] [--ops create,get,update,list,watch] [--fronts rest,grpc]
        [--no-baseline] [--profile DIR] [--keep-logs DIR] [--wait-quiet S]

One run creates its own cluster (kubelab.cluster.Cluster: 3 etcdlite stores + the API server) in
a temp state dir with a random free port offset (20000-30000, step 10), waits until it is ready,
and `.down()`s it at the end (also on errors, Ctrl-C and SIGTERM). Against it, each operation is
measured through BOTH front ends, one after the other (REST, then gRPC, then the next operation):

- create:  POST a ConfigMap (~200 bytes of data) under a new name;
- get:     GET one of 1,000 preloaded ConfigMaps, chosen at random;
- update:  PUT a ConfigMap with its current resourceVersion (each client owns one object and
           sends the object returned by its previous update, so no conflicts are expected);
  all three at --clients (10) concurrent closed-loop clients, each with its own keep-alive
  connection (REST: one aiohttp session with one HTTPS connection, verification off; gRPC: one
  kubelab.client.ClusterClient whose channel is its own TCP connection);
- list:    list the namespace holding the 1,000 ConfigMaps (`limit` unset) at --list-clients
           (1) clients; latency per call, including the client's JSON decoding of the answer
           (ClusterClient always decodes; the REST client does the same, for parity);
- watch:   --watchers (100) watch streams on the ConfigMaps of one namespace, each its own
           connection, spread over the load-generator processes other than the writer's; once
           all of them have delivered their initial ADDED event, a writer (its own process)
           updates one object --watch-updates times at --watch-rate per second (with
           resourceVersion, through the same front end). Latency = time a watcher receives the
           event (matched by resourceVersion) minus the time the writer received the update's
           response; p50/p99 over all watcher x event pairs. It can be slightly negative: the
           event may reach a watcher before the response reaches the writer.

For create, get and update a third row, "store*", is a baseline and not the API server: the
store operations the API server performs for that call (create: range of the namespace key +
txn "absent" put; get: range; update: range + txn "mod revision unchanged" put), sent directly to
etcdlite from the load generator with kubelab's EtcdClient at the same concurrency. It is the
floor under the API server's latency on this machine (--no-baseline skips it).

Latencies are wall-clock (CLOCK_MONOTONIC, one clock for every process of the machine) around
the client library call; a request counts if it completes inside the measurement window (after
a warm-up). The load generator is --procs worker processes (multiprocessing, spawn) on uvloop;
the clients are split evenly over them. The coordinator samples /proc over every window and
prints the CPU used by the API server, the stores, each load-generator process and everything
else, so one can see whether the generator (or another tenant of the machine) is the limit.
--profile DIR runs `py-spy record --format raw` on the API server during every window (then
summarise with bench/pyspy_summary.py); profiling perturbs the figures, use it in a separate run.

Targets: single-object calls (create/get/update) p99 <= 25 ms at 10 concurrent clients; watch
delivery p99 <= 50 ms to 100 watchers.
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
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

mono = time.monotonic  # CLOCK_MONOTONIC: the same clock in every process of the machine

NS_LIST = "bench-list"
NS_CREATE = "bench-create"
NS_UPDATE = "bench-update"
NS_WATCH = "bench-watch"
NAMESPACES = (NS_LIST, NS_CREATE, NS_UPDATE, NS_WATCH)
LIST_OBJECTS = 1000
DATA_SIZE = 200
FRONTS = {"rest": "REST", "grpc": "gRPC", "store": "store*"}
ALL_OPS = ["create", "get", "update", "list", "watch"]
SINGLE_P99_TARGET_MS = 25.0
WATCH_P99_TARGET_MS = 50.0


def payload(tag) -> str:
    s = f"{tag}:"
    return (s + "abcdefghijklmnopqrstuvwxyz0123456789" * (DATA_SIZE // 36 + 2))[:DATA_SIZE]


def configmap(ns: str, name: str, tag="0") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "apiserver-bench"}},
            "data": {"payload": payload(tag)}}


def list_name(i: int) -> str:
    return f"l-{i:04d}"


# =====================================================================================
# Clients (worker side): the same five calls over REST and over gRPC
# =====================================================================================

class BenchError(Exception):
    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


_SSL: ssl.SSLContext | None = None


def _ssl_ctx() -> ssl.SSLContext:
    """One client context per process (loading the CA bundle costs tens of ms)."""
    global _SSL
    if _SSL is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _SSL = ctx
    return _SSL


class RestClient:
    """One aiohttp session with a single keep-alive HTTPS connection (verification off)."""

    def __init__(self, server: str, token: str, tag: str):
        import aiohttp
        self.aiohttp = aiohttp
        self.json_hdr = {"Content-Type": "application/json"}
        self.base = server.rstrip("/")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, ssl=_ssl_ctx(), keepalive_timeout=600),
            headers={"Authorization": f"Bearer {token}",
                     "User-Agent": f"apiserver-bench/{tag}"},
            timeout=aiohttp.ClientTimeout(total=30))

    def _url(self, ns: str, name: str | None = None) -> str:
        u = f"{self.base}/api/v1/namespaces/{ns}/configmaps"
        return f"{u}/{name}" if name else u

    async def _req(self, method: str, url: str, body: dict | None = None, ok=(200,)):
        data = json.dumps(body).encode() if body is not None else None
        try:
            async with self.session.request(method, url, data=data,
                                            headers=self.json_hdr if data else None) as r:
                raw = await r.read()
                status = r.status
        except (TimeoutError, self.aiohttp.ClientError, OSError) as e:
            raise BenchError(type(e).__name__, str(e)) from None
        if status not in ok:
            reason = ""
            try:
                reason = json.loads(raw).get("reason", "")
            except (ValueError, AttributeError):
                pass
            raise BenchError(f"HTTP {status} {reason}".strip(), raw[:200].decode("utf-8",
                                                                                 "replace"))
        return json.loads(raw)

    async def create(self, ns: str, obj: dict) -> dict:
        return await self._req("POST", self._url(ns), obj, ok=(201,))

    async def get(self, ns: str, name: str) -> dict:
        return await self._req("GET", self._url(ns, name))

    async def update(self, obj: dict) -> dict:
        md = obj["metadata"]
        return await self._req("PUT", self._url(md["namespace"], md["name"]), obj)

    async def list(self, ns: str) -> dict:
        return await self._req("GET", self._url(ns))

    async def watch(self, ns: str):
        """Yield (receive time, type, object) for every event of a ?watch=1 stream."""
        aiohttp = self.aiohttp
        try:
            async with self.session.get(
                    self._url(ns) + "?watch=1",
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as r:
                if r.status != 200:
                    raise BenchError(f"HTTP {r.status}", (await r.read())[:200].decode())
                async for line in r.content:
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    yield mono(), ev["type"], ev["object"]
        except (aiohttp.ClientError, OSError) as e:
            raise BenchError(type(e).__name__, str(e)) from None

    async def close(self) -> None:
        await self.session.close()


class GrpcClient:
    """kubelab.client.ClusterClient; a distinct user agent per client gives every client its own
    subchannel (TCP connection) instead of grpc-core's shared one. No retries (retry_for=0)."""

    def __init__(self, target: str, token: str, tag: str):
        from kubelab.client import APIError, ClusterClient
        self.APIError = APIError
        self.c = ClusterClient(target, token, retry_for=0.0,
                               user_agent=f"apiserver-bench/{tag}")

    def _err(self, e) -> BenchError:
        return BenchError(f"{e.code} {e.reason}", e.message[:200])

    async def create(self, ns: str, obj: dict) -> dict:
        try:
            return await self.c.create("ConfigMap", obj, ns)
        except self.APIError as e:
            raise self._err(e) from None

    async def get(self, ns: str, name: str) -> dict:
        try:
            return await self.c.get("ConfigMap", ns, name)
        except self.APIError as e:
            raise self._err(e) from None

    async def update(self, obj: dict) -> dict:
        try:
            return await self.c.update("ConfigMap", obj)
        except self.APIError as e:
            raise self._err(e) from None

    async def list(self, ns: str) -> dict:
        try:
            return await self.c.list("ConfigMap", ns)
        except self.APIError as e:
            raise self._err(e) from None

    async def watch(self, ns: str):
        try:
            async for etype, obj in self.c.watch("ConfigMap", ns, allow_bookmarks=False):
                yield mono(), etype, obj
        except self.APIError as e:
            raise self._err(e) from None

    async def close(self) -> None:
        await self.c.close()


class StoreClient:
    """Baseline: the store operations the API server performs for each call, sent straight to
    etcdlite with kubelab's EtcdClient (round-robin over the members, as the API server does):
    create = range of the namespace key + txn "key absent" put; get = range; update = range +
    txn "mod revision unchanged" put. Keys of created/updated objects live under
    /bench-baseline/ (outside the API server's watch caches); values are ConfigMap JSON."""

    def __init__(self, etcd, tag: str):
        from kubelab.etcdclient import EtcdError
        from proto.etcdserverpb import rpc_pb2 as pb
        self.etcd = etcd
        self.pb = pb
        self.EtcdError = EtcdError

    @staticmethod
    def _key(ns: str, name: str, base: str = "/registry/configmaps") -> bytes:
        return f"{base}/{ns}/{name}".encode()

    async def _txn(self, key: bytes, value: bytes, mod_rev: int | None):
        pb = self.pb
        cmp = pb.Compare(key=key, target=pb.Compare.CREATE, result=pb.Compare.EQUAL,
                         create_revision=0) if mod_rev is None else \
            pb.Compare(key=key, target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                       mod_revision=mod_rev)
        resp = await self.etcd.txn([cmp], [pb.RequestOp(request_put=pb.PutRequest(
            key=key, value=value))])
        if not resp.succeeded:
            raise BenchError("txn failed")
        return resp

    async def create(self, ns: str, obj: dict) -> dict:
        try:
            await self.etcd.range(f"/registry/namespaces/{ns}".encode())
            key = self._key(ns, obj["metadata"]["name"], "/bench-baseline")
            await self._txn(key, json.dumps(obj, separators=(",", ":")).encode(), None)
        except self.EtcdError as e:
            raise BenchError(e.code.name, e.message) from None
        return obj

    async def get(self, ns: str, name: str) -> dict:
        try:
            resp = await self.etcd.range(self._key(ns, name))
        except self.EtcdError as e:
            raise BenchError(e.code.name, e.message) from None
        if not resp.kvs:
            raise BenchError("not found")
        return json.loads(resp.kvs[0].value)

    async def update(self, obj: dict) -> dict:
        md = obj["metadata"]
        key = self._key(md["namespace"], md["name"], "/bench-baseline")
        try:
            resp = await self.etcd.range(key)
            await self._txn(key, json.dumps(obj, separators=(",", ":")).encode(),
                            resp.kvs[0].mod_revision if resp.kvs else 0)
        except self.EtcdError as e:
            raise BenchError(e.code.name, e.message) from None
        return obj

    async def close(self) -> None:
        pass


def make_client(task: dict, tag: str, etcd=None):
    if task["fe"] == "rest":
        return RestClient(task["server"], task["token"], tag)
    if task["fe"] == "store":
        return StoreClient(etcd, tag)
    return GrpcClient(task["grpc"], task["token"], tag)


# =====================================================================================
# Load-generator worker processes
# =====================================================================================

def worker_main(conn, index: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator handles Ctrl-C
    import aiohttp  # noqa: F401 - import everything before the first measured task
    import grpc  # noqa: F401
    import uvloop

    import kubelab.client  # noqa: F401
    _ssl_ctx()
    uvloop.run(_worker_loop(conn, index))


async def _worker_loop(conn, index: int) -> None:
    loop = asyncio.get_running_loop()
    handlers = {"ping": _w_ping, "prep": _w_prep, "load": _w_load, "watch": _w_watch,
                "write": _w_write}
    while True:
        try:
            task = await loop.run_in_executor(None, conn.recv)
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            result = await handlers[task["kind"]](task, index, conn)
        except Exception:  # noqa: BLE001 - reported to the coordinator
            result = {"exception": traceback.format_exc()}
        conn.send(result)


async def _w_ping(task, wi, conn):
    return {"pid": os.getpid()}


async def _sleep_until(t: float) -> None:
    d = t - mono()
    if d > 0:
        await asyncio.sleep(d)


async def _w_prep(task, wi, conn):
    """Namespaces (worker 0), this worker's share of the 1,000 list objects, the watch objects."""
    from kubelab.client import APIError, ClusterClient
    errors: collections.Counter = collections.Counter()
    async with ClusterClient(task["grpc"], task["token"], retry_for=10.0,
                             user_agent=f"apiserver-bench/prep-{wi}") as c:
        async def create(ns, obj, kind="ConfigMap"):
            for _ in range(20):
                try:
                    await c.create(kind, obj, ns)
                    return
                except APIError as e:
                    if e.code == 409:
                        return
                    errors[f"{e.code} {e.reason}"] += 1
                    await asyncio.sleep(0.1)
            raise RuntimeError(f"prep: cannot create {obj['metadata']['name']}: {dict(errors)}")

        for ns in task.get("namespaces", ()):
            await create(None, {"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": ns}}, "Namespace")
        for name in task.get("watch_objects", ()):
            await create(NS_WATCH, configmap(NS_WATCH, name))
        q = collections.deque(task.get("list_indices", ()))

        async def loader():
            while q:
                i = q.popleft()
                await create(NS_LIST, configmap(NS_LIST, list_name(i), i))
        await asyncio.gather(*(loader() for _ in range(10)))
    return {"errors": dict(errors)}


async def _w_load(task, wi, conn):
    """task["clients"] closed-loop clients of one operation. The clients connect first; the
    worker then reports ready through the pipe and waits for the coordinator's start time.
    Requests completing inside [ws, we) are counted."""
    op = task["op"]
    fe = task["fe"]
    ws = we = 0.0
    n_clients = task["clients"]
    lat = array("d")
    errors: collections.Counter = collections.Counter()
    bad_lists = 0
    items_seen: set[int] = set()
    etcd = None
    if fe == "store":  # one store client per process, like the API server's single one
        from kubelab.etcdclient import EtcdClient
        etcd = EtcdClient(task["store_endpoints"])
    clients = [make_client(task, f"{fe}-{op}-{wi}-{ci}", etcd) for ci in range(n_clients)]
    state: list[dict] = [{} for _ in range(n_clients)]

    async def setup(ci):
        c = clients[ci]
        await c.get(NS_LIST, list_name(0))  # opens the connection (TLS handshake, HTTP/2)
        if op == "update":
            name = f"u-{fe}-{wi}-{ci}"
            try:
                state[ci]["obj"] = await c.create(NS_UPDATE, configmap(NS_UPDATE, name))
            except BenchError as e:
                if "409" not in e.code:
                    raise
                state[ci]["obj"] = await c.get(NS_UPDATE, name)

    async def client(ci):
        nonlocal bad_lists
        c = clients[ci]
        st = state[ci]
        rnd = random.Random(wi * 1000 + ci)
        n = 0
        while True:
            t0 = mono()
            if t0 >= we:
                return
            try:
                if op == "create":
                    await c.create(NS_CREATE, configmap(NS_CREATE, f"c-{fe}-{wi}-{ci}-{n}", n))
                elif op == "get":
                    await c.get(NS_LIST, list_name(rnd.randrange(LIST_OBJECTS)))
                elif op == "update":
                    obj = st["obj"]
                    obj["data"]["payload"] = payload(f"{n}")
                    st["obj"] = await c.update(obj)
                elif op == "list":
                    out = await c.list(NS_LIST)
                    k = len(out.get("items") or ())
                    items_seen.add(k)
                    if k != LIST_OBJECTS:
                        bad_lists += 1
                else:
                    raise ValueError(op)
            except BenchError as e:
                if ws <= t0 < we:
                    errors[e.code] += 1
                if op == "update":
                    try:
                        md = st["obj"]["metadata"]
                        st["obj"] = await c.get(md["namespace"], md["name"])
                    except BenchError:
                        pass
                n += 1
                await asyncio.sleep(0.01)
                continue
            t1 = mono()
            n += 1
            if ws <= t1 < we:
                lat.append(t1 - t0)

    try:
        t0 = mono()
        await asyncio.gather(*(setup(ci) for ci in range(n_clients)))
        conn.send({"ready": True, "setup_s": mono() - t0})
        go = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        ws = go["start_at"] + go["warm"]
        we = ws + go["duration"]
        await _sleep_until(go["start_at"])
        await asyncio.gather(*(client(ci) for ci in range(n_clients)))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        if etcd is not None:
            await etcd.close()
    return {"lat": lat.tobytes(), "errors": dict(errors), "bad_lists": bad_lists,
            "items_seen": sorted(items_seen)}


async def _w_watch(task, wi, conn):
    """Open task["watchers"] watch streams; report readiness through the pipe; record the
    receive time of every MODIFIED event of task["object"] until the coordinator says stop."""
    fe = task["fe"]
    n = task["watchers"]
    obj_name = task["object"]
    clients = [make_client(task, f"{fe}-watch-{wi}-{i}") for i in range(n)]
    recv: list[dict[int, float]] = [{} for _ in range(n)]
    ready = [asyncio.Event() for _ in range(n)]
    errors: collections.Counter = collections.Counter()
    other_events = collections.Counter()

    async def watcher(i):
        try:
            async for t, etype, obj in clients[i].watch(NS_WATCH):
                ready[i].set()
                md = obj.get("metadata", {})
                if etype == "MODIFIED" and md.get("name") == obj_name:
                    recv[i][int(md["resourceVersion"])] = t
                elif ready[i].is_set() and etype != "ADDED":
                    other_events[etype] += 1
        except asyncio.CancelledError:
            raise
        except BenchError as e:
            errors[e.code] += 1
        except Exception as e:  # noqa: BLE001
            errors[type(e).__name__] += 1

    t0 = mono()
    tasks = [asyncio.create_task(watcher(i)) for i in range(n)]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)),
                               task["open_timeout"])
    except TimeoutError:
        pass
    nready = sum(1 for r in ready if r.is_set())
    conn.send({"ready": nready, "open_s": mono() - t0, "errors": dict(errors)})
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # "stop"
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {"recv": [list(d.items()) for d in recv], "ready_flags": [r.is_set() for r in ready],
            "errors": dict(errors), "other_events": dict(other_events)}


async def _w_write(task, wi, conn):
    """Update task["object"] task["updates"] times at task["rate"]/s, with resourceVersion."""
    c = make_client(task, f"{task['fe']}-writer-{wi}")
    writes = []
    errors: collections.Counter = collections.Counter()
    try:
        obj = await c.get(NS_WATCH, task["object"])
        start = task["start_at"]
        await _sleep_until(start)
        for i in range(task["updates"]):
            await _sleep_until(start + i / task["rate"])
            obj["data"]["payload"] = payload(f"w{i}")
            t0 = mono()
            try:
                obj = await c.update(obj)
            except BenchError as e:
                errors[e.code] += 1
                obj = await c.get(NS_WATCH, task["object"])
                continue
            t1 = mono()
            writes.append((int(obj["metadata"]["resourceVersion"]), t0, t1))
    finally:
        await c.close()
    return {"writes": writes, "errors": dict(errors)}


class Workers:
    def __init__(self, n: int):
        ctx = mp.get_context("spawn")
        self.procs = []
        self.conns = []
        for i in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(child, i), daemon=True,
                            name=f"apiserver-bench-loadgen-{i}")
            p.start()
            child.close()
            self.procs.append(p)
            self.conns.append(parent)
        self.run([{"kind": "ping"}] * n)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def send(self, tasks) -> list:
        used = []
        for c, t in zip(self.conns, tasks):
            if t is not None:
                c.send(t)
                used.append(c)
        return used

    @staticmethod
    def recv(c, timeout: float = 120):
        if not c.poll(timeout):
            raise RuntimeError("a load-generator worker did not answer")
        r = c.recv()
        if "exception" in r:
            raise RuntimeError("load-generator worker failed:\n" + r["exception"])
        return r

    def collect(self, used, timeout: float = 120) -> list:
        return [self.recv(c, timeout) for c in used]

    def run(self, tasks, timeout: float = 120) -> list:
        return self.collect(self.send(tasks), timeout)

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(None)
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(3)
            if p.is_alive():
                p.kill()
                p.join(2)


# =====================================================================================
# /proc accounting
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
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    v = [int(x) for x in f]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def proc_status(pid: int | None) -> dict:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    except (OSError, TypeError, ValueError):
        pass
    return out


def proc_snapshot(pid: int | None) -> dict:
    """CPU time (user, system) and memory of one process, from /proc/<pid>/stat and status."""
    utime = stime = 0.0
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        utime, stime = int(f[11]) / CLK_TCK, int(f[12]) / CLK_TCK
    except (OSError, TypeError):
        pass
    st = proc_status(pid)
    return {"t": mono(), "user_s": utime, "sys_s": stime, "cpu_s": utime + stime,
            "rss_mb": st.get("VmRSS", 0) / 1024, "hwm_mb": st.get("VmHWM", 0) / 1024,
            "threads": st.get("Threads", 0)}


class Sampler:
    def __init__(self, api_pid, store_pids, worker_pids):
        self.api_pid = api_pid
        self.store_pids = store_pids
        self.worker_pids = worker_pids

    def snap(self) -> dict:
        return {"t": mono(), "api": cpu_seconds(self.api_pid),
                "stores": sum(cpu_seconds(p) for p in self.store_pids),
                "workers": [cpu_seconds(p) for p in self.worker_pids],
                "self": cpu_seconds(os.getpid()), "busy": machine_busy_seconds()}

    @staticmethod
    def delta(a: dict, b: dict, active_workers=None) -> dict:
        dt = max(1e-6, b["t"] - a["t"])
        w = [(y - x) / dt for x, y in zip(a["workers"], b["workers"])]
        api = (b["api"] - a["api"]) / dt
        stores = (b["stores"] - a["stores"]) / dt
        me = (b["self"] - a["self"]) / dt
        busy = (b["busy"] - a["busy"]) / dt
        ours = api + stores + sum(w) + me
        return {"window_s": round(dt, 2), "apiserver_cores": round(api, 3),
                "stores_cores": round(stores, 3), "loadgen_cores": round(sum(w) + me, 3),
                "loadgen_per_process": [round(x, 3) for x in w],
                "loadgen_busiest": round(max(w) if w else 0.0, 3),
                "other_cores": round(max(0.0, busy - ours), 3),
                "idle_cores": round(max(0.0, (os.cpu_count() or 1) - busy), 3)}


# =====================================================================================
# Coordinator
# =====================================================================================

def pct(sorted_vals, q: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_vals:
        return float("nan")
    import math
    k = max(1, math.ceil(q * len(sorted_vals)))
    return sorted_vals[min(k, len(sorted_vals)) - 1]


def summarize(lat: list[float]) -> dict:
    s = sorted(lat)
    return {"n": len(s), "p50_ms": pct(s, 0.50) * 1e3, "p90_ms": pct(s, 0.90) * 1e3,
            "p99_ms": pct(s, 0.99) * 1e3, "max_ms": (s[-1] * 1e3) if s else float("nan"),
            "min_ms": (s[0] * 1e3) if s else float("nan")}


def port_free(host: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_port_offset() -> int:
    from kubelab import cluster as kc
    wanted = [(f"127.30.0.{10 + i}", p) for i in (1, 2, 3)
              for p in (kc.STORE_CLIENT_PORT, kc.STORE_PEER_PORT, kc.STORE_METRICS_PORT)]
    wanted += [(kc.APISERVER_ADDR, kc.APISERVER_PORT), (kc.APISERVER_ADDR, kc.APISERVER_GRPC_PORT)]
    for _ in range(200):
        off = random.randrange(20000, 30000, 10)
        if all(port_free(h, p + off) for h, p in wanted):
            return off
    raise RuntimeError("no free port offset in 20000-30000")


def create_cluster(state_dir: Path, port_offset: int):
    """3 stores + the API server only: no controllers, scheduler or nodes (when this version of
    Cluster.create has them), so nothing but the benchmark talks to the API server."""
    import inspect

    from kubelab.cluster import Cluster
    params = inspect.signature(Cluster.create).parameters
    kw = {}
    if "control_plane" in params:
        kw["control_plane"] = False
    if "hollow_workers" in params:
        kw["hollow_workers"] = 0
    return Cluster.create(state_dir, stores=3, port_offset=port_offset, **kw)


async def wait_cluster_ready(cluster, pids: dict[str, int], timeout: float) -> str:
    """kubelab.cli.wait_ready when Cluster.pid() recognises the processes this run started;
    otherwise (its PID-reuse guard rejects one) an equivalent check that does not depend on
    PID files: every store reports a leader and the API server answers /readyz with 200."""
    from kubelab.cli import wait_ready
    unknown = [n for n, pid in pids.items() if cluster.pid(n) != pid]
    if not unknown:
        await wait_ready(cluster, timeout)
        return "kubelab.cli.wait_ready"
    import aiohttp

    from kubelab.etcdclient import EtcdClient, EtcdError
    eps = cluster.store_endpoints()
    client = EtcdClient(eps, timeout=1.0, call_timeout=1.0)
    deadline = mono() + timeout
    try:
        while True:
            leaders = 0
            for ep in eps:
                try:
                    leaders += bool((await client.status(ep)).leader)
                except EtcdError:
                    pass
            api = False
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as s, \
                        s.get(cluster.apiserver.client_url + "/readyz", ssl=_ssl_ctx()) as r:
                    api = r.status == 200
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            if leaders == len(eps) and api:
                return (f"own readiness check: kubelab Cluster.pid() does not recognise "
                        f"{', '.join(unknown)} started by this run")
            if mono() > deadline:
                raise RuntimeError(f"cluster not ready after {timeout:.0f}s (stores with a "
                                   f"leader {leaders}/{len(eps)}, API server ready {api})")
            await asyncio.sleep(0.1)
    finally:
        await client.close()


def kill_leftovers(pids: dict[str, int], state_dir: Path) -> list[str]:
    """After Cluster.down(): stop (by PID, process group = the PID: start_new_session) any
    process this run started that is still alive, and reap them all. Returns what was left."""
    left = {}
    for name, pid in pids.items():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and str(state_dir).encode() in cmd:
            left[name] = pid
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def gone(pid: int) -> bool:
        try:
            return bool(os.waitpid(pid, os.WNOHANG)[0])
        except ChildProcessError:  # not our child (any more): look at /proc
            return not Path(f"/proc/{pid}").exists()

    pending = dict(left)
    for sig in (signal.SIGKILL, None):
        deadline = mono() + 10
        while pending and mono() < deadline:
            pending = {n: p for n, p in pending.items() if not gone(p)}
            time.sleep(0.05)
        for pid in pending.values():
            if sig is not None:
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    pass
    for pid in pids.values():  # reap the rest (Cluster leaves exited children as zombies)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    return [f"{n} (pid {p})" for n, p in left.items()]


def split(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


class Bench:
    def __init__(self, args, workers: Workers, cluster, pids: dict[str, int]):
        self.args = args
        self.w = workers
        self.cluster = cluster
        self.duration = args.duration or (2.0 if args.quick else 5.0)
        self.warm = 0.5 if args.quick else 1.0
        api = cluster.apiserver
        self.base_task = {"server": api.client_url, "grpc": api.grpc_url,
                          "token": cluster.admin_token(),
                          "store_endpoints": cluster.store_endpoints()}
        self.api_pid = pids["apiserver"]
        self.sampler = Sampler(self.api_pid, [pids[c.name] for c in cluster.stores],
                               workers.pids)

    def task(self, **kw) -> dict:
        return dict(self.base_task, **kw)

    # ---------------------------------------------------------------- preparation
    def prep(self, fronts) -> dict:
        t0 = mono()
        self.w.run([self.task(kind="prep", namespaces=NAMESPACES)] + [None] * (len(self.w.procs)
                                                                           - 1))
        shares = split(LIST_OBJECTS, len(self.w.procs))
        idx, tasks = 0, []
        for wi, k in enumerate(shares):
            tasks.append(self.task(kind="prep", list_indices=list(range(idx, idx + k)),
                                   watch_objects=[f"w-{fe}" for fe in fronts] if wi == 0 else []))
            idx += k
        res = self.w.run(tasks, timeout=300)
        errs = collections.Counter()
        for r in res:
            errs.update(r["errors"])
        return {"seconds": mono() - t0, "errors": dict(errs)}

    # ---------------------------------------------------------------- profiling
    def _profile_start(self, name: str):
        if not self.args.profile:
            return None
        out = Path(self.args.profile) / f"{name}.txt"
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [exe, "record", "-p", str(self.api_pid), "-d", str(max(1, int(self.duration))),
               "-r", "100", "--nonblocking", "--threads", "--format", "raw", "-o", str(out)]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def _profile_stop(p):
        if p is None:
            return
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.terminate()
            p.wait(5)

    # ---------------------------------------------------------------- closed-loop load
    def load(self, op: str, fe: str, clients: int) -> dict:
        nproc = min(len(self.w.procs), clients)
        shares = split(clients, nproc)
        tasks = [self.task(kind="load", op=op, fe=fe, clients=k) for k in shares]
        used = self.w.send(tasks + [None] * (len(self.w.procs) - nproc))
        setup_s = max(r["setup_s"] for r in self.w.collect(used, timeout=120))
        start_at = mono() + 0.2
        ws = start_at + self.warm
        we = ws + self.duration
        for c in used:
            c.send({"start_at": start_at, "warm": self.warm, "duration": self.duration})
        time.sleep(max(0.0, ws - mono()))
        prof = self._profile_start(f"{op}-{fe}") if fe != "store" else None
        a = self.sampler.snap()
        time.sleep(max(0.0, we - mono()))
        b = self.sampler.snap()
        res = self.w.collect(used, timeout=self.duration + 120)
        self._profile_stop(prof)
        lat = array("d")
        errors = collections.Counter()
        bad_lists = 0
        items = set()
        for r in res:
            lat.frombytes(r["lat"])
            errors.update(r["errors"])
            bad_lists += r["bad_lists"]
            items.update(r["items_seen"])
        out = summarize(list(lat))
        out.update(op=op, fe=fe, clients=clients, ops_s=len(lat) / self.duration,
                   errors=dict(errors), cpu=Sampler.delta(a, b),
                   loadgen_procs=nproc, setup_s=round(setup_s, 3))
        out["loadgen_us_per_op"] = (out["cpu"]["loadgen_cores"] * 1e6 / out["ops_s"]
                                    if out["ops_s"] else None)
        if op == "list":
            out["bad_lists"] = bad_lists
            out["items_per_list"] = sorted(items)
        return out

    # ---------------------------------------------------------------- watch fan-out
    def watch(self, fe: str) -> dict:
        a_ = self.args
        nproc = len(self.w.procs)
        if nproc < 2:
            raise RuntimeError("the watch scenario needs --procs >= 2 (writer + watchers)")
        obj = f"w-{fe}"
        shares = split(a_.watchers, nproc - 1)
        wtasks = [self.task(kind="watch", fe=fe, watchers=k, object=obj, open_timeout=30.0)
                  for k in shares]
        used = self.w.send([None] + wtasks)
        ready = self.w.collect(used, timeout=60)
        nready = sum(r["ready"] for r in ready)
        open_s = max(r["open_s"] for r in ready)
        time.sleep(0.5)  # let the stream set-up traffic settle
        start_at = mono() + 0.5
        write_s = a_.watch_updates / a_.watch_rate
        self.w.conns[0].send(self.task(kind="write", fe=fe, object=obj,
                                       updates=a_.watch_updates, rate=a_.watch_rate,
                                       start_at=start_at))
        time.sleep(max(0.0, start_at - mono()))
        prof = self._profile_start(f"watch-{fe}")
        a = self.sampler.snap()
        wres = Workers.recv(self.w.conns[0], timeout=write_s + 120)
        b = self.sampler.snap()
        time.sleep(1.0)  # stragglers
        for c in used:
            c.send("stop")
        res = self.w.collect(used, timeout=120)
        self._profile_stop(prof)
        writes = wres["writes"]
        lat = []
        send_lat = []
        missed = 0
        pairs = 0
        per_event_max = []
        per_event_median = []
        errors = collections.Counter(wres["errors"])
        other = collections.Counter()
        for r in res:
            errors.update(r["errors"])
            other.update(r["other_events"])
        recvs = [dict(d) for r in res for d, ok in zip(r["recv"], r["ready_flags"]) if ok]
        for rv, t0, t1 in writes:
            ev = []
            for d in recvs:
                pairs += 1
                t = d.get(rv)
                if t is None:
                    missed += 1
                else:
                    ev.append(t - t1)
                    send_lat.append(t - t0)
            lat.extend(ev)
            if ev:
                ev.sort()
                per_event_max.append(ev[-1])
                per_event_median.append(ev[len(ev) // 2])
        out = summarize(lat)
        wl = summarize([t1 - t0 for _, t0, t1 in writes])
        dur = (writes[-1][2] - writes[0][1]) if writes else write_s
        out.update(op="watch", fe=fe, watchers=a_.watchers, watchers_ready=nready,
                   open_s=round(open_s, 2), writes=len(writes), pairs=pairs, missed=missed,
                   delivered=len(lat), ops_s=len(lat) / max(dur, 1e-6),
                   write_p50_ms=wl["p50_ms"], write_p99_ms=wl["p99_ms"],
                   send_to_event_p50_ms=summarize(send_lat)["p50_ms"],
                   send_to_event_p99_ms=summarize(send_lat)["p99_ms"],
                   fanout_last_watcher_p50_ms=summarize(per_event_max)["p50_ms"],
                   fanout_last_watcher_p99_ms=summarize(per_event_max)["p99_ms"],
                   fanout_median_watcher_p50_ms=summarize(per_event_median)["p50_ms"],
                   errors=dict(errors), other_events=dict(other), cpu=Sampler.delta(a, b))
        return out


# =====================================================================================
# Report
# =====================================================================================

OP_LABEL = {"create": "create", "get": "get", "update": "update (with RV)",
            "list": f"list {LIST_OBJECTS} objects", "watch": "watch delivery"}


def target_of(r: dict):
    if r["fe"] == "store":
        return "(baseline)", None
    if r["op"] in ("create", "get", "update"):
        return f"p99<={SINGLE_P99_TARGET_MS:g}ms", r["p99_ms"] <= SINGLE_P99_TARGET_MS
    if r["op"] == "watch":
        ok = r["p99_ms"] <= WATCH_P99_TARGET_MS and r["missed"] == 0 and \
            r["watchers_ready"] == r["watchers"]
        return f"p99<={WATCH_P99_TARGET_MS:g}ms", ok
    return "-", None


def print_row(r: dict) -> None:
    cpu = r["cpu"]
    if r["op"] == "watch":
        extra = (f"{r['watchers_ready']}/{r['watchers']} watchers (opened in {r['open_s']}s), "
                 f"{r['writes']} updates (write p50 {r['write_p50_ms']:.1f} / p99 "
                 f"{r['write_p99_ms']:.1f} ms), {r['delivered']}/{r['pairs']} delivered, "
                 f"missed {r['missed']}; per update: median watcher p50 "
                 f"{r['fanout_median_watcher_p50_ms']:.1f} ms, last watcher p50 "
                 f"{r['fanout_last_watcher_p50_ms']:.1f} / p99 "
                 f"{r['fanout_last_watcher_p99_ms']:.1f} ms; min {r['min_ms']:.1f} ms; from "
                 f"the update's send: p50 {r['send_to_event_p50_ms']:.1f} / p99 "
                 f"{r['send_to_event_p99_ms']:.1f} ms)")
    else:
        extra = f"{r['clients']} clients, n={r['n']}"
        if r["op"] == "list":
            extra += f", items/list {r['items_per_list']}"
    if r["errors"]:
        extra += f", errors {r['errors']}"
    print(f"  {OP_LABEL[r['op']]:<18} {FRONTS[r['fe']]:<5} {r['ops_s']:8.1f}/s  p50 "
          f"{r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  ({extra})", flush=True)
    print(f"  {'':<18} {'':<5} cpu (cores): apiserver {cpu['apiserver_cores']:.2f}, stores "
          f"{cpu['stores_cores']:.2f}, loadgen {cpu['loadgen_cores']:.2f} (per process "
          f"{cpu['loadgen_per_process']}), other {cpu['other_cores']:.2f}, idle "
          f"{cpu['idle_cores']:.2f}", flush=True)


def report(results: dict, args) -> None:
    rows = results["rows"]
    hdr = ["operation", "front end", "ops/s", "p50 ms", "p99 ms", "target", "result"]
    table = [hdr]
    for r in rows:
        tgt, ok = target_of(r)
        table.append([OP_LABEL[r["op"]], FRONTS[r["fe"]], f"{r['ops_s']:,.1f}",
                      f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", tgt,
                      "-" if ok is None else ("PASS" if ok else "MISS")])
        r["target"] = tgt
        r["pass"] = ok
    widths = [max(len(t[i]) for t in table) for i in range(len(hdr))]
    line = "=" * (sum(widths) + 3 * (len(widths) - 1))
    print()
    print(line)
    for i, t in enumerate(table):
        print(" | ".join(c.ljust(w) if j < 2 or j >= 5 else c.rjust(w)
                         for j, (c, w) in enumerate(zip(t, widths))))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print(line)
    print(f"ops/s: completed requests per second (watch: deliveries per second over all "
          f"watchers). Single-object calls at {args.clients} concurrent clients, list at "
          f"{args.list_clients}; watch: {args.watchers} watchers, {args.watch_updates} updates at "
          f"{args.watch_rate:g}/s.")
    if any(r["fe"] == "store" for r in rows):
        print("store* = baseline, not the API server: the store operations the API server "
              "performs for that call (create: namespace range + txn; get: range; update: range "
              "+ CAS txn), sent directly to etcdlite by the load generator (kubelab EtcdClient, "
              "round-robin over the 3 members, as the API server does) at the same "
              "concurrency: the floor under the API server's latency.")
    busiest = max((r["cpu"]["loadgen_busiest"] for r in rows), default=0.0)
    other = max((r["cpu"]["other_cores"] for r in rows), default=0.0)
    api_max = max((r["cpu"]["apiserver_cores"] for r in rows), default=0.0)
    print(f"Load generator: {args.procs} processes; busiest process at most {busiest:.2f} of a "
          f"core in any window (near 1.00 would mean the generator itself is the limit). "
          f"API server at most {api_max:.2f} cores in a window (one asyncio event loop: about "
          f"1.0 means it is CPU-bound).")
    if other > 0.1:
        print(f"WARNING: processes this benchmark did not start used up to {other:.2f} of the "
              f"machine's {os.cpu_count()} cores during a window; the figures are depressed and "
              f"noisy.")
    b, a = results["apiserver_before"], results["apiserver_after"]
    print(f"\nAPI server process (pid {results['apiserver_pid']}), /proc/<pid>/stat and status:")
    print(f"  before (ready, idle): cpu {b['cpu_s']:.2f} s (user {b['user_s']:.2f}, sys "
          f"{b['sys_s']:.2f}), RSS {b['rss_mb']:.1f} MB, threads {b['threads']}")
    print(f"  after:                cpu {a['cpu_s']:.2f} s (user {a['user_s']:.2f}, sys "
          f"{a['sys_s']:.2f}), RSS {a['rss_mb']:.1f} MB (peak {a['hwm_mb']:.1f} MB), threads "
          f"{a['threads']}")
    print(f"  used {a['cpu_s'] - b['cpu_s']:.2f} s of CPU in {a['t'] - b['t']:.1f} s of "
          f"benchmark ({(a['cpu_s'] - b['cpu_s']) / max(1e-6, a['t'] - b['t']):.2f} cores on "
          f"average); RSS {a['rss_mb'] - b['rss_mb']:+.1f} MB")
    misses = [r for r in rows if r["pass"] is False]
    print(f"\nTargets: {sum(1 for r in rows if r['pass'])} PASS, {len(misses)} MISS "
          f"(single-object p99 <= {SINGLE_P99_TARGET_MS:g} ms at {args.clients} clients; watch "
          f"p99 <= {WATCH_P99_TARGET_MS:g} ms to {args.watchers} watchers, none missed)")


# =====================================================================================
# main
# =====================================================================================

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2 s windows (0.5 s warm-up), 40 watch updates")
    p.add_argument("--duration", type=float, help="measurement window per scenario, seconds")
    p.add_argument("--procs", type=int, default=3,
                   help="load-generator processes (>= 2; the watch writer gets its own)")
    p.add_argument("--clients", type=int, default=10,
                   help="concurrent clients for create/get/update")
    p.add_argument("--list-clients", type=int, default=1, help="concurrent clients for list")
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--watch-updates", type=int, help="updates of the watched object "
                                                     "(default 100, --quick 40)")
    p.add_argument("--watch-rate", type=float, default=20.0, help="updates per second")
    p.add_argument("--ops", default=",".join(ALL_OPS), help="subset of %(default)s")
    p.add_argument("--fronts", default="rest,grpc", help="subset of %(default)s")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the store* rows (the API server's store operations for create/"
                        "get/update sent directly to etcdlite, same concurrency)")
    p.add_argument("--json", metavar="FILE", help="save the results as JSON")
    p.add_argument("--profile", metavar="DIR",
                   help="py-spy record (raw) the API server during each window, into DIR")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the cluster's logs to DIR")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for the machine to be quiet before starting")
    p.add_argument("--quiet-cores", type=float, default=0.3,
                   help="'quiet': other processes use at most this many cores (default 0.3)")
    args = p.parse_args(argv)
    if args.watch_updates is None:
        args.watch_updates = 40 if args.quick else 100
    ops = [o for o in args.ops.split(",") if o]
    fronts = [f for f in args.fronts.split(",") if f]
    for o in ops:
        if o not in ALL_OPS:
            p.error(f"unknown op {o}")
    for f in fronts:
        if f not in ("rest", "grpc"):
            p.error(f"unknown front end {f}")
    if args.procs < 2:
        p.error("--procs must be at least 2")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    tmp = Path(tempfile.mkdtemp(prefix="apiserver-bench-"))
    cluster = None
    workers = None
    started: dict[str, int] = {}
    results: dict = {"settings": {"quick": args.quick, "procs": args.procs,
                                  "clients": args.clients, "list_clients": args.list_clients,
                                  "watchers": args.watchers,
                                  "watch_updates": args.watch_updates,
                                  "watch_rate": args.watch_rate, "cpus": os.cpu_count(),
                                  "list_objects": LIST_OBJECTS, "data_bytes": DATA_SIZE},
                     "rows": []}
    rc = 0
    try:
        give_up = mono() + args.wait_quiet
        while True:
            b0, t0 = machine_busy_seconds(), mono()
            time.sleep(2.0)
            bg = (machine_busy_seconds() - b0) / (mono() - t0)
            if bg <= args.quiet_cores or mono() >= give_up:
                break
            print(f"apiserver_bench: other processes keep {bg:.2f} cores busy; waiting for "
                  f"<= {args.quiet_cores:g} (--wait-quiet, {give_up - mono():.0f}s left)",
                  flush=True)
        results["background_busy_cores"] = round(bg, 2)
        print(f"apiserver_bench: before starting, other processes kept {bg:.2f} of "
              f"{os.cpu_count()} cores busy", flush=True)
        off = pick_port_offset()
        cluster = create_cluster(tmp / "cluster", off)
        for name in cluster.components:
            started[name] = cluster.start(name)
        workers = Workers(args.procs)  # spawns while the cluster boots
        t0 = mono()
        how = asyncio.run(wait_cluster_ready(cluster, started, 90))
        api_pid = started["apiserver"]
        print(f"apiserver_bench: cluster ready in {mono() - t0:.1f}s ({how}); components "
              f"{', '.join(f'{n} (pid {p})' for n, p in started.items())}; state "
              f"{cluster.state_dir}, port offset {off}; REST {cluster.apiserver.client_url}, "
              f"gRPC {cluster.apiserver.grpc_url}; {args.procs} load-generator processes "
              f"{workers.pids}", flush=True)
        results["components"] = dict(started)
        bench = Bench(args, workers, cluster, started)
        results["settings"].update(duration_s=bench.duration, warm_s=bench.warm,
                                   port_offset=off)
        results["apiserver_pid"] = api_pid
        results["apiserver_before"] = proc_snapshot(api_pid)
        pr = bench.prep(fronts)
        print(f"prepared {len(NAMESPACES)} namespaces and {LIST_OBJECTS} ConfigMaps "
              f"({DATA_SIZE}-byte data) in {pr['seconds']:.1f}s"
              + (f" (retried errors {pr['errors']})" if pr["errors"] else ""), flush=True)
        print(f"window {bench.duration:g}s after {bench.warm:g}s warm-up per scenario\n",
              flush=True)
        for op in ops:
            runs = list(fronts)
            if args.baseline and op in ("create", "get", "update"):
                runs.append("store")
            for fe in runs:
                if op == "watch":
                    r = bench.watch(fe)
                else:
                    r = bench.load(op, fe, args.list_clients if op == "list" else args.clients)
                results["rows"].append(r)
                print_row(r)
                if not Path(f"/proc/{api_pid}").exists():
                    raise RuntimeError("the API server process exited; see "
                                       f"{cluster.log_path('apiserver')}")
        results["apiserver_after"] = proc_snapshot(api_pid)
        report(results, args)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
            print(f"\nresults saved to {args.json}")
        if args.profile:
            print(f"py-spy profiles in {args.profile} (summarise: .venv/bin/python "
                  f"bench/pyspy_summary.py {args.profile}/*.txt)")
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the cluster", file=sys.stderr)
        rc = 130
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        rc = 1
    finally:
        if workers is not None:
            workers.close()
        if cluster is not None:
            if args.keep_logs:
                dst = Path(args.keep_logs)
                dst.mkdir(parents=True, exist_ok=True)
                for f in (cluster.state_dir / "logs").glob("*.log"):
                    shutil.copy(f, dst / f.name)
            try:
                cluster.down()
            except Exception:  # noqa: BLE001
                traceback.print_exc()
            left = kill_leftovers(started, cluster.state_dir)
            if left:
                print(f"WARNING: Cluster.down() left {', '.join(left)} running; stopped them "
                      f"by PID", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
