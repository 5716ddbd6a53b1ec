"""The namespace controller: a Namespace being deleted (deletionTimestamp set; the API server
keeps it, phase Terminating, while spec.finalizers holds "kubernetes") is emptied — every
object of every namespaced kind in it is deleted — and once nothing is left, "kubernetes" is
removed from spec.finalizers through the namespaces/finalize subresource, after which the
API server deletes the Namespace. Progress is reported in status.conditions with
Kubernetes' condition types (NamespaceContentRemaining, NamespaceFinalizersRemaining, ...)."""

from __future__ import annotations

import asyncio
import copy
import datetime
import time

from kubelab.client import BUILTIN, APIError, Resource

from .base import Controller

FINALIZER = "kubernetes"
CONDITION_TYPES = ("NamespaceDeletionDiscoveryFailure",
                   "NamespaceDeletionGroupVersionParsingFailure",
                   "NamespaceDeletionContentFailure", "NamespaceContentRemaining",
                   "NamespaceFinalizersRemaining")
_OK = {
    "NamespaceDeletionDiscoveryFailure": ("ResourcesDiscovered",
                                          "All resources successfully discovered"),
    "NamespaceDeletionGroupVersionParsingFailure": ("ParsedGroupVersions",
                                                    "All legacy kube types successfully parsed"),
    "NamespaceDeletionContentFailure": ("ContentDeleted", ("All content successfully deleted, "
                                                           "may be waiting on finalization")),
    "NamespaceContentRemaining": ("ContentRemoved", "All content successfully removed"),
    "NamespaceFinalizersRemaining": ("ContentHasNoFinalizers",
                                     "All content-preserving finalizers finished"),
}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def needs_cleanup(ns: dict | None) -> bool:
    """A namespace the controller must empty and finalize."""
    if ns is None or not ns["metadata"].get("deletionTimestamp"):
        return False
    return FINALIZER in ((ns.get("spec") or {}).get("finalizers") or [])


def qualified(r: Resource) -> str:
    return f"{r.resource}.{r.group}"


def summarize(content: dict[str, list[dict]]) -> tuple[dict[str, int], dict[str, int]]:
    """({qualified resource: objects left}, {finalizer: objects holding it}) for the objects
    still in a namespace, by qualified resource name."""
    remaining: dict[str, int] = {}
    finalizers: dict[str, int] = {}
    for res, items in content.items():
        if items:
            remaining[res] = len(items)
        for o in items:
            for f in o.get("metadata", {}).get("finalizers") or []:
                finalizers[f] = finalizers.get(f, 0) + 1
    return remaining, finalizers


def namespace_conditions(remaining: dict[str, int], finalizers: dict[str, int],
                         failures: list[str], discovery_failed: str = "") -> list[dict]:
    """The status conditions Kubernetes' namespace deleter reports (without timestamps)."""
    bad: dict[str, tuple[str, str]] = {}
    if discovery_failed:
        bad["NamespaceDeletionDiscoveryFailure"] = (
            "DiscoveryFailed", f"Discovery failed for some groups, {discovery_failed}")
    if failures:
        bad["NamespaceDeletionContentFailure"] = ("ContentDeletionFailed",
                                                  "Failed to delete all resource types, "
                                                  f"{len(failures)} remaining: "
                                                  + ", ".join(sorted(failures)))
    if remaining:
        bad["NamespaceContentRemaining"] = (
            "SomeResourcesRemain", "Some resources are remaining: " +
            ", ".join(f"{r} has {n} resource instances" for r, n in sorted(remaining.items())))
    if finalizers:
        bad["NamespaceFinalizersRemaining"] = (
            "SomeFinalizersRemain", "Some content in the namespace has finalizers remaining: " +
            ", ".join(f"{f} in {n} resource instances" for f, n in sorted(finalizers.items())))
    out = []
    for t in CONDITION_TYPES:
        if t in bad:
            out.append({"type": t, "status": "True", "reason": bad[t][0], "message": bad[t][1]})
        else:
            out.append({"type": t, "status": "False", "reason": _OK[t][0],
                        "message": _OK[t][1]})
    return out


def merge_conditions(old: list[dict] | None, new: list[dict], now: str) -> list[dict]:
    """New conditions keeping lastTransitionTime where the status did not change."""
    prev = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        p = prev.get(c["type"])
        c = dict(c)
        if p is not None and p.get("status") == c["status"] and p.get("lastTransitionTime"):
            c["lastTransitionTime"] = p["lastTransitionTime"]
        else:
            c["lastTransitionTime"] = now
        out.append(c)
    return out


def _strip_times(conds: list[dict] | None) -> list[dict]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conds or []]


class NamespaceController(Controller):
    name = "namespace"
    workers = 2
    resync_delay = 0.5  # how soon to look again at a namespace with content left
    resources_ttl = 60.0

    def setup(self) -> None:
        self.namespaces = self.informers.informer("Namespace")
        self.namespaces.add_handler(self._on_namespace)
        self._resources: list[Resource] = []
        self._resources_at = 0.0

    def _on_namespace(self, event: str, new: dict, old: dict | None) -> None:
        if event != "DELETED" and needs_cleanup(new):
            self.queue.add(new["metadata"]["name"])

    async def namespaced_resources(self) -> tuple[list[Resource], str]:
        """Every namespaced kind the API server serves (its Resources RPC; the client's
        built-in table if that fails), and a discovery problem if any."""
        if self._resources and time.monotonic() - self._resources_at < self.resources_ttl:
            return self._resources, ""
        problem = ""
        try:
            rows = await self.client.resources()
            res = [Resource(r["group"], r["version"], r["resource"], True, r["kind"])
                   for r in rows if r.get("namespaced")]
        except Exception as e:  # noqa: BLE001 - fall back to the built-in kinds
            problem = str(e)
            res = [Resource(g, v, r, True, k) for k, (g, v, r, nsd) in BUILTIN.items() if nsd]
        if not problem:
            self._resources, self._resources_at = res, time.monotonic()
        return res, problem

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.get(None, key)
        if not needs_cleanup(ns):
            return
        resources, problem = await self.namespaced_resources()
        failures: list[str] = []
        results = await asyncio.gather(*(self._empty(r, key, failures) for r in resources))
        content = {qualified(r): left for r, left in zip(resources, results) if left is not None}
        remaining, finalizers = summarize(content)
        await self._report(key, namespace_conditions(remaining, finalizers, failures, problem))
        if remaining or failures or problem:
            self.queue.add_after(key, self.resync_delay)
            return
        await self._finalize(key)

    async def _empty(self, r: Resource, ns: str, failures: list[str]) -> list[dict] | None:
        """Delete every object of resource r in namespace ns; the objects still there (None
        if r cannot be listed)."""
        try:
            items = (await self.client.list(r, ns)).get("items") or []
        except APIError as e:
            if e.code not in (404, 405):
                failures.append(qualified(r))
            return None

        async def delete(o: dict) -> dict | None:
            md = o.get("metadata", {})
            if md.get("deletionTimestamp"):
                return o
            try:
                _, gone = await self.client.delete(r, ns, md["name"],
                                                   preconditions={"uid": md.get("uid")})
                return None if gone else o
            except APIError as e:
                if e.not_found or e.conflict:
                    return None
                failures.append(qualified(r))
                return o
        left = await asyncio.gather(*(delete(o) for o in items))
        return [o for o in left if o is not None]

    async def _report(self, name: str, conditions: list[dict]) -> None:
        ns = self.namespaces.get(None, name)
        if ns is None or _strip_times((ns.get("status") or {}).get("conditions")) == \
                _strip_times(conditions):
            return
        obj = copy.deepcopy(ns)
        status = obj.setdefault("status", {})
        status["conditions"] = merge_conditions(status.get("conditions"), conditions, _now())
        try:
            await self.client.update_status("Namespace", obj)
        except APIError as e:
            if not (e.conflict or e.not_found):
                raise  # a stale cache only delays the report

    async def _finalize(self, name: str) -> None:
        try:
            ns = await self.client.get("Namespace", None, name)
        except APIError as e:
            if e.not_found:
                return
            raise
        fins = [f for f in (ns.get("spec") or {}).get("finalizers") or [] if f != FINALIZER]
        ns.setdefault("spec", {})["finalizers"] = fins
        try:
            await self.client.update("Namespace", ns, subresource="finalize")
        except APIError as e:
            if not e.not_found:
                raise
