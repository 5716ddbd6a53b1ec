"""Network delay without tc netem: packets are queued to userspace with iptables' NFQUEUE target
and released (NF_ACCEPT) once they have waited the delay.

Kernels built without sch_netem (as on the machines kubelab is tested on) cannot delay packets in
the qdisc layer; nfnetlink_queue is there. `python -m kubelab.netdelay --queue N --delay-ms D`
runs inside a machine's network namespace next to an iptables rule
`-A OUTPUT -o eth0 -j NFQUEUE --queue-num N --queue-bypass` (kubelab/netns.add_delay installs
both); with --queue-bypass, packets pass undelayed whenever the delayer is not running.

The nfnetlink_queue messages are encoded and decoded here (netlink header, nfgenmsg, attributes)
without sockets, so the protocol is testable on its own; `run()` is the socket loop.
"""

from __future__ import annotations

import argparse
import heapq
import os
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
_NLMSG = struct.Struct("=IHHII")      # len, type, flags, seq, pid (host order)
_NFGEN = struct.Struct("=BBH")        # family, version, res_id (big-endian on the wire)
_NLATTR = struct.Struct("=HH")        # len, type


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def _message(msg_type: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST,
             family: int = socket.AF_UNSPEC) -> bytes:
    body = _NFGEN.pack(family, 0, socket.htons(queue)) + attrs
    return _NLMSG.pack(_NLMSG.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags,
                       seq, 0) + body


def bind_request(queue: int, seq: int = 1) -> bytes:
    """Bind this socket to queue number `queue`."""
    return _message(NFQNL_MSG_CONFIG, queue,
                    _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)),
                    seq, NLM_F_REQUEST | NLM_F_ACK)


def copy_meta_request(queue: int, seq: int = 2) -> bytes:
    """Deliver only packet metadata (the id is all a verdict needs)."""
    return _message(NFQNL_MSG_CONFIG, queue,
                    _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)),
                    seq, NLM_F_REQUEST | NLM_F_ACK)


def verdict(queue: int, packet_id: int, seq: int = 0, decision: int = NF_ACCEPT) -> bytes:
    return _message(NFQNL_MSG_VERDICT, queue,
                    _attr(NFQA_VERDICT_HDR, struct.pack("!II", decision, packet_id)), seq)


def parse(data: bytes) -> list[tuple[str, int]]:
    """Netlink messages in a datagram: ("packet", id) for queued packets, ("error", errno) for
    errors and acknowledgements (errno 0)."""
    out = []
    off = 0
    while off + _NLMSG.size <= len(data):
        length, msg_type, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size or off + length > len(data):
            break
        body = data[off + _NLMSG.size: off + length]
        if msg_type == NLMSG_ERROR:
            out.append(("error", -struct.unpack_from("=i", body)[0]))
        elif msg_type == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            pos = _NFGEN.size
            while pos + _NLATTR.size <= len(body):
                alen, akind = _NLATTR.unpack_from(body, pos)
                if alen < _NLATTR.size:
                    break
                if akind & 0x3FFF == NFQA_PACKET_HDR:
                    out.append(("packet", struct.unpack_from("!I", body, pos + 4)[0]))
                    break
                pos += _align(alen)
        off += _align(length)
    return out


class DelayQueue:
    """Packets released in arrival order once `delay` seconds have passed (sans-IO)."""

    def __init__(self, delay: float):
        self.delay = delay
        self._heap: list[tuple[float, int]] = []

    def arrived(self, packet_id: int, now: float) -> None:
        heapq.heappush(self._heap, (now + self.delay, packet_id))

    def due(self, now: float) -> list[int]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[1])
        return out

    def timeout(self, now: float) -> float | None:
        return max(0.0, self._heap[0][0] - now) if self._heap else None


def run(queue: int, delay_ms: float) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, 0))
    for request in (bind_request(queue), copy_meta_request(queue)):
        sock.send(request)
        errs = [v for k, v in parse(sock.recv(65536)) if k == "error"]
        if errs and errs[0]:
            raise SystemExit(f"netdelay: nfnetlink_queue refused queue {queue}: "
                             f"{os.strerror(errs[0])}")
    q = DelayQueue(delay_ms / 1000.0)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print(f"netdelay: delaying queue {queue} by {delay_ms} ms", flush=True)
    while not stop:
        now = time.monotonic()
        for pid in q.due(now):
            sock.send(verdict(queue, pid))
        try:
            ready, _, _ = select.select([sock], [], [], q.timeout(now))
        except InterruptedError:
            continue
        if ready:
            now = time.monotonic()
            for kind, value in parse(sock.recv(65536)):
                if kind == "packet":
                    q.arrived(value, now)
    for pid in q.due(float("inf")):  # let what is held go before leaving
        sock.send(verdict(queue, pid))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="kubelab.netdelay", description=__doc__.split("\n")[0])
    p.add_argument("--queue", type=int, default=7)
    p.add_argument("--delay-ms", type=float, required=True)
    args = p.parse_args(argv)
    try:
        run(args.queue, args.delay_ms)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
