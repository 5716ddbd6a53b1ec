"""The wire side of the cluster DNS: a `QueryHandler` turning query bytes into response bytes
(dnslib for parsing and packing; records from `RecordLookup`; other names through the
`Forwarder`), and `DNSServer`, the UDP + TCP (length-prefixed) servers on asyncio that the
proxy process runs on the cluster DNS address.

Packed answers are cached by the query's bytes after the ID (flags, question and EDNS record
included, so the echoed name's case and the truncation limit are part of the key); a hit only
swaps in the query's ID. Any change of Services, EndpointSlices or Namespaces drops the cache,
answers from upstreams stay at most min(their TTL, 10 s)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable

from dnslib import EDNS0, OPCODE, QTYPE, RCODE, DNSError, DNSHeader, DNSQuestion, DNSRecord
from dnslib.buffer import Buffer

from .forward import Forwarder
from .records import RecordLookup, Result
from .source import ClusterCache

log = logging.getLogger(__name__)

UDP_MIN = 512
EDNS_SIZE = 1232  # the payload size we advertise (DNS flag day 2020)
CACHE_MAX = 20000
UPSTREAM_CACHE_MAX_TTL = 10
TCP_IDLE_TIMEOUT = 10.0
MAX_INFLIGHT = 1000  # queries waiting on upstreams; beyond, new ones are dropped (retried)

Response = bytes | None | Awaitable[bytes | None]


def _edns(req: DNSRecord):
    for rr in req.ar:
        if rr.rtype == QTYPE.OPT:
            return rr
    return None


def _pack_limited(reply: DNSRecord, limit: int) -> bytes:
    """Pack; when over `limit`, set TC and keep as many answer records as fit (as CoreDNS's
    Truncate), the additional section dropped except the OPT record."""
    data = bytes(reply.pack())
    if len(data) <= limit:
        return data
    reply.header.tc = 1
    reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    answers, auth = reply.rr, reply.auth
    reply.auth = []
    lo, hi = 0, len(answers)
    while lo < hi:  # largest n with answers[:n] fitting
        mid = (lo + hi + 1) // 2
        reply.rr = answers[:mid]
        if len(reply.pack()) <= limit:
            lo = mid
        else:
            hi = mid - 1
    reply.rr = answers[:lo]
    if lo == len(answers):
        reply.auth = auth
        if len(reply.pack()) > limit:
            reply.auth = []
    return bytes(reply.pack())


class QueryHandler:
    """Query bytes in, response bytes out (or an awaitable when upstreams are involved)."""

    def __init__(self, lookup: RecordLookup, forwarder: Forwarder,
                 ready: Callable[[], bool], generation: Callable[[], int]) -> None:
        self.lookup = lookup
        self.forwarder = forwarder
        self.ready = ready
        self.generation = generation
        self._cache: dict[bytes, tuple[int, float, bytes]] = {}

    def clear_cache(self) -> None:
        self._cache.clear()

    # --- entry point -------------------------------------------------------------------------

    def handle(self, data: bytes, *, udp: bool) -> Response:
        if type(data) is not bytes:
            data = bytes(data)
        key = (b"u" if udp else b"t") + data[2:]
        ent = self._cache.get(key)
        if ent is not None:
            gen, expires, payload = ent
            if (gen < 0 or gen == self.generation()) and (not expires
                                                          or expires > time.monotonic()):
                return data[:2] + payload[2:]
            del self._cache[key]
        try:
            req = DNSRecord.parse(data)
        except (DNSError, Exception):  # noqa: BLE001 - garbage from the network
            return self._formerr(data)
        h = req.header
        if h.qr:
            return None  # a response sent to us: never answer it
        if h.opcode != OPCODE.QUERY:
            return self._error(req, RCODE.NOTIMP)
        if len(req.questions) != 1:
            return self._error(req, RCODE.FORMERR)
        opt = _edns(req)
        limit = max(UDP_MIN, opt.edns_len if opt is not None else UDP_MIN) if udp else 65535
        q = req.q
        qname, qtype = str(q.qname), q.qtype
        zone_name = self.lookup.in_zone(qname)
        if zone_name and not self.ready():
            return self._error(req, RCODE.SERVFAIL, authority=True)
        try:
            res = self.lookup.lookup(qname, qtype)
        except Exception:
            log.exception("dns lookup of %s %s failed", qname, QTYPE.get(qtype, qtype))
            return self._error(req, RCODE.SERVFAIL)
        if res is None:
            return self._forward(data, req, udp, limit, key)
        if res.chase is not None:
            return self._chase(req, res, limit, key)
        out = self._pack(req, res, limit)
        self._store(key, self.generation(), 0.0, out)
        return out

    # --- building answers --------------------------------------------------------------------

    def _reply(self, req: DNSRecord, rcode: int, aa: bool) -> DNSRecord:
        reply = DNSRecord(DNSHeader(id=req.header.id, bitmap=req.header.bitmap, qr=1,
                                    aa=int(aa), ra=1), q=req.q)
        reply.header.tc = 0
        reply.header.rcode = rcode
        reply.questions = list(req.questions)
        if _edns(req) is not None:
            reply.add_ar(EDNS0(udp_len=EDNS_SIZE))
        return reply

    def _pack(self, req: DNSRecord, res: Result, limit: int) -> bytes:
        reply = self._reply(req, res.rcode, res.authoritative)
        reply.rr = list(res.answer)
        reply.auth = list(res.authority)
        opt = reply.ar
        reply.ar = list(res.additional) + opt
        return _pack_limited(reply, limit)

    def _error(self, req: DNSRecord, rcode: int, authority: bool = False) -> bytes:
        reply = self._reply(req, rcode, authority)
        if authority:
            reply.auth = [self.lookup.soa()]
        return bytes(reply.pack())

    def _formerr(self, data: bytes) -> bytes | None:
        if len(data) < 12:
            return None
        try:
            h = DNSHeader.parse(Buffer(data[:12]))
        except Exception:  # noqa: BLE001
            return None
        if h.qr:
            return None
        reply = DNSRecord(DNSHeader(id=h.id, bitmap=h.bitmap, qr=1, ra=1))
        reply.header.rcode = RCODE.FORMERR
        reply.header.aa = 0
        reply.header.tc = 0
        return bytes(reply.pack())

    def _store(self, key: bytes, gen: int, expires: float, out: bytes) -> None:
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (gen, expires, out)

    # --- upstream ------------------------------------------------------------------------------

    async def _forward(self, data: bytes, req: DNSRecord, udp: bool, limit: int,
                       key: bytes) -> bytes | None:
        # a TCP client's query goes out over TCP (CoreDNS forward: the client's protocol)
        resp = await self.forwarder.query(data, tcp=not udp)
        if resp is None:
            return self._error(req, RCODE.SERVFAIL)
        try:
            parsed = DNSRecord.parse(resp)
        except Exception:  # noqa: BLE001
            return self._error(req, RCODE.SERVFAIL)
        if udp and len(resp) > limit:
            parsed.header.id = req.header.id
            resp = _pack_limited(parsed, limit)
        if parsed.header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN) and not parsed.header.tc:
            ttls = [rr.ttl for rr in parsed.rr + parsed.auth]
            ttl = min([UPSTREAM_CACHE_MAX_TTL, *ttls])
            if ttl > 0:
                self._store(key, -1, time.monotonic() + ttl, resp)
        return data[:2] + resp[2:]

    async def _chase(self, req: DNSRecord, res: Result, limit: int, key: bytes) -> bytes:
        gen = self.generation()
        target, qtype = res.chase  # type: ignore[misc]
        q = DNSRecord(DNSHeader(rd=1), q=DNSQuestion(target, qtype))
        ttl = float(self.lookup.ttl)
        resp = await self.forwarder.query(q.pack())
        answer = list(res.answer)
        if resp is not None:
            try:
                up = DNSRecord.parse(resp)
                answer.extend(up.rr)
                ttl = min([ttl, *[rr.ttl for rr in up.rr]])
            except Exception:  # noqa: BLE001
                resp = None
        out = self._pack(req, Result(rcode=res.rcode, answer=answer, authority=res.authority,
                                     additional=res.additional), limit)
        if resp is not None and ttl > 0:
            self._store(key, gen, time.monotonic() + ttl, out)
        return out


def _bound_socket(ip: str, port: int, kind: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    s = socket.socket(family, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # bind even before the address is up (bridge mode: the proxy adds the DNS IP to its
        # dummy interface asynchronously); packets flow once it is
        try:
            if family == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
            else:
                s.setsockopt(socket.IPPROTO_IPV6, getattr(socket, "IPV6_FREEBIND", 78), 1)
        except OSError:
            pass
        if kind == socket.SOCK_DGRAM:
            for opt, val in ((socket.SO_RCVBUF, 4 << 20), (socket.SO_SNDBUF, 4 << 20)):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, val)
                except OSError:
                    pass
        s.bind((ip, port))
        s.setblocking(False)
        if kind == socket.SOCK_STREAM:
            s.listen(1024)
    except BaseException:
        s.close()
        raise
    return s


class _UDPServer:
    """UDP on a bare non-blocking socket: one readiness callback drains every queued datagram
    (recvfrom/sendto in a loop) instead of one event-loop turn per datagram, which is what
    makes a Python resolver keep up with a C one on the cached path."""

    BATCH = 512

    def __init__(self, server: DNSServer, sock: socket.socket) -> None:
        self.server = server
        self.handler = server.handler
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._readable)
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def _readable(self) -> None:
        recvfrom, sendto, handle = self.sock.recvfrom, self.sock.sendto, self.handler.handle
        for _ in range(self.BATCH):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. ICMP errors queued on the socket
                log.debug("dns udp: %s", e)
                continue
            try:
                r = handle(data, udp=True)
            except Exception:
                log.exception("dns query failed")
                continue
            if r is None:
                continue
            if type(r) is bytes:
                try:
                    sendto(r, addr)
                except OSError as e:  # full send buffer: drop, the client retries
                    log.debug("dns udp send: %s", e)
                continue
            if len(self.server._tasks) >= MAX_INFLIGHT:
                r.close()  # the coroutine never ran: the client retries
                continue
            self.server._spawn(self._later(r, addr))

    async def _later(self, r: Awaitable[bytes | None], addr) -> None:
        out = await r
        if out is not None and not self.closed:
            try:
                self.sock.sendto(out, addr)
            except OSError as e:
                log.debug("dns udp send: %s", e)


class DNSServer:
    """The cluster DNS of one worker: records from the informers' caches, UDP and TCP on
    listen_ip:port (SO_REUSEPORT, so several workers' proxies can share the address)."""

    def __init__(self, informers, *, cluster_domain: str = "cluster.local", listen_ip: str,
                 port: int = 53, upstreams: list[str], endpoint_index=None, ttl: int = 5,
                 upstream_timeout: float = 2.0) -> None:
        self.informers = informers
        self.listen_ip = listen_ip
        self.port = port
        self.cache = ClusterCache(informers, endpoint_index)
        self.lookup = RecordLookup(self.cache, cluster_domain, ttl=ttl, dns_ips=[listen_ip])
        self.forwarder = Forwarder(upstreams, timeout=upstream_timeout,
                                   exclude={(listen_ip, port)})
        self.handler = QueryHandler(self.lookup, self.forwarder, lambda: self.ready,
                                    lambda: self.cache.generation)
        self.cache.add_listener(self.handler.clear_cache)
        self._udp: _UDPServer | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._ready_logged = False

    @property
    def ready(self) -> bool:
        r = self.cache.synced
        if r and not self._ready_logged:
            self._ready_logged = True
            log.info("cluster DNS synced with the API, serving %s", self.lookup.zone)
        return r

    async def start(self) -> None:
        start = getattr(self.informers, "start", None)
        if start is not None:
            start()  # starts only the informers not yet running (ours: Namespace, ...)
        usock = _bound_socket(self.listen_ip, self.port, socket.SOCK_DGRAM)
        tsock = _bound_socket(self.listen_ip, self.port, socket.SOCK_STREAM)
        try:
            self._udp = _UDPServer(self, usock)
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tsock)
        except BaseException:
            usock.close()
            tsock.close()
            raise
        log.info("cluster DNS listening on %s:%d (udp, tcp), upstreams %s", self.listen_ip,
                 self.port, ", ".join(map(str, self.forwarder.upstreams)) or "none")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                try:
                    hdr = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                    (n,) = struct.unpack("!H", hdr)
                    data = await asyncio.wait_for(reader.readexactly(n), TCP_IDLE_TIMEOUT)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                r = self.handler.handle(data, udp=False)
                if r is not None and not isinstance(r, bytes):
                    r = await r
                if r is None:
                    continue
                writer.write(struct.pack("!H", len(r)) + r)
                await writer.drain()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("dns tcp connection failed")
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
