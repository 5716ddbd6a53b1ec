"""The Deployment controller (kube-controller-manager's pkg/controller/deployment).

A Deployment owns ReplicaSets named `<deployment>-<pod-template-hash>`; the hash is computed
from the pod template (FNV-32a, rendered with SafeEncodeString) and added as the
`pod-template-hash` label to the ReplicaSet's selector, its template and so its pods. The
ReplicaSet whose template equals the Deployment's (ignoring that label) is the *new* one; all
others are *old*. A sync:

* claims ReplicaSets (adopts matching orphans, releases ones that stopped matching),
* when paused, or when spec.replicas changed (a scaling event: some active ReplicaSet's
  desired-replicas annotation differs), scales the ReplicaSets proportionally,
* otherwise rolls out: RollingUpdate scales the new ReplicaSet up to at most
  replicas + maxSurge pods and old ones down while at least replicas - maxUnavailable stay
  available; Recreate scales every old ReplicaSet to 0, waits until their pods are gone, then
  creates and scales up the new one,
* deletes the oldest zero-sized old ReplicaSets beyond revisionHistoryLimit,
* writes status and the Available / Progressing / ReplicaFailure conditions, with
  ProgressDeadlineExceeded after progressDeadlineSeconds (in cluster time) without progress.

Revisions live in the `deployment.kubernetes.io/revision` annotation of each ReplicaSet (the new
one gets the highest; a reused one keeps its earlier numbers in `revision-history`), which is what
`kubectl rollout history` lists and `kubectl rollout undo` picks a template from.

The rollout arithmetic is in pure module functions over plain dicts (tested on their own); the
controller class reads the caches, applies their decisions through the API and records events.
"""

from __future__ import annotations

import copy
import json
import math
import struct
import time
from typing import Any

from kubelab.client import APIError
from kubelab.selectors import Selector, selector_from_label_selector
from kubelab.timescale import scaled

from .base import Controller, controller_ref, split_key
from .replicaset import get_condition, now_rfc3339, parse_time, remove_condition, set_condition

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
HASH_LABEL = "pod-template-hash"
MAX_REV_HISTORY_CHARS = 2000
ANNOTATIONS_TO_SKIP = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS,
                                 MAX_REPLICAS, ROLLBACK_TO})
MAX_INT32 = 2 ** 31 - 1

# condition reasons (deploymentutil)
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
RS_CREATE_ERROR = "FailedRSCreate"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"


# ============================================================================ small accessors
def _md(o: dict | None) -> dict:
    return (o or {}).get("metadata") or {}


def _spec(o: dict | None) -> dict:
    return (o or {}).get("spec") or {}


def _status(o: dict | None) -> dict:
    return (o or {}).get("status") or {}


def replicas(o: dict | None) -> int:
    """spec.replicas (defaulted to 1 by the API server)."""
    v = _spec(o).get("replicas")
    return 1 if v is None else int(v)


def status_count(o: dict | None, field: str) -> int:
    return int(_status(o).get(field) or 0)


def _annotations(o: dict) -> dict:
    md = o.setdefault("metadata", {})
    if not isinstance(md.get("annotations"), dict):
        md["annotations"] = {}
    return md["annotations"]


def _ts(o: dict) -> str:
    return _md(o).get("creationTimestamp") or ""


def by_creation(rss: list[dict]) -> list[dict]:
    """ReplicaSetsByCreationTimestamp: oldest first, ties by name."""
    return sorted(rss, key=lambda r: (_ts(r), _md(r).get("name", "")))


def active(rss: list[dict | None]) -> list[dict]:
    """FilterActiveReplicaSets: sets with spec.replicas > 0."""
    return [r for r in rss if r is not None and replicas(r) > 0]


def revision(rs: dict | None) -> int:
    try:
        return int((_md(rs).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def max_revision(rss: list[dict]) -> int:
    return max([revision(r) for r in rss] or [0])


# ============================================================================ surge/unavailable
def is_rolling(d: dict) -> bool:
    return (_spec(d).get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"


def scaled_value(v: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: ints as they are, percentages of total rounded
    up or down."""
    if v is None:
        return 0
    if isinstance(v, bool):
        raise TypeError(f"invalid value for IntOrString: {v!r}")
    if isinstance(v, int):
        return v
    s = str(v)
    if s.endswith("%"):
        p = int(s[:-1])
        x = p * total / 100
        return math.ceil(x) if round_up else math.floor(x)
    return int(s)


def resolve_fenceposts(max_surge_v: Any, max_unavailable_v: Any, desired: int) -> tuple[int, int]:
    """ResolveFenceposts: surge rounds up, unavailable rounds down; both 0 → unavailable 1."""
    surge = scaled_value(max_surge_v if max_surge_v is not None else 0, desired, True)
    unavailable = scaled_value(max_unavailable_v if max_unavailable_v is not None else 0,
                               desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _rolling_params(d: dict) -> tuple[Any, Any]:
    ru = (_spec(d).get("strategy") or {}).get("rollingUpdate") or {}
    return ru.get("maxSurge", "25%"), ru.get("maxUnavailable", "25%")


def max_surge(d: dict) -> int:
    if not is_rolling(d):
        return 0
    s, u = _rolling_params(d)
    return resolve_fenceposts(s, u, replicas(d))[0]


def max_unavailable(d: dict) -> int:
    if not is_rolling(d) or replicas(d) == 0:
        return 0
    s, u = _rolling_params(d)
    unavailable = resolve_fenceposts(s, u, replicas(d))[1]
    return min(unavailable, replicas(d))


# ============================================================================ hashing
_FNV_OFFSET, _FNV_PRIME = 0x811C9DC5, 0x01000193
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def fnv32a(data: bytes, h: int = _FNV_OFFSET) -> int:
    for b in data:
        h ^= b
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def safe_encode(s: str) -> str:
    """rand.SafeEncodeString: map each byte onto consonants and digits (no vowels, no 0/1/3)."""
    return "".join(_ALPHANUMS[b % len(_ALPHANUMS)] for b in s.encode())


def _normalize(v: Any) -> Any:
    """Drop null, empty maps and empty lists, recursively (Semantic.DeepEqual's view: a field
    left out and one set to its empty value are the same template)."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            x = _normalize(x)
            if x is None or x == {} or x == []:
                continue
            out[k] = x
        return out
    if isinstance(v, list):
        return [_normalize(x) for x in v]
    return v


def compute_hash(template: dict, collision_count: int | None = None) -> str:
    """controller.ComputeHash: FNV-32a of the pod template (here its canonical JSON), then the
    collision count's 4 little-endian bytes, printed in decimal and SafeEncodeString'd."""
    data = json.dumps(_normalize(template), sort_keys=True, separators=(",", ":")).encode()
    h = fnv32a(data)
    if collision_count is not None:
        h = fnv32a(struct.pack("<I", collision_count & 0xFFFFFFFF), h)
    return safe_encode(str(h))


def equal_ignore_hash(t1: dict | None, t2: dict | None) -> bool:
    """EqualIgnoreHash: templates equal apart from the pod-template-hash label."""
    a, b = copy.deepcopy(t1 or {}), copy.deepcopy(t2 or {})
    for t in (a, b):
        labels = (t.get("metadata") or {}).get("labels")
        if isinstance(labels, dict):
            labels.pop(HASH_LABEL, None)
    return _normalize(a) == _normalize(b)


# ============================================================================ finding sets
def find_new_rs(d: dict, rss: list[dict]) -> dict | None:
    """FindNewReplicaSet: the oldest set whose template equals the deployment's."""
    tpl = _spec(d).get("template")
    for rs in by_creation(rss):
        if equal_ignore_hash(_spec(rs).get("template"), tpl):
            return rs
    return None


def find_old_rss(d: dict, rss: list[dict]) -> tuple[list[dict], list[dict]]:
    """FindOldReplicaSets: (old sets with pods, all old sets)."""
    new = find_new_rs(d, rss)
    all_old = [r for r in rss if r is not new]
    return [r for r in all_old if replicas(r) > 0], all_old


def find_active_or_latest(new_rs: dict | None, old_rss: list[dict]) -> dict | None:
    if new_rs is None and not old_rss:
        return None
    olds = list(reversed(by_creation(old_rss)))
    act = active(olds + [new_rs])
    if not act:
        return new_rs if new_rs is not None else olds[0]
    if len(act) == 1:
        return act[0]
    return None


def _int_annotation(rs: dict, key: str) -> int | None:
    v = (_md(rs).get("annotations") or {}).get(key)
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        return None


def is_saturated(d: dict, rs: dict | None) -> bool:
    if rs is None:
        return False
    desired = _int_annotation(rs, DESIRED_REPLICAS)
    return (desired == replicas(d) and replicas(rs) == replicas(d)
            and status_count(rs, "availableReplicas") == replicas(d))


def is_scaling_event(d: dict, rss: list[dict]) -> bool:
    """isScalingEvent: an active set was sized for another spec.replicas."""
    new = find_new_rs(d, rss)
    _, all_old = find_old_rss(d, rss)
    for rs in active(all_old + [new]):
        desired = _int_annotation(rs, DESIRED_REPLICAS)
        if desired is not None and desired != replicas(d):
            return True
    return False


# ============================================================================ annotations
def replicas_annotations_need_update(rs: dict, desired: int, max_replicas: int) -> bool:
    ann = _md(rs).get("annotations") or {}
    return ann.get(DESIRED_REPLICAS) != str(desired) or ann.get(MAX_REPLICAS) != str(max_replicas)


def set_replicas_annotations(rs: dict, desired: int, max_replicas: int) -> bool:
    if not replicas_annotations_need_update(rs, desired, max_replicas):
        return False
    ann = _annotations(rs)
    ann[DESIRED_REPLICAS] = str(desired)
    ann[MAX_REPLICAS] = str(max_replicas)
    return True


def copy_deployment_annotations(d: dict, rs: dict) -> bool:
    """copyDeploymentAnnotationsToReplicaSet (kubernetes.io/change-cause among them)."""
    changed = False
    ann = _annotations(rs)
    for k, v in (_md(d).get("annotations") or {}).items():
        if k in ANNOTATIONS_TO_SKIP or ann.get(k) == v:
            continue
        ann[k] = v
        changed = True
    return changed


def set_new_rs_annotations(d: dict, rs: dict, new_revision: str, exists: bool,
                           limit_chars: int = MAX_REV_HISTORY_CHARS) -> bool:
    """SetNewReplicaSetAnnotations: copy the deployment's annotations, raise the revision to
    new_revision (keeping the earlier one in revision-history when a set is reused), and give a
    set about to be created its desired/max-replicas annotations."""
    changed = copy_deployment_annotations(d, rs)
    ann = _annotations(rs)
    had = REVISION in ann
    old_revision = ann.get(REVISION, "")
    try:
        old_int = int(old_revision) if old_revision else 0
    except ValueError:
        return False
    try:
        new_int = int(new_revision)
    except ValueError:
        return False
    if old_int < new_int:
        ann[REVISION] = new_revision
        changed = True
    if had and old_int < new_int:
        history = ann.get(REVISION_HISTORY, "")
        olds = history.split(",")
        if not olds[0]:
            ann[REVISION_HISTORY] = old_revision
        else:
            total = len(history) + len(old_revision) + 1
            start = 0
            while total > limit_chars and start < len(olds):
                total -= len(olds[start]) + 1
                start += 1
            if total <= limit_chars:
                ann[REVISION_HISTORY] = ",".join(olds[start:] + [old_revision])
    if not exists and set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


# ============================================================================ rollout arithmetic
def _pods_counted(rs: dict) -> int:
    """Pods a set has or is about to have: the larger of spec and observed replicas (a set just
    scaled down still runs its surplus until its controller has deleted it)."""
    return max(replicas(rs), status_count(rs, "replicas"))


def _available_counted(rs: dict, size: int | None = None) -> int:
    """Available pods a set keeps: never more than its (new) size, since a set being scaled
    down deletes unavailable pods first but may still have to delete available ones."""
    return min(status_count(rs, "availableReplicas"), replicas(rs) if size is None else size)


def new_rs_new_replicas(d: dict, all_rss: list[dict], new_rs: dict) -> int:
    """NewRSNewReplicas: how far the new set may grow now."""
    if not is_rolling(d):
        return replicas(d)
    current = sum(_pods_counted(r) for r in all_rss if r is not None)
    max_total = replicas(d) + max_surge(d)
    if current >= max_total:
        return replicas(new_rs)
    up = min(max_total - current, replicas(d) - replicas(new_rs))
    return replicas(new_rs) + max(up, 0)


def plan_old_scale_down(all_rss: list[dict], old_rss: list[dict], new_rs: dict | None,
                        d: dict) -> list[tuple[dict, int]]:
    """reconcileOldReplicaSets: first shrink old sets by their unhealthy (unavailable) pods,
    then by available pods beyond replicas - maxUnavailable; never below that many available
    pods counting the new set's unavailable ones. Returns [(set, new size)] in order."""
    old_pods = sum(replicas(r) for r in old_rss)
    if old_pods == 0:
        return []
    all_pods = sum(replicas(r) for r in all_rss if r is not None)
    min_available = replicas(d) - max_unavailable(d)
    new_unavailable = 0
    if new_rs is not None:
        new_unavailable = max(0, replicas(new_rs) - _available_counted(new_rs))
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return []
    sizes = {id(r): replicas(r) for r in all_rss if r is not None}
    for r in old_rss:
        sizes.setdefault(id(r), replicas(r))
    olds = by_creation(old_rss)
    plan: list[tuple[dict, int]] = []
    # cleanupUnhealthyReplicas
    total = 0
    for r in olds:
        if total >= max_scaled_down:
            break
        size = sizes[id(r)]
        if size == 0:
            continue
        unhealthy = size - _available_counted(r, size)
        if unhealthy <= 0:
            continue
        down = min(max_scaled_down - total, unhealthy)
        sizes[id(r)] = size - down
        total += down
        plan.append((r, size - down))
    # scaleDownOldReplicaSetsForRollingUpdate
    everyone = [r for r in all_rss if r is not None]
    for r in old_rss:
        if all(r is not x for x in everyone):
            everyone.append(r)
    available = sum(_available_counted(r, sizes[id(r)]) for r in everyone)
    if available > min_available:
        to_scale = available - min_available
        done = 0
        for r in olds:
            if done >= to_scale:
                break
            size = sizes[id(r)]
            if size == 0:
                continue
            down = min(size, to_scale - done)
            sizes[id(r)] = size - down
            done += down
            plan.append((r, size - down))
    return plan


def rs_fraction(rs: dict, d: dict) -> int:
    """getReplicaSetFraction: the change that keeps this set's share of the deployment."""
    if replicas(d) == 0:
        return -replicas(rs)
    d_max = replicas(d) + max_surge(d)
    before = _int_annotation(rs, MAX_REPLICAS)
    if not before:
        before = status_count(d, "replicas")
    if not before:
        return 0
    new_size = replicas(rs) * d_max / before
    return _round_half_away(new_size) - replicas(rs)


def _round_half_away(x: float) -> int:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def get_proportion(rs: dict | None, d: dict, to_add: int, added: int) -> int:
    if rs is None or replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = rs_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def proportional_plan(d: dict, new_rs: dict | None, old_rss: list[dict]) -> list[tuple[dict, int]]:
    """The RollingUpdate branch of scale(): spread replicas + maxSurge - (current total) over
    the active sets in proportion to their size, leftovers to the largest."""
    all_rss = active(list(old_rss) + [new_rs])
    total = sum(replicas(r) for r in all_rss)
    allowed = replicas(d) + max_surge(d) if replicas(d) > 0 else 0
    to_add = allowed - total
    if to_add > 0:  # ReplicaSetsBySizeNewer: larger first, newer first on ties
        all_rss.sort(key=lambda r: (_ts(r), _md(r).get("name", "")), reverse=True)
        all_rss.sort(key=lambda r: -replicas(r))
    elif to_add < 0:  # ReplicaSetsBySizeOlder: larger first, older first on ties
        all_rss = by_creation(all_rss)
        all_rss.sort(key=lambda r: -replicas(r))
    added = 0
    sizes: list[int] = []
    for rs in all_rss:
        if to_add != 0:
            p = get_proportion(rs, d, to_add, added)
            sizes.append(replicas(rs) + p)
            added += p
        else:
            sizes.append(replicas(rs))
    if all_rss and to_add != 0:
        sizes[0] = max(0, sizes[0] + to_add - added)
    return list(zip(all_rss, sizes))


# ============================================================================ status
def new_condition(ctype: str, status: str, reason: str, message: str,
                  now: str | None = None) -> dict:
    t = now or now_rfc3339()
    return {"type": ctype, "status": status, "lastUpdateTime": t, "lastTransitionTime": t,
            "reason": reason, "message": message}


def has_progress_deadline(d: dict) -> bool:
    pds = _spec(d).get("progressDeadlineSeconds")
    return pds is not None and pds != MAX_INT32


def calculate_status(all_rss: list[dict | None], new_rs: dict | None, d: dict) -> dict:
    """calculateStatus: counts summed over the sets, the Available condition. Zero counts are
    omitted like Go's omitempty."""
    rss = [r for r in all_rss if r is not None]
    available = sum(status_count(r, "availableReplicas") for r in rss)
    total = sum(replicas(r) for r in rss)
    st: dict = {
        "observedGeneration": _md(d).get("generation"),
        "replicas": sum(status_count(r, "replicas") for r in rss),
        "updatedReplicas": status_count(new_rs, "replicas") if new_rs is not None else 0,
        "readyReplicas": sum(status_count(r, "readyReplicas") for r in rss),
        "availableReplicas": available,
        "unavailableReplicas": max(0, total - available),
    }
    st = {k: v for k, v in st.items() if v}
    old = _status(d)
    if old.get("collisionCount") is not None:
        st["collisionCount"] = old["collisionCount"]
    conds = [dict(c) for c in old.get("conditions") or []]
    if available >= replicas(d) - max_unavailable(d):
        conds = set_condition(conds, new_condition("Available", "True", MIN_AVAILABLE,
                                                   "Deployment has minimum availability."))
    else:
        conds = set_condition(conds, new_condition("Available", "False", MIN_UNAVAILABLE,
                                                   "Deployment does not have minimum "
                                                   "availability."))
    st["conditions"] = conds
    return st


def deployment_complete(d: dict, st: dict) -> bool:
    want = replicas(d)
    return (int(st.get("updatedReplicas") or 0) == want and int(st.get("replicas") or 0) == want
            and int(st.get("availableReplicas") or 0) == want
            and int(st.get("observedGeneration") or 0) >= int(_md(d).get("generation") or 0))


def deployment_progressing(d: dict, st: dict) -> bool:
    old = _status(d)

    def g(s: dict, k: str) -> int:
        return int(s.get(k) or 0)
    old_old = g(old, "replicas") - g(old, "updatedReplicas")
    new_old = g(st, "replicas") - g(st, "updatedReplicas")
    return (g(st, "updatedReplicas") > g(old, "updatedReplicas") or new_old < old_old
            or g(st, "readyReplicas") > g(old, "readyReplicas")
            or g(st, "availableReplicas") > g(old, "availableReplicas"))


def progress_deadline(d: dict) -> float:
    """progressDeadlineSeconds in this cluster's time."""
    return scaled(float(_spec(d).get("progressDeadlineSeconds") or 0))


def deployment_timed_out(d: dict, st: dict, now: float) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(st, "Progressing")
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    return since is not None and since + progress_deadline(d) < now


def rs_to_deployment_condition(c: dict) -> dict:
    return {"type": c.get("type"), "status": c.get("status"),
            "lastUpdateTime": c.get("lastTransitionTime"),
            "lastTransitionTime": c.get("lastTransitionTime"),
            "reason": c.get("reason"), "message": c.get("message")}


def replica_failures(all_rss: list[dict | None], new_rs: dict | None) -> list[dict]:
    out = [rs_to_deployment_condition(c) for c in _status(new_rs).get("conditions") or []
           if c.get("type") == "ReplicaFailure"] if new_rs is not None else []
    if out:
        return out
    for rs in all_rss:
        if rs is None:
            continue
        out += [rs_to_deployment_condition(c) for c in _status(rs).get("conditions") or []
                if c.get("type") == "ReplicaFailure"]
    return out


def rollout_status(d: dict, all_rss: list[dict | None], new_rs: dict | None,
                   now: float | None = None) -> dict:
    """syncRolloutStatus's new status: calculateStatus plus the Progressing condition
    (NewReplicaSetAvailable when complete, ReplicaSetUpdated on progress,
    ProgressDeadlineExceeded when the deadline passed without progress) and ReplicaFailure."""
    now = time.time() if now is None else now
    st = calculate_status(all_rss, new_rs, d)
    conds = st["conditions"]
    if not has_progress_deadline(d):
        conds = remove_condition(conds, "Progressing")
    current = get_condition(_status(d), "Progressing")
    complete_already = (int(st.get("replicas") or 0) == int(st.get("updatedReplicas") or 0)
                        and current is not None and current.get("reason") == NEW_RS_AVAILABLE)
    if has_progress_deadline(d) and not complete_already:
        st["conditions"] = conds
        name = _md(new_rs).get("name") if new_rs is not None else None
        if deployment_complete(d, st):
            msg = (f'ReplicaSet "{name}" has successfully progressed.' if name else
                   f'Deployment "{_md(d).get("name")}" has successfully progressed.')
            conds = set_condition(conds, new_condition("Progressing", "True", NEW_RS_AVAILABLE,
                                                       msg))
        elif deployment_progressing(d, st):
            msg = (f'ReplicaSet "{name}" is progressing.' if name else
                   f'Deployment "{_md(d).get("name")}" is progressing.')
            cond = new_condition("Progressing", "True", RS_UPDATED, msg)
            if current is not None:
                if current.get("status") == "True" and current.get("lastTransitionTime"):
                    cond["lastTransitionTime"] = current["lastTransitionTime"]
                conds = remove_condition(conds, "Progressing")
            conds = set_condition(conds, cond)
        elif deployment_timed_out(d, st, now):
            msg = (f'ReplicaSet "{name}" has timed out progressing.' if name else
                   f'Deployment "{_md(d).get("name")}" has timed out progressing.')
            conds = set_condition(conds, new_condition("Progressing", "False", TIMED_OUT, msg))
    failures = replica_failures(all_rss, new_rs)
    if failures:
        conds = set_condition(conds, failures[0])
    else:
        conds = remove_condition(conds, "ReplicaFailure")
    st["conditions"] = conds
    return st


def stuck_requeue_after(d: dict, st: dict, now: float | None = None) -> float | None:
    """requeueStuckDeployment: seconds until the deadline of a rollout without progress (None
    when there is nothing to wait for)."""
    now = time.time() if now is None else now
    cur = get_condition(_status(d), "Progressing")
    if not has_progress_deadline(d) or cur is None:
        return None
    if deployment_complete(d, st) or cur.get("reason") == TIMED_OUT:
        return None
    since = parse_time(cur.get("lastUpdateTime"))
    if since is None:
        return None
    return since + progress_deadline(d) - now


# ============================================================================ the controller
class DeploymentController(Controller):
    name = "deployment"
    workers = 5

    def setup(self) -> None:
        self.deployments = self.informers.informer("Deployment")
        self.sets = self.informers.informer("ReplicaSet")
        self.pods = self.informers.informer("Pod")
        self.deployments.add_handler(self._on_deployment)
        self.sets.add_handler(self._on_set)
        self.pods.add_handler(self._on_pod)

    # ----------------------------------------------------------------- event handlers
    def _on_deployment(self, event: str, new: dict, old: dict | None) -> None:
        self.enqueue(new)

    def _resolve(self, namespace: str | None, ref: dict | None) -> dict | None:
        if not ref or ref.get("kind") != "Deployment":
            return None
        d = self.deployments.get(namespace, ref.get("name", ""))
        if d is None or _md(d).get("uid") != ref.get("uid"):
            return None
        return d

    def _deployments_for(self, rs: dict) -> list[dict]:
        md = _md(rs)
        out = []
        for d in self.deployments.list(md.get("namespace")):
            sel = selector_from_label_selector(_spec(d).get("selector"))
            if not sel.empty() and sel.matches(md.get("labels")):
                out.append(d)
        return out

    def _on_set(self, event: str, new: dict, old: dict | None) -> None:
        ns = _md(new).get("namespace")
        if event == "DELETED" or event == "ADDED" or old is None:
            d = self._resolve(ns, controller_ref(new))
            if d is not None:
                self.enqueue(d)
            elif event == "ADDED" and controller_ref(new) is None:
                for d in self._deployments_for(new):
                    self.enqueue(d)
            return
        if _md(old).get("resourceVersion") == _md(new).get("resourceVersion"):
            return
        cur_ref, old_ref = controller_ref(new), controller_ref(old)
        ref_changed = (cur_ref or {}).get("uid") != (old_ref or {}).get("uid")
        if ref_changed and old_ref is not None:
            d = self._resolve(ns, old_ref)
            if d is not None:
                self.enqueue(d)
        if cur_ref is not None:
            d = self._resolve(ns, cur_ref)
            if d is not None:
                self.enqueue(d)
            return
        if ref_changed or _md(old).get("labels") != _md(new).get("labels"):
            for d in self._deployments_for(new):
                self.enqueue(d)

    def _on_pod(self, event: str, new: dict, old: dict | None) -> None:
        """A Recreate rollout waits for the old pods to be gone: sync when one goes."""
        if event != "DELETED":
            return
        pod = old or new
        ref = controller_ref(pod)
        if not ref or ref.get("kind") != "ReplicaSet":
            return
        ns = _md(pod).get("namespace")
        rs = self.sets.get(ns, ref.get("name", ""))
        if rs is None or _md(rs).get("uid") != ref.get("uid"):
            return
        d = self._resolve(ns, controller_ref(rs))
        if d is not None and not is_rolling(d):
            self.enqueue(d)

    # ----------------------------------------------------------------- writes
    @staticmethod
    def _replace(target: dict, fresh: dict) -> dict:
        target.clear()
        target.update(fresh)
        return target

    async def _update_status(self, d: dict, status: dict) -> None:
        body = dict(d, status=status)
        try:
            fresh = await self.client.update_status("Deployment", body)
        except APIError as e:
            if e.conflict:
                raise _Requeue(f"deployment {_md(d).get('name')} changed") from None
            if e.not_found:
                raise _Requeue(f"deployment {_md(d).get('name')} is gone") from None
            raise
        self._replace(d, fresh)

    async def _set_deployment_revision(self, d: dict, rev: str) -> None:
        """SetDeploymentRevision: the deployment carries its new set's revision."""
        if (_md(d).get("annotations") or {}).get(REVISION) == rev:
            return
        md = _md(d)
        patch = {"metadata": {"annotations": {REVISION: rev},
                              "resourceVersion": md.get("resourceVersion")}}
        try:
            fresh = await self.client.patch("Deployment", md.get("namespace"), md["name"], patch)
        except APIError as e:
            if e.conflict:
                raise _Requeue("deployment changed") from None
            raise
        self._replace(d, fresh)

    async def _update_rs(self, rs: dict) -> dict:
        try:
            return await self.client.update("ReplicaSet", rs)
        except APIError as e:
            if e.conflict:
                raise _Requeue(f"replica set {_md(rs).get('name')} changed") from None
            raise

    async def scale_rs(self, rs: dict, new_scale: int, d: dict) -> bool:
        """scaleReplicaSet: set the size and the desired/max-replicas annotations; an event
        when the size changed."""
        size_change = replicas(rs) != new_scale
        desired, maxr = replicas(d), replicas(d) + max_surge(d)
        if not size_change and not replicas_annotations_need_update(rs, desired, maxr):
            return False
        old_scale = replicas(rs)
        body = copy.deepcopy(rs)
        body.setdefault("spec", {})["replicas"] = new_scale
        set_replicas_annotations(body, desired, maxr)
        self._replace(rs, await self._update_rs(body))
        if size_change:
            verb = "up" if old_scale < new_scale else "down"
            await self.recorder.normal(d, "ScalingReplicaSet",
                                       f"Scaled {verb} replica set {_md(rs)['name']} from "
                                       f"{old_scale} to {new_scale}")
        return size_change

    async def scale_rs_and_record(self, rs: dict, new_scale: int, d: dict) -> bool:
        if replicas(rs) == new_scale:
            return False
        return await self.scale_rs(rs, new_scale, d)

    # ----------------------------------------------------------------- sync
    async def reconcile(self, key: str) -> None:
        try:
            await self._sync(key)
        except _Requeue as e:
            self.log.debug("requeue %s: %s", key, e)
            self.queue.add_after(key, 0.05)

    async def _sync(self, key: str) -> None:
        ns, name = split_key(key)
        cached = self.deployments.get(ns, name)
        if cached is None:
            return
        d = copy.deepcopy(cached)
        ls = _spec(d).get("selector") or {}
        if not ls.get("matchLabels") and not ls.get("matchExpressions"):
            await self.recorder.warning(d, "SelectingAll", "This deployment is selecting all "
                                        "pods. A non-empty selector is required.")
            if int(_status(d).get("observedGeneration") or 0) < int(_md(d).get("generation") or 0):
                await self._update_status(d, dict(_status(d),
                                                  observedGeneration=_md(d).get("generation")))
            return
        sel = selector_from_label_selector(ls)
        rs_list = await self.claim_replica_sets(d, sel)
        if _md(d).get("deletionTimestamp"):
            await self.sync_status_only(d, rs_list)
            return
        await self.check_paused_conditions(d)
        if _spec(d).get("paused"):
            await self.sync(d, rs_list)
            return
        if is_scaling_event(d, rs_list):
            await self.sync(d, rs_list)
            return
        if is_rolling(d):
            await self.rollout_rolling(d, rs_list)
        else:
            await self.rollout_recreate(d, rs_list, self.pod_map(d, sel, rs_list))

    # ----------------------------------------------------------------- claiming sets
    async def claim_replica_sets(self, d: dict, sel: Selector) -> list[dict]:
        md = _md(d)
        uid = md.get("uid")
        deleting = bool(md.get("deletionTimestamp"))
        claimed: list[dict] = []
        errors: list[Exception] = []
        can_adopt: bool | None = None
        for cached in self.sets.list(md.get("namespace")):
            rs = copy.deepcopy(cached)
            ref = controller_ref(rs)
            match = not sel.empty() and sel.matches(_md(rs).get("labels"))
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if match:
                    claimed.append(rs)
                elif not deleting:
                    try:
                        await self._patch_refs(rs, None, uid)
                    except APIError as e:
                        if not e.not_found:
                            errors.append(e)
                continue
            if deleting or not match or _md(rs).get("deletionTimestamp"):
                continue
            if can_adopt is None:
                fresh = await self.client.get_or_none("Deployment", md.get("namespace"),
                                                      md["name"])
                can_adopt = bool(fresh and _md(fresh).get("uid") == uid
                                 and not _md(fresh).get("deletionTimestamp"))
            if not can_adopt:
                continue
            ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": md["name"],
                   "uid": uid, "controller": True, "blockOwnerDeletion": True}
            try:
                self.log.info("deployment %s adopts replica set %s", md["name"],
                              _md(rs)["name"])
                claimed.append(await self._patch_refs(rs, ref, None))
            except APIError as e:
                if not e.not_found:
                    errors.append(e)
        if errors:
            raise errors[0]
        return claimed

    async def _patch_refs(self, rs: dict, add: dict | None, remove_uid: str | None) -> dict:
        md = _md(rs)
        refs = md.get("ownerReferences")
        new = [r for r in refs or [] if r.get("uid") != remove_uid]
        if add is not None:
            new.append(add)
        patch: list[dict] = [{"op": "test", "path": "/metadata/uid", "value": md.get("uid")},
                             {"op": "test", "path": "/metadata/ownerReferences", "value": refs}]
        if new:
            patch.append({"op": "add", "path": "/metadata/ownerReferences", "value": new})
        else:
            patch.append({"op": "remove", "path": "/metadata/ownerReferences"})
        return await self.client.patch("ReplicaSet", md.get("namespace"), md["name"], patch,
                                       patch_type="application/json-patch+json")

    def pod_map(self, d: dict, sel: Selector, rs_list: list[dict]) -> dict[str, list[dict]]:
        """getPodMapForDeployment: matching pods (terminating ones too) by owning set UID."""
        out: dict[str, list[dict]] = {_md(r)["uid"]: [] for r in rs_list}
        for p in self.pods.list(_md(d).get("namespace")):
            if not sel.matches(_md(p).get("labels")):
                continue
            ref = controller_ref(p)
            if ref and ref.get("uid") in out:
                out[ref["uid"]].append(p)
        return out

    # ----------------------------------------------------------------- new/old sets
    async def get_all_rss(self, d: dict, rs_list: list[dict],
                          create: bool) -> tuple[dict | None, list[dict]]:
        """getAllReplicaSetsAndSyncRevision: (new set or None, all old sets)."""
        _, all_old = find_old_rss(d, rs_list)
        new = await self.get_new_rs(d, rs_list, all_old, create)
        return new, all_old

    async def get_new_rs(self, d: dict, rs_list: list[dict], old_rss: list[dict],
                         create: bool) -> dict | None:
        existing = find_new_rs(d, rs_list)
        new_revision = str(max_revision(old_rss) + 1)
        dmd = _md(d)
        if existing is not None:
            body = copy.deepcopy(existing)
            changed = set_new_rs_annotations(d, body, new_revision, True)
            mrs = _spec(d).get("minReadySeconds") or 0
            if changed or (_spec(body).get("minReadySeconds") or 0) != mrs:
                body["spec"]["minReadySeconds"] = mrs
                self._replace(existing, await self._update_rs(body))
            await self._set_deployment_revision(
                d, (_md(existing).get("annotations") or {}).get(REVISION, new_revision))
            if has_progress_deadline(d) and get_condition(_status(d), "Progressing") is None:
                st = copy.deepcopy(_status(d))
                st["conditions"] = set_condition(
                    list(st.get("conditions") or []),
                    new_condition("Progressing", "True", FOUND_NEW_RS,
                                  f'Found new replica set "{_md(existing)["name"]}"'))
                await self._update_status(d, st)
            return existing
        if not create:
            return None

        template = copy.deepcopy(_spec(d).get("template") or {})
        collision = _status(d).get("collisionCount")
        h = compute_hash(template, collision)
        tmd = template.setdefault("metadata", {})
        tmd["labels"] = dict(tmd.get("labels") or {}, **{HASH_LABEL: h})
        selector = copy.deepcopy(_spec(d).get("selector") or {})
        selector["matchLabels"] = dict(selector.get("matchLabels") or {}, **{HASH_LABEL: h})
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{dmd['name']}-{h}", "namespace": dmd.get("namespace"),
                           "labels": dict(tmd["labels"]),
                           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": dmd["name"], "uid": dmd["uid"],
                                                "controller": True,
                                                "blockOwnerDeletion": True}]},
              "spec": {"replicas": 0, "minReadySeconds": _spec(d).get("minReadySeconds") or 0,
                       "selector": selector, "template": template}}
        rs["spec"]["replicas"] = new_rs_new_replicas(d, old_rss + [rs], rs)
        set_new_rs_annotations(d, rs, new_revision, False)
        already = False
        try:
            created = await self.client.create("ReplicaSet", rs, dmd.get("namespace"))
        except APIError as e:
            if e.code == 409 and e.reason == "AlreadyExists":
                found = await self.client.get_or_none("ReplicaSet", dmd.get("namespace"),
                                                      rs["metadata"]["name"])
                ref = controller_ref(found) if found else None
                if found is not None and ref and ref.get("uid") == dmd["uid"] and \
                        equal_ignore_hash(_spec(d).get("template"), _spec(found).get("template")):
                    created, already = found, True
                else:
                    # a hash collision: bump collisionCount and try again with a new name
                    st = copy.deepcopy(_status(d))
                    st["collisionCount"] = int(st.get("collisionCount") or 0) + 1
                    await self._update_status(d, st)
                    self.log.info("hash collision for deployment %s; collisionCount %d",
                                  dmd["name"], st["collisionCount"])
                    raise _Requeue("hash collision") from None
            else:
                msg = f'Failed to create new replica set "{rs["metadata"]["name"]}": {e.message}'
                if has_progress_deadline(d):
                    st = copy.deepcopy(_status(d))
                    st["conditions"] = set_condition(
                        list(st.get("conditions") or []),
                        new_condition("Progressing", "False", RS_CREATE_ERROR, msg))
                    try:
                        await self._update_status(d, st)
                    except (APIError, _Requeue):
                        pass
                await self.recorder.warning(d, "FailedCreate", msg)
                raise
        count = replicas(created)
        if not already and count > 0:
            await self.recorder.normal(d, "ScalingReplicaSet",
                                       f"Scaled up replica set {_md(created)['name']} from 0 "
                                       f"to {count}")
        await self._set_deployment_revision(d, new_revision)
        if not already and has_progress_deadline(d):
            st = copy.deepcopy(_status(d))
            st["conditions"] = set_condition(
                list(st.get("conditions") or []),
                new_condition("Progressing", "True", NEW_RS_CREATED,
                              f'Created new replica set "{_md(created)["name"]}"'))
            await self._update_status(d, st)
        rs_list.append(created)
        return created

    # ----------------------------------------------------------------- strategies
    async def rollout_rolling(self, d: dict, rs_list: list[dict]) -> None:
        new_rs, old_rss = await self.get_all_rss(d, rs_list, True)
        all_rss = old_rss + [new_rs] if new_rs is not None else list(old_rss)
        if new_rs is not None and await self.reconcile_new_rs(all_rss, new_rs, d):
            await self.sync_rollout_status(all_rss, new_rs, d)
            return
        if await self.reconcile_old_rss(all_rss, active(old_rss), new_rs, d):
            await self.sync_rollout_status(all_rss, new_rs, d)
            return
        if deployment_complete(d, _status(d)):
            await self.cleanup(old_rss, d)
        await self.sync_rollout_status(all_rss, new_rs, d)

    async def reconcile_new_rs(self, all_rss: list[dict], new_rs: dict, d: dict) -> bool:
        if replicas(new_rs) == replicas(d):
            return False
        if replicas(new_rs) > replicas(d):
            return await self.scale_rs_and_record(new_rs, replicas(d), d)
        return await self.scale_rs_and_record(new_rs, new_rs_new_replicas(d, all_rss, new_rs), d)

    async def reconcile_old_rss(self, all_rss: list[dict], old_rss: list[dict],
                                new_rs: dict | None, d: dict) -> bool:
        scaled_down = False
        for rs, size in plan_old_scale_down(all_rss, old_rss, new_rs, d):
            if size < replicas(rs):
                await self.scale_rs_and_record(rs, size, d)
                scaled_down = True
        return scaled_down

    async def rollout_recreate(self, d: dict, rs_list: list[dict],
                               pod_map: dict[str, list[dict]]) -> None:
        new_rs, old_rss = await self.get_all_rss(d, rs_list, False)
        all_rss = old_rss + ([new_rs] if new_rs is not None else [])
        scaled_down = False
        for rs in active(old_rss):
            if await self.scale_rs_and_record(rs, 0, d):
                scaled_down = True
        if scaled_down:
            await self.sync_rollout_status(all_rss, new_rs, d)
            return
        if self.old_pods_running(new_rs, old_rss, pod_map):
            await self.sync_rollout_status(all_rss, new_rs, d)
            return
        if new_rs is None:
            new_rs, old_rss = await self.get_all_rss(d, rs_list, True)
            all_rss = old_rss + ([new_rs] if new_rs is not None else [])
        if new_rs is not None:
            await self.scale_rs_and_record(new_rs, replicas(d), d)
        if deployment_complete(d, _status(d)):
            await self.cleanup(old_rss, d)
        await self.sync_rollout_status(all_rss, new_rs, d)

    @staticmethod
    def old_pods_running(new_rs: dict | None, old_rss: list[dict],
                         pod_map: dict[str, list[dict]]) -> bool:
        if sum(status_count(r, "replicas") for r in old_rss) > 0:
            return True
        new_uid = _md(new_rs).get("uid") if new_rs is not None else None
        for uid, pods in pod_map.items():
            if uid == new_uid:
                continue
            for p in pods:
                if _status(p).get("phase") not in ("Succeeded", "Failed"):
                    return True
        return False

    async def sync(self, d: dict, rs_list: list[dict]) -> None:
        """Scaling (and, while paused, cleanup) without rolling out."""
        new_rs, old_rss = await self.get_all_rss(d, rs_list, False)
        await self.scale(d, new_rs, old_rss)
        if _spec(d).get("paused"):
            await self.cleanup(old_rss, d)
        await self.sync_deployment_status(old_rss + ([new_rs] if new_rs else []), new_rs, d)

    async def scale(self, d: dict, new_rs: dict | None, old_rss: list[dict]) -> None:
        target = find_active_or_latest(new_rs, old_rss)
        if target is not None:
            # (unlike kube, also refresh stale desired/max-replicas annotations of an already
            # right-sized set, so the scaling event it signals is over)
            await self.scale_rs(target, replicas(d), d)
            return
        if is_saturated(d, new_rs):
            for old in active(old_rss):
                await self.scale_rs_and_record(old, 0, d)
            return
        if is_rolling(d):
            for rs, size in proportional_plan(d, new_rs, old_rss):
                await self.scale_rs(rs, size, d)

    async def cleanup(self, old_rss: list[dict], d: dict) -> None:
        """cleanupDeployment: delete the oldest zero-sized old sets beyond
        revisionHistoryLimit."""
        limit = _spec(d).get("revisionHistoryLimit")
        if limit is None:
            return
        cleanable = [r for r in old_rss if not _md(r).get("deletionTimestamp")]
        diff = len(cleanable) - int(limit)
        if diff <= 0:
            return
        cleanable.sort(key=lambda r: (revision(r), _ts(r), _md(r).get("name", "")))
        for rs in cleanable[:diff]:
            md = _md(rs)
            if status_count(rs, "replicas") != 0 or replicas(rs) != 0 or \
                    int(md.get("generation") or 0) > int(_status(rs).get("observedGeneration")
                                                         or 0):
                continue
            self.log.info("deployment %s: deleting old replica set %s", _md(d)["name"],
                          md["name"])
            try:
                await self.client.delete("ReplicaSet", md.get("namespace"), md["name"],
                                         preconditions={"uid": md.get("uid")})
            except APIError as e:
                if not (e.not_found or e.conflict):
                    raise

    async def check_paused_conditions(self, d: dict) -> None:
        if not has_progress_deadline(d):
            return
        cond = get_condition(_status(d), "Progressing")
        if cond is not None and cond.get("reason") == TIMED_OUT:
            return
        paused_cond = cond is not None and cond.get("reason") == PAUSED
        paused = bool(_spec(d).get("paused"))
        if paused and not paused_cond:
            c = new_condition("Progressing", "Unknown", PAUSED, "Deployment is paused")
        elif not paused and paused_cond:
            c = new_condition("Progressing", "Unknown", RESUMED, "Deployment is resumed")
        else:
            return
        st = copy.deepcopy(_status(d))
        st["conditions"] = set_condition(list(st.get("conditions") or []), c)
        await self._update_status(d, st)

    async def sync_status_only(self, d: dict, rs_list: list[dict]) -> None:
        new_rs, old_rss = await self.get_all_rss(d, rs_list, False)
        await self.sync_deployment_status(old_rss + ([new_rs] if new_rs else []), new_rs, d)

    async def sync_deployment_status(self, all_rss: list[dict], new_rs: dict | None,
                                     d: dict) -> None:
        st = calculate_status(all_rss, new_rs, d)
        if st != _status(d):
            await self._update_status(d, st)

    async def sync_rollout_status(self, all_rss: list[dict], new_rs: dict | None,
                                  d: dict) -> None:
        now = time.time()
        st = rollout_status(d, all_rss, new_rs, now)
        if st == _status(d):
            after = stuck_requeue_after(d, st, now)
            if after is not None:
                key = f"{_md(d).get('namespace')}/{_md(d)['name']}"
                self.queue.add_after(key, max(after, 0.0) + min(scaled(1.0), 1.0) + 0.05)
            return
        await self._update_status(d, st)


class _Requeue(Exception):
    """A write lost a race (409): sync again shortly, from the cache."""


__all__ = [
    "DeploymentController",
    "calculate_status",
    "compute_hash",
    "equal_ignore_hash",
    "max_surge",
    "max_unavailable",
    "new_rs_new_replicas",
    "plan_old_scale_down",
    "proportional_plan",
    "resolve_fenceposts",
    "rollout_status",
    "safe_encode",
    "scaled_value",
    "set_new_rs_annotations",
]
