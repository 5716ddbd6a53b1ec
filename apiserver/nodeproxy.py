"""pods/log, pods/exec, pods/attach and pods/portforward: checked here as kube-apiserver does
(pod, container, node), then proxied to the node agent's 10250 server.

- log: a streaming HTTP GET to `https://<node>:<port>/containerLogs/<ns>/<pod>/<container>`,
  copied chunk by chunk (follow keeps the response open).
- exec / attach / portforward: the client's WebSocket (v5/v4.channel.k8s.io,
  SPDY/3.1+portforward.k8s.io) is answered with the subprotocol the node agent chose, and
  messages are relayed both ways unchanged (SPDY is only parsed in the node agent).
  kubectl's SPDY fallback (POST with `Upgrade: SPDY/3.1`) is answered with the node's error
  when there is one, else a 400 saying WebSockets are needed.

The node is found from the Pod's spec.nodeName → Node status.addresses InternalIP and
status.daemonEndpoints.kubeletEndpoint.Port. Requests carry `Authorization: Bearer <token of
--kubelet-client-token-file>`. As in kube-apiserver, the node's serving certificate is verified
only when --kubelet-certificate-authority is given (then against that CA, without a host-name
check: node certs name the node IP, which the CA vouches for).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import WSMsgType, web

from . import errors
from .kinds import get_path
from .storage import Storage

log = logging.getLogger("apiserver.nodeproxy")

STREAM_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
PORTFORWARD_PROTOCOLS = ("SPDY/3.1+portforward.k8s.io", "v4.channel.k8s.io")
LOG_PARAMS = ("follow", "tailLines", "timestamps", "sinceSeconds", "sinceTime", "previous",
              "limitBytes")
EXEC_PARAMS = ("command", "stdin", "stdout", "stderr", "tty")


@dataclass
class NodeClientConfig:
    token_file: str | None = None
    ca_file: str | None = None
    connect_timeout: float = 5.0

    def token(self) -> str | None:
        if not self.token_file:
            return None
        try:
            with open(self.token_file) as f:
                return f.read().strip() or None
        except OSError:
            return None

    def ssl_context(self) -> ssl.SSLContext:
        if self.ca_file and os.path.exists(self.ca_file):
            ctx = ssl.create_default_context(cafile=self.ca_file)
            ctx.check_hostname = False  # node certs are checked against the cluster CA only
            return ctx
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _header_list(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def _container_names(pod: dict) -> tuple[list[str], list[str], list[str]]:
    spec = pod.get("spec") or {}
    return ([c.get("name") for c in spec.get("containers") or []],
            [c.get("name") for c in spec.get("initContainers") or []],
            [c.get("name") for c in spec.get("ephemeralContainers") or []])


def pick_container(pod: dict, container: str | None) -> str:
    """kube-apiserver's container choice/validation for log, exec and attach."""
    name = pod["metadata"]["name"]
    main, init, eph = _container_names(pod)
    if not container:
        if len(main) == 1:
            return main[0]
        msg = (f"a container name must be specified for pod {name}, choose one of: "
               f"[{' '.join(main)}]")
        if init:
            msg += f" or one of the init containers: [{' '.join(init)}]"
        if eph:
            msg += f" or one of the ephemeral containers: [{' '.join(eph)}]"
        raise errors.bad_request(msg)
    if container not in main + init + eph:
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    return container


def check_log_status(pod: dict, container: str, previous: bool) -> None:
    """The kubelet's validateContainerLogStatus messages, from the pod's reported status."""
    name = pod["metadata"]["name"]
    st = pod.get("status") or {}
    cs = None
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for s in st.get(key) or []:
            if s.get("name") == container:
                cs = s
    if cs is None:
        if st.get("phase") in (None, "Pending"):
            raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to '
                                     f'start: ContainerCreating')
        return
    state = cs.get("state") or {}
    last = (cs.get("lastState") or {}).get("terminated")
    if previous:
        if not last:
            raise errors.bad_request(f'previous terminated container "{container}" in pod '
                                     f'"{name}" not found')
        return
    if "running" in state or "terminated" in state or last:
        return
    waiting = state.get("waiting")
    if waiting is not None:
        reason = waiting.get("reason") or ""
        if reason == "ErrImagePull":
            reason = "image can't be pulled"
        elif reason == "ImagePullBackOff":
            reason = "trying and failing to pull image"
        raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to '
                                 f'start: {reason}')
    raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start - '
                             f'no logs yet')


def _from_node_error(code: int, body: str, name: str) -> web.Response:
    """A node agent's non-success answer as kube-apiserver relays it."""
    text = body.strip()
    if code == 400:
        e = errors.bad_request(text)
    elif code == 404:
        e = errors.StatusError(404, "NotFound", f"the server could not find the requested "
                                                f"resource ( pods/log {name})",
                               {"name": name, "kind": "pods/log",
                                "causes": [{"reason": "UnexpectedServerResponse",
                                            "message": text}]})
    elif code == 401 or code == 403:
        e = errors.StatusError(502, "", f"the node agent refused the API server's credentials "
                                        f"({code}): check --kubelet-client-token-file")
    else:
        e = errors.internal(text)
    return web.json_response(e.status(), status=e.code)


class NodeProxy:
    def __init__(self, storage: Storage, config: NodeClientConfig):
        self.storage = storage
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.config.ssl_context()),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _location(self, pod: dict) -> tuple[str, int, str]:
        node_name = get_path(pod, ("spec", "nodeName"))
        node_kind = self.storage.kinds.by_kind("", "v1", "Node")
        node = await self.storage.get_or_none(node_kind, None, node_name)
        if node is None:
            raise errors.StatusError(503, "ServiceUnavailable",
                                     f'error dialing backend: node "{node_name}" not found')
        st = node.get("status") or {}
        addr = next((a.get("address") for a in st.get("addresses") or []
                     if a.get("type") == "InternalIP"), None)
        port = get_path(st, ("daemonEndpoints", "kubeletEndpoint", "Port")) or 10250
        if not addr:
            raise errors.StatusError(503, "ServiceUnavailable",
                                     f'error dialing backend: node "{node_name}" has no '
                                     f'InternalIP address')
        return addr, int(port), node_name

    def _headers(self) -> dict[str, str]:
        token = self.config.token()
        if token is None:
            raise errors.StatusError(503, "ServiceUnavailable",
                                     "no kubelet client credentials: the API server was "
                                     "started without a readable --kubelet-client-token-file")
        return {"Authorization": f"Bearer {token}"}

    # ---------------------------------------------------------------- entry
    async def handle(self, request: web.Request, namespace: str, name: str,
                     sub: str) -> web.StreamResponse:
        pod_kind = self.storage.kinds.by_kind("", "v1", "Pod")
        pod = await self.storage.get(pod_kind, namespace, name)
        q = request.query
        container = None
        if sub in ("log", "exec", "attach"):
            container = pick_container(pod, q.get("container"))
        if not get_path(pod, ("spec", "nodeName")):
            if sub == "log":  # kube-apiserver answers an empty log for an unscheduled pod
                return web.Response(status=200, body=b"", content_type="text/plain")
            raise errors.bad_request(f"pod {name} does not have a host assigned")
        if sub == "log":
            check_log_status(pod, container, (q.get("previous") or "").lower() == "true")
        addr, port, _node_name = await self._location(pod)
        host = f"[{addr}]" if ":" in addr else addr
        if sub == "log":
            params = [(k, v) for k, v in q.items() if k in LOG_PARAMS]
            path = f"/containerLogs/{quote(namespace)}/{quote(name)}/{quote(container)}"
        elif sub in ("exec", "attach"):
            params = [(k, v) for k, v in q.items() if k in EXEC_PARAMS]
            path = f"/{sub}/{quote(namespace)}/{quote(name)}/{quote(container)}"
        else:
            params = [(k, v) for k, v in q.items() if k == "ports"]
            path = f"/portForward/{quote(namespace)}/{quote(name)}"
        url = f"https://{host}:{port}{path}" + (f"?{urlencode(params)}" if params else "")
        if sub == "log":
            return await self._logs(request, url, name, addr, port)
        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade == "websocket":
            return await self._websocket(request, url, sub, name, addr, port)
        # kubectl's SPDY fallback: report the node's error if there is one
        return await self._spdy_fallback(url, sub, name, addr, port)

    def _dial_error(self, e: Exception, addr: str, port: int) -> errors.StatusError:
        if isinstance(e, aiohttp.ClientConnectorError):
            why = e.os_error.strerror.lower() if getattr(e.os_error, "strerror", None) else \
                str(e.os_error)
            if isinstance(e.os_error, ConnectionRefusedError):
                why = "connect: connection refused"
            msg = f"error dialing backend: dial tcp {addr}:{port}: {why}"
        elif isinstance(e, asyncio.TimeoutError):
            msg = f"error dialing backend: dial tcp {addr}:{port}: i/o timeout"
        else:
            msg = f"error dialing backend: {e}"
        return errors.StatusError(503, "ServiceUnavailable", msg)

    # ---------------------------------------------------------------- logs
    async def _logs(self, request: web.Request, url: str, name: str, addr: str,
                    port: int) -> web.StreamResponse:
        try:
            upstream = await self.session().get(url, headers=self._headers())
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise self._dial_error(e, addr, port) from None
        async with upstream:
            if upstream.status != 200:
                return _from_node_error(upstream.status, await upstream.text(), name)
            resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except (ConnectionError, aiohttp.ClientError):
                pass
            return resp

    # ---------------------------------------------------------------- upgrades
    async def _node_error_response(self, url: str, name: str, addr: str,
                                   port: int) -> web.Response | None:
        """The node agent's answer to the same request without an upgrade: its error, or
        None when it would have accepted the upgrade."""
        try:
            async with self.session().get(url, headers=self._headers()) as r:
                body = await r.text()
                if r.status == 400 and body.startswith("Upgrade request required"):
                    return None
                # kube-apiserver passes a failed upgrade response through unchanged
                return web.Response(status=r.status, text=body, content_type="text/plain")
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise self._dial_error(e, addr, port) from None

    async def _spdy_fallback(self, url: str, sub: str, name: str, addr: str,
                             port: int) -> web.Response:
        err = await self._node_error_response(url, name, addr, port)
        if err is not None:
            return err
        raise errors.bad_request(
            f"pods/{sub}: kubelab serves only WebSocket upgrades "
            f"({', '.join(PORTFORWARD_PROTOCOLS if sub == 'portforward' else STREAM_PROTOCOLS)}"
            f"); upgrading to SPDY/3.1 directly is not supported")

    async def _websocket(self, request: web.Request, url: str, sub: str, name: str, addr: str,
                         port: int) -> web.StreamResponse:
        offered = _header_list(request.headers.get("Sec-WebSocket-Protocol"))
        supported = PORTFORWARD_PROTOCOLS if sub == "portforward" else STREAM_PROTOCOLS
        wanted = [p for p in offered if p.lower() in {s.lower() for s in supported}]
        if not wanted:
            raise errors.bad_request(
                f"unable to upgrade: the client's Sec-WebSocket-Protocol must name one of "
                f"{', '.join(supported)}")
        try:
            node_ws = await self.session().ws_connect(
                url, protocols=wanted, headers=self._headers(), autoping=True, max_msg_size=0,
                heartbeat=None)
        except aiohttp.WSServerHandshakeError:
            err = await self._node_error_response(url, name, addr, port)
            return err or web.Response(status=500, text="the node agent refused the upgrade",
                                       content_type="text/plain")
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise self._dial_error(e, addr, port) from None
        chosen = node_ws.protocol or wanted[0]
        client_ws = web.WebSocketResponse(protocols=[chosen], autoping=True, max_msg_size=0)
        try:
            await client_ws.prepare(request)
        except Exception:
            await node_ws.close()
            raise
        log.info("%s %s relayed to %s:%d (%s)", sub, name, addr, port, chosen)

        async def up() -> None:  # client → node
            async for msg in client_ws:
                if msg.type == WSMsgType.BINARY:
                    await node_ws.send_bytes(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await node_ws.send_str(msg.data)
                else:
                    break

        node_close = [1000]

        async def down() -> None:  # node → client
            while True:
                msg = await node_ws.receive()
                if msg.type == WSMsgType.BINARY:
                    await client_ws.send_bytes(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await client_ws.send_str(msg.data)
                else:
                    # the close code the node sent (aiohttp's own close_code turns into 1006
                    # when its automatic close reply races the node closing the TLS stream)
                    if msg.type == WSMsgType.CLOSE and isinstance(msg.data, int):
                        node_close[0] = msg.data
                    elif msg.type != WSMsgType.CLOSE:
                        node_close[0] = 1011
                    return

        up_task, down_task = asyncio.create_task(up()), asyncio.create_task(down())
        try:
            done, _ = await asyncio.wait({up_task, down_task},
                                         return_when=asyncio.FIRST_COMPLETED)
            # close the other side first (a pending receive then ends cleanly), then the tasks
            if down_task in done:
                await client_ws.close(code=node_close[0])
                await node_ws.close()
            else:
                await node_ws.close()
                await client_ws.close()
            await asyncio.wait({up_task, down_task}, timeout=5)
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            for t in (up_task, down_task):
                t.cancel()
            with contextlib.suppress(Exception):
                await node_ws.close()
            with contextlib.suppress(Exception):
                await client_ws.close()
        return client_ws

    # ---------------------------------------------------------------- metrics.k8s.io
    async def _summary(self, node: dict, pods: list[dict]) -> dict | None:
        st = node.get("status") or {}
        addr = next((a.get("address") for a in st.get("addresses") or []
                     if a.get("type") == "InternalIP"), None)
        port = get_path(st, ("daemonEndpoints", "kubeletEndpoint", "Port")) or 10250
        if not addr:
            return None
        params = [("pod", f"{p['metadata']['namespace']}/{p['metadata']['name']}")
                  for p in pods] or [("nodeOnly", "true")]
        host = f"[{addr}]" if ":" in addr else addr
        url = f"https://{host}:{port}/stats/summary?{urlencode(params)}"
        try:
            async with self.session().get(url, headers=self._headers(),
                                          timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status != 200:
                    return None
                return await r.json()
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return None

    async def metrics(self, request: web.Request, plural: str, namespace: str | None,
                      name: str | None) -> web.Response:
        q = request.query
        return web.json_response(await self.metrics_object(
            plural, namespace, name, q.get("labelSelector"), q.get("fieldSelector")))

    async def metrics_object(self, plural: str, namespace: str | None, name: str | None,
                             label_selector: str | None = None,
                             field_selector: str | None = None) -> dict:
        """A NodeMetrics/PodMetrics object or list, as metrics-server answers (REST and gRPC)."""
        from datetime import datetime
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        node_kind = self.storage.kinds.by_kind("", "v1", "Node")
        api = "metrics.k8s.io/v1beta1"

        def usage(x: dict) -> dict:
            cpu = int(get_path(x, ("cpu", "usageNanoCores")) or 0)
            mem = int(get_path(x, ("memory", "workingSetBytes")) or 0)
            return {"cpu": f"{cpu}n", "memory": f"{mem // 1024}Ki"}

        if plural == "nodes":
            if name:
                nodes = [await self.storage.get(node_kind, None, name)]
            else:
                nodes = (await self.storage.list(node_kind, None,
                                                 label_selector=label_selector)).items
            sums = await asyncio.gather(*(self._summary(n, []) for n in nodes))
            items = [{"metadata": {"name": n["metadata"]["name"], "creationTimestamp": now,
                                   "labels": n["metadata"].get("labels") or {}},
                      "timestamp": now, "window": "10s", "usage": usage(s["node"])}
                     for n, s in zip(nodes, sums) if s and s.get("node")]
            if name:
                if not items:
                    raise errors.not_found("nodemetrics", name, "metrics.k8s.io")
                return {"kind": "NodeMetrics", "apiVersion": api, **items[0]}
            return {"kind": "NodeMetricsList", "apiVersion": api, "metadata": {},
                    "items": [{"kind": "NodeMetrics", "apiVersion": api, **i} for i in items]}
        pod_kind = self.storage.kinds.by_kind("", "v1", "Pod")
        if name:
            pods = [await self.storage.get(pod_kind, namespace, name)]
        else:
            pods = (await self.storage.list(pod_kind, namespace, label_selector=label_selector,
                                            field_selector=field_selector)).items
        pods = [p for p in pods if get_path(p, ("spec", "nodeName")) and
                get_path(p, ("status", "phase")) == "Running"]
        by_node: dict[str, list[dict]] = {}
        for p in pods:
            by_node.setdefault(p["spec"]["nodeName"], []).append(p)
        nodes = [await self.storage.get_or_none(node_kind, None, n) for n in by_node]
        sums = await asyncio.gather(*(self._summary(n, by_node[n["metadata"]["name"]])
                                      for n in nodes if n is not None))
        labels = {(p["metadata"]["namespace"], p["metadata"]["name"]):
                  p["metadata"].get("labels") or {} for p in pods}
        items = []
        for s in sums:
            for ps in (s or {}).get("pods") or []:
                key = (ps["podRef"]["namespace"], ps["podRef"]["name"])
                if key not in labels or not ps.get("containers"):
                    continue
                items.append({"kind": "PodMetrics", "apiVersion": api,
                              "metadata": {"name": key[1], "namespace": key[0],
                                           "creationTimestamp": now, "labels": labels[key]},
                              "timestamp": now, "window": "10s",
                              "containers": [{"name": c["name"], "usage": usage(c)}
                                             for c in ps["containers"]]})
        items.sort(key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"]))
        if name:
            if not items:
                raise errors.not_found("podmetrics", name, "metrics.k8s.io")
            return items[0]
        return {"kind": "PodMetricsList", "apiVersion": api, "metadata": {}, "items": items}
