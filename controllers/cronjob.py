"""The CronJob controller (kube-controller-manager's cronjob controller v2, Kubernetes 1.32).

Each sync of a CronJob:
  1. deletes the oldest finished Jobs beyond successfulJobsHistoryLimit / failedJobsHistoryLimit;
  2. reconciles status.active with the Jobs it owns (finished ones leave, SawCompletedJob;
     vanished ones leave, MissingJob) and status.lastSuccessfulTime;
  3. finds the most recent unmet schedule time since lastScheduleTime (or creation), bounded by
     startingDeadlineSeconds, and — unless suspended, too late, already processed or blocked by
     concurrencyPolicy Forbid — starts a Job named `<cronjob>-<scheduled unix time / 60>`
     (Replace first deletes the active ones);
  4. writes status once and requeues itself at the next schedule time.

Schedules are wall-clock (the cluster time scale does not speed them up) in UTC or
spec.timeZone. `clock` is injectable so the decisions can be tested with a fake time.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable

from apiserver.kinds.batch import CronError, CronSchedule, parse_cron
from kubelab.client import APIError

from .base import Controller, controller_ref, owner_ref, split_key

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
NEXT_SCHEDULE_DELTA = 0.1  # nextScheduleDelta: requeue a little after the schedule time
TOO_MANY_MISSED = 100

NONE_MISSED, FEW_MISSED, MANY_MISSED = "none", "few", "many"

UTC = datetime.UTC


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def rfc3339(t: datetime.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> datetime.datetime | None:
    if not s:
        return None
    try:
        t = datetime.datetime.fromisoformat(s)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _spec(o: dict) -> dict:
    return o.get("spec") or {}


def _status(o: dict) -> dict:
    return o.get("status") or {}


# ============================================================================ schedule arithmetic
def schedule_of(cj: dict) -> CronSchedule:
    """The parsed schedule in spec.timeZone (UTC when unset); raises CronError."""
    spec = _spec(cj)
    return parse_cron(spec.get("schedule") or "", spec.get("timeZone"))


def most_recent_schedule_time(cj: dict, now: datetime.datetime, sched: CronSchedule,
                              include_starting_deadline: bool = True
                              ) -> tuple[datetime.datetime, datetime.datetime | None, str]:
    """mostRecentScheduleTime: (earliest time considered, the latest schedule time ≤ now after
    it or None, how many were missed: none/few/many). Raises ValueError for schedules whose
    activations are less than a second apart (e.g. a day that never comes)."""
    earliest = parse_time(cj.get("metadata", {}).get("creationTimestamp")) or now
    last = parse_time(_status(cj).get("lastScheduleTime"))
    if last is not None:
        earliest = last
    sds = _spec(cj).get("startingDeadlineSeconds")
    if include_starting_deadline and sds is not None:
        deadline = now - datetime.timedelta(seconds=int(sds))
        earliest = max(earliest, deadline)
    t1 = sched.next(earliest)
    if t1 is None or now < t1:
        return earliest, None, NONE_MISSED
    t2 = sched.next(t1)
    if t2 is None or now < t2:
        return earliest, t1, NONE_MISSED
    between = round((t2 - t1).total_seconds())
    if between < 1:
        raise ValueError("time difference between two schedules is less than 1 second")
    elapsed = int((now - t1).total_seconds())
    missed = elapsed // between + 1
    potential = t1 + datetime.timedelta(seconds=(missed - 2) * between)
    most_recent = None
    t = sched.next(potential)
    while t is not None and t <= now:
        most_recent = t
        t = sched.next(t)
    kind = MANY_MISSED if missed > TOO_MANY_MISSED else FEW_MISSED if missed > 0 else NONE_MISSED
    return earliest, most_recent, kind


def next_schedule_delay(cj: dict, now: datetime.datetime, sched: CronSchedule) -> float | None:
    """nextScheduleTimeDuration: seconds until the next activation (plus a small delta)."""
    try:
        earliest, most_recent, _ = most_recent_schedule_time(cj, now, sched, False)
    except ValueError:
        return None
    base = most_recent or earliest
    nxt = sched.next(base)
    if nxt is None:
        return None
    return (nxt - now).total_seconds() + NEXT_SCHEDULE_DELTA


def job_name(cj_name: str, scheduled: datetime.datetime) -> str:
    """getJobName: `<cronjob>-<scheduled unix time in minutes>`."""
    return f"{cj_name}-{int(scheduled.timestamp()) // 60}"


def _zone(name: str | None):
    if not name:
        return UTC
    from zoneinfo import ZoneInfo
    return ZoneInfo(name)


def job_from_template(cj: dict, scheduled: datetime.datetime) -> dict:
    """getJobFromTemplate2."""
    md = cj["metadata"]
    jt = _spec(cj).get("jobTemplate") or {}
    jmd = jt.get("metadata") or {}
    annotations = dict(jmd.get("annotations") or {})
    try:
        local = scheduled.astimezone(_zone(_spec(cj).get("timeZone")))
    except Exception:  # noqa: BLE001 - an invalid zone is reported before we get here
        local = scheduled.astimezone(UTC)
    stamp = local.isoformat()
    annotations[SCHEDULED_TIMESTAMP] = stamp.replace("+00:00", "Z")
    job_md = {"name": job_name(md["name"], scheduled), "namespace": md.get("namespace"),
              "annotations": annotations, "ownerReferences": [owner_ref(cj)]}
    if jmd.get("labels"):
        job_md["labels"] = dict(jmd["labels"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_md,
            "spec": copy.deepcopy(jt.get("spec") or {})}


def job_finished(job: dict) -> str | None:
    """FinishedCondition: "Complete" / "Failed" or None."""
    for c in _status(job).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"]
    return None


def _start_key(job: dict) -> tuple:
    """byJobStartTime: by status.startTime (unset last), then by name."""
    t = parse_time(_status(job).get("startTime"))
    return (t is None, t or datetime.datetime.min.replace(tzinfo=UTC),
            job["metadata"].get("name", ""))


def jobs_beyond_history(cj: dict, jobs: list[dict]) -> list[dict]:
    """The finished jobs removeOldestJobs deletes: the oldest beyond each history limit."""
    spec = _spec(cj)
    out = []
    for kind, limit in (("Complete", spec.get("successfulJobsHistoryLimit")),
                        ("Failed", spec.get("failedJobsHistoryLimit"))):
        if limit is None:
            continue
        done = sorted((j for j in jobs if job_finished(j) == kind), key=_start_key)
        out += done[:max(0, len(done) - int(limit))]
    return out


def job_ref(job: dict) -> dict:
    md = job["metadata"]
    return {"kind": "Job", "namespace": md.get("namespace"), "name": md["name"],
            "uid": md.get("uid"), "apiVersion": "batch/v1",
            "resourceVersion": md.get("resourceVersion")}


def in_active(cj: dict, uid: str | None = None, name: str | None = None) -> bool:
    for r in _status(cj).get("active") or []:
        if (uid is not None and r.get("uid") == uid) or (name is not None and r.get("name") == name):
            return True
    return False


def remove_active(cj: dict, uid: str) -> None:
    st = cj.setdefault("status", {})
    st["active"] = [r for r in st.get("active") or [] if r.get("uid") != uid]


# ============================================================================ controller
class CronJobController(Controller):
    name = "cronjob"
    workers = 2

    def setup(self) -> None:
        self.clock: Callable[[], datetime.datetime] = utcnow
        self.cronjobs = self.informers.informer("CronJob")
        self.jobs = self.informers.informer("Job")
        self.cronjobs.add_handler(self._on_cronjob)
        self._written: dict[str, tuple[str, int]] = {}  # key -> (uid, rv) of our last write
        self.jobs.add_handler(self._on_job)

    def _on_cronjob(self, event: str, cj: dict, old: dict | None) -> None:
        if event != "DELETED":
            self.enqueue(cj)

    def _on_job(self, event: str, job: dict, old: dict | None) -> None:
        self.enqueue_owner(job, "CronJob")

    def _jobs_of(self, cj: dict) -> list[dict]:
        """getJobsToBeReconciled: jobs whose controller is a CronJob of this name."""
        md = cj["metadata"]
        out = []
        for j in self.jobs.list(md.get("namespace")):
            ref = controller_ref(j)
            if ref and ref.get("kind") == "CronJob" and ref.get("name") == md["name"]:
                out.append(j)
        return out

    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        cached = self.cronjobs.get(ns, name)
        if cached is None:
            self._written.pop(key, None)
            return
        uid, rv = self._written.get(key, (None, 0))
        try:
            if uid == cached["metadata"].get("uid") and \
                    int(cached["metadata"].get("resourceVersion") or 0) < rv:
                return  # our last status write has not reached the cache; its event requeues
        except ValueError:
            pass
        cj = copy.deepcopy(cached)
        cj.setdefault("apiVersion", "batch/v1")
        cj.setdefault("kind", "CronJob")
        jobs = self._jobs_of(cj)
        if any(not job_finished(j) and not in_active(cj, uid=j["metadata"].get("uid"))
               for j in jobs):
            # our own status update may not have reached the cache yet: read it fresh
            live = await self.client.get_or_none("CronJob", ns, name)
            if live is None:
                return
            cj = live
            cj.setdefault("apiVersion", "batch/v1")
            cj.setdefault("kind", "CronJob")
        orig = copy.deepcopy(_status(cj))
        now = self.clock()
        await self._cleanup_finished(cj, jobs)
        requeue = await self._sync(cj, jobs, now)
        st = {k: v for k, v in _status(cj).items() if v not in (None, [])}
        if st != {k: v for k, v in orig.items() if v not in (None, [])}:
            cj["status"] = st
            new = await self.client.update_status("CronJob", cj)  # 409 → requeued, back-off
            try:
                self._written[key] = (new["metadata"].get("uid"),
                                      int(new["metadata"].get("resourceVersion") or 0))
            except ValueError:
                pass
        if requeue is not None:
            self.queue.add_after(key, max(0.0, requeue))

    async def _delete_job(self, cj: dict, job: dict) -> bool:
        md = job["metadata"]
        try:
            await self.client.delete("Job", md.get("namespace"), md["name"],
                                     propagation="Background")
        except APIError as e:
            if not e.not_found:
                await self.recorder.warning(cj, "FailedDelete", f"Deleted job: {e.message}")
                return False
        remove_active(cj, md.get("uid"))
        await self.recorder.normal(cj, "SuccessfulDelete", f"Deleted job {md['name']}")
        return True

    async def _cleanup_finished(self, cj: dict, jobs: list[dict]) -> None:
        if cj["metadata"].get("deletionTimestamp"):
            return
        for job in jobs_beyond_history(cj, jobs):
            await self._delete_job(cj, job)

    async def _sync(self, cj: dict, jobs: list[dict], now: datetime.datetime) -> float | None:
        """syncCronJob: returns seconds until the next sync, or None."""
        md, spec = cj["metadata"], _spec(cj)
        st = cj.setdefault("status", {})
        children = set()
        for j in jobs:
            juid = j["metadata"].get("uid")
            children.add(juid)
            found = in_active(cj, uid=juid)
            fin = job_finished(j)
            if not found and not fin:
                if not j["metadata"].get("deletionTimestamp"):
                    await self.recorder.warning(
                        cj, "UnexpectedJob",
                        f"Saw a job that the controller did not create or forgot: "
                        f"{j['metadata']['name']}")
            elif found and fin:
                remove_active(cj, juid)
                await self.recorder.normal(cj, "SawCompletedJob",
                                           f"Saw completed job: {j['metadata']['name']}, "
                                           f"condition: {fin}")
            if fin:
                ct = parse_time(_status(j).get("completionTime"))
                last = parse_time(st.get("lastSuccessfulTime"))
                if ct is not None and (last is None or ct > last):
                    st["lastSuccessfulTime"] = _status(j)["completionTime"]
        for ref in list(st.get("active") or []):
            if ref.get("uid") in children:
                continue
            live = await self.client.get_or_none("Job", ref.get("namespace") or
                                                 md.get("namespace"), ref.get("name", ""))
            if live is None or live["metadata"].get("uid") != ref.get("uid"):
                await self.recorder.normal(cj, "MissingJob",
                                           f"Active job went missing: {ref.get('name')}")
                remove_active(cj, ref.get("uid"))

        if md.get("deletionTimestamp"):
            return None
        tz = spec.get("timeZone")
        if tz is not None:
            try:
                _zone(tz)
            except Exception as e:  # noqa: BLE001
                await self.recorder.warning(cj, "UnknownTimeZone",
                                            f"invalid timeZone: \"{tz}\": {e}")
                return None
        schedule = spec.get("schedule") or ""
        if "TZ=" in schedule:
            await self.recorder.warning(
                cj, "UnsupportedSchedule",
                f"CRON_TZ or TZ used in schedule \"{schedule}\" is not officially supported, "
                "see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for "
                "more details")
        try:
            sched = schedule_of(cj)
        except CronError as e:
            await self.recorder.warning(cj, "UnparseableSchedule",
                                        f"unparseable schedule: \"{schedule}\" : {e}")
            return None
        if spec.get("suspend"):
            return None

        try:
            _, scheduled, missed = most_recent_schedule_time(cj, now, sched, True)
        except ValueError as e:
            await self.recorder.warning(cj, "InvalidSchedule",
                                        f"invalid schedule: {schedule} : {e}")
            return None
        if scheduled is None or scheduled > now:
            return next_schedule_delay(cj, now, sched)
        if missed == MANY_MISSED:
            await self.recorder.warning(
                cj, "TooManyMissedTimes", "too many missed start times. Set or decrease "
                ".spec.startingDeadlineSeconds or check clock skew")

        sds = spec.get("startingDeadlineSeconds")
        if sds is not None and scheduled + datetime.timedelta(seconds=int(sds)) < now:
            await self.recorder.warning(
                cj, "MissSchedule", "Missed scheduled time to start a job: "
                f"{scheduled.astimezone(UTC).strftime('%a, %d %b %Y %H:%M:%S +0000')}")
            return next_schedule_delay(cj, now, sched)
        name = job_name(md["name"], scheduled)
        if in_active(cj, name=name) or parse_time(st.get("lastScheduleTime")) == scheduled:
            return next_schedule_delay(cj, now, sched)
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and st.get("active"):
            await self.recorder.normal(cj, "JobAlreadyActive",
                                       "Not starting job because prior execution is running "
                                       "and concurrency policy is Forbid")
            return next_schedule_delay(cj, now, sched)
        if policy == "Replace":
            for ref in list(st.get("active") or []):
                live = await self.client.get_or_none("Job", ref.get("namespace") or
                                                     md.get("namespace"), ref.get("name", ""))
                if live is None:
                    remove_active(cj, ref.get("uid"))
                    continue
                if not await self._delete_job(cj, live):
                    raise RuntimeError(f"could not replace job {ref.get('name')}")

        want = job_from_template(cj, scheduled)
        try:
            job = await self.client.create("Job", want, md.get("namespace"))
            await self.recorder.normal(cj, "SuccessfulCreate", f"Created job {job['metadata']['name']}")
        except APIError as e:
            if e.code != 409 or e.reason != "AlreadyExists":
                await self.recorder.warning(cj, "FailedCreate", f"Error creating job: {e.message}")
                raise
            job = await self.client.get("Job", md.get("namespace"), want["metadata"]["name"])
            ref = controller_ref(job) or {}
            if ref.get("uid") != md.get("uid"):
                return None  # someone else's job: assume its controller handles it
            if in_active(cj, uid=job["metadata"].get("uid")):
                return None
        st.setdefault("active", [])
        st["active"] = list(st["active"]) + [job_ref(job)]
        st["lastScheduleTime"] = rfc3339(scheduled)
        return next_schedule_delay(cj, now, sched)
