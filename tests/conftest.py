"""Shared fixtures: real store clusters as real processes, stopped by PID after each test."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubelab.cli import wait_ready  # noqa: E402
from kubelab.cluster import Cluster  # noqa: E402


def wait_for(cond, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll cond() until it returns a truthy value; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def free_port_offset() -> int:
    """A port offset unlikely to collide with a developer's cluster (offset 0)."""
    return random.randrange(1000, 20000, 10)


class StoreCluster:
    """A running etcdlite cluster made by kubelab's launcher, plus conveniences for tests."""

    def __init__(self, state_dir: Path, stores: int = 3, **kw):
        kw.setdefault("apiserver", False)
        self.cluster = Cluster.create(state_dir, stores=stores, port_offset=free_port_offset(),
                                      **kw)
        try:
            self.cluster.start_all()
            self.wait_ready()
        except BaseException:
            self.cluster.down()  # never leave processes behind when start-up fails
            raise

    @property
    def endpoints(self) -> list[str]:
        return [u.replace("http://", "") for u in self.cluster.store_endpoints()]

    def endpoint(self, name: str) -> str:
        return self.cluster.component(name).client_url.replace("http://", "")

    def wait_ready(self, timeout: float = 30.0):
        return asyncio.run(wait_ready(self.cluster, timeout))

    def status(self) -> list[dict]:
        from kubelab.cli import store_status
        return asyncio.run(store_status(self.cluster))

    def leader(self, timeout: float = 15.0) -> str:
        def find():
            rows = self.status()
            leaders = {r["name"] for r in rows if r.get("role") == "leader"}
            return leaders.pop() if len(leaders) == 1 else None
        return wait_for(find, timeout, 0.1, "a single store leader")

    def etcdctl(self, *args: str, endpoints: list[str] | None = None, input: str | None = None,
                timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, ETCDCTL_API="3")
        cmd = ["etcdctl", "--endpoints", ",".join(endpoints or self.endpoints), *args]
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                           env=env)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def kill(self, name: str):
        self.cluster.kill(name)

    def stop(self, name: str):
        self.cluster.stop(name)

    def start(self, name: str):
        self.cluster.start(name)

    def down(self):
        self.cluster.down()


@pytest.fixture
def store_cluster(tmp_path):
    c = StoreCluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.down()


@pytest.fixture(scope="module")
def shared_store_cluster(tmp_path_factory):
    """One cluster for a module of tests that do not break it."""
    c = StoreCluster(tmp_path_factory.mktemp("shared") / "cluster")
    try:
        yield c
    finally:
        c.down()


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None


class KubeCluster(StoreCluster):
    """Stores + API server (kubelab up's layout) with a kubeconfig for the real kubectl."""

    def __init__(self, state_dir: Path, **kw):
        kw["apiserver"] = True
        kw.setdefault("control_plane", False)
        super().__init__(state_dir, **kw)
        self.kubeconfig = str(self.cluster.kubeconfig_path)
        self.cache_dir = str(state_dir.parent / "kubecache")
        api = self.cluster.apiserver
        self.server = api.client_url
        self.grpc_target = api.grpc_url
        self.token = self.cluster.admin_token()

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60.0,
                check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        e = dict(os.environ, KUBECONFIG=self.kubeconfig, KUBECACHEDIR=self.cache_dir)
        if env:
            e.update(env)
        p = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True,
                           timeout=timeout, env=e)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {p.returncode}:\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p

    def client(self):
        from kubelab.client import ClusterClient
        return ClusterClient(self.grpc_target, self.token)

    def python_client(self):
        """The official kubernetes Python client, configured from the kubeconfig."""
        import kubernetes
        return kubernetes.config.new_client_from_config(config_file=self.kubeconfig)


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    """One stores + API server cluster for a module of API tests."""
    c = KubeCluster(tmp_path_factory.mktemp("kube") / "cluster")
    try:
        yield c
    finally:
        c.down()


@pytest.fixture
def fresh_kube(tmp_path):
    c = KubeCluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.down()


class ControlPlaneCluster(KubeCluster):
    """Stores, API server, controller manager, scheduler and hollow nodes, with Kubernetes'
    timers shortened by time_scale."""

    def __init__(self, state_dir: Path, hollow_workers: int = 3, time_scale: float = 0.1, **kw):
        kw.setdefault("control_plane", True)
        super().__init__(state_dir, hollow_workers=hollow_workers, time_scale=time_scale, **kw)
        self.time_scale = time_scale
        if hollow_workers:
            try:
                wait_for(lambda: len(self.ready_nodes()) >= hollow_workers, 60, 0.2,
                         f"{hollow_workers} Ready nodes")
            except BaseException:
                self.cluster.down()
                raise

    def ready_nodes(self) -> list[str]:
        import json as _json
        out = self.kubectl("get", "nodes", "-o", "json", check=False)
        if out.returncode != 0:
            return []
        items = _json.loads(out.stdout).get("items", [])
        return [n["metadata"]["name"] for n in items
                if any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in n.get("status", {}).get("conditions", []))]

    def get_json(self, *args: str) -> dict:
        import json as _json
        return _json.loads(self.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory):
    """A whole control plane on 3 hollow nodes, timers x0.1, shared by a test module."""
    c = ControlPlaneCluster(tmp_path_factory.mktemp("cp") / "cluster")
    try:
        yield c
    finally:
        c.down()


class WorkerCluster(ControlPlaneCluster):
    """Stores, API server, controller manager, scheduler and real workers (node agent + proxy
    each, loopback network), with Kubernetes' timers shortened by time_scale."""

    def __init__(self, state_dir: Path, workers: int = 2, time_scale: float = 0.1, **kw):
        super().__init__(state_dir, hollow_workers=0, time_scale=time_scale, workers=workers,
                         **kw)
        self.worker_names = [f"worker-{i}" for i in range(1, workers + 1)]
        try:
            wait_for(lambda: len(self.ready_nodes()) >= workers, 60, 0.2,
                     f"{workers} Ready worker nodes")
        except BaseException:
            self.cluster.down()
            raise

    def node_ip(self, worker: str) -> str:
        return self.cluster.component(worker).address

    def wait_pod(self, name: str, cond: str = "Ready", timeout: float = 30.0,
                 namespace: str = "default") -> dict:
        """Wait until the pod's condition `cond` is True (or, for a phase name such as
        Running/Succeeded/Failed, until status.phase is that) and return the pod."""
        def check():
            pod = self.get_json("pod", name, "-n", namespace)
            st = pod.get("status") or {}
            if cond in ("Pending", "Running", "Succeeded", "Failed"):
                return pod if st.get("phase") == cond else None
            return pod if any(c.get("type") == cond and c.get("status") == "True"
                              for c in st.get("conditions") or []) else None
        return wait_for(check, timeout, 0.1, f"pod {namespace}/{name} {cond}")


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """A whole cluster with 2 real workers (pods are real processes), timers x0.1, shared by a
    test module."""
    c = WorkerCluster(tmp_path_factory.mktemp("wk") / "cluster")
    try:
        yield c
    finally:
        c.down()
