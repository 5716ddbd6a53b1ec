"""Real network namespaces: the bridge pod network driver and the launcher's machine namespaces.

A mini cluster network per test: a host bridge with two "worker" machine namespaces, a
BridgeDriver driving each worker's namespace from outside (node_netns=), pods on both.
Skipped unless root with `ip`.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kubelab import netns as machines
from nodeagent.netns import BridgeDriver, current_routes, node_hosts_file

from .conftest import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root and iproute2")

PY = sys.executable

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    c.sendall((socket.gethostname() + " " + peer[0] + "\\n").encode()); c.close()
"""

CONNECT_TIME = """
import socket, sys, time
best = 1e9
for _ in range(5):
    t = time.monotonic()
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    best = min(best, (time.monotonic() - t) * 1000)
print(best)
"""

CLIENT = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
        print(c.recv(200).decode().strip()); break
    except OSError as e:
        if time.monotonic() > deadline:
            print("ERR", e); sys.exit(1)
        time.sleep(0.05)
"""


def ns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True).stdout


def links(ns: str | None = None) -> str:
    return subprocess.run(["ip", *(["-n", ns] if ns else []), "-o", "link"],
                          check=False, capture_output=True, text=True).stdout


def run(argv: list[str], timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)


def make_pod(name: str, namespace: str = "default", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def node(name: str, cidr: str, ip: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                     {"type": "Hostname", "address": name}]}}


class Net:
    """Host bridge + two worker machines, each with a BridgeDriver."""

    def __init__(self, tmp: Path):
        self.cid = "t" + uuid.uuid4().hex[:6]
        self.o3 = random.randrange(2, 250)
        self.cidr = f"172.29.{self.o3}.0/24"
        self.host_ip = f"172.29.{self.o3}.1"
        self.ips = {"w1": f"172.29.{self.o3}.101", "w2": f"172.29.{self.o3}.102"}
        self.pod_cidrs = {"w1": "10.244.1.0/24", "w2": "10.244.2.0/24"}
        self.ns: dict[str, str] = {}
        self.drivers: dict[str, BridgeDriver] = {}
        self.procs: list[subprocess.Popen] = []
        self.tmp = tmp
        machines.create_network(self.cid, cidr=self.cidr, host_ip=self.host_ip)
        for w, ip in self.ips.items():
            self.ns[w] = machines.add_machine(self.cid, w, ip, cidr=self.cidr,
                                              host_ip=self.host_ip)
            self.drivers[w] = self.driver(w)

    def driver(self, w: str) -> BridgeDriver:
        return BridgeDriver(self.ips[w], self.pod_cidrs[w], "10.96.0.10", "cluster.local",
                            str(self.tmp / w), node_netns=self.ns[w])

    def nodes(self) -> list[dict]:
        return [node(w, self.pod_cidrs[w], self.ips[w]) for w in self.ips]

    def popen(self, argv: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        for d in self.drivers.values():
            d.cleanup_all()
        machines.destroy_network(self.cid)


@pytest.fixture
def net(tmp_path):
    n = Net(tmp_path)
    try:
        yield n
    finally:
        n.close()
    assert n.cid not in ns_list()
    assert machines.bridge_name(n.cid) not in links()
    assert machines.bridge_name(n.cid) not in run(["iptables", "-S", "FORWARD"]).stdout


def test_pod_to_pod_across_workers(net):
    d1, d2 = net.drivers["w1"], net.drivers["w2"]
    a, b = make_pod("pod-a"), make_pod("pod-b")
    sa, sb = d1.setup(a), d2.setup(b)
    assert sa.ip.startswith("10.244.1.") and sb.ip.startswith("10.244.2.")
    assert sa.ip != "10.244.1.1" and sa.bind_ip == "0.0.0.0"
    assert sa.netns_path and os.path.exists(sa.netns_path)
    for w, d in net.drivers.items():
        d.sync_routes(net.nodes(), w)
    srv = net.popen(d1.wrap([PY, "-c", SERVER, "8080"], sa, []))
    assert srv.stdout.readline().strip() == "listening"
    out = run(d2.wrap([PY, "-c", CLIENT, sa.ip, "8080", "5"], sb, []))
    assert out.returncode == 0, out.stdout + out.stderr
    # the server saw the client's own pod IP (no NAT between pods) and has its own hostname
    assert out.stdout.split() == ["pod-a", sb.ip]
    # same worker, other pod: through the bridge
    c = make_pod("pod-c")
    sc = d1.setup(c)
    assert sc.ip not in (sa.ip, sb.ip)
    out = run(d1.wrap([PY, "-c", CLIENT, sa.ip, "8080", "5"], sc, []))
    assert out.stdout.split() == ["pod-a", sc.ip]
    # pod → the other worker's node IP: leaves the pod range, so masqueraded behind node w1
    srv2 = net.popen(machines.wrap([PY, "-c", SERVER, "9090"], net.ns["w2"]))
    assert srv2.stdout.readline().strip() == "listening"
    out = run(d1.wrap([PY, "-c", CLIENT, net.ips["w2"], "9090", "5"], sa, []))
    assert out.returncode == 0 and out.stdout.split()[1] == net.ips["w1"], out.stdout + out.stderr


def test_resolv_conf_hosts_hostname(net, tmp_path):
    d = net.drivers["w1"]
    d.host_resolv_conf = str(tmp_path / "host-resolv.conf")
    Path(d.host_resolv_conf).write_text("nameserver 192.0.2.53\nsearch corp.example\n"
                                        "options edns0\n")
    pod = make_pod("web-0", "team", hostname="web-0", subdomain="nginx",
                   hostAliases=[{"ip": "10.1.2.3", "hostnames": ["foo.remote", "bar.remote"]}])
    sb = d.setup(pod)
    script = "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; hostname"
    out = run(d.wrap(["sh", "-c", script], sb, []))
    assert out.returncode == 0, out.stderr
    resolv, hosts, hostname = out.stdout.split("---\n")
    assert resolv.splitlines() == [
        "nameserver 10.96.0.10",
        "search team.svc.cluster.local svc.cluster.local cluster.local corp.example",
        "options ndots:5"]
    assert hosts.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert f"{sb.ip}\tweb-0.nginx.team.svc.cluster.local\tweb-0\n" in hosts
    assert hosts.endswith("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.remote\tbar.remote\n")
    assert hostname.strip() == "web-0"
    # nothing leaked into the node's mount or UTS namespace
    assert "Kubernetes-managed" not in Path("/etc/hosts").read_text()
    assert run(["hostname"]).stdout.strip() != "web-0"

    # dnsPolicy None with dnsConfig; Default takes the node's file
    none = make_pod("custom", dnsPolicy="None",
                    dnsConfig={"nameservers": ["1.1.1.1"], "searches": ["a.example"],
                               "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]})
    out = run(d.wrap(["cat", "/etc/resolv.conf"], d.setup(none), []))
    lines = out.stdout.splitlines()
    assert "nameserver 1.1.1.1" in lines and "search a.example" in lines
    assert "options ndots:2 edns0" in lines and len(lines) == 3
    dflt = make_pod("dflt", dnsPolicy="Default")
    out = run(d.wrap(["cat", "/etc/resolv.conf"], d.setup(dflt), []))
    assert "nameserver 192.0.2.53" in out.stdout and "search corp.example" in out.stdout

    # a pod name longer than 63 characters is cut for the hostname
    long = make_pod("x" * 70)
    out = run(d.wrap(["hostname"], d.setup(long), []))
    assert out.stdout.strip() == "x" * 63


def test_host_network_pod(net, tmp_path):
    d = net.drivers["w1"]
    d.host_hosts = str(tmp_path / "node-hosts")
    Path(d.host_hosts).write_text("127.0.0.1\tlocalhost\n172.29.0.9\tsomething\n")
    pod = make_pod("hostnet", hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    sb = d.setup(pod)
    assert sb.ip == net.ips["w1"]
    script = "ip -o addr show dev eth0; cat /etc/hosts; echo ---; cat /etc/resolv.conf"
    out = run(d.wrap(["sh", "-c", script], sb, []))
    assert net.ips["w1"] + "/" in out.stdout, out.stdout + out.stderr
    hosts, resolv = out.stdout.split("---\n")
    assert "# Kubernetes-managed hosts file (host network).\n127.0.0.1\tlocalhost\n" in hosts
    assert "nameserver 10.96.0.10" in resolv
    assert not [n for n in ns_list().split() if n.startswith(d.netns_prefix)]
    d.teardown(pod["metadata"]["uid"])


def test_volume_mounts(net, tmp_path):
    d = net.drivers["w1"]
    sb = d.setup(make_pod("vols"))
    vol = tmp_path / "vol"
    (vol / "conf").mkdir(parents=True)
    (vol / "conf" / "app.conf").write_text("key=value\n")
    (vol / "index.html").write_text("hello\n")
    target = tmp_path / "ctr"
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "host-only").write_text("x")
    mounts = [
        (str(vol), str(target / "data"), False),                      # created mount point
        (str(vol), str(existing), True),                              # hides the host content
        {"hostPath": str(vol), "subPath": "conf/app.conf",            # a file by subPath
         "mountPath": str(target / "etc" / "app.conf"), "readOnly": True},
        {"hostPath": str(vol), "subPath": "made-by-subpath",          # subPath dir is created
         "mountPath": str(target / "sub"), "readOnly": False},
    ]
    script = (f"cat {target}/data/index.html; cat {target}/etc/app.conf; ls {existing}; "
              f"echo w > {target}/data/written && echo rw-ok; "
              f"(echo w > {existing}/nope) 2>&1 | grep -qi 'read-only' && echo ro-ok; "
              f"echo s > {target}/sub/f && echo sub-ok; pwd")
    out = run(d.wrap(["sh", "-c", script], sb, mounts, workdir=str(target / "data")))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["hello", "key=value", "conf", "index.html",
                                       "made-by-subpath", "rw-ok", "ro-ok", "sub-ok", str(target / "data")]
    assert (vol / "written").read_text() == "w\n"
    assert (vol / "made-by-subpath" / "f").read_text() == "s\n"
    # the node's view is untouched: mount points exist but nothing is mounted on them
    assert sorted(os.listdir(existing)) == ["host-only"]
    assert os.listdir(target / "data") == []
    assert (target / "etc" / "app.conf").read_text() == ""
    mounts_now = Path("/proc/self/mountinfo").read_text()
    assert str(target) not in mounts_now and str(existing) not in mounts_now


def test_teardown_and_restart_keep_nothing_or_everything(net):
    d = net.drivers["w1"]
    pod = make_pod("keep")
    uid = pod["metadata"]["uid"]
    sb = d.setup(pod)
    ns_name = d.netns_name(uid)
    assert ns_name in ns_list() and d.veth_name(uid) in links(net.ns["w1"])
    assert d.known_pods() == [uid]
    # an agent restart: a new driver instance finds the same sandbox and IP
    d2 = net.driver("w1")
    again = d2.setup(pod)
    assert again.ip == sb.ip and again.netns_path == sb.netns_path
    other = d2.setup(make_pod("next"))
    assert other.ip != sb.ip
    d2.teardown(uid)
    d2.teardown(uid)  # idempotent
    assert ns_name not in ns_list()
    assert d.veth_name(uid) not in links(net.ns["w1"])
    assert not (d.root / "sandboxes" / uid).exists()
    assert sb.ip not in os.listdir(d.ipam_dir)
    # cleanup_all removes the rest, the bridge included
    d2.cleanup_all()
    assert not [n for n in ns_list().split() if n.startswith(d.netns_prefix)]
    node_links = links(net.ns["w1"])
    assert d.veth_prefix not in node_links and "cbr0" not in node_links
    assert d2.known_pods() == []


def test_sync_routes(net):
    d = net.drivers["w1"]
    d.ensure_node()
    extra = node("w3", "10.244.3.0/24", f"172.29.{net.o3}.103")
    d.sync_routes(net.nodes() + [extra], "w1")

    def routes():
        out = run(["ip", "-n", net.ns["w1"], "-j", "route", "show", "proto", "190"]).stdout
        return current_routes(out)
    assert routes() == {"10.244.2.0/24": net.ips["w2"], "10.244.3.0/24": extra["status"][
        "addresses"][0]["address"]}
    d.sync_routes(net.nodes(), "w1")  # w3 is gone
    assert routes() == {"10.244.2.0/24": net.ips["w2"]}
    d.sync_routes([], "w1")
    assert routes() == {}


def test_machine_partition_heal_and_delay(net):
    w1, w2 = net.ns["w1"], net.ns["w2"]
    assert machines.list_machines(net.cid) == sorted([w1, w2])
    srv = net.popen(machines.wrap([PY, "-c", SERVER, "7000"], w2))
    assert srv.stdout.readline().strip() == "listening"

    def reach(ns: str | None, timeout: float = 2) -> bool:
        argv = [PY, "-c", CLIENT, net.ips["w2"], "7000", str(timeout)]
        return run(machines.wrap(argv, ns) if ns else argv).returncode == 0
    assert reach(w1)
    assert reach(None)  # the host reaches machines through its bridge address
    machines.partition(w2)
    assert machines.is_partitioned(w2)
    assert not reach(w1, 0.5)
    machines.heal(w2)
    assert not machines.is_partitioned(w2)
    wait_for(lambda: reach(w1), 10, what="w2 reachable after heal")

    def connect_ms() -> float:
        """Best TCP connect time from w1 to w2 over five tries (w2's SYN-ACK carries w2's
        delay)."""
        argv = [PY, "-c", CONNECT_TIME, net.ips["w2"], "7000"]
        return float(run(machines.wrap(argv, w1)).stdout)
    assert connect_ms() < 20
    how = machines.add_delay(w2, 50, 0)
    if how == "netem":
        out = run(["ip", "netns", "exec", w2, "tc", "qdisc", "show", "dev", "eth0"]).stdout
        assert "netem" in out and "delay 50ms" in out
    else:
        assert how == "nfqueue"
        assert "NFQUEUE" in run(["ip", "netns", "exec", w2, "iptables", "-S", "OUTPUT"]).stdout
    assert 50 <= connect_ms() < 500
    machines.add_delay(w2, 10, 20)
    rules = run(["ip", "netns", "exec", w2, "iptables", "-S", "INPUT"]).stdout
    qdisc = run(["ip", "netns", "exec", w2, "tc", "qdisc", "show", "dev", "eth0"]).stdout
    assert ("statistic" in rules) or ("loss 20%" in qdisc)
    machines.clear_delay(w2)
    rules = run(["ip", "netns", "exec", w2, "iptables", "-S"]).stdout
    qdisc = run(["ip", "netns", "exec", w2, "tc", "qdisc", "show", "dev", "eth0"]).stdout
    assert "NFQUEUE" not in rules
    assert "statistic" not in rules and "netem" not in qdisc
    assert reach(w1)
    assert connect_ms() < 20
    assert not os.path.exists(os.path.join(machines.DELAYER_DIR, w2))

    # idempotent add and destroy
    assert machines.add_machine(net.cid, "w1", net.ips["w1"], cidr=net.cidr,
                                host_ip=net.host_ip) == w1
    machines.remove_machine(net.cid, "w1")
    assert w1 not in ns_list()


def test_destroy_network_after_crash(tmp_path):
    cid = "t" + uuid.uuid4().hex[:6]
    o3 = random.randrange(2, 250)
    cidr = f"172.28.{o3}.0/24"
    try:
        machines.create_network(cid, cidr=cidr, host_ip=f"172.28.{o3}.1")
        ns = machines.add_machine(cid, "store-1", f"172.28.{o3}.11", cidr=cidr,
                                  host_ip=f"172.28.{o3}.1")
        # a process left running inside, as after a launcher crash
        p = subprocess.Popen(machines.wrap(["sleep", "60"], ns))
        wait_for(lambda: run(["ip", "netns", "pids", ns]).stdout.strip(), 5,
                 what="sleep inside the netns")
    finally:
        machines.destroy_network(cid)
        machines.destroy_network(cid)  # idempotent
    assert p.wait(5) != 0
    assert machines.list_machines(cid) == []
    assert machines.bridge_name(cid) not in links()
    assert machines.host_veth(cid, "store-1") not in links()


def test_names_fit_ifnamsiz():
    long_id = "/home/someone/.kubelab/a-very-long-cluster-name"
    assert len(machines.bridge_name(long_id)) <= 15
    assert len(machines.host_veth(long_id, "worker-12")) <= 15
    d = BridgeDriver("172.30.0.101", "10.244.1.0/24", "10.96.0.10", "cluster.local", "/x/y")
    uid = str(uuid.uuid4())
    assert len(d.veth_name(uid)) == 15
    other = BridgeDriver("172.30.0.102", "10.244.2.0/24", "10.96.0.10", "cluster.local", "/x/z")
    assert d.netns_name(uid) != other.netns_name(uid)


def test_wait_exited_outlasts_a_slow_exit():
    """A replacement delayer binds the same queue, which the kernel refuses while the old one
    still holds it: clearing a delay must return only once the old delayer is gone."""
    slow = subprocess.Popen([sys.executable, "-c",
                             "import signal, sys, time\n"
                             "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.5), sys.exit()))\n"
                             "print('ready', flush=True)\n"
                             "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert slow.stdout.readline() == "ready\n"
        slow.terminate()
        machines._wait_exited(slow.pid)
        assert machines._exited(slow.pid)
        assert slow.poll() is not None
    finally:
        slow.kill()
        slow.wait()


def test_pure_helpers(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n10.0.0.5\tnode-a")
    pod = make_pod("p", hostNetwork=True, hostAliases=[{"ip": "1.2.3.4", "hostnames": ["x"]}])
    assert node_hosts_file(pod, str(hosts)) == (
        "# Kubernetes-managed hosts file (host network).\n127.0.0.1\tlocalhost\n"
        "10.0.0.5\tnode-a\n\n# Entries added by HostAliases.\n1.2.3.4\tx\n")
    js = ('[{"dst":"10.244.2.0/24","gateway":"172.30.0.102","dev":"eth0","protocol":"190"},'
          '{"dst":"10.9.9.9","gateway":"172.30.0.1"},{"dst":"default","dev":"eth0"}]')
    assert current_routes(js) == {"10.244.2.0/24": "172.30.0.102", "10.9.9.9/32": "172.30.0.1"}
    assert current_routes("") == {}


AGENT = """
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from nodeagent.netns import BridgeDriver
a = json.loads(sys.argv[2])
d = BridgeDriver(a["node_ip"], a["cidr"], "10.96.0.10", "cluster.local", a["root"])
if a["op"] == "teardown":
    d.teardown(a["pod"]["metadata"]["uid"]); print("{}"); sys.exit()
sb = d.setup(a["pod"])
out = subprocess.run(d.wrap(["sh", "-c", "hostname; ip -o -4 addr show dev eth0"], sb, []),
                     capture_output=True, text=True)
print(json.dumps({"ip": sb.ip, "out": out.stdout + out.stderr,
                  "node": subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "cbr0"],
                                         capture_output=True, text=True).stdout}))
"""


def test_driver_inside_worker_namespace(net):
    """Production shape: the agent runs inside the worker's netns (kubelab.netns.wrap) and
    drives its own namespace; a restarted agent (a new process) finds the pod's netns."""
    import json
    root = str(Path(__file__).resolve().parent.parent)
    pod = make_pod("inside")
    args = {"node_ip": net.ips["w1"], "cidr": "10.244.5.0/24", "root": str(net.tmp / "in"),
            "pod": pod, "op": "setup"}

    def agent(op: str) -> dict:
        out = run(machines.wrap([PY, "-c", AGENT, root, json.dumps({**args, "op": op})],
                                net.ns["w1"]))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)
    first = agent("setup")
    assert first["ip"] == "10.244.5.2"
    assert first["out"].split()[0] == "inside" and " 10.244.5.2/24 " in first["out"]
    assert " 10.244.5.1/24 " in first["node"]
    # nothing of this in the host's own namespace
    assert "cbr0" not in links()
    second = agent("setup")
    assert second["ip"] == first["ip"] and second["out"] == first["out"]
    # the launcher's kill_all runs cleanup_all from the host namespace: pod sandboxes go,
    # the host's networking is not touched
    host_side = BridgeDriver(net.ips["w1"], "10.244.5.0/24", "10.96.0.10", "cluster.local",
                             str(net.tmp / "in"))
    assert not host_side.owns_bridge()
    name = host_side.netns_name(pod["metadata"]["uid"])
    assert name in ns_list()
    host_side.cleanup_all()
    assert name not in ns_list() and host_side.known_pods() == []
    assert host_side.veth_name(pod["metadata"]["uid"]) not in links(net.ns["w1"])
    assert " 10.244.5.1/24 " in run(["ip", "-n", net.ns["w1"], "-o", "addr"]).stdout


def test_container_process_and_exec_join(net, tmp_path):
    """wrap() execs in place (the pid the runtime records is the container's), and an exec
    joining that pid's namespaces (what the runtime does for kubectl exec) sees the same
    network, mounts and hostname."""
    d = net.drivers["w1"]
    sb = d.setup(make_pod("execme"))
    vol = tmp_path / "v"
    vol.mkdir()
    (vol / "f").write_text("in-volume\n")
    mnt = tmp_path / "mnt"
    p = net.popen(d.wrap(["sleep", "30"], sb, [(str(vol), str(mnt), True)]))
    wait_for(lambda: Path(f"/proc/{p.pid}/comm").read_text().strip() == "sleep", 5,
             what="the container process exec'd in place")
    out = run(["nsenter", f"--target={p.pid}", "--net", "--mount", "--uts", "--",
               "sh", "-c", f"hostname; cat {mnt}/f; ip -o -4 addr show dev eth0"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["execme", "in-volume"] and f" {sb.ip}/24 " in lines[2]
    p.terminate()
    assert p.wait(5) == -15  # SIGTERM reached the container process itself
