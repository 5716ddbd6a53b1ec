"""The DaemonSet controller (kube-controller-manager's daemonset controller,
pkg/controller/daemon): one pod of the set on every eligible node.

- A node is eligible when the template's nodeName (if any), nodeSelector and required node
  affinity match it and the pod (with the tolerations every daemon pod gets:
  not-ready/unreachable NoExecute, disk-/memory-/pid-pressure and unschedulable NoSchedule, and
  network-unavailable for hostNetwork pods) tolerates its NoSchedule/NoExecute taints. A node's
  Ready condition does not matter. A pod may keep running on a node whose only untolerated
  taints are NoSchedule.
- Pods are created as Kubernetes does since 1.12: scheduled by the default scheduler, pinned to
  their node by a required node affinity term matchFields metadata.name In [node].
- The controller follows nodes joining, leaving and changing: missing pods are created, pods on
  nodes that no longer qualify are deleted, failed pods are deleted (with a per-node back-off)
  and created again, surplus pods on a node are deleted (the oldest stays). Pods bound to a Node
  that no longer exists are deleted at once (Kubernetes leaves these to the pod GC controller).
- Template history lives in ControllerRevisions (controllers/history.py); pods carry the
  revision's hash in `controller-revision-hash`. RollingUpdate replaces old pods while at most
  maxUnavailable pods are unavailable (maxSurge 0), or starts new pods beside old ones up to
  maxSurge and deletes the old once the new is available; OnDelete only replaces pods users
  delete.
- status: desiredNumberScheduled, currentNumberScheduled, numberReady, updatedNumberScheduled,
  numberAvailable, numberUnavailable, numberMisscheduled, observedGeneration, collisionCount.

The decisions are pure functions over dicts (node_should_run, plan_manage, plan_rolling_update,
compute_status); `DaemonSetController.reconcile` gathers state from the caches and applies them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable

from kubelab import timescale
from kubelab.client import APIError
from kubelab.selectors import selector_from_label_selector

from . import history
from .base import Controller, split_key
from .statefulset import is_pod_available, is_pod_ready, parse_time

HASH_LABEL = history.CONTROLLER_REVISION_HASH_LABEL
TEMPLATE_GENERATION_LABEL = "pod-template-generation"
TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
BACKOFF_BASE, BACKOFF_MAX = 1.0, 15 * 60.0     # failedPodsBackoff
EXPECTATIONS_TIMEOUT = 5 * 60.0                # controller.ExpectationsTimeout

DAEMON_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]
NETWORK_UNAVAILABLE_TOLERATION = {"key": "node.kubernetes.io/network-unavailable",
                                  "operator": "Exists", "effect": "NoSchedule"}


# =============================================================================== tolerations
def add_daemon_tolerations(spec: dict) -> None:
    """util.AddOrUpdateDaemonPodTolerations: add (or replace, matching key/operator/value/
    effect) the tolerations every daemon pod carries."""
    tols = list(spec.get("tolerations") or [])
    extra = list(DAEMON_TOLERATIONS)
    if spec.get("hostNetwork"):
        extra.append(NETWORK_UNAVAILABLE_TOLERATION)
    for t in extra:
        for i, have in enumerate(tols):
            if have.get("key") == t["key"] and (have.get("effect") or "") == t["effect"] and \
                    (have.get("operator") or "Equal") == t["operator"] and \
                    (have.get("value") or "") == "":
                tols[i] = dict(t)
                break
        else:
            tols.append(dict(t))
    spec["tolerations"] = tols


def tolerates(toleration: dict, taint: dict) -> bool:
    """v1.Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    op = toleration.get("operator") or "Equal"
    if key and key != taint.get("key"):
        return False
    if op == "Exists":
        return True
    if op == "Equal":
        return key != "" and (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def untolerated_taint(taints: Iterable[dict], tolerations: list[dict],
                      effects: tuple[str, ...]) -> dict | None:
    """v1helper.FindMatchingUntoleratedTaint for taints with one of `effects`."""
    for taint in taints or []:
        if taint.get("effect") not in effects:
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


# =============================================================================== node affinity
def _requirement_matches(req: dict, value: str | None, present: bool) -> bool:
    op, vals = req.get("operator"), req.get("values") or []
    if op == "In":
        return present and value in vals
    if op == "NotIn":
        return not present or value not in vals
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        try:
            n, ref = int(value or ""), int(vals[0])
        except (ValueError, IndexError):
            return False
        return n > ref if op == "Gt" else n < ref
    return False


def term_matches(term: dict, node: dict) -> bool:
    """A NodeSelectorTerm: all matchExpressions (labels) and matchFields (metadata.name); an
    empty term matches nothing."""
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = node.get("metadata", {}).get("labels") or {}
    for r in exprs:
        k = r.get("key", "")
        if not _requirement_matches(r, labels.get(k), k in labels):
            return False
    for r in fields:
        if r.get("key") != "metadata.name":
            return False
        if not _requirement_matches(r, node["metadata"]["name"], True):
            return False
    return True


def required_affinity_matches(pod_spec: dict, node: dict) -> bool:
    """nodeaffinity.GetRequiredNodeAffinity(pod).Match(node): nodeSelector and the required
    node affinity terms (ORed)."""
    labels = node.get("metadata", {}).get("labels") or {}
    for k, v in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    req = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
           .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if req is None:
        return True
    return any(term_matches(t, node) for t in req.get("nodeSelectorTerms") or [])


def replace_node_affinity(spec: dict, node_name: str) -> None:
    """util.ReplaceDaemonSetPodNodeNameNodeAffinity: pin the pod to node_name through one
    required term matchFields metadata.name In [node_name] (other required terms go)."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In",
                             "values": [node_name]}]}
    aff = spec.get("affinity")
    if not isinstance(aff, dict):
        aff = spec["affinity"] = {}
    na = aff.get("nodeAffinity")
    if not isinstance(na, dict):
        na = aff["nodeAffinity"] = {}
    na["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [term]}


def target_node_name(pod: dict) -> str | None:
    """util.GetTargetNodeName: spec.nodeName, or the node the affinity pins the pod to."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    req = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
           .get("requiredDuringSchedulingIgnoredDuringExecution")) or {}
    terms = req.get("nodeSelectorTerms") or []
    if len(terms) != 1:
        return None
    for r in terms[0].get("matchFields") or []:
        if r.get("key") == "metadata.name" and r.get("operator") == "In" and \
                len(r.get("values") or []) == 1:
            return r["values"][0]
    return None


# =============================================================================== eligibility
def daemon_pod_spec(ds: dict, node_name: str) -> dict:
    """NewPod's spec: the template's spec on node_name with the daemon tolerations."""
    spec = copy.deepcopy(((ds.get("spec") or {}).get("template") or {}).get("spec") or {})
    spec["nodeName"] = node_name
    add_daemon_tolerations(spec)
    return spec


def node_should_run(node: dict, ds: dict) -> tuple[bool, bool]:
    """NodeShouldRunDaemonPod: (should run a daemon pod, may keep running an existing one)."""
    name = node["metadata"]["name"]
    tpl_node = (((ds.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeName")
    if tpl_node and tpl_node != name:
        return False, False
    spec = daemon_pod_spec(ds, name)
    if not required_affinity_matches(spec, node):
        return False, False
    taints = (node.get("spec") or {}).get("taints") or []
    tols = spec.get("tolerations") or []
    if untolerated_taint(taints, tols, ("NoSchedule", "NoExecute")) is not None:
        return False, untolerated_taint(taints, tols, ("NoExecute",)) is None
    return True, True


# =============================================================================== pods
def template_generation(ds: dict) -> int | None:
    v = (ds.get("metadata", {}).get("annotations") or {}).get(TEMPLATE_GENERATION_ANNOTATION)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def is_pod_updated(pod: dict, hash_: str, generation: int | None) -> bool:
    """util.IsPodUpdated: the pod carries the current revision's hash (or, for pods of old
    controllers, the current template generation)."""
    labels = pod.get("metadata", {}).get("labels") or {}
    if generation is not None and labels.get(TEMPLATE_GENERATION_LABEL) == str(generation):
        return True
    return bool(hash_) and labels.get(HASH_LABEL) == hash_


def new_daemon_pod(ds: dict, node_name: str, hash_: str) -> dict:
    """CreatePodTemplate + GetPodFromTemplate + ReplaceDaemonSetPodNodeNameNodeAffinity."""
    md = ds["metadata"]
    tpl = (ds.get("spec") or {}).get("template") or {}
    tmd = tpl.get("metadata") or {}
    labels = dict(tmd.get("labels") or {})
    gen = template_generation(ds)
    if gen is not None:
        labels[TEMPLATE_GENERATION_LABEL] = str(gen)
    if hash_:
        labels[HASH_LABEL] = hash_
    meta: dict = {"generateName": f"{md['name']}-", "namespace": md.get("namespace"),
                  "labels": labels,
                  "ownerReferences": [{"apiVersion": ds.get("apiVersion", "apps/v1"),
                                       "kind": "DaemonSet", "name": md["name"],
                                       "uid": md.get("uid"), "controller": True,
                                       "blockOwnerDeletion": True}]}
    if tmd.get("annotations"):
        meta["annotations"] = dict(tmd["annotations"])
    if tmd.get("finalizers"):
        meta["finalizers"] = list(tmd["finalizers"])
    spec = copy.deepcopy(tpl.get("spec") or {})
    add_daemon_tolerations(spec)
    replace_node_affinity(spec, node_name)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or ""


def _deleting(obj: dict) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def pod_order_key(pod: dict) -> tuple:
    """podByCreationTimestampAndPhase: scheduled pods first, then oldest, then by name."""
    return (0 if (pod.get("spec") or {}).get("nodeName") else 1,
            parse_time(pod.get("metadata", {}).get("creationTimestamp")) or 0.0,
            pod.get("metadata", {}).get("name", ""))


def group_by_node(pods: Iterable[dict], include_deleted_terminal: bool = False
                  ) -> dict[str, list[dict]]:
    """getNodesToDaemonPods: the set's pods by the node they run on or are pinned to."""
    out: dict[str, list[dict]] = {}
    for p in pods:
        if not include_deleted_terminal and _deleting(p) and _phase(p) in ("Failed", "Succeeded"):
            continue
        node = target_node_name(p)
        if node is None:
            continue
        out.setdefault(node, []).append(p)
    return out


def allows_surge(ds: dict) -> bool:
    return surge_value(ds, 1) > 0 if _rolling(ds) else False


def _rolling(ds: dict) -> bool:
    return (((ds.get("spec") or {}).get("updateStrategy") or {}).get("type")
            or "RollingUpdate") == "RollingUpdate"


def _scaled(v, total: int) -> int:
    """intstr.GetScaledValueFromIntOrPercent(v, total, roundUp=true)."""
    if v is None:
        return 0
    if isinstance(v, str):
        if v.endswith("%"):
            try:
                return math.ceil(int(v[:-1]) * total / 100)
            except ValueError:
                return 0
        try:
            return int(v)
        except ValueError:
            return 0
    return int(v)


def _rolling_params(ds: dict) -> dict:
    return (((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate")) or {}


def surge_value(ds: dict, desired: int) -> int:
    return _scaled(_rolling_params(ds).get("maxSurge"), desired) if _rolling(ds) else 0


def unavailable_value(ds: dict, desired: int) -> int:
    if not _rolling(ds):
        return 0
    ru = _rolling_params(ds)
    return _scaled(ru.get("maxUnavailable", 1), desired)


# =============================================================================== manage
@dataclasses.dataclass
class ManagePlan:
    nodes_needing_pods: list[str]
    pods_to_delete: list[dict]
    failed_pods: list[tuple[str, dict]]        # (node, pod) failed pods being deleted
    force_delete: list[dict]                   # pods bound to nodes that no longer exist
    requeue_after: float | None = None


def plan_manage(ds: dict, nodes: list[dict], node_to_pods: dict[str, list[dict]], hash_: str,
                now: float, in_backoff: Callable[[str], float] | None = None) -> ManagePlan:
    """manage + podsShouldBeOnNode: which nodes need a daemon pod and which pods must go.

    in_backoff(node) -> seconds left of the failed-pod back-off for that node (0 if none)."""
    plan = ManagePlan([], [], [], [])
    min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
    surge = allows_surge(ds)
    node_names = set()
    for node in nodes:
        name = node["metadata"]["name"]
        node_names.add(name)
        should_run, should_continue = node_should_run(node, ds)
        pods = node_to_pods.get(name) or []
        if should_run and not pods:
            plan.nodes_needing_pods.append(name)
        elif should_continue:
            running = []
            for p in pods:
                if _deleting(p):
                    continue
                if _phase(p) == "Failed":
                    left = in_backoff(name) if in_backoff else 0.0
                    if left > 0:
                        plan.requeue_after = left if plan.requeue_after is None else \
                            min(plan.requeue_after, left)
                        continue
                    plan.failed_pods.append((name, p))
                    plan.pods_to_delete.append(p)
                elif _phase(p) == "Succeeded":
                    plan.pods_to_delete.append(p)
                else:
                    running.append(p)
            running.sort(key=pod_order_key)
            if not surge:
                plan.pods_to_delete.extend(running[1:])
                continue
            # surge: keep at most the oldest new pod and (while it is not yet available) the
            # oldest old pod
            oldest_new = oldest_old = None
            for p in running:
                if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == hash_:
                    if oldest_new is None:
                        oldest_new = p
                        continue
                elif oldest_old is None:
                    oldest_old = p
                    continue
                plan.pods_to_delete.append(p)
            if oldest_new is not None and oldest_old is not None and \
                    (not is_pod_ready(oldest_old) or is_pod_available(oldest_new, min_ready, now)):
                plan.pods_to_delete.append(oldest_old)
        elif pods:
            plan.pods_to_delete.extend(p for p in pods if not _deleting(p))
    # pods pinned to or bound to nodes that do not exist (any more)
    for name, pods in node_to_pods.items():
        if name in node_names:
            continue
        for p in pods:
            if (p.get("spec") or {}).get("nodeName"):
                plan.force_delete.append(p)
            elif not _deleting(p):
                plan.pods_to_delete.append(p)
    return plan


# =============================================================================== rolling update
def find_updated_pods_on_node(ds: dict, pods: list[dict], hash_: str
                              ) -> tuple[dict | None, dict | None, bool]:
    """findUpdatedPodsOnNode: (new pod, old pod, ok); not ok when a node has two of a kind."""
    gen = template_generation(ds)
    new = old = None
    for p in pods:
        if _deleting(p):
            continue
        if is_pod_updated(p, hash_, gen):
            if new is not None:
                return None, None, False
            new = p
        else:
            if old is not None:
                return None, None, False
            old = p
    return new, old, True


def desired_count(ds: dict, nodes: list[dict]) -> int:
    return sum(1 for n in nodes if node_should_run(n, ds)[0])


def plan_rolling_update(ds: dict, nodes: list[dict], node_to_pods: dict[str, list[dict]],
                        hash_: str, now: float) -> tuple[list[dict], list[str]]:
    """rollingUpdate: (old pods to delete, nodes to start a new pod on)."""
    min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
    desired = desired_count(ds, nodes)
    max_surge = surge_value(ds, desired)
    max_unavailable = unavailable_value(ds, desired)
    if desired > 0 and max_unavailable == 0 and max_surge == 0:
        max_unavailable = 1
    by_name = {n["metadata"]["name"]: n for n in nodes}

    if max_surge == 0:
        unavailable = 0
        replace: list[dict] = []
        candidates: list[dict] = []
        for node_name in sorted(node_to_pods):
            new, old, ok = find_updated_pods_on_node(ds, node_to_pods[node_name], hash_)
            if not ok:
                unavailable += 1
                continue
            if (old is None and new is None) or (old is not None and new is not None):
                unavailable += 1
            elif new is not None:
                if not is_pod_available(new, min_ready, now):
                    unavailable += 1
            elif not is_pod_available(old, min_ready, now):
                replace.append(old)
                unavailable += 1
            elif unavailable < max_unavailable:
                candidates.append(old)
        remaining = max(0, max_unavailable - unavailable)
        return replace + candidates[:remaining], []

    to_delete: list[dict] = []
    should_not_run: list[dict] = []
    allowed_new: list[str] = []
    candidate_new: list[str] = []
    surged = available = 0
    for node_name in sorted(node_to_pods):
        new, old, ok = find_updated_pods_on_node(ds, node_to_pods[node_name], hash_)
        if not ok:
            surged += 1
            continue
        if old is not None:
            available += is_pod_available(old, min_ready, now)
        elif new is not None:
            available += is_pod_available(new, min_ready, now)
        if old is None:
            continue
        node = by_name.get(node_name)
        should_run = node is not None and node_should_run(node, ds)[0]
        if new is None:
            if not is_pod_available(old, min_ready, now):
                if not should_run:
                    to_delete.append(old)
                    continue
                allowed_new.append(node_name)
            else:
                if not should_run:
                    should_not_run.append(old)
                    continue
                if surged >= max_surge:
                    continue
                candidate_new.append(node_name)
        else:
            if not is_pod_available(new, min_ready, now):
                surged += 1
                continue
            to_delete.append(old)
    deletable = available - desired
    if deletable > 0:
        to_delete.extend(p for p in should_not_run[:deletable] if not _deleting(p))
    remaining = max(0, max_surge - surged)
    return to_delete, allowed_new + candidate_new[:remaining]


# =============================================================================== status
def compute_status(ds: dict, nodes: list[dict], node_to_pods: dict[str, list[dict]],
                   hash_: str, now: float) -> dict:
    """updateDaemonSetStatus's counts."""
    min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
    gen = template_generation(ds)
    desired = current = ready = available = updated = misscheduled = 0
    for node in nodes:
        should_run, _ = node_should_run(node, ds)
        pods = node_to_pods.get(node["metadata"]["name"]) or []
        if should_run:
            desired += 1
            if not pods:
                continue
            current += 1
            pod = min(pods, key=pod_order_key)
            if is_pod_ready(pod):
                ready += 1
                if is_pod_available(pod, min_ready, now):
                    available += 1
            if is_pod_updated(pod, hash_, gen):
                updated += 1
        elif pods:
            misscheduled += 1
    return {"observedGeneration": ds["metadata"].get("generation", 0),
            "desiredNumberScheduled": desired, "currentNumberScheduled": current,
            "numberReady": ready, "numberAvailable": available,
            "numberUnavailable": desired - available, "updatedNumberScheduled": updated,
            "numberMisscheduled": misscheduled}


# =============================================================================== history
def cleanup_candidates(old: list[dict], live_hashes: set[str], limit: int) -> list[dict]:
    """cleanupHistory: delete the oldest old revisions no pod uses until at most `limit` old
    revisions are left (those still in use count towards the limit but stay)."""
    to_kill = len(old) - max(0, limit)
    out = []
    for r in history.sort_revisions(old):
        if to_kill <= 0:
            break
        if (r["metadata"].get("labels") or {}).get(HASH_LABEL) in live_hashes:
            continue
        out.append(r)
        to_kill -= 1
    return out


# =============================================================================== controller
@dataclasses.dataclass
class _Expectations:
    """Pods this controller created or deleted that its cache has not shown yet (client-go's
    ControllerExpectations, checked against the cache so no event can be missed)."""
    creates: set[str] = dataclasses.field(default_factory=set)    # pod names
    deletes: set[str] = dataclasses.field(default_factory=set)    # pod uids
    deadline: float = 0.0


class DaemonSetController(Controller):
    name = "daemonset"
    workers = 2

    def setup(self) -> None:
        self.sets = self.informers.informer("DaemonSet")
        self.pods = self.informers.informer("Pod")
        self.nodes = self.informers.informer("Node")
        self.revisions = self.informers.informer("ControllerRevision")
        self.sets.add_handler(lambda ev, new, old: self.enqueue(new))
        self.pods.add_handler(self._on_pod)
        self.nodes.add_handler(self._on_node)
        self.revisions.add_handler(lambda ev, new, old: self.enqueue_owner(new, "DaemonSet"))
        self.expectations: dict[str, _Expectations] = {}
        self.backoff: dict[tuple[str, str], tuple[float, float]] = {}  # -> (delay, last)

    # ---------------------------------------------------------------- event handlers
    def _sets_for_pod(self, pod: dict) -> list[dict]:
        ns = pod.get("metadata", {}).get("namespace")
        labels = pod.get("metadata", {}).get("labels") or {}
        out = []
        for s in self.sets.list(ns):
            try:
                sel = selector_from_label_selector((s.get("spec") or {}).get("selector"))
            except ValueError:
                continue
            if not sel.empty() and sel.matches(labels):
                out.append(s)
        return out

    def _on_pod(self, event: str, new: dict, old: dict | None) -> None:
        self.enqueue_for_pod(event, new, old, "DaemonSet", self._sets_for_pod)

    def _on_node(self, event: str, new: dict, old: dict | None) -> None:
        if event == "MODIFIED" and old is not None and old is not new:
            o, n = old.get("metadata", {}), new.get("metadata", {})
            if o.get("labels") == n.get("labels") and \
                    (old.get("spec") or {}).get("taints") == (new.get("spec") or {}).get("taints") \
                    and (old.get("spec") or {}).get("unschedulable") == \
                    (new.get("spec") or {}).get("unschedulable"):
                return  # heartbeats and conditions do not change where daemons run
        for s in self.sets.list():
            self.enqueue(s)

    # ---------------------------------------------------------------- expectations, back-off
    def _satisfied(self, key: str, ns: str | None) -> bool:
        exp = self.expectations.get(key)
        if exp is None:
            return True
        exp.creates = {n for n in exp.creates if self.pods.get(ns, n) is None}
        exp.deletes = {u for u in exp.deletes
                       if any(p["metadata"].get("uid") == u and not _deleting(p)
                              for p in self.pods.list(ns))}
        if (not exp.creates and not exp.deletes) or time.monotonic() > exp.deadline:
            self.expectations.pop(key, None)
            return True
        return False

    def _expect(self, key: str) -> _Expectations:
        exp = self.expectations.setdefault(key, _Expectations())
        exp.deadline = time.monotonic() + timescale.scaled(EXPECTATIONS_TIMEOUT)
        return exp

    def _backoff_left(self, key: str, node: str, now: float) -> float:
        entry = self.backoff.get((key, node))
        if entry is None:
            return 0.0
        delay, last = entry
        return max(0.0, last + delay - now)

    def _backoff_next(self, key: str, node: str, now: float) -> None:
        entry = self.backoff.get((key, node))
        base, cap = timescale.scaled(BACKOFF_BASE), timescale.scaled(BACKOFF_MAX)
        if entry is None or now - entry[1] > 2 * cap:
            self.backoff[(key, node)] = (base, now)
        else:
            self.backoff[(key, node)] = (min(entry[0] * 2, cap), now)

    # ---------------------------------------------------------------- reconcile
    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        ds = self.sets.get(ns, name)
        if ds is None:
            self.expectations.pop(key, None)
            for k in [k for k in self.backoff if k[0] == key]:
                self.backoff.pop(k, None)
            return
        sel_spec = (ds.get("spec") or {}).get("selector")
        try:
            selector = selector_from_label_selector(sel_spec)
        except ValueError as e:
            await self.recorder.warning(ds, "InvalidSelector", f"invalid selector: {e}")
            return
        if selector.empty():
            await self.recorder.warning(ds, "SelectingAll", "This daemon set is selecting all "
                                        "pods. A non-empty selector is required.")
            return
        pods = await history.claim(self.client, "Pod", ds, selector, self.pods.list(ns))
        nodes = sorted(self.nodes.list(), key=lambda n: n["metadata"]["name"])
        if ds["metadata"].get("deletionTimestamp"):
            return
        revisions = await history.claim(self.client, "ControllerRevision", ds, selector,
                                        self.revisions.list(ns))
        cur, old = await self._construct_history(ds, revisions, pods)
        hash_ = (cur["metadata"].get("labels") or {}).get(HASH_LABEL, "")
        now = time.time()

        error: Exception | None = None
        requeue: float | None = None
        satisfied = self._satisfied(key, ns)
        if satisfied:
            try:
                requeue = await self._update(ds, key, nodes, pods, hash_, now)
                await self._cleanup_history(ds, old, pods)
            except APIError as e:
                error = e
        node_to_pods = group_by_node(pods)
        status = compute_status(ds, nodes, node_to_pods, hash_, now)
        if not satisfied:  # the controller has not acted on this generation yet
            status["observedGeneration"] = (ds.get("status") or {}).get("observedGeneration", 0)
        await self._write_status(ds, status)
        if error is not None:
            raise error
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        if min_ready and status["numberAvailable"] != status["numberReady"]:
            requeue = min(requeue or math.inf, timescale.scaled(min_ready))
        if requeue is not None and requeue != math.inf:
            self.queue.add_after(key, requeue + 0.01)

    async def _update(self, ds: dict, key: str, nodes: list[dict], pods: list[dict],
                      hash_: str, now: float) -> float | None:
        """manage, then (once our own changes are visible) the rolling update."""
        node_to_pods = group_by_node(pods)
        plan = plan_manage(ds, nodes, node_to_pods, hash_, now,
                           lambda node: self._backoff_left(key, node, now))
        for node, pod in plan.failed_pods:
            self._backoff_next(key, node, now)
            await self.recorder.warning(
                ds, "FailedDaemonPod", f"Found failed daemon pod {pod['metadata']['namespace']}/"
                f"{pod['metadata']['name']} on node {node}, will try to kill it")
        for pod in plan.force_delete:
            await self._delete(ds, key, pod, grace_period=0)
        await self._sync_nodes(ds, key, plan.pods_to_delete, plan.nodes_needing_pods, hash_)
        if plan.pods_to_delete or plan.nodes_needing_pods or plan.force_delete:
            return plan.requeue_after
        if _rolling(ds) and self._satisfied(key, ds["metadata"].get("namespace")):
            delete, create = plan_rolling_update(ds, nodes, node_to_pods, hash_, now)
            await self._sync_nodes(ds, key, delete, create, hash_)
        return plan.requeue_after

    async def _sync_nodes(self, ds: dict, key: str, delete: list[dict], create: list[str],
                          hash_: str) -> None:
        errors: list[APIError] = []
        for node in create:
            pod = new_daemon_pod(ds, node, hash_)
            try:
                created = await self.client.create("Pod", pod, ds["metadata"].get("namespace"))
            except APIError as e:
                await self.recorder.warning(ds, "FailedCreate", f"Error creating: {e.message}")
                errors.append(e)
                continue
            self._expect(key).creates.add(created["metadata"]["name"])
            await self.recorder.normal(ds, "SuccessfulCreate",
                                       f"Created pod: {created['metadata']['name']}")
        for pod in delete:
            try:
                await self._delete(ds, key, pod)
            except APIError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    async def _delete(self, ds: dict, key: str, pod: dict, grace_period: int | None = None
                      ) -> None:
        md = pod["metadata"]
        try:
            await self.client.delete("Pod", md.get("namespace"), md["name"],
                                     grace_period=grace_period,
                                     preconditions={"uid": md.get("uid")})
        except APIError as e:
            if e.not_found or e.conflict:
                return
            await self.recorder.warning(ds, "FailedDelete", f"Error deleting: {e.message}")
            raise
        self._expect(key).deletes.add(md.get("uid"))
        await self.recorder.normal(ds, "SuccessfulDelete", f"Deleted pod: {md['name']}")

    # ---------------------------------------------------------------- history
    async def _construct_history(self, ds: dict, revisions: list[dict], pods: list[dict]
                                 ) -> tuple[dict, list[dict]]:
        """constructHistory: the revision matching the current template (created, or
        re-numbered to be the newest) and the old ones."""
        current: list[dict] = []
        old: list[dict] = []
        for r in revisions:
            if not (r["metadata"].get("labels") or {}).get(HASH_LABEL):
                new = copy.deepcopy(r)
                new["metadata"].setdefault("labels", {})[HASH_LABEL] = r["metadata"]["name"]
                r = await self.client.update("ControllerRevision", new)
            (current if history.data_matches(ds, r) else old).append(r)
        number = history.next_revision(old)
        if not current:
            return await self._snapshot(ds, number), old
        cur = await self._dedup(ds, current, pods)
        if (cur.get("revision") or 0) < number:
            cur = await history.update_revision_number(self.client, cur, number)
        return cur, old

    async def _snapshot(self, ds: dict, number: int) -> dict:
        collisions = (ds.get("status") or {}).get("collisionCount")
        tpl = (ds.get("spec") or {}).get("template") or {}
        hash_ = history.compute_template_hash(tpl, collisions)
        rev = history.new_revision(ds, number, hash_=hash_)
        ns = ds["metadata"].get("namespace")
        try:
            return await self.client.create("ControllerRevision", rev, ns)
        except APIError as e:
            if e.code != 409:
                raise
        exists = await self.client.get("ControllerRevision", ns, rev["metadata"]["name"])
        if history.data_matches(ds, exists):
            return exists
        # a hash collision: bump status.collisionCount (if ours was fresh) and retry
        fresh = await self.client.get("DaemonSet", ns, ds["metadata"]["name"])
        if (fresh.get("status") or {}).get("collisionCount") == collisions:
            fresh.setdefault("status", {})["collisionCount"] = (collisions or 0) + 1
            await self.client.update_status("DaemonSet", fresh)
        raise APIError(409, "AlreadyExists", f"hash collision creating revision "
                                             f"{rev['metadata']['name']}")

    async def _dedup(self, ds: dict, current: list[dict], pods: list[dict]) -> dict:
        """dedupCurHistories: keep the newest revision of the current template; pods labelled
        with a duplicate's hash get the kept one's, and the duplicates go."""
        keep = max(current, key=lambda r: r.get("revision") or 0)
        keep_hash = (keep["metadata"].get("labels") or {}).get(HASH_LABEL)
        for r in current:
            if r is keep:
                continue
            dup_hash = (r["metadata"].get("labels") or {}).get(HASH_LABEL)
            for p in pods:
                if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == dup_hash:
                    await self.client.patch(
                        "Pod", p["metadata"].get("namespace"), p["metadata"]["name"],
                        {"metadata": {"labels": {HASH_LABEL: keep_hash}}})
            try:
                await self.client.delete("ControllerRevision", r["metadata"].get("namespace"),
                                         r["metadata"]["name"])
            except APIError as e:
                if not e.not_found:
                    raise
        return keep

    async def _cleanup_history(self, ds: dict, old: list[dict], pods: list[dict]) -> None:
        limit = (ds.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        live = {(p["metadata"].get("labels") or {}).get(HASH_LABEL) for p in pods}
        for r in cleanup_candidates(old, {h for h in live if h}, limit):
            try:
                await self.client.delete("ControllerRevision", r["metadata"].get("namespace"),
                                         r["metadata"]["name"])
            except APIError as e:
                if not e.not_found:
                    raise

    async def _write_status(self, ds: dict, status: dict) -> None:
        old = ds.get("status") or {}
        if all(old.get(k, 0) == v for k, v in status.items()):
            return
        new = copy.deepcopy(ds)
        new.setdefault("status", {}).update(status)
        try:
            await self.client.update_status("DaemonSet", new)
        except APIError as e:
            if e.not_found:
                return
            if e.conflict:
                self.queue.add_after(f"{ds['metadata'].get('namespace')}/"
                                     f"{ds['metadata']['name']}", 0.05)
                return
            raise
