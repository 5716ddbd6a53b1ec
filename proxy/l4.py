"""The userspace L4 load balancer: one listening socket per `ListenerKey` of the service
table, relaying TCP connections and UDP flows to the listener's backends.

TCP relays are a pair of asyncio Protocols writing each chunk straight into the other side's
transport (no per-byte Python work); back-pressure pauses reading on one side while the other
side's write buffer is above its high-water mark; a FIN from one side is passed on as a FIN
(half-close) and the pair closes once both directions have finished. A listener with no
backend accepts and resets at once (SO_LINGER 0), like kube-proxy's REJECT rule.

Updates (`Proxier.apply(table)`) keep listening sockets and established connections; only
connections to an endpoint that no longer exists are closed."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable

from kubelab import timescale

from .servicetable import Backend, Balancer, ListenerKey, ListenerPlan

log = logging.getLogger(__name__)

HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
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


def reset(transport: asyncio.BaseTransport) -> None:
    """Close a TCP connection with a RST (SO_LINGER 0)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
        except OSError:
            pass
    transport.abort()


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

class _Side(asyncio.Protocol):
    """One end of a relay; `peer` is the other end."""
    __slots__ = ("closed", "conn", "early", "eof", "peer", "transport")

    def __init__(self, conn: _Relay) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.eof = False
        self.closed = False
        self.early: list[bytes] | None = None  # client bytes that came before the backend

    def flush_early(self) -> None:
        if self.early:
            for d in self.early:
                self.peer.transport.write(d)
        self.early = None
        if self.eof:
            self.peer.transport.write_eof()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data: bytes) -> None:
        t = self.peer.transport
        if t is None:  # the backend is still being dialled
            if self.early is None:
                self.early = []
            self.early.append(data)
            self.transport.pause_reading()
            return
        t.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer.transport is None:
            return True  # passed on once the backend is connected
        if peer.transport is not None and not peer.closed:
            if peer.eof:
                self.conn.close()
                return False
            try:
                peer.transport.write_eof()
            except (OSError, RuntimeError):
                self.conn.close()
                return False
        return True  # keep our write direction open (half-close)

    def pause_writing(self) -> None:
        if self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.conn.side_lost(self, exc)


class _Relay:
    __slots__ = ("addr", "backend", "client", "client_ip", "listener", "task")

    def __init__(self, listener: TCPListener, client_ip: str) -> None:
        self.listener = listener
        self.client = _Side(self)
        self.backend = _Side(self)
        self.client.peer = self.backend
        self.backend.peer = self.client
        self.addr: Backend | None = None
        self.client_ip = client_ip
        self.task: asyncio.Task | None = None

    def side_lost(self, side: _Side, exc) -> None:
        other = side.peer
        if other.transport is not None and not other.closed:
            if exc is not None:
                reset(other.transport)  # pass a reset on as a reset
            else:
                other.transport.close()  # flushes what is buffered first
        if side is self.client and self.task is not None and not self.task.done():
            self.task.cancel()
        if (self.client.closed or self.client.transport is None) and \
                (self.backend.closed or self.backend.transport is None):
            self.listener.relays.discard(self)

    def close(self) -> None:
        for s in (self.client, self.backend):
            if s.transport is not None and not s.closed:
                s.transport.close()

    def abort(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        for s in (self.client, self.backend):
            if s.transport is not None and not s.closed:
                reset(s.transport)
        self.listener.relays.discard(self)


class _Acceptor(asyncio.Protocol):
    """The client side's first protocol: picks an endpoint, then hands over to the relay."""

    def __init__(self, listener: TCPListener) -> None:
        self.listener = listener
        self.relay: _Relay | None = None

    def connection_made(self, transport) -> None:
        lst = self.listener
        lst.stats.accepted += 1
        peer = transport.get_extra_info("peername") or ("", 0)
        candidates = lst.balancer.candidates(peer[0])
        if not candidates:
            lst.stats.rejected += 1
            reset(transport)
            return
        transport.pause_reading()
        relay = _Relay(lst, peer[0])
        self.relay = relay
        relay.client.connection_made(transport)
        transport.set_protocol(relay.client)
        lst.relays.add(relay)
        relay.task = asyncio.get_running_loop().create_task(lst.dial(relay, candidates))

    def connection_lost(self, exc) -> None:  # only before the hand-over
        pass


class TCPListener:
    def __init__(self, plan: ListenerPlan, stats: Stats, freebind: bool = False) -> None:
        self.key = plan.key
        self.plan = plan
        self.stats = stats
        self.freebind = freebind
        self.balancer = Balancer(plan.backends, plan.affinity_timeout)
        self.relays: set[_Relay] = set()
        self.server: asyncio.AbstractServer | None = None

    async def open(self) -> None:
        sock = bind_socket(self.key, self.plan.shared, self.freebind)
        try:
            self.server = await asyncio.get_running_loop().create_server(
                lambda: _Acceptor(self), sock=sock, backlog=4096)
        except BaseException:
            sock.close()
            raise

    async def dial(self, relay: _Relay, candidates: list[Backend]) -> None:
        loop = asyncio.get_running_loop()
        for addr in candidates:
            try:
                await asyncio.wait_for(loop.create_connection(lambda: relay.backend, *addr),
                                       DIAL_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, OSError) as e:
                self.stats.dial_failures += 1
                self.balancer.failed(addr)
                log.debug("%s: endpoint %s:%d failed: %s", self.key, addr[0], addr[1], e)
                continue
            if relay.client.closed:
                relay.backend.transport.close()
                return
            relay.addr = addr
            self.balancer.connected(relay.client_ip, addr)
            if addr not in self.plan.known and addr not in self.plan.backends:
                relay.abort()  # the endpoint went away while we were dialling
                return
            relay.client.flush_early()
            relay.client.transport.resume_reading()
            return
        self.stats.rejected += 1
        if relay.client.transport is not None and not relay.client.closed:
            reset(relay.client.transport)
        self.relays.discard(relay)

    def update(self, plan: ListenerPlan) -> None:
        self.plan = plan
        self.balancer.update(plan.backends, plan.affinity_timeout)
        gone = [r for r in self.relays
                if r.addr is not None and r.addr not in plan.known and r.addr not in plan.backends]
        for r in gone:
            self.stats.closed_by_update += 1
            r.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
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

