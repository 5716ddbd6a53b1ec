"""The kubelab CLI as a user runs it: up, status, kill/start, logs, down."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import free_port_offset, wait_for

pytestmark = pytest.mark.slow


def kubelab(*args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "kubelab", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=os.path.dirname(os.path.dirname(__file__)))
    if check and p.returncode != 0:
        raise AssertionError(f"kubelab {' '.join(args)}: {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def test_up_status_kill_start_down(tmp_path):
    sd = str(tmp_path / "lab")
    off = str(free_port_offset())
    try:
        out = kubelab("up", "--state-dir", sd, "--port-offset", off, "--network", "loopback").stdout
        assert "cluster ready in" in out and "export KUBECONFIG=" in out
        assert os.path.exists(os.path.join(sd, "kubeconfig"))
        st = json.loads(kubelab("status", "--state-dir", sd, "-o", "json").stdout)
        roles = sorted(r.get("role") for r in st["stores"])
        assert roles == ["follower", "follower", "leader"]
        assert st["apiserver"]["ready"] is True
        leader = next(r["name"] for r in st["stores"] if r["role"] == "leader")
        assert "killed" in kubelab("kill", leader, "--state-dir", sd).stdout

        def new_leader():
            s = json.loads(kubelab("status", "--state-dir", sd, "-o", "json").stdout)
            rows = {r["name"]: r for r in s["stores"]}
            leaders = [n for n, r in rows.items() if r.get("role") == "leader"]
            return rows[leader]["state"] == "down" and leaders and leaders[0] != leader
        wait_for(new_leader, 20, 0.3, "a new store leader")
        others = [n for n in ("store-1", "store-2", "store-3") if n != leader]
        kubelab("kill", others[0], "--state-dir", sd)
        text = kubelab("status", "--state-dir", sd).stdout
        assert "WARNING: store quorum lost (1/3 members up, 2 needed)" in text
        kubelab("start", leader, "--state-dir", sd)
        kubelab("start", others[0], "--state-dir", sd)
        wait_for(lambda: "store quorum: ok (3/3" in kubelab("status", "--state-dir", sd).stdout,
                 30, 0.3, "quorum back")
        assert "serving clients" in kubelab("logs", "store-1", "--state-dir", sd).stdout
        p = kubelab("kill", "store-9", "--state-dir", sd, check=False)
        assert p.returncode == 1 and "no component 'store-9'" in p.stderr
    finally:
        kubelab("down", "--state-dir", sd, check=False)
    assert not os.path.exists(sd)
    # down is idempotent
    assert "no cluster" in kubelab("down", "--state-dir", sd).stdout


def test_two_apiservers_share_the_cluster_and_components_fail_over(tmp_path):
    """`kubelab up --apiservers 2`: both serve, both are endpoints of the `kubernetes` Service
    (lease reconciler), and with the first one stopped the controllers, the scheduler and the
    node agent carry on through the second."""
    sd = str(tmp_path / "ha")
    off = str(free_port_offset())

    def kubectl(server: str, *args: str) -> str:
        p = subprocess.run(["kubectl", "--kubeconfig", os.path.join(sd, "kubeconfig"),
                            "--server", server, *args],
                           capture_output=True, text=True, timeout=30, check=False)
        assert p.returncode == 0, p.stderr
        return p.stdout

    try:
        kubelab("up", "--state-dir", sd, "--port-offset", off, "--network", "loopback",
                "--apiservers", "2", "--workers", "1")
        st = json.loads(kubelab("status", "--state-dir", sd, "-o", "json").stdout)
        apis = {a["name"]: a for a in st["apiservers"]}
        assert sorted(apis) == ["apiserver", "apiserver-2"]
        assert all(a["ready"] for a in apis.values())
        first, second = apis["apiserver"]["address"], apis["apiserver-2"]["address"]
        assert first != second

        def endpoint_ips(server: str) -> list[str]:
            ep = json.loads(kubectl(server, "get", "endpoints", "kubernetes", "-o", "json"))
            return [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses", [])]
        ips = [u.split("//")[1].rsplit(":", 1)[0] for u in (first, second)]
        # the two reconcile on their own; each rewrites the endpoints every 10 s at most
        wait_for(lambda: endpoint_ips(second) == sorted(ips), 25, 0.2,
                 "both API servers in the kubernetes endpoints")
        # both serve the same cluster with one CA: the kubeconfig's CA verifies the second
        assert "worker-1" in kubectl(second, "get", "nodes")

        kubelab("stop", "apiserver", "--state-dir", sd)
        # a graceful stop takes the API server out of the endpoints at once, not after its
        # lease (15 s) runs out
        wait_for(lambda: endpoint_ips(second) == [ips[1]], 5, 0.2,
                 "the stopped API server out of the endpoints")
        kubectl(second, "create", "deployment", "web", "--image=nginx", "--replicas=2")

        def running() -> bool:
            pods = json.loads(kubectl(second, "get", "pods", "-l", "app=web", "-o", "json"))
            return len(pods["items"]) == 2 and all(
                p["status"].get("phase") == "Running" for p in pods["items"])
        wait_for(running, 60, 0.5, "web's pods Running through the second API server")
    finally:
        kubelab("down", "--state-dir", sd, check=False)
