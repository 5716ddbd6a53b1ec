"""ReplicaSet, ReplicationController and Deployment controllers.

Unit tests of the pure decision logic (surge/unavailable rounding, rollout steps, proportional
scaling of the conformance case, template hashing, pod deletion ranking, expectations, status),
then end-to-end tests on a whole control plane with hollow nodes, driven by the real kubectl.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
import time

import pytest

from controllers import deployment as dep
from controllers import replicaset as rsc
from tests.conftest import wait_for


# ============================================================================ helpers
def ts(offset: float = 0.0) -> str:
    t = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment(replicas=10, surge=3, unavailable=2, strategy="RollingUpdate", **spec) -> dict:
    st: dict = {"type": strategy}
    if strategy == "RollingUpdate":
        st["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1},
            "spec": {"replicas": replicas, "strategy": st, "progressDeadlineSeconds": 600,
                     "revisionHistoryLimit": 10, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
                     **spec},
            "status": {}}


def replica_set(name, size, available=None, created="2024-01-01T00:00:00Z", image="nginx",
                annotations=None) -> dict:
    available = size if available is None else available
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default", "uid": f"{name}-uid",
                         "creationTimestamp": created, "annotations": dict(annotations or {})},
            "spec": {"replicas": size,
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}},
            "status": {"replicas": size, "availableReplicas": available,
                       "readyReplicas": available}}


def pod(name, node="n1", phase="Running", ready=True, created="2024-01-01T00:00:00Z",
        ready_since="2024-01-01T00:00:10Z", restarts=0, annotations=None) -> dict:
    conds = [{"type": "Ready", "status": "True" if ready else "False",
              "lastTransitionTime": ready_since}]
    return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                         "annotations": annotations or {}},
            "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase, "conditions": conds,
                       "containerStatuses": [{"name": "c", "restartCount": restarts}]}}


# ============================================================================ rounding
@pytest.mark.parametrize("surge,unavail,desired,want", [
    ("25%", "25%", 10, (3, 2)),       # surge rounds up, unavailable rounds down
    ("25%", "25%", 4, (1, 1)),
    ("25%", "25%", 1, (1, 0)),
    ("0%", "0%", 5, (0, 1)),           # both zero → one may be unavailable
    (0, 0, 5, (0, 1)),
    (3, 2, 10, (3, 2)),
    ("50%", "10%", 3, (2, 0)),
    ("100%", "100%", 7, (7, 7)),
])
def test_resolve_fenceposts(surge, unavail, desired, want):
    assert dep.resolve_fenceposts(surge, unavail, desired) == want


def test_max_surge_and_unavailable():
    d = deployment(replicas=10, surge="25%", unavailable="25%")
    assert (dep.max_surge(d), dep.max_unavailable(d)) == (3, 2)
    d = deployment(replicas=3, surge=0, unavailable=5)
    assert dep.max_unavailable(d) == 3  # never more than replicas
    d = deployment(replicas=0)
    assert dep.max_unavailable(d) == 0
    d = deployment(strategy="Recreate")
    assert (dep.max_surge(d), dep.max_unavailable(d)) == (0, 0)


# ============================================================================ rollout steps
def _rs_step(d, rss, new, available_new: bool) -> None:
    """What the ReplicaSet controller would do: status follows spec; new pods become available
    only when available_new."""
    for r in rss:
        n = dep.replicas(r)
        avail = n if (r is not new or available_new) else 0
        r["status"] = {"replicas": n, "availableReplicas": avail, "readyReplicas": avail}


def _scale(d, rs, size):
    rs["spec"]["replicas"] = size
    dep.set_replicas_annotations(rs, dep.replicas(d), dep.replicas(d) + dep.max_surge(d))


def rolling_step(d, old, new) -> bool:
    """One rolloutRolling pass over pure functions; False when nothing changed."""
    all_rss = [old, new]
    if dep.replicas(new) != dep.replicas(d):
        want = (dep.replicas(d) if dep.replicas(new) > dep.replicas(d)
                else dep.new_rs_new_replicas(d, all_rss, new))
        if want != dep.replicas(new):
            _scale(d, new, want)
            return True
    plan = dep.plan_old_scale_down(all_rss, dep.active([old]), new, d)
    for r, size in plan:
        _scale(d, r, size)
    return bool(plan)


def test_conformance_proportional_scaling_of_a_stuck_rollout():
    """10 replicas, maxSurge 3, maxUnavailable 2, new pods never available → old 8 / new 5;
    scaled to 30 → old 20 / new 13 (test/e2e/apps/deployment.go testProportionalScalingDeployment)."""
    d = deployment(replicas=10, surge=3, unavailable=2)
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "bad"
    old = replica_set("web-old", 10, annotations={dep.DESIRED_REPLICAS: "10",
                                                  dep.MAX_REPLICAS: "13", dep.REVISION: "1"})
    new = replica_set("web-new", 0, available=0, created="2024-01-02T00:00:00Z", image="bad")
    new["spec"]["replicas"] = dep.new_rs_new_replicas(d, [old, new], new)
    dep.set_new_rs_annotations(d, new, "2", exists=False)
    assert dep.replicas(new) == 3
    assert new["metadata"]["annotations"][dep.MAX_REPLICAS] == "13"
    for _ in range(20):
        _rs_step(d, [old, new], new, available_new=False)
        if not rolling_step(d, old, new):
            break
    assert (dep.replicas(old), dep.replicas(new)) == (8, 5)

    assert dep.find_new_rs(d, [old, new]) is new
    assert not dep.is_scaling_event(d, [old, new])
    d["spec"]["replicas"] = 30
    assert dep.is_scaling_event(d, [old, new]) is True
    assert dep.find_active_or_latest(new, [old]) is None
    assert not dep.is_saturated(d, new)
    plan = {r["metadata"]["name"]: size for r, size in dep.proportional_plan(d, new, [old])}
    assert plan == {"web-old": 20, "web-new": 13}


def test_is_scaling_event_uses_desired_annotation():
    d = deployment(replicas=10)
    rs = replica_set("web-a", 10, annotations={dep.DESIRED_REPLICAS: "10"})
    assert not dep.is_scaling_event(d, [rs])
    d["spec"]["replicas"] = 12
    assert dep.is_scaling_event(d, [rs])


def test_proportional_scale_down_and_leftovers():
    d = deployment(replicas=5, surge=1, unavailable=0)
    old = replica_set("web-old", 6, annotations={dep.MAX_REPLICAS: "11"})
    new = replica_set("web-new", 5, available=0, created="2024-01-02T00:00:00Z",
                      annotations={dep.MAX_REPLICAS: "11"})
    plan = {r["metadata"]["name"]: s for r, s in dep.proportional_plan(d, new, [old])}
    assert sum(plan.values()) == 6  # replicas + maxSurge
    assert plan == {"web-old": 3, "web-new": 3}


def test_rolling_update_never_exceeds_surge_or_unavailability():
    for replicas, surge, unavailable in [(3, 1, 0), (5, "25%", "25%"), (4, 0, 1), (10, 3, 2),
                                         (1, 1, 0), (6, "50%", 0)]:
        d = deployment(replicas=replicas, surge=surge, unavailable=unavailable)
        max_total = replicas + dep.max_surge(d)
        min_avail = replicas - dep.max_unavailable(d)
        old = replica_set("web-old", replicas)
        new = replica_set("web-new", 0, available=0, created="2024-01-02T00:00:00Z")
        for _ in range(100):
            _rs_step(d, [old, new], new, available_new=True)
            assert dep.replicas(old) + dep.replicas(new) <= max_total
            assert old["status"]["availableReplicas"] + new["status"]["availableReplicas"] \
                >= min_avail
            if not rolling_step(d, old, new):
                break
        assert (dep.replicas(old), dep.replicas(new)) == (0, replicas), (surge, unavailable)


def test_new_replicas_count_pods_of_a_set_still_scaling_down():
    """An old set scaled from 3 to 2 whose surplus pod still runs counts 3 pods."""
    d = deployment(replicas=3, surge=1, unavailable=0)
    old = replica_set("web-old", 2)
    old["status"]["replicas"] = 3
    new = replica_set("web-new", 1, created="2024-01-02T00:00:00Z")
    assert dep.new_rs_new_replicas(d, [old, new], new) == 1
    old["status"]["replicas"] = 2
    assert dep.new_rs_new_replicas(d, [old, new], new) == 2


def test_old_scale_down_cleans_unhealthy_first():
    d = deployment(replicas=4, surge=1, unavailable=1)
    old = replica_set("web-old", 4, available=2)
    new = replica_set("web-new", 1, available=0, created="2024-01-02T00:00:00Z")
    plan = [(r["metadata"]["name"], s) for r, s in
            dep.plan_old_scale_down([old, new], [old], new, d)]
    # max scaled down = 5 - 3 - 1 = 1: one unhealthy old pod goes, no available one
    assert plan == [("web-old", 3)]


# ============================================================================ hashing
def test_template_hash_is_stable_and_safe():
    t = deployment()["spec"]["template"]
    h = dep.compute_hash(t)
    assert h == dep.compute_hash(json.loads(json.dumps(t)))
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789") and 1 <= len(h) <= 10
    # the same template with server-side empties is the same template
    t2 = json.loads(json.dumps(t))
    t2["metadata"]["creationTimestamp"] = None
    t2["spec"]["volumes"] = []
    assert dep.compute_hash(t2) == h
    t3 = json.loads(json.dumps(t))
    t3["spec"]["containers"][0]["image"] = "nginx:1.27"
    assert dep.compute_hash(t3) != h
    assert dep.compute_hash(t, 1) != h
    assert dep.compute_hash(t, 1) == dep.compute_hash(t, 1) != dep.compute_hash(t, 2)
    # the known FNV-32a vectors
    assert dep.fnv32a(b"") == 0x811C9DC5
    assert dep.fnv32a(b"a") == 0xE40C292C
    assert dep.safe_encode("0123456789") == "456789bcdf"


def test_equal_ignore_hash():
    t = deployment()["spec"]["template"]
    t2 = json.loads(json.dumps(t))
    t2["metadata"]["labels"]["pod-template-hash"] = "abc"
    assert dep.equal_ignore_hash(t, t2)
    t2["metadata"]["labels"]["extra"] = "x"
    assert not dep.equal_ignore_hash(t, t2)


# ============================================================================ annotations
def test_revision_annotations_on_reuse():
    d = deployment()
    d["metadata"]["annotations"] = {"kubernetes.io/change-cause": "kubectl set image",
                                    dep.LAST_APPLIED: "{}", dep.REVISION: "3"}
    rs = replica_set("web-a", 0, annotations={dep.REVISION: "1"})
    assert dep.set_new_rs_annotations(d, rs, "4", exists=True)
    ann = rs["metadata"]["annotations"]
    assert ann[dep.REVISION] == "4" and ann[dep.REVISION_HISTORY] == "1"
    assert ann["kubernetes.io/change-cause"] == "kubectl set image"
    assert dep.LAST_APPLIED not in ann
    assert dep.DESIRED_REPLICAS not in ann  # only sets about to be created get them here
    rs["metadata"]["annotations"][dep.REVISION] = "4"
    assert dep.set_new_rs_annotations(d, rs, "6", exists=True)
    assert rs["metadata"]["annotations"][dep.REVISION_HISTORY] == "1,4"
    assert not dep.set_new_rs_annotations(d, rs, "5", exists=True)  # never lowered
    fresh = replica_set("web-b", 0, annotations={})
    assert dep.set_new_rs_annotations(d, fresh, "7", exists=False)
    fa = fresh["metadata"]["annotations"]
    assert (fa[dep.REVISION], fa[dep.DESIRED_REPLICAS], fa[dep.MAX_REPLICAS]) == ("7", "10", "13")


# ============================================================================ status
def test_status_and_conditions():
    d = deployment(replicas=3, surge=1, unavailable=0)
    new = replica_set("web-new", 3)
    st = dep.rollout_status(d, [new], new)
    assert st["replicas"] == st["updatedReplicas"] == st["availableReplicas"] == 3
    assert "unavailableReplicas" not in st
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert conds["Progressing"]["message"] == 'ReplicaSet "web-new" has successfully progressed.'

    # a stuck rollout: no progress since the last update beyond the deadline
    d = deployment(replicas=3, surge=1, unavailable=0, progressDeadlineSeconds=10)
    old = replica_set("web-old", 3)
    new = replica_set("web-new", 1, available=0, created="2024-01-02T00:00:00Z")
    new["status"]["readyReplicas"] = 0
    d["status"] = dep.calculate_status([old, new], new, d)
    d["status"]["conditions"].append(dep.new_condition(
        "Progressing", "True", "ReplicaSetUpdated", 'ReplicaSet "web-new" is progressing.',
        ts(-5)))
    st = dep.rollout_status(d, [old, new], new)
    prog = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert prog["reason"] == "ReplicaSetUpdated"  # deadline not reached yet
    after = dep.stuck_requeue_after(d, st)
    assert after is not None and 3 < after <= 6
    d["status"]["conditions"][-1]["lastUpdateTime"] = ts(-20)
    st = dep.rollout_status(d, [old, new], new)
    prog = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert (prog["status"], prog["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert prog["message"] == 'ReplicaSet "web-new" has timed out progressing.'
    # progress resets it
    new["status"]["availableReplicas"] = 1
    st = dep.rollout_status(d, [old, new], new)
    prog = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert (prog["status"], prog["reason"]) == ("True", "ReplicaSetUpdated")


def test_available_condition_false_below_minimum():
    d = deployment(replicas=4, surge=1, unavailable=1)
    rs = replica_set("web-a", 4, available=2)
    st = dep.calculate_status([rs], rs, d)
    avail = next(c for c in st["conditions"] if c["type"] == "Available")
    assert (avail["status"], avail["reason"]) == ("False", "MinimumReplicasUnavailable")
    assert st["unavailableReplicas"] == 2


# ============================================================================ ReplicaSet logic
def test_pod_deletion_ranking():
    pods = [
        pod("ready-old", created="2024-01-01T00:00:00Z"),
        pod("ready-new", created="2024-01-01T00:05:00Z", ready_since="2024-01-01T00:00:10Z"),
        pod("not-ready", ready=False),
        pod("pending", phase="Pending", ready=False),
        pod("unscheduled", node=None, phase="Pending", ready=False),
    ]
    assert len(rsc.pods_to_delete(pods, 5)) == 5
    ranked = sorted(pods, key=lambda p: rsc.deletion_rank_key(p))
    assert [p["metadata"]["name"] for p in ranked] == \
        ["unscheduled", "pending", "not-ready", "ready-new", "ready-old"]
    assert [p["metadata"]["name"] for p in rsc.pods_to_delete(pods, 2)] == \
        ["unscheduled", "pending"]
    # restarts and deletion cost
    a = pod("a", restarts=5)
    b = pod("b")
    assert [p["metadata"]["name"] for p in rsc.pods_to_delete([b, a], 1)] == ["a"]
    c = pod("c", annotations={rsc.POD_DELETION_COST: "-10"})
    assert [p["metadata"]["name"] for p in rsc.pods_to_delete([a, b, c], 1)] == ["c"]
    # doubled-up pods on a node go before lone ones
    x1, x2, y = pod("x1", node="n1"), pod("x2", node="n1"), pod("y", node="n2")
    assert rsc.pods_to_delete([y, x1, x2], 1)[0]["metadata"]["name"] in ("x1", "x2")


def test_pod_activity_and_availability():
    now = time.time()
    p = pod("p", ready_since=ts(-5))
    assert rsc.is_pod_active(p) and rsc.is_pod_ready(p)
    assert rsc.is_pod_available(p, 0, now)
    assert rsc.is_pod_available(p, 3, now) and not rsc.is_pod_available(p, 30, now)
    assert not rsc.is_pod_active(dict(p, status={"phase": "Succeeded"}))
    gone = json.loads(json.dumps(p))
    gone["metadata"]["deletionTimestamp"] = ts()
    assert not rsc.is_pod_active(gone)
    counts = rsc.count_pods([p, pod("q", ready=False)], {"app": "web"}, 30, now)
    assert (counts.replicas, counts.ready, counts.available) == (2, 1, 0)
    assert counts.next_available is not None and counts.next_available > now


def test_replica_set_status_fields():
    obj = {"metadata": {"generation": 4}, "status": {}}
    c = rsc.PodCounts(replicas=3, fully_labeled=3, ready=2, available=1)
    st = rsc.replica_set_status(obj, c, None, 3)
    assert st == {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 2,
                  "availableReplicas": 1, "observedGeneration": 4}
    st = rsc.replica_set_status(obj, rsc.PodCounts(replicas=1), "quota exceeded", 3)
    assert st["conditions"][0]["reason"] == "FailedCreate"
    obj["status"] = st
    assert "conditions" not in rsc.replica_set_status(obj, rsc.PodCounts(replicas=3), None, 3)


def test_pod_from_template():
    owner = {"metadata": {"name": "frontend", "namespace": "ns1", "uid": "u"}}
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "frontend", "uid": "u",
           "controller": True, "blockOwnerDeletion": True}
    tpl = {"metadata": {"labels": {"app": "x"}, "annotations": {"a": "b"}},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    p = rsc.pod_from_template(tpl, owner, ref)
    assert p["metadata"]["generateName"] == "frontend-"
    assert p["metadata"]["ownerReferences"] == [ref]
    assert p["metadata"]["labels"] == {"app": "x"} and p["metadata"]["namespace"] == "ns1"
    p["metadata"]["labels"]["app"] = "changed"
    assert tpl["metadata"]["labels"]["app"] == "x"


def test_slow_start_batches():
    sizes: list[int] = []
    inflight = 0

    async def fn():
        nonlocal inflight
        inflight += 1
        await asyncio.sleep(0)
        sizes.append(inflight)
        await asyncio.sleep(0)
        inflight -= 1

    ok, err = asyncio.run(rsc.slow_start_batch(10, 1, fn))
    assert (ok, err) == (10, None)
    # batches of 1, 2, 4, 3
    assert max(sizes) == 4 and sizes[0] == 1

    calls = 0

    async def failing():
        nonlocal calls
        calls += 1
        if calls >= 2:
            raise RuntimeError("boom")

    ok, err = asyncio.run(rsc.slow_start_batch(10, 1, failing))
    assert ok == 1 and isinstance(err, RuntimeError) and calls == 3  # stops after batch 2


def test_expectations():
    clock = [0.0]
    e = rsc.Expectations(timeout=10, clock=lambda: clock[0])
    assert e.satisfied("ns/a")
    e.expect_creations("ns/a", 2)
    assert not e.satisfied("ns/a")
    e.creation_observed("ns/a")
    assert not e.satisfied("ns/a")
    e.creation_observed("ns/a")
    assert e.satisfied("ns/a")
    e.expect_deletions("ns/a", ["ns/p1", "ns/p2"])
    e.deletion_observed("ns/a", "ns/p1")
    e.deletion_observed("ns/a", "ns/p1")  # the same pod twice counts once
    assert not e.satisfied("ns/a")
    clock[0] = 11  # expired expectations do not block forever
    assert e.satisfied("ns/a")
    e.expect_creations("ns/b", 1)
    e.delete("ns/b")
    assert e.satisfied("ns/b")


# ============================================================================ fake API harness
class FakeInformer:
    def __init__(self):
        self.cache: dict[str, dict] = {}
        self.handlers: list = []

    def add_handler(self, h):
        self.handlers.append(h)

    def get(self, ns, name):
        return self.cache.get(f"{ns}/{name}")

    def list(self, ns=None):
        return [o for o in self.cache.values() if ns is None or o["metadata"]["namespace"] == ns]

    def put(self, obj):
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        old = self.cache.get(key)
        self.cache[key] = obj
        for h in self.handlers:
            h("ADDED" if old is None else "MODIFIED", obj, old)


class FakeInformers:
    def __init__(self):
        self.by_kind: dict[str, FakeInformer] = {}

    def informer(self, kind):
        return self.by_kind.setdefault(kind, FakeInformer())


class FakeRecorder:
    def __init__(self):
        self.events: list[tuple[str, str]] = []

    async def normal(self, obj, reason, message):
        self.events.append((reason, message))

    async def warning(self, obj, reason, message):
        self.events.append((reason, message))


class FakeClient:
    """An in-memory API: objects by (kind, ns, name); every write bumps resourceVersion."""

    def __init__(self):
        self.objects: dict[tuple, dict] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.rv = 100
        self.n = 0

    def _bump(self, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return json.loads(json.dumps(obj))

    def add(self, kind, obj):
        self.objects[(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return self._bump(obj)

    async def get(self, kind, ns, name):
        o = self.objects.get((kind, ns, name))
        if o is None:
            raise rsc.APIError(404, "NotFound", f"{name} not found")
        return json.loads(json.dumps(o))

    async def get_or_none(self, kind, ns, name):
        o = self.objects.get((kind, ns, name))
        return json.loads(json.dumps(o)) if o else None

    async def create(self, kind, obj, ns=None):
        obj = json.loads(json.dumps(obj))
        md = obj["metadata"]
        if not md.get("name"):
            self.n += 1
            md["name"] = f"{md['generateName']}{self.n:05d}"
        md.setdefault("namespace", ns)
        if (kind, md["namespace"], md["name"]) in self.objects:
            raise rsc.APIError(409, "AlreadyExists", f"{md['name']} already exists")
        md["uid"] = f"uid-{md['name']}"
        md["creationTimestamp"] = ts()
        md["generation"] = 1
        self.calls.append(("create", kind, md["name"]))
        return self.add(kind, obj)

    async def update(self, kind, obj):
        self.calls.append(("update", kind, obj["metadata"]["name"]))
        return self.add(kind, json.loads(json.dumps(obj)))

    async def update_status(self, kind, obj):
        self.calls.append(("update_status", kind, obj["metadata"]["name"]))
        return self.add(kind, json.loads(json.dumps(obj)))

    async def patch(self, kind, ns, name, patch, **kw):
        self.calls.append(("patch", kind, name))
        o = self.objects[(kind, ns, name)]
        if isinstance(patch, dict):
            for k, v in patch.get("metadata", {}).get("annotations", {}).items():
                o["metadata"].setdefault("annotations", {})[k] = v
        return self._bump(o)

    async def delete(self, kind, ns, name, **kw):
        self.calls.append(("delete", kind, name))
        return self.objects.pop((kind, ns, name)), True


def _controller(cls):
    client, informers, recorder = FakeClient(), FakeInformers(), FakeRecorder()
    return cls(client, informers, recorder), client, informers, recorder


def test_expectations_keep_a_stale_cache_from_double_creating():
    async def run():
        ctl, client, inf, rec = _controller(rsc.ReplicaSetController)
        rs = client.add("ReplicaSet", {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "fe", "namespace": "default", "uid": "rs-uid",
                         "generation": 1},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "fe"}},
                     "template": {"metadata": {"labels": {"app": "fe"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
        inf.informer("ReplicaSet").put(rs)
        await ctl.reconcile("default/fe")
        created = [c for c in client.calls if c[:2] == ("create", "Pod")]
        assert len(created) == 3
        assert [m for r, m in rec.events if r == "SuccessfulCreate"] == \
            [f"Created pod: {c[2]}" for c in created]
        # the pod cache has seen none of them yet: another sync must not create more
        await ctl.reconcile("default/fe")
        assert len([c for c in client.calls if c[:2] == ("create", "Pod")]) == 3
        # the informer delivers the pods: expectations met, nothing more to do
        for (kind, _, _), obj in list(client.objects.items()):
            if kind == "Pod":
                inf.informer("Pod").put(json.loads(json.dumps(obj)))
        assert ctl.expectations.satisfied("default/fe")
        await ctl.reconcile("default/fe")
        assert len([c for c in client.calls if c[:2] == ("create", "Pod")]) == 3
        # scale down to 1: two deletions expected, and a stale cache deletes no more
        rs2 = await client.get("ReplicaSet", "default", "fe")
        rs2["spec"]["replicas"] = 1
        inf.informer("ReplicaSet").put(client.add("ReplicaSet", rs2))
        await ctl.reconcile("default/fe")
        await ctl.reconcile("default/fe")
        assert len([c for c in client.calls if c[:2] == ("delete", "Pod")]) == 2
        assert ctl.expectations.pending("default/fe") == (0, 2)
    asyncio.run(run())


def test_deployment_hash_collision_bumps_collision_count():
    async def run():
        ctl, client, inf, rec = _controller(dep.DeploymentController)
        d = deployment(replicas=2, surge=1, unavailable=0)
        d["metadata"].pop("uid")
        d = await client.create("Deployment", d, "default")
        inf.informer("Deployment").put(d)
        h = dep.compute_hash(d["spec"]["template"])
        # someone else's ReplicaSet already has the name the new one would get
        squatter = replica_set(f"web-{h}", 0)
        squatter["metadata"]["labels"] = {"app": "other"}
        client.add("ReplicaSet", squatter)
        await ctl.reconcile("default/web")
        d = await client.get("Deployment", "default", "web")
        assert d["status"]["collisionCount"] == 1
        inf.informer("Deployment").put(d)
        await ctl.reconcile("default/web")
        h2 = dep.compute_hash(d["spec"]["template"], 1)
        assert h2 != h
        new = await client.get("ReplicaSet", "default", f"web-{h2}")
        assert new["spec"]["replicas"] == 2
        assert new["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h2}
        assert new["metadata"]["annotations"][dep.REVISION] == "1"
        assert ("ScalingReplicaSet", f"Scaled up replica set web-{h2} from 0 to 2") in rec.events
        d = await client.get("Deployment", "default", "web")
        assert d["metadata"]["annotations"][dep.REVISION] == "1"
        prog = rsc.get_condition(d["status"], "Progressing")
        assert (prog["reason"], prog["message"]) == ("NewReplicaSetCreated",
                                                     f'Created new replica set "web-{h2}"')
    asyncio.run(run())


# ============================================================================ end to end
APP_NS = "default"


def _pods(cp, selector: str) -> list[dict]:
    return cp.get_json("pods", "-l", selector)["items"]


def _live(pods: list[dict]) -> list[dict]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]


def _running(pods: list[dict]) -> list[dict]:
    return [p for p in _live(pods) if p.get("status", {}).get("phase") == "Running"
            and rsc.is_pod_ready(p)]


def _owner_uid(p: dict) -> str | None:
    ref = rsc.controller_ref(p)
    return ref["uid"] if ref else None


def _apply(cp, manifest: str):
    return cp.kubectl("apply", "-f", "-", input=manifest)


def _wait_next_second(since: str) -> None:
    """Wait (by polling the clock) until the wall clock has passed the second `since`, so
    objects created next have a later creationTimestamp."""
    t = rsc.parse_time(since) or 0
    wait_for(lambda: time.time() >= t + 1.0, 3, 0.02, "the next second")


class PodWatch:
    """Watch pods with a label selector through the gRPC cluster API in a background thread,
    recording after every event the number of live (not terminating) pods and of live Ready
    pods."""

    def __init__(self, cp, selector: str):
        self.cp = cp
        self.selector = selector
        self.pods: dict[str, dict] = {}
        self.samples: list[tuple[int, int]] = []
        self.errors: list[BaseException] = []
        self.started = threading.Event()
        self._stop = None
        self._loop = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.started.wait(10), "pod watch did not start"
        return self

    def __exit__(self, *exc):
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)

    def _run(self):
        asyncio.run(self._main())

    async def _main(self):
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.cp.client() as c:
            lst = await c.list("Pod", APP_NS, label_selector=self.selector)
            for p in lst["items"]:
                self.pods[p["metadata"]["name"]] = p
            self._sample()
            rv = lst["metadata"]["resourceVersion"]
            self.started.set()

            async def consume():
                async for etype, obj in c.watch("Pod", APP_NS, resource_version=rv,
                                                label_selector=self.selector):
                    if etype in ("BOOKMARK", "ERROR"):
                        continue
                    if etype == "DELETED":
                        self.pods.pop(obj["metadata"]["name"], None)
                    else:
                        self.pods[obj["metadata"]["name"]] = obj
                    self._sample()
            task = asyncio.create_task(consume())
            stopper = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
            task.cancel()
            stopper.cancel()
            for t in done:
                if t is task and t.exception():
                    self.errors.append(t.exception())

    def _sample(self):
        live = _live(list(self.pods.values()))
        self.samples.append((len(live), sum(1 for p in live if rsc.is_pod_ready(p))))


RS_MANIFEST = """
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: frontend
  labels: {app: guestbook, tier: frontend}
spec:
  replicas: 3
  selector:
    matchLabels: {tier: frontend}
  template:
    metadata:
      labels: {tier: frontend}
    spec:
      containers:
      - name: php-redis
        image: nginx
"""


def test_replicaset_creates_replaces_and_scales_down_newest(control_plane):
    cp = control_plane
    _apply(cp, RS_MANIFEST)
    rs = cp.get_json("rs", "frontend")
    uid = rs["metadata"]["uid"]
    wait_for(lambda: len(_running(_pods(cp, "tier=frontend"))) == 3, 20, 0.1,
             "3 running frontend pods")
    pods = _live(_pods(cp, "tier=frontend"))
    assert len(pods) == 3
    for p in pods:
        assert p["metadata"]["name"].startswith("frontend-")
        ref = rsc.controller_ref(p)
        assert ref == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "frontend",
                       "uid": uid, "controller": True, "blockOwnerDeletion": True}
        assert p["spec"].get("nodeName", "").startswith("hollow-node-")
    wait_for(lambda: cp.get_json("rs", "frontend")["status"].get("availableReplicas") == 3,
             10, 0.1, "availableReplicas 3")
    rs = cp.get_json("rs", "frontend")
    st = rs["status"]
    assert st["replicas"] == st["fullyLabeledReplicas"] == st["readyReplicas"] == 3
    assert st["observedGeneration"] == rs["metadata"]["generation"]
    events = cp.get_json("events", "--field-selector", "involvedObject.name=frontend")["items"]
    msgs = [e["message"] for e in events if e["reason"] == "SuccessfulCreate"]
    assert {f"Created pod: {p['metadata']['name']}" for p in pods} <= set(msgs)

    # a pod deleted by hand is replaced
    victim = pods[0]["metadata"]["name"]
    cp.kubectl("delete", "pod", victim, "--wait=false")
    wait_for(lambda: len(_running(_pods(cp, "tier=frontend"))) == 3 and victim not in
             [p["metadata"]["name"] for p in _live(_pods(cp, "tier=frontend"))], 20, 0.1,
             "a replacement pod")

    # scale to 4 (the new pod created in a later second), back to 3: the newest goes
    newest_before = max(p["metadata"]["creationTimestamp"]
                        for p in _live(_pods(cp, "tier=frontend")))
    _wait_next_second(newest_before)
    cp.kubectl("scale", "rs", "frontend", "--replicas=4")
    wait_for(lambda: len(_running(_pods(cp, "tier=frontend"))) == 4, 20, 0.1, "4 pods")
    four = _live(_pods(cp, "tier=frontend"))
    newest = max(four, key=lambda p: p["metadata"]["creationTimestamp"])["metadata"]["name"]
    cp.kubectl("scale", "rs", "frontend", "--replicas=3")
    wait_for(lambda: len(_live(_pods(cp, "tier=frontend"))) == 3, 20, 0.1, "3 pods")
    names = {p["metadata"]["name"] for p in _live(_pods(cp, "tier=frontend"))}
    assert newest not in names
    events = cp.get_json("events", "--field-selector", "involvedObject.name=frontend")["items"]
    assert f"Deleted pod: {newest}" in [e["message"] for e in events
                                        if e["reason"] == "SuccessfulDelete"]
    wait_for(lambda: cp.get_json("rs", "frontend")["status"]["replicas"] == 3, 10, 0.1,
             "status.replicas 3")
    cp.kubectl("delete", "rs", "frontend", "--cascade=orphan")
    cp.kubectl("delete", "pods", "-l", "tier=frontend", "--wait=false")


def test_replicaset_releases_and_adopts(control_plane):
    cp = control_plane
    _apply(cp, RS_MANIFEST.replace("frontend", "backend"))
    uid = cp.get_json("rs", "backend")["metadata"]["uid"]
    wait_for(lambda: len(_running(_pods(cp, "tier=backend"))) == 3, 20, 0.1, "3 pods")

    # release: a pod relabelled out of the selector loses its controllerRef and is replaced
    released = min(p["metadata"]["name"] for p in _live(_pods(cp, "tier=backend")))
    cp.kubectl("label", "pod", released, "tier=debug", "--overwrite")
    wait_for(lambda: rsc.controller_ref(cp.get_json("pod", released)) is None, 10, 0.1,
             "the relabelled pod released")
    wait_for(lambda: len(_running(_pods(cp, "tier=backend"))) == 3, 20, 0.1,
             "a pod replacing the released one")
    assert released not in {p["metadata"]["name"] for p in _live(_pods(cp, "tier=backend"))}

    # adoption: made to match again, the orphan is adopted as a 4th pod, and one pod (the
    # least valuable) is deleted to get back to 3, all owned by the set
    cp.kubectl("label", "pod", released, "tier=backend", "--overwrite")
    wait_for(lambda: len(_live(_pods(cp, "tier=backend"))) == 3 and all(
        _owner_uid(p) == uid for p in _live(_pods(cp, "tier=backend"))), 20, 0.1,
        "3 owned pods after the adoption")
    events = cp.get_json("events", "--field-selector", "involvedObject.name=backend")["items"]
    assert any(e["reason"] == "SuccessfulDelete" for e in events)
    cp.kubectl("delete", "rs", "backend")


def test_replicaset_orphan_adopted_instead_of_creating(control_plane):
    """An orphan that exists before the set is adopted: the set creates only the rest."""
    cp = control_plane
    cp.kubectl("create", "-f", "-", input="""
apiVersion: v1
kind: Pod
metadata: {name: pre-existing, labels: {app: adoptme}}
spec:
  containers: [{name: c, image: nginx}]
""")
    _apply(cp, """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: adopter}
spec:
  replicas: 2
  selector: {matchLabels: {app: adoptme}}
  template:
    metadata: {labels: {app: adoptme}}
    spec:
      containers: [{name: c, image: nginx}]
""")
    uid = cp.get_json("rs", "adopter")["metadata"]["uid"]
    wait_for(lambda: len(_running(_pods(cp, "app=adoptme"))) == 2, 20, 0.1, "2 pods")
    pods = _live(_pods(cp, "app=adoptme"))
    assert "pre-existing" in {p["metadata"]["name"] for p in pods}
    assert all(_owner_uid(p) == uid for p in pods)
    cp.kubectl("delete", "rs", "adopter")


def test_replicaset_min_ready_seconds(control_plane):
    """Ready pods count as available only after minReadySeconds (50 s, i.e. 5 s at x0.1)."""
    cp = control_plane
    _apply(cp, """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: slowavail}
spec:
  replicas: 2
  minReadySeconds: 50
  selector: {matchLabels: {app: slowavail}}
  template:
    metadata: {labels: {app: slowavail}}
    spec:
      containers: [{name: c, image: nginx}]
""")

    def status():
        return cp.get_json("rs", "slowavail")["status"]
    wait_for(lambda: status().get("readyReplicas") == 2
             and not status().get("availableReplicas"), 20, 0.1, "2 ready, none available")
    t0 = time.monotonic()
    wait_for(lambda: status().get("availableReplicas") == 2, 20, 0.1, "2 available")
    assert time.monotonic() - t0 > 1.0
    cp.kubectl("delete", "rs", "slowavail")


RC_MANIFEST = """
apiVersion: v1
kind: ReplicationController
metadata:
  name: kubia
spec:
  replicas: 3
  selector:
    app: kubia
  template:
    metadata:
      labels:
        app: kubia
    spec:
      containers:
      - name: kubia
        image: luksa/kubia
        ports:
        - containerPort: 8080
"""


def test_replication_controller(control_plane):
    cp = control_plane
    cp.kubectl("create", "-f", "-", input=RC_MANIFEST)
    uid = cp.get_json("rc", "kubia")["metadata"]["uid"]
    wait_for(lambda: len(_running(_pods(cp, "app=kubia"))) == 3, 20, 0.1, "3 kubia pods")
    for p in _live(_pods(cp, "app=kubia")):
        assert rsc.controller_ref(p)["kind"] == "ReplicationController"
        assert rsc.controller_ref(p)["apiVersion"] == "v1"
        assert rsc.controller_ref(p)["uid"] == uid
        assert p["metadata"]["name"].startswith("kubia-")
    wait_for(lambda: cp.get_json("rc", "kubia")["status"].get("readyReplicas") == 3, 10, 0.1,
             "rc readyReplicas 3")
    out = cp.kubectl("get", "rc", "kubia").stdout
    assert out.split("\n")[1].split()[:4] == ["kubia", "3", "3", "3"]
    # relabel one pod: released, replaced (the book's experiment)
    name = _live(_pods(cp, "app=kubia"))[0]["metadata"]["name"]
    cp.kubectl("label", "pod", name, "app=foo", "--overwrite")
    wait_for(lambda: rsc.controller_ref(cp.get_json("pod", name)) is None, 10, 0.1, "released")
    wait_for(lambda: len(_running(_pods(cp, "app=kubia"))) == 3, 20, 0.1, "replacement")
    cp.kubectl("scale", "rc", "kubia", "--replicas=1")
    wait_for(lambda: len(_live(_pods(cp, "app=kubia"))) == 1, 20, 0.1, "scaled to 1")
    cp.kubectl("delete", "rc", "kubia")
    cp.kubectl("delete", "pod", name, "--wait=false")


def deployment_manifest(name: str, image: str = "nginx", replicas: int = 3,
                        strategy: str = "", extra_spec: str = "", annotations: str = "",
                        template_annotations: str = "") -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
{annotations}
spec:
  replicas: {replicas}
{strategy}
{extra_spec}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
{template_annotations}
    spec:
      containers:
      - name: app
        image: {image}
"""


def _rollout_status(cp, name: str, timeout: str = "60s"):
    return cp.kubectl("rollout", "status", f"deployment/{name}", f"--timeout={timeout}",
                      timeout=90)


def _owned_rss(cp, name: str) -> list[dict]:
    uid = cp.get_json("deploy", name)["metadata"]["uid"]
    return [r for r in cp.get_json("rs")["items"] if _owner_uid(r) == uid]


def test_deployment_create_and_rollout_status(control_plane):
    cp = control_plane
    _apply(cp, deployment_manifest("web", replicas=3))
    out = _rollout_status(cp, "web")
    assert 'deployment "web" successfully rolled out' in out.stdout
    d = cp.get_json("deploy", "web")
    st = d["status"]
    assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"],
            st["availableReplicas"]) == (3, 3, 3, 3)
    assert st["observedGeneration"] == d["metadata"]["generation"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Available"]["status"] == "True"
    assert conds["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
    rss = _owned_rss(cp, "web")
    assert len(rss) == 1
    rs = rss[0]
    h = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{h}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
    assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == h
    assert conds["Progressing"]["message"] == \
        f'ReplicaSet "{rs["metadata"]["name"]}" has successfully progressed.'
    ann = rs["metadata"]["annotations"]
    assert (ann[dep.REVISION], ann[dep.DESIRED_REPLICAS], ann[dep.MAX_REPLICAS]) == \
        ("1", "3", "4")
    assert d["metadata"]["annotations"][dep.REVISION] == "1"
    for p in _live(_pods(cp, "app=web")):
        assert p["metadata"]["labels"]["pod-template-hash"] == h
    events = cp.get_json("events", "--field-selector", "involvedObject.name=web")["items"]
    assert f"Scaled up replica set {rs['metadata']['name']} from 0 to 3" in \
        [e["message"] for e in events if e["reason"] == "ScalingReplicaSet"]
    # the hash is stable: the same template in another deployment hashes the same way
    assert h == dep.compute_hash(d["spec"]["template"], d["status"].get("collisionCount"))
    cp.kubectl("delete", "deploy", "web")


def test_rolling_update_respects_surge_and_unavailable(control_plane):
    cp = control_plane
    strategy = ("  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n"
                "      maxSurge: 1\n      maxUnavailable: 1\n")
    _apply(cp, deployment_manifest("roll", replicas=4, strategy=strategy))
    _rollout_status(cp, "roll")
    with PodWatch(cp, "app=roll") as w:
        # new pods become Ready 1 s after they start, so old ones go before new ones are ready
        cp.kubectl("patch", "deployment", "roll", "--type=strategic", "-p", json.dumps(
            {"spec": {"template": {
                "metadata": {"annotations": {"hollow.kubelab.io/ready-after-seconds": "1"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}))
        _rollout_status(cp, "roll")
        wait_for(lambda: len(_live(list(w.pods.values()))) == 4, 10, 0.05, "watch caught up")
    assert not w.errors
    assert w.samples, "no pod events observed"
    max_live = max(n for n, _ in w.samples)
    min_ready = min(r for _, r in w.samples)
    assert max_live <= 4 + 1, f"more than replicas+maxSurge pods: {max_live}"
    assert min_ready >= 4 - 1, f"fewer than replicas-maxUnavailable ready pods: {min_ready}"
    assert max_live == 5 or min_ready == 3  # it really rolled
    pods = _live(_pods(cp, "app=roll"))
    assert len(pods) == 4
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:1.27"}
    rss = _owned_rss(cp, "roll")
    assert sorted((r["spec"]["replicas"], r["metadata"]["annotations"][dep.REVISION])
                  for r in rss) == [(0, "1"), (4, "2")]
    cp.kubectl("delete", "deploy", "roll")


def test_rollout_history_and_undo(control_plane):
    cp = control_plane
    _apply(cp, deployment_manifest("hist", replicas=2,
                                   annotations="  annotations:\n    kubernetes.io/change-cause: "
                                               "first\n"))
    _rollout_status(cp, "hist")
    cp.kubectl("set", "image", "deployment/hist", "app=nginx:1.27")
    cp.kubectl("annotate", "deployment/hist", "kubernetes.io/change-cause=second", "--overwrite")
    _rollout_status(cp, "hist")
    wait_for(lambda: any(r["metadata"]["annotations"].get("kubernetes.io/change-cause")
                         == "second" for r in _owned_rss(cp, "hist")), 10, 0.1,
             "change-cause copied")
    hist = cp.kubectl("rollout", "history", "deployment/hist").stdout
    lines = [ln.split() for ln in hist.strip().splitlines()[2:]]
    assert lines == [["1", "first"], ["2", "second"]], hist
    rev1 = cp.kubectl("rollout", "history", "deployment/hist", "--revision=1").stdout
    assert "nginx" in rev1 and "nginx:1.27" not in rev1

    cp.kubectl("rollout", "undo", "deployment/hist")
    _rollout_status(cp, "hist")
    d = cp.get_json("deploy", "hist")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"
    assert "pod-template-hash" not in d["spec"]["template"]["metadata"]["labels"]
    wait_for(lambda: {p["spec"]["containers"][0]["image"]
                      for p in _live(_pods(cp, "app=hist"))} == {"nginx"}
             and len(_live(_pods(cp, "app=hist"))) == 2, 20, 0.1, "old image back")
    rss = _owned_rss(cp, "hist")
    assert len(rss) == 2  # the old set was reused, not recreated
    by_image = {r["spec"]["template"]["spec"]["containers"][0]["image"]: r for r in rss}
    ann = by_image["nginx"]["metadata"]["annotations"]
    assert ann[dep.REVISION] == "3" and ann[dep.REVISION_HISTORY] == "1"
    assert by_image["nginx"]["spec"]["replicas"] == 2
    assert by_image["nginx:1.27"]["spec"]["replicas"] == 0
    assert d["metadata"]["annotations"][dep.REVISION] == "3"
    hist = cp.kubectl("rollout", "history", "deployment/hist").stdout
    assert [ln.split()[0] for ln in hist.strip().splitlines()[2:]] == ["2", "3"]

    # undo --to-revision=2
    cp.kubectl("rollout", "undo", "deployment/hist", "--to-revision=2")
    _rollout_status(cp, "hist")
    assert cp.get_json("deploy", "hist")["spec"]["template"]["spec"]["containers"][0][
        "image"] == "nginx:1.27"
    wait_for(lambda: {p["spec"]["containers"][0]["image"]
                      for p in _live(_pods(cp, "app=hist"))} == {"nginx:1.27"}, 20, 0.1,
             "revision 2 image back")
    cp.kubectl("delete", "deploy", "hist")


def test_recreate_never_mixes_old_and_new(control_plane):
    cp = control_plane
    strategy = "  strategy:\n    type: Recreate\n"
    _apply(cp, deployment_manifest("recreate", replicas=3, strategy=strategy))
    _rollout_status(cp, "recreate")
    with PodWatch(cp, "app=recreate") as w:
        mixed = []
        orig = w._sample

        def sample():
            orig()
            images = {p["spec"]["containers"][0]["image"] for p in w.pods.values()
                      if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")}
            if len(images) > 1:
                mixed.append(images)
        w._sample = sample
        cp.kubectl("set", "image", "deployment/recreate", "app=nginx:1.27")
        _rollout_status(cp, "recreate")
        wait_for(lambda: len(_running(list(w.pods.values()))) == 3, 10, 0.05, "caught up")
    assert not w.errors
    assert not mixed, f"old and new pods at once: {mixed[:3]}"
    pods = _live(_pods(cp, "app=recreate"))
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:1.27"}
    assert len(pods) == 3
    cp.kubectl("delete", "deploy", "recreate")


def test_revision_history_limit(control_plane):
    cp = control_plane
    _apply(cp, deployment_manifest("limited", replicas=1,
                                   extra_spec="  revisionHistoryLimit: 1\n"))
    _rollout_status(cp, "limited")
    for tag in ("1.25", "1.26", "1.27"):
        cp.kubectl("set", "image", "deployment/limited", f"app=nginx:{tag}")
        _rollout_status(cp, "limited")
    wait_for(lambda: len(_owned_rss(cp, "limited")) == 2, 15, 0.1, "1 old RS kept")
    rss = _owned_rss(cp, "limited")
    images = sorted(r["spec"]["template"]["spec"]["containers"][0]["image"] for r in rss)
    assert images == ["nginx:1.26", "nginx:1.27"]

    cp.kubectl("patch", "deployment", "limited", "-p", '{"spec":{"revisionHistoryLimit":0}}')
    wait_for(lambda: len(_owned_rss(cp, "limited")) == 1, 15, 0.1, "no old RS kept")
    cp.kubectl("delete", "deploy", "limited")


def test_pause_and_resume(control_plane):
    cp = control_plane
    _apply(cp, deployment_manifest("pp", replicas=3))
    _rollout_status(cp, "pp")
    cp.kubectl("rollout", "pause", "deployment/pp")
    cp.kubectl("set", "image", "deployment/pp", "app=nginx:1.27")
    wait_for(lambda: any(c.get("reason") == "DeploymentPaused" for c in
                         cp.get_json("deploy", "pp")["status"].get("conditions", [])),
             10, 0.1, "paused condition")
    wait_for(lambda: (d := cp.get_json("deploy", "pp"))["status"].get("observedGeneration")
             == d["metadata"]["generation"], 10, 0.1, "observedGeneration")
    assert len(_owned_rss(cp, "pp")) == 1  # no rollout while paused
    # scaling still works while paused
    cp.kubectl("scale", "deployment/pp", "--replicas=5")
    wait_for(lambda: len(_running(_pods(cp, "app=pp"))) == 5
             and len(_live(_pods(cp, "app=pp"))) == 5, 20, 0.1, "scaled to 5 while paused")
    assert {p["spec"]["containers"][0]["image"] for p in _live(_pods(cp, "app=pp"))} == \
        {"nginx"}
    assert len(_owned_rss(cp, "pp")) == 1
    cp.kubectl("rollout", "resume", "deployment/pp")
    _rollout_status(cp, "pp")
    wait_for(lambda: {p["spec"]["containers"][0]["image"] for p in _live(_pods(cp, "app=pp"))}
             == {"nginx:1.27"} and len(_live(_pods(cp, "app=pp"))) == 5, 20, 0.1,
             "rolled out after resume")
    cp.kubectl("delete", "deploy", "pp")


def test_proportional_scaling_of_a_stuck_rollout(control_plane):
    """Conformance: a rollout of 10 replicas, maxSurge 3, maxUnavailable 2 whose new pods never
    become Ready stops at old 8 / new 5; scaling to 30 gives old 20 / new 13."""
    cp = control_plane
    strategy = ("  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n"
                "      maxSurge: 3\n      maxUnavailable: 2\n")
    _apply(cp, deployment_manifest("prop", replicas=10, strategy=strategy))
    _rollout_status(cp, "prop")
    cp.kubectl("patch", "deployment", "prop", "--type=merge", "-p", json.dumps(
        {"spec": {"template": {"metadata": {"annotations": {"hollow.kubelab.io/ready":
                                                            "false"}}}}}))

    def sizes():
        rss = _owned_rss(cp, "prop")
        new = [r for r in rss if (r["spec"]["template"]["metadata"].get("annotations") or {})
               .get("hollow.kubelab.io/ready") == "false"]
        old = [r for r in rss if r not in new]
        if len(new) != 1 or len(old) != 1:
            return None
        return old[0]["spec"]["replicas"], new[0]["spec"]["replicas"]
    wait_for(lambda: sizes() == (8, 5), 20, 0.1, "old 8 / new 5")
    wait_for(lambda: len(_running(_pods(cp, "app=prop"))) == 8
             and len(_live(_pods(cp, "app=prop"))) == 13, 20, 0.1, "8 ready of 13 pods")
    cp.kubectl("scale", "deployment/prop", "--replicas=30")
    wait_for(lambda: sizes() == (20, 13), 20, 0.1, "old 20 / new 13")
    cp.kubectl("delete", "deploy", "prop")


def test_progress_deadline_exceeded(control_plane):
    cp = control_plane
    _apply(cp, deployment_manifest("stuck", replicas=2))
    _rollout_status(cp, "stuck")
    # a new template whose pods never become Ready, and a deadline of 20 s (2 s at x0.1)
    cp.kubectl("patch", "deployment", "stuck", "--type=merge", "-p", json.dumps(
        {"spec": {"progressDeadlineSeconds": 20,
                  "template": {"metadata": {"annotations": {"hollow.kubelab.io/ready":
                                                            "false"}}}}}))

    def progressing():
        for c in cp.get_json("deploy", "stuck")["status"].get("conditions", []):
            if c["type"] == "Progressing":
                return c
        return None
    cond = wait_for(lambda: (c := progressing()) and c["reason"] == "ProgressDeadlineExceeded"
                    and c, 20, 0.2, "ProgressDeadlineExceeded")
    assert cond["status"] == "False"
    new = next(r for r in _owned_rss(cp, "stuck")
           if r["metadata"]["annotations"].get(dep.REVISION) == "2")
    assert cond["message"] == f'ReplicaSet "{new["metadata"]["name"]}" has timed out progressing.'
    out = cp.kubectl("rollout", "status", "deployment/stuck", "--timeout=10s", check=False)
    assert out.returncode != 0
    assert "exceeded its progress deadline" in out.stderr
    cp.kubectl("delete", "deploy", "stuck")


def test_deployment_adopts_matching_replicaset(control_plane):
    """A ReplicaSet with the deployment's template and matching labels is adopted and used as
    the new ReplicaSet instead of creating another."""
    cp = control_plane
    _apply(cp, """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: pre-rs, labels: {app: adopt}}
spec:
  replicas: 2
  selector: {matchLabels: {app: adopt}}
  template:
    metadata: {labels: {app: adopt}}
    spec:
      containers: [{name: app, image: nginx}]
""")
    wait_for(lambda: len(_running(_pods(cp, "app=adopt"))) == 2, 20, 0.1, "2 pods")
    _apply(cp, deployment_manifest("adopt", replicas=2))
    _rollout_status(cp, "adopt")
    rss = _owned_rss(cp, "adopt")
    assert [r["metadata"]["name"] for r in rss] == ["pre-rs"]
    assert rss[0]["metadata"]["annotations"][dep.REVISION] == "1"
    cp.kubectl("delete", "deploy", "adopt")
