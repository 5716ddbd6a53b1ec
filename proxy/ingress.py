"""The L7 ingress controller of the proxy process (an ingress-nginx-like HTTP/1.1 proxy).

Layers:
- sans-IO HTTP/1.1 pieces (pure, tested with bytes): request/response head parsing, body
  framing rules, a chunked-body scanner, and the rewritten heads sent each way;
- `Conn` (an asyncio stream pair with a push-back buffer) and `BackendPool` (keep-alive
  connections to endpoints);
- `CertStore`: one SSLContext per TLS Secret, chosen by SNI, and a self-signed default
  certificate ("Kubernetes Ingress Controller Fake Certificate", as ingress-nginx);
- `IngressController`: informer handlers rebuild the routing table (proxy/ingress_routes.py)
  and the certificates; a work queue keeps our node IP in status.loadBalancer.ingress of
  each Ingress we serve; the HTTP and HTTPS servers proxy requests to ready endpoints.

Bodies are streamed both ways (never buffered whole); chunked bodies are relayed verbatim;
`Upgrade` requests (WebSocket ...) switch to a raw bidirectional relay after the backend's
101 Switching Protocols.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import re
import ssl
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from kubelab.client import APIError, WorkQueue, run_workers
from proxy.endpoints import ready_backends
from proxy.ingress_routes import (
    CONTROLLER_NAME,
    Backend,
    RouteTable,
    is_ours,
    normalize_host,
    our_classes,
    select_tls,
    tls_entries,
)

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
MAX_LINE = 8 * 1024
READ_SIZE = 256 * 1024
CONNECT_TIMEOUT = 5.0        # ingress-nginx proxy-connect-timeout
READ_TIMEOUT = 60.0          # ingress-nginx proxy-read-timeout
CLIENT_KEEPALIVE = 75.0      # nginx keepalive_timeout
UPSTREAM_IDLE = 60.0         # ingress-nginx upstream-keepalive-timeout
UPSTREAM_IDLE_PER_ADDR = 320  # ingress-nginx upstream-keepalive-connections

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "upgrade"})
FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-host", "x-forwarded-port",
                       "x-forwarded-proto", "x-forwarded-scheme", "x-scheme", "x-real-ip",
                       "x-request-id"})

REASONS = {400: "Bad Request", 404: "Not Found", 408: "Request Timeout",
           413: "Request Entity Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
           503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


class ProtocolError(Exception):
    """A malformed HTTP message; `status` is what to answer a client with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ---- sans-IO HTTP/1.1 ---------------------------------------------------------------------

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEX = re.compile(rb"^[0-9A-Fa-f]+$")
Headers = list[tuple[str, str]]


def get_header(headers: Headers, name: str) -> str | None:
    name = name.lower()
    vals = [v for k, v in headers if k.lower() == name]
    return ", ".join(vals) if vals else None


def header_tokens(headers: Headers, name: str) -> list[str]:
    v = get_header(headers, name)
    return [t.strip().lower() for t in v.split(",") if t.strip()] if v else []


@dataclass
class RequestHead:
    method: str
    target: str
    version: str          # "HTTP/1.1" | "HTTP/1.0"
    headers: Headers

    @property
    def authority(self) -> str:
        if self.target.startswith(("http://", "https://")):
            return urlsplit(self.target).netloc
        return get_header(self.headers, "host") or ""

    @property
    def origin_target(self) -> str:
        """The request target in origin form (absolute-form targets are rewritten)."""
        if self.target.startswith(("http://", "https://")):
            u = urlsplit(self.target)
            return (u.path or "/") + (f"?{u.query}" if u.query else "")
        return self.target

    @property
    def path(self) -> str:
        return self.origin_target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        conn = header_tokens(self.headers, "connection")
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn

    @property
    def upgrade(self) -> str | None:
        """The Upgrade protocol when the client asks to switch (Connection: upgrade)."""
        up = get_header(self.headers, "upgrade")
        if up and "upgrade" in header_tokens(self.headers, "connection"):
            return up
        return None


@dataclass
class ResponseHead:
    version: str
    status: int
    reason: str
    headers: Headers

    @property
    def keep_alive(self) -> bool:
        conn = header_tokens(self.headers, "connection")
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


def _parse_headers(lines: list[str]) -> Headers:
    headers: Headers = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            raise ProtocolError("obsolete header line folding")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise ProtocolError(f"invalid header line {line[:40]!r}")
        headers.append((name, value.strip(" \t")))
    return headers


def _lines(data: bytes) -> list[str]:
    text = data.decode("latin-1")
    text = text.removesuffix("\r\n\r\n")
    lines = text.split("\r\n")
    while lines and not lines[0]:   # RFC 9112: ignore empty lines before the request line
        lines.pop(0)
    if not lines:
        raise ProtocolError("empty message head")
    return lines


def parse_request_head(data: bytes) -> RequestHead:
    lines = _lines(data)
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
        raise ProtocolError(f"invalid request line {lines[0][:80]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise ProtocolError(f"unsupported version {version[:20]!r}", 505)
    return RequestHead(method, target, version, _parse_headers(lines[1:]))


def parse_response_head(data: bytes) -> ResponseHead:
    lines = _lines(data)
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"invalid status line {lines[0][:80]!r}", 502)
    return ResponseHead(version, int(code), reason, _parse_headers(lines[1:]))


def _content_length(headers: Headers) -> int | None:
    vals = {v.strip() for k, v in headers if k.lower() == "content-length"}
    vals = {x.strip() for v in vals for x in v.split(",")}
    if not vals:
        return None
    if len(vals) != 1 or not next(iter(vals)).isdigit():
        raise ProtocolError("invalid Content-Length")
    return int(next(iter(vals)))


def request_framing(req: RequestHead) -> tuple[str, int]:
    """("length", n) or ("chunked", 0) for the request body (("length", 0): no body)."""
    te = header_tokens(req.headers, "transfer-encoding")
    cl = _content_length(req.headers)
    if te:
        if cl is not None:
            raise ProtocolError("both Transfer-Encoding and Content-Length")
        if te != ["chunked"]:
            raise ProtocolError(f"unsupported Transfer-Encoding {','.join(te)}", 501)
        return "chunked", 0
    return "length", cl or 0


def response_framing(method: str, resp: ResponseHead) -> tuple[str, int]:
    """How the response body ends: ("none"|"length"|"chunked"|"close", length)."""
    if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
        return "none", 0
    te = header_tokens(resp.headers, "transfer-encoding")
    if te:
        return ("chunked", 0) if te[-1] == "chunked" else ("close", 0)
    cl = _content_length(resp.headers)
    if cl is not None:
        return "length", cl
    return "close", 0


class ChunkedScanner:
    """Finds the end of a chunked body in a byte stream (sans-IO). `feed(data)` returns how
    many bytes of `data` belong to the body (the rest is the next message) and, with
    `decode=True`, the chunk payloads."""

    def __init__(self, decode: bool = False):
        self.state = "size"       # size | data | data_end | trailer | done
        self.remaining = 0
        self.line = bytearray()
        self.decode = decode

    @property
    def done(self) -> bool:
        return self.state == "done"

    def feed(self, data: bytes) -> tuple[int, list[bytes]]:
        i, n = 0, len(data)
        out: list[bytes] = []
        while i < n and self.state != "done":
            if self.state == "data":
                take = min(self.remaining, n - i)
                if self.decode:
                    out.append(data[i:i + take])
                i += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = "data_end"
                continue
            j = data.find(b"\n", i)
            if j < 0:
                self.line += data[i:]
                if len(self.line) > MAX_LINE:
                    raise ProtocolError("chunk line too long")
                if self.state == "data_end" and not b"\r\n".startswith(self.line):
                    raise ProtocolError("missing CRLF after chunk data")
                return n, out
            self.line += data[i:j + 1]
            i = j + 1
            line = bytes(self.line).rstrip(b"\r\n")
            self.line.clear()
            if self.state == "size":
                size = line.split(b";", 1)[0].strip()
                if not _HEX.match(size) or len(size) > 16:
                    raise ProtocolError("invalid chunk size")
                self.remaining = int(size, 16)
                self.state = "data" if self.remaining else "trailer"
            elif self.state == "data_end":
                if line:
                    raise ProtocolError("missing CRLF after chunk data")
                self.state = "size"
            elif not line:            # trailer section ends with an empty line
                self.state = "done"
        return i, out


def upstream_request_head(req: RequestHead, *, client_ip: str, scheme: str, server_port: int,
                          request_id: str) -> bytes:
    """The head sent to the backend: HTTP/1.1, origin-form, hop-by-hop headers dropped, the
    ingress-nginx forwarding headers set (X-Forwarded-For is the client address, as
    ingress-nginx does unless told to trust incoming forwarded headers)."""
    drop = HOP_BY_HOP | FORWARDED | set(header_tokens(req.headers, "connection"))
    host = req.authority
    out = [f"{req.method} {req.origin_target} HTTP/1.1"]
    have_host = False
    for k, v in req.headers:
        lk = k.lower()
        if lk in drop:
            continue
        if lk == "host":
            have_host = True
            v = host
        out.append(f"{k}: {v}")
    if not have_host:
        out.append(f"Host: {host}")
    out += [f"X-Request-ID: {request_id}",
            f"X-Real-IP: {client_ip}",
            f"X-Forwarded-For: {client_ip}",
            f"X-Forwarded-Host: {host}",
            f"X-Forwarded-Port: {server_port}",
            f"X-Forwarded-Proto: {scheme}",
            f"X-Forwarded-Scheme: {scheme}",
            f"X-Scheme: {scheme}"]
    up = req.upgrade
    if up:
        out += [f"Upgrade: {up}", "Connection: upgrade"]
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


def downstream_response_head(resp: ResponseHead, *, keep_alive: bool, http10: bool,
                             dechunk: bool, switching: bool = False) -> bytes:
    """The head sent to the client: hop-by-hop headers dropped (kept for a protocol switch),
    Connection set for our own decision on the client connection."""
    if switching:
        drop: set[str] = set()
    else:
        drop = set(HOP_BY_HOP) | set(header_tokens(resp.headers, "connection"))
        if dechunk:
            drop.add("transfer-encoding")
    out = [f"{'HTTP/1.0' if http10 else 'HTTP/1.1'} {resp.status} {resp.reason}".rstrip()]
    for k, v in resp.headers:
        if k.lower() not in drop:
            out.append(f"{k}: {v}")
    if not switching:
        if not keep_alive:
            out.append("Connection: close")
        elif http10:
            out.append("Connection: keep-alive")
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


def simple_response(status: int, body: bytes, *, keep_alive: bool,
                    content_type: str = "text/html", head_only: bool = False) -> bytes:
    reason = REASONS.get(status, "")
    head = [f"HTTP/1.1 {status} {reason}",
            f"Date: {_http_date()}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive" if keep_alive else "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if head_only else body)


def error_page(status: int) -> bytes:
    """nginx's error page for status."""
    title = f"{status} {REASONS.get(status, '')}"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>kubelab-ingress</center>\r\n"
            f"</body>\r\n</html>\r\n").encode()


DEFAULT_BACKEND_404 = b"default backend - 404"


def _http_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())


# ---- streams ------------------------------------------------------------------------------

class HeadTooLarge(ProtocolError):
    def __init__(self) -> None:
        super().__init__("message head too large", 431)


class Conn:
    """A StreamReader/StreamWriter pair with a push-back buffer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.buf = b""
        self.idle_since = 0.0

    async def read(self, n: int = READ_SIZE, timeout: float | None = None) -> bytes:
        """Up to n bytes (b"" at EOF); TimeoutError after `timeout` seconds without data."""
        if self.buf:
            d, self.buf = self.buf[:n], self.buf[n:]
            return d
        if timeout is None:
            return await self.reader.read(n)
        async with asyncio.timeout(timeout):
            return await self.reader.read(n)

    def unread(self, data: bytes) -> None:
        self.buf = data + self.buf

    async def read_head(self) -> bytes | None:
        """One message head (through the empty line); None on EOF before any byte."""
        buf = bytearray(self.buf)
        self.buf = b""
        start = 0
        while True:
            idx = buf.find(b"\r\n\r\n", max(0, start - 3))
            if idx > MAX_HEAD:
                raise HeadTooLarge()
            if idx >= 0:
                self.buf = bytes(buf[idx + 4:])
                return bytes(buf[:idx + 4])
            if len(buf) > MAX_HEAD:
                raise HeadTooLarge()
            start = len(buf)
            d = await self.reader.read(READ_SIZE)
            if not d:
                if not buf.strip():
                    return None
                raise ProtocolError("connection closed inside the message head")
            buf += d

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def reusable(self) -> bool:
        return not (self.buf or self.writer.is_closing() or self.reader.at_eof()
                    or len(getattr(self.reader, "_buffer", b"")))

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001, S110
            pass


async def relay_body(src: Conn, dst: Conn, kind: str, length: int, *,
                     dechunk: bool = False, timeout: float | None = READ_TIMEOUT) -> None:
    """Copy one message body from src to dst ("length", "chunked" or "close"-delimited);
    TimeoutError when src sends nothing for `timeout` seconds (nginx's proxy_read_timeout /
    client_body_timeout)."""
    if kind == "length":
        remaining = length
        while remaining:
            d = await src.read(min(READ_SIZE, remaining), timeout)
            if not d:
                raise ConnectionResetError("peer closed inside the body")
            remaining -= len(d)
            await dst.write(d)
    elif kind == "chunked":
        scanner = ChunkedScanner(decode=dechunk)
        while not scanner.done:
            d = await src.read(READ_SIZE, timeout)
            if not d:
                raise ConnectionResetError("peer closed inside the chunked body")
            used, payload = scanner.feed(d)
            if used < len(d):
                src.unread(d[used:])
            if dechunk:
                for p in payload:
                    await dst.write(p)
            else:
                await dst.write(d[:used] if used < len(d) else d)
    elif kind == "close":
        while True:
            d = await src.read(READ_SIZE, timeout)
            if not d:
                return
            await dst.write(d)


async def _pipe(src: Conn, dst: Conn) -> None:
    try:
        while True:
            d = await src.read()
            if not d:
                break
            await dst.write(d)
        if dst.writer.can_write_eof():
            dst.writer.write_eof()
        else:
            dst.close()
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        dst.close()


async def tunnel(a: Conn, b: Conn) -> None:
    """Raw bidirectional relay (after 101 Switching Protocols), half-close aware."""
    try:
        await asyncio.gather(_pipe(a, b), _pipe(b, a))
    finally:
        a.close()
        b.close()


class BackendPool:
    """Idle keep-alive connections per backend address (most recently used first)."""

    def __init__(self, per_addr: int = UPSTREAM_IDLE_PER_ADDR, idle: float = UPSTREAM_IDLE):
        self.per_addr = per_addr
        self.idle_timeout = idle
        self.idle: dict[tuple[str, int], deque[Conn]] = {}

    def get(self, addr: tuple[str, int]) -> Conn | None:
        q = self.idle.get(addr)
        now = time.monotonic()
        while q:
            c = q.pop()
            if c.reusable() and now - c.idle_since < self.idle_timeout:
                return c
            c.close()
        return None

    def put(self, addr: tuple[str, int], conn: Conn) -> None:
        if not conn.reusable():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        q = self.idle.setdefault(addr, deque())
        q.append(conn)
        while len(q) > self.per_addr:
            q.popleft().close()

    def sweep(self) -> None:
        now = time.monotonic()
        for addr in list(self.idle):
            q = self.idle[addr]
            keep = deque(c for c in q if c.reusable() and now - c.idle_since < self.idle_timeout)
            for c in q:
                if c not in keep:
                    c.close()
            if keep:
                self.idle[addr] = keep
            else:
                del self.idle[addr]

    def close_all(self) -> None:
        for q in self.idle.values():
            for c in q:
                c.close()
        self.idle.clear()


# ---- certificates -------------------------------------------------------------------------

FAKE_CERT_CN = "Kubernetes Ingress Controller Fake Certificate"


def self_signed_cert(common_name: str = FAKE_CERT_CN,
                     dns_names: tuple[str, ...] = ("ingress.local",)) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) of a self-signed certificate, as ingress-nginx's default one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns_names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


def make_server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_alpn_protocols(["http/1.1"])
    fd, path = tempfile.mkstemp(prefix="kubelab-ingress-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
    return ctx


class CertStore:
    """Server certificates by SNI name from the TLS Secrets of our Ingresses."""

    def __init__(self) -> None:
        cert, key = self_signed_cert()
        self.default = make_server_context(cert, key)
        self.default.sni_callback = self._sni
        self.by_host: dict[str, ssl.SSLContext] = {}
        self._by_secret: dict[tuple[str, str], tuple[bytes, ssl.SSLContext]] = {}

    def _sni(self, sslobj, server_name, ctx) -> None:
        if server_name:
            found = select_tls(self.by_host, server_name)
            if found is not None:
                sslobj.context = found

    def update(self, ingresses: list[dict], secret) -> None:
        """Rebuild host → certificate; secret(ns, name) returns the Secret or None."""
        import base64
        by_host: dict[str, ssl.SSLContext] = {}
        used: set[tuple[str, str]] = set()
        for e in tls_entries(ingresses):
            if e.host in by_host:
                continue
            key = (e.secret_namespace, e.secret_name)
            obj = secret(*key)
            data = (obj or {}).get("data") or {}
            if "tls.crt" not in data or "tls.key" not in data:
                log.debug("ingress TLS secret %s/%s missing or without tls.crt/tls.key", *key)
                continue
            blob = (data["tls.crt"] + "|" + data["tls.key"]).encode()
            cached = self._by_secret.get(key)
            if cached is None or cached[0] != blob:
                try:
                    ctx = make_server_context(base64.b64decode(data["tls.crt"]),
                                              base64.b64decode(data["tls.key"]))
                except (ssl.SSLError, ValueError, OSError) as ex:
                    log.warning("ingress TLS secret %s/%s: invalid certificate: %s",
                                key[0], key[1], ex)
                    continue
                cached = (blob, ctx)
                self._by_secret[key] = cached
            used.add(key)
            by_host[e.host] = cached[1]
        for k in list(self._by_secret):
            if k not in used:
                del self._by_secret[k]
        self.by_host = by_host


# ---- the controller -----------------------------------------------------------------------

class IngressController:
    """Serves our Ingresses on node_ip:http_port / :https_port (0 picks a free port; the
    bound ports are in .http_port / .https_port after start())."""

    def __init__(self, client, informers, endpoint_index, *, node_name: str, node_ip: str,
                 http_port: int = 80, https_port: int = 443, controller_name: str | None = None):
        self.client = client
        self.informers = informers
        self.endpoints = endpoint_index
        self.node_name = node_name
        self.node_ip = node_ip
        self.http_port = http_port
        self.https_port = https_port
        self.controller_name = controller_name or CONTROLLER_NAME
        self.ing_inf = informers.informer("Ingress")
        self.class_inf = informers.informer("IngressClass")
        self.svc_inf = informers.informer("Service")
        self.secret_inf = informers.informer("Secret")
        self.node_inf = informers.informer("Node")
        self._gone_ips: set[str] = set()
        self.table = RouteTable()
        self.certs: CertStore | None = None
        self.pool = BackendPool()
        self.queue = WorkQueue()
        self._rr: dict[tuple, int] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: list[asyncio.Task] = []
        self._conns: set[asyncio.Task] = set()
        self._rebuild_pending = False
        self._running = False
        self._secrets_used: set[tuple[str, str]] = set()

    # -- lifecycle --

    async def start(self) -> None:
        self.certs = await asyncio.get_running_loop().run_in_executor(None, CertStore)
        self._running = True
        self.ing_inf.add_handler(self._on_ingress)
        self.class_inf.add_handler(self._on_class)
        self.secret_inf.add_handler(self._on_secret)
        self.node_inf.add_handler(self._on_node)
        self.informers.start()
        self._rebuild()
        await self._listen()
        self._tasks.append(asyncio.create_task(self._status_sync_when_ready(),
                                               name="ingress-status"))
        self._tasks.append(asyncio.create_task(self._sweeper(), name="ingress-pool-sweep"))
        log.info("ingress controller %s serving http %s:%s https %s:%s", self.controller_name,
                 self.node_ip, self.http_port, self.node_ip, self.https_port)

    async def stop(self) -> None:
        """Stop serving and remove this node's address from the Ingresses' status."""
        self._running = False
        for s in self._servers:
            s.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001, S110
                pass
        self._tasks.clear()
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=2)
        self.pool.close_all()
        ours = {self._key(i) for i in self.our_ingresses()}
        keys = [self._key(i) for i in self.ing_inf.list()
                if self._key(i) in ours or any(x.get("ip") == self.node_ip for x in self._lb(i))]
        if keys:
            try:
                await asyncio.wait_for(asyncio.gather(*(self._sync_status(k, fresh=True)
                                                        for k in keys),
                                                      return_exceptions=True), 10)
            except TimeoutError:
                log.warning("ingress: timed out removing %s from Ingress status", self.node_ip)
        for s in self._servers:
            try:
                await asyncio.wait_for(s.wait_closed(), 2)
            except (TimeoutError, Exception):  # noqa: BLE001, S110
                pass
        self._servers.clear()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        for scheme in ("http", "https"):
            port = self.http_port if scheme == "http" else self.https_port
            try:
                srv = await self._bind(scheme, port)
            except OSError as e:
                log.error("ingress: cannot listen on %s:%s (%s): %s; retrying", self.node_ip,
                          port, scheme, e)
                self._tasks.append(loop.create_task(self._bind_retry(scheme, port)))
                continue
            self._servers.append(srv)

    async def _bind(self, scheme: str, port: int):
        ssl_ctx = self.certs.default if scheme == "https" else None

        async def handler(reader, writer, scheme=scheme):
            await self._client_connection(reader, writer, scheme)

        srv = await asyncio.start_server(handler, self.node_ip, port, ssl=ssl_ctx,
                                         reuse_address=True, backlog=1024, limit=READ_SIZE,
                                         ssl_handshake_timeout=10 if ssl_ctx else None)
        bound = srv.sockets[0].getsockname()[1]
        if scheme == "http":
            self.http_port = bound
        else:
            self.https_port = bound
        return srv

    async def _bind_retry(self, scheme: str, port: int) -> None:
        while self._running:
            await asyncio.sleep(5)
            try:
                self._servers.append(await self._bind(scheme, port))
                log.info("ingress: now listening on %s:%s (%s)", self.node_ip, port, scheme)
                return
            except OSError:
                continue

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(10)
            self.pool.sweep()

    # -- informer events → routing table, certificates, status queue --

    @staticmethod
    def _key(ing: dict) -> tuple[str, str]:
        md = ing.get("metadata") or {}
        return md.get("namespace") or "default", md.get("name") or ""

    @staticmethod
    def _lb(ing: dict) -> list[dict]:
        return (((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []

    def _on_ingress(self, event, new, old) -> None:
        if not self._running:
            return
        if old is None or (new.get("spec") != old.get("spec")
                           or (new.get("metadata") or {}).get("annotations")
                           != (old.get("metadata") or {}).get("annotations")
                           or event == "DELETED"):
            self._schedule_rebuild()
        if event != "DELETED":
            self.queue.add(self._key(new))

    def _on_class(self, event, new, old) -> None:
        if not self._running:
            return
        self._schedule_rebuild()
        for ing in self.ing_inf.list():
            self.queue.add(self._key(ing))

    def _on_secret(self, event, new, old) -> None:
        if not self._running:
            return
        md = new.get("metadata") or {}
        if (md.get("namespace"), md.get("name")) in self._secrets_used:
            self._schedule_rebuild()

    def _schedule_rebuild(self) -> None:
        if self._rebuild_pending:
            return
        self._rebuild_pending = True
        asyncio.get_running_loop().call_soon(self._rebuild)

    def our_ingresses(self) -> list[dict]:
        names, default = our_classes(self.class_inf.list(), self.controller_name)
        return [i for i in self.ing_inf.list() if is_ours(i, names, default)]

    def _rebuild(self) -> None:
        self._rebuild_pending = False
        ours = self.our_ingresses()
        self.table = RouteTable.build(ours)
        self._secrets_used = {(e.secret_namespace, e.secret_name) for e in tls_entries(ours)}
        if self.certs is not None:
            self.certs.update(ours, self.secret_inf.get)
        log.debug("ingress: %d Ingresses, hosts %s", len(ours), self.table.hosts())

    # -- status.loadBalancer --

    async def _status_sync_when_ready(self) -> None:
        await asyncio.gather(self.ing_inf.synced.wait(), self.class_inf.synced.wait(),
                             self.node_inf.synced.wait())
        self._rebuild()
        for ing in self.ing_inf.list():
            self.queue.add(self._key(ing))
        await run_workers(self.queue, self._sync_status, workers=2, name="ingress-status")

    async def _sync_status(self, key: tuple[str, str], fresh: bool = False) -> None:
        """Level-triggered: our node IP is listed in status.loadBalancer.ingress exactly when
        we serve the Ingress, are running and our Node (if it has a Node object) is not
        NotReady; addresses of workers whose Node is NotReady/Unknown or was deleted are
        pruned. Conflicts retry on a fresh copy."""
        ns, name = key
        ing = (await self.client.get_or_none("Ingress", ns, name) if fresh
               else self.ing_inf.get(ns, name))
        for _ in range(10):
            if ing is None:
                return
            names, default = our_classes(self.class_inf.list(), self.controller_name)
            ours = is_ours(ing, names, default)
            dead = self.dead_node_ips() if ours and self._running else set()
            current = self._lb(ing)
            items = status_addresses(current, self.node_ip,
                                     serve=self._running and ours and self.node_ip not in dead,
                                     dead=dead)
            if items == sorted((dict(x) for x in current), key=_lb_sort):
                return
            obj = dict(ing)
            obj["status"] = dict(ing.get("status") or {})
            obj["status"]["loadBalancer"] = {"ingress": items} if items else {}
            try:
                await self.client.update_status("Ingress", obj)
                log.info("ingress %s/%s: status.loadBalancer.ingress %s", ns, name,
                         [x.get("ip") or x.get("hostname") for x in items])
                return
            except APIError as e:
                if e.not_found:
                    return
                if not e.conflict:
                    raise
            ing = await self.client.get_or_none("Ingress", ns, name)
        raise RuntimeError(f"ingress {ns}/{name}: status update kept conflicting")

    def dead_node_ips(self) -> set[str]:
        """InternalIPs of Nodes whose Ready condition is False/Unknown, and of deleted Nodes
        (until a Node with that address registers again)."""
        dead, alive = node_ip_states(self.node_inf.list())
        return (dead | self._gone_ips) - alive

    def _on_node(self, event, new, old) -> None:
        if not self._running:
            return
        if event == "DELETED":
            self._gone_ips |= set(_internal_ips(new))
        elif _node_state(new) == _node_state(old or {}) and old is not None:
            return
        for ing in self.ing_inf.list():
            self.queue.add(self._key(ing))

    # -- request path --

    def resolve(self, backend: Backend) -> list[tuple[str, int]]:
        """Ready (ip, port) targets of an Ingress backend, rotated round-robin."""
        svc = self.svc_inf.get(backend.namespace, backend.service)
        if svc is None:
            return []
        spec = svc.get("spec") or {}
        sp = None
        for p in spec.get("ports") or []:
            if backend.port is not None and p.get("port") == backend.port:
                sp = p
                break
            if backend.port is None and backend.port_name and p.get("name") == backend.port_name:
                sp = p
                break
        if spec.get("type") == "ExternalName":
            ext = spec.get("externalName")
            port = backend.port or (sp or {}).get("port")
            return [(ext, int(port))] if ext and port else []
        if sp is None or (sp.get("protocol") or "TCP") != "TCP":
            return []
        se = self.endpoints.get(backend.namespace, backend.service)
        targets = ready_backends(se, sp.get("name") or "", protocol="TCP") if se else []
        if not targets:
            return []
        k = (backend.namespace, backend.service, sp.get("port"))
        i = self._rr.get(k, 0) % len(targets)
        self._rr[k] = i + 1
        return targets[i:] + targets[:i]

    async def _client_connection(self, reader, writer, scheme: str) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        conn = Conn(reader, writer)
        peer = writer.get_extra_info("peername") or ("", 0)
        sock = writer.get_extra_info("sockname") or ("", 0)
        try:
            while self._running:
                try:
                    async with asyncio.timeout(CLIENT_KEEPALIVE):
                        head = await conn.read_head()
                except TimeoutError:
                    break
                except ProtocolError as e:
                    await conn.write(simple_response(e.status, error_page(e.status),
                                                     keep_alive=False))
                    break
                if head is None:
                    break
                try:
                    req = parse_request_head(head)
                    framing = request_framing(req)
                except ProtocolError as e:
                    log.debug("ingress: bad request from %s: %s", peer[0], e)
                    await conn.write(simple_response(e.status, error_page(e.status),
                                                     keep_alive=False))
                    break
                if not await self._handle(conn, req, framing, peer[0], scheme, sock[1]):
                    break
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ProtocolError,
                ssl.SSLError) as e:
            log.debug("ingress: client %s: %r", peer[0], e)
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug must cost one connection, not the server
            log.exception("ingress: error serving %s", peer[0])
        finally:
            self._conns.discard(task)
            conn.close()

    async def _reply(self, conn: Conn, req: RequestHead, framing: tuple[str, int],
                     status: int, body: bytes, content_type: str = "text/html") -> bool:
        keep = req.keep_alive and framing == ("length", 0)
        await conn.write(simple_response(status, body, keep_alive=keep,
                                         content_type=content_type,
                                         head_only=req.method == "HEAD"))
        return keep

    async def _handle(self, conn: Conn, req: RequestHead, framing: tuple[str, int],
                      client_ip: str, scheme: str, server_port: int) -> bool:
        """Proxy one request; True when the client connection stays open."""
        host = normalize_host(req.authority)
        m = self.table.match(host, req.path)
        if m is None:
            log.debug("ingress: %s %s%s → default backend 404", req.method, host, req.path)
            return await self._reply(conn, req, framing, 404, DEFAULT_BACKEND_404,
                                     "text/plain; charset=utf-8")
        targets = self.resolve(m.backend) if m.backend is not None else []
        if not targets:
            log.debug("ingress: %s %s%s → no ready endpoint for %s", req.method, host,
                      req.path, m.backend)
            return await self._reply(conn, req, framing, 503, error_page(503))
        head = upstream_request_head(req, client_ip=client_ip, scheme=scheme,
                                     server_port=server_port,
                                     request_id=os.urandom(16).hex())
        has_body = framing != ("length", 0)
        attempt = 0
        while True:
            attempt += 1
            try:
                addr, up, reused = await self._connect(targets, use_pool=attempt == 1)
            except TimeoutError:
                return await self._reply(conn, req, framing, 504, error_page(504))
            except OSError as e:
                log.info("ingress: %s: no backend of %s/%s accepted a connection: %s",
                         req.path, m.backend.namespace, m.backend.service, e)
                return await self._reply(conn, req, framing, 502, error_page(502))
            outcome = await self._exchange(conn, up, addr, req, framing, head, has_body,
                                           reused)
            if outcome == "retry" and attempt < 3:
                continue
            if outcome == "retry":
                return await self._reply(conn, req, framing, 502, error_page(502))
            return outcome == "keep"

    async def _connect(self, targets: list[tuple[str, int]], use_pool: bool = True
                       ) -> tuple[tuple[str, int], Conn, bool]:
        """A connection to the first target (round-robin order) that takes one: an idle
        keep-alive connection when there is one, else a new one; refused → next endpoint."""
        last: Exception = ConnectionRefusedError("no endpoints")
        for addr in targets:
            c = self.pool.get(addr) if use_pool else None
            if c is not None:
                return addr, c, True
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(addr[0], addr[1],
                                                                      limit=READ_SIZE),
                                              CONNECT_TIMEOUT)
                return addr, Conn(r, w), False
            except (TimeoutError, OSError) as e:
                log.debug("ingress: connect %s:%s: %r", addr[0], addr[1], e)
                last = e
        raise last

    async def _exchange(self, conn: Conn, up: Conn, addr, req: RequestHead,
                        framing: tuple[str, int], head: bytes, has_body: bool,
                        reused: bool) -> str:
        """One request/response on backend connection `up`: "keep" / "close" for the client
        connection, or "retry" when a reused idle connection turned out dead."""
        upload: asyncio.Task | None = None
        got_response = False
        try:
            await up.write(head)
            if has_body:
                upload = asyncio.create_task(relay_body(conn, up, *framing))
            while True:
                if upload is None or upload.done():
                    async with asyncio.timeout(READ_TIMEOUT):
                        raw = await up.read_head()
                else:
                    head_task = asyncio.ensure_future(asyncio.wait_for(up.read_head(),
                                                                       READ_TIMEOUT))
                    done, _ = await asyncio.wait({head_task, upload},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if head_task not in done and upload.exception() is not None:
                        head_task.cancel()  # the client went away (or stalled) mid-body
                        up.close()
                        return "close"
                    raw = await head_task
                if raw is None:
                    raise ConnectionResetError("backend closed the connection")
                got_response = True
                resp = parse_response_head(raw)
                if resp.status == 101 and req.upgrade:
                    await conn.write(downstream_response_head(resp, keep_alive=False,
                                                              http10=False, dechunk=False,
                                                              switching=True))
                    if up.buf:
                        await conn.write(up.buf)
                        up.buf = b""
                    await tunnel(conn, up)
                    return "close"
                if 100 <= resp.status < 200:
                    if resp.status != 101 and req.version == "HTTP/1.1":
                        await conn.write(downstream_response_head(
                            resp, keep_alive=True, http10=False, dechunk=False))
                    continue
                break
            kind, length = response_framing(req.method, resp)
            http10 = req.version == "HTTP/1.0"
            dechunk = http10 and kind == "chunked"
            client_keep = req.keep_alive and kind != "close" and not dechunk
            out = downstream_response_head(resp, keep_alive=client_keep, http10=http10,
                                           dechunk=dechunk)
            if kind == "length" and up.buf:   # body bytes that came with the head: one write
                first = up.buf[:length]
                up.buf = up.buf[len(first):]
                out += first
                length -= len(first)
            await conn.write(out)
            if kind != "none" and (kind != "length" or length):
                await relay_body(up, conn, kind, length, dechunk=dechunk)
            upstream_keep = resp.keep_alive and kind != "close" and resp.version == "HTTP/1.1"
            if upload is not None:
                if not upload.done():
                    await asyncio.wait({upload}, timeout=0.05)
                if not upload.done():
                    upload.cancel()         # the backend answered without reading it all
                    upstream_keep = client_keep = False
                elif upload.exception() is not None:
                    upstream_keep = client_keep = False
            if upstream_keep:
                self.pool.put(addr, up)
            else:
                up.close()
            log.debug("ingress: %s %s%s → %s:%s %s", req.method, req.authority, req.path,
                      addr[0], addr[1], resp.status)
            return "keep" if client_keep else "close"
        except ProtocolError as e:
            up.close()
            if upload is not None:
                upload.cancel()
            log.info("ingress: backend %s:%s: %s", addr[0], addr[1], e)
            if not got_response:
                await self._reply(conn, req, framing, 502, error_page(502))
            return "close"
        except TimeoutError:
            up.close()
            if upload is not None:
                upload.cancel()
            if not got_response:
                await self._reply(conn, req, framing, 504, error_page(504))
            return "close"
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as e:
            up.close()
            if upload is not None:
                upload.cancel()
            if not got_response and reused and not has_body:
                return "retry"
            if not got_response:
                log.info("ingress: backend %s:%s failed: %r", addr[0], addr[1], e)
                try:
                    await self._reply(conn, req, framing, 502, error_page(502))
                except (ConnectionError, OSError):
                    pass
            return "close"
        except asyncio.CancelledError:
            up.close()
            if upload is not None:
                upload.cancel()
            raise


def status_addresses(current: list[dict], node_ip: str, *, serve: bool,
                     dead: set[str]) -> list[dict]:
    """status.loadBalancer.ingress after this worker's update (pure): our node IP present
    iff `serve`, addresses in `dead` dropped, the rest kept; sorted by address."""
    items = [dict(x) for x in current if x.get("ip") != node_ip and x.get("ip") not in dead]
    if serve:
        items.append({"ip": node_ip})
    items.sort(key=_lb_sort)
    return items


def _internal_ips(node: dict) -> list[str]:
    return [a.get("address") for a in ((node.get("status") or {}).get("addresses") or [])
            if a.get("type") == "InternalIP" and a.get("address")]


def _node_state(node: dict) -> tuple:
    ready = next((c.get("status") for c in ((node.get("status") or {}).get("conditions") or [])
                  if c.get("type") == "Ready"), None)
    return ready, tuple(_internal_ips(node))


def node_ip_states(nodes: list[dict]) -> tuple[set[str], set[str]]:
    """(IPs of Nodes whose Ready condition is False or Unknown, IPs of the other Nodes).
    A Node without a Ready condition yet (registering) counts as alive."""
    dead: set[str] = set()
    alive: set[str] = set()
    for n in nodes:
        ready, ips = _node_state(n)
        (dead if ready is not None and ready != "True" else alive).update(ips)
    return dead - alive, alive


def _lb_sort(x: dict) -> tuple:
    ip = x.get("ip") or ""
    try:
        return (0, int(ipaddress.ip_address(ip)), "")
    except ValueError:
        return (1, 0, ip or x.get("hostname") or "")
