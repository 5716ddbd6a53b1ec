"""The userspace L4 load balancer: one listening socket per `ListenerKey` of the service
table, relaying TCP connections and UDP flows to the listener's backends.

TCP relays run on the raw non-blocking sockets, driven by the event loop's add_reader /
add_writer: a direction copies small reads through one buffer and, once it turns out bulk, moves
bytes with splice(2) through a pipe (zero-copy, no per-byte Python work); back-pressure: a
direction reads only once what it read before is written, and stops while the destination
cannot take more; a FIN from one side is passed on as a FIN (half-close) and the
pair closes once both directions have finished; a reset is passed on as a reset. A listener with
no backend accepts and resets at once (SO_LINGER 0), like kube-proxy's REJECT rule.

Updates (`Proxier.apply(table)`) keep listening sockets and established connections; only
connections to an endpoint that no longer exists are closed."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
import struct
import time
from collections.abc import Callable

from kubelab import timescale

from .servicetable import Backend, Balancer, ListenerKey, ListenerPlan

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 2.0
UDP_IDLE = 30.0  # seconds (conntrack's UDP stream timeout), scaled by the cluster time scale
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
_LINGER0 = struct.pack("ii", 1, 0)


class Stats:
    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0          # no endpoint: reset at once
        self.dial_failures = 0     # an endpoint refused / timed out
        self.closed_by_update = 0  # relays closed because their endpoint went away
        self.udp_flows = 0


def bind_socket(key: ListenerKey, shared: bool, freebind: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in key.ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if key.protocol == "UDP" else socket.SOCK_STREAM
    s = socket.socket(family, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if freebind:
            s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        s.bind((key.ip, key.port))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


# ---------------------------------------------------------------------------------------- TCP
#
# Relays work on the raw non-blocking sockets, driven by loop.add_reader/add_writer (no asyncio
# transports or protocols, no Python object per chunk). Each direction is a _Pump: it copies
# small reads through one shared buffer (recv_into + send) and, once a read fills that buffer
# (a bulk stream), switches to splice(2), socket -> pipe -> socket, so bulk payload never enters
# user space (without os.splice, or with KUBELAB_L4_SPLICE=0, it always copies).
#
# Back-pressure: a pump reads only when everything it read before is written; when the
# destination socket cannot take it all, it stops reading and waits for the destination to
# become writable. Half-close: EOF from the source (after everything is written) becomes
# shutdown(SHUT_WR) on the destination; the relay closes once both directions have seen EOF.
# An error (reset, EPIPE) on either side resets both.

_splice = getattr(os, "splice", None)
SPLICE = _splice is not None and os.environ.get("KUBELAB_L4_SPLICE", "1") != "0"
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
PIPE_BIG = 1024 * 1024     # what a splicing direction asks for (allowed up to fs.pipe-max-size)
PIPE_MIN = 64 * 1024       # splice only through a pipe at least this big
COPY_CHUNK = 256 * 1024
_BUF = bytearray(COPY_CHUNK)  # one loop, one thread: one shared read buffer
_VIEW = memoryview(_BUF)
_READS_PER_WAKEUP = 16
_ACCEPTS_PER_WAKEUP = 64
_ACCEPT_PAUSE = 0.1        # after EMFILE & co.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def _reset_sock(sock: socket.socket) -> None:
    """Close a socket with a RST (SO_LINGER 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
    except OSError:
        pass
    sock.close()


def _nodelay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class _Pump:
    """One direction of a relay, `src` socket -> `dst` socket.

    It starts copying: recv_into one shared buffer, send at once, keep only what `dst` refused
    (cheapest for request/response traffic). A read that fills the buffer means a bulk stream:
    from then on it splices, src -> pipe -> dst, so the payload no longer enters user space."""
    __slots__ = ("can_splice", "cap", "dst", "dst_sock", "eof", "left", "loop", "pending",
                 "recv_into", "relay", "rp", "send", "splicing", "src", "src_sock", "wp")

    def __init__(self, relay: _Relay, src: socket.socket, dst: socket.socket) -> None:
        self.relay = relay
        self.loop = relay.listener.loop
        self.src_sock = src
        self.dst_sock = dst
        self.src = src.fileno()
        self.dst = dst.fileno()
        self.recv_into = src.recv_into
        self.send = dst.send
        self.pending = 0     # bytes read from src not yet written to dst
        self.left = b""      # copying: those bytes
        self.eof = False     # src sent EOF and it was passed on
        self.splicing = False
        self.can_splice = SPLICE
        self.rp = self.wp = -1
        self.cap = 0

    def start(self) -> None:
        self.loop.add_reader(self.src, self.readable)

    def stop(self) -> None:
        """Unregister from the loop and free the pipe (the relay closes the sockets)."""
        loop = self.loop
        loop.remove_reader(self.src)
        loop.remove_writer(self.dst)
        for fd in (self.rp, self.wp):
            if fd >= 0:
                os.close(fd)
        self.rp = self.wp = -1

    # ------------------------------------------------------------ copying
    def readable(self) -> None:
        # the hot path of request/response traffic: as little Python as possible
        try:
            n = self.recv_into(_VIEW)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.relay.fail(e)
            return
        if not n:
            self.src_eof()
            return
        try:
            m = self.send(_VIEW[:n])
        except (BlockingIOError, InterruptedError):
            m = 0
        except OSError as e:
            self.relay.fail(e)
            return
        if m < n:
            self.left = _BUF[m:n]
            self.pending = n - m
            self.blocked()
        elif n == COPY_CHUNK and self.can_splice:  # a full buffer: a bulk stream
            self.start_splicing()
        # else: more to read (if any) comes with the next readiness event

    def start_splicing(self) -> None:
        self.can_splice = False  # one attempt
        try:
            rp, wp = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # out of file descriptors: go on copying
            return
        try:
            cap = fcntl.fcntl(wp, F_SETPIPE_SZ, PIPE_BIG)
        except OSError:  # over fs.pipe-user-pages-soft (unprivileged user): what did we get?
            cap = fcntl.fcntl(wp, F_GETPIPE_SZ)
        if cap < PIPE_MIN:  # over the soft limit new pipes get 2 pages: copying beats that
            os.close(rp)
            os.close(wp)
            return
        self.rp, self.wp, self.cap, self.splicing = rp, wp, cap, True
        self.loop.add_reader(self.src, self.readable_splice)

    # ------------------------------------------------------------ splicing
    def readable_splice(self) -> None:
        src, wp, cap = self.src, self.wp, self.cap
        for _ in range(_READS_PER_WAKEUP):
            try:
                n = _splice(src, wp, cap, None, None, _SPLICE_FLAGS)
            except BlockingIOError:
                return
            except OSError as e:
                self.relay.fail(e)
                return
            if not n:
                self.src_eof()
                return
            self.pending = n
            if not self.flush():
                self.blocked()
                return
            if n < cap:
                return

    def flush(self) -> bool:
        """Write what is pending; False when dst is full (or the relay failed)."""
        try:
            if self.splicing:
                while self.pending:
                    m = _splice(self.rp, self.dst, self.pending, None, None, _SPLICE_FLAGS)
                    if not m:
                        return False
                    self.pending -= m
            else:
                m = self.send(self.left)
                self.left = self.left[m:]
                self.pending = len(self.left)
                return not self.pending
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            self.relay.fail(e)
            return False
        return True

    # ------------------------------------------------------------ both
    def blocked(self) -> None:
        if not self.relay.closed:
            self.loop.remove_reader(self.src)
            self.loop.add_writer(self.dst, self.writable)

    def writable(self) -> None:
        if self.flush():
            self.loop.remove_writer(self.dst)
            self.loop.add_reader(self.src,
                                 self.readable_splice if self.splicing else self.readable)

    def src_eof(self) -> None:
        self.loop.remove_reader(self.src)
        self.eof = True
        try:
            self.dst_sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.relay.fail(e)
            return
        self.relay.pump_eof()


class _Relay:
    __slots__ = ("addr", "backend", "candidates", "client", "client_ip", "closed", "dialing",
                 "down", "listener", "timer", "up")

    def __init__(self, listener: TCPListener, client: socket.socket, client_ip: str,
                 candidates: list[Backend]) -> None:
        self.listener = listener
        self.client = client
        self.client_ip = client_ip
        self.candidates = candidates
        self.backend: socket.socket | None = None
        self.dialing: Backend | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.addr: Backend | None = None
        self.up: _Pump | None = None    # client -> backend
        self.down: _Pump | None = None  # backend -> client
        self.closed = False

    def start(self) -> None:
        """The backend is connected: relay both ways."""
        self.up = _Pump(self, self.client, self.backend)
        self.down = _Pump(self, self.backend, self.client)
        self.up.start()
        self.down.start()

    def pump_eof(self) -> None:
        if self.up.eof and self.down.eof:
            self.close()

    def fail(self, exc: OSError) -> None:
        log.debug("%s: relay %s -> %s: %s", self.listener.key, self.client_ip, self.addr, exc)
        self._close(True)  # pass a reset (or any error) on as a reset

    def close(self) -> None:
        self._close(False)

    def abort(self) -> None:
        self._close(True)

    def _close(self, rst: bool) -> None:
        if self.closed:
            return
        self.closed = True
        loop = self.listener.loop
        for p in (self.up, self.down):
            if p is not None:
                p.stop()
        if self.timer is not None:
            self.timer.cancel()
        for s in (self.client, self.backend):
            if s is not None and s.fileno() >= 0:
                if self.dialing is not None and s is self.backend:
                    loop.remove_writer(s.fileno())
                if rst:
                    _reset_sock(s)
                else:
                    s.close()
        self.listener.relays.discard(self)


def _gone(plan: ListenerPlan, addr: Backend) -> bool:
    """The endpoint no longer exists (not merely not ready): its connections are closed."""
    return addr not in plan.known and addr not in plan.backends


class TCPListener:
    def __init__(self, plan: ListenerPlan, stats: Stats, freebind: bool = False) -> None:
        self.key = plan.key
        self.plan = plan
        self.stats = stats
        self.freebind = freebind
        self.balancer = Balancer(plan.backends, plan.affinity_timeout)
        self.relays: set[_Relay] = set()
        self.sock: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._resume: asyncio.TimerHandle | None = None

    async def open(self) -> None:
        self.loop = asyncio.get_running_loop()
        sock = bind_socket(self.key, self.plan.shared, self.freebind)
        try:
            sock.listen(4096)
            self.loop.add_reader(sock.fileno(), self._on_accept)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    # ------------------------------------------------------------------ accepting
    def _on_accept(self) -> None:
        lsock = self.sock
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                s, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _EXHAUSTED:  # don't spin on a listen queue we cannot serve
                    log.warning("%s: accept: %s; pausing", self.key, e)
                    self.loop.remove_reader(lsock.fileno())
                    self._resume = self.loop.call_later(_ACCEPT_PAUSE, self._resume_accept)
                    return
                continue  # ECONNABORTED & co.: that one connection is gone
            self._accepted(s, peer)

    def _resume_accept(self) -> None:
        self._resume = None
        if self.sock is not None:
            self.loop.add_reader(self.sock.fileno(), self._on_accept)

    def _accepted(self, s: socket.socket, peer) -> None:
        self.stats.accepted += 1
        s.setblocking(False)
        candidates = self.balancer.candidates(peer[0])
        if not candidates:
            self.stats.rejected += 1
            _reset_sock(s)
            return
        _nodelay(s)
        relay = _Relay(self, s, peer[0], candidates)
        self.relays.add(relay)
        self._dial_next(relay)

    # ------------------------------------------------------------------ dialling
    def _dial_next(self, relay: _Relay) -> None:
        loop = self.loop
        while relay.candidates:
            addr = relay.candidates.pop(0)
            try:
                b = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET,
                                  socket.SOCK_STREAM)
            except OSError as e:  # out of file descriptors: nothing else will do better
                log.warning("%s: cannot dial: %s", self.key, e)
                relay.abort()
                return
            b.setblocking(False)
            _nodelay(b)
            err = b.connect_ex(addr)
            if err == 0 or err == errno.EINPROGRESS:
                relay.backend = b
                relay.dialing = addr
                if err == 0:
                    self._connected(relay)
                else:
                    loop.add_writer(b.fileno(), self._on_connect, relay)
                    relay.timer = loop.call_later(DIAL_TIMEOUT, self._dial_timeout, relay)
                return
            b.close()
            self._dial_failed(addr, os.strerror(err))
        self.stats.rejected += 1
        relay.abort()  # reset the client

    def _dial_failed(self, addr: Backend, why: str) -> None:
        self.stats.dial_failures += 1
        self.balancer.failed(addr)
        log.debug("%s: endpoint %s:%d failed: %s", self.key, addr[0], addr[1], why)

    def _dial_done(self, relay: _Relay) -> None:
        self.loop.remove_writer(relay.backend.fileno())
        if relay.timer is not None:
            relay.timer.cancel()
            relay.timer = None

    def _on_connect(self, relay: _Relay) -> None:
        if relay.closed or relay.dialing is None:
            return
        self._dial_done(relay)
        b = relay.backend
        err = b.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            addr, relay.backend, relay.dialing = relay.dialing, None, None
            b.close()
            self._dial_failed(addr, os.strerror(err))
            self._dial_next(relay)
            return
        self._connected(relay)

    def _dial_timeout(self, relay: _Relay) -> None:
        relay.timer = None
        if relay.closed or relay.dialing is None:
            return
        self._dial_done(relay)
        addr, b, relay.backend, relay.dialing = relay.dialing, relay.backend, None, None
        b.close()
        self._dial_failed(addr, "timed out")
        self._dial_next(relay)

    def _connected(self, relay: _Relay) -> None:
        addr, relay.dialing = relay.dialing, None
        relay.addr = addr
        relay.candidates = []
        self.balancer.connected(relay.client_ip, addr)
        if _gone(self.plan, addr):
            relay.abort()  # the endpoint went away while we were dialling
            return
        relay.start()

    # ------------------------------------------------------------------ updates
    def update(self, plan: ListenerPlan) -> None:
        self.plan = plan
        self.balancer.update(plan.backends, plan.affinity_timeout)
        gone = [r for r in self.relays if r.addr is not None and _gone(plan, r.addr)]
        for r in gone:
            self.stats.closed_by_update += 1
            r.abort()

    async def close(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        for r in list(self.relays):
            r.abort()


# ---------------------------------------------------------------------------------------- UDP

class _Flow(asyncio.DatagramProtocol):
    __slots__ = ("addr", "client", "last", "listener", "pending", "transport")

    def __init__(self, listener: UDPListener, client: tuple, addr: Backend) -> None:
        self.listener = listener
        self.client = client
        self.addr = addr
        self.transport: asyncio.DatagramTransport | None = None
        self.last = time.monotonic()
        self.pending: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        for d in self.pending:
            transport.sendto(d)
        self.pending.clear()

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.sendto(data)

    def datagram_received(self, data: bytes, _addr) -> None:
        self.last = time.monotonic()
        t = self.listener.transport
        if t is not None:
            t.sendto(data, self.client)

    def error_received(self, exc) -> None:  # ICMP port unreachable from the endpoint
        log.debug("udp flow %s -> %s: %s", self.client, self.addr, exc)
        self.listener.balancer.failed(self.addr)
        self.close()

    def close(self) -> None:
        if self.listener.flows.get(self.client) is self:
            del self.listener.flows[self.client]
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if self.listener.flows.get(self.client) is self:
            del self.listener.flows[self.client]


class UDPListener(asyncio.DatagramProtocol):
    def __init__(self, plan: ListenerPlan, stats: Stats, freebind: bool = False,
                 idle_timeout: float | None = None) -> None:
        self.key = plan.key
        self.plan = plan
        self.stats = stats
        self.freebind = freebind
        self.balancer = Balancer(plan.backends, plan.affinity_timeout)
        self.flows: dict[tuple, _Flow] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.idle = idle_timeout if idle_timeout is not None else timescale.scaled(UDP_IDLE)
        self._sweeper: asyncio.Task | None = None

    async def open(self) -> None:
        sock = bind_socket(self.key, self.plan.shared, self.freebind)
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._sweeper = loop.create_task(self._sweep())

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        flow = self.flows.get(addr)
        if flow is None:
            candidates = self.balancer.candidates(addr[0])
            if not candidates:
                self.stats.rejected += 1
                return
            backend = candidates[0]
            self.balancer.connected(addr[0], backend)
            flow = _Flow(self, addr, backend)
            self.flows[addr] = flow
            self.stats.udp_flows += 1
            asyncio.get_running_loop().create_task(self._connect(flow))
        flow.send(data)

    async def _connect(self, flow: _Flow) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in flow.addr[0] else socket.AF_INET
        try:
            await loop.create_datagram_endpoint(lambda: flow, remote_addr=flow.addr,
                                                family=family)
        except OSError as e:
            log.debug("udp flow to %s failed: %s", flow.addr, e)
            flow.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(self.idle / 2, 5.0)))
            cutoff = time.monotonic() - self.idle
            for f in [f for f in self.flows.values() if f.last < cutoff]:
                f.close()

    def update(self, plan: ListenerPlan) -> None:
        self.plan = plan
        self.balancer.update(plan.backends, plan.affinity_timeout)
        for f in [f for f in self.flows.values()
                  if f.addr not in plan.known and f.addr not in plan.backends]:
            self.stats.closed_by_update += 1
            f.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for f in list(self.flows.values()):
            f.close()
        if self.transport is not None:
            self.transport.close()


# ------------------------------------------------------------------------------------ Proxier

Listener = TCPListener | UDPListener


class Proxier:
    """Owns the listeners; `apply(table)` makes them match a service table."""

    def __init__(self, freebind: bool = False,
                 on_error: Callable[[ListenerKey, OSError], None] | None = None) -> None:
        self.listeners: dict[ListenerKey, Listener] = {}
        self.failed: dict[ListenerKey, str] = {}
        self.stats = Stats()
        self.freebind = freebind
        self.on_error = on_error
        self._lock = asyncio.Lock()

    async def apply(self, table: dict[ListenerKey, ListenerPlan]) -> None:
        async with self._lock:
            for key in [k for k in self.listeners if k not in table]:
                lst = self.listeners.pop(key)
                log.info("stop listening on %s", key)
                await lst.close()
            self.failed = {k: v for k, v in self.failed.items() if k in table}
            for key, plan in table.items():
                lst = self.listeners.get(key)
                if lst is not None:
                    if lst.plan.shared != plan.shared:
                        await lst.close()
                        del self.listeners[key]
                    else:
                        lst.update(plan)
                        continue
                lst = UDPListener(plan, self.stats, self.freebind) if key.protocol == "UDP" \
                    else TCPListener(plan, self.stats, self.freebind)
                try:
                    await lst.open()
                except OSError as e:
                    if self.failed.get(key) != str(e):
                        log.warning("cannot listen on %s for %s/%s: %s", key, *plan.service, e)
                    self.failed[key] = str(e)
                    if self.on_error is not None:
                        self.on_error(key, e)
                    continue
                self.failed.pop(key, None)
                log.info("listening on %s for %s/%s:%s (%d endpoints)", key, *plan.service,
                         plan.port_name, len(plan.backends))
                self.listeners[key] = lst

    def connections(self) -> int:
        return sum(len(lst.relays) if isinstance(lst, TCPListener) else len(lst.flows)
                   for lst in self.listeners.values())

    async def close(self) -> None:
        async with self._lock:
            for lst in self.listeners.values():
                await lst.close()
            self.listeners.clear()

