"""core/v1 kinds: defaults, validation messages and Table cells, on plain dicts (no server)."""

from __future__ import annotations

import copy
import datetime

import pytest

from apiserver.kinds import KINDS, load_all
from apiserver.kinds.core import (
    default_pod_spec,
    default_pod_template,
    go_repr,
    pod_qos_class,
    pod_summary,
    prepare_service_update,
    validate_pod_spec,
    validate_pod_template,
)

load_all()


def kind(name: str):
    k = KINDS.by_kind("", "v1", name)
    assert k is not None, name
    return k


def defaulted(kind_name: str, obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    kind(kind_name).default(obj)
    return obj


def errors(kind_name: str, obj: dict, old: dict | None = None) -> list[str]:
    """`field: message` strings, as kubectl prints them, for a defaulted object."""
    obj = defaulted(kind_name, obj)
    return [f"{c.field}: {c.message}" for c in kind(kind_name).validate(obj, old)]


def cells(kind_name: str, obj: dict) -> dict[str, object]:
    return {c.name: c.get(obj) for c in kind(kind_name).table_columns()}


def ago(secs: int) -> str:
    t = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=secs)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# kubectl run nginx --image=nginx: exactly the body kubectl sends
RUN_POD = {"kind": "Pod", "apiVersion": "v1",
           "metadata": {"name": "nginx", "creationTimestamp": None, "labels": {"run": "nginx"}},
           "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}],
                    "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"},
           "status": {}}


def pod(**spec) -> dict:
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
         "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
    p["spec"].update(spec)
    return p


def svc(**spec) -> dict:
    s = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    s["spec"].update(spec)
    return s


# ---------------------------------------------------------------------------- registration

def test_kinds_registered_with_discovery_facts():
    p = kind("Pod")
    assert p.plural == "pods" and p.short_names == ("po",) and p.categories == ("all",)
    assert set(p.subresources) >= {"status", "binding", "eviction", "log", "exec", "attach",
                                   "portforward", "ephemeralcontainers"}
    assert p.graceful_delete and not p.has_generation
    assert p.proto == "k8s.io.api.core.v1.Pod"
    rc = kind("ReplicationController")
    assert rc.short_names == ("rc",) and rc.has_generation and rc.scale is not None
    assert rc.scale.selector({"spec": {"selector": {"b": "2", "a": "1"}}}) == "a=1,b=2"
    assert kind("Service").short_names == ("svc",) and kind("Service").categories == ("all",)
    assert kind("Endpoints").short_names == ("ep",) and kind("Endpoints").singular == "endpoints"
    assert not kind("Node").namespaced and kind("Node").short_names == ("no",)
    assert not kind("PersistentVolume").namespaced
    for name, short in (("ServiceAccount", "sa"), ("Event", "ev"), ("PersistentVolume", "pv"),
                        ("PersistentVolumeClaim", "pvc"), ("LimitRange", "limits"),
                        ("ResourceQuota", "quota")):
        assert kind(name).short_names == (short,)
        assert kind(name).proto == f"k8s.io.api.core.v1.{name}"
    assert kind("PodTemplate").plural == "podtemplates"


# ---------------------------------------------------------------------------- pod defaults

def test_kubectl_run_pod_gets_every_default():
    p = defaulted("Pod", RUN_POD)
    spec = p["spec"]
    c = spec["containers"][0]
    assert c == {"name": "nginx", "image": "nginx", "resources": {},
                 "imagePullPolicy": "Always", "terminationMessagePath": "/dev/termination-log",
                 "terminationMessagePolicy": "File"}
    assert spec["restartPolicy"] == "Always"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["serviceAccountName"] == "default" and spec["serviceAccount"] == "default"
    assert spec["securityContext"] == {}
    assert spec["enableServiceLinks"] is True
    assert spec["preemptionPolicy"] == "PreemptLowerPriority"
    assert spec["priority"] == 0
    assert spec["tolerations"] == [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300}]
    assert p["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert kind("Pod").validate(p, None) == []


def test_defaulting_is_idempotent():
    once = defaulted("Pod", RUN_POD)
    twice = defaulted("Pod", once)
    assert once == twice


@pytest.mark.parametrize("image,policy", [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.25", "IfNotPresent"),
    ("registry.local:5000/team/app", "Always"), ("registry.local:5000/team/app:v2", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent"), ("nginx:latest@sha256:" + "a" * 64, "Always"),
])
def test_image_pull_policy_default(image, policy):
    p = defaulted("Pod", pod(containers=[{"name": "c", "image": image}]))
    assert p["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_container_port_probe_env_and_volume_defaults():
    p = defaulted("Pod", pod(
        containers=[{"name": "c", "image": "nginx:1", "ports": [{"containerPort": 80}],
                     "livenessProbe": {"httpGet": {"port": 80}},
                     "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5},
                     "env": [{"name": "POD", "valueFrom": {"fieldRef": {
                         "fieldPath": "metadata.name"}}}],
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        volumes=[{"name": "data"}, {"name": "cfg", "configMap": {"name": "cfg"}},
                 {"name": "sec", "secret": {"secretName": "s"}}]))
    c = p["spec"]["containers"][0]
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert c["livenessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                                  "timeoutSeconds": 1, "periodSeconds": 10,
                                  "successThreshold": 1, "failureThreshold": 3}
    assert c["readinessProbe"]["periodSeconds"] == 5
    assert c["readinessProbe"]["failureThreshold"] == 3
    assert c["env"][0]["valueFrom"]["fieldRef"] == {"fieldPath": "metadata.name",
                                                    "apiVersion": "v1"}
    vols = {v["name"]: v for v in p["spec"]["volumes"]}
    assert vols["data"]["emptyDir"] == {}
    assert vols["cfg"]["configMap"]["defaultMode"] == 420
    assert vols["sec"]["secret"]["defaultMode"] == 420
    assert kind("Pod").validate(p, None) == []


def test_requests_default_from_limits_and_qos_classes():
    guaranteed = defaulted("Pod", pod(containers=[{"name": "c", "image": "x:1", "resources": {
        "limits": {"cpu": "500m", "memory": "128Mi"}}}]))
    res = guaranteed["spec"]["containers"][0]["resources"]
    assert res["requests"] == {"cpu": "500m", "memory": "128Mi"}
    assert guaranteed["status"]["qosClass"] == "Guaranteed"

    partial = defaulted("Pod", pod(containers=[{"name": "c", "image": "x:1", "resources": {
        "limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "250m"}}}]))
    assert partial["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "250m",
                                                                         "memory": "1Gi"}
    assert partial["status"]["qosClass"] == "Burstable"

    burstable = defaulted("Pod", pod(containers=[{"name": "c", "image": "x:1", "resources": {
        "requests": {"memory": "64Mi"}}}]))
    assert burstable["status"]["qosClass"] == "Burstable"

    two = pod(containers=[
        {"name": "a", "image": "x:1", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
        {"name": "b", "image": "x:1"}])
    assert defaulted("Pod", two)["status"]["qosClass"] == "Burstable"
    assert pod_qos_class({"containers": [{"resources": {"requests": {"cpu": "0"}}}]}) == \
        "BestEffort"
    assert pod_qos_class({"containers": [{"resources": {
        "limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m",
                                                              "memory": "1Gi"}}}]}) == \
        "Guaranteed"


def test_existing_toleration_is_not_duplicated_and_wildcard_tolerates_all():
    p = defaulted("Pod", pod(tolerations=[{"key": "node.kubernetes.io/not-ready",
                                           "operator": "Exists", "effect": "NoExecute",
                                           "tolerationSeconds": 60}]))
    keys = [t["key"] for t in p["spec"]["tolerations"]]
    assert keys == ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
    assert p["spec"]["tolerations"][0]["tolerationSeconds"] == 60
    p = defaulted("Pod", pod(tolerations=[{"operator": "Exists"}]))
    assert p["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_service_account_alias_and_host_network_ports():
    p = defaulted("Pod", pod(serviceAccount="builder", hostNetwork=True, containers=[
        {"name": "c", "image": "x:1", "ports": [{"containerPort": 8080}]}]))
    assert p["spec"]["serviceAccountName"] == "builder" == p["spec"]["serviceAccount"]
    assert p["spec"]["containers"][0]["ports"][0]["hostPort"] == 8080


def test_pod_template_defaults_leave_pod_only_fields_out():
    tpl = {"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "web", "image": "nginx:1.25",
                                    "resources": {"limits": {"cpu": "1"}}}]}}
    default_pod_template(tpl)
    spec = tpl["spec"]
    assert tpl["metadata"] == {"labels": {"app": "web"}, "creationTimestamp": None}
    assert spec["restartPolicy"] == "Always" and spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30 and spec["securityContext"] == {}
    assert spec["schedulerName"] == "default-scheduler"
    for pod_only in ("enableServiceLinks", "serviceAccountName", "tolerations", "priority"):
        assert pod_only not in spec
    assert "requests" not in spec["containers"][0]["resources"]
    assert validate_pod_template(tpl, "spec.template") == []
    bare = {"containers": [{"name": "a", "image": "b"}]}
    default_pod_spec(bare)
    assert validate_pod_spec(bare, "spec.template.spec") == []


# ---------------------------------------------------------------------------- pod validation

LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
             "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
             "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")


@pytest.mark.parametrize("spec,expected", [
    ({"containers": []}, "spec.containers: Required value"),
    ({"containers": [{"name": "c"}]}, "spec.containers[0].image: Required value"),
    ({"containers": [{"name": "Web_1", "image": "x"}]},
     f'spec.containers[0].name: Invalid value: "Web_1": {LABEL_MSG}'),
    ({"containers": [{"image": "x"}]}, "spec.containers[0].name: Required value"),
    ({"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]},
     'spec.containers[1].name: Duplicate value: "a"'),
    ({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 70000}]}]},
     ("spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and "
     "65535, inclusive")),
    ({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80,
                                                             "hostPort": -1}]}]},
     ("spec.containers[0].ports[0].hostPort: Invalid value: -1: must be between 1 and 65535, "
     "inclusive")),
    ({"containers": [{"name": "a", "image": "x", "ports": [{"name": "http"}]}]},
     "spec.containers[0].ports[0].containerPort: Required value"),
    ({"containers": [{"name": "a", "image": "x", "ports": [
        {"containerPort": 80, "name": "metrics-endpoint"}]}]},
     ('spec.containers[0].ports[0].name: Invalid value: "metrics-endpoint": must be no more '
     'than 15 characters')),
    ({"containers": [{"name": "a", "image": "x", "ports": [
        {"containerPort": 80, "name": "web"}, {"containerPort": 81, "name": "web"}]}]},
     'spec.containers[0].ports[1].name: Duplicate value: "web"'),
    ({"containers": [{"name": "a", "image": "x", "ports": [
        {"containerPort": 80, "protocol": "HTTP"}]}]},
     ('spec.containers[0].ports[0].protocol: Unsupported value: "HTTP": supported values: '
     '"SCTP", "TCP", "UDP"')),
    ({"containers": [{"name": "a", "image": "x", "env": [{"name": "A=B", "value": "1"}]}]},
     ('spec.containers[0].env[0].name: Invalid value: "A=B": a valid environment variable '
     "name must consist only of printable ASCII characters other than '='")),
    ({"containers": [{"name": "a", "image": "x", "volumeMounts": [
        {"name": "x", "mountPath": "/x"}]}]},
     'spec.containers[0].volumeMounts[0].name: Not found: "x"'),
    ({"containers": [{"name": "a", "image": "x"}],
      "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]},
     'spec.volumes[1].name: Duplicate value: "v"'),
    ({"containers": [{"name": "a", "image": "x"}],
      "volumes": [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/tmp"}}]},
     "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type"),
    ({"containers": [{"name": "a", "image": "x"}], "volumes": [{"name": "My-Vol"}]},
     f'spec.volumes[0].name: Invalid value: "My-Vol": {LABEL_MSG}'),
    ({"containers": [{"name": "a", "image": "x", "resources": {
        "requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]},
     ('spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal '
     'to cpu limit of 1')),
    ({"containers": [{"name": "a", "image": "x", "resources": {"limits": {"gpu": "1"}}}]},
     ('spec.containers[0].resources.limits[gpu]: Invalid value: "gpu": must be a standard '
     'resource for containers')),
    ({"containers": [{"name": "a", "image": "x", "resources": {"requests": {
        "memory": "-1Gi"}}}]},
     ('spec.containers[0].resources.requests[memory]: Invalid value: "-1Gi": must be greater '
     'than or equal to 0')),
    ({"containers": [{"name": "a", "image": "x"}], "restartPolicy": "Sometimes"},
     ('spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", '
     '"OnFailure", "Never"')),
    ({"containers": [{"name": "a", "image": "x"}], "dnsPolicy": "Google"},
     ('spec.dnsPolicy: Unsupported value: "Google": supported values: '
     '"ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"')),
    ({"containers": [{"name": "a", "image": "x", "livenessProbe": {
        "exec": {"command": ["true"]}, "successThreshold": 2}}]},
     "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"),
    ({"containers": [{"name": "a", "image": "x", "startupProbe": {
        "tcpSocket": {"port": 8080}, "successThreshold": 3}}]},
     "spec.containers[0].startupProbe.successThreshold: Invalid value: 3: must be 1"),
    ({"containers": [{"name": "a", "image": "x", "readinessProbe": {"periodSeconds": 3}}]},
     "spec.containers[0].readinessProbe: Required value: must specify a handler type"),
    ({"containers": [{"name": "a", "image": "x", "imagePullPolicy": "Sometimes"}]},
     ('spec.containers[0].imagePullPolicy: Unsupported value: "Sometimes": supported values: '
     '"Always", "IfNotPresent", "Never"')),
    ({"containers": [{"name": "a", "image": "x"}], "nodeSelector": {"disk": "ssd fast"}},
     ('spec.nodeSelector: Invalid value: "ssd fast": a valid label must be an empty string or '
     "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
     "alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
     "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")),
    ({"containers": [{"name": "a", "image": "x"}],
      "initContainers": [{"name": "a", "image": "y"}]},
     'spec.initContainers[0].name: Duplicate value: "a"'),
    ({"containers": [{"name": "a", "image": "x"}],
      "initContainers": [{"name": "i", "image": "y", "readinessProbe": {
          "exec": {"command": ["true"]}}}]},
     "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers"),
    ({"containers": [{"name": "a", "image": "x"}], "activeDeadlineSeconds": 0},
     ("spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, "
     "inclusive")),
    ({"containers": [{"name": "a", "image": "x", "env": [
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}]},
     "spec.containers[0].env[0].valueFrom.secretKeyRef.key: Required value"),
    ({"containers": [{"name": "a", "image": "x"}], "tolerations": [
        {"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}]},
     ("spec.tolerations[0].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' "
     "when `tolerationSeconds` is set")),
])
def test_pod_validation_messages(spec, expected):
    errs = errors("Pod", {"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    assert expected in errs, errs


def test_pod_name_must_be_dns_subdomain_and_spec_required():
    errs = errors("Pod", pod() | {"metadata": {"name": "Bad_Name"}})
    assert errs and errs[0].startswith('metadata.name: Invalid value: "Bad_Name": a lowercase '
                                       'RFC 1123 subdomain')
    errs = errors("Pod", pod() | {"metadata": {}})
    assert "metadata.name: Required value: name or generateName is required" in errs


def test_validate_pod_spec_uses_the_given_path():
    spec = {"containers": [{"name": "c"}], "restartPolicy": "Never"}
    default_pod_spec(spec)
    msgs = [f"{c.field}: {c.message}" for c in validate_pod_spec(spec, "spec.template.spec")]
    assert msgs == ["spec.template.spec.containers[0].image: Required value"]
    tpl = {"metadata": {"labels": {"app": "-bad"}}, "spec": {"containers": [
        {"name": "c", "image": "x"}]}}
    default_pod_template(tpl)
    msgs = [c.field for c in validate_pod_template(tpl, "spec.template")]
    assert msgs == ["spec.template.labels"]


# ---------------------------------------------------------------------------- pod updates

def test_pod_update_may_change_image_but_not_ports():
    old = defaulted("Pod", RUN_POD)
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "nginx:1.27"
    assert errors("Pod", new, old) == []

    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    errs = kind("Pod").validate(defaulted("Pod", new), old)
    assert len(errs) == 1 and errs[0].field == "spec" and errs[0].reason == "FieldValueForbidden"
    assert errs[0].message.startswith(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
        "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
        "set to 1 if it was previously negative)\n  core.PodSpec{")
    assert "containers[0].ports" in errs[0].message


def test_pod_update_tolerations_deadline_and_containers():
    old = defaulted("Pod", RUN_POD)
    # adding a toleration is fine
    new = copy.deepcopy(old)
    new["spec"]["tolerations"].append({"key": "gpu", "operator": "Exists"})
    assert errors("Pod", new, old) == []
    # removing one is not
    new = copy.deepcopy(old)
    new["spec"]["tolerations"] = new["spec"]["tolerations"][:1] + [
        {"key": "node.kubernetes.io/unreachable", "operator": "Equal", "value": "x",
         "effect": "NoExecute"}]
    assert "spec.tolerations: Forbidden: existing toleration can not be modified except its " \
           "tolerationSeconds" in errors("Pod", new, old)
    # activeDeadlineSeconds may be set, then only lowered
    new = copy.deepcopy(old)
    new["spec"]["activeDeadlineSeconds"] = 100
    assert errors("Pod", new, old) == []
    newer = copy.deepcopy(new)
    newer["spec"]["activeDeadlineSeconds"] = 200
    assert "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to " \
           "previous value" in errors("Pod", newer, defaulted("Pod", new))
    # containers cannot be added
    new = copy.deepcopy(old)
    new["spec"]["containers"].append({"name": "side", "image": "busybox"})
    assert errors("Pod", new, old) == [
        "spec.containers: Forbidden: pod updates may not add or remove containers"]
    # nor the grace period changed
    new = copy.deepcopy(old)
    new["spec"]["terminationGracePeriodSeconds"] = 5
    assert errors("Pod", new, old)[0].startswith("spec: Forbidden: pod updates may not change")


def test_pod_update_with_changed_resources_reports_qos():
    old = defaulted("Pod", RUN_POD)
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    errs = errors("Pod", new, old)
    assert any(e.startswith("metadata: Invalid value:") and "Pod QOS is immutable" in e
               for e in errs)
    assert any(e.startswith("spec: Forbidden: pod updates") for e in errs)


def test_ephemeral_containers_forbidden_on_create():
    errs = errors("Pod", pod(ephemeralContainers=[{"name": "dbg", "image": "busybox"}]))
    assert "spec.ephemeralContainers: Forbidden: cannot be set on create" in errs


# ---------------------------------------------------------------------------- pod table

def cs(name="c", ready=False, restarts=0, **state):
    return {"name": name, "ready": ready, "restartCount": restarts, "state": state}


def status_pod(containers=1, inits=0, **status):
    p = {"metadata": {"name": "p", "creationTimestamp": ago(900)},
         "spec": {"containers": [{"name": f"c{i}", "image": "x"} for i in range(containers)],
                  "initContainers": [{"name": f"i{i}", "image": "x"} for i in range(inits)]},
         "status": status}
    return p


def test_pod_cells_running():
    p = status_pod(2, phase="Running", podIP="10.244.1.5",
                   containerStatuses=[cs("c0", True, running={}), cs("c1", False, running={})])
    p["spec"]["nodeName"] = "worker-1"
    c = cells("Pod", p)
    assert (c["Ready"], c["Status"], c["Restarts"], c["Age"]) == ("1/2", "Running", "0", "15m")
    assert (c["IP"], c["Node"], c["Nominated Node"], c["Readiness Gates"]) == \
        ("10.244.1.5", "worker-1", "<none>", "<none>")
    assert [col.name for col in kind("Pod").table_columns() if col.priority == 0] == \
        ["Name", "Ready", "Status", "Restarts", "Age"]


def test_pod_cells_pending_and_waiting_reasons():
    assert pod_summary(status_pod(phase="Pending")) == ("0/1", "Pending", "0")
    p = status_pod(phase="Pending", containerStatuses=[
        cs(waiting={"reason": "ContainerCreating"})])
    assert pod_summary(p)[1] == "ContainerCreating"
    p = status_pod(phase="Pending", containerStatuses=[cs(waiting={"reason": "ErrImagePull"})])
    assert pod_summary(p)[1] == "ErrImagePull"


def test_pod_cells_crashloop_with_restart_age():
    p = status_pod(phase="Running", containerStatuses=[{
        "name": "c0", "ready": False, "restartCount": 5,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                     "finishedAt": ago(30)}}}])
    ready, status, restarts = pod_summary(p)
    assert (ready, status) == ("0/1", "CrashLoopBackOff")
    assert restarts in ("5 (30s ago)", "5 (31s ago)")


def test_pod_cells_terminated_reasons():
    p = status_pod(phase="Succeeded", containerStatuses=[
        cs(terminated={"exitCode": 0, "reason": "Completed"})])
    assert pod_summary(p) == ("0/1", "Completed", "0")
    p = status_pod(phase="Failed", containerStatuses=[
        cs(terminated={"exitCode": 137, "reason": "OOMKilled"})])
    assert pod_summary(p)[1] == "OOMKilled"
    p = status_pod(phase="Failed", containerStatuses=[cs(terminated={"exitCode": 2})])
    assert pod_summary(p)[1] == "ExitCode:2"
    p = status_pod(phase="Failed", containerStatuses=[cs(terminated={"exitCode": 1,
                                                                     "reason": "Error"})])
    assert pod_summary(p)[1] == "Error"
    # a finished sidecar-less container next to a running one: Running / NotReady
    p = status_pod(2, phase="Running", conditions=[{"type": "Ready", "status": "False"}],
                   containerStatuses=[cs("c0", True, running={}),
                                      cs("c1", terminated={"exitCode": 0,
                                                           "reason": "Completed"})])
    assert pod_summary(p) == ("1/2", "NotReady", "0")


def test_pod_cells_init_containers():
    p = status_pod(1, 1, phase="Pending",
                   initContainerStatuses=[cs("i0", running={})],
                   containerStatuses=[cs("c0", waiting={"reason": "PodInitializing"})])
    assert pod_summary(p)[1] == "Init:0/1"
    p = status_pod(1, 2, phase="Pending", initContainerStatuses=[
        cs("i0", terminated={"exitCode": 0, "reason": "Completed"}),
        cs("i1", waiting={"reason": "PodInitializing"})])
    assert pod_summary(p)[1] == "Init:1/2"
    p = status_pod(1, 1, phase="Pending", initContainerStatuses=[
        cs("i0", waiting={"reason": "CrashLoopBackOff"})])
    assert pod_summary(p)[1] == "Init:CrashLoopBackOff"
    p = status_pod(1, 1, phase="Pending", initContainerStatuses=[
        cs("i0", terminated={"exitCode": 3})])
    assert pod_summary(p)[1] == "Init:ExitCode:3"
    p = status_pod(1, 1, phase="Pending",
                   initContainerStatuses=[cs("i0", terminated={"exitCode": 0,
                                                               "reason": "Completed"})],
                   containerStatuses=[cs("c0", waiting={"reason": "PodInitializing"})])
    assert pod_summary(p)[1] == "PodInitializing"


def test_pod_cells_terminating_and_evicted():
    p = status_pod(phase="Running", containerStatuses=[cs("c0", True, running={})])
    p["metadata"]["deletionTimestamp"] = ago(1)
    assert pod_summary(p) == ("1/1", "Terminating", "0")
    p = status_pod(phase="Failed", reason="Evicted")
    assert pod_summary(p)[1] == "Evicted"
    p["metadata"]["deletionTimestamp"] = ago(1)
    assert pod_summary(p)[1] == "Evicted"  # terminal phase: not Terminating


def test_pod_field_labels():
    p = defaulted("Pod", RUN_POD)
    p["spec"]["nodeName"] = "worker-1"
    p["status"]["podIPs"] = [{"ip": "10.244.1.9"}]
    f = kind("Pod").fields(p)
    assert f["spec.nodeName"] == "worker-1" and f["spec.restartPolicy"] == "Always"
    assert f["spec.schedulerName"] == "default-scheduler"
    assert f["spec.serviceAccountName"] == "default" and f["spec.hostNetwork"] == "false"
    assert f["status.phase"] == "Pending" and f["status.podIP"] == "10.244.1.9"
    assert f["status.nominatedNodeName"] == "" and f["metadata.name"] == "nginx"


# ---------------------------------------------------------------------------- ReplicationController

RC = {"apiVersion": "v1", "kind": "ReplicationController",
      "metadata": {"name": "web", "namespace": "default"},
      "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}


def test_rc_defaults():
    rc = defaulted("ReplicationController", RC)
    assert rc["spec"]["replicas"] == 1
    assert rc["spec"]["selector"] == {"app": "web"}
    assert rc["metadata"]["labels"] == {"app": "web"}
    tspec = rc["spec"]["template"]["spec"]
    assert tspec["restartPolicy"] == "Always"
    assert tspec["containers"][0]["imagePullPolicy"] == "Always"
    assert kind("ReplicationController").validate(rc, None) == []


def test_rc_selector_must_match_template():
    rc = copy.deepcopy(RC)
    rc["spec"]["selector"] = {"app": "api"}
    assert errors("ReplicationController", rc) == [
        ('spec.template.metadata.labels: Invalid value: map[string]string{"app":"web"}: '
        '`selector` does not match template `labels`')]
    rc = copy.deepcopy(RC)
    rc["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: ' \
           '"Always"' in errors("ReplicationController", rc)
    rc = copy.deepcopy(RC)
    rc["spec"]["replicas"] = -1
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in \
        errors("ReplicationController", rc)


def test_rc_cells():
    rc = defaulted("ReplicationController", RC)
    rc["spec"]["replicas"] = 3
    rc["status"] = {"replicas": 3, "readyReplicas": 2}
    rc["metadata"]["creationTimestamp"] = ago(900)
    c = cells("ReplicationController", rc)
    assert [c[k] for k in ("Name", "Desired", "Current", "Ready", "Age", "Containers", "Images",
                           "Selector")] == ["web", 3, 3, 2, "15m", "web", "nginx", "app=web"]


def test_go_repr():
    assert go_repr({"b": "2", "a": "1"}) == 'map[string]string{"a":"1", "b":"2"}'
    assert go_repr(None) == "map[string]string(nil)"
    assert go_repr(["10.96.0.1"]) == '[]string{"10.96.0.1"}'


# ---------------------------------------------------------------------------- Service

def test_service_defaults():
    s = defaulted("Service", svc())
    spec = s["spec"]
    assert spec["type"] == "ClusterIP" and spec["sessionAffinity"] == "None"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert "externalTrafficPolicy" not in spec
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert "clusterIP" not in spec  # allocation is the registry's job
    assert s["status"] == {"loadBalancer": {}}
    assert kind("Service").validate(s, None) == []

    s = defaulted("Service", svc(type="NodePort", sessionAffinity="ClientIP",
                                 clusterIP="10.96.0.20"))
    spec = s["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster"
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    assert spec["clusterIPs"] == ["10.96.0.20"]
    assert kind("Service").validate(s, None) == []

    s = defaulted("Service", svc(clusterIP="None", selector=None))
    assert s["spec"]["ipFamilyPolicy"] == "RequireDualStack"
    s = defaulted("Service", {"metadata": {"name": "db"}, "spec": {
        "type": "ExternalName", "externalName": "db.example.com"}})
    assert "ipFamilies" not in s["spec"] and "internalTrafficPolicy" not in s["spec"]
    assert kind("Service").validate(s, None) == []


@pytest.mark.parametrize("spec,expected", [
    ({"ports": []}, "spec.ports: Required value"),
    ({"type": "Magic"}, ('spec.type: Unsupported value: "Magic": supported values: '
                        '"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"')),
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]},
     ("spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The "
     "range of valid ports is 30000-32767")),
    ({"ports": [{"port": 80, "nodePort": 30080}]},
     "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"),
    ({"ports": [{"port": 0}]},
     "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"),
    ({"ports": [{"port": 80}, {"port": 443}]}, "spec.ports[0].name: Required value"),
    ({"ports": [{"port": 80, "name": "web"}, {"port": 443, "name": "web"}]},
     'spec.ports[1].name: Duplicate value: "web"'),
    ({"clusterIP": "10.96.0.300"},
     ('spec.clusterIPs[0]: Invalid value: "10.96.0.300": must be a valid IP address, (e.g. '
     '10.9.8.7 or 2001:db8::ffff)')),
    ({"type": "ExternalName", "ports": None},
     "spec.externalName: Required value"),
    ({"type": "ExternalName", "externalName": "Bad_Host"},
     ('spec.externalName: Invalid value: "Bad_Host": a lowercase RFC 1123 subdomain must '
     "consist of lower case alphanumeric characters, '-' or '.', and must start and end with "
     "an alphanumeric character (e.g. 'example.com', regex used for validation is "
     "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")),
    ({"sessionAffinity": "Sticky"},
     'spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None"'),
    ({"sessionAffinity": "ClientIP",
      "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 90000}}},
     ("spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 90000: must be "
     "greater than 0 and less than 86400")),
    ({"selector": {"app": "web app"}},
     ('spec.selector: Invalid value: "web app": a valid label must be an empty string or '
     "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
     "alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
     "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")),
    ({"type": "LoadBalancer", "clusterIP": "None"},
     ('spec.clusterIPs[0]: Invalid value: "None": may not be set to \'None\' for LoadBalancer '
     'services')),
    ({"ports": [{"port": 80, "targetPort": "http-web-server-x"}]},
     ('spec.ports[0].targetPort: Invalid value: "http-web-server-x": must be no more than 15 '
     'characters')),
])
def test_service_validation_messages(spec, expected):
    errs = errors("Service", svc(**spec))
    assert expected in errs, errs


def test_service_name_is_dns1035():
    errs = errors("Service", svc() | {"metadata": {"name": "1web", "namespace": "default"}})
    assert errs == [('metadata.name: Invalid value: "1web": a DNS-1035 label must consist of '
                    "lower case alphanumeric characters or '-', start with an alphabetic "
                    "character, and end with an alphanumeric character (e.g. 'my-name',  or "
                    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")]


def test_service_cluster_ip_immutable_and_type_changes():
    old = defaulted("Service", svc(clusterIP="10.96.0.10"))
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = "10.96.0.11"
    prepare_service_update(new, old)
    assert errors("Service", new, old) == [
        'spec.clusterIPs[0]: Invalid value: []string{"10.96.0.11"}: may not change once set']

    # a PUT without clusterIP keeps the allocated one
    new = defaulted("Service", svc())
    prepare_service_update(new, old)
    assert new["spec"]["clusterIP"] == "10.96.0.10" and errors("Service", new, old) == []

    # to ExternalName: clusterIP and families are wiped, and that validates
    new = copy.deepcopy(old)
    new["spec"].update(type="ExternalName", externalName="example.com")
    new = defaulted("Service", new)
    prepare_service_update(new, old)
    assert "clusterIP" not in new["spec"] and "ipFamilies" not in new["spec"]
    assert errors("Service", new, old) == []

    # NodePort back to ClusterIP: unchanged nodePorts and externalTrafficPolicy are dropped
    np_old = defaulted("Service", svc(type="NodePort", clusterIP="10.96.0.12",
                                      ports=[{"port": 80, "nodePort": 30080}]))
    new = copy.deepcopy(np_old)
    new["spec"]["type"] = "ClusterIP"
    prepare_service_update(new, np_old)
    assert "nodePort" not in new["spec"]["ports"][0]
    assert "externalTrafficPolicy" not in new["spec"]
    assert errors("Service", new, np_old) == []

    # a NodePort PUT that omits nodePort keeps it
    new = defaulted("Service", svc(type="NodePort", clusterIP="10.96.0.12"))
    prepare_service_update(new, np_old)
    assert new["spec"]["ports"][0]["nodePort"] == 30080


def test_service_cells():
    s = defaulted("Service", svc(type="NodePort", clusterIP="10.96.0.5", ports=[
        {"name": "http", "port": 80, "nodePort": 30080}, {"name": "https", "port": 443}]))
    s["metadata"]["creationTimestamp"] = ago(7200)
    c = cells("Service", s)
    assert [c[k] for k in ("Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age",
                           "Selector")] == \
        ["web", "NodePort", "10.96.0.5", "<none>", "80:30080/TCP,443/TCP", "120m", "app=web"]

    lb = defaulted("Service", svc(type="LoadBalancer", clusterIP="10.96.0.6"))
    assert cells("Service", lb)["External-IP"] == "<pending>"
    lb["status"]["loadBalancer"] = {"ingress": [{"ip": "172.30.0.201"}, {"ip": "172.30.0.200"}]}
    assert cells("Service", lb)["External-IP"] == "172.30.0.200,172.30.0.201"
    lb["spec"]["externalIPs"] = ["1.2.3.4"]
    assert cells("Service", lb)["External-IP"] == "172.30.0.200,172.30.0.201,1.2.3.4"

    ext = defaulted("Service", {"metadata": {"name": "db"}, "spec": {
        "type": "ExternalName", "externalName": "db.example.com"}})
    c = cells("Service", ext)
    assert (c["Cluster-IP"], c["External-IP"], c["Port(s)"], c["Selector"]) == \
        ("<none>", "db.example.com", "<none>", "<none>")
    headless = defaulted("Service", svc(clusterIP="None"))
    assert cells("Service", headless)["Cluster-IP"] == "None"
    f = kind("Service").fields(headless)
    assert f["spec.clusterIP"] == "None" and f["spec.type"] == "ClusterIP"


# ---------------------------------------------------------------------------- Endpoints

def test_endpoints_cells_and_validation():
    ep = {"metadata": {"name": "web", "namespace": "default"}, "subsets": [
        {"addresses": [{"ip": f"10.244.1.{i}"} for i in range(1, 5)], "ports": [{"port": 80}]}]}
    ep = defaulted("Endpoints", ep)
    assert ep["subsets"][0]["ports"][0]["protocol"] == "TCP"
    assert cells("Endpoints", ep)["Endpoints"] == \
        "10.244.1.1:80,10.244.1.2:80,10.244.1.3:80 + 1 more..."
    assert cells("Endpoints", {"metadata": {"name": "e"}})["Endpoints"] == "<none>"
    assert kind("Endpoints").validate(ep, None) == []
    # the unprivileged lab network uses 127/8 pod addresses; they must be accepted
    lo = {"metadata": {"name": "web"}, "subsets": [
        {"addresses": [{"ip": "127.244.1.5"}], "ports": [{"port": 80, "protocol": "TCP"}]}]}
    assert kind("Endpoints").validate(lo, None) == []
    bad = {"metadata": {"name": "web"}, "subsets": [
        {"addresses": [{"ip": "nope"}], "ports": [{"port": 80, "protocol": "TCP"}]}]}
    assert [f"{c.field}: {c.message}" for c in kind("Endpoints").validate(bad, None)] == [
        ('subsets[0].addresses[0].ip: Invalid value: "nope": must be a valid IP address, (e.g. '
        '10.9.8.7 or 2001:db8::ffff)')]


# ---------------------------------------------------------------------------- Node

def node(ready: str | None = "True", **spec) -> dict:
    n = {"metadata": {"name": "worker-1", "creationTimestamp": ago(86400 * 3),
                      "labels": {"kubernetes.io/hostname": "worker-1"}},
         "spec": spec,
         "status": {"conditions": [], "addresses": [{"type": "InternalIP",
                                                     "address": "172.30.0.101"}],
                    "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12",
                                 "kernelVersion": "6.1.0", "containerRuntimeVersion":
                                     "kubelab://0.1.0"}}}
    if ready is not None:
        n["status"]["conditions"].append({"type": "Ready", "status": ready})
    return n


def test_node_status_and_roles():
    c = cells("Node", node())
    assert [c[k] for k in ("Name", "Status", "Roles", "Age", "Version", "Internal-IP",
                           "External-IP", "OS-Image", "Kernel-Version",
                           "Container-Runtime")] == \
        ["worker-1", "Ready", "<none>", "3d", "v1.32.0", "172.30.0.101", "<none>",
         "Debian GNU/Linux 12", "6.1.0", "kubelab://0.1.0"]
    assert cells("Node", node("False"))["Status"] == "NotReady"
    assert cells("Node", node("Unknown"))["Status"] == "NotReady"
    assert cells("Node", node(None))["Status"] == "Unknown"
    assert cells("Node", node(unschedulable=True))["Status"] == "Ready,SchedulingDisabled"
    n = node()
    n["metadata"]["labels"].update({"node-role.kubernetes.io/control-plane": "",
                                    "node-role.kubernetes.io/worker": ""})
    assert cells("Node", n)["Roles"] == "control-plane,worker"
    assert kind("Node").fields(node(unschedulable=True))["spec.unschedulable"] == "true"
    assert kind("Node").fields(node())["spec.unschedulable"] == "false"
    assert kind("Node").validate(node(), None) == []


def test_node_taint_validation():
    n = node(taints=[{"key": "dedicated", "value": "gpu", "effect": "NoRun"}])
    assert [f"{c.field}: {c.message}" for c in kind("Node").validate(n, None)] == [
        ('spec.taints[0].effect: Unsupported value: "NoRun": supported values: "NoSchedule", '
        '"PreferNoSchedule", "NoExecute"')]


# ---------------------------------------------------------------------------- others

def test_service_account_and_event():
    sa = {"metadata": {"name": "default", "creationTimestamp": ago(900)},
          "secrets": [{"name": "default-token"}]}
    assert cells("ServiceAccount", sa) == {"Name": "default", "Secrets": 1, "Age": "15m"}
    ev = {"metadata": {"name": "web.17f", "namespace": "default"},
          "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default"},
          "reason": "Scheduled", "type": "Normal", "message": "Successfully assigned\n",
          "source": {"component": "default-scheduler"}, "firstTimestamp": ago(3600),
          "lastTimestamp": ago(900), "count": 1}
    assert kind("Event").validate(ev, None) == []
    c = cells("Event", ev)
    assert [c[k] for k in ("Last Seen", "Type", "Reason", "Object", "Message")] == \
        ["15m", "Normal", "Scheduled", "pod/web-1", "Successfully assigned"]
    assert (c["Source"], c["Count"], c["Name"], c["First Seen"]) == \
        ("default-scheduler", 1, "web.17f", "60m")
    f = kind("Event").fields(ev)
    assert f["involvedObject.kind"] == "Pod" and f["involvedObject.name"] == "web-1"
    assert f["source"] == "default-scheduler" and f["type"] == "Normal"
    assert f["reason"] == "Scheduled"
    bad = copy.deepcopy(ev)
    bad["involvedObject"]["namespace"] = "other"
    assert [f"{c.field}: {c.message}" for c in kind("Event").validate(bad, None)] == [
        'involvedObject.namespace: Invalid value: "other": does not match event.namespace']


def test_persistent_volumes_and_claims():
    pv = defaulted("PersistentVolume", {"metadata": {"name": "pv1"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
        "hostPath": {"path": "/data"}, "storageClassName": "manual",
        "claimRef": {"namespace": "default", "name": "data"}}})
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["volumeMode"] == "Filesystem" and pv["status"]["phase"] == "Pending"
    assert kind("PersistentVolume").validate(pv, None) == []
    pv["status"]["phase"] = "Bound"
    c = cells("PersistentVolume", pv)
    assert [c[k] for k in ("Name", "Capacity", "Access Modes", "Reclaim Policy", "Status",
                           "Claim", "StorageClass", "VolumeAttributesClass", "Reason")] == \
        ["pv1", "1Gi", "RWO,ROX", "Retain", "Bound", "default/data", "manual", "<unset>", ""]
    noacc = {"metadata": {"name": "pv2"}, "spec": {"capacity": {"storage": "1Gi"},
                                                   "hostPath": {"path": "/d"}}}
    assert "spec.accessModes: Required value" in errors("PersistentVolume", noacc)

    pvc = defaulted("PersistentVolumeClaim", {"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    assert pvc["spec"]["volumeMode"] == "Filesystem" and pvc["status"]["phase"] == "Pending"
    assert kind("PersistentVolumeClaim").validate(pvc, None) == []
    assert errors("PersistentVolumeClaim", {"metadata": {"name": "x"}, "spec": {}}) == [
        "spec.accessModes: Required value: at least 1 access mode is required",
        "spec.resources[storage]: Required value"]
    bound = copy.deepcopy(pvc)
    bound["spec"]["volumeName"] = "pv1"
    assert kind("PersistentVolumeClaim").validate(bound, pvc) == []  # binding is allowed once
    bound["status"] = {"phase": "Bound", "capacity": {"storage": "1Gi"},
                       "accessModes": ["ReadWriteOnce"]}
    c = cells("PersistentVolumeClaim", bound)
    assert [c[k] for k in ("Status", "Volume", "Capacity", "Access Modes", "StorageClass")] == \
        ["Bound", "pv1", "1Gi", "RWO", ""]
    changed = copy.deepcopy(bound)
    changed["spec"]["accessModes"] = ["ReadWriteMany"]
    errs = kind("PersistentVolumeClaim").validate(changed, bound)
    assert errs and errs[0].message.startswith(
        "Forbidden: spec is immutable after creation except resources.requests and "
        "volumeAttributesClassName for bound claims")


def test_podtemplate_limitrange_quota():
    pt = defaulted("PodTemplate", {"metadata": {"name": "t"}, "template": {
        "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}})
    assert kind("PodTemplate").validate(pt, None) == []
    assert cells("PodTemplate", pt) == {"Name": "t", "Containers": "c", "Images": "nginx:1",
                                        "Pod Labels": "app=x"}
    lr = defaulted("LimitRange", {"metadata": {"name": "lr"}, "spec": {"limits": [
        {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]}})
    item = lr["spec"]["limits"][0]
    assert item["default"] == {"cpu": "2"}
    assert item["defaultRequest"] == {"cpu": "2", "memory": "64Mi"}
    assert kind("LimitRange").validate(lr, None) == []
    rq = {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10"}},
          "status": {"hard": {"pods": "10", "requests.cpu": "4", "limits.cpu": "8"},
                     "used": {"pods": "3", "requests.cpu": "1"}}}
    assert kind("ResourceQuota").validate(rq, None) == []
    c = cells("ResourceQuota", rq)
    assert (c["Request"], c["Limit"]) == ("pods: 3/10, requests.cpu: 1/4", "limits.cpu: 0/8")
    bad = {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1.5"}}}
    assert [f"{c.field}: {c.message}" for c in kind("ResourceQuota").validate(bad, None)] == [
        'spec.hard[pods]: Invalid value: "1.5": must be an integer']


def test_pod_binding_sets_node_name_once():
    old = defaulted("Pod", RUN_POD)
    bound = copy.deepcopy(old)
    bound["spec"]["nodeName"] = "worker-1"
    assert errors("Pod", bound, old) == []
    moved = copy.deepcopy(bound)
    moved["spec"]["nodeName"] = "worker-2"
    assert errors("Pod", moved, defaulted("Pod", bound))[0].startswith(
        "spec: Forbidden: pod updates may not change fields other than")


def test_service_validate_applies_update_strategy_in_place():
    """The registry validates before its before_update hook: validate itself must see the
    Service as PrepareForUpdate leaves it (PUT without clusterIP, type changes)."""
    k = kind("Service")
    old = defaulted("Service", svc(type="NodePort", clusterIP="10.96.0.12",
                                   ports=[{"port": 80, "nodePort": 30080}]))
    put = defaulted("Service", svc(type="NodePort"))  # kubectl replace without allocated values
    assert k.validate(put, old) == []
    assert put["spec"]["clusterIP"] == "10.96.0.12"
    assert put["spec"]["ports"][0]["nodePort"] == 30080

    patched = copy.deepcopy(old)  # kubectl patch -p '{"spec":{"type":"ClusterIP"}}'
    patched["spec"]["type"] = "ClusterIP"
    k.default(patched)
    assert k.validate(patched, old) == []
    assert "nodePort" not in patched["spec"]["ports"][0]
    assert "externalTrafficPolicy" not in patched["spec"]

    ext = copy.deepcopy(old)
    ext["spec"].update(type="ExternalName", externalName="example.com")
    k.default(ext)
    assert k.validate(ext, old) == []
    assert "clusterIP" not in ext["spec"] and "ipFamilyPolicy" not in ext["spec"]
    assert "nodePort" not in ext["spec"]["ports"][0]
