"""The garbage collector: ownerReferences cascades, as Kubernetes' garbage collector does them.

- Background: a dependent whose owners are all gone (absent, or present under another uid: a
  recreated owner with the same name is a different owner) is deleted; a dependent with
  another live owner stays, with the dangling references removed.
- Foreground: an owner with a deletionTimestamp and the `foregroundDeletion` finalizer has its
  dependents deleted first (dependents that have dependents themselves are deleted in the
  foreground too); once no dependent with blockOwnerDeletion is left the finalizer is
  removed and the API server deletes the owner.
- Orphan: an owner with the `orphan` finalizer has its reference removed from every dependent,
  then the finalizer is removed.

The dependency graph is an index over the informer caches: owner uid -> dependents. Owners
missing from the caches are looked up live before anything is deleted."""

from __future__ import annotations

from kubelab.client import BUILTIN, APIError, Resource

from .base import Controller

WATCHED = ("Pod", "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob",
           "ControllerRevision", "PersistentVolumeClaim", "Service", "EndpointSlice",
           "ReplicationController", "ConfigMap", "Secret", "Node", "Lease")
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"

Key = tuple  # (kind, namespace or "", name)

SOLID, DANGLING, WAITING = "solid", "dangling", "waiting"


def refs(obj: dict) -> list[dict]:
    return [r for r in (obj.get("metadata") or {}).get("ownerReferences") or []
            if isinstance(r, dict) and r.get("uid")]


def finalizers(obj: dict) -> list[str]:
    return list((obj.get("metadata") or {}).get("finalizers") or [])


def is_deleting_dependents(obj: dict) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp")) and FOREGROUND in finalizers(obj)


def owner_state(owner: dict | None, ref: dict) -> str:
    """SOLID, DANGLING (gone, or a different object under that name) or WAITING (being
    deleted in the foreground)."""
    if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
        return DANGLING
    return WAITING if is_deleting_dependents(owner) else SOLID


def decide(item: dict, states: list[tuple[dict, str]], has_dependents: bool) -> tuple:
    """attemptToDeleteItem's decision for a dependent, given the state of each owner:
    ("keep",), ("remove_refs", [uid...]) or ("delete", propagationPolicy)."""
    solid = [r for r, s in states if s == SOLID]
    dangling = [r for r, s in states if s == DANGLING]
    waiting = [r for r, s in states if s == WAITING]
    if solid:
        if not dangling and not waiting:
            return ("keep",)
        return ("remove_refs", [r["uid"] for r in dangling + waiting])
    if waiting and has_dependents:
        return ("delete", "Foreground")
    fins = finalizers(item)
    if ORPHAN in fins:
        return ("delete", "Orphan")
    if FOREGROUND in fins:
        return ("delete", "Foreground")
    return ("delete", "Background")


def blocking_dependents(owner: dict, dependents: list[dict]) -> list[dict]:
    uid = owner["metadata"].get("uid")
    return [d for d in dependents
            if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in refs(d))]


def resource_for(ref: dict) -> Resource | None:
    """The resource of an owner reference, if it is a kind this cluster knows."""
    kind = ref.get("kind")
    if kind not in BUILTIN:
        return None
    group = BUILTIN[kind][0]
    api_version = ref.get("apiVersion") or ""
    ref_group = api_version.split("/")[0] if "/" in api_version else ""
    if ref_group != group:
        return None
    return Resource.of(kind)


class GarbageCollector(Controller):
    name = "garbagecollector"
    workers = 4

    def setup(self) -> None:
        self.watched = {k: self.informers.informer(k) for k in WATCHED}
        self.dependents: dict[str, set[Key]] = {}  # owner uid -> dependents
        self.owners_of: dict[Key, set[str]] = {}  # dependent -> owner uids
        for kind, inf in self.watched.items():
            inf.add_handler(self._handler(kind))

    # ------------------------------------------------------------------ graph
    @staticmethod
    def key(kind: str, obj: dict) -> Key:
        md = obj["metadata"]
        return (kind, md.get("namespace") or "", md["name"])

    def _handler(self, kind: str):
        def on_event(event: str, new: dict, old: dict | None) -> None:
            k = self.key(kind, new)
            for uid in self.owners_of.pop(k, set()):
                deps = self.dependents.get(uid)
                if deps is not None:
                    deps.discard(k)
                    if not deps:
                        self.dependents.pop(uid, None)
            if event == "DELETED":
                # owners waiting on it may finish; its own dependents may now be dangling
                for r in refs(new):
                    self._enqueue_uid_owner(new, r)
                for dep in list(self.dependents.get(new["metadata"].get("uid", ""), ())):
                    self.queue.add(dep)
                return
            uids = {r["uid"] for r in refs(new)}
            if uids:
                self.owners_of[k] = uids
                for uid in uids:
                    self.dependents.setdefault(uid, set()).add(k)
            old_uids = {r["uid"] for r in refs(old)} if old else set()
            if uids or (new["metadata"].get("deletionTimestamp") and
                        {FOREGROUND, ORPHAN} & set(finalizers(new))):
                self.queue.add(k)
            # an owner in foreground deletion re-checks when a dependent changes or lets go
            for r in refs(new) + (refs(old) if old else []):
                if r["uid"] in old_uids - uids or new["metadata"].get("deletionTimestamp"):
                    self._enqueue_uid_owner(new, r)
        return on_event

    def _enqueue_uid_owner(self, dependent: dict, ref: dict) -> None:
        r = resource_for(ref)
        if r is None or ref.get("kind") not in self.watched:
            return
        ns = dependent["metadata"].get("namespace") or "" if r.namespaced else ""
        self.queue.add((ref["kind"], ns, ref["name"]))

    def _cached(self, key: Key) -> dict | None:
        kind, ns, name = key
        inf = self.watched.get(kind)
        return inf.get(ns or None, name) if inf else None

    def dependents_of(self, owner: dict) -> list[tuple[Key, dict]]:
        uid = owner["metadata"].get("uid")
        out = []
        for k in sorted(self.dependents.get(uid, ())):
            d = self._cached(k)
            if d is not None and any(r["uid"] == uid for r in refs(d)):
                out.append((k, d))
        return out

    async def _owner(self, dependent: dict, ref: dict) -> str:
        r = resource_for(ref)
        if r is None:
            return SOLID  # a kind we cannot look up: never delete on its account
        dep_ns = dependent["metadata"].get("namespace")
        if r.namespaced and not dep_ns:
            return SOLID  # invalid reference from a cluster-scoped object; leave it
        ns = dep_ns if r.namespaced else None
        cached = self.watched[r.kind].get(ns, ref["name"]) if r.kind in self.watched else None
        if cached is not None and cached["metadata"].get("uid") == ref["uid"]:
            return owner_state(cached, ref)
        # absent (or different) in the cache: the cache may be behind; ask the API server
        live = await self.client.get_or_none(r, ns, ref["name"])
        return owner_state(live, ref)

    # ------------------------------------------------------------------ reconcile
    async def reconcile(self, key: Key) -> None:
        kind = key[0]
        obj = self._cached(key)
        if obj is None:
            return
        md = obj["metadata"]
        if md.get("deletionTimestamp"):
            fins = finalizers(obj)
            if ORPHAN in fins:
                await self._orphan(kind, obj)
            elif FOREGROUND in fins:
                await self._foreground(kind, obj)
            return
        if refs(obj):
            await self._attempt_delete(kind, obj)

    async def _attempt_delete(self, kind: str, obj: dict) -> None:
        states = [(r, await self._owner(obj, r)) for r in refs(obj)]
        has_deps = bool(self.dependents_of(obj))
        action = decide(obj, states, has_deps)
        md = obj["metadata"]
        if action[0] == "keep":
            return
        if action[0] == "remove_refs":
            await self._set_refs(kind, obj, [r for r in refs(obj) if r["uid"] not in action[1]])
            return
        self.log.info("deleting %s %s/%s (owners gone or deleting; propagation %s)", kind,
                      md.get("namespace", ""), md["name"], action[1])
        try:
            await self.client.delete(kind, md.get("namespace"), md["name"],
                                     propagation=action[1],
                                     preconditions={"uid": md.get("uid")})
        except APIError as e:
            if not (e.not_found or e.conflict):
                raise

    async def _foreground(self, kind: str, owner: dict) -> None:
        deps = self.dependents_of(owner)
        # every dependent goes; only those with blockOwnerDeletion hold the owner back
        for k, _ in deps:
            self.queue.add(k)
        if blocking_dependents(owner, [d for _, d in deps]):
            return
        await self._set_finalizers(kind, owner, [f for f in finalizers(owner)
                                                 if f != FOREGROUND])

    async def _orphan(self, kind: str, owner: dict) -> None:
        uid = owner["metadata"]["uid"]
        for (dkind, _, _), d in self.dependents_of(owner):
            await self._set_refs(dkind, d, [r for r in refs(d) if r["uid"] != uid])
        await self._set_finalizers(kind, owner, [f for f in finalizers(owner) if f != ORPHAN])

    async def _set_refs(self, kind: str, obj: dict, new_refs: list[dict]) -> None:
        md = obj["metadata"]
        try:
            await self.client.patch(kind, md.get("namespace"), md["name"], {
                "metadata": {"resourceVersion": md.get("resourceVersion"),
                             "ownerReferences": new_refs or None}})
        except APIError as e:
            if not e.not_found:
                raise

    async def _set_finalizers(self, kind: str, obj: dict, fins: list[str]) -> None:
        md = obj["metadata"]
        try:
            await self.client.patch(kind, md.get("namespace"), md["name"], {
                "metadata": {"resourceVersion": md.get("resourceVersion"),
                             "finalizers": fins or None}})
        except APIError as e:
            if not e.not_found:
                raise
