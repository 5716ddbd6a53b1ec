"""The StatefulSet controller (kube-controller-manager's statefulset controller,
pkg/controller/statefulset): pods with stable identities `<set>-<ordinal>`, each with its own
PersistentVolumeClaims `<claim template>-<set>-<ordinal>`, created, deleted and updated in
ordinal order.

- OrderedReady (the default): pods are created 0..N-1, each Running and Ready (and available
  for minReadySeconds) before the next; on scale-down the highest ordinal goes first, one at a
  time, each gone before the next; nothing moves while any pod is unready or terminating.
- Parallel: every missing pod is created and every surplus pod deleted at once.
- RollingUpdate: pods whose revision differs from the update revision are replaced from the
  highest ordinal down, one at a time, waiting for each new pod to be Ready; only ordinals at or
  above spec.updateStrategy.rollingUpdate.partition; pods below it are (re)created from the
  current revision. When every pod is updated and ready, currentRevision becomes updateRevision.
- OnDelete: pods are replaced with the update revision only when someone deletes them.
- Claims are created before their pod and kept across pod deletion and scale-down
  (persistentVolumeClaimRetentionPolicy Retain); with whenDeleted/whenScaled Delete the claims get
  owner references to the set / the scaled-down pod and the garbage collector removes them.
- A failed (or succeeded) pod is deleted and created again (a new UID).
- Template history lives in ControllerRevisions (controllers/history.py); pods carry their
  revision's name in the `controller-revision-hash` label.

The decisions (which pod to create, delete or update next) are the pure function
`plan_statefulset`; `StatefulSetController.reconcile` gathers the state from the informers'
caches, executes the plan in order (stopping at the first failure) and writes status.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import re
import time
from collections.abc import Iterable

from kubelab import timescale
from kubelab.client import APIError
from kubelab.selectors import selector_from_label_selector

from . import history
from .base import Controller, split_key

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = history.CONTROLLER_REVISION_HASH_LABEL
_ORDINAL = re.compile(r"^(.*)-([0-9]+)$")
SMP = "application/strategic-merge-patch+json"


# =============================================================================== pod helpers
def parse_time(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return None


def _ready_condition(pod: dict) -> dict | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c
    return None


def is_pod_ready(pod: dict) -> bool:
    c = _ready_condition(pod)
    return bool(c) and c.get("status") == "True"


def is_pod_available(pod: dict, min_ready_seconds: int, now: float) -> bool:
    """podutil.IsPodAvailable: Ready, and for at least minReadySeconds (cluster time)."""
    if not is_pod_ready(pod):
        return False
    if not min_ready_seconds:
        return True
    since = parse_time((_ready_condition(pod) or {}).get("lastTransitionTime"))
    return since is not None and since + timescale.scaled(min_ready_seconds) <= now


def available_in(pod: dict, min_ready_seconds: int, now: float) -> float | None:
    """Seconds until a Ready pod becomes available (None if not Ready or already)."""
    if not is_pod_ready(pod) or not min_ready_seconds:
        return None
    since = parse_time((_ready_condition(pod) or {}).get("lastTransitionTime"))
    if since is None:
        return None
    left = since + timescale.scaled(min_ready_seconds) - now
    return left if left > 0 else None


def phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or ""


def is_terminating(pod: dict) -> bool:
    return bool(pod.get("metadata", {}).get("deletionTimestamp"))


def is_running_and_ready(pod: dict) -> bool:
    return phase(pod) == "Running" and is_pod_ready(pod)


def is_healthy(pod: dict | None) -> bool:
    return pod is not None and is_running_and_ready(pod) and not is_terminating(pod)


# =============================================================================== identity
def parent_and_ordinal(name: str) -> tuple[str, int]:
    """getParentNameAndOrdinal: ("web", 2) for "web-2"; ("", -1) for a name without one."""
    m = _ORDINAL.match(name or "")
    if not m:
        return "", -1
    return m.group(1), int(m.group(2))


def ordinal_of(pod: dict) -> int:
    return parent_and_ordinal(pod.get("metadata", {}).get("name", ""))[1]


def is_member_of(sts: dict, pod: dict) -> bool:
    return parent_and_ordinal(pod.get("metadata", {}).get("name", ""))[0] == \
        sts["metadata"]["name"]


def start_ordinal(sts: dict) -> int:
    ords = (sts.get("spec") or {}).get("ordinals") or {}
    return int(ords.get("start") or 0)


def replica_count(sts: dict) -> int:
    r = (sts.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def pod_name(sts: dict, ordinal: int) -> str:
    return f"{sts['metadata']['name']}-{ordinal}"


def claim_name(template_name: str, sts_name: str, ordinal: int) -> str:
    return f"{template_name}-{sts_name}-{ordinal}"


def pod_revision(pod: dict) -> str:
    return (pod.get("metadata", {}).get("labels") or {}).get(REVISION_LABEL, "")


def persistent_volume_claims(sts: dict, ordinal: int) -> dict[str, dict]:
    """getPersistentVolumeClaims: claim template name -> the claim for this ordinal, labelled
    with the template's labels plus the set's selector matchLabels."""
    spec = sts.get("spec") or {}
    sel_labels = (spec.get("selector") or {}).get("matchLabels") or {}
    out = {}
    for tpl in spec.get("volumeClaimTemplates") or []:
        tname = tpl.get("metadata", {}).get("name", "")
        meta = copy.deepcopy(tpl.get("metadata") or {})
        labels = dict(meta.get("labels") or {})
        labels.update(sel_labels)
        meta["labels"] = labels
        meta["name"] = claim_name(tname, sts["metadata"]["name"], ordinal)
        meta["namespace"] = sts["metadata"].get("namespace")
        for k in ("uid", "resourceVersion", "creationTimestamp", "generateName"):
            meta.pop(k, None)
        out[tname] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                      "spec": copy.deepcopy(tpl.get("spec") or {})}
    return out


def new_pod(sts: dict, ordinal: int, revision: str) -> dict:
    """newStatefulSetPod + setPodRevision: the pod for `ordinal` from sts's template."""
    md = sts["metadata"]
    tpl = (sts.get("spec") or {}).get("template") or {}
    tmd = tpl.get("metadata") or {}
    name = pod_name(sts, ordinal)
    labels = dict(tmd.get("labels") or {})
    labels[POD_NAME_LABEL] = name
    labels[POD_INDEX_LABEL] = str(ordinal)
    labels[REVISION_LABEL] = revision
    meta: dict = {"name": name, "namespace": md.get("namespace"), "labels": labels,
                  "ownerReferences": [{"apiVersion": sts.get("apiVersion", "apps/v1"),
                                       "kind": "StatefulSet", "name": md["name"],
                                       "uid": md.get("uid"), "controller": True,
                                       "blockOwnerDeletion": True}]}
    if tmd.get("annotations"):
        meta["annotations"] = dict(tmd["annotations"])
    if tmd.get("finalizers"):
        meta["finalizers"] = list(tmd["finalizers"])
    spec = copy.deepcopy(tpl.get("spec") or {})
    spec["hostname"] = name
    service = (sts.get("spec") or {}).get("serviceName")
    if service:
        spec["subdomain"] = service
    claims = persistent_volume_claims(sts, ordinal)
    volumes = [{"name": tname, "persistentVolumeClaim": {"claimName": c["metadata"]["name"]}}
               for tname, c in claims.items()]
    volumes += [v for v in spec.get("volumes") or [] if v.get("name") not in claims]
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def identity_matches(sts: dict, pod: dict) -> bool:
    parent, ordinal = parent_and_ordinal(pod["metadata"].get("name", ""))
    labels = pod["metadata"].get("labels") or {}
    return ordinal >= 0 and parent == sts["metadata"]["name"] and \
        pod["metadata"].get("namespace") == sts["metadata"].get("namespace") and \
        labels.get(POD_NAME_LABEL) == pod["metadata"]["name"] and \
        labels.get(POD_INDEX_LABEL) == str(ordinal)


def storage_matches(sts: dict, pod: dict) -> bool:
    ordinal = ordinal_of(pod)
    if ordinal < 0:
        return False
    vols = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    for tname, claim in persistent_volume_claims(sts, ordinal).items():
        v = vols.get(tname)
        if not v or (v.get("persistentVolumeClaim") or {}).get("claimName") != \
                claim["metadata"]["name"]:
            return False
    return True


def use_current_revision(sts: dict, ordinal: int) -> bool:
    """newVersionedStatefulSetPod's choice: create this ordinal from the current revision
    (below the partition) rather than the update revision."""
    spec = sts.get("spec") or {}
    us = spec.get("updateStrategy") or {}
    start = start_ordinal(sts)
    ru = us.get("rollingUpdate")
    if (us.get("type") or "RollingUpdate") == "RollingUpdate" and ru is None:
        return ordinal < start + int((sts.get("status") or {}).get("currentReplicas") or 0)
    if ru is not None:
        return ordinal < start + int(ru.get("partition") or 0)
    return False


# =============================================================================== claim retention
def retention_policy(sts: dict) -> tuple[str, str]:
    pol = (sts.get("spec") or {}).get("persistentVolumeClaimRetentionPolicy") or {}
    return pol.get("whenDeleted") or "Retain", pol.get("whenScaled") or "Retain"


def in_ordinal_range(sts: dict, pod: dict) -> bool:
    o = ordinal_of(pod)
    s = start_ordinal(sts)
    return s <= o < s + replica_count(sts)


def wanted_claim_owners(sts: dict, pod: dict) -> tuple[bool, bool]:
    """(owned by the set, owned by the pod) as claimOwnerMatchesSetAndPod wants it: a claim of
    a scaled-down pod under whenScaled=Delete belongs to the pod (deleted with it); otherwise
    under whenDeleted=Delete it belongs to the set (deleted with the set)."""
    when_deleted, when_scaled = retention_policy(sts)
    pod_ref = when_scaled == "Delete" and not in_ordinal_range(sts, pod)
    set_ref = when_deleted == "Delete" and not pod_ref
    return set_ref, pod_ref


def _has_ref(obj: dict, uid: str | None) -> bool:
    return any(r.get("uid") == uid for r in obj.get("metadata", {}).get("ownerReferences") or [])


def claim_owner_refs(claim: dict, sts: dict, pod: dict) -> list[dict] | None:
    """The claim's ownerReferences as the retention policy wants them, or None if they are
    right already."""
    set_ref, pod_ref = wanted_claim_owners(sts, pod)
    refs = list(claim.get("metadata", {}).get("ownerReferences") or [])
    suid, puid = sts["metadata"].get("uid"), pod["metadata"].get("uid")
    if _has_ref(claim, suid) == set_ref and (not puid or _has_ref(claim, puid) == pod_ref):
        return None
    out = [r for r in refs if r.get("uid") not in (suid, puid)]
    if set_ref:
        out.append({"apiVersion": sts.get("apiVersion", "apps/v1"), "kind": "StatefulSet",
                    "name": sts["metadata"]["name"], "uid": suid})
    if pod_ref and puid:
        out.append({"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
                    "uid": puid})
    return out


# =============================================================================== the plan
@dataclasses.dataclass
class Step:
    """One action of a plan. op: "create" (pod for ordinal, with its claims), "delete" (pod),
    "update" (fix the pod's identity labels), "claims" (create missing claims of a pending
    pod), "claim-owners" (set the claims' owner references for the retention policy)."""
    op: str
    ordinal: int
    pod: dict | None = None
    reason: str = ""


@dataclasses.dataclass
class Plan:
    steps: list[Step]
    replicas: dict[int, dict]          # existing pods in [start, start+replicas)
    condemned: list[dict]              # existing pods beyond it, highest ordinal first
    blocked: str = ""                  # why a monotonic pass stopped ("" if it did not)
    requeue_after: float | None = None


def plan_statefulset(sts: dict, pods: Iterable[dict], update_revision: str, now: float,
                     claims: dict[str, dict] | None = None) -> Plan:
    """updateStatefulSet's decisions for one pass, as an ordered list of steps.

    pods: the pods the set owns. claims: the namespace's claims by name (for the retention
    policy and for claims being deleted); None skips those checks.
    """
    spec = sts.get("spec") or {}
    start, n = start_ordinal(sts), replica_count(sts)
    monotonic = (spec.get("podManagementPolicy") or "OrderedReady") != "Parallel"
    min_ready = int(spec.get("minReadySeconds") or 0)
    replicas: dict[int, dict] = {}
    condemned: list[dict] = []
    for p in pods:
        o = ordinal_of(p)
        if o < 0:
            continue
        if start <= o < start + n:
            replicas[o] = p
        else:
            condemned.append(p)
    condemned.sort(key=ordinal_of, reverse=True)
    plan = Plan([], replicas, condemned)
    if sts["metadata"].get("deletionTimestamp"):
        return plan

    def wait(why: str, after: float | None = None) -> Plan:
        plan.blocked = why
        if after is not None:
            plan.requeue_after = after if plan.requeue_after is None else \
                min(plan.requeue_after, after)
        return plan

    # the first unhealthy pod: a missing or unhealthy replica, else the lowest condemned one
    first_unhealthy: dict | None = None
    if all(is_healthy(replicas.get(o)) for o in range(start, start + n)):
        for p in reversed(condemned):
            if not is_healthy(p):
                first_unhealthy = p
                break

    # 1. every replica in ordinal order: recreate finished pods, create missing ones, wait for
    #    each to be Running, Ready and available before the next (monotonic)
    for o in range(start, start + n):
        pod = replicas.get(o)
        if pod is not None and phase(pod) in ("Failed", "Succeeded") and not is_terminating(pod):
            plan.steps.append(Step("delete", o, pod, "failed" if phase(pod) == "Failed"
                                   else "succeeded"))
            pod = None
        if pod is None:
            stale = _stale_claim(sts, o, claims)
            if stale:
                if monotonic:
                    return wait(f"claim {stale} is stale or being deleted")
                continue
            plan.steps.append(Step("create", o))
            if monotonic:
                return wait(f"created pod {pod_name(sts, o)}")
            continue
        if phase(pod) == "Pending" and spec.get("volumeClaimTemplates") and claims is not None:
            missing = [c for c in persistent_volume_claims(sts, o).values()
                       if c["metadata"]["name"] not in claims]
            if missing:
                plan.steps.append(Step("claims", o, pod))
        if is_terminating(pod) and monotonic:
            return wait(f"pod {pod['metadata']['name']} is terminating")
        if not is_running_and_ready(pod) and monotonic:
            return wait(f"pod {pod['metadata']['name']} is not running and ready")
        if not is_pod_available(pod, min_ready, now) and monotonic:
            return wait(f"pod {pod['metadata']['name']} is not available",
                        available_in(pod, min_ready, now))
        if not identity_matches(sts, pod):
            plan.steps.append(Step("update", o, pod))
        if claims is not None and _claims_need_owners(sts, pod, claims):
            plan.steps.append(Step("claim-owners", o, pod))

    # 2. claims of condemned pods get the owners the retention policy wants
    if claims is not None:
        for pod in condemned:
            if _claims_need_owners(sts, pod, claims):
                plan.steps.append(Step("claim-owners", ordinal_of(pod), pod))

    # 3. scale down from the highest ordinal, one at a time, each gone before the next
    for pod in condemned:
        o = ordinal_of(pod)
        if is_terminating(pod):
            if monotonic:
                return wait(f"pod {pod['metadata']['name']} is terminating")
            continue
        if monotonic and pod is not first_unhealthy:
            if not is_running_and_ready(pod):
                return wait(f"pod {pod['metadata']['name']} is not running and ready")
            if not is_pod_available(pod, min_ready, now):
                return wait(f"pod {pod['metadata']['name']} is not available",
                            available_in(pod, min_ready, now))
        plan.steps.append(Step("delete", o, pod, "scale"))
        if monotonic:
            return wait(f"deleted pod {pod['metadata']['name']}")

    # 4. rolling update: from the highest ordinal down to the partition, one at a time
    us = spec.get("updateStrategy") or {}
    if (us.get("type") or "RollingUpdate") != "RollingUpdate":
        return plan
    partition = int((us.get("rollingUpdate") or {}).get("partition") or 0)
    creating = {s.ordinal for s in plan.steps if s.op == "create"}
    for idx in range(n - 1, partition - 1, -1):
        o = start + idx
        pod = replicas.get(o)
        if pod is None or o in creating:
            return wait(f"pod {pod_name(sts, o)} is being created")
        if pod_revision(pod) != update_revision and not is_terminating(pod):
            plan.steps.append(Step("delete", o, pod, "update"))
            return wait(f"deleted pod {pod['metadata']['name']} for update")
        if not is_healthy(pod):
            return wait(f"pod {pod['metadata']['name']} is not healthy")
    return plan


def _stale_claim(sts: dict, ordinal: int, claims: dict[str, dict] | None) -> str:
    """A claim the pod for `ordinal` must not be created with yet (PodClaimIsStale): one being
    deleted, or (whenScaled=Delete) one still owned by an earlier pod of that name, which the
    garbage collector is about to delete."""
    if claims is None:
        return ""
    scaled_delete = retention_policy(sts)[1] == "Delete"
    name = pod_name(sts, ordinal)
    for c in persistent_volume_claims(sts, ordinal).values():
        have = claims.get(c["metadata"]["name"])
        if have is None:
            continue
        if have.get("metadata", {}).get("deletionTimestamp"):
            return c["metadata"]["name"]
        if scaled_delete and any(r.get("kind") == "Pod" and r.get("name") == name
                                 for r in have["metadata"].get("ownerReferences") or []):
            return c["metadata"]["name"]
    return ""


def _claims_need_owners(sts: dict, pod: dict, claims: dict[str, dict]) -> bool:
    if not (sts.get("spec") or {}).get("volumeClaimTemplates"):
        return False
    o = ordinal_of(pod)
    for c in persistent_volume_claims(sts, o).values():
        have = claims.get(c["metadata"]["name"])
        if have is not None and claim_owner_refs(have, sts, pod) is not None:
            return True
    return False


# =============================================================================== status
def compute_status(sts: dict, pods: Iterable[dict], current_revision: str,
                   update_revision: str, collision_count: int, now: float) -> dict:
    """computeReplicaStatus + completeRollingUpdate."""
    spec = sts.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    st = {"observedGeneration": sts["metadata"].get("generation", 0), "replicas": 0,
          "readyReplicas": 0, "currentReplicas": 0, "updatedReplicas": 0,
          "availableReplicas": 0, "currentRevision": current_revision,
          "updateRevision": update_revision, "collisionCount": collision_count}
    for p in pods:
        st["replicas"] += 1
        if is_running_and_ready(p):
            st["readyReplicas"] += 1
            if is_pod_available(p, min_ready, now):
                st["availableReplicas"] += 1
        if not is_terminating(p):
            rev = pod_revision(p)
            if rev == current_revision:
                st["currentReplicas"] += 1
            if rev == update_revision:
                st["updatedReplicas"] += 1
    us = spec.get("updateStrategy") or {}
    if (us.get("type") or "RollingUpdate") == "RollingUpdate" and \
            st["updatedReplicas"] == st["replicas"] and st["readyReplicas"] == st["replicas"]:
        st["currentReplicas"] = st["updatedReplicas"]
        st["currentRevision"] = update_revision
    return st


def status_differs(old: dict | None, new: dict) -> bool:
    old = old or {}
    return any(old.get(k, 0 if isinstance(v, int) else "") != v for k, v in new.items())


# =============================================================================== controller
class StatefulSetController(Controller):
    name = "statefulset"
    workers = 2

    def setup(self) -> None:
        self.sets = self.informers.informer("StatefulSet")
        self.pods = self.informers.informer("Pod")
        self.revisions = self.informers.informer("ControllerRevision")
        self.claims = self.informers.informer("PersistentVolumeClaim")
        self.sets.add_handler(lambda ev, new, old: self.enqueue(new))
        self.pods.add_handler(self._on_pod)
        self.revisions.add_handler(self._on_owned)
        self.claims.add_handler(self._on_claim)

    # ---------------------------------------------------------------- event handlers
    def _sets_for(self, obj: dict) -> list[dict]:
        ns = obj.get("metadata", {}).get("namespace")
        labels = obj.get("metadata", {}).get("labels") or {}
        out = []
        for s in self.sets.list(ns):
            try:
                sel = selector_from_label_selector((s.get("spec") or {}).get("selector"))
            except ValueError:
                continue
            if not sel.empty() and sel.matches(labels) and is_member_of(s, obj):
                out.append(s)
        return out

    def _on_pod(self, event: str, new: dict, old: dict | None) -> None:
        self.enqueue_for_pod(event, new, old, "StatefulSet", self._sets_for)

    def _on_owned(self, event: str, new: dict, old: dict | None) -> None:
        self.enqueue_owner(new, "StatefulSet")

    def _on_claim(self, event: str, new: dict, old: dict | None) -> None:
        # a claim of ours finishing its deletion may unblock a pod waiting for it
        parent, _ = parent_and_ordinal(new.get("metadata", {}).get("name", ""))
        if event == "DELETED" or new.get("metadata", {}).get("deletionTimestamp"):
            ns = new["metadata"].get("namespace")
            for s in self.sets.list(ns):
                if parent.endswith("-" + s["metadata"]["name"]):
                    self.enqueue(s)

    # ---------------------------------------------------------------- reconcile
    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        sts = self.sets.get(ns, name)
        if sts is None:
            return
        try:
            selector = selector_from_label_selector((sts.get("spec") or {}).get("selector"))
        except ValueError as e:
            await self.recorder.warning(sts, "InvalidSelector", f"invalid selector: {e}")
            return
        if selector.empty():
            await self.recorder.warning(sts, "SelectingAll", "This statefulset is selecting all "
                                        "pods. A non-empty selector is required.")
            return
        pods = await history.claim(self.client, "Pod", sts, selector, self.pods.list(ns),
                                   accept=lambda p: is_member_of(sts, p))
        revisions = await history.claim(self.client, "ControllerRevision", sts, selector,
                                        self.revisions.list(ns))
        revisions = history.sort_revisions(revisions)
        current, update, collisions = await self._revisions(sts, revisions)

        claims = None
        if (sts.get("spec") or {}).get("volumeClaimTemplates"):
            claims = {c["metadata"]["name"]: c for c in self.claims.list(ns)}
        now = time.time()
        plan = plan_statefulset(sts, pods, update["metadata"]["name"], now, claims)
        if plan.blocked:
            self.log.debug("statefulset %s: %s", key, plan.blocked)
        error: Exception | None = None
        try:
            await self._execute(sts, plan, current, update)
        except APIError as e:
            error = e

        status = compute_status(sts, pods, current["metadata"]["name"],
                                update["metadata"]["name"], collisions, now)
        await self._write_status(sts, status)
        await self._truncate_history(sts, pods, revisions, current, update)
        if error is not None:
            raise error
        min_ready = int((sts.get("spec") or {}).get("minReadySeconds") or 0)
        if plan.requeue_after is not None:
            self.queue.add_after(key, plan.requeue_after + 0.01)
        elif min_ready and status["availableReplicas"] != status["readyReplicas"]:
            self.queue.add_after(key, timescale.scaled(min_ready))

    async def _revisions(self, sts: dict, revisions: list[dict]) -> tuple[dict, dict, int]:
        """getStatefulSetRevisions: (current revision, update revision, collision count)."""
        collisions = int((sts.get("status") or {}).get("collisionCount") or 0)
        candidate = history.new_revision(sts, history.next_revision(revisions), collisions)
        equal = history.find_equal_revisions(revisions, candidate)
        if equal and equal[-1] is revisions[-1]:
            update = revisions[-1]
        elif equal:
            update = await history.update_revision_number(self.client, equal[-1],
                                                          candidate["revision"])
        else:
            update, collisions = await history.create_revision(self.client, sts, candidate,
                                                               collisions)
        current_name = (sts.get("status") or {}).get("currentRevision")
        current = next((r for r in revisions if r["metadata"]["name"] == current_name), update)
        return current, update, collisions

    async def _execute(self, sts: dict, plan: Plan, current: dict, update: dict) -> None:
        current_set = history.apply_revision(sts, current)
        update_set = history.apply_revision(sts, update)
        for step in plan.steps:
            if step.op == "create":
                if use_current_revision(current_set, step.ordinal):
                    pod = new_pod(current_set, step.ordinal, current["metadata"]["name"])
                else:
                    pod = new_pod(update_set, step.ordinal, update["metadata"]["name"])
                await self._create_pod(sts, pod)
            elif step.op == "delete":
                if step.reason == "failed":
                    await self.recorder.warning(
                        sts, "RecreatingFailedPod", f"StatefulSet {sts['metadata']['namespace']}/"
                        f"{sts['metadata']['name']} is recreating failed Pod "
                        f"{step.pod['metadata']['name']}")
                elif step.reason == "succeeded":
                    await self.recorder.normal(
                        sts, "RecreatingTerminatedPod", f"StatefulSet "
                        f"{sts['metadata']['namespace']}/{sts['metadata']['name']} is recreating "
                        f"terminated Pod {step.pod['metadata']['name']}")
                await self._delete_pod(sts, step.pod)
            elif step.op == "update":
                await self._update_identity(sts, step.pod)
            elif step.op == "claims":
                await self._create_claims(sts, step.pod)
            elif step.op == "claim-owners":
                await self._fix_claim_owners(update_set, step.pod)

    async def _create_claims(self, sts: dict, pod: dict) -> None:
        """createPersistentVolumeClaims: every missing claim of the pod (before the pod)."""
        ns = sts["metadata"].get("namespace")
        errors = []
        for claim in persistent_volume_claims(sts, ordinal_of(pod)).values():
            cname = claim["metadata"]["name"]
            have = self.claims.get(ns, cname)
            if have is None:
                try:
                    await self.client.create("PersistentVolumeClaim", claim, ns)
                    await self.recorder.normal(
                        sts, "SuccessfulCreate", f"create Claim {cname} Pod "
                        f"{pod['metadata']['name']} in StatefulSet {sts['metadata']['name']} "
                        f"success")
                except APIError as e:
                    if e.code == 409:  # created meanwhile (our cache lags)
                        have = await self.client.get_or_none("PersistentVolumeClaim", ns, cname)
                    else:
                        await self.recorder.warning(
                            sts, "FailedCreate", f"create Claim {cname} for Pod "
                            f"{pod['metadata']['name']} in StatefulSet "
                            f"{sts['metadata']['name']} failed error: {e.message}")
                        errors.append(e)
            if have is not None and have["metadata"].get("deletionTimestamp"):
                errors.append(APIError(409, "Conflict", f"pvc {cname} is being deleted"))
        if errors:
            raise errors[0]

    async def _create_pod(self, sts: dict, pod: dict) -> None:
        """CreateStatefulPod: claims first, then the pod; events as Kubernetes words them."""
        pname, sname = pod["metadata"]["name"], sts["metadata"]["name"]
        try:
            await self._create_claims(sts, pod)
            created = await self.client.create("Pod", pod, pod["metadata"]["namespace"])
        except APIError as e:
            if e.code == 409 and e.reason == "AlreadyExists":
                # our cache has not seen the pod yet: its watch event brings us back
                return
            await self.recorder.warning(sts, "FailedCreate", f"create Pod {pname} in "
                                        f"StatefulSet {sname} failed error: {e.message}")
            raise
        await self.recorder.normal(sts, "SuccessfulCreate",
                                   f"create Pod {pname} in StatefulSet {sname} successful")
        if (sts.get("spec") or {}).get("volumeClaimTemplates"):
            await self._fix_claim_owners(sts, created)

    async def _delete_pod(self, sts: dict, pod: dict) -> None:
        pname, sname = pod["metadata"]["name"], sts["metadata"]["name"]
        try:
            await self.client.delete("Pod", pod["metadata"]["namespace"], pname,
                                     preconditions={"uid": pod["metadata"]["uid"]})
        except APIError as e:
            if e.not_found or e.conflict:
                return
            await self.recorder.warning(sts, "FailedDelete", f"delete Pod {pname} in "
                                        f"StatefulSet {sname} failed error: {e.message}")
            raise
        await self.recorder.normal(sts, "SuccessfulDelete",
                                   f"delete Pod {pname} in StatefulSet {sname} successful")

    async def _update_identity(self, sts: dict, pod: dict) -> None:
        """UpdateStatefulPod: restore the identity labels (someone removed or changed them)."""
        o = ordinal_of(pod)
        patch = {"metadata": {"labels": {POD_NAME_LABEL: pod["metadata"]["name"],
                                         POD_INDEX_LABEL: str(o)}}}
        try:
            await self.client.patch("Pod", pod["metadata"]["namespace"],
                                     pod["metadata"]["name"], patch, patch_type=SMP)
        except APIError as e:
            if e.not_found:
                return
            await self.recorder.warning(
                sts, "FailedUpdate", f"update Pod {pod['metadata']['name']} in StatefulSet "
                f"{sts['metadata']['name']} failed error: {e.message}")
            raise

    async def _fix_claim_owners(self, sts: dict, pod: dict) -> None:
        """UpdatePodClaimForRetentionPolicy: owner references on the pod's claims."""
        ns = sts["metadata"].get("namespace")
        for claim in persistent_volume_claims(sts, ordinal_of(pod)).values():
            have = self.claims.get(ns, claim["metadata"]["name"])
            if have is None:
                continue
            refs = claim_owner_refs(have, sts, pod)
            if refs is None:
                continue
            new = copy.deepcopy(have)
            new["metadata"]["ownerReferences"] = refs
            try:
                await self.client.update("PersistentVolumeClaim", new)
            except APIError as e:
                if not e.not_found:
                    raise

    async def _write_status(self, sts: dict, status: dict) -> None:
        if not status_differs(sts.get("status"), status):
            return
        new = copy.deepcopy(sts)
        new.setdefault("status", {}).update(status)
        try:
            await self.client.update_status("StatefulSet", new)
        except APIError as e:
            if e.not_found:
                return
            if e.conflict:  # the watch brings the newer object and us back
                self.queue.add_after(f"{sts['metadata'].get('namespace')}/"
                                     f"{sts['metadata']['name']}", 0.05)
                return
            raise

    async def _truncate_history(self, sts: dict, pods: list[dict], revisions: list[dict],
                                current: dict, update: dict) -> None:
        live = {current["metadata"]["name"], update["metadata"]["name"]}
        live |= {pod_revision(p) for p in pods}
        limit = (sts.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        for r in history.revisions_to_prune(revisions, live, limit):
            try:
                await self.client.delete("ControllerRevision", r["metadata"].get("namespace"),
                                         r["metadata"]["name"])
            except APIError as e:
                if not e.not_found:
                    raise
