"""The channel protocol (pure), the CRI log reader, and the node agent's 10250 server
(nodeagent.server) against a runtime of real subprocesses (tests/fake_node.py)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websocket

from nodeagent import logs
from nodeagent import remotecommand as rc
from tests.conftest import wait_for
from tests.fake_node import FakeNode, cri_timestamp

TOKEN = "node-token"


# ---------------------------------------------------------------- pure: channel protocol
def test_parse_client_messages():
    assert rc.parse_client_message(b"\x00abc", rc.V5) == rc.StdinData(b"abc")
    assert rc.parse_client_message(b"\xff\x00", rc.V5) == rc.StdinClose()
    assert rc.parse_client_message(b"\xff\x00", rc.V4) is None  # v4 has no close signal
    assert rc.parse_client_message("\x00text", rc.V4) == rc.StdinData(b"text")
    assert rc.parse_client_message(b'\x04{"Width":120,"Height":40}', rc.V5) == \
        rc.Resize(120, 40)
    assert rc.parse_client_message(b"\x04not json", rc.V5) is None
    assert rc.parse_client_message(b"", rc.V5) is None


def test_status_messages():
    assert json.loads(rc.status_success()) == {"metadata": {}, "status": "Success"}
    st = json.loads(rc.status_exit_code(3, ["sh", "-c", "exit 3"]))
    assert st["status"] == "Failure" and st["reason"] == "NonZeroExitCode"
    assert st["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}
    assert st["message"] == ("command terminated with non-zero exit code: error executing "
                             "command [sh -c exit 3], exit code 3")
    assert rc.exit_code_of(-9) == 137 and rc.exit_code_of(2) == 2


def test_stream_options_tty_merges_stderr():
    o = rc.StreamOptions.from_query({"stdin": "true", "stdout": "true", "stderr": "true",
                                     "tty": "true"})
    assert o.stdin and o.stdout and o.tty and not o.stderr
    o = rc.StreamOptions.from_query({"stdout": "1"})
    assert o.stdout and not o.stderr and not o.stdin


def test_shim_decoder_reassembles():
    d = rc.ShimDecoder()
    wire = rc.shim_frame(1, b"hello") + rc.shim_frame(3, b'{"exitCode":0}')
    got = []
    for i in range(len(wire)):
        got += d.feed(wire[i:i + 1])
    assert got == [(1, b"hello"), (3, b'{"exitCode":0}')]


# ---------------------------------------------------------------- pure-ish: logs
def _write(path: Path, lines: list[tuple[str, str, str, str]]) -> None:
    with open(path, "a") as f:
        f.writelines(f"{ts} {stream} {tag} {text}\n" for ts, stream, tag, text in lines)


def test_parse_cri_line():
    ln = logs.parse_cri_line(b"2024-01-02T03:04:05.123456789Z stderr F hello world\n")
    assert ln.stream == "stderr" and not ln.partial and ln.content == b"hello world"
    assert ln.time == pytest.approx(1704164645.123456)
    assert logs.parse_cri_line(b"2024-01-02T03:04:05Z stdout P part").partial
    assert logs.parse_cri_line(b"garbage") is None
    assert logs.parse_cri_line(b"2024-01-02T03:04:05Z stdout F ").content == b""


def test_read_over_rotated_files_tail_since_timestamps_limit(tmp_path):
    cur = tmp_path / "0.log"
    _write(tmp_path / "0.log.2", [("2024-01-01T00:00:01Z", "stdout", "F", "one")])
    _write(tmp_path / "0.log.1", [("2024-01-01T00:00:02Z", "stdout", "F", "two"),
                                  ("2024-01-01T00:00:03Z", "stderr", "P", "thr")])
    _write(cur, [("2024-01-01T00:00:03Z", "stderr", "F", "ee"),
                 ("2024-01-01T00:00:04Z", "stdout", "F", "four")])
    assert logs.log_files(cur) == [tmp_path / "0.log.2", tmp_path / "0.log.1", cur]

    def read(**q):
        return logs.read_existing(cur, logs.LogOptions.from_query(q, now=1704067205.0))[0]
    assert read() == b"one\ntwo\nthree\nfour\n"
    assert read(tailLines="3") == b"three\nfour\n"  # tail counts file lines (P + F)
    assert read(tailLines="0") == b""
    assert read(tailLines="100") == b"one\ntwo\nthree\nfour\n"
    assert read(sinceTime="2024-01-01T00:00:03Z") == b"three\nfour\n"
    assert read(sinceSeconds="2") == b"three\nfour\n"  # now = 00:00:05
    assert read(limitBytes="6") == b"one\ntw"
    assert read(timestamps="true", tailLines="1") == b"2024-01-01T00:00:04Z four\n"
    with pytest.raises(logs.LogOptionError):
        logs.LogOptions.from_query({"sinceSeconds": "1", "sinceTime": "2024-01-01T00:00:00Z"})
    with pytest.raises(logs.LogOptionError):
        logs.LogOptions.from_query({"tailLines": "-1"})


def test_follow_across_rotation_until_exit(tmp_path):
    cur = tmp_path / "0.log"
    _write(cur, [(cri_timestamp(), "stdout", "F", "a")])
    state = {"running": True}
    got: list[bytes] = []

    async def writer(b: bytes) -> None:
        got.append(b)

    async def scenario():
        task = asyncio.create_task(logs.stream_logs(
            cur, logs.LogOptions(follow=True), writer, lambda: state["running"], poll=0.02))
        await asyncio.sleep(0.1)
        _write(cur, [(cri_timestamp(), "stdout", "F", "b")])
        await asyncio.sleep(0.1)
        # rotate: 0.log -> 0.log.1 with a last line written just before the rename
        _write(cur, [(cri_timestamp(), "stdout", "F", "c")])
        os.rename(cur, tmp_path / "0.log.1")
        _write(cur, [(cri_timestamp(), "stdout", "F", "d")])
        await asyncio.sleep(0.1)
        _write(cur, [(cri_timestamp(), "stdout", "F", "e")])
        state["running"] = False
        await asyncio.wait_for(task, 5)
    asyncio.run(scenario())
    assert b"".join(got) == b"a\nb\nc\nd\ne\n"


def test_follow_with_limit_bytes_stops(tmp_path):
    cur = tmp_path / "0.log"
    _write(cur, [(cri_timestamp(), "stdout", "F", "abc")])
    got: list[bytes] = []

    async def writer(b):
        got.append(b)
    asyncio.run(asyncio.wait_for(logs.stream_logs(
        cur, logs.LogOptions(follow=True, limit_bytes=2), writer, lambda: True), 5))
    assert b"".join(got) == b"ab"


# ---------------------------------------------------------------- the 10250 server
def _free_port(host="127.0.0.1") -> int:
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


@pytest.fixture
def node(tmp_path):
    n = FakeNode(tmp_path / "node", "127.0.0.1", _free_port(), TOKEN).start()
    try:
        yield n
    finally:
        n.stop()


def _ws(node, path: str, protocol: str = rc.V5, token: str = TOKEN):
    return websocket.create_connection(
        node.url.replace("http", "ws") + path, subprotocols=[protocol],
        header=[f"Authorization: Bearer {token}"], timeout=10)


def _collect(ws) -> tuple[dict[int, bytes], dict | None]:
    out: dict[int, bytes] = {}
    status = None
    while True:
        try:
            op, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            break
        if op == websocket.ABNF.OPCODE_CLOSE:
            break
        if not data:
            continue
        if data[0] == rc.ERROR:
            status = json.loads(data[1:])
        else:
            out[data[0]] = out.get(data[0], b"") + data[1:]
    return out, status


def _get(node, path: str, token: str = TOKEN) -> tuple[int, bytes]:
    req = urllib.request.Request(node.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_token_required(node):
    assert _get(node, "/healthz", token="")[0] == 200
    assert _get(node, "/containerLogs/default/x/c", token="wrong")[0] == 401
    assert _get(node, "/containerLogs/default/x/c")[0] == 404


def test_exec_stdout_stderr_and_exit_code(node):
    node.call(node.runtime.add_pod("default", "p", containers={
        "c": {"argv": ["sleep", "30"]}}))
    q = "command=sh&command=-c&command=echo+out%3B+echo+err+%3E%262%3B+exit+3"
    ws = _ws(node, f"/exec/default/p/c?{q}&stdout=true&stderr=true")
    assert ws.subprotocol == rc.V5
    out, status = _collect(ws)
    assert out == {1: b"out\n", 2: b"err\n"}
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


def test_exec_stdin_and_close_signal_v5_and_v4(node):
    node.call(node.runtime.add_pod("default", "p", containers={"c": {"argv": ["sleep", "30"]}}))
    ws = _ws(node, "/exec/default/p/c?command=cat&stdin=true&stdout=true&stderr=true")
    ws.send_binary(b"\x00hello ")
    ws.send_binary(b"\x00world\n")
    ws.send_binary(b"\xff\x00")
    out, status = _collect(ws)
    assert out == {1: b"hello world\n"} and status == {"metadata": {}, "status": "Success"}
    # v4 (the Python client): text frames carry stdin; the client ends by closing
    ws = _ws(node, "/exec/default/p/c?command=sh&command=-c&command=head+-n1&stdin=true"
                   "&stdout=true", protocol=rc.V4)
    assert ws.subprotocol == rc.V4
    ws.send("\x00line one\n")
    out, status = _collect(ws)
    assert out == {1: b"line one\n"} and status["status"] == "Success"


def test_exec_tty_and_resize(node):
    node.call(node.runtime.add_pod("default", "p", containers={"c": {"argv": ["sleep", "30"]}}))
    ws = _ws(node, "/exec/default/p/c?command=sh&stdin=true&stdout=true&tty=true")
    ws.send_binary(b'\x04{"Width":100,"Height":33}')
    ws.send_binary(b"\x00stty size; test -t 0 && echo IS-A-TTY; exit 7\n")
    out, status = _collect(ws)
    text = out.get(1, b"").decode()
    assert "33 100" in text and "IS-A-TTY" in text and 2 not in out
    assert status["details"]["causes"][0]["message"] == "7"


def test_exec_errors(node):
    node.call(node.runtime.add_pod("default", "p", containers={
        "c": {"argv": ["sleep", "30"]}, "idle": {}}))
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        _ws(node, "/exec/default/p/idle?command=ls&stdout=true")
    assert e.value.status_code == 500
    code, body = _get(node, "/exec/default/p/idle?command=ls")
    assert (code, body) == (500, b'container not found ("idle")')
    assert _get(node, "/exec/default/nope/c?command=ls")[0] == 404
    ws = _ws(node, "/exec/default/p/c?command=no-such-binary-xyz&stdout=true")
    _out, status = _collect(ws)
    assert status["reason"] == "InternalError"
    assert 'exec: "no-such-binary-xyz": executable file not found in $PATH' in \
        status["message"]


def test_attach_relays_live_output_and_stdin(node):
    node.call(node.runtime.add_pod("default", "p", containers={"c": {
        "argv": ["sh", "-c", "while read l; do echo got:$l; done; echo bye"],
        "stdin": True}}))
    ws = _ws(node, "/attach/default/p/c?stdin=true&stdout=true&stderr=true")
    ws.send_binary(b"\x00one\n")
    _op, data = ws.recv_data()
    assert data == b"\x01got:one\n"
    ws.send_binary(b"\xff\x00")  # stdin EOF ends the loop, the container exits
    out, status = _collect(ws)
    assert out == {1: b"bye\n"} and status["status"] == "Success"


def test_container_logs_endpoint(node):
    pod = node.call(node.runtime.add_pod("default", "p", containers={"c": {
        "argv": ["sh", "-c", "for i in 1 2 3; do echo line$i; done; sleep 30"]}}))
    c = pod.containers["c"]
    wait_for(lambda: c.log_path() and c.log_path().read_text().count("\n") == 3, 10)
    code, body = _get(node, "/containerLogs/default/p/c")
    assert (code, body) == (200, b"line1\nline2\nline3\n")
    assert _get(node, "/containerLogs/default/p/c?tailLines=1")[1] == b"line3\n"
    code, body = _get(node, "/containerLogs/default/p/c?timestamps=true&limitBytes=40")
    assert len(body) == 40 and body[:4].isdigit()
    code, body = _get(node, "/containerLogs/default/p/c?previous=true")
    assert (code, body) == (400, b'previous terminated container "c" in pod "p" not found')
    assert _get(node, "/containerLogs/default/p/zz")[0] == 404


def test_container_logs_follow_ends_with_the_container(node):
    pod = node.call(node.runtime.add_pod("default", "p", containers={"c": {
        "argv": ["sh", "-c", "echo start; sleep 0.5; echo end"]}}))
    wait_for(lambda: pod.containers["c"].log_path(), 5, what="the log file")
    req = urllib.request.Request(node.url + "/containerLogs/default/p/c?follow=true",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=10) as r:
        first = r.readline()
        rest = r.read()
    assert first == b"start\n" and rest == b"end\n" and time.monotonic() - t0 < 8


def test_stats_summary_and_metrics_resource(node):
    node.call(node.runtime.add_pod("default", "p", containers={"c": {
        "argv": ["sh", "-c", "while :; do :; done"]}}))
    code, body = _get(node, "/stats/summary")
    s = json.loads(body)
    assert code == 200 and s["node"]["memory"]["workingSetBytes"] > 0
    (p,) = s["pods"]
    assert p["podRef"] == {"name": "p", "namespace": "default"}
    assert p["containers"][0]["cpu"]["usageNanoCores"] > 10_000_000  # a busy loop (loaded host)
    code, body = _get(node, "/metrics/resource")
    text = body.decode()
    assert 'container_cpu_usage_seconds_total{container="c",namespace="default",pod="p"}' in text
    assert "node_memory_working_set_bytes" in text


# ---------------------------------------------------------------- port-forward (SPDY in WS)
class _SpdyClient:
    """Just enough of a SPDY client (client-go's side) over a WebSocket tunnel."""

    def __init__(self, ws):
        from nodeagent import spdy
        self.spdy = spdy
        self.ws = ws
        self.framer = spdy.Framer()
        self.next_id = 1
        self.frames: list = []

    def open(self, headers: dict) -> int:
        sid = self.next_id
        self.next_id += 2
        self.ws.send_binary(self.framer.syn_stream(sid, headers))
        return sid

    def send(self, sid: int, data: bytes, fin: bool = False) -> None:
        self.ws.send_binary(self.framer.data(sid, data, fin))

    def until(self, pred, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for f in self.frames:
                if pred(f):
                    return f
            _op, data = self.ws.recv_data()
            self.frames += self.framer.feed(data)
        raise AssertionError(f"no matching frame in {self.frames}")

    def data_of(self, sid: int) -> tuple[bytes, bool]:
        body = b"".join(f.data for f in self.frames
                        if isinstance(f, self.spdy.Data) and f.stream_id == sid)
        fin = any(isinstance(f, self.spdy.Data) and f.stream_id == sid and f.fin
                  for f in self.frames)
        return body, fin


def _echo_server(host: str):
    srv = socket.create_server((host, 0))
    port = srv.getsockname()[1]

    import threading

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(b"echo:" + data)
    threading.Thread(target=serve, daemon=True).start()
    return srv, port


def test_port_forward_over_tunnelled_spdy(node):
    from nodeagent import spdy
    node.call(node.runtime.add_pod("default", "web", ip="127.0.0.1"))
    srv, port = _echo_server("127.0.0.1")
    try:
        ws = _ws(node, "/portForward/default/web", protocol="SPDY/3.1+portforward.k8s.io")
        assert ws.subprotocol.lower() == "spdy/3.1+portforward.k8s.io"
        c = _SpdyClient(ws)
        err = c.open({"streamType": "error", "port": str(port), "requestID": "0"})
        c.send(err, b"", fin=True)  # client-go half-closes the error stream at once
        data = c.open({"streamType": "data", "port": str(port), "requestID": "0"})
        c.until(lambda f: isinstance(f, spdy.SynReply) and f.stream_id == data)
        c.send(data, b"ping")
        c.until(lambda f: isinstance(f, spdy.Data) and f.stream_id == data)
        assert c.data_of(data)[0] == b"echo:ping"
        c.send(data, b"", fin=True)  # local side done: the pod side sees EOF, closes
        c.until(lambda f: isinstance(f, spdy.Data) and f.stream_id == data and f.fin)
        c.until(lambda f: isinstance(f, spdy.Data) and f.stream_id == err and f.fin)
        assert c.data_of(err) == (b"", True)  # no error
        # a refused connection is reported on the error stream, like the kubelet's
        closed = _free_port()
        err2 = c.open({"streamType": "error", "port": str(closed), "requestID": "1"})
        data2 = c.open({"streamType": "data", "port": str(closed), "requestID": "1"})
        c.until(lambda f: isinstance(f, spdy.Data) and f.stream_id == err2 and f.fin)
        msg = c.data_of(err2)[0].decode()
        assert msg.startswith(f"error forwarding port {closed} to pod uid-default-web, uid : ")
        assert "connection refused" in msg
        c.until(lambda f: isinstance(f, spdy.Data) and f.stream_id == data2 and f.fin)
        # pings are answered
        ws.send_binary(c.framer.ping(1))
        c.until(lambda f: isinstance(f, spdy.Ping) and f.ping_id == 1)
        ws.close()
    finally:
        srv.close()


# ---------------------------------------------------------------- the API server's checks
def test_apiserver_container_choice_and_log_status_messages():
    from apiserver import nodeproxy
    from apiserver.errors import StatusError
    pod = {"metadata": {"name": "p"},
           "spec": {"containers": [{"name": "a"}, {"name": "b"}],
                    "initContainers": [{"name": "init"}]},
           "status": {"phase": "Running", "containerStatuses": [
               {"name": "a", "state": {"running": {}}},
               {"name": "b", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}}
    with pytest.raises(StatusError) as e:
        nodeproxy.pick_container(pod, None)
    assert e.value.message == ("a container name must be specified for pod p, choose one of: "
                               "[a b] or one of the init containers: [init]")
    with pytest.raises(StatusError) as e:
        nodeproxy.pick_container(pod, "zz")
    assert (e.value.code, e.value.message) == (400, "container zz is not valid for pod p")
    assert nodeproxy.pick_container(pod, "init") == "init"
    nodeproxy.check_log_status(pod, "a", False)
    with pytest.raises(StatusError) as e:
        nodeproxy.check_log_status(pod, "b", False)
    assert e.value.message == ('container "b" in pod "p" is waiting to start: trying and '
                               'failing to pull image')
    with pytest.raises(StatusError) as e:
        nodeproxy.check_log_status(pod, "a", True)
    assert e.value.message == 'previous terminated container "a" in pod "p" not found'
    pending = {"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c"}]},
               "status": {"phase": "Pending"}}
    with pytest.raises(StatusError) as e:
        nodeproxy.check_log_status(pending, "c", False)
    assert e.value.message == 'container "c" in pod "q" is waiting to start: ContainerCreating'


def test_apiserver_node_client_verifies_node_certs_only_with_a_ca(tmp_path):
    import aiohttp

    from apiserver.certs import ensure_ca
    from apiserver.nodeproxy import NodeClientConfig
    from tests.fake_node import issue_node_cert
    ca, ca_key = ensure_ca(str(tmp_path / "ca"))
    other_ca, _ = ensure_ca(str(tmp_path / "other"))
    cert = issue_node_cert(ca, ca_key, tmp_path / "n", "127.0.0.1")
    node = FakeNode(tmp_path / "node", "127.0.0.1", _free_port(), TOKEN, cert).start()
    (tmp_path / "token").write_text(TOKEN + "\n")
    try:
        async def get(cfg: NodeClientConfig) -> int:
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=cfg.ssl_context())) as s, \
                    s.get(node.url + "/stats/summary?nodeOnly=true",
                          headers={"Authorization": f"Bearer {cfg.token()}"}) as r:
                return r.status
        tok = str(tmp_path / "token")
        assert asyncio.run(get(NodeClientConfig(tok, ca))) == 200
        assert asyncio.run(get(NodeClientConfig(tok, None))) == 200  # not verified
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            asyncio.run(get(NodeClientConfig(tok, other_ca)))
    finally:
        node.stop()
