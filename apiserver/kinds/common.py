"""Validation and defaulting helpers shared by the kind modules, with Kubernetes' messages
(apimachinery/pkg/util/validation, pkg/apis/core/validation)."""

from __future__ import annotations

import re
from typing import Any

from kubelab import fastjson
from kubelab.selectors import label_key_errors, label_value_errors

from ..errors import Cause

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                     "characters or '-', and must start and end with an alphanumeric character "
                     "(e.g. 'my-name',  or '123-abc', regex used for validation is "
                     "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                         "characters, '-' or '.', and must start and end with an alphanumeric "
                         "character (e.g. 'example.com', regex used for validation is "
                         "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
DNS1035_LABEL_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or "
                     "'-', start with an alphabetic character, and end with an alphanumeric "
                     "character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
                     "'[a-z]([-a-z0-9]*[a-z0-9])?')")


def q(v: Any) -> str:
    """Go's %q-ish rendering used in 'Invalid value: ...' messages."""
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return str(v)


def required(field: str) -> Cause:
    return Cause(field, "Required value", "FieldValueRequired")


def invalid(field: str, value: Any, msg: str) -> Cause:
    return Cause(field, f"Invalid value: {q(value)}: {msg}", "FieldValueInvalid")


def unsupported(field: str, value: Any, allowed: list[str]) -> Cause:
    return Cause(field, f"Unsupported value: {q(value)}: supported values: "
                        + ", ".join(q(a) for a in allowed), "FieldValueNotSupported")


def forbidden(field: str, msg: str) -> Cause:
    return Cause(field, f"Forbidden: {msg}", "FieldValueForbidden")


def duplicate(field: str, value: Any) -> Cause:
    return Cause(field, f"Duplicate value: {q(value)}", "FieldValueDuplicate")


def immutable(field: str, value: Any = None) -> Cause:
    return Cause(field, "Invalid value: " + (q(value) + ": " if value is not None else "") +
                 "field is immutable", "FieldValueInvalid")


def type_error(field: str, value: Any, want: str) -> Cause:
    return Cause(field, f"Invalid value: {q(value)}: must be {want}", "FieldValueTypeInvalid")


def dns1123_label(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, str):
        return [type_error(field, value, "a string")]
    out = []
    if len(value) > 63:
        out.append(invalid(field, value, "must be no more than 63 characters"))
    if not DNS1123_LABEL.match(value):
        out.append(invalid(field, value, DNS1123_LABEL_MSG))
    return out


def dns1123_subdomain(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, str):
        return [type_error(field, value, "a string")]
    out = []
    if len(value) > 253:
        out.append(invalid(field, value, "must be no more than 253 characters"))
    if not DNS1123_SUBDOMAIN.match(value):
        out.append(invalid(field, value, DNS1123_SUBDOMAIN_MSG))
    return out


def dns1035_label(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, str):
        return [type_error(field, value, "a string")]
    out = []
    if len(value) > 63:
        out.append(invalid(field, value, "must be no more than 63 characters"))
    if not DNS1035_LABEL.match(value):
        out.append(invalid(field, value, DNS1035_LABEL_MSG))
    return out


def labels(field: str, value: Any) -> list[Cause]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [type_error(field, value, "an object")]
    out = []
    for k, v in value.items():
        for e in label_key_errors(k):
            out.append(invalid(field, k, e))
        if not isinstance(v, str):
            out.append(type_error(f"{field}[{k}]", v, "a string"))
            continue
        for e in label_value_errors(v):
            out.append(invalid(field, v, e))
    return out


def annotations(field: str, value: Any) -> list[Cause]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [type_error(field, value, "an object")]
    out = []
    total = 0
    for k, v in value.items():
        for e in label_key_errors(k):
            out.append(invalid(field, k, e))
        if not isinstance(v, str):
            out.append(type_error(f"{field}[{k}]", v, "a string"))
            continue
        total += len(k) + len(v)
    if total > 256 * 1024:
        out.append(Cause(field, f"Too long: must have at most {256 * 1024} bytes",
                         "FieldValueTooLong"))
    return out


def object_meta(obj: dict, namespaced: bool, name_fn=dns1123_subdomain) -> list[Cause]:
    """metadata: name (or generateName), namespace, labels, annotations, ownerReferences."""
    md = obj.get("metadata")
    if not isinstance(md, dict):
        return [required("metadata")]
    out: list[Cause] = []
    name = md.get("name")
    if not name and not md.get("generateName"):
        out.append(Cause("metadata.name", "Required value: name or generateName is required",
                         "FieldValueRequired"))
    elif name:
        out += [Cause("metadata.name", c.message, c.reason) for c in name_fn("metadata.name", name)]
    if namespaced and md.get("namespace") is not None:
        out += dns1123_label("metadata.namespace", md.get("namespace"))
    out += labels("metadata.labels", md.get("labels"))
    out += annotations("metadata.annotations", md.get("annotations"))
    for i, ref in enumerate(md.get("ownerReferences") or []):
        f = f"metadata.ownerReferences[{i}]"
        if not isinstance(ref, dict):
            out.append(type_error(f, ref, "an object"))
            continue
        for k in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(k):
                out.append(required(f"{f}.{k}"))
    refs = md.get("ownerReferences") or []
    if isinstance(refs, list) and sum(1 for r in refs if isinstance(r, dict)
                                      and r.get("controller")) > 1:
        out.append(invalid("metadata.ownerReferences", refs,
                           "Only one reference can have Controller set to true. Found \"true\" "
                           "in references for " + " and ".join(
                               f'{r.get("kind")}/{r.get("name")}' for r in refs
                               if isinstance(r, dict) and r.get("controller"))))
    fin = md.get("finalizers")
    if fin is not None and not isinstance(fin, list):
        out.append(type_error("metadata.finalizers", fin, "a list"))
    return out


# on every write's path; see fastjson.copy
json_copy = fastjson.copy


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def non_negative(field: str, v: Any) -> list[Cause]:
    if v is None:
        return []
    if not is_int(v):
        return [type_error(field, v, "an integer")]
    if v < 0:
        return [invalid(field, v, "must be greater than or equal to 0")]
    return []


def port_number(field: str, v: Any) -> list[Cause]:
    if not is_int(v):
        return [type_error(field, v, "an integer")]
    if not 1 <= v <= 65535:
        return [invalid(field, v, "must be between 1 and 65535, inclusive")]
    return []


# ----------------------------------------------------------------------- quantities
_QTY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]i?|Ki|)$")
_SUFFIX = {"": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "P": 1e15, "E": 1e18, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40,
           "Pi": 2 ** 50, "Ei": 2 ** 60}


def parse_quantity(v: Any) -> float:
    """resource.Quantity → float (cores for cpu, bytes for memory). Raises ValueError."""
    if is_int(v) or isinstance(v, float):
        return float(v)
    if not isinstance(v, str):
        raise ValueError("quantities must match the regular expression "
                         "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    m = _QTY.match(v.strip())
    if not m or (m.group(2) not in _SUFFIX and m.group(2)[:1] not in ("e", "E")):
        raise ValueError("quantities must match the regular expression "
                         "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    num = float(m.group(1))
    suf = m.group(2)
    if suf[:1] in ("e", "E"):
        return num * 10 ** int(suf[1:])
    return num * _SUFFIX[suf]


def quantity(field: str, v: Any) -> list[Cause]:
    try:
        parse_quantity(v)
    except ValueError as e:
        return [invalid(field, v, str(e))]
    return []


def set_default(d: dict, key: str, value) -> None:
    if d.get(key) is None:
        d[key] = value
