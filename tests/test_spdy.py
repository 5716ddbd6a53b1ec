"""The sans-IO SPDY/3.1 core: frames to bytes and back, header compression across frames,
server stream bookkeeping."""

from __future__ import annotations

import struct
import zlib

import pytest

from nodeagent import spdy


def test_dictionary_is_the_spdy3_one():
    d = spdy.HEADER_DICTIONARY
    assert len(d) == 1423
    assert d.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert d.endswith(b"charset=utf-8charset=iso-8859-1,utf-,*,enq=0.")


def test_data_frame_layout():
    b = spdy.Framer.data(5, b"hello", fin=True)
    assert b == struct.pack(">II", 5, (1 << 24) | 5) + b"hello"
    assert spdy.Framer.data(3, b"", fin=True) == struct.pack(">II", 3, 1 << 24)


def test_data_is_chunked_and_fin_only_on_last():
    f = spdy.Framer()
    frames = f.feed(spdy.Framer.data(1, b"x" * 10, fin=True, chunk=4))
    assert [(fr.data, fr.fin) for fr in frames] == [(b"xxxx", False), (b"xxxx", False),
                                                     (b"xx", True)]


def test_control_frame_header_layout():
    f = spdy.Framer()
    b = f.rst_stream(7, spdy.CANCEL)
    assert b == bytes([0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08]) + struct.pack(
        ">II", 7, 5)
    assert f.ping(9)[:8] == bytes([0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4])


def test_syn_stream_round_trip_and_shared_compression_context():
    client, server = spdy.Framer(), spdy.Framer()
    wire = client.syn_stream(1, {"streamType": "error", "port": "80", "requestID": "0"})
    wire += client.syn_stream(3, {"streamType": "data", "port": "80", "requestID": "0"},
                              priority=2)
    frames = server.feed(wire)
    assert [type(fr) for fr in frames] == [spdy.SynStream, spdy.SynStream]
    a, b = frames
    assert a.stream_id == 1 and a.header("streamtype") == "error" and a.header("PORT") == "80"
    assert b.stream_id == 3 and b.priority == 2 and b.header("requestid") == "0"
    assert b.headers == {"streamtype": ["data"], "port": ["80"], "requestid": ["0"]}


def test_second_header_block_needs_the_first():
    """Header blocks share one zlib stream per direction: a fresh decoder cannot read the
    second block alone."""
    client = spdy.Framer()
    client.syn_stream(1, {"a": "1"})
    second = client.syn_stream(3, {"a": "1"})
    with pytest.raises(spdy.SpdyError):
        spdy.Framer().feed(second)


def test_header_block_decompresses_with_plain_zlib_and_dictionary():
    f = spdy.Framer()
    wire = f.syn_reply(1, {"x": ["a", "b"]})
    block = zlib.decompressobj(zdict=spdy.HEADER_DICTIONARY).decompress(wire[12:])
    assert block == struct.pack(">I", 1) + struct.pack(">I", 1) + b"x" + struct.pack(
        ">I", 3) + b"a\x00b"
    assert spdy.decode_header_block(block) == {"x": ["a", "b"]}


def test_partial_feeds_reassemble():
    client, server = spdy.Framer(), spdy.Framer()
    wire = client.syn_stream(1, {"k": "v"}) + client.data(1, b"payload") + client.ping(1)
    got = []
    for i in range(len(wire)):
        got += server.feed(wire[i:i + 1])
    assert [type(x) for x in got] == [spdy.SynStream, spdy.Data, spdy.Ping]
    assert got[1].data == b"payload"


def test_all_control_frames_parse():
    a, b = spdy.Framer(), spdy.Framer()
    wire = (a.settings([(0, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 65536)]) + a.goaway(5, 0) +
            a.window_update(3, 1000) + a.headers(3, {"h": "v"}, fin=True) +
            a.syn_reply(3, {}, fin=True))
    s, g, w, h, r = b.feed(wire)
    assert s == spdy.Settings([(0, 7, 65536)], False)
    assert g == spdy.GoAway(5, 0)
    assert w == spdy.WindowUpdate(3, 1000)
    assert h.headers == {"h": ["v"]} and h.fin
    assert r == spdy.SynReply(3, {}, True)


def test_wrong_version_is_an_error():
    bad = struct.pack(">HHI", 0x8000 | 2, spdy.PING, 4) + struct.pack(">I", 1)
    with pytest.raises(spdy.SpdyError):
        spdy.Framer().feed(bad)


def test_server_session_echoes_client_pings_and_tracks_streams():
    client = spdy.Framer()
    sess = spdy.SpdyServerSession()
    events, out = sess.receive(client.ping(1) + client.syn_stream(1, {"a": "b"}))
    assert isinstance(events[0], spdy.Ping) and isinstance(events[1], spdy.SynStream)
    assert client.feed(out) == [spdy.Ping(1)]
    assert 1 in sess.remote_open and 1 in sess.local_open
    client.feed(sess.reply(1, {}))
    events, out = sess.receive(client.data(1, b"hi", fin=True))
    assert events == [spdy.Data(1, b"hi", True)] and 1 not in sess.remote_open
    # data on a stream the peer already closed is refused with RST_STREAM
    events, out = sess.receive(client.data(1, b"late"))
    assert events == [] and client.feed(out) == [spdy.RstStream(1, spdy.INVALID_STREAM)]
    # even stream ids are not the client's to open
    events, out = sess.receive(client.syn_stream(2, {}))
    assert events == [] and client.feed(out) == [spdy.RstStream(2, spdy.PROTOCOL_ERROR)]
    assert sess.send(1, b"x", fin=True) != b"" and sess.send(1, b"more") == b""
    assert client.feed(sess.goaway()) == [spdy.GoAway(1, 0)]
