"""A sans-IO SPDY/3.1 framing core (draft-mbelshe-httpbis-spdy-00, the Chromium SPDY/3 spec).

kubectl's port-forward speaks SPDY/3.1 (through client-go's spdystream), either tunnelled in
WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`) or on an upgraded HTTP connection.
`Framer` turns received bytes into frame events and frames into bytes; it does no I/O. Header
blocks are zlib-compressed with the SPDY/3 dictionary, one compression context per direction
for the whole connection (each block ends with a sync flush).

Frame layouts (all integers big-endian):
  control: |1|version(15)|type(16)|flags(8)|length(24)|payload
  data:    |0|stream-id(31)|flags(8)|length(24)|payload
  header block (before compression): count(32) then per pair len(32) name len(32) value;
  a value holding several values separates them with NUL.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3

# control frame types
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

# RST_STREAM status codes
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
UNSUPPORTED_VERSION = 4
CANCEL = 5
INTERNAL_ERROR = 6
FLOW_CONTROL_ERROR = 7
STREAM_IN_USE = 8
STREAM_ALREADY_CLOSED = 9

# GOAWAY status codes
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

# SETTINGS ids
SETTINGS_MAX_CONCURRENT_STREAMS = 4
SETTINGS_INITIAL_WINDOW_SIZE = 7

MAX_FRAME_PAYLOAD = 0xFFFFFF
DEFAULT_DATA_CHUNK = 32 * 1024

HEADER_DICTIONARY = bytes.fromhex(
    "000000076f7074696f6e73000000046865616400000004706f7374000000037075740000000664656c657465"
    "000000057472616365000000066163636570740000000e6163636570742d636861727365740000000f616363"
    "6570742d656e636f64696e670000000f6163636570742d6c616e67756167650000000d6163636570742d7261"
    "6e6765730000000361676500000005616c6c6f770000000d617574686f72697a6174696f6e0000000d636163"
    "68652d636f6e74726f6c0000000a636f6e6e656374696f6e0000000c636f6e74656e742d6261736500000010"
    "636f6e74656e742d656e636f64696e6700000010636f6e74656e742d6c616e67756167650000000e636f6e74"
    "656e742d6c656e67746800000010636f6e74656e742d6c6f636174696f6e0000000b636f6e74656e742d6d64"
    "350000000d636f6e74656e742d72616e67650000000c636f6e74656e742d7479706500000004646174650000"
    "0004657461670000000665787065637400000007657870697265730000000466726f6d00000004686f737400"
    "00000869662d6d617463680000001169662d6d6f6469666965642d73696e63650000000d69662d6e6f6e652d"
    "6d617463680000000869662d72616e67650000001369662d756e6d6f6469666965642d73696e63650000000d"
    "6c6173742d6d6f646966696564000000086c6f636174696f6e0000000c6d61782d666f727761726473000000"
    "06707261676d610000001270726f78792d61757468656e7469636174650000001370726f78792d617574686f"
    "72697a6174696f6e0000000572616e676500000007726566657265720000000b72657472792d616674657200"
    "00000673657276657200000002746500000007747261696c6572000000117472616e736665722d656e636f64"
    "696e6700000007757067726164650000000a757365722d6167656e7400000004766172790000000376696100"
    "0000077761726e696e67000000107777772d61757468656e746963617465000000066d6574686f6400000003"
    "6765740000000673746174757300000006323030204f4b0000000776657273696f6e00000008485454502f31"
    "2e310000000375726c000000067075626c69630000000a7365742d636f6f6b69650000000a6b6565702d616c"
    "697665000000066f726967696e31303031303132303132303232303532303633303033303233303333303433"
    "3035333036333037343032343035343036343037343038343039343130343131343132343133343134343135"
    "343136343137353032353034353035323033204e6f6e2d417574686f726974617469766520496e666f726d61"
    "74696f6e323034204e6f20436f6e74656e74333031204d6f766564205065726d616e656e746c793430302042"
    "6164205265717565737434303120556e617574686f72697a656434303320466f7262696464656e343034204e"
    "6f7420466f756e6435303020496e7465726e616c20536572766572204572726f72353031204e6f7420496d70"
    "6c656d656e746564353033205365727669636520556e617661696c61626c654a616e20466562204d61722041"
    "7072204d6179204a756e204a756c204175672053657074204f6374204e6f76204465632030303a30303a3030"
    "204d6f6e2c205475652c205765642c205468752c204672692c205361742c2053756e2c20474d546368756e6b"
    "65642c746578742f68746d6c2c696d6167652f706e672c696d6167652f6a70672c696d6167652f6769662c61"
    "70706c69636174696f6e2f786d6c2c6170706c69636174696f6e2f7868746d6c2b786d6c2c746578742f706c"
    "61696e2c746578742f6a6176617363726970742c7075626c6963707269766174656d61782d6167653d677a69"
    "702c6465666c6174652c73646368636861727365743d7574662d38636861727365743d69736f2d383835392d"
    "312c7574662d2c2a2c656e713d302e"
)


class SpdyError(Exception):
    """A connection-level protocol error (the connection should be torn down with GOAWAY)."""


Headers = dict  # lower-case name -> list of values


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    associated_id: int
    priority: int
    headers: dict[str, list[str]]
    fin: bool = False
    unidirectional: bool = False

    def header(self, name: str, default: str | None = None) -> str | None:
        v = self.headers.get(name.lower())
        return v[0] if v else default


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: dict[str, list[str]]
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # (flags, id, value)
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: dict[str, list[str]]
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class UnknownControl:
    frame_type: int
    flags: int
    payload: bytes


Frame = (SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame |
         WindowUpdate | Data | UnknownControl)


def encode_header_block(headers: dict[str, list[str] | str]) -> bytes:
    """The uncompressed name/value block; names are lower-cased as SPDY/3 requires."""
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        if isinstance(values, str):
            values = [values]
        n = name.lower().encode()
        v = b"\x00".join(x.encode() for x in values)
        out.append(struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v)
    return b"".join(out)


def decode_header_block(block: bytes) -> dict[str, list[str]]:
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        pos = 4
        headers: dict[str, list[str]] = {}
        for _ in range(count):
            (ln,) = struct.unpack_from(">I", block, pos)
            pos += 4
            name = block[pos:pos + ln]
            if len(name) != ln or ln == 0:
                raise SpdyError("truncated or empty header name")
            pos += ln
            (lv,) = struct.unpack_from(">I", block, pos)
            pos += 4
            value = block[pos:pos + lv]
            if len(value) != lv:
                raise SpdyError("truncated header value")
            pos += lv
            key = name.decode("latin-1").lower()
            headers.setdefault(key, []).extend(value.decode("latin-1").split("\x00"))
        return headers
    except struct.error as e:
        raise SpdyError(f"malformed header block: {e}") from None


class Framer:
    """Bytes in → frames out (`feed`), frames in → bytes out (the encode methods).

    One Framer per connection end: it owns the two zlib contexts, which must see every header
    block of the connection in order.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(zdict=HEADER_DICTIONARY)
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8,
                                         zlib.Z_DEFAULT_STRATEGY, HEADER_DICTIONARY)

    # ---------------------------------------------------------------- decoding
    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            length = int.from_bytes(self._buf[5:8], "big")
            if len(self._buf) < 8 + length:
                break
            head = bytes(self._buf[:8])
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            frames.append(self._parse(head, payload))
        return frames

    def _headers(self, compressed: bytes) -> dict[str, list[str]]:
        try:
            block = self._inflate.decompress(compressed)
        except zlib.error as e:
            raise SpdyError(f"header block decompression failed: {e}") from None
        return decode_header_block(block)

    def _parse(self, head: bytes, payload: bytes) -> Frame:
        flags = head[4]
        if not head[0] & 0x80:
            stream_id = int.from_bytes(head[0:4], "big") & 0x7FFFFFFF
            return Data(stream_id, payload, bool(flags & FLAG_FIN))
        version = int.from_bytes(head[0:2], "big") & 0x7FFF
        ftype = int.from_bytes(head[2:4], "big")
        if version != VERSION:
            raise SpdyError(f"unsupported SPDY version {version}")
        try:
            if ftype == SYN_STREAM:
                sid, assoc = struct.unpack_from(">II", payload, 0)
                prio = payload[8] >> 5
                return SynStream(sid & 0x7FFFFFFF, assoc & 0x7FFFFFFF, prio,
                                 self._headers(payload[10:]), bool(flags & FLAG_FIN),
                                 bool(flags & FLAG_UNIDIRECTIONAL))
            if ftype == SYN_REPLY:
                (sid,) = struct.unpack_from(">I", payload, 0)
                return SynReply(sid & 0x7FFFFFFF, self._headers(payload[4:]),
                                bool(flags & FLAG_FIN))
            if ftype == HEADERS:
                (sid,) = struct.unpack_from(">I", payload, 0)
                return HeadersFrame(sid & 0x7FFFFFFF, self._headers(payload[4:]),
                                    bool(flags & FLAG_FIN))
            if ftype == RST_STREAM:
                sid, status = struct.unpack_from(">II", payload, 0)
                return RstStream(sid & 0x7FFFFFFF, status)
            if ftype == SETTINGS:
                (n,) = struct.unpack_from(">I", payload, 0)
                entries = []
                for i in range(n):
                    fid, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                    entries.append((fid >> 24, fid & 0xFFFFFF, value))
                return Settings(entries, bool(flags & FLAG_SETTINGS_CLEAR))
            if ftype == PING:
                (pid,) = struct.unpack_from(">I", payload, 0)
                return Ping(pid)
            if ftype == GOAWAY:
                last, status = struct.unpack_from(">II", payload, 0) if len(payload) >= 8 else (
                    struct.unpack_from(">I", payload, 0)[0], GOAWAY_OK)
                return GoAway(last & 0x7FFFFFFF, status)
            if ftype == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", payload, 0)
                return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        except struct.error:
            raise SpdyError(f"truncated control frame of type {ftype}") from None
        return UnknownControl(ftype, flags, payload)

    # ---------------------------------------------------------------- encoding
    @staticmethod
    def _control(ftype: int, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_FRAME_PAYLOAD:
            raise SpdyError("control frame too large")
        return struct.pack(">HHI", 0x8000 | VERSION, ftype,
                           (flags << 24) | len(payload)) + payload

    def _compress(self, headers: dict) -> bytes:
        block = encode_header_block(headers)
        return self._deflate.compress(block) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_stream(self, stream_id: int, headers: dict, fin: bool = False,
                   unidirectional: bool = False, priority: int = 0,
                   associated_id: int = 0) -> bytes:
        flags = (FLAG_FIN if fin else 0) | (FLAG_UNIDIRECTIONAL if unidirectional else 0)
        payload = struct.pack(">IIBB", stream_id & 0x7FFFFFFF, associated_id & 0x7FFFFFFF,
                              (priority & 7) << 5, 0) + self._compress(headers)
        return self._control(SYN_STREAM, flags, payload)

    def syn_reply(self, stream_id: int, headers: dict | None = None, fin: bool = False) -> bytes:
        payload = struct.pack(">I", stream_id & 0x7FFFFFFF) + self._compress(headers or {})
        return self._control(SYN_REPLY, FLAG_FIN if fin else 0, payload)

    def headers(self, stream_id: int, headers: dict, fin: bool = False) -> bytes:
        payload = struct.pack(">I", stream_id & 0x7FFFFFFF) + self._compress(headers)
        return self._control(HEADERS, FLAG_FIN if fin else 0, payload)

    def rst_stream(self, stream_id: int, status: int = CANCEL) -> bytes:
        return self._control(RST_STREAM, 0, struct.pack(">II", stream_id & 0x7FFFFFFF, status))

    def settings(self, entries: list[tuple[int, int, int]], clear: bool = False) -> bytes:
        body = struct.pack(">I", len(entries)) + b"".join(
            struct.pack(">II", ((f & 0xFF) << 24) | (i & 0xFFFFFF), v) for f, i, v in entries)
        return self._control(SETTINGS, FLAG_SETTINGS_CLEAR if clear else 0, body)

    def ping(self, ping_id: int) -> bytes:
        return self._control(PING, 0, struct.pack(">I", ping_id))

    def goaway(self, last_good_stream_id: int, status: int = GOAWAY_OK) -> bytes:
        return self._control(GOAWAY, 0, struct.pack(">II", last_good_stream_id & 0x7FFFFFFF,
                                                      status))

    def window_update(self, stream_id: int, delta: int) -> bytes:
        return self._control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id & 0x7FFFFFFF,
                                                            delta & 0x7FFFFFFF))

    @staticmethod
    def data(stream_id: int, data: bytes, fin: bool = False,
             chunk: int = DEFAULT_DATA_CHUNK) -> bytes:
        """DATA frame(s) for `data`, split into chunks; FIN goes on the last one. An empty
        `data` with fin=True is the half-close frame."""
        out = []
        view = memoryview(data)
        pos = 0
        while True:
            piece = bytes(view[pos:pos + chunk])
            pos += len(piece)
            last = pos >= len(data)
            flags = FLAG_FIN if (fin and last) else 0
            out.append(struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(piece))
                       + piece)
            if last:
                return b"".join(out)


class SpdyServerSession:
    """Server-side stream bookkeeping over a Framer (still sans-IO): which streams are open in
    each direction, replies, pings echoed, GOAWAY. `receive(bytes)` returns (events, bytes to
    send); the caller acts on SynStream / Data / RstStream events."""

    def __init__(self) -> None:
        self.framer = Framer()
        self.last_stream_id = 0
        self.remote_open: set[int] = set()   # streams the peer may still send on
        self.local_open: set[int] = set()    # streams we may still send on
        self.goaway_received = False
        self._next_ping = 2  # a server's pings are even

    def receive(self, data: bytes) -> tuple[list[Frame], bytes]:
        events: list[Frame] = []
        out: list[bytes] = []
        for f in self.framer.feed(data):
            if isinstance(f, SynStream):
                if f.stream_id % 2 == 0 or f.stream_id <= self.last_stream_id:
                    out.append(self.framer.rst_stream(f.stream_id, PROTOCOL_ERROR))
                    continue
                self.last_stream_id = f.stream_id
                if not f.fin:
                    self.remote_open.add(f.stream_id)
                if not f.unidirectional:
                    self.local_open.add(f.stream_id)
                events.append(f)
            elif isinstance(f, Data):
                if f.stream_id not in self.remote_open:
                    out.append(self.framer.rst_stream(f.stream_id, INVALID_STREAM))
                    continue
                if f.fin:
                    self.remote_open.discard(f.stream_id)
                events.append(f)
            elif isinstance(f, RstStream):
                self.remote_open.discard(f.stream_id)
                self.local_open.discard(f.stream_id)
                events.append(f)
            elif isinstance(f, Ping):
                if f.ping_id % 2 == 1:  # the peer's ping: echo it
                    out.append(self.framer.ping(f.ping_id))
                events.append(f)
            elif isinstance(f, GoAway):
                self.goaway_received = True
                events.append(f)
            elif isinstance(f, HeadersFrame):
                if f.fin:
                    self.remote_open.discard(f.stream_id)
                events.append(f)
            else:
                events.append(f)  # SETTINGS, WINDOW_UPDATE (no flow control: spdystream has none)
        return events, b"".join(out)

    def reply(self, stream_id: int, headers: dict | None = None, fin: bool = False) -> bytes:
        if fin:
            self.local_open.discard(stream_id)
        return self.framer.syn_reply(stream_id, headers or {}, fin)

    def send(self, stream_id: int, data: bytes, fin: bool = False) -> bytes:
        if stream_id not in self.local_open:
            return b""
        if fin:
            self.local_open.discard(stream_id)
        return self.framer.data(stream_id, data, fin)

    def reset(self, stream_id: int, status: int = CANCEL) -> bytes:
        self.local_open.discard(stream_id)
        self.remote_open.discard(stream_id)
        return self.framer.rst_stream(stream_id, status)

    def goaway(self, status: int = GOAWAY_OK) -> bytes:
        return self.framer.goaway(self.last_stream_id, status)
