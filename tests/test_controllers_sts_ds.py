"""StatefulSet and DaemonSet controllers: unit tests of their decisions (ordinals, update order,
eligibility, rolling updates, history) on plain dicts, then end-to-end tests on a whole control
plane with hollow nodes and the real kubectl."""

from __future__ import annotations

import json
import time

import pytest

from controllers import daemonset as dsc
from controllers import history
from controllers import statefulset as stsc
from kubelab.selectors import selector_from_label_selector

from .conftest import have, wait_for

NOW = time.time()
TS = "2024-01-01T00:00:00Z"


# =============================================================================== fixtures (dicts)
def make_sts(replicas=3, policy="OrderedReady", partition=None, strategy="RollingUpdate",
             claims=True, when_scaled="Retain", when_deleted="Retain", status=None):
    us: dict = {"type": strategy}
    if strategy == "RollingUpdate":
        us["rollingUpdate"] = {"partition": partition or 0}
    spec = {"replicas": replicas, "serviceName": "nginx", "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": "web"}}, "updateStrategy": us,
            "revisionHistoryLimit": 10,
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": when_deleted,
                                                      "whenScaled": when_scaled},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "nginx", "image": "nginx"}],
                                  "volumes": [{"name": "cfg", "emptyDir": {}}]}}}
    if claims:
        spec["volumeClaimTemplates"] = [{"metadata": {"name": "data",
                                                      "labels": {"tier": "db"}},
                                         "spec": {"accessModes": ["ReadWriteOnce"],
                                                  "resources": {"requests":
                                                                {"storage": "1Gi"}}}}]
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "default", "uid": "sts-uid",
                         "generation": 2},
            "spec": spec, "status": status or {}}


def pod(name, revision="rev-a", ready=True, phase="Running", deleting=False, uid=None,
        node=None, created=TS, ready_since=TS):
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": "default", "uid": uid or f"uid-{name}",
                      "creationTimestamp": created,
                      "labels": {"app": "web", history.CONTROLLER_REVISION_HASH_LABEL: revision,
                                 stsc.POD_NAME_LABEL: name,
                                 stsc.POD_INDEX_LABEL: name.rsplit("-", 1)[-1]}},
         "spec": {"containers": [{"name": "c", "image": "nginx"}]},
         "status": {"phase": phase,
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                    "lastTransitionTime": ready_since}]}}
    if deleting:
        p["metadata"]["deletionTimestamp"] = TS
    if node:
        p["spec"]["nodeName"] = node
    return p


def ops(plan):
    return [(s.op, s.ordinal) for s in plan.steps]


# =============================================================================== StatefulSet units
def test_pod_identity_and_claims():
    sts = make_sts()
    p = stsc.new_pod(sts, 2, "web-abc")
    assert p["metadata"]["name"] == "web-2"
    labels = p["metadata"]["labels"]
    assert labels == {"app": "web", stsc.POD_NAME_LABEL: "web-2", stsc.POD_INDEX_LABEL: "2",
                      "controller-revision-hash": "web-abc"}
    assert p["spec"]["hostname"] == "web-2" and p["spec"]["subdomain"] == "nginx"
    assert p["spec"]["volumes"] == [{"name": "data",
                                     "persistentVolumeClaim": {"claimName": "data-web-2"}},
                                    {"name": "cfg", "emptyDir": {}}]
    ref = p["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == \
        ("StatefulSet", "web", "sts-uid", True)
    claims = stsc.persistent_volume_claims(sts, 2)
    c = claims["data"]
    assert c["metadata"]["name"] == "data-web-2"
    assert c["metadata"]["labels"] == {"tier": "db", "app": "web"}
    assert c["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert stsc.parent_and_ordinal("my-web-10") == ("my-web", 10)
    assert stsc.parent_and_ordinal("web") == ("", -1)
    assert stsc.identity_matches(sts, p) and stsc.storage_matches(sts, p)
    assert not stsc.is_member_of(sts, pod("webby-0"))


def test_ordered_ready_creates_one_at_a_time():
    sts = make_sts()
    plan = stsc.plan_statefulset(sts, [], "rev-a", NOW, {})
    assert ops(plan) == [("create", 0)]
    plan = stsc.plan_statefulset(sts, [pod("web-0")], "rev-a", NOW, {})
    assert ops(plan) == [("create", 1)]
    # web-1 exists but is not Ready: nothing more happens
    plan = stsc.plan_statefulset(sts, [pod("web-0"), pod("web-1", ready=False)], "rev-a", NOW, {})
    assert ops(plan) == [] and "not running and ready" in plan.blocked
    # Pending web-0 blocks too (its missing claim is created again)
    plan = stsc.plan_statefulset(sts, [pod("web-0", phase="Pending", ready=False)], "rev-a",
                                 NOW, {"data-web-0": {"metadata": {"name": "data-web-0"}}})
    assert ops(plan) == []
    plan = stsc.plan_statefulset(sts, [pod("web-0", phase="Pending", ready=False)], "rev-a",
                                 NOW, {})
    assert ops(plan) == [("claims", 0)]


def test_ordered_ready_min_ready_seconds_waits_for_availability():
    sts = make_sts()
    sts["spec"]["minReadySeconds"] = 10
    just = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 1))
    plan = stsc.plan_statefulset(sts, [pod("web-0", ready_since=just)], "rev-a", NOW, {})
    assert ops(plan) == [] and plan.requeue_after is not None


def test_parallel_creates_and_deletes_all_at_once():
    sts = make_sts(policy="Parallel")
    plan = stsc.plan_statefulset(sts, [pod("web-1", ready=False)], "rev-a", NOW, {})
    assert ops(plan) == [("create", 0), ("create", 2)]
    sts = make_sts(replicas=1, policy="Parallel")
    plan = stsc.plan_statefulset(sts, [pod("web-0"), pod("web-1", ready=False), pod("web-2")],
                                 "rev-a", NOW, {})
    assert ops(plan) == [("delete", 2), ("delete", 1)]


def test_scale_down_highest_first_one_at_a_time():
    sts = make_sts(replicas=1)
    pods = [pod("web-0"), pod("web-1"), pod("web-2")]
    plan = stsc.plan_statefulset(sts, pods, "rev-a", NOW, {})
    assert ops(plan) == [("delete", 2)]
    # web-2 still terminating: wait for it to be gone
    pods[2] = pod("web-2", deleting=True)
    plan = stsc.plan_statefulset(sts, pods, "rev-a", NOW, {})
    assert ops(plan) == [] and "terminating" in plan.blocked
    plan = stsc.plan_statefulset(sts, pods[:2], "rev-a", NOW, {})
    assert ops(plan) == [("delete", 1)]
    # an unready replica halts scale-down
    plan = stsc.plan_statefulset(sts, [pod("web-0", ready=False), pod("web-1")], "rev-a", NOW, {})
    assert ops(plan) == []
    # an unready condemned pod above the first unhealthy one halts; the first unhealthy goes
    sts = make_sts(replicas=1)
    plan = stsc.plan_statefulset(sts, [pod("web-0"), pod("web-1", ready=False), pod("web-2")],
                                 "rev-a", NOW, {})
    assert ops(plan) == [("delete", 2)]
    plan = stsc.plan_statefulset(sts, [pod("web-0"), pod("web-1"), pod("web-2", ready=False)],
                                 "rev-a", NOW, {})
    assert ops(plan) == [("delete", 2)]
    plan = stsc.plan_statefulset(sts, [pod("web-0"), pod("web-1", ready=False),
                                       pod("web-2", ready=False)], "rev-a", NOW, {})
    assert ops(plan) == []


def test_failed_pod_is_deleted_and_recreated():
    sts = make_sts()
    pods = [pod("web-0"), pod("web-1", phase="Failed", ready=False), pod("web-2")]
    plan = stsc.plan_statefulset(sts, pods, "rev-a", NOW, {})
    assert ops(plan) == [("delete", 1), ("create", 1)]
    assert plan.steps[0].reason == "failed"


def test_rolling_update_reverse_order_and_partition():
    sts = make_sts()
    old = [pod(f"web-{i}", "rev-a") for i in range(3)]
    plan = stsc.plan_statefulset(sts, old, "rev-b", NOW, {})
    assert ops(plan) == [("delete", 2)] and plan.steps[0].reason == "update"
    # web-2 recreated at rev-b but not Ready yet: wait
    pods = old[:2] + [pod("web-2", "rev-b", ready=False)]
    assert ops(stsc.plan_statefulset(sts, pods, "rev-b", NOW, {})) == []
    pods = old[:2] + [pod("web-2", "rev-b")]
    assert ops(stsc.plan_statefulset(sts, pods, "rev-b", NOW, {})) == [("delete", 1)]
    pods = [old[0], pod("web-1", "rev-b"), pod("web-2", "rev-b")]
    assert ops(stsc.plan_statefulset(sts, pods, "rev-b", NOW, {})) == [("delete", 0)]
    # partition 2: only web-2 is updated
    sts = make_sts(partition=2)
    assert ops(stsc.plan_statefulset(sts, old, "rev-b", NOW, {})) == [("delete", 2)]
    pods = old[:2] + [pod("web-2", "rev-b")]
    assert ops(stsc.plan_statefulset(sts, pods, "rev-b", NOW, {})) == []
    # which revision a (re)created ordinal gets
    assert stsc.use_current_revision(sts, 1) and not stsc.use_current_revision(sts, 2)
    assert not stsc.use_current_revision(make_sts(strategy="OnDelete"), 0)


def test_on_delete_never_deletes_for_update():
    sts = make_sts(strategy="OnDelete")
    old = [pod(f"web-{i}", "rev-a") for i in range(3)]
    assert ops(stsc.plan_statefulset(sts, old, "rev-b", NOW, {})) == []
    assert ops(stsc.plan_statefulset(sts, old[:2], "rev-b", NOW, {})) == [("create", 2)]


def test_status_counts_and_completed_rollout():
    sts = make_sts()
    pods = [pod("web-0", "rev-a"), pod("web-1", "rev-b"), pod("web-2", "rev-b", ready=False)]
    st = stsc.compute_status(sts, pods, "rev-a", "rev-b", 0, NOW)
    assert st == {"observedGeneration": 2, "replicas": 3, "readyReplicas": 2,
                  "currentReplicas": 1, "updatedReplicas": 2, "availableReplicas": 2,
                  "currentRevision": "rev-a", "updateRevision": "rev-b", "collisionCount": 0}
    pods = [pod(f"web-{i}", "rev-b") for i in range(3)]
    st = stsc.compute_status(sts, pods, "rev-a", "rev-b", 0, NOW)
    assert st["currentRevision"] == "rev-b" and st["currentReplicas"] == 3


def test_claim_retention_owner_references():
    pod0 = pod("web-0")
    claim = {"metadata": {"name": "data-web-0", "ownerReferences": []}}
    assert stsc.claim_owner_refs(claim, make_sts(), pod0) is None        # Retain/Retain
    refs = stsc.claim_owner_refs(claim, make_sts(when_deleted="Delete"), pod0)
    assert [r["uid"] for r in refs] == ["sts-uid"]
    # whenScaled=Delete: a scaled-down pod owns its claim
    sts = make_sts(replicas=1, when_scaled="Delete", when_deleted="Delete")
    refs = stsc.claim_owner_refs(claim, sts, pod("web-2"))
    assert [(r["kind"], r["uid"]) for r in refs] == [("Pod", "uid-web-2")]
    refs = stsc.claim_owner_refs(claim, sts, pod0)
    assert [r["kind"] for r in refs] == ["StatefulSet"]
    plan = stsc.plan_statefulset(sts, [pod0, pod("web-1")], "rev-a", NOW,
                                 {"data-web-0": {"metadata": {"name": "data-web-0"}},
                                  "data-web-1": {"metadata": {"name": "data-web-1"}}})
    assert ops(plan) == [("claim-owners", 0), ("claim-owners", 1), ("delete", 1)]
    # a claim being deleted blocks the creation of its pod
    plan = stsc.plan_statefulset(make_sts(), [], "rev-a", NOW,
                                 {"data-web-0": {"metadata": {"name": "data-web-0",
                                                              "deletionTimestamp": TS}}})
    assert ops(plan) == [] and "being deleted" in plan.blocked


# =============================================================================== history units
def test_hashes_match_go():
    assert history.fnv32(b"") == 0x811C9DC5 and history.fnv32(b"a") == 0x050C5D7E
    assert history.fnv32a(b"a") == 0xE40C292C
    assert history.safe_encode("0123456789") == "456789bcdf"  # byte % 27
    h = history.hash_revision({"spec": {}}, 0)
    assert h == history.hash_revision({"spec": {}}, 0) != history.hash_revision({"spec": {}}, 1)


def test_revision_shape_and_pruning():
    sts = make_sts()
    sts["metadata"]["annotations"] = {"kubernetes.io/change-cause": "v2"}
    rev = history.new_revision(sts, 3, 0)
    tpl = rev["data"]["spec"]["template"]
    assert tpl["$patch"] == "replace" and tpl["metadata"]["labels"] == {"app": "web"}
    assert list(rev["data"]) == ["spec"] and list(rev["data"]["spec"]) == ["template"]
    h = rev["metadata"]["labels"]["controller-revision-hash"]
    assert rev["metadata"]["name"] == f"web-{h}" and rev["revision"] == 3
    assert rev["metadata"]["annotations"] == {"kubernetes.io/change-cause": "v2"}
    assert rev["metadata"]["ownerReferences"][0]["controller"] is True
    assert history.template_from_data(rev["data"]) == sts["spec"]["template"]
    assert history.data_matches(sts, rev)

    revs = [{"metadata": {"name": f"r{i}"}, "revision": i} for i in (3, 1, 2, 5, 4)]
    assert [r["revision"] for r in history.sort_revisions(revs)] == [1, 2, 3, 4, 5]
    assert history.next_revision(revs) == 6 and history.next_revision([]) == 1
    pruned = history.revisions_to_prune(revs, {"r1", "r5"}, 1)
    assert [r["metadata"]["name"] for r in pruned] == ["r2", "r3"]
    assert history.revisions_to_prune(revs, set(), 10) == []


def test_claim_decisions():
    owner = {"kind": "StatefulSet", "metadata": {"name": "web", "uid": "u1"}}
    sel = selector_from_label_selector({"matchLabels": {"app": "web"}})
    mine = {"metadata": {"name": "a", "labels": {"app": "web"},
                         "ownerReferences": [{"uid": "u1", "controller": True}]}}
    relabelled = {"metadata": {"name": "b", "labels": {"app": "x"},
                               "ownerReferences": [{"uid": "u1", "controller": True}]}}
    orphan = {"metadata": {"name": "c", "labels": {"app": "web"}}}
    others = {"metadata": {"name": "d", "labels": {"app": "web"},
                           "ownerReferences": [{"uid": "u2", "controller": True}]}}
    owned, adopt, release = history.claim_decisions(owner, sel, [mine, relabelled, orphan,
                                                                 others])
    assert (owned, adopt, release) == ([mine], [orphan], [relabelled])


# =============================================================================== DaemonSet units
def make_ds(node_selector=None, tolerations=None, max_unavailable=1, max_surge=0,
            strategy="RollingUpdate"):
    us: dict = {"type": strategy}
    if strategy == "RollingUpdate":
        us["rollingUpdate"] = {"maxUnavailable": max_unavailable, "maxSurge": max_surge}
    spec = {"containers": [{"name": "agent", "image": "busybox"}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid",
                         "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "updateStrategy": us,
                     "revisionHistoryLimit": 10,
                     "template": {"metadata": {"labels": {"app": "agent"}}, "spec": spec}}}


def node(name, labels=None, taints=None):
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": taints} if taints else {}}


def dpod(name, node_name, hash_="h1", ready=True, phase="Running", bound=True, created=TS,
         deleting=False):
    p = pod(name, ready=ready, phase=phase, created=created, deleting=deleting)
    p["metadata"]["labels"] = {"app": "agent", "controller-revision-hash": hash_}
    if bound:
        p["spec"]["nodeName"] = node_name
    dsc.replace_node_affinity(p["spec"], node_name)
    return p


def test_node_eligibility():
    ds = make_ds()
    assert dsc.node_should_run(node("n1"), ds) == (True, True)
    # NoSchedule taint: no new pod, an existing one may stay; NoExecute: must go
    ns_taint = [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
    ne_taint = [{"key": "dedicated", "value": "x", "effect": "NoExecute"}]
    assert dsc.node_should_run(node("n1", taints=ns_taint), ds) == (False, True)
    assert dsc.node_should_run(node("n1", taints=ne_taint), ds) == (False, False)
    tol = [{"key": "dedicated", "operator": "Equal", "value": "x"}]
    assert dsc.node_should_run(node("n1", taints=ne_taint), make_ds(tolerations=tol)) == \
        (True, True)
    # the default daemon tolerations: unschedulable, not-ready, unreachable, pressure
    for key, eff in (("node.kubernetes.io/unschedulable", "NoSchedule"),
                     ("node.kubernetes.io/not-ready", "NoExecute"),
                     ("node.kubernetes.io/unreachable", "NoExecute"),
                     ("node.kubernetes.io/disk-pressure", "NoSchedule")):
        assert dsc.node_should_run(node("n1", taints=[{"key": key, "effect": eff}]), ds) == \
            (True, True), key
    # nodeSelector and required node affinity
    sel = make_ds(node_selector={"disk": "ssd"})
    assert dsc.node_should_run(node("n1"), sel) == (False, False)
    assert dsc.node_should_run(node("n1", {"disk": "ssd"}), sel) == (True, True)
    aff = make_ds()
    aff["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]}]}}}
    assert dsc.node_should_run(node("n1", {"zone": "b"}), aff)[0]
    assert dsc.node_should_run(node("n9"), aff)[0]
    assert not dsc.node_should_run(node("n1", {"zone": "c"}), aff)[0]


def test_daemon_pod_shape():
    ds = make_ds(tolerations=[{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                               "effect": "NoExecute", "tolerationSeconds": 5}])
    p = dsc.new_daemon_pod(ds, "n2", "h9")
    assert p["metadata"]["generateName"] == "agent-"
    assert p["metadata"]["labels"] == {"app": "agent", "controller-revision-hash": "h9"}
    assert "nodeName" not in p["spec"]
    assert p["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"] == {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}
    keys = [(t["key"].split("/")[-1], t["effect"]) for t in p["spec"]["tolerations"]]
    assert keys == [("not-ready", "NoExecute"), ("unreachable", "NoExecute"),
                    ("disk-pressure", "NoSchedule"), ("memory-pressure", "NoSchedule"),
                    ("pid-pressure", "NoSchedule"), ("unschedulable", "NoSchedule")]
    assert "tolerationSeconds" not in p["spec"]["tolerations"][0]  # replaced: no expiry
    assert dsc.target_node_name(p) == "n2"
    p["spec"]["nodeName"] = "n3"
    assert dsc.target_node_name(p) == "n3"


def test_manage_plan():
    ds = make_ds(node_selector={"role": "worker"})
    nodes = [node("n1", {"role": "worker"}), node("n2", {"role": "worker"}), node("n3"),
             node("n4", {"role": "worker"})]
    pods = [dpod("a-1", "n1", created="2024-01-01T00:00:00Z"),
            dpod("a-2", "n1", created="2024-01-01T00:00:05Z"),   # surplus, newer: goes
            dpod("a-3", "n3"),                                     # n3 no longer matches
            dpod("a-4", "n4", phase="Failed", ready=False),        # failed: goes
            dpod("a-5", "gone-node"),                              # node deleted
            dpod("a-6", "gone-node-2", bound=False)]              # pinned, never scheduled
    plan = dsc.plan_manage(ds, nodes, dsc.group_by_node(pods), "h1", NOW)
    assert plan.nodes_needing_pods == ["n2"]
    assert sorted(p["metadata"]["name"] for p in plan.pods_to_delete) == \
        ["a-2", "a-3", "a-4", "a-6"]
    assert [p["metadata"]["name"] for p in plan.force_delete] == ["a-5"]
    assert [n for n, _ in plan.failed_pods] == ["n4"]
    # in back-off: the failed pod stays for now and the set is looked at again later
    plan = dsc.plan_manage(ds, nodes, dsc.group_by_node(pods), "h1", NOW, lambda n: 3.0)
    assert "a-4" not in [p["metadata"]["name"] for p in plan.pods_to_delete]
    assert plan.requeue_after == 3.0
    # a terminating pod still occupies its node
    plan = dsc.plan_manage(make_ds(), [node("n1")],
                           dsc.group_by_node([dpod("x", "n1", deleting=True)]), "h1", NOW)
    assert plan.nodes_needing_pods == [] and plan.pods_to_delete == []


def test_rolling_update_max_unavailable():
    nodes = [node(f"n{i}") for i in range(1, 5)]
    old = {f"n{i}": [dpod(f"p{i}", f"n{i}", "h1")] for i in range(1, 5)}
    delete, create = dsc.plan_rolling_update(make_ds(), nodes, old, "h2", NOW)
    assert [p["metadata"]["name"] for p in delete] == ["p1"] and create == []
    delete, _ = dsc.plan_rolling_update(make_ds(max_unavailable=2), nodes, old, "h2", NOW)
    assert [p["metadata"]["name"] for p in delete] == ["p1", "p2"]
    delete, _ = dsc.plan_rolling_update(make_ds(max_unavailable="50%"), nodes, old, "h2", NOW)
    assert len(delete) == 2
    # n1 updated but not ready yet: the budget is used up
    mid = dict(old, n1=[dpod("q1", "n1", "h2", ready=False)])
    delete, _ = dsc.plan_rolling_update(make_ds(), nodes, mid, "h2", NOW)
    assert delete == []
    mid = dict(old, n1=[dpod("q1", "n1", "h2")])
    delete, _ = dsc.plan_rolling_update(make_ds(), nodes, mid, "h2", NOW)
    assert [p["metadata"]["name"] for p in delete] == ["p2"]
    # an unavailable old pod is replaced regardless of the budget
    bad = dict(mid, n3=[dpod("p3", "n3", "h1", ready=False)])
    delete, _ = dsc.plan_rolling_update(make_ds(), nodes, bad, "h2", NOW)
    assert [p["metadata"]["name"] for p in delete] == ["p3"]


def test_rolling_update_surge():
    nodes = [node("n1"), node("n2")]
    ds = make_ds(max_unavailable=0, max_surge=1)
    old = {"n1": [dpod("p1", "n1", "h1")], "n2": [dpod("p2", "n2", "h1")]}
    delete, create = dsc.plan_rolling_update(ds, nodes, old, "h2", NOW)
    assert delete == [] and create == ["n1"]
    both = dict(old, n1=[dpod("p1", "n1", "h1"), dpod("q1", "n1", "h2", ready=False)])
    assert dsc.plan_rolling_update(ds, nodes, both, "h2", NOW) == ([], [])
    both = dict(old, n1=[dpod("p1", "n1", "h1"), dpod("q1", "n1", "h2")])
    delete, create = dsc.plan_rolling_update(ds, nodes, both, "h2", NOW)
    assert [p["metadata"]["name"] for p in delete] == ["p1"]


def test_daemonset_status():
    ds = make_ds(node_selector={"role": "worker"})
    nodes = [node("n1", {"role": "worker"}), node("n2", {"role": "worker"}), node("n3")]
    pods = {"n1": [dpod("a", "n1", "h2")], "n2": [dpod("b", "n2", "h1", ready=False)],
            "n3": [dpod("c", "n3", "h1")]}
    assert dsc.compute_status(ds, nodes, pods, "h2", NOW) == {
        "observedGeneration": 1, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
        "numberReady": 1, "numberAvailable": 1, "numberUnavailable": 1,
        "updatedNumberScheduled": 1, "numberMisscheduled": 1}


def test_daemonset_history_cleanup():
    old = [{"metadata": {"name": f"r{i}", "labels": {"controller-revision-hash": f"h{i}"}},
            "revision": i} for i in range(1, 6)]
    out = dsc.cleanup_candidates(old, {"h1"}, 2)
    assert [r["metadata"]["name"] for r in out] == ["r2", "r3", "r4"]
