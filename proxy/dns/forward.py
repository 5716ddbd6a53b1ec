"""Forwarding of names outside the cluster zone to the node's upstream resolvers (CoreDNS's
`forward . /etc/resolv.conf`): the client's query goes out unchanged over UDP, each upstream
in turn with a short per-try timeout, and again over TCP when the answer comes back
truncated. When no upstream answers before the deadline the caller answers SERVFAIL: a client
never hangs on a dead upstream."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

TC_BIT = 0x0200  # header flags


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int = 53

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_upstream(s: str) -> Upstream:
    """'1.1.1.1', '1.1.1.1:5353', '[::1]:53', '::1', 'dns://1.1.1.1:53'."""
    s = s.strip()
    s = s.removeprefix("dns://")
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        return Upstream(host, int(rest[1:]) if rest.startswith(":") else 53)
    if s.count(":") == 1:
        host, port = s.split(":")
        return Upstream(host, int(port))
    return Upstream(s, 53)


def upstreams_from_resolv_conf(path: str = "/etc/resolv.conf") -> list[str]:
    """The nameservers of a resolv.conf (the node's upstream resolvers)."""
    out: list[str] = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    out.append(parts[1])
    except OSError:
        pass
    return out


def is_truncated(msg: bytes) -> bool:
    return len(msg) >= 4 and bool(struct.unpack_from("!H", msg, 2)[0] & TC_BIT)


class _UDPClient(asyncio.DatagramProtocol):
    def __init__(self, qid: bytes) -> None:
        self.qid = qid
        self.fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr) -> None:
        if data[:2] == self.qid and not self.fut.done():
            self.fut.set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable and the like
        if not self.fut.done():
            self.fut.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc or ConnectionError("closed"))


class Forwarder:
    def __init__(self, upstreams: list[str], *, timeout: float = 2.0, try_timeout: float = 0.5,
                 exclude: set[tuple[str, int]] | None = None) -> None:
        ups = [parse_upstream(u) for u in upstreams if u.strip()]
        # never forward to ourselves (a node resolv.conf pointing at the cluster DNS would loop)
        self.upstreams = [u for u in ups if (u.host, u.port) not in (exclude or set())]
        self.timeout = timeout
        self.try_timeout = try_timeout

    async def query(self, data: bytes, *, tcp: bool = False) -> bytes | None:
        """The upstream's response to the raw query `data`, or None when none answered in
        time."""
        if not self.upstreams:
            return None
        deadline = time.monotonic() + self.timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for up in self.upstreams:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    if tcp:
                        return await self._tcp(up, data, min(left, self.try_timeout * 2))
                    resp = await self._udp(up, data, min(left, self.try_timeout))
                    if is_truncated(resp):
                        try:
                            return await self._tcp(up, data,
                                                   max(0.05, deadline - time.monotonic()))
                        except (TimeoutError, OSError, asyncio.IncompleteReadError):
                            return resp  # the truncated answer is better than none
                    return resp
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
                    last = e
                    continue
            # every upstream refused at once: do not spin
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        log.debug("no upstream answered (%s): %r", ", ".join(map(str, self.upstreams)), last)
        return None

    async def _udp(self, up: Upstream, data: bytes, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _UDPClient(data[:2]), remote_addr=(up.host, up.port), family=up.family)
        try:
            transport.sendto(data)
            return await asyncio.wait_for(proto.fut, timeout)
        finally:
            transport.close()

    async def _tcp(self, up: Upstream, data: bytes, timeout: float) -> bytes:
        async def run() -> bytes:
            reader, writer = await asyncio.open_connection(up.host, up.port)
            try:
                writer.write(struct.pack("!H", len(data)) + data)
                await writer.drain()
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                return await reader.readexactly(n)
            finally:
                writer.close()
        return await asyncio.wait_for(run(), timeout)
