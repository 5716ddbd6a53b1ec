"""core/v1 kinds."""

from __future__ import annotations

import base64

from ..errors import Cause
from . import AGE_COLUMN, KINDS, NAME_COLUMN, Column, Kind
from .common import dns1123_label, immutable, invalid, object_meta, type_error


def _namespace_default(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    fin = spec.get("finalizers")
    if fin is None:
        spec["finalizers"] = ["kubernetes"]
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Active")
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
        obj["metadata"].get("name", "")


def _namespace_validate(obj: dict, old: dict | None) -> list[Cause]:
    return object_meta(obj, namespaced=False, name_fn=dns1123_label)


KINDS.add(Kind(
    "Namespace", "namespaces", namespaced=False, short_names=("ns",),
    subresources=("status", "finalize"), default=_namespace_default,
    validate=_namespace_validate, proto="k8s.io.api.core.v1.Namespace",
    columns=[NAME_COLUMN, Column("Status", lambda o: o.get("status", {}).get("phase", ""),
                                 description="The status of the namespace"), AGE_COLUMN],
    field_labels=lambda o: {"status.phase": o.get("status", {}).get("phase", "")}))


def _check_data_keys(field: str, data) -> list[Cause]:
    import re
    out = []
    if data is None:
        return out
    if not isinstance(data, dict):
        return [type_error(field, data, "an object")]
    for k in data:
        if not re.match(r"^[-._a-zA-Z0-9]+$", k) or len(k) > 253:
            out.append(invalid(field, k, "a valid config key must consist of alphanumeric "
                               "characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  "
                               "or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"))
    return out


def _configmap_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    out += _check_data_keys("data", obj.get("data"))
    out += _check_data_keys("binaryData", obj.get("binaryData"))
    for k, v in (obj.get("data") or {}).items():
        if not isinstance(v, str):
            out.append(type_error(f"data[{k}]", v, "a string"))
    if old is not None and old.get("immutable"):
        if obj.get("data") != old.get("data") or obj.get("binaryData") != old.get("binaryData"):
            out.append(Cause("data", "Forbidden: field is immutable when `immutable` is set",
                             "FieldValueForbidden"))
        if not obj.get("immutable"):
            out.append(immutable("immutable"))
    return out


KINDS.add(Kind(
    "ConfigMap", "configmaps", short_names=("cm",), validate=_configmap_validate,
    proto="k8s.io.api.core.v1.ConfigMap",
    columns=[NAME_COLUMN, Column("Data", lambda o: len(o.get("data") or {}) +
                                 len(o.get("binaryData") or {}), type="integer"), AGE_COLUMN]))


def _secret_default(obj: dict) -> None:
    # stringData is write-only: fold it into base64 data, as the API server does
    sd = obj.pop("stringData", None)
    if isinstance(sd, dict):
        data = obj.setdefault("data", {}) or {}
        obj["data"] = data
        for k, v in sd.items():
            if isinstance(v, str):
                data[k] = base64.b64encode(v.encode()).decode()
    if not obj.get("type"):
        obj["type"] = "Opaque"


def _secret_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    out += _check_data_keys("data", obj.get("data"))
    for k, v in (obj.get("data") or {}).items():
        try:
            base64.b64decode(v, validate=True)
        except Exception:  # noqa: BLE001
            out.append(invalid(f"data[{k}]", v, "illegal base64 data"))
    t = obj.get("type")
    data = obj.get("data") or {}
    if t == "kubernetes.io/tls":
        for k in ("tls.crt", "tls.key"):
            if k not in data:
                out.append(Cause(f"data[{k}]", "Required value", "FieldValueRequired"))
    if old is not None:
        if old.get("type") != obj.get("type"):
            out.append(immutable("type", obj.get("type")))
        if old.get("immutable") and old.get("data") != obj.get("data"):
            out.append(Cause("data", "Forbidden: field is immutable when `immutable` is set",
                             "FieldValueForbidden"))
    return out


KINDS.add(Kind(
    "Secret", "secrets", default=_secret_default, validate=_secret_validate,
    proto="k8s.io.api.core.v1.Secret",
    columns=[NAME_COLUMN, Column("Type", lambda o: o.get("type", "")),
             Column("Data", lambda o: len(o.get("data") or {}), type="integer"), AGE_COLUMN],
    field_labels=lambda o: {"type": o.get("type", "")}))
