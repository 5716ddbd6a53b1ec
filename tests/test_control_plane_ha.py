"""Leader election hand-over and node loss, through the real processes."""

from __future__ import annotations


import time

import pytest

from .conftest import ControlPlaneCluster, wait_for

pytestmark = pytest.mark.slow

RS = """apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: %(name)s}
spec:
  replicas: %(n)d
  selector: {matchLabels: {app: %(name)s}}
  template:
    metadata: {labels: {app: %(name)s}}
    spec: {containers: [{name: c, image: nginx}]}
"""


def _holder(c: ControlPlaneCluster, lease: str) -> str:
    out = c.kubectl("get", "lease", lease, "-n", "kube-system", "-o",
                    "jsonpath={.spec.holderIdentity}", check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def _pods(c: ControlPlaneCluster, app: str) -> list[dict]:
    items = c.get_json("pods", "-l", f"app={app}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_controller_manager_and_scheduler_hand_over(tmp_path):
    c = ControlPlaneCluster(tmp_path / "ha", hollow_workers=2, replicas=2)
    try:
        for lease in ("kube-controller-manager", "kube-scheduler"):
            wait_for(lambda: _holder(c, lease), 20, 0.2, f"a {lease} leader")
        cm_leader = _holder(c, "kube-controller-manager")
        sched_leader = _holder(c, "kube-scheduler")
        assert cm_leader in ("controller-manager", "controller-manager-2")
        st = c.cluster.components
        assert "controller-manager-2" in st and "scheduler-2" in st
        # kill both active replicas; the standbys take over within the (scaled) lease duration
        t0 = time.monotonic()
        c.cluster.kill(cm_leader)
        c.cluster.kill(sched_leader)
        wait_for(lambda: _holder(c, "kube-controller-manager") not in ("", cm_leader), 20, 0.1,
                 "the standby controller manager to lead")
        wait_for(lambda: _holder(c, "kube-scheduler") not in ("", sched_leader), 20, 0.1,
                 "the standby scheduler to lead")
        took = time.monotonic() - t0
        # 15 s lease x 0.1 time scale, plus retry periods and process start-up slack
        assert took < 10, f"hand-over took {took:.1f}s"
        # the new leaders act, exactly once: 4 pods, never more, all scheduled
        c.kubectl("apply", "-f", "-", input=RS % {"name": "ha", "n": 4})
        seen_max = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pods = _pods(c, "ha")
            seen_max = max(seen_max, len(pods))
            if len(pods) == 4 and all(p["spec"].get("nodeName") and
                                      p.get("status", {}).get("phase") == "Running"
                                      for p in pods):
                break
            time.sleep(0.2)
        assert seen_max == 4, f"{seen_max} pods existed at once for a 4-replica set"
        assert len(_pods(c, "ha")) == 4
        status = c.kubectl("get", "lease", "-n", "kube-system").stdout
        assert "kube-controller-manager" in status
    finally:
        c.down()


def test_node_loss_pods_replaced_elsewhere(control_plane: ControlPlaneCluster):
    c = control_plane
    c.kubectl("apply", "-f", "-", input=RS % {"name": "nl", "n": 3})
    wait_for(lambda: len([p for p in _pods(c, "nl")
                          if p.get("status", {}).get("phase") == "Running"]) == 3, 40, 0.3,
             "3 Running pods")
    victim = _pods(c, "nl")[0]["spec"]["nodeName"]
    on_victim = {p["metadata"]["name"] for p in _pods(c, "nl")
                 if p["spec"]["nodeName"] == victim}
    c.kubectl("annotate", "node", victim, "hollow.kubelab.io/heartbeat=stopped")
    try:
        # node-monitor-grace-period 40 s (x0.1): Unknown and the unreachable taint
        def unreachable():
            n = c.get_json("node", victim)
            ready = next(x for x in n["status"]["conditions"] if x["type"] == "Ready")
            taints = {t["key"] for t in n.get("spec", {}).get("taints", [])}
            return ready["status"] == "Unknown" and "node.kubernetes.io/unreachable" in taints
        wait_for(unreachable, 30, 0.5, f"{victim} to become Unknown with the unreachable taint")
        # tolerationSeconds 300 (x0.1): evicted and replaced on the other nodes
        def replaced():
            pods = _pods(c, "nl")
            running = [p for p in pods if p.get("status", {}).get("phase") == "Running"
                       and p["spec"].get("nodeName") != victim]
            return len(running) == 3 and not on_victim & {p["metadata"]["name"] for p in pods}
        wait_for(replaced, 90, 0.5, "the lost node's pods to be replaced elsewhere")
    finally:
        c.kubectl("annotate", "node", victim, "hollow.kubelab.io/heartbeat-", check=False)
    wait_for(lambda: victim in c.ready_nodes(), 30, 0.5, f"{victim} to come back Ready")
    n = c.get_json("node", victim)
    assert "node.kubernetes.io/unreachable" not in {t["key"] for t in
                                                    n.get("spec", {}).get("taints", [])}

