"""Workload and cluster kinds as pure dicts: defaults, validation messages, Table cells, Scale
selectors and the cron parser (apps, batch, networking, discovery, coordination, autoscaling,
storage, scheduling, policy). No server, no store."""

from __future__ import annotations

import copy
import datetime

import pytest

from apiserver.kinds import load_all
from apiserver.kinds.batch import CronError, parse_cron

REG = load_all()
UTC = datetime.UTC


def kind(group: str, kind_name: str, version: str = "v1"):
    k = REG.by_kind(group, version, kind_name)
    assert k is not None, f"{group}/{version} {kind_name} not registered"
    return k


def have_pod_templates() -> bool:
    try:
        from apiserver.kinds.core import default_pod_template, validate_pod_template  # noqa: F401
    except ImportError:
        return False
    return True


def ago(seconds: int) -> str:
    t = datetime.datetime.now(UTC) - datetime.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def causes(k, obj, old=None) -> list[str]:
    return [f"{c.field}: {c.message}" for c in k.validate(obj, old)]


def row(k, obj) -> dict:
    return {c.name: c.get(obj) for c in k.table_columns()}


def header(k) -> list[str]:
    return [c.name.upper() for c in k.table_columns() if c.priority == 0]


def wide_header(k) -> list[str]:
    return [c.name.upper() for c in k.table_columns()]


# ------------------------------------------------------------------------------- fixtures
def kubectl_create_deployment() -> dict:
    """What `kubectl create deployment web --image=nginx` sends."""
    return {"kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": None,
                         "labels": {"app": "web"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"creationTimestamp": None,
                                               "labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                                           "resources": {}}]}},
                     "strategy": {}},
            "status": {}}


def deployment() -> dict:
    d = kubectl_create_deployment()
    kind("apps", "Deployment").default(d)
    return d


def job(uid: str | None = "3d3e4b0a-1111-2222-3333-444455556666", **spec) -> dict:
    md = {"name": "pi", "namespace": "default"}
    if uid:
        md["uid"] = uid
    j = {"kind": "Job", "apiVersion": "batch/v1", "metadata": md,
         "spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "perl"}],
                                        "restartPolicy": "Never"}}, **spec}}
    kind("batch", "Job").default(j)
    return j


def cronjob(**spec) -> dict:
    """What `kubectl create cronjob hello --image=busybox --schedule='*/1 * * * *'` sends."""
    cj = {"kind": "CronJob", "apiVersion": "batch/v1",
          "metadata": {"name": "hello", "namespace": "default", "creationTimestamp": None},
          "spec": {"schedule": "*/1 * * * *",
                   "jobTemplate": {"metadata": {"name": "hello", "creationTimestamp": None},
                                   "spec": {"template": {"metadata": {"creationTimestamp": None},
                                                         "spec": {"containers": [
                                                             {"name": "hello", "image": "busybox",
                                                              "resources": {}}],
                                                             "restartPolicy": "OnFailure"}}}},
                   **spec},
          "status": {}}
    kind("batch", "CronJob").default(cj)
    return cj


def statefulset() -> dict:
    s = {"metadata": {"name": "db", "namespace": "default"},
         "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                  "template": {"metadata": {"labels": {"app": "db"}},
                               "spec": {"containers": [{"name": "pg", "image": "postgres"}]}},
                  "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                            "spec": {"accessModes": ["ReadWriteOnce"],
                                                     "resources": {"requests":
                                                                   {"storage": "1Gi"}}}}]}}
    kind("apps", "StatefulSet").default(s)
    return s


def daemonset(**strategy) -> dict:
    d = {"metadata": {"name": "agent", "namespace": "kube-system"},
         "spec": {"selector": {"matchLabels": {"app": "agent"}},
                  "template": {"metadata": {"labels": {"app": "agent"}},
                               "spec": {"containers": [{"name": "a", "image": "agent:1"}],
                                        "nodeSelector": {"kubernetes.io/os": "linux"}}}}}
    if strategy:
        d["spec"]["updateStrategy"] = strategy
    kind("apps", "DaemonSet").default(d)
    return d


def ingress(**spec) -> dict:
    base = {"ingressClassName": "nginx",
            "rules": [{"host": "web.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
    base.update(spec)
    ing = {"kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
           "metadata": {"name": "web", "namespace": "default"}, "spec": base}
    kind("networking.k8s.io", "Ingress").default(ing)
    return ing


# ------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("group,version,name,plural,short,cats,subs,namespaced,proto", [
    ("apps", "v1", "Deployment", "deployments", ("deploy",), ("all",), ("status", "scale"), True,
     "k8s.io.api.apps.v1.Deployment"),
    ("apps", "v1", "ReplicaSet", "replicasets", ("rs",), ("all",), ("status", "scale"), True,
     "k8s.io.api.apps.v1.ReplicaSet"),
    ("apps", "v1", "StatefulSet", "statefulsets", ("sts",), ("all",), ("status", "scale"), True,
     "k8s.io.api.apps.v1.StatefulSet"),
    ("apps", "v1", "DaemonSet", "daemonsets", ("ds",), ("all",), ("status",), True,
     "k8s.io.api.apps.v1.DaemonSet"),
    ("apps", "v1", "ControllerRevision", "controllerrevisions", (), (), (), True,
     "k8s.io.api.apps.v1.ControllerRevision"),
    ("batch", "v1", "Job", "jobs", (), ("all",), ("status",), True, "k8s.io.api.batch.v1.Job"),
    ("batch", "v1", "CronJob", "cronjobs", ("cj",), ("all",), ("status",), True,
     "k8s.io.api.batch.v1.CronJob"),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", ("ing",), (), ("status",), True,
     "k8s.io.api.networking.v1.Ingress"),
    ("networking.k8s.io", "v1", "IngressClass", "ingressclasses", (), (), (), False,
     "k8s.io.api.networking.v1.IngressClass"),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", (), (), (), True,
     "k8s.io.api.discovery.v1.EndpointSlice"),
    ("coordination.k8s.io", "v1", "Lease", "leases", (), (), (), True,
     "k8s.io.api.coordination.v1.Lease"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", ("hpa",),
     ("all",), ("status",), True, "k8s.io.api.autoscaling.v2.HorizontalPodAutoscaler"),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", ("sc",), (), (), False,
     "k8s.io.api.storage.v1.StorageClass"),
    ("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", ("pc",), (), (), False,
     "k8s.io.api.scheduling.v1.PriorityClass"),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", ("pdb",), (), ("status",),
     True, "k8s.io.api.policy.v1.PodDisruptionBudget"),
])
def test_registry_entries(group, version, name, plural, short, cats, subs, namespaced, proto):
    k = kind(group, name, version)
    assert (k.plural, k.short_names, k.categories, k.subresources, k.namespaced, k.proto) == \
        (plural, short, cats, subs, namespaced, proto)
    assert REG.by_resource(group, version, plural) is k


def test_generation_and_scale_flags():
    for n in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
        assert kind("apps", n).has_generation
    assert kind("batch", "Job").has_generation and kind("batch", "CronJob").has_generation
    assert {n for n in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet")
            if kind("apps", n).scale} == {"Deployment", "ReplicaSet", "StatefulSet"}


# ------------------------------------------------------------------------------- defaults
def test_deployment_defaults_for_kubectl_create():
    d = deployment()
    spec = d["spec"]
    assert set(spec) == {"replicas", "selector", "template", "strategy", "revisionHistoryLimit",
                         "progressDeadlineSeconds"}
    assert spec["replicas"] == 1
    assert spec["selector"] == {"matchLabels": {"app": "web"}}
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert "minReadySeconds" not in spec and "paused" not in spec
    assert spec["template"]["metadata"]["labels"] == {"app": "web"}
    assert d["metadata"]["labels"] == {"app": "web"} and d["status"] == {}
    assert kind("apps", "Deployment").validate(d, None) == []
    if have_pod_templates():
        tspec = spec["template"]["spec"]
        assert tspec["restartPolicy"] == "Always"
        assert tspec["dnsPolicy"] == "ClusterFirst"
        assert tspec["terminationGracePeriodSeconds"] == 30
        assert tspec["schedulerName"] == "default-scheduler"
        assert tspec["containers"][0]["imagePullPolicy"] == "Always"


def test_deployment_defaults_keep_explicit_values_and_recreate_has_no_rolling_update():
    d = kubectl_create_deployment()
    d["spec"].update(replicas=0, strategy={"type": "Recreate"}, revisionHistoryLimit=0,
                     minReadySeconds=5)
    kind("apps", "Deployment").default(d)
    assert d["spec"]["strategy"] == {"type": "Recreate"}
    assert (d["spec"]["replicas"], d["spec"]["revisionHistoryLimit"],
            d["spec"]["minReadySeconds"]) == (0, 0, 5)
    d2 = kubectl_create_deployment()
    d2["spec"]["strategy"] = {"rollingUpdate": {"maxSurge": 1}}
    kind("apps", "Deployment").default(d2)
    assert d2["spec"]["strategy"] == {"type": "RollingUpdate",
                                      "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}}


def test_replicaset_defaults():
    rs = {"metadata": {"name": "web-1", "namespace": "default"},
          "spec": {"selector": {"matchLabels": {"app": "web"}},
                   "template": {"metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    kind("apps", "ReplicaSet").default(rs)
    assert rs["spec"]["replicas"] == 1
    assert rs["status"] == {"replicas": 0}


def test_statefulset_defaults():
    s = statefulset()
    spec = {k: v for k, v in s["spec"].items() if k != "template"}
    assert spec == {
        "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "replicas": 1,
        "podManagementPolicy": "OrderedReady", "revisionHistoryLimit": 10,
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        "volumeClaimTemplates": [{
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "volumeMode": "Filesystem"},
            "status": {"phase": "Pending"}}]}
    assert s["status"] == {"replicas": 0, "availableReplicas": 0}
    # an explicit RollingUpdate without rollingUpdate gets no partition (as upstream)
    s2 = {"metadata": {"name": "x"}, "spec": {"updateStrategy": {"type": "RollingUpdate"}}}
    kind("apps", "StatefulSet").default(s2)
    assert s2["spec"]["updateStrategy"] == {"type": "RollingUpdate"}


def test_daemonset_defaults():
    d = daemonset()
    assert d["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert d["spec"]["revisionHistoryLimit"] == 10
    assert d["status"] == {"currentNumberScheduled": 0, "numberMisscheduled": 0,
                           "desiredNumberScheduled": 0, "numberReady": 0}
    ondelete = daemonset(type="OnDelete")
    assert ondelete["spec"]["updateStrategy"] == {"type": "OnDelete"}


def test_job_defaults_with_uid():
    uid = "3d3e4b0a-1111-2222-3333-444455556666"
    j = job(uid)
    spec = {k: v for k, v in j["spec"].items() if k != "template"}
    assert spec == {"parallelism": 1, "completions": 1, "backoffLimit": 6,
                    "completionMode": "NonIndexed", "suspend": False,
                    "podReplacementPolicy": "TerminatingOrFailed", "manualSelector": False,
                    "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}}
    generated = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": "pi",
                 "controller-uid": uid, "job-name": "pi"}
    assert j["spec"]["template"]["metadata"]["labels"] == generated
    # a Job without labels shows its template's (SetDefaults_Job)
    assert j["metadata"]["labels"] == generated
    assert kind("batch", "Job").validate(j, None) == []


def test_job_defaults_parallelism_only_and_no_uid():
    j = job(None, parallelism=3)
    assert j["spec"]["parallelism"] == 3 and "completions" not in j["spec"]
    assert "selector" not in j["spec"]
    assert "labels" not in j["spec"]["template"].get("metadata", {})
    j2 = job("u", completions=5)
    assert (j2["spec"]["completions"], j2["spec"]["parallelism"]) == (5, 1)
    j3 = job("u", podFailurePolicy={"rules": [{"action": "Ignore", "onPodConditions":
                                                [{"type": "DisruptionTarget"}]}]})
    assert j3["spec"]["podReplacementPolicy"] == "Failed"
    assert j3["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"] == "True"
    # user labels on the Job are kept; a manual selector generates nothing
    j4 = job("u", manualSelector=True, selector={"matchLabels": {"x": "y"}})
    assert j4["spec"]["selector"] == {"matchLabels": {"x": "y"}}


def test_cronjob_defaults():
    cj = cronjob()
    spec = {k: v for k, v in cj["spec"].items() if k != "jobTemplate"}
    assert spec == {"schedule": "*/1 * * * *", "concurrencyPolicy": "Allow", "suspend": False,
                    "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1}
    # the job template only gets pod-template defaults, as in a real 1.32 cluster
    assert list(cj["spec"]["jobTemplate"]["spec"]) == ["template"]
    assert "timeZone" not in cj["spec"] and "startingDeadlineSeconds" not in cj["spec"]
    assert kind("batch", "CronJob").validate(cj, None) == []


def test_other_defaults():
    hpa = {"metadata": {"name": "web", "namespace": "default"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": "web"}, "maxReplicas": 5,
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}
    kind("autoscaling", "HorizontalPodAutoscaler", "v2").default(hpa)
    assert hpa["spec"]["minReplicas"] == 1
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    assert hpa["spec"]["behavior"]["scaleDown"] == {
        "selectPolicy": "Max", "stabilizationWindowSeconds": 60,
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}
    assert hpa["spec"]["behavior"]["scaleUp"]["policies"][0] == \
        {"type": "Pods", "value": 4, "periodSeconds": 15}
    sc = {"metadata": {"name": "standard"}, "provisioner": "rancher.io/local-path"}
    kind("storage.k8s.io", "StorageClass").default(sc)
    assert (sc["reclaimPolicy"], sc["volumeBindingMode"]) == ("Delete", "Immediate")
    pc = {"metadata": {"name": "high"}, "value": 1000}
    kind("scheduling.k8s.io", "PriorityClass").default(pc)
    assert pc["preemptionPolicy"] == "PreemptLowerPriority"
    eps = {"metadata": {"name": "web-abc"}, "addressType": "IPv4", "ports": [{"port": 80}]}
    kind("discovery.k8s.io", "EndpointSlice").default(eps)
    assert eps["ports"] == [{"port": 80, "name": "", "protocol": "TCP"}]
    ing = ingress()
    assert ing["status"] == {"loadBalancer": {}}
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["pathType"] == "Prefix"


# ------------------------------------------------------------------------------- validation
def _dep(mut=None):
    d = deployment()
    if mut:
        mut(d)
    return d


def _set(path: str, value):
    def mut(o):
        cur = o
        parts = path.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        if value is _DEL:
            cur.pop(parts[-1], None)
        else:
            cur[parts[-1]] = value
    return mut


_DEL = object()

LS_WEB = ('v1.LabelSelector{MatchLabels:map[string]string{"app":"web", "v":"2"}, '
          'MatchExpressions:[]v1.LabelSelectorRequirement(nil)}')

CREATE_CASES = [
    ("apps", "Deployment", _dep, _set("spec.selector", _DEL), [
        "spec.selector: Required value",
        ('spec.template.metadata.labels: Invalid value: map[string]string{"app":"web"}: '
        "`selector` does not match template `labels`")]),
    ("apps", "Deployment", _dep, _set("spec.template.metadata.labels", {"app": "x"}), [
        ('spec.template.metadata.labels: Invalid value: map[string]string{"app":"x"}: '
        "`selector` does not match template `labels`")]),
    ("apps", "Deployment", _dep, _set("spec.selector", {}), [
        ("spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for "
        "deployment")]),
    ("apps", "Deployment", _dep, _set("spec.replicas", -1), [
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"]),
    ("apps", "Deployment", _dep, _set("spec.strategy.rollingUpdate",
                                      {"maxSurge": 0, "maxUnavailable": 0}), [
        ('spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, '
        'IntVal:0, StrVal:""}: may not be 0 when `maxSurge` is 0')]),
    ("apps", "Deployment", _dep, _set("spec.strategy.rollingUpdate.maxSurge", "abc"), [
        ('spec.strategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:1, '
        'IntVal:0, StrVal:"abc"}: a valid percent string must be a numeric string followed by '
        "an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")]),
    ("apps", "Deployment", _dep, _set("spec.strategy.rollingUpdate.maxUnavailable", "120%"), [
        ('spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, '
        'IntVal:0, StrVal:"120%"}: must not be greater than 100%')]),
    ("apps", "Deployment", _dep, _set("spec.strategy.type", "Recreate"), [
        ("spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is "
        "'Recreate'")]),
    ("apps", "Deployment", _dep, _set("spec.strategy", {"type": "Canary"}), [
        ('spec.strategy: Unsupported value: apps.DeploymentStrategy{Type:"Canary", '
        'RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: "Recreate", '
        '"RollingUpdate"')]),
    ("apps", "Deployment", _dep, _set("spec.template.spec.restartPolicy", "Never"), [
        ('spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: '
        '"Always"')]),
    ("apps", "Deployment", _dep, _set("spec.selector", {"matchExpressions": [
        {"key": "app", "operator": "In"}]}), [
        ("spec.selector.matchExpressions[0].values: Required value: must be specified when "
        "`operator` is 'In' or 'NotIn'"),
        ('spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), '
        'MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:"app", '
        'Operator:"In", Values:[]string(nil)}}}: invalid label selector')]),
    ("apps", "StatefulSet", statefulset, _set("spec.selector", {}), [
        ("spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is not valid for "
        "statefulset.")]),
    ("apps", "StatefulSet", statefulset, _set("spec.podManagementPolicy", "Eager"), [
        ("spec.podManagementPolicy: Invalid value: \"Eager\": must be 'OrderedReady' or "
        "'Parallel'")]),
    ("apps", "DaemonSet", daemonset, _set("spec.updateStrategy.rollingUpdate",
                                          {"maxUnavailable": 1, "maxSurge": 1}), [
        ('spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:0, '
        'IntVal:1, StrVal:""}: may not be set when maxUnavailable is non-zero')]),
    ("apps", "DaemonSet", daemonset, _set("spec.updateStrategy.rollingUpdate",
                                          {"maxUnavailable": 0, "maxSurge": 0}), [
        ("spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when "
        "maxSurge is 0")]),
    ("batch", "Job", job, _set("spec.template.spec.restartPolicy", "Always"), [
        'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"']),
    ("batch", "Job", job, _set("spec.completionMode", "Sometimes"), [
        ('spec.completionMode: Unsupported value: "Sometimes": supported values: "NonIndexed", '
        '"Indexed"')]),
    ("batch", "Job", lambda: job("u", parallelism=2), _set("spec.completionMode", "Indexed"), [
        "spec.completions: Required value: when completion mode is Indexed"]),
    ("batch", "Job", job, _set("spec.backoffLimit", -1), [
        "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0"]),
    ("batch", "Job", job, _set("spec.selector.matchLabels", {"batch.kubernetes.io/controller-uid":
                                                             "other"}), [
        ('spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{'
        '"batch.kubernetes.io/controller-uid":"other"}, '
        'MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: `selector` not auto-generated'),
        ('spec.template.metadata.labels: Invalid value: map[string]string{'
        '"batch.kubernetes.io/controller-uid":"3d3e4b0a-1111-2222-3333-444455556666", '
        '"batch.kubernetes.io/job-name":"pi", '
        '"controller-uid":"3d3e4b0a-1111-2222-3333-444455556666", "job-name":"pi"}: '
        "`selector` does not match template `labels`")]),
    ("batch", "CronJob", cronjob, _set("spec.schedule", "every minute"), [
        ('spec.schedule: Invalid value: "every minute": expected exactly 5 fields, found 2: '
        "[every minute]")]),
    ("batch", "CronJob", cronjob, _set("spec.schedule", "61 * * * *"), [
        'spec.schedule: Invalid value: "61 * * * *": end of range (61) above maximum (59): 61']),
    ("batch", "CronJob", cronjob, _set("spec.schedule", _DEL), ["spec.schedule: Required value"]),
    ("batch", "CronJob", cronjob, _set("spec.schedule", "CRON_TZ=UTC 0 * * * *"), [
        ('spec.schedule: Invalid value: "CRON_TZ=UTC 0 * * * *": cannot use TZ or CRON_TZ in '
        "schedule, use timeZone field instead")]),
    ("batch", "CronJob", cronjob, _set("spec.timeZone", "Europe/Pariss"), [
        'spec.timeZone: Invalid value: "Europe/Pariss": unknown time zone Europe/Pariss']),
    ("batch", "CronJob", cronjob, _set("spec.concurrencyPolicy", "Sometimes"), [
        ('spec.concurrencyPolicy: Unsupported value: "Sometimes": supported values: "Allow", '
        '"Forbid", "Replace"')]),
    ("batch", "CronJob", cronjob, _set("metadata.name", "a" * 53), [
        f'metadata.name: Invalid value: "{"a" * 53}": must be no more than 52 characters']),
    ("batch", "CronJob", cronjob, _set("spec.jobTemplate.spec.template.spec.restartPolicy",
                                       "Always"), [
        ('spec.jobTemplate.spec.template.spec.restartPolicy: Required value: valid values: '
        '"OnFailure", "Never"')]),
    ("networking.k8s.io", "Ingress", ingress,
     _set("spec.rules", [{"http": {"paths": [{"path": "/", "backend": {
         "service": {"name": "web", "port": {"number": 80}}}}]}}]), [
        "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"]),
    ("networking.k8s.io", "Ingress", ingress,
     _set("spec.rules", [{"host": "*foo.example.com", "http": {"paths": [
         {"path": "api", "pathType": "Prefix", "backend": {
             "service": {"name": "web", "port": {"number": 80, "name": "http"}}}}]}}]), [
        ('spec.rules[0].host: Invalid value: "*foo.example.com": a wildcard DNS-1123 subdomain '
        "must start with '*.', followed by a valid DNS subdomain, which must consist of lower "
        "case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. "
        "'*.example.com', regex used for validation is "
        "'\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        'spec.rules[0].http.paths[0].path: Invalid value: "api": must be an absolute path',
        ('spec.rules[0].http.paths[0].backend: Invalid value: "": cannot set both port name & '
        "port number")]),
    ("networking.k8s.io", "Ingress", ingress, _set("spec.rules", []), [
        ("spec: Invalid value: []networking.IngressRule{}: either `defaultBackend` or `rules` "
        "must be specified")]),
    ("networking.k8s.io", "Ingress", ingress,
     _set("spec.defaultBackend", {"service": {"name": "web"}}), [
        "spec.defaultBackend: Required value: port name or number is required"]),
    ("discovery.k8s.io", "EndpointSlice",
     lambda: {"metadata": {"name": "s", "namespace": "d"}, "endpoints": [{"addresses": []}]},
     None, ["addressType: Required value",
            "endpoints[0].addresses: Required value: must contain at least 1 address"]),
    ("discovery.k8s.io", "EndpointSlice",
     lambda: {"metadata": {"name": "s", "namespace": "d"}, "addressType": "IPv4",
              # loopback pod addresses are kubelab's unprivileged network plan: accepted
              "endpoints": [{"addresses": ["10.0.0.300", "127.244.1.5", "0.0.0.0"]}]},
     None, [('endpoints[0].addresses[0]: Invalid value: "10.0.0.300": must be a valid IPv4 '
            "address"),
            ('endpoints[0].addresses[2]: Invalid value: "0.0.0.0": may not be unspecified '
             "(0.0.0.0, ::)")]),
    ("autoscaling", "HorizontalPodAutoscaler",
     lambda: {"metadata": {"name": "h", "namespace": "d"},
              "spec": {"minReplicas": 3, "maxReplicas": 2,
                       "scaleTargetRef": {"kind": "Deployment"}}},
     None, ["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
            "spec.scaleTargetRef.name: Required value"]),
    ("storage.k8s.io", "StorageClass", lambda: {"metadata": {"name": "fast"}}, None,
     ["provisioner: Required value", "volumeBindingMode: Required value"]),
    ("scheduling.k8s.io", "PriorityClass",
     lambda: {"metadata": {"name": "system-mine"}, "value": 5}, None,
     [("metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for "
      "system use only. error: system-mine is not a known system priority class")]),
    ("policy", "PodDisruptionBudget",
     lambda: {"metadata": {"name": "p", "namespace": "d"},
              "spec": {"minAvailable": "150%", "selector": {"matchLabels": {"app": "web"}}}},
     None, [('spec.minAvailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, '
            'StrVal:"150%"}: must not be greater than 100%')]),
    ("apps", "ControllerRevision",
     lambda: {"metadata": {"name": "web-1", "namespace": "d"}, "revision": -1}, None,
     ["data: Required value: data is mandatory",
      "revision: Invalid value: -1: must be greater than or equal to 0"]),
]


@pytest.mark.parametrize("group,name,make,mutate,expected", CREATE_CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(CREATE_CASES)])
def test_create_validation(group, name, make, mutate, expected):
    k = next(x for x in REG.kinds if x.group == group and x.kind == name)
    obj = make()
    if mutate:
        mutate(obj)
    assert causes(k, obj) == expected


def test_update_deployment_selector_is_immutable():
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["selector"]["matchLabels"]["v"] = "2"
    new["spec"]["template"]["metadata"]["labels"]["v"] = "2"
    assert causes(kind("apps", "Deployment"), new, old) == [
        f"spec.selector: Invalid value: {LS_WEB}: field is immutable"]
    # a template change alone is fine
    new2 = copy.deepcopy(old)
    new2["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    assert causes(kind("apps", "Deployment"), new2, old) == []


def test_update_statefulset_only_some_fields():
    old = statefulset()
    ok = copy.deepcopy(old)
    ok["spec"].update(replicas=3, minReadySeconds=5, updateStrategy={"type": "OnDelete"})
    assert causes(kind("apps", "StatefulSet"), ok, old) == []
    bad = copy.deepcopy(old)
    bad["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert causes(kind("apps", "StatefulSet"), bad, old) == [
        ("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', "
        "'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
        "'minReadySeconds' are forbidden")]


def test_update_job_template_selector_and_completions_immutable():
    k = kind("batch", "Job")
    old = job()
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "perl:2"
    msgs = causes(k, new, old)
    assert len(msgs) == 1 and msgs[0].startswith("spec.template: Invalid value: ") and \
        msgs[0].endswith(": field is immutable")
    new = copy.deepcopy(old)
    new["spec"]["completions"] = 3
    assert causes(k, new, old) == ["spec.completions: Invalid value: 3: field is immutable"]
    new = copy.deepcopy(old)
    new["spec"]["parallelism"] = 4  # parallelism may change
    assert causes(k, new, old) == []
    # a suspended job that never started may change scheduling directives
    old_s = job(suspend=True)
    new_s = copy.deepcopy(old_s)
    new_s["spec"]["template"]["spec"]["nodeSelector"] = {"zone": "a"}
    new_s["spec"]["suspend"] = False
    assert causes(k, new_s, old_s) == []
    # elastic indexed jobs: completions move with parallelism
    old_i = job(completionMode="Indexed", completions=2, parallelism=2)
    new_i = copy.deepcopy(old_i)
    new_i["spec"].update(completions=4, parallelism=4)
    assert causes(k, new_i, old_i) == []


def test_update_cronjob_keeps_long_name_and_storageclass_provisioner_immutable():
    old = cronjob()
    old["metadata"]["name"] = "a" * 60
    new = copy.deepcopy(old)
    new["spec"]["suspend"] = True
    assert causes(kind("batch", "CronJob"), new, old) == []
    sk = kind("storage.k8s.io", "StorageClass")
    old_sc = {"metadata": {"name": "fast"}, "provisioner": "a.io/x"}
    sk.default(old_sc)
    new_sc = dict(old_sc, provisioner="b.io/y")
    assert causes(sk, new_sc, old_sc) == [
        "provisioner: Forbidden: updates to provisioner are forbidden."]


def test_controllerrevision_data_immutable():
    k = kind("apps", "ControllerRevision")
    old = {"metadata": {"name": "web-1", "namespace": "d"}, "revision": 1, "data": {"a": 1}}
    new = copy.deepcopy(old)
    new["data"] = {"a": 2}
    assert causes(k, new, old) == ['data: Invalid value: {"a":2}: field is immutable']


@pytest.mark.skipif(not have_pod_templates(), reason="core pod template validation not present")
def test_template_errors_come_from_pod_validation():
    d = deployment()
    d["spec"]["template"]["spec"]["containers"][0].pop("image")
    assert "spec.template.spec.containers[0].image: Required value" in \
        causes(kind("apps", "Deployment"), d)


# ------------------------------------------------------------------------------- tables
def test_deployment_table_mid_rollout():
    k = kind("apps", "Deployment")
    d = deployment()
    d["metadata"]["creationTimestamp"] = ago(3 * 3600 + 5)
    d["spec"]["replicas"] = 3
    d["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1"})
    d["status"] = {"replicas": 4, "updatedReplicas": 2, "readyReplicas": 3,
                   "availableReplicas": 3, "unavailableReplicas": 1, "observedGeneration": 2}
    assert header(k) == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert wide_header(k)[5:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert list(row(k, d).values()) == ["web", "3/3", 2, 3, "3h", "nginx,sidecar",
                                        "nginx,envoy:1", "app=web"]
    fresh = deployment()
    assert row(k, fresh)["Ready"] == "0/1" and row(k, fresh)["Up-to-date"] == 0


def test_replicaset_statefulset_daemonset_tables():
    rs_k, sts_k, ds_k = kind("apps", "ReplicaSet"), kind("apps", "StatefulSet"), \
        kind("apps", "DaemonSet")
    assert header(rs_k) == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    rs = {"metadata": {"name": "web-5d8f", "creationTimestamp": ago(30)},
          "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web",
                                                               "pod-template-hash": "5d8f"}},
                   "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
          "status": {"replicas": 3, "readyReplicas": 1}}
    assert list(row(rs_k, rs).values()) == ["web-5d8f", 3, 3, 1, "30s", "nginx", "nginx",
                                            "app=web,pod-template-hash=5d8f"]
    assert rs_k.fields(rs)["status.replicas"] == "3"
    assert header(sts_k) == ["NAME", "READY", "AGE"]
    assert wide_header(sts_k)[3:] == ["CONTAINERS", "IMAGES"]
    s = statefulset()
    s["spec"]["replicas"] = 3
    s["status"]["readyReplicas"] = 2
    assert row(sts_k, s)["Ready"] == "2/3"
    assert header(ds_k) == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE",
                            "NODE SELECTOR", "AGE"]
    d = daemonset()
    d["status"].update(desiredNumberScheduled=3, currentNumberScheduled=3, numberReady=2,
                       updatedNumberScheduled=3, numberAvailable=2)
    r = row(ds_k, d)
    assert [r[c] for c in ("Desired", "Current", "Ready", "Up-to-date", "Available",
                           "Node Selector", "Selector")] == \
        [3, 3, 2, 3, 2, "kubernetes.io/os=linux", "app=agent"]
    d2 = daemonset()
    d2["spec"]["template"]["spec"].pop("nodeSelector")
    assert row(ds_k, d2)["Node Selector"] == "<none>"


def test_completed_and_running_job_tables():
    k = kind("batch", "Job")
    assert header(k) == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    j = job()
    j["metadata"]["creationTimestamp"] = ago(600)
    j["status"] = {"startTime": "2024-05-01T10:00:00Z", "completionTime": "2024-05-01T10:01:05Z",
                   "succeeded": 1,
                   "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                  {"type": "Complete", "status": "True"}]}
    r = row(k, j)
    assert [r["Name"], r["Status"], r["Completions"], r["Duration"], r["Age"]] == \
        ["pi", "Complete", "1/1", "65s", "10m"]
    assert r["Selector"] == "batch.kubernetes.io/controller-uid=3d3e4b0a-1111-2222-3333-444455556666"
    assert k.fields(j)["status.successful"] == "1"
    running = job(None, parallelism=3)
    running["status"] = {"startTime": ago(5), "active": 3}
    r = row(k, running)
    assert (r["Status"], r["Completions"]) == ("Running", "0/1 of 3")
    assert r["Duration"] in ("5s", "6s")
    failed = job()
    failed["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    assert row(k, failed)["Status"] == "Failed" and row(k, failed)["Duration"] == ""
    suspended = job(suspend=True)
    suspended["status"] = {"conditions": [{"type": "Suspended", "status": "True"}]}
    assert row(k, suspended)["Status"] == "Suspended"


def test_cronjob_table():
    k = kind("batch", "CronJob")
    assert header(k) == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE",
                         "AGE"]
    cj = cronjob(timeZone="Europe/Paris")
    cj["metadata"]["creationTimestamp"] = ago(3600)
    cj["status"] = {"lastScheduleTime": ago(600), "active": [{"name": "hello-28000000"}]}
    assert list(row(k, cj).values()) == ["hello", "*/1 * * * *", "Europe/Paris", "False", 1,
                                         "10m", "60m", "hello", "busybox", ""]
    plain = cronjob()
    r = row(k, plain)
    assert (r["Timezone"], r["Last Schedule"], r["Active"]) == ("<none>", "<none>", 0)


def test_ingress_tables():
    k = kind("networking.k8s.io", "Ingress")
    assert header(k) == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    ing = ingress(tls=[{"hosts": ["web.example.com"], "secretName": "web-tls"}])
    ing["metadata"]["creationTimestamp"] = ago(45)
    ing["status"] = {"loadBalancer": {"ingress": [{"ip": "172.18.0.2"},
                                                  {"hostname": "lb.example.com"}]}}
    assert list(row(k, ing).values()) == ["web", "nginx", "web.example.com",
                                          "172.18.0.2,lb.example.com", "80, 443", "45s"]
    bare = ingress(ingressClassName=None, rules=[{"http": {"paths": [
        {"path": "/", "pathType": "Prefix",
         "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}])
    bare["spec"].pop("ingressClassName")
    r = row(k, bare)
    assert (r["Class"], r["Hosts"], r["Address"], r["Ports"]) == ("<none>", "*", "", "80")
    assert k.validate(bare, None) == []
    many = ingress(rules=[{"host": f"h{i}.example.com"} for i in range(5)])
    assert row(k, many)["Hosts"] == "h0.example.com,h1.example.com,h2.example.com + 2 more..."


def test_storageclass_default_marker_and_other_cluster_tables():
    k = kind("storage.k8s.io", "StorageClass")
    sc = {"metadata": {"name": "standard", "creationTimestamp": ago(90),
                       "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
          "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"}
    k.default(sc)
    assert header(k) == ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE",
                         "ALLOWVOLUMEEXPANSION", "AGE"]
    assert list(row(k, sc).values()) == ["standard (default)", "rancher.io/local-path", "Delete",
                                         "WaitForFirstConsumer", False, "90s"]
    sc["metadata"]["annotations"] = {}
    assert row(k, sc)["Name"] == "standard"

    ic = kind("networking.k8s.io", "IngressClass")
    c = {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx",
                                                 "parameters": {"apiGroup": "k8s.example.com",
                                                                "kind": "IngressParameters",
                                                                "name": "external-lb"}}}
    ic.default(c)
    assert c["spec"]["parameters"]["scope"] == "Cluster" and ic.validate(c, None) == []
    assert [row(ic, c)[n] for n in ("Controller", "Parameters")] == \
        ["k8s.io/ingress-nginx", "IngressParameters.k8s.example.com/external-lb"]

    es = kind("discovery.k8s.io", "EndpointSlice")
    s = {"metadata": {"name": "web-x7k2p", "namespace": "d"}, "addressType": "IPv4",
         "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
         "endpoints": [{"addresses": [f"10.244.1.{i}"]} for i in range(1, 6)]}
    es.default(s)
    assert header(es) == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    assert es.validate(s, None) == []
    assert [row(es, s)[n] for n in ("AddressType", "Ports", "Endpoints")] == \
        ["IPv4", "80,443", "10.244.1.1,10.244.1.2,10.244.1.3 + 2 more..."]
    assert row(es, {"metadata": {"name": "e"}, "addressType": "IPv4"})["Endpoints"] == "<unset>"

    lk = kind("coordination.k8s.io", "Lease")
    assert header(lk) == ["NAME", "HOLDER", "AGE"]
    assert row(lk, {"metadata": {"name": "kube-scheduler"},
                    "spec": {"holderIdentity": "cp_1234"}})["Holder"] == "cp_1234"
    assert row(lk, {"metadata": {"name": "x"}, "spec": {}})["Holder"] == "<unknown>"

    hk = kind("autoscaling", "HorizontalPodAutoscaler", "v2")
    hpa = {"metadata": {"name": "web", "namespace": "d"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": "web"}, "maxReplicas": 10}}
    hk.default(hpa)
    assert header(hk) == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
    assert hk.validate(hpa, None) == []
    assert [row(hk, hpa)[n] for n in ("Reference", "Targets", "MinPods", "MaxPods", "Replicas")] \
        == ["Deployment/web", "cpu: <unknown>/80%", "1", 10, 0]
    hpa["status"] = {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {
        "name": "cpu", "current": {"averageUtilization": 12, "averageValue": "6m"}}}]}
    assert row(hk, hpa)["Targets"] == "cpu: 12%/80%"

    pk = kind("scheduling.k8s.io", "PriorityClass")
    pc = {"metadata": {"name": "high"}, "value": 1000, "globalDefault": False}
    pk.default(pc)
    assert header(pk) == ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    assert [row(pk, pc)[n] for n in ("Value", "Global-Default", "PreemptionPolicy")] == \
        [1000, False, "PreemptLowerPriority"]

    bk = kind("policy", "PodDisruptionBudget")
    pdb = {"metadata": {"name": "web"}, "spec": {"minAvailable": 2}}
    bk.default(pdb)
    assert header(bk) == ["NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"]
    assert [row(bk, pdb)[n] for n in ("Min Available", "Max Unavailable",
                                      "Allowed Disruptions")] == ["2", "N/A", 0]

    ck = kind("apps", "ControllerRevision")
    cr = {"metadata": {"name": "db-7c9", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u",
         "controller": True}]}, "revision": 2, "data": {}}
    assert [row(ck, cr)[n] for n in ("Controller", "Revision")] == ["statefulset.apps/db", 2]
    assert row(ck, {"metadata": {"name": "x"}, "revision": 1})["Controller"] == "<none>"


# ------------------------------------------------------------------------------- scale
def test_scale_selector_strings():
    dk = kind("apps", "Deployment")
    d = deployment()
    assert dk.scale.selector(d) == "app=web"
    d["spec"]["selector"] = {"matchLabels": {"tier": "fe", "app": "web"},
                             "matchExpressions": [
                                 {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                                 {"key": "canary", "operator": "DoesNotExist"},
                                 {"key": "track", "operator": "NotIn", "values": ["b"]},
                                 {"key": "zone", "operator": "Exists"}]}
    assert dk.scale.selector(d) == \
        "app=web,!canary,env in (dev,prod),tier=fe,track notin (b),zone"
    assert kind("apps", "ReplicaSet").scale.selector(
        {"spec": {"selector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}}}}) == \
        "app=web,pod-template-hash=abc"
    assert kind("apps", "StatefulSet").scale.selector(statefulset()) == "app=db"
    assert dk.scale.selector({"spec": {}}) == ""
    assert dk.scale.replicas_path == ("spec", "replicas")


# ------------------------------------------------------------------------------- cron
@pytest.mark.parametrize("spec,message", [
    ("", "empty spec string"),
    ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
    ("0 24 * * *", "end of range (24) above maximum (23): 24"),
    ("0 0 * * 7", "end of range (7) above maximum (6): 7"),
    ("*/0 * * * *", "step of range should be a positive number: */0"),
    ("x * * * *", 'failed to parse int from x: strconv.Atoi: parsing "x": invalid syntax'),
    ("@fortnightly", "unrecognized descriptor: @fortnightly"),
    ("@every 5", 'failed to parse duration @every 5: time: missing unit in duration "5"'),
])
def test_cron_parse_errors(spec, message):
    with pytest.raises(CronError) as e:
        parse_cron(spec)
    assert str(e.value) == message


@pytest.mark.parametrize("spec,after,expected", [
    ("*/15 * * * *", "2024-05-01T10:07:30", "2024-05-01T10:15:00"),
    ("*/1 * * * *", "2024-05-01T10:07:00", "2024-05-01T10:08:00"),
    ("0 9 * * 1-5", "2024-05-04T12:00:00", "2024-05-06T09:00:00"),  # Saturday → Monday
    ("0 0 1 jan *", "2024-05-01T00:00:00", "2025-01-01T00:00:00"),
    ("@hourly", "2024-05-01T10:59:59", "2024-05-01T11:00:00"),
    ("@weekly", "2024-05-01T10:00:00", "2024-05-05T00:00:00"),
    ("0 0 13 * 5", "2024-05-01T00:00:00", "2024-05-03T00:00:00"),  # dom OR dow
    ("0 0 31 2 *", "2024-05-01T00:00:00", None),
])
def test_cron_next(spec, after, expected):
    t = datetime.datetime.fromisoformat(after).replace(tzinfo=UTC)
    got = parse_cron(spec).next(t)
    if expected is None:
        assert got is None
    else:
        assert got == datetime.datetime.fromisoformat(expected).replace(tzinfo=UTC)


def test_cron_time_zone_and_every():
    after = datetime.datetime(2024, 1, 15, 7, 0, tzinfo=UTC)
    assert parse_cron("0 9 * * *", "Europe/Paris").next(after) == \
        datetime.datetime(2024, 1, 15, 8, 0, tzinfo=UTC)
    assert parse_cron("TZ=America/New_York 0 9 * * *").next(after) == \
        datetime.datetime(2024, 1, 15, 14, 0, tzinfo=UTC)
    assert parse_cron("@every 90s").next(after) == after + datetime.timedelta(seconds=90)
