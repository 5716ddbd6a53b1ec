"""The Job controller (kube-controller-manager's job controller, Kubernetes 1.32).

A Job runs pods from its template until enough of them succeed (`completions`, at most
`parallelism` at a time), or until it gives up (`backoffLimit` failures, `activeDeadlineSeconds`).
Like kube, the controller tracks finished pods with the `batch.kubernetes.io/job-tracking`
finalizer: every pod is created with it; a finished pod is first recorded in
status.uncountedTerminatedPods, then its finalizer is removed, then it moves into the
status.succeeded / status.failed counters. Counts therefore survive the deletion of pods, and a
crash between any two steps neither loses nor double-counts a pod.

Terminal conditions are delayed as in 1.32: FailureTarget / SuccessCriteriaMet first, then
Failed / Complete once no pod of the job is still terminating.

The decisions are pure functions on dicts (module level, unit-tested); `JobController` reads
the caches, calls them and makes the difference through the API.

Not implemented: podFailurePolicy, backoffLimitPerIndex / maxFailedIndexes, successPolicy,
managedBy, adoption of orphan pods that match a Job's selector.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import time
from collections.abc import Callable, Iterable

from kubelab import timescale
from kubelab.client import APIError, object_key

from .base import Controller, controller_ref, owner_ref, split_key

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"

DEFAULT_BACKOFF = 10.0      # DefaultJobPodFailureBackOff
MAX_BACKOFF = 360.0         # "capped at six minutes" (Job docs)
MAX_PODS_PER_SYNC = 500     # MaxPodCreateDeletePerSync
EXPECTATIONS_TIMEOUT = 300.0  # ExpectationsTimeout (scaled)

MSG_BACKOFF = "Job has reached the specified backoff limit"
MSG_DEADLINE = "Job was active longer than specified deadline"
MSG_COMPLETIONS = "Reached expected number of succeeded pods"


# ============================================================================ time
def rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> float | None:
    if not s:
        return None
    try:
        return datetime.datetime.fromisoformat(s).timestamp()
    except ValueError:
        return None


# ============================================================================ pods
def has_finalizer(pod: dict) -> bool:
    return TRACKING_FINALIZER in (pod.get("metadata", {}).get("finalizers") or [])


def phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def is_terminal(pod: dict) -> bool:
    return phase(pod) in ("Succeeded", "Failed")


def is_active(pod: dict) -> bool:
    """controller.FilterActivePods: not finished, not being deleted."""
    return not is_terminal(pod) and not pod["metadata"].get("deletionTimestamp")


def is_terminating(pod: dict) -> bool:
    """controller.CountTerminatingPods."""
    return bool(pod["metadata"].get("deletionTimestamp")) and not is_terminal(pod)


def is_ready(pod: dict) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def only_replace_failed(job: dict) -> bool:
    spec = job.get("spec") or {}
    return spec.get("podReplacementPolicy") == "Failed" or spec.get("podFailurePolicy") is not None


def is_pod_failed(pod: dict) -> bool:
    """isPodFailed: phase Failed, or deleted before it succeeded (orphans and pods deleted by
    the controller while the job fails never reach a terminal phase on their own)."""
    if phase(pod) == "Failed":
        return True
    if phase(pod) == "Succeeded":
        return False
    return bool(pod["metadata"].get("deletionTimestamp"))


def pod_index(pod: dict) -> int | None:
    """getCompletionIndex: the annotation (or the label), None when missing or invalid."""
    md = pod.get("metadata") or {}
    v = (md.get("annotations") or {}).get(COMPLETION_INDEX)
    if v is None:
        v = (md.get("labels") or {}).get(COMPLETION_INDEX)
    if v is None:
        return None
    try:
        i = int(v)
    except (TypeError, ValueError):
        return None
    return i if i >= 0 and str(i) == str(v) else None


def restart_count(pods: Iterable[dict]) -> int:
    n = 0
    for p in pods:
        if phase(p) not in ("Running", "Pending"):
            continue
        st = p.get("status") or {}
        for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
            n += int(cs.get("restartCount") or 0)
    return n


def past_backoff_limit_on_failure(job: dict, active: list[dict]) -> bool:
    """pastBackoffLimitOnFailure: with restartPolicy OnFailure the kubelet restarts containers
    in place, so failures show as container restarts of the active pods."""
    spec = job.get("spec") or {}
    tpl_spec = (spec.get("template") or {}).get("spec") or {}
    if tpl_spec.get("restartPolicy") != "OnFailure":
        return False
    limit = spec.get("backoffLimit", 6)
    n = restart_count(active)
    return n > 0 if limit == 0 else n >= limit


def finish_time(pod: dict) -> float | None:
    """getFinishedTime: the latest container finishedAt."""
    best = None
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        t = parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        if t is not None and (best is None or t > best):
            best = t
    return best


# ============================================================================ indexes
def parse_indexes(s: str | None, completions: int | None = None) -> set[int]:
    """status.completedIndexes ("1,3-5,7") as a set; indexes ≥ completions are dropped."""
    out: set[int] = set()
    for part in (s or "").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            continue
        for i in range(a, b + 1):
            if completions is None or i < completions:
                out.add(i)
    return out


def format_indexes(indexes: Iterable[int]) -> str:
    """orderedIntervals.String: sorted, consecutive runs as "a-b"."""
    xs = sorted(set(indexes))
    parts = []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        parts.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(parts)


def pending_indexes(completions: int, done: set[int], active: Iterable[int],
                    count: int) -> list[int]:
    """firstPendingIndexes: the lowest indexes neither completed nor running."""
    busy = done | set(active)
    out = []
    for i in range(completions):
        if len(out) >= count:
            break
        if i not in busy:
            out.append(i)
    return out


# ============================================================================ arithmetic
def want_active(completions: int | None, parallelism: int, succeeded: int, active: int) -> int:
    """manageJob's wantActive: never more than parallelism, never more than needed to reach
    completions; a job without completions stops starting pods after its first success."""
    if completions is None:
        return active if succeeded > 0 else parallelism
    return max(0, min(completions - succeeded, parallelism))


def backoff_delay(failures: int, base: float = DEFAULT_BACKOFF, cap: float = MAX_BACKOFF) -> float:
    """The pod failure back-off after `failures` consecutive failures (10 s, 20 s, 40 s …,
    capped), in Kubernetes seconds; 0 without failures."""
    if failures <= 0:
        return 0.0
    d = base
    for _ in range(1, failures):
        d *= 2
        if d >= cap:
            return cap
    return min(d, cap)


@dataclasses.dataclass
class BackoffRecord:
    """backoffRecord: failures since the last success and when the last one was seen."""
    failures_after_last_success: int = 0
    last_failure_time: float | None = None

    def update(self, succeeded: list[float], failed: list[float]) -> None:
        """newBackoffRecord: fold in newly finished pods given by their finish times."""
        if not succeeded:
            if failed:
                self.failures_after_last_success += len(failed)
                self.last_failure_time = max(failed)
            return
        last_success = max(succeeded)
        later = sorted(t for t in failed if t > last_success)
        self.failures_after_last_success = len(later)
        self.last_failure_time = later[-1] if later else None

    def remaining(self, now: float, scale: Callable[[float], float] = timescale.scaled) -> float:
        if self.failures_after_last_success <= 0 or self.last_failure_time is None:
            return 0.0
        delay = scale(backoff_delay(self.failures_after_last_success))
        return max(0.0, delay - (now - self.last_failure_time))


def removal_rank(pod: dict) -> tuple:
    """activePodsForRemoval's order (controller.ActivePods): unassigned before assigned,
    pending before running, not ready before ready, more restarts first, newer first."""
    st = pod.get("status") or {}
    restarts = sum(int(c.get("restartCount") or 0) for c in st.get("containerStatuses") or [])
    created = parse_time(pod["metadata"].get("creationTimestamp")) or 0.0
    return (bool(pod.get("spec", {}).get("nodeName")),
            {"Pending": 0, "Unknown": 1, "Running": 2}.get(phase(pod), 2),
            is_ready(pod), -restarts, -created)


def pods_for_removal(active: list[dict], n: int) -> list[dict]:
    return sorted(active, key=removal_rank)[:max(0, n)]


def indexed_pods_for_removal(active: list[dict], completions: int,
                             done: set[int]) -> list[dict]:
    """Pods of an Indexed job that must go whatever the counts: without a valid index, with an
    index out of range or already completed, or duplicates of another active pod's index."""
    out, seen = [], {}
    for p in sorted(active, key=removal_rank, reverse=True):  # keep the "best" of duplicates
        ix = pod_index(p)
        if ix is None or ix >= completions or ix in done or ix in seen:
            out.append(p)
        else:
            seen[ix] = p
    return out


def condition(job: dict, ctype: str) -> dict | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype and c.get("status") == "True":
            return c
    return None


def finished_type(job: dict) -> str | None:
    """"Complete" / "Failed" when the job has finished (IsJobFinished)."""
    for t in ("Complete", "Failed"):
        if condition(job, t):
            return t
    return None


def set_condition(status: dict, ctype: str, cstatus: str, reason: str, message: str,
                  now: float) -> bool:
    """ensureJobConditionStatus: add or update a condition; True when it changed."""
    conds = status.setdefault("conditions", [])
    ts = rfc3339(now)
    for c in conds:
        if c.get("type") == ctype:
            if c.get("status") == cstatus and c.get("reason") == reason and \
                    c.get("message") == message:
                return False
            if c.get("status") != cstatus:
                c["lastTransitionTime"] = ts
            c.update(status=cstatus, reason=reason, message=message, lastProbeTime=ts)
            return True
    if cstatus == "False" and ctype == "Suspended":
        return False  # a job never suspended has no Suspended condition
    conds.append({"type": ctype, "status": cstatus, "lastProbeTime": ts,
                  "lastTransitionTime": ts, "reason": reason, "message": message})
    return True


def new_pod(job: dict, index: int | None = None) -> dict:
    """The pod the job creates: its template with the job's ownerReference, the tracking
    finalizer and, for Indexed jobs, the completion index (annotation, label, hostname and
    the JOB_COMPLETION_INDEX variable through the downward API)."""
    md = job["metadata"]
    tpl = copy.deepcopy((job.get("spec") or {}).get("template") or {})
    tmd = tpl.get("metadata") or {}
    spec = tpl.get("spec") or {}
    labels = dict(tmd.get("labels") or {})
    annotations = dict(tmd.get("annotations") or {})
    finalizers = list(tmd.get("finalizers") or [])
    if TRACKING_FINALIZER not in finalizers:
        finalizers.append(TRACKING_FINALIZER)
    name = md["name"]
    if index is None:
        prefix = f"{name}-"
        if len(prefix) > 58:
            prefix = prefix[:58]
    else:
        appendix = f"-{index}-"
        prefix = name + appendix if len(name + appendix) <= 58 else \
            name[:58 - len(appendix)] + appendix
        annotations[COMPLETION_INDEX] = str(index)
        labels[COMPLETION_INDEX] = str(index)
        if not spec.get("hostname"):
            spec["hostname"] = f"{name}-{index}"
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            env = c.setdefault("env", [])
            if not any(e.get("name") == COMPLETION_INDEX_ENV for e in env):
                env.append({"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
                    "apiVersion": "v1",
                    "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}})
    pmd = {"generateName": prefix, "namespace": md.get("namespace"), "labels": labels,
           "finalizers": finalizers, "ownerReferences": [owner_ref(job)]}
    if annotations:
        pmd["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pmd, "spec": spec}


def strip_status(status: dict) -> dict:
    """The status as kube writes it: zero counters omitted (omitempty), ready and terminating
    kept (pointers), uncountedTerminatedPods always present."""
    out = {}
    for k, v in status.items():
        if k in ("active", "succeeded", "failed") and not v:
            continue
        if k in ("completedIndexes", "failedIndexes") and not v:
            continue
        if k == "conditions" and not v:
            continue
        if v is None:
            continue
        out[k] = v
    unc = out.get("uncountedTerminatedPods") or {}
    out["uncountedTerminatedPods"] = {k: v for k, v in unc.items() if v}
    return out


# ============================================================================ controller
@dataclasses.dataclass
class _Expectations:
    uid: str
    creates: set = dataclasses.field(default_factory=set)    # pod names not yet observed
    deletes: set = dataclasses.field(default_factory=set)    # pod uids not yet seen deleted
    since: float = 0.0


class JobController(Controller):
    name = "job"
    workers = 4

    def setup(self) -> None:
        self.clock: Callable[[], float] = time.time
        self.jobs = self.informers.informer("Job")
        self.pods = self.informers.informer("Pod")
        self.jobs.add_handler(self._on_job)
        self.pods.add_handler(self._on_pod)
        self._backoff: dict[str, BackoffRecord] = {}
        self._expect: dict[str, _Expectations] = {}
        self._rm_expected: dict[str, set[str]] = {}  # job uid -> pod uids whose finalizer went
        self._written: dict[str, tuple[str, int]] = {}  # key -> (uid, resourceVersion) we wrote

    # ------------------------------------------------------------------ handlers
    def _on_job(self, event: str, job: dict, old: dict | None) -> None:
        self.enqueue(job)

    def _on_pod(self, event: str, pod: dict, old: dict | None) -> None:
        ref = controller_ref(pod)
        ns = pod["metadata"].get("namespace")
        if ref and ref.get("kind") == "Job":
            key = f"{ns}/{ref['name']}"
            job = self.jobs.get(ns, ref.get("name", ""))
            if job is not None and job["metadata"].get("uid") == ref.get("uid"):
                e = self._expect.get(key)
                if e is not None and e.uid == ref.get("uid"):
                    e.creates.discard(pod["metadata"].get("name"))
                    if event == "DELETED" or pod["metadata"].get("deletionTimestamp"):
                        e.deletes.discard(pod["metadata"].get("uid"))
                self.queue.add(key)
                return
        if has_finalizer(pod) and event != "DELETED":
            self.queue.add("pod:" + object_key(pod))

    # ------------------------------------------------------------------ helpers
    def _pods_of(self, job: dict) -> list[dict]:
        uid = job["metadata"]["uid"]
        return [p for p in self.pods.list(job["metadata"].get("namespace"))
                if (controller_ref(p) or {}).get("uid") == uid]

    def _exp(self, key: str, uid: str) -> _Expectations:
        e = self._expect.get(key)
        if e is None or e.uid != uid:
            e = self._expect[key] = _Expectations(uid)
        return e

    def _observe(self, key: str, uid: str, pods: list[dict]) -> None:
        """Prune expectations the cache now confirms."""
        e = self._exp(key, uid)
        names = {p["metadata"]["name"] for p in pods}
        e.creates -= names
        by_uid = {p["metadata"]["uid"]: p for p in pods}
        e.deletes = {u for u in e.deletes
                     if u in by_uid and not by_uid[u]["metadata"].get("deletionTimestamp")}
        rm = self._rm_expected.get(uid)
        if rm:
            self._rm_expected[uid] = {u for u in rm if u in by_uid and has_finalizer(by_uid[u])}

    def _satisfied(self, key: str, uid: str) -> bool:
        e = self._exp(key, uid)
        if not e.creates and not e.deletes:
            return True
        if time.monotonic() - e.since > timescale.scaled(EXPECTATIONS_TIMEOUT):
            self.log.info("job %s: expectations timed out; resyncing", key)
            e.creates.clear()
            e.deletes.clear()
            return True
        return False

    async def _remove_finalizer(self, pod: dict) -> bool:
        """True when the pod no longer carries the tracking finalizer (or is gone)."""
        md = pod["metadata"]
        patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}}
        try:
            await self.client.patch("Pod", md.get("namespace"), md["name"], patch,
                                    patch_type="application/strategic-merge-patch+json")
        except APIError as e:
            if e.not_found:
                return True
            self.log.info("removing finalizer of pod %s: %s", md["name"], e)
            return False
        return True

    async def _remove_finalizers(self, job_uid: str | None, pods: list[dict]) -> set[str]:
        pods = [p for p in pods if has_finalizer(p)]
        done = await asyncio.gather(*(self._remove_finalizer(p) for p in pods))
        removed = {p["metadata"]["uid"] for p, ok in zip(pods, done) if ok}
        if job_uid:
            self._rm_expected.setdefault(job_uid, set()).update(removed)
        return removed

    async def _delete_pods(self, job: dict, key: str, pods: list[dict],
                           keep_finalizer: bool) -> int:
        """Delete pods; without keep_finalizer the finalizer goes first so the pods are not
        counted as failures (deleteJobPods), with it they are (deleteActivePods)."""
        e = self._exp(key, job["metadata"]["uid"])

        async def one(p: dict) -> bool:
            md = p["metadata"]
            if not keep_finalizer and has_finalizer(p):
                if not await self._remove_finalizer(p):
                    return False
                self._rm_expected.setdefault(job["metadata"]["uid"], set()).add(md["uid"])
            try:
                await self.client.delete("Pod", md.get("namespace"), md["name"],
                                         preconditions={"uid": md["uid"]})
            except APIError as err:
                if err.not_found:
                    return True
                await self.recorder.warning(job, "FailedDelete", f"Error deleting: {err.message}")
                return False
            await self.recorder.normal(job, "SuccessfulDelete", f"Deleted pod: {md['name']}")
            return True

        if not e.creates and not e.deletes:
            e.since = time.monotonic()
        e.deletes.update(p["metadata"]["uid"] for p in pods)
        done = await asyncio.gather(*(one(p) for p in pods))
        for p, ok in zip(pods, done):
            if not ok:
                e.deletes.discard(p["metadata"]["uid"])
        return sum(done)

    async def _create_pods(self, job: dict, key: str, indexes: list[int | None]) -> int:
        """Create pods in slow-start batches (1, 2, 4, …); stop at the first failing batch."""
        e = self._exp(key, job["metadata"]["uid"])
        if not e.creates and not e.deletes:
            e.since = time.monotonic()
        created = 0
        batch = 1
        todo = list(indexes)

        async def one(ix: int | None) -> bool:
            try:
                pod = await self.client.create("Pod", new_pod(job, ix),
                                               job["metadata"].get("namespace"))
            except APIError as err:
                await self.recorder.warning(job, "FailedCreate", f"Error creating: {err.message}")
                return False
            e.creates.add(pod["metadata"]["name"])
            await self.recorder.normal(job, "SuccessfulCreate",
                                       f"Created pod: {pod['metadata']['name']}")
            return True

        while todo:
            chunk, todo = todo[:batch], todo[batch:]
            ok = await asyncio.gather(*(one(ix) for ix in chunk))
            created += sum(ok)
            if not all(ok):
                break
            batch *= 2
        return created

    # ------------------------------------------------------------------ reconcile
    async def reconcile(self, key: str) -> None:
        if key.startswith("pod:"):
            await self._orphan_pod(key[4:])
            return
        ns, name = split_key(key)
        cached = self.jobs.get(ns, name)
        if cached is None:
            self._forget(key)
            for p in self.pods.list(ns):
                ref = controller_ref(p) or {}
                if ref.get("kind") == "Job" and ref.get("name") == name and has_finalizer(p):
                    self.queue.add("pod:" + object_key(p))
            return
        if self._stale(key, cached):
            return  # our own status write is on its way to the cache; its event requeues
        job = copy.deepcopy(cached)
        job.setdefault("apiVersion", "batch/v1")
        job.setdefault("kind", "Job")
        await self._sync(key, job)

    def _stale(self, key: str, cached: dict) -> bool:
        """True when the cache still holds an older version than the one we last wrote
        (resourceVersions are the store's revisions here, so they compare as numbers)."""
        md = cached["metadata"]
        uid, rv = self._written.get(key, (None, 0))
        try:
            return uid == md.get("uid") and int(md.get("resourceVersion") or 0) < rv
        except ValueError:
            return False

    def _forget(self, key: str) -> None:
        self._backoff.pop(key, None)
        self._written.pop(key, None)
        e = self._expect.pop(key, None)
        if e is not None:
            self._rm_expected.pop(e.uid, None)

    async def _orphan_pod(self, pkey: str) -> None:
        """A pod with the tracking finalizer whose Job is gone (or that has none): release it
        (handleOrphanPod), after checking with the API server that the job is really gone."""
        ns, name = split_key(pkey)
        pod = self.pods.get(ns, name)
        if pod is None or not has_finalizer(pod):
            return
        ref = controller_ref(pod)
        if ref and ref.get("kind") == "Job":
            job = self.jobs.get(ns, ref.get("name", ""))
            if job is not None and job["metadata"].get("uid") == ref.get("uid"):
                self.queue.add(f"{ns}/{ref['name']}")
                return
            live = await self.client.get_or_none("Job", ns, ref.get("name", ""))
            if live is not None and live["metadata"].get("uid") == ref.get("uid") and \
                    not live["metadata"].get("deletionTimestamp") and not finished_type(live):
                return  # the cache is behind; the job's own sync will handle the pod
        await self._remove_finalizers(None, [pod])

    async def _sync(self, key: str, job: dict) -> None:
        md = job["metadata"]
        uid = md["uid"]
        spec = job.get("spec") or {}
        pods = self._pods_of(job)
        self._observe(key, uid, pods)
        if md.get("deletionTimestamp"):
            await self._remove_finalizers(uid, pods)
            return
        now = self.clock()
        if finished_type(job):
            await self._remove_finalizers(uid, pods)
            self._backoff.pop(key, None)
            await self._ttl(job, now)
            return

        status = copy.deepcopy(job.get("status") or {})
        orig = strip_status(copy.deepcopy(status))
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        suspended = bool(spec.get("suspend"))
        rm_expected = self._rm_expected.get(uid, set())
        unc = status.get("uncountedTerminatedPods") or {}
        unc_s, unc_f = list(unc.get("succeeded") or []), list(unc.get("failed") or [])
        counted = set(unc_s) | set(unc_f)
        active = [p for p in pods if is_active(p)]
        terminating = sum(1 for p in pods if is_terminating(p))
        ready = sum(1 for p in active if is_ready(p))
        done_idx = parse_indexes(status.get("completedIndexes"), completions) if indexed \
            else set()

        # --- newly finished pods
        new_s, new_f = [], []
        for p in pods:
            puid = p["metadata"]["uid"]
            if not has_finalizer(p) or puid in rm_expected or puid in counted:
                continue
            if phase(p) == "Succeeded":
                new_s.append(p)
            elif is_pod_failed(p):
                new_f.append(p)

        if status.get("startTime") is None and not suspended:
            status["startTime"] = rfc3339(now)

        succeeded = int(status.get("succeeded") or 0) + len(unc_s) + len(new_s)
        failed = int(status.get("failed") or 0) + len(unc_f) + len(new_f)
        for p in new_s:
            ix = pod_index(p)
            if indexed and ix is not None and completions is not None and ix < completions:
                done_idx.add(ix)
        if indexed:
            succeeded = len(done_idx)

        # --- has the job failed?
        fail = None
        ft = condition(job, "FailureTarget")
        if ft:
            fail = (ft.get("reason") or "", ft.get("message") or "")
        elif condition(job, "SuccessCriteriaMet"):
            fail = None
        elif failed > int(spec.get("backoffLimit", 6)) or past_backoff_limit_on_failure(job,
                                                                                       active):
            fail = ("BackoffLimitExceeded", MSG_BACKOFF)
        elif self._past_deadline(job, status, now):
            fail = ("DeadlineExceeded", MSG_DEADLINE)
        to_kill: list[dict] = []
        if fail:
            to_kill = active
            new_f += [p for p in active if has_finalizer(p)
                      and p["metadata"]["uid"] not in rm_expected
                      and p["metadata"]["uid"] not in counted]
            set_condition(status, "FailureTarget", "True", fail[0], fail[1], now)

        # --- step 1: record newly finished pods as uncounted before touching finalizers
        if new_s or new_f:
            unc_s += [p["metadata"]["uid"] for p in new_s]
            unc_f += [p["metadata"]["uid"] for p in new_f]
            status["uncountedTerminatedPods"] = {"succeeded": unc_s, "failed": unc_f}
            if indexed:
                status["completedIndexes"] = format_indexes(done_idx)
            job = await self._write_status(job, status)
            status = copy.deepcopy(job.get("status") or {})
            orig = strip_status(copy.deepcopy(status))
            rec = self._backoff.setdefault(key, BackoffRecord())
            rec.update([finish_time(p) or now for p in new_s],
                       [now for p in new_f if p not in to_kill])

        # --- make the difference
        created = deleted = 0
        requeue: list[float] = []
        if fail:
            deleted = await self._delete_pods(job, key, to_kill, keep_finalizer=True)
            terminating += deleted
        elif condition(job, "SuccessCriteriaMet") or suspended:
            if active:
                deleted = await self._delete_pods(job, key, active, keep_finalizer=False)
                terminating += deleted
        elif self._satisfied(key, uid):
            created, deleted, wait = await self._manage(key, job, active, succeeded, done_idx,
                                                        terminating, now)
            if wait:
                requeue.append(wait)
        n_active = len(active) - deleted + created
        if fail:
            n_active = 0

        # --- suspension conditions
        if not fail:
            if suspended:
                if set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended",
                                 now):
                    await self.recorder.normal(job, "Suspended", "Job suspended")
            elif condition(job, "Suspended"):
                set_condition(status, "Suspended", "False", "JobResumed", "Job resumed", now)
                await self.recorder.normal(job, "Resumed", "Job resumed")
                status["startTime"] = rfc3339(now)

        # --- step 2: remove finalizers of the recorded pods; step 3: count them
        unc = status.get("uncountedTerminatedPods") or {}
        unc_s, unc_f = list(unc.get("succeeded") or []), list(unc.get("failed") or [])
        if unc_s or unc_f:
            by_uid = {p["metadata"]["uid"]: p for p in pods}
            pending = [by_uid[u] for u in unc_s + unc_f if u in by_uid and has_finalizer(by_uid[u])
                       and u not in self._rm_expected.get(uid, set())]
            removed = await self._remove_finalizers(uid, pending)
            gone = lambda u: (u not in by_uid or not has_finalizer(by_uid[u]) or u in removed
                              or u in self._rm_expected.get(uid, set()))
            flushed_s = [u for u in unc_s if gone(u)]
            flushed_f = [u for u in unc_f if gone(u)]
            if not indexed:
                status["succeeded"] = int(status.get("succeeded") or 0) + len(flushed_s)
            status["failed"] = int(status.get("failed") or 0) + len(flushed_f)
            unc_s = [u for u in unc_s if u not in flushed_s]
            unc_f = [u for u in unc_f if u not in flushed_f]
            status["uncountedTerminatedPods"] = {"succeeded": unc_s, "failed": unc_f}
        if indexed:
            status["succeeded"] = len(parse_indexes(status.get("completedIndexes"), completions))
        flushed = not unc_s and not unc_f

        # --- success
        if not fail and not suspended and not condition(job, "SuccessCriteriaMet"):
            total = int(status.get("succeeded") or 0) + len(unc_s)
            if indexed:
                complete = completions is not None and total >= completions
            elif completions is None:
                complete = total > 0 and n_active == 0
            else:
                complete = total >= completions and n_active == 0
            if complete and flushed:
                set_condition(status, "SuccessCriteriaMet", "True", "CompletionsReached",
                              MSG_COMPLETIONS, now)
        if flushed and terminating == 0:
            if any(c.get("type") == "FailureTarget" and c.get("status") == "True"
                   for c in status.get("conditions") or []):
                ftc = next(c for c in status["conditions"] if c["type"] == "FailureTarget")
                if set_condition(status, "Failed", "True", ftc.get("reason", ""),
                                 ftc.get("message", ""), now):
                    await self.recorder.warning(job, ftc.get("reason", ""),
                                                ftc.get("message", ""))
                n_active = 0
            elif any(c.get("type") == "SuccessCriteriaMet" and c.get("status") == "True"
                     for c in status.get("conditions") or []):
                if set_condition(status, "Complete", "True", "CompletionsReached",
                                 MSG_COMPLETIONS, now):
                    status["completionTime"] = rfc3339(now)
                    await self.recorder.normal(job, "Completed", "Job completed")
                n_active = 0

        status["active"] = max(0, n_active)
        status["ready"] = min(ready, max(0, n_active)) if not fail else 0
        status["terminating"] = terminating
        if finished_type({"status": status}):
            status["ready"] = 0
            status["terminating"] = 0
        new = strip_status(status)
        if new != orig:
            job = await self._write_status(job, new)
        if finished_type(job):
            await self._ttl(job, now)
            return
        if not suspended and not fail:
            wait = self._deadline_left(job, status, now)
            if wait is not None:
                requeue.append(wait)
        if requeue:
            self.queue.add_after(key, min(requeue) + 0.01)

    async def _write_status(self, job: dict, status: dict) -> dict:
        obj = dict(job)
        obj["status"] = strip_status(status)
        new = await self.client.update_status("Job", obj)  # 409 → requeued with back-off
        md = new["metadata"]
        try:
            self._written[object_key(new)] = (md.get("uid"), int(md.get("resourceVersion") or 0))
        except ValueError:
            pass
        return new

    def _deadline_left(self, job: dict, status: dict, now: float) -> float | None:
        ads = (job.get("spec") or {}).get("activeDeadlineSeconds")
        start = parse_time(status.get("startTime"))
        if ads is None or start is None:
            return None
        return start + timescale.scaled(float(ads)) - now

    def _past_deadline(self, job: dict, status: dict, now: float) -> bool:
        if (job.get("spec") or {}).get("suspend"):
            return False
        left = self._deadline_left(job, status, now)
        return left is not None and left <= 0

    async def _manage(self, key: str, job: dict, active: list[dict], succeeded: int,
                      done_idx: set[int], terminating: int,
                      now: float) -> tuple[int, int, float | None]:
        """manageJob: delete what is too much, create what is missing (after the failure
        back-off). Returns (created, deleted, seconds to wait before creating)."""
        spec = job.get("spec") or {}
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism") or 0)
        indexed = spec.get("completionMode") == "Indexed"
        to_delete: list[dict] = []
        if indexed and completions is not None:
            to_delete = indexed_pods_for_removal(active, completions, done_idx)
            keep = [p for p in active if p not in to_delete]
            want = want_active(completions, parallelism, len(done_idx), len(keep))
            to_delete += pods_for_removal(keep, len(keep) - want)
        else:
            want = want_active(completions, parallelism, succeeded, len(active))
            to_delete = pods_for_removal(active, len(active) - want)
        to_delete = to_delete[:MAX_PODS_PER_SYNC]
        if to_delete:
            return 0, await self._delete_pods(job, key, to_delete, keep_finalizer=False), None
        if len(active) >= want:
            return 0, 0, None
        rec = self._backoff.get(key)
        left = rec.remaining(now) if rec else 0.0
        if left > 0:
            return 0, 0, left
        diff = want - len(active)
        if only_replace_failed(job):
            diff -= terminating
        diff = min(diff, MAX_PODS_PER_SYNC)
        if diff <= 0:
            return 0, 0, None
        if indexed and completions is not None:
            busy = [i for i in (pod_index(p) for p in active) if i is not None]
            indexes: list[int | None] = list(pending_indexes(completions, done_idx, busy, diff))
        else:
            indexes = [None] * diff
        return await self._create_pods(job, key, indexes), 0, None

    async def _ttl(self, job: dict, now: float) -> None:
        """ttlSecondsAfterFinished (the TTL-after-finished controller's job): delete the job
        that long after it finished; the garbage collector removes its pods."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None or job["metadata"].get("deletionTimestamp"):
            return
        st = job.get("status") or {}
        fin = parse_time(st.get("completionTime"))
        if fin is None:
            c = condition(job, "Failed") or condition(job, "Complete") or {}
            fin = parse_time(c.get("lastTransitionTime"))
        if fin is None:
            return
        left = fin + timescale.scaled(float(ttl)) - now
        if left > 0:
            self.enqueue_after(job, left + 0.01)
            return
        md = job["metadata"]
        try:
            await self.client.delete("Job", md.get("namespace"), md["name"],
                                     propagation="Background",
                                     preconditions={"uid": md["uid"]})
            self.log.info("job %s/%s deleted %ss after it finished", md.get("namespace"),
                          md["name"], ttl)
        except APIError as e:
            if not (e.not_found or e.conflict):
                raise
