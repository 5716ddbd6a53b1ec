"""The NFQUEUE delayer's protocol and queue, without sockets (kubelab/netdelay.py; the real
delay through a network namespace is checked in test_netns.py)."""

from __future__ import annotations

import socket
import struct

from kubelab import netdelay as nd


def test_bind_request_is_an_nfqueue_config_message():
    msg = nd.bind_request(7, seq=3)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) == 16 + 4 + 8
    assert kind == (3 << 8) | 2 and flags == 1 | 4 and seq == 3
    family, version, res_id = struct.unpack_from("=BBH", msg, 16)
    assert (family, version, socket.ntohs(res_id)) == (0, 0, 7)
    alen, akind = struct.unpack_from("=HH", msg, 20)
    assert (alen, akind) == (8, 1)
    assert struct.unpack_from("!BxH", msg, 24) == (1, 0)


def test_verdict_accepts_the_packet_id():
    msg = nd.verdict(7, 0xDEADBEEF)
    assert struct.unpack_from("=IH", msg) == (len(msg), (3 << 8) | 1)
    assert struct.unpack_from("=HH", msg, 20) == (12, 2)
    assert struct.unpack_from("!II", msg, 24) == (1, 0xDEADBEEF)


def _packet_message(packet_id: int) -> bytes:
    # NFQA_PACKET_HDR (nested flag bits set, as some kernels send) then a 5-byte attribute
    hdr = struct.pack("=HH", 4 + 7, 1 | 0x8000) + struct.pack("!IHB", packet_id, 0x0800, 3)
    hdr += b"\0" * (-len(hdr) % 4)
    other = struct.pack("=HH", 9, 10) + b"abcde" + b"\0" * 3
    body = struct.pack("=BBH", 2, 0, socket.htons(7)) + other + hdr
    return struct.pack("=IHHII", 16 + len(body), (3 << 8) | 0, 0, 0, 0) + body


def test_parse_packets_and_acks_in_one_datagram():
    ack = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", 0) + b"\0" * 16
    err = struct.pack("=IHHII", 36, 2, 0, 2, 0) + struct.pack("=i", -1) + b"\0" * 16
    data = _packet_message(41) + ack + _packet_message(42) + err
    assert nd.parse(data) == [("packet", 41), ("error", 0), ("packet", 42), ("error", 1)]
    assert nd.parse(b"\x01\x02") == []  # a truncated datagram yields nothing, not an error


def test_delay_queue_releases_in_order_after_the_delay():
    q = nd.DelayQueue(0.05)
    assert q.timeout(0.0) is None
    q.arrived(1, 10.0)
    q.arrived(2, 10.01)
    assert q.due(10.04) == []
    assert abs(q.timeout(10.04) - 0.01) < 1e-9
    assert q.due(10.05) == [1]
    assert q.due(11.0) == [2]
    assert q.due(12.0) == []
