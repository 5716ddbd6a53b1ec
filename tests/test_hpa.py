"""The horizontal pod autoscaler: its arithmetic without a cluster (Kubernetes' replica
calculator and behaviour rules), then a Deployment of CPU-burning pods on real workers scaled up
to maxReplicas and back down through the resource metrics the node agents report."""

from __future__ import annotations

import json
import re

import pytest

from controllers.horizontalpodautoscaler import MetricError, normalize, replica_count
from kubelab import timescale

from .conftest import wait_for

# ------------------------------------------------------------------ replica calculator


def test_within_tolerance_keeps_the_count():
    usage = {"a": 0.055, "b": 0.05}
    denom = {"a": 0.05, "b": 0.05}  # 100m requested, 50% target
    assert replica_count(2, usage, denom, {}, set(), set()) == 2  # ratio 1.05


def test_scale_up_is_ratio_times_ready_pods():
    usage = {"a": 0.2, "b": 0.2}  # 200% of a 100m request against a 50% target: ratio 4
    denom = {"a": 0.05, "b": 0.05}
    assert replica_count(2, usage, denom, {}, set(), set()) == 8


def test_missing_metrics_count_as_full_request_when_scaling_down():
    usage = {"a": 0.01}  # 10% against 50%: ratio 0.2
    denom = {"a": 0.05, "b": 0.05, "c": 0.05}
    fill = {"a": 0.1, "b": 0.1, "c": 0.1}
    # b and c assumed at 100% of request: (0.01 + 0.2) / 0.15 = 1.4 → the direction flips, keep
    assert replica_count(3, usage, denom, fill, set(), {"b", "c"}) == 3
    # one missing pod: (0.01 + 0.1) / 0.1 = 1.1 → within tolerance, keep
    assert replica_count(2, usage, {"a": 0.05, "b": 0.05}, fill, set(), {"b"}) == 2


def test_unready_pods_count_as_idle_when_scaling_up():
    usage = {"a": 0.2}  # ratio 4 on one ready pod
    denom = {"a": 0.05, "b": 0.05}
    # b is starting: counted as 0 → (0.2 + 0) / 0.1 = 2 → ceil(2 × 2) = 4
    assert replica_count(2, usage, denom, {}, {"b"}, set()) == 4


def test_no_metrics_is_an_error():
    with pytest.raises(MetricError, match="did not receive metrics"):
        replica_count(1, {}, {}, {}, set(), set())


# ------------------------------------------------------------------ behaviour

def hpa(min_=1, max_=10, behavior=None) -> dict:
    spec = {"minReplicas": min_, "maxReplicas": max_}
    if behavior:
        spec["behavior"] = behavior
    return {"spec": spec}


def test_scale_up_rate_default_policy_is_max_of_4_pods_and_100_percent():
    timescale.set_scale(1.0)
    d = normalize(hpa(max_=50), 3, 20, [], [], 1000.0)
    assert d.replicas == 7 and d.limited and d.limited_reason == "ScaleUpLimit"  # 3 + 4 > 6
    d = normalize(hpa(max_=50), 10, 40, [], [], 1000.0)
    assert d.replicas == 20  # 100% of 10 > 4 pods
    # 10 already added within the 15 s period: the period started at 10
    d = normalize(hpa(max_=50), 20, 40, [], [(990.0, 10)], 1000.0)
    assert d.replicas == 20 and d.limited


def test_max_replicas_caps_with_too_many_replicas():
    timescale.set_scale(1.0)
    d = normalize(hpa(max_=3), 1, 4, [], [], 1000.0)
    assert (d.replicas, d.limited_reason) == (3, "TooManyReplicas")


def test_scale_down_is_stabilized_over_the_window():
    timescale.set_scale(1.0)
    recs = [(800.0, 6), (950.0, 5)]  # within the default 300 s window
    d = normalize(hpa(), 6, 2, recs, [], 1000.0)
    assert d.replicas == 6 and d.able_reason == "ScaleDownStabilized"
    later = normalize(hpa(), 6, 2, recs, [], 1400.0)  # both older than 300 s now
    assert later.replicas == 2 and not later.limited
    quick = hpa(behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    assert normalize(quick, 6, 2, [(950.0, 6)], [], 1000.0).replicas == 2


def test_min_replicas_floor():
    timescale.set_scale(1.0)
    nowindow = hpa(min_=2, behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    d = normalize(nowindow, 4, 1, [], [], 1000.0)
    assert (d.replicas, d.limited_reason) == (2, "TooFewReplicas")


# ------------------------------------------------------------------ end to end

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "burn"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "burn"}},
             "template": {"metadata": {"labels": {"app": "burn"}}, "spec": {"containers": [{
                 "name": "main", "image": "busybox",
                 "command": ["sh", "-c", "while :; do :; done"],
                 "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}}]}}}}

HPA = {
    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "burn"},
    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burn"},
             "minReplicas": 1, "maxReplicas": 3,
             "metrics": [{"type": "Resource", "resource": {
                 "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
             "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}


@pytest.mark.slow
def test_cpu_bound_deployment_scales_to_max_and_back(workers):
    workers.kubectl("apply", "-f", "-", input=json.dumps(DEPLOYMENT))
    workers.kubectl("apply", "-f", "-", input=json.dumps(HPA))

    def scaled_to(n: int):
        h = workers.get_json("hpa", "burn")
        d = workers.get_json("deployment", "burn")
        st = h.get("status") or {}
        # currentReplicas is the target's status as of a sync: it follows one sync later
        return (d["spec"]["replicas"] == n and st.get("desiredReplicas") == n and
                st.get("currentReplicas") == n and h) or None

    # one pod at its 200m limit on a 100m request: 200% against 50% → 4, capped at 3
    h = wait_for(lambda: scaled_to(3), 90, 0.5, "the HPA scaling burn to 3")
    conds = {c["type"]: c for c in h["status"]["conditions"]}
    assert conds["ScalingActive"]["status"] == "True"
    assert conds["ScalingActive"]["reason"] == "ValidMetricFound"
    cur = h["status"]["currentMetrics"][0]["resource"]
    assert cur["name"] == "cpu" and cur["current"]["averageUtilization"] > 100
    assert h["status"]["lastScaleTime"]
    evs = workers.get_json("events", "--field-selector", "involvedObject.name=burn,"
                           "involvedObject.kind=HorizontalPodAutoscaler")["items"]
    assert any(e["reason"] == "SuccessfulRescale" and e["message"].startswith("New size: ") and
               e["message"].endswith("reason: cpu resource utilization (percentage of "
                                     "request) above target") for e in evs), evs
    row = workers.kubectl("get", "hpa", "burn").stdout.splitlines()[1]
    assert re.match(r"burn +Deployment/burn +cpu: \d+%/50% +1 +3 +3 ", row), row
    # a target far above the usage: everything below target, back to minReplicas
    workers.kubectl("patch", "hpa", "burn", "--type", "merge", "-p", json.dumps(
        {"spec": {"metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 2000}}}]}}))
    wait_for(lambda: scaled_to(1), 60, 0.5, "the HPA scaling burn back to 1")
    evs = workers.get_json("events", "--field-selector", "involvedObject.name=burn,"
                           "involvedObject.kind=HorizontalPodAutoscaler")["items"]
    assert any(e["message"] == "New size: 1; reason: All metrics below target" for e in evs)
    workers.kubectl("delete", "hpa,deployment", "burn")


@pytest.mark.slow
def test_missing_request_is_reported(workers):
    dep = json.loads(json.dumps(DEPLOYMENT))
    dep["metadata"]["name"] = dep["spec"]["template"]["metadata"]["labels"]["app"] = "noreq"
    dep["spec"]["selector"]["matchLabels"]["app"] = "noreq"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["command"], c["resources"] = ["sleep", "3600"], {}
    hpa_ = json.loads(json.dumps(HPA))
    hpa_["metadata"]["name"] = hpa_["spec"]["scaleTargetRef"]["name"] = "noreq"
    workers.kubectl("apply", "-f", "-", input=json.dumps(dep))
    workers.kubectl("apply", "-f", "-", input=json.dumps(hpa_))

    def inactive():
        h = workers.get_json("hpa", "noreq")
        conds = {c["type"]: c for c in (h.get("status") or {}).get("conditions") or []}
        return conds.get("ScalingActive", {}).get("status") == "False" and conds or None
    conds = wait_for(inactive, 60, 0.5, "ScalingActive=False")
    assert conds["ScalingActive"]["reason"] == "FailedGetResourceMetric"
    assert "missing request for cpu in container main of Pod noreq-" in \
        conds["ScalingActive"]["message"]
    assert workers.get_json("deployment", "noreq")["spec"]["replicas"] == 1
    workers.kubectl("delete", "hpa,deployment", "noreq")
