"""What the Endpoints and EndpointSlice controllers share (Kubernetes'
pkg/controller/util/endpoint and pkg/api/v1/pod): which pods a Service selects, whether a pod
belongs in its endpoints, readiness, hostnames and named target ports."""

from __future__ import annotations

from kubelab.selectors import Selector, selector_from_map

HEADLESS_LABEL = "service.kubernetes.io/headless"


def is_pod_ready(pod: dict) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def is_terminating(obj: dict) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def should_pod_be_in_endpoints(pod: dict, include_terminating: bool) -> bool:
    """endpointutil.ShouldPodBeInEndpoints: a pod without an IP, a finished pod that will not
    restart, or (unless include_terminating) a terminating pod is left out."""
    status = pod.get("status") or {}
    if not status.get("podIP"):
        return False
    if not include_terminating and is_terminating(pod):
        return False
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    phase = status.get("phase")
    if policy == "Never":
        return phase not in ("Failed", "Succeeded")
    if policy == "OnFailure":
        return phase != "Succeeded"
    return True


def should_set_hostname(pod: dict, svc: dict) -> bool:
    spec = pod.get("spec") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == svc["metadata"]["name"] and \
        pod["metadata"].get("namespace") == svc["metadata"].get("namespace")


def find_port(pod: dict, svc_port: dict) -> int | None:
    """podutil.FindPort: a numeric targetPort as is; a named one looked up among the pod's
    container ports (and restartable init containers) with the same protocol."""
    target = svc_port.get("targetPort")
    if target in (None, "", 0):
        target = svc_port.get("port")
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    proto = svc_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or [])
    containers += [c for c in spec.get("initContainers") or []
                   if c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == proto:
                return p.get("containerPort")
    return None


def service_selector(svc: dict) -> Selector | None:
    """The Service's pod selector, or None when it has none (user-managed endpoints) or is
    an ExternalName Service."""
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    sel = spec.get("selector")
    if not sel:
        return None
    return selector_from_map(sel)


def selected_pods(svc: dict, pods: list[dict]) -> list[dict]:
    sel = service_selector(svc)
    if sel is None:
        return []
    ns = svc["metadata"].get("namespace")
    return [p for p in pods if p["metadata"].get("namespace") == ns
            and sel.matches(p["metadata"].get("labels") or {})]


def is_headless(svc: dict) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def target_ref(pod: dict) -> dict:
    md = pod["metadata"]
    return {"kind": "Pod", "namespace": md.get("namespace", ""), "name": md["name"],
            "uid": md.get("uid", "")}


def services_for_pod(services: list[dict], pod: dict | None) -> list[dict]:
    if not pod:
        return []
    ns = pod["metadata"].get("namespace")
    labels = pod["metadata"].get("labels") or {}
    out = []
    for s in services:
        if s["metadata"].get("namespace") != ns:
            continue
        sel = service_selector(s)
        if sel is not None and sel.matches(labels):
            out.append(s)
    return out


def endpoint_relevant_change(new: dict | None, old: dict | None) -> bool:
    """Whether a pod update can change any endpoints (labels, IP, readiness, deletion,
    hostname, ports, phase, node)."""
    if new is None or old is None:
        return True

    def view(p: dict) -> tuple:
        st, sp, md = p.get("status") or {}, p.get("spec") or {}, p.get("metadata") or {}
        return (md.get("labels"), md.get("deletionTimestamp"), st.get("podIP"),
                is_pod_ready(p), st.get("phase"), sp.get("nodeName"), sp.get("hostname"),
                sp.get("subdomain"), [c.get("ports") for c in sp.get("containers") or []])
    return view(new) != view(old)
