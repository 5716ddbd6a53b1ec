"""The node agent's 10250 server (the kubelet API the API server proxies to):

  GET  /healthz
  GET  /containerLogs/{ns}/{pod}/{container}   follow, tailLines, timestamps, sinceSeconds,
                                                sinceTime, previous, limitBytes
  GET|POST /exec/{ns}/{pod}/{container}?command=..&command=..&stdin&stdout&stderr&tty
  GET|POST /attach/{ns}/{pod}/{container}?stdin&stdout&stderr&tty
  GET|POST /portForward/{ns}/{pod}              WebSocket `SPDY/3.1+portforward.k8s.io`
                                                (SPDY tunnelled in binary messages)
  GET  /stats/summary, /metrics/resource        usage from the runtime's cgroup/proc stats

Every request except /healthz needs `Authorization: Bearer <kubelet auth token>`. Errors are
plain text with the kubelet's status codes and messages (the API server turns them into
metav1.Status). `make_app(runtime, token)` builds the aiohttp application.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from pathlib import Path

from aiohttp import WSMsgType, web

from . import logs, remotecommand
from .portforward import PortForwardSession, serve_websocket_ports

log = logging.getLogger(__name__)

PORTFORWARD_PROTOCOLS = ("SPDY/3.1+portforward.k8s.io", "v4.channel.k8s.io")
STATS_WINDOW = 0.25  # seconds between two samples when no earlier sample exists


def _text(status: int, msg: str) -> web.Response:
    return web.Response(status=status, text=msg, content_type="text/plain")


def _is_websocket(request: web.Request) -> bool:
    return "websocket" in request.headers.get("Upgrade", "").lower()


class _Sampler:
    """CPU usage rates (nanocores) from cumulative counters, per key."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}
        self._rate: dict[str, int] = {}

    def observe(self, key: str, cpu_ns: int, now: float) -> int | None:
        prev = self._last.get(key)
        if prev is not None and now - prev[0] >= 0.05:
            dt = now - prev[0]
            self._rate[key] = max(0, int((cpu_ns - prev[1]) / dt))
            self._last[key] = (now, cpu_ns)
        elif prev is None:
            self._last[key] = (now, cpu_ns)
        return self._rate.get(key)


class NodeServer:
    def __init__(self, runtime, token: str):
        self.runtime = runtime
        self.token = token
        self.sampler = _Sampler()

    # ---------------------------------------------------------------- plumbing
    @web.middleware
    async def auth(self, request: web.Request, handler):
        if request.path in ("/healthz", "/healthz/"):
            return await handler(request)
        got = request.headers.get("Authorization", "")
        want = f"Bearer {self.token}"
        if not self.token or not hmac.compare_digest(got.encode(), want.encode()):
            return _text(401, "Unauthorized")
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.auth])
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/containerLogs/{ns}/{pod}/{container}", self.container_logs)
        for verb in ("exec", "attach"):
            r.add_route("*", f"/{verb}/{{ns}}/{{pod}}/{{container}}", self.remote_command)
        r.add_route("*", "/portForward/{ns}/{pod}", self.port_forward)
        r.add_get("/stats/summary", self.stats_summary)
        r.add_get("/metrics/resource", self.metrics_resource)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return _text(200, "ok")

    def _find(self, ns: str, name: str):
        return self.runtime.find_pod(ns, name)

    # ---------------------------------------------------------------- logs
    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        ns, name, cname = (request.match_info[k] for k in ("ns", "pod", "container"))
        pod = self._find(ns, name)
        if pod is None:
            return _text(404, f'pod "{name}" does not exist\n')
        c = pod.containers.get(cname)
        if c is None:
            return _text(404, f'container "{cname}" not found in pod "{name}"\n')
        try:
            opts = logs.LogOptions.from_query(request.query)
        except logs.LogOptionError as e:
            return _text(400, str(e))
        path = c.log_path(previous=opts.previous)
        if path is None:
            if opts.previous:
                return _text(400, f'previous terminated container "{cname}" in pod "{name}" '
                                  f'not found')
            return _text(400, f'container "{cname}" in pod "{name}" is waiting to start - no '
                              f'logs yet')
        restart = c.restart_count

        def still_running() -> bool:
            if opts.previous:
                return False
            if request.transport is None or request.transport.is_closing():
                return False  # the client went away while following
            p = self._find(ns, name)
            cur = p.containers.get(cname) if p is not None else None
            return cur is not None and cur.restart_count == restart and bool(cur.running)

        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            await logs.stream_logs(Path(path), opts, resp.write, still_running)
        except (ConnectionError, asyncio.CancelledError):
            return resp
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    # ---------------------------------------------------------------- exec / attach
    async def remote_command(self, request: web.Request) -> web.StreamResponse:
        verb = request.path.split("/")[1]
        ns, name, cname = (request.match_info[k] for k in ("ns", "pod", "container"))
        pod = self._find(ns, name)
        if pod is None:
            return _text(404, f'pod "{name}" does not exist')
        c = pod.containers.get(cname)
        if c is None or not c.running:
            return _text(500, f'container not found ("{cname}")')
        opts = remotecommand.StreamOptions.from_query(request.query)
        argv = request.query.getall("command", [])
        if verb == "exec" and not argv:
            return _text(400, "you must specify at least 1 command")
        if not _is_websocket(request):
            return _text(400, "Upgrade request required")
        ws = web.WebSocketResponse(protocols=remotecommand.PROTOCOLS, autoping=True,
                                   max_msg_size=0)
        if not ws.can_prepare(request).ok:
            return _text(400, "unable to upgrade: the client's Sec-WebSocket-Protocol must "
                              "name v5.channel.k8s.io or v4.channel.k8s.io")
        await ws.prepare(request)
        protocol = ws.ws_protocol or remotecommand.V4
        if verb == "exec":
            spec = c.exec_spec(list(argv))
            log.info("exec in %s/%s/%s: %s", ns, name, cname, argv)
            await remotecommand.run_exec(ws, protocol, list(spec.argv), dict(spec.env),
                                         spec.cwd, opts, list(argv))
        else:
            sock = c.attach_socket
            if sock is None:
                await ws.send_bytes(remotecommand.frame(
                    remotecommand.ERROR,
                    remotecommand.status_internal_error(f'container "{cname}" has no attach '
                                                        f'socket')))
                await ws.close()
            else:
                await remotecommand.run_attach(ws, protocol, str(sock), opts)
        return ws

    # ---------------------------------------------------------------- port-forward
    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["pod"]
        pod = self._find(ns, name)
        if pod is None:
            return _text(404, f'pod "{name}" does not exist')
        if not _is_websocket(request):
            return _text(400, "Upgrade request required")
        ws = web.WebSocketResponse(protocols=PORTFORWARD_PROTOCOLS, autoping=True,
                                   max_msg_size=0)
        if not ws.can_prepare(request).ok:
            return _text(400, "unable to upgrade: the client's Sec-WebSocket-Protocol must "
                              "name SPDY/3.1+portforward.k8s.io")
        ip = pod.ip

        async def connect(port: int):
            return await asyncio.wait_for(asyncio.open_connection(ip, port), 10)

        if ws.can_prepare(request).protocol == "v4.channel.k8s.io":
            try:
                ports = [int(p) for p in ",".join(request.query.getall("ports", [])).split(",")
                         if p.strip()]
                if not ports or not all(0 < p < 65536 for p in ports):
                    raise ValueError
            except ValueError:
                return _text(400, "query parameter \"port\" is required")
            await ws.prepare(request)
            await serve_websocket_ports(ws, ports, connect, str(pod.uid),
                                        lambda port: f"{ip}:{port}")
            return ws
        await ws.prepare(request)

        async def send(data: bytes) -> None:
            if not ws.closed:
                await ws.send_bytes(data)

        session = PortForwardSession(send, connect, pod_label=str(pod.uid),
                                     describe_target=lambda port: f"{ip}:{port}")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await session.feed(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
                if session.closed.is_set():
                    break
        finally:
            await session.close()
            await ws.close()
        return ws

    # ---------------------------------------------------------------- stats
    def _pods_for_stats(self, request: web.Request) -> list[tuple[str, str, object]]:
        wanted = request.query.getall("pod", [])
        out = []
        if request.query.get("nodeOnly") == "true":
            return out
        if not wanted:
            pods = getattr(self.runtime, "pods", None)
            if callable(pods):
                pods = pods()
            elif isinstance(pods, dict):
                pods = pods.values()
            for h in pods or ():
                if isinstance(h, tuple):
                    out.append(h)
                else:
                    out.append((h.namespace, h.name, h))
            return out
        for key in wanted:
            ns, _, name = key.partition("/")
            h = self._find(ns, name)
            if h is not None:
                out.append((ns, name, h))
        return out

    async def _collect(self, request: web.Request) -> dict:
        now = time.time()
        pods = self._pods_for_stats(request)
        samples: list[tuple[str, str, str, int, int]] = []
        for ns, name, h in pods:
            for cname, c in h.containers.items():
                if not c.running:
                    continue
                try:
                    cpu, mem = c.stats()
                except (OSError, ValueError):
                    continue
                samples.append((ns, name, cname, cpu, mem))
        node_cpu, node_mem = self.runtime.node_stats()
        keys = [f"{ns}/{n}/{c}" for ns, n, c, _, _ in samples] + ["node"]
        if any(self.sampler.observe(k, v, now) is None
               for k, v in zip(keys, [s[3] for s in samples] + [node_cpu])):
            await asyncio.sleep(STATS_WINDOW)
            return await self._collect_again(pods, now)
        return self._summary(samples, node_cpu, node_mem, now)

    async def _collect_again(self, pods, first: float) -> dict:
        now = time.time()
        samples = []
        for ns, name, h in pods:
            for cname, c in h.containers.items():
                if not c.running:
                    continue
                try:
                    cpu, mem = c.stats()
                except (OSError, ValueError):
                    continue
                self.sampler.observe(f"{ns}/{name}/{cname}", cpu, now)
                samples.append((ns, name, cname, cpu, mem))
        node_cpu, node_mem = self.runtime.node_stats()
        self.sampler.observe("node", node_cpu, now)
        return self._summary(samples, node_cpu, node_mem, now)

    def _summary(self, samples, node_cpu: int, node_mem: int, now: float) -> dict:
        from .status import rfc3339
        ts = rfc3339(now)
        pods: dict[tuple[str, str], dict] = {}
        for ns, name, cname, cpu, mem in samples:
            p = pods.setdefault((ns, name), {
                "podRef": {"name": name, "namespace": ns}, "startTime": ts, "containers": [],
                "cpu": {"time": ts, "usageNanoCores": 0, "usageCoreNanoSeconds": 0},
                "memory": {"time": ts, "workingSetBytes": 0}})
            rate = self.sampler.observe(f"{ns}/{name}/{cname}", cpu, now) or 0
            p["containers"].append({
                "name": cname, "startTime": ts,
                "cpu": {"time": ts, "usageNanoCores": rate, "usageCoreNanoSeconds": cpu},
                "memory": {"time": ts, "workingSetBytes": mem}})
            p["cpu"]["usageNanoCores"] += rate
            p["cpu"]["usageCoreNanoSeconds"] += cpu
            p["memory"]["workingSetBytes"] += mem
        return {"node": {"nodeName": getattr(self.runtime, "node_name", ""), "startTime": ts,
                         "cpu": {"time": ts,
                                 "usageNanoCores": self.sampler.observe("node", node_cpu, now)
                                 or 0,
                                 "usageCoreNanoSeconds": node_cpu},
                         "memory": {"time": ts, "workingSetBytes": node_mem}},
                "pods": list(pods.values())}

    async def stats_summary(self, request: web.Request) -> web.Response:
        return web.json_response(await self._collect(request))

    async def metrics_resource(self, request: web.Request) -> web.Response:
        s = await self._collect(request)
        ms = int(time.time() * 1000)
        lines = [
            ("# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by "
            "the container in core-seconds"),
            "# TYPE container_cpu_usage_seconds_total counter"]
        for p in s["pods"]:
            for c in p["containers"]:
                lbl = (f'container="{c["name"]}",namespace="{p["podRef"]["namespace"]}",'
                       f'pod="{p["podRef"]["name"]}"')
                lines.append(f"container_cpu_usage_seconds_total{{{lbl}}} "
                             f"{c['cpu']['usageCoreNanoSeconds'] / 1e9} {ms}")
        lines += [("# HELP container_memory_working_set_bytes [STABLE] Current working set of "
                  "the container in bytes"), "# TYPE container_memory_working_set_bytes gauge"]
        for p in s["pods"]:
            for c in p["containers"]:
                lbl = (f'container="{c["name"]}",namespace="{p["podRef"]["namespace"]}",'
                       f'pod="{p["podRef"]["name"]}"')
                lines.append(f"container_memory_working_set_bytes{{{lbl}}} "
                             f"{c['memory']['workingSetBytes']} {ms}")
        n = s["node"]
        lines += [("# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by "
                  "the node in core-seconds"), "# TYPE node_cpu_usage_seconds_total counter",
                  f"node_cpu_usage_seconds_total {n['cpu']['usageCoreNanoSeconds'] / 1e9} {ms}",
                  ("# HELP node_memory_working_set_bytes [STABLE] Current working set of the "
                  "node in bytes"), "# TYPE node_memory_working_set_bytes gauge",
                  f"node_memory_working_set_bytes {n['memory']['workingSetBytes']} {ms}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def make_app(runtime, token: str) -> web.Application:
    """The 10250 application; the agent serves it over HTTPS with its cert/key."""
    return NodeServer(runtime, token).app()
