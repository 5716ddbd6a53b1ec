"""Cluster-level kinds of other groups: Lease (coordination.k8s.io/v1), HorizontalPodAutoscaler
(autoscaling/v2), StorageClass (storage.k8s.io/v1), PriorityClass (scheduling.k8s.io/v1) and
PodDisruptionBudget (policy/v1).

Sources: the validation, defaults and printers of those groups in Kubernetes 1.32.
"""

from __future__ import annotations

import json
from typing import Any

from kubelab.selectors import label_key_errors

from ..errors import Cause
from . import AGE_COLUMN, KINDS, NAME_COLUMN, Column, Kind
from .apps import (
    _ensure,
    _int,
    _spec,
    _status,
    not_more_than_100_percent,
    validate_label_selector,
    validate_positive_int_or_percent,
)
from .common import (
    forbidden,
    immutable,
    invalid,
    is_int,
    object_meta,
    parse_quantity,
    required,
    unsupported,
)


def _d(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _lst(v: Any) -> list:
    return v if isinstance(v, list) else []


# =========================================================================== Lease
def _lease_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    spec = _spec(obj)
    lds = spec.get("leaseDurationSeconds")
    if is_int(lds) and lds <= 0:
        out.append(invalid("spec.leaseDurationSeconds", lds, "must be greater than 0"))
    lt = spec.get("leaseTransitions")
    if is_int(lt) and lt < 0:
        out.append(invalid("spec.leaseTransitions", lt, "must be greater than or equal to 0"))
    return out


KINDS.add(Kind(
    "Lease", "leases", group="coordination.k8s.io", version="v1", validate=_lease_validate,
    proto="k8s.io.api.coordination.v1.Lease",
    columns=[
        NAME_COLUMN,
        Column("Holder", lambda o: _spec(o).get("holderIdentity")
               if _spec(o).get("holderIdentity") is not None else "<unknown>",
               description="holderIdentity contains the identity of the holder of a current "
                           "lease."),
        AGE_COLUMN,
    ]))


# =========================================================================== HPA
SCALE_UP_DEFAULT = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                 {"type": "Percent", "value": 100, "periodSeconds": 15}]}
SCALE_DOWN_DEFAULT = {"selectPolicy": "Max",
                      "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


def _scaling_rules(given: Any, defaults: dict) -> dict:
    out = json.loads(json.dumps(defaults))
    if isinstance(given, dict):
        for k in ("selectPolicy", "stabilizationWindowSeconds", "policies"):
            if given.get(k) is not None:
                out[k] = given[k]
    return out


def _hpa_default(obj: dict) -> None:
    spec = _ensure(obj, "spec")
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    beh = spec.get("behavior")
    if isinstance(beh, dict):
        beh["scaleUp"] = _scaling_rules(beh.get("scaleUp"), SCALE_UP_DEFAULT)
        beh["scaleDown"] = _scaling_rules(beh.get("scaleDown"), SCALE_DOWN_DEFAULT)
    _ensure(obj, "status").setdefault("desiredReplicas", 0)


def _path_segment(field: str, v: Any) -> list[Cause]:
    """IsValidPathSegmentName."""
    s = str(v)
    if s in (".", ".."):
        return [invalid(field, v, f"may not be '{s}'")]
    return [invalid(field, v, f"may not contain '{c}'") for c in ("/", "%") if c in s]


_METRIC_TYPES = ["Object", "Pods", "Resource", "External", "ContainerResource"]
_SOURCE_KEY = {"Object": "object", "Pods": "pods", "Resource": "resource",
               "External": "external", "ContainerResource": "containerResource"}


def _positive_quantity(field: str, v: Any) -> list[Cause]:
    try:
        ok = parse_quantity(v) > 0
    except ValueError as e:
        return [invalid(field, v, str(e))]
    return [] if ok else [invalid(field, v, "must be positive")]


def _validate_target(t: Any, path: str) -> list[Cause]:
    t = _d(t)
    out: list[Cause] = []
    tt = t.get("type")
    if not tt:
        out.append(Cause(f"{path}.type", "Required value: must specify a metric target type",
                         "FieldValueRequired"))
    if tt not in ("Utilization", "Value", "AverageValue"):
        out.append(invalid(f"{path}.type", tt or "",
                           "must be either Utilization, Value, or AverageValue"))
    if t.get("value") is not None:
        out += _positive_quantity(f"{path}.value", t["value"])
    if t.get("averageValue") is not None:
        out += _positive_quantity(f"{path}.averageValue", t["averageValue"])
    au = t.get("averageUtilization")
    if au is not None and (not is_int(au) or au < 1):
        out.append(invalid(f"{path}.averageUtilization", au, "must be greater than 0"))
    return out


def _validate_metric(m: Any, path: str) -> list[Cause]:
    m = _d(m)
    out: list[Cause] = []
    mt = m.get("type")
    if not mt:
        out.append(Cause(f"{path}.type", "Required value: must specify a metric source type",
                         "FieldValueRequired"))
    if mt not in _METRIC_TYPES:
        out.append(unsupported(f"{path}.type", mt or "", _METRIC_TYPES))
    present = [k for k in _SOURCE_KEY.values() if m.get(k) is not None]
    for key in ("resource", "containerResource"):
        src = m.get(key)
        if src is None or present[:1] != [key]:
            continue
        src = _d(src)
        p = f"{path}.{key}"
        if not src.get("name"):
            out.append(Cause(f"{p}.name", "Required value: must specify a resource name",
                             "FieldValueRequired"))
        if key == "containerResource" and not src.get("container"):
            out.append(Cause(f"{p}.container", "Required value: must specify a container",
                             "FieldValueRequired"))
        tgt = _d(src.get("target"))
        out += _validate_target(tgt, f"{p}.target")
        if tgt.get("averageUtilization") is None and tgt.get("averageValue") is None:
            out.append(Cause(f"{p}.target.averageUtilization", "Required value: must set either "
                             "a target raw value or a target utilization", "FieldValueRequired"))
        if tgt.get("averageUtilization") is not None and tgt.get("averageValue") is not None:
            out.append(forbidden(f"{p}.target.averageValue", "may not set both a target raw "
                                 "value and a target utilization"))
    expected = _SOURCE_KEY.get(mt or "")
    if expected and m.get(expected) is None:
        out.append(Cause(f"{path}.{expected}", "Required value: must populate information for "
                         "the given metric source", "FieldValueRequired"))
    if len(present) != 1:
        for k in present:
            if k != expected:
                out.append(forbidden(f"{path}.{k}", "must populate the given metric source only"))
    return out


def _hpa_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    spec = _spec(obj)
    mn, mx = spec.get("minReplicas"), spec.get("maxReplicas")
    if is_int(mn) and mn < 1:
        out.append(invalid("spec.minReplicas", mn, "must be greater than or equal to 1"))
    if not is_int(mx) or mx < 1:
        out.append(invalid("spec.maxReplicas", mx if mx is not None else 0,
                           "must be greater than 0"))
    if is_int(mn) and is_int(mx) and mx < mn:
        out.append(invalid("spec.maxReplicas", mx, "must be greater than or equal to "
                                                   "`minReplicas`"))
    ref = _d(spec.get("scaleTargetRef"))
    for k in ("kind", "name"):
        if not ref.get(k):
            out.append(required(f"spec.scaleTargetRef.{k}"))
        else:
            out += _path_segment(f"spec.scaleTargetRef.{k}", ref[k])
    for i, m in enumerate(_lst(spec.get("metrics"))):
        out += _validate_metric(m, f"spec.metrics[{i}]")
    beh = spec.get("behavior")
    if isinstance(beh, dict):
        for d in ("scaleUp", "scaleDown"):
            r = _d(beh.get(d))
            sp = r.get("selectPolicy")
            if sp is not None and sp not in ("Max", "Min", "Disabled"):
                out.append(unsupported(f"spec.behavior.{d}.selectPolicy", sp,
                                       ["Max", "Min", "Disabled"]))
            sws = r.get("stabilizationWindowSeconds")
            if is_int(sws) and not 0 <= sws <= 3600:
                out.append(invalid(f"spec.behavior.{d}.stabilizationWindowSeconds", sws,
                                   "must be less than or equal to 3600" if sws > 0 else
                                   "must be greater than or equal to zero"))
    return out


def _quantity_text(v: Any) -> str:
    return str(v) if v is not None else "<unknown>"


def hpa_targets(o: dict) -> str:
    """formatHPAMetrics: `cpu: 12%/80%`, `<unknown>` before the first measurement, at most two
    metrics then `+ N more...`; `<none>` without metrics."""
    specs = _lst(_spec(o).get("metrics"))
    statuses = _lst(_status(o).get("currentMetrics"))
    if not specs:
        return "<none>"
    items: list[str] = []
    for i, m in enumerate(specs):
        m = _d(m)
        st = _d(statuses[i]) if i < len(statuses) else {}
        t = m.get("type")
        if t in ("External", "Object"):
            key = t.lower()
            tgt = _d(_d(m.get(key)).get("target"))
            cur = _d(_d(st.get(key)).get("current"))
            if tgt.get("averageValue") is not None:
                c = _quantity_text(cur.get("averageValue")) if st.get(key) else "<unknown>"
                items.append(f"{c}/{tgt['averageValue']} (avg)")
            else:
                c = _quantity_text(cur.get("value")) if st.get(key) else "<unknown>"
                items.append(f"{c}/{tgt.get('value')}")
        elif t == "Pods":
            tgt = _d(_d(m.get("pods")).get("target"))
            c = _quantity_text(_d(_d(st.get("pods")).get("current")).get("averageValue")) \
                if st.get("pods") else "<unknown>"
            items.append(f"{c}/{tgt.get('averageValue')}")
        elif t in ("Resource", "ContainerResource"):
            key = "resource" if t == "Resource" else "containerResource"
            src = _d(m.get(key))
            tgt = _d(src.get("target"))
            cur = _d(_d(st.get(key)).get("current"))
            name = src.get("name", "")
            if tgt.get("averageValue") is not None:
                c = _quantity_text(cur.get("averageValue")) if st.get(key) else "<unknown>"
                items.append(f"{name}: {c}/{tgt['averageValue']}")
            else:
                c = f"{cur['averageUtilization']}%" if st.get(key) and \
                    cur.get("averageUtilization") is not None else "<unknown>"
                tv = f"{tgt['averageUtilization']}%" if tgt.get("averageUtilization") is not None \
                    else "<auto>"
                items.append(f"{name}: {c}/{tv}")
        else:
            items.append("<unknown type>")
    if len(items) > 2:
        return ", ".join(items[:2]) + f" + {len(items) - 2} more..."
    return ", ".join(items)


KINDS.add(Kind(
    "HorizontalPodAutoscaler", "horizontalpodautoscalers", group="autoscaling", version="v2",
    short_names=("hpa",), categories=("all",), subresources=("status",),
    default=_hpa_default, validate=_hpa_validate,
    proto="k8s.io.api.autoscaling.v2.HorizontalPodAutoscaler",
    columns=[
        NAME_COLUMN,
        Column("Reference", lambda o: f"{_d(_spec(o).get('scaleTargetRef')).get('kind', '')}/"
                                      f"{_d(_spec(o).get('scaleTargetRef')).get('name', '')}",
               description="reference to scaled resource; horizontal pod autoscaler will learn "
                           "the current resource consumption and will set the desired number "
                           "of pods by using its Scale subresource."),
        Column("Targets", hpa_targets, description="metrics contains the specifications for "
                                                   "which to use to calculate the desired "
                                                   "replica count"),
        Column("MinPods", lambda o: str(_spec(o)["minReplicas"])
               if is_int(_spec(o).get("minReplicas")) else "<unset>",
               description="minReplicas is the lower limit for the number of replicas to which "
                           "the autoscaler can scale down."),
        Column("MaxPods", lambda o: _int(_spec(o).get("maxReplicas")), type="integer",
               description="maxReplicas is the upper limit for the number of replicas to which "
                           "the autoscaler can scale up."),
        Column("Replicas", lambda o: _int(_status(o).get("currentReplicas")), type="integer",
               description="currentReplicas is current number of replicas of pods managed by "
                           "this autoscaler, as last seen by the autoscaler."),
        AGE_COLUMN,
    ]))


# =========================================================================== StorageClass
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
BETA_DEFAULT_CLASS_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"


def is_default_class(o: dict) -> bool:
    ann = _d(_d(o.get("metadata")).get("annotations"))
    return ann.get(DEFAULT_CLASS_ANNOTATION) == "true" or \
        ann.get(BETA_DEFAULT_CLASS_ANNOTATION) == "true"


def _storageclass_default(obj: dict) -> None:
    if not obj.get("reclaimPolicy"):
        obj["reclaimPolicy"] = "Delete"
    if not obj.get("volumeBindingMode"):
        obj["volumeBindingMode"] = "Immediate"


def _storageclass_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=False)
    prov = obj.get("provisioner")
    if not prov:
        out.append(required("provisioner"))
    elif isinstance(prov, str):
        low = prov.lower()
        out += [invalid("provisioner", low, msg) for msg in label_key_errors(low)]
    params = obj.get("parameters")
    if isinstance(params, dict):
        if len(params) > 512:
            out.append(Cause("parameters", "Too long: must have at most 512 bytes",
                             "FieldValueTooLong"))
        for k in params:
            if not k:
                out.append(invalid("parameters", k, "field can not be empty."))
    rp = obj.get("reclaimPolicy")
    if rp and rp not in ("Delete", "Retain"):
        out.append(unsupported("reclaimPolicy", rp, ["Delete", "Retain"]))
    vbm = obj.get("volumeBindingMode")
    if vbm is None:
        out.append(required("volumeBindingMode"))
    elif vbm not in ("Immediate", "WaitForFirstConsumer"):
        out.append(unsupported("volumeBindingMode", vbm, ["Immediate", "WaitForFirstConsumer"]))
    if old is not None:
        if (old.get("parameters") or {}) != (params or {}):
            out.append(forbidden("parameters", "updates to parameters are forbidden."))
        if old.get("provisioner") != prov:
            out.append(forbidden("provisioner", "updates to provisioner are forbidden."))
        if old.get("reclaimPolicy") != rp:
            out.append(forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden."))
        if old.get("volumeBindingMode") != vbm:
            out.append(immutable("volumeBindingMode", vbm))
    return out


KINDS.add(Kind(
    "StorageClass", "storageclasses", group="storage.k8s.io", version="v1", namespaced=False,
    short_names=("sc",), default=_storageclass_default, validate=_storageclass_validate,
    proto="k8s.io.api.storage.v1.StorageClass",
    columns=[
        Column("Name", lambda o: o["metadata"]["name"] + (" (default)" if is_default_class(o)
                                                           else ""),
               format="name", description="Name must be unique within a namespace."),
        Column("Provisioner", lambda o: o.get("provisioner", ""),
               description="provisioner indicates the type of the provisioner."),
        Column("ReclaimPolicy", lambda o: o.get("reclaimPolicy") or "Delete",
               description="reclaimPolicy controls the reclaimPolicy for dynamically "
                           "provisioned PersistentVolumes of this storage class."),
        Column("VolumeBindingMode", lambda o: o.get("volumeBindingMode") or "Immediate",
               description="volumeBindingMode indicates how PersistentVolumeClaims should be "
                           "provisioned and bound."),
        Column("AllowVolumeExpansion", lambda o: bool(o.get("allowVolumeExpansion")),
               description="allowVolumeExpansion shows whether the storage class allow volume "
                           "expand."),
        AGE_COLUMN,
    ]))


# =========================================================================== PriorityClass
SYSTEM_PRIORITY_CLASSES = {"system-node-critical": 2000001000,
                           "system-cluster-critical": 2000000000}
HIGHEST_USER_PRIORITY = 1000000000


def _priorityclass_default(obj: dict) -> None:
    if obj.get("preemptionPolicy") is None:
        obj["preemptionPolicy"] = "PreemptLowerPriority"


def _priorityclass_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=False)
    name = _d(obj.get("metadata")).get("name") or ""
    value = obj.get("value", 0)
    gd = bool(obj.get("globalDefault"))
    if name.startswith("system-"):
        err = None
        if name not in SYSTEM_PRIORITY_CLASSES:
            err = f"{name} is not a known system priority class"
        elif value != SYSTEM_PRIORITY_CLASSES[name]:
            err = f"value of {name} PriorityClass must be {SYSTEM_PRIORITY_CLASSES[name]}"
        elif gd:
            err = f"globalDefault of {name} PriorityClass must be false"
        if err:
            out.append(forbidden("metadata.name", "priority class names with 'system-' prefix "
                                 f"are reserved for system use only. error: {err}"))
    elif is_int(value) and value > HIGHEST_USER_PRIORITY:
        out.append(forbidden("value", "maximum allowed value of a user defined priority is "
                                      f"{HIGHEST_USER_PRIORITY}"))
    pp = obj.get("preemptionPolicy")
    if pp is not None:
        if pp == "":
            out.append(required("preemptionPolicy"))
        elif pp not in ("PreemptLowerPriority", "Never"):
            out.append(unsupported("preemptionPolicy", pp, ["PreemptLowerPriority", "Never"]))
    if old is not None:
        if old.get("value", 0) != value:
            out.append(forbidden("value", "may not be changed in an update."))
        if old.get("preemptionPolicy") != pp:
            out.append(immutable("preemptionPolicy", pp))
    return out


KINDS.add(Kind(
    "PriorityClass", "priorityclasses", group="scheduling.k8s.io", version="v1",
    namespaced=False, short_names=("pc",), default=_priorityclass_default,
    validate=_priorityclass_validate, proto="k8s.io.api.scheduling.v1.PriorityClass",
    columns=[
        NAME_COLUMN,
        Column("Value", lambda o: _int(o.get("value")), type="integer",
               description="value represents the integer value of this priority class."),
        Column("Global-Default", lambda o: bool(o.get("globalDefault")), type="boolean",
               description="globalDefault specifies whether this PriorityClass should be "
                           "considered as the default priority for pods that do not have any "
                           "priority class."),
        AGE_COLUMN,
        Column("PreemptionPolicy", lambda o: o.get("preemptionPolicy") or "",
               description="preemptionPolicy is the Policy for preempting pods with lower "
                           "priority."),
    ]))


# =========================================================================== PodDisruptionBudget
def _pdb_default(obj: dict) -> None:
    st = _ensure(obj, "status")
    for k in ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"):
        st.setdefault(k, 0)


def _pdb_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    spec = _spec(obj)
    mina, maxu = spec.get("minAvailable"), spec.get("maxUnavailable")
    if mina is not None and maxu is not None:
        out.append(Cause("spec", "Invalid value: " + json.dumps(spec, separators=(",", ":"),
                                                                sort_keys=True)
                         + ": minAvailable and maxUnavailable cannot be both set",
                         "FieldValueInvalid"))
    for k, v in (("minAvailable", mina), ("maxUnavailable", maxu)):
        if v is not None:
            out += validate_positive_int_or_percent(v, f"spec.{k}")
            out += not_more_than_100_percent(v, f"spec.{k}")
    out += validate_label_selector(spec.get("selector"), "spec.selector")
    upe = spec.get("unhealthyPodEvictionPolicy")
    if upe is not None and upe not in ("AlwaysAllow", "IfHealthyBudget"):
        out.append(unsupported("spec.unhealthyPodEvictionPolicy", upe,
                               ["AlwaysAllow", "IfHealthyBudget"]))
    return out


def _intstr_text(v: Any) -> str:
    return "N/A" if v is None else str(v)


KINDS.add(Kind(
    "PodDisruptionBudget", "poddisruptionbudgets", group="policy", version="v1",
    short_names=("pdb",), subresources=("status",), has_generation=True,
    default=_pdb_default, validate=_pdb_validate, proto="k8s.io.api.policy.v1.PodDisruptionBudget",
    columns=[
        NAME_COLUMN,
        Column("Min Available", lambda o: _intstr_text(_spec(o).get("minAvailable")),
               description="The minimum number of pods that must be available."),
        Column("Max Unavailable", lambda o: _intstr_text(_spec(o).get("maxUnavailable")),
               description="The maximum number of pods that may be unavailable."),
        Column("Allowed Disruptions", lambda o: _int(_status(o).get("disruptionsAllowed")),
               type="integer",
               description="Calculated number of pods that may be disrupted at this time."),
        AGE_COLUMN,
    ]))
