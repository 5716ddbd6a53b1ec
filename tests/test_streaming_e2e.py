"""The real kubectl's logs / exec / attach / port-forward through the API server to a node
agent's 10250 server (nodeagent.server over HTTPS with a CA-signed cert) whose runtime runs
real processes (tests/fake_node.py)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import KubeCluster, have, wait_for
from tests.fake_node import FakeNode, issue_node_cert

pytestmark = pytest.mark.skipif(not have("kubectl"), reason="kubectl not installed")

NODE_IP = "127.30.0.190"
POD_IP = "127.244.190.2"


def _free_port(host: str) -> int:
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Env:
    def __init__(self, kube: KubeCluster, node: FakeNode):
        self.kube, self.node = kube, node

    def run(self, coro_fn):
        async def go():
            c = self.kube.client()
            try:
                return await coro_fn(c)
            finally:
                await c.close()
        return asyncio.run(go())

    def register_node(self, name: str, ip: str, port: int) -> None:
        async def go(c):
            await c.create("Node", {"apiVersion": "v1", "kind": "Node",
                                    "metadata": {"name": name}})
            n = await c.get("Node", None, name)
            n["status"] = {"addresses": [{"type": "InternalIP", "address": ip},
                                         {"type": "Hostname", "address": name}],
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                           "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True"}]}
            await c.update_status("Node", n)
        self.run(go)

    def make_pod(self, name: str, containers: dict[str, dict], node: str = "fake-node",
                 phase: str = "Running", statuses: dict | None = None) -> None:
        """The API object (scheduled to `node`, status Running) and, on the fake node, real
        processes for the containers that have an argv."""
        async def go(c):
            spec = {"containers": [{"name": n, "image": "busybox",
                                    **({"stdin": True} if s.get("stdin") else {}),
                                    **({"tty": True} if s.get("tty") else {})}
                                   for n, s in containers.items()]}
            if node:
                spec["nodeName"] = node
            await c.create("Pod", {"apiVersion": "v1", "kind": "Pod",
                                   "metadata": {"name": name, "namespace": "default"},
                                   "spec": spec}, "default")
            p = await c.get("Pod", "default", name)
            now = "2025-01-01T00:00:00Z"
            p["status"] = {"phase": phase, "podIP": POD_IP, "hostIP": NODE_IP,
                           "containerStatuses": [
                               (statuses or {}).get(n) or {
                                   "name": n, "ready": True, "restartCount": 0,
                                   "image": "busybox", "imageID": "", "containerID": f"k://{n}",
                                   "state": {"running": {"startedAt": now}}}
                               for n in containers]}
            await c.update_status("Pod", p)
        self.run(go)
        if node == "fake-node":
            self.node.call(self.node.runtime.add_pod("default", name, ip=POD_IP,
                                                     containers=containers))

    def kubectl(self, *args, **kw):
        return self.kube.kubectl(*args, **kw)

    def kubectl_popen(self, *args, **kw) -> subprocess.Popen:
        env = dict(os.environ, KUBECONFIG=self.kube.kubeconfig,
                   KUBECACHEDIR=self.kube.cache_dir)
        return subprocess.Popen(["kubectl", *args], env=env, **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    kube = KubeCluster(tmp_path_factory.mktemp("stream") / "cluster")
    node = None
    try:
        state = kube.cluster.state_dir
        token = "kubelet-secret-token"
        (state / "kubelet-auth-token").write_text(token)  # the API server's default path
        cert = issue_node_cert(str(state / "apiserver" / "ca.crt"),
                               str(state / "apiserver" / "ca.key"), state / "fake-node", NODE_IP)
        port = _free_port(NODE_IP)
        node = FakeNode(state / "fake-node", NODE_IP, port, token, cert).start()
        e = Env(kube, node)
        e.register_node("fake-node", NODE_IP, port)
        yield e
    finally:
        if node is not None:
            node.stop()
        kube.down()


# ---------------------------------------------------------------- logs
def test_logs_flags(env):
    env.make_pod("logs1", {"c": {"argv": ["sh", "-c", ("for i in 1 2 3 4; do echo line$i; done;"
                                                      " echo oops >&2; sleep 60")]}})
    pod = env.node.runtime.find_pod("default", "logs1")
    wait_for(lambda: pod.containers["c"].log_path() and
             pod.containers["c"].log_path().read_text().count("\n") == 5, 10)
    out = env.kubectl("logs", "logs1").stdout
    assert out.splitlines() == ["line1", "line2", "line3", "line4", "oops"]
    assert env.kubectl("logs", "logs1", "--tail=2").stdout == "line4\noops\n"
    assert env.kubectl("logs", "logs1", "-c", "c", "--limit-bytes=8").stdout == "line1\nli"
    assert env.kubectl("logs", "logs1", "--since=1h").stdout.count("\n") == 5
    assert env.kubectl("logs", "logs1", "--since-time=2999-01-01T00:00:00Z").stdout == ""
    ts, text = env.kubectl("logs", "logs1", "--timestamps", "--tail=1").stdout.split(" ", 1)
    assert text == "oops\n" and ts.endswith("Z") and ts[:4].isdigit()
    r = env.kubectl("logs", "logs1", "-c", "zz", check=False)
    assert r.returncode == 1
    assert "container zz is not valid for pod logs1" in r.stderr  # kubectl checks it too
    r = env.kubectl("get", "--raw", "/api/v1/namespaces/default/pods/logs1/log?container=zz",
                    check=False)
    assert "Error from server (BadRequest): container zz is not valid for pod logs1" in r.stderr
    r = env.kubectl("logs", "logs1", "--previous", check=False)
    assert 'previous terminated container "c" in pod "logs1" not found' in r.stderr


def test_logs_all_containers_and_waiting_container(env):
    env.make_pod("logs2", {"a": {"argv": ["sh", "-c", "echo from-a; sleep 60"]},
                           "b": {"argv": ["sh", "-c", "echo from-b; sleep 60"]},
                           "w": {}},
                 statuses={"w": {"name": "w", "ready": False, "restartCount": 0,
                                 "image": "busybox", "imageID": "",
                                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}})
    pod = env.node.runtime.find_pod("default", "logs2")
    wait_for(lambda: all(pod.containers[c].log_path() for c in "ab"), 10)
    r = env.kubectl("logs", "logs2", check=False)  # kubectl picks the first container
    assert r.stdout == "from-a\n" and 'Defaulted container "a" out of: a, b, w' in r.stderr
    r = env.kubectl("get", "--raw", "/api/v1/namespaces/default/pods/logs2/log", check=False)
    assert ("Error from server (BadRequest): a container name must be specified for pod logs2, "
            "choose one of: [a b w]") in r.stderr
    r = env.kubectl("logs", "logs2", "-c", "w", check=False)
    assert ('Error from server (BadRequest): container "w" in pod "logs2" is waiting to start: '
            'CrashLoopBackOff') in r.stderr
    r = env.kubectl("logs", "logs2", "--all-containers", "--prefix", "--ignore-errors",
                    check=False)
    assert "[pod/logs2/a] from-a" in r.stdout and "[pod/logs2/b] from-b" in r.stdout


def test_logs_follow_streams_until_the_container_exits(env):
    env.make_pod("logs3", {"c": {"argv": ["sh", "-c", ("i=0; while [ $i -lt 300 ]; do "
                                                      "echo tick$i; i=$((i+1)); sleep 0.1; "
                                                      "done")]}})
    p = env.kubectl_popen("logs", "-f", "logs3", stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        assert first.startswith("tick")
        n0 = int(first[4:])
        seen = [p.stdout.readline() for _ in range(5)]
        assert [int(s[4:]) for s in seen] == list(range(n0 + 1, n0 + 6))  # live, in order
        pod = env.node.runtime.find_pod("default", "logs3")
        env.node.call(pod.containers["c"].shim.stop())  # the container dies
        rc = p.wait(10)
        assert rc == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---------------------------------------------------------------- exec
def test_exec_exit_codes_and_stdin(env):
    env.make_pod("ex1", {"c": {"argv": ["sleep", "120"]}})
    r = env.kubectl("exec", "ex1", "--", "sh", "-c", "echo out; echo err >&2; exit 3",
                    check=False)
    assert r.returncode == 3
    assert r.stdout == "out\n"
    assert "err\n" in r.stderr and "command terminated with exit code 3" in r.stderr
    r = env.kubectl("exec", "ex1", "--", "sh", "-c", "echo fine")
    assert r.stdout == "fine\n" and r.returncode == 0
    r = env.kubectl("exec", "-i", "ex1", "--", "sh", "-c", "tr a-z A-Z", input="hello\nworld\n")
    assert r.stdout == "HELLO\nWORLD\n"
    r = env.kubectl("exec", "ex1", "-c", "nope", "--", "true", check=False)
    assert "container nope is not valid for pod ex1" in r.stderr
    r = env.kubectl("exec", "ex1", "--", "no-such-command-xyz", check=False)
    assert r.returncode != 0 and "executable file not found in $PATH" in r.stderr


def test_kubectl_cp_both_ways(env, tmp_path):
    """kubectl cp is exec + tar over stdin/stdout: binary data through both relays."""
    env.make_pod("cp1", {"c": {"argv": ["sleep", "120"]}})
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(300_000))
    remote = tmp_path / "remote"
    remote.mkdir()
    env.kubectl("cp", str(src), f"default/cp1:{remote}/blob.bin")  # the fake shares the FS
    assert (remote / "blob.bin").read_bytes() == src.read_bytes()
    back = tmp_path / "back.bin"
    env.kubectl("cp", f"default/cp1:{remote}/blob.bin", str(back))
    assert back.read_bytes() == src.read_bytes()


def test_exec_into_a_container_that_is_not_running(env):
    env.make_pod("ex2", {"c": {}})  # in the API Running, but no process on the node
    r = env.kubectl("exec", "ex2", "--", "true", check=False)
    assert r.returncode == 1
    assert 'unable to upgrade connection: container not found ("c")' in r.stderr


def _pty_run(env, args: list[str], script: list[tuple[str, bytes]], timeout: float = 20):
    """Run kubectl on a pty; for each (expect, send) wait for `expect` in the output, then
    type `send`. Returns (exit code, all output)."""
    master, slave = pty.openpty()
    p = env.kubectl_popen(*args, stdin=slave, stdout=slave, stderr=slave,
                          start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        for expect, send in script + [("\x00EOF", b"")]:
            while expect.encode() not in out:
                if time.monotonic() > deadline:
                    raise AssertionError(f"waiting for {expect!r}; got {out!r}")
                r, _, _ = select.select([master], [], [], 0.2)
                if r:
                    try:
                        chunk = os.read(master, 4096)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        if expect == "\x00EOF":
                            return p.wait(10), out
                        raise AssertionError(f"EOF waiting for {expect!r}; got {out!r}")
                    out += chunk
            if send:
                os.write(master, send)
        return p.wait(10), out
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        os.close(master)


def test_exec_interactive_tty(env):
    env.make_pod("ex3", {"c": {"argv": ["sleep", "120"]}})
    code, out = _pty_run(env, ["exec", "-it", "ex3", "--", "sh"], [
        ("", b"PS1='$ '; tty; test -t 0 && echo TTY-$((40+2))\n"),
        ("TTY-42", b"exit 5\n")])
    assert b"/dev/pts/" in out
    assert code == 5


def test_python_client_stream_v4(env):
    env.make_pod("ex4", {"c": {"argv": ["sleep", "120"]}})
    from kubernetes import client as kclient
    from kubernetes.stream import stream
    api = kclient.CoreV1Api(env.kube.python_client())
    out = stream(api.connect_get_namespaced_pod_exec, "ex4", "default",
                 command=["sh", "-c", "echo via-python"], stderr=True, stdin=False,
                 stdout=True, tty=False)
    assert out == "via-python\n"


# ---------------------------------------------------------------- attach
def test_attach_with_stdin(env):
    env.make_pod("at1", {"c": {"argv": ["sh", "-c", "while read l; do echo got:$l; done"],
                               "stdin": True}})
    p = env.kubectl_popen("attach", "-i", "at1", stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # attach shows live output only: keep typing until the relay is up
        deadline = time.monotonic() + 15
        got = b""
        import fcntl
        fl = fcntl.fcntl(p.stdout, fcntl.F_GETFL)
        fcntl.fcntl(p.stdout, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        while b"got:hello" not in got:
            assert time.monotonic() < deadline, got
            p.stdin.write(b"hello\n")
            p.stdin.flush()
            select.select([p.stdout], [], [], 0.3)
            try:
                got += p.stdout.read() or b""
            except BlockingIOError:
                pass
        p.stdin.close()  # stdin EOF → the container's read loop ends → it exits
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---------------------------------------------------------------- port-forward
def test_port_forward(env):
    pod_port = _free_port(POD_IP)
    env.make_pod("pf1", {"c": {"argv": [
        "python3", "-c",
        ("import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "  def do_GET(s):\n"
        "    b=b'hello from pf1 '+s.path.encode()\n"
        "    s.send_response(200); s.send_header('Content-Length',str(len(b)));"
        " s.end_headers(); s.wfile.write(b)\n"
        "  def log_message(s,*a): pass\n"
        f"h.ThreadingHTTPServer(('{POD_IP}',{pod_port}),H).serve_forever()\n")]}})
    wait_for(lambda: socket.create_connection((POD_IP, pod_port), 1).close() or True, 10,
             what="the pod's server")
    local = _free_port("127.0.0.1")
    p = env.kubectl_popen("port-forward", "pod/pf1", f"{local}:{pod_port}",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert f"Forwarding from 127.0.0.1:{local} -> {pod_port}" in line
        for i in range(3):  # several connections over the same SPDY session
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/x{i}", timeout=10) as r:
                assert r.read() == f"hello from pf1 /x{i}".encode()
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_python_client_port_forward_v4(env):
    pod_port = _free_port(POD_IP)
    env.make_pod("pf3", {"c": {"argv": [
        "python3", "-c",
        ("import socket\n"
        f"s=socket.create_server(('{POD_IP}',{pod_port}))\n"
        "while True:\n"
        "  c,_=s.accept(); d=c.recv(100); c.sendall(b'pong:'+d); c.close()\n")]}})
    wait_for(lambda: socket.create_connection((POD_IP, pod_port), 1).close() or True, 10,
             what="the pod's server")
    from kubernetes import client as kclient
    from kubernetes.stream import portforward
    api = kclient.CoreV1Api(env.kube.python_client())
    pf = portforward(api.connect_get_namespaced_pod_portforward, "pf3", "default",
                     ports=str(pod_port))
    s = pf.socket(pod_port)
    s.setblocking(True)
    s.settimeout(10)
    s.sendall(b"ping")
    got = b""
    while chunk := s.recv(100):
        got += chunk
    assert got == b"pong:ping"
    s.close()


def test_port_forward_refused_port(env):
    env.make_pod("pf2", {"c": {"argv": ["sleep", "120"]}})
    closed = _free_port(POD_IP)
    local = _free_port("127.0.0.1")
    p = env.kubectl_popen("port-forward", "pf2", f"{local}:{closed}",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Forwarding from" in p.stdout.readline()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=10).read()
    finally:
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
    assert f"error forwarding port {closed} to pod" in err and "connection refused" in err


# ---------------------------------------------------------------- node problems
def test_unscheduled_pod_and_unreachable_node(env):
    env.make_pod("ns1", {"c": {}}, node="", phase="Pending", statuses={
        "c": {"name": "c", "ready": False, "restartCount": 0, "image": "busybox",
              "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}}})
    r = env.kubectl("exec", "ns1", "--", "true", check=False)
    assert "pod ns1 does not have a host assigned" in r.stderr
    dead_port = _free_port("127.30.0.191")
    env.register_node("dead-node", "127.30.0.191", dead_port)
    env.make_pod("dn1", {"c": {}}, node="dead-node")
    r = env.kubectl("logs", "dn1", check=False)
    assert r.returncode == 1
    assert (f"Error from server (ServiceUnavailable): error dialing backend: dial tcp "
            f"127.30.0.191:{dead_port}: connect: connection refused") in r.stderr


def test_node_agent_rejects_a_wrong_token(env, tmp_path):
    st = json.loads(env.kubectl("get", "node", "fake-node", "-o", "json").stdout)
    port = st["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    import ssl
    ctx = ssl.create_default_context(
        cafile=str(env.kube.cluster.state_dir / "apiserver" / "ca.crt"))
    ctx.check_hostname = False
    req = urllib.request.Request(f"https://{NODE_IP}:{port}/stats/summary",
                                 headers={"Authorization": "Bearer wrong"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, context=ctx, timeout=10)
    assert e.value.code == 401


# ---------------------------------------------------------------- real workers
def _apply(cluster, pod: dict) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))


def _pod(name: str, command: list[str] | None = None, image: str = "busybox",
         **container) -> dict:
    c = {"name": "main", "image": image, **container}
    if command:
        c["command"] = command
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "worker-1", "containers": [c]}}


def _popen(cluster, *args, **kw) -> subprocess.Popen:
    e = dict(os.environ, KUBECONFIG=cluster.kubeconfig, KUBECACHEDIR=cluster.cache_dir)
    return subprocess.Popen(["kubectl", *args], env=e, **kw)


def test_workers_logs_follow_and_tail(workers):
    _apply(workers, _pod("loop", ["sh", "-c", ("i=0; while true; do echo tick $i; "
                                              "i=$((i+1)); sleep 0.1; done")]))
    workers.wait_pod("loop", "Running")
    wait_for(lambda: workers.kubectl("logs", "loop").stdout.count("\n") >= 5, 15)
    assert workers.kubectl("logs", "loop", "--tail=2").stdout.count("\n") == 2
    p = _popen(workers, "logs", "-f", "loop", "--tail=1", stdout=subprocess.PIPE,
               stderr=subprocess.PIPE, text=True)
    try:
        nums = [int(p.stdout.readline().split()[1]) for _ in range(4)]
        assert nums == list(range(nums[0], nums[0] + 4))  # one old line, then live ones
    finally:
        p.kill()
        p.wait()
    workers.kubectl("delete", "pod", "loop", "--wait=false")


def test_workers_logs_previous_after_a_restart(workers):
    _apply(workers, _pod("crash", ["sh", "-c", "echo run-$(date +%s%N); sleep 0.3; exit 1"]))

    def restarted():
        cs = (workers.get_json("pod", "crash").get("status") or {}).get(
            "containerStatuses") or []
        return cs and cs[0].get("restartCount", 0) >= 1 and cs[0].get("lastState", {}).get(
            "terminated")
    wait_for(restarted, 30, 0.3, "a restart")
    prev = workers.kubectl("logs", "crash", "--previous").stdout
    assert prev.startswith("run-") and prev.count("\n") == 1
    workers.kubectl("delete", "pod", "crash", "--wait=false")


def test_workers_exec_attach(workers):
    _apply(workers, _pod("shell", ["sh", "-c", "while read l; do echo got:$l; done"],
                         stdin=True))
    workers.wait_pod("shell", "Running")
    r = workers.kubectl("exec", "shell", "--", "sh", "-c", "echo hi; exit 3", check=False)
    assert r.returncode == 3 and r.stdout == "hi\n"
    assert "command terminated with exit code 3" in r.stderr
    r = workers.kubectl("exec", "-i", "shell", "--", "sh", "-c", "wc -l", input="a\nb\nc\n")
    assert r.stdout.strip() == "3"
    code, _out = _pty_run(_EnvLike(workers), ["exec", "-it", "shell", "--", "sh"], [
        ("", b"test -t 0 && echo TTY-$((40+2))\n"), ("TTY-42", b"exit 4\n")])
    assert code == 4
    # attach: the container's stdin loop answers
    p = _popen(workers, "attach", "-i", "shell", stdin=subprocess.PIPE,
               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        import fcntl
        fl = fcntl.fcntl(p.stdout, fcntl.F_GETFL)
        fcntl.fcntl(p.stdout, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        got, deadline = b"", time.monotonic() + 15
        while b"got:ping" not in got:
            assert time.monotonic() < deadline, got
            p.stdin.write(b"ping\n")
            p.stdin.flush()
            select.select([p.stdout], [], [], 0.3)
            try:
                got += p.stdout.read() or b""
            except BlockingIOError:
                pass
    finally:
        p.kill()
        p.wait()
    workers.kubectl("delete", "pod", "shell", "--wait=false")


def test_workers_port_forward(workers, tmp_path):
    import random
    port = random.randrange(20000, 30000)  # pod IPs may repeat across concurrent test clusters
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello through port-forward\n")
    _apply(workers, _pod("web", ["sh", "-c", (f"exec httpd -f -p $KUBELAB_BIND_IP:{port} "
                                             f"-h {www}")], ports=[{"containerPort": port}]))
    ip = workers.wait_pod("web", "Ready")["status"]["podIP"]
    # Ready without a readiness probe: wait until the server listens (loopback pods are
    # reachable from the host), since kubectl port-forward gives up after a refused connection
    wait_for(lambda: socket.create_connection((ip, port), 1).close() or True, 20, 0.2,
             "httpd listening")
    local = _free_port("127.0.0.1")
    p = _popen(workers, "port-forward", "pod/web", f"{local}:{port}", stdout=subprocess.PIPE,
               stderr=subprocess.PIPE, text=True)
    try:
        assert f"Forwarding from 127.0.0.1:{local} -> {port}" in p.stdout.readline()
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=10) as r:
                assert r.read() == b"hello through port-forward\n"
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    workers.kubectl("delete", "pod", "web", "--wait=false")


def test_workers_run_it_rm_attaches_to_a_tty(workers):
    code, out = _pty_run(_EnvLike(workers), [
        "run", "-it", "--rm", "--restart=Never", "t1", "--image=busybox", "--", "sh"], [
        ("try pressing enter", b"\n"), ("#", b"echo hi-$((1+1))\n"), ("hi-2", b"exit 3\n")],
        timeout=40)
    assert code == 3  # kubectl reports the container's exit code
    assert b'pod "t1" deleted' in out and b"pod default/t1 terminated (Error)" in out


class _EnvLike:
    def __init__(self, cluster):
        self.cluster = cluster

    def kubectl_popen(self, *args, **kw):
        return _popen(self.cluster, *args, **kw)


# ---------------------------------------------------------------- kubectl top
def test_top_pods_and_nodes(env):
    env.make_pod("busy", {"c": {"argv": ["sh", "-c", "while :; do :; done"]}})
    env.make_pod("idle", {"c": {"argv": ["sleep", "120"]}})
    out = env.kubectl("top", "pods").stdout.splitlines()
    assert out[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in out[1:]}
    assert "busy" in rows and "idle" in rows
    assert int(rows["busy"][0].rstrip("m")) > 50  # a busy loop (the machine may be loaded)
    assert rows["busy"][1].endswith("Mi")
    out = env.kubectl("top", "pod", "busy", "--containers").stdout
    assert "busy" in out and " c " in f" {out} "
    out = env.kubectl("top", "nodes").stdout.splitlines()
    assert out[0].split()[:2] == ["NAME", "CPU(cores)"]
    assert any(ln.startswith("fake-node ") for ln in out[1:])
    r = env.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
                    check=False)
    assert 'podmetrics.metrics.k8s.io "nope" not found' in r.stderr or \
        "not found" in r.stderr
