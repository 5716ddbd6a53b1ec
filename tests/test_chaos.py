"""The chaos scenarios as tests: each runs through `kubelab chaos <name>` against a real cluster
and must end with a PASS verdict and exit 0; its timeline is recorded and replayable by seed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, ControlPlaneCluster


def chaos(state_dir, name: str, seed: int, record) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubelab", "chaos", name, "--state-dir",
                           str(state_dir), "--seed", str(seed), "--record", str(record)],
                          cwd=ROOT, text=True, capture_output=True, timeout=240)


def assert_pass(out: subprocess.CompletedProcess, record, name: str, seed: int) -> dict:
    print(out.stdout[-4000:], out.stderr[-2000:])
    assert out.returncode == 0
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith(f"VERDICT: PASS — chaos {name} (seed {seed})")
    data = json.loads(record.read_text())
    assert data["scenario"] == name and data["seed"] == seed and data["passed"] is True
    assert any(e["kind"] == "fault" for e in data["timeline"])
    return data


def test_quorum_scenario(store_cluster, tmp_path):
    rec = tmp_path / "quorum.json"
    out = chaos(store_cluster.cluster.state_dir, "quorum", 11, rec)
    data = assert_pass(out, rec, "quorum", 11)
    assert "leader election" in data["metrics"]
    assert "write refused after" in out.stdout and "quorum lost" in out.stdout


def test_store_linearizability_scenario(store_cluster, tmp_path):
    rec = tmp_path / "lin.json"
    out = chaos(store_cluster.cluster.state_dir, "store-linearizability", 5, rec)
    data = assert_pass(out, rec, "store-linearizability", 5)
    assert data["metrics"]["completed"] >= 50
    # the same seed replays the same fault plan
    rec2 = tmp_path / "lin2.json"
    out2 = chaos(store_cluster.cluster.state_dir, "store-linearizability", 5, rec2)
    data2 = assert_pass(out2, rec2, "store-linearizability", 5)

    def plan(d):
        return [e["what"].split(" (")[0] for e in d["timeline"] if e["kind"] == "fault"]
    assert plan(data)[:2] == plan(data2)[:2]


def test_unknown_scenario_is_a_clear_error(store_cluster, tmp_path):
    out = chaos(store_cluster.cluster.state_dir, "nope", 1, tmp_path / "x.json")
    assert out.returncode != 0
    assert "no chaos scenario 'nope'" in out.stderr


@pytest.fixture
def ha_cluster(tmp_path):
    c = ControlPlaneCluster(tmp_path / "cluster", replicas=2)
    try:
        yield c
    finally:
        c.down()


def test_control_plane_scenario(ha_cluster, tmp_path):
    rec = tmp_path / "cp.json"
    out = chaos(ha_cluster.cluster.state_dir, "control-plane", 3, rec)
    data = assert_pass(out, rec, "control-plane", 3)
    assert "controller-manager takeover" in data["metrics"]
    assert "scheduler takeover" in data["metrics"]


# ------------------------------------------------------------------ worker scenarios (loopback)
def test_pod_chaos_scenario_loses_no_request(workers, tmp_path):
    rec = tmp_path / "pods.json"
    out = chaos(workers.cluster.state_dir, "pod-chaos", 4, rec)
    data = assert_pass(out, rec, "pod-chaos", 4)
    assert data["metrics"]["Service traffic: failed"] == 0
    assert data["metrics"]["Service traffic: requests"] > 20


def test_partition_scenario(workers, tmp_path):
    rec = tmp_path / "part.json"
    out = chaos(workers.cluster.state_dir, "partition", 5, rec)
    assert_pass(out, rec, "partition", 5)
    assert "pods keep running while it is cut off" in out.stdout


def test_worker_loss_scenario(workers, tmp_path):
    rec = tmp_path / "loss.json"
    out = chaos(workers.cluster.state_dir, "worker-loss", 4, rec)
    data = assert_pass(out, rec, "worker-loss", 4)
    assert "worker loss → pods Ready elsewhere" in data["metrics"]


def test_latency_needs_network_namespaces(workers, tmp_path):
    out = chaos(workers.cluster.state_dir, "latency", 1, tmp_path / "lat.json")
    assert out.returncode == 2
    assert out.stdout.strip().splitlines()[-1].startswith("VERDICT: NOT RUN — chaos latency")
