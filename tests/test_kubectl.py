"""The real kubectl 1.32 against the real API server process (stores + API server)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from .conftest import KubeCluster, wait_for

pytestmark = pytest.mark.slow

DEPLOY = textwrap.dedent("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      labels: {app: web}
    spec:
      replicas: 2
      selector:
        matchLabels: {app: web}
      template:
        metadata:
          labels: {app: web}
        spec:
          containers:
          - name: nginx
            image: nginx:1.25
            ports:
            - containerPort: 80
            env:
            - {name: A, value: "1"}
            - {name: B, value: "2"}
          - name: sidecar
            image: busybox
            command: ["sleep", "3600"]
    """)


def test_version_discovery_api_resources(kube: KubeCluster):
    out = kube.kubectl("version", "-o", "json").stdout
    assert json.loads(out)["serverVersion"]["minor"] == "32"
    res = kube.kubectl("api-resources").stdout
    for line in ("pods ", "deployments ", "services ", "configmaps ", "cronjobs ",
                 "ingresses ", "leases ", "endpointslices ", "horizontalpodautoscalers ",
                 "storageclasses "):
        assert line in res, f"{line!r} missing from api-resources"
    rows: dict = {}
    for r in res.splitlines()[1:]:  # first row per name: metrics.k8s.io also has pods, nodes
        rows.setdefault(r.split()[0], r.split())
    assert rows["deployments"][1] == "deploy" and rows["deployments"][2] == "apps/v1"
    assert rows["pods"][1] == "po" and rows["nodes"][1] == "no"
    assert "false" in rows["nodes"] and "true" in rows["pods"]
    assert "Kubernetes control plane is running at" in kube.kubectl("cluster-info").stdout
    who = kube.kubectl("auth", "whoami").stdout
    assert "admin" in who and "system:masters" in who
    assert kube.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"


def test_apply_create_update_remove_field(kube: KubeCluster, tmp_path):
    f = tmp_path / "deploy.yaml"
    f.write_text(DEPLOY)
    assert "deployment.apps/web created" in kube.kubectl("apply", "-f", str(f)).stdout
    d = json.loads(kube.kubectl("get", "deploy", "web", "-o", "json").stdout)
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert d["spec"]["revisionHistoryLimit"] == 10 and d["metadata"]["generation"] == 1
    # change one container's image and add an env var: the other container is untouched
    manifest = yaml.safe_load(DEPLOY)
    c0 = manifest["spec"]["template"]["spec"]["containers"][0]
    c0["image"] = "nginx:1.26"
    c0["env"].append({"name": "C", "value": "3"})
    f.write_text(yaml.safe_dump(manifest))
    assert "deployment.apps/web configured" in kube.kubectl("apply", "-f", str(f)).stdout
    d = json.loads(kube.kubectl("get", "deploy", "web", "-o", "json").stdout)
    cs = d["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in cs] == ["nginx", "sidecar"]
    assert cs[0]["image"] == "nginx:1.26" and cs[1]["command"] == ["sleep", "3600"]
    assert [e["name"] for e in cs[0]["env"]] == ["A", "B", "C"]
    assert d["metadata"]["generation"] == 2
    # apply again unchanged
    assert "unchanged" in kube.kubectl("apply", "-f", str(f)).stdout
    # remove a field (env B, the sidecar) and apply: gone from the live object
    manifest = yaml.safe_load(f.read_text())
    c0 = manifest["spec"]["template"]["spec"]["containers"][0]
    c0["env"] = [e for e in c0["env"] if e["name"] != "B"]
    manifest["spec"]["template"]["spec"]["containers"] = [c0]
    del manifest["metadata"]["labels"]
    f.write_text(yaml.safe_dump(manifest))
    kube.kubectl("apply", "-f", str(f))
    d = json.loads(kube.kubectl("get", "deploy", "web", "-o", "json").stdout)
    cs = d["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in cs] == ["nginx"]
    assert [e["name"] for e in cs[0]["env"]] == ["A", "C"]
    assert "labels" not in d["metadata"] or "app" not in d["metadata"]["labels"]
    # server-side apply creates and updates too
    ssa = tmp_path / "ssa.yaml"
    ssa.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1'}\n")
    assert "serverside-applied" in kube.kubectl("apply", "--server-side", "-f", str(ssa)).stdout
    ssa.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {b: '2'}\n")
    kube.kubectl("apply", "--server-side", "-f", str(ssa))
    cm = json.loads(kube.kubectl("get", "cm", "ssa", "-o", "json",
                                 "--show-managed-fields").stdout)
    assert cm["data"] == {"b": "2"}
    assert any(m["manager"] == "kubectl" and m["operation"] == "Apply"
               for m in cm["metadata"]["managedFields"])
    kube.kubectl("delete", "-f", str(f))
    kube.kubectl("delete", "-f", str(ssa))
    assert kube.kubectl("get", "deploy", "web", check=False).returncode != 0


def test_create_get_output_formats_and_selectors(kube: KubeCluster, tmp_path):
    kube.kubectl("create", "namespace", "fmt")
    kube.kubectl("create", "configmap", "c1", "-n", "fmt", "--from-literal=a=b")
    src = tmp_path / "app.properties"
    src.write_text("x=1\ny=2\n")
    kube.kubectl("create", "configmap", "c2", "-n", "fmt", f"--from-file={src}")
    kube.kubectl("label", "cm", "c1", "-n", "fmt", "tier=fe")
    kube.kubectl("annotate", "cm", "c1", "-n", "fmt", "note=hello")
    kube.kubectl("create", "secret", "generic", "s1", "-n", "fmt", "--from-literal=pw=s3cret")
    out = kube.kubectl("get", "cm", "-n", "fmt").stdout
    assert out.splitlines()[0].split() == ["NAME", "DATA", "AGE"]
    assert any(line.split()[:2] == ["c2", "1"] for line in out.splitlines())
    assert kube.kubectl("get", "cm", "-n", "fmt", "-l", "tier=fe", "-o", "name").stdout.split() \
        == ["configmap/c1"]
    assert kube.kubectl("get", "cm", "-n", "fmt", "-l", "tier!=fe", "-o", "name").stdout.split() \
        == ["configmap/c2"]
    assert kube.kubectl("get", "cm", "-n", "fmt", "--field-selector", "metadata.name=c2",
                        "-o", "name").stdout.split() == ["configmap/c2"]
    y = yaml.safe_load(kube.kubectl("get", "cm", "c1", "-n", "fmt", "-o", "yaml").stdout)
    assert y["data"] == {"a": "b"} and y["metadata"]["labels"] == {"tier": "fe"}
    assert y["metadata"]["annotations"]["note"] == "hello"
    j = json.loads(kube.kubectl("get", "cm", "c2", "-n", "fmt", "-o", "json").stdout)
    assert j["data"]["app.properties"] == "x=1\ny=2\n"
    s = json.loads(kube.kubectl("get", "secret", "s1", "-n", "fmt", "-o", "json").stdout)
    import base64
    assert base64.b64decode(s["data"]["pw"]) == b"s3cret" and s["type"] == "Opaque"
    all_ns = kube.kubectl("get", "cm", "-A").stdout
    assert all_ns.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == ["fmt", "c1"] for line in all_ns.splitlines())
    jp = kube.kubectl("get", "cm", "c1", "-n", "fmt", "-o", "jsonpath={.data.a}").stdout
    assert jp == "b"
    # replace -f
    y["data"] = {"a": "replaced"}
    for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        y["metadata"].pop(k, None)
    f = tmp_path / "c1.yaml"
    f.write_text(yaml.safe_dump(y))
    assert "replaced" in kube.kubectl("replace", "-f", str(f)).stdout
    assert kube.kubectl("get", "cm", "c1", "-n", "fmt", "-o",
                        "jsonpath={.data.a}").stdout == "replaced"
    # create -f of something that exists
    p = kube.kubectl("create", "-f", str(f), check=False)
    assert p.returncode != 0 and "AlreadyExists" in p.stderr and \
        'configmaps "c1" already exists' in p.stderr
    assert 'configmaps "nope" not found' in kube.kubectl("get", "cm", "nope", "-n", "fmt",
                                                         check=False).stderr


def test_patch_types_scale_and_edit(kube: KubeCluster, tmp_path):
    kube.kubectl("create", "deployment", "pt", "--image=nginx", "--replicas=1")
    kube.kubectl("patch", "deploy", "pt", "-p", '{"spec":{"replicas":3}}')
    assert kube.kubectl("get", "deploy", "pt", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    kube.kubectl("patch", "deploy", "pt", "--type=merge", "-p",
                 '{"metadata":{"labels":{"m":"1"}}}')
    kube.kubectl("patch", "deploy", "pt", "--type=json", "-p",
                 '[{"op":"replace","path":"/spec/template/spec/containers/0/image",'
                 '"value":"nginx:1.27"}]')
    kube.kubectl("patch", "deploy", "pt", "-p",
                 '{"spec":{"template":{"spec":{"containers":[{"name":"nginx",'
                 '"env":[{"name":"X","value":"y"}]}]}}}}')
    d = json.loads(kube.kubectl("get", "deploy", "pt", "-o", "json").stdout)
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "nginx:1.27" and c["env"] == [{"name": "X", "value": "y"}]
    assert d["metadata"]["labels"]["m"] == "1"
    p = kube.kubectl("patch", "deploy", "pt", "--type=json", "-p",
                     '[{"op":"test","path":"/spec/replicas","value":99}]', check=False)
    assert p.returncode != 0
    assert "scaled" in kube.kubectl("scale", "deploy", "pt", "--replicas=5").stdout
    assert kube.kubectl("get", "deploy", "pt", "-o", "jsonpath={.spec.replicas}").stdout == "5"
    # edit with a scripted editor
    editor = tmp_path / "editor.py"
    editor.write_text("import sys,re\np=sys.argv[1]\ns=open(p).read()\n"
                      "s=s.replace('replicas: 5','replicas: 4')\nopen(p,'w').write(s)\n")
    out = kube.kubectl("edit", "deploy", "pt", env={"KUBE_EDITOR": f"{sys.executable} {editor}"})
    assert "edited" in out.stdout
    assert kube.kubectl("get", "deploy", "pt", "-o", "jsonpath={.spec.replicas}").stdout == "4"
    kube.kubectl("rollout", "restart", "deploy", "pt")
    ann = kube.kubectl("get", "deploy", "pt", "-o",
                       "jsonpath={.spec.template.metadata.annotations}").stdout
    assert "kubectl.kubernetes.io/restartedAt" in ann
    kube.kubectl("delete", "deploy", "pt")


def test_imperative_creators(kube: KubeCluster):
    kube.kubectl("create", "namespace", "imp")
    n = ["-n", "imp"]
    kube.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", "--port=80", *n)
    kube.kubectl("expose", "deployment", "web", "--port=80", "--target-port=80", *n)
    kube.kubectl("create", "service", "nodeport", "np", "--tcp=80:8080", *n)
    kube.kubectl("create", "job", "j1", "--image=busybox", *n, "--", "echo", "hi")
    kube.kubectl("create", "cronjob", "cj1", "--image=busybox", "--schedule=*/5 * * * *", *n)
    kube.kubectl("run", "p1", "--image=nginx", "--labels=app=p1", *n)
    kube.kubectl("create", "serviceaccount", "sa1", *n)
    svc = json.loads(kube.kubectl("get", "svc", "web", "-o", "json", *n).stdout)
    assert svc["spec"]["selector"] == {"app": "web"} and svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["clusterIP"].startswith("127.96.")
    np = json.loads(kube.kubectl("get", "svc", "np", "-o", "json", *n).stdout)
    assert 30000 <= np["spec"]["ports"][0]["nodePort"] <= 32767
    assert np["spec"]["ports"][0]["targetPort"] == 8080
    out = kube.kubectl("get", "svc", *n).stdout.splitlines()
    assert out[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert any(f"80:{np['spec']['ports'][0]['nodePort']}/TCP" in line for line in out)
    job = json.loads(kube.kubectl("get", "job", "j1", "-o", "json", *n).stdout)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
    assert job["spec"]["backoffLimit"] == 6
    cj = json.loads(kube.kubectl("get", "cronjob", "cj1", "-o", "json", *n).stdout)
    assert cj["spec"]["schedule"] == "*/5 * * * *"
    pod = json.loads(kube.kubectl("get", "pod", "p1", "-o", "json", *n).stdout)
    assert pod["spec"]["restartPolicy"] == "Always" and pod["status"]["phase"] == "Pending"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 30
    assert pod["spec"]["schedulerName"] == "default-scheduler"
    assert pod["status"]["qosClass"] == "BestEffort"
    pods = kube.kubectl("get", "pods", *n).stdout.splitlines()
    assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pods[1].split()[:3] == ["p1", "0/1", "Pending"]
    wide = kube.kubectl("get", "pods", "-o", "wide", *n).stdout.splitlines()[0].split()
    assert wide[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and "NODE" in wide
    everything = kube.kubectl("get", "all", *n).stdout
    for name in ("pod/p1", "service/web", "deployment.apps/web", "job.batch/j1",
                 "cronjob.batch/cj1"):
        assert name in everything, f"{name} missing from get all"
    # delete a pod (not scheduled: goes at once) with --wait
    assert 'pod "p1" deleted' in kube.kubectl("delete", "pod", "p1", "--wait", *n).stdout
    assert kube.kubectl("get", "pod", "p1", *n, check=False).returncode != 0


def test_get_watch_sees_changes(kube: KubeCluster):
    kube.kubectl("create", "configmap", "watched", "--from-literal=a=1")
    env = dict(os.environ, KUBECONFIG=kube.kubeconfig, KUBECACHEDIR=kube.cache_dir)
    p = subprocess.Popen(["kubectl", "get", "cm", "watched", "-w", "-o", "name"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: list[str] = []
        import threading
        t = threading.Thread(target=lambda: [lines.append(x) for x in p.stdout], daemon=True)
        t.start()
        wait_for(lambda: len(lines) >= 1, 15, 0.1, "initial watch line")
        kube.kubectl("label", "cm", "watched", "k=v")
        wait_for(lambda: len(lines) >= 2, 15, 0.1, "watch to show the label change")
        assert all(line.strip() == "configmap/watched" for line in lines)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(10)


def test_describe_shows_events(kube: KubeCluster):
    kube.kubectl("create", "configmap", "described", "--from-literal=a=1")
    cmj = json.loads(kube.kubectl("get", "cm", "described", "-o", "json").stdout)
    ev = {"apiVersion": "v1", "kind": "Event",
          "metadata": {"name": "described.1", "namespace": "default"},
          "involvedObject": {"kind": "ConfigMap", "name": "described", "namespace": "default",
                             "uid": cmj["metadata"]["uid"], "apiVersion": "v1"},
          "reason": "Tested", "message": "hello from the test", "type": "Normal",
          "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:00:00Z",
          "count": 1, "source": {"component": "pytest"}}
    kube.kubectl("create", "-f", "-", input=json.dumps(ev))
    kube.kubectl("create", "deployment", "dd", "--image=nginx")
    out = kube.kubectl("describe", "deployment", "dd").stdout
    assert "Name:" in out and "dd" in out and "nginx" in out
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dp"},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    kube.kubectl("create", "-f", "-", input=json.dumps(pod))
    pj = json.loads(kube.kubectl("get", "pod", "dp", "-o", "json").stdout)
    ev2 = dict(ev, metadata={"name": "dp.1", "namespace": "default"},
               involvedObject={"kind": "Pod", "name": "dp", "namespace": "default",
                               "uid": pj["metadata"]["uid"], "apiVersion": "v1"},
               reason="Scheduled", message="Successfully assigned default/dp to nowhere")
    kube.kubectl("create", "-f", "-", input=json.dumps(ev2))
    out = kube.kubectl("describe", "pod", "dp").stdout
    assert "Events:" in out and "Scheduled" in out and "Successfully assigned" in out
    kube.kubectl("delete", "pod", "dp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kubectl_proxy_then_curl(kube: KubeCluster):
    port = _free_port()
    env = dict(os.environ, KUBECONFIG=kube.kubeconfig, KUBECACHEDIR=kube.cache_dir)
    p = subprocess.Popen(["kubectl", "proxy", f"--port={port}"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env)
    try:
        def get():
            r = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/api/v1/namespaces"],
                               capture_output=True, text=True, timeout=10)
            return json.loads(r.stdout) if r.returncode == 0 and r.stdout else None
        body = wait_for(get, 15, 0.2, "kubectl proxy")
        assert body["kind"] == "NamespaceList"
        assert {"default", "kube-system"} <= {i["metadata"]["name"] for i in body["items"]}
    finally:
        p.terminate()
        p.wait(10)


def test_explain(kube: KubeCluster):
    out = kube.kubectl("explain", "pods").stdout
    assert "KIND:" in out and "Pod" in out


def test_python_client_crud_watch_conflict(kube: KubeCluster):
    import kubernetes
    from kubernetes.client.rest import ApiException
    api = kubernetes.client.CoreV1Api(kube.python_client())
    body = kubernetes.client.V1ConfigMap(
        metadata=kubernetes.client.V1ObjectMeta(name="py1", labels={"src": "py"}),
        data={"k": "v"})
    created = api.create_namespaced_config_map("default", body)
    assert created.metadata.resource_version
    got = api.read_namespaced_config_map("py1", "default")
    assert got.data == {"k": "v"}
    lst = api.list_namespaced_config_map("default", label_selector="src=py")
    assert [i.metadata.name for i in lst.items] == ["py1"]
    patched = api.patch_namespaced_config_map("py1", "default", {"data": {"k": "v2"}})
    assert patched.data["k"] == "v2"
    stale = got
    stale.data = {"k": "stale"}
    with pytest.raises(ApiException) as ei:
        api.replace_namespaced_config_map("py1", "default", stale)
    assert ei.value.status == 409
    w = kubernetes.watch.Watch()
    seen = []
    deadline = time.monotonic() + 20
    for ev in w.stream(api.list_namespaced_config_map, "default", label_selector="src=py",
                       timeout_seconds=10):
        seen.append((ev["type"], ev["object"].metadata.name))
        if len(seen) == 1:
            api.delete_namespaced_config_map("py1", "default")
        if ("DELETED", "py1") in seen or time.monotonic() > deadline:
            w.stop()
    assert seen[0] == ("ADDED", "py1") and ("DELETED", "py1") in seen
    with pytest.raises(ApiException) as ei:
        api.read_namespaced_config_map("py1", "default")
    assert ei.value.status == 404
    apps = kubernetes.client.AppsV1Api(kube.python_client())
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pyd"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    d = apps.create_namespaced_deployment("default", dep)
    assert d.spec.strategy.type == "RollingUpdate"
    sc = apps.read_namespaced_deployment_scale("pyd", "default")
    assert sc.spec.replicas == 1
    apps.patch_namespaced_deployment_scale("pyd", "default", {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment("pyd", "default").spec.replicas == 3
    apps.delete_namespaced_deployment("pyd", "default")


def test_componentstatuses_report_leader_leases_and_store_members(fresh_kube: KubeCluster):
    kube = fresh_kube
    # this cluster has no scheduler or controller manager: a scheduler Lease renewed just now
    # makes "scheduler" healthy; the controller manager never ran
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
        "spec": {"holderIdentity": "sched-a", "leaseDurationSeconds": 60,
                 "renewTime": now, "acquireTime": now}}))
    p = kube.kubectl("get", "cs")
    assert "Warning: v1 ComponentStatus is deprecated in v1.19+" in p.stderr
    rows = {line.split()[0]: [c.strip() for c in line.split(None, 2)[1:]]
            for line in p.stdout.splitlines()[1:]}
    assert p.stdout.split()[:4] == ["NAME", "STATUS", "MESSAGE", "ERROR"]
    assert rows["scheduler"] == ["Healthy", "ok"]
    assert rows["controller-manager"][0] == "Unhealthy" and \
        "no kube-controller-manager Lease" in rows["controller-manager"][1]
    assert [rows[f"etcd-{i}"] for i in range(3)] == [["Healthy", "ok"]] * 3
    kube.cluster.kill("store-3")
    cs = json.loads(kube.kubectl("get", "componentstatuses", "etcd-2", "-o", "json").stdout)
    cond = cs["conditions"][0]
    assert cs["kind"] == "ComponentStatus" and cond["type"] == "Healthy"
    assert cond["status"] == "False" and cond["error"].startswith("store member ")
    assert json.loads(kube.kubectl("get", "cs", "etcd-0", "-o", "json").stdout)[
        "conditions"][0]["status"] == "True"
    missing = kube.kubectl("get", "cs", "etcd-7", check=False)
    assert missing.returncode == 1 and 'componentstatuses "etcd-7" not found' in missing.stderr


def test_componentstatus_of_a_lease_that_stopped_being_renewed():
    import datetime

    from apiserver.componentstatus import lease_health
    now = datetime.datetime(2026, 1, 1, 12, 0, 30, tzinfo=datetime.UTC)
    lease = {"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                      "renewTime": "2026-01-01T12:00:00.000000Z"}}
    c = lease_health("scheduler", "kube-scheduler", lease, now)["conditions"][0]
    assert c["status"] == "False" and "last renewed 30s ago (duration 15s)" in c["error"]
    lease["spec"]["renewTime"] = "2026-01-01T12:00:20.000000Z"
    assert lease_health("scheduler", "kube-scheduler", lease, now)["conditions"][0] == {
        "type": "Healthy", "status": "True", "message": "ok"}
    lease["spec"]["holderIdentity"] = ""  # released by a leader that stopped
    assert lease_health("scheduler", "kube-scheduler", lease, now)["conditions"][0][
        "status"] == "False"
