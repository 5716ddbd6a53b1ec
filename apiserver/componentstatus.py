"""v1 ComponentStatus: `kubectl get componentstatuses` (`cs`). Deprecated since Kubernetes 1.19
but still served by kube-apiserver 1.32, and still in tutorials.

kube-apiserver probes the scheduler's and the controller manager's /healthz on its own machine
and every etcd server. In kubelab they run on machines of their own, so instead the scheduler
and the controller manager are healthy while their leader Lease in kube-system is renewed (a
leader that stopped renewing is what "unhealthy" means for them), and every store endpoint
(etcd-0, etcd-1, … in --etcd-servers order, as kube-apiserver names them) answers a status
call."""

from __future__ import annotations

import asyncio
import datetime

from .errors import StatusError
from .kinds import Registry

# kube-apiserver's deprecation warning (the Warning header kubectl prints)
WARNING = '299 - "v1 ComponentStatus is deprecated in v1.19+"'
LEADERS = (("scheduler", "kube-scheduler"), ("controller-manager", "kube-controller-manager"))


def component_status(name: str, healthy: bool, message: str = "", error: str = "") -> dict:
    cond = {"type": "Healthy", "status": "True" if healthy else "False"}
    if message:
        cond["message"] = message
    if error:
        cond["error"] = error
    return {"kind": "ComponentStatus", "apiVersion": "v1",
            "metadata": {"name": name, "creationTimestamp": None}, "conditions": [cond]}


def lease_health(name: str, lease_name: str, lease: dict | None,
                 now: datetime.datetime) -> dict:
    """Healthy while the component's leader Lease was renewed within its duration."""
    if lease is None:
        return component_status(name, False, error=f"no {lease_name} Lease in kube-system: "
                                                    "the component has never run")
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    try:
        renewed = datetime.datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00"))
        duration = float(spec.get("leaseDurationSeconds") or 15)
    except (KeyError, TypeError, ValueError, AttributeError):
        return component_status(name, False, error=f"the {lease_name} Lease has no renewTime")
    age = (now - renewed).total_seconds()
    if not holder or age > duration:
        return component_status(name, False, error=f"no leader: the {lease_name} Lease was "
                                                    f"last renewed {age:.0f}s ago (duration "
                                                    f"{duration:.0f}s)")
    return component_status(name, True, "ok")


async def statuses(storage, kinds: Registry, timeout: float = 2.0) -> list[dict]:
    lease_kind = kinds.by_kind("coordination.k8s.io", "v1", "Lease")
    now = datetime.datetime.now(datetime.UTC)
    out = []
    for name, lease_name in LEADERS:
        try:
            lease = await storage.get_or_none(lease_kind, "kube-system", lease_name)
            out.append(lease_health(name, lease_name, lease, now))
        except StatusError as e:
            out.append(component_status(name, False, error=e.message))

    async def probe(i: int, endpoint: str) -> dict:
        try:
            st = await asyncio.wait_for(storage.etcd.status(endpoint), timeout)
            if not st.leader:  # etcd's /health: {"health":"false","reason":"RAFT NO LEADER"}
                return component_status(f"etcd-{i}", False,
                                        error=f"store member {endpoint}: no leader")
            return component_status(f"etcd-{i}", True, "ok")
        except Exception as e:  # noqa: BLE001 - any failure is the answer
            why = getattr(e, "message", "") or str(e) or type(e).__name__
            return component_status(f"etcd-{i}", False,
                                    error=f"store member {endpoint}: {why}")
    out += await asyncio.gather(*(probe(i, ep) for i, ep in enumerate(storage.etcd.endpoints)))
    return out


def table(items: list[dict], rev: str = "") -> dict:
    """What kube-apiserver's table printer shows for ComponentStatus."""
    cols = [("Name", "string", "name"), ("Status", "string", ""), ("Message", "string", ""),
            ("Error", "string", "")]
    rows = []
    for o in items:
        c = o["conditions"][0]
        rows.append({"cells": [o["metadata"]["name"],
                               "Healthy" if c["status"] == "True" else "Unhealthy",
                               c.get("message", ""), c.get("error", "")],
                     "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                "metadata": o["metadata"]}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rev},
            "columnDefinitions": [{"name": n, "type": t, "format": f, "description": "",
                                   "priority": 0} for n, t, f in cols],
            "rows": rows}
