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


def test_start_ordinal():
    sts = make_sts(replicas=2)
    sts["spec"]["ordinals"] = {"start": 5}
    assert ops(stsc.plan_statefulset(sts, [], "rev-a", NOW, {})) == [("create", 5)]
    plan = stsc.plan_statefulset(sts, [pod("web-0"), pod("web-5"), pod("web-6")], "rev-a",
                                 NOW, {})
    assert ops(plan) == [("delete", 0)]
    assert ops(stsc.plan_statefulset(sts, [pod("web-5"), pod("web-6")], "rev-b", NOW, {})) == \
        [("delete", 6)]


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
    # whenScaled=Delete: a claim still owned by the previous web-1 waits for the collector
    owned = {"metadata": {"name": "data-web-1", "ownerReferences": [
        {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": "old"}]}}
    plan = stsc.plan_statefulset(make_sts(when_scaled="Delete"), [pod("web-0")], "rev-a", NOW,
                                 {"data-web-0": {"metadata": {"name": "data-web-0"}},
                                  "data-web-1": owned})
    assert ops(plan) == [] and "stale" in plan.blocked


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


# =============================================================================== in process
class FakeAPI:
    """Enough of ClusterClient for these controllers: objects in a dict, every write mirrored
    into the informer caches at once, deletion immediate (as the hollow nodes finish pods)."""

    def __init__(self):
        import itertools
        self.objs: dict[tuple[str, str | None, str], dict] = {}
        self.rv = itertools.count(1)
        self.uids = itertools.count(1)
        self.factory = None
        self.events: list[tuple[str, str, str]] = []  # (type, reason, message)
        self.deleted: list[tuple[str, str, int | None]] = []  # (kind, name, grace)

    def _mirror(self, kind: str, key: str, obj: dict | None) -> None:
        import copy
        for (res, _ns, _ls, _fs), inf in self.factory._informers.items():
            if res.kind == kind:
                if obj is None:
                    inf.cache.pop(key, None)
                else:
                    inf.cache[key] = copy.deepcopy(obj)

    def put(self, kind: str, obj: dict) -> dict:
        import copy

        from kubelab.client import Resource, object_key
        md = obj.setdefault("metadata", {})
        md.setdefault("namespace", "default") if Resource.of(kind).namespaced else None
        md.setdefault("uid", f"uid-{next(self.uids)}")
        md.setdefault("creationTimestamp", TS)
        md.setdefault("generation", 1)
        md["resourceVersion"] = str(next(self.rv))
        r = Resource.of(kind)
        obj.setdefault("apiVersion", f"{r.group}/{r.version}" if r.group else r.version)
        obj.setdefault("kind", kind)
        self.objs[(kind, md.get("namespace"), md["name"])] = obj
        self._mirror(kind, object_key(obj), obj)
        return copy.deepcopy(obj)

    def of(self, kind: str) -> dict[str, dict]:
        return {k[2]: o for k, o in sorted(self.objs.items()) if k[0] == kind}

    def mutate(self, kind: str, name: str, fn, ns: str | None = "default") -> dict:
        o = self.objs[(kind, ns, name)]
        fn(o)
        return self.put(kind, o)

    @staticmethod
    def _kind(r) -> str:
        return r if isinstance(r, str) else r.kind

    async def get(self, r, ns, name, subresource=""):
        import copy

        from kubelab.client import APIError
        o = self.objs.get((self._kind(r), ns, name))
        if o is None:
            raise APIError(404, "NotFound", f"{name} not found")
        return copy.deepcopy(o)

    async def get_or_none(self, r, ns, name):
        import copy
        o = self.objs.get((self._kind(r), ns, name))
        return copy.deepcopy(o) if o is not None else None

    async def create(self, r, obj, namespace=None, **kw):
        import copy
        import uuid

        from kubelab.client import APIError
        kind = self._kind(r)
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        if namespace:
            md["namespace"] = namespace
        if kind == "Event":
            self.events.append((obj["type"], obj["reason"], obj["message"]))
            return obj
        if not md.get("name"):
            md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
        if (kind, md.get("namespace"), md["name"]) in self.objs:
            raise APIError(409, "AlreadyExists", f"{md['name']} already exists")
        for k in ("uid", "resourceVersion"):
            md.pop(k, None)
        return self.put(kind, obj)

    async def update(self, r, obj, **kw):
        import copy

        from kubelab.client import APIError
        kind, md = self._kind(r), obj["metadata"]
        cur = self.objs.get((kind, md.get("namespace"), md["name"]))
        if cur is None:
            raise APIError(404, "NotFound", "gone")
        if md.get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise APIError(409, "Conflict", "the object has been modified")
        new = copy.deepcopy(obj)
        new["status"] = cur.get("status")
        return self.put(kind, new)

    async def update_status(self, r, obj):
        import copy

        from kubelab.client import APIError
        kind, md = self._kind(r), obj["metadata"]
        cur = self.objs.get((kind, md.get("namespace"), md["name"]))
        if cur is None:
            raise APIError(404, "NotFound", "gone")
        if md.get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise APIError(409, "Conflict", "the object has been modified")
        cur["status"] = copy.deepcopy(obj.get("status") or {})
        return self.put(kind, cur)

    async def patch(self, r, ns, name, patch, *, patch_type="", **kw):
        from kubelab.client import APIError
        kind = self._kind(r)
        if kind == "Event":
            return {"metadata": {"name": name}}
        o = self.objs.get((kind, ns, name))
        if o is None:
            raise APIError(404, "NotFound", f"{name} not found")

        def merge(dst: dict, src: dict) -> None:
            for k, v in src.items():
                if k == "uid":
                    continue
                if k == "ownerReferences":
                    refs = [x for x in dst.get(k) or []
                            if x["uid"] not in {y["uid"] for y in v}]
                    dst[k] = refs + [y for y in v if y.get("$patch") != "delete"]
                elif isinstance(v, dict) and isinstance(dst.get(k), dict):
                    merge(dst[k], v)
                else:
                    dst[k] = v
        merge(o, patch)
        return self.put(kind, o)

    async def delete(self, r, ns, name, *, grace_period=None, preconditions=None, **kw):
        import copy

        from kubelab.client import APIError, object_key
        kind = self._kind(r)
        o = self.objs.get((kind, ns, name))
        if o is None:
            raise APIError(404, "NotFound", f"{name} not found")
        if preconditions and preconditions.get("uid") not in (None, o["metadata"]["uid"]):
            raise APIError(409, "Conflict", "Precondition failed")
        self.deleted.append((kind, name, grace_period))
        del self.objs[(kind, ns, name)]
        self._mirror(kind, object_key(o), None)
        return copy.deepcopy(o), True


class Harness:
    def __init__(self, cls):
        from kubelab.client import InformerFactory
        from kubelab.events import EventRecorder
        self.api = FakeAPI()
        self.api.factory = InformerFactory(self.api)
        self.ctrl = cls(self.api, self.api.factory, EventRecorder(self.api, "kcm"))

    def sync(self, key: str) -> None:
        import asyncio
        asyncio.run(self.ctrl.reconcile(key))

    def ready(self, name: str, node: str | None = None, ok: bool = True) -> None:
        def fn(p):
            if node:
                p["spec"]["nodeName"] = node
            p["status"] = {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True" if ok else "False",
                 "lastTransitionTime": TS}]}
        self.api.mutate("Pod", name, fn)

    def messages(self) -> list[str]:
        return [m for _, _, m in self.api.events]


def test_statefulset_controller_in_process():
    h = Harness(stsc.StatefulSetController)
    api = h.api
    sts = make_sts()
    sts["metadata"].pop("uid")
    api.put("StatefulSet", sts)
    key = "default/web"
    for i in range(3):
        h.sync(key)
        h.sync(key)  # nothing more while the newest pod is not Ready
        assert sorted(api.of("Pod")) == [f"web-{j}" for j in range(i + 1)]
        h.ready(f"web-{i}")
    h.sync(key)
    revs = api.of("ControllerRevision")
    assert [r["revision"] for r in revs.values()] == [1]
    rev1 = next(iter(revs))
    st = api.of("StatefulSet")["web"]["status"]
    assert (st["readyReplicas"], st["currentRevision"], st["updateRevision"]) == (3, rev1, rev1)
    assert sorted(api.of("PersistentVolumeClaim")) == ["data-web-0", "data-web-1", "data-web-2"]
    assert "create Claim data-web-1 Pod web-1 in StatefulSet web success" in h.messages()

    # rolling update: web-2, web-1, web-0, each Ready before the next goes
    def image(tag):
        def fn(o):
            o["spec"]["template"]["spec"]["containers"][0]["image"] = f"nginx:{tag}"
            o["metadata"]["generation"] += 1
        return fn
    api.mutate("StatefulSet", "web", image("2"))
    order = []
    for _ in range(12):
        before = {n: p["metadata"]["uid"] for n, p in api.of("Pod").items()}
        h.sync(key)
        after = api.of("Pod")
        order += [n for n in before if n not in after]
        for n, p in after.items():
            if p.get("status", {}).get("phase") != "Running":
                h.ready(n)
    assert order == ["web-2", "web-1", "web-0"]
    revs = {r["revision"]: n for n, r in api.of("ControllerRevision").items()}
    rev2 = revs[2]
    st = api.of("StatefulSet")["web"]["status"]
    assert st["currentRevision"] == st["updateRevision"] == rev2 and st["updatedReplicas"] == 3
    assert {p["metadata"]["labels"]["controller-revision-hash"]
            for p in api.of("Pod").values()} == {rev2}

    # back to the first template: its revision is renumbered, none is created; with
    # revisionHistoryLimit 0 the unused one goes once no pod uses it
    def back(o):
        image("1.25")(o)
        o["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx"
        o["spec"]["revisionHistoryLimit"] = 0
    api.mutate("StatefulSet", "web", back)
    for _ in range(12):
        h.sync(key)
        for n, p in api.of("Pod").items():
            if p.get("status", {}).get("phase") != "Running":
                h.ready(n)
    h.sync(key)
    assert {n: r["revision"] for n, r in api.of("ControllerRevision").items()} == {rev1: 3}
    assert api.of("StatefulSet")["web"]["status"]["currentRevision"] == rev1

    # scale down: highest first; claims stay
    api.mutate("StatefulSet", "web", lambda o: o["spec"].update(replicas=1))
    h.sync(key)
    assert sorted(api.of("Pod")) == ["web-0", "web-1"]
    h.sync(key)
    assert sorted(api.of("Pod")) == ["web-0"]
    assert len(api.of("PersistentVolumeClaim")) == 3
    assert "delete Pod web-2 in StatefulSet web successful" in h.messages()


def test_statefulset_adopts_orphans_and_releases_relabelled_pods():
    h = Harness(stsc.StatefulSetController)
    api = h.api
    sts = make_sts(replicas=1, claims=False)
    sts["metadata"].pop("uid")
    api.put("StatefulSet", sts)
    # (at the set's revision: an adopted pod of another revision would be replaced)
    orphan = pod("web-0", history.new_revision(sts, 1, 0)["metadata"]["name"])
    orphan["metadata"].pop("uid")
    api.put("Pod", orphan)
    stray = pod("other-0")
    stray["metadata"].pop("uid")
    api.put("Pod", stray)
    h.sync("default/web")
    refs = api.of("Pod")["web-0"]["metadata"]["ownerReferences"]
    assert [(r["kind"], r["name"], r["controller"]) for r in refs] == \
        [("StatefulSet", "web", True)]
    assert "ownerReferences" not in api.of("Pod")["other-0"]["metadata"]  # not a member
    api.mutate("Pod", "web-0", lambda p: p["metadata"]["labels"].update(app="debug"))
    h.sync("default/web")
    assert api.of("Pod")["web-0"]["metadata"]["ownerReferences"] == []


def test_daemonset_controller_in_process():
    h = Harness(dsc.DaemonSetController)
    api = h.api
    for i in (1, 2, 3):
        api.put("Node", {"metadata": {"name": f"n{i}", "labels": {}}, "spec": {}})
    ds = make_ds()
    ds["metadata"].pop("uid")
    api.put("DaemonSet", ds)
    key = "default/agent"
    h.sync(key)
    pods = api.of("Pod")
    assert sorted(dsc.target_node_name(p) for p in pods.values()) == ["n1", "n2", "n3"]
    for n, p in pods.items():
        h.ready(n, node=dsc.target_node_name(p))
    h.sync(key)
    st = api.of("DaemonSet")["agent"]["status"]
    assert (st["desiredNumberScheduled"], st["numberReady"], st["updatedNumberScheduled"]) == \
        (3, 3, 3)
    (rev1,) = api.of("ControllerRevision").values()
    hash1 = rev1["metadata"]["labels"]["controller-revision-hash"]
    assert rev1["metadata"]["name"] == f"agent-{hash1}" and rev1["revision"] == 1
    assert sum(m.startswith("Created pod: agent-") for m in h.messages()) == 3

    # rolling update, one node at a time (maxUnavailable 1)
    def image(o):
        o["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2"
        o["metadata"]["generation"] += 1
    api.mutate("DaemonSet", "agent", image)
    for _ in range(10):
        h.sync(key)
        pods = api.of("Pod")
        assert len(pods) >= 2
        for n, p in pods.items():
            if p.get("status", {}).get("phase") != "Running":
                h.ready(n, node=dsc.target_node_name(p))
    revs = {r["revision"]: r for r in api.of("ControllerRevision").values()}
    hash2 = revs[2]["metadata"]["labels"]["controller-revision-hash"]
    assert {p["metadata"]["labels"]["controller-revision-hash"]
            for p in api.of("Pod").values()} == {hash2}
    assert api.of("DaemonSet")["agent"]["status"]["updatedNumberScheduled"] == 3

    # OnDelete: a new template replaces nothing until a pod is deleted
    def on_delete(o):
        o["spec"]["updateStrategy"] = {"type": "OnDelete"}
        o["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:3"
    api.mutate("DaemonSet", "agent", on_delete)
    h.sync(key)
    h.sync(key)
    assert {p["metadata"]["labels"]["controller-revision-hash"]
            for p in api.of("Pod").values()} == {hash2}
    victim = min(api.of("Pod"))
    import asyncio
    asyncio.run(api.delete("Pod", "default", victim))
    h.sync(key)
    hashes = sorted(p["metadata"]["labels"]["controller-revision-hash"]
                    for p in api.of("Pod").values())
    hash3 = next(r["metadata"]["labels"]["controller-revision-hash"]
                 for r in api.of("ControllerRevision").values() if r["revision"] == 3)
    assert hashes == sorted([hash2, hash2, hash3])
    for n, p in api.of("Pod").items():
        if p.get("status", {}).get("phase") != "Running":
            h.ready(n, node=dsc.target_node_name(p))

    # a node leaves: its pod is removed at once; a NoExecute taint removes the pod as well
    api.objs.pop(("Node", None, "n3"))
    api._mirror("Node", "n3", None)
    h.sync(key)
    assert api.deleted[-1][2] == 0  # grace period 0: no kubelet will finish it
    assert sorted(dsc.target_node_name(p) for p in api.of("Pod").values()) == ["n1", "n2"]
    api.mutate("Node", "n2", lambda n: n["spec"].update(
        taints=[{"key": "k", "value": "v", "effect": "NoExecute"}]), ns=None)
    h.sync(key)
    assert sorted(dsc.target_node_name(p) for p in api.of("Pod").values()) == ["n1"]
    st = api.of("DaemonSet")["agent"]["status"]
    assert (st["desiredNumberScheduled"], st["currentNumberScheduled"]) == (1, 1)


# =============================================================================== end to end
pytestmark_e2e = pytest.mark.skipif(not have("kubectl"), reason="kubectl not installed")


class KubectlWatch:
    """`kubectl get <what> --watch --output-watch-events -o json` in the background: the events
    in the order kubectl saw them."""

    def __init__(self, cp, *args: str):
        import os
        import subprocess
        import threading
        env = dict(os.environ, KUBECONFIG=cp.kubeconfig, KUBECACHEDIR=cp.cache_dir)
        self.proc = subprocess.Popen(
            ["kubectl", "get", *args, "--watch", "--output-watch-events", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.events: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        dec = json.JSONDecoder()
        buf = ""
        for line in self.proc.stdout:
            buf += line
            while True:
                s = buf.lstrip()
                if not s:
                    buf = ""
                    break
                try:
                    ev, end = dec.raw_decode(s)
                except ValueError:
                    break
                buf = s[end:]
                with self._lock:
                    self.events.append((ev.get("type", ""), ev.get("object", {})))

    def started(self, names) -> KubectlWatch:
        """Wait until the watch has listed these existing pods: it is established, so nothing
        done afterwards can be missed."""
        want = set(names)
        try:
            wait_for(lambda: want <= {o.get("metadata", {}).get("name") for _, o in
                                      self.snapshot()}, 20, 0.05, f"kubectl watch listing {want}")
        except AssertionError:
            self.stop()
            raise
        return self

    def snapshot(self) -> list[tuple[str, dict]]:
        with self._lock:
            return list(self.events)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except Exception:  # noqa: BLE001
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _ready(p: dict) -> bool:
    return stsc.is_pod_ready(p) and not p["metadata"].get("deletionTimestamp")


def first_index(events, name, pred) -> int:
    for i, (t, o) in enumerate(events):
        if o.get("metadata", {}).get("name") == name and pred(t, o):
            return i
    return -1


def apply(cp, *objs: dict) -> None:
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                    "items": list(objs)}))


def namespace(cp, name: str) -> str:
    cp.kubectl("create", "namespace", name)
    return name


def sts_manifest(ns: str, name="web", replicas=3, claims=False, annotations=None, **spec):
    tpl_md: dict = {"labels": {"app": name}}
    if annotations:
        tpl_md["annotations"] = annotations
    s = {"serviceName": name, "replicas": replicas,
         "selector": {"matchLabels": {"app": name}},
         "template": {"metadata": tpl_md,
                      "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}},
         **spec}
    if claims:
        # (no volumeMounts of "data": the API server validates StatefulSet templates as pods,
        # which Kubernetes does not, and rejects mounts of claim templates)
        # (storageClassName explicit: the API server does not give claims the default class)
        s["volumeClaimTemplates"] = [{"metadata": {"name": "data"},
                                      "spec": {"storageClassName": "standard",
                                               "accessModes": ["ReadWriteOnce"],
                                               "resources": {"requests": {"storage": "1Mi"}}}}]
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"clusterIP": "None", "selector": {"app": name},
                    "ports": [{"port": 80, "name": "web"}]}}
    return svc, {"apiVersion": "apps/v1", "kind": "StatefulSet",
                 "metadata": {"name": name, "namespace": ns}, "spec": s}


def get(cp, ns: str, *args: str) -> dict:
    return cp.get_json("-n", ns, *args)


def pods_of(cp, ns: str, selector: str) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in get(cp, ns, "pods", "-l", selector)["items"]}


def wait_sts(cp, ns: str, name: str, timeout: float = 20.0, **want) -> dict:
    def check():
        s = get(cp, ns, "sts", name)
        st = s.get("status") or {}
        if st.get("observedGeneration") != s["metadata"].get("generation"):
            return None
        return s if all(st.get(k, 0) == v for k, v in want.items()) else None
    return wait_for(check, timeout, 0.1, f"statefulset {name} with {want}")


def wait_ds(cp, ns: str, name: str, timeout: float = 20.0, **want) -> dict:
    def check():
        d = get(cp, ns, "ds", name)
        st = d.get("status") or {}
        if st.get("observedGeneration") != d["metadata"].get("generation"):
            return None
        return d if all(st.get(k, 0) == v for k, v in want.items()) else None
    return wait_for(check, timeout, 0.1, f"daemonset {name} with {want}")


def holds(cond, seconds: float, what: str) -> None:
    """Assert cond() stays true for `seconds` (for things that must NOT happen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert cond(), what
        time.sleep(0.1)


def event_messages(cp, ns: str, name: str) -> list[str]:
    evs = get(cp, ns, "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [e.get("message", "") for e in evs]


@pytestmark_e2e
def test_statefulset_ordered_create_scale_down_and_claims(control_plane):
    cp = control_plane
    ns = namespace(cp, "sts-order")
    svc, sts = sts_manifest(ns, claims=True,
                            annotations={"hollow.kubelab.io/ready-after-seconds": "0.3"})
    # a pod the watch must list first, so it is established before the set exists
    apply(cp, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sentinel",
                                                                "namespace": ns},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    with KubectlWatch(cp, "pods", "-n", ns) as w:
        w.started(["sentinel"])
        apply(cp, svc, sts)
        s = wait_sts(cp, ns, "web", 30, readyReplicas=3, replicas=3)
        evs = w.snapshot()
    # each pod is created only after its predecessor is Running and Ready
    for prev, nxt in (("web-0", "web-1"), ("web-1", "web-2")):
        ready_at = first_index(evs, prev, lambda t, o: _ready(o))
        added_at = first_index(evs, nxt, lambda t, o: t == "ADDED")
        assert 0 <= ready_at < added_at, (prev, nxt, [(t, o["metadata"]["name"])
                                                      for t, o in evs])
    st = s["status"]
    assert st["currentRevision"] == st["updateRevision"] and st["updatedReplicas"] == 3
    pods = pods_of(cp, ns, "app=web")
    for i in range(3):
        p = pods[f"web-{i}"]
        assert p["spec"]["hostname"] == f"web-{i}" and p["spec"]["subdomain"] == "web"
        labels = p["metadata"]["labels"]
        assert labels["statefulset.kubernetes.io/pod-name"] == f"web-{i}"
        assert labels["apps.kubernetes.io/pod-index"] == str(i)
        assert labels["controller-revision-hash"] == st["updateRevision"]
        vol = next(v for v in p["spec"]["volumes"] if v["name"] == "data")
        assert vol["persistentVolumeClaim"]["claimName"] == f"data-web-{i}"
    claims = {c["metadata"]["name"]: c for c in get(cp, ns, "pvc")["items"]}
    assert sorted(claims) == ["data-web-0", "data-web-1", "data-web-2"]
    assert claims["data-web-0"]["metadata"]["labels"] == {"app": "web"}
    uids = {n: c["metadata"]["uid"] for n, c in claims.items()}
    msgs = event_messages(cp, ns, "web")
    assert "create Pod web-0 in StatefulSet web successful" in msgs
    assert "create Claim data-web-0 Pod web-0 in StatefulSet web success" in msgs

    # scale down: web-2 goes first, and web-1 only once web-2 is gone; claims stay
    with KubectlWatch(cp, "pods", "-n", ns, "-l", "app=web").started(pods) as w:
        cp.kubectl("scale", "-n", ns, "sts/web", "--replicas=1")
        wait_sts(cp, ns, "web", 20, replicas=1, readyReplicas=1)
        wait_for(lambda: sorted(pods_of(cp, ns, "app=web")) == ["web-0"], 10, 0.1,
                 "only web-0 left")
        wait_for(lambda: first_index(w.snapshot(), "web-1", lambda t, o: t == "DELETED") >= 0,
                 10, 0.05, "kubectl to show web-1 DELETED")
        evs = w.snapshot()
    gone2 = first_index(evs, "web-2", lambda t, o: t == "DELETED")
    term1 = first_index(evs, "web-1", lambda t, o: t == "DELETED" or
                        bool(o["metadata"].get("deletionTimestamp")))
    assert 0 <= gone2 < term1, [(t, o["metadata"]["name"]) for t, o in evs]
    assert "delete Pod web-2 in StatefulSet web successful" in event_messages(cp, ns, "web")
    claims = {c["metadata"]["name"]: c["metadata"]["uid"] for c in get(cp, ns, "pvc")["items"]}
    assert claims == uids

    # scale up again: the same claims come back to the same ordinals
    cp.kubectl("scale", "-n", ns, "sts/web", "--replicas=3")
    wait_sts(cp, ns, "web", 30, replicas=3, readyReplicas=3)
    claims = {c["metadata"]["name"]: c["metadata"]["uid"] for c in get(cp, ns, "pvc")["items"]}
    assert claims == uids
    p2 = pods_of(cp, ns, "app=web")["web-2"]
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "data-web-2"
               for v in p2["spec"]["volumes"])


@pytestmark_e2e
def test_statefulset_ordered_ready_halts_while_a_pod_is_unready(control_plane):
    cp = control_plane
    ns = namespace(cp, "sts-halt")
    svc, sts = sts_manifest(ns, replicas=1, updateStrategy={"type": "OnDelete"})
    apply(cp, svc, sts)
    wait_sts(cp, ns, "web", 20, readyReplicas=1)
    web0 = pods_of(cp, ns, "app=web")["web-0"]["metadata"]["uid"]
    # new pods never become Ready; OnDelete leaves web-0 alone
    cp.kubectl("patch", "-n", ns, "sts/web", "--type=merge", "-p", json.dumps(
        {"spec": {"replicas": 3, "template": {"metadata": {"annotations": {
            "hollow.kubelab.io/ready": "false"}}}}}))
    wait_for(lambda: "web-1" in pods_of(cp, ns, "app=web"), 10, 0.1, "web-1 created")
    wait_for(lambda: pods_of(cp, ns, "app=web")["web-1"]["status"].get("phase") == "Running",
             10, 0.1, "web-1 running")
    holds(lambda: sorted(pods_of(cp, ns, "app=web")) == ["web-0", "web-1"], 1.5,
          "web-2 must not be created while web-1 is unready")
    s = wait_sts(cp, ns, "web", 10, replicas=2, readyReplicas=1)
    assert s["status"]["currentRevision"] != s["status"]["updateRevision"]
    assert pods_of(cp, ns, "app=web")["web-0"]["metadata"]["uid"] == web0
    # fix the template and delete the stuck pod: it comes back healthy and web-2 follows
    cp.kubectl("patch", "-n", ns, "sts/web", "--type=json", "-p", json.dumps(
        [{"op": "remove", "path": "/spec/template/metadata/annotations"}]))
    cp.kubectl("delete", "-n", ns, "pod", "web-1", "--wait=false")
    s = wait_sts(cp, ns, "web", 20, replicas=3, readyReplicas=3)
    pods = pods_of(cp, ns, "app=web")
    assert pods["web-0"]["metadata"]["uid"] == web0      # OnDelete: never replaced by us
    assert pods["web-0"]["metadata"]["labels"]["controller-revision-hash"] == \
        s["status"]["currentRevision"]
    assert pods["web-2"]["metadata"]["labels"]["controller-revision-hash"] == \
        s["status"]["updateRevision"]


@pytestmark_e2e
def test_statefulset_parallel_ignores_readiness(control_plane):
    cp = control_plane
    ns = namespace(cp, "sts-parallel")
    svc, sts = sts_manifest(ns, replicas=3, podManagementPolicy="Parallel",
                            annotations={"hollow.kubelab.io/ready": "false"})
    apply(cp, svc, sts)
    wait_sts(cp, ns, "web", 20, replicas=3, readyReplicas=0)
    cp.kubectl("scale", "-n", ns, "sts/web", "--replicas=0")
    wait_for(lambda: not pods_of(cp, ns, "app=web"), 20, 0.1, "all pods gone")


@pytestmark_e2e
def test_statefulset_partitioned_rolling_update_history_and_undo(control_plane):
    cp = control_plane
    ns = namespace(cp, "sts-update")
    svc, sts = sts_manifest(ns, replicas=3)
    apply(cp, svc, sts)
    s1 = wait_sts(cp, ns, "web", 30, readyReplicas=3)
    rev1 = s1["status"]["updateRevision"]
    uids = {n: p["metadata"]["uid"] for n, p in pods_of(cp, ns, "app=web").items()}

    # partition 2: only web-2 moves to the new revision
    cp.kubectl("patch", "-n", ns, "sts/web", "--type=merge", "-p", json.dumps(
        {"spec": {"updateStrategy": {"type": "RollingUpdate",
                                     "rollingUpdate": {"partition": 2}},
                  "template": {"spec": {"containers": [{"name": "nginx",
                                                        "image": "nginx:1.26"}]}}}}))
    s = wait_sts(cp, ns, "web", 20, updatedReplicas=1, readyReplicas=3)
    rev2 = s["status"]["updateRevision"]
    assert rev2 != rev1 and s["status"]["currentRevision"] == rev1
    pods = pods_of(cp, ns, "app=web")
    assert pods["web-2"]["metadata"]["uid"] != uids["web-2"]
    assert pods["web-2"]["spec"]["containers"][0]["image"] == "nginx:1.26"
    for n in ("web-0", "web-1"):
        assert pods[n]["metadata"]["uid"] == uids[n]
        assert pods[n]["metadata"]["labels"]["controller-revision-hash"] == rev1
    cp.kubectl("rollout", "status", "-n", ns, "sts/web", "--timeout=20s")

    # partition 0: web-1 then web-0, one at a time
    with KubectlWatch(cp, "pods", "-n", ns, "-l", "app=web").started(pods) as w:
        cp.kubectl("patch", "-n", ns, "sts/web", "--type=merge", "-p",
                   '{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}')
        s = wait_sts(cp, ns, "web", 30, updatedReplicas=3, readyReplicas=3, currentReplicas=3)
        evs = w.snapshot()
    assert s["status"]["currentRevision"] == s["status"]["updateRevision"] == rev2
    gone1 = first_index(evs, "web-1", lambda t, o: t == "DELETED")
    ready1 = first_index(evs, "web-1", lambda t, o: t != "DELETED" and _ready(o) and
                         o["metadata"]["labels"].get("controller-revision-hash") == rev2)
    term0 = first_index(evs, "web-0", lambda t, o: t == "DELETED" or
                        bool(o["metadata"].get("deletionTimestamp")))
    assert 0 <= gone1 < ready1 < term0, [(t, o["metadata"]["name"]) for t, o in evs]
    cp.kubectl("rollout", "status", "-n", ns, "sts/web", "--timeout=20s")

    # kubectl rollout history / undo work on the ControllerRevisions
    revs = get(cp, ns, "controllerrevisions")["items"]
    assert sorted((r["metadata"]["name"], r["revision"]) for r in revs) == \
        sorted([(rev1, 1), (rev2, 2)])
    for r in revs:
        assert r["data"]["spec"]["template"]["$patch"] == "replace"
    out = cp.kubectl("rollout", "history", "-n", ns, "sts/web").stdout
    assert [ln.split()[0] for ln in out.splitlines()[2:] if ln.strip()] == ["1", "2"]
    out = cp.kubectl("rollout", "history", "-n", ns, "sts/web", "--revision=1").stdout
    assert "nginx:1.25" in out
    cp.kubectl("rollout", "undo", "-n", ns, "sts/web")
    s = wait_sts(cp, ns, "web", 30, updatedReplicas=3, readyReplicas=3, currentReplicas=3)
    assert s["status"]["updateRevision"] == s["status"]["currentRevision"] == rev1
    images = {p["spec"]["containers"][0]["image"] for p in pods_of(cp, ns, "app=web").values()}
    assert images == {"nginx:1.25"}
    revs = {r["metadata"]["name"]: r["revision"]
            for r in get(cp, ns, "controllerrevisions")["items"]}
    assert revs == {rev1: 3, rev2: 2}


@pytestmark_e2e
def test_statefulset_recreates_a_failed_pod(control_plane):
    cp = control_plane
    ns = namespace(cp, "sts-failed")
    svc, sts = sts_manifest(ns, replicas=1)
    apply(cp, svc, sts)
    wait_sts(cp, ns, "web", 20, readyReplicas=1)
    uid = pods_of(cp, ns, "app=web")["web-0"]["metadata"]["uid"]
    cp.kubectl("patch", "-n", ns, "pod", "web-0", "--subresource=status", "--type=merge", "-p",
               '{"status":{"phase":"Failed"}}')

    def replaced():
        p = pods_of(cp, ns, "app=web").get("web-0")
        return p and p["metadata"]["uid"] != uid and _ready(p)
    wait_for(replaced, 20, 0.1, "web-0 recreated with a new UID")
    assert any("is recreating failed Pod web-0" in m for m in event_messages(cp, ns, "web"))


# ------------------------------------------------------------------------------- DaemonSets
def ds_manifest(ns: str, name="agent", node_selector=None, tolerations=None, **spec):
    pspec: dict = {"containers": [{"name": "agent", "image": "busybox",
                                   "command": ["sleep", "3600"]}]}
    if node_selector:
        pspec["nodeSelector"] = node_selector
    if tolerations:
        pspec["tolerations"] = tolerations
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": pspec},
                     **spec}}


def hollow_nodes(cp) -> list[str]:
    return sorted(n for n in cp.ready_nodes() if n.startswith("hollow-node-"))


def pods_by_node(cp, ns: str, selector: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in pods_of(cp, ns, selector).values():
        if not p["metadata"].get("deletionTimestamp"):
            out.setdefault(p["spec"].get("nodeName") or "", []).append(p)
    return out


@pytestmark_e2e
def test_daemonset_one_pod_per_node_recreated_and_follows_taints(control_plane):
    cp = control_plane
    ns = namespace(cp, "ds-basic")
    nodes = hollow_nodes(cp)
    apply(cp, ds_manifest(ns))
    wait_ds(cp, ns, "agent", 20, desiredNumberScheduled=len(nodes), numberReady=len(nodes),
            numberAvailable=len(nodes), updatedNumberScheduled=len(nodes))
    by_node = pods_by_node(cp, ns, "app=agent")
    assert sorted(by_node) == nodes and all(len(v) == 1 for v in by_node.values())
    p = by_node[nodes[0]][0]
    term = p["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term == [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                      "values": [nodes[0]]}]}]
    tols = {(t["key"], t["effect"]) for t in p["spec"]["tolerations"]}
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in tols
    assert ("node.kubernetes.io/not-ready", "NoExecute") in tols
    assert f"Created pod: {p['metadata']['name']}" in event_messages(cp, ns, "agent")

    # a deleted pod is replaced on the same node
    cp.kubectl("delete", "-n", ns, "pod", p["metadata"]["name"], "--wait=false")
    def replaced():
        on_node = pods_by_node(cp, ns, "app=agent").get(nodes[0], [])
        return [q["metadata"]["name"] != p["metadata"]["name"] and _ready(q)
                for q in on_node] == [True]
    wait_for(replaced, 20, 0.1, "a new daemon pod on the node")
    # a NoExecute taint takes the pod away; removing it brings one back
    try:
        cp.kubectl("taint", "nodes", nodes[1], "kubelab-test=x:NoExecute")
        wait_ds(cp, ns, "agent", 20, desiredNumberScheduled=len(nodes) - 1,
                currentNumberScheduled=len(nodes) - 1)
        wait_for(lambda: nodes[1] not in pods_by_node(cp, ns, "app=agent"), 10, 0.1,
                 "the tainted node's pod gone")
    finally:
        cp.kubectl("taint", "nodes", nodes[1], "kubelab-test=x:NoExecute-")
    wait_ds(cp, ns, "agent", 20, desiredNumberScheduled=len(nodes), numberReady=len(nodes))
    assert sorted(pods_by_node(cp, ns, "app=agent")) == nodes
    cp.kubectl("delete", "-n", ns, "ds", "agent")


@pytestmark_e2e
def test_daemonset_follows_node_selector(control_plane):
    cp = control_plane
    ns = namespace(cp, "ds-selector")
    nodes = hollow_nodes(cp)
    apply(cp, ds_manifest(ns, node_selector={"kubelab-test/ds": "yes"}))
    wait_ds(cp, ns, "agent", 20, desiredNumberScheduled=0)
    try:
        cp.kubectl("label", "nodes", nodes[0], "kubelab-test/ds=yes")
        wait_ds(cp, ns, "agent", 20, desiredNumberScheduled=1, numberReady=1)
        assert sorted(pods_by_node(cp, ns, "app=agent")) == [nodes[0]]
        cp.kubectl("label", "nodes", nodes[1], "kubelab-test/ds=yes")
        cp.kubectl("label", "nodes", nodes[0], "kubelab-test/ds-")
        wait_ds(cp, ns, "agent", 20, desiredNumberScheduled=1, numberReady=1,
                numberMisscheduled=0)
        wait_for(lambda: sorted(pods_by_node(cp, ns, "app=agent")) == [nodes[1]], 10, 0.1,
                 "the pod moved to the newly labelled node")
    finally:
        for n in nodes[:2]:
            cp.kubectl("label", "nodes", n, "kubelab-test/ds-", check=False)
    cp.kubectl("delete", "-n", ns, "ds", "agent")


@pytestmark_e2e
def test_daemonset_follows_nodes_joining_and_leaving(control_plane):
    cp = control_plane
    ns = namespace(cp, "ds-nodes")
    nodes = hollow_nodes(cp)
    # tolerate everything, as node agents' DaemonSets do, so the lifecycle controller's taints on
    # a node without a kubelet do not matter
    apply(cp, ds_manifest(ns, tolerations=[{"operator": "Exists"}]))
    wait_ds(cp, ns, "agent", 20, desiredNumberScheduled=len(nodes), numberReady=len(nodes))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cp.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "joining-node", "labels": {"kubernetes.io/hostname": "joining-node"}}}))
    try:
        cp.kubectl("patch", "node", "joining-node", "--subresource=status", "--type=merge",
                   "-p", json.dumps({"status": {
                       "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "lastHeartbeatTime": now, "lastTransitionTime": now}]}}))
        wait_ds(cp, ns, "agent", 20, desiredNumberScheduled=len(nodes) + 1)
        wait_for(lambda: "joining-node" in pods_by_node(cp, ns, "app=agent"), 20, 0.1,
                 "a daemon pod scheduled onto the new node")
    finally:
        cp.kubectl("delete", "node", "joining-node", "--wait=false")
    wait_ds(cp, ns, "agent", 20, desiredNumberScheduled=len(nodes), currentNumberScheduled=len(nodes))
    wait_for(lambda: not any(p["spec"].get("nodeName") == "joining-node"
                             for p in pods_of(cp, ns, "app=agent").values()), 20, 0.1,
             "the departed node's pod removed")
    cp.kubectl("delete", "-n", ns, "ds", "agent")


@pytestmark_e2e
def test_daemonset_rolling_update_history_and_undo(control_plane):
    cp = control_plane
    ns = namespace(cp, "ds-update")
    nodes = hollow_nodes(cp)
    n = len(nodes)
    apply(cp, ds_manifest(ns))
    d = wait_ds(cp, ns, "agent", 20, desiredNumberScheduled=n, numberAvailable=n,
                updatedNumberScheduled=n)
    revs = get(cp, ns, "controllerrevisions")["items"]
    assert len(revs) == 1 and revs[0]["revision"] == 1
    hash1 = revs[0]["metadata"]["labels"]["controller-revision-hash"]
    assert revs[0]["metadata"]["name"] == f"agent-{hash1}"
    assert {p["metadata"]["labels"]["controller-revision-hash"]
            for p in pods_of(cp, ns, "app=agent").values()} == {hash1}
    _ = d

    with KubectlWatch(cp, "pods", "-n", ns, "-l", "app=agent") \
            .started(pods_of(cp, ns, "app=agent")) as w:
        cp.kubectl("set", "image", "-n", ns, "ds/agent", "agent=busybox:1.36")
        cp.kubectl("rollout", "status", "-n", ns, "ds/agent", "--timeout=30s")
        evs = w.snapshot()
    wait_ds(cp, ns, "agent", 20, updatedNumberScheduled=n, numberAvailable=n)
    revs = {r["revision"]: r for r in get(cp, ns, "controllerrevisions")["items"]}
    assert sorted(revs) == [1, 2]
    hash2 = revs[2]["metadata"]["labels"]["controller-revision-hash"]
    pods = pods_of(cp, ns, "app=agent").values()
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in pods} == {hash2}
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"busybox:1.36"}
    # maxUnavailable 1: never fewer than n-1 ready pods during the rollout
    ready: dict[str, bool] = {}
    started = False
    for t, o in evs:
        nm = o["metadata"]["name"]
        ready[nm] = t != "DELETED" and _ready(o)
        if len([1 for v in ready.values() if v]) == n:
            started = True
        if started:
            assert sum(ready.values()) >= n - 1, [(t, o["metadata"]["name"]) for t, o in evs]

    out = cp.kubectl("rollout", "history", "-n", ns, "ds/agent").stdout
    assert [ln.split()[0] for ln in out.splitlines()[2:] if ln.strip()] == ["1", "2"]
    # roll back all at once (a spec change outside the template makes no revision)
    cp.kubectl("patch", "-n", ns, "ds/agent", "--type=merge", "-p",
               '{"spec":{"updateStrategy":{"rollingUpdate":{"maxUnavailable":"100%"}}}}')
    cp.kubectl("rollout", "undo", "-n", ns, "ds/agent")
    cp.kubectl("rollout", "status", "-n", ns, "ds/agent", "--timeout=30s")
    wait_ds(cp, ns, "agent", 20, updatedNumberScheduled=n, numberAvailable=n)
    revs = {r["metadata"]["labels"]["controller-revision-hash"]: r["revision"]
            for r in get(cp, ns, "controllerrevisions")["items"]}
    assert revs == {hash1: 3, hash2: 2}
    pods = pods_of(cp, ns, "app=agent").values()
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in pods} == {hash1}
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"busybox"}
