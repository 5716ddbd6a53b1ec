"""The DNS server's view of the cluster: Services and Namespaces from the shared informers,
endpoints from `proxy.endpoints.EndpointIndex` (the same index the L4 proxy uses), plus the
reverse indexes PTR answers need (ClusterIP -> Service, endpoint IP -> Services).

Every change bumps `generation` (the server drops its packed-answer cache) and `serial` (the
SOA serial: the Unix time of the last change, as CoreDNS's kubernetes plugin reports it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from proxy.endpoints import EndpointIndex

from .records import EndpointAddr

log = logging.getLogger(__name__)

# without a Namespace watch (e.g. no permission), be ready anyway after this long and treat a
# namespace as existing when a Service lives in it
NAMESPACE_SYNC_GRACE = 5.0


def _svc_key(svc: dict) -> tuple[str, str]:
    md = svc.get("metadata") or {}
    return md.get("namespace", ""), md.get("name", "")


def _svc_ips(svc: dict) -> list[str]:
    spec = svc.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [ip for ip in ips if ip and ip != "None"]


class ClusterCache:
    """Implements records.ClusterView over informers; O(1) lookups for the hot path."""

    def __init__(self, informers, endpoint_index: EndpointIndex | None = None) -> None:
        self.services_informer = informers.informer("Service")
        self.namespaces_informer = informers.informer("Namespace")
        self.endpoint_index = endpoint_index or EndpointIndex(informers)
        self.generation = 0
        self.serial = int(time.time())
        self._listeners: list[Callable[[], object]] = []
        self._by_ip: dict[str, dict[tuple[str, str], dict]] = {}
        self._svc_per_ns: dict[str, int] = {}
        self._ep_ips: dict[tuple[str, str], set[str]] = {}
        self._ep_by_ip: dict[str, set[tuple[str, str]]] = {}
        self._eps: dict[tuple[str, str], list[EndpointAddr]] = {}
        self._created = time.monotonic()
        self.services_informer.add_handler(self._on_service)
        self.namespaces_informer.add_handler(self._on_namespace)
        self.endpoint_index.add_listener(self._on_endpoints)
        for svc in self.services_informer.list():
            self._on_service("ADDED", svc, None)
        for ns, name in self.endpoint_index.services():
            self._on_endpoints(ns, name)

    # --- readiness / change notification -----------------------------------------------------

    @property
    def synced(self) -> bool:
        if not (self.services_informer.synced.is_set()
                and self.endpoint_index.synced.is_set()):
            return False
        return (self.namespaces_informer.synced.is_set()
                or time.monotonic() - self._created > NAMESPACE_SYNC_GRACE)

    def add_listener(self, fn: Callable[[], object]) -> None:
        self._listeners.append(fn)

    def _changed(self) -> None:
        self.generation += 1
        self.serial = max(self.serial, int(time.time()))
        for fn in self._listeners:
            try:
                fn()
            except Exception:
                log.exception("dns change listener failed")

    # --- handlers ------------------------------------------------------------------------------

    def _on_service(self, event: str, new: dict, old: dict | None) -> None:
        if old is new and event == "MODIFIED":
            return  # informer resync replay: nothing changed
        if old is not None:
            key = _svc_key(old)
            for ip in _svc_ips(old):
                d = self._by_ip.get(ip)
                if d is not None:
                    d.pop(key, None)
                    if not d:
                        del self._by_ip[ip]
            self._svc_per_ns[key[0]] = self._svc_per_ns.get(key[0], 1) - 1
        if event != "DELETED":
            key = _svc_key(new)
            for ip in _svc_ips(new):
                self._by_ip.setdefault(ip, {})[key] = new
            self._svc_per_ns[key[0]] = self._svc_per_ns.get(key[0], 0) + 1
        elif old is None:
            key = _svc_key(new)
            for ip in _svc_ips(new):
                d = self._by_ip.get(ip)
                if d is not None:
                    d.pop(key, None)
                    if not d:
                        del self._by_ip[ip]
            self._svc_per_ns[key[0]] = self._svc_per_ns.get(key[0], 1) - 1
        self._changed()

    def _on_namespace(self, event: str, new: dict, old: dict | None) -> None:
        if old is new and event == "MODIFIED":
            return
        self._changed()

    def _on_endpoints(self, namespace: str, service: str) -> None:
        key = (namespace, service)
        se = self.endpoint_index.get(namespace, service)
        addrs: list[EndpointAddr] = []
        for ports, eps in se.subsets:
            pt = tuple(ports)
            for ep in eps:
                addrs.append(EndpointAddr(ip=ep.ip, ready=ep.ready, hostname=ep.hostname,
                                          ports=pt))
        if addrs:
            self._eps[key] = addrs
        else:
            self._eps.pop(key, None)
        new_ips = {a.ip for a in addrs}
        old_ips = self._ep_ips.get(key, set())
        for ip in old_ips - new_ips:
            s = self._ep_by_ip.get(ip)
            if s is not None:
                s.discard(key)
                if not s:
                    del self._ep_by_ip[ip]
        for ip in new_ips - old_ips:
            self._ep_by_ip.setdefault(ip, set()).add(key)
        if new_ips:
            self._ep_ips[key] = new_ips
        else:
            self._ep_ips.pop(key, None)
        self._changed()

    # --- ClusterView ---------------------------------------------------------------------------

    def namespace_exists(self, namespace: str) -> bool:
        if self.namespaces_informer.get(None, namespace) is not None:
            return True
        if self.namespaces_informer.synced.is_set():
            return False
        return self._svc_per_ns.get(namespace, 0) > 0

    def service(self, namespace: str, name: str) -> dict | None:
        return self.services_informer.get(namespace, name)

    def services_by_ip(self, ip: str) -> list[dict]:
        return list((self._by_ip.get(ip) or {}).values())

    def endpoints(self, namespace: str, name: str) -> list[EndpointAddr]:
        return self._eps.get((namespace, name), [])

    def endpoints_by_ip(self, ip: str) -> list[tuple[str, str, EndpointAddr]]:
        out = []
        for key in sorted(self._ep_by_ip.get(ip, ())):
            for a in self._eps.get(key, ()):
                if a.ip == ip:
                    out.append((key[0], key[1], a))
                    break
        return out
