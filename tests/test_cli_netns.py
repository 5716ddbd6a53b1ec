"""`kubelab up --network netns`: every machine in its own network namespace on a host bridge
with DESIGN.md's addresses (172.30.0.0/24), driven through the CLI as a user runs it.

Root only. One netns cluster at a time on a host (they all use 172.30.0.0/24, as does the
docker compose network): skipped while another one holds the address plan.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubelab import netns as kn
from kubelab.cluster import Cluster, cluster_id_for, machine_network_users, netns_available

from .conftest import free_port_offset, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not netns_available()[0],
                                 reason="needs root and a working `ip netns`")]

ROOT = os.path.dirname(os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def address_plan_free():
    users = machine_network_users()
    if users:
        pytest.skip(f"172.30.0.0/24 is in use on this host ({', '.join(users)}): another "
                    "netns cluster or the compose network is running")


def kubelab(*args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "kubelab", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"kubelab {' '.join(args)}: {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def run(argv: list[str], timeout: float = 20, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          **kw)


def status(sd: str) -> dict:
    return json.loads(kubelab("status", "--state-dir", sd, "-o", "json").stdout)


def stores(sd: str) -> dict[str, dict]:
    """The store rows of `kubelab status`, computed in this process (polling loops)."""
    from kubelab.cli import _mark_partitions, store_status
    cluster = Cluster(sd)
    rows = asyncio.run(store_status(cluster))
    _mark_partitions(cluster, rows)
    return {r["name"]: r for r in rows}


def net_inode(path: str) -> int:
    return os.stat(path).st_ino


def etcdctl(endpoint: str, *args: str, netns: str | None = None,
            timeout: float = 10) -> subprocess.CompletedProcess:
    argv = ["etcdctl", "--endpoints", endpoint, "--dial-timeout", "1s",
            "--command-timeout", "2s", *args]
    if netns:
        argv = kn.wrap(argv, netns)
    return run(argv, timeout=timeout, env=dict(os.environ, ETCDCTL_API="3"))


def assert_nothing_left(cid: str, pids: list[int]) -> None:
    assert kn.list_machines(cid) == []
    assert cid not in run(["ip", "netns", "list"]).stdout
    links = run(["ip", "-o", "link"]).stdout
    assert kn.bridge_name(cid) not in links
    for name in ("store-1", "store-2", "store-3", "apiserver", "worker-1", "worker-2"):
        assert kn.host_veth(cid, name) not in links
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", pid
    if shutil.which("iptables"):
        assert kn.bridge_name(cid) not in run(["iptables", "-w", "-S", "FORWARD"]).stdout


class Stub:
    """What the chaos helpers need of a Run."""

    def __init__(self):
        self.faults: list[str] = []

    def fault(self, what: str) -> None:
        self.faults.append(what)


@pytest.mark.skipif(shutil.which("etcdctl") is None or shutil.which("kubectl") is None,
                    reason="needs etcdctl and kubectl")
def test_netns_stores_partition_heal_down(tmp_path):
    sd = str(tmp_path / "lab")
    cid = cluster_id_for(Path(sd).resolve())
    pids: list[int] = []
    try:
        t0 = time.monotonic()
        out = kubelab("up", "--state-dir", sd, "--network", "netns", "--stores", "3",
                      "--port-offset", str(free_port_offset())).stdout
        took = time.monotonic() - t0
        assert "cluster ready in" in out and "export KUBECONFIG=" in out, out
        assert "network: netns" in out and f"kl-{cid}" in out
        assert took < 30, f"up took {took:.1f}s"
        st = status(sd)
        assert st["network"] == "netns" and st["bridge"] == kn.bridge_name(cid)
        rows = {r["name"]: r for r in st["stores"]}
        pids = [r["pid"] for r in st["stores"]] + [st["apiserver"]["pid"]] + \
            [r["pid"] for r in st["components"] if r.get("pid")]
        # every member in its own namespace, with its plan address, reachable from the host
        namespaces = {r["netns"] for r in rows.values()}
        assert len(namespaces) == 3
        for i in (1, 2, 3):
            r = rows[f"store-{i}"]
            assert r["address"].startswith(f"http://172.30.0.{10 + i}:")
            assert r["netns"] == kn.netns_name(cid, f"store-{i}")
            assert f" 172.30.0.{10 + i}/24 " in run(["ip", "-n", r["netns"], "-o", "-4", "addr",
                                                     "show", "dev", "eth0"]).stdout
            # the process really runs in that namespace
            assert net_inode(f"/proc/{r['pid']}/ns/net") == net_inode(f"/run/netns/{r['netns']}")
        assert sorted(r["role"] for r in rows.values()) == ["follower", "follower", "leader"]
        assert st["apiserver"]["ready"] and st["apiserver"]["address"].startswith(
            "https://172.30.0.20:")
        # kubectl from the host, through the bridge
        env = dict(os.environ, KUBECONFIG=str(Path(sd) / "kubeconfig"),
                   KUBECACHEDIR=str(tmp_path / "kubecache"))
        kc = run(["kubectl", "get", "namespaces", "-o", "name"], env=env)
        assert kc.returncode == 0 and "namespace/kube-system" in kc.stdout, kc.stderr
        assert "server: https://172.30.0.20:" in (Path(sd) / "kubeconfig").read_text()
        text = kubelab("status", "--state-dir", sd).stdout
        assert "NETNS" in text and kn.netns_name(cid, "store-1") in text
        assert "store quorum: ok (3/3 members up" in text

        # partition the leader with the chaos helper: the majority elects another leader and
        # takes writes; the cut-off member answers nothing and commits nothing
        from kubelab.chaos.store import _heal, _partition
        cluster = Cluster(sd)
        leader = next(n for n, r in rows.items() if r["role"] == "leader")
        others = [n for n in rows if n != leader]
        lns = rows[leader]["netns"]
        stub = Stub()
        _partition(cluster, leader, stub)
        assert kn.is_partitioned(lns) and "network link is down" in stub.faults[0]

        def new_leader():
            s = stores(sd)
            leads = [n for n in others if s[n].get("role") == "leader"]
            return s if leads and s[leader].get("partitioned") else None
        s = wait_for(new_leader, 20, 0.2, "a leader among the connected members")
        assert "role" not in s[leader]  # the host cannot reach it
        majority = ",".join(s[n]["address"] for n in others)
        assert etcdctl(majority, "put", "during-partition", "v1").returncode == 0
        text = kubelab("status", "--state-dir", sd).stdout
        assert "PARTITIONED" in text and f"1 partitioned ({leader})" in text, text
        assert "store quorum: ok (2/3 members up" in text
        # from inside its own namespace the cut-off member is alive but cannot commit
        own = rows[leader]["address"]
        p = etcdctl(own, "put", "lost-write", "x", netns=lns, timeout=15)
        assert p.returncode != 0, p.stdout
        got = etcdctl(own, "get", "during-partition", "--consistency=s", netns=lns)
        assert got.returncode == 0 and "v1" not in got.stdout

        _heal(cluster, leader, stub)
        assert not kn.is_partitioned(lns) and stub.faults[-1] == f"heal {leader}"

        def caught_up():
            g = etcdctl(own, "get", "during-partition", "--consistency=s")
            return g.returncode == 0 and "v1" in g.stdout
        wait_for(caught_up, 20, 0.2, f"{leader} catching up after the heal")
        wait_for(lambda: all(r.get("role") in ("leader", "follower")
                             for r in stores(sd).values()), 20, 0.2, "3/3 again")
        assert etcdctl(majority, "get", "lost-write").stdout.strip() == ""

        # the latency scenario really slows the leader's link (tc netem, or the NFQUEUE delayer
        # where the kernel has no netem): commits wait at least the 50 ms delay
        out = kubelab("chaos", "latency", "--state-dir", sd, "--seed", "1", timeout=120).stdout
        assert "VERDICT: PASS" in out and "delay 50 ms (" in out, out
        degraded = re.search(r"degraded: \d+ writes, \d+ failed, (\d+) ms", out)
        assert degraded and int(degraded.group(1)) >= 50, out
        assert not (os.path.isdir(kn.DELAYER_DIR) and os.listdir(kn.DELAYER_DIR))

        # kill and start a member: it comes back in its namespace with its address
        victim = others[0]
        assert "killed" in kubelab("kill", victim, "--state-dir", sd).stdout
        assert not run(["ip", "netns", "pids", rows[victim]["netns"]]).stdout.strip()
        kubelab("start", victim, "--state-dir", sd)
        wait_for(lambda: stores(sd)[victim].get("role") in ("leader", "follower"), 20, 0.2,
                 f"{victim} back")
        pids += [r["pid"] for r in stores(sd).values()]
    finally:
        kubelab("down", "--state-dir", sd, check=False)
    assert not os.path.exists(sd)
    assert_nothing_left(cid, [p for p in pids if p])
    assert "no cluster" in kubelab("down", "--state-dir", sd).stdout


def test_netns_restart_after_reboot_and_down_after_crash(tmp_path):
    """The machine network is made again by `start` when it is gone (a host reboot), and
    `down` removes namespaces, links and processes even with the state file lost."""
    sd = tmp_path / "lab"
    c = Cluster.create(sd, stores=1, apiserver=False, network="netns",
                       port_offset=free_port_offset())
    cid = c.cluster_id
    pids = []
    try:
        c.ensure_network()
        pid = c.start("store-1")
        pids.append(pid)
        url = c.component("store-1").client_url
        wait_for(lambda: etcdctl(url, "put", "k", "v1").returncode == 0, 20, 0.2, "store")
        # "reboot": every process and the whole network gone, the state dir kept
        c.kill("store-1")
        kn.destroy_network(cid)
        assert kn.list_machines(cid) == []
        pids.append(c.start("store-1"))
        assert kn.netns_exists(c.component("store-1").netns)
        wait_for(lambda: "v1" in etcdctl(url, "get", "k").stdout, 20, 0.2, "store back")
        # a crash: the launcher's state file is lost, the processes keep running
        (sd / "cluster.json").unlink()
    finally:
        Cluster(sd).down()
    assert not sd.exists()
    assert_nothing_left(cid, pids)


def _agent_ready() -> bool:
    p = run([sys.executable, "-m", "nodeagent", "--help"], cwd=ROOT)
    return "--node-name" in p.stdout and "--network" in p.stdout


def kubectl(sd: str, *args: str, check: bool = True, input: str | None = None
            ) -> subprocess.CompletedProcess:
    env = dict(os.environ, KUBECONFIG=str(Path(sd) / "kubeconfig"),
               KUBECACHEDIR=str(Path(sd).parent / "kubecache"))
    p = run(["kubectl", *args], env=env, input=input, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {p.stdout}\n{p.stderr}")
    return p


POD = """apiVersion: v1
kind: Pod
metadata: {name: web-%(n)d}
spec:
  nodeName: worker-%(n)d
  containers: [{name: web, image: nginx}]
"""


@pytest.mark.skipif(shutil.which("kubectl") is None or shutil.which("curl") is None,
                    reason="needs kubectl and curl")
def test_netns_workers_dns_pods_and_kill(tmp_path):
    """Workers in their namespaces: Ready with their plan addresses, the cluster DNS answers
    inside them, pods get 10.244.N.x reachable across workers and from the host, killing a
    worker kills its pods' processes (their namespaces go too), and `down` after a launcher
    crash (state file lost) still leaves no pod, process, namespace or link behind."""
    if not _agent_ready():
        pytest.skip("the node agent does not run workers yet")
    from nodeagent.netns import BridgeDriver
    sd = str(tmp_path / "lab")
    cid = cluster_id_for(Path(sd).resolve())
    pids: list[int] = []
    try:
        out = kubelab("up", "--state-dir", sd, "--network", "netns", "--stores", "1",
                      "--workers", "2", "--time-scale", "0.1",
                      "--port-offset", str(free_port_offset()), timeout=120).stdout
        assert "nodes ready: 2/2" in out and "cluster ready in" in out, out
        assert ("cluster DNS 10.96.0.10 answers kubernetes.default.svc.cluster.local = "
                "10.96.0.1") in out, out
        nodes = json.loads(kubectl(sd, "get", "nodes", "-o", "json").stdout)["items"]
        ips = {n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"]
                                           if a["type"] == "InternalIP") for n in nodes}
        assert ips == {"worker-1": "172.30.0.101", "worker-2": "172.30.0.102"}
        cluster = Cluster(sd)
        pids = [p for p in (cluster.pid(n) for n in cluster.components) if p]
        w1, w2 = (cluster.component(f"worker-{i}").netns for i in (1, 2))
        for n in (1, 2):
            kubectl(sd, "apply", "-f", "-", input=POD % {"n": n})

        def running(n: int):
            pod = json.loads(kubectl(sd, "get", "pod", f"web-{n}", "-o", "json").stdout)
            st = pod.get("status") or {}
            return st.get("podIP") if st.get("phase") == "Running" else None
        pod_ip = {n: wait_for(lambda n=n: running(n), 90, 0.3, f"pod web-{n} Running")
                  for n in (1, 2)}
        assert pod_ip[1].startswith("10.244.1.") and pod_ip[2].startswith("10.244.2.")

        def curl(n: int, ns: str | None) -> bool:
            argv = ["curl", "-s", "-m", "2", f"http://{pod_ip[n]}/"]
            return "nginx" in run(kn.wrap(argv, ns) if ns else argv).stdout.lower()
        wait_for(lambda: curl(1, w2), 30, 0.3, "a pod on worker-1 reachable from worker-2")
        wait_for(lambda: curl(2, w1), 30, 0.3, "a pod on worker-2 reachable from worker-1")
        assert curl(1, None) and curl(2, None)  # and from the host, through the bridge

        def pod_processes(n: int) -> tuple[str, list[int]]:
            prefix = BridgeDriver(f"172.30.0.10{n}", f"10.244.{n}.0/24", "10.96.0.10",
                                  "cluster.local", str(Path(sd) / f"worker-{n}")).netns_prefix
            names = [x for x in run(["ip", "netns", "list"]).stdout.split()
                     if x.startswith(prefix)]
            assert len(names) == 1
            return prefix, [int(p) for p in run(["ip", "netns", "pids", names[0]]).stdout.split()]

        def gone(prefix: str, in_pod: list[int]) -> None:
            assert not [x for x in run(["ip", "netns", "list"]).stdout.split()
                        if x.startswith(prefix)]
            for pid in in_pod:
                assert not Path(f"/proc/{pid}").exists() or Path(
                    f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        prefix1, in_pod1 = pod_processes(1)
        prefix2, in_pod2 = pod_processes(2)
        assert in_pod1 and in_pod2
        pids += in_pod1 + in_pod2

        assert "killed" in kubelab("kill", "worker-1", "--state-dir", sd).stdout
        gone(prefix1, in_pod1)
        assert not run(["ip", "netns", "pids", w1]).stdout.strip()
        assert not curl(1, w2)
        # worker-2 and its pod live on
        assert cluster.pid("worker-2") and curl(2, None)

        # a crashed launcher: the state file is gone; down still takes every pod down
        (Path(sd) / "cluster.json").unlink()
        assert "removed" in kubelab("down", "--state-dir", sd).stdout
        gone(prefix2, in_pod2)
    finally:
        kubelab("down", "--state-dir", sd, check=False)
    assert not os.path.exists(sd)
    assert_nothing_left(cid, pids)
