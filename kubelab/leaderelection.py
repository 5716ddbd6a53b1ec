"""Leader election through a coordination.k8s.io/v1 Lease (client-go's leaderelection):
candidates compete to hold the Lease; the holder renews it every retry period and stops
leading if it cannot renew within the renew deadline; others take over once the lease has not
been renewed for a lease duration. Timings default to Kubernetes' (15 s / 10 s / 2 s), scaled
by the cluster time scale."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Awaitable, Callable

from . import timescale
from .client import APIError, ClusterClient

log = logging.getLogger("kubelab.leaderelection")


def _micro(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_micro(s: str | None) -> float:
    if not s:
        return 0.0
    s = s.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in s else "%Y-%m-%dT%H:%M:%S"
    return datetime.datetime.strptime(s, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()


class LeaderElector:
    def __init__(self, client: ClusterClient, name: str, identity: str,
                 namespace: str = "kube-system", lease_duration: float = 15.0,
                 renew_deadline: float = 10.0, retry_period: float = 2.0):
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = timescale.scaled(lease_duration)
        self.renew_deadline = timescale.scaled(renew_deadline)
        self.retry_period = timescale.scaled(retry_period)
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0

    def _lease_body(self, now: float, transitions: int, acquire: float) -> dict:
        return {"holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, int(round(self.lease_duration))),
                "acquireTime": _micro(acquire), "renewTime": _micro(now),
                "leaseTransitions": transitions}

    async def _try_acquire_or_renew(self) -> bool:
        now = time.time()
        lease = await self.client.get_or_none("Lease", self.namespace, self.name)
        if lease is None:
            obj = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": self.name, "namespace": self.namespace},
                   "spec": self._lease_body(now, 0, now)}
            try:
                await self.client.create("Lease", obj, self.namespace)
                return True
            except APIError as e:
                if e.conflict:
                    return False
                raise
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        renew = spec.get("renewTime") or ""
        if self._observed != (holder, renew):
            self._observed = (holder, renew)
            self._observed_at = time.monotonic()  # judge expiry by our own clock
        if holder and holder != self.identity and \
                time.monotonic() < self._observed_at + self.lease_duration:
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        acquire = _parse_micro(spec.get("acquireTime")) or now
        if holder != self.identity:
            transitions += 1
            acquire = now
        lease["spec"] = self._lease_body(now, transitions, acquire)
        try:
            await self.client.update("Lease", lease)  # CAS on resourceVersion
        except APIError as e:
            if e.conflict:
                return False
            raise
        return True

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Block until leading, run `lead` while leading; return when leadership is lost
        (callers exit the process, as Kubernetes components do)."""
        while True:
            try:
                if await self._try_acquire_or_renew():
                    break
            except APIError as e:
                log.info("leader election %s: %s", self.name, e)
            await asyncio.sleep(self.retry_period)
        log.info("%s became leader of %s", self.identity, self.name)
        self.leading.set()
        task = asyncio.create_task(lead())
        last_renew = time.monotonic()
        try:
            while not task.done():
                await asyncio.sleep(self.retry_period)
                try:
                    if await self._try_acquire_or_renew():
                        last_renew = time.monotonic()
                        continue
                except APIError as e:
                    log.info("lease renewal failed: %s", e)
                if time.monotonic() - last_renew > self.renew_deadline:
                    log.warning("%s lost leadership of %s", self.identity, self.name)
                    break
        finally:
            self.leading.clear()
            self.lost.set()
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
