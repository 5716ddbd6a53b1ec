"""The node lifecycle controller: node health from heartbeats, condition-based taints and
NoExecute eviction (Kubernetes' node lifecycle controller with its taint-eviction manager).

- A node is healthy while its Lease in kube-node-lease (name = node name) is renewed, or its
  Ready condition's lastHeartbeatTime moves. When neither has changed, as observed by this
  controller, for node-monitor-grace-period (40 s, scaled), all its conditions become Unknown
  (reason NodeStatusUnknown, "Kubelet stopped posting node status.") and its pods are marked
  not Ready.
- Ready Unknown -> taints node.kubernetes.io/unreachable:NoExecute and :NoSchedule; Ready False
  -> node.kubernetes.io/not-ready:NoExecute and :NoSchedule; Ready True -> neither. The
  conditions come back from the node agent itself; the taints follow them.
- A pod on a node with NoExecute taints is deleted at once when it does not tolerate one of
  them, otherwise when the shortest tolerationSeconds of the tolerations used has passed
  since the taint was added (scaled; admission adds 300 s for not-ready/unreachable).

Not modelled: zone disruption modes (Kubernetes stops evicting when a whole zone is down)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import time

from kubelab.client import APIError
from kubelab.timescale import scaled

from .base import Controller

NODE_LEASE_NAMESPACE = "kube-node-lease"
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
MANAGED_TAINTS = {(NOT_READY, "NoExecute"), (NOT_READY, "NoSchedule"),
                  (UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")}
NODE_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
NODE_MONITOR_GRACE_PERIOD = 40.0
NODE_MONITOR_PERIOD = 5.0


def _now_str(now: float | None = None) -> str:
    t = datetime.datetime.fromtimestamp(time.time() if now is None else now,
                                        datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> float | None:
    if not s:
        return None
    try:
        s = s.replace("Z", "+00:00")
        return datetime.datetime.fromisoformat(s).timestamp()
    except ValueError:
        return None


def ready_status(node: dict) -> str:
    """"True", "False" or "Unknown" (no Ready condition counts as Unknown)."""
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") or "Unknown"
    return "Unknown"


def heartbeat_signature(node: dict, lease: dict | None) -> tuple:
    """What changes when the node agent is alive: the Lease's renewTime and the Ready
    condition's lastHeartbeatTime."""
    renew = ((lease or {}).get("spec") or {}).get("renewTime")
    hb = None
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            hb = c.get("lastHeartbeatTime")
    return (renew, hb)


def unknown_conditions(node: dict, now: str) -> list[dict] | None:
    """The node's conditions after its agent stopped reporting: every condition Unknown with
    reason NodeStatusUnknown (a missing Ready: NodeStatusNeverUpdated). None if nothing
    changes."""
    conds = copy.deepcopy((node.get("status") or {}).get("conditions") or [])
    changed = False
    have = {c.get("type") for c in conds}
    for c in conds:
        if c.get("type") in NODE_CONDITIONS and c.get("status") != "Unknown":
            c.update(status="Unknown", reason="NodeStatusUnknown",
                     message="Kubelet stopped posting node status.", lastTransitionTime=now)
            changed = True
    for t in NODE_CONDITIONS:
        if t not in have:
            conds.append({"type": t, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                          "message": "Kubelet never posted node status.",
                          "lastHeartbeatTime": now, "lastTransitionTime": now})
            changed = True
    return conds if changed else None


def wanted_condition_taints(node: dict) -> set[tuple[str, str]]:
    st = ready_status(node)
    if st == "True":
        return set()
    key = NOT_READY if st == "False" else UNREACHABLE
    return {(key, "NoExecute"), (key, "NoSchedule")}


def reconcile_taints(node: dict, now: str) -> list[dict] | None:
    """The node's taints with the condition taints made to match its Ready condition (other
    taints untouched; NoExecute taints stamped with timeAdded). None if nothing changes."""
    current = list((node.get("spec") or {}).get("taints") or [])
    wanted = wanted_condition_taints(node)
    out, present = [], set()
    for t in current:
        k = (t.get("key"), t.get("effect"))
        if k in MANAGED_TAINTS and k not in wanted:
            continue
        present.add(k)
        out.append(t)
    for key, effect in sorted(wanted - present):
        t = {"key": key, "effect": effect}
        if effect == "NoExecute":
            t["timeAdded"] = now
        out.append(t)
    return out if out != current else None


def toleration_matches(tol: dict, taint: dict) -> bool:
    """v1.Toleration.ToleratesTaint."""
    if tol.get("effect") and tol.get("effect") != taint.get("effect"):
        return False
    if tol.get("key") and tol.get("key") != taint.get("key"):
        return False
    op = tol.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return (tol.get("value") or "") == (taint.get("value") or "")
    return False


def eviction_time(pod: dict, taints: list[dict], now: float) -> float | None:
    """When (epoch seconds) the taint manager deletes `pod` given the node's taints: now if a
    NoExecute taint is not tolerated, else the taint's timeAdded plus the shortest
    tolerationSeconds (scaled) among the tolerations used; None if tolerated forever."""
    tols = (pod.get("spec") or {}).get("tolerations") or []
    deadline: float | None = None
    for taint in taints:
        if taint.get("effect") != "NoExecute":
            continue
        used = [t for t in tols if toleration_matches(t, taint)]
        if not used:
            return now
        secs = [t["tolerationSeconds"] for t in used if t.get("tolerationSeconds") is not None]
        if not secs:
            continue  # tolerated forever
        start = parse_time(taint.get("timeAdded")) or now
        at = start + scaled(max(0, min(secs)))
        deadline = at if deadline is None else min(deadline, at)
    return deadline


@dataclasses.dataclass
class NodeHealth:
    signature: tuple
    probe: float  # monotonic time the signature was last seen changing
    ready: str = ""


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    workers = 2

    def setup(self) -> None:
        self.nodes = self.informers.informer("Node")
        self.leases = self.informers.informer("Lease")
        self.pods = self.informers.informer("Pod")
        self.health: dict[str, NodeHealth] = {}
        self.nodes.add_handler(self._on_node)
        self.leases.add_handler(self._on_lease)
        self.pods.add_handler(self._on_pod)

    @property
    def grace(self) -> float:
        return scaled(NODE_MONITOR_GRACE_PERIOD)

    def _on_node(self, event: str, new: dict, old: dict | None) -> None:
        name = new["metadata"]["name"]
        if event == "DELETED":
            self.health.pop(name, None)
            return
        self._observe(name)
        self.queue.add(name)

    def _on_lease(self, event: str, new: dict, old: dict | None) -> None:
        if new["metadata"].get("namespace") != NODE_LEASE_NAMESPACE or event == "DELETED":
            return
        name = new["metadata"]["name"]
        if self.nodes.get(None, name) is not None:
            self._observe(name)
            self.queue.add(name)

    def _on_pod(self, event: str, new: dict, old: dict | None) -> None:
        node = (new.get("spec") or {}).get("nodeName")
        if event != "DELETED" and node and not (old or {}).get("spec", {}).get("nodeName"):
            n = self.nodes.get(None, node)
            if n is not None and any(t.get("effect") == "NoExecute"
                                     for t in (n.get("spec") or {}).get("taints") or []):
                self.queue.add(node)

    def _observe(self, name: str) -> NodeHealth | None:
        node = self.nodes.get(None, name)
        if node is None:
            return None
        sig = heartbeat_signature(node, self.leases.get(NODE_LEASE_NAMESPACE, name))
        h = self.health.get(name)
        if h is None or h.signature != sig:
            h = NodeHealth(sig, time.monotonic(), h.ready if h else "")
            self.health[name] = h
        return h

    async def run(self) -> None:
        monitor = asyncio.create_task(self._monitor())
        try:
            await super().run()
        finally:
            monitor.cancel()

    async def _monitor(self) -> None:
        """nodeMonitorPeriod: a stopped agent sends no events, so look at every node."""
        while True:
            await asyncio.sleep(scaled(NODE_MONITOR_PERIOD))
            for n in self.nodes.list():
                self.queue.add(n["metadata"]["name"])

    async def reconcile(self, name: str) -> None:
        h = self._observe(name)
        node = self.nodes.get(None, name)
        if node is None or h is None:
            return
        if time.monotonic() - h.probe > self.grace:
            conds = unknown_conditions(node, _now_str())
            if conds is not None:
                obj = copy.deepcopy(node)
                obj.setdefault("status", {})["conditions"] = conds
                node = await self.client.update_status("Node", obj)
                self.log.info("node %s stopped posting status: conditions Unknown", name)
                await self.recorder.normal(node, "NodeNotReady",
                                           f"Node {name} status is now: NodeNotReady")
        ready = ready_status(node)
        if ready != "True":
            await self._mark_pods_not_ready(name)
        elif h.ready and h.ready != "True":
            await self.recorder.normal(node, "NodeReady", f"Node {name} status is now: NodeReady")
        h.ready = ready
        taints = reconcile_taints(node, _now_str())
        if taints is not None:
            obj = copy.deepcopy(node)
            obj.setdefault("spec", {})["taints"] = taints
            if not taints:
                obj["spec"].pop("taints")
            node = await self.client.update("Node", obj)
        await self._evict(node)

    async def _mark_pods_not_ready(self, node: str) -> None:
        for pod in self.pods.list():
            if (pod.get("spec") or {}).get("nodeName") != node or \
                    pod["metadata"].get("deletionTimestamp"):
                continue
            conds = (pod.get("status") or {}).get("conditions") or []
            if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                continue
            obj = copy.deepcopy(pod)
            for c in obj["status"]["conditions"]:
                if c.get("type") == "Ready":
                    c["status"] = "False"
                    c["lastTransitionTime"] = _now_str()
            try:
                await self.client.update_status("Pod", obj)
                await self.recorder.warning(pod, "NodeNotReady", "Node is not ready")
            except APIError as e:
                if not (e.not_found or e.conflict):
                    raise

    async def _evict(self, node: dict) -> None:
        name = node["metadata"]["name"]
        taints = [t for t in (node.get("spec") or {}).get("taints") or []
                  if t.get("effect") == "NoExecute"]
        if not taints:
            return
        now = time.time()
        next_at: float | None = None
        for pod in self.pods.list():
            if (pod.get("spec") or {}).get("nodeName") != name or \
                    pod["metadata"].get("deletionTimestamp"):
                continue
            at = eviction_time(pod, taints, now)
            if at is None:
                continue
            if at > now:
                next_at = at if next_at is None else min(next_at, at)
                continue
            md = pod["metadata"]
            self.log.info("evicting pod %s/%s from node %s", md["namespace"], md["name"], name)
            await self.recorder.normal(pod, "TaintManagerEviction",
                                       f"Marking for deletion Pod {md['namespace']}/{md['name']}")
            obj = copy.deepcopy(pod)
            obj.setdefault("status", {}).setdefault("conditions", []).append(
                {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                 "message": "Taint manager: deleting due to NoExecute taint",
                 "lastTransitionTime": _now_str()})
            try:
                await self.client.update_status("Pod", obj)
            except APIError:
                pass  # the condition is informative; the deletion is what matters
            try:
                await self.client.delete("Pod", md["namespace"], md["name"],
                                         preconditions={"uid": md.get("uid")})
            except APIError as e:
                if not (e.not_found or e.conflict):
                    raise
        if next_at is not None:
            self.queue.add_after(name, max(0.0, next_at - time.time()) + 0.01)
