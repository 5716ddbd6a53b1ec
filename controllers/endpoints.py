"""The Endpoints controller (kube-controller-manager's endpoint controller): every Service with
a selector gets an Endpoints object of the same name listing the ready and not-ready addresses
of the pods it selects, grouped into subsets by the ports they offer (a named targetPort is
resolved per pod, so pods resolving it differently land in different subsets). Services
without a selector keep the Endpoints their users write."""

from __future__ import annotations

import copy
import datetime

from kubelab.client import APIError

from .base import Controller, split_key
from .endpointutil import (
    HEADLESS_LABEL,
    endpoint_relevant_change,
    find_port,
    is_headless,
    is_pod_ready,
    selected_pods,
    service_selector,
    services_for_pod,
    should_pod_be_in_endpoints,
    should_set_hostname,
    target_ref,
)

TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


def _port_key(p: dict | None) -> tuple:
    if p is None:  # the sentinel of a headless Service without ports
        return ("", -1, "", "")
    return (p.get("name") or "", p.get("port"), p.get("protocol") or "TCP",
            p.get("appProtocol") or "")


def _addr_key(a: dict) -> tuple:
    return (a.get("ip", ""), (a.get("targetRef") or {}).get("uid", ""))


def _ip_sort_key(ip: str) -> tuple:
    try:
        return (0, tuple(int(x) for x in ip.split(".")))
    except ValueError:
        return (1, ip)


def _addr_sort(a: dict) -> tuple:
    return (_ip_sort_key(a.get("ip", "")), (a.get("targetRef") or {}).get("uid", ""))


def endpoint_entries(svc: dict, pods: list[dict]) -> list[tuple[dict, bool, dict | None]]:
    """(address, ready, port) for every pod the Service selects and every service port the
    pod resolves; port None stands for "no ports" (headless Services without ports)."""
    spec = svc.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    ports = spec.get("ports") or []
    out: list[tuple[dict, bool, dict | None]] = []
    for pod in sorted(selected_pods(svc, pods), key=lambda p: p["metadata"]["name"]):
        if not should_pod_be_in_endpoints(pod, publish):
            continue
        addr: dict = {"ip": pod["status"]["podIP"]}
        if should_set_hostname(pod, svc):
            addr["hostname"] = pod["spec"]["hostname"]
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            addr["nodeName"] = node
        addr["targetRef"] = target_ref(pod)
        ready = publish or is_pod_ready(pod)
        if not ports:
            if is_headless(svc):
                out.append((addr, ready, None))
            continue
        for sp in ports:
            num = find_port(pod, sp)
            if num is None:
                continue
            ep: dict = {"port": num, "protocol": sp.get("protocol") or "TCP"}
            if sp.get("name"):
                ep["name"] = sp["name"]
            if sp.get("appProtocol"):
                ep["appProtocol"] = sp["appProtocol"]
            out.append((addr, ready, ep))
    return out


def repack_subsets(entries: list[tuple[dict, bool, dict | None]]) -> list[dict]:
    """endpoints.RepackSubsets: map every port to the addresses offering it, then group the
    ports whose address sets are equal into one subset. Sorted for stable output."""
    by_port: dict[tuple, dict[tuple, tuple[dict, bool]]] = {}
    port_obj: dict[tuple, dict | None] = {}
    for addr, ready, port in entries:
        pk = _port_key(port)
        port_obj[pk] = port
        by_port.setdefault(pk, {})[_addr_key(addr)] = (addr, ready)
    groups: dict[frozenset, list[tuple]] = {}
    addrs_of: dict[frozenset, dict[tuple, tuple[dict, bool]]] = {}
    for pk, addrs in by_port.items():
        gk = frozenset((k, r) for k, (_, r) in addrs.items())
        groups.setdefault(gk, []).append(pk)
        addrs_of[gk] = addrs
    subsets = []
    for gk, pks in groups.items():
        addrs = addrs_of[gk].values()
        ready = sorted((copy.deepcopy(a) for a, r in addrs if r), key=_addr_sort)
        not_ready = sorted((copy.deepcopy(a) for a, r in addrs if not r), key=_addr_sort)
        ss: dict = {}
        if ready:
            ss["addresses"] = ready
        if not_ready:
            ss["notReadyAddresses"] = not_ready
        ports = [copy.deepcopy(port_obj[pk]) for pk in sorted(pks, key=_ports_sort)
                 if port_obj[pk] is not None]
        if ports:
            ss["ports"] = ports
        subsets.append(ss)
    subsets.sort(key=_subset_sort)
    return subsets


def _ports_sort(pk: tuple) -> tuple:
    return (pk[0], pk[1] if isinstance(pk[1], int) else -2, pk[2], pk[3])


def _subset_sort(ss: dict) -> tuple:
    return (tuple(_ports_sort(_port_key(p)) for p in ss.get("ports") or []),
            tuple(_addr_sort(a) for a in ss.get("addresses") or []),
            tuple(_addr_sort(a) for a in ss.get("notReadyAddresses") or []))


def compute_subsets(svc: dict, pods: list[dict]) -> list[dict]:
    """The subsets of the Endpoints of `svc` given all pods (of any namespace)."""
    return repack_subsets(endpoint_entries(svc, pods))


def normalize_subsets(subsets: list | None) -> list[dict]:
    """Subsets in the canonical order and form compute_subsets produces, for comparing a
    stored Endpoints object with the wanted one."""
    entries = []
    for ss in subsets or []:
        ports = ss.get("ports") or [None]
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for a in ss.get(key) or []:
                for p in ports:
                    if p is not None:
                        p = dict(p)
                        p.setdefault("protocol", "TCP")
                    entries.append((a, ready, p))
    return repack_subsets(entries)


def desired_labels(svc: dict) -> dict:
    labels = dict(svc["metadata"].get("labels") or {})
    if is_headless(svc):
        labels[HEADLESS_LABEL] = ""
    else:
        labels.pop(HEADLESS_LABEL, None)
    return labels


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EndpointsController(Controller):
    name = "endpoints"
    workers = 2

    def setup(self) -> None:
        self.services = self.informers.informer("Service")
        self.pods = self.informers.informer("Pod")
        self.endpoints = self.informers.informer("Endpoints")
        self.services.add_handler(lambda ev, new, old: self.enqueue(new))
        self.pods.add_handler(self._on_pod)
        self.endpoints.add_handler(self._on_endpoints)

    def _on_pod(self, event: str, new: dict, old: dict | None) -> None:
        if event == "MODIFIED" and not endpoint_relevant_change(new, old):
            return
        services = self.services.list(new["metadata"].get("namespace"))
        keys = {f"{s['metadata']['namespace']}/{s['metadata']['name']}"
                for s in services_for_pod(services, new) + services_for_pod(services, old)}
        for k in keys:
            self.queue.add(k)

    def _on_endpoints(self, event: str, new: dict, old: dict | None) -> None:
        # a deleted Endpoints object of a selector Service is recreated
        if event == "DELETED":
            self.enqueue(new)

    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        svc = self.services.get(ns, name)
        current = self.endpoints.get(ns, name)
        if svc is None:
            if current is not None:
                try:
                    await self.client.delete("Endpoints", ns, name)
                except APIError as e:
                    if not e.not_found:
                        raise
            return
        if service_selector(svc) is None:
            return  # user-managed Endpoints (or ExternalName)
        subsets = compute_subsets(svc, self.pods.list(ns))
        labels = desired_labels(svc)
        if current is not None and normalize_subsets(current.get("subsets")) == subsets and \
                (current["metadata"].get("labels") or {}) == labels:
            return
        try:
            if current is None:
                obj = {"apiVersion": "v1", "kind": "Endpoints",
                       "metadata": {"name": name, "namespace": ns, "labels": labels,
                                    "annotations": {TRIGGER_TIME_ANNOTATION: _now()}},
                       "subsets": subsets}
                await self.client.create("Endpoints", obj, ns)
            else:
                obj = copy.deepcopy(current)
                obj["metadata"]["labels"] = labels
                obj["metadata"].setdefault("annotations", {})[TRIGGER_TIME_ANNOTATION] = _now()
                obj["subsets"] = subsets
                await self.client.update("Endpoints", obj)
        except APIError as e:
            if e.code == 403 and "terminated" in e.message:
                return  # the namespace is going away
            raise
