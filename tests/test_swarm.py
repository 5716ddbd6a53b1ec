"""The cluster on Docker Swarm: `docker stack deploy -c docker-compose.yml -c docker-stack.yml`
on a one-node swarm (overlay network, no static addresses: machines find each other by name).
Driven from the host with the real kubectl through the API port published in host mode: three
workers Ready, a Service answered by pods on every worker from a pod on one of them (pod routes
over the overlay), and a store member's task replaced by swarm (new container, new address)
rejoining the cluster by name.

Needs a Docker engine; .ci/run provides it and sets KUBELAB_DOCKER_TESTS=1. Runs after
test_compose.py's cluster is down (both use 172.30.0.0/24 and ./kubeconfig)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.skipif(
    os.environ.get("KUBELAB_DOCKER_TESTS") != "1" or not shutil.which("docker")
    or not shutil.which("docker-compose"),
    reason="set KUBELAB_DOCKER_TESTS=1 with a Docker engine and docker-compose (.ci/run does)")

STACK = "kubelab-swarm-ci"
KUBECONFIG = str(ROOT / "kubeconfig" / "config")


def run(*argv: str, check: bool = True, timeout: float = 600,
        input: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, BASE_IMAGE=os.environ.get("BASE_IMAGE", "kubelab/base:bookworm"),
               KUBELAB_TIME_SCALE="0.1")
    out = subprocess.run(list(argv), cwd=ROOT, env=env, text=True, capture_output=True,
                         timeout=timeout, input=input, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({out.returncode}):\n"
                             f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def kubectl(*args: str, check: bool = True, input: str | None = None):
    return run("kubectl", "--kubeconfig", KUBECONFIG, "--request-timeout", "10s", *args,
               check=check, input=input, timeout=30)


def ready_nodes() -> int:
    out = kubectl("get", "nodes", "-o", "json", check=False)
    if out.returncode:
        return 0
    return sum(1 for n in json.loads(out.stdout)["items"]
               if any(c["type"] == "Ready" and c["status"] == "True"
                      for c in n["status"].get("conditions", [])))


def task_container(service: str) -> str:
    """The running container of a stack service's task."""
    out = run("docker", "ps", "-q", "--filter", f"name={STACK}_{service}.1.").stdout.split()
    return out[0] if out else ""


def stack_down() -> None:
    run("docker", "stack", "rm", STACK, check=False)

    def gone() -> bool:
        return not run("docker", "ps", "-aq", "--filter", f"name={STACK}_").stdout.strip() and \
            "kubelab-swarm" not in run("docker", "network", "ls", "--format", "{{.Name}}").stdout.split()
    wait_for(gone, 120, 1.0, "the stack's containers and network removed")
    vols = [v for v in run("docker", "volume", "ls", "-q").stdout.split()
            if v.startswith(f"{STACK}_")]
    if vols:
        run("docker", "volume", "rm", *vols, check=False)


@pytest.fixture(scope="module")
def stack():
    build = run("bash", str(ROOT / "scripts" / "build-base-image.sh"), timeout=900)
    assert build.returncode == 0
    run("docker-compose", "build")  # the image; stack deploy cannot build
    state = run("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    joined = state == "inactive"
    if joined:
        run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
    stack_down()
    Path(KUBECONFIG).unlink(missing_ok=True)
    (ROOT / "kubeconfig").mkdir(exist_ok=True)
    run("docker", "stack", "deploy", "-c", "docker-compose.yml", "-c", "docker-stack.yml", STACK)
    try:
        wait_for(lambda: Path(KUBECONFIG).exists() and ready_nodes() == 3, 240, 1.0,
                 "3 Ready workers in the swarm stack")
        yield
    finally:
        for svc in ("store-1", "apiserver", "worker-1"):
            print(run("docker", "service", "logs", "--tail", "30", f"{STACK}_{svc}",
                      check=False).stdout[-5000:])
        stack_down()
        if joined:
            run("docker", "swarm", "leave", "--force", check=False)


APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: who}
spec:
  replicas: 3
  selector: {matchLabels: {app: who}}
  template:
    metadata: {labels: {app: who}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {app: who}}}
      containers:
      - name: who
        image: hashicorp/http-echo
        args: ["-text=$(NODE)", "-listen=:8080"]
        env: [{name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: who}
spec:
  selector: {app: who}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_stack_serves_across_workers_and_a_replaced_store_task_rejoins(stack):
    kubectl("apply", "-f", "-", input=APP)
    kubectl("run", "client", "--image=busybox", "--restart=Never", "--", "sleep", "3600")
    kubectl("wait", "--for=condition=Ready", "pod/client", "--timeout=60s")
    seen: set[str] = set()

    def every_worker_answers() -> bool:
        out = kubectl("exec", "client", "--", "wget", "-qO-", "http://who", check=False)
        if out.returncode == 0:
            seen.add(out.stdout.strip())
        return seen >= {"worker-1", "worker-2", "worker-3"}
    wait_for(every_worker_answers, 90, 0.2,
             "the Service answered by the pods on all three workers from one pod")

    # the API server advertises its overlay address in the kubernetes Service
    ep = json.loads(kubectl("get", "endpoints", "kubernetes", "-o", "json").stdout)
    api_ip = ep["subsets"][0]["addresses"][0]["ip"]
    assert api_ip.startswith("172.30.0.")

    # swarm replaces store-1's task: a new container with (usually) a new address, the same
    # data volume; it rejoins as itself because its peers know it by name
    old = task_container("store-1")
    run("docker", "service", "update", "--force", "--detach", f"{STACK}_store-1")

    def replaced_and_healthy() -> bool:
        new = task_container("store-1")
        if not new or new == old:
            return False
        out = run("docker", "exec", task_container("apiserver"), "python3", "-m",
                  "kubelab.container", "health", "store-1", check=False)
        return out.returncode == 0
    wait_for(replaced_and_healthy, 120, 1.0, "store-1's new task healthy in the cluster")
    kubectl("create", "configmap", "after-replace", "--from-literal=k=v")
    assert kubectl("get", "configmap", "after-replace", "-o",
                   "jsonpath={.data.k}").stdout == "v"
