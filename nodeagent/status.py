"""Node and pod status as the kubelet reports them, computed from what was observed (the
runtime's container states), never from what was intended. Shared by the real node agent and
the hollow nodes, so both report identical shapes."""

from __future__ import annotations

import dataclasses
import datetime
import time


def rfc3339(t: float | None = None) -> str:
    return datetime.datetime.fromtimestamp(time.time() if t is None else t,
                                           datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro(t: float | None = None) -> str:
    return datetime.datetime.fromtimestamp(time.time() if t is None else t,
                                           datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


KUBELET_VERSION = "v1.32.0"


@dataclasses.dataclass
class NodeSpec:
    name: str
    internal_ip: str
    pod_cidr: str
    cpu: str = "4"
    memory: str = "8Gi"
    pods: str = "110"
    labels: dict = dataclasses.field(default_factory=dict)
    os_image: str = "kubelab"
    runtime: str = "kubelab://1.0"
    kernel: str = dataclasses.field(default_factory=lambda: __import__("platform").release())
    kubelet_port: int = 10250


def node_object(spec: NodeSpec, ready: bool = True, now: float | None = None) -> dict:
    labels = {"kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
              "beta.kubernetes.io/arch": "amd64", **spec.labels}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": spec.name, "labels": labels,
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"podCIDR": spec.pod_cidr, "podCIDRs": [spec.pod_cidr]},
            "status": node_status(spec, ready, now)}


def node_status(spec: NodeSpec, ready: bool = True, now: float | None = None) -> dict:
    ts = rfc3339(now)
    resources = {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods,
                 "ephemeral-storage": "100Gi"}

    def cond(type_, status, reason, message):
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": ts, "lastTransitionTime": ts}

    return {
        "capacity": dict(resources), "allocatable": dict(resources),
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory",
                 "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure",
                 "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID",
                 "kubelet has sufficient PID available"),
            cond("Ready", "True" if ready else "False",
                 "KubeletReady" if ready else "KubeletNotReady",
                 "kubelet is posting ready status" if ready else "container runtime not ready"),
        ],
        "addresses": [{"type": "InternalIP", "address": spec.internal_ip},
                      {"type": "Hostname", "address": spec.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": spec.kubelet_port}},
        "nodeInfo": {"machineID": spec.name, "systemUUID": spec.name, "bootID": spec.name,
                     "kernelVersion": spec.kernel, "osImage": spec.os_image,
                     "containerRuntimeVersion": spec.runtime,
                     "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                     "operatingSystem": "linux", "architecture": "amd64"},
    }


def lease_object(node: str, duration: int = 40, now: float | None = None) -> dict:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": duration,
                     "renewTime": micro(now)}}


@dataclasses.dataclass
class ContainerState:
    """What the runtime says about one container (the observation status is built from)."""
    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    container_id: str = ""
    last_terminated: dict | None = None  # a containerStatus "terminated" dict
    image_id: str = ""

    def to_status(self) -> dict:
        if self.state == "running":
            st = {"running": {"startedAt": rfc3339(self.started_at)}}
        elif self.state == "terminated":
            st = {"terminated": {"exitCode": self.exit_code,
                                 "reason": self.reason or ("Completed" if self.exit_code == 0
                                                           else "Error"),
                                 "startedAt": rfc3339(self.started_at),
                                 "finishedAt": rfc3339(self.finished_at),
                                 "containerID": self.container_id}}
            if self.message:
                st["terminated"]["message"] = self.message
        else:
            st = {"waiting": {"reason": self.reason}}
            if self.message:
                st["waiting"]["message"] = self.message
        out = {"name": self.name, "state": st,
               "lastState": {"terminated": self.last_terminated} if self.last_terminated
               else {},
               "ready": self.ready, "restartCount": self.restart_count, "image": self.image,
               "imageID": self.image_id or (f"docker-pullable://{self.image}"
                                            if self.state != "waiting" else ""),
               "started": self.started}
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def pod_phase(pod: dict, init: list[ContainerState], app: list[ContainerState],
              terminal: bool = False) -> str:
    """The kubelet's getPhase: from container states and the restart policy. A waiting
    container that ran before (CrashLoopBackOff) counts as stopped, not waiting; `terminal`
    is set once the kubelet has stopped the pod for good (deletion, eviction)."""
    policy = pod.get("spec", {}).get("restartPolicy", "Always")
    init_specs = {c.get("name"): c for c in pod.get("spec", {}).get("initContainers") or []}
    pending_init = 0
    for c in init:
        sidecar = (init_specs.get(c.name) or {}).get("restartPolicy") == "Always"
        if sidecar:
            if not (c.state == "running" and c.started) and not terminal:
                pending_init += 1
            continue
        if c.state == "terminated" and c.exit_code != 0 and policy == "Never":
            return "Failed"
        if not (c.state == "terminated" and c.exit_code == 0):
            if c.state == "waiting" and c.last_terminated and policy == "Never":
                return "Failed"
            pending_init += 1
    running = waiting = stopped = succeeded = 0
    for c in app:
        if c.state == "running":
            running += 1
        elif c.state == "terminated":
            stopped += 1
            if c.exit_code == 0:
                succeeded += 1
        elif c.last_terminated:
            stopped += 1
            if c.last_terminated.get("exitCode") == 0:
                succeeded += 1
        else:
            waiting += 1
    if pending_init and not terminal:
        return "Pending"
    if waiting and not terminal:
        return "Pending"
    if running and not terminal:
        return "Running"
    if stopped or terminal:
        if terminal:
            return "Succeeded" if app and stopped == succeeded and not running and not waiting \
                else "Failed"
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def pod_status(pod: dict, init: list[ContainerState], app: list[ContainerState], *,
               pod_ip: str, host_ip: str, start_time: float,
               initialized_at: float | None = None, sandbox_ready: bool = True,
               qos_class: str | None = None, terminal: bool = False) -> dict:
    """The full status.* the kubelet writes for a pod."""
    phase = pod_phase(pod, init, app, terminal)
    ts = rfc3339()
    status = dict(pod.get("status") or {})
    prev = {c.get("type"): c for c in status.get("conditions") or []}

    def cond(type_: str, ok: bool, reason: str = "", message: str = "") -> dict:
        s = "True" if ok else "False"
        old = prev.get(type_)
        c = {"type": type_, "status": s, "lastProbeTime": None,
             "lastTransitionTime": old["lastTransitionTime"]
             if old and old.get("status") == s and old.get("lastTransitionTime") else ts}
        if reason and not ok:
            c["reason"] = reason
            if message:
                c["message"] = message
        return c

    init_specs = {c.get("name"): c for c in pod.get("spec", {}).get("initContainers") or []}

    def init_done(c: ContainerState) -> bool:
        if (init_specs.get(c.name) or {}).get("restartPolicy") == "Always":
            return c.state == "running" and c.started or c.restart_count > 0 or \
                c.last_terminated is not None
        return c.state == "terminated" and c.exit_code == 0

    incomplete = [c.name for c in init if not init_done(c)]
    done = phase in ("Succeeded", "Failed")
    if done and not terminal and phase == "Succeeded":
        incomplete = []
    unready = [c.name for c in app if not c.ready]
    containers_ready = bool(app) and not unready
    conditions = [
        cond("PodReadyToStartContainers", sandbox_ready and not (done and terminal)),
        cond("Initialized", not incomplete, "ContainersNotInitialized",
             f"containers with incomplete status: [{' '.join(incomplete)}]"),
        cond("Ready", containers_ready and not done,
             "PodCompleted" if done else "ContainersNotReady",
             "" if done else f"containers with unready status: [{' '.join(unready)}]"),
        cond("ContainersReady", containers_ready and not done,
             "PodCompleted" if done else "ContainersNotReady",
             "" if done else f"containers with unready status: [{' '.join(unready)}]"),
        cond("PodScheduled", True),
    ]
    status.update({"phase": phase, "conditions": conditions, "hostIP": host_ip,
                   "hostIPs": [{"ip": host_ip}], "startTime": rfc3339(start_time),
                   "containerStatuses": [c.to_status() for c in app]})
    if qos_class:
        status["qosClass"] = qos_class
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if init:
        status["initContainerStatuses"] = [c.to_status() for c in init]
    return status
