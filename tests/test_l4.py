"""proxy.l4: the userspace relays with real sockets on loopback addresses (127.77.0.0/16)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time

import pytest
import uvloop

from proxy import l4
from proxy.l4 import Proxier
from proxy.servicetable import ListenerKey, ListenerPlan

VIP = "127.77.0.1"
B1, B2, B3 = "127.77.1.1", "127.77.1.2", "127.77.1.3"


def run(coro, timeout: float = 20.0):
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return uvloop.run(main())


def free_port(ip: str, kind=socket.SOCK_STREAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind((ip, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def plan(port, backends, known=None, affinity=None, proto="TCP", ip=VIP) -> ListenerPlan:
    backends = tuple(backends)
    return ListenerPlan(ListenerKey(ip, port, proto), ("default", "web"), "http", "clusterIP",
                        backends, frozenset(known if known is not None else backends),
                        affinity, True)


async def name_server(ip: str, name: str):
    """Writes `name\\n` on connect, then echoes until EOF, then closes."""
    async def handle(r, w):
        w.write(name.encode() + b"\n")
        try:
            while data := await r.read(1 << 16):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()
    srv = await asyncio.start_server(handle, ip, 0)
    return srv, srv.sockets[0].getsockname()[1]


async def hello(port: int) -> str:
    r, w = await asyncio.open_connection(VIP, port)
    line = await r.readline()
    w.close()
    return line.decode().strip()


async def expect_reset(port: int) -> None:
    """The connection is reset, either while connecting (the proxy's accept-and-reset can beat
    the client's connect completion when both run on one loop) or on the first read."""
    try:
        r, w = await asyncio.open_connection(VIP, port)
    except ConnectionResetError:
        return
    try:
        data = await r.read(10)
        raise AssertionError(f"expected a reset, got {data!r}")
    except ConnectionResetError:
        pass
    finally:
        w.close()


async def proxy_for(backends, **kw):
    port = free_port(VIP)
    px = Proxier()
    p = plan(port, backends, **kw)
    await px.apply({p.key: p})
    return px, port, p


def test_round_robin_and_retry_on_refused():
    async def t():
        servers = [await name_server(ip, n) for ip, n in ((B1, "a"), (B2, "b"), (B3, "c"))]
        bk = [(ip, s[1]) for ip, s in zip((B1, B2, B3), servers)]
        px, port, _ = await proxy_for(bk)
        got = [await hello(port) for _ in range(6)]
        assert got == ["a", "b", "c", "a", "b", "c"]
        # a dead endpoint (nothing listening): every connection lands on a live one
        dead = ("127.77.1.9", free_port("127.77.1.9"))
        p = plan(port, [dead, bk[0]])
        await px.apply({p.key: p})
        assert [await hello(port) for _ in range(4)] == ["a"] * 4
        assert px.stats.dial_failures >= 2
        await px.close()
        for s, _ in servers:
            s.close()
    run(t())


def test_no_endpoints_resets_immediately():
    async def t():
        px, port, _ = await proxy_for([])
        t0 = time.monotonic()
        await expect_reset(port)
        assert time.monotonic() - t0 < 0.5
        # only dead endpoints: also a reset, not a hang
        dead = ("127.77.1.9", free_port("127.77.1.9"))
        p = plan(port, [dead])
        await px.apply({p.key: p})
        await expect_reset(port)
        await px.close()
    run(t())


def test_half_close_and_large_transfer_integrity():
    async def t():
        async def handle(r, w):  # read everything until EOF, then answer with its digest
            h = hashlib.sha256()
            n = 0
            while data := await r.read(1 << 20):
                h.update(data)
                n += len(data)
            w.write(f"{n} {h.hexdigest()}\n".encode())
            await w.drain()
            w.close()
        srv = await asyncio.start_server(handle, B1, 0)
        px, port, _ = await proxy_for([(B1, srv.sockets[0].getsockname()[1])])
        r, w = await asyncio.open_connection(VIP, port)
        chunk = os.urandom(1 << 20)
        h = hashlib.sha256()
        for _ in range(64):
            w.write(chunk)
            h.update(chunk)
            await w.drain()
        w.write_eof()  # half-close: the answer must still come back
        line = await r.readline()
        assert line.decode().split() == [str(64 << 20), h.hexdigest()]
        assert await r.read() == b""
        w.close()
        await px.close()
        srv.close()
    run(t())


def test_bidirectional_echo_with_backpressure():
    async def t():
        srv, bport = await name_server(B1, "a")
        px, port, _ = await proxy_for([(B1, bport)])
        r, w = await asyncio.open_connection(VIP, port)
        assert await r.readline() == b"a\n"
        payload = os.urandom(48 << 20)

        async def send():
            w.write(payload)
            await w.drain()
            w.write_eof()

        async def recv():
            buf = bytearray()
            while len(buf) < len(payload):
                data = await r.read(1 << 20)
                if not data:
                    break
                buf += data
            return bytes(buf)

        _, got = await asyncio.gather(send(), recv())
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert await r.read() == b""
        w.close()
        await px.close()
        srv.close()
    run(t())


def test_endpoint_removal_closes_only_its_connections():
    async def t():
        (sa, pa), (sb, pb) = await name_server(B1, "a"), await name_server(B2, "b")
        a, b = (B1, pa), (B2, pb)
        px, port, _ = await proxy_for([a, b])
        conns = {}
        for _ in range(2):
            r, w = await asyncio.open_connection(VIP, port)
            conns[(await r.readline()).strip().decode()] = (r, w)
        # b turns not-ready: no new connections, but its established one survives
        p = plan(port, [a], known=[a, b])
        await px.apply({p.key: p})
        assert await hello(port) == "a"
        r, w = conns["b"]
        w.write(b"still\n")
        assert await r.readline() == b"still\n"
        # a is deleted: its connection is closed, b's survives
        p = plan(port, [b], known=[b])
        await px.apply({p.key: p})
        ra, _ = conns["a"]
        try:
            assert await asyncio.wait_for(ra.read(), 2) == b""
        except ConnectionResetError:
            pass
        w.write(b"again\n")
        assert await r.readline() == b"again\n"
        assert await hello(port) == "b"
        for _, wr in conns.values():
            wr.close()
        await px.close()
        sa.close()
        sb.close()
    run(t())


def test_session_affinity_client_ip():
    async def t():
        servers = [await name_server(ip, n) for ip, n in ((B1, "a"), (B2, "b"), (B3, "c"))]
        bk = [(ip, s[1]) for ip, s in zip((B1, B2, B3), servers)]
        px, port, p = await proxy_for(bk, affinity=10800.0)
        got = {await hello(port) for _ in range(15)}
        assert len(got) == 1
        # switching affinity off brings the rotation back
        p = plan(port, bk)
        await px.apply({p.key: p})
        assert len({await hello(port) for _ in range(6)}) == 3
        await px.close()
        for s, _ in servers:
            s.close()
    run(t())


def test_udp_relay_round_robin_and_idle_flows():
    async def t():
        loop = asyncio.get_running_loop()

        class Echo(asyncio.DatagramProtocol):
            def __init__(self, name):
                self.name = name

            def connection_made(self, tr):
                self.tr = tr

            def datagram_received(self, data, addr):
                self.tr.sendto(self.name + b":" + data, addr)

        backs = []
        for ip, n in ((B1, b"a"), (B2, b"b")):
            tr, _ = await loop.create_datagram_endpoint(lambda n=n: Echo(n), local_addr=(ip, 0))
            backs.append((tr, (ip, tr.get_extra_info("sockname")[1])))
        port = free_port(VIP, socket.SOCK_DGRAM)
        px = Proxier()
        p = plan(port, [b for _, b in backs], proto="UDP")
        await px.apply({p.key: p})

        class Client(asyncio.DatagramProtocol):
            def __init__(self):
                self.q = asyncio.Queue()

            def datagram_received(self, data, addr):
                self.q.put_nowait((data, addr))

        answers = set()
        clients = []
        for i in range(2):
            tr, c = await loop.create_datagram_endpoint(Client, remote_addr=(VIP, port))
            clients.append(tr)
            for j in range(3):  # one flow per client: the same endpoint every time
                tr.sendto(b"ping%d" % j)
                data, addr = await asyncio.wait_for(c.q.get(), 2)
                assert addr == (VIP, port)
                assert data.endswith(b":ping%d" % j)
                answers.add((i, data.split(b":")[0]))
        assert {n for _, n in answers} == {b"a", b"b"} and len(answers) == 2
        lst = px.listeners[p.key]
        assert len(lst.flows) == 2
        # removing an endpoint drops its flow
        p2 = plan(port, [backs[0][1]], proto="UDP")
        await px.apply({p2.key: p2})
        assert len(lst.flows) == 1
        for tr in clients:
            tr.close()
        await px.close()
        for tr, _ in backs:
            tr.close()
    run(t())


def test_apply_adds_and_removes_listeners():
    async def t():
        srv, bport = await name_server(B1, "a")
        px, port, p = await proxy_for([(B1, bport)])
        assert await hello(port) == "a"
        await px.apply({})
        try:
            await asyncio.open_connection(VIP, port)
            raise AssertionError("listener still open")
        except ConnectionRefusedError:
            pass
        await px.apply({p.key: p})
        assert await hello(port) == "a"
        # two proxies (two workers) share one VIP:port through SO_REUSEPORT
        px2 = Proxier()
        await px2.apply({p.key: p})
        assert p.key in px2.listeners and not px2.failed
        assert {await hello(port) for _ in range(10)} == {"a"}
        await px.close()
        await px2.close()
        srv.close()
    run(t())


async def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("mode", ["splice", "copy", "tiny-pipe"])
def test_bulk_download_switches_to_splice(monkeypatch, mode):
    """Small exchanges are copied; a bulk stream (a read that fills the copy buffer) is
    spliced from then on, when splice is available and the pipe is not tiny (an unprivileged
    user over fs.pipe-user-pages-soft); either way every byte arrives in order, and the
    pipes are closed with the relay."""
    if mode != "copy" and not l4.SPLICE:
        pytest.skip("no os.splice here")
    monkeypatch.setattr(l4, "SPLICE", mode != "copy")
    if mode == "tiny-pipe":
        monkeypatch.setattr(l4, "PIPE_MIN", 1 << 30)
    splice = mode == "splice"
    blob = os.urandom(24 << 20)

    async def t():
        async def handle(r, w):  # "get\n" -> blob, then EOF
            assert await r.readline() == b"get\n"
            w.write(blob)
            await w.drain()
            w.close()
        srv = await asyncio.start_server(handle, B1, 0)
        px, port, p = await proxy_for([(B1, srv.sockets[0].getsockname()[1])])
        fds = len(os.listdir("/proc/self/fd"))
        r, w = await asyncio.open_connection(VIP, port)
        (relay,) = px.listeners[p.key].relays
        w.write(b"get\n")
        got = bytearray()
        while data := await r.read(1 << 20):
            got += data
            if len(got) > (8 << 20):
                assert relay.down.splicing is splice
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        assert not relay.up.splicing  # 4 bytes upstream: still copying
        w.close()
        await wait_until(lambda: px.connections() == 0)
        await asyncio.sleep(0.05)
        assert len(os.listdir("/proc/self/fd")) == fds
        await px.close()
        srv.close()
    run(t())


@pytest.mark.parametrize("size", [1 << 10, 8 << 20], ids=["small", "bulk"])
def test_backpressure_bounds_what_the_relay_holds(size):
    """A backend that does not read: the relay stops reading from the client instead of
    buffering; once the backend reads again, everything arrives intact."""
    async def t():
        go = asyncio.Event()
        done = asyncio.get_running_loop().create_future()

        async def handle(r, w):
            await go.wait()
            h, n = hashlib.sha256(), 0
            while data := await r.read(1 << 20):
                h.update(data)
                n += len(data)
            done.set_result((n, h.hexdigest()))
            w.close()
        srv = await asyncio.start_server(handle, B1, 0)
        px, port, p = await proxy_for([(B1, srv.sockets[0].getsockname()[1])])
        c = socket.create_connection((VIP, port))
        c.setblocking(False)
        loop = asyncio.get_running_loop()
        chunk = os.urandom(size)
        h, sent = hashlib.sha256(), 0
        stalled = 0
        while stalled < 20:  # until nothing moves for 20 x 10 ms
            try:
                n = c.send(chunk)
                h.update(chunk[:n])
                sent += n
                stalled = 0
            except BlockingIOError:
                stalled += 1
                await asyncio.sleep(0.01)
        (relay,) = px.listeners[p.key].relays
        assert relay.up.pending > 0  # the relay is waiting for the backend...
        assert relay.up.pending <= max(l4.COPY_CHUNK, l4.PIPE_BIG)  # ...holding a bounded amount
        assert sent < (256 << 20)
        go.set()
        await loop.sock_sendall(c, b"the end")
        h.update(b"the end")
        c.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(done, 10) == (sent + 7, h.hexdigest())
        c.close()
        await px.close()
        srv.close()
    run(t())


def test_backend_half_close_and_reset_are_passed_on():
    async def t():
        got = asyncio.get_running_loop().create_future()

        async def handle(r, w):  # greets, half-closes, still reads what the client says
            w.write(b"hi\n")
            w.write_eof()
            got.set_result(await r.read())
            w.close()
        srv = await asyncio.start_server(handle, B1, 0)
        px, port, p = await proxy_for([(B1, srv.sockets[0].getsockname()[1])])
        r, w = await asyncio.open_connection(VIP, port)
        assert await r.read() == b"hi\n"  # the backend's FIN came through as a FIN...
        w.write(b"bye")                    # ...and the other direction still works
        w.write_eof()
        assert await asyncio.wait_for(got, 5) == b"bye"
        await wait_until(lambda: px.connections() == 0)  # both directions done: closed
        w.close()
        srv.close()

        # a backend that resets: the client is reset too, and the relay is gone
        async def rst(r, w):
            await r.readline()
            w.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, l4._LINGER0)
            w.transport.abort()
        srv = await asyncio.start_server(rst, B1, 0)
        p = plan(port, [(B1, srv.sockets[0].getsockname()[1])])
        await px.apply({p.key: p})
        r, w = await asyncio.open_connection(VIP, port)
        w.write(b"x\n")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(r.read(), 5)
        await wait_until(lambda: px.connections() == 0)
        w.close()
        await px.close()
        srv.close()
    run(t())


def test_client_data_and_eof_before_the_backend_answers():
    """Bytes and the FIN a client sends right away (while the backend is being dialled) are
    passed on in order."""
    async def t():
        async def handle(r, w):
            data = await r.read()  # until EOF
            w.write(data[::-1])
            await w.drain()
            w.close()
        srv = await asyncio.start_server(handle, B1, 0)
        px, port, _ = await proxy_for([(B1, srv.sockets[0].getsockname()[1])])
        for _ in range(20):
            r, w = await asyncio.open_connection(VIP, port)
            w.write(b"0123456789")
            w.write_eof()
            assert await r.read() == b"9876543210"
            w.close()
        await wait_until(lambda: px.connections() == 0)
        assert px.stats.accepted == 20
        await px.close()
        srv.close()
    run(t())
