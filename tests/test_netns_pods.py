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
        # the endpoints (and so the DNS) follow the pod's readiness within a watch event
        wait_for(lambda n=name, i=ip: i in sh(c, "client",
                                               f"nslookup {n}.nginx.default.svc.cluster.local",
                                               check=False).stdout,
                 20, 0.3, f"{name}.nginx resolving to {ip}")
        # no readiness probe: Ready when started, so nginx may still be starting up
        wait_for(lambda n=name: "Welcome to nginx" in sh(c, "client", f"wget -qO- http://{n}.nginx/",
                                                         check=False).stdout,
                 30, 0.3, f"nginx answering on {name}.nginx")
    wait_for(lambda: all(ip in sh(c, "client", "nslookup nginx", check=False).stdout
                         for ip in ips.values()), 20, 0.3, "nginx resolving to both pods")


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


SIDECAR = """
apiVersion: v1
kind: Pod
metadata: {name: sidecar}
spec:
  volumes: [{name: shared, emptyDir: {}}]
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "echo from-the-web-container > /www/index.html && httpd -f -p 8080 -h /www"]
    volumeMounts: [{name: shared, mountPath: /www}]
  - name: side
    image: busybox
    command: ["sh", "-c", "sleep 3600"]
    volumeMounts: [{name: shared, mountPath: /data}]
"""


def test_sidecar_shares_localhost_and_an_empty_dir(net):
    c = net
    apply(c, SIDECAR)
    c.wait_pod("sidecar", "Ready", 60)
    out = c.kubectl("exec", "sidecar", "-c", "side", "--", "cat", "/data/index.html").stdout
    assert out.strip() == "from-the-web-container"
    wait_for(lambda: c.kubectl("exec", "sidecar", "-c", "side", "--", "wget", "-qO-",
                               "http://localhost:8080/", check=False).stdout.strip() ==
             "from-the-web-container", 20, 0.3, "the sidecar reaching localhost:8080")
    c.kubectl("delete", "pod", "sidecar", "--wait=false")


CONFIG = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {greeting: hello, mode: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
stringData: {password: s3cr3t}
---
apiVersion: v1
kind: Pod
metadata: {name: configured, labels: {tier: backend}}
spec:
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: app-config, key: greeting}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: app-secret, key: password}}}
    - {name: MY_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MY_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: MESSAGE, value: "$(GREETING) from $(MY_POD)"}
    envFrom: [{prefix: CFG_, configMapRef: {name: app-config}}]
    volumeMounts:
    - {name: config, mountPath: /etc/config}
    - {name: info, mountPath: /etc/podinfo}
  volumes:
  - {name: config, configMap: {name: app-config}}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
"""


def test_env_and_volumes_from_configmap_secret_and_downward_api(net):
    c = net
    apply(c, CONFIG)
    pod = c.wait_pod("configured", "Running", 60)
    env = dict(line.split("=", 1) for line in
               c.kubectl("exec", "configured", "--", "env").stdout.splitlines() if "=" in line)
    assert env["GREETING"] == "hello" and env["PASSWORD"] == "s3cr3t"
    assert env["MY_POD"] == "configured" and env["MY_IP"] == pod["status"]["podIP"]
    assert env["MESSAGE"] == "hello from configured"
    assert env["CFG_mode"] == "blue"
    assert sh(c, "configured", "cat /etc/config/mode").stdout == "blue"
    assert sh(c, "configured", "cat /etc/podinfo/labels").stdout.strip() == 'tier="backend"'
    # an update of the ConfigMap reaches the mounted files (within the kubelet's sync period)
    c.kubectl("patch", "configmap", "app-config", "-p", '{"data":{"mode":"green"}}')
    wait_for(lambda: sh(c, "configured", "cat /etc/config/mode", check=False).stdout ==
             "green", 60, 0.5, "the updated ConfigMap in the mounted file")
    c.kubectl("delete", "pod", "configured", "--wait=false")


PVC_STS = """
apiVersion: v1
kind: Service
metadata: {name: store}
spec: {clusterIP: None, selector: {app: store}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: store}
spec:
  serviceName: store
  replicas: 1
  selector: {matchLabels: {app: store}}
  template:
    metadata: {labels: {app: store}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: app, image: busybox, command: ["sleep", "3600"],
         volumeMounts: [{name: data, mountPath: /data}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""


def test_statefulset_data_survives_pod_deletion(net):
    c = net
    apply(c, PVC_STS)
    first = c.wait_pod("store-0", "Running", 90)
    sh(c, "store-0", "echo kept > /data/file")
    c.kubectl("delete", "pod", "store-0")

    def replaced():
        p = c.get_json("pod", "store-0")
        return p if p["metadata"]["uid"] != first["metadata"]["uid"] and \
            p.get("status", {}).get("phase") == "Running" else None
    wait_for(replaced, 90, 0.3, "the replacement store-0 Running")
    wait_for(lambda: sh(c, "store-0", "cat /data/file", check=False).stdout.strip() == "kept",
             20, 0.3, "the data written by the first store-0")
    assert c.get_json("pvc", "data-store-0")["status"]["phase"] == "Bound"


def test_each_pod_has_its_own_var(net):
    """What a container writes under /var (kubia's `touch /var/ready`) is its pod's alone."""
    c = net
    for name in ("var-a", "var-b"):
        c.kubectl("run", name, "--image=busybox", "--restart=Never", "--", "sleep", "3600")
    for name in ("var-a", "var-b"):
        c.wait_pod(name, "Running", 60)
    marker = f"/var/kubelab-test-{time.monotonic_ns()}"
    sh(c, "var-a", f"touch {marker} && ls /var/lib >/dev/null")
    assert sh(c, "var-a", f"test -e {marker}", check=False).returncode == 0
    assert sh(c, "var-b", f"test -e {marker}", check=False).returncode != 0
    assert not __import__("os").path.exists(marker)
    c.kubectl("delete", "pod", "var-a", "var-b", "--wait=false")
