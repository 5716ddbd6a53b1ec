"""The EndpointSlice controller: for every Service with a selector, discovery.k8s.io/v1
EndpointSlices (named `<service>-<random>`, labelled with the Service name and this manager,
owned by the Service) listing the selected pods with ready/serving/terminating conditions.
Pods are grouped by the ports they resolve (named targetPorts per pod); each slice holds at
most 100 endpoints; a Service with no endpoints keeps one empty placeholder slice.

Slices are created with generateName, so the informer cache can lag behind our own writes;
like Kubernetes' endpointSliceTracker, a per-Service record of the slices we wrote holds
reconciling back until the cache has caught up (otherwise a fast second sync would create
duplicates)."""

from __future__ import annotations

import copy
import time

from kubelab.client import APIError

from .base import Controller, split_key
from .endpointutil import (
    HEADLESS_LABEL,
    endpoint_relevant_change,
    find_port,
    is_headless,
    is_pod_ready,
    is_terminating,
    selected_pods,
    service_selector,
    services_for_pod,
    should_pod_be_in_endpoints,
    should_set_hostname,
    target_ref,
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS_PER_SLICE = 100


def _ip_key(ip: str) -> tuple:
    try:
        return (0, tuple(int(x) for x in ip.split(".")))
    except ValueError:
        return (1, ip)


def _ep_sort(ep: dict) -> tuple:
    addrs = ep.get("addresses") or [""]
    return (_ip_key(addrs[0]), (ep.get("targetRef") or {}).get("uid", ""))


def _ep_key(ep: dict) -> str:
    ref = ep.get("targetRef") or {}
    return ref.get("uid") or ",".join(ep.get("addresses") or [])


def ports_key(ports: list | None) -> tuple:
    return tuple((p.get("name") or "", p.get("port"), p.get("protocol") or "TCP",
                  p.get("appProtocol") or "") for p in ports or [])


def pod_endpoint(pod: dict, svc: dict) -> dict:
    """podToEndpoint."""
    publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    serving = publish or is_pod_ready(pod)
    terminating = is_terminating(pod)
    ready = publish or (serving and not terminating)
    ep: dict = {"addresses": [pod["status"]["podIP"]],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}
    if should_set_hostname(pod, svc):
        ep["hostname"] = pod["spec"]["hostname"]
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        ep["nodeName"] = node
    ep["targetRef"] = target_ref(pod)
    return ep


def pod_ports(pod: dict, svc: dict) -> list[dict]:
    out = []
    for sp in (svc.get("spec") or {}).get("ports") or []:
        num = find_port(pod, sp)
        if num is None:
            continue
        p = {"name": sp.get("name") or "", "port": num, "protocol": sp.get("protocol") or "TCP"}
        if sp.get("appProtocol"):
            p["appProtocol"] = sp["appProtocol"]
        out.append(p)
    return out


def desired_endpoints(svc: dict, pods: list[dict]) -> dict[tuple, tuple[list[dict], dict]]:
    """ports key -> (ports, {endpoint key: endpoint}) for the pods the Service selects
    (terminating pods included, with their conditions)."""
    out: dict[tuple, tuple[list[dict], dict]] = {}
    for pod in selected_pods(svc, pods):
        if not should_pod_be_in_endpoints(pod, True):
            continue
        ports = pod_ports(pod, svc)
        ep = pod_endpoint(pod, svc)
        group = out.setdefault(ports_key(ports), (ports, {}))
        group[1][_ep_key(ep)] = ep
    return out


def slice_labels(svc: dict) -> dict:
    labels = {k: v for k, v in (svc["metadata"].get("labels") or {}).items()
              if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)}
    labels[SERVICE_NAME_LABEL] = svc["metadata"]["name"]
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    if is_headless(svc):
        labels[HEADLESS_LABEL] = ""
    return labels


def service_owner_ref(svc: dict) -> dict:
    md = svc["metadata"]
    return {"apiVersion": "v1", "kind": "Service", "name": md["name"], "uid": md["uid"],
            "controller": True, "blockOwnerDeletion": True}


def new_slice(svc: dict, ports: list[dict], endpoints: list[dict]) -> dict:
    md = svc["metadata"]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"generateName": f"{md['name']}-", "namespace": md["namespace"],
                         "labels": slice_labels(svc), "ownerReferences": [service_owner_ref(svc)]},
            "addressType": "IPv4", "endpoints": sorted(endpoints, key=_ep_sort),
            "ports": copy.deepcopy(ports)}


def owned_by(slc: dict, svc: dict) -> bool:
    labels = slc["metadata"].get("labels") or {}
    return labels.get(SERVICE_NAME_LABEL) == svc["metadata"]["name"] and \
        labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME and \
        slc["metadata"].get("namespace") == svc["metadata"].get("namespace")


def plan_slices(svc: dict, pods: list[dict], existing: list[dict],
                max_per_slice: int = MAX_ENDPOINTS_PER_SLICE
                ) -> tuple[list[dict], list[dict], list[dict]]:
    """(to_create, to_update, to_delete) turning `existing` (this Service's slices) into the
    wanted ones. Endpoints stay in the slice they are in where possible; new ones fill slices
    with room before new slices are made."""
    desired = desired_endpoints(svc, pods)
    labels = slice_labels(svc)
    existing = sorted((s for s in existing if not is_terminating(s)),
                      key=lambda s: s["metadata"]["name"])
    by_ports: dict[tuple, list[dict]] = {}
    for s in existing:
        by_ports.setdefault(ports_key(s.get("ports")), []).append(s)
    create: list[dict] = []
    update: list[dict] = []
    delete: list[dict] = []

    def changed(s: dict, eps: list[dict]) -> bool:
        return sorted(s.get("endpoints") or [], key=_ep_sort) != eps or \
            (s["metadata"].get("labels") or {}) != labels or s.get("addressType") != "IPv4"

    def write(s: dict, eps: list[dict]) -> None:
        eps = sorted(eps, key=_ep_sort)
        if changed(s, eps):
            s2 = copy.deepcopy(s)
            s2["endpoints"] = eps
            s2["metadata"]["labels"] = labels
            update.append(s2)

    if not desired:
        # keep (or make) one placeholder slice without ports or endpoints
        keep = next((s for s in existing if not s.get("endpoints") and not s.get("ports")),
                    None)
        for s in existing:
            if s is not keep:
                delete.append(s)
        if keep is None:
            create.append(new_slice(svc, [], []))
        else:
            write(keep, [])
        return create, update, delete

    for pk, slices in by_ports.items():
        if pk not in desired:
            delete.extend(slices)
    for pk, (ports, eps) in desired.items():
        remaining = dict(eps)
        assigned: list[tuple[dict, list[dict]]] = []
        for s in by_ports.get(pk, []):
            keep = []
            for ep in s.get("endpoints") or []:
                k = _ep_key(ep)
                if k in remaining and len(keep) < max_per_slice:
                    keep.append(remaining.pop(k))
            assigned.append((s, keep))
        left = sorted(remaining.values(), key=_ep_sort)
        for s, keep in assigned:
            while left and len(keep) < max_per_slice:
                keep.append(left.pop(0))
        for s, keep in assigned:
            if keep:
                write(s, keep)
            else:
                delete.append(s)
        while left:
            chunk, left = left[:max_per_slice], left[max_per_slice:]
            create.append(new_slice(svc, ports, chunk))
    return create, update, delete


class EndpointSliceController(Controller):
    name = "endpointslice"
    workers = 2
    expectation_timeout = 5.0

    def setup(self) -> None:
        self.services = self.informers.informer("Service")
        self.pods = self.informers.informer("Pod")
        self.slices = self.informers.informer("EndpointSlice")
        # service key -> {slice name: resourceVersion we wrote, or None when we deleted it},
        # and when that was recorded
        self._expect: dict[str, tuple[float, dict[str, str | None]]] = {}
        self.services.add_handler(lambda ev, new, old: self.enqueue(new))
        self.pods.add_handler(self._on_pod)
        self.slices.add_handler(self._on_slice)

    def _on_pod(self, event: str, new: dict, old: dict | None) -> None:
        if event == "MODIFIED" and not endpoint_relevant_change(new, old):
            return
        services = self.services.list(new["metadata"].get("namespace"))
        for s in {id(s): s for s in services_for_pod(services, new) +
                  services_for_pod(services, old)}.values():
            self.enqueue(s)

    def _on_slice(self, event: str, new: dict, old: dict | None) -> None:
        labels = new["metadata"].get("labels") or {}
        svc = labels.get(SERVICE_NAME_LABEL)
        if svc and labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME:
            self.queue.add(f"{new['metadata'].get('namespace')}/{svc}")

    def _cache_caught_up(self, key: str, ns: str) -> bool:
        entry = self._expect.get(key)
        if entry is None:
            return True
        since, expected = entry
        if time.monotonic() - since > self.expectation_timeout:
            self._expect.pop(key, None)
            return True
        for name, rv in expected.items():
            cached = self.slices.get(ns, name)
            if rv is None:
                if cached is not None:
                    return False
            elif cached is None or int(cached["metadata"].get("resourceVersion") or 0) < int(rv):
                return False
        self._expect.pop(key, None)
        return True

    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        if not self._cache_caught_up(key, ns):
            self.queue.add_after(key, 0.05)
            return
        svc = self.services.get(ns, name)
        if svc is None or service_selector(svc) is None:
            return  # owned slices go with the Service (garbage collector)
        existing = [s for s in self.slices.list(ns) if owned_by(s, svc)]
        create, update, delete = plan_slices(svc, self.pods.list(ns), existing)
        expected: dict[str, str | None] = {}
        try:
            for s in update:
                out = await self.client.update("EndpointSlice", s)
                expected[out["metadata"]["name"]] = out["metadata"]["resourceVersion"]
            for s in create:
                out = await self.client.create("EndpointSlice", s, ns)
                expected[out["metadata"]["name"]] = out["metadata"]["resourceVersion"]
            for s in delete:
                try:
                    await self.client.delete("EndpointSlice", ns, s["metadata"]["name"],
                                             preconditions={"uid": s["metadata"]["uid"]})
                except APIError as e:
                    if not (e.not_found or e.conflict):
                        raise
                expected[s["metadata"]["name"]] = None
        except APIError as e:
            if e.code == 403 and "terminated" in e.message:
                return
            raise
        finally:
            if expected:
                self._expect[key] = (time.monotonic(), expected)
