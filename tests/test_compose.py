"""The cluster as Docker containers (docker-compose.yml), driven from the host with the real
kubectl and etcdctl: apply an app, reach it through two workers' NodePorts, kill the store leader
(writes go on), stop a second store (writes fail with the clear store-unavailable error), bring
both back (no acknowledged write lost), survive `docker-compose stop`/`start`, and leave nothing
behind after `down -v`.

Needs a Docker engine and docker-compose; .ci/run provides them and sets KUBELAB_DOCKER_TESTS=1.
The images build from kubelab/base:bookworm (scripts/build-base-image.sh) since no registry is
reachable here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.skipif(
    os.environ.get("KUBELAB_DOCKER_TESTS") != "1" or not shutil.which("docker-compose"),
    reason="set KUBELAB_DOCKER_TESTS=1 with a Docker engine and docker-compose (.ci/run does)")

PROJECT = "kubelab-ci"
STORES = {f"store-{i}": f"172.30.0.{10 + i}:2379" for i in (1, 2, 3)}


def compose(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, BASE_IMAGE=os.environ.get("BASE_IMAGE", "kubelab/base:bookworm"),
               COMPOSE_PROJECT_NAME=PROJECT, KUBELAB_TIME_SCALE="0.1")
    out = subprocess.run(["docker-compose", *args], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"docker-compose {' '.join(args)} failed ({out.returncode}):\n"
                             f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


class Compose:
    def __init__(self):
        self.kubeconfig = str(ROOT / "kubeconfig" / "config")

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, "--request-timeout",
                               "10s", *args], text=True, capture_output=True, check=check,
                              input=input, timeout=timeout)

    def ready_nodes(self) -> int:
        out = self.kubectl("get", "nodes", "-o", "json", check=False)
        if out.returncode:
            return 0
        return sum(1 for n in json.loads(out.stdout)["items"]
                   if any(c["type"] == "Ready" and c["status"] == "True"
                          for c in n["status"].get("conditions", [])))

    def store_leader(self) -> str:
        out = subprocess.run(["etcdctl", "--endpoints", ",".join(STORES.values()),
                              "endpoint", "status", "-w", "json"], text=True,
                             capture_output=True, env=dict(os.environ, ETCDCTL_API="3"),
                             timeout=15)
        for row in json.loads(out.stdout or "[]"):
            st = row["Status"]
            if st["header"]["member_id"] == st["leader"]:
                return next(n for n, ep in STORES.items() if ep == row["Endpoint"])
        raise AssertionError(f"no store leader: {out.stdout} {out.stderr}")


@pytest.fixture(scope="module")
def cluster():
    build = subprocess.run(["bash", str(ROOT / "scripts" / "build-base-image.sh")], text=True,
                           capture_output=True, timeout=900)
    assert build.returncode == 0, build.stdout + build.stderr
    compose("down", "-v", "--remove-orphans", check=False)
    (ROOT / "kubeconfig" / "config").unlink(missing_ok=True)
    compose("build")
    compose("up", "-d")
    c = Compose()
    try:
        wait_for(lambda: Path(c.kubeconfig).exists() and c.ready_nodes() == 3, 180, 1.0,
                 "3 Ready workers in the compose cluster")
        yield c
    finally:
        logs = compose("logs", "--no-color", "--tail", "40", check=False).stdout
        compose("-f", "docker-compose.yml", "-f", "docker-compose.workers.yml", "down", "-v",
                "--remove-orphans", check=False)
        print(logs[-20000:])


APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - name: hello
        image: hashicorp/http-echo
        args: ["-text=hello from kubelab", "-listen=:8080"]
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  type: NodePort
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
"""


def curl(url: str) -> str:
    out = subprocess.run(["curl", "-sS", "--max-time", "3", url], text=True,
                         capture_output=True)
    return out.stdout if out.returncode == 0 else ""


def test_app_through_two_workers_and_store_quorum(cluster):
    c = cluster
    c.kubectl("apply", "-f", "-", input=APP)
    for worker_ip in ("172.30.0.101", "172.30.0.102"):
        wait_for(lambda ip=worker_ip: "hello from kubelab" in curl(f"http://{ip}:30080/"), 90, 0.5,
                 f"the app through NodePort 30080 on {worker_ip}")

    # from inside a pod: the Service by name through the cluster DNS and the search list
    c.kubectl("run", "client", "--image=busybox", "--restart=Never", "--", "sleep", "3600")
    wait_for(lambda: c.kubectl("exec", "client", "--", "wget", "-qO-",
                               "http://hello", check=False).stdout.strip() ==
             "hello from kubelab", 60, 0.5, "wget http://hello from a pod")
    resolv = c.kubectl("exec", "client", "--", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.96.0.10" in resolv and "svc.cluster.local" in resolv

    acked = []

    def write(i: int) -> subprocess.CompletedProcess:
        out = c.kubectl("create", "configmap", f"w-{i}", f"--from-literal=i={i}", check=False)
        if out.returncode == 0:
            acked.append(f"w-{i}")
        return out

    assert write(0).returncode == 0
    leader = c.store_leader()
    compose("kill", leader)
    t0 = time.monotonic()
    wait_for(lambda: write(1 + len(acked)).returncode == 0, 30, 0.2,
             "a write after the store leader was killed")
    print(f"first write after killing {leader}: {time.monotonic() - t0:.2f}s")
    second = next(n for n in STORES if n != leader)
    compose("stop", second)
    out = write(1000)
    assert out.returncode != 0
    assert "unavailable" in out.stderr, out.stderr
    compose("start", leader, second)
    wait_for(lambda: write(2000 + len(acked)).returncode == 0, 60, 0.5,
             "writes after both store members are back")
    names = {i["metadata"]["name"] for i in json.loads(
        c.kubectl("get", "configmaps", "-o", "json").stdout)["items"]}
    assert set(acked) <= names, f"lost acknowledged writes: {set(acked) - names}"


def test_stop_start_keeps_the_cluster(cluster):
    c = cluster
    c.kubectl("create", "configmap", "survivor", "--from-literal=k=v")
    compose("stop")
    compose("start")
    wait_for(lambda: c.ready_nodes() == 3, 120, 1.0, "3 Ready workers after stop/start")
    out = c.kubectl("get", "configmap", "survivor", "-o", "jsonpath={.data.k}")
    assert out.stdout == "v"
    wait_for(lambda: "hello from kubelab" in curl("http://172.30.0.103:30080/"), 90, 0.5,
             "the app through a third worker after the restart")


def test_more_workers_join_with_their_own_pod_range(cluster):
    c = cluster
    compose("-f", "docker-compose.yml", "-f", "docker-compose.workers.yml", "up", "-d",
            "worker-4")
    wait_for(lambda: c.ready_nodes() == 4, 120, 1.0, "worker-4 joining Ready")
    node = json.loads(c.kubectl("get", "node", "worker-4", "-o", "json").stdout)
    assert node["spec"]["podCIDR"] == "10.244.4.0/24"
    assert {"type": "InternalIP", "address": "172.30.0.104"} in node["status"]["addresses"]
    # its NodePort answers too, with pods elsewhere
    wait_for(lambda: "hello from kubelab" in curl("http://172.30.0.104:30080/"), 60, 0.5,
             "the app through worker-4's NodePort")
    compose("-f", "docker-compose.yml", "-f", "docker-compose.workers.yml", "rm", "-sfv",
            "worker-4")


def test_down_leaves_nothing(cluster):
    compose("-f", "docker-compose.yml", "-f", "docker-compose.workers.yml", "down", "-v",
            "--remove-orphans")
    ps = subprocess.run(["docker", "ps", "-a", "--filter", (f"label=com.docker.compose.project="
                         f"{PROJECT}"), "-q"], text=True, capture_output=True).stdout.strip()
    vols = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                           f"label=com.docker.compose.project={PROJECT}"], text=True,
                          capture_output=True).stdout.strip()
    nets = subprocess.run(["docker", "network", "ls", "-q", "--filter", "name=^kubelab$"],
                          text=True, capture_output=True).stdout.strip()
    assert (ps, vols, nets) == ("", "", "")
