"""The registry: Kubernetes object semantics over the etcd v3 API.

Key `/registry/<plural>/<namespace>/<name>`, value the object as JSON; resourceVersion is the
key's mod revision. Create is a txn on "key absent", update a compare-and-swap on the mod
revision (409 Conflict when stale), delete a CAS too. Both front ends (REST and gRPC) call this
class, so they share validation, defaulting, admission and errors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import string
import uuid
from typing import Any, Awaitable, Callable

import grpc

from kubelab import fastjson
from kubelab.etcdclient import EtcdClient, EtcdError, prefix_end
from kubelab.selectors import (
    FieldRequirement,
    Selector,
    SelectorError,
    fields_match,
    parse_field_selector,
    parse_label_selector,
)
from proto.etcdserverpb import rpc_pb2 as pb

from . import errors
from .errors import Cause, StatusError
from .kinds import Kind, Registry, get_path, now_rfc3339
from .kinds.common import json_copy, object_meta
from .watchcache import Expired, Subscriber, WatchCache, decode

log = logging.getLogger("apiserver.storage")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _store_error(e: EtcdError) -> StatusError:
    if e.unavailable:
        return errors.store_unavailable(e.message)
    if e.code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in e.message:
        return errors.gone("The resourceVersion for the provided list is too old.")
    return errors.internal(e.message)


class ListResult:
    def __init__(self, items: list[dict], rev: int, cont: str = "", remaining: int | None = None):
        self.items = items
        self.rev = rev
        self.cont = cont
        self.remaining = remaining


# kube-apiserver's watch cache indexes pods by node: every node agent watches its own pods
WATCH_INDEXES = {"pods": "spec.nodeName"}


def _matcher(kind: Kind, namespace: str | None, labels: Selector,
             fields: list[FieldRequirement]) -> Callable[[dict], bool]:
    if not labels.requirements and not labels.nothing and not fields and not namespace:
        return lambda obj: True

    def match(obj: dict) -> bool:
        md = obj.get("metadata", {})
        if namespace and kind.namespaced and md.get("namespace") != namespace:
            return False
        if not labels.matches(md.get("labels")):
            return False
        return not fields or fields_match(fields, kind.fields(obj))
    return match


def _generate_suffix() -> str:
    # Kubernetes' utilrand: consonants and digits, no vowels (avoid words)
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


def _spec_view(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Storage:
    def __init__(self, etcd: EtcdClient, kinds: Registry):
        self.etcd = etcd
        self.kinds = kinds
        self.caches: dict[str, WatchCache] = {}
        self.admission: list[Callable[[str, Kind, dict, dict | None], Awaitable[None]]] = []

    async def start(self) -> None:
        for k in self.kinds.kinds:
            if "watch" in k.verbs:
                c = WatchCache(self.etcd, k, index_field=WATCH_INDEXES.get(k.plural))
                c.start()
                self.caches[k.plural] = c

    async def stop(self) -> None:
        for c in self.caches.values():
            await c.stop()

    async def ensure_system_namespaces(self) -> None:
        ns_kind = self.kinds.by_kind("", "v1", "Namespace")
        for name in SYSTEM_NAMESPACES:
            try:
                await self.create(ns_kind, {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": name}})
            except StatusError as e:
                if e.code != 409:
                    raise

    # ------------------------------------------------------------------ reads
    async def _range(self, key: str, end: str = "", **kw) -> pb.RangeResponse:
        try:
            return await self.etcd.range(key.encode(), end.encode() if end else b"", **kw)
        except EtcdError as e:
            raise _store_error(e) from None

    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict:
        resp = await self._range(kind.key(namespace, name))
        if not resp.kvs:
            raise errors.not_found(kind.plural, name, kind.group)
        kv = resp.kvs[0]
        return self._decorate(kind, decode(kv.value, kv.mod_revision))

    async def get_or_none(self, kind: Kind, namespace: str | None, name: str) -> dict | None:
        try:
            return await self.get(kind, namespace, name)
        except StatusError as e:
            if e.code == 404:
                return None
            raise

    def cached(self, kind: Kind, namespace: str | None, name: str) -> dict | None:
        """The watch cache's copy of an object (may trail the store slightly), or None."""
        cache = self.caches.get(kind.plural)
        if cache is None or not cache.ready.is_set():
            return None
        obj = cache.objects.get(kind.key(namespace, name))
        return json_copy(obj) if obj is not None else None

    def _decorate(self, kind: Kind, obj: dict) -> dict:
        obj.setdefault("apiVersion", kind.api_version)
        obj.setdefault("kind", kind.kind)
        return obj

    def parse_selectors(self, label_selector: str | None, field_selector: str | None,
                        kind: Kind) -> tuple[Selector, list[FieldRequirement]]:
        try:
            labels = parse_label_selector(label_selector)
        except SelectorError as e:
            raise errors.bad_request(str(e)) from None
        try:
            fields = parse_field_selector(field_selector)
        except SelectorError as e:
            raise errors.bad_request(str(e)) from None
        if fields:
            known = set(kind.fields({"metadata": {}}).keys()) | \
                set(kind.fields(_FieldProbe()).keys())
            for f in fields:
                if f.field not in known:
                    raise errors.bad_request(
                        f'field label not supported: {f.field}')
        return labels, fields

    async def list(self, kind: Kind, namespace: str | None, *, label_selector: str | None = None,
                   field_selector: str | None = None, limit: int = 0, cont: str | None = None,
                   resource_version: str | None = None) -> ListResult:
        labels, fields = self.parse_selectors(label_selector, field_selector, kind)
        match = _matcher(kind, namespace, labels, fields)
        prefix = kind.prefix(namespace)
        cache = self.caches.get(kind.plural)
        # resourceVersion "0" (any): serve from the watch cache, as kube-apiserver does
        if resource_version == "0" and not cont and cache is not None and cache.ready.is_set():
            items = [json_copy(o) for k, o in sorted(cache.objects.items())
                     if k.startswith(prefix) and match(o)]
            return ListResult([self._decorate(kind, o) for o in items], cache.rev)
        start = prefix
        rev = 0
        if cont:
            try:
                tok = json.loads(base64.urlsafe_b64decode(cont.encode() + b"=="))
                rev, start = int(tok["rv"]), tok["start"]
            except Exception:  # noqa: BLE001
                raise errors.bad_request("invalid continue token") from None
            if not start.startswith(prefix):
                raise errors.bad_request("continue key is not valid for this list")
        end = prefix_end(prefix.encode()).decode()
        items: list[dict] = []
        chunk = max(limit * 2, 100) if limit else 0
        next_start = None
        while True:
            try:
                resp = await self._range(start, end, revision=rev, limit=chunk)
            except StatusError as e:
                if e.code == 410:
                    raise errors.gone(
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue "
                        "parameter.") from None
                raise
            if not rev:
                rev = resp.header.revision
            for kv in resp.kvs:
                if limit and len(items) >= limit:
                    next_start = kv.key.decode()
                    break
                obj = decode(kv.value, kv.mod_revision)
                if match(obj):
                    items.append(self._decorate(kind, obj))
            if next_start or not resp.more:
                break
            start = resp.kvs[-1].key.decode() + "\0"
        token = ""
        if next_start:
            token = base64.urlsafe_b64encode(json.dumps(
                {"rv": rev, "start": next_start}).encode()).decode().rstrip("=")
        return ListResult(items, rev, token)

    # ------------------------------------------------------------------ writes
    def _common_validate(self, kind: Kind, obj: dict, old: dict | None) -> list[Cause]:
        causes = kind.validate(obj, old) if kind.validate else object_meta(obj, kind.namespaced)
        return causes

    def _check(self, kind: Kind, obj: dict, old: dict | None) -> None:
        causes = self._common_validate(kind, obj, old)
        if causes:
            name = obj.get("metadata", {}).get("name") or \
                obj.get("metadata", {}).get("generateName", "")
            raise errors.invalid(kind.kind, name, causes, kind.group)

    async def _namespace_ok(self, kind: Kind, namespace: str, name: str = "") -> None:
        if not kind.namespaced:
            return
        ns_kind = self.kinds.by_kind("", "v1", "Namespace")
        # the namespace lister (watch cache) first, as kube-apiserver's admission does; a miss
        # (e.g. a namespace created a moment ago) is confirmed with a read from the store
        ns = self.cached(ns_kind, None, namespace)
        if ns is None:
            ns = await self.get_or_none(ns_kind, None, namespace)
        if ns is None:
            raise errors.not_found("namespaces", namespace)
        if ns.get("metadata", {}).get("deletionTimestamp") or \
                ns.get("status", {}).get("phase") == "Terminating":
            raise StatusError(403, "Forbidden",
                              f'{kind.qualified} "{name}" is forbidden: unable to create new '
                              f'content in namespace {namespace} because it is being terminated',
                              {"name": name, "kind": kind.plural, "causes": [
                                  {"reason": "NamespaceTerminating",
                                   "message": f"namespace {namespace} is being terminated",
                                   "field": "metadata.namespace"}]})

    async def create(self, kind: Kind, obj: dict, *, dry_run: bool = False,
                     namespace: str | None = None) -> dict:
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
            raise errors.bad_request("the body of the request is not a valid object")
        obj = json_copy(obj)
        md = obj.setdefault("metadata", {})
        obj["apiVersion"] = kind.api_version
        obj["kind"] = kind.kind
        if kind.namespaced:
            ns = namespace or md.get("namespace") or "default"
            if md.get("namespace") and namespace and md["namespace"] != namespace:
                raise errors.bad_request("the namespace of the provided object does not match "
                                         "the namespace sent on the request")
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
            ns = None
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"][:58] + _generate_suffix()
        for f in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "selfLink"):
            md.pop(f, None)
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now_rfc3339()
        if kind.has_generation:
            md["generation"] = 1
        if kind.default:
            kind.default(obj)
        self._check(kind, obj, None)
        if ns is not None:
            await self._namespace_ok(kind, ns, md["name"])
        for adm in self.admission:
            await adm("create", kind, obj, None)
        if kind.before_create:
            await kind.before_create(self, obj)
        if dry_run:
            return obj
        key = kind.key(ns, md["name"])
        try:
            resp = await self.etcd.txn(
                [pb.Compare(key=key.encode(), target=pb.Compare.CREATE,
                            result=pb.Compare.EQUAL, create_revision=0)],
                [pb.RequestOp(request_put=pb.PutRequest(key=key.encode(),
                                                        value=self._encode(obj)))])
        except EtcdError as e:
            raise _store_error(e) from None
        if not resp.succeeded:
            if kind.after_delete:  # give back what before_create allocated
                await kind.after_delete(self, obj)
            raise errors.already_exists(kind.plural, md["name"], kind.group)
        md["resourceVersion"] = str(resp.header.revision)
        return obj

    def _encode(self, obj: dict) -> bytes:
        md = obj.get("metadata", {})
        rv = md.pop("resourceVersion", None)
        try:
            return fastjson.dumps(obj)
        finally:
            if rv is not None:
                md["resourceVersion"] = rv

    async def _cas(self, kind: Kind, key: str, obj: dict, mod_rev: int) -> int:
        try:
            resp = await self.etcd.txn(
                [pb.Compare(key=key.encode(), target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                            mod_revision=mod_rev)],
                [pb.RequestOp(request_put=pb.PutRequest(key=key.encode(),
                                                        value=self._encode(obj)))])
        except EtcdError as e:
            raise _store_error(e) from None
        if not resp.succeeded:
            raise errors.conflict(kind.plural, obj["metadata"]["name"], kind.group)
        return resp.header.revision

    async def _cas_delete(self, kind: Kind, key: str, name: str, mod_rev: int) -> int:
        try:
            resp = await self.etcd.txn(
                [pb.Compare(key=key.encode(), target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                            mod_revision=mod_rev)],
                [pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key.encode()))])
        except EtcdError as e:
            raise _store_error(e) from None
        if not resp.succeeded:
            raise errors.conflict(kind.plural, name, kind.group)
        return resp.header.revision

    def _prepare_update(self, kind: Kind, new: dict, old: dict, subresource: str | None) -> dict:
        new = json_copy(new)
        md = new.setdefault("metadata", {})
        omd = old["metadata"]
        if md.get("uid") and md["uid"] != omd.get("uid"):
            raise errors.invalid(kind.kind, omd["name"], [Cause(
                "metadata.uid", f'Invalid value: "{md["uid"]}": field is immutable')],
                kind.group)
        new["apiVersion"] = kind.api_version
        new["kind"] = kind.kind
        # server-owned metadata cannot be changed by clients
        for f in ("uid", "creationTimestamp", "namespace", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "generation"):
            if f in omd:
                md[f] = omd[f]
            else:
                md.pop(f, None)
        md["name"] = omd["name"]
        if subresource == "status":
            # only status changes through /status; everything else is the stored object's
            keep = {k: v for k, v in new.items() if k == "status"}
            new = json_copy(old)
            new.pop("status", None)
            new.update(keep)
            new["metadata"]["resourceVersion"] = md.get("resourceVersion",
                                                        omd.get("resourceVersion"))
        elif "status" in kind.subresources:
            # the main resource ignores status changes (they go through /status)
            if "status" in old:
                new["status"] = json_copy(old["status"])
            else:
                new.pop("status", None)
        if kind.default:
            kind.default(new)
        if kind.has_generation and subresource != "status" and \
                _spec_view(new) != _spec_view(old):
            new["metadata"]["generation"] = int(omd.get("generation", 1)) + 1
        return new

    async def update(self, kind: Kind, namespace: str | None, name: str, obj: dict, *,
                     subresource: str | None = None, dry_run: bool = False,
                     create_if_missing: bool = False) -> tuple[dict, bool]:
        """PUT semantics. Returns (object, created)."""
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request is not a valid object")
        md = obj.get("metadata") or {}
        if md.get("name") and md["name"] != name:
            raise errors.bad_request(f'the name of the object ({md["name"]}) does not match '
                                     f'the name on the URL ({name})')
        if kind.namespaced and md.get("namespace") and namespace and \
                md["namespace"] != namespace:
            raise errors.bad_request("the namespace of the provided object does not match the "
                                     "namespace sent on the request")
        key = kind.key(namespace, name)
        want_rv = md.get("resourceVersion")
        cached = self.cached(kind, namespace, name)
        if want_rv and cached is not None and cached["metadata"]["resourceVersion"] == \
                str(want_rv):
            # the CAS on the mod revision makes the cached copy as good as a fresh read
            return await self._write_update(kind, key, obj, cached, int(want_rv), subresource,
                                            dry_run), False
        resp = await self._range(key)
        if not resp.kvs:
            if create_if_missing and subresource is None:
                obj = dict(obj, metadata=dict(md, name=name))
                return await self.create(kind, obj, dry_run=dry_run, namespace=namespace), True
            raise errors.not_found(kind.plural, name, kind.group)
        kv = resp.kvs[0]
        old = decode(kv.value, kv.mod_revision)
        if want_rv and str(want_rv) != str(kv.mod_revision):
            raise errors.conflict(kind.plural, name, kind.group)
        return await self._write_update(kind, key, obj, old, kv.mod_revision, subresource,
                                        dry_run), False

    async def _write_update(self, kind: Kind, key: str, obj: dict, old: dict, mod_rev: int,
                            subresource: str | None, dry_run: bool) -> dict:
        new = self._prepare_update(kind, obj, old, subresource)
        self._check(kind, new, old)
        for adm in self.admission:
            await adm("update", kind, new, old)
        if kind.before_update and subresource is None:
            await kind.before_update(self, new, old)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") \
                and (old["metadata"].get("finalizers") or kind.hold_on_delete) and \
                not (kind.hold_on_delete and kind.hold_on_delete(new)) and \
                not (kind.graceful_delete and
                     (new["metadata"].get("deletionGracePeriodSeconds") or 0) > 0):
            # the last finalizer was removed from an object being deleted: delete it now (a pod
            # still in its grace period stays until the node agent deletes it with grace 0)
            if not dry_run:
                rev = await self._cas_delete(kind, key, new["metadata"]["name"], mod_rev)
                new["metadata"]["resourceVersion"] = str(rev)
                if kind.after_delete:
                    await kind.after_delete(self, new)
            return new
        if _same(new, old):
            new["metadata"]["resourceVersion"] = str(mod_rev)
            return new  # no-op update: no new revision, as kube-apiserver
        if dry_run:
            return new
        rev = await self._cas(kind, key, new, mod_rev)
        new["metadata"]["resourceVersion"] = str(rev)
        return new

    async def guaranteed_update(self, kind: Kind, namespace: str | None, name: str,
                                mutate: Callable[[dict], dict], *, subresource: str | None = None,
                                dry_run: bool = False, retries: int = 20,
                                create: Callable[[], dict] | None = None) -> dict:
        """Read-modify-write with CAS, retried on conflict (patch semantics)."""
        key = kind.key(namespace, name)
        # kube-apiserver's GuaranteedUpdate: start from the cached object; the CAS catches a
        # stale copy, and later attempts read from the store
        cached = self.cached(kind, namespace, name)
        for attempt in range(retries):
            if attempt == 0 and cached is not None:
                old = self._decorate(kind, cached)
                mod_rev = int(old["metadata"]["resourceVersion"])
            else:
                resp = await self._range(key)
                if not resp.kvs:
                    if create is not None and subresource is None:
                        return await self.create(kind, create(), dry_run=dry_run,
                                                 namespace=namespace)
                    raise errors.not_found(kind.plural, name, kind.group)
                kv = resp.kvs[0]
                mod_rev = kv.mod_revision
                old = self._decorate(kind, decode(kv.value, kv.mod_revision))
            new = mutate(json_copy(old))
            want_rv = (new.get("metadata") or {}).get("resourceVersion")
            if want_rv and str(want_rv) != str(mod_rev):
                if attempt == 0 and cached is not None:
                    continue  # the cache may simply be behind: read the store
                raise errors.conflict(kind.plural, name, kind.group)
            try:
                return await self._write_update(kind, key, new, old, mod_rev,
                                                subresource, dry_run)
            except StatusError as e:
                # lost a race: read again and re-apply (a resourceVersion the mutation itself
                # asked for is checked against the fresh copy on the next attempt)
                if e.code == 409 and e.reason == "Conflict":
                    await asyncio.sleep(random.uniform(0, 0.01))
                    continue
                raise
        raise errors.conflict(kind.plural, name, kind.group)

    async def delete(self, kind: Kind, namespace: str | None, name: str, *,
                     grace_period: int | None = None, propagation: str | None = None,
                     preconditions: dict | None = None, dry_run: bool = False) -> tuple[dict, bool]:
        """Returns (object, gone_now). Graceful deletion and finalizers keep the object with a
        deletionTimestamp; the node agent, garbage collector or finalizer owner finishes."""
        key = kind.key(namespace, name)
        for _ in range(20):
            resp = await self._range(key)
            if not resp.kvs:
                raise errors.not_found(kind.plural, name, kind.group)
            kv = resp.kvs[0]
            obj = self._decorate(kind, decode(kv.value, kv.mod_revision))
            md = obj["metadata"]
            if preconditions:
                if preconditions.get("uid") and preconditions["uid"] != md.get("uid"):
                    raise errors.conflict(
                        kind.plural, name, kind.group,
                        f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                        f"UID in object meta: {md.get('uid')}")
                if preconditions.get("resourceVersion") and \
                        str(preconditions["resourceVersion"]) != md["resourceVersion"]:
                    raise errors.conflict(
                        kind.plural, name, kind.group,
                        f"Precondition failed: ResourceVersion in precondition: "
                        f"{preconditions['resourceVersion']}, ResourceVersion in object meta: "
                        f"{md['resourceVersion']}")
            new = json_copy(obj)
            nmd = new["metadata"]
            finalizers = list(nmd.get("finalizers") or [])
            if propagation == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            elif propagation == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
            graceful = 0
            if kind.graceful_delete:
                spec_grace = get_path(obj, ("spec", "terminationGracePeriodSeconds"), 30)
                graceful = spec_grace if grace_period is None else grace_period
                # an unscheduled pod, or one already finished, goes at once
                if not get_path(obj, ("spec", "nodeName")) or \
                        get_path(obj, ("status", "phase")) in ("Succeeded", "Failed"):
                    graceful = 0
                if md.get("deletionTimestamp") and md.get("deletionGracePeriodSeconds") is not \
                        None and graceful >= md["deletionGracePeriodSeconds"] and graceful:
                    return obj, False  # already terminating with a shorter grace
            held = bool(kind.hold_on_delete and kind.hold_on_delete(new))
            if finalizers or graceful > 0 or held:
                nmd["finalizers"] = finalizers or nmd.get("finalizers")
                if not finalizers:
                    nmd.pop("finalizers", None)
                if not nmd.get("deletionTimestamp"):
                    nmd["deletionTimestamp"] = now_rfc3339()
                if kind.graceful_delete:
                    nmd["deletionGracePeriodSeconds"] = graceful
                elif "deletionGracePeriodSeconds" not in nmd:
                    nmd["deletionGracePeriodSeconds"] = 0
                if _same(new, obj):
                    return obj, False
                if dry_run:
                    return new, False
                try:
                    rev = await self._cas(kind, key, new, kv.mod_revision)
                except StatusError as e:
                    if e.code == 409:
                        continue
                    raise
                nmd["resourceVersion"] = str(rev)
                return new, False
            if dry_run:
                return obj, True
            try:
                rev = await self._cas_delete(kind, key, name, kv.mod_revision)
            except StatusError as e:
                if e.code == 409:
                    continue
                raise
            md["resourceVersion"] = str(rev)
            if kind.after_delete:
                await kind.after_delete(self, obj)
            return obj, True
        raise errors.conflict(kind.plural, name, kind.group)

    # ------------------------------------------------------------------ watch
    async def watch(self, kind: Kind, namespace: str | None, *, label_selector: str | None = None,
                    field_selector: str | None = None,
                    resource_version: str | None = None) -> tuple[Subscriber, list]:
        labels, fields = self.parse_selectors(label_selector, field_selector, kind)
        match = _matcher(kind, namespace, labels, fields)
        cache = self.caches.get(kind.plural)
        if cache is None:
            raise errors.method_not_allowed(f"watch is not supported on {kind.plural}")
        since: int | None = None
        if resource_version not in (None, "", "0"):
            try:
                since = int(resource_version)
            except ValueError:
                raise errors.bad_request(
                    f'invalid resource version "{resource_version}"') from None
        try:
            await asyncio.wait_for(cache.ready.wait(), 10)
        except asyncio.TimeoutError:
            raise errors.store_unavailable("watch cache is not ready") from None
        if since is None and resource_version != "0":
            # "" means: start from the latest state (quorum read semantics)
            try:
                resp = await self.etcd.range(b"health-probe", serializable=False, count_only=True)
                await cache.wait_for_rev(resp.header.revision)
            except EtcdError as e:
                raise _store_error(e) from None
        try:
            return cache.subscribe(match, since, index_value=next(
                (f.value for f in fields if f.field == cache.index_field and f.op == "="), None))
        except Expired as e:
            raise errors.gone(e.message) from None


def _same(a: dict, b: dict) -> bool:
    a2 = dict(a, metadata={k: v for k, v in a.get("metadata", {}).items()
                           if k != "resourceVersion"})
    b2 = dict(b, metadata={k: v for k, v in b.get("metadata", {}).items()
                           if k != "resourceVersion"})
    return a2 == b2


class _FieldProbe(dict):
    """A dict that answers every lookup, to discover a kind's field-selector names."""

    def get(self, key, default=None):
        return _FieldProbe()

    def __getitem__(self, key):
        return _FieldProbe()

    def __contains__(self, key):
        return True

    def __str__(self):
        return ""


_ = (string, Any)
