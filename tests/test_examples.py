"""The tutorial apps of examples/ on a real cluster (2 real workers, timers x0.1; the bridge
network as root — pods resolve Services by name and see volumes at their mountPath, as in the
tutorials — else the loopback network): each test applies one example folder with the real kubectl, waits for what the
tutorial's reader waits for, checks what the reader checks (curl through NodePorts on each
worker, `kubectl logs`, `kubectl exec`, the ingress by host and path...), then deletes it.

Where kubelab may differ from Kubernetes, a test collects every difference it sees (what was
run, what came back, what Kubernetes shows) and fails once at the end with the whole list,
so one run tells everything that does not behave as the tutorial says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kubelab.cluster import machine_network_users, netns_available

from .conftest import WorkerCluster, have, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have("kubectl"), reason="needs kubectl"),
              pytest.mark.skipif(not have("curl"), reason="needs curl")]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """The tutorials assume pods with their own network: use the bridge network when this host
    can (root, `ip netns`, 172.30.0.0/24 free)."""
    bridge = netns_available()[0] and not machine_network_users()
    c = WorkerCluster(tmp_path_factory.mktemp("examples") / "cluster",
                      network="netns" if bridge else "loopback")
    try:
        yield c
    finally:
        c.down()


# --------------------------------------------------------------------------- helpers


class Checks:
    """Soft assertions: every tutorial step is checked, the differences are reported together."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def __call__(self, ok, what: str) -> bool:
        if not ok:
            self.problems.append(what)
        return bool(ok)

    def done(self) -> None:
        assert not self.problems, "differences from the tutorial:\n- " + \
            "\n- ".join(self.problems)


def example(name: str) -> str:
    return str(EXAMPLES / name) + "/"


def apply(cluster, name: str) -> str:
    return cluster.kubectl("apply", "-f", example(name)).stdout


def delete(cluster, name: str, *selectors: str, namespace: str = "default",
           names: tuple[str, ...] = (), force: bool = False) -> None:
    """`kubectl delete -f examples/<name>/`, then wait (bounded) until the example's pods
    (by label selector or by name) are gone, so the next example starts from a clean
    namespace. `force` skips the grace period (apps that ignore SIGTERM, as kubia does as
    PID 1, would otherwise take the full 30 s to go)."""
    extra = ["--grace-period=0", "--force"] if force else []
    cluster.kubectl("delete", "-f", example(name), "--ignore-not-found", "--wait=false",
                    *extra, check=False)
    for sel in selectors:
        try:
            wait_for(lambda s=sel: not cluster.get_json("pods", "-n", namespace, "-l", s)["items"],
                     30, 0.2, f"pods {sel} deleted")
        except AssertionError:
            cluster.kubectl("delete", "pods", "-n", namespace, "-l", sel, "--force",
                            "--grace-period=0", check=False)
    if names:
        cluster.kubectl("wait", "--for=delete", "-n", namespace, "--timeout=30s",
                        *[f"pod/{n}" for n in names], check=False, timeout=40)


def curl(*args: str, timeout: float = 5.0) -> tuple[int, str]:
    """(HTTP status, body) of `curl <args>`; status 0 when the connection failed."""
    p = subprocess.run(["curl", "-s", "-m", str(timeout), "-w", "\n%{http_code}", *args],
                       capture_output=True, text=True, timeout=timeout + 5, check=False)
    body, _, code = p.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


def curl_ok(*args: str, timeout: float = 30.0, what: str = "an HTTP 200") -> str:
    """The body of the first 200 answer, retrying while the app or the proxy starts."""
    last: list = []

    def get():
        code, body = curl(*args)
        last[:] = [code, body]
        return body if code == 200 else None
    try:
        return wait_for(get, timeout, 0.2, f"{what} from curl {' '.join(args)}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last answer: HTTP {last[0]} {last[1]!r}"
                             if last and last[0] else str(e)) from None


def pods(cluster, selector: str, namespace: str = "default") -> list[dict]:
    return cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]


def is_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


STUCK = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff",
         "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


def rollout(cluster, kind_name: str, timeout: float = 60, namespace: str = "default") -> None:
    """`kubectl rollout status`, failing at once (with the reason) when a pod of the namespace
    is stuck on its image or its configuration instead of waiting out the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        p = cluster.kubectl("rollout", "status", kind_name, "-n", namespace, "--timeout=2s",
                            check=False, timeout=30)
        if p.returncode == 0:
            return
        for pod in cluster.get_json("pods", "-n", namespace)["items"]:
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in STUCK:
                    raise AssertionError(
                        f"kubectl rollout status {kind_name}: pod {pod['metadata']['name']} "
                        f"container {cs['name']} ({cs.get('image')}) is waiting: "
                        f"{waiting['reason']}: {waiting.get('message', '')}")
        if time.monotonic() > deadline:
            raise AssertionError(f"kubectl rollout status {kind_name} not done after "
                                 f"{timeout}s:\n{p.stdout}\n{p.stderr}")


def events_of(cluster, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the events of the pod `name` as it is now (not of an earlier pod
    of the same name)."""
    uid = cluster.get_json("pod", name)["metadata"]["uid"]
    items = cluster.get_json("events", "--field-selector",
                             f"involvedObject.name={name},involvedObject.uid={uid}")
    return [(e.get("reason", ""), e.get("message", "")) for e in items.get("items", [])]


def kexec(cluster, pod: str, *argv: str) -> subprocess.CompletedProcess:
    return cluster.kubectl("exec", pod, "--", *argv, check=False, timeout=30)


# --------------------------------------------------------------------------- kubia


def test_kubia_deployment_behind_a_nodeport(workers):
    """Kubernetes in Action: `kubectl apply` the kubia Deployment (luksa/kubia:v1) and the
    kubia-nodeport Service, then `curl <node IP>:30123` on every node."""
    w, c = workers, Checks()
    try:
        out = apply(w, "kubia")
        assert "deployment.apps/kubia created" in out and \
            "service/kubia-nodeport created" in out, out
        rollout(w, "deployment/kubia")
        names = {p["metadata"]["name"] for p in pods(w, "app=kubia")}
        assert len(names) == 3, names
        svc = w.kubectl("get", "svc", "kubia-nodeport").stdout
        c("NodePort" in svc and "80:30123/TCP" in svc, f"kubectl get svc kubia-nodeport:\n{svc}")
        answers: list[str] = []
        for node in w.worker_names:
            url = f"http://{w.node_ip(node)}:30123"
            answers.append(curl_ok(url, what=f"kubia through {node}'s NodePort"))
            for _ in range(8):
                code, body = curl(url)
                if c(code == 200, f"curl {url}: HTTP {code} {body!r}"):
                    answers.append(body)
        seen = {m.group(1) for a in answers if (m := re.search(r"(kubia-[a-z0-9]+-[a-z0-9]+)", a))}
        assert seen and seen <= names, (seen, names)       # every answer from a kubia pod
        c(len(seen) > 1, f"18 requests through both NodePorts all went to {seen}")
        wrong = [a for a in answers
                 if not re.fullmatch(r"This is v1 running in pod kubia-[a-z0-9]+-[a-z0-9]+\n", a)]
        c(not wrong, "luksa/kubia:v1 (chapter 9) answers \"This is v1 running in pod "
                     f"<pod name>\\n\"; kubelab answered {wrong[:1]!r}")
    finally:
        delete(w, "kubia", "app=kubia")
    c.done()


# --------------------------------------------------------------------------- counter + redis


def test_counter_and_redis(workers):
    """subicura's guide: the counter app finds redis through the ClusterIP Service `redis` and
    counts every request made through the NodePort 31000 of any node."""
    w, c = workers, Checks()
    try:
        apply(w, "counter-redis")
        rollout(w, "deployment/redis")
        rollout(w, "deployment/counter")
        svc = w.get_json("svc", "redis")
        assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["clusterIP"] != "None"
        ips = [w.node_ip(n) for n in w.worker_names]
        first = curl_ok(f"http://{ips[0]}:31000", what="the counter through the NodePort",
                        timeout=20)
        c(first.strip() == "1", f"first request to a fresh counter gave {first!r}, not '1'")
        counts = [first] + [curl(f"http://{ips[i % 2]}:31000")[1] for i in range(1, 6)]
        c(counts == [str(int(first) + i) if first.isdigit() else "" for i in range(6)],
          f"counter through worker-1/worker-2 alternately: {counts}, expected consecutive "
          "numbers")
    finally:
        delete(w, "counter-redis", "app=counter")
    c.done()


# --------------------------------------------------------------------------- StatefulSet


def test_statefulset_web_with_stable_names_and_storage(workers):
    """Kubernetes docs, "StatefulSet Basics": ordered pods web-0, web-1 with their own
    PersistentVolumeClaims, stable hostnames and DNS names through the headless Service, and
    data that survives the pod."""
    w, c = workers, Checks()
    try:
        apply(w, "statefulset")
        rollout(w, "statefulset/web", timeout=90)
        ps = {p["metadata"]["name"]: p for p in pods(w, "app=nginx")}
        assert sorted(ps) == ["web-0", "web-1"], sorted(ps)
        # ordered: web-1 is created only once web-0 is Running and Ready
        ready0 = next(x["lastTransitionTime"] for x in ps["web-0"]["status"]["conditions"]
                      if x["type"] == "Ready")
        c(ps["web-1"]["metadata"]["creationTimestamp"] >= ready0,
          "web-1 was created before web-0 was Ready")
        pvcs = w.get_json("pvc", "-l", "app=nginx")["items"]
        c(sorted((p["metadata"]["name"], p["status"].get("phase")) for p in pvcs)
          == [("www-web-0", "Bound"), ("www-web-1", "Bound")],
          f"kubectl get pvc -l app=nginx: {[(p['metadata']['name'], p['status']) for p in pvcs]}")
        for i in (0, 1):
            p = kexec(w, f"web-{i}", "sh", "-c", "hostname")
            c(p.stdout.strip() == f"web-{i}", f"kubectl exec web-{i} -- sh -c 'hostname' "
              f"printed {p.stdout.strip() or p.stderr.strip()!r}, Kubernetes prints 'web-{i}'")
        # the docs' DNS check from a throw-away busybox pod
        ip0 = ps["web-0"]["status"]["podIP"]
        try:
            p = w.kubectl("run", "dns-test", "-i", "--rm", "--restart=Never",
                          "--image=busybox:1.28", "--", "nslookup", "web-0.nginx", check=False,
                          timeout=60)
        except subprocess.TimeoutExpired as e:
            p = subprocess.CompletedProcess(e.cmd, -1, e.stdout or "", "timed out after 60s")
        c(p.returncode == 0 and ip0 in p.stdout,
          f"kubectl run -i --rm --restart=Never --image busybox:1.28 dns-test -- nslookup "
          f"web-0.nginx: rc={p.returncode} {p.stdout.strip()!r} {p.stderr.strip()!r}; "
          f"Kubernetes answers with web-0's address {ip0}")
        w.kubectl("delete", "pod", "dns-test", "--ignore-not-found", "--wait=false", check=False)
        # a fresh claim: nginx has nothing to serve yet (the docs show 403 Forbidden)
        html = "/usr/share/nginx/html"
        ls = kexec(w, "web-0", "ls", "-A", html)
        st = kexec(w, "web-0", "stat", "-c", "%d %i", html).stdout.split()
        host = os.stat(html) if os.path.isdir(html) else None
        sees_host = host is not None and st == [str(host.st_dev), str(host.st_ino)]
        if not c(ls.returncode == 0 and ls.stdout.strip() == "" and not sees_host,
                 f"kubectl exec web-0 -- ls {html} should list the new, empty volume "
                 f"www-web-0; it listed {ls.stdout.split()!r} (rc {ls.returncode}"
                 f"{', the host directory itself' if sees_host else ''}): commands run by "
                 "kubectl exec do not see the pod's volume at its mountPath"):
            c.done()   # writing there would change the host's own files
        for i in (0, 1):
            p = kexec(w, f"web-{i}", "sh", "-c",
                      'echo "$(hostname)" > /usr/share/nginx/html/index.html')
            assert p.returncode == 0, p.stderr
        for i in (0, 1):
            ip = w.get_json("pod", f"web-{i}")["status"]["podIP"]
            body = curl_ok(f"http://{ip}/", what=f"web-{i}'s index.html")
            c(body == f"web-{i}\n", f"curl http://<web-{i} IP>/ gave {body!r}")
        # delete the pods: the StatefulSet makes them again, with the same claims and data
        uid0 = ps["web-0"]["metadata"]["uid"]
        w.kubectl("delete", "pod", "-l", "app=nginx")
        wait_for(lambda: (p := w.get_json("pod", "web-0"))["metadata"]["uid"] != uid0
                 and is_ready(p), 60, 0.2, "a new web-0 Ready")
        rollout(w, "statefulset/web", timeout=60)
        for i in (0, 1):
            p = kexec(w, f"web-{i}", "cat", "/usr/share/nginx/html/index.html")
            c(p.stdout == f"web-{i}\n", f"after the pod was replaced, index.html of web-{i} "
              f"is {p.stdout!r}")
            ip = w.get_json("pod", f"web-{i}")["status"]["podIP"]
            c(curl_ok(f"http://{ip}/", what=f"the new web-{i}") == f"web-{i}\n",
              f"the new web-{i} does not serve its old index.html")
    finally:
        delete(w, "statefulset", "app=nginx")
        w.kubectl("delete", "pvc", "-l", "app=nginx", "--wait=false", check=False)
    c.done()


# --------------------------------------------------------------------------- Job and CronJob


def test_job_and_cronjob(workers):
    """The docs' pi Job (python instead of perl) runs to completion and its log holds the
    digits; the hello CronJob makes a Job whose log greets."""
    w, c = workers, Checks()
    try:
        apply(w, "job-cronjob")
        # the CronJob's next run is up to a minute away: pretend the last run was two minutes
        # ago, so that the controller makes the missed run now
        past = (datetime.now(UTC) - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:00Z")
        w.kubectl("patch", "cronjob", "hello", "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": {"lastScheduleTime": past}}))
        w.kubectl("wait", "--for=condition=complete", "job/pi", "--timeout=60s", timeout=70)
        job = w.get_json("job", "pi")
        assert job["status"]["succeeded"] == 1
        out = w.kubectl("get", "job", "pi").stdout
        c("Complete" in out and "1/1" in out, f"kubectl get job pi:\n{out}")
        log = w.kubectl("logs", "job/pi").stdout
        c(log.startswith("3.14159265358979323846264338327950288419716939937510") and
          len(log.strip()) == 1001 and log.strip().endswith("216420199"),   # perl's bpi(1000)
          f"kubectl logs job/pi: {log[:60]!r}... ({len(log.strip())} characters)")

        jobs = wait_for(lambda: [j for j in w.get_json("jobs")["items"]
                                 if j["metadata"]["name"].startswith("hello-")], 30, 0.2,
                        "a Job made by the CronJob hello")
        name = jobs[0]["metadata"]["name"]
        assert re.fullmatch(r"hello-\d+", name), name
        c(jobs[0]["metadata"]["ownerReferences"][0]["kind"] == "CronJob", "owner")
        w.kubectl("wait", "--for=condition=complete", f"job/{name}", "--timeout=30s", timeout=40)
        log = w.kubectl("logs", f"job/{name}").stdout.splitlines()
        c(len(log) == 2 and log[1] == "Hello from the Kubernetes cluster" and
          re.search(r"\d\d:\d\d:\d\d", log[0]), f"kubectl logs job/{name}: {log!r}")
        cj = w.get_json("cronjob", "hello")
        c(cj["status"].get("lastScheduleTime") and
          "* * * * *" in w.kubectl("get", "cronjob", "hello").stdout,
          f"status of cronjob hello: {cj['status']}")
    finally:
        w.kubectl("delete", "-f", example("job-cronjob"), "--ignore-not-found", check=False)
        wait_for(lambda: not pods(w, "batch.kubernetes.io/job-name"), 30, 0.2, "job pods gone")
    c.done()


# --------------------------------------------------------------------------- DaemonSet


def test_daemonset_runs_one_pod_per_node(workers):
    w, c = workers, Checks()
    ns = "kube-system"
    try:
        apply(w, "daemonset")
        rollout(w, "daemonset/fluentd-elasticsearch", namespace=ns)
        ps = pods(w, "name=fluentd-elasticsearch", ns)
        nodes = sorted(p["spec"]["nodeName"] for p in ps)
        assert nodes == sorted(w.worker_names), nodes
        st = w.get_json("ds", "fluentd-elasticsearch", "-n", ns)["status"]
        assert st["desiredNumberScheduled"] == st["numberReady"] == len(w.worker_names), st
        for p in ps:
            name, node = p["metadata"]["name"], p["spec"]["nodeName"]
            log = wait_for(lambda n=name: (out := w.kubectl("logs", "-n", ns, n).stdout)
                           .count("\n") >= 2 and out, 20, 0.2, f"two lines in {name}'s log")
            c(log.startswith(f"log agent on node {node} (pod {name})"),
              f"kubectl logs -n kube-system {name}: {log!r}")
            c(re.search(rf"{node}: \d+ entries in /var/log", log), f"{name}: {log!r}")
    finally:
        delete(w, "daemonset", "name=fluentd-elasticsearch", namespace=ns)
    c.done()


# --------------------------------------------------------------------------- ConfigMap, Secret


def test_configmap_and_secret_as_env_and_files(workers):
    w, c = workers, Checks()
    try:
        apply(w, "configmap-secret")
        w.wait_pod("dapi-test-pod", "Succeeded", 40)
        env = dict(line.split("=", 1) for line in
                   w.kubectl("logs", "dapi-test-pod").stdout.splitlines() if "=" in line)
        got = {k: env.get(k) for k in ("SPECIAL_LEVEL", "SPECIAL_TYPE", "SPECIAL_LEVEL_KEY",
                                       "SECRET_USERNAME")}
        c(got == {"SPECIAL_LEVEL": "very", "SPECIAL_TYPE": "charm", "SPECIAL_LEVEL_KEY": "very",
                  "SECRET_USERNAME": "my-app"}, f"env of dapi-test-pod: {got}")

        w.wait_pod("secret-test-pod", "Ready", 40)
        log = wait_for(lambda: w.kubectl("logs", "secret-test-pod").stdout, 15, 0.2, "ls output")
        c(log == "/etc/config/:\nSPECIAL_LEVEL\nSPECIAL_TYPE\n\n"
                 "/etc/secret-volume/:\npassword\nusername\n",
          f"`ls /etc/config/ /etc/secret-volume/` in secret-test-pod printed {log!r}")
        for path, want in (("/etc/config/SPECIAL_TYPE", "charm"),
                           ("/etc/secret-volume/username", "my-app"),
                           ("/etc/secret-volume/password", "39528$vdg7Jb")):
            p = kexec(w, "secret-test-pod", "cat", path)
            c(p.stdout == want, f"kubectl exec secret-test-pod -- cat {path}: "
              f"{p.stdout or p.stderr.strip()!r}, want {want!r}")
        # a changed ConfigMap reaches the mounted files (env stays as it was at the start)
        w.kubectl("patch", "configmap", "special-config", "--type=merge",
                  "-p", '{"data":{"SPECIAL_TYPE":"strange"}}')
        try:
            wait_for(lambda: kexec(w, "secret-test-pod", "cat", "/etc/config/SPECIAL_TYPE"
                                   ).stdout == "strange", 20, 0.3, "the new SPECIAL_TYPE")
        except AssertionError as e:
            c(False, f"after kubectl patch configmap special-config: {e}")
    finally:
        delete(w, "configmap-secret", names=("dapi-test-pod", "secret-test-pod"))
    c.done()


# --------------------------------------------------------------------------- Ingress


def test_ingress_routes_by_host_and_path(workers):
    """Kubernetes docs, "Set up Ingress on Minikube": hello-world.example/ goes to web
    (hello-app 1.0), hello-world.example/v2 to web2 (hello-app 2.0), on every node."""
    w, c = workers, Checks()
    port = w.cluster.settings["ingress_http_port"]
    try:
        apply(w, "ingress")
        rollout(w, "deployment/web")
        rollout(w, "deployment/web2")
        for node in w.worker_names:
            ip = w.node_ip(node)
            resolve = f"hello-world.example:{port}:{ip}"
            body = curl_ok("--resolve", resolve, f"http://hello-world.example:{port}/",
                           what=f"web through the ingress on {node}")
            c(re.fullmatch(r"Hello, world!\nVersion: 1\.0\.0\nHostname: web-[a-z0-9]+-[a-z0-9]+\n",
                           body), f"curl --resolve {resolve} http://hello-world.example/: {body!r}")
            body = curl_ok("--resolve", resolve, f"http://hello-world.example:{port}/v2",
                           what=f"web2 through the ingress on {node}")
            c(re.fullmatch(r"Hello, world!\nVersion: 2\.0\.0\nHostname: web2-[a-z0-9]+-[a-z0-9]+\n",
                           body), f"curl --resolve {resolve} http://hello-world.example/v2: {body!r}")
            code, _ = curl("--resolve", f"other.example:{port}:{ip}",
                           f"http://other.example:{port}/")
            c(code == 404, f"a host without a rule gave HTTP {code} on {node}, not 404")
        addrs = wait_for(lambda: [x.get("ip") for x in w.get_json("ingress", "example-ingress")
                                  ["status"].get("loadBalancer", {}).get("ingress", [])],
                         15, 0.2, "the Ingress' address")
        c(sorted(addrs) == sorted(w.node_ip(n) for n in w.worker_names),
          f"status.loadBalancer of example-ingress: {addrs}")
        ing = w.get_json("ingress", "example-ingress")
        c(ing["spec"].get("ingressClassName") == "kubelab",
          "the Ingress was created without ingressClassName while IngressClass kubelab is the "
          "default: Kubernetes' DefaultIngressClass admission sets spec.ingressClassName: "
          "kubelab (kubectl get ingress shows CLASS kubelab); kubelab left it unset:\n"
          + w.kubectl("get", "ingress", "example-ingress").stdout)
    finally:
        delete(w, "ingress", "app in (web,web2)")
    c.done()


# --------------------------------------------------------------------------- probes


def test_liveness_and_readiness_probes(workers):
    """Kubernetes in Action: kubia-unhealthy fails its HTTP liveness probe from the sixth
    request on and is restarted; kubia pods with an exec readiness probe (`ls /var/ready`)
    become ready, and Service endpoints, one by one as the file appears in each."""
    w, c = workers, Checks()
    had_var_ready = os.path.exists("/var/ready")
    try:
        apply(w, "probes")
        # readiness: three Running pods, none ready, the Service has no endpoints
        wait_for(lambda: len([p for p in pods(w, "app=kubia")
                              if (p.get("status") or {}).get("phase") == "Running"]) == 3,
                 40, 0.2, "3 kubia pods Running")
        ps = pods(w, "app=kubia")
        c(not any(is_ready(p) for p in ps),
          "kubia pods are Ready although /var/ready does not exist in them")
        eps = w.get_json("endpoints", "kubia").get("subsets") or []
        c(not any(s.get("addresses") for s in eps), f"endpoints of kubia: {eps}")
        first = min(p["metadata"]["name"] for p in ps)
        p = kexec(w, first, "touch", "/var/ready")
        c(p.returncode == 0, f"kubectl exec {first} -- touch /var/ready: {p.stderr}")
        pod = w.wait_pod(first, "Ready", 20)
        ip = pod["status"]["podIP"]

        def endpoint_ips():
            subsets = w.get_json("endpoints", "kubia").get("subsets") or []
            return sorted(a["ip"] for s in subsets for a in s.get("addresses") or [])
        wait_for(lambda: ip in endpoint_ips(), 15, 0.2, "the ready pod in the endpoints")
        ready = sorted(p["metadata"]["name"] for p in pods(w, "app=kubia") if is_ready(p))
        c(ready == [first], f"after `kubectl exec {first} -- touch /var/ready`, the Ready kubia "
                            f"pods are {ready}; in Kubernetes only {first}")
        c(endpoint_ips() == [ip], f"endpoints of kubia: {endpoint_ips()}, want only {ip}")

        # liveness: the sixth probe gets a 500, the third failure restarts the container
        wait_for(lambda: (w.get_json("pod", "kubia-liveness")["status"]
                          .get("containerStatuses") or [{}])[0].get("restartCount", 0) >= 1,
                 60, 0.3, "kubia-liveness restarted")
        cs = w.get_json("pod", "kubia-liveness")["status"]["containerStatuses"][0]
        last = cs.get("lastState", {}).get("terminated", {})
        c(last.get("exitCode") == 137 and last.get("reason") == "Error",
          f"lastState of kubia-liveness: {last}; the book shows Exit Code 137 (node.js as "
          "PID 1 ignores SIGTERM and is killed after the grace period)")
        evs = [e for e in events_of(w, "kubia-liveness") if e[0] in ("Unhealthy", "Killing")]
        c(("Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 500") in evs,
          f"the probe should fail on the app's 500 (6th request on); events: {evs}")
        c(("Killing", "Container kubia failed liveness probe, will be restarted") in evs,
          f"events of kubia-liveness: {evs}")
        prev = w.kubectl("logs", "kubia-liveness", "--previous", check=False)
        c(prev.stdout.startswith("Kubia server starting...\n")
          and "Received request from" in prev.stdout,
          f"kubectl logs kubia-liveness --previous: {prev.stdout[:200]!r} {prev.stderr!r}")
    finally:
        if not had_var_ready and os.path.exists("/var/ready"):
            os.unlink("/var/ready")   # the exec above wrote the host's file
        delete(w, "probes", "app=kubia", names=("kubia-liveness",), force=True)
    c.done()
