"""What kube-apiserver keeps in the store by itself (its bootstrap controller): the system
namespaces, and the `kubernetes` Service in `default` whose Endpoints/EndpointSlice point at the
API server — so pods get KUBERNETES_SERVICE_HOST and DNS answers kubernetes.default.svc."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from .errors import StatusError

log = logging.getLogger("apiserver.bootstrap")

SERVICE = "kubernetes"


def kubernetes_service(cluster_ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": 6443}]}}


def kubernetes_endpoints(addresses: list[str], port: int) -> tuple[dict, dict]:
    ep = {"apiVersion": "v1", "kind": "Endpoints",
          "metadata": {"name": SERVICE, "namespace": "default",
                       "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
          "subsets": [{"addresses": [{"ip": a} for a in addresses],
                       "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}
    slice_ = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"name": SERVICE, "namespace": "default",
                           "labels": {"kubernetes.io/service-name": SERVICE}},
              "addressType": "IPv4",
              "endpoints": [{"addresses": [a], "conditions": {"ready": True}}
                            for a in addresses],
              "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
    return ep, slice_


async def ensure_kubernetes_service(storage, kinds, cluster_ip: str, port: int) -> None:
    """Create the Service once (a concurrent API server may win the race)."""
    svc_kind = kinds.by_kind("", "v1", "Service")
    if await storage.get_or_none(svc_kind, "default", SERVICE) is None:
        svc = kubernetes_service(cluster_ip)
        svc["spec"]["ports"][0]["targetPort"] = port
        try:
            await storage.create(svc_kind, svc)
        except StatusError as e:
            if e.code not in (409, 422):
                raise


async def write_kubernetes_endpoints(storage, kinds, addresses: list[str], port: int) -> None:
    """Keep the Endpoints and EndpointSlice of `kubernetes` at exactly these addresses."""
    ep, slice_ = kubernetes_endpoints(addresses, port)
    for kind, obj in ((kinds.by_kind("", "v1", "Endpoints"), ep),
                      (kinds.by_kind("discovery.k8s.io", "v1", "EndpointSlice"), slice_)):
        if kind is None:
            continue
        cur = await storage.get_or_none(kind, "default", SERVICE)
        if cur is None:
            try:
                await storage.create(kind, obj)
            except StatusError as e:
                if e.code != 409:
                    raise
            continue
        if all(cur.get(k) == obj.get(k) for k in ("subsets", "endpoints", "ports")):
            continue
        obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        obj["metadata"]["uid"] = cur["metadata"]["uid"]
        obj["metadata"]["creationTimestamp"] = cur["metadata"]["creationTimestamp"]
        try:
            await storage.update(kind, "default", SERVICE, obj)
        except StatusError as e:
            if e.code != 409:  # another API server wrote it meanwhile; the next round fixes it
                raise


class MasterLeases:
    """kube-apiserver's "lease" endpoint reconciler, so that several API servers share the
    `kubernetes` Service: each keeps a key /registry/masterleases/<ip> under a store lease
    (TTL 15 s, renewed every 10 s) and rewrites the endpoints from the live keys. A crashed API
    server drops out when its lease expires; one that shuts down removes itself at once."""

    PREFIX = "/registry/masterleases/"

    def __init__(self, etcd, storage, kinds, address: str, port: int, *,
                 ttl: int = 15, interval: float = 10.0):
        self.etcd, self.storage, self.kinds = etcd, storage, kinds
        self.address, self.port = address, port
        self.ttl, self.interval = ttl, interval
        self.lease_id = 0

    async def renew(self) -> None:
        if not self.lease_id or await self.etcd.lease_keepalive_once(self.lease_id) <= 0:
            self.lease_id = (await self.etcd.lease_grant(self.ttl)).ID
        await self.etcd.put(self.PREFIX + self.address, self.address, lease=self.lease_id)

    async def addresses(self) -> list[str]:
        resp = await self.etcd.get_prefix(self.PREFIX)
        return sorted({kv.key.decode()[len(self.PREFIX):] for kv in resp.kvs},
                      key=_ip_order)

    async def reconcile(self) -> None:
        await self.renew()
        for _ in range(3):
            # API servers starting together each write the addresses they read; one that read
            # before the other's key existed can write last. Re-reading after the write catches
            # that now rather than a round (10 s) later.
            want = await self.addresses()
            await write_kubernetes_endpoints(self.storage, self.kinds, want, self.port)
            if await self.addresses() == want:
                break

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.reconcile()
            except Exception as e:  # noqa: BLE001 - store unavailable: try again next round
                log.warning("kubernetes endpoints: %s", e)

    async def remove(self) -> None:
        """On shutdown: drop this address from the endpoints now, not after the lease TTL."""
        try:
            await self.etcd.delete(self.PREFIX + self.address)
            if self.lease_id:
                await self.etcd.lease_revoke(self.lease_id)
            await write_kubernetes_endpoints(self.storage, self.kinds, await self.addresses(),
                                             self.port)  # this key is gone from them
        except Exception as e:  # noqa: BLE001 - best effort; the lease expires anyway
            log.warning("removing this API server from the kubernetes endpoints: %s", e)


def _ip_order(address: str):
    try:
        return (0, ipaddress.ip_address(address))
    except ValueError:
        return (1, address)
