"""The ReplicaSet and ReplicationController controllers (kube-controller-manager's
pkg/controller/replicaset): keep spec.replicas active pods that match the selector.

One loop serves both kinds; they differ only in how the selector is written (a LabelSelector
for ReplicaSets, an equality map for ReplicationControllers) and in the kind named in the
controllerRef. A sync:

1. lists the namespace's active pods from the cache (not Succeeded/Failed, not being deleted),
2. claims them: adopts matching orphans, releases owned pods whose labels stopped matching,
3. if the expectations of the previous sync are met, creates the missing pods (in slow-start
   batches 1, 2, 4, ...) or deletes the surplus (the least valuable first: unscheduled, pending,
   not ready, doubled-up on a node, recently ready, restarted most, newest),
4. writes status (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
   observedGeneration, the ReplicaFailure condition).

Expectations (client-go's ControllerExpectations) remember the creations and deletions still in
flight, so a cache that has not yet seen them does not make the next sync act twice.

The pure helpers (pod readiness/availability, deletion ranking, status arithmetic, slow start)
are module functions over plain dicts; deployment.py reuses them.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubelab.client import APIError
from kubelab.selectors import Selector, selector_from_label_selector, selector_from_map
from kubelab.timescale import scaled

from .base import Controller, controller_ref, split_key

# kube's burstReplicas: at most this many creations/deletions per sync
BURST_REPLICAS = 500
# client-go's ExpectationsTimeout: expectations older than this are considered satisfied
EXPECTATIONS_TIMEOUT = 5 * 60.0
POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


# ============================================================================ time helpers
def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: Any) -> float | None:
    """RFC 3339 (optionally with fractional seconds) → epoch seconds."""
    if not isinstance(s, str) or not s:
        return None
    try:
        t = s.replace("Z", "+00:00")
        return datetime.datetime.fromisoformat(t).timestamp()
    except ValueError:
        try:
            return datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(
                tzinfo=datetime.UTC).timestamp()
        except ValueError:
            return None


# ============================================================================ pod helpers
def _md(o: dict) -> dict:
    return o.get("metadata") or {}


def pod_key(pod: dict) -> str:
    md = _md(pod)
    return f"{md.get('namespace')}/{md.get('name')}"


def is_pod_active(pod: dict) -> bool:
    """controller.IsPodActive: not Succeeded/Failed and not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not _md(pod).get("deletionTimestamp")


def pod_ready_condition(pod: dict) -> dict | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c
    return None


def is_pod_ready(pod: dict) -> bool:
    c = pod_ready_condition(pod)
    return bool(c and c.get("status") == "True")


def pod_available_at(pod: dict, min_ready_seconds: float) -> float | None:
    """When the pod is (or becomes) available: None when it is not Ready; otherwise the epoch
    time Ready has lasted min_ready_seconds (0 when minReadySeconds is 0)."""
    c = pod_ready_condition(pod)
    if not c or c.get("status") != "True":
        return None
    if min_ready_seconds <= 0:
        return 0.0
    since = parse_time(c.get("lastTransitionTime"))
    if since is None:
        return None
    return since + min_ready_seconds


def is_pod_available(pod: dict, min_ready_seconds: float, now: float) -> bool:
    """podutil.IsPodAvailable (min_ready_seconds already in cluster time)."""
    at = pod_available_at(pod, min_ready_seconds)
    return at is not None and at <= now


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_rank_key(pod: dict, doubled_up: int = 0, now: float | None = None) -> tuple:
    """Sort key of controller.ActivePodsWithRanks: pods that sort first are deleted first.

    1. unassigned before assigned, 2. Pending < Unknown < Running, 3. not ready before ready,
    4. lower pod-deletion-cost first, 5. more pods of the set on the same node first,
    6. ready for a shorter time first, 7. more container restarts first, 8. newer first.
    """
    md = _md(pod)
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    assigned = 1 if spec.get("nodeName") else 0
    phase = _PHASE_RANK.get(status.get("phase") or "Pending", 0)
    ready = 1 if is_pod_ready(pod) else 0
    try:
        cost = int((md.get("annotations") or {}).get(POD_DELETION_COST, "0"))
    except ValueError:
        cost = 0
    ready_since = 0.0
    if ready:
        ready_since = parse_time((pod_ready_condition(pod) or {}).get("lastTransitionTime")) or 0.0
    restarts = max([int(cs.get("restartCount") or 0)
                    for cs in status.get("containerStatuses") or []] or [0])
    created = parse_time(md.get("creationTimestamp")) or float("inf")  # empty sorts first
    # larger values that should go first are negated
    return (assigned, phase, ready, cost, -doubled_up, -ready_since, -restarts, -created,
            md.get("name", ""))


def pods_to_delete(pods: list[dict], count: int) -> list[dict]:
    """getPodsToDelete: the `count` least valuable pods, ranked by how many of the set share
    each pod's node (doubled-up pods go first)."""
    if count >= len(pods):
        return list(pods)
    per_node: dict[str, int] = {}
    for p in pods:
        node = (p.get("spec") or {}).get("nodeName")
        if node:
            per_node[node] = per_node.get(node, 0) + 1
    ranked = sorted(pods, key=lambda p: deletion_rank_key(
        p, per_node.get((p.get("spec") or {}).get("nodeName") or "", 0)))
    return ranked[:count]


def labels_superset(labels: dict | None, want: dict | None) -> bool:
    labels = labels or {}
    return all(labels.get(k) == v for k, v in (want or {}).items())


def pod_from_template(template: dict, owner: dict, ref: dict) -> dict:
    """controller.GetPodFromTemplate: labels, annotations, finalizers and spec of the template,
    generateName `<owner>-`, the controllerRef."""
    tmd = template.get("metadata") or {}
    md: dict = {"generateName": f"{_md(owner)['name']}-",
                "namespace": _md(owner).get("namespace"),
                "ownerReferences": [dict(ref)]}
    for k in ("labels", "annotations", "finalizers"):
        if tmd.get(k):
            md[k] = copy.deepcopy(tmd[k])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md,
            "spec": copy.deepcopy(template.get("spec") or {})}


# ============================================================================ status helpers
@dataclasses.dataclass
class PodCounts:
    replicas: int = 0
    fully_labeled: int = 0
    ready: int = 0
    available: int = 0
    next_available: float | None = None  # earliest epoch a ready pod becomes available


def count_pods(pods: list[dict], template_labels: dict | None, min_ready_seconds: float,
               now: float) -> PodCounts:
    c = PodCounts(replicas=len(pods))
    for p in pods:
        if labels_superset(_md(p).get("labels"), template_labels):
            c.fully_labeled += 1
        if is_pod_ready(p):
            c.ready += 1
            at = pod_available_at(p, min_ready_seconds)
            if at is not None and at <= now:
                c.available += 1
            elif at is not None:
                c.next_available = at if c.next_available is None else min(c.next_available, at)
    return c


def set_condition(conds: list[dict], cond: dict) -> list[dict]:
    """SetCondition: keep the transition time when the status does not change; a condition
    equal in status and reason is left as it is."""
    out = []
    for c in conds:
        if c.get("type") == cond["type"]:
            if c.get("status") == cond.get("status") and c.get("reason") == cond.get("reason"):
                return conds
            if c.get("status") == cond.get("status") and c.get("lastTransitionTime"):
                cond = dict(cond, lastTransitionTime=c["lastTransitionTime"])
            continue
        out.append(c)
    return out + [cond]


def remove_condition(conds: list[dict], ctype: str) -> list[dict]:
    return [c for c in conds if c.get("type") != ctype]


def get_condition(status: dict | None, ctype: str) -> dict | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def replica_set_status(obj: dict, counts: PodCounts, manage_error: str | None,
                       desired: int) -> dict:
    """calculateStatus of the ReplicaSet controller. Zero counts are omitted like Go's
    omitempty (replicas is always present)."""
    old = obj.get("status") or {}
    st: dict = {"replicas": counts.replicas}
    if counts.fully_labeled:
        st["fullyLabeledReplicas"] = counts.fully_labeled
    if counts.ready:
        st["readyReplicas"] = counts.ready
    if counts.available:
        st["availableReplicas"] = counts.available
    gen = _md(obj).get("generation")
    if gen is not None:
        st["observedGeneration"] = gen
    conds = list(old.get("conditions") or [])
    failure = get_condition(old, "ReplicaFailure")
    if manage_error is not None and failure is None:
        diff = counts.replicas - desired
        reason = "FailedCreate" if diff < 0 else "FailedDelete" if diff > 0 else ""
        conds = set_condition(conds, {"type": "ReplicaFailure", "status": "True",
                                      "lastTransitionTime": now_rfc3339(), "reason": reason,
                                      "message": manage_error})
    elif manage_error is None and failure is not None:
        conds = remove_condition(conds, "ReplicaFailure")
    if conds:
        st["conditions"] = conds
    return st


async def slow_start_batch(count: int, initial: int,
                           fn: Callable[[], Awaitable[None]]) -> tuple[int, Exception | None]:
    """controller's slowStartBatch: call fn `count` times in batches of 1, 2, 4, ... (each
    batch concurrently); stop after the first batch with a failure. Returns (successes, the
    first error)."""
    remaining, successes = count, 0
    batch = min(remaining, initial)
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        errs = [r for r in results if isinstance(r, BaseException)]
        successes += batch - len(errs)
        if errs:
            if any(isinstance(e, asyncio.CancelledError) for e in errs):
                raise asyncio.CancelledError()
            return successes, errs[0]  # type: ignore[return-value]
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None


# ============================================================================ expectations
@dataclasses.dataclass
class _Expectation:
    add: int = 0
    deletes: set = dataclasses.field(default_factory=set)
    at: float = 0.0


class Expectations:
    """client-go's UIDTrackingControllerExpectations: per controller key, the number of pod
    creations still to be observed and the keys of pods whose deletion is still to be
    observed. A sync acts only when they are met (or have expired)."""

    def __init__(self, timeout: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.timeout = timeout
        self.clock = clock
        self._m: dict[str, _Expectation] = {}

    def _ttl(self) -> float:
        return self.timeout if self.timeout is not None else scaled(EXPECTATIONS_TIMEOUT)

    def satisfied(self, key: str) -> bool:
        e = self._m.get(key)
        if e is None:
            return True
        if e.add <= 0 and not e.deletes:
            return True
        return self.clock() - e.at > self._ttl()

    def expect_creations(self, key: str, n: int) -> None:
        self._m[key] = _Expectation(add=n, at=self.clock())

    def expect_deletions(self, key: str, pod_keys: list[str]) -> None:
        self._m[key] = _Expectation(deletes=set(pod_keys), at=self.clock())

    def creation_observed(self, key: str) -> None:
        e = self._m.get(key)
        if e is not None:
            e.add -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        e = self._m.get(key)
        if e is not None:
            e.deletes.discard(pod_key)

    def delete(self, key: str) -> None:
        self._m.pop(key, None)

    def pending(self, key: str) -> tuple[int, int]:
        e = self._m.get(key)
        return (e.add, len(e.deletes)) if e else (0, 0)


# ============================================================================ the controller
class ReplicaSetController(Controller):
    name = "replicaset"
    kind = "ReplicaSet"
    api_version = "apps/v1"
    workers = 5

    def setup(self) -> None:
        self.expectations = Expectations()
        self.sets = self.informers.informer(self.kind)
        self.pods = self.informers.informer("Pod")
        self.sets.add_handler(self._on_set)
        self.pods.add_handler(self._on_pod)

    # ----------------------------------------------------------------- kind specifics
    def selector(self, obj: dict) -> Selector:
        return selector_from_label_selector((obj.get("spec") or {}).get("selector"))

    def _key(self, obj: dict) -> str:
        md = _md(obj)
        return f"{md.get('namespace')}/{md.get('name')}"

    # ----------------------------------------------------------------- event handlers
    def _on_set(self, event: str, new: dict, old: dict | None) -> None:
        key = self._key(new)
        if event == "DELETED":
            self.expectations.delete(key)
        elif event == "MODIFIED" and old is not None and \
                _md(old).get("uid") != _md(new).get("uid"):
            self.expectations.delete(key)  # recreated with the same name
        self.queue.add(key)

    def _resolve(self, namespace: str | None, ref: dict) -> dict | None:
        if ref.get("kind") != self.kind:
            return None
        obj = self.sets.get(namespace, ref.get("name", ""))
        if obj is None or _md(obj).get("uid") != ref.get("uid"):
            return None
        return obj

    def _owners_of(self, pod: dict) -> list[dict]:
        """getPodReplicaSets: the sets in the pod's namespace whose selector matches it."""
        md = _md(pod)
        out = []
        for s in self.sets.list(md.get("namespace")):
            sel = self.selector(s)
            if not sel.empty() and sel.matches(md.get("labels")):
                out.append(s)
        return out

    def _on_pod(self, event: str, new: dict, old: dict | None) -> None:
        if event == "ADDED":
            self._add_pod(new)
        elif event == "MODIFIED":
            self._update_pod(old or new, new)
        else:
            self._delete_pod(old or new)

    def _add_pod(self, pod: dict) -> None:
        md = _md(pod)
        if md.get("deletionTimestamp"):
            self._delete_pod(pod)  # seen only after its deletion started
            return
        ref = controller_ref(pod)
        if ref is not None:
            owner = self._resolve(md.get("namespace"), ref)
            if owner is not None:
                key = self._key(owner)
                self.expectations.creation_observed(key)
                self.queue.add(key)
            return
        for owner in self._owners_of(pod):
            self.queue.add(self._key(owner))

    def _update_pod(self, old: dict, cur: dict) -> None:
        omd, cmd = _md(old), _md(cur)
        if omd.get("resourceVersion") == cmd.get("resourceVersion"):
            return  # a resync: nothing changed
        labels_changed = omd.get("labels") != cmd.get("labels")
        if cmd.get("deletionTimestamp"):
            # a pod being deleted counts as gone for the expectations at once
            self._delete_pod(cur)
            if labels_changed:
                self._delete_pod(old)
            return
        cur_ref, old_ref = controller_ref(cur), controller_ref(old)
        ref_changed = (cur_ref or {}).get("uid") != (old_ref or {}).get("uid")
        if ref_changed and old_ref is not None:
            prev = self._resolve(omd.get("namespace"), old_ref)
            if prev is not None:
                self.queue.add(self._key(prev))
        if cur_ref is not None:
            owner = self._resolve(cmd.get("namespace"), cur_ref)
            if owner is None:
                return
            key = self._key(owner)
            self.queue.add(key)
            mrs = (owner.get("spec") or {}).get("minReadySeconds") or 0
            if mrs > 0 and not is_pod_ready(old) and is_pod_ready(cur):
                self.queue.add_after(key, scaled(mrs) + 0.05)
            return
        if labels_changed or ref_changed:
            for owner in self._owners_of(cur):
                self.queue.add(self._key(owner))

    def _delete_pod(self, pod: dict) -> None:
        md = _md(pod)
        ref = controller_ref(pod)
        if ref is None:
            return
        owner = self._resolve(md.get("namespace"), ref)
        if owner is None:
            return
        key = self._key(owner)
        self.expectations.deletion_observed(key, pod_key(pod))
        self.queue.add(key)

    # ----------------------------------------------------------------- sync
    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        cached = self.sets.get(ns, name)
        if cached is None:
            self.expectations.delete(key)
            return
        obj = copy.deepcopy(cached)
        sel = self.selector(obj)
        needs_sync = self.expectations.satisfied(key)
        active = [p for p in self.pods.list(ns) if is_pod_active(p)]
        pods = await self.claim_pods(obj, sel, active)
        manage_err: Exception | None = None
        if needs_sync and not _md(obj).get("deletionTimestamp"):
            manage_err = await self.manage_replicas(obj, pods, key)
        spec = obj.get("spec") or {}
        mrs = scaled(spec.get("minReadySeconds") or 0)
        now = time.time()
        tlabels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
        counts = count_pods(pods, tlabels, mrs, now)
        desired = spec.get("replicas", 1)
        status = replica_set_status(obj, counts, str(manage_err) if manage_err else None,
                                    desired)
        await self.write_status(obj, status)
        if manage_err is not None:
            raise manage_err
        if counts.next_available is not None:
            self.queue.add_after(key, max(0.0, counts.next_available - time.time()) + 0.05)

    async def write_status(self, obj: dict, status: dict) -> None:
        if (obj.get("status") or {}) == status:
            return
        try:
            await self.client.update_status(self.kind, dict(obj, status=status))
        except APIError as e:
            # a conflict means the set changed: its watch event queues the key again
            if not (e.conflict or e.not_found):
                raise

    # ----------------------------------------------------------------- claim
    async def claim_pods(self, obj: dict, sel: Selector, pods: list[dict]) -> list[dict]:
        """PodControllerRefManager.ClaimPods: the pods this set owns after adopting matching
        orphans and releasing owned pods that no longer match."""
        md = _md(obj)
        uid = md.get("uid")
        deleting = bool(md.get("deletionTimestamp"))
        claimed, errors = [], []
        can_adopt: bool | None = None

        def matches(p: dict) -> bool:
            return not sel.empty() and sel.matches(_md(p).get("labels"))

        for p in pods:
            ref = controller_ref(p)
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if matches(p):
                    claimed.append(p)
                    continue
                if deleting:
                    continue
                try:
                    await self._release(obj, p)
                except APIError as e:
                    if not e.not_found:
                        errors.append(e)
                continue
            if deleting or not matches(p) or _md(p).get("deletionTimestamp"):
                continue
            if can_adopt is None:
                can_adopt = await self._recheck(obj)
            if not can_adopt:
                continue
            try:
                claimed.append(await self._adopt(obj, p))
            except APIError as e:
                if not e.not_found:
                    errors.append(e)
        if errors:
            raise errors[0]
        return claimed

    async def _recheck(self, obj: dict) -> bool:
        """RecheckDeletionTimestamp: adopt only for a live, not-deleting owner (read fresh)."""
        md = _md(obj)
        fresh = await self.client.get_or_none(self.kind, md.get("namespace"), md["name"])
        return bool(fresh and _md(fresh).get("uid") == md.get("uid")
                    and not _md(fresh).get("deletionTimestamp"))

    def _controller_ref(self, obj: dict) -> dict:
        md = _md(obj)
        return {"apiVersion": self.api_version, "kind": self.kind, "name": md["name"],
                "uid": md["uid"], "controller": True, "blockOwnerDeletion": True}

    async def _adopt(self, obj: dict, pod: dict) -> dict:
        pmd = _md(pod)
        refs = pmd.get("ownerReferences")
        new_refs = list(refs or []) + [self._controller_ref(obj)]
        # JSON patch guarded by tests: the pod must still be the same pod with the same owners
        patch = [{"op": "test", "path": "/metadata/uid", "value": pmd.get("uid")},
                 {"op": "test", "path": "/metadata/ownerReferences", "value": refs},
                 {"op": "add", "path": "/metadata/ownerReferences", "value": new_refs}]
        self.log.info("adopting pod %s into %s %s", pmd.get("name"), self.kind, _md(obj)["name"])
        return await self.client.patch("Pod", pmd.get("namespace"), pmd["name"], patch,
                                       patch_type="application/json-patch+json")

    async def _release(self, obj: dict, pod: dict) -> None:
        pmd = _md(pod)
        refs = pmd.get("ownerReferences") or []
        keep = [r for r in refs if r.get("uid") != _md(obj).get("uid")]
        patch: list[dict] = [{"op": "test", "path": "/metadata/uid", "value": pmd.get("uid")},
                             {"op": "test", "path": "/metadata/ownerReferences", "value": refs}]
        if keep:
            patch.append({"op": "replace", "path": "/metadata/ownerReferences", "value": keep})
        else:
            patch.append({"op": "remove", "path": "/metadata/ownerReferences"})
        self.log.info("releasing pod %s from %s %s", pmd.get("name"), self.kind,
                      _md(obj)["name"])
        await self.client.patch("Pod", pmd.get("namespace"), pmd["name"], patch,
                                patch_type="application/json-patch+json")

    # ----------------------------------------------------------------- manage replicas
    async def manage_replicas(self, obj: dict, pods: list[dict], key: str) -> Exception | None:
        spec = obj.get("spec") or {}
        desired = spec.get("replicas", 1)
        diff = len(pods) - desired
        md = _md(obj)
        if diff < 0:
            n = min(-diff, BURST_REPLICAS)
            self.expectations.expect_creations(key, n)
            ref = self._controller_ref(obj)
            template = spec.get("template") or {}

            async def create_one() -> None:
                pod = pod_from_template(template, obj, ref)
                try:
                    created = await self.client.create("Pod", pod, md.get("namespace"))
                except APIError as e:
                    await self.recorder.warning(obj, "FailedCreate", f"Error creating: {e.message}")
                    raise
                await self.recorder.normal(obj, "SuccessfulCreate",
                                           f"Created pod: {_md(created).get('name')}")

            successes, err = await slow_start_batch(n, 1, create_one)
            for _ in range(n - successes):  # never attempted or failed: not to be observed
                self.expectations.creation_observed(key)
            return err
        if diff > 0:
            n = min(diff, BURST_REPLICAS)
            victims = pods_to_delete(pods, n)
            self.expectations.expect_deletions(key, [pod_key(p) for p in victims])

            async def delete_one(p: dict) -> None:
                pmd = _md(p)
                try:
                    await self.client.delete("Pod", pmd.get("namespace"), pmd["name"],
                                             preconditions={"uid": pmd.get("uid")})
                except APIError as e:
                    # the informer will not observe this deletion
                    self.expectations.deletion_observed(key, pod_key(p))
                    if e.not_found or e.code == 409:
                        return
                    await self.recorder.warning(obj, "FailedDelete",
                                                f"Error deleting: {e.message}")
                    raise
                await self.recorder.normal(obj, "SuccessfulDelete",
                                           f"Deleted pod: {pmd['name']}")

            results = await asyncio.gather(*(delete_one(p) for p in victims),
                                           return_exceptions=True)
            for r in results:
                if isinstance(r, asyncio.CancelledError):
                    raise r
            errs = [r for r in results if isinstance(r, Exception)]
            return errs[0] if errs else None
        return None


class ReplicationControllerController(ReplicaSetController):
    """The same loop for core/v1 ReplicationControllers (equality-based selector map)."""
    name = "replicationcontroller"
    kind = "ReplicationController"
    api_version = "v1"

    def selector(self, obj: dict) -> Selector:
        sel = (obj.get("spec") or {}).get("selector")
        if not sel:
            return Selector(nothing=True)
        return selector_from_map(sel)


__all__ = [
    "Expectations",
    "ReplicaSetController",
    "ReplicationControllerController",
    "count_pods",
    "deletion_rank_key",
    "is_pod_active",
    "is_pod_available",
    "is_pod_ready",
    "pod_from_template",
    "pods_to_delete",
    "replica_set_status",
    "slow_start_batch",
]
