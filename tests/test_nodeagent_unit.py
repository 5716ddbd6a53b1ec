"""Node agent pure logic (back-off, status from observed states, probe thresholds, QoS, argv,
sandbox files) and the runtime/shim on real (short-lived) processes, without a cluster."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

from nodeagent import probes
from nodeagent.podworker import (
    Backoff,
    container_argv,
    fmt_duration,
    observed_state,
    qos_class,
    restart_wanted,
)
from nodeagent.runtime import Runtime, kill_all
from nodeagent.sandbox import LoopbackDriver, hosts_file, resolv_conf
from nodeagent.status import ContainerState, pod_phase, pod_status

from .conftest import wait_for

# --------------------------------------------------------------------------- back-off


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_backoff_schedule_doubles_to_max_and_resets():
    clk = Clock()
    bo = Backoff(10, 300, clock=clk)
    key = "pod_ns_uid_c"
    # first exit: restarted at once
    assert not bo.in_backoff_since(key, clk.t)
    waits = []
    for _ in range(8):
        bo.next(key, clk.t)          # restarted now; it crashes again at once
        finished = clk.t
        assert bo.in_backoff_since(key, finished)
        waits.append(bo.remaining(key, finished))
        clk.t += bo.remaining(key, finished)
        assert not bo.in_backoff_since(key, finished)
    assert waits == [10, 20, 40, 80, 160, 300, 300, 300]
    # a container that ran for more than 10 minutes (2 x max) starts over at 10 s
    clk.t += 700
    bo.next(key, clk.t)
    assert bo.current(key) == 10


def test_backoff_time_scaled():
    from kubelab import timescale
    from nodeagent.podworker import container_backoff
    old = timescale.scale()
    timescale.set_scale(0.1)
    try:
        bo = container_backoff()
        assert bo.initial == pytest.approx(1.0) and bo.maximum == pytest.approx(30.0)
    finally:
        timescale.set_scale(old)


def test_fmt_duration_like_go():
    assert fmt_duration(10) == "10s"
    assert fmt_duration(40) == "40s"
    assert fmt_duration(80) == "1m20s"
    assert fmt_duration(300) == "5m0s"
    assert fmt_duration(0.5) == "500ms"


def test_restart_policy():
    assert restart_wanted("Always", 0) and restart_wanted("Always", 1)
    assert restart_wanted("OnFailure", 2) and not restart_wanted("OnFailure", 0)
    assert not restart_wanted("Never", 1)


# --------------------------------------------------------------------------- QoS and argv


def _pod(*containers, init=()):
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": list(containers), "initContainers": list(init)}}


def test_qos_classes():
    assert qos_class(_pod({"name": "a"})) == "BestEffort"
    assert qos_class(_pod({"name": "a", "resources": {"requests": {"memory": "64Mi"}}})) == \
        "Burstable"
    g = {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}
    assert qos_class(_pod(g)) == "Guaranteed"  # requests default to limits
    g2 = {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                                     "requests": {"cpu": "1", "memory": "1Gi"}}}
    assert qos_class(_pod(g, g2)) == "Guaranteed"
    assert qos_class(_pod(g, {"name": "c"})) == "Burstable"
    only_cpu = {"name": "a", "resources": {"limits": {"cpu": "1"}}}
    assert qos_class(_pod(only_cpu)) == "Burstable"


def test_container_argv_rules():
    def expand(cmd, args):
        env = {"X": "1"}
        f = lambda s: s.replace("$(X)", env["X"])
        return [f(c) for c in cmd], [f(a) for a in args]
    ep, cmd = ["/entry"], ["default", "cmd"]
    assert container_argv({}, ep, cmd, expand) == ["/entry", "default", "cmd"]
    assert container_argv({"args": ["a$(X)"]}, ep, cmd, expand) == ["/entry", "a1"]
    assert container_argv({"command": ["sh"], "args": ["-c", "$(X)"]}, ep, cmd, expand) == \
        ["sh", "-c", "1"]
    assert container_argv({"command": ["sleep"]}, ep, cmd, expand) == ["sleep"]


# --------------------------------------------------------------------------- probes


def test_probe_defaults_and_thresholds():
    spec = probes.ProbeSpec.from_dict(probes.READINESS, {"exec": {"command": ["true"]},
                                                         "successThreshold": 2})
    assert (spec.period, spec.timeout, spec.failure_threshold, spec.initial_delay) == \
        (10, 1, 3, 0)
    st = probes.ProbeState(spec)
    assert st.result is False                      # readiness starts not ready
    assert not st.observe(True) and st.result is False
    assert st.observe(True) and st.result is True  # 2 successes in a row
    assert not st.observe(False) and not st.observe(False)
    assert st.observe(False) and st.result is False  # the third failure flips it
    live = probes.ProbeState(probes.ProbeSpec.from_dict(
        probes.LIVENESS, {"tcpSocket": {"port": 1}, "successThreshold": 5,
                          "failureThreshold": 1}))
    assert live.spec.success_threshold == 1         # must be 1 for liveness
    assert live.result is True
    assert live.observe(False) and live.result is False
    startup = probes.ProbeState(probes.ProbeSpec.from_dict(probes.STARTUP,
                                                           {"exec": {"command": ["x"]}}))
    assert startup.result is None
    assert startup.observe(True) and startup.result is True


def test_named_port_resolution():
    c = {"ports": [{"name": "http", "containerPort": 8080}]}
    assert probes.resolve_port("http", c) == 8080
    assert probes.resolve_port(81, c) == 81
    assert probes.resolve_port("nope", c) is None


async def _serve_http(codes):
    async def handle(reader, writer):
        req = await reader.readuntil(b"\r\n\r\n")
        code = codes.pop(0) if codes else 200
        headers = req.decode()
        body = b"ok" if "X-Test: yes" in headers else b"no header"
        writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body)
        await writer.drain()
        writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_http_and_tcp_probe_messages():
    async def main():
        srv = await _serve_http([200, 500])
        port = srv.sockets[0].getsockname()[1]
        h = {"httpGet": {"path": "/healthz", "port": "web",
                         "httpHeaders": [{"name": "X-Test", "value": "yes"}]}}
        c = {"ports": [{"name": "web", "containerPort": port}]}
        ok1 = await probes.run_handler(h, "127.0.0.1", c, 1.0, None)
        ok2 = await probes.run_handler(h, "127.0.0.1", c, 1.0, None)
        tcp_ok = await probes.run_handler({"tcpSocket": {"port": port}}, "127.0.0.1", c, 1.0,
                                          None)
        srv.close()
        await srv.wait_closed()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
        s.close()
        refused = await probes.run_handler({"tcpSocket": {"port": free}}, "127.0.0.1", c, 1.0,
                                           None)
        http_refused = await probes.run_handler({"httpGet": {"port": free, "path": "/x"}},
                                                "127.0.0.1", c, 1.0, None)
        return ok1, ok2, tcp_ok, refused, http_refused, free
    ok1, ok2, tcp_ok, refused, http_refused, free = asyncio.run(main())
    assert ok1 == (True, "")
    assert ok2 == (False, "HTTP probe failed with statuscode: 500")
    assert tcp_ok[0] is True
    assert refused == (False, f"dial tcp 127.0.0.1:{free}: connect: connection refused")
    assert http_refused == (False, (f'Get "http://127.0.0.1:{free}/x": dial tcp '
                                    f'127.0.0.1:{free}: connect: connection refused'))


def test_exec_probe_result():
    async def fake_exec(argv, timeout):
        return (0, "") if argv == ["true"] else (1, "cat: can't open '/x'\n")
    ok = asyncio.run(probes.run_handler({"exec": {"command": ["true"]}}, "", {}, 1, fake_exec))
    bad = asyncio.run(probes.run_handler({"exec": {"command": ["cat", "/x"]}}, "", {}, 1,
                                         fake_exec))
    assert ok[0] is True
    assert bad == (False, "cat: can't open '/x'\n")


# --------------------------------------------------------------------------- status


def test_phase_from_observed_states():
    pod = {"spec": {"restartPolicy": "Always"}}
    run = ContainerState("a", "busybox", state="running", started_at=1)
    waiting = ContainerState("b", "busybox")
    crashloop = ContainerState("b", "busybox", reason="CrashLoopBackOff",
                               last_terminated={"exitCode": 1})
    assert pod_phase(pod, [], [waiting]) == "Pending"
    assert pod_phase(pod, [], [run]) == "Running"
    assert pod_phase(pod, [], [run, crashloop]) == "Running"
    assert pod_phase(pod, [], [crashloop]) == "Running"   # stopped, will be restarted
    ok = ContainerState("a", "x", state="terminated", exit_code=0)
    bad = ContainerState("a", "x", state="terminated", exit_code=2)
    assert pod_phase({"spec": {"restartPolicy": "Never"}}, [], [ok]) == "Succeeded"
    assert pod_phase({"spec": {"restartPolicy": "Never"}}, [], [ok, bad]) == "Failed"
    assert pod_phase({"spec": {"restartPolicy": "OnFailure"}}, [], [ok]) == "Succeeded"
    assert pod_phase({"spec": {"restartPolicy": "OnFailure"}}, [], [bad]) == "Running"
    init_running = ContainerState("i", "x", state="running")
    assert pod_phase(pod, [init_running], [waiting]) == "Pending"
    assert pod_phase({"spec": {"restartPolicy": "Never"}}, [bad], [waiting]) == "Failed"
    # stopped by the kubelet for good (deletion): terminal
    killed = ContainerState("a", "x", state="terminated", exit_code=137)
    assert pod_phase(pod, [], [killed], terminal=True) == "Failed"
    assert pod_phase(pod, [], [ok], terminal=True) == "Succeeded"


def test_pod_status_conditions_and_fields():
    pod = {"metadata": {"name": "p"},
           "spec": {"containers": [{"name": "a"}, {"name": "b"}],
                    "initContainers": [{"name": "i"}]},
           "status": {"phase": "Pending"}}
    i = ContainerState("i", "busybox", state="terminated", exit_code=0, reason="Completed",
                       started_at=1, finished_at=2, container_id="kubelab://x")
    a = ContainerState("a", "busybox", state="running", started_at=3, ready=True, started=True,
                       container_id="kubelab://a")
    b = ContainerState("b", "busybox", state="running", started_at=3, started=True)
    st = pod_status(pod, [i], [a, b], pod_ip="127.244.1.5", host_ip="127.30.0.101",
                    start_time=1, qos_class="BestEffort")
    conds = {c["type"]: c for c in st["conditions"]}
    assert st["phase"] == "Running" and st["qosClass"] == "BestEffort"
    assert conds["Initialized"]["status"] == "True"
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["reason"] == "ContainersNotReady"
    assert conds["ContainersReady"]["message"] == "containers with unready status: [b]"
    assert st["podIP"] == "127.244.1.5" and st["podIPs"] == [{"ip": "127.244.1.5"}]
    assert st["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    cs = st["containerStatuses"][0]
    assert cs["containerID"] == "kubelab://a" and cs["ready"] and cs["started"]
    # unchanged observation → identical status (so nothing is written)
    pod["status"] = st
    assert pod_status(pod, [i], [a, b], pod_ip="127.244.1.5", host_ip="127.30.0.101",
                      start_time=1, qos_class="BestEffort") == st
    pending = pod_status({"metadata": {}, "spec": {"initContainers": [{"name": "i"}]}},
                         [ContainerState("i", "x", state="running")],
                         [ContainerState("a", "x", reason="PodInitializing")],
                         pod_ip="", host_ip="h", start_time=1)
    c2 = {c["type"]: c for c in pending["conditions"]}
    assert c2["Initialized"]["message"] == "containers with incomplete status: [i]"
    assert pending["containerStatuses"][0]["state"] == {"waiting":
                                                        {"reason": "PodInitializing"}}


class FakeHandle:
    def __init__(self, state, restart_count=0, cid="abc"):
        self.state = state
        self.restart_count = restart_count
        self.container_id = f"kubelab://{cid}"


def test_observed_state_running_terminated_and_backoff():
    now = time.time()
    run = observed_state("c", "busybox", FakeHandle({"startedAt": now, "exitCode": None}), None,
                         ready=True, started=True)
    assert run.state == "running" and run.ready and run.container_id == "kubelab://abc"
    done = {"startedAt": now - 5, "finishedAt": now, "exitCode": 137, "reason": "OOMKilled"}
    t = observed_state("c", "busybox", FakeHandle(done, 2), None)
    s = t.to_status()
    assert s["state"]["terminated"]["reason"] == "OOMKilled"
    assert s["state"]["terminated"]["exitCode"] == 137 and s["restartCount"] == 2
    # waiting for a restart: the ended instance is lastState
    w = observed_state("c", "busybox", FakeHandle({**done, "reason": "Error", "exitCode": 1}, 2),
                       None, waiting_reason="CrashLoopBackOff", waiting_message="back-off 20s")
    s = w.to_status()
    assert s["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}}
    assert s["lastState"]["terminated"]["exitCode"] == 1
    assert s["lastState"]["terminated"]["containerID"] == "kubelab://abc"
    assert s["restartCount"] == 2                   # as kubectl shows it: restarts done
    # a running instance after restarts reports the previous one as lastState
    prev = {"startedAt": now - 9, "finishedAt": now - 8, "exitCode": 2, "_cid": "kubelab://p"}
    r = observed_state("c", "busybox", FakeHandle({"startedAt": now, "exitCode": None}, 1), prev)
    assert r.to_status()["lastState"]["terminated"]["reason"] == "Error"
    assert r.to_status()["restartCount"] == 1


# --------------------------------------------------------------------------- sandbox files


def test_hosts_and_resolv_conf_as_the_kubelet_writes_them():
    pod = {"metadata": {"name": "web-0", "namespace": "shop"},
           "spec": {"hostname": "web-0", "subdomain": "nginx",
                    "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a", "b"]}]}}
    h = hosts_file(pod, "10.244.1.5")
    assert h.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert "10.244.1.5\tweb-0.nginx.shop.svc.cluster.local\tweb-0\n" in h
    assert "# Entries added by HostAliases.\n1.2.3.4\ta\tb\n" in h
    r, warnings = resolv_conf(pod, "10.96.0.10", "cluster.local",
                              host_resolv="nameserver 8.8.8.8\nsearch corp.example\n")
    assert r == ("nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local "
                 "cluster.local corp.example\noptions ndots:5\n")
    assert not warnings
    none = {"metadata": {"name": "x", "namespace": "d"},
            "spec": {"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"],
                                                        "searches": ["a.b"],
                                                        "options": [{"name": "ndots",
                                                                     "value": "2"}]}}}
    assert resolv_conf(none, "10.96.0.10", host_resolv="")[0] == \
        "nameserver 1.1.1.1\nsearch a.b\noptions ndots:2\n"


def test_loopback_driver_allocates_persistently(tmp_path):
    d = LoopbackDriver("127.30.0.101", "127.244.1.0/24", "127.96.0.10", "cluster.local",
                       str(tmp_path))
    p1 = {"metadata": {"name": "a", "namespace": "d", "uid": "u1"}, "spec": {}}
    p2 = {"metadata": {"name": "b", "namespace": "d", "uid": "u2"}, "spec": {}}
    s1, s2 = d.setup(p1), d.setup(p2)
    net = ipaddress.ip_network("127.244.1.0/24")
    assert s1.ip != s2.ip and {ipaddress.ip_address(s.ip) in net for s in (s1, s2)} == {True}
    assert s1.ip != "127.244.1.1"                     # the gateway address
    assert s1.bind_ip == s1.ip and s1.netns_path is None
    assert "nameserver 127.96.0.10" in Path(s1.resolv_conf_path).read_text()
    again = LoopbackDriver("127.30.0.101", "127.244.1.0/24", "127.96.0.10", "cluster.local",
                           str(tmp_path))
    assert again.setup(p1).ip == s1.ip                # survives a restart
    assert sorted(again.known_pods()) == ["u1", "u2"]
    again.teardown("u1")
    p3 = {"metadata": {"name": "c", "namespace": "d", "uid": "u3"}, "spec": {}}
    assert len({again.setup(p2).ip, again.setup(p3).ip}) == 2


# --------------------------------------------------------------------------- shim + runtime


def _run(coro):
    return asyncio.run(coro)


BB = "/usr/bin:/bin"
NODE = f"unit-{os.getpid()}"


@pytest.fixture(autouse=True)
def _no_cgroups_left():
    yield
    from nodeagent import cgroups
    cgroups.remove_node(NODE)


async def _start(rt, pod, name, argv, **kw):
    return await rt.start_container(pod, name, 0, argv=argv, env={"PATH": BB, **kw.pop("env", {})},
                                    cwd="/", **kw)


def test_shim_logs_exit_and_previous(tmp_path):
    async def main():
        rt = Runtime(tmp_path, NODE)
        pod = rt.pod("ns", "p", "uid1")
        pod.save()
        h = await _start(rt, pod, "c", ["sh", "-c", "echo out; echo err >&2; printf part; exit 3"])
        assert h.state["pid"] > 0 and h.state["exitCode"] is None or h.state["exitCode"] == 3
        st = await asyncio.wait_for(h.exited(), 5)
        return h, st
    h, st = _run(main())
    assert st["exitCode"] == 3 and st["reason"] == "Error"
    assert st["finishedAt"] >= st["startedAt"]
    lines = h.log_path().read_text().splitlines()
    streams = sorted((ln.split(" ", 3)[1], ln.split(" ", 3)[2], ln.split(" ", 3)[3])
                     for ln in lines)
    assert streams == [("stderr", "F", "err"), ("stdout", "F", "out"), ("stdout", "F", "part")]
    ts = lines[0].split(" ")[0]
    assert ts.endswith("Z") and len(ts.split(".")[1]) == 10  # RFC3339Nano, 9 digits + Z
    assert h.log_path(previous=True) is None


def test_shim_start_error_for_missing_command(tmp_path):
    async def main():
        rt = Runtime(tmp_path, NODE)
        pod = rt.pod("ns", "p", "uid1")
        return await _start(rt, pod, "c", ["no-such-binary-x"])
    h = _run(main())
    assert h.state["exitCode"] == 128 and h.state["reason"] == "StartError"
    assert 'exec: "no-such-binary-x": executable file not found in $PATH' in h.state["message"]


def test_shim_rss_watchdog_reports_oomkilled(tmp_path):
    # run the shim directly with a watchdog limit and no cgroups
    d = tmp_path / "pods" / "w" / "c" / "0"
    d.mkdir(parents=True)
    (d / "spec.json").write_text(json.dumps({
        "id": "w1", "argv": [sys.executable, "-c",
                             "x = bytearray(200 * 1024 * 1024); import time; time.sleep(30)"],
        "env": {"PATH": BB}, "cwd": "/", "log_path": str(d.parent / "0.log"),
        "memory_limit_watchdog": 50 * 1024 * 1024}))
    import subprocess

    from nodeagent.runtime import SHIM
    assert subprocess.run([sys.executable, "-S", SHIM, str(d)], timeout=10, check=False).returncode == 0
    st = wait_for(lambda: (s := json.loads((d / "state.json").read_text()))
                  ["exitCode"] is not None and s, 15, 0.05, "watchdog kill")
    assert st["exitCode"] == 137 and st["reason"] == "OOMKilled"


def test_shim_attach_socket_frames_and_stdin(tmp_path):
    async def main():
        rt = Runtime(tmp_path, NODE)
        pod = rt.pod("ns", "p", "uid1")
        h = await _start(rt, pod, "c", ["sh", "-c", "while read l; do echo got $l; done; echo bye; exit 4"], stdin=True)
        sock = h.attach_socket
        r, w = await asyncio.open_unix_connection(str(sock))
        w.write(bytes([0]) + struct.pack(">I", 3) + b"hi\n")
        w.write(bytes([0]) + struct.pack(">I", 0))     # stdin EOF
        await w.drain()
        frames = []
        while True:
            hdr = await asyncio.wait_for(r.readexactly(5), 5)
            n = struct.unpack(">I", hdr[1:])[0]
            frames.append((hdr[0], await r.readexactly(n)))
            if hdr[0] == 3:
                break
        w.close()
        return frames
    frames = _run(main())
    out = b"".join(p for ch, p in frames if ch == 1)
    assert out == b"got hi\nbye\n"
    assert frames[-1] == (3, b'{"exitCode": 4}')


def test_runtime_adopt_stop_and_kill_all(tmp_path):
    async def start():
        rt = Runtime(tmp_path, NODE)
        pod = rt.pod("ns", "p", "uid1")
        pod.ip = "127.244.9.2"
        pod.save()
        h1 = await _start(rt, pod, "a", ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"])
        h2 = await _start(rt, pod, "b", ["sleep", "600"])
        return h1.state, h2.state
    s1, s2 = _run(start())

    async def adopt_and_stop():
        rt = Runtime(tmp_path, NODE)          # a restarted agent
        pods = rt.adopt()
        assert [p.uid for p in pods] == ["uid1"] and pods[0].ip == "127.244.9.2"
        a = pods[0].containers["a"]
        assert a.running and a.state["pid"] == s1["pid"]
        assert rt.find_pod("ns", "p") is pods[0]
        _cpu, mem = a.stats()
        assert mem > 0
        t0 = time.monotonic()
        st = await a.stop(5)
        return st, time.monotonic() - t0
    st, took = _run(adopt_and_stop())
    assert st["exitCode"] == 0 and took < 3          # the TERM trap ran
    assert kill_all(tmp_path) == 1                   # b was still running
    from nodeagent.runtime import _alive
    wait_for(lambda: not _alive(s2["pid"]), 5, 0.05, "b killed")


def test_cgroup_limits_written(tmp_path):
    from nodeagent import cgroups
    if not cgroups.available():
        pytest.skip("cgroup v1 not writable here")

    async def main():
        rt = Runtime(tmp_path, NODE)
        pod = rt.pod("ns", "p", "uidcg")
        h = await rt.start_container(pod, "c", 0, argv=["sleep", "30"], env={"PATH": BB},
                                     cwd="/", memory_limit=64 * 1024 * 1024, cpu_limit=0.5,
                                     cpu_request=0.25)
        return h
    h = _run(main())
    mem = cgroups.group_path("memory", NODE, "uidcg", "c")
    cpu = cgroups.group_path("cpu", NODE, "uidcg", "c")
    assert int((mem / "memory.limit_in_bytes").read_text()) == 64 * 1024 * 1024
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == 50_000
    assert int((cpu / "cpu.cfs_period_us").read_text()) == 100_000
    assert int((cpu / "cpu.shares").read_text()) == 256
    assert str(h.state["pid"]) in (mem / "cgroup.procs").read_text().split()
    assert kill_all(tmp_path) == 1
    cgroups.remove(NODE, "uidcg")
    assert not mem.exists()


def test_node_conditions_keep_their_transition_time():
    from nodeagent.agent import keep_transitions
    old = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "T0"},
                          {"type": "MemoryPressure", "status": "True",
                           "lastTransitionTime": "T0"}]}
    new = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "T1"},
                          {"type": "MemoryPressure", "status": "False",
                           "lastTransitionTime": "T1"}]}
    out = {c["type"]: c["lastTransitionTime"] for c in keep_transitions(new, old)["conditions"]}
    assert out == {"Ready": "T0", "MemoryPressure": "T1"}


def test_log_rotation_keeps_five_files(tmp_path, monkeypatch):
    from nodeagent import shim
    monkeypatch.setattr(shim, "MAX_LOG", 200)
    path = tmp_path / "0.log"
    w = shim.LogWriter(str(path))
    for i in range(60):
        w.write("stdout", f"line {i}\n".encode())
    w.write("stderr", b"no newline yet")
    w.flush()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["0.log", "0.log.1", "0.log.2", "0.log.3", "0.log.4"]
    assert all(p.stat().st_size <= 200 for p in tmp_path.iterdir())
    lines = []
    for name in ["0.log.4", "0.log.3", "0.log.2", "0.log.1", "0.log"]:  # oldest first
        lines += (tmp_path / name).read_text().splitlines()
    assert lines[-1].split(" ", 3)[1:] == ["stderr", "F", "no newline yet"]
    assert lines[-2].split(" ", 3)[1:] == ["stdout", "F", "line 59"]
    nums = [int(ln.rsplit(" ", 1)[1]) for ln in lines[:-1]]
    assert nums == list(range(nums[0], 60))       # in order, the oldest rotated away
