"""Pods on the bridge network (`--network netns`: every machine in its own namespace, every pod
in its own namespace behind the worker's cbr0), seen from inside the pods the way tutorials
look at them: Services by name through the search list, ClusterIPs from another worker, pod to
pod across workers, headless StatefulSet names, resolv.conf, and a rolling update under
continuous traffic with no failed request.

Root only; one netns cluster at a time on a host (they all use 172.30.0.0/24)."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from kubelab.cluster import machine_network_users, netns_available

from .conftest import WorkerCluster, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not netns_available()[0],
                                 reason="needs root and a working `ip netns`")]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    users = machine_network_users()
    if users:
        pytest.skip(f"172.30.0.0/24 is in use on this host ({', '.join(users)})")
    c = WorkerCluster(tmp_path_factory.mktemp("netns") / "cluster", network="netns")
    try:
        yield c
    finally:
        c.down()


def apply(c, text: str) -> None:
    c.kubectl("apply", "-f", "-", input=text)


def sh(c, pod: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    return c.kubectl("exec", pod, "--", "sh", "-c", script, check=check, timeout=30)


WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  strategy: {rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: hashicorp/http-echo
        args: ["-text=%s", "-listen=:8080"]
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""

CLIENT = """
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: worker-2
  containers:
  - {name: sh, image: busybox, command: ["sleep", "3600"]}
"""


def pods_of(c, app: str) -> list[dict]:
    return [p for p in c.get_json("pods", "-l", f"app={app}")["items"]
            if not p["metadata"].get("deletionTimestamp")]


def ready(p: dict) -> bool:
    return any(x["type"] == "Ready" and x["status"] == "True"
               for x in p.get("status", {}).get("conditions", []))


@pytest.fixture(scope="module")
def web(net):
    apply(net, WEB % "v1")
    apply(net, CLIENT)
    wait_for(lambda: len([p for p in pods_of(net, "web") if ready(p)]) == 2, 90, 0.3,
             "2 web pods Ready")
    net.wait_pod("client", "Running", 60)
    return net


def test_pod_network_identity(web):
    c = web
    client = c.get_json("pod", "client")
    ip = client["status"]["podIP"]
    assert ip.startswith("10.244.2."), ip
    out = sh(c, "client", "hostname; cat /etc/resolv.conf; ip -4 addr show eth0 2>/dev/null "
                          "|| ifconfig eth0").stdout
    lines = out.splitlines()
    assert lines[0] == "client"
    assert "nameserver 10.96.0.10" in out
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in out
    assert "options ndots:5" in out
    assert ip in out


def test_services_by_name_from_a_pod_on_another_worker(web):
    c = web
    on = {p["spec"]["nodeName"] for p in pods_of(c, "web")}
    svc = c.get_json("service", "web")
    # by short name, namespace-qualified, and fully qualified: the search list at work
    for name in ("web", "web.default", "web.default.svc", "web.default.svc.cluster.local"):
        out = sh(c, "client", f"wget -qO- http://{name}/").stdout
        assert out.strip() == "v1", (name, out)
    # busybox nslookup tries every search domain and exits 1 when the last one is NXDOMAIN
    out = sh(c, "client", "nslookup web", check=False).stdout
    assert svc["spec"]["clusterIP"] in out
    # the ClusterIP directly, from worker-2, to pods that include worker-1's
    out = sh(c, "client", f"wget -qO- http://{svc['spec']['clusterIP']}/").stdout
    assert out.strip() == "v1"
    assert on, "web pods are scheduled"
    miss = sh(c, "client", "nslookup no-such-service.default.svc.cluster.local", check=False)
    assert miss.returncode != 0 or "NXDOMAIN" in miss.stdout + miss.stderr or \
        "can't find" in miss.stdout + miss.stderr


def test_pod_to_pod_across_workers(web):
    c = web
    for p in pods_of(c, "web"):
        out = sh(c, "client", f"wget -qO- http://{p['status']['podIP']}:8080/").stdout
        assert out.strip() == "v1"


STS = """
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  clusterIP: None
  selector: {app: nginx}
  ports: [{name: web, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: nginx
  replicas: 2
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers:
      - name: nginx
        image: nginx
        ports: [{containerPort: 80, name: web}]
"""


def test_statefulset_pods_have_stable_dns_names(web):
    c = web
    apply(c, STS)
    wait_for(lambda: len([p for p in pods_of(c, "nginx") if ready(p)]) == 2, 120, 0.3,
             "db-0 and db-1 Ready")
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods_of(c, "nginx")}
    for name, ip in ips.items():
        out = sh(c, "client", f"nslookup {name}.nginx.default.svc.cluster.local",
                 check=False).stdout
        assert ip in out, (name, out)
        page = sh(c, "client", f"wget -qO- http://{name}.nginx/").stdout
        assert "Welcome to nginx" in page
    out = sh(c, "client", "nslookup nginx", check=False).stdout
    assert all(ip in out for ip in ips.values()), out


def test_rolling_update_under_traffic_drops_nothing(web):
    c = web
    port = c.get_json("service", "web")["spec"]["ports"][0]["nodePort"]
    urls = [f"http://172.30.0.101:{port}/", f"http://172.30.0.102:{port}/"]
    stop = threading.Event()
    results: list[tuple[str, str]] = []

    def traffic():
        import urllib.request
        i = 0
        while not stop.is_set():
            url = urls[i % 2]
            i += 1
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    results.append(("ok", r.read().decode().strip()))
            except Exception as e:  # noqa: BLE001 - every failure counts
                results.append(("fail", repr(e)))
            time.sleep(0.02)
    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        wait_for(lambda: len(results) > 20, 30, 0.1, "traffic flowing")
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": "web", "args": ["-text=v2", "-listen=:8080"]}]}}}}
        c.kubectl("patch", "deployment", "web", "-p", json.dumps(patch))
        c.kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=150)
        wait_for(lambda: results and results[-1] == ("ok", "v2"), 30, 0.1, "v2 answering")
        n = len(results)
        wait_for(lambda: len(results) > n + 20, 30, 0.1, "more traffic after the rollout")
    finally:
        stop.set()
        t.join(10)
    fails = [r for r in results if r[0] == "fail"]
    seen = {r[1] for r in results if r[0] == "ok"}
    assert seen == {"v1", "v2"}, seen
    assert not fails, f"{len(fails)} of {len(results)} requests failed: {fails[:3]}"
