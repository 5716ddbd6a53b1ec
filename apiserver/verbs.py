"""The write verbs shared by both front ends (REST and gRPC): create, update, patch (merge,
JSON, strategic, server-side apply) and delete, with managedFields bookkeeping."""

from __future__ import annotations

import re
from typing import Any

import yaml

from . import errors
from .kinds import Kind, get_path, now_rfc3339
from .kinds.common import json_copy
from .storage import Storage


def check_body_kind(kind: Kind, obj: Any) -> dict:
    if not isinstance(obj, dict):
        raise errors.bad_request("the body of the request was not a valid object (expected "
                                 f"a JSON object for {kind.kind})")
    av, k = obj.get("apiVersion"), obj.get("kind")
    if av and av != kind.api_version:
        raise errors.bad_request(f"the API version in the data ({av}) does not match the "
                                 f"expected API version ({kind.api_version})")
    if k and k != kind.kind:
        raise errors.bad_request(f"the kind in the data ({k}) does not match the expected kind "
                                 f"({kind.kind})")
    return obj


def decode_check(kind: Kind, obj: dict, validation: str | None) -> dict:
    """What Kubernetes' typed decoding does to a request body: wrong value types are a 400;
    fields the type does not have are dropped, or a 400 with fieldValidation=Strict."""
    from . import k8sproto
    obj.setdefault("apiVersion", kind.api_version)
    obj.setdefault("kind", kind.kind)
    try:
        unknown = k8sproto.check_fields(obj)
    except k8sproto.ProtobufError as e:
        raise errors.bad_request(f'{kind.kind} in version "{kind.version}" cannot be handled '
                                 f'as a {kind.kind}: {e}') from None
    if unknown:
        if (validation or "").lower() == "strict":
            raise errors.bad_request("strict decoding error: " + ", ".join(
                f'unknown field "{u}"' for u in unknown))
        for path in sorted(unknown, key=len, reverse=True):
            _drop(obj, path)
    return obj


_PATH_TOKEN = re.compile(r"\.?([^.\[]+)|\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]")


def _drop(obj: Any, path: str) -> None:
    """Remove the field at a check_fields path like spec.containers[0].foo or data['k'].x."""
    steps: list = []
    for name, index, key in _PATH_TOKEN.findall(path):
        steps.append(int(index) if index else (key if key else name))
    cur = obj
    for st in steps[:-1]:
        try:
            cur = cur[st]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(cur, dict):
        cur.pop(steps[-1], None)


def record_manager(obj: dict, manager: str, operation: str, fields: dict | None = None) -> None:
    """Record `manager` in obj's managedFields, owning the fields of `fields` (an applied
    configuration) or, by default, of obj itself."""
    if not isinstance(obj.get("metadata"), dict):
        return
    src = obj if fields is None else fields
    entry = {"manager": manager, "operation": operation,
             "apiVersion": src.get("apiVersion", ""), "time": now_rfc3339(),
             "fieldsType": "FieldsV1", "fieldsV1": fields_v1(src)}
    mf = [m for m in obj["metadata"].get("managedFields") or []
          if isinstance(m, dict) and not (m.get("manager") == manager and
                                          m.get("operation") == operation)]
    obj["metadata"]["managedFields"] = mf + [entry]


async def create(storage: Storage, kind: Kind, namespace: str | None, body: Any, *,
                 manager: str, dry_run: bool = False, validation: str | None = None) -> dict:
    body = decode_check(kind, check_body_kind(kind, body), validation)
    if namespace is None and kind.namespaced:
        namespace = (body.get("metadata") or {}).get("namespace") or "default"
    record_manager(body, manager, "Update")
    return await storage.create(kind, body, dry_run=dry_run, namespace=namespace)


async def update(storage: Storage, kind: Kind, namespace: str | None, name: str, body: Any, *,
                 manager: str, subresource: str | None = None,
                 dry_run: bool = False, validation: str | None = None) -> tuple[dict, bool]:
    body = decode_check(kind, check_body_kind(kind, body), validation)
    if subresource is None:
        record_manager(body, manager, "Update")
    return await storage.update(kind, namespace, name, body, subresource=subresource,
                                dry_run=dry_run)


PATCH_TYPES = ("application/merge-patch+json", "application/json-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")


async def patch(storage: Storage, kind: Kind, namespace: str | None, name: str, ctype: str,
                raw: bytes, *, manager: str | None, subresource: str | None = None,
                dry_run: bool = False, validation: str | None = None) -> dict:
    from .patch import PatchError, apply_patch
    if ctype == "application/apply-patch+yaml":
        return await server_side_apply(storage, kind, namespace, name, raw, manager=manager,
                                       subresource=subresource, dry_run=dry_run,
                                       validation=validation)
    if ctype not in PATCH_TYPES:
        raise errors.unsupported_media_type(ctype)

    def mutate(current: dict) -> dict:
        try:
            new = apply_patch(current, raw, ctype, kind.kind)
        except PatchError as e:
            raise errors.bad_request(e.message) from None
        if not isinstance(new, dict):
            raise errors.bad_request("the patch did not produce an object")
        new = decode_check(kind, new, validation)
        if subresource is None and manager:
            record_manager(new, manager, "Update")
        return new

    return await storage.guaranteed_update(kind, namespace, name, mutate,
                                           subresource=subresource, dry_run=dry_run)


async def server_side_apply(storage: Storage, kind: Kind, namespace: str | None, name: str,
                            raw: bytes, *, manager: str | None, subresource: str | None = None,
                            dry_run: bool = False, validation: str | None = None) -> dict:
    """Create-or-update from an applied configuration. Fields this manager applied before and
    no longer applies are removed; the manager is recorded in managedFields (operation Apply).
    Conflicts with other managers are not detected (a simplification of Kubernetes' SSA)."""
    from .patch import strategic_merge_patch
    try:
        applied = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise errors.bad_request(f"error decoding YAML: {e}") from None
    applied = decode_check(kind, check_body_kind(kind, applied), validation)
    if not manager:
        raise errors.bad_request("PATCH requests with apply content type require a fieldManager "
                                 "query parameter")
    md = applied.get("metadata") or {}
    if md.get("name") and md["name"] != name:
        raise errors.bad_request(f"the name of the object ({md['name']}) does not match the name "
                                 f"on the URL ({name})")

    def create() -> dict:
        obj = json_copy(applied)
        obj.setdefault("metadata", {})["name"] = name
        record_manager(obj, manager, "Apply", applied)
        return obj

    def mutate(current: dict) -> dict:
        prev = _applied_fields(current, manager)
        new = strategic_merge_patch(current, _strip_meta(applied), kind.kind)
        for path in prev - _paths(applied):
            _delete_path(new, path)
        record_manager(new, manager, "Apply", applied)
        return new

    return await storage.guaranteed_update(kind, namespace, name, mutate, subresource=subresource,
                                           dry_run=dry_run, create=create)


def parse_delete_options(opts: dict) -> dict:
    pol = opts.get("propagationPolicy")
    if opts.get("orphanDependents") is True and not pol:
        opts["propagationPolicy"] = pol = "Orphan"
    if pol not in (None, "Orphan", "Background", "Foreground"):
        raise errors.bad_request(f'propagationPolicy: Unsupported value: "{pol}": supported '
                                 'values: "Foreground", "Background", "Orphan"')
    gp = opts.get("gracePeriodSeconds")
    if gp is not None and (not isinstance(gp, int) or isinstance(gp, bool)):
        raise errors.bad_request("gracePeriodSeconds must be an integer")
    return opts


async def delete(storage: Storage, kind: Kind, namespace: str | None, name: str,
                 opts: dict) -> tuple[dict, bool]:
    opts = parse_delete_options(opts)
    return await storage.delete(kind, namespace, name,
                                grace_period=opts.get("gracePeriodSeconds"),
                                propagation=opts.get("propagationPolicy"),
                                preconditions=opts.get("preconditions"),
                                dry_run="All" in (opts.get("dryRun") or []))


def fields_v1(obj: Any) -> dict:
    """A FieldsV1-shaped set of the fields present in obj (maps as f:<name>)."""
    if not isinstance(obj, dict):
        return {}
    out: dict = {}
    for k, v in obj.items():
        if k in ("apiVersion", "kind"):
            continue
        if k == "metadata" and isinstance(v, dict):
            v = {kk: vv for kk, vv in v.items() if kk in ("labels", "annotations",
                                                           "finalizers", "ownerReferences")}
            if not v:
                continue
        out[f"f:{k}"] = fields_v1(v) if isinstance(v, dict) else {}
    return out


def _paths(obj: Any, prefix: tuple = ()) -> set[tuple]:
    out: set[tuple] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("apiVersion", "kind") and not prefix:
                continue
            p = prefix + (k,)
            out.add(p)
            if isinstance(v, dict):
                out |= _paths(v, p)
    return out


def _applied_fields(obj: dict, manager: str) -> set[tuple]:
    for m in (obj.get("metadata") or {}).get("managedFields") or []:
        if m.get("manager") == manager and m.get("operation") == "Apply":
            return _fields_paths(m.get("fieldsV1") or {})
    return set()


def _fields_paths(f: dict, prefix: tuple = ()) -> set[tuple]:
    out: set[tuple] = set()
    for k, v in f.items():
        if not k.startswith("f:"):
            continue
        p = prefix + (k[2:],)
        out.add(p)
        if isinstance(v, dict):
            out |= _fields_paths(v, p)
    return out


def _delete_path(obj: dict, path: tuple) -> None:
    if path[:1] == ("metadata",) and (len(path) < 2 or path[1] not in ("labels", "annotations")):
        return
    parent = get_path(obj, path[:-1]) if len(path) > 1 else obj
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def _strip_meta(applied: dict) -> dict:
    out = json_copy(applied)
    md = out.get("metadata") or {}
    for f in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
        md.pop(f, None)
    return out



async def bind(storage: Storage, kind: Kind, namespace: str | None, name: str,
               binding: Any) -> dict:
    """pods/binding: set spec.nodeName once; a pod being deleted or already bound is a 409."""
    node = ((binding or {}).get("target") or {}).get("name") if isinstance(binding, dict) \
        else None
    if not node:
        raise errors.invalid("Binding", name, [errors.Cause("target.name", "Required value")])

    def mutate(pod: dict) -> dict:
        if pod["metadata"].get("deletionTimestamp"):
            raise errors.conflict("pods", name, "", "pod is being deleted")
        if get_path(pod, ("spec", "nodeName")):
            raise errors.conflict("pods/binding", name, "", f"pod {name} is already assigned "
                                  f"to node \"{pod['spec']['nodeName']}\"")
        pod["spec"]["nodeName"] = node
        return pod

    return await storage.guaranteed_update(kind, namespace, name, mutate)
