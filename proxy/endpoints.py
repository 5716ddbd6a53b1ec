"""Service endpoints as the proxy, the DNS server and the ingress see them.

`EndpointIndex` sits on the shared EndpointSlice informer and indexes the slices by
(namespace, `kubernetes.io/service-name` label). `get(ns, svc)` merges every slice of a
Service into one `ServiceEndpoints`; listeners are told `(ns, svc)` after any change.

Services without a selector whose user writes a v1 Endpoints object (and no EndpointSlice)
are served from that Endpoints object, as the EndpointSlice mirroring controller would.

A Service's slices may carry different port groups (pods resolving a named targetPort to
different numbers), so `ServiceEndpoints` keeps the groups (`subsets`) as well as the merged
`ports` / `endpoints` views (endpoints de-duplicated by IP)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Port = tuple[str, int, str]  # (name, port, protocol)
Listener = Callable[[str, str], object]


@dataclass(frozen=True)
class Endpoint:
    ip: str
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    hostname: str | None = None
    node_name: str | None = None
    target_ref: tuple[str, str, str] | None = None  # (kind, namespace, name)


@dataclass
class ServiceEndpoints:
    ports: list[Port] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    # one (ports, endpoints) group per distinct port set, as the slices carry them
    subsets: list[tuple[list[Port], list[Endpoint]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.endpoints)


def _endpoint_from_slice(ep: dict) -> list[Endpoint]:
    cond = ep.get("conditions") or {}
    # EndpointConditions: nil ready means "unknown", interpreted as ready; serving
    # defaults to ready; terminating to false.
    ready = cond.get("ready")
    ready = True if ready is None else bool(ready)
    serving = cond.get("serving")
    serving = ready if serving is None else bool(serving)
    terminating = bool(cond.get("terminating") or False)
    ref = ep.get("targetRef") or None
    tref = (ref.get("kind", ""), ref.get("namespace", ""), ref.get("name", "")) if ref else None
    return [Endpoint(ip=a, ready=ready, serving=serving, terminating=terminating,
                     hostname=ep.get("hostname") or None, node_name=ep.get("nodeName") or None,
                     target_ref=tref)
            for a in ep.get("addresses") or []]


def _slice_ports(slc: dict) -> list[Port]:
    out: list[Port] = []
    for p in slc.get("ports") or []:
        if p.get("port") is None:
            continue
        out.append((p.get("name") or "", int(p["port"]), p.get("protocol") or "TCP"))
    return out


def merge_slices(slices: list[dict]) -> ServiceEndpoints:
    """One ServiceEndpoints from all the EndpointSlices of a Service (pure)."""
    groups: dict[tuple, tuple[list[Port], dict[str, Endpoint]]] = {}
    all_ports: dict[Port, None] = {}
    all_eps: dict[str, Endpoint] = {}
    for slc in sorted(slices, key=lambda s: s.get("metadata", {}).get("name", "")):
        if (slc.get("addressType") or "IPv4") == "FQDN":
            continue
        ports = _slice_ports(slc)
        g = groups.setdefault(tuple(sorted(ports)), (ports, {}))
        for p in ports:
            all_ports.setdefault(p, None)
        for raw in slc.get("endpoints") or []:
            for ep in _endpoint_from_slice(raw):
                _put(g[1], ep)
                _put(all_eps, ep)
    subsets = [(ports, sorted(eps.values(), key=_ip_sort)) for ports, eps in groups.values()]
    return ServiceEndpoints(ports=list(all_ports), endpoints=sorted(all_eps.values(), key=_ip_sort),
                            subsets=subsets)


def from_endpoints(obj: dict) -> ServiceEndpoints:
    """A ServiceEndpoints from a v1 Endpoints object (its subsets) (pure)."""
    slices = []
    for i, sub in enumerate(obj.get("subsets") or []):
        eps = []
        for addrs, ready in ((sub.get("addresses") or [], True),
                             (sub.get("notReadyAddresses") or [], False)):
            for a in addrs:
                ep = {"addresses": [a.get("ip")], "conditions": {"ready": ready}}
                if a.get("hostname"):
                    ep["hostname"] = a["hostname"]
                if a.get("nodeName"):
                    ep["nodeName"] = a["nodeName"]
                if a.get("targetRef"):
                    ep["targetRef"] = a["targetRef"]
                eps.append(ep)
        slices.append({"metadata": {"name": f"{i:04d}"}, "ports": sub.get("ports") or [],
                       "endpoints": eps})
    return merge_slices(slices)


def _put(d: dict[str, Endpoint], ep: Endpoint) -> None:
    """De-duplicate by IP; a ready copy wins over a not-ready one (an endpoint briefly
    present in two slices during a move)."""
    prev = d.get(ep.ip)
    if prev is None or (ep.ready and not prev.ready) or (ep.serving and not prev.serving):
        d[ep.ip] = ep


def _skip_mirror(ep: dict) -> bool:
    labels = (ep.get("metadata") or {}).get("labels") or {}
    return labels.get("endpointslice.kubernetes.io/skip-mirror") == "true"


def _ip_sort(ep: Endpoint) -> tuple:
    try:
        return (0, tuple(int(x) for x in ep.ip.split(".")))
    except ValueError:
        return (1, ep.ip)


def ready_backends(svc_endpoints: ServiceEndpoints, port_name: str, *,
                   protocol: str | None = None, publish_not_ready: bool = False,
                   node_name: str | None = None,
                   fallback_terminating: bool = False) -> list[tuple[str, int]]:
    """(ip, port) of the endpoints that should receive traffic for the Service port named
    `port_name` ("" for an unnamed port): ready ones, or all of them with
    publishNotReadyAddresses. With `node_name`, only endpoints on that node (traffic policy
    Local). With `fallback_terminating`, when no endpoint is ready, the serving-and-terminating
    ones are used (Kubernetes' ProxyTerminatingEndpoints)."""
    out: list[tuple[str, int]] = []
    fallback: list[tuple[str, int]] = []
    seen: set[str] = set()
    for ports, eps in svc_endpoints.subsets:
        num = None
        for name, port, proto in ports:
            if name == port_name and (protocol is None or proto == protocol):
                num = port
                break
        if num is None:
            continue
        for ep in eps:
            if ep.ip in seen:
                continue
            if node_name is not None and ep.node_name != node_name:
                continue
            if publish_not_ready or ep.ready:
                seen.add(ep.ip)
                out.append((ep.ip, num))
            elif ep.serving and ep.terminating:
                fallback.append((ep.ip, num))
    if not out and fallback_terminating:
        return fallback
    return out


class EndpointIndex:
    """EndpointSlices indexed by (namespace, service name), built on the shared informer."""

    def __init__(self, informers) -> None:
        self.informer = informers.informer("EndpointSlice")
        self._slices: dict[tuple[str, str], dict[str, dict]] = {}
        self._cache: dict[tuple[str, str], ServiceEndpoints] = {}
        self._listeners: list[Listener] = []
        self.ep_informer = informers.informer("Endpoints")
        self.informer.add_handler(self._on_event)
        self.ep_informer.add_handler(self._on_endpoints)
        for slc in self.informer.list():
            self._on_event("ADDED", slc, None)

    @property
    def synced(self):
        return self.informer.synced

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def get(self, namespace: str, service: str) -> ServiceEndpoints:
        key = (namespace, service)
        se = self._cache.get(key)
        if se is None:
            slices = self._slices.get(key)
            if slices:
                se = merge_slices(list(slices.values()))
            else:
                ep = self.ep_informer.get(namespace, service)
                se = from_endpoints(ep) if ep is not None and not _skip_mirror(ep) \
                    else ServiceEndpoints()
            self._cache[key] = se
        return se

    def services(self) -> list[tuple[str, str]]:
        return list(self._slices)

    def _on_endpoints(self, event: str, new: dict, old: dict | None) -> None:
        md = new.get("metadata") or {}
        key = (md.get("namespace", ""), md.get("name", ""))
        if key in self._slices:  # slices take precedence
            return
        self._notify({key})

    def _notify(self, changed: set[tuple[str, str]]) -> None:
        for key in changed:
            self._cache.pop(key, None)
            for fn in list(self._listeners):
                try:
                    fn(*key)
                except Exception:
                    log.exception("endpoint listener failed")

    @staticmethod
    def _key(slc: dict) -> tuple[tuple[str, str], str] | None:
        md = slc.get("metadata") or {}
        svc = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not svc:
            return None
        return (md.get("namespace", ""), svc), md.get("name", "")

    def _on_event(self, event: str, new: dict, old: dict | None) -> None:
        changed: set[tuple[str, str]] = set()
        if old is not None:
            k = self._key(old)
            if k is not None:
                d = self._slices.get(k[0])
                if d is not None and d.pop(k[1], None) is not None:
                    changed.add(k[0])
                    if not d:
                        del self._slices[k[0]]
        if event != "DELETED":
            k = self._key(new)
            if k is not None:
                self._slices.setdefault(k[0], {})[k[1]] = new
                changed.add(k[0])
        elif old is None:
            k = self._key(new)
            if k is not None:
                d = self._slices.get(k[0])
                if d is not None and d.pop(k[1], None) is not None:
                    changed.add(k[0])
                    if not d:
                        del self._slices[k[0]]
        self._notify(changed)
