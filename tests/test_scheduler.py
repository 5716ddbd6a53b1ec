"""The scheduler: every filter and score as a pure function on dict fixtures (each test has a
case that fails without the plugin), the scheduling queue, and end to end through the real
processes with the real kubectl."""

from __future__ import annotations

import json
import uuid

import pytest

from scheduler.framework import (
    ERR_REASON_AFFINITY,
    ERR_REASON_ANTI_AFFINITY,
    ERR_REASON_EXISTING_ANTI_AFFINITY,
    ERR_REASON_NODE_AFFINITY,
    ERR_REASON_NODE_PORTS,
    ERR_REASON_SPREAD,
    ERR_REASON_SPREAD_LABEL,
    ERR_REASON_UNSCHEDULABLE,
    ERR_REASON_VOLUME_BIND_CONFLICT,
    ERR_REASON_VOLUME_NODE_CONFLICT,
    Algorithm,
    ClusterState,
    Cycle,
    DictStore,
    Listers,
    PodInfo,
    Status,
    fit_error_message,
    pod_requests,
    resource_amount,
)
from scheduler.queue import SchedulingQueue
from tests.conftest import wait_for


# ============================================================================ fixtures
def node(name: str, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
         labels: dict | None = None, taints: list | None = None, unschedulable: bool = False,
         ready: str | None = "True", **alloc) -> dict:
    conds = [{"type": "Ready", "status": ready}] if ready is not None else []
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                         "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods, **alloc},
                       "conditions": conds}}


def pod(name: str, cpu: str | None = None, memory: str | None = None, ns: str = "default",
        labels: dict | None = None, node_name: str | None = None, owner: dict | None = None,
        phase: str | None = None, **spec) -> dict:
    c: dict = {"name": "c", "image": "nginx"}
    req = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    if req:
        c["resources"] = {"requests": req}
    spec = {"containers": [c], "schedulerName": "default-scheduler", **spec}
    if node_name:
        spec["nodeName"] = node_name
    md: dict = {"name": name, "namespace": ns, "labels": labels or {}, "uid": uuid.uuid4().hex}
    if owner:
        md["ownerReferences"] = [owner]
    out = {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec,
           "status": {"phase": phase or "Pending"}}
    return out


def cluster(*nodes: dict, pods: tuple = (), listers: Listers | None = None
            ) -> tuple[ClusterState, Algorithm]:
    st = ClusterState()
    for n in nodes:
        st.set_node(n)
    for p in pods:
        st.add_pod(p)
    return st, Algorithm(st, listers or Listers())


def three(**kw) -> tuple[ClusterState, Algorithm]:
    return cluster(node("n1"), node("n2"), node("n3"), **kw)


def filter_status(st: ClusterState, p: dict, name: str,
                  listers: Listers | None = None) -> Status | None:
    cyc = Cycle(PodInfo(p), st, listers or Listers())
    pre = cyc.prefilter()
    if pre is not None:
        return pre
    return cyc.filter(st.nodes[name])


def feasible(st: ClusterState, p: dict, listers: Listers | None = None) -> set[str]:
    return {ni.name for ni in st.node_list() if filter_status(st, p, ni.name, listers) is None}


def scores(st: ClusterState, p: dict, plugin: str, listers: Listers | None = None
           ) -> dict[str, int]:
    cyc = Cycle(PodInfo(p), st, listers or Listers())
    assert cyc.prefilter() is None
    nodes = st.node_list()
    return dict(zip([n.name for n in nodes], cyc.plugin_scores(nodes)[plugin]))


# ============================================================================ requests
def test_quantities_are_exact_and_rounded_up():
    assert resource_amount("cpu", "100m") == 100
    assert resource_amount("cpu", "0.1") == 100  # no float drift (0.1 * 1000)
    assert resource_amount("cpu", "1.5") == 1500
    assert resource_amount("cpu", 2) == 2000
    assert resource_amount("cpu", "1n") == 1  # MilliValue rounds up
    assert resource_amount("memory", "128Mi") == 128 * 2 ** 20
    assert resource_amount("memory", "1G") == 10 ** 9
    assert resource_amount("memory", "1e3") == 1000
    assert resource_amount("memory", "129e6") == 129_000_000


def test_pod_requests_sum_containers_and_max_init_containers():
    spec = {"containers": [{"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                           {"resources": {"requests": {"cpu": "500m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "2"}}},
                               {"resources": {"requests": {"memory": "3Gi"}}}]}
    # containers add up (1.5 cpu, 1Gi); init containers run one at a time: max wins per resource
    assert pod_requests(spec) == {"cpu": 2000, "memory": 3 * 2 ** 30}
    spec["initContainers"] = [{"resources": {"requests": {"cpu": "1"}}}]
    assert pod_requests(spec)["cpu"] == 1500  # the sum is bigger than the init container


def test_pod_requests_sidecars_and_overhead():
    spec = {"containers": [{"resources": {"requests": {"cpu": "1"}}}],
            "initContainers": [{"restartPolicy": "Always",
                                "resources": {"requests": {"cpu": "500m"}}},
                               {"resources": {"requests": {"cpu": "1200m"}}}],
            "overhead": {"cpu": "100m"}}
    # the sidecar keeps running beside the app (1.5) and beside the later init step (1.7)
    assert pod_requests(spec)["cpu"] == 1700 + 100


def test_non_zero_requests_for_scoring():
    spec = {"containers": [{}, {"resources": {"requests": {"cpu": "0"}}}]}
    nz = pod_requests(spec, nonzero=True)
    assert nz["cpu"] == 100  # missing → 100m, explicit 0 stays 0
    assert nz["memory"] == 2 * 200 * 2 ** 20
    assert pod_requests(spec) == {"cpu": 0}


# ============================================================================ filters
def test_node_unschedulable_filter_and_toleration():
    st, _ = cluster(node("n1", unschedulable=True), node("n2"))
    p = pod("p")
    assert filter_status(st, p, "n1").reasons == (ERR_REASON_UNSCHEDULABLE,)
    assert feasible(st, p) == {"n2"}
    tol = pod("t", tolerations=[{"key": "node.kubernetes.io/unschedulable",
                                 "operator": "Exists", "effect": "NoSchedule"}])
    assert feasible(st, tol) == {"n1", "n2"}


def test_not_ready_node_is_filtered_as_kube_taints_it():
    st, _ = cluster(node("n1", ready="False"), node("n2", ready="Unknown"), node("n3"),
                    node("n4", ready=None))
    p = pod("p")
    assert feasible(st, p) == {"n3"}
    assert filter_status(st, p, "n1").reasons == \
        ("node(s) had untolerated taint {node.kubernetes.io/not-ready: }",)
    assert filter_status(st, p, "n2").reasons == \
        ("node(s) had untolerated taint {node.kubernetes.io/unreachable: }",)
    assert filter_status(st, p, "n4").reasons == \
        ("node(s) had untolerated taint {node.kubernetes.io/not-ready: }",)


def test_resources_fit_against_allocatable_minus_requests():
    st, _ = cluster(node("n1", cpu="2", memory="4Gi"),
                    pods=(pod("a", cpu="1500m", memory="1Gi", node_name="n1"),))
    assert filter_status(st, pod("p", cpu="500m"), "n1") is None
    assert filter_status(st, pod("p", cpu="501m"), "n1").reasons == ("Insufficient cpu",)
    both = filter_status(st, pod("p", cpu="1", memory="4Gi"), "n1")
    assert both.reasons == ("Insufficient cpu", "Insufficient memory")
    assert both.plugin == "NodeResourcesFit"


def test_terminal_and_deleted_pods_free_resources():
    a = pod("a", cpu="2", node_name="n1")
    st, _ = cluster(node("n1", cpu="2"), pods=(a,))
    assert filter_status(st, pod("p", cpu="1"), "n1").reasons == ("Insufficient cpu",)
    st.add_pod({**a, "status": {"phase": "Succeeded"}})
    assert filter_status(st, pod("p", cpu="1"), "n1") is None
    st.add_pod(a)
    st.remove_pod("default/a")
    assert filter_status(st, pod("p", cpu="1"), "n1") is None


def test_too_many_pods():
    st, _ = cluster(node("n1", pods="2"), pods=(pod("a", node_name="n1"),))
    assert filter_status(st, pod("p"), "n1") is None
    st.add_pod(pod("b", node_name="n1"))
    assert filter_status(st, pod("p"), "n1").reasons == ("Too many pods",)


def test_zero_request_pod_fits_an_overcommitted_node():
    st, _ = cluster(node("n1", cpu="1"), pods=(pod("a", cpu="2", node_name="n1"),))
    assert filter_status(st, pod("p"), "n1") is None
    assert filter_status(st, pod("p", cpu="1m"), "n1").reasons == ("Insufficient cpu",)


def test_extended_resources():
    st, _ = cluster(node("gpu", **{"example.com/gpu": "1"}), node("plain"))
    p = pod("p")
    p["spec"]["containers"][0]["resources"] = {"requests": {"example.com/gpu": "1"}}
    assert feasible(st, p) == {"gpu"}
    assert filter_status(st, p, "plain").reasons == ("Insufficient example.com/gpu",)


def test_assumed_pods_are_counted_until_forgotten():
    st, algo = cluster(node("n1", cpu="1"))
    p1, p2 = pod("p1", cpu="600m"), pod("p2", cpu="600m")
    r = algo.schedule(p1)
    assert r.node == "n1"
    st.assume(p1, r.node, r.pod_info)
    r2 = algo.schedule(p2)  # the binding of p1 is not confirmed yet: still no room
    assert r2.node is None and "1 Insufficient cpu" in r2.message()
    st.forget("default/p1")  # binding failed
    assert algo.schedule(p2).node == "n1"
    st.assume(p1, "n1")
    bound = pod("p1", cpu="600m", node_name="n1")
    st.add_pod(bound)  # the informer confirms it
    assert not st.is_assumed("default/p1")
    assert st.nodes["n1"].req_cpu == 600


def test_node_selector():
    st, _ = cluster(node("n1", labels={"disk": "ssd"}), node("n2", labels={"disk": "hdd"}),
                    node("n3"))
    p = pod("p", nodeSelector={"disk": "ssd"})
    assert feasible(st, p) == {"n1"}
    assert filter_status(st, p, "n2").reasons == (ERR_REASON_NODE_AFFINITY,)


def _required(*terms: dict) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": list(terms)}}}


def _expr(key: str, op: str, *values: str) -> dict:
    e: dict = {"key": key, "operator": op}
    if values:
        e["values"] = list(values)
    return e


def test_required_node_affinity_operators():
    st, _ = cluster(node("a", labels={"zone": "z1", "gen": "3"}),
                    node("b", labels={"zone": "z2", "gen": "5"}), node("c"))

    def fits(*terms):
        return feasible(st, pod("p", affinity=_required(*terms)))

    assert fits({"matchExpressions": [_expr("zone", "In", "z1", "z9")]}) == {"a"}
    assert fits({"matchExpressions": [_expr("zone", "NotIn", "z1")]}) == {"b", "c"}
    assert fits({"matchExpressions": [_expr("zone", "Exists")]}) == {"a", "b"}
    assert fits({"matchExpressions": [_expr("zone", "DoesNotExist")]}) == {"c"}
    assert fits({"matchExpressions": [_expr("gen", "Gt", "4")]}) == {"b"}
    assert fits({"matchExpressions": [_expr("gen", "Lt", "4")]}) == {"a"}
    # expressions in a term are ANDed, terms are ORed
    assert fits({"matchExpressions": [_expr("zone", "Exists"), _expr("gen", "Gt", "4")]}) == \
        {"b"}
    assert fits({"matchExpressions": [_expr("zone", "In", "z1")]},
                {"matchExpressions": [_expr("zone", "DoesNotExist")]}) == {"a", "c"}
    assert fits({"matchFields": [_expr("metadata.name", "In", "c")]}) == {"c"}
    assert fits({}) == set()  # an empty term matches nothing


def test_node_selector_and_affinity_must_both_match():
    st, _ = cluster(node("a", labels={"disk": "ssd", "zone": "z1"}),
                    node("b", labels={"disk": "ssd", "zone": "z2"}))
    p = pod("p", nodeSelector={"disk": "ssd"},
            affinity=_required({"matchExpressions": [_expr("zone", "In", "z2")]}))
    assert feasible(st, p) == {"b"}


def test_taints_and_tolerations():
    st, _ = cluster(node("ns", taints=[{"key": "dedicated", "value": "gpu",
                                        "effect": "NoSchedule"}]),
                    node("ne", taints=[{"key": "dedicated", "value": "gpu",
                                        "effect": "NoExecute"}]),
                    node("pref", taints=[{"key": "dedicated", "value": "gpu",
                                          "effect": "PreferNoSchedule"}]))
    p = pod("p")
    assert feasible(st, p) == {"pref"}  # PreferNoSchedule only scores
    assert filter_status(st, p, "ns").reasons == \
        ("node(s) had untolerated taint {dedicated: gpu}",)
    equal = pod("e", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu",
                                   "effect": "NoSchedule"}])
    assert feasible(st, equal) == {"ns", "pref"}
    wrong_value = pod("w", tolerations=[{"key": "dedicated", "value": "cpu"}])
    assert feasible(st, wrong_value) == {"pref"}
    exists_any_effect = pod("x", tolerations=[{"key": "dedicated", "operator": "Exists"}])
    assert feasible(st, exists_any_effect) == {"ns", "ne", "pref"}
    everything = pod("all", tolerations=[{"operator": "Exists"}])
    assert feasible(st, everything) == {"ns", "ne", "pref"}


def test_host_ports():
    st, _ = cluster(node("n1"), node("n2"))
    user = pod("u", node_name="n1")
    user["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    st.add_pod(user)

    def wants(port, proto="TCP", ip=None):
        p = pod("p")
        hp = {"containerPort": 80, "hostPort": port, "protocol": proto}
        if ip:
            hp["hostIP"] = ip
        p["spec"]["containers"][0]["ports"] = [hp]
        return p

    assert feasible(st, wants(8080)) == {"n2"}
    assert filter_status(st, wants(8080), "n1").reasons == (ERR_REASON_NODE_PORTS,)
    assert feasible(st, wants(8080, "UDP")) == {"n1", "n2"}
    assert feasible(st, wants(8081)) == {"n1", "n2"}
    assert feasible(st, wants(8080, ip="127.0.0.1")) == {"n2"}  # 0.0.0.0 holds every address
    user2 = pod("u2", node_name="n2")
    user2["spec"]["containers"][0]["ports"] = [{"containerPort": 1, "hostPort": 9000,
                                                "hostIP": "10.0.0.1"}]
    st.add_pod(user2)
    assert "n2" in feasible(st, wants(9000, ip="10.0.0.2"))
    assert "n2" not in feasible(st, wants(9000, ip="10.0.0.1"))
    assert "n2" not in feasible(st, wants(9000))


def _pod_affinity(kind: str, labels: dict, key: str = "kubernetes.io/hostname",
                  **extra) -> dict:
    return {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": labels}, "topologyKey": key, **extra}]}}


def test_required_pod_affinity():
    zones = {"n1": "a", "n2": "a", "n3": "b"}
    st, _ = cluster(*(node(n, labels={"zone": z}) for n, z in zones.items()),
                    pods=(pod("cache", labels={"app": "cache"}, node_name="n2"),))
    p = pod("web", affinity=_pod_affinity("podAffinity", {"app": "cache"}))
    assert feasible(st, p) == {"n2"}
    assert filter_status(st, p, "n1").reasons == (ERR_REASON_AFFINITY,)
    zone = pod("web", affinity=_pod_affinity("podAffinity", {"app": "cache"}, "zone"))
    assert feasible(st, zone) == {"n1", "n2"}
    # pods in other namespaces do not count unless the term names them
    other = pod("web", ns="other", affinity=_pod_affinity("podAffinity", {"app": "cache"}))
    assert feasible(st, other) == set()
    named = pod("web", ns="other", affinity=_pod_affinity("podAffinity", {"app": "cache"},
                                                          namespaces=["default"]))
    assert feasible(st, named) == {"n2"}


def test_first_pod_with_affinity_to_itself_may_go_anywhere():
    st, _ = three()
    p = pod("p", labels={"app": "x"}, affinity=_pod_affinity("podAffinity", {"app": "x"}))
    assert feasible(st, p) == {"n1", "n2", "n3"}
    not_self = pod("q", labels={"app": "y"}, affinity=_pod_affinity("podAffinity",
                                                                    {"app": "x"}))
    assert feasible(st, not_self) == set()


def test_required_pod_anti_affinity_both_ways():
    st, _ = three(pods=(pod("a", labels={"app": "db"}, node_name="n1"),))
    p = pod("p", labels={"app": "db"},
            affinity=_pod_affinity("podAntiAffinity", {"app": "db"}))
    assert feasible(st, p) == {"n2", "n3"}
    assert filter_status(st, p, "n1").reasons == (ERR_REASON_ANTI_AFFINITY,)
    # the existing pod's anti-affinity repels an incoming pod without any affinity
    guard = pod("g", labels={"role": "guard"}, node_name="n2",
                affinity=_pod_affinity("podAntiAffinity", {"app": "web"}))
    st.add_pod(guard)
    web = pod("w", labels={"app": "web"})
    assert feasible(st, web) == {"n1", "n3"}
    assert filter_status(st, web, "n2").reasons == (ERR_REASON_EXISTING_ANTI_AFFINITY,)
    assert feasible(st, pod("other", labels={"app": "api"})) == {"n1", "n2", "n3"}


def test_pod_affinity_namespace_selector():
    listers = Listers(namespaces=DictStore([
        {"metadata": {"name": "team-a", "labels": {"team": "a"}}},
        {"metadata": {"name": "default"}}]))
    st, _ = three(pods=(pod("c", ns="team-a", labels={"app": "cache"}, node_name="n3"),))
    p = pod("p", affinity=_pod_affinity("podAffinity", {"app": "cache"},
                                        namespaceSelector={"matchLabels": {"team": "a"}}))
    assert feasible(st, p, listers) == {"n3"}
    p2 = pod("p", affinity=_pod_affinity("podAffinity", {"app": "cache"},
                                         namespaceSelector={}))  # all namespaces
    assert feasible(st, p2, listers) == {"n3"}


def _volumes(*claims: str) -> list:
    return [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]


def test_volume_node_affinity_of_bound_pv():
    pv = {"metadata": {"name": "pv1"}, "spec": {"nodeAffinity": {"required": {
        "nodeSelectorTerms": [{"matchExpressions": [_expr("kubernetes.io/hostname", "In",
                                                          "n2")]}]}}}}
    pvc = {"metadata": {"name": "data", "namespace": "default"},
           "spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}}
    listers = Listers(pvcs=DictStore([pvc]), pvs=DictStore([pv]))
    st, algo = three(listers=listers)
    p = pod("p", volumes=_volumes("data"))
    assert feasible(st, p, listers) == {"n2"}
    assert filter_status(st, p, "n1", listers).reasons == (ERR_REASON_VOLUME_NODE_CONFLICT,)
    assert algo.schedule(p).node == "n2"
    assert feasible(st, pod("q"), listers) == {"n1", "n2", "n3"}


def test_volume_selected_node_and_wait_for_first_consumer():
    sc = {"metadata": {"name": "local"}, "provisioner": "kubelab.io/hostpath",
          "volumeBindingMode": "WaitForFirstConsumer"}
    picked = {"metadata": {"name": "picked", "namespace": "default",
                           "annotations": {"volume.kubernetes.io/selected-node": "n3"}},
              "spec": {"storageClassName": "local"}, "status": {"phase": "Pending"}}
    fresh = {"metadata": {"name": "fresh", "namespace": "default"},
             "spec": {"storageClassName": "local"}, "status": {"phase": "Pending"}}
    listers = Listers(pvcs=DictStore([picked, fresh]), storageclasses=DictStore([sc]))
    st, algo = three(listers=listers)
    p = pod("p", volumes=_volumes("picked"))
    assert feasible(st, p, listers) == {"n3"}
    assert filter_status(st, p, "n1", listers).reasons == (ERR_REASON_VOLUME_BIND_CONFLICT,)
    q = pod("q", volumes=_volumes("fresh"))
    r = algo.schedule(q)
    assert r.node in {"n1", "n2", "n3"}
    assert [c.pvc["metadata"]["name"] for c in r.claims] == ["fresh"]  # provision there


def test_volume_prefilter_failures():
    immediate = {"metadata": {"name": "imm", "namespace": "default"}, "spec": {},
                 "status": {"phase": "Pending"}}
    listers = Listers(pvcs=DictStore([immediate]))
    _st, algo = three(listers=listers)
    r = algo.schedule(pod("p", volumes=_volumes("missing")))
    assert r.message() == ('0/3 nodes are available: persistentvolumeclaim "missing" not '
                           'found. preemption: 0/3 nodes are available: 3 Preemption is not '
                           'helpful for scheduling..')
    r = algo.schedule(pod("p", volumes=_volumes("imm")))
    assert r.message().startswith("0/3 nodes are available: pod has unbound immediate "
                                  "PersistentVolumeClaims. preemption:")


def _spread(key: str, max_skew: int = 1, when: str = "DoNotSchedule", **extra) -> list:
    return [{"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
             "labelSelector": {"matchLabels": {"app": "s"}}, **extra}]


def test_topology_spread_do_not_schedule():
    zones = {"n1": "a", "n2": "a", "n3": "b"}
    st, _ = cluster(*(node(n, labels={"zone": z}) for n, z in zones.items()), node("nozone"),
                    pods=(pod("s1", labels={"app": "s"}, node_name="n1"),))
    p = pod("p", labels={"app": "s"}, topologySpreadConstraints=_spread("zone"))
    assert feasible(st, p) == {"n3"}  # zone a has 1, b has 0: only b keeps skew ≤ 1
    assert filter_status(st, p, "n2").reasons == (ERR_REASON_SPREAD,)
    assert filter_status(st, p, "nozone").reasons == (ERR_REASON_SPREAD_LABEL,)
    st.add_pod(pod("s2", labels={"app": "s"}, node_name="n3"))
    assert feasible(st, p) == {"n1", "n2", "n3"}
    lax = pod("p", labels={"app": "s"}, topologySpreadConstraints=_spread("zone", 2))
    st.remove_pod("default/s2")
    assert feasible(st, lax) == {"n1", "n2", "n3"}


# ============================================================================ scores
def test_least_allocated_prefers_the_emptier_node():
    st, algo = cluster(node("busy"), node("idle"),
                       pods=(pod("a", cpu="2", memory="4Gi", node_name="busy"),))
    s = scores(st, pod("p", cpu="100m", memory="100Mi"), "NodeResourcesFit")
    assert s["idle"] > s["busy"]
    assert algo.schedule(pod("p", cpu="100m", memory="100Mi")).node == "idle"


def test_balanced_allocation():
    st, _ = cluster(node("n1"), node("n2"),
                    pods=(pod("a", cpu="2", node_name="n1"),
                          pod("b", cpu="1", memory="2Gi", node_name="n2")))
    s = scores(st, pod("p", cpu="1", memory="2Gi"), "NodeResourcesBalancedAllocation")
    # n1 would be 3/4 cpu and 1/4 memory (std .25), n2 1/2 and 1/2 (std 0)
    assert s == {"n1": 75, "n2": 100}


def test_preferred_node_affinity_weights():
    st, algo = cluster(node("a", labels={"disk": "ssd"}), node("b", labels={"zone": "z1"}),
                       node("c"))
    aff = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "preference": {"matchExpressions": [_expr("disk", "In", "ssd")]}},
        {"weight": 50, "preference": {"matchExpressions": [_expr("zone", "Exists")]}}]}}
    p = pod("p", affinity=aff)
    assert scores(st, p, "NodeAffinity") == {"a": 20, "b": 100, "c": 0}
    assert algo.schedule(p).node == "b"


def test_prefer_no_schedule_taint_penalty():
    st, algo = cluster(node("tainted", taints=[{"key": "k", "value": "v",
                                                "effect": "PreferNoSchedule"}]),
                       node("clean"),
                       pods=(pod("load", cpu="2", node_name="clean"),))
    p = pod("p")
    assert scores(st, p, "TaintToleration") == {"tainted": 0, "clean": 100}
    assert algo.schedule(p).node == "clean"  # despite clean being the busier node
    tol = pod("t", tolerations=[{"key": "k", "operator": "Exists",
                                 "effect": "PreferNoSchedule"}])
    assert scores(st, tol, "TaintToleration") == {"tainted": 100, "clean": 100}
    assert algo.schedule(tol).node == "tainted"


def _svc(selector: dict, name: str = "svc") -> dict:
    return {"metadata": {"name": name, "namespace": "default"}, "spec": {"selector": selector}}


def test_selector_spread_by_service_beats_least_allocated():
    listers = Listers(services=DictStore([_svc({"app": "web"})]))
    # n1 already runs a web pod, n2 runs an unrelated pod of the same size
    st, algo = cluster(node("n1"), node("n2"),
                       pods=(pod("w1", labels={"app": "web"}, node_name="n1"),
                             pod("x", labels={"app": "other"}, node_name="n2")),
                       listers=listers)
    p = pod("w2", labels={"app": "web"})
    # hostname constraint (maxSkew 3) over 2 nodes: raw 1·ln(4)+2 → 3 and 2; normalized
    # 100·(max+min−s)/max
    assert scores(st, p, "PodTopologySpread", listers) == {"n1": 66, "n2": 100}
    assert algo.schedule(p).node == "n2"
    # without a Service (or controller) there is nothing to spread
    assert "PodTopologySpread" not in Cycle(PodInfo(p), st, Listers()).plugin_scores(
        st.node_list())


def test_selector_spread_by_controller_owner():
    rs = {"metadata": {"name": "web-abc", "namespace": "default"},
          "spec": {"selector": {"matchLabels": {"app": "web"}}}}
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "u1",
             "controller": True}
    listers = Listers(replicasets=DictStore([rs]))
    st, algo = cluster(node("n1"), node("n2"), node("n3"), listers=listers)
    placed = []
    # make n1 the most attractive by resources: n2 and n3 carry ballast
    st.add_pod(pod("ballast2", cpu="1", node_name="n2"))
    st.add_pod(pod("ballast3", cpu="1", node_name="n3"))
    for i in range(3):
        p = pod(f"web-{i}", labels={"app": "web"}, owner=owner)
        r = algo.schedule(p)
        st.assume(p, r.node, r.pod_info)
        placed.append(r.node)
    assert sorted(placed) == ["n1", "n2", "n3"]


def test_topology_spread_schedule_anyway_scores():
    st, _ = cluster(node("n1", labels={"zone": "a"}), node("n2", labels={"zone": "b"}),
                    pods=(pod("s1", labels={"app": "s"}, node_name="n1"),))
    p = pod("p", labels={"app": "s"},
            topologySpreadConstraints=_spread("zone", when="ScheduleAnyway"))
    s = scores(st, p, "PodTopologySpread")
    assert s["n2"] > s["n1"]


def _preferred(kind: str, weight: int, labels: dict,
               key: str = "kubernetes.io/hostname") -> dict:
    return {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": weight, "podAffinityTerm": {"labelSelector": {"matchLabels": labels},
                                               "topologyKey": key}}]}}


def test_preferred_pod_affinity_and_anti_affinity():
    st, algo = three(pods=(pod("cache", labels={"app": "cache"}, node_name="n2"),))
    near = pod("p", affinity=_preferred("podAffinity", 50, {"app": "cache"}))
    assert scores(st, near, "InterPodAffinity") == {"n1": 0, "n2": 100, "n3": 0}
    assert algo.schedule(near).node == "n2"
    away = pod("q", affinity=_preferred("podAntiAffinity", 50, {"app": "cache"}))
    assert scores(st, away, "InterPodAffinity") == {"n1": 100, "n2": 0, "n3": 100}
    assert algo.schedule(away).node in {"n1", "n3"}


def test_existing_pods_preferred_terms_attract_the_incoming_pod():
    _st, algo = three(pods=(pod("fan", node_name="n3",
                               affinity=_preferred("podAffinity", 80, {"app": "star"})),))
    assert algo.schedule(pod("star", labels={"app": "star"})).node == "n3"


def test_ties_are_broken_round_robin():
    _st, algo = three()
    p = pod("p")
    assert {algo.schedule(p).node for _ in range(3)} == {"n1", "n2", "n3"}


def test_rapid_decisions_do_not_overcommit():
    st, algo = cluster(*(node(f"n{i}", cpu="1") for i in range(5)))
    placed = []
    for i in range(12):
        p = pod(f"p{i}", cpu="400m")
        r = algo.schedule(p)
        if r.node:
            st.assume(p, r.node, r.pod_info)
            placed.append(r.node)
    assert len(placed) == 10  # two per node, never three
    assert all(placed.count(f"n{i}") == 2 for i in range(5))


def test_num_feasible_nodes_to_find():
    algo = Algorithm(ClusterState())
    assert algo.num_feasible_to_find(50) == 50
    assert algo.num_feasible_to_find(100) == 100
    assert algo.num_feasible_to_find(1000) == 420  # 50 - 1000/125 = 42%
    assert algo.num_feasible_to_find(6000) == 300  # floors at 5%


# ============================================================================ diagnosis
def test_fit_error_message_counts_sorted_as_strings():
    _st, algo = cluster(node("n1", cpu="1"), node("n2", cpu="1"), node("n3", cpu="8",
                                                                      labels={"x": "y"}))
    p = pod("p", cpu="2", affinity=_required({"matchExpressions": [_expr("x", "DoesNotExist")]}))
    r = algo.schedule(p)
    assert r.node is None
    assert r.message() == (
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not "
        "helpful for scheduling, 2 No preemption victims found for incoming pod..")
    statuses = {f"n{i}": Status(1, ("Insufficient cpu",), "NodeResourcesFit")
                for i in range(10)}
    statuses["x"] = Status(2, (ERR_REASON_UNSCHEDULABLE,), "NodeUnschedulable")
    assert fit_error_message(11, statuses) == \
        "0/11 nodes are available: 1 node(s) were unschedulable, 10 Insufficient cpu."


def test_insufficient_cpu_message_as_kube_prints_it():
    _st, algo = three()
    r = algo.schedule(pod("big", cpu="5"))
    assert r.message() == ("0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 "
                           "nodes are available: 3 No preemption victims found for incoming "
                           "pod..")
    assert r.error.plugins() == {"NodeResourcesFit"}


def test_preemption_wording():
    _st, algo = cluster(node("n1", cpu="2"),
                       pods=(pod("low", cpu="1", node_name="n1"),
                             pod("low2", cpu="500m", node_name="n1")))
    never = pod("p", cpu="3", preemptionPolicy="Never", priority=1000)
    assert algo.schedule(never).message().endswith(
        "preemption: not eligible due to preemptionPolicy=Never..")
    # lower-priority victims exist but removing them all still leaves too little room
    big = pod("p", cpu="3", priority=1000)
    assert algo.schedule(big).message() == (
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
        "1 Insufficient cpu..")


def test_no_nodes():
    _st, algo = cluster()
    r = algo.schedule(pod("p"))
    assert r.no_nodes and r.message() == "no nodes available to schedule pods"


# ============================================================================ queue
def test_queue_orders_by_priority_then_arrival():
    q = SchedulingQueue()
    q.add("ns/low", 0)
    q.add("ns/high", 100)
    q.add("ns/low2", 0)
    q.add("ns/low", 0)  # already queued
    assert [q.pop_nowait() for _ in range(4)] == ["ns/high", "ns/low", "ns/low2", None]


def test_queue_unschedulable_moves_and_backoff():
    now = [0.0]
    q = SchedulingQueue(initial_backoff=1, max_backoff=10, max_in_unschedulable=300,
                        clock=lambda: now[0])
    q.add("ns/a")
    q.add("ns/b")
    assert q.pop_nowait() == "ns/a" and q.pop_nowait() == "ns/b"
    q.add_unschedulable("ns/a", {"NodeResourcesFit"})
    q.add_unschedulable("ns/b", {"InterPodAffinity"})
    assert q.pop_nowait() is None
    now[0] = 5.0
    assert q.move_all({"InterPodAffinity"}) == 1  # a pod was added: only b may now fit
    assert q.pop_nowait() == "ns/b"
    assert q.move_all() == 1
    assert q.pop_nowait() == "ns/a"
    # back-off doubles per attempt up to the maximum
    assert [q._backoff_duration(n) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]
    q.add_unschedulable("ns/a")  # second attempt: 2 s back-off from t=5
    now[0] = 6.0
    q.move_all()
    assert "ns/a" in q.backoff and q.pop_nowait() is None
    now[0] = 7.0
    q.flush_backoff()
    assert q.pop_nowait() == "ns/a"
    # left unschedulable for five minutes: retried anyway
    q.add_unschedulable("ns/a")
    now[0] = 100.0
    assert q.flush_unschedulable_leftover() == 0
    now[0] = 408.0
    assert q.flush_unschedulable_leftover() == 1
    assert q.pop_nowait() == "ns/a"


def test_queue_gated_and_updates():
    q = SchedulingQueue(clock=lambda: 100.0)
    q.gate("ns/g")
    assert q.pop_nowait() is None and "ns/g" in q
    q.update("ns/g")  # gates removed
    assert q.pop_nowait() == "ns/g"
    q.add_unschedulable("ns/g")
    q.update("ns/g")  # spec changed, back-off still running
    assert "ns/g" in q.backoff
    q.delete("ns/g")
    assert "ns/g" not in q


# ============================================================================ event handling
def _scheduler():
    from kubelab.client import InformerFactory
    from scheduler.scheduler import Scheduler
    s = Scheduler(None, InformerFactory(None), None)
    s.queue = SchedulingQueue(initial_backoff=0, max_backoff=0)
    s._spawn = lambda coro: coro.close()  # no API here: bindings and reports are dropped
    return s


def _deliver(inf, event: str, obj: dict) -> None:
    key = f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}" \
        if obj["metadata"].get("namespace") else obj["metadata"]["name"]
    old = inf.cache.get(key)
    if event == "DELETED":
        inf.cache.pop(key, None)
    else:
        inf.cache[key] = obj
    inf._dispatch(event if event != "ADDED" or old is None else "MODIFIED", obj, old)


def test_handlers_assume_confirm_and_retry_on_room():
    s = _scheduler()
    _deliver(s.nodes, "ADDED", node("n1", cpu="1"))
    p, q = pod("p", cpu="600m"), pod("q", cpu="600m")
    for x in (p, q):
        _deliver(s.pods, "ADDED", x)
    assert s.queue.lengths()["active"] == 2
    assert s.schedule_one(s.queue.pop_nowait()) is True  # p: decided, binding started
    assert s.state.is_assumed("default/p")
    _deliver(s.pods, "MODIFIED", {**p, "status": {"phase": "Pending", "conditions": []}})
    assert "default/p" not in s.queue  # a pending update of an assumed pod is ignored
    assert s.schedule_one(s.queue.pop_nowait()) is False  # q: no room left
    assert "default/q" in s.queue.unschedulable
    bound = {**p, "spec": {**p["spec"], "nodeName": "n1"}}
    _deliver(s.pods, "MODIFIED", bound)  # the binding shows up in the watch
    assert not s.state.is_assumed("default/p") and "default/p" in s.state.pods
    _deliver(s.nodes, "MODIFIED", {**node("n1", cpu="1"), "status": {
        **node("n1", cpu="1")["status"], "lastHeartbeat": "later"}})
    assert "default/q" in s.queue.unschedulable  # a heartbeat changes nothing
    _deliver(s.pods, "DELETED", bound)  # room again
    assert s.queue.pop_nowait() == "default/q"
    assert s.schedule_one("default/q") is True


def test_handlers_ignore_other_schedulers_and_terminal_pods():
    s = _scheduler()
    _deliver(s.pods, "ADDED", pod("other", schedulerName="other-scheduler"))
    _deliver(s.pods, "ADDED", pod("done", phase="Failed"))
    _deliver(s.pods, "ADDED", pod("gated", schedulingGates=[{"name": "x"}]))
    assert s.queue.pop_nowait() is None and "default/gated" in s.queue.gated
    _deliver(s.pods, "MODIFIED", pod("gated"))
    assert s.queue.pop_nowait() == "default/gated"


# ============================================================================ end to end
NODES = ("hollow-node-1", "hollow-node-2", "hollow-node-3")


def _apply(cp, ns: str, *objs: dict) -> None:
    """Create objects with one kubectl call."""
    cp.kubectl("apply", "-n", ns, "-f", "-",
               input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def _pod_manifest(name: str, cpu: str | None = None, **spec) -> dict:
    c: dict = {"name": "app", "image": "nginx"}
    if cpu:
        c["resources"] = {"requests": {"cpu": cpu}}
    labels = spec.pop("labels", {"test": "scheduler"})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [c], **spec}}


def _pods(cp, ns: str) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in cp.get_json("pods", "-n", ns)["items"]}


def _wait_nodes(cp, ns: str, *names: str, timeout: float = 20) -> dict[str, str]:
    """Wait until every named pod is bound; their nodes."""
    def bound():
        pods = _pods(cp, ns)
        nodes = {n: (pods.get(n) or {}).get("spec", {}).get("nodeName") for n in names}
        return nodes if all(nodes.values()) else None
    return wait_for(bound, timeout, 0.1, f"pods {', '.join(names)} scheduled")


def _events(cp, ns: str, name: str) -> list[dict]:
    return cp.get_json("events", "-n", ns, "--field-selector",
                       f"involvedObject.name={name}")["items"]


def _scheduled_condition(cp, ns: str, name: str) -> dict | None:
    conds = cp.get_json("pod", name, "-n", ns).get("status", {}).get("conditions") or []
    return next((c for c in conds if c.get("type") == "PodScheduled"), None)


def _wait_unschedulable(cp, ns: str, name: str) -> dict:
    def cond():
        c = _scheduled_condition(cp, ns, name)
        return c if c and c.get("reason") == "Unschedulable" else None
    return wait_for(cond, 15, 0.1, f"{name} reported Unschedulable")


@pytest.fixture
def ns(control_plane):
    cp = control_plane
    name = f"sched-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", name)
    yield name
    cp.kubectl("delete", "pods", "--all", "-n", name, "--timeout=20s", check=False)


def test_e2e_pod_lands_on_ready_node_with_scheduled_event(control_plane, ns):
    cp = control_plane
    _apply(cp, ns, _pod_manifest("web"))
    node = _wait_nodes(cp, ns, "web")["web"]
    assert node in cp.ready_nodes()
    evs = wait_for(lambda: [e for e in _events(cp, ns, "web") if e["reason"] == "Scheduled"],
                   10, 0.1, "Scheduled event")
    assert evs[0]["message"] == f"Successfully assigned {ns}/web to {node}"
    assert evs[0]["type"] == "Normal"
    assert evs[0]["source"]["component"] == "default-scheduler"
    wait_for(lambda: cp.get_json("pod", "web", "-n", ns)["status"].get("phase") == "Running",
             20, 0.1, "pod Running")


def test_e2e_node_selector(control_plane, ns):
    cp = control_plane
    cp.kubectl("label", "node", "hollow-node-2", "sched-test-disk=ssd", "--overwrite")
    try:
        names = [f"ssd-{i}" for i in range(3)]
        _apply(cp, ns, *(_pod_manifest(n, nodeSelector={"sched-test-disk": "ssd"})
                         for n in names))
        assert set(_wait_nodes(cp, ns, *names).values()) == {"hollow-node-2"}
    finally:
        cp.kubectl("label", "node", "hollow-node-2", "sched-test-disk-")


def test_e2e_cordoned_node_gets_nothing_until_uncordoned(control_plane, ns):
    cp = control_plane
    cp.kubectl("cordon", "hollow-node-1")
    try:
        names = [f"c-{i}" for i in range(6)]
        _apply(cp, ns, *(_pod_manifest(n) for n in names))
        placed = set(_wait_nodes(cp, ns, *names).values())
        assert placed == {"hollow-node-2", "hollow-node-3"}
        # every node cordoned: the pod waits, with Kubernetes' reason
        cp.kubectl("cordon", *NODES)
        _apply(cp, ns, _pod_manifest("waiting"))
        cond = _wait_unschedulable(cp, ns, "waiting")
        assert cond["status"] == "False"
        assert cond["message"] == (
            "0/3 nodes are available: 3 node(s) were unschedulable. preemption: 0/3 nodes are "
            "available: 3 Preemption is not helpful for scheduling..")
        cp.kubectl("uncordon", "hollow-node-3")
        assert _wait_nodes(cp, ns, "waiting")["waiting"] == "hollow-node-3"
    finally:
        cp.kubectl("uncordon", *NODES)


def test_e2e_insufficient_cpu_pending_then_scheduled_when_room_appears(control_plane, ns):
    cp = control_plane
    fillers = [f"filler-{i}" for i in range(3)]  # 3 of each node's 4 cpus taken
    _apply(cp, ns, *(_pod_manifest(n, cpu="3") for n in fillers))
    placed = _wait_nodes(cp, ns, *fillers)
    assert sorted(placed.values()) == list(NODES)
    _apply(cp, ns, _pod_manifest("big", cpu="2"))
    msg = ("0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are "
           "available: 3 No preemption victims found for incoming pod..")
    cond = _wait_unschedulable(cp, ns, "big")
    assert (cond["status"], cond["message"]) == ("False", msg)
    assert cp.get_json("pod", "big", "-n", ns)["status"]["phase"] == "Pending"
    out = cp.kubectl("describe", "pod", "big", "-n", ns).stdout
    assert "FailedScheduling" in out and "0/3 nodes are available: 3 Insufficient cpu." in out
    ev = next(e for e in _events(cp, ns, "big") if e["reason"] == "FailedScheduling")
    assert ev["type"] == "Warning" and ev["message"] == msg
    # room appears: one filler goes away
    cp.kubectl("delete", "pod", "filler-0", "-n", ns, "--wait=false")
    assert _wait_nodes(cp, ns, "big")["big"] == placed["filler-0"]


def test_e2e_scheduled_once_a_matching_node_is_labelled(control_plane, ns):
    cp = control_plane
    _apply(cp, ns, _pod_manifest("picky", nodeSelector={"sched-test-room": "yes"}))
    cond = _wait_unschedulable(cp, ns, "picky")
    assert cond["message"].startswith(
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")
    cp.kubectl("label", "node", "hollow-node-1", "sched-test-room=yes")
    try:
        assert _wait_nodes(cp, ns, "picky")["picky"] == "hollow-node-1"
    finally:
        cp.kubectl("label", "node", "hollow-node-1", "sched-test-room-")


def test_e2e_taint_and_toleration(control_plane, ns):
    cp = control_plane
    cp.kubectl("taint", "nodes", "hollow-node-1", "sched-test=special:NoSchedule")
    try:
        pin = {"kubernetes.io/hostname": "hollow-node-1"}
        _apply(cp, ns, _pod_manifest("plain", nodeSelector=pin),
               _pod_manifest("tolerant", nodeSelector=pin, tolerations=[
                   {"key": "sched-test", "operator": "Equal", "value": "special",
                    "effect": "NoSchedule"}]))
        assert _wait_nodes(cp, ns, "tolerant")["tolerant"] == "hollow-node-1"
        cond = _wait_unschedulable(cp, ns, "plain")
        assert cond["message"] == (
            "0/3 nodes are available: 1 node(s) had untolerated taint {sched-test: special}, "
            "2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are "
            "available: 3 Preemption is not helpful for scheduling..")
        assert not _pods(cp, ns)["plain"]["spec"].get("nodeName")
    finally:
        cp.kubectl("taint", "nodes", "hollow-node-1", "sched-test-", check=False)


def test_e2e_other_scheduler_name_is_left_alone(control_plane, ns):
    cp = control_plane
    _apply(cp, ns, _pod_manifest("not-ours", schedulerName="other-scheduler"))
    _apply(cp, ns, _pod_manifest("ours"))
    _wait_nodes(cp, ns, "ours")  # the scheduler has seen both by now
    p = _pods(cp, ns)["not-ours"]
    assert not p["spec"].get("nodeName") and p["status"]["phase"] == "Pending"
    assert not [c for c in p["status"].get("conditions") or []
                if c.get("type") == "PodScheduled"]
    assert not [e for e in _events(cp, ns, "not-ours")
                if e["reason"] in ("Scheduled", "FailedScheduling")]


def test_e2e_spreads_a_service_workload_across_nodes(control_plane, ns):
    cp = control_plane
    # ballast makes hollow-node-1 the emptiest node by far: without spreading, all three
    # replicas would go there
    ballast = {f"ballast-{n}": n for n in NODES[1:]}
    _apply(cp, ns,
           {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "spread"},
            "spec": {"selector": {"app": "spread"}, "ports": [{"port": 80}]}},
           *(_pod_manifest(b, cpu="1", nodeSelector={"kubernetes.io/hostname": n})
             for b, n in ballast.items()))
    _wait_nodes(cp, ns, *ballast)
    names = [f"spread-{i}" for i in range(3)]
    _apply(cp, ns, *(_pod_manifest(n, labels={"app": "spread"}) for n in names))
    assert sorted(_wait_nodes(cp, ns, *names).values()) == list(NODES)


def test_e2e_metrics_and_lease(control_plane):
    import urllib.request
    cp = control_plane
    url = cp.cluster.component("scheduler").client_url
    body = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    assert 'leader_election_master_status{name="kube-scheduler"} 1' in body
    assert 'scheduler_schedule_attempts_total{profile="default-scheduler",result="scheduled"}' \
        in body
    lease = cp.get_json("lease", "kube-scheduler", "-n", "kube-system")
    assert lease["spec"]["holderIdentity"]


def test_e2e_volume_claim_binds_where_the_pod_goes_and_keeps_it_there(control_plane, ns):
    cp = control_plane
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "1Gi"}}}}
    vol = [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]
    # the default class waits for the first consumer: the scheduler picks the node, then the
    # claim is provisioned there (selected-node annotation) and bound before the pod binds
    _apply(cp, ns, claim, _pod_manifest("first", volumes=vol))
    node = _wait_nodes(cp, ns, "first", timeout=30)["first"]
    pvc = cp.get_json("pvc", "data", "-n", ns)
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == node
    # later users of the claim follow the volume's node affinity
    other = next(n for n in NODES if n != node)
    _apply(cp, ns, _pod_manifest("second", volumes=vol),
           _pod_manifest("elsewhere", volumes=vol,
                         nodeSelector={"kubernetes.io/hostname": other}))
    assert _wait_nodes(cp, ns, "second")["second"] == node
    cond = _wait_unschedulable(cp, ns, "elsewhere")
    assert cond["message"] == (
        "0/3 nodes are available: 1 node(s) had volume node affinity conflict, 2 node(s) didn't "
        "match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption "
        "is not helpful for scheduling..")


def test_e2e_scheduling_gates_hold_the_pod_until_removed(control_plane, ns):
    cp = control_plane
    _apply(cp, ns, _pod_manifest("gated", schedulingGates=[{"name": "example.com/wait"}]),
           _pod_manifest("free"))
    _wait_nodes(cp, ns, "free")
    cond = wait_for(lambda: _scheduled_condition(cp, ns, "gated"), 15, 0.1, "SchedulingGated")
    assert (cond["status"], cond["reason"]) == ("False", "SchedulingGated")
    assert "SchedulingGated" in cp.kubectl("get", "pod", "gated", "-n", ns).stdout
    cp.kubectl("patch", "pod", "gated", "-n", ns, "--type=json",
               "-p", '[{"op": "remove", "path": "/spec/schedulingGates"}]')
    _wait_nodes(cp, ns, "gated")


def test_e2e_scheduler_restart_picks_up_pending_pods(control_plane, ns):
    cp = control_plane
    cp.cluster.kill("scheduler")
    try:
        _apply(cp, ns, _pod_manifest("while-down"))
        assert not _pods(cp, ns)["while-down"]["spec"].get("nodeName")
    finally:
        cp.cluster.start("scheduler")
    # the new process waits out the dead one's Lease, lists, and schedules the backlog
    _wait_nodes(cp, ns, "while-down", timeout=30)
