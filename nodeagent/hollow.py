"""Hollow nodes (like kubemark/KWOK): register Nodes, renew their Leases and move the pods bound
to them through the kubelet's states — Running, Ready, terminated, restarted — without running
processes. Status comes from nodeagent/status.py, as the real node agent's does.

Pod annotations steer a hollow pod, for tests and demos:
  hollow.kubelab.io/run-seconds: "N"        containers exit after N (wall) seconds
  hollow.kubelab.io/exit-code: "C"          ... with this exit code (default 0)
  hollow.kubelab.io/fail-times: "K"         the first K runs exit with exit-code (default 1),
                                             later runs with 0
  hollow.kubelab.io/ready: "false"          containers never become Ready
  hollow.kubelab.io/ready-after-seconds: "N"  Ready N (wall) seconds after start

And a Node annotation simulates a dead kubelet on one node (for node-loss tests and chaos):
  hollow.kubelab.io/heartbeat: "stopped"    no Lease renewals, no status, pods left alone;
                                             removing it brings the node back
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid

from kubelab import timescale
from kubelab.client import APIError, ClusterClient, Informer

from .status import ContainerState, NodeSpec, lease_object, node_object, node_status, pod_status

log = logging.getLogger("nodeagent.hollow")

ANN = "hollow.kubelab.io/"
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0


def _ann(pod: dict, key: str, default: str | None = None) -> str | None:
    return (pod.get("metadata", {}).get("annotations") or {}).get(ANN + key, default)


class PodWorker:
    """One task per pod, serializing everything done to it (the kubelet's pod worker)."""

    def __init__(self, fleet: "HollowFleet", node: NodeSpec, pod: dict):
        self.fleet = fleet
        self.node = node
        self.uid = pod["metadata"]["uid"]
        self.ns = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.pod = pod
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"hollow-pod-{self.name}")
        self.ip = ""

    def update(self, pod: dict) -> None:
        self.pod = pod
        self.changed.set()

    def _deleting(self) -> bool:
        return bool(self.pod.get("metadata", {}).get("deletionTimestamp"))

    async def _write(self, init, app, start) -> None:
        for _ in range(10):
            pod = self.pod
            new = dict(pod)
            new["status"] = pod_status(pod, init, app, pod_ip=self.ip,
                                       host_ip=self.node.internal_ip, start_time=start)
            if new["status"] == pod.get("status"):
                return
            try:
                self.pod = await self.fleet.client.update_status("Pod", new)
                return
            except APIError as e:
                if e.not_found:
                    raise asyncio.CancelledError from None
                if not e.conflict:
                    raise
                fresh = await self.fleet.client.get_or_none("Pod", self.ns, self.name)
                if fresh is None or fresh["metadata"]["uid"] != self.uid:
                    raise asyncio.CancelledError from None
                self.pod = fresh

    async def _sleep_or_delete(self, seconds: float) -> bool:
        """Sleep; True when the pod started terminating meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._deleting():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True

    async def _run(self) -> None:
        try:
            await self._lifecycle()
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001
            log.exception("hollow pod %s/%s failed", self.ns, self.name)
        finally:
            self.fleet.release_ip(self.node, self.ip)
            self.fleet.workers.pop(self.uid, None)

    async def _lifecycle(self) -> None:
        pod = self.pod
        spec = pod.get("spec", {})
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") and \
                not self._deleting():
            await self._wait_deleted()
            return
        self.ip = spec.get("hostNetwork") and self.node.internal_ip or \
            self.fleet.allocate_ip(self.node)
        start = time.time()
        cid = lambda: f"hollow://{uuid.uuid4().hex[:12]}"  # noqa: E731
        init = [ContainerState(c["name"], c.get("image", ""), state="terminated",
                               reason="Completed", started_at=start, finished_at=start,
                               container_id=cid())
                for c in spec.get("initContainers") or []]
        app = [ContainerState(c["name"], c.get("image", "")) for c in spec.get("containers", [])]
        run_seconds = float(_ann(pod, "run-seconds", "0") or 0)
        exit_code = int(_ann(pod, "exit-code", "0") or 0)
        fail_times = int(_ann(pod, "fail-times", "0") or 0)
        never_ready = _ann(pod, "ready") == "false"
        ready_after = float(_ann(pod, "ready-after-seconds", "0") or 0)
        policy = spec.get("restartPolicy", "Always")
        runs = 0
        backoff = BACKOFF_START
        while not self._deleting():
            runs += 1
            t0 = time.time()
            for c in app:
                c.state, c.reason, c.started_at, c.started = "running", "", t0, True
                c.container_id = cid()
                c.ready = not never_ready and ready_after <= 0
            await self._write(init, app, start)
            if not never_ready and ready_after > 0:
                if await self._sleep_or_delete(ready_after):
                    break
                for c in app:
                    c.ready = True
                await self._write(init, app, start)
            if run_seconds <= 0:
                await self._wait_deleted()
                break
            left = run_seconds - (time.time() - t0)
            if await self._sleep_or_delete(max(0.0, left)):
                break
            code = exit_code if exit_code else 0
            if fail_times:
                code = (exit_code or 1) if runs <= fail_times else 0
            t1 = time.time()
            for c in app:
                c.state, c.exit_code, c.finished_at, c.ready = "terminated", code, t1, False
                c.reason = "Completed" if code == 0 else "Error"
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if not restart:
                await self._write(init, app, start)
                await self._wait_deleted()
                break
            # CrashLoopBackOff until the back-off has passed, then run again
            for c in app:
                c.last_terminated = c.to_status()["state"]["terminated"]
                c.state, c.reason = "waiting", "CrashLoopBackOff"
                c.message = (f"back-off {int(backoff)}s restarting failed container={c.name} "
                             f"pod={self.name}_{self.ns}({self.uid})")
                c.restart_count += 1
            await self._write(init, app, start)
            if await self._sleep_or_delete(timescale.scaled(backoff)):
                break
            backoff = min(backoff * 2, BACKOFF_MAX)
            for c in app:
                c.message = ""
        await self._finish_deletion()

    async def _wait_deleted(self) -> None:
        while not self._deleting():
            self.changed.clear()
            await self.changed.wait()
        await self._finish_deletion()

    async def _finish_deletion(self) -> None:
        """Containers are 'stopped' at once; the kubelet then removes the pod object."""
        try:
            await self.fleet.client.delete("Pod", self.ns, self.name, grace_period=0,
                                           preconditions={"uid": self.uid})
        except APIError as e:
            if not (e.not_found or e.conflict):
                raise


class HollowFleet:
    def __init__(self, client: ClusterClient, count: int, prefix: str = "hollow-node",
                 cpu: str = "4", memory: str = "8Gi", pods: str = "110", port: int = 10250):
        self.client = client
        self.nodes: dict[str, NodeSpec] = {}
        for i in range(1, count + 1):
            name = f"{prefix}-{i}"
            self.nodes[name] = NodeSpec(
                name=name, internal_ip=f"127.30.1.{i % 250 + 1}",
                pod_cidr=f"127.245.{i % 256}.0/24", cpu=cpu, memory=memory, pods=pods,
                labels={"type": "hollow", "kubelab.io/hollow": "true"},
                os_image="kubelab hollow node", runtime="hollow://1.0", kubelet_port=port)
        self.workers: dict[str, PodWorker] = {}
        self._ips: dict[str, set[str]] = {n: set() for n in self.nodes}
        self.pods = Informer(client, "Pod")
        self.node_objects = Informer(client, "Node", label_selector="kubelab.io/hollow=true")
        self.stopped: set[str] = set()
        self.ready = False

    def _heartbeat_stopped(self, name: str) -> bool:
        node = self.node_objects.get(None, name)
        ann = ((node or {}).get("metadata", {}).get("annotations") or {})
        return ann.get(ANN + "heartbeat") == "stopped"

    def _on_node(self, event: str, node: dict, old: dict | None) -> None:
        name = node["metadata"]["name"]
        if name not in self.nodes:
            return
        if self._heartbeat_stopped(name):
            self.stopped.add(name)
        elif name in self.stopped:
            # the "kubelet" is back: catch up with everything that happened to its pods
            self.stopped.discard(name)
            asyncio.ensure_future(self._post_status(self.nodes[name]))
            asyncio.ensure_future(self._renew(name))
            for pod in self.pods.list():
                if pod.get("spec", {}).get("nodeName") == name:
                    self._on_pod("MODIFIED", pod, None)

    def allocate_ip(self, node: NodeSpec) -> str:
        net = ipaddress.ip_network(node.pod_cidr)
        used = self._ips[node.name]
        for host in list(net.hosts())[1:]:  # .1 is the node's bridge address
            ip = str(host)
            if ip not in used:
                used.add(ip)
                return ip
        raise RuntimeError(f"pod range {node.pod_cidr} of {node.name} is full")

    def release_ip(self, node: NodeSpec, ip: str) -> None:
        self._ips[node.name].discard(ip)

    async def register(self) -> None:
        for spec in self.nodes.values():
            obj = node_object(spec)
            try:
                await self.client.create("Node", obj)
            except APIError as e:
                if not e.conflict:
                    raise
                cur = await self.client.get("Node", None, spec.name)
                cur["status"] = node_status(spec)
                await self.client.update_status("Node", cur)

    async def _renew(self, name: str) -> None:
        if name in self.stopped:
            return
        now = time.time()
        try:
            lease = await self.client.get_or_none("Lease", "kube-node-lease", name)
            if lease is None:
                await self.client.create("Lease", lease_object(name, now=now), "kube-node-lease")
            else:
                lease["spec"] = lease_object(name, now=now)["spec"]
                await self.client.update("Lease", lease)
        except APIError as e:
            log.debug("lease %s: %s", name, e)

    async def _renew_leases(self) -> None:
        """Every node renews its Lease in kube-node-lease every 10 s (scaled)."""
        while True:
            await asyncio.gather(*(self._renew(n) for n in self.nodes))
            await asyncio.sleep(timescale.scaled(10.0))

    async def _report_status(self) -> None:
        """NodeStatus every nodeStatusReportFrequency (5 min, scaled), and whenever a node
        lost its Ready condition (e.g. after the node lifecycle controller marked it)."""
        while True:
            await asyncio.sleep(min(timescale.scaled(300.0), 30.0))
            for spec in self.nodes.values():
                if spec.name not in self.stopped:
                    await self._post_status(spec)

    async def _post_status(self, spec: NodeSpec) -> None:
        try:
            cur = await self.client.get("Node", None, spec.name)
            cur["status"] = node_status(spec)
            await self.client.update_status("Node", cur)
        except APIError as e:
            log.debug("node status %s: %s", spec.name, e)

    def _on_pod(self, event: str, pod: dict, old: dict | None) -> None:
        node = self.nodes.get(pod.get("spec", {}).get("nodeName", ""))
        if node is None or node.name in self.stopped:
            return
        uid = pod["metadata"]["uid"]
        w = self.workers.get(uid)
        if event == "DELETED":
            if w is not None:
                w.task.cancel()
            return
        if w is None:
            self.workers[uid] = PodWorker(self, node, pod)
        else:
            w.update(pod)

    async def run(self) -> None:
        while True:
            try:
                await self.register()
                break
            except APIError as e:
                log.warning("registering nodes: %s; retrying", e)
                await asyncio.sleep(1.0)
        self.node_objects.add_handler(self._on_node)
        self.node_objects.start()
        await self.node_objects.synced.wait()
        self.pods.add_handler(self._on_pod)
        self.pods.start()
        await self.pods.synced.wait()
        self.ready = True
        log.info("hollow nodes ready: %s", ", ".join(self.nodes))
        await asyncio.gather(self._renew_leases(), self._report_status())
