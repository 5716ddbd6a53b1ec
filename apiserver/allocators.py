"""ClusterIP and NodePort allocation, shared by every API server through the store: each
allocated IP or port is a key created with a txn on "key absent", so concurrent creates (even
on different API servers) never hand out the same one."""

from __future__ import annotations

import ipaddress
import random

from kubelab.etcdclient import EtcdError
from proto.etcdserverpb import rpc_pb2 as pb

from . import errors
from .errors import Cause
from .kinds import get_path

IP_PREFIX = "/registry/ranges/serviceips/"
PORT_PREFIX = "/registry/ranges/servicenodeports/"


class Allocators:
    def __init__(self, etcd, cidr: str = "10.96.0.0/16", node_ports: str = "30000-32767"):
        self.etcd = etcd
        self.net = ipaddress.ip_network(cidr)
        lo, _, hi = node_ports.partition("-")
        self.port_lo, self.port_hi = int(lo), int(hi)

    def reserved_ip(self, offset: int) -> str:
        return str(self.net.network_address + offset)

    async def _claim(self, key: str, owner: str) -> bool:
        try:
            resp = await self.etcd.txn(
                [pb.Compare(key=key.encode(), target=pb.Compare.CREATE, result=pb.Compare.EQUAL,
                            create_revision=0)],
                [pb.RequestOp(request_put=pb.PutRequest(key=key.encode(), value=owner.encode()))])
        except EtcdError as e:
            raise errors.store_unavailable(e.message) from None
        return resp.succeeded

    async def _release(self, key: str) -> None:
        try:
            await self.etcd.delete(key)
        except EtcdError:
            pass

    async def allocate_ip(self, owner: str, requested: str | None, name: str) -> str:
        if requested:
            try:
                ip = ipaddress.ip_address(requested)
            except ValueError:
                raise errors.invalid("Service", name, [Cause(
                    "spec.clusterIPs[0]", f'Invalid value: "{requested}": must be a valid IP '
                    f'address')]) from None
            if ip not in self.net:
                raise errors.invalid("Service", name, [Cause(
                    "spec.clusterIPs", f'Invalid value: []string{{"{requested}"}}: failed to '
                    f'allocate IP {requested}: the provided IP ({requested}) is not in the valid '
                    f'range. The range of valid IPs is {self.net}')])
            if not await self._claim(IP_PREFIX + requested, owner):
                raise errors.invalid("Service", name, [Cause(
                    "spec.clusterIPs", f'Invalid value: []string{{"{requested}"}}: failed to '
                    f'allocate IP {requested}: provided IP is already allocated')])
            return requested
        size = self.net.num_addresses
        for _ in range(200):
            # skip the network address, .1 (kubernetes) and .10 (cluster DNS) unless requested
            off = random.randrange(11, size - 1)
            cand = str(self.net.network_address + off)
            if await self._claim(IP_PREFIX + cand, owner):
                return cand
        raise errors.StatusError(500, "InternalError", "Internal error occurred: failed to "
                                 "allocate a serviceIP: range is full")

    async def allocate_port(self, owner: str, requested: int | None, name: str,
                            field: str) -> int:
        if requested:
            if not self.port_lo <= requested <= self.port_hi:
                raise errors.invalid("Service", name, [Cause(
                    field, f"Invalid value: {requested}: provided port is not in the valid "
                    f"range. The range of valid ports is {self.port_lo}-{self.port_hi}")])
            if not await self._claim(PORT_PREFIX + str(requested), owner):
                raise errors.invalid("Service", name, [Cause(
                    field, f"Invalid value: {requested}: provided port is already allocated")])
            return requested
        for _ in range(500):
            cand = random.randint(self.port_lo, self.port_hi)
            if await self._claim(PORT_PREFIX + str(cand), owner):
                return cand
        raise errors.StatusError(500, "InternalError", "Internal error occurred: failed to "
                                 "allocate a nodePort: range is full")

    # ------------------------------------------------------------------ Service hooks
    def _owner(self, svc: dict) -> str:
        md = svc["metadata"]
        return f"{md.get('namespace')}/{md['name']}"

    async def service_before_create(self, storage, svc: dict) -> None:
        await self._allocate(svc, None)

    async def service_before_update(self, storage, svc: dict, old: dict) -> None:
        await self._allocate(svc, old)
        # release what the update dropped
        old_ips = set(get_path(old, ("spec", "clusterIPs"), []) or [])
        new_ips = set(get_path(svc, ("spec", "clusterIPs"), []) or [])
        for ip in old_ips - new_ips:
            if ip != "None":
                await self._release(IP_PREFIX + ip)
        old_ports = {p.get("nodePort") for p in get_path(old, ("spec", "ports"), []) or []}
        new_ports = {p.get("nodePort") for p in get_path(svc, ("spec", "ports"), []) or []}
        for port in old_ports - new_ports:
            if port:
                await self._release(PORT_PREFIX + str(port))

    async def service_after_delete(self, storage, svc: dict) -> None:
        for ip in get_path(svc, ("spec", "clusterIPs"), []) or []:
            if ip and ip != "None":
                await self._release(IP_PREFIX + ip)
        for p in get_path(svc, ("spec", "ports"), []) or []:
            if p.get("nodePort"):
                await self._release(PORT_PREFIX + str(p["nodePort"]))

    async def _allocate(self, svc: dict, old: dict | None) -> None:
        spec = svc.setdefault("spec", {})
        name = svc["metadata"]["name"]
        owner = self._owner(svc)
        typ = spec.get("type", "ClusterIP")
        if typ == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
            for p in spec.get("ports") or []:
                p.pop("nodePort", None)
            return
        old_spec = (old or {}).get("spec", {})
        claimed: list[str] = []
        try:
            ip = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
            if old is not None and old_spec.get("clusterIP") and old_spec.get("type") != \
                    "ExternalName":
                ip = old_spec["clusterIP"]  # keeps its IP (immutability is validated)
                spec["clusterIP"] = ip
            elif ip != "None":
                ip = await self.allocate_ip(owner, ip or None, name)
                claimed.append(IP_PREFIX + ip)
                spec["clusterIP"] = ip
            spec["clusterIPs"] = [spec["clusterIP"]]
            old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                         for p in old_spec.get("ports") or []}
            for i, p in enumerate(spec.get("ports") or []):
                if typ not in ("NodePort", "LoadBalancer"):
                    p.pop("nodePort", None)
                    continue
                if old is not None:
                    kept = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
                    if kept and (not p.get("nodePort") or p.get("nodePort") == kept):
                        p["nodePort"] = kept
                        continue
                port = await self.allocate_port(owner, p.get("nodePort"), name,
                                                f"spec.ports[{i}].nodePort")
                claimed.append(PORT_PREFIX + str(port))
                p["nodePort"] = port
        except errors.StatusError:
            for key in claimed:  # roll back a partial allocation
                await self._release(key)
            raise
