"""Container probes (pkg/kubelet/prober): liveness, readiness and startup with httpGet, tcpSocket,
exec (and grpc) handlers, and the lifecycle hooks' handlers.

`ProbeSpec` holds a probe with Kubernetes' defaults; `ProbeState` is the prober worker's
threshold logic (pure: feed it results, read `.result`); `run_handler` performs one check and
returns (ok, message) with the kubelet's messages."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

LIVENESS, READINESS, STARTUP = "Liveness", "Readiness", "Startup"
USER_AGENT = "kube-probe/1.32"


@dataclasses.dataclass
class ProbeSpec:
    kind: str
    handler: dict
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: float | None = None

    @classmethod
    def from_dict(cls, kind: str, d: dict) -> ProbeSpec:
        handler = {k: v for k, v in d.items()
                   if k in ("httpGet", "tcpSocket", "exec", "grpc")}
        st = int(d.get("successThreshold") or 1)
        if kind != READINESS:
            st = 1
        tg = d.get("terminationGracePeriodSeconds")
        return cls(kind=kind, handler=handler,
                   initial_delay=float(d.get("initialDelaySeconds") or 0),
                   period=float(d.get("periodSeconds") or 10),
                   timeout=float(d.get("timeoutSeconds") or 1),
                   success_threshold=st,
                   failure_threshold=int(d.get("failureThreshold") or 3),
                   termination_grace=float(tg) if tg is not None else None)


class ProbeState:
    """The prober worker's result keeping: a result changes only after `successThreshold`
    consecutive successes or `failureThreshold` consecutive failures. Initial results:
    readiness Failure, liveness Success, startup Unknown (not started)."""

    def __init__(self, spec: ProbeSpec):
        self.spec = spec
        self.result: bool | None = {READINESS: False, LIVENESS: True, STARTUP: None}[spec.kind]
        self._last: bool | None = None
        self._run = 0

    def observe(self, ok: bool) -> bool:
        """Record one probe outcome; True when `.result` changed."""
        if ok == self._last:
            self._run += 1
        else:
            self._last, self._run = ok, 1
        if (not ok and self._run < self.spec.failure_threshold) or \
                (ok and self._run < self.spec.success_threshold):
            return False
        changed = self.result != ok
        self.result = ok
        if not ok and self.spec.kind in (LIVENESS, STARTUP):
            # the container is restarted: start counting afresh for the next instance
            self._run = 0
        return changed

    def reset(self) -> None:
        self.__init__(self.spec)


def resolve_port(port, container: dict) -> int | None:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    return None


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def http_get(h: dict, pod_ip: str, container: dict, timeout: float) -> tuple[bool, str]:
    port = resolve_port(h.get("port"), container)
    host = h.get("host") or pod_ip
    scheme = (h.get("scheme") or "HTTP").lower()
    path = h.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{_hostport(host, port or 0)}{path}"
    if port is None:
        return False, f"unable to resolve port {h.get('port')!r}"
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    for hd in h.get("httpHeaders") or []:
        headers[hd.get("name", "")] = hd.get("value", "")
    return await _http(url, host, port, scheme, path, headers, timeout, redirects=10)


async def _http(url: str, host: str, port: int, scheme: str, path: str, headers: dict,
                timeout: float, redirects: int) -> tuple[bool, str]:
    """A minimal HTTP/1.1 GET (the prober reads at most 10 KiB of the body)."""
    ctx = None
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    hostname = headers.pop("Host", None) or _hostport(host, port)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
            try:
                req = [f"GET {path} HTTP/1.1", f"Host: {hostname}", "Connection: close"]
                req += [f"{k}: {v}" for k, v in headers.items()]
                writer.write(("\r\n".join(req) + "\r\n\r\n").encode())
                await writer.drain()
                status_line = await reader.readline()
                parts = status_line.decode("latin-1").split(" ", 2)
                code = int(parts[1])
                location = ""
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = line.decode("latin-1").partition(":")
                    if k.strip().lower() == "location":
                        location = v.strip()
            finally:
                writer.close()
    except TimeoutError:
        return False, (f"Get \"{url}\": context deadline exceeded (Client.Timeout exceeded "
                       f"while awaiting headers)")
    except ConnectionRefusedError:
        return False, (f"Get \"{url}\": dial tcp {_hostport(host, port)}: connect: "
                       f"connection refused")
    except (OSError, ValueError, IndexError) as e:
        return False, f"Get \"{url}\": {e}"
    if 300 <= code < 400 and location and redirects > 0:
        if location.startswith("/"):
            return await _http(f"{scheme}://{_hostport(host, port)}{location}", host, port,
                               scheme, location, {**headers, "Host": hostname}, timeout,
                               redirects - 1)
        # a redirect to another host counts as success with a warning, as in the kubelet
        return True, "Probe terminated redirects, Response body: "
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"


async def tcp_socket(h: dict, pod_ip: str, container: dict, timeout: float) -> tuple[bool, str]:
    port = resolve_port(h.get("port"), container)
    host = h.get("host") or pod_ip
    if port is None:
        return False, f"unable to resolve port {h.get('port')!r}"
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
        return True, ""
    except TimeoutError:
        return False, f"dial tcp {_hostport(host, port)}: i/o timeout"
    except ConnectionRefusedError:
        return False, f"dial tcp {_hostport(host, port)}: connect: connection refused"
    except OSError as e:
        return False, f"dial tcp {_hostport(host, port)}: {e}"


ExecFn = Callable[[list[str], float], Awaitable[tuple[int | None, str]]]


async def exec_command(h: dict, exec_fn: ExecFn, timeout: float) -> tuple[bool, str]:
    cmd = list(h.get("command") or [])
    if not cmd:
        return False, "missing command"
    code, out = await exec_fn(cmd, timeout)
    if code is None:
        return False, f"command \"{' '.join(cmd)}\" timed out"
    if code == 0:
        return True, out
    return False, out if out else f"command \"{' '.join(cmd)}\" exited with {code}"


async def run_handler(handler: dict, pod_ip: str, container: dict, timeout: float,
                      exec_fn: ExecFn) -> tuple[bool, str]:
    """One probe check: (success, message)."""
    if "httpGet" in handler:
        return await http_get(handler["httpGet"], pod_ip, container, timeout)
    if "tcpSocket" in handler:
        return await tcp_socket(handler["tcpSocket"], pod_ip, container, timeout)
    if "exec" in handler:
        return await exec_command(handler["exec"], exec_fn, timeout)
    if "grpc" in handler:
        g = handler["grpc"]
        # no gRPC health client here: a TCP connect to the port stands in
        return await tcp_socket({"port": g.get("port")}, pod_ip, container, timeout)
    return False, "unknown probe handler"
