"""The service, namespace, garbage-collection, node-lifecycle and volume controllers.

Pure tests of each controller's decisions on dicts (endpoint subsets, slices, load-balancer
IPs, namespace content, ownerReference cascades, taints and eviction times, volume choice),
then end-to-end tests on a real control plane (stores, API server, controller manager,
scheduler, hollow nodes; timers x0.1) driven by the real kubectl."""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import time
import uuid

import pytest

from controllers import endpoints as ep
from controllers import endpointslice as eps
from controllers import garbagecollector as gc
from controllers import namespace as nsc
from controllers import nodelifecycle as nlc
from controllers import pvbinder as pvb
from controllers import serviceaccount as sac
from controllers import servicelb as lb
from tests.conftest import have, wait_for

UTC = datetime.UTC


# ====================================================================== object builders
def svc(name="web", ns="default", selector=None, ports=None, **spec) -> dict:
    s = {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                      "labels": {"team": "a"}},
         "spec": {"selector": {"app": "web"} if selector is None else selector,
                  "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]
                  if ports is None else ports, "clusterIP": "10.96.0.5", **spec}}
    return s


def pod(name, ip="10.244.1.5", ready=True, ns="default", labels=None, node="node-1",
        ports=None, **extra) -> dict:
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                      "labels": {"app": "web"} if labels is None else labels},
         "spec": {"nodeName": node, "restartPolicy": "Always",
                  "containers": [{"name": "c", "image": "nginx",
                                  "ports": ports or [{"name": "http", "containerPort": 8080}]}]},
         "status": {"phase": "Running", "podIP": ip,
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    for k, v in extra.items():
        if k == "deleting":
            p["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
        else:
            p["spec"][k] = v
    if ip is None:
        p["status"].pop("podIP")
    return p


# ====================================================================== Endpoints
def test_endpoints_ready_and_not_ready_addresses():
    pods = [pod("a", "10.244.1.5"), pod("b", "10.244.1.4", ready=False),
            pod("c", None), pod("d", "10.244.1.9", deleting=True),
            pod("e", "10.244.1.7", labels={"app": "other"}),
            pod("f", "10.244.1.8", ns="elsewhere")]
    subsets = ep.compute_subsets(svc(), pods)
    assert subsets == [{
        "addresses": [{"ip": "10.244.1.5", "nodeName": "node-1", "targetRef": {
            "kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}}],
        "notReadyAddresses": [{"ip": "10.244.1.4", "nodeName": "node-1", "targetRef": {
            "kind": "Pod", "namespace": "default", "name": "b", "uid": "uid-b"}}],
        "ports": [{"port": 8080, "protocol": "TCP"}]}]


def test_endpoints_addresses_sorted_by_ip_and_finished_pods_left_out():
    done = pod("z", "10.244.1.3", restartPolicy="Never")
    done["status"]["phase"] = "Succeeded"
    pods = [pod("a", "10.244.1.10"), pod("b", "10.244.1.9"), pod("c", "10.244.2.1"), done]
    subsets = ep.compute_subsets(svc(), pods)
    assert [a["ip"] for a in subsets[0]["addresses"]] == ["10.244.1.9", "10.244.1.10",
                                                          "10.244.2.1"]


def test_endpoints_named_target_port_resolved_per_pod():
    s = svc(ports=[{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"},
                   {"name": "metrics", "port": 9100, "targetPort": 9100, "protocol": "TCP"}])
    pods = [pod("a", "10.244.1.1", ports=[{"name": "http", "containerPort": 8080}]),
            pod("b", "10.244.1.2", ports=[{"name": "http", "containerPort": 8080}]),
            pod("c", "10.244.1.3", ports=[{"name": "http", "containerPort": 9090}]),
            pod("d", "10.244.1.4", ports=[{"name": "other", "containerPort": 1}])]
    subsets = ep.compute_subsets(s, pods)
    by_ips = {tuple(a["ip"] for a in ss["addresses"]): ss["ports"] for ss in subsets}
    # RepackSubsets: ports offered by the same set of addresses share a subset
    assert by_ips == {
        ("10.244.1.1", "10.244.1.2"): [{"port": 8080, "protocol": "TCP", "name": "web"}],
        ("10.244.1.3",): [{"port": 9090, "protocol": "TCP", "name": "web"}],
        # d does not have the named port: it offers only the numeric one
        ("10.244.1.1", "10.244.1.2", "10.244.1.3", "10.244.1.4"): [
            {"port": 9100, "protocol": "TCP", "name": "metrics"}]}
    # what the controller compares against is stable under normalization
    assert ep.normalize_subsets(subsets) == subsets


def test_endpoints_named_port_needs_matching_protocol():
    s = svc(ports=[{"port": 53, "targetPort": "dns", "protocol": "UDP"}])
    p = pod("a", ports=[{"name": "dns", "containerPort": 5353, "protocol": "TCP"}])
    assert ep.compute_subsets(s, [p]) == []
    p = pod("a", ports=[{"name": "dns", "containerPort": 5353, "protocol": "UDP"}])
    assert ep.compute_subsets(s, [p])[0]["ports"] == [{"port": 5353, "protocol": "UDP"}]


def test_endpoints_publish_not_ready_addresses():
    s = svc(publishNotReadyAddresses=True)
    subsets = ep.compute_subsets(s, [pod("a", "10.244.1.1", ready=False),
                                     pod("b", "10.244.1.2", deleting=True)])
    assert [a["ip"] for a in subsets[0]["addresses"]] == ["10.244.1.1", "10.244.1.2"]
    assert "notReadyAddresses" not in subsets[0]


def test_endpoints_headless_hostname_and_subdomain():
    s = svc(name="db", clusterIP="None", ports=[])
    pods = [pod("db-0", "10.244.1.1", hostname="db-0", subdomain="db"),
            pod("db-1", "10.244.1.2", hostname="db-1", subdomain="other")]
    subsets = ep.compute_subsets(s, pods)
    assert len(subsets) == 1 and "ports" not in subsets[0]
    assert [(a["ip"], a.get("hostname")) for a in subsets[0]["addresses"]] == \
        [("10.244.1.1", "db-0"), ("10.244.1.2", None)]
    assert ep.desired_labels(s) == {"team": "a", "service.kubernetes.io/headless": ""}
    assert ep.desired_labels(svc()) == {"team": "a"}
    # a non-headless Service without ports has no endpoints at all
    assert ep.compute_subsets(svc(ports=[]), pods) == []


def test_endpoints_selectorless_and_external_name_services_are_not_managed():
    from controllers.endpointutil import service_selector
    assert service_selector(svc(selector={})) is None
    assert service_selector(svc(type="ExternalName")) is None
    assert service_selector(svc()) is not None


# ====================================================================== EndpointSlices
def test_slice_built_for_a_new_service():
    s = svc()
    create, update, delete = eps.plan_slices(s, [pod("a", "10.244.1.2"),
                                                 pod("b", "10.244.1.3", ready=False,
                                                     hostname="b", subdomain="web")], [])
    assert update == [] and delete == [] and len(create) == 1
    sl = create[0]
    assert sl["metadata"]["generateName"] == "web-"
    assert sl["metadata"]["labels"] == {
        "team": "a", "kubernetes.io/service-name": "web",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    assert sl["metadata"]["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Service", "name": "web", "uid": "uid-web",
        "controller": True, "blockOwnerDeletion": True}]
    assert sl["addressType"] == "IPv4"
    assert sl["ports"] == [{"name": "", "port": 8080, "protocol": "TCP"}]
    assert sl["endpoints"] == [
        {"addresses": ["10.244.1.2"],
         "conditions": {"ready": True, "serving": True, "terminating": False},
         "nodeName": "node-1",
         "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}},
        {"addresses": ["10.244.1.3"],
         "conditions": {"ready": False, "serving": False, "terminating": False},
         "hostname": "b", "nodeName": "node-1",
         "targetRef": {"kind": "Pod", "namespace": "default", "name": "b", "uid": "uid-b"}}]
    assert all("zone" not in e for e in sl["endpoints"])


def test_slice_terminating_pod_conditions():
    (sl,), _, _ = eps.plan_slices(svc(), [pod("a", deleting=True)], [])
    assert sl["endpoints"][0]["conditions"] == {"ready": False, "serving": True,
                                                "terminating": True}
    (sl,), _, _ = eps.plan_slices(svc(publishNotReadyAddresses=True),
                                  [pod("a", ready=False, deleting=True)], [])
    assert sl["endpoints"][0]["conditions"] == {"ready": True, "serving": True,
                                                "terminating": True}


def _stored(slice_: dict, name: str) -> dict:
    s = copy.deepcopy(slice_)
    s["metadata"]["name"] = name
    s["metadata"]["uid"] = f"uid-{name}"
    s["metadata"]["namespace"] = "default"
    return s


def test_slices_hold_at_most_100_endpoints_and_are_reused():
    pods = [pod(f"p{i}", f"10.244.{i // 200}.{i % 200 + 1}") for i in range(250)]
    create, update, delete = eps.plan_slices(svc(), pods, [])
    assert [len(s["endpoints"]) for s in create] == [100, 100, 50]
    stored = [_stored(s, f"web-{i}") for i, s in enumerate(create)]
    # nothing changed: nothing to do
    assert eps.plan_slices(svc(), pods, stored) == ([], [], [])
    # one pod gone, one new: the new one fills the hole, the others stay where they are
    pods2 = [p for p in pods if p["metadata"]["name"] != "p5"] + [pod("new", "10.244.9.9")]
    create, update, delete = eps.plan_slices(svc(), pods2, stored)
    assert create == [] and delete == [] and len(update) == 1
    names = {e["targetRef"]["name"] for e in update[0]["endpoints"]}
    assert "p5" not in names and "new" in names and len(names) == 100
    assert update[0]["metadata"]["name"] == "web-0"


def test_slices_placeholder_when_no_endpoints_and_port_changes():
    create, update, delete = eps.plan_slices(svc(), [], [])
    assert len(create) == 1 and create[0]["endpoints"] == [] and create[0]["ports"] == []
    placeholder = _stored(create[0], "web-x")
    assert eps.plan_slices(svc(), [], [placeholder]) == ([], [], [])
    # pods appear: the placeholder (other ports) goes, a real slice comes
    create, _, delete = eps.plan_slices(svc(), [pod("a")], [placeholder])
    assert [d["metadata"]["name"] for d in delete] == ["web-x"] and len(create) == 1
    # the Service's target port changes: the old slice is replaced
    old = _stored(create[0], "web-y")
    s2 = svc(ports=[{"port": 80, "targetPort": 9090, "protocol": "TCP"}])
    create, update, delete = eps.plan_slices(s2, [pod("a")], [old])
    assert [d["metadata"]["name"] for d in delete] == ["web-y"]
    assert update == []
    assert create[0]["ports"] == [{"name": "", "port": 9090, "protocol": "TCP"}]


def test_slices_grouped_by_resolved_named_ports():
    s = svc(ports=[{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}])
    pods = [pod("a", "10.244.1.1", ports=[{"name": "http", "containerPort": 8080}]),
            pod("b", "10.244.1.2", ports=[{"name": "http", "containerPort": 9090}])]
    create, _, _ = eps.plan_slices(s, pods, [])
    got = sorted((sl["ports"][0]["port"], [e["addresses"][0] for e in sl["endpoints"]])
                 for sl in create)
    assert got == [(8080, ["10.244.1.1"]), (9090, ["10.244.1.2"])]


def test_slice_labels_of_headless_service():
    labels = eps.slice_labels(svc(clusterIP="None"))
    assert labels["service.kubernetes.io/headless"] == ""


# ====================================================================== load balancer IPs
def test_lb_pool_parsing():
    assert lb.parse_pool("127.30.0.200-127.30.0.203") == ["127.30.0.200", "127.30.0.201",
                                                           "127.30.0.202", "127.30.0.203"]
    assert lb.parse_pool("10.0.0.0/30, 10.0.0.9") == ["10.0.0.1", "10.0.0.2", "10.0.0.9"]
    assert len(lb.parse_pool(lb.DEFAULT_POOL)) == 51
    with pytest.raises(ValueError):
        lb.parse_pool("10.0.0.5-10.0.0.1")


def _lb(name, ip=None, ts="2024-01-01T00:00:00Z", **spec):
    s = svc(name, type="LoadBalancer", **spec)
    s["metadata"]["creationTimestamp"] = ts
    s["status"] = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]} if ip else {}}
    return s


def test_lb_ip_choice():
    pool = lb.parse_pool("10.0.0.1-10.0.0.3")
    a, b = _lb("a", "10.0.0.1"), _lb("b")
    used = set(lb.used_ips([a, b], except_uid="uid-b"))
    assert used == {"10.0.0.1"}
    assert lb.choose_ip(b, pool, used) == ("10.0.0.2", "")
    # a Service keeps its address
    assert lb.choose_ip(a, pool, set(lb.used_ips([a, b], except_uid="uid-a"))) == \
        ("10.0.0.1", "")
    # spec.loadBalancerIP is honoured when free and in the pool
    assert lb.choose_ip(_lb("c", loadBalancerIP="10.0.0.3"), pool, used) == ("10.0.0.3", "")
    ip, why = lb.choose_ip(_lb("c", loadBalancerIP="10.0.0.1"), pool, used)
    assert ip is None and "already allocated" in why
    ip, why = lb.choose_ip(_lb("c", loadBalancerIP="192.168.1.1"), pool, used)
    assert ip is None and "not in the load-balancer pool" in why
    ip, why = lb.choose_ip(b, pool, {"10.0.0.1", "10.0.0.2", "10.0.0.3"})
    assert ip is None and "no available IPs" in why


def test_lb_used_ips_ignore_non_lb_services_and_oldest_wins_a_duplicate():
    old = _lb("old", "10.0.0.1", ts="2024-01-01T00:00:00Z")
    new = _lb("new", "10.0.0.1", ts="2024-02-01T00:00:00Z")
    cluster_ip = svc("plain")
    cluster_ip["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}]}}
    assert lb.used_ips([new, old, cluster_ip]) == {"10.0.0.1": "uid-old"}
    # the newer one must move
    pool = lb.parse_pool("10.0.0.1-10.0.0.3")
    assert lb.choose_ip(new, pool, set(lb.used_ips([new, old], except_uid="uid-new"))) == \
        ("10.0.0.2", "")


# ====================================================================== ServiceAccounts
def test_default_service_account_wanted_in_active_namespaces():
    ns = {"metadata": {"name": "x"}, "status": {"phase": "Active"}}
    assert sac.missing_accounts(ns, set()) == ["default"]
    assert sac.missing_accounts(ns, {"default", "other"}) == []
    term = {"metadata": {"name": "x", "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Terminating"}}
    assert sac.missing_accounts(term, set()) == []
    assert sac.missing_accounts(None, set()) == []


# ====================================================================== Namespaces
def test_namespace_needs_cleanup_only_while_terminating_with_finalizer():
    ns = {"metadata": {"name": "x"}, "spec": {"finalizers": ["kubernetes"]}}
    assert not nsc.needs_cleanup(ns)
    ns["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert nsc.needs_cleanup(ns)
    ns["spec"]["finalizers"] = []
    assert not nsc.needs_cleanup(ns)


def test_namespace_content_summary_and_conditions():
    content = {"pods.": [{"metadata": {"name": "a"}},
                         {"metadata": {"name": "b", "finalizers": ["example.com/x"]}}],
               "configmaps.": [], "deployments.apps": [{"metadata": {"name": "d"}}]}
    remaining, fins = nsc.summarize(content)
    assert remaining == {"pods.": 2, "deployments.apps": 1}
    assert fins == {"example.com/x": 1}
    conds = {c["type"]: c for c in nsc.namespace_conditions(remaining, fins, [])}
    assert conds["NamespaceContentRemaining"]["status"] == "True"
    assert conds["NamespaceContentRemaining"]["message"] == \
        "Some resources are remaining: deployments.apps has 1 resource instances, " \
        "pods. has 2 resource instances"
    assert conds["NamespaceFinalizersRemaining"]["message"] == \
        "Some content in the namespace has finalizers remaining: example.com/x in 1 " \
        "resource instances"
    assert conds["NamespaceDeletionContentFailure"]["status"] == "False"
    done = {c["type"]: c["status"] for c in nsc.namespace_conditions({}, {}, [])}
    assert set(done.values()) == {"False"} and len(done) == 5
    merged = nsc.merge_conditions(
        [{"type": "NamespaceContentRemaining", "status": "True",
          "lastTransitionTime": "then"}],
        nsc.namespace_conditions(remaining, fins, []), "now")
    times = {c["type"]: c["lastTransitionTime"] for c in merged}
    assert times["NamespaceContentRemaining"] == "then"
    assert times["NamespaceFinalizersRemaining"] == "now"


# ====================================================================== garbage collector
def _owned(name, *owners, fins=None):
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                         "finalizers": fins or [],
                         "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                                              "name": o, "uid": f"uid-{o}",
                                              "blockOwnerDeletion": True} for o in owners]}}


def test_gc_owner_state_by_uid():
    ref = {"kind": "ConfigMap", "name": "o", "uid": "uid-o"}
    assert gc.owner_state(None, ref) == gc.DANGLING
    assert gc.owner_state({"metadata": {"name": "o", "uid": "other"}}, ref) == gc.DANGLING
    assert gc.owner_state({"metadata": {"name": "o", "uid": "uid-o"}}, ref) == gc.SOLID
    deleting = {"metadata": {"name": "o", "uid": "uid-o", "deletionTimestamp": "t",
                             "finalizers": ["foregroundDeletion"]}}
    assert gc.owner_state(deleting, ref) == gc.WAITING
    graceful = {"metadata": {"name": "o", "uid": "uid-o", "deletionTimestamp": "t"}}
    assert gc.owner_state(graceful, ref) == gc.SOLID


def test_gc_decisions():
    item = _owned("d", "a", "b")
    ra, rb = item["metadata"]["ownerReferences"]
    assert gc.decide(item, [(ra, gc.SOLID), (rb, gc.SOLID)], False) == ("keep",)
    # another live owner keeps it; the dangling reference goes
    assert gc.decide(item, [(ra, gc.SOLID), (rb, gc.DANGLING)], False) == \
        ("remove_refs", ["uid-b"])
    assert gc.decide(item, [(ra, gc.DANGLING), (rb, gc.DANGLING)], False) == \
        ("delete", "Background")
    # owner in foreground deletion: a dependent with dependents goes in the foreground too
    assert gc.decide(item, [(ra, gc.WAITING), (rb, gc.DANGLING)], True) == \
        ("delete", "Foreground")
    assert gc.decide(item, [(ra, gc.WAITING)], False) == ("delete", "Background")
    # an existing finalizer on the dependent decides the propagation
    orphaning = _owned("d", "a", fins=["orphan"])
    assert gc.decide(orphaning, [(ra, gc.DANGLING)], False) == ("delete", "Orphan")


def test_gc_blocking_dependents_and_resources():
    owner = {"metadata": {"name": "a", "uid": "uid-a"}}
    d1 = _owned("d1", "a")
    d2 = _owned("d2", "a")
    d2["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] = False
    assert gc.blocking_dependents(owner, [d1, d2]) == [d1]
    assert gc.resource_for({"apiVersion": "apps/v1", "kind": "ReplicaSet"}).resource == \
        "replicasets"
    assert gc.resource_for({"apiVersion": "v1", "kind": "ReplicaSet"}) is None
    assert gc.resource_for({"apiVersion": "example.com/v1", "kind": "Widget"}) is None


# ====================================================================== node lifecycle
def _node(ready="True", taints=None):
    return {"metadata": {"name": "n1"},
            "spec": {"taints": taints} if taints is not None else {},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficient",
                 "lastHeartbeatTime": "hb", "lastTransitionTime": "old"},
                {"type": "Ready", "status": ready, "reason": "KubeletReady",
                 "lastHeartbeatTime": "hb", "lastTransitionTime": "old"}]}}


def test_node_conditions_become_unknown():
    conds = nlc.unknown_conditions(_node(), "now")
    by = {c["type"]: c for c in conds}
    assert by["Ready"] == {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                           "message": "Kubelet stopped posting node status.",
                           "lastHeartbeatTime": "hb", "lastTransitionTime": "now"}
    assert by["MemoryPressure"]["status"] == "Unknown"
    assert by["DiskPressure"]["reason"] == "NodeStatusNeverUpdated"
    n = _node()
    n["status"]["conditions"] = conds
    assert nlc.unknown_conditions(n, "later") is None


def test_node_condition_taints():
    other = {"key": "dedicated", "value": "x", "effect": "NoSchedule"}
    t = nlc.reconcile_taints(_node("Unknown", [other]), "now")
    assert t == [other, {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute",
                         "timeAdded": "now"},
                 {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]
    # unreachable -> not ready swaps the taints
    t2 = nlc.reconcile_taints(_node("False", t), "later")
    assert {(x["key"], x["effect"]) for x in t2} == {
        ("dedicated", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/not-ready", "NoSchedule")}
    assert nlc.reconcile_taints(_node("False", t2), "again") is None
    # ready again: only the other taint stays
    assert nlc.reconcile_taints(_node("True", t2), "now") == [other]
    assert nlc.reconcile_taints(_node("True"), "now") is None


def test_taint_eviction_timing(monkeypatch):
    monkeypatch.setattr(nlc, "scaled", lambda s: s * 0.1)
    added = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    taint = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute",
             "timeAdded": added.strftime("%Y-%m-%dT%H:%M:%SZ")}
    t0 = added.timestamp()

    def p(*tols):
        return {"spec": {"tolerations": list(tols)}}
    default = {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
               "effect": "NoExecute", "tolerationSeconds": 300}
    assert nlc.eviction_time(p(default), [taint], t0 + 5) == pytest.approx(t0 + 30)
    # no toleration: at once
    assert nlc.eviction_time(p(), [taint], t0 + 5) == t0 + 5
    # tolerated forever
    forever = {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
               "effect": "NoExecute"}
    assert nlc.eviction_time(p(forever), [taint], t0 + 5) is None
    # the shortest of the tolerations used
    short = dict(default, tolerationSeconds=20)
    assert nlc.eviction_time(p(default, short), [taint], t0) == pytest.approx(t0 + 2)
    # a wildcard toleration tolerates everything
    assert nlc.eviction_time(p({"operator": "Exists"}), [taint], t0) is None
    # an Equal toleration needs the value
    keyed = {"key": "k", "value": "v", "effect": "NoExecute"}
    assert nlc.eviction_time(p({"key": "k", "operator": "Equal", "value": "w"}), [keyed],
                             t0) == t0
    assert nlc.eviction_time(p({"key": "k", "operator": "Equal", "value": "v"}), [keyed],
                             t0) is None
    # NoSchedule taints never evict
    assert nlc.eviction_time(p(), [dict(taint, effect="NoSchedule")], t0) is None


def test_node_heartbeat_signature():
    n = _node()
    lease = {"spec": {"renewTime": "2024-01-01T00:00:00.000000Z"}}
    assert nlc.heartbeat_signature(n, lease) == ("2024-01-01T00:00:00.000000Z", "hb")
    assert nlc.heartbeat_signature(n, None) == (None, "hb")


# ====================================================================== volumes
def _pv(name, size, modes=("ReadWriteOnce",), cls="", claim=None, phase="Available",
        labels=None, node=None):
    pv = {"metadata": {"name": name, "labels": labels or {}},
          "spec": {"capacity": {"storage": size}, "accessModes": list(modes),
                   "storageClassName": cls, "hostPath": {"path": f"/d/{name}"}},
          "status": {"phase": phase}}
    if claim:
        pv["spec"]["claimRef"] = claim
    if node:
        pv["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    return pv


def _pvc(name="data", size="1Gi", modes=("ReadWriteOnce",), cls=None, **spec):
    c = {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                      "resourceVersion": "7"},
         "spec": {"accessModes": list(modes), "resources": {"requests": {"storage": size}},
                  **spec}, "status": {"phase": "Pending"}}
    if cls is not None:
        c["spec"]["storageClassName"] = cls
    return c


def test_quantities():
    assert pvb.quantity("1Gi") == 2 ** 30
    assert pvb.quantity("500Mi") == 500 * 2 ** 20
    assert pvb.quantity("2G") == 2e9
    assert pvb.quantity("1") == 1
    assert pvb.quantity("1e3") == 1000


def test_pv_choice_smallest_matching():
    pvs = [_pv("big", "10Gi"), _pv("small", "1Gi"), _pv("tiny", "500Mi"),
           _pv("rwx", "1Gi", modes=("ReadWriteMany",)), _pv("fast", "1Gi", cls="fast"),
           _pv("taken", "1Gi", claim={"name": "other", "namespace": "default", "uid": "x"}),
           _pv("released", "1Gi", phase="Released")]
    assert pvb.choose_volume(_pvc(cls=""), pvs, "")["metadata"]["name"] == "small"
    assert pvb.choose_volume(_pvc(size="2Gi", cls=""), pvs, "")["metadata"]["name"] == "big"
    assert pvb.choose_volume(_pvc(modes=("ReadWriteMany",), cls=""), pvs, "")[
        "metadata"]["name"] == "rwx"
    assert pvb.choose_volume(_pvc(cls="fast"), pvs, "fast")["metadata"]["name"] == "fast"
    assert pvb.choose_volume(_pvc(size="20Gi", cls=""), pvs, "") is None
    # a volume pre-bound to the claim wins
    pre = _pv("pre", "50Gi", claim={"name": "data", "namespace": "default"})
    assert pvb.choose_volume(_pvc(cls=""), pvs + [pre], "")["metadata"]["name"] == "pre"
    # selector
    labelled = _pv("lab", "5Gi", labels={"tier": "gold"})
    got = pvb.choose_volume(_pvc(cls="", selector={"matchLabels": {"tier": "gold"}}),
                            pvs + [labelled], "")
    assert got["metadata"]["name"] == "lab"


def test_pv_choice_respects_node_affinity():
    pvs = [_pv("on-1", "1Gi", node="node-1"), _pv("on-2", "2Gi", node="node-2")]
    assert pvb.choose_volume(_pvc(cls=""), pvs, "", "node-2")["metadata"]["name"] == "on-2"
    assert pvb.choose_volume(_pvc(cls=""), pvs, "", "node-3") is None
    assert pvb.choose_volume(_pvc(cls=""), pvs, "")["metadata"]["name"] == "on-1"


def test_delayed_binding_waits_for_a_consumer_or_the_schedulers_choice():
    pvs = [_pv("free", "1Gi", cls="standard"),
           _pv("chosen", "5Gi", cls="standard",
               claim={"name": "data", "namespace": "default", "uid": "uid-data"})]
    claim = _pvc(cls="standard")
    # no consumer yet: only the volume the scheduler pre-bound to the claim
    assert pvb.pick_volume(claim, pvs[:1], "standard", True, None) == (None, True)
    pv, waiting = pvb.pick_volume(claim, pvs, "standard", True, None)
    assert pv["metadata"]["name"] == "chosen" and not waiting
    # a consumer node known: any fitting volume
    pv, waiting = pvb.pick_volume(claim, pvs[:1], "standard", True, "node-1")
    assert pv["metadata"]["name"] == "free" and not waiting
    # immediate binding
    assert pvb.pick_volume(claim, pvs[:1], "standard", False, None)[0]["metadata"]["name"] \
        == "free"


def test_claim_class_and_default_class():
    std = pvb.default_storage_class()
    std["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    other = {"metadata": {"name": "fast", "creationTimestamp": "2024-01-02T00:00:00Z"}}
    assert pvb.claim_class(_pvc(), [std, other]) == "standard"
    assert pvb.claim_class(_pvc(cls=""), [std]) == ""
    assert pvb.claim_class(_pvc(cls="fast"), [std]) == "fast"
    assert pvb.claim_class(_pvc(), [other]) == ""
    assert std["volumeBindingMode"] == "WaitForFirstConsumer"
    assert std["provisioner"] == "kubelab.io/local-path"


def test_consumer_node_and_provisioned_volume():
    claim = _pvc(cls="standard")
    user = {"metadata": {"name": "u", "namespace": "default", "creationTimestamp": "t"},
            "spec": {"nodeName": "node-2", "volumes": [
                {"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}
    unscheduled = copy.deepcopy(user)
    unscheduled["spec"].pop("nodeName")
    assert pvb.consumer_node(claim, [unscheduled]) is None
    assert pvb.consumer_node(claim, [unscheduled, user]) == "node-2"
    claim["metadata"]["annotations"] = {"volume.kubernetes.io/selected-node": "node-3"}
    assert pvb.consumer_node(claim, [user]) == "node-3"
    pv = pvb.provisioned_volume(_pvc(cls="standard"), pvb.default_storage_class(), "node-2")
    assert pv["metadata"]["name"] == "pvc-uid-data"
    assert pv["spec"]["hostPath"]["path"] == "/var/lib/kubelab/volumes/pvc-uid-data"
    assert pv["spec"]["claimRef"]["uid"] == "uid-data"
    assert pv["spec"]["storageClassName"] == "standard"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pvb.pv_fits_node(pv, None, "node-2") and not pvb.pv_fits_node(pv, None, "node-1")


# ====================================================================== end to end
pytestmark_e2e = pytest.mark.skipif(not have("kubectl"), reason="kubectl not installed")


def _ns(cp, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", name)
    return name


def _apply(cp, ns: str, manifest: str):
    return cp.kubectl("apply", "-n", ns, "-f", "-", input=manifest)


def _get(cp, *args) -> dict | None:
    p = cp.kubectl("get", *args, "-o", "json", check=False)
    if p.returncode != 0:
        if "NotFound" in p.stderr or "not found" in p.stderr:
            return None
        raise AssertionError(p.stderr)
    return json.loads(p.stdout)


def _pod_yaml(name: str, labels: dict, port: int = 8080, ann: dict | None = None,
              extra: str = "", port_name: str = "http") -> str:
    lab = "".join(f"\n    {k}: \"{v}\"" for k, v in labels.items())
    an = "".join(f"\n    {k}: \"{v}\"" for k, v in (ann or {}).items())
    return f"""
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:{lab}
  annotations:{an or " {}"}
spec:
  terminationGracePeriodSeconds: 0{extra}
  containers:
  - name: app
    image: nginx
    ports:
    - name: {port_name}
      containerPort: {port}
---"""


def _ep_state(cp, ns: str, name: str) -> dict:
    """{port tuple: (ready pod names, not ready pod names)} of an Endpoints object."""
    obj = _get(cp, "endpoints", name, "-n", ns)
    out = {}
    for ss in (obj or {}).get("subsets") or []:
        ports = tuple(sorted((p.get("name", ""), p["port"]) for p in ss.get("ports") or []))
        out[ports] = (sorted(a["targetRef"]["name"] for a in ss.get("addresses") or []),
                      sorted(a["targetRef"]["name"] for a in ss.get("notReadyAddresses") or []))
    return out


@pytestmark_e2e
def test_e2e_endpoints_follow_pods_readiness_and_named_ports(control_plane):
    cp = control_plane
    ns = _ns(cp, "ep")
    _apply(cp, ns, """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
""" + "\n---" + _pod_yaml("web-a", {"app": "web"}, 8080)
        + _pod_yaml("web-b", {"app": "web"}, 9090)
        + _pod_yaml("web-slow", {"app": "web"}, 8080, {"hollow.kubelab.io/ready": "false"})
        + _pod_yaml("other", {"app": "other"}, 8080))
    want = {(("http", 8080),): (["web-a"], ["web-slow"]), (("http", 9090),): (["web-b"], [])}
    wait_for(lambda: _ep_state(cp, ns, "web") == want, 20, 0.2,
             "endpoints with named ports resolved per pod")
    ep_obj = _get(cp, "endpoints", "web", "-n", ns)
    addr = ep_obj["subsets"][0]["addresses"][0]
    pod_obj = _get(cp, "pod", addr["targetRef"]["name"], "-n", ns)
    assert addr["ip"] == pod_obj["status"]["podIP"]
    assert addr["nodeName"] == pod_obj["spec"]["nodeName"]
    assert addr["targetRef"]["uid"] == pod_obj["metadata"]["uid"]
    out = cp.kubectl("get", "endpoints", "web", "-n", ns).stdout
    assert pod_obj["status"]["podIP"] in out
    # a new pod comes, one goes
    _apply(cp, ns, _pod_yaml("web-c", {"app": "web"}, 8080))
    cp.kubectl("delete", "pod", "web-a", "-n", ns, "--wait=false")
    want = {(("http", 8080),): (["web-c"], ["web-slow"]), (("http", 9090),): (["web-b"], [])}
    wait_for(lambda: _ep_state(cp, ns, "web") == want, 20, 0.2, "endpoints after pod churn")
    # a relabelled pod leaves the Service
    cp.kubectl("label", "pod", "web-b", "-n", ns, "app=gone", "--overwrite")
    want = {(("http", 8080),): (["web-c"], ["web-slow"])}
    wait_for(lambda: _ep_state(cp, ns, "web") == want, 20, 0.2, "endpoints after relabel")
    # deleting the Endpoints object: it comes back
    cp.kubectl("delete", "endpoints", "web", "-n", ns)
    wait_for(lambda: _ep_state(cp, ns, "web") == want, 20, 0.2, "endpoints recreated")
    # deleting the Service removes its Endpoints
    cp.kubectl("delete", "service", "web", "-n", ns)
    wait_for(lambda: _get(cp, "endpoints", "web", "-n", ns) is None, 20, 0.2,
             "endpoints removed with the service")
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_readiness_changes_move_addresses(control_plane):
    cp = control_plane
    ns = _ns(cp, "ready")
    _apply(cp, ns, """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---""" + _pod_yaml("late", {"app": "web"}, 8080, {"hollow.kubelab.io/ready-after-seconds": "3"}))
    wait_for(lambda: _ep_state(cp, ns, "web") == {(("", 8080),): ([], ["late"])}, 20, 0.1,
             "the pod listed as not ready first")
    wait_for(lambda: _ep_state(cp, ns, "web") == {(("", 8080),): (["late"], [])}, 20, 0.2,
             "the pod moved to addresses once ready")
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_headless_service_hostnames_and_selectorless_endpoints(control_plane):
    cp = control_plane
    ns = _ns(cp, "hl")
    _apply(cp, ns, """
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: external}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: external}
subsets:
- addresses: [{ip: 10.1.2.3}]
  ports: [{port: 80}]
---""" + _pod_yaml("db-0", {"app": "db"}, 5432, extra="\n  hostname: db-0\n  subdomain: db"))

    def hostnames():
        obj = _get(cp, "endpoints", "db", "-n", ns)
        return [(a.get("hostname"), a["targetRef"]["name"])
                for ss in (obj or {}).get("subsets") or [] for a in ss.get("addresses") or []]
    wait_for(lambda: hostnames() == [("db-0", "db-0")], 20, 0.2, "hostname on the address")
    obj = _get(cp, "endpoints", "db", "-n", ns)
    assert obj["metadata"]["labels"].get("service.kubernetes.io/headless") == ""
    # the selector-less Service keeps the Endpoints its user wrote
    user = _get(cp, "endpoints", "external", "-n", ns)
    assert [a["ip"] for a in user["subsets"][0]["addresses"]] == ["10.1.2.3"]
    cp.kubectl("delete", "namespace", ns, "--wait=false")


def _slices_accept_loopback(cp) -> bool:
    """The API server's EndpointSlice validation rejects loopback addresses as Kubernetes
    does, while kubelab's unprivileged pod network is 127/8."""
    async def probe():
        async with cp.client() as c:
            try:
                await c.create("EndpointSlice", {
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"generateName": "probe-", "namespace": "default"},
                    "addressType": "IPv4", "endpoints": [{"addresses": ["127.245.1.2"]}],
                    "ports": []}, "default", field_manager="test")
            except Exception as e:  # noqa: BLE001
                return "loopback" not in str(e)
            return True
    ok = asyncio.run(probe())
    for s in (_get(cp, "endpointslices", "-n", "default") or {}).get("items", []):
        if s["metadata"]["name"].startswith("probe-"):
            cp.kubectl("delete", "endpointslice", s["metadata"]["name"], "-n", "default",
                       check=False)
    return ok


@pytestmark_e2e
def test_e2e_endpointslices(control_plane):
    cp = control_plane
    ns = _ns(cp, "eps")
    _apply(cp, ns, """
apiVersion: v1
kind: Service
metadata: {name: web, labels: {team: blue}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---""" + _pod_yaml("web-a", {"app": "web"}, 8080) + _pod_yaml("web-b", {"app": "web"}, 8080))
    svc_uid = _get(cp, "service", "web", "-n", ns)["metadata"]["uid"]

    def slices():
        return (_get(cp, "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=web")
                or {}).get("items", [])
    # with no pods running yet or none accepted, at least the (placeholder) slice exists
    wait_for(lambda: slices(), 20, 0.2, "an EndpointSlice for the service")
    sl = slices()[0]
    md = sl["metadata"]
    assert md["name"].startswith("web-") and md.get("generateName") == "web-"
    assert md["labels"]["endpointslice.kubernetes.io/managed-by"] == \
        "endpointslice-controller.k8s.io"
    assert md["labels"]["team"] == "blue"
    assert md["ownerReferences"][0]["uid"] == svc_uid
    assert md["ownerReferences"][0]["kind"] == "Service"
    assert sl["addressType"] == "IPv4"
    if not _slices_accept_loopback(cp):
        pytest.xfail("the API server rejects loopback addresses in EndpointSlices "
                     "(apiserver/kinds/networking.py _special_ip); pod IPs are 127.245.x.y")

    def names():
        return sorted(e["targetRef"]["name"] for s in slices() for e in s.get("endpoints") or []
                      if e["conditions"]["ready"])
    wait_for(lambda: names() == ["web-a", "web-b"], 20, 0.2, "both pods in the slice")
    s = next(s for s in slices() if s.get("endpoints"))
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    e = s["endpoints"][0]
    assert set(e) >= {"addresses", "conditions", "nodeName", "targetRef"} and "zone" not in e
    cp.kubectl("delete", "pod", "web-a", "-n", ns, "--wait=false")
    wait_for(lambda: names() == ["web-b"], 20, 0.2, "the deleted pod leaves the slice")
    # the Service goes: its slices go with it (garbage collector)
    cp.kubectl("delete", "service", "web", "-n", ns)
    wait_for(lambda: slices() == [], 20, 0.2, "slices removed with the service")
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_load_balancer_ips(control_plane):
    cp = control_plane
    ns = _ns(cp, "lb")
    lbsvc = """
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: LoadBalancer
  selector: {{app: {name}}}
  ports: [{{port: 80}}]{extra}
---"""
    _apply(cp, ns, lbsvc.format(name="one", extra="") + lbsvc.format(name="two", extra="")
           + lbsvc.format(name="pinned", extra="\n  loadBalancerIP: 127.30.0.240"))

    def ip(name):
        obj = _get(cp, "service", name, "-n", ns)
        ing = ((obj or {}).get("status", {}).get("loadBalancer") or {}).get("ingress") or []
        return ing[0]["ip"] if ing else None
    one = wait_for(lambda: ip("one"), 20, 0.2, "an external IP for one")
    two = wait_for(lambda: ip("two"), 20, 0.2, "an external IP for two")
    pinned = wait_for(lambda: ip("pinned"), 20, 0.2, "an external IP for pinned")
    assert pinned == "127.30.0.240"
    assert len({one, two, pinned}) == 3
    pool = lb.parse_pool(lb.DEFAULT_POOL)
    assert one in pool and two in pool
    obj = _get(cp, "service", "one", "-n", ns)
    assert obj["status"]["loadBalancer"]["ingress"] == [{"ip": one, "ipMode": "VIP"}]
    out = cp.kubectl("get", "svc", "one", "-n", ns).stdout
    assert one in out.splitlines()[1].split()
    # no longer a LoadBalancer: the address is given back
    cp.kubectl("patch", "svc", "one", "-n", ns, "--type=merge", "-p",
               '{"spec": {"type": "ClusterIP"}}')
    wait_for(lambda: ip("one") is None, 20, 0.2, "the address dropped")
    # a new LoadBalancer gets a different address from every live one
    _apply(cp, ns, lbsvc.format(name="three", extra=""))
    three = wait_for(lambda: ip("three"), 20, 0.2, "an external IP for three")
    assert three not in (two, pinned)
    assert "<pending>" not in cp.kubectl("get", "svc", "-n", ns).stdout
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_default_service_account(control_plane):
    cp = control_plane
    ns = _ns(cp, "sa")
    first = wait_for(lambda: _get(cp, "serviceaccount", "default", "-n", ns), 20, 0.2,
                     "the default ServiceAccount")
    cp.kubectl("delete", "serviceaccount", "default", "-n", ns)

    def recreated():
        sa = _get(cp, "serviceaccount", "default", "-n", ns)
        return sa and sa["metadata"]["uid"] != first["metadata"]["uid"]
    wait_for(recreated, 20, 0.2, "the default ServiceAccount recreated")
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_namespace_deletion_empties_then_removes_it(control_plane):
    cp = control_plane
    ns = _ns(cp, "gone")
    _apply(cp, ns, """
apiVersion: v1
kind: ConfigMap
metadata: {name: plain}
data: {a: b}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: held, finalizers: [example.com/hold]}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {k: v}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---""" + _pod_yaml("p", {"app": "web"}))
    wait_for(lambda: _get(cp, "serviceaccount", "default", "-n", ns), 20, 0.2, "default SA")
    cp.kubectl("delete", "namespace", ns, "--wait=false")

    def terminating_with_only_held_left():
        obj = _get(cp, "namespace", ns)
        conds = {c["type"]: c for c in obj.get("status", {}).get("conditions") or []}
        fin = conds.get("NamespaceFinalizersRemaining", {})
        left = cp.kubectl("get", "all,cm,secret,sa,endpoints", "-n", ns, "-o", "name").stdout
        return obj["status"]["phase"] == "Terminating" and fin.get("status") == "True" and \
            "example.com/hold" in fin.get("message", "") and \
            left.split() == ["configmap/held"]
    wait_for(terminating_with_only_held_left, 30, 0.3,
             "everything but the held ConfigMap removed, namespace Terminating")
    # new content is refused meanwhile
    p = cp.kubectl("create", "configmap", "late", "-n", ns, check=False)
    assert p.returncode != 0 and "being terminated" in p.stderr
    cp.kubectl("patch", "configmap", "held", "-n", ns, "--type=merge", "-p",
               '{"metadata": {"finalizers": null}}')
    wait_for(lambda: _get(cp, "namespace", ns) is None, 30, 0.3, "the namespace deleted")


def _cm(name: str, owners: list[tuple[str, str]] = (), fins: list[str] = (),
        block: bool = True) -> str:
    refs = "".join(f"""
  - apiVersion: v1
    kind: ConfigMap
    name: {o}
    uid: {u}
    blockOwnerDeletion: {str(block).lower()}""" for o, u in owners)
    return f"""
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  finalizers: {json.dumps(list(fins))}
  ownerReferences:{refs or " []"}
---"""


def _uid(cp, kind, name, ns):
    return _get(cp, kind, name, "-n", ns)["metadata"]["uid"]


@pytestmark_e2e
def test_e2e_gc_background_cascade(control_plane):
    cp = control_plane
    ns = _ns(cp, "gcb")
    _apply(cp, ns, _cm("owner") + _cm("keeper"))
    owner, keeper = _uid(cp, "cm", "owner", ns), _uid(cp, "cm", "keeper", ns)
    _apply(cp, ns, _cm("dep1", [("owner", owner)]) + _cm("both", [("owner", owner),
                                                                     ("keeper", keeper)])
           + _pod_yaml("dep-pod", {"app": "x"}).replace(
               "metadata:\n", "metadata:\n  ownerReferences:\n  - {apiVersion: v1, kind: "
               f"ConfigMap, name: owner, uid: {owner}}}\n", 1))
    cp.kubectl("delete", "cm", "owner", "-n", ns)
    wait_for(lambda: _get(cp, "cm", "dep1", "-n", ns) is None and
             _get(cp, "pod", "dep-pod", "-n", ns) is None, 30, 0.2,
             "dependents of the deleted owner collected")
    def one_ref():
        o = _get(cp, "cm", "both", "-n", ns)
        return o if len(o["metadata"].get("ownerReferences") or []) == 1 else None
    both = wait_for(one_ref, 20, 0.2,
                    "the dangling reference removed from the dependent with a live owner")
    assert both["metadata"]["ownerReferences"][0]["uid"] == keeper
    # a recreated owner with the same name is a different owner
    _apply(cp, ns, _cm("owner"))
    _apply(cp, ns, _cm("stale", [("owner", owner)]))
    wait_for(lambda: _get(cp, "cm", "stale", "-n", ns) is None, 20, 0.2,
             "a dependent of the old uid collected although the name exists again")
    assert _get(cp, "cm", "owner", "-n", ns) is not None
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_gc_foreground_deletes_dependents_first(control_plane):
    cp = control_plane
    ns = _ns(cp, "gcf")
    _apply(cp, ns, _cm("parent"))
    parent = _uid(cp, "cm", "parent", ns)
    _apply(cp, ns, _cm("child", [("parent", parent)]))
    child = _uid(cp, "cm", "child", ns)
    _apply(cp, ns, _cm("grandchild", [("child", child)], fins=["example.com/hold"]))
    cp.kubectl("delete", "cm", "parent", "-n", ns, "--cascade=foreground", "--wait=false")

    def held_state():
        p, c, g = (_get(cp, "cm", n, "-n", ns) for n in ("parent", "child", "grandchild"))
        return p and c and g and all(o["metadata"].get("deletionTimestamp") for o in (p, c, g)) \
            and "foregroundDeletion" in p["metadata"]["finalizers"] \
            and "foregroundDeletion" in c["metadata"]["finalizers"]
    # the grandchild cannot go yet: its owner and its owner's owner wait for it
    wait_for(held_state, 20, 0.2, "parent and child waiting in foreground deletion")
    cp.kubectl("patch", "cm", "grandchild", "-n", ns, "--type=merge", "-p",
               '{"metadata": {"finalizers": null}}')
    order = []

    def all_gone():
        for n in ("grandchild", "child", "parent"):
            if n not in order and _get(cp, "cm", n, "-n", ns) is None:
                order.append(n)
        return len(order) == 3
    wait_for(all_gone, 20, 0.05, "the whole chain deleted")
    assert order.index("parent") >= order.index("child") >= order.index("grandchild")
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_gc_foreground_deployment(control_plane):
    pytest.importorskip("controllers.deployment")
    pytest.importorskip("controllers.replicaset")
    cp = control_plane
    ns = _ns(cp, "gcd")
    cp.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", "-n", ns)

    def pods():
        return (_get(cp, "pods", "-n", ns, "-l", "app=web") or {}).get("items", [])
    wait_for(lambda: len(pods()) == 2, 30, 0.2, "two pods of the deployment")
    # hold one pod so the order can be seen
    held = pods()[0]["metadata"]["name"]
    cp.kubectl("patch", "pod", held, "-n", ns, "--type=merge", "-p",
               '{"metadata": {"finalizers": ["example.com/hold"]}}')
    cp.kubectl("delete", "deployment", "web", "-n", ns, "--cascade=foreground", "--wait=false")

    def waiting():
        d = _get(cp, "deployment", "web", "-n", ns)
        rs = (_get(cp, "rs", "-n", ns) or {}).get("items", [])
        return d and d["metadata"].get("deletionTimestamp") and rs and \
            all(r["metadata"].get("deletionTimestamp") for r in rs) and \
            [p["metadata"]["name"] for p in pods()] == [held]
    wait_for(waiting, 30, 0.2, "deployment and replicaset waiting for the held pod")
    cp.kubectl("patch", "pod", held, "-n", ns, "--type=merge", "-p",
               '{"metadata": {"finalizers": null}}')
    wait_for(lambda: _get(cp, "deployment", "web", "-n", ns) is None, 30, 0.2,
             "the deployment deleted last")
    assert pods() == [] and (_get(cp, "rs", "-n", ns) or {}).get("items") == []
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_gc_orphan_leaves_dependents(control_plane):
    cp = control_plane
    ns = _ns(cp, "gco")
    _apply(cp, ns, _cm("owner"))
    owner = _uid(cp, "cm", "owner", ns)
    _apply(cp, ns, _cm("dep", [("owner", owner)]) + _pod_yaml("dep-pod", {"app": "x"}).replace(
        "metadata:\n", "metadata:\n  ownerReferences:\n  - {apiVersion: v1, kind: "
        f"ConfigMap, name: owner, uid: {owner}}}\n", 1))
    cp.kubectl("delete", "cm", "owner", "-n", ns, "--cascade=orphan")
    wait_for(lambda: _get(cp, "cm", "owner", "-n", ns) is None, 20, 0.2, "owner deleted")
    for kind, name in (("cm", "dep"), ("pod", "dep-pod")):
        obj = _get(cp, kind, name, "-n", ns)
        assert obj is not None and not obj["metadata"].get("deletionTimestamp")
        assert not obj["metadata"].get("ownerReferences")
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_pvc_binds_to_precreated_pv(control_plane):
    cp = control_plane
    ns = _ns(cp, "pv")
    suffix = ns.split("-")[1]
    cp.kubectl("apply", "-f", "-", input=f"""
apiVersion: v1
kind: PersistentVolume
metadata: {{name: small-{suffix}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: manual-{suffix}
  hostPath: {{path: /tmp/small}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: big-{suffix}}}
spec:
  capacity: {{storage: 10Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: manual-{suffix}
  hostPath: {{path: /tmp/big}}
""")
    wait_for(lambda: _get(cp, "pv", f"small-{suffix}")["status"]["phase"] == "Available", 20,
             0.2, "the volume Available")
    _apply(cp, ns, f"""
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  storageClassName: manual-{suffix}
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 500Mi}}}}
""")
    wait_for(lambda: _get(cp, "pvc", "data", "-n", ns)["status"]["phase"] == "Bound", 20, 0.2,
             "the claim bound")
    pvc = _get(cp, "pvc", "data", "-n", ns)
    assert pvc["spec"]["volumeName"] == f"small-{suffix}"
    assert pvc["status"]["capacity"] == {"storage": "1Gi"}
    assert pvc["status"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    pv = _get(cp, "pv", f"small-{suffix}")
    assert pv["status"]["phase"] == "Bound"
    assert pv["spec"]["claimRef"]["name"] == "data"
    assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    assert _get(cp, "pv", f"big-{suffix}")["status"]["phase"] == "Available"
    out = cp.kubectl("get", "pvc", "data", "-n", ns).stdout
    assert "Bound" in out and f"small-{suffix}" in out
    # the claim goes: the retained volume is Released
    cp.kubectl("delete", "pvc", "data", "-n", ns)
    wait_for(lambda: _get(cp, "pv", f"small-{suffix}")["status"]["phase"] == "Released", 20,
             0.2, "the volume Released")
    cp.kubectl("delete", "pv", f"small-{suffix}", f"big-{suffix}", "--wait=false")
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_pvc_dynamically_provisioned_for_scheduled_pod(control_plane):
    cp = control_plane
    ns = _ns(cp, "dyn")
    sc = wait_for(lambda: _get(cp, "storageclass", "standard"), 20, 0.2,
                  "the default StorageClass")
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == \
        "true"
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert "(default)" in cp.kubectl("get", "storageclass").stdout
    _apply(cp, ns, """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  storageClassName: standard
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 2Gi}}
""")
    # waits for its first consumer
    wait_for(lambda: any(e["reason"] == "WaitForFirstConsumer" for e in
                         _get(cp, "events", "-n", ns)["items"]), 20, 0.2,
             "a WaitForFirstConsumer event")
    assert _get(cp, "pvc", "data", "-n", ns)["status"]["phase"] == "Pending"
    _apply(cp, ns, """
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: app, image: nginx}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
""")
    node = wait_for(lambda: _get(cp, "pod", "user", "-n", ns)["spec"].get("nodeName"), 30, 0.2,
                    "the consumer scheduled")
    wait_for(lambda: _get(cp, "pvc", "data", "-n", ns)["status"]["phase"] == "Bound", 20, 0.2,
             "the claim bound to a provisioned volume")
    pvc = _get(cp, "pvc", "data", "-n", ns)
    name = f"pvc-{pvc['metadata']['uid']}"
    assert pvc["spec"]["volumeName"] == name
    pv = _get(cp, "pv", name)
    assert pv["spec"]["storageClassName"] == "standard"
    assert pv["spec"]["hostPath"]["path"] == f"/var/lib/kubelab/volumes/{name}"
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == [node]
    assert pv["status"]["phase"] == "Bound"
    # reclaim policy Delete: the volume goes with its claim
    cp.kubectl("delete", "pod", "user", "-n", ns, "--wait=false")
    cp.kubectl("delete", "pvc", "data", "-n", ns, "--wait=false")
    wait_for(lambda: _get(cp, "pv", name) is None, 30, 0.2, "the provisioned volume deleted")
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_delayed_binding_to_a_local_pv_on_the_consumers_node(control_plane):
    cp = control_plane
    ns = _ns(cp, "wffc")
    pv_name = f"local-{ns}"
    node = cp.ready_nodes()[-1]
    cp.kubectl("apply", "-f", "-", input=f"""
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {pv_name}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: standard
  hostPath: {{path: /tmp/{pv_name}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: kubernetes.io/hostname, operator: In, values: [{node}]}}
""")
    wait_for(lambda: _get(cp, "pv", pv_name)["status"]["phase"] == "Available", 20, 0.2,
             "the local volume Available")
    _apply(cp, ns, """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  storageClassName: standard
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: app, image: nginx}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
""")
    wait_for(lambda: _get(cp, "pvc", "data", "-n", ns)["status"]["phase"] == "Bound", 30, 0.2,
             "the claim bound")
    pvc = _get(cp, "pvc", "data", "-n", ns)
    pod_node = wait_for(lambda: _get(cp, "pod", "user", "-n", ns)["spec"].get("nodeName"), 20,
                        0.2, "the pod bound")
    # either the local volume on its node, or a volume provisioned for the pod's node
    pv = _get(cp, "pv", pvc["spec"]["volumeName"])
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == [pod_node]
    cp.kubectl("delete", "namespace", ns, "--wait=false")
    cp.kubectl("delete", "pv", pv_name, "--wait=false")


@pytestmark_e2e
def test_e2e_pvc_without_class_gets_the_default_class(control_plane):
    cp = control_plane
    ns = _ns(cp, "nocls")
    wait_for(lambda: _get(cp, "storageclass", "standard"), 20, 0.2, "the default StorageClass")
    _apply(cp, ns, """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
""")
    pvc = _get(cp, "pvc", "data", "-n", ns)
    if pvc["spec"].get("storageClassName") is None:
        # set at creation by DefaultStorageClass admission in Kubernetes; otherwise the
        # binder sets it later, which the API server must allow (RetroactiveDefaultStorageClass)
        probe = cp.kubectl("patch", "pvc", "data", "-n", ns, "--type=merge", "--dry-run=server",
                           "-p", '{"spec": {"storageClassName": "standard"}}', check=False)
        if probe.returncode != 0:
            cp.kubectl("delete", "namespace", ns, "--wait=false")
            pytest.xfail("the API server neither defaults a claim's storageClassName "
                         "(DefaultStorageClass admission) nor lets it be set later: "
                         + probe.stderr.strip()[:120])
    wait_for(lambda: _get(cp, "pvc", "data", "-n", ns)["spec"].get("storageClassName") ==
             "standard", 20, 0.2, "the claim of the default class")
    cp.kubectl("delete", "namespace", ns, "--wait=false")


@pytestmark_e2e
def test_e2e_node_lease_lost_taints_and_evicts(control_plane):
    """Runs last: stops every hollow node, then brings them back."""
    cp = control_plane
    ns = _ns(cp, "nodes")
    tol = """
  tolerations:
  - key: node.kubernetes.io/unreachable
    operator: Exists
    effect: NoExecute"""
    _apply(cp, ns, _pod_yaml("short", {"app": "n"}, extra=tol + "\n    tolerationSeconds: 1")
           + _pod_yaml("forever", {"app": "n"}, extra=tol)
           + _pod_yaml("default", {"app": "n"}))

    def running():
        items = (_get(cp, "pods", "-n", ns) or {}).get("items", [])
        return len(items) == 3 and all(p["status"].get("phase") == "Running" for p in items)
    wait_for(running, 30, 0.2, "the pods running")
    cp.cluster.kill("hollow-nodes")
    try:
        def unknown_and_tainted():
            nodes = _get(cp, "nodes")["items"]
            for n in nodes:
                conds = {c["type"]: c for c in n["status"].get("conditions") or []}
                ready = conds.get("Ready", {})
                taints = {(t["key"], t["effect"]) for t in n["spec"].get("taints") or []}
                if ready.get("status") != "Unknown" or \
                        ready.get("reason") != "NodeStatusUnknown" or \
                        ("node.kubernetes.io/unreachable", "NoExecute") not in taints or \
                        ("node.kubernetes.io/unreachable", "NoSchedule") not in taints:
                    return False
            return nodes
        nodes = wait_for(unknown_and_tainted, 25, 0.3, "all nodes Unknown and unreachable")
        assert all(c["status"] == "Unknown" for n in nodes for c in n["status"]["conditions"])
        assert "NotReady" in cp.kubectl("get", "nodes").stdout

        def deleting(name):
            p = _get(cp, "pod", name, "-n", ns)
            return p is None or bool(p["metadata"].get("deletionTimestamp"))
        wait_for(lambda: deleting("short"), 15, 0.2, "the pod tolerating 1 s (scaled) evicted")
        assert not deleting("forever")
        ev = _get(cp, "events", "-n", ns, "--field-selector", "involvedObject.name=short")
        assert any(e["reason"] == "TaintManagerEviction" for e in ev["items"])
        p = _get(cp, "pod", "forever", "-n", ns)
        ready = {c["type"]: c["status"] for c in p["status"].get("conditions") or []}
        assert ready.get("Ready") == "False"  # marked not ready with its node
    finally:
        cp.cluster.start("hollow-nodes")

    def healthy():
        for n in _get(cp, "nodes")["items"]:
            ready = {c["type"]: c["status"] for c in n["status"].get("conditions") or []}
            taints = {t["key"] for t in n["spec"].get("taints") or []}
            if ready.get("Ready") != "True" or "node.kubernetes.io/unreachable" in taints:
                return False
        return True
    wait_for(healthy, 30, 0.3, "nodes Ready again without the unreachable taint")
    cp.kubectl("delete", "namespace", ns, "--wait=false")


_ = time
