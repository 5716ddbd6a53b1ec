"""The scheduler (kube-scheduler): watches pods that no node has been chosen for and binds each
to the best node, or reports why none fits.

Informers feed the scheduler cache (scheduler/framework.py's ClusterState: nodes, the pods on
them and pods *assumed* bound) and the scheduling queue (scheduler/queue.py). One loop takes
pods from the queue and decides for each against the cache, synchronously: the chosen node is
charged at once (assume), so the next decision already sees it; the binding itself
(POST pods/<name>/binding) runs as a task, many in flight at a time, and is undone (forget)
if the API refuses it. Pods that fit nowhere get PodScheduled=False/Unschedulable with
Kubernetes' "0/N nodes are available: ..." message and a FailedScheduling event, and wait in
the queue until a node or pod change may have made room.

SchedulerServer runs it while holding the kube-scheduler Lease and, after losing it, drops
everything and competes again with fresh caches.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import time
from collections import Counter

from kubelab import timescale
from kubelab.client import APIError, ClusterClient, InformerFactory
from kubelab.events import EventRecorder
from kubelab.leaderelection import LeaderElector

from .framework import (
    ANN_SELECTED_NODE,
    SCHEDULER_NAME,
    Algorithm,
    ClaimPlan,
    ClusterState,
    Listers,
    ScheduleResult,
    is_terminal,
    pod_key,
)
from .queue import (
    POD_INITIAL_BACKOFF,
    POD_MAX_BACKOFF,
    POD_MAX_IN_UNSCHEDULABLE,
    UNSCHEDULABLE_FLUSH_PERIOD,
    SchedulingQueue,
)

log = logging.getLogger("scheduler")

BIND_TIMEOUT = 600.0  # VolumeBinding's bindTimeoutSeconds
STRATEGIC = "application/strategic-merge-patch+json"
GATED_MESSAGE = "Scheduling is blocked due to non-empty scheduling gates"

# which unschedulable pods an event may help (queueing hints, coarsely)
AFFINITY_PLUGINS = ("InterPodAffinity", "PodTopologySpread")
VOLUME_PLUGINS = ("VolumeBinding",)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _split(key: str) -> tuple[str, str]:
    ns, _, name = key.partition("/")
    return ns, name


class Scheduler:
    """One scheduling profile (default-scheduler) over a process's informers."""

    def __init__(self, client: ClusterClient, informers: InformerFactory,
                 recorder: EventRecorder, *, scheduler_name: str = SCHEDULER_NAME,
                 max_binds: int = 64):
        self.client = client
        self.recorder = recorder
        self.scheduler_name = scheduler_name
        self.state = ClusterState()
        inf = informers.informer
        self.pods = inf("Pod")
        self.nodes = inf("Node")
        self.listers = Listers(
            services=inf("Service"), replicasets=inf("ReplicaSet"),
            statefulsets=inf("StatefulSet"), replicationcontrollers=inf("ReplicationController"),
            pvcs=inf("PersistentVolumeClaim"), pvs=inf("PersistentVolume"),
            storageclasses=inf("StorageClass"), namespaces=inf("Namespace"))
        self.algorithm = Algorithm(self.state, self.listers)
        self.queue = SchedulingQueue(timescale.scaled(POD_INITIAL_BACKOFF),
                                     timescale.scaled(POD_MAX_BACKOFF),
                                     timescale.scaled(POD_MAX_IN_UNSCHEDULABLE))
        self.max_binds = max_binds
        self._slots = asyncio.Semaphore(max_binds)
        self._tasks: set[asyncio.Task] = set()
        self.metrics: Counter = Counter()
        self.pods.add_handler(self._on_pod)
        self.nodes.add_handler(self._on_node)
        for name in ("pvcs", "pvs", "storageclasses"):
            getattr(self.listers, name).add_handler(self._on_volume)
        self.listers.namespaces.add_handler(self._on_namespace)
        for name in ("services", "replicasets", "statefulsets", "replicationcontrollers"):
            getattr(self.listers, name).add_handler(self._on_spread_owner)

    # ----------------------------------------------------------------- event handlers
    def responsible(self, pod: dict) -> bool:
        return (pod.get("spec") or {}).get("schedulerName", SCHEDULER_NAME) == \
            self.scheduler_name

    def _on_pod(self, event: str, pod: dict, old: dict | None) -> None:
        key = pod_key(pod)
        spec = pod.get("spec") or {}
        if event == "DELETED":
            self.queue.delete(key)
            was_bound = key in self.state.pods and not self.state.is_assumed(key)
            if self.state.remove_pod(key) is not None and was_bound:
                self.queue.move_all()  # its resources, ports, ... are free again
            return
        if spec.get("nodeName"):
            self.queue.delete(key)
            before = self.state.pods.get(key)
            was_assumed = self.state.is_assumed(key)
            terminating = before is not None and before.terminating
            pi = self.state.add_pod(pod)
            if pi is None:  # terminal: it no longer holds anything
                if before is not None:
                    self.queue.move_all()
            elif before is None and not was_assumed:
                self.queue.move_all(AFFINITY_PLUGINS)  # bound by someone else
            elif before is not None and (before.labels != pi.labels or
                                         terminating != pi.terminating):
                self.queue.move_all(AFFINITY_PLUGINS)
            return
        # pending pod
        if not self.responsible(pod) or (pod.get("metadata") or {}).get("deletionTimestamp") \
                or is_terminal(pod):
            self.queue.delete(key)
            return
        if self.state.is_assumed(key):
            return  # decided, binding in flight
        prio = int(spec.get("priority") or 0)
        if spec.get("schedulingGates"):
            self.queue.gate(key, prio)
            self._spawn(self._report_gated(pod))
            return
        if key not in self.queue:
            self.queue.add(key, prio)
        elif old is not None and (old.get("spec") != spec or
                                  (old.get("metadata") or {}).get("labels") !=
                                  (pod.get("metadata") or {}).get("labels")):
            self.queue.update(key, prio)

    def _on_node(self, event: str, node: dict, old: dict | None) -> None:
        if event == "DELETED":
            self.state.remove_node(node["metadata"]["name"])
            return
        if self.state.set_node(node):
            self.queue.move_all()

    def _on_volume(self, event: str, obj: dict, old: dict | None) -> None:
        if old is None or old.get("spec") != obj.get("spec") or \
                old.get("status") != obj.get("status") or \
                (old.get("metadata") or {}).get("annotations") != \
                (obj.get("metadata") or {}).get("annotations"):
            self.queue.move_all(VOLUME_PLUGINS)

    def _on_spread_owner(self, event: str, obj: dict, old: dict | None) -> None:
        if old is None or event == "DELETED" or old.get("spec") != obj.get("spec"):
            self.listers.changed()  # default spreading selectors may differ now

    def _on_namespace(self, event: str, obj: dict, old: dict | None) -> None:
        if old is None or (old.get("metadata") or {}).get("labels") != \
                (obj.get("metadata") or {}).get("labels"):
            self.queue.move_all(AFFINITY_PLUGINS)

    # ----------------------------------------------------------------- the loop
    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def run(self) -> None:
        """Schedule until cancelled (informers must have synced)."""
        for pod in self.pods.list():  # pods that arrived before the handlers mattered
            if not (pod.get("spec") or {}).get("nodeName"):
                self._on_pod("ADDED", pod, None)
        flusher = self._spawn(self._flush_loop())
        try:
            while True:
                await self._slots.acquire()
                try:
                    key = await self.queue.pop()
                except BaseException:
                    self._slots.release()
                    raise
                try:
                    started = self.schedule_one(key)
                except Exception:
                    log.exception("scheduling %s failed", key)
                    started = False
                    self.queue.add_backoff(key)
                if not started:
                    self._slots.release()
                await asyncio.sleep(0)  # let informers and bindings run between decisions
        finally:
            flusher.cancel()
            for t in list(self._tasks):
                t.cancel()

    async def _flush_loop(self) -> None:
        period = timescale.scaled(UNSCHEDULABLE_FLUSH_PERIOD)
        while True:
            await asyncio.sleep(period)
            self.queue.flush_unschedulable_leftover()

    def schedule_one(self, key: str) -> bool:
        """Decide for one pod; True when a binding was started (it holds a slot)."""
        ns, name = _split(key)
        pod = self.pods.get(ns, name)
        if pod is None or (pod.get("spec") or {}).get("nodeName") or \
                (pod.get("metadata") or {}).get("deletionTimestamp") or is_terminal(pod) or \
                not self.responsible(pod) or self.state.is_assumed(key):
            self.queue.delete(key)
            return False
        t0 = time.perf_counter()
        result = self.algorithm.schedule(pod)
        self.metrics["scheduling_seconds"] += time.perf_counter() - t0
        if result.node is None:
            self.metrics["unschedulable" if result.error else "error"] += 1
            if result.no_nodes:
                self.queue.add_backoff(key)
                self._spawn(self._report_failure(pod, "SchedulerError", result.message()))
            else:
                self.queue.add_unschedulable(key, result.error.plugins())
                self._spawn(self._report_failure(pod, "Unschedulable", result.message()))
            return False
        self.state.assume(pod, result.node, result.pod_info)
        self.queue.forget(key)
        self._spawn(self._bind(pod, result))
        return True

    # ----------------------------------------------------------------- binding
    async def _bind(self, pod: dict, result: ScheduleResult) -> None:
        key = pod_key(pod)
        ns, name = _split(key)
        node = result.node
        released = False
        try:
            if result.claims:
                await self._bind_volumes(pod, node, result.claims)
            binding = {"apiVersion": "v1", "kind": "Binding",
                       "metadata": {"name": name, "namespace": ns,
                                    "uid": pod["metadata"].get("uid")},
                       "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
            await self.client.create("Pod", binding, ns, subresource="binding")
            self.metrics["scheduled"] += 1
            self._slots.release()
            released = True
            await self.recorder.normal(pod, "Scheduled",
                                       f"Successfully assigned {ns}/{name} to {node}")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            self.state.forget(key)
            self.metrics["error"] += 1
            if isinstance(e, APIError) and (e.not_found or "already assigned" in e.message or
                                            "being deleted" in e.message):
                return  # gone, or bound meanwhile: the informer tells the rest
            log.info("binding %s to %s failed: %s", key, node, e)
            current = self.pods.get(ns, name)
            if current is not None and not (current.get("spec") or {}).get("nodeName"):
                self.queue.add_backoff(key)
                msg = e.message if isinstance(e, APIError) else str(e)
                await self._report_failure(pod, "SchedulerError",
                                           f'running Bind plugin "DefaultBinder": {msg}')
        finally:
            if not released:
                self._slots.release()

    async def _bind_volumes(self, pod: dict, node: str, claims: list[ClaimPlan]) -> None:
        """VolumeBinding's PreBind: bind claims to the chosen static PVs or ask for them to be
        provisioned on the node (selected-node annotation), then wait until all are bound."""
        for plan in claims:
            md = plan.pvc["metadata"]
            if plan.pv is not None:
                pv = dict(plan.pv)
                pv["spec"] = dict(pv.get("spec") or {}, claimRef={
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": md["namespace"], "name": md["name"], "uid": md.get("uid"),
                    "resourceVersion": md.get("resourceVersion")})
                await self.client.update("PersistentVolume", pv)
            elif (md.get("annotations") or {}).get(ANN_SELECTED_NODE) != node:
                await self.client.patch("PersistentVolumeClaim", md["namespace"], md["name"],
                                        {"metadata": {"annotations": {ANN_SELECTED_NODE: node}}})
        deadline = time.monotonic() + timescale.scaled(BIND_TIMEOUT)
        while True:
            pending = []
            for plan in claims:
                md = plan.pvc["metadata"]
                pvc = self.listers.pvcs.get(md["namespace"], md["name"])
                if pvc is None:
                    raise RuntimeError(f'persistentvolumeclaim "{md["name"]}" not found')
                if not (pvc.get("spec") or {}).get("volumeName") or \
                        (pvc.get("status") or {}).get("phase") != "Bound":
                    pending.append(md["name"])
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("binding volumes: context deadline exceeded")
            await asyncio.sleep(min(0.5, max(0.02, timescale.scaled(1.0))))

    # ----------------------------------------------------------------- reporting
    async def _set_condition(self, pod: dict, reason: str, message: str) -> None:
        ns, name = _split(pod_key(pod))
        current = self.pods.get(ns, name) or pod
        old = next((c for c in (current.get("status") or {}).get("conditions") or []
                    if c.get("type") == "PodScheduled"), None)
        if old and old.get("status") == "False" and old.get("reason") == reason and \
                old.get("message") == message:
            return
        cond = {"type": "PodScheduled", "status": "False", "reason": reason,
                "message": message, "lastProbeTime": None,
                "lastTransitionTime": old.get("lastTransitionTime")
                if old and old.get("status") == "False" and old.get("lastTransitionTime")
                else _now()}
        try:
            await self.client.patch("Pod", ns, name, {"status": {"conditions": [cond]}},
                                    patch_type=STRATEGIC, subresource="status")
        except APIError as e:
            if not e.not_found:
                log.info("updating PodScheduled of %s/%s: %s", ns, name, e)

    async def _report_failure(self, pod: dict, reason: str, message: str) -> None:
        await self._set_condition(pod, reason, message)
        await self.recorder.warning(pod, "FailedScheduling", message)

    async def _report_gated(self, pod: dict) -> None:
        await self._set_condition(pod, "SchedulingGated", GATED_MESSAGE)

    # ----------------------------------------------------------------- metrics
    def metrics_text(self) -> str:
        m = self.metrics
        p = f'profile="{self.scheduler_name}"'
        lines = ["# TYPE scheduler_schedule_attempts_total counter"]
        for result in ("scheduled", "unschedulable", "error"):
            lines.append(f'scheduler_schedule_attempts_total{{{p},result="{result}"}} '
                         f'{m[result]}')
        lines.append("# TYPE scheduler_pending_pods gauge")
        for q, n in self.queue.lengths().items():
            lines.append(f'scheduler_pending_pods{{queue="{q}"}} {n}')
        lines.append("# TYPE scheduler_scheduling_algorithm_seconds_total counter")
        lines.append(f"scheduler_scheduling_algorithm_seconds_total "
                     f"{m['scheduling_seconds']:.6f}")
        lines.append("# TYPE scheduler_inflight_bindings gauge")
        lines.append(f"scheduler_inflight_bindings "
                     f"{self.max_binds - self._slots._value}")
        return "\n".join(lines) + "\n"


class SchedulerServer:
    """The kube-scheduler process: schedules only while holding the kube-scheduler Lease."""

    def __init__(self, client: ClusterClient, identity: str | None = None,
                 leader_elect: bool = True):
        self.client = client
        self.identity = identity or f"{socket.gethostname()}_{id(self):x}"
        self.leader_elect = leader_elect
        self.recorder = EventRecorder(client, SCHEDULER_NAME)
        self.scheduler: Scheduler | None = None
        self.active = False

    async def _lead(self) -> None:
        informers = InformerFactory(self.client)
        self.scheduler = Scheduler(self.client, informers, self.recorder)
        informers.start()
        try:
            await informers.wait_synced()
            self.active = True
            log.info("scheduler running")
            await self.scheduler.run()
        finally:
            self.active = False
            await informers.stop()

    async def run(self) -> None:
        """Lead while holding the Lease; after losing it (e.g. the API server was away longer
        than the renew deadline) stop everything and compete again with fresh caches, so two
        schedulers never bind at once."""
        if not self.leader_elect:
            await self._lead()
            return
        while True:
            elector = LeaderElector(self.client, "kube-scheduler", self.identity)
            await elector.run(self._lead)
            log.warning("lost leadership; competing again")

    def metrics_text(self) -> str:
        out = f'leader_election_master_status{{name="kube-scheduler"}} {int(self.active)}\n'
        if self.scheduler is not None:
            out += self.scheduler.metrics_text()
        return out
