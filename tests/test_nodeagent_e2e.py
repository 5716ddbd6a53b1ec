"""The real node agent end to end: a cluster with real workers (loopback network, timers x0.1),
pods created through the real kubectl and run as real processes. Containers share the host file
system in loopback mode, so they report what they saw through files in the test's tmp_path."""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import have, wait_for

pytestmark = pytest.mark.skipif(not have("kubectl"), reason="needs kubectl")

W1 = "worker-1"
W2 = "worker-2"


def apply(cluster, pod: dict) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))


def pod_manifest(name: str, containers: list[dict], node: str = W1, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": containers, **spec}}


def get_pod(cluster, name: str) -> dict:
    return cluster.get_json("pod", name)


def status_of(cluster, name: str, container: str = "main") -> dict:
    st = get_pod(cluster, name).get("status") or {}
    for cs in (st.get("containerStatuses") or []) + (st.get("initContainerStatuses") or []):
        if cs["name"] == container:
            return cs
    return {}


def events(cluster, name: str) -> list[dict]:
    out = cluster.get_json("events", "--field-selector", f"involvedObject.name={name}")
    return out.get("items", [])


def pod_dir(cluster, node: str, name: str) -> Path | None:
    dirs = list((cluster.cluster.state_dir / node / "pods").glob(f"default_{name}_*"))
    return dirs[0] if dirs else None


def recorded(cluster, node: str, name: str) -> list[dict]:
    d = pod_dir(cluster, node, name)
    return [json.loads(p.read_text()) for p in d.glob("*/*/state.json")] if d else []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def delete(cluster, name: str) -> None:
    cluster.kubectl("delete", "pod", name, "--wait=false", "--ignore-not-found", check=False)


# --------------------------------------------------------------------------- tests


def test_pod_runs_with_kubelet_status_and_events(workers, tmp_path):
    out = tmp_path / "out"
    t0 = time.monotonic()
    apply(workers, pod_manifest("hello", [{
        "name": "main", "image": "busybox",
        "command": ["sh", "-c", f"echo $HOSTNAME $KUBELAB_POD_IP > {out}; echo hello; sleep 3600"]}]))
    pod = workers.wait_pod("hello", "Ready", 20)
    took = time.monotonic() - t0
    st = pod["status"]
    assert st["phase"] == "Running"
    assert ipaddress.ip_address(st["podIP"]) in ipaddress.ip_network("127.244.1.0/24")
    assert st["podIPs"] == [{"ip": st["podIP"]}]
    assert st["hostIP"] == workers.node_ip(W1)
    assert st["qosClass"] == "BestEffort" and st["startTime"]
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {"PodReadyToStartContainers": "True", "Initialized": "True",
                     "Ready": "True", "ContainersReady": "True", "PodScheduled": "True"}
    cs = st["containerStatuses"][0]
    assert cs["containerID"].startswith("kubelab://") and cs["ready"] and cs["started"]
    assert cs["restartCount"] == 0 and "running" in cs["state"] and cs["image"] == "busybox"
    assert cs["imageID"]
    assert wait_for(lambda: out.exists() and out.read_text().split(), 5) == \
        ["hello", st["podIP"]]
    assert took < 10
    msgs = wait_for(lambda: (m := {(e["reason"], e["message"]) for e in events(workers, "hello")})
                    and ("Started", "Started container main") in m and m, 10)
    assert ("Created", "Created container main") in msgs
    assert any(r == "Pulled" for r, _ in msgs)
    # the CRI log file of the container
    log = pod_dir(workers, W1, "hello") / "main" / "0.log"
    line = wait_for(lambda: log.read_text().splitlines(), 5)[0].split(" ", 3)
    assert line[1:] == ["stdout", "F", "hello"]
    delete(workers, "hello")


def test_multi_container_pod_shares_the_pod_ip(workers, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("from the web container\n")
    got = tmp_path / "got"
    apply(workers, pod_manifest("duo", [
        {"name": "web", "image": "busybox",
         "command": ["sh", "-c", f"httpd -f -p $KUBELAB_BIND_IP:8080 -h {www}"]},
        {"name": "client", "image": "busybox",
         "command": ["sh", "-c", (f"until wget -qO {got}.tmp http://$KUBELAB_POD_IP:8080/; do "
                                  f"sleep 0.1; done; mv {got}.tmp {got}; sleep 3600")]}]))
    pod = workers.wait_pod("duo", "Ready", 20)
    assert [c["name"] for c in pod["status"]["containerStatuses"]] == ["web", "client"]
    assert wait_for(lambda: got.exists() and got.read_text(), 10) == "from the web container\n"
    delete(workers, "duo")


def test_init_containers_run_in_order_before_app_containers(workers, tmp_path):
    order = tmp_path / "order"
    apply(workers, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "inits"},
                    "spec": {"nodeName": W1,
                             "initContainers": [
                                 {"name": "first", "image": "busybox",
                                  "command": ["sh", "-c", f"sleep 0.3; echo first >> {order}"]},
                                 {"name": "second", "image": "busybox",
                                  "command": ["sh", "-c", f"echo second >> {order}"]}],
                             "containers": [
                                 {"name": "main", "image": "busybox",
                                  "command": ["sh", "-c", f"echo main >> {order}; sleep 3600"]}]}})
    pod = workers.wait_pod("inits", "Ready", 20)
    assert order.read_text() == "first\nsecond\nmain\n"
    inits = pod["status"]["initContainerStatuses"]
    assert [c["name"] for c in inits] == ["first", "second"]
    for c in inits:
        assert c["state"]["terminated"]["reason"] == "Completed"
        assert c["state"]["terminated"]["exitCode"] == 0
    delete(workers, "inits")


def test_crashloop_backoff_intervals_grow(workers, tmp_path):
    starts = tmp_path / "starts"
    apply(workers, pod_manifest("crash", [{
        "name": "main", "image": "busybox",
        "command": ["sh", "-c", f"cut -d' ' -f1 /proc/uptime >> {starts}; exit 2"]}]))
    seen = set()

    def five_starts():
        cs = status_of(workers, "crash")
        w = cs.get("state", {}).get("waiting")
        if w:
            seen.add((w["reason"], w.get("message", "").split(" restarting")[0]))
        # the container writes its start before the agent reports it: wait for both
        return starts.exists() and len(starts.read_text().split()) >= 5 and \
            cs.get("restartCount", 0) >= 4 and cs.get("lastState", {}).get("terminated") and cs
    cs = wait_for(five_starts, 40, 0.1, "5 container starts")
    t = [float(x) for x in starts.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(t)]
    # time scale 0.1: restarted at once, then after 1 s, 2 s, 4 s (10 s doubling, scaled);
    # each gap also holds a container's start and run time, so only lower bounds are exact
    assert gaps[1] >= 0.95 and gaps[2] >= 1.95 and gaps[3] >= 3.95, gaps
    assert gaps[3] > gaps[1] and gaps[3] - gaps[0] > 3.0, gaps
    assert ("CrashLoopBackOff", "back-off 20s") in seen or \
        ("CrashLoopBackOff", "back-off 40s") in seen
    assert cs["restartCount"] >= 4
    assert cs["lastState"]["terminated"]["exitCode"] == 2
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    uid = get_pod(workers, "crash")["metadata"]["uid"]
    assert any(e["reason"] == "BackOff" and e["type"] == "Warning" and e["message"] ==
               f"Back-off restarting failed container main in pod crash_default({uid})"
               for e in events(workers, "crash"))
    assert get_pod(workers, "crash")["status"]["phase"] == "Running"
    delete(workers, "crash")


def test_liveness_failure_restarts_the_container(workers, tmp_path):
    healthy = tmp_path / "healthy"
    healthy.write_text("ok")
    apply(workers, pod_manifest("live", [{
        "name": "main", "image": "busybox", "command": ["sleep", "3600"],
        "livenessProbe": {"exec": {"command": ["cat", str(healthy)]},
                          "periodSeconds": 2, "failureThreshold": 2}}]))
    workers.wait_pod("live", "Ready", 20)
    time.sleep(1.0)  # ~5 passing probes at x0.1: a passing liveness probe never restarts
    assert status_of(workers, "live")["restartCount"] == 0
    healthy.unlink()
    cs = wait_for(lambda: (s := status_of(workers, "live"))["restartCount"] >= 1 and s, 15, 0.1,
                  "a liveness restart")
    assert cs["lastState"]["terminated"]["exitCode"] in (137, 143)  # SIGTERM, SIGKILL
    evs = {(e["reason"], e["message"]) for e in events(workers, "live")}
    assert ("Killing", "Container main failed liveness probe, will be restarted") in evs
    assert any(r == "Unhealthy" and m.startswith("Liveness probe failed: cat: can't open")
               for r, m in evs)
    delete(workers, "live")


def test_readiness_probe_flips_ready_without_restarts(workers, tmp_path):
    flag = tmp_path / "ready"
    apply(workers, pod_manifest("flip", [{
        "name": "main", "image": "busybox", "command": ["sleep", "3600"],
        "readinessProbe": {"exec": {"command": ["test", "-f", str(flag)]},
                           "periodSeconds": 1}}]))
    workers.wait_pod("flip", "Running", 20)

    def ready() -> bool:
        conds = {c["type"]: c for c in get_pod(workers, "flip")["status"]["conditions"]}
        return conds["Ready"]["status"] == "True" and conds["ContainersReady"]["status"] == \
            "True"
    time.sleep(0.5)
    assert not ready()
    conds = {c["type"]: c for c in get_pod(workers, "flip")["status"]["conditions"]}
    assert conds["Ready"]["reason"] == "ContainersNotReady"
    flag.write_text("")
    wait_for(ready, 10, 0.1, "Ready")
    flag.unlink()
    wait_for(lambda: not ready(), 10, 0.1, "not Ready")
    assert status_of(workers, "flip")["restartCount"] == 0
    delete(workers, "flip")


def test_memory_limit_oomkilled(workers):
    apply(workers, pod_manifest("oom", [{
        "name": "main", "image": "python",
        "command": ["python3", "-c",
                    "import time; x = bytearray(400 * 1024 * 1024); time.sleep(30)"],
        "resources": {"limits": {"memory": "64Mi"}}}], restartPolicy="Never"))
    workers.wait_pod("oom", "Failed", 30)
    term = status_of(workers, "oom")["state"]["terminated"]
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137
    assert get_pod(workers, "oom")["status"]["qosClass"] == "Burstable"  # no cpu limit
    delete(workers, "oom")


def test_unknown_image_errimagepull_then_backoff(workers):
    image = "registry.kubelab.invalid/nope:1.0"
    apply(workers, pod_manifest("noimg", [{"name": "main", "image": image}]))
    reasons = set()

    def both():
        w = status_of(workers, "noimg").get("state", {}).get("waiting") or {}
        reasons.add(w.get("reason"))
        return {"ErrImagePull", "ImagePullBackOff"} <= reasons
    wait_for(both, 20, 0.05, "ErrImagePull then ImagePullBackOff")
    evs = events(workers, "noimg")
    assert any(e["reason"] == "Failed" and e["type"] == "Warning" and
               e["message"].startswith(f'Failed to pull image "{image}": ') for e in evs)
    assert any(e["message"] == "Error: ErrImagePull" for e in evs)
    assert get_pod(workers, "noimg")["status"]["phase"] == "Pending"
    delete(workers, "noimg")


def test_graceful_termination_sigterm_then_sigkill(workers, tmp_path):
    seen = tmp_path / "sigterm"
    apply(workers, pod_manifest("term", [
        {"name": "polite", "image": "busybox",
         "command": ["sh", "-c", (f"trap 'echo TERM > {seen}; exit 0' TERM; "
                                  f"while true; do sleep 0.1; done")]},
        {"name": "stubborn", "image": "busybox",
         "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]}],
        terminationGracePeriodSeconds=3))
    workers.wait_pod("term", "Ready", 20)
    pids = [s["pid"] for s in recorded(workers, W1, "term")]
    shims = [s["shimPid"] for s in recorded(workers, W1, "term")]
    assert len(pids) == 2 and all(alive(p) for p in pids + shims)
    t0 = time.monotonic()
    workers.kubectl("delete", "pod", "term", "--timeout=30s")
    took = time.monotonic() - t0
    assert 2.5 < took < 20, took          # the stubborn one waited for the grace period
    assert seen.read_text() == "TERM\n"
    wait_for(lambda: not any(alive(p) for p in pids + shims), 5, 0.05, "no process left")
    assert pod_dir(workers, W1, "term") is None


def test_agent_restart_adopts_pods_and_cleans_pods_deleted_meanwhile(workers):
    apply(workers, pod_manifest("keep", [{"name": "main", "image": "busybox",
                                          "command": ["sleep", "3600"]}], node=W2))
    apply(workers, pod_manifest("gone", [{"name": "main", "image": "busybox",
                                          "command": ["sleep", "3600"]}], node=W2))
    before = workers.wait_pod("keep", "Ready", 20)
    workers.wait_pod("gone", "Ready", 20)
    keep_state = recorded(workers, W2, "keep")[0]
    gone_state = recorded(workers, W2, "gone")[0]
    c = workers.cluster
    pid = c.signal(W2, signal.SIGKILL)           # the agent only: pods keep running
    assert c.wait_exit(W2, pid, 5)
    assert alive(keep_state["pid"]) and alive(gone_state["pid"])
    workers.kubectl("delete", "pod", "gone", "--force", "--grace-period=0")
    c.start(W2)
    # the deleted pod's processes are reaped, the other one is adopted as it is
    wait_for(lambda: not alive(gone_state["pid"]), 20, 0.1, "the deleted pod's process killed")
    wait_for(lambda: pod_dir(workers, W2, "gone") is None, 10, 0.1, "its records removed")
    time.sleep(1.0)
    after = get_pod(workers, "keep")
    cs0, cs1 = before["status"]["containerStatuses"][0], after["status"]["containerStatuses"][0]
    assert cs1["containerID"] == cs0["containerID"] and cs1["restartCount"] == 0
    assert alive(keep_state["pid"])
    assert len(recorded(workers, W2, "keep")) == 1
    d = str(pod_dir(workers, W2, "keep"))
    shims = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, d)]
    assert len(shims) == 1                       # no duplicate
    # the adopted pod is still managed: deleting it stops its process
    workers.kubectl("delete", "pod", "keep", "--timeout=30s")
    wait_for(lambda: not alive(keep_state["pid"]), 5, 0.05, "adopted pod stopped")


def _cmdline_has(pid: str, s: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return s.encode() in f.read()
    except OSError:
        return False


def test_node_registration_lease_and_status(workers):
    node = workers.get_json("node", W1)
    md, spec, st = node["metadata"], node["spec"], node["status"]
    assert md["labels"]["kubernetes.io/hostname"] == W1
    assert md["labels"]["kubernetes.io/os"] == "linux"
    assert "node-role.kubernetes.io/worker" in md["labels"]
    assert spec["podCIDR"] == "127.244.1.0/24"
    assert {"type": "InternalIP", "address": workers.node_ip(W1)} in st["addresses"]
    assert {"type": "Hostname", "address": W1} in st["addresses"]
    assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
    assert int(st["capacity"]["pods"]) == 110 and st["allocatable"]["cpu"]
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {"Ready": "True", "MemoryPressure": "False", "DiskPressure": "False",
                     "PIDPressure": "False"}
    assert st["nodeInfo"]["kubeletVersion"] and st["nodeInfo"]["containerRuntimeVersion"]
    lease = workers.get_json("lease", W1, "-n", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == W1
    first = lease["spec"]["renewTime"]
    # renewed every 10 s (x0.1 here)
    wait_for(lambda: workers.get_json("lease", W1, "-n", "kube-node-lease")["spec"]
             ["renewTime"] != first, 10, 0.2, "a lease renewal")


def test_lifecycle_hooks_post_start_and_pre_stop(workers, tmp_path):
    post, pre = tmp_path / "post", tmp_path / "pre"
    apply(workers, pod_manifest("hooks", [{
        "name": "main", "image": "busybox", "command": ["sleep", "3600"],
        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", f"echo started > {post}"]}},
                      "preStop": {"exec": {"command": ["sh", "-c", f"echo stopping > {pre}"]}}}
    }], terminationGracePeriodSeconds=5))
    workers.wait_pod("hooks", "Ready", 20)
    assert post.read_text() == "started\n"
    assert not pre.exists()
    workers.kubectl("delete", "pod", "hooks", "--timeout=30s")
    assert pre.read_text() == "stopping\n"


def test_image_change_restarts_the_container(workers):
    apply(workers, pod_manifest("swap", [{"name": "main", "image": "busybox",
                                          "command": ["sleep", "3600"]}]))
    workers.wait_pod("swap", "Ready", 20)
    workers.kubectl("set", "image", "pod/swap", "main=alpine")
    cs = wait_for(lambda: (s := status_of(workers, "swap"))["image"] == "alpine" and
                  "running" in s["state"] and s, 15, 0.1, "the new image running")
    assert cs["restartCount"] == 1
    assert any(e["message"] == "Container main definition changed, will be restarted"
               for e in events(workers, "swap"))
    delete(workers, "swap")


def test_startup_probe_holds_started_and_ready_back(workers, tmp_path):
    flag = tmp_path / "started"
    apply(workers, pod_manifest("slowstart", [{
        "name": "main", "image": "busybox", "command": ["sleep", "3600"],
        "startupProbe": {"exec": {"command": ["test", "-f", str(flag)]},
                         "periodSeconds": 1, "failureThreshold": 100},
        "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1}}]))
    workers.wait_pod("slowstart", "Running", 20)
    time.sleep(1.0)  # liveness would have failed 3 times by now if it ran before startup
    cs = status_of(workers, "slowstart")
    assert cs["started"] is False and cs["ready"] is False and cs["restartCount"] == 0
    flag.write_text("")
    wait_for(lambda: status_of(workers, "slowstart")["started"], 10, 0.1, "started")
    # then the (always failing) liveness probe runs and restarts it
    wait_for(lambda: status_of(workers, "slowstart")["restartCount"] >= 1, 15, 0.1,
             "liveness restart after startup")
    delete(workers, "slowstart")


def test_service_account_token_and_ca_are_projected(workers):
    """The kube-api-access volume: a token from the TokenRequest API bound to this pod (it
    authenticates as the ServiceAccount), the cluster CA and the namespace."""
    import base64
    import subprocess
    name = "sa-vol"
    apply(workers, pod_manifest(name, [{"name": "main", "image": "busybox",
                                        "command": ["sleep", "3600"]}]))
    pod = workers.wait_pod(name, "Running", 60)
    vol = next(v["name"] for v in pod["spec"]["volumes"]
               if v["name"].startswith("kube-api-access-"))
    d = workers.cluster.state_dir / W1 / "pods" / pod["metadata"]["uid"] / "volumes" / vol
    wait_for(lambda: (d / "token").exists(), 30, 0.2, "the projected token file")
    token = (d / "token").read_text()
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert claims["kubernetes.io"]["pod"] == {"name": name, "uid": pod["metadata"]["uid"]}
    assert (d / "ca.crt").read_text() == \
        (workers.cluster.state_dir / "apiserver" / "ca.crt").read_text()
    assert (d / "namespace").read_text() == "default"
    who = subprocess.run(["kubectl", "--kubeconfig", workers.kubeconfig, "--token", token,
                          "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
                         text=True, capture_output=True)
    assert who.stdout == "system:serviceaccount:default:default", who.stderr
    delete(workers, name)
