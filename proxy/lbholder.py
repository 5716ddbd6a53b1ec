"""LoadBalancer IP holding, like MetalLB's layer-2 mode: every external IP in a Service's
status.loadBalancer.ingress (assigned from the pool by controllers/servicelb.py) is held by
exactly one live worker, elected through a Lease per IP (kube-system/`lb-<ip>`). When the
holder dies its Lease expires and another worker's proxy takes the IP over.

Holding an IP means: in loopback mode (every 127.x address is local) listening on it — the
service table only gives this worker listeners on the IPs it holds; in bridge mode also adding
the address to the node's interface and announcing it with a gratuitous ARP (arping, when
installed)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from collections.abc import Callable, Iterable

from kubelab.client import APIError, ClusterClient
from kubelab.leaderelection import LeaderElector

from .servicetable import lb_ingress_ips

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-system"


def lease_name(ip: str) -> str:
    return "lb-" + ip.replace(":", "-").lower()


def wanted_ips(services: Iterable[dict], pool: set[str] | None = None) -> set[str]:
    """The LoadBalancer ingress IPs of the Services (within the pool, when one is given)."""
    out: set[str] = set()
    for svc in services:
        spec = svc.get("spec") or {}
        if spec.get("type") != "LoadBalancer" or (svc.get("metadata") or {}).get(
                "deletionTimestamp"):
            continue
        for ip in lb_ingress_ips(svc):
            if not pool or ip in pool:
                out.add(ip)
    return out


def interface_of(ip: str) -> str | None:
    """The interface holding `ip` (from `ip -o addr show`)."""
    try:
        out = subprocess.run(["ip", "-o", "addr", "show"], check=False, capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[3].split("/")[0] == ip:
            return parts[1].rstrip(":").split("@")[0]
    return None


class LBHolder:
    def __init__(self, client: ClusterClient, node_name: str, *, network: str = "loopback",
                 node_ip: str = "", pool: Iterable[str] = (),
                 on_change: Callable[[], None] | None = None,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0) -> None:
        self.client = client
        self.identity = node_name
        self.network = network
        self.node_ip = node_ip
        self.pool = set(pool)
        self.on_change = on_change
        self.timings = (lease_duration, renew_deadline, retry_period)
        self.held: set[str] = set()
        self._tasks: dict[str, asyncio.Task] = {}
        self._iface: str | None = None

    # -------------------------------------------------------------- desired set of IPs
    def sync(self, services: Iterable[dict]) -> None:
        """Compete for every wanted IP, stop competing for (and give up) the others."""
        want = wanted_ips(services, self.pool)
        for ip in want - set(self._tasks):
            self._tasks[ip] = asyncio.get_running_loop().create_task(
                self._compete(ip), name=f"lb-holder-{ip}")
        for ip in set(self._tasks) - want:
            task = self._tasks.pop(ip)
            task.cancel()
            asyncio.get_running_loop().create_task(self._give_up(ip, task, delete=True))

    async def stop(self) -> None:
        """Give every held IP back (the Lease is released so another worker takes over at
        once instead of after the lease duration)."""
        tasks = list(self._tasks.items())
        self._tasks.clear()
        for _, t in tasks:
            t.cancel()
        await asyncio.gather(*(self._give_up(ip, t, delete=False) for ip, t in tasks),
                             return_exceptions=True)

    # ------------------------------------------------------------------- election
    async def _compete(self, ip: str) -> None:
        ld, rd, rp = self.timings
        while True:
            elector = LeaderElector(self.client, lease_name(ip), self.identity,
                                    namespace=LEASE_NAMESPACE, lease_duration=ld,
                                    renew_deadline=rd, retry_period=rp)

            async def lead(ip: str = ip) -> None:
                self._take(ip)
                try:
                    await asyncio.Event().wait()
                finally:
                    self._drop(ip)

            try:
                await elector.run(lead)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep competing
                log.info("lb holder %s: %s", ip, e)
            await asyncio.sleep(elector.retry_period)

    async def _give_up(self, ip: str, task: asyncio.Task, delete: bool) -> None:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as e:  # noqa: BLE001 - the task is gone either way
            log.debug("lb holder %s ended: %r", ip, e)
        self._drop(ip)
        try:
            lease = await self.client.get_or_none("Lease", LEASE_NAMESPACE, lease_name(ip))
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            if delete:
                await self.client.delete("Lease", LEASE_NAMESPACE, lease_name(ip))
            else:
                lease["spec"]["holderIdentity"] = ""
                await self.client.update("Lease", lease)
        except APIError as e:
            log.debug("releasing lease for %s: %s", ip, e)

    # ------------------------------------------------------------- holding an address
    def _take(self, ip: str) -> None:
        log.info("%s now holds LoadBalancer IP %s", self.identity, ip)
        if self.network != "loopback":
            self._add_address(ip)
        self.held.add(ip)
        if self.on_change:
            self.on_change()

    def _drop(self, ip: str) -> None:
        if ip not in self.held:
            return
        log.info("%s gives up LoadBalancer IP %s", self.identity, ip)
        self.held.discard(ip)
        if self.network != "loopback":
            self._del_address(ip)
        if self.on_change:
            self.on_change()

    def _iface_name(self) -> str | None:
        if self._iface is None and self.node_ip:
            self._iface = interface_of(self.node_ip)
        return self._iface

    def _add_address(self, ip: str) -> None:
        iface = self._iface_name()
        if iface is None:
            log.warning("no interface holds node IP %s; cannot add %s", self.node_ip, ip)
            return
        subprocess.run(["ip", "addr", "replace", f"{ip}/32", "dev", iface],
                       check=False, capture_output=True, timeout=5)
        if shutil.which("arping"):
            subprocess.Popen(["arping", "-U", "-c", "1", "-I", iface, ip],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _del_address(self, ip: str) -> None:
        iface = self._iface_name()
        if iface is not None:
            subprocess.run(["ip", "addr", "del", f"{ip}/32", "dev", iface],
                           check=False, capture_output=True, timeout=5)
