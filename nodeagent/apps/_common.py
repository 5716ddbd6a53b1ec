"""Shared plumbing of the built-in apps: bind address, volume path mapping, a tiny asyncio
HTTP/1.1 server (stdlib only, so apps start in a few tens of milliseconds) and signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
           302: "Found", 304: "Not Modified", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
           413: "Payload Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable"}


def bind_ip() -> str:
    """The address to listen on: the pod IP in loopback mode, 0.0.0.0 in bridge mode."""
    return os.environ.get("KUBELAB_BIND_IP") or "0.0.0.0"


def local_host(host: str) -> str:
    """Map "localhost" to the pod's own address: in loopback mode a pod's containers share
    the pod IP, not 127.0.0.1 (which is the host's)."""
    ip = bind_ip()
    if host in ("localhost", "127.0.0.1", "::1") and ip != "0.0.0.0":
        return ip
    return host


def hostname() -> str:
    """The pod's hostname (the runtime sets HOSTNAME as Kubernetes does)."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def volume_mounts() -> dict[str, str]:
    """{mountPath: hostPath} of the container's volumes.

    The runtime exports them as JSON in KUBELAB_VOLUME_MOUNTS (or KUBELAB_MOUNTS) when there is
    no mount namespace (loopback mode). Without either variable in bridge mode the volumes are
    really mounted at their paths: the mount points of /proc/self/mountinfo, mapped to
    themselves."""
    raw = os.environ.get("KUBELAB_VOLUME_MOUNTS") or os.environ.get("KUBELAB_MOUNTS")
    if raw is None:
        # loopback mode (a pod address to bind) has no mount namespace: no variable, no volumes
        return _mount_points() if bind_ip() == "0.0.0.0" else {}
    try:
        mounts = json.loads(raw or "{}")
    except ValueError:
        return {}
    if not isinstance(mounts, dict):
        return {}
    return {(str(k).rstrip("/") or "/"): str(v) for k, v in mounts.items()}


def _mount_points() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] != "/":
                    mp = fields[4].replace("\\040", " ")
                    out[mp] = mp
    except OSError:
        pass
    return out


def _best_mount(path: str, mounts: dict[str, str]) -> str | None:
    norm = os.path.normpath(path) if path.startswith("/") else path
    best = None
    for mount in mounts:
        inside = norm == mount or norm.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) > len(best)):
            best = mount
    return best


def volume_path(path: str, mounts: dict[str, str] | None = None) -> str:
    """The host path of a container path: through the longest matching volume mount, else the
    path itself."""
    mounts = volume_mounts() if mounts is None else mounts
    best = _best_mount(path, mounts)
    if best is None:
        return path
    rest = os.path.normpath(path)[len(best):].lstrip("/")
    return os.path.join(mounts[best], rest) if rest else mounts[best]


def is_mounted(path: str, mounts: dict[str, str] | None = None) -> bool:
    """Whether a volume provides `path` (or a directory above it)."""
    return _best_mount(path, volume_mounts() if mounts is None else mounts) is not None


def find_real(name: str) -> str | None:
    """The host binary `name` on PATH, skipping the image catalog's wrapper directories
    (they hold a `.complete` marker) so a wrapper never finds itself."""
    dirs = (os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
            "/sbin:/bin").split(":")
    for d in dirs:
        if not d or os.path.exists(os.path.join(d, ".complete")):
            continue
        cand = os.path.join(d, name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def log(line: str, stream=None) -> None:
    (stream or sys.stdout).write(line + "\n")
    (stream or sys.stdout).flush()


# ---------------------------------------------------------------------------------------------
# HTTP


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    peer: tuple[str, int]
    local: tuple[str, int]

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path)

    @property
    def query(self) -> str:
        return urlsplit(self.target).query

    def header(self, name: str, default: str = "") -> str:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default


@dataclass
class Response:
    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[Request], Awaitable[Response]]
AccessLog = Callable[[Request, Response, int, float], None]


class HTTPError(Exception):
    pass


async def _read_request(reader: asyncio.StreamReader, peer, local) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as e:
        raise HTTPError(431) from e
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as e:
        raise HTTPError(400) from e
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        k, sep, v = line.partition(":")
        if not sep:
            raise HTTPError(400)
        headers.append((k.strip(), v.strip()))
    req = Request(method, target, version, headers, b"", peer, local)
    if req.header("transfer-encoding").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        req.body = b"".join(chunks)
    else:
        length = int(req.header("content-length", "0") or 0)
        if length:
            req.body = await reader.readexactly(length)
    return req


def _format_date(ts: float | None = None) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ts))


async def serve_http(handler: Handler, port: int, host: str | None = None,
                     access_log: AccessLog | None = None,
                     server_header: str | None = None) -> asyncio.AbstractServer:
    """Start an HTTP/1.1 server (keep-alive, Content-Length/chunked bodies)."""

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        local = writer.get_extra_info("sockname") or ("", 0)
        try:
            while True:
                try:
                    req = await _read_request(reader, peer[:2], local[:2])
                except HTTPError as e:
                    writer.write(f"HTTP/1.1 {e.args[0]} {REASONS.get(e.args[0], '')}\r\n"
                                 "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
                    break
                if req is None:
                    break
                t0 = time.monotonic()
                try:
                    resp = await handler(req)
                except Exception as e:  # noqa: BLE001 - a 500 like any web framework
                    log(f"error handling {req.method} {req.target}: {e!r}", sys.stderr)
                    resp = Response(500, "Internal Server Error\n")
                body = resp.body.encode() if isinstance(resp.body, str) else resp.body
                keep = (req.version == "HTTP/1.1"
                        and req.header("connection").lower() != "close") or \
                    req.header("connection").lower() == "keep-alive"
                hdrs = {"Date": _format_date()}
                if server_header:
                    hdrs["Server"] = server_header
                if resp.content_type:
                    hdrs["Content-Type"] = resp.content_type
                hdrs.update(resp.headers)
                hdrs["Content-Length"] = str(len(body))
                hdrs["Connection"] = "keep-alive" if keep else "close"
                head = f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Unknown')}\r\n" + \
                    "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
                writer.write(head.encode("latin-1") + (b"" if req.method == "HEAD" else body))
                await writer.drain()
                if access_log:
                    access_log(req, resp, len(body), time.monotonic() - t0)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    return await asyncio.start_server(on_conn, host or bind_ip(), port, reuse_address=True)


def run(main: Callable[[], Awaitable[None]], on_term: str = "signal",
        term_message: str | None = None) -> None:
    """Run an app until it finishes or SIGTERM/SIGINT arrives.

    on_term "signal": die of the signal like a process without a handler (exit 143/130);
    "exit0": print term_message and exit 0 (apps that shut down gracefully); "ignore": ignore
    SIGTERM (node.js as PID 1), so only SIGKILL after the grace period ends it (137)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(main())
    got: list[int] = []

    def on_signal(signum: int) -> None:
        got.append(signum)
        task.cancel()

    if on_term == "ignore":  # node.js as PID 1: no default action for SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        loop.add_signal_handler(signal.SIGINT, on_signal, signal.SIGINT)
    else:
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, on_signal, s)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()
    if got:
        if on_term == "exit0":
            if term_message:
                log(term_message)
            sys.exit(0)
        signal.signal(got[0], signal.SIG_DFL)
        os.kill(os.getpid(), got[0])
