"""Port-forward as the kubelet serves it: kubectl opens, per forwarded connection, a pair of
SPDY streams (headers `streamType: error|data`, `port`, `requestID`); once both streams of a
requestID exist the node agent connects to podIP:port and copies bytes both ways. A failed
connect is reported on the error stream, like the kubelet's
`error forwarding port 80 to pod <id>, uid : ...` message.

The SPDY framing is nodeagent.spdy (sans-IO); this module wires it to asyncio: `send` writes
bytes to the peer (a WebSocket binary message when tunnelled), `feed` gets bytes from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from . import spdy

log = logging.getLogger(__name__)

Connector = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclass
class _Pair:
    request_id: str
    port: int | None = None
    error_id: int | None = None
    data_id: int | None = None
    writer: asyncio.StreamWriter | None = None
    task: asyncio.Task | None = None
    pending: list[bytes] = field(default_factory=list)  # data before the connect finished
    remote_fin: bool = False


class PortForwardSession:
    """One port-forward connection (all its stream pairs)."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], connect: Connector,
                 pod_label: str, describe_target: Callable[[int], str] | None = None):
        self.session = spdy.SpdyServerSession()
        self._send = send
        self._connect = connect
        self._pod_label = pod_label
        self._describe = describe_target or (lambda port: f"localhost:{port}")
        self._lock = asyncio.Lock()
        self._pairs: dict[str, _Pair] = {}
        self._by_stream: dict[int, _Pair] = {}
        self.closed = asyncio.Event()

    async def _emit(self, build: Callable[[], bytes]) -> None:
        # build and send under one lock: the zlib context must see header blocks in wire order
        async with self._lock:
            data = build()
            if data:
                await self._send(data)

    async def feed(self, data: bytes) -> None:
        try:
            async with self._lock:
                events, reply = self.session.receive(data)
                if reply:
                    await self._send(reply)
        except spdy.SpdyError as e:
            log.warning("port-forward: protocol error: %s", e)
            await self._emit(lambda: self.session.goaway(spdy.GOAWAY_PROTOCOL_ERROR))
            await self.close()
            return
        for ev in events:
            if isinstance(ev, spdy.SynStream):
                await self._on_stream(ev)
            elif isinstance(ev, spdy.Data):
                await self._on_data(ev)
            elif isinstance(ev, spdy.RstStream):
                self._on_reset(ev.stream_id)
            elif isinstance(ev, spdy.GoAway):
                await self.close()

    async def _on_stream(self, ev: spdy.SynStream) -> None:
        await self._emit(lambda: self.session.reply(ev.stream_id, {}))
        stype = ev.header("streamType")
        port_s = ev.header("port")
        rid = ev.header("requestID") or port_s or str(ev.stream_id)
        pair = self._pairs.setdefault(rid, _Pair(rid))
        self._by_stream[ev.stream_id] = pair
        try:
            port = int(port_s or "")
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            await self._emit(lambda: self.session.reset(ev.stream_id, spdy.PROTOCOL_ERROR))
            return
        pair.port = port
        if stype == "error":
            pair.error_id = ev.stream_id
        elif stype == "data":
            pair.data_id = ev.stream_id
        else:
            await self._emit(lambda: self.session.reset(ev.stream_id, spdy.PROTOCOL_ERROR))
            return
        if pair.error_id is not None and pair.data_id is not None and pair.task is None:
            pair.task = asyncio.create_task(self._forward(pair))

    async def _on_data(self, ev: spdy.Data) -> None:
        pair = self._by_stream.get(ev.stream_id)
        if pair is None or ev.stream_id != pair.data_id:
            return  # the client half-closes its error stream at once; nothing to do
        if pair.writer is None:
            if ev.data:
                pair.pending.append(ev.data)
            pair.remote_fin = pair.remote_fin or ev.fin
            return
        if ev.data:
            pair.writer.write(ev.data)
            try:
                await pair.writer.drain()
            except ConnectionError:
                pass
        if ev.fin:
            self._half_close(pair.writer)

    @staticmethod
    def _half_close(writer: asyncio.StreamWriter) -> None:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass

    def _on_reset(self, stream_id: int) -> None:
        pair = self._by_stream.get(stream_id)
        if pair is None:
            return
        if pair.writer is not None:
            pair.writer.close()
        if pair.task is not None and not pair.task.done():
            pair.task.cancel()

    async def _forward(self, pair: _Pair) -> None:
        assert pair.port is not None and pair.data_id is not None and pair.error_id is not None
        try:
            reader, writer = await self._connect(pair.port)
        except OSError as e:
            msg = (f"error forwarding port {pair.port} to pod {self._pod_label}, uid : "
                   f"failed to connect to {self._describe(pair.port)}: "
                   f"{_describe_oserror(e)}")
            log.info("port-forward: %s", msg)
            await self._emit(lambda: self.session.send(pair.error_id, msg.encode(), fin=True))
            await self._emit(lambda: self.session.send(pair.data_id, b"", fin=True))
            return
        pair.writer = writer
        try:
            for chunk in pair.pending:
                writer.write(chunk)
            pair.pending.clear()
            if pair.remote_fin:
                self._half_close(writer)
            while True:
                chunk = await reader.read(spdy.DEFAULT_DATA_CHUNK)
                if not chunk:
                    break
                await self._emit(lambda c=chunk: self.session.send(pair.data_id, c))
            await self._emit(lambda: self.session.send(pair.data_id, b"", fin=True))
            await self._emit(lambda: self.session.send(pair.error_id, b"", fin=True))
        except (ConnectionError, OSError):
            await self._emit(lambda: self.session.send(pair.data_id, b"", fin=True))
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for pair in list(self._pairs.values()):
            if pair.writer is not None:
                pair.writer.close()
            if pair.task is not None and not pair.task.done():
                pair.task.cancel()
        self.closed.set()


def _describe_oserror(e: OSError) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connect: connection refused"
    if isinstance(e, (TimeoutError, asyncio.TimeoutError)):
        return "i/o timeout"
    return e.strerror.lower() if e.strerror else str(e)


async def serve_websocket_ports(ws, ports: list[int], connect: Connector, pod_label: str,
                                describe_target: Callable[[int], str]) -> None:
    """The kubelet's WebSocket port-forward protocol (`v4.channel.k8s.io` with `?ports=`, what
    the Python client speaks): port i uses channel 2i for data and 2i+1 for errors; each
    channel first carries the port as 2 little-endian bytes. One connection per port."""
    from aiohttp import WSMsgType

    async def send(ch: int, data: bytes) -> None:
        if not ws.closed:
            await ws.send_bytes(bytes((ch,)) + data)

    writers: dict[int, asyncio.StreamWriter] = {}
    tasks: list[asyncio.Task] = []

    async def forward(i: int, port: int) -> None:
        try:
            reader, writer = await connect(port)
        except OSError as e:
            await send(2 * i + 1, (f"error forwarding port {port} to pod {pod_label}, uid : "
                                   f"failed to connect to {describe_target(port)}: "
                                   f"{_describe_oserror(e)}").encode())
            return
        writers[i] = writer
        try:
            while chunk := await reader.read(spdy.DEFAULT_DATA_CHUNK):
                await send(2 * i, chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    for i, port in enumerate(ports):
        pb = port.to_bytes(2, "little")
        await send(2 * i, pb)
        await send(2 * i + 1, pb)
        tasks.append(asyncio.create_task(forward(i, port)))

    async def from_client() -> None:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                break
            data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
            if not data or data[0] % 2:
                continue
            w = writers.get(data[0] // 2)
            if w is not None and len(data) > 1:
                w.write(data[1:])
                with contextlib.suppress(ConnectionError):
                    await w.drain()

    client = asyncio.create_task(from_client())
    try:
        await asyncio.wait([client, asyncio.gather(*tasks)],
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        client.cancel()
        for t in tasks:
            t.cancel()
        for w in writers.values():
            w.close()
        await ws.close()
