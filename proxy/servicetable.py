"""The proxy's desired state, computed without sockets: Services + their endpoints -> the
listeners this worker must hold and, for each, the backends traffic may go to.

Listeners (kube-proxy's "service ports"):
- ClusterIP:port for every port of every Service with a cluster IP (not headless, not
  ExternalName), on every worker; internalTrafficPolicy Local keeps it to this node's endpoints.
- node-ip:nodePort for NodePort and LoadBalancer Services (externalTrafficPolicy Local: only
  endpoints on this node, none = refused).
- spec.externalIPs:port on every worker, and status.loadBalancer.ingress IPs:port on the worker
  holding that IP (externalTrafficPolicy applies to both).

`Balancer` is the per-listener endpoint choice: round-robin, next endpoint after a refused
connection, ClientIP session affinity with a timeout."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kubelab import timescale

from .endpoints import ServiceEndpoints, ready_backends

Backend = tuple[str, int]
DEFAULT_AFFINITY_TIMEOUT = 10800  # v1.DefaultClientIPServiceAffinitySeconds
PROTOCOLS = ("TCP", "UDP")


@dataclass(frozen=True, order=True)
class ListenerKey:
    ip: str
    port: int
    protocol: str = "TCP"

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}/{self.protocol}"


@dataclass(frozen=True)
class ListenerPlan:
    key: ListenerKey
    service: tuple[str, str]        # (namespace, name)
    port_name: str
    scope: str                      # "clusterIP" | "nodePort" | "externalIP" | "loadBalancer"
    backends: tuple[Backend, ...]   # where new connections may go, in endpoint order
    known: frozenset[Backend]       # every endpoint that still exists (any condition)
    affinity_timeout: float | None  # ClientIP affinity (seconds), None = no affinity
    shared: bool = True             # bind with SO_REUSEPORT (the address is shared by workers)


def is_headless(svc: dict) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def is_proxied(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return False
    ip = spec.get("clusterIP")
    return bool(ip) and ip != "None"


def lb_ingress_ips(svc: dict) -> list[str]:
    lb = (svc.get("status") or {}).get("loadBalancer") or {}
    return [i["ip"] for i in lb.get("ingress") or [] if isinstance(i, dict) and i.get("ip")]


def affinity_timeout(svc: dict) -> float | None:
    spec = svc.get("spec") or {}
    if spec.get("sessionAffinity") != "ClientIP":
        return None
    cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
    secs = cfg.get("timeoutSeconds")
    if not secs:
        secs = DEFAULT_AFFINITY_TIMEOUT
    return timescale.scaled(float(secs))


def build_table(services: Iterable[dict], endpoints: Callable[[str, str], ServiceEndpoints], *,
                node_name: str, node_ip: str, held_ips: Iterable[str] = (),
                ) -> dict[ListenerKey, ListenerPlan]:
    """Every listener this worker should have, with its backends (pure)."""
    held = set(held_ips)
    out: dict[ListenerKey, ListenerPlan] = {}
    for svc in sorted(services, key=lambda s: (s["metadata"].get("creationTimestamp") or "",
                                               s["metadata"].get("namespace", ""),
                                               s["metadata"].get("name", ""))):
        if not is_proxied(svc) or svc["metadata"].get("deletionTimestamp"):
            continue
        md, spec = svc["metadata"], svc.get("spec") or {}
        ns, name = md.get("namespace", "default"), md["name"]
        se = endpoints(ns, name)
        publish = bool(spec.get("publishNotReadyAddresses"))
        aff = affinity_timeout(svc)
        itp_local = spec.get("internalTrafficPolicy") == "Local"
        etp_local = spec.get("externalTrafficPolicy") == "Local"
        cluster_ips = [ip for ip in (spec.get("clusterIPs") or [spec["clusterIP"]])
                       if ip and ip != "None"]
        for sp in spec.get("ports") or []:
            proto = sp.get("protocol") or "TCP"
            if proto not in PROTOCOLS or sp.get("port") is None:
                continue
            pname = sp.get("name") or ""
            all_b = ready_backends(se, pname, protocol=proto, publish_not_ready=publish,
                                   fallback_terminating=True)
            local_b = ready_backends(se, pname, protocol=proto, publish_not_ready=publish,
                                     node_name=node_name, fallback_terminating=True)
            known = frozenset(_known(se, pname, proto))

            ext = local_b if etp_local else all_b
            wanted: list[tuple[str, int, str, list[Backend], bool]] = [
                (ip, sp["port"], "clusterIP", local_b if itp_local else all_b, True)
                for ip in cluster_ips]
            if spec.get("type") in ("NodePort", "LoadBalancer") and sp.get("nodePort"):
                wanted.append((node_ip, sp["nodePort"], "nodePort", ext, False))
            wanted += [(ip, sp["port"], "externalIP", ext, True)
                       for ip in spec.get("externalIPs") or []]
            if spec.get("type") == "LoadBalancer":
                # one holder per IP: bound exclusively, so a second holder (another cluster
                # on this machine, a stale one) fails loudly instead of sharing the traffic
                wanted += [(ip, sp["port"], "loadBalancer", ext, False)
                           for ip in lb_ingress_ips(svc) if ip in held]
            for ip, port, scope, backends, shared in wanted:
                key = ListenerKey(ip, int(port), proto)
                if key in out:  # first (oldest) Service wins a clash
                    continue
                out[key] = ListenerPlan(key, (ns, name), pname, scope, tuple(backends), known,
                                        aff, shared)
    return out


def _known(se: ServiceEndpoints, port_name: str, proto: str) -> list[Backend]:
    out = []
    for ports, eps in se.subsets:
        for name, port, p in ports:
            if name == port_name and p == proto:
                out += [(ep.ip, port) for ep in eps]
                break
    return out


def cluster_ips(table: dict[ListenerKey, ListenerPlan]) -> set[str]:
    """The Service VIPs the table listens on (for the kube-ipvs0 dummy interface)."""
    return {k.ip for k, p in table.items() if p.scope in ("clusterIP", "externalIP")}


@dataclass
class Balancer:
    """Endpoint choice for one listener (kube-proxy's LoadBalancerRR, per service port).
    Without affinity: round-robin. With ClientIP affinity: a client keeps its endpoint until
    `affinity_timeout` passes without a connection; a client without a record gets the
    endpoint its IP hashes to (the same on every worker for the same endpoint list)."""
    backends: tuple[Backend, ...] = ()
    affinity_timeout: float | None = None
    clock: Callable[[], float] = time.monotonic
    _next: int = 0
    _affinity: dict[str, tuple[Backend, float]] = field(default_factory=dict)

    def update(self, backends: tuple[Backend, ...], affinity_timeout: float | None) -> None:
        if backends != self.backends:
            cur = self.backends[self._next % len(self.backends)] if self.backends else None
            self.backends = backends
            # keep the rotation where it was when the current endpoint survives
            self._next = backends.index(cur) if cur in backends else 0
            alive = set(backends)
            self._affinity = {c: v for c, v in self._affinity.items() if v[0] in alive}
        if affinity_timeout != self.affinity_timeout:
            self.affinity_timeout = affinity_timeout
            if affinity_timeout is None:
                self._affinity.clear()

    def candidates(self, client_ip: str) -> list[Backend]:
        """Backends to try in order: the client's affine endpoint (if any and not expired),
        then the round-robin order starting at the next endpoint. Advances the rotation."""
        n = len(self.backends)
        if n == 0:
            return []
        first: Backend | None = None
        if self.affinity_timeout is not None:
            hit = self._affinity.get(client_ip)
            if hit is not None:
                if self.clock() - hit[1] <= self.affinity_timeout and hit[0] in self.backends:
                    first = hit[0]
                else:
                    del self._affinity[client_ip]
        start = self._next % n
        order = [self.backends[(start + i) % n] for i in range(n)]
        if first is None and self.affinity_timeout is not None:
            # a new client: pick by a stable hash of its IP, so that every worker's proxy
            # (they share the VIP through SO_REUSEPORT) sends this client to the same endpoint
            first = self.backends[zlib.crc32(client_ip.encode()) % n]
        if first is not None:
            order.remove(first)
            order.insert(0, first)
        else:
            self._next = (start + 1) % n
        return order

    def connected(self, client_ip: str, backend: Backend) -> None:
        """Record a successful connection (refreshes the client's affinity)."""
        if self.affinity_timeout is not None:
            self._affinity[client_ip] = (backend, self.clock())

    def failed(self, backend: Backend) -> None:
        """A refused endpoint: move the rotation past it."""
        if backend in self.backends and self.backends:
            i = self.backends.index(backend)
            if self._next % len(self.backends) == i:
                self._next = (i + 1) % len(self.backends)
