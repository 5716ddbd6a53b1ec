"""apps/v1 kinds: Deployment, ReplicaSet, StatefulSet, DaemonSet, ControllerRevision.

Also the helpers every workload kind shares (batch, autoscaling, policy use them too): label
selector validation and rendering, int-or-percent checks, pod template defaulting/validation
(delegated to core's pod code), container cells, and Kubernetes' rendering of bad values in
"Invalid value: ..." messages.

Sources: pkg/apis/apps/v1/defaults.go, pkg/apis/apps/validation/validation.go,
pkg/registry/apps/*/strategy.go and pkg/printers/internalversion/printers.go of Kubernetes 1.32.
"""

from __future__ import annotations

import copy

import json
import re
from typing import Any

from kubelab.selectors import label_key_errors, label_value_errors

from ..errors import Cause
from . import AGE_COLUMN, KINDS, NAME_COLUMN, Column, Kind, ScaleSpec
from .common import (
    dns1123_label,
    forbidden,
    invalid,
    is_int,
    labels,
    non_negative,
    object_meta,
    q,
    required,
    type_error,
    unsupported,
)

# --------------------------------------------------------------------------- bad-value rendering
# kube-apiserver 1.32 renders composite bad values with Go's %#v (`map[string]string{"app":"x"}`,
# `v1.LabelSelector{...}`, `intstr.IntOrString{...}`); 1.34 switched to JSON (`{"app":"x"}`, `0`).
# "go" matches 1.32; "json" matches 1.34+.
VALUE_STYLE = "go"


def _json(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def render(json_value: Any, go_text: str) -> str:
    return go_text if VALUE_STYLE == "go" else _json(json_value)


def invalid_raw(field: str, rendered: str, msg: str) -> Cause:
    """`field: Invalid value: <rendered>: msg` with the value already rendered."""
    return Cause(field, f"Invalid value: {rendered}: {msg}", "FieldValueInvalid")


def unsupported_raw(field: str, rendered: str, allowed: list[str]) -> Cause:
    return Cause(field, f"Unsupported value: {rendered}: supported values: "
                        + ", ".join(q(a) for a in allowed), "FieldValueNotSupported")


def _go_str(s: Any) -> str:
    return q(s if isinstance(s, str) else str(s))


def go_string_map(m: Any) -> str:
    if m is None:
        return "map[string]string(nil)"
    if not isinstance(m, dict):
        return _json(m)
    return "map[string]string{" + ", ".join(f"{_go_str(k)}:{_go_str(v)}"
                                             for k, v in sorted(m.items())) + "}"


def _go_strings(vs: Any) -> str:
    if vs is None:
        return "[]string(nil)"
    return "[]string{" + ", ".join(_go_str(v) for v in vs) + "}"


def go_label_selector(ls: Any) -> str:
    if ls is None:
        return "null"
    if not isinstance(ls, dict):
        return _json(ls)
    exprs = ls.get("matchExpressions")
    if exprs is None:
        ex = "[]v1.LabelSelectorRequirement(nil)"
    else:
        ex = "[]v1.LabelSelectorRequirement{" + ", ".join(
            f"v1.LabelSelectorRequirement{{Key:{_go_str((e or {}).get('key', ''))}, "
            f"Operator:{_go_str((e or {}).get('operator', ''))}, "
            f"Values:{_go_strings((e or {}).get('values'))}}}" for e in exprs) + "}"
    return f"v1.LabelSelector{{MatchLabels:{go_string_map(ls.get('matchLabels'))}, " \
           f"MatchExpressions:{ex}}}"


def go_intstr(v: Any) -> str:
    if isinstance(v, str):
        return f'intstr.IntOrString{{Type:1, IntVal:0, StrVal:{_go_str(v)}}}'
    if is_int(v):
        return f'intstr.IntOrString{{Type:0, IntVal:{v}, StrVal:""}}'
    return "null" if v is None else _json(v)


def labels_value(m: Any) -> str:
    return render(m, go_string_map(m))


def selector_value(ls: Any) -> str:
    return render(ls, go_label_selector(ls))


def intstr_value(v: Any) -> str:
    return render(v, go_intstr(v))


# --------------------------------------------------------------------------- label selectors
_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def _selector_parts(ls: dict) -> list[tuple[str, str]] | None:
    """(key, rendered requirement) pairs of metav1.LabelSelectorAsSelector, or None when the
    selector cannot be converted."""
    parts: list[tuple[str, str]] = []
    for k, v in (ls.get("matchLabels") or {}).items():
        if not isinstance(k, str) or not isinstance(v, str) or label_key_errors(k) \
                or label_value_errors(v):
            return None
        parts.append((k, f"{k}={v}"))
    for e in ls.get("matchExpressions") or []:
        if not isinstance(e, dict):
            return None
        key, op, vals = e.get("key", ""), e.get("operator"), e.get("values") or []
        if op not in _OPS or not isinstance(key, str) or label_key_errors(key):
            return None
        if op in ("In", "NotIn"):
            if not vals or any(not isinstance(x, str) or label_value_errors(x) for x in vals):
                return None
            parts.append((key, f"{key} {_OPS[op]} ({','.join(sorted(vals))})"))
        else:
            if vals:
                return None
            parts.append((key, key if op == "Exists" else f"!{key}"))
    parts.sort(key=lambda p: p[0])
    return parts


def selector_string(ls: Any) -> str:
    """labels.Selector.String() of LabelSelectorAsSelector(ls): what Scale status.selector and
    the SELECTOR column show (`app=web,tier in (a,b)`). nil and {} both render as ""."""
    if not isinstance(ls, dict):
        return ""
    parts = _selector_parts(ls)
    if parts is None:
        return "<invalid>"
    return ",".join(p[1] for p in parts)


def selector_convertible(ls: Any) -> bool:
    return ls is None or (isinstance(ls, dict) and _selector_parts(ls) is not None)


def selector_matches(ls: Any, lbls: dict | None) -> bool:
    """LabelSelectorAsSelector(ls).Matches(lbls): nil matches nothing, {} everything."""
    if ls is None:
        return False
    if not isinstance(ls, dict):
        return False
    lbls = lbls if isinstance(lbls, dict) else {}
    for k, v in (ls.get("matchLabels") or {}).items():
        if lbls.get(k) != v:
            return False
    for e in ls.get("matchExpressions") or []:
        key, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        has = key in lbls
        if op == "In" and not (has and lbls[key] in vals):
            return False
        if op == "NotIn" and has and lbls[key] in vals:
            return False
        if op == "Exists" and not has:
            return False
        if op == "DoesNotExist" and has:
            return False
    return True


def selector_empty(ls: Any) -> bool:
    return isinstance(ls, dict) and not ls.get("matchLabels") and not ls.get("matchExpressions")


def validate_label_selector(ls: Any, path: str) -> list[Cause]:
    """unversionedvalidation.ValidateLabelSelector."""
    if ls is None:
        return []
    if not isinstance(ls, dict):
        return [type_error(path, ls, "an object")]
    out = labels(f"{path}.matchLabels", ls.get("matchLabels"))
    exprs = ls.get("matchExpressions") or []
    if not isinstance(exprs, list):
        return out + [type_error(f"{path}.matchExpressions", exprs, "a list")]
    for i, e in enumerate(exprs):
        f = f"{path}.matchExpressions[{i}]"
        if not isinstance(e, dict):
            out.append(type_error(f, e, "an object"))
            continue
        op, vals = e.get("operator"), e.get("values") or []
        if op in ("In", "NotIn"):
            if not vals:
                out.append(Cause(f"{f}.values", "Required value: must be specified when "
                                 "`operator` is 'In' or 'NotIn'", "FieldValueRequired"))
        elif op in ("Exists", "DoesNotExist"):
            if vals:
                out.append(forbidden(f"{f}.values", "may not be specified when `operator` is "
                                     "'Exists' or 'DoesNotExist'"))
        else:
            out.append(invalid(f"{f}.operator", op if op is not None else "",
                               "not a valid selector operator"))
        key = e.get("key", "")
        for msg in label_key_errors(key if isinstance(key, str) else str(key)):
            out.append(invalid(f"{f}.key", key, msg))
        for j, v in enumerate(vals):
            for msg in label_value_errors(v if isinstance(v, str) else str(v)):
                out.append(invalid(f"{f}.values[{j}]", v, msg))
    return out


def validate_workload_selector(ls: Any, path: str, empty_msg: str) -> list[Cause]:
    """selector required, valid, non-empty (Deployment, ReplicaSet, StatefulSet)."""
    if ls is None:
        return [required(path)]
    out = validate_label_selector(ls, path)
    if isinstance(ls, dict) and selector_empty(ls):
        out.append(invalid_raw(path, selector_value(ls), empty_msg))
    return out


def selectors_equal(a: Any, b: Any) -> bool:
    """apiequality.Semantic.DeepEqual for label selectors (nil and empty lists/maps equal)."""
    def norm(ls):
        if not isinstance(ls, dict):
            return ls
        return ({k: v for k, v in (ls.get("matchLabels") or {}).items()},
                [(e.get("key"), e.get("operator"), list(e.get("values") or []))
                 for e in (ls.get("matchExpressions") or [])])
    return norm(a) == norm(b)


def immutable_selector(new: Any, old: Any, path: str = "spec.selector") -> list[Cause]:
    if selectors_equal(new, old):
        return []
    return [invalid_raw(path, selector_value(new), "field is immutable")]


def semantic_equal(a: Any, b: Any) -> bool:
    """Semantic.DeepEqual-ish: None, {} and [] are equal; recursion through dicts and lists."""
    if a in (None, {}, []) and b in (None, {}, []):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return all(semantic_equal(a.get(k), b.get(k)) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(semantic_equal(x, y) for x, y in zip(a, b))
    return a == b


# --------------------------------------------------------------------------- int or percent
_PERCENT = re.compile(r"^[0-9]+%$")
PERCENT_MSG = ("a valid percent string must be a numeric string followed by an ending '%' "
               "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")


def _percent(v: Any) -> int | None:
    if isinstance(v, str) and _PERCENT.match(v):
        return int(v[:-1])
    return None


def int_or_percent_value(v: Any) -> int:
    """getIntOrPercentValue."""
    p = _percent(v)
    if p is not None:
        return p
    if is_int(v):
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            return 0
    return 0


def validate_positive_int_or_percent(v: Any, path: str) -> list[Cause]:
    if v is None:
        return []
    if isinstance(v, str):
        if not _PERCENT.match(v):
            return [invalid_raw(path, intstr_value(v), PERCENT_MSG)]
        return []
    if is_int(v):
        return non_negative(path, v)
    return [type_error(path, v, "an integer or a percent string")]


def not_more_than_100_percent(v: Any, path: str) -> list[Cause]:
    p = _percent(v)
    if p is not None and p > 100:
        return [invalid_raw(path, intstr_value(v), "must not be greater than 100%")]
    return []


# --------------------------------------------------------------------------- pod templates
def default_template(tpl: Any) -> None:
    """Pod template defaults (core's default_pod_template), if core provides them."""
    if not isinstance(tpl, dict):
        return
    try:
        from .core import default_pod_template
    except ImportError:
        return
    default_pod_template(tpl)


def validate_template(tpl: Any, path: str) -> list[Cause]:
    """apivalidation.ValidatePodTemplateSpec (core's validate_pod_template), if available."""
    if not isinstance(tpl, dict):
        return [type_error(path, tpl, "an object")] if tpl is not None else []
    try:
        from .core import validate_pod_template
    except ImportError:
        return []
    return list(validate_pod_template(tpl, path))


def template_labels(tpl: Any) -> Any:
    if not isinstance(tpl, dict):
        return None
    md = tpl.get("metadata")
    return md.get("labels") if isinstance(md, dict) else None


def template_spec(tpl: Any) -> dict:
    if isinstance(tpl, dict) and isinstance(tpl.get("spec"), dict):
        return tpl["spec"]
    return {}


def containers_cells(tpl: Any) -> tuple[str, str]:
    """layoutContainerCells: names and images, comma-separated."""
    cs = template_spec(tpl).get("containers") or []
    return (",".join(str(c.get("name", "")) for c in cs if isinstance(c, dict)),
            ",".join(str(c.get("image", "")) for c in cs if isinstance(c, dict)))


def format_labels(m: Any) -> str:
    """labels.FormatLabels: `<none>` or sorted k=v,k=v."""
    if not isinstance(m, dict) or not m:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(m.items()))


def _status(o: dict) -> dict:
    s = o.get("status")
    return s if isinstance(s, dict) else {}


def _spec(o: dict) -> dict:
    s = o.get("spec")
    return s if isinstance(s, dict) else {}


def _ensure_spec(o: dict) -> dict:
    s = o.get("spec")
    if not isinstance(s, dict):
        s = o["spec"] = {}
    return s


def _ensure(d: dict, key: str) -> dict:
    v = d.get(key)
    if not isinstance(v, dict):
        v = d[key] = {}
    return v


def _int(v: Any, default: int = 0) -> int:
    return v if is_int(v) else default


def containers_column(get_tpl) -> Column:
    return Column("Containers", lambda o: containers_cells(get_tpl(o))[0], priority=1,
                  description="Names of each container in the template.")


def images_column(get_tpl) -> Column:
    return Column("Images", lambda o: containers_cells(get_tpl(o))[1], priority=1,
                  description="Images referenced by each container in the template.")


def selector_column(get_sel, description: str = "Selector") -> Column:
    return Column("Selector", lambda o: selector_string(get_sel(o)), priority=1,
                  description=description)


def _tpl(o: dict) -> Any:
    return _spec(o).get("template")


def _sel(o: dict) -> Any:
    return _spec(o).get("selector")


def _scale_selector(o: dict) -> str:
    return selector_string(_sel(o))


def validate_replica_set_template(tpl: Any, ls: Any, path: str, kind_word: str,
                                  restart_allowed: tuple[str, ...] = ("Always",)) -> list[Cause]:
    """ValidatePodTemplateSpecForReplicaSet (also used by DaemonSet/StatefulSet with their own
    activeDeadlineSeconds wording)."""
    out: list[Cause] = []
    if tpl is None:
        return [required(path)]
    lbls = template_labels(tpl)
    if selector_convertible(ls) and not (isinstance(ls, dict) and selector_empty(ls)) \
            and not selector_matches(ls, lbls):
        out.append(invalid_raw(f"{path}.metadata.labels", labels_value(lbls),
                                   "`selector` does not match template `labels`"))
    out += validate_template(tpl, path)
    tspec = template_spec(tpl)
    rp = tspec.get("restartPolicy") or "Always"
    if rp not in restart_allowed:
        out.append(unsupported(f"{path}.spec.restartPolicy", rp, list(restart_allowed)))
    ads = tspec.get("activeDeadlineSeconds")
    if ads is not None:
        out.append(invalid(f"{path}.spec.activeDeadlineSeconds", ads, kind_word))
    return out


# =========================================================================== Deployment
def _deployment_default(obj: dict) -> None:
    spec = _ensure_spec(obj)
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    strategy = _ensure(spec, "strategy")
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        ru = _ensure(strategy, "rollingUpdate")
        if ru.get("maxUnavailable") is None:
            ru["maxUnavailable"] = "25%"
        if ru.get("maxSurge") is None:
            ru["maxSurge"] = "25%"
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    if spec.get("progressDeadlineSeconds") is None:
        spec["progressDeadlineSeconds"] = 600
    tpl = spec.get("template")
    if not isinstance(tpl, dict):
        tpl = spec["template"] = {}
    default_template(tpl)


def _validate_deployment_strategy(strategy: Any, path: str) -> list[Cause]:
    if not isinstance(strategy, dict):
        strategy = {}
    t = strategy.get("type")
    ru = strategy.get("rollingUpdate")
    if t == "Recreate":
        if ru is not None:
            return [forbidden(f"{path}.rollingUpdate",
                              "may not be specified when strategy `type` is 'Recreate'")]
        return []
    if t == "RollingUpdate":
        if not isinstance(ru, dict):
            return [Cause(f"{path}.rollingUpdate", "Required value: this should be defaulted and "
                          "never be nil", "FieldValueRequired")]
        p = f"{path}.rollingUpdate"
        mu, ms = ru.get("maxUnavailable", 0), ru.get("maxSurge", 0)
        out = validate_positive_int_or_percent(mu, f"{p}.maxUnavailable")
        out += validate_positive_int_or_percent(ms, f"{p}.maxSurge")
        if int_or_percent_value(mu) == 0 and int_or_percent_value(ms) == 0:
            out.append(invalid_raw(f"{p}.maxUnavailable", intstr_value(mu),
                                   "may not be 0 when `maxSurge` is 0"))
        out += not_more_than_100_percent(mu, f"{p}.maxUnavailable")
        return out
    go = (f"apps.DeploymentStrategy{{Type:{_go_str(t or '')}, "
          f"RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}}")
    return [unsupported_raw(path, render(strategy, go), ["Recreate", "RollingUpdate"])]


def _deployment_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    spec = _spec(obj)
    out += non_negative("spec.replicas", spec.get("replicas"))
    ls = spec.get("selector")
    out += validate_workload_selector(ls, "spec.selector", "empty selector is invalid for deployment")
    if not selector_convertible(ls):
        out.append(invalid_raw("spec.selector", selector_value(ls), "invalid label selector"))
    else:
        out += validate_replica_set_template(spec.get("template"), ls, "spec.template",
                                             "activeDeadlineSeconds in ReplicaSet is not Supported")
    out += _validate_deployment_strategy(spec.get("strategy"), "spec.strategy")
    mrs = spec.get("minReadySeconds")
    out += non_negative("spec.minReadySeconds", mrs)
    out += non_negative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    pds = spec.get("progressDeadlineSeconds")
    if pds is not None:
        out += non_negative("spec.progressDeadlineSeconds", pds)
        if is_int(pds) and pds <= _int(mrs):
            out.append(invalid("spec.progressDeadlineSeconds", pds,
                               "must be greater than minReadySeconds"))
    if old is not None:
        out += immutable_selector(ls, _spec(old).get("selector"))
    return out


KINDS.add(Kind(
    "Deployment", "deployments", group="apps", version="v1", short_names=("deploy",),
    categories=("all",), subresources=("status", "scale"), has_generation=True,
    default=_deployment_default, validate=_deployment_validate,
    scale=ScaleSpec(selector=_scale_selector), proto="k8s.io.api.apps.v1.Deployment",
    columns=[
        NAME_COLUMN,
        Column("Ready", lambda o: f"{_int(_status(o).get('readyReplicas'))}/"
                                  f"{_int(_spec(o).get('replicas'), 1)}",
               description="Number of the pod with ready state"),
        Column("Up-to-date", lambda o: _int(_status(o).get("updatedReplicas")), type="integer",
               description="Total number of non-terminated pods targeted by this deployment "
                           "that have the desired template spec."),
        Column("Available", lambda o: _int(_status(o).get("availableReplicas")), type="integer",
               description="Total number of available pods (ready for at least minReadySeconds) "
                           "targeted by this deployment."),
        AGE_COLUMN,
        containers_column(_tpl), images_column(_tpl),
        selector_column(_sel, "Label selector for pods. Existing ReplicaSets whose pods are "
                              "selected by this will be the ones affected by this deployment."),
    ]))


# =========================================================================== ReplicaSet
def _replicaset_default(obj: dict) -> None:
    spec = _ensure_spec(obj)
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    tpl = spec.get("template")
    if not isinstance(tpl, dict):
        tpl = spec["template"] = {}
    default_template(tpl)
    _ensure(obj, "status").setdefault("replicas", 0)


def _replicaset_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    spec = _spec(obj)
    out += non_negative("spec.replicas", spec.get("replicas"))
    out += non_negative("spec.minReadySeconds", spec.get("minReadySeconds"))
    ls = spec.get("selector")
    # (sic) Kubernetes says "deployment" here too
    out += validate_workload_selector(ls, "spec.selector", "empty selector is invalid for deployment")
    if not selector_convertible(ls):
        out.append(invalid_raw("spec.selector", selector_value(ls), "invalid label selector"))
    else:
        out += validate_replica_set_template(spec.get("template"), ls, "spec.template",
                                             "activeDeadlineSeconds in ReplicaSet is not Supported")
    if old is not None:
        out += immutable_selector(ls, _spec(old).get("selector"))
    return out


KINDS.add(Kind(
    "ReplicaSet", "replicasets", group="apps", version="v1", short_names=("rs",),
    categories=("all",), subresources=("status", "scale"), has_generation=True,
    default=_replicaset_default, validate=_replicaset_validate,
    scale=ScaleSpec(selector=_scale_selector), proto="k8s.io.api.apps.v1.ReplicaSet",
    field_labels=lambda o: {"status.replicas": str(_int(_status(o).get("replicas")))},
    columns=[
        NAME_COLUMN,
        Column("Desired", lambda o: _int(_spec(o).get("replicas"), 1), type="integer",
               description="Replicas is the number of desired pods."),
        Column("Current", lambda o: _int(_status(o).get("replicas")), type="integer",
               description="Replicas is the most recently observed number of replicas."),
        Column("Ready", lambda o: _int(_status(o).get("readyReplicas")), type="integer",
               description="The number of ready replicas for this replica set."),
        AGE_COLUMN,
        containers_column(_tpl), images_column(_tpl),
        selector_column(_sel, "Selector is a label query over pods that should match the "
                              "replica count."),
    ]))


# =========================================================================== StatefulSet
def _statefulset_default(obj: dict) -> None:
    spec = _ensure_spec(obj)
    if not spec.get("podManagementPolicy"):
        spec["podManagementPolicy"] = "OrderedReady"
    us = _ensure(spec, "updateStrategy")
    if not us.get("type"):
        us["type"] = "RollingUpdate"
        if us.get("rollingUpdate") is None:
            us["rollingUpdate"] = {}
    if us["type"] == "RollingUpdate" and isinstance(us.get("rollingUpdate"), dict) \
            and us["rollingUpdate"].get("partition") is None:
        us["rollingUpdate"]["partition"] = 0
    pol = _ensure(spec, "persistentVolumeClaimRetentionPolicy")
    if not pol.get("whenDeleted"):
        pol["whenDeleted"] = "Retain"
    if not pol.get("whenScaled"):
        pol["whenScaled"] = "Retain"
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    tpl = spec.get("template")
    if not isinstance(tpl, dict):
        tpl = spec["template"] = {}
    default_template(tpl)
    for pvc in spec.get("volumeClaimTemplates") or []:
        if not isinstance(pvc, dict):
            continue
        pvc.setdefault("apiVersion", "v1")
        pvc.setdefault("kind", "PersistentVolumeClaim")
        pspec = _ensure(pvc, "spec")
        if not pspec.get("volumeMode"):
            pspec["volumeMode"] = "Filesystem"
        pst = _ensure(pvc, "status")
        if not pst.get("phase"):
            pst["phase"] = "Pending"
    st = _ensure(obj, "status")
    st.setdefault("replicas", 0)
    st.setdefault("availableReplicas", 0)


_STS_MUTABLE = ("replicas", "template", "updateStrategy", "minReadySeconds", "ordinals",
                "persistentVolumeClaimRetentionPolicy")


def _with_claim_volumes(spec: dict) -> Any:
    """The template as its pods will be: every volumeClaimTemplate becomes a volume (a PVC
    per pod), so mounts naming a claim template resolve during validation."""
    tpl = spec.get("template")
    claims = spec.get("volumeClaimTemplates")
    if not isinstance(tpl, dict) or not isinstance(claims, list) or not claims:
        return tpl
    tpl = copy.deepcopy(tpl)
    pod_spec = tpl.get("spec")
    if not isinstance(pod_spec, dict):
        return tpl
    vols = pod_spec.get("volumes") if isinstance(pod_spec.get("volumes"), list) else []
    have = {v.get("name") for v in vols if isinstance(v, dict)}
    for c in claims:
        name = ((c or {}).get("metadata") or {}).get("name") if isinstance(c, dict) else None
        if name and name not in have:
            vols = vols + [{"name": name, "persistentVolumeClaim": {"claimName": name}}]
    pod_spec["volumes"] = vols
    return tpl


def _statefulset_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True,
                      name_fn=dns1123_label if old is None else _any_name)
    spec = _spec(obj)
    pmp = spec.get("podManagementPolicy")
    if not pmp:
        out.append(required("spec.podManagementPolicy"))
    elif pmp not in ("OrderedReady", "Parallel"):
        out.append(invalid("spec.podManagementPolicy", pmp, "must be 'OrderedReady' or 'Parallel'"))
    us = spec.get("updateStrategy") if isinstance(spec.get("updateStrategy"), dict) else {}
    ust, ru = us.get("type"), us.get("rollingUpdate")
    if not ust:
        out.append(required("spec.updateStrategy"))
    elif ust == "OnDelete":
        if ru is not None:
            out.append(invalid_raw(
                "spec.updateStrategy.rollingUpdate",
                render(ru, "&apps.RollingUpdateStatefulSetStrategy{Partition:"
                           f"{_int((ru or {}).get('partition'))}, MaxUnavailable:"
                           "(*intstr.IntOrString)(nil)}"),
                "only allowed for updateStrategy 'RollingUpdate'"))
    elif ust == "RollingUpdate":
        if isinstance(ru, dict):
            p = "spec.updateStrategy.rollingUpdate"
            out += non_negative(f"{p}.partition", ru.get("partition"))
            mu = ru.get("maxUnavailable")
            if mu is not None:
                out += validate_positive_int_or_percent(mu, f"{p}.maxUnavailable")
                if int_or_percent_value(mu) == 0:
                    out.append(invalid_raw(f"{p}.maxUnavailable", intstr_value(mu), "cannot be 0"))
                out += not_more_than_100_percent(mu, f"{p}.maxUnavailable")
    else:
        go = (f"apps.StatefulSetUpdateStrategy{{Type:{_go_str(ust)}, "
              f"RollingUpdate:(*apps.RollingUpdateStatefulSetStrategy)(nil)}}")
        out.append(invalid_raw("spec.updateStrategy", render(us, go),
                               "must be 'RollingUpdate' or 'OnDelete'"))
    pol = spec.get("persistentVolumeClaimRetentionPolicy")
    if isinstance(pol, dict):
        for k in ("whenDeleted", "whenScaled"):
            v = pol.get(k)
            if v not in ("Retain", "Delete"):
                out.append(unsupported(f"spec.persistentVolumeClaimRetentionPolicy.{k}",
                                       v or "", ["Delete", "Retain"]))
    out += non_negative("spec.replicas", spec.get("replicas"))
    out += non_negative("spec.minReadySeconds", spec.get("minReadySeconds"))
    ords = spec.get("ordinals")
    if isinstance(ords, dict):
        out += non_negative("spec.ordinals.start", ords.get("start", 0))
    ls = spec.get("selector")
    out += validate_workload_selector(ls, "spec.selector",
                                      "empty selector is not valid for statefulset.")
    if not selector_convertible(ls):
        out.append(invalid_raw("spec.selector", selector_value(ls), ""))
    else:
        out += validate_replica_set_template(_with_claim_volumes(spec), ls,
                                             "spec.template",
                                             "must not be specified")
    out += non_negative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    for i, pvc in enumerate(spec.get("volumeClaimTemplates") or []):
        name = ((pvc or {}).get("metadata") or {}).get("name") if isinstance(pvc, dict) else None
        if not name:
            out.append(Cause(f"spec.volumeClaimTemplates[{i}].metadata.name",
                             "Required value: name or generateName is required",
                             "FieldValueRequired"))
    if old is not None:
        ospec = _spec(old)
        a = {k: v for k, v in spec.items() if k not in _STS_MUTABLE}
        b = {k: v for k, v in ospec.items() if k not in _STS_MUTABLE}
        if not semantic_equal(a, b):
            out.append(forbidden("spec", "updates to statefulset spec for fields other than "
                                 "'replicas', 'ordinals', 'template', 'updateStrategy', "
                                 "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' "
                                 "are forbidden"))
    return out


def _any_name(field: str, value: Any) -> list[Cause]:
    # names cannot change on update; StatefulSets created when subdomains were allowed must
    # still pass update validation
    return []


KINDS.add(Kind(
    "StatefulSet", "statefulsets", group="apps", version="v1", short_names=("sts",),
    categories=("all",), subresources=("status", "scale"), has_generation=True,
    default=_statefulset_default, validate=_statefulset_validate,
    scale=ScaleSpec(selector=_scale_selector), proto="k8s.io.api.apps.v1.StatefulSet",
    columns=[
        NAME_COLUMN,
        Column("Ready", lambda o: f"{_int(_status(o).get('readyReplicas'))}/"
                                  f"{_int(_spec(o).get('replicas'), 1)}",
               description="Number of the pod with ready state"),
        AGE_COLUMN,
        containers_column(_tpl), images_column(_tpl),
    ]))


# =========================================================================== DaemonSet
def _daemonset_default(obj: dict) -> None:
    spec = _ensure_spec(obj)
    us = _ensure(spec, "updateStrategy")
    if not us.get("type"):
        us["type"] = "RollingUpdate"
    if us["type"] == "RollingUpdate":
        ru = _ensure(us, "rollingUpdate")
        if ru.get("maxUnavailable") is None:
            ru["maxUnavailable"] = 1
        if ru.get("maxSurge") is None:
            ru["maxSurge"] = 0
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    tpl = spec.get("template")
    if not isinstance(tpl, dict):
        tpl = spec["template"] = {}
    default_template(tpl)
    st = _ensure(obj, "status")
    for k in ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled",
              "numberReady"):
        st.setdefault(k, 0)


def _daemonset_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    spec = _spec(obj)
    ls = spec.get("selector")
    if ls is None:
        out.append(required("spec.selector"))
    out += validate_label_selector(ls, "spec.selector")
    tpl = spec.get("template")
    if selector_convertible(ls) and not (isinstance(ls, dict) and selector_empty(ls)) \
            and not selector_matches(ls, template_labels(tpl)):
        out.append(invalid_raw("spec.template.metadata.labels", labels_value(template_labels(tpl)),
                               "`selector` does not match template `labels`"))
    if isinstance(ls, dict) and selector_empty(ls):
        out.append(invalid_raw("spec.selector", selector_value(ls),
                               "empty selector is invalid for daemonset"))
    out += validate_template(tpl, "spec.template")
    tspec = template_spec(tpl)
    rp = tspec.get("restartPolicy") or "Always"
    if rp != "Always":
        out.append(unsupported("spec.template.spec.restartPolicy", rp, ["Always"]))
    if tspec.get("activeDeadlineSeconds") is not None:
        out.append(invalid("spec.template.spec.activeDeadlineSeconds",
                           tspec["activeDeadlineSeconds"],
                           "activeDeadlineSeconds in DaemonSet is not Supported"))
    out += non_negative("spec.minReadySeconds", spec.get("minReadySeconds"))
    us = spec.get("updateStrategy") if isinstance(spec.get("updateStrategy"), dict) else {}
    t = us.get("type")
    if t == "RollingUpdate":
        ru = us.get("rollingUpdate")
        p = "spec.updateStrategy.rollingUpdate"
        if not isinstance(ru, dict):
            out.append(required(p))
        else:
            mu, ms = ru.get("maxUnavailable", 0), ru.get("maxSurge", 0)
            out += validate_positive_int_or_percent(mu, f"{p}.maxUnavailable")
            out += validate_positive_int_or_percent(ms, f"{p}.maxSurge")
            out += not_more_than_100_percent(mu, f"{p}.maxUnavailable")
            out += not_more_than_100_percent(ms, f"{p}.maxSurge")
            has_u, has_s = int_or_percent_value(mu) != 0, int_or_percent_value(ms) != 0
            if has_u and has_s:
                out.append(invalid_raw(f"{p}.maxSurge", intstr_value(ms),
                                       "may not be set when maxUnavailable is non-zero"))
            elif not has_u and not has_s:
                out.append(Cause(f"{p}.maxUnavailable",
                                 "Required value: cannot be 0 when maxSurge is 0",
                                 "FieldValueRequired"))
    elif t != "OnDelete":
        go = (f"apps.DaemonSetUpdateStrategy{{Type:{_go_str(t or '')}, "
              f"RollingUpdate:(*apps.RollingUpdateDaemonSet)(nil)}}")
        out.append(unsupported_raw("spec.updateStrategy", render(us, go),
                                   ["OnDelete", "RollingUpdate"]))
    out += non_negative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    if old is not None:
        out += immutable_selector(ls, _spec(old).get("selector"))
    return out


KINDS.add(Kind(
    "DaemonSet", "daemonsets", group="apps", version="v1", short_names=("ds",),
    categories=("all",), subresources=("status",), has_generation=True,
    default=_daemonset_default, validate=_daemonset_validate,
    proto="k8s.io.api.apps.v1.DaemonSet",
    columns=[
        NAME_COLUMN,
        Column("Desired", lambda o: _int(_status(o).get("desiredNumberScheduled")),
               type="integer", description="The total number of nodes that should be running "
                                           "the daemon pod."),
        Column("Current", lambda o: _int(_status(o).get("currentNumberScheduled")),
               type="integer", description="The number of nodes that are running at least 1 "
                                           "daemon pod and are supposed to run the daemon pod."),
        Column("Ready", lambda o: _int(_status(o).get("numberReady")), type="integer",
               description="The number of nodes that should be running the daemon pod and have "
                           "one or more of the daemon pod running with a Ready Condition."),
        Column("Up-to-date", lambda o: _int(_status(o).get("updatedNumberScheduled")),
               type="integer", description="The total number of nodes that are running updated "
                                           "daemon pod"),
        Column("Available", lambda o: _int(_status(o).get("numberAvailable")), type="integer",
               description="The number of nodes that should be running the daemon pod and have "
                           "one or more of the daemon pod running and available"),
        Column("Node Selector", lambda o: format_labels(template_spec(_tpl(o)).get("nodeSelector")),
               description="NodeSelector is a selector which must be true for the pod to fit on "
                           "a node."),
        AGE_COLUMN,
        containers_column(_tpl), images_column(_tpl),
        selector_column(_sel, "A label query over pods that are managed by the daemon set."),
    ]))


# =========================================================================== ControllerRevision
def _controller_of(o: dict) -> str:
    """printControllerRevision's CONTROLLER cell: `statefulset.apps/web` or `<none>`."""
    for ref in (o.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            group = str(ref.get("apiVersion", "")).rpartition("/")[0]
            kind = str(ref.get("kind", ""))
            if not kind and not group:
                return str(ref.get("name", ""))
            gk = f"{kind}.{group}" if group else kind
            return f"{gk.lower()}/{ref.get('name', '')}"
    return "<none>"


def _controllerrevision_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    if obj.get("data") is None:
        out.append(Cause("data", "Required value: data is mandatory", "FieldValueRequired"))
    out += non_negative("revision", obj.get("revision", 0))
    if old is not None and not semantic_equal(obj.get("data"), old.get("data")):
        out.append(invalid_raw("data", _json(obj.get("data")), "field is immutable"))
    return out


KINDS.add(Kind(
    "ControllerRevision", "controllerrevisions", group="apps", version="v1",
    validate=_controllerrevision_validate, proto="k8s.io.api.apps.v1.ControllerRevision",
    columns=[
        NAME_COLUMN,
        Column("Controller", _controller_of, description="Controller of the object"),
        Column("Revision", lambda o: _int(o.get("revision")), type="integer",
               description="Revision indicates the revision of the state represented by Data."),
        AGE_COLUMN,
    ]))


__all__ = [
    "VALUE_STYLE",
    "containers_cells",
    "containers_column",
    "default_template",
    "format_labels",
    "go_intstr",
    "go_label_selector",
    "go_string_map",
    "images_column",
    "immutable_selector",
    "int_or_percent_value",
    "intstr_value",
    "invalid_raw",
    "labels_value",
    "not_more_than_100_percent",
    "render",
    "selector_column",
    "selector_convertible",
    "selector_empty",
    "selector_matches",
    "selector_string",
    "selector_value",
    "semantic_equal",
    "template_labels",
    "template_spec",
    "unsupported_raw",
    "validate_label_selector",
    "validate_positive_int_or_percent",
    "validate_template",
]
