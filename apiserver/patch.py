"""PATCH bodies as kube-apiserver applies them: JSON patch (RFC 6902), JSON merge patch
(RFC 7386) and Kubernetes' strategic merge patch (apimachinery/pkg/util/strategicpatch).

A pure module: no I/O, inputs are never mutated, every result is a new object.

The strategic merge patch follows apimachinery's algorithm as the API server runs it
(MergeParallelList and IgnoreUnmatchedNulls on), including its ordering rules: merged lists keep
the patch's items in the patch's order and interleave the server-only items by their live
order, so an item that is new to a list lands before the server-only items that follow it
(`kubectl patch` adding an env var puts it first) unless `$setElementOrder` says otherwise.
Values the patch introduces are cleaned the way decoding into the typed object would clean
them: null fields and `$patch` directives never reach the result.

JSON patch follows gopkg.in/evanphx/json-patch.v4, which the API server uses, quirks and
messages included: `replace` of a missing object member sets it, `test` treats a missing
member as null, `copy` from a missing member copies null, and errors read like
`error in remove for path: '/x': Unable to remove nonexistent key: x: missing value`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import jsonpointer

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

MAX_JSON_PATCH_OPERATIONS = 10000


class PatchError(Exception):
    """A patch that cannot be applied. `code` is the HTTP status kube-apiserver answers with:
    400 for bodies it cannot decode or strategic patches it rejects, 422 for JSON patch
    operations that do not apply, 413 for too many operations, 415 for unknown patch types."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------------------------------------
# Patch metadata: the patchMergeKey / patchStrategy struct tags of k8s.io/api, as one table.
#
# PATCH_META[kind][path] = (merge key or None, strategy). A path names fields from the object's
# root, list elements skipped: ("spec", "template", "spec", "containers", "env"). Strategies
# are the tag values: "merge", "retainKeys", "merge,retainKeys", "replace". Paths not in the
# table are plain: maps merge, lists are replaced (atomic).
# ---------------------------------------------------------------------------------------------

Meta = tuple[str | None, str]
Path = tuple[str, ...]


def _at(prefix: Path, fragment: dict[Path, Meta]) -> dict[Path, Meta]:
    return {prefix + p: m for p, m in fragment.items()}


# metav1.ObjectMeta
_OBJECT_META: dict[Path, Meta] = {
    ("finalizers",): (None, "merge"),
    ("ownerReferences",): ("uid", "merge"),
}

# core/v1 Container (and EphemeralContainer); command, args, envFrom, resizePolicy are atomic
_CONTAINER: dict[Path, Meta] = {
    ("ports",): ("containerPort", "merge"),
    ("env",): ("name", "merge"),
    ("volumeMounts",): ("mountPath", "merge"),
    ("volumeDevices",): ("devicePath", "merge"),
}

# core/v1 PodSpec; tolerations, readinessGates, dnsConfig lists are atomic
_POD_SPEC: dict[Path, Meta] = {
    ("volumes",): ("name", "merge,retainKeys"),
    ("initContainers",): ("name", "merge"),
    ("containers",): ("name", "merge"),
    ("ephemeralContainers",): ("name", "merge"),
    ("imagePullSecrets",): ("name", "merge"),
    ("hostAliases",): ("ip", "merge"),
    ("topologySpreadConstraints",): ("topologyKey", "merge"),
    ("schedulingGates",): ("name", "merge"),
    ("resourceClaims",): ("name", "merge,retainKeys"),
    **_at(("initContainers",), _CONTAINER),
    **_at(("containers",), _CONTAINER),
    **_at(("ephemeralContainers",), _CONTAINER),
}

# core/v1 PodStatus; containerStatuses and friends are atomic
_POD_STATUS: dict[Path, Meta] = {
    ("conditions",): ("type", "merge"),
    ("podIPs",): ("ip", "merge"),
    ("hostIPs",): ("ip", "merge"),
    ("resourceClaimStatuses",): ("name", "merge,retainKeys"),
}

# core/v1 PodTemplateSpec
_POD_TEMPLATE: dict[Path, Meta] = {**_at(("metadata",), _OBJECT_META),
                                   **_at(("spec",), _POD_SPEC)}

_STATUS_CONDITIONS: dict[Path, Meta] = {("status", "conditions"): ("type", "merge")}

_KIND_FIELDS: dict[str, dict[Path, Meta]] = {
    # core/v1
    "Pod": {**_at(("spec",), _POD_SPEC), **_at(("status",), _POD_STATUS)},
    "PodTemplate": _at(("template",), _POD_TEMPLATE),
    "ReplicationController": {**_at(("spec", "template"), _POD_TEMPLATE),
                              **_STATUS_CONDITIONS},
    "Service": {("spec", "ports"): ("port", "merge"), **_STATUS_CONDITIONS},
    "Node": {("spec", "podCIDRs"): (None, "merge"),
             ("status", "conditions"): ("type", "merge"),
             ("status", "addresses"): ("type", "merge")},
    "Namespace": dict(_STATUS_CONDITIONS),
    "PersistentVolumeClaim": dict(_STATUS_CONDITIONS),
    "ServiceAccount": {("secrets",): ("name", "merge")},
    "ConfigMap": {}, "Secret": {}, "Endpoints": {}, "Event": {}, "LimitRange": {},
    "ResourceQuota": {}, "PersistentVolume": {},
    # apps/v1
    "Deployment": {**_at(("spec", "template"), _POD_TEMPLATE),
                   ("spec", "strategy"): (None, "retainKeys"), **_STATUS_CONDITIONS},
    "ReplicaSet": {**_at(("spec", "template"), _POD_TEMPLATE), **_STATUS_CONDITIONS},
    "StatefulSet": {**_at(("spec", "template"), _POD_TEMPLATE), **_STATUS_CONDITIONS},
    "DaemonSet": {**_at(("spec", "template"), _POD_TEMPLATE), **_STATUS_CONDITIONS},
    "ControllerRevision": {},
    # batch/v1
    "Job": {**_at(("spec", "template"), _POD_TEMPLATE), **_STATUS_CONDITIONS},
    "CronJob": {**_at(("spec", "jobTemplate", "metadata"), _OBJECT_META),
                **_at(("spec", "jobTemplate", "spec", "template"), _POD_TEMPLATE)},
    # autoscaling/v2, policy/v1
    "HorizontalPodAutoscaler": dict(_STATUS_CONDITIONS),
    "PodDisruptionBudget": dict(_STATUS_CONDITIONS),
    # networking, discovery, coordination, rbac, storage, scheduling, node
    "Ingress": {}, "IngressClass": {}, "NetworkPolicy": {}, "EndpointSlice": {}, "Lease": {},
    "Role": {}, "RoleBinding": {}, "ClusterRole": {}, "ClusterRoleBinding": {},
    "StorageClass": {}, "PriorityClass": {}, "RuntimeClass": {},
}

# Every kind's table, ObjectMeta included. Kinds not listed here (custom resources) get no
# table: lists are replaced, as in a JSON merge patch.
PATCH_META: dict[str, dict[Path, Meta]] = {
    kind: {**_at(("metadata",), _OBJECT_META), **fields} for kind, fields in _KIND_FIELDS.items()
}


# ---------------------------------------------------------------------------------------------
# Go-style rendering for error messages
# ---------------------------------------------------------------------------------------------

def _gofmt(v: Any) -> str:
    """fmt's %v of a decoded JSON value: map[k:v ...], [a b], <nil>."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_gofmt(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_gofmt(x) for x in v) + "]"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    return str(v)


def _go_json_type(v: Any) -> str:
    """The JSON type name encoding/json puts in `cannot unmarshal X into ...`."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    if isinstance(v, str):
        return "string"
    return "number"


def _no_merge_key(m: Any, key: str) -> PatchError:
    return PatchError(f"map: {_gofmt(m)} does not contain declared merge key: {key}")


# ---------------------------------------------------------------------------------------------
# JSON merge patch (RFC 7386)
# ---------------------------------------------------------------------------------------------

def json_merge_patch(obj: dict, patch) -> dict:
    """RFC 7386: null deletes, objects merge recursively, anything else replaces."""
    if patch is None:
        raise PatchError("Invalid JSON Patch")
    if not isinstance(patch, dict):
        raise PatchError("error decoding patch: json: cannot unmarshal "
                         f"{_go_json_type(patch)} into Go value of type map[string]interface {{}}")
    return _merge_patch(copy.deepcopy(obj) if isinstance(obj, dict) else {}, patch)


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = _merge_patch(target.get(k), v)
    return target


# ---------------------------------------------------------------------------------------------
# JSON patch (RFC 6902), as gopkg.in/evanphx/json-patch.v4 applies it
# ---------------------------------------------------------------------------------------------

_MISSING = "missing value"
_INVALID_INDEX = "invalid index referenced"


class _OpError(Exception):
    pass


def json_patch(obj: dict, ops: list) -> dict:
    """Apply RFC 6902 operations (add/remove/replace/move/copy/test) to a copy of obj."""
    if ops is None:  # a JSON null decodes to an empty patch
        ops = []
    if not isinstance(ops, list):
        raise PatchError(f"json: cannot unmarshal {_go_json_type(ops)} into Go value of type "
                         "jsonpatch.Patch")
    for op in ops:
        if not isinstance(op, dict):
            raise PatchError(f"json: cannot unmarshal {_go_json_type(op)} into Go value of type "
                             "jsonpatch.Operation")
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise PatchError(f"The allowed maximum operations in a JSON patch is "
                         f"{MAX_JSON_PATCH_OPERATIONS}, got {len(ops)}", 413)
    doc = copy.deepcopy(obj)
    for op in ops:
        try:
            doc = _apply_op(doc, op)
        except _OpError as e:
            raise PatchError(str(e), 422) from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
            raise PatchError(str(e), 422) from None
    if not isinstance(doc, dict):
        raise PatchError(f"json: cannot unmarshal {_go_json_type(doc)} into Go value of type "
                         "map[string]interface {}", 422)
    return doc


def _op_kind(op: dict) -> str:
    k = op.get("op")
    return k if isinstance(k, str) else "unknown"


def _op_str(op: dict, field: str, what: str) -> str:
    v = op.get(field)
    if v is None:
        raise _OpError(f"{what}: {_MISSING}")
    if not isinstance(v, str):
        raise _OpError(f"{what}: json: cannot unmarshal {_go_json_type(v)} into Go value of "
                       "type string")
    return v


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def _atoi(key: str) -> int:
    """strconv.Atoi, with its error text."""
    s = key[1:] if key[:1] in "+-" else key
    if not s or not s.isascii() or not s.isdigit():
        raise _OpError(f'strconv.Atoi: parsing "{key}": invalid syntax')
    return int(key)


def _array_index(arr: list, key: str) -> int:
    """partialArray.get's index rules (negative indices count from the end)."""
    idx = _atoi(key)
    if idx < 0:
        if idx < -len(arr):
            raise _OpError(f"Unable to access invalid index: {idx}: {_INVALID_INDEX}")
        idx += len(arr)
    if idx >= len(arr):
        raise _OpError(f"Unable to access invalid index: {idx}: {_INVALID_INDEX}")
    return idx


def _find(doc: Any, path: str):
    """findObject: the container holding path's last token, its JSON pointer parts and the
    token; None when path has no '/' or an intermediate value is missing or a scalar."""
    split = path.split("/")
    if len(split) < 2:
        return None
    cur = doc
    parts: list[str] = []
    for raw in split[1:-1]:
        part = _unescape(raw)
        if isinstance(cur, dict):
            if cur.get(part) is None:
                return None
            cur = cur[part]
            parts.append(part)
        elif isinstance(cur, list):
            try:
                idx = _array_index(cur, part)
            except _OpError:
                return None
            if cur[idx] is None:
                return None
            cur = cur[idx]
            parts.append(str(idx))
        else:
            return None
    if not isinstance(cur, (dict, list)):
        return None
    return cur, parts, _unescape(split[-1])


def _pointer(parts: list[str]) -> str:
    return jsonpointer.JsonPointer.from_parts(parts).path


def _lib(doc: Any, op: dict) -> Any:
    return jsonpatch.JsonPatch([op]).apply(doc, in_place=True)


def _get(con, key: str) -> Any:
    """container.get: a missing object member is nil (no error), a bad index is an error."""
    if isinstance(con, dict):
        return con.get(key)
    return con[_array_index(con, key)]


def _add(doc: Any, con, parts: list[str], key: str, value: Any) -> Any:
    if isinstance(con, dict):
        return _lib(doc, {"op": "add", "path": _pointer(parts + [key]), "value": value})
    if key == "-":
        idx = len(con)
    else:
        idx = _atoi(key)
        size = len(con) + 1
        if idx >= size:
            raise _OpError(f"Unable to access invalid index: {idx}: {_INVALID_INDEX}")
        if idx < 0:
            if idx < -size:
                raise _OpError(f"Unable to access invalid index: {idx}: {_INVALID_INDEX}")
            idx += size
    return _lib(doc, {"op": "add", "path": _pointer(parts + [str(idx)]), "value": value})


def _remove(doc: Any, con, parts: list[str], key: str) -> Any:
    if isinstance(con, dict):
        if key not in con:
            raise _OpError(f"Unable to remove nonexistent key: {key}: {_MISSING}")
        return _lib(doc, {"op": "remove", "path": _pointer(parts + [key])})
    idx = _array_index(con, key)
    return _lib(doc, {"op": "remove", "path": _pointer(parts + [str(idx)])})


def _apply_op(doc: Any, op: dict) -> Any:
    kind = _op_kind(op)
    value = copy.deepcopy(op.get("value"))
    if kind == "add":
        path = _op_str(op, "path", "add operation failed to decode path")
        found = _find(doc, path)
        if found is None:
            raise _OpError(f'add operation does not apply: doc is missing path: "{path}": '
                           f"{_MISSING}")
        try:
            return _add(doc, *found, value)
        except _OpError as e:
            raise _OpError(f"error in add for path: '{path}': {e}") from None
    if kind == "remove":
        path = _op_str(op, "path", "remove operation failed to decode path")
        found = _find(doc, path)
        if found is None:
            raise _OpError(f'remove operation does not apply: doc is missing path: "{path}": '
                           f"{_MISSING}")
        try:
            return _remove(doc, *found)
        except _OpError as e:
            raise _OpError(f"error in remove for path: '{path}': {e}") from None
    if kind == "replace":
        path = _op_str(op, "path", "replace operation failed to decode path")
        if path == "":
            if not isinstance(value, (dict, list)):
                raise _OpError("replace operation value must be object or array")
            return value
        found = _find(doc, path)
        if found is None:
            raise _OpError(f"replace operation does not apply: doc is missing path: {path}: "
                           f"{_MISSING}")
        con, parts, key = found
        if isinstance(con, dict):
            # json-patch v4 sets a missing member rather than failing
            return _lib(doc, {"op": "add", "path": _pointer(parts + [key]), "value": value})
        try:
            idx = _array_index(con, key)
        except _OpError:
            raise _OpError(f"replace operation does not apply: doc is missing key: {path}: "
                           f"{_MISSING}") from None
        return _lib(doc, {"op": "replace", "path": _pointer(parts + [str(idx)]),
                          "value": value})
    if kind == "move":
        frm = _op_str(op, "from", "move operation failed to decode from: operation, missing "
                                  "from field")
        found = _find(doc, frm)
        if found is None:
            raise _OpError(f"move operation does not apply: doc is missing from path: {frm}: "
                           f"{_MISSING}")
        con, parts, key = found
        try:
            val = copy.deepcopy(_get(con, key))
            doc = _remove(doc, con, parts, key)
        except _OpError as e:
            raise _OpError(f"error in move for path: '{key}': {e}") from None
        path = _op_str(op, "path", "move operation failed to decode path")
        found = _find(doc, path)
        if found is None:
            raise _OpError(f"move operation does not apply: doc is missing destination path: "
                           f"{path}: {_MISSING}")
        try:
            return _add(doc, *found, val)
        except _OpError as e:
            raise _OpError(f"error in move for path: '{path}': {e}") from None
    if kind == "copy":
        frm = _op_str(op, "from", "copy operation failed to decode from: operation, missing "
                                  "from field")
        found = _find(doc, frm)
        if found is None:
            raise _OpError(f"copy operation does not apply: doc is missing from path: {frm}: "
                           f"{_MISSING}")
        try:
            val = copy.deepcopy(_get(found[0], found[2]))
        except _OpError as e:
            raise _OpError(f"error in copy for from: '{frm}': {e}") from None
        path = _op_str(op, "path", "copy operation failed to decode path")
        found = _find(doc, path)
        if found is None:
            raise _OpError(f"copy operation does not apply: doc is missing destination path: "
                           f"{path}: {_MISSING}")
        try:
            return _add(doc, *found, val)
        except _OpError as e:
            raise _OpError(f"error in copy for path: '{path}': {e}") from None
    if kind == "test":
        path = _op_str(op, "path", "test operation failed to decode path")
        if path == "":
            actual = doc
        else:
            found = _find(doc, path)
            if found is None:
                raise _OpError(f"test operation does not apply: is missing path: {path}: "
                               f"{_MISSING}")
            try:
                actual = _get(found[0], found[2])
            except _OpError as e:
                raise _OpError(f"error in test for path: '{path}': {e}") from None
        if actual is None and value is None:
            return doc
        if actual is None or value is None or not _json_equal(actual, value):
            raise _OpError(f"testing value {path} failed: test failed")
        return doc
    raise _OpError(f"Unexpected kind: {kind}")


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers compare by value, but booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------------------------------------
# Strategic merge patch
# ---------------------------------------------------------------------------------------------

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVES = "$deleteFromPrimitiveList/"


def strategic_merge_patch(obj: dict, patch: dict, kind: str) -> dict:
    """Kubernetes' strategic merge patch of obj (an object of Kind `kind`)."""
    if patch is None:
        return copy.deepcopy(obj)
    if not isinstance(patch, dict):
        raise PatchError(f"json: cannot unmarshal {_go_json_type(patch)} into Go value of type "
                         "map[string]interface {}")
    merger = _Strategic(PATCH_META.get(kind))
    original = copy.deepcopy(obj) if isinstance(obj, dict) else {}
    return merger.merge_map(original, copy.deepcopy(patch), ())


def _patch_strategy(strategy: str) -> str:
    """extractRetainKeysPatchStrategy: the strategy with retainKeys taken out."""
    rest = [s for s in strategy.split(",") if s and s != "retainKeys"]
    return rest[0] if rest else ""


def _index(items: list, item: Any, key: str | None) -> int:
    """Where item sits in items: by merge key value for maps, by value for primitives."""
    if key:
        if not isinstance(item, dict) or key not in item:
            return -1
        for i, v in enumerate(items):
            if isinstance(v, dict) and key in v and v[key] == item[key]:
                return i
        return -1
    for i, v in enumerate(items):
        if _json_equal(v, item):
            return i
    return -1


def _merge_sorted(left: list, right: list, server_order: list, key: str | None) -> list:
    """mergeSortedSlice: interleave server-only items (left) into patch items (right), an item
    of left going first only when both are in the live list and it is in front there."""
    out = []
    i = j = 0
    while i < len(left) or j < len(right):
        if i >= len(left):
            out.append(right[j])
            j += 1
        elif j >= len(right):
            out.append(left[i])
            i += 1
        else:
            li = _index(server_order, left[i], key)
            ri = _index(server_order, right[j], key)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _normalize(merged: list, patch_order: list, server_order: list, key: str | None) -> list:
    """Partition merged into items named by patch_order and server-only items, sort each by its
    own order list and interleave them (partition*ByPresentInList + normalizeElementOrder)."""
    patch_items, server_only = [], []
    for v in merged:
        if key and (not isinstance(v, dict) or key not in v):
            raise _no_merge_key(v, key)
        (patch_items if _index(patch_order, v, key) >= 0 else server_only).append(v)
    patch_items.sort(key=lambda v: _index(patch_order, v, key))
    server_only.sort(key=lambda v: _index(server_order, v, key))
    return _merge_sorted(server_only, patch_items, server_order, key)


def _element_kind(*lists: list) -> str | None:
    """sliceElementType: 'map' or 'scalar'; None when all lists are empty."""
    kind = None
    for lst in lists:
        for v in lst:
            if isinstance(v, list):
                raise PatchError("lists of lists are not supported")
            k = "map" if isinstance(v, dict) else "scalar"
            if kind is None:
                kind = k
            elif kind != k:
                raise PatchError("list element types are not identical: "
                                 + _gofmt(list(lists)))
    return kind


class _Strategic:
    def __init__(self, table: dict[Path, Meta] | None):
        self.table = table or {}

    def meta(self, path: Path) -> Meta:
        return self.table.get(path, (None, ""))

    # -- values the patch introduces ------------------------------------------------------

    def fresh(self, value: Any, path: Path) -> Any:
        """A patch value with nothing under it in the live object: nulls dropped and
        directives resolved, as merging it into nothing would."""
        if isinstance(value, dict):
            return self.merge_map({}, value, path)
        if isinstance(value, list):
            out = []
            for v in value:
                if isinstance(v, dict):
                    if _DIRECTIVE in v:  # removeDirectives: nothing to delete or replace
                        continue
                    out.append(self.merge_map({}, v, path))
                else:
                    out.append(v)
            return out
        return value

    # -- maps -----------------------------------------------------------------------------

    def merge_map(self, original: dict, patch: dict, path: Path) -> dict:
        if _DIRECTIVE in patch:
            directive = patch.pop(_DIRECTIVE)
            if directive == "replace":
                return self.fresh(patch, path)
            if directive == "delete":
                return {}
            patch[_DIRECTIVE] = directive
            raise PatchError(f"unknown patch type: {_gofmt(directive)} in map: {_gofmt(patch)}")

        if _RETAIN_KEYS in patch:
            retain = patch.pop(_RETAIN_KEYS)
            if not isinstance(retain, list):
                raise PatchError("invalid patch format of retainKeys")
            keep = {k for k in retain if isinstance(k, str)}
            for k in [k for k in original if k not in keep]:
                del original[k]

        for dkey in [k for k in patch if k.startswith(_SET_ORDER)]:
            self.set_element_order(original, patch, dkey[len(_SET_ORDER):],
                                   patch.pop(dkey), path)

        for k, pv in list(patch.items()):
            delete_list = k.startswith(_DELETE_PRIMITIVES)
            if delete_list:
                k = k[len(_DELETE_PRIMITIVES):]
            fpath = path + (k,)
            if pv is None:
                original.pop(k, None)
                continue
            ov = original.get(k)
            if ov is None or type(ov) is not type(pv) and not (
                    _scalar(ov) and _scalar(pv)):
                if not delete_list:
                    original[k] = self.fresh(pv, fpath)
                continue
            if isinstance(ov, dict):
                if _patch_strategy(self.meta(fpath)[1]) == "replace":
                    original[k] = self.fresh(pv, fpath)
                else:
                    original[k] = self.merge_map(ov, pv, fpath)
            elif isinstance(ov, list):
                original[k] = self.merge_slice_handler(ov, pv, fpath, delete_list)
            elif not delete_list:
                original[k] = pv
        return original

    def set_element_order(self, original: dict, patch: dict, field: str, order: Any,
                          path: Path) -> None:
        """mergePatchIntoOriginal for one `$setElementOrder/<field>` directive."""
        if not isinstance(order, list):
            raise PatchError("invalid patch format of setElementOrder list")
        fpath = path + (field,)
        key, _ = self.meta(fpath)
        o_list = original.get(field)
        p_list = patch.get(field)
        has_o = o_list is not None
        has_p = p_list is not None
        if has_o and not isinstance(o_list, list) or has_p and not isinstance(p_list, list):
            return  # a type change: the plain merge below replaces the value
        if has_p:
            _validate_order(p_list, order, key)
        if has_o and not has_p:
            merged = o_list
        elif has_p and not has_o:
            merged = self.fresh(p_list, fpath)
        elif has_o and has_p:
            merged = self.merge_slice_handler(o_list, p_list, fpath, False)
        else:
            return
        if has_p:
            del patch[field]
        kind = _element_kind(merged, order)
        if kind == "map":
            if not key:
                original[field] = merged
                return
            for v in order:
                if not isinstance(v, dict):
                    raise PatchError("invalid patch format of setElementOrder list")
                if key not in v:
                    raise _no_merge_key(v, key)
        original[field] = _normalize(merged, order, o_list or [], key if kind == "map" else None)

    # -- lists ----------------------------------------------------------------------------

    def merge_slice_handler(self, original: list, patch: list, path: Path,
                            delete_list: bool) -> list:
        key, strategy = self.meta(path)
        if _patch_strategy(strategy) == "merge" or delete_list:
            return self.merge_slice(original, patch, path, key, delete_list)
        return self.fresh(patch, path)

    def merge_slice(self, original: list, patch: list, path: Path, key: str | None,
                    delete_list: bool) -> list:
        if not original and not patch:
            return original
        # a {"$patch": "replace"} marker in a list of primitives
        if any(isinstance(v, dict) and v.get(_DIRECTIVE) == "replace" for v in patch) and \
                all(not isinstance(v, dict) or _DIRECTIVE in v for v in patch) and \
                any(not isinstance(v, dict) for v in original + patch):
            return [v for v in patch if not isinstance(v, dict)]
        kind = _element_kind(original, patch)
        if kind != "map":
            if delete_list:
                return [v for v in original if _index(patch, v, None) < 0]
            merged: list = []
            for v in original + patch:
                if _index(merged, v, None) < 0:
                    merged.append(v)
            return _normalize(merged, patch, original, None)
        if not key:
            raise PatchError("cannot merge lists without merge key for " + ".".join(path))
        original, patch, replaced = self.special_elements(original, patch, key, path)
        if replaced:
            return original
        merged = list(original)
        for v in patch:
            if key not in v:
                raise _no_merge_key(v, key)
            i = _index(merged, v, key)
            if i >= 0:
                merged[i] = self.merge_map(merged[i], v, path)
            else:
                merged.append(self.fresh(v, path))
        return _normalize(merged, patch, original, key)

    def special_elements(self, original: list, patch: list, key: str, path: Path):
        """mergeSliceWithSpecialElements: apply `$patch: delete` elements, note
        `$patch: replace`, and return the patch without them."""
        rest = []
        replace = False
        for v in patch:
            if _DIRECTIVE not in v:
                rest.append(v)
                continue
            directive = v[_DIRECTIVE]
            if directive == "delete":
                if key not in v:
                    raise _no_merge_key(v, key)
                original = [o for o in original
                            if not (isinstance(o, dict) and key in o and o[key] == v[key])]
            elif directive == "replace":
                replace = True
            elif directive == "merge":
                raise PatchError("merging lists cannot yet be specified in the patch")
            else:
                raise PatchError(f"unknown patch type: {_gofmt(directive)} in map: {_gofmt(v)}")
        if replace:
            return [self.fresh(v, path) for v in rest], [], True
        return original, rest, False


def _scalar(v: Any) -> bool:
    return not isinstance(v, (dict, list)) and v is not None


def _validate_order(p_list: list, order: list, key: str | None) -> None:
    """validatePatchWithSetOrderList: the patch's items appear in the order list, in the same
    relative order (deletions ignored)."""
    if not order or not p_list:
        return
    items = [v for v in p_list
             if not (key and isinstance(v, dict) and v.get(_DIRECTIVE) == "delete")]
    pi = si = 0
    while pi < len(items) and si < len(order):
        v = items[pi]
        if isinstance(v, dict) and _DIRECTIVE in v:
            pi += 1
            continue
        if key:
            for m in (v, order[si]):
                if not isinstance(m, dict) or key not in m:
                    raise _no_merge_key(m, key)
            equal = v[key] == order[si][key]
        else:
            equal = _json_equal(v, order[si])
        if equal:
            pi += 1
        si += 1
    if pi < len(items) and si >= len(order):
        raise PatchError(f"The order in patch list:\n{_gofmt(p_list)}\n doesn't match "
                         f"$setElementOrder list:\n{_gofmt(order)}\n")


# ---------------------------------------------------------------------------------------------
# Dispatch on the request's Content-Type
# ---------------------------------------------------------------------------------------------

def apply_patch(obj: dict, body_bytes: bytes, content_type: str, kind: str) -> dict:
    """Apply a PATCH request body of the given Content-Type to obj (of Kind `kind`)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        raise PatchError("the body of the request was in an unknown format - accepted media "
                         f"types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}, "
                         f"{APPLY_PATCH}", 415)
    body = _decode_json(body_bytes, "error decoding patch: " if media != STRATEGIC_MERGE_PATCH
                        else "")
    if media == JSON_PATCH:
        return json_patch(obj, body)
    if media == MERGE_PATCH:
        return json_merge_patch(obj, body)
    return strategic_merge_patch(obj, body, kind)


def _decode_json(body: bytes | str, prefix: str) -> Any:
    if isinstance(body, (bytes, bytearray)):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise PatchError(prefix + "invalid character in JSON input") from None
    else:
        text = body or ""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise PatchError(prefix + _go_syntax_error(e)) from None
    except RecursionError:
        raise PatchError(prefix + "exceeded max depth") from None


def _go_syntax_error(e: json.JSONDecodeError) -> str:
    """encoding/json's wording for a syntax error."""
    doc, pos = e.doc, e.pos
    if pos >= len(doc) or (e.msg.startswith(("Expecting", "Unterminated")) and
                           not doc[pos:].strip()):
        return "unexpected end of JSON input"
    if e.msg.startswith("Unterminated string"):
        return "unexpected end of JSON input"
    ch = doc[pos]
    if e.msg.startswith("Invalid control character"):
        return f"invalid character {_go_char(ch)} in string literal"
    if e.msg == "Expecting ',' delimiter":
        context = ("after array element" if _innermost(doc, pos) == "["
                   else "after object key:value pair")
    else:
        context = {
            "Expecting value": "looking for beginning of value",
            "Expecting property name enclosed in double quotes":
                "looking for beginning of object key string",
            "Expecting ':' delimiter": "after object key",
            "Extra data": "after top-level value",
        }.get(e.msg, "looking for beginning of value")
    return f"invalid character {_go_char(ch)} {context}"


def _go_char(ch: str) -> str:
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    if ch.isprintable():
        return f"'{ch}'"
    return "'" + json.dumps(ch)[1:-1] + "'"


def _innermost(doc: str, pos: int) -> str:
    """The innermost open bracket at pos ('[' or '{')."""
    stack: list[str] = []
    in_str = esc = False
    for c in doc[:pos]:
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{":
            stack.append(c)
        elif c in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""
