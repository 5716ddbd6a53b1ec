"""The Service load-balancer controller (the part of a cloud's service controller a bare-metal
cluster needs, as MetalLB does it): every Service of type LoadBalancer gets an external IP
from the pool (KUBELAB_LB_POOL, default the unprivileged form of DESIGN.md's
172.30.0.200–.250) written to status.loadBalancer.ingress; the node proxies answer on it.
The IP is free again when the Service is deleted or stops being a LoadBalancer (the API
server clears the status on such a type change). The set of IPs in use is rebuilt from the
Services in the cache before every allocation, plus the allocations not yet seen there."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import os
import time

from kubelab.client import APIError

from .base import Controller, split_key

DEFAULT_POOL = "127.30.0.200-127.30.0.250"


def parse_pool(spec: str) -> list[str]:
    """Addresses of a pool given as comma-separated ranges `a-b`, CIDRs or single IPs."""
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "-" in part:
            a, b = (ipaddress.ip_address(x.strip()) for x in part.split("-", 1))
            if int(b) < int(a):
                raise ValueError(f"invalid address range {part!r}")
            out += [str(ipaddress.ip_address(i)) for i in range(int(a), int(b) + 1)]
        elif "/" in part:
            net = ipaddress.ip_network(part, strict=False)
            hosts = list(net.hosts()) or [net.network_address]
            out += [str(h) for h in hosts]
        else:
            out.append(str(ipaddress.ip_address(part)))
    seen: set[str] = set()
    return [ip for ip in out if not (ip in seen or seen.add(ip))]


def wants_lb(svc: dict | None) -> bool:
    spec = (svc or {}).get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass") and \
        not (svc or {}).get("metadata", {}).get("deletionTimestamp")


def ingress_ips(svc: dict) -> list[str]:
    lb = ((svc.get("status") or {}).get("loadBalancer") or {})
    return [i["ip"] for i in lb.get("ingress") or [] if isinstance(i, dict) and i.get("ip")]


def used_ips(services: list[dict], except_uid: str = "") -> dict[str, str]:
    """ip -> uid of the LoadBalancer Service holding it (the oldest wins a duplicate)."""
    out: dict[str, str] = {}
    for s in sorted(services, key=lambda s: (s["metadata"].get("creationTimestamp", ""),
                                             s["metadata"].get("uid", ""))):
        if s["metadata"].get("uid") == except_uid or not wants_lb(s):
            continue
        for ip in ingress_ips(s):
            out.setdefault(ip, s["metadata"].get("uid", ""))
    return out


def choose_ip(svc: dict, pool: list[str], used: set[str]) -> tuple[str | None, str]:
    """(ip, problem): keep the Service's current pool IP, else its spec.loadBalancerIP if
    free, else the lowest free pool address."""
    pool_set = set(pool)
    for ip in ingress_ips(svc):
        if ip in pool_set and ip not in used:
            return ip, ""
    want = (svc.get("spec") or {}).get("loadBalancerIP")
    if want:
        if want not in pool_set:
            return None, f"requested IP {want} is not in the load-balancer pool"
        if want in used:
            return None, f"requested IP {want} is already allocated"
        return want, ""
    for ip in pool:
        if ip not in used:
            return ip, ""
    return None, "no available IPs in the load-balancer pool"


class ServiceLoadBalancerController(Controller):
    name = "service-lb"
    workers = 2
    pending_ttl = 30.0

    def setup(self) -> None:
        self.pool = parse_pool(os.environ.get("KUBELAB_LB_POOL", DEFAULT_POOL))
        self.services = self.informers.informer("Service")
        self.services.add_handler(self._on_service)
        self._lock = asyncio.Lock()
        # ip -> (service uid, when): allocations written but not yet seen in the cache
        self._pending: dict[str, tuple[str, float]] = {}

    def _on_service(self, event: str, new: dict, old: dict | None) -> None:
        if event == "DELETED":
            uid = new["metadata"].get("uid")
            for ip, (u, _) in list(self._pending.items()):
                if u == uid:
                    self._pending.pop(ip, None)
            # a Service waiting for a free address may get this one now
            for s in self.services.list():
                if wants_lb(s) and not ingress_ips(s):
                    self.enqueue(s)
        elif wants_lb(new) or wants_lb(old) or ingress_ips(new):
            self.enqueue(new)
            if old is not None and wants_lb(old) and not wants_lb(new):
                for s in self.services.list():
                    if wants_lb(s) and not ingress_ips(s):
                        self.enqueue(s)

    def _used(self, svc_uid: str) -> set[str]:
        now = time.monotonic()
        services = self.services.list()
        by_uid = {s["metadata"].get("uid"): s for s in services}
        used = used_ips(services, except_uid=svc_uid)
        for ip, (uid, when) in list(self._pending.items()):
            seen = by_uid.get(uid)
            if now - when > self.pending_ttl or \
                    (seen is not None and (ip in ingress_ips(seen) or not wants_lb(seen))):
                self._pending.pop(ip, None)  # the cache shows it now (or it is moot)
            elif uid != svc_uid:
                used[ip] = uid
        return set(used)

    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        svc = self.services.get(ns, name)
        if svc is None:
            return
        uid = svc["metadata"].get("uid", "")
        if not wants_lb(svc):
            # a Service that stopped being a LoadBalancer: drop our address
            if (svc.get("spec") or {}).get("loadBalancerClass"):
                return  # someone else's load balancer
            if ingress_ips(svc) and set(ingress_ips(svc)) <= set(self.pool):
                obj = copy.deepcopy(svc)
                obj.setdefault("status", {})["loadBalancer"] = {}
                await self.client.update_status("Service", obj)
            return
        async with self._lock:
            used = self._used(uid)
            current = ingress_ips(svc)
            ip, problem = choose_ip(svc, self.pool, used)
            if ip is None:
                await self.recorder.warning(svc, "AllocationFailed", f"Failed to allocate IP "
                                            f"for {ns}/{name}: {problem}")
                return
            if current == [ip]:
                return
            self._pending[ip] = (uid, time.monotonic())
        if not current:
            await self.recorder.normal(svc, "EnsuringLoadBalancer", "Ensuring load balancer")
        obj = copy.deepcopy(svc)
        obj.setdefault("status", {})["loadBalancer"] = {"ingress": [{"ip": ip, "ipMode": "VIP"}]}
        try:
            await self.client.update_status("Service", obj)
        except APIError:
            async with self._lock:
                if self._pending.get(ip, ("",))[0] == uid:
                    self._pending.pop(ip, None)
            raise
        await self.recorder.normal(svc, "IPAllocated", f"Assigned IP [\"{ip}\"]")
        await self.recorder.normal(svc, "EnsuredLoadBalancer", "Ensured load balancer")
