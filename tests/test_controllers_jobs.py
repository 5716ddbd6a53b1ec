"""The Job and CronJob controllers.

Unit tests drive the pure decision functions and the controllers' reconcile() against an
in-memory API (FakeAPI) whose writes land in the informer caches at once, with an injected
clock. End-to-end tests run the real processes (control_plane fixture: stores, API server,
controller manager, scheduler, hollow nodes, timers x0.1) through the real kubectl.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import os
import subprocess
import threading
import time
import uuid

import pytest

from controllers import cronjob as cjc
from controllers import job as jc
from kubelab.client import APIError, InformerFactory, Resource, object_key
from kubelab.events import EventRecorder

from .conftest import have, wait_for

UTC = datetime.UTC


# ============================================================================ fake API
class FakeAPI:
    """Just enough of ClusterClient for the job and cronjob controllers: objects in a dict,
    resourceVersion CAS on status updates, finalizers holding deleted objects, every write
    mirrored into the informer caches at once."""

    def __init__(self, now=lambda: time.time()):
        self.objs: dict[tuple[str, str | None, str], dict] = {}
        self.rv = itertools.count(1)
        self.now = now
        self.factory: InformerFactory | None = None
        self.events: list[tuple[str, str, str, str]] = []  # (object name, type, reason, msg)
        self.deletes: list[tuple[str, str, dict]] = []      # (kind, name, options)
        self.fail_patch: set[str] = set()                    # pod names whose patch fails

    # ---- helpers
    def _mirror(self, kind: str, obj: dict | None, key: str) -> None:
        if self.factory is None:
            return
        for (res, _ns, _ls, _fs), inf in self.factory._informers.items():
            if res.kind == kind:
                if obj is None:
                    inf.cache.pop(key, None)
                else:
                    inf.cache[key] = copy.deepcopy(obj)

    def put(self, kind: str, obj: dict) -> dict:
        """Store an object as the API server would (uid, rv, creationTimestamp)."""
        md = obj.setdefault("metadata", {})
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("creationTimestamp", jc.rfc3339(self.now()))
        md["resourceVersion"] = str(next(self.rv))
        g, v, _, _ = Resource.of(kind).group, Resource.of(kind).version, None, None
        obj.setdefault("apiVersion", f"{g}/{v}" if g else v)
        obj.setdefault("kind", kind)
        self.objs[(kind, md.get("namespace"), md["name"])] = obj
        self._mirror(kind, obj, object_key(obj))
        return copy.deepcopy(obj)

    def of(self, kind: str, ns: str | None = None) -> list[dict]:
        return [copy.deepcopy(o) for (k, n, _), o in sorted(self.objs.items())
                if k == kind and (ns is None or n == ns)]

    def obj(self, kind: str, ns: str | None, name: str) -> dict:
        return self.objs[(kind, ns, name)]

    def mutate(self, kind: str, ns: str | None, name: str, fn) -> dict:
        o = self.objs[(kind, ns, name)]
        fn(o)
        return self.put(kind, o)

    @staticmethod
    def _kind(r) -> str:
        return r if isinstance(r, str) else r.kind

    # ---- ClusterClient surface
    async def get(self, r, ns, name, subresource=""):
        o = self.objs.get((self._kind(r), ns, name))
        if o is None:
            raise APIError(404, "NotFound", f"{name} not found")
        return copy.deepcopy(o)

    async def get_or_none(self, r, ns, name):
        o = self.objs.get((self._kind(r), ns, name))
        return copy.deepcopy(o) if o is not None else None

    async def create(self, r, obj, namespace=None, **kw):
        kind = self._kind(r)
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        if namespace:
            md["namespace"] = namespace
        if kind == "Event":
            self.events.append((obj["involvedObject"].get("name"), obj["type"], obj["reason"],
                                obj["message"]))
            md.setdefault("name", uuid.uuid4().hex)
            return obj
        if not md.get("name"):
            md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
        if (kind, md.get("namespace"), md["name"]) in self.objs:
            raise APIError(409, "AlreadyExists", f"{md['name']} already exists")
        return self.put(kind, obj)

    async def patch(self, r, ns, name, patch, *, patch_type="", **kw):
        kind = self._kind(r)
        if kind == "Event":
            self.events.append((name, "", "", "(folded)"))
            return {"metadata": {"name": name}}
        if name in self.fail_patch:
            raise APIError(500, "InternalError", "injected")
        o = self.objs.get((kind, ns, name))
        if o is None:
            raise APIError(404, "NotFound", f"{name} not found")
        gone = (patch.get("metadata") or {}).get("$deleteFromPrimitiveList/finalizers") or []
        md = o["metadata"]
        md["finalizers"] = [f for f in md.get("finalizers") or [] if f not in gone]
        if not md["finalizers"]:
            md.pop("finalizers")
            if md.get("deletionTimestamp"):
                self._remove(kind, o)
                return copy.deepcopy(o)
        return self.put(kind, o)

    async def update_status(self, r, obj):
        kind = self._kind(r)
        md = obj["metadata"]
        cur = self.objs.get((kind, md.get("namespace"), md["name"]))
        if cur is None:
            raise APIError(404, "NotFound", "gone")
        if md.get("resourceVersion") and md["resourceVersion"] != cur["metadata"]["resourceVersion"]:
            raise APIError(409, "Conflict", "the object has been modified")
        cur["status"] = copy.deepcopy(obj.get("status") or {})
        return self.put(kind, cur)

    def _remove(self, kind: str, o: dict) -> None:
        md = o["metadata"]
        self.objs.pop((kind, md.get("namespace"), md["name"]), None)
        self._mirror(kind, None, object_key(o))

    async def delete(self, r, ns, name, *, grace_period=None, propagation=None,
                     preconditions=None):
        kind = self._kind(r)
        o = self.objs.get((kind, ns, name))
        if o is None:
            raise APIError(404, "NotFound", f"{name} not found")
        if preconditions and preconditions.get("uid") not in (None, o["metadata"]["uid"]):
            raise APIError(409, "Conflict", "Precondition failed")
        self.deletes.append((kind, name, {"propagation": propagation}))
        if o["metadata"].get("finalizers"):
            o["metadata"].setdefault("deletionTimestamp", jc.rfc3339(self.now()))
            return self.put(kind, o), False
        self._remove(kind, o)
        return copy.deepcopy(o), True


def run(coro):
    return asyncio.run(coro)


class Harness:
    """A controller over a FakeAPI with a settable clock."""

    def __init__(self, cls, start: float = 1_700_000_000.0):
        self.t = start
        self.api = FakeAPI(now=lambda: self.t)
        self.factory = InformerFactory(self.api)
        self.api.factory = self.factory
        self.ctl = cls(self.api, self.factory, EventRecorder(self.api, "kube-controller-manager"))

    def reasons(self, name: str | None = None) -> list[str]:
        return [r for n, _, r, _ in self.api.events if r and (name is None or n == name)]


# ============================================================================ Job: pure logic
def test_completed_indexes_format_and_parse():
    assert jc.format_indexes([0, 1, 2, 4]) == "0-2,4"
    assert jc.format_indexes([4, 2, 1, 0, 2]) == "0-2,4"
    assert jc.format_indexes([]) == ""
    assert jc.format_indexes([3]) == "3"
    assert jc.format_indexes([0, 1]) == "0-1"
    assert jc.format_indexes([1, 3, 4, 5, 7]) == "1,3-5,7"
    assert jc.parse_indexes("1,3-5,7") == {1, 3, 4, 5, 7}
    assert jc.parse_indexes("0-2,4", completions=3) == {0, 1, 2}
    assert jc.parse_indexes("") == set() and jc.parse_indexes(None) == set()
    for xs in ([0], [0, 2, 3, 9], list(range(10))):
        assert jc.parse_indexes(jc.format_indexes(xs)) == set(xs)


def test_pods_to_create_never_exceed_parallelism_or_remaining_completions():
    assert jc.want_active(3, 2, 0, 0) == 2          # parallelism caps
    assert jc.want_active(3, 2, 2, 1) == 1          # only one completion left
    assert jc.want_active(3, 5, 3, 0) == 0          # done
    assert jc.want_active(3, 2, 5, 0) == 0          # never negative
    assert jc.want_active(None, 4, 0, 0) == 4       # work queue: parallelism
    assert jc.want_active(None, 4, 1, 2) == 2       # after a success: no new pods
    assert jc.want_active(5, 0, 0, 0) == 0
    assert jc.pending_indexes(5, {0, 2}, [1], 2) == [3, 4]
    assert jc.pending_indexes(5, set(), [], 10) == [0, 1, 2, 3, 4]
    assert jc.pending_indexes(3, {0, 1, 2}, [], 3) == []


def test_backoff_delays_double_from_10s_to_6min():
    assert [jc.backoff_delay(n) for n in range(8)] == [0, 10, 20, 40, 80, 160, 320, 360]
    assert jc.backoff_delay(50) == 360
    rec = jc.BackoffRecord()
    rec.update([], [100.0])
    assert rec.failures_after_last_success == 1
    assert rec.remaining(104.0, scale=lambda s: s) == pytest.approx(6.0)
    rec.update([], [110.0, 111.0])
    assert rec.failures_after_last_success == 3
    assert rec.remaining(111.0, scale=lambda s: s) == pytest.approx(40.0)
    assert rec.remaining(111.0, scale=lambda s: s * 0.1) == pytest.approx(4.0)
    assert rec.remaining(200.0, scale=lambda s: s) == 0
    rec.update([120.0], [115.0, 125.0])     # a success resets; only later failures count
    assert (rec.failures_after_last_success, rec.last_failure_time) == (1, 125.0)
    rec.update([130.0], [])
    assert rec.failures_after_last_success == 0 and rec.remaining(130.0) == 0


def _pod(name, phase="Running", restarts=0, index=None, ready=False, **md):
    p = {"metadata": {"name": name, "uid": name + "-uid", "namespace": "default", **md},
         "spec": {"nodeName": "n1"},
         "status": {"phase": phase,
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                    "containerStatuses": [{"name": "c", "restartCount": restarts}]}}
    if index is not None:
        p["metadata"]["annotations"] = {jc.COMPLETION_INDEX: str(index)}
    return p


def test_failure_counting_from_pods():
    assert jc.is_pod_failed(_pod("a", "Failed"))
    assert not jc.is_pod_failed(_pod("a", "Succeeded"))
    assert not jc.is_pod_failed(_pod("a", "Running"))
    deleted = _pod("a", "Running", deletionTimestamp="2024-01-01T00:00:00Z")
    assert jc.is_pod_failed(deleted) and jc.is_terminating(deleted) and not jc.is_active(deleted)
    on_failure = {"spec": {"backoffLimit": 3,
                           "template": {"spec": {"restartPolicy": "OnFailure"}}}}
    assert not jc.past_backoff_limit_on_failure(on_failure, [_pod("a", restarts=2)])
    assert jc.past_backoff_limit_on_failure(on_failure, [_pod("a", restarts=2),
                                                         _pod("b", restarts=1)])
    assert not jc.past_backoff_limit_on_failure(on_failure, [_pod("a", "Failed", restarts=9)])
    zero = copy.deepcopy(on_failure)
    zero["spec"]["backoffLimit"] = 0
    assert jc.past_backoff_limit_on_failure(zero, [_pod("a", restarts=1)])
    never = {"spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never"}}}}
    assert not jc.past_backoff_limit_on_failure(never, [_pod("a", restarts=5)])


def test_indexed_pod_template_and_removal():
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "idx", "namespace": "default", "uid": "u1"},
           "spec": {"completionMode": "Indexed", "template": {
               "metadata": {"labels": {"batch.kubernetes.io/job-name": "idx"}},
               "spec": {"subdomain": "svc", "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "busybox"}]}}}}
    pod = jc.new_pod(job, 2)
    md = pod["metadata"]
    assert md["generateName"] == "idx-2-"
    assert md["annotations"][jc.COMPLETION_INDEX] == "2"
    assert md["labels"][jc.COMPLETION_INDEX] == "2"
    assert md["labels"]["batch.kubernetes.io/job-name"] == "idx"
    assert md["finalizers"] == [jc.TRACKING_FINALIZER]
    assert md["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "idx",
                                      "uid": "u1", "controller": True,
                                      "blockOwnerDeletion": True}]
    assert pod["spec"]["hostname"] == "idx-2" and pod["spec"]["subdomain"] == "svc"
    env = pod["spec"]["containers"][0]["env"]
    assert env == [{"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "apiVersion": "v1",
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
    assert "hostname" not in job["spec"]["template"]["spec"]  # the template is untouched
    plain = jc.new_pod({**job, "spec": {**job["spec"], "completionMode": "NonIndexed"}})
    assert plain["metadata"]["generateName"] == "idx-" and "hostname" not in plain["spec"]
    # duplicates, completed and out-of-range indexes go first
    active = [_pod("a", index=0, ready=True), _pod("b", index=0), _pod("c", index=1),
              _pod("d", index=7), _pod("e")]
    gone = {p["metadata"]["name"] for p in jc.indexed_pods_for_removal(active, 3, {1})}
    assert gone == {"b", "c", "d", "e"}


# ============================================================================ Job: controller
def job_obj(name="pi", completions=3, parallelism=2, restart="Never", backoff=6, **spec):
    tpl_labels = {"batch.kubernetes.io/job-name": name, "job-name": name}
    s = {"completions": completions, "parallelism": parallelism, "backoffLimit": backoff,
         "completionMode": "NonIndexed", "suspend": False,
         "podReplacementPolicy": "TerminatingOrFailed",
         "template": {"metadata": {"labels": tpl_labels},
                      "spec": {"restartPolicy": restart,
                               "containers": [{"name": "c", "image": "busybox"}]}}}
    s.update(spec)
    if completions is None:
        s.pop("completions")
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default"}, "spec": s}


class JobHarness(Harness):
    def __init__(self):
        super().__init__(jc.JobController)
        self.ctl.clock = lambda: self.t

    def add(self, job: dict) -> dict:
        return self.api.put("Job", job)

    def sync(self, name="pi"):
        run(self._sync(name))

    async def _sync(self, name):
        await self.ctl.reconcile(f"default/{name}")

    def job(self, name="pi") -> dict:
        return self.api.obj("Job", "default", name)

    def status(self, name="pi") -> dict:
        return self.job(name).get("status") or {}

    def pods(self) -> list[dict]:
        return self.api.of("Pod", "default")

    def active(self) -> list[dict]:
        return [p for p in self.pods() if jc.is_active(p)]

    def finish(self, pod: dict, phase: str, at: float | None = None) -> None:
        at = self.t if at is None else at

        def fn(o):
            o["status"] = {"phase": phase, "containerStatuses": [{
                "name": "c", "restartCount": 0,
                "state": {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                                         "finishedAt": jc.rfc3339(at)}}}]}
        self.api.mutate("Pod", "default", pod["metadata"]["name"], fn)

    def conds(self, name="pi") -> dict:
        return {c["type"]: c for c in self.status(name).get("conditions") or []}


def test_job_runs_completions_with_parallelism_and_completes():
    h = JobHarness()
    h.add(job_obj())
    h.sync()
    pods = h.pods()
    assert len(pods) == 2
    for p in pods:
        assert p["metadata"]["generateName"] == "pi-"
        assert p["metadata"]["finalizers"] == [jc.TRACKING_FINALIZER]
        assert p["metadata"]["ownerReferences"][0]["uid"] == h.job()["metadata"]["uid"]
    st = h.status()
    assert st["active"] == 2 and st["startTime"] and st["ready"] == 0
    assert h.reasons("pi").count("SuccessfulCreate") == 2
    h.sync()
    assert len(h.pods()) == 2  # level-triggered: nothing more to do
    # one succeeds: counted, its finalizer removed, one more pod (3 needed, 2 at a time)
    h.finish(pods[0], "Succeeded")
    h.sync()
    st = h.status()
    assert st["succeeded"] == 1 and st["active"] == 2
    assert st["uncountedTerminatedPods"] == {}
    assert jc.TRACKING_FINALIZER not in (h.api.obj("Pod", "default", pods[0]["metadata"]["name"])
                                         ["metadata"].get("finalizers") or [])
    assert len(h.pods()) == 3
    for p in h.active():
        h.finish(p, "Succeeded")
    h.sync()
    st, conds = h.status(), h.conds()
    assert st["succeeded"] == 3 and "active" not in st
    assert conds["Complete"]["status"] == "True"
    assert conds["Complete"]["reason"] == "CompletionsReached"
    assert conds["SuccessCriteriaMet"]["status"] == "True"
    assert st["completionTime"] and len(h.pods()) == 3
    assert "Completed" in h.reasons("pi")
    # the counts survive the pods' deletion
    for p in h.pods():
        run(h.api.delete("Pod", "default", p["metadata"]["name"]))
    h.sync()
    assert h.status()["succeeded"] == 3


def test_job_failures_back_off_then_exceed_backoff_limit():
    h = JobHarness()
    h.add(job_obj(completions=1, parallelism=1, backoff=2))
    h.sync()
    created = [h.t]
    for n in range(1, 4):
        (pod,) = h.active()
        h.finish(pod, "Failed")
        h.sync()
        st = h.status()
        assert st["failed"] == n
        if n == 3:
            break
        assert h.active() == []             # back-off before the replacement
        h.t += jc.backoff_delay(n) - 1
        h.sync()
        assert h.active() == []
        h.t += 1.5
        h.sync()
        assert len(h.active()) == 1
        created.append(h.t)
    assert created[2] - created[1] > created[1] - created[0]  # 10 s, then 20 s
    conds = h.conds()
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded"
    assert conds["Failed"]["message"] == "Job has reached the specified backoff limit"
    assert conds["FailureTarget"]["status"] == "True"
    assert h.status()["failed"] == 3 and "completionTime" not in h.status()
    assert len(h.pods()) == 3
    assert ("pi", "Warning", "BackoffLimitExceeded",
            "Job has reached the specified backoff limit") in h.api.events
    h.sync()
    assert len(h.pods()) == 3  # a finished job creates nothing


def test_job_failure_deletes_active_pods_and_counts_them():
    h = JobHarness()
    h.add(job_obj(completions=4, parallelism=2, backoff=0))
    h.sync()
    a, b = h.active()
    h.finish(a, "Failed")
    h.sync()
    assert h.conds()["FailureTarget"]["reason"] == "BackoffLimitExceeded"
    # b was deleted and, once counted, released (the API server then removes it at once)
    assert ("Pod", b["metadata"]["name"], {"propagation": None}) in h.api.deletes
    assert ("Pod", "default", b["metadata"]["name"]) not in h.api.objs
    assert h.status()["failed"] == 2
    assert "Failed" not in h.conds()       # b counted as terminating in that pass
    h.sync()
    assert h.conds()["Failed"]["status"] == "True"


def test_job_on_failure_counts_container_restarts():
    h = JobHarness()
    h.add(job_obj(completions=1, parallelism=1, restart="OnFailure", backoff=2))
    h.sync()
    (pod,) = h.active()

    def restarts(n):
        def fn(o):
            o["status"] = {"phase": "Running",
                           "containerStatuses": [{"name": "c", "restartCount": n}]}
        h.api.mutate("Pod", "default", pod["metadata"]["name"], fn)
    restarts(1)
    h.sync()
    assert "FailureTarget" not in h.conds() and len(h.active()) == 1
    restarts(2)
    h.sync()
    assert h.conds()["FailureTarget"]["reason"] == "BackoffLimitExceeded"
    assert ("Pod", "default", pod["metadata"]["name"]) not in h.api.objs
    h.sync()
    assert h.conds()["Failed"]["reason"] == "BackoffLimitExceeded"
    assert h.status()["failed"] == 1


def test_job_counting_is_crash_safe():
    """A pod recorded as uncounted whose finalizer is already gone is counted exactly once;
    a pod whose finalizer cannot be removed stays uncounted."""
    h = JobHarness()
    h.add(job_obj(completions=2, parallelism=2))
    h.sync()
    a, b = h.active()
    h.finish(a, "Succeeded")
    h.finish(b, "Succeeded")
    h.api.fail_patch.add(b["metadata"]["name"])
    h.sync()
    st = h.status()
    assert st["succeeded"] == 1
    assert st["uncountedTerminatedPods"] == {"succeeded": [b["metadata"]["uid"]]}
    assert "Complete" not in h.conds()
    h.sync()
    assert h.status()["succeeded"] == 1  # never counted twice
    h.api.fail_patch.clear()
    h.sync()
    assert h.status()["succeeded"] == 2 and h.status()["uncountedTerminatedPods"] == {}
    assert h.conds()["Complete"]["status"] == "True"


def test_job_deleted_running_pod_counts_as_failure_and_is_replaced():
    h = JobHarness()
    h.add(job_obj(completions=1, parallelism=1))
    h.sync()
    (pod,) = h.active()
    run(h.api.delete("Pod", "default", pod["metadata"]["name"]))  # held by the finalizer
    h.sync()
    assert h.status()["failed"] == 1
    assert ("Pod", "default", pod["metadata"]["name"]) not in h.api.objs  # released
    h.t += 11
    h.sync()
    assert len(h.active()) == 1


def test_job_suspend_and_resume():
    h = JobHarness()
    h.add(job_obj(completions=2, parallelism=2))
    h.sync()
    assert len(h.active()) == 2
    h.api.mutate("Job", "default", "pi", lambda o: o["spec"].update(suspend=True))
    h.sync()
    assert h.pods() == []                    # finalizers removed first: not failures
    st = h.status()
    assert "failed" not in st and "active" not in st
    assert h.conds()["Suspended"]["status"] == "True"
    assert h.conds()["Suspended"]["reason"] == "JobSuspended"
    assert "Suspended" in h.reasons("pi")
    h.sync()
    assert h.pods() == []
    h.t += 100
    h.api.mutate("Job", "default", "pi", lambda o: o["spec"].update(suspend=False))
    h.sync()
    assert len(h.active()) == 2
    assert h.conds()["Suspended"]["status"] == "False"
    assert h.conds()["Suspended"]["reason"] == "JobResumed"
    assert h.status()["startTime"] == jc.rfc3339(h.t)


def test_job_created_suspended_starts_nothing():
    h = JobHarness()
    h.add(job_obj(suspend=True))
    h.sync()
    assert h.pods() == [] and "startTime" not in h.status()
    assert h.conds()["Suspended"]["status"] == "True"


def test_job_active_deadline():
    h = JobHarness()
    h.add(job_obj(completions=1, parallelism=1, activeDeadlineSeconds=30))
    h.sync()
    (pod,) = h.active()
    h.t += 29
    h.sync()
    assert "FailureTarget" not in h.conds()
    h.t += 2
    h.sync()
    assert h.conds()["FailureTarget"]["reason"] == "DeadlineExceeded"
    assert ("Pod", "default", pod["metadata"]["name"]) not in h.api.objs
    assert h.status()["failed"] == 1
    h.sync()
    c = h.conds()["Failed"]
    assert (c["reason"], c["message"]) == ("DeadlineExceeded",
                                          "Job was active longer than specified deadline")
    assert "DeadlineExceeded" in h.reasons("pi")


def test_indexed_job_tracks_completed_indexes():
    h = JobHarness()
    h.add(job_obj(name="idx", completions=5, parallelism=3, completionMode="Indexed"))
    h.sync("idx")
    by_index = {jc.pod_index(p): p for p in h.active()}
    assert sorted(by_index) == [0, 1, 2]
    assert by_index[1]["spec"]["hostname"] == "idx-1"
    h.finish(by_index[1], "Succeeded")
    h.finish(by_index[2], "Failed")
    h.sync("idx")
    st = h.status("idx")
    assert st["completedIndexes"] == "1" and st["succeeded"] == 1 and st["failed"] == 1
    # index 3 starts only after the failure back-off; index 2 is pending again
    h.t += 11
    h.sync("idx")
    assert sorted(jc.pod_index(p) for p in h.active()) == [0, 2, 3]
    for p in h.active():
        if jc.pod_index(p) in (0, 3):
            h.finish(p, "Succeeded")
    h.sync("idx")
    assert h.status("idx")["completedIndexes"] == "0-1,3"
    assert sorted(jc.pod_index(p) for p in h.active()) == [2, 4]
    for p in h.active():
        h.finish(p, "Succeeded")
    h.sync("idx")
    st = h.status("idx")
    assert st["completedIndexes"] == "0-4" and st["succeeded"] == 5
    assert h.conds("idx")["Complete"]["status"] == "True"


def test_job_ttl_after_finished_deletes_the_job():
    h = JobHarness()
    h.add(job_obj(completions=1, parallelism=1, ttlSecondsAfterFinished=100))
    h.sync()
    h.finish(h.active()[0], "Succeeded")
    h.sync()
    assert h.conds()["Complete"]
    h.t += 50
    h.sync()
    assert ("Job", "default", "pi") in h.api.objs
    h.t += 51
    h.sync()
    assert ("Job", "default", "pi") not in h.api.objs
    assert ("Job", "pi", {"propagation": "Background"}) in h.api.deletes


def test_job_skips_a_cache_older_than_its_own_write():
    """After writing status the controller waits for that version to reach its cache instead
    of computing from the stale one (which would end in a 409)."""
    h = JobHarness()
    h.add(job_obj(completions=1, parallelism=1))
    h.sync()
    h.sync()                           # the created pod observed
    written = h.ctl._written["default/pi"][1]
    stale = copy.deepcopy(h.job())
    stale["metadata"]["resourceVersion"] = str(written - 1)
    stale["status"] = {}
    h.ctl.jobs.cache["default/pi"] = stale
    for p in h.pods():
        h.api._remove("Pod", p)
    h.sync()
    assert h.pods() == []              # nothing done from the stale view
    h.ctl.jobs.cache["default/pi"] = copy.deepcopy(h.job())
    h.sync()
    assert len(h.pods()) == 1


def test_job_orphan_pods_are_released():
    """Pods keeping the tracking finalizer after their Job is gone lose it."""
    h = JobHarness()
    h.add(job_obj(completions=1, parallelism=1))
    h.sync()
    (pod,) = h.active()
    h.api._remove("Job", h.job())
    run(h.ctl.reconcile("default/pi"))            # the job is gone: its pods are queued
    run(h.ctl.reconcile("pod:default/" + pod["metadata"]["name"]))
    assert not h.api.obj("Pod", "default", pod["metadata"]["name"])["metadata"].get("finalizers")


# ============================================================================ CronJob: pure
def T(s: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(s).replace(tzinfo=UTC)


def cron_obj(name="hello", schedule="*/1 * * * *", created="2024-01-01T10:00:30Z",
             **spec) -> dict:
    s = {"schedule": schedule, "concurrencyPolicy": "Allow", "suspend": False,
         "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
         "jobTemplate": {"metadata": {"labels": {"app": name}},
                         "spec": {"template": {"spec": {
                             "restartPolicy": "OnFailure",
                             "containers": [{"name": "c", "image": "busybox"}]}}}}}
    s.update(spec)
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "default", "uid": "cj-uid",
                         "creationTimestamp": created},
            "spec": s, "status": {}}


def test_cron_most_recent_schedule_time():
    cj = cron_obj()
    sched = cjc.schedule_of(cj)
    _, t, missed = cjc.most_recent_schedule_time(cj, T("2024-01-01T10:00:59"), sched)
    assert t is None and missed == cjc.NONE_MISSED
    _, t, missed = cjc.most_recent_schedule_time(cj, T("2024-01-01T10:01:00"), sched)
    assert t == T("2024-01-01T10:01:00") and missed == cjc.NONE_MISSED
    _, t, missed = cjc.most_recent_schedule_time(cj, T("2024-01-01T10:05:30"), sched)
    assert t == T("2024-01-01T10:05:00") and missed == cjc.FEW_MISSED
    cj["status"]["lastScheduleTime"] = "2024-01-01T10:05:00Z"
    _, t, _ = cjc.most_recent_schedule_time(cj, T("2024-01-01T10:05:59"), sched)
    assert t is None
    # three hours late: 180 missed (> 100), the latest one still counts
    cj["status"]["lastScheduleTime"] = "2024-01-01T07:00:00Z"
    _, t, missed = cjc.most_recent_schedule_time(cj, T("2024-01-01T10:00:10"), sched)
    assert t == T("2024-01-01T10:00:00") and missed == cjc.MANY_MISSED
    # startingDeadlineSeconds bounds how far back the controller looks
    cj["spec"]["startingDeadlineSeconds"] = 10
    _, t, missed = cjc.most_recent_schedule_time(cj, T("2024-01-01T10:00:30"), sched)
    assert t is None
    _, t, _ = cjc.most_recent_schedule_time(cj, T("2024-01-01T10:00:05"), sched)
    assert t == T("2024-01-01T10:00:00")


def test_cron_next_schedule_delay_and_names():
    cj = cron_obj(schedule="0 * * * *")
    sched = cjc.schedule_of(cj)
    d = cjc.next_schedule_delay(cj, T("2024-01-01T10:20:00"), sched)
    assert d == pytest.approx(40 * 60 + cjc.NEXT_SCHEDULE_DELTA)
    assert cjc.job_name("hello", T("2024-01-01T10:00:00")) == f"hello-{1704103200 // 60}"
    every = cron_obj(schedule="@every 5s", created="2024-01-01T10:00:00Z")
    _, t, _ = cjc.most_recent_schedule_time(every, T("2024-01-01T10:00:12"),
                                            cjc.schedule_of(every))
    assert t == T("2024-01-01T10:00:10")


def test_cron_time_zone_and_job_template():
    cj = cron_obj(schedule="0 9 * * *", timeZone="Europe/Berlin",
                  created="2024-01-01T00:00:00Z")
    sched = cjc.schedule_of(cj)
    _, t, _ = cjc.most_recent_schedule_time(cj, T("2024-01-01T08:30:00"), sched)
    assert t == T("2024-01-01T08:00:00")   # 09:00 in Berlin (CET)
    job = cjc.job_from_template(cj, t)
    assert job["metadata"]["name"] == f"hello-{int(t.timestamp()) // 60}"
    assert job["metadata"]["annotations"][cjc.SCHEDULED_TIMESTAMP] == "2024-01-01T09:00:00+01:00"
    assert job["metadata"]["labels"] == {"app": "hello"}
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert job["metadata"]["ownerReferences"][0]["controller"] is True
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    utc = cjc.job_from_template(cron_obj(), T("2024-01-01T10:01:00"))
    assert utc["metadata"]["annotations"][cjc.SCHEDULED_TIMESTAMP] == "2024-01-01T10:01:00Z"


def test_cron_history_limits_pick_the_oldest():
    def job(name, cond, start):
        return {"metadata": {"name": name}, "status": {
            "startTime": start, "conditions": [{"type": cond, "status": "True"}]}}
    jobs = [job(f"ok{i}", "Complete", f"2024-01-01T10:0{i}:00Z") for i in (3, 1, 4, 2, 5)]
    jobs += [job(f"bad{i}", "Failed", f"2024-01-01T11:0{i}:00Z") for i in (2, 1)]
    jobs.append({"metadata": {"name": "running"}, "status": {"startTime": "x"}})
    gone = [j["metadata"]["name"] for j in cjc.jobs_beyond_history(cron_obj(), jobs)]
    assert gone == ["ok1", "ok2", "bad1"]
    none = cron_obj(successfulJobsHistoryLimit=0, failedJobsHistoryLimit=0)
    assert len(cjc.jobs_beyond_history(none, jobs)) == 7


# ============================================================================ CronJob: controller
class CronHarness(Harness):
    def __init__(self, **spec):
        super().__init__(cjc.CronJobController, start=T("2024-01-01T10:00:30").timestamp())
        self.ctl.clock = lambda: datetime.datetime.fromtimestamp(self.t, UTC)
        cj = cron_obj(**spec)
        cj["metadata"].pop("uid")
        cj["metadata"].pop("creationTimestamp")
        self.api.put("CronJob", cj)

    def at(self, iso: str) -> None:
        self.t = T(iso).timestamp()
        run(self.ctl.reconcile("default/hello"))

    def cj(self) -> dict:
        return self.api.obj("CronJob", "default", "hello")

    def jobs(self) -> list[str]:
        return [j["metadata"]["name"] for j in self.api.of("Job", "default")]

    def finish(self, name: str, cond: str = "Complete") -> None:
        def fn(o):
            o["status"] = {"startTime": jc.rfc3339(self.t),
                           "conditions": [{"type": cond, "status": "True"}]}
            if cond == "Complete":
                o["status"]["completionTime"] = jc.rfc3339(self.t)
        self.api.mutate("Job", "default", name, fn)


def slot(iso: str) -> str:
    return cjc.job_name("hello", T(iso))


def test_cron_allow_runs_overlapping_jobs():
    h = CronHarness()
    h.at("2024-01-01T10:00:45")
    assert h.jobs() == []
    h.at("2024-01-01T10:01:00")
    assert h.jobs() == [slot("2024-01-01T10:01:00")]
    st = h.cj()["status"]
    assert st["lastScheduleTime"] == "2024-01-01T10:01:00Z"
    assert [r["name"] for r in st["active"]] == h.jobs()
    assert st["active"][0]["kind"] == "Job" and st["active"][0]["uid"]
    assert ("hello", "Normal", "SuccessfulCreate",
            f"Created job {slot('2024-01-01T10:01:00')}") in h.api.events
    h.at("2024-01-01T10:01:30")                      # nothing new within the minute
    assert len(h.jobs()) == 1
    h.at("2024-01-01T10:02:00")
    assert len(h.jobs()) == 2 and len(h.cj()["status"]["active"]) == 2


def test_cron_forbid_skips_while_a_job_is_active():
    h = CronHarness(concurrencyPolicy="Forbid")
    h.at("2024-01-01T10:01:00")
    first = slot("2024-01-01T10:01:00")
    h.at("2024-01-01T10:02:00")
    assert h.jobs() == [first]
    assert "JobAlreadyActive" in h.reasons("hello")
    h.finish(first)
    h.at("2024-01-01T10:02:10")
    # the finished job left status.active; the 10:02 slot, still the latest, now runs
    assert h.jobs() == sorted([first, slot("2024-01-01T10:02:00")])
    assert "SawCompletedJob" in h.reasons("hello")
    assert h.cj()["status"]["lastSuccessfulTime"] == "2024-01-01T10:02:00Z"


def test_cron_replace_deletes_the_running_job():
    h = CronHarness(concurrencyPolicy="Replace")
    h.at("2024-01-01T10:01:00")
    h.at("2024-01-01T10:02:00")
    assert h.jobs() == [slot("2024-01-01T10:02:00")]
    assert ("hello", "Normal", "SuccessfulDelete",
            f"Deleted job {slot('2024-01-01T10:01:00')}") in h.api.events
    assert ("Job", slot("2024-01-01T10:01:00"), {"propagation": "Background"}) in h.api.deletes
    assert [r["name"] for r in h.cj()["status"]["active"]] == [slot("2024-01-01T10:02:00")]


def test_cron_suspend_schedules_nothing():
    h = CronHarness(suspend=True)
    for m in range(1, 5):
        h.at(f"2024-01-01T10:0{m}:00")
    assert h.jobs() == []
    assert "lastScheduleTime" not in (h.cj().get("status") or {})


def test_cron_too_many_missed_runs_the_latest():
    h = CronHarness()
    h.api.mutate("CronJob", "default", "hello",
                 lambda o: o.setdefault("status", {}).update(
                     lastScheduleTime="2024-01-01T07:00:00Z"))
    h.at("2024-01-01T10:00:40")
    assert "TooManyMissedTimes" in h.reasons("hello")
    assert h.jobs() == [slot("2024-01-01T10:00:00")]


def test_cron_starting_deadline_skips_late_starts():
    h = CronHarness(startingDeadlineSeconds=10)
    h.at("2024-01-01T10:01:20")                      # 20 s late for 10:01
    assert h.jobs() == []
    h.at("2024-01-01T10:02:05")                      # 5 s late for 10:02
    assert h.jobs() == [slot("2024-01-01T10:02:00")]


def test_cron_history_limit_deletes_finished_jobs():
    h = CronHarness(successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1)
    names = []
    for m in range(1, 4):
        h.at(f"2024-01-01T10:0{m}:00")
        names.append(slot(f"2024-01-01T10:0{m}:00"))
        h.finish(names[-1])
    h.at("2024-01-01T10:03:30")
    assert h.jobs() == [names[-1]]
    assert h.reasons("hello").count("SuccessfulDelete") == 2


def test_cron_forgotten_job_is_adopted_once():
    """The job exists (say the status update after creating it was lost): it is added to
    status.active, not created twice."""
    h = CronHarness()
    h.t = T("2024-01-01T10:01:00").timestamp()
    cj = h.cj()
    run(h.api.create("Job", cjc.job_from_template(cj, T("2024-01-01T10:01:00")), "default"))
    h.at("2024-01-01T10:01:01")
    assert len(h.jobs()) == 1
    assert [r["name"] for r in h.cj()["status"]["active"]] == h.jobs()
    assert h.cj()["status"]["lastScheduleTime"] == "2024-01-01T10:01:00Z"


# ============================================================================ end-to-end
def e2e(fn):
    """End-to-end: real processes and the real kubectl."""
    fn = pytest.mark.slow(fn)
    return pytest.mark.skipif(not have("kubectl"), reason="kubectl not installed")(fn)

HOLLOW = "hollow.kubelab.io/"


def job_manifest(name: str, *, completions=None, parallelism=None, restart="Never",
                 annotations: dict | None = None, **spec) -> dict:
    s: dict = {"template": {"metadata": {"annotations": {HOLLOW + k: str(v) for k, v in
                                                         (annotations or {}).items()}},
                            "spec": {"restartPolicy": restart,
                                     "containers": [{"name": "work", "image": "busybox",
                                                     "command": ["sh", "-c", "true"]}]}}}
    if completions is not None:
        s["completions"] = completions
    if parallelism is not None:
        s["parallelism"] = parallelism
    s.update(spec)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default"}, "spec": s}


def apply(cp, obj: dict) -> None:
    cp.kubectl("apply", "-f", "-", input=json.dumps(obj))


def job_pods(cp, job: str) -> list[dict]:
    return cp.get_json("pods", "-l", f"batch.kubernetes.io/job-name={job}")["items"]


def events(cp, name: str) -> list[tuple[str, str, str]]:
    items = cp.get_json("events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [(e.get("type"), e.get("reason"), e.get("message")) for e in items]


def job_conditions(cp, name: str) -> dict:
    job = cp.get_json("job", name)
    return {c["type"]: c for c in job.get("status", {}).get("conditions") or []}


class PodWatch:
    """`kubectl get pods --watch` in the background: when each pod was first seen, and when
    it was first seen Failed (for measuring back-off gaps without polling)."""

    def __init__(self, cp, selector: str):
        env = dict(os.environ, KUBECONFIG=cp.kubeconfig, KUBECACHEDIR=cp.cache_dir)
        self.proc = subprocess.Popen(
            ["kubectl", "get", "pods", "-l", selector, "--watch", "-o",
             "jsonpath={.metadata.name} {.status.phase}{\"\\n\"}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.seen: dict[str, float] = {}
        self.failed: dict[str, float] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = line.split()
            if not parts:
                continue
            now = time.monotonic()
            self.seen.setdefault(parts[0], now)
            if len(parts) > 1 and parts[1] == "Failed":
                self.failed.setdefault(parts[0], now)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@e2e
def test_e2e_job_completes_with_parallelism(control_plane):
    cp = control_plane
    apply(cp, job_manifest("pi", completions=3, parallelism=2,
                           annotations={"run-seconds": 1}))
    cp.kubectl("wait", "--for=condition=complete", "job/pi", "--timeout=30s", timeout=40)
    job = cp.get_json("job", "pi")
    st = job["status"]
    assert st["succeeded"] == 3 and st.get("failed", 0) == 0
    assert st["startTime"] and st["completionTime"]
    assert st["uncountedTerminatedPods"] == {}
    conds = job_conditions(cp, "pi")
    assert conds["Complete"]["status"] == "True" and conds["SuccessCriteriaMet"]
    pods = job_pods(cp, "pi")
    assert len(pods) == 3
    uid = job["metadata"]["uid"]
    for p in pods:
        md = p["metadata"]
        assert p["status"]["phase"] == "Succeeded"
        assert md["name"].startswith("pi-")
        assert md["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi",
                                          "uid": uid, "controller": True,
                                          "blockOwnerDeletion": True}]
        assert md["labels"]["batch.kubernetes.io/controller-uid"] == uid
        assert md["labels"]["controller-uid"] == uid and md["labels"]["job-name"] == "pi"
        assert not md.get("finalizers")        # counted, so released
    # never more than parallelism at once: the third pod started after a first one ended
    starts = sorted(p["metadata"]["creationTimestamp"] for p in pods)
    ends = sorted(p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
                  for p in pods)
    assert starts[2] >= ends[0]
    evs = events(cp, "pi")
    assert sum(1 for _, r, m in evs if r == "SuccessfulCreate" and m.startswith("Created pod: pi-")) == 3
    assert ("Normal", "Completed", "Job completed") in evs
    out = cp.kubectl("get", "job", "pi").stdout
    assert "Complete" in out and "3/3" in out


@e2e
def test_e2e_failing_job_backs_off_then_fails(control_plane):
    cp = control_plane
    watch = PodWatch(cp, "batch.kubernetes.io/job-name=fail")
    try:
        apply(cp, job_manifest("fail", backoffLimit=2,
                               annotations={"run-seconds": "0.2", "exit-code": 1}))
        cp.kubectl("wait", "--for=condition=failed", "job/fail", "--timeout=40s", timeout=50)
    finally:
        watch.stop()
    conds = job_conditions(cp, "fail")
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded"
    assert conds["Failed"]["message"] == "Job has reached the specified backoff limit"
    st = cp.get_json("job", "fail")["status"]
    assert st["failed"] == 3 and not st.get("succeeded") and not st.get("active")
    pods = job_pods(cp, "fail")
    assert len(pods) == 3 and all(p["status"]["phase"] == "Failed" for p in pods)
    # back-off 10 s then 20 s, x0.1: the replacement waits ~1 s, then ~2 s after a failure
    order = sorted(watch.seen, key=watch.seen.get)
    assert len(order) == 3, watch.seen
    gap1 = watch.seen[order[1]] - watch.failed[order[0]]
    gap2 = watch.seen[order[2]] - watch.failed[order[1]]
    print(f"back-off gaps: {gap1:.2f}s, {gap2:.2f}s")
    assert 0.7 < gap1 < gap2, (gap1, gap2)
    assert gap2 > 1.6, (gap1, gap2)
    assert ("Warning", "BackoffLimitExceeded",
            "Job has reached the specified backoff limit") in events(cp, "fail")


@e2e
def test_e2e_on_failure_restarts_in_place_and_completes(control_plane):
    cp = control_plane
    apply(cp, job_manifest("flaky", restart="OnFailure",
                           annotations={"run-seconds": "0.3", "fail-times": 1}))
    cp.kubectl("wait", "--for=condition=complete", "job/flaky", "--timeout=30s", timeout=40)
    (pod,) = job_pods(cp, "flaky")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 1
    st = cp.get_json("job", "flaky")["status"]
    assert st["succeeded"] == 1 and not st.get("failed")


@e2e
def test_e2e_indexed_job_hostnames_and_indexes(control_plane):
    cp = control_plane
    m = job_manifest("idx", completions=3, parallelism=3, completionMode="Indexed",
                     annotations={"run-seconds": "0.5"})
    apply(cp, m)
    cp.kubectl("wait", "--for=condition=complete", "job/idx", "--timeout=30s", timeout=40)
    st = cp.get_json("job", "idx")["status"]
    assert st["completedIndexes"] == "0-2" and st["succeeded"] == 3
    pods = sorted(job_pods(cp, "idx"),
                  key=lambda p: int(p["metadata"]["annotations"][jc.COMPLETION_INDEX]))
    assert [p["spec"]["hostname"] for p in pods] == ["idx-0", "idx-1", "idx-2"]
    for i, p in enumerate(pods):
        assert p["metadata"]["name"].startswith(f"idx-{i}-")
        assert p["metadata"]["labels"][jc.COMPLETION_INDEX] == str(i)
        env = {e["name"]: e for e in p["spec"]["containers"][0].get("env", [])}
        assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"


@e2e
def test_e2e_active_deadline_fails_the_job(control_plane):
    cp = control_plane
    apply(cp, job_manifest("slow", activeDeadlineSeconds=20,
                           annotations={"run-seconds": 600}))
    cp.kubectl("wait", "--for=condition=failed", "job/slow", "--timeout=30s", timeout=40)
    c = job_conditions(cp, "slow")["Failed"]
    assert (c["reason"], c["message"]) == ("DeadlineExceeded",
                                          "Job was active longer than specified deadline")
    wait_for(lambda: job_pods(cp, "slow") == [], 15, 0.2, "the running pod deleted")
    assert cp.get_json("job", "slow")["status"]["failed"] == 1
    assert any(r == "DeadlineExceeded" for _, r, _ in events(cp, "slow"))


@e2e
def test_e2e_ttl_after_finished_deletes_the_job(control_plane):
    cp = control_plane
    apply(cp, job_manifest("short", ttlSecondsAfterFinished=20,
                           annotations={"run-seconds": "0.3"}))

    def gone():
        return cp.kubectl("get", "job", "short", check=False).returncode != 0
    wait_for(gone, 30, 0.3, "the finished job deleted after its TTL (2 s)")


@e2e
def test_e2e_deleting_a_job_removes_its_pods(control_plane):
    cp = control_plane
    apply(cp, job_manifest("doomed", completions=2, parallelism=2,
                           annotations={"run-seconds": 600}))
    wait_for(lambda: sum(p["status"].get("phase") == "Running"
                         for p in job_pods(cp, "doomed")) == 2, 20, 0.2, "2 running pods")
    cp.kubectl("delete", "job", "doomed", "--wait=false")
    wait_for(lambda: job_pods(cp, "doomed") == [], 20, 0.3,
             "the garbage collector removing the job's pods")


def cron_manifest(name: str, *, policy="Allow", suspend=False, run_seconds=300,
                  **spec) -> dict:
    jt = job_manifest("x", annotations={"run-seconds": run_seconds})["spec"]
    s = {"schedule": "*/1 * * * *", "concurrencyPolicy": policy, "suspend": suspend,
         "jobTemplate": {"spec": jt}}
    s.update(spec)
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "default"}, "spec": s}


def cron_jobs(cp, cj: str) -> list[dict]:
    out = []
    for j in cp.get_json("jobs")["items"]:
        refs = j["metadata"].get("ownerReferences") or []
        if any(r.get("kind") == "CronJob" and r.get("name") == cj for r in refs):
            out.append(j)
    return out


def set_last_schedule(cp, cj: str, seconds_ago: int) -> None:
    t = datetime.datetime.now(UTC) - datetime.timedelta(seconds=seconds_ago)
    cp.kubectl("patch", "cronjob", cj, "--subresource=status", "--type=merge", "-p",
               json.dumps({"status": {"lastScheduleTime": t.strftime("%Y-%m-%dT%H:%M:%SZ")}}))


@e2e
def test_e2e_cronjob_concurrency_policies_and_suspend(control_plane):
    """Allow overlaps, Forbid skips while its job runs, Replace replaces it, a suspended
    CronJob starts nothing. Each gets its first job at once (lastScheduleTime set back, so a
    schedule was missed), the second at the next minute boundary: ≤ ~65 s."""
    cp = control_plane
    # The first jobs must all appear within one minute: a minute boundary in the middle would
    # give c-allow its second job before the others have their first. Start early in a minute.
    wait_for(lambda: time.time() % 60 < 20, 45, 0.2, "the start of a minute")
    for name, policy, suspend in (("c-allow", "Allow", False), ("c-forbid", "Forbid", False),
                                  ("c-replace", "Replace", False),
                                  ("c-suspended", "Allow", True)):
        apply(cp, cron_manifest(name, policy=policy, suspend=suspend))
    set_last_schedule(cp, "c-allow", 3 * 3600)     # 180 missed: TooManyMissedTimes
    for name in ("c-forbid", "c-replace", "c-suspended"):
        set_last_schedule(cp, name, 300)
    wait_for(lambda: all(len(cron_jobs(cp, n)) == 1
                         for n in ("c-allow", "c-forbid", "c-replace")), 20, 0.3,
             "a job for the missed schedule of each CronJob")
    first = {n: cron_jobs(cp, n)[0] for n in ("c-allow", "c-forbid", "c-replace")}
    for n, j in first.items():
        md = j["metadata"]
        stamp = md["annotations"][cjc.SCHEDULED_TIMESTAMP]
        scheduled = datetime.datetime.fromisoformat(stamp)
        assert scheduled.second == 0
        assert md["name"] == f"{n}-{int(scheduled.timestamp()) // 60}"
        assert md["ownerReferences"][0]["kind"] == "CronJob"
        assert md["ownerReferences"][0]["controller"] is True
        cj = cp.get_json("cronjob", n)
        assert [r["name"] for r in cj["status"]["active"]] == [md["name"]]
        assert cj["status"]["lastScheduleTime"] == stamp
        assert ("Normal", "SuccessfulCreate", f"Created job {md['name']}") in events(cp, n)
    assert any(r == "TooManyMissedTimes" for _, r, _ in events(cp, "c-allow"))

    wait_for(lambda: len(cron_jobs(cp, "c-allow")) == 2, 70, 0.5,
             "Allow starting a second job beside the running one at the next minute")
    cj = cp.get_json("cronjob", "c-allow")
    assert len(cj["status"]["active"]) == 2
    wait_for(lambda: any(r == "JobAlreadyActive" for _, r, _ in events(cp, "c-forbid")), 10,
             0.3, "Forbid skipping the schedule")
    assert [j["metadata"]["name"] for j in cron_jobs(cp, "c-forbid")] == \
        [first["c-forbid"]["metadata"]["name"]]

    def replaced():
        names = [j["metadata"]["name"] for j in cron_jobs(cp, "c-replace")
                 if not j["metadata"].get("deletionTimestamp")]
        return len(names) == 1 and names[0] != first["c-replace"]["metadata"]["name"]
    wait_for(replaced, 10, 0.3, "Replace replacing the running job")
    assert ("Normal", "SuccessfulDelete",
            f"Deleted job {first['c-replace']['metadata']['name']}") in events(cp, "c-replace")
    assert cron_jobs(cp, "c-suspended") == []
    assert not cp.get_json("cronjob", "c-suspended").get("status", {}).get("active")
    for name in ("c-allow", "c-forbid", "c-replace", "c-suspended"):
        cp.kubectl("delete", "cronjob", name, "--wait=false")


@e2e
def test_e2e_cronjob_history_limits(control_plane):
    """Finished jobs beyond successfulJobsHistoryLimit / failedJobsHistoryLimit go, oldest
    (by startTime, then name) first. The jobs are made here, owned by a suspended CronJob, so
    nothing waits for a schedule."""
    cp = control_plane
    apply(cp, cron_manifest("hist", suspend=True, successfulJobsHistoryLimit=1,
                            failedJobsHistoryLimit=1))
    cj = cp.get_json("cronjob", "hist")
    ref = {"apiVersion": "batch/v1", "kind": "CronJob", "name": "hist",
           "uid": cj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    kinds = {"hist-0": "ok", "hist-1": "ok", "hist-2": "fail", "hist-3": "ok", "hist-4": "fail"}
    items = []
    for name, kind in kinds.items():
        ann = {"run-seconds": 4, **({"exit-code": 1} if kind == "fail" else {})}
        m = job_manifest(name, backoffLimit=0, annotations=ann)
        m["metadata"]["ownerReferences"] = [ref]
        items.append(m)
    apply(cp, {"apiVersion": "v1", "kind": "List", "items": items})  # all at once

    def started():
        st = {j["metadata"]["name"]: j.get("status", {}).get("startTime")
              for j in cron_jobs(cp, "hist")}
        return st if len(st) == 5 and all(st.values()) else None
    starts = wait_for(started, 15, 0.2, "all five jobs started")
    keep = sorted(max((starts[n], n) for n, k in kinds.items() if k == kind)[1]
                  for kind in ("ok", "fail"))

    def left():
        return sorted(j["metadata"]["name"] for j in cron_jobs(cp, "hist")
                      if not j["metadata"].get("deletionTimestamp"))
    wait_for(lambda: left() == keep, 25, 0.3,
             f"only the newest successful and the newest failed job ({keep}) kept")
    evs = events(cp, "hist")
    for gone in sorted(set(kinds) - set(keep)):
        assert ("Normal", "SuccessfulDelete", f"Deleted job {gone}") in evs
    for name in keep:
        assert job_conditions(cp, name)["Complete" if kinds[name] == "ok" else "Failed"]
    cp.kubectl("delete", "cronjob", "hist", "--wait=false")
