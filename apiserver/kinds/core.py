"""core/v1 kinds."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from typing import Any

from ..errors import Cause
from . import AGE_COLUMN, KINDS, NAME_COLUMN, Column, Kind, ScaleSpec, human_age
from .common import (
    annotations,
    dns1035_label,
    dns1123_label,
    dns1123_subdomain,
    duplicate,
    forbidden,
    immutable,
    invalid,
    is_int,
    json_copy,
    labels,
    object_meta,
    q,
    set_default,
    type_error,
    unsupported,
)


def _namespace_default(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    fin = spec.get("finalizers")
    if fin is None:
        spec["finalizers"] = ["kubernetes"]
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Active")
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
        obj["metadata"].get("name", "")


def _namespace_hold(obj: dict) -> bool:
    """A namespace is deleted only after the namespace controller emptied it and removed
    the "kubernetes" finalizer (namespaces/finalize); until then it is Terminating."""
    if (obj.get("spec") or {}).get("finalizers"):
        obj.setdefault("status", {})["phase"] = "Terminating"
        return True
    return False


def _namespace_validate(obj: dict, old: dict | None) -> list[Cause]:
    return object_meta(obj, namespaced=False, name_fn=dns1123_label)


KINDS.add(Kind(
    "Namespace", "namespaces", namespaced=False, short_names=("ns",),
    subresources=("status", "finalize"), default=_namespace_default,
    hold_on_delete=_namespace_hold,
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


# ====================================================================== shared helpers
# Field errors the way apimachinery's field.Error renders them (ErrorBody): strings %q, numbers
# plain, maps and lists Go's %#v.

def go_repr(v: Any, nil: str = "map[string]string(nil)") -> str:
    """Go's %#v for the values field errors carry: map[string]string, []string, scalars."""
    if v is None:
        return nil
    if isinstance(v, dict):
        return "map[string]string{" + ", ".join(
            f"{q(str(k))}:{q(val) if isinstance(val, str) else str(val)}"
            for k, val in sorted(v.items())) + "}"
    if isinstance(v, list):
        return "[]string{" + ", ".join(q(x) if isinstance(x, str) else str(x) for x in v) + "}"
    return q(v)


def _inv(field: str, rendered: str, msg: str) -> Cause:
    """Invalid value with a value already rendered (maps, lists)."""
    return Cause(field, f"Invalid value: {rendered}: {msg}", "FieldValueInvalid")


def _req(field: str, detail: str = "") -> Cause:
    return Cause(field, "Required value" + (f": {detail}" if detail else ""),
                 "FieldValueRequired")


def _not_found(field: str, value: Any) -> Cause:
    return Cause(field, f"Not found: {q(value)}", "FieldValueNotFound")


def _lst(v: Any) -> list:
    return v if isinstance(v, list) else []


def _dct(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _int(v: Any, default: int = 0) -> int:
    return v if is_int(v) else default


def format_labels(m: dict | None) -> str:
    """labels.FormatLabels: "a=b,c=d" sorted, "<none>" when empty."""
    if not m:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(m.items()))


def selector_string(m: dict | None) -> str:
    """labels.SelectorFromSet(m).String(): "a=b,c=d" sorted, "" when empty."""
    return ",".join(f"{k}={v}" for k, v in sorted((m or {}).items()))


def selector_mismatch(template_path: str, template_labels: dict | None) -> Cause:
    """`<path>.metadata.labels: Invalid value: map[...]: `selector` does not match template
    `labels`` — as ReplicationController, ReplicaSet, Deployment, DaemonSet... report it."""
    return _inv(f"{template_path}.metadata.labels", go_repr(template_labels),
                "`selector` does not match template `labels`")


def _valid_ip(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        ipaddress.ip_address(v)
        return True
    except ValueError:
        return False


IP_MSG = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
FILE_MODE_MSG = "must be a number between 0 and 0777 (octal), both inclusive"
PROTOCOLS = ["SCTP", "TCP", "UDP"]


def _port_name_errors(name: str) -> list[str]:
    """validation.IsValidPortName (IANA_SVC_NAME)."""
    errs = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not re.match(r"^[-a-z0-9]+$", name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    elif not re.search(r"[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name and (name[0] == "-" or name[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _port_num(field: str, v: Any) -> list[Cause]:
    """validation.IsValidPortNum on an int32 (missing counts as 0)."""
    if v is None:
        v = 0
    if not is_int(v):
        return [type_error(field, v, "an integer")]
    if not 1 <= v <= 65535:
        return [invalid(field, v, "must be between 1 and 65535, inclusive")]
    return []


def _port_num_or_name(field: str, v: Any) -> list[Cause]:
    """ValidatePortNumOrName for an IntOrString."""
    if isinstance(v, str):
        return [invalid(field, v, m) for m in _port_name_errors(v)]
    return _port_num(field, v)


def _nonneg(field: str, v: Any) -> list[Cause]:
    if v is None:
        return []
    if not is_int(v):
        return [type_error(field, v, "an integer")]
    if v < 0:
        return [invalid(field, v, "must be greater than or equal to 0")]
    return []


def _qualified_name(field: str, v: str) -> list[Cause]:
    from kubelab.selectors import label_key_errors
    return [invalid(field, v, m) for m in label_key_errors(v)]


def _access_modes(modes: Any) -> str:
    """helper.GetAccessModesAsString."""
    modes = _lst(modes)
    out = []
    for mode, short in (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"),
                        ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")):
        if mode in modes:
            out.append(short)
    return ",".join(out)


def parse_quantity(v: Any) -> float:
    """resource.Quantity → float. (common.parse_quantity mis-parses plain numbers such as "1":
    an empty suffix passes its `in "eE"` test; handled here until that is fixed.)"""
    from .common import parse_quantity as _common_parse
    if isinstance(v, str) and re.match(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$", v.strip()):
        return float(v)
    return _common_parse(v)


def _ts_since(ts: str | None) -> str:
    return human_age(ts)


# ====================================================================== pod spec: defaults

def _image_tag(image: Any) -> str:
    """The tag parsers.ParseImageName gives: "latest" when neither tag nor digest, "" when the
    reference does not parse (kubelet's ImagePullPolicy defaulting then picks IfNotPresent)."""
    if not isinstance(image, str) or not image or image != image.strip():
        return ""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    repo, tag = name, ""
    if ":" in last:
        tag = last.split(":", 1)[1]
        repo = name[: len(name) - len(tag) - 1]
    path = repo.split("/", 1)[1] if "/" in repo and ("." in repo.split("/")[0] or ":" in
                                                      repo.split("/")[0]) else repo
    if path != path.lower() or not path:
        return ""
    if not tag and not digest:
        return "latest"
    return tag


def _default_http_get(h: Any) -> None:
    if isinstance(h, dict):
        if not h.get("path"):
            h["path"] = "/"
        set_default(h, "scheme", "HTTP")


def _default_handler(h: Any) -> None:
    if isinstance(h, dict):
        _default_http_get(h.get("httpGet"))


def _default_probe(p: Any) -> None:
    if not isinstance(p, dict):
        return
    for k, v in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                 ("failureThreshold", 3)):
        if not p.get(k):
            p[k] = v
    _default_handler(p)


def _default_field_ref(ref: Any) -> None:
    if isinstance(ref, dict) and not ref.get("apiVersion"):
        ref["apiVersion"] = "v1"


def _default_resource_field_ref(ref: Any) -> None:
    if isinstance(ref, dict) and ref.get("divisor") is None:
        ref["divisor"] = "0"


def _default_container(c: Any) -> None:
    """SetDefaults_Container, _ContainerPort, _Probe, _HTTPGetAction, _ObjectFieldSelector."""
    if not isinstance(c, dict):
        return
    if not c.get("imagePullPolicy"):
        c["imagePullPolicy"] = "Always" if _image_tag(c.get("image")) == "latest" \
            else "IfNotPresent"
    if not c.get("terminationMessagePath"):
        c["terminationMessagePath"] = "/dev/termination-log"
    if not c.get("terminationMessagePolicy"):
        c["terminationMessagePolicy"] = "File"
    if not isinstance(c.get("resources"), dict):
        c["resources"] = {}
    for p in _lst(c.get("ports")):
        if isinstance(p, dict) and not p.get("protocol"):
            p["protocol"] = "TCP"
    for e in _lst(c.get("env")):
        vf = _dct(_dct(e).get("valueFrom"))
        _default_field_ref(vf.get("fieldRef"))
        _default_resource_field_ref(vf.get("resourceFieldRef"))
    for k in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(k))
    lc = _dct(c.get("lifecycle"))
    for k in ("postStart", "preStop"):
        _default_handler(lc.get(k))


def _default_volume(v: Any) -> None:
    """SetDefaults_Volume (no source → emptyDir) and the per-source defaults."""
    if not isinstance(v, dict):
        return
    if not any(k in VOLUME_SOURCES and v.get(k) is not None for k in v):
        v["emptyDir"] = {}
    for k in ("secret", "configMap", "downwardAPI", "projected"):
        src = v.get(k)
        if isinstance(src, dict) and src.get("defaultMode") is None:
            src["defaultMode"] = 420
    hp = v.get("hostPath")
    if isinstance(hp, dict) and hp.get("type") is None:
        hp["type"] = ""
    for item in _lst(_dct(v.get("downwardAPI")).get("items")):
        _default_field_ref(_dct(item).get("fieldRef"))
        _default_resource_field_ref(_dct(item).get("resourceFieldRef"))
    for src in _lst(_dct(v.get("projected")).get("sources")):
        src = _dct(src)
        sat = src.get("serviceAccountToken")
        if isinstance(sat, dict) and sat.get("expirationSeconds") is None:
            sat["expirationSeconds"] = 3600
        for item in _lst(_dct(src.get("downwardAPI")).get("items")):
            _default_field_ref(_dct(item).get("fieldRef"))
            _default_resource_field_ref(_dct(item).get("resourceFieldRef"))


def default_pod_spec(spec: dict) -> None:
    """SetDefaults_PodSpec and everything below it, as for any pod spec (pods and templates).
    Pod-only defaults (enableServiceLinks, requests from limits, admission) are in the Pod kind."""
    if not isinstance(spec, dict):
        return
    if not spec.get("dnsPolicy"):
        spec["dnsPolicy"] = "ClusterFirst"
    if not spec.get("restartPolicy"):
        spec["restartPolicy"] = "Always"
    if not isinstance(spec.get("securityContext"), dict):
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = 30
    if not spec.get("schedulerName"):
        spec["schedulerName"] = "default-scheduler"
    # v1 conversion: serviceAccount is the deprecated alias of serviceAccountName
    if not spec.get("serviceAccountName") and spec.get("serviceAccount"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    for v in _lst(spec.get("volumes")):
        _default_volume(v)
    for k in ("initContainers", "containers", "ephemeralContainers"):
        for c in _lst(spec.get(k)):
            _default_container(c)


def default_pod_template(tpl: dict) -> None:
    """Defaults of a PodTemplateSpec (Deployment/ReplicaSet/Job/... spec.template)."""
    if not isinstance(tpl, dict):
        return
    md = tpl.get("metadata")
    if not isinstance(md, dict):
        md = tpl["metadata"] = {}
    md.setdefault("creationTimestamp", None)  # what 1.32 serializes for template metadata
    spec = tpl.get("spec")
    if not isinstance(spec, dict):
        spec = tpl["spec"] = {}
    default_pod_spec(spec)


def _default_requests_from_limits(c: Any) -> None:
    res = _dct(_dct(c).get("resources"))
    limits = res.get("limits")
    if isinstance(limits, dict) and limits:
        req = res.get("requests")
        if not isinstance(req, dict):
            req = res["requests"] = {}
        for k, v in limits.items():
            req.setdefault(k, v)


NOT_READY_TOLERATION = {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                        "effect": "NoExecute", "tolerationSeconds": 300}
UNREACHABLE_TOLERATION = {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                          "effect": "NoExecute", "tolerationSeconds": 300}
SYSTEM_PRIORITIES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}


def _qos_resources(c: dict, key: str) -> dict[str, float]:
    out = {}
    for name, v in _dct(_dct(c.get("resources")).get(key)).items():
        if name not in ("cpu", "memory"):
            continue
        try:
            val = parse_quantity(v)
        except ValueError:
            continue
        if val > 0:
            out[name] = val
    return out


def pod_qos_class(spec: dict) -> str:
    """qos.ComputePodQOS: Guaranteed / Burstable / BestEffort."""
    requests: dict[str, float] = {}
    limits: dict[str, float] = {}
    guaranteed = True
    for c in _lst(spec.get("containers")) + _lst(spec.get("initContainers")):
        if not isinstance(c, dict):
            continue
        for k, v in _qos_resources(c, "requests").items():
            requests[k] = requests.get(k, 0) + v
        lim = _qos_resources(c, "limits")
        for k, v in lim.items():
            limits[k] = limits.get(k, 0) + v
        if not {"cpu", "memory"} <= set(lim):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed:
        for k, v in requests.items():
            if k not in limits or abs(limits[k] - v) > 1e-12 * max(1.0, v):
                guaranteed = False
                break
    if guaranteed and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


def _pod_default(obj: dict) -> None:
    spec = obj.get("spec")
    if spec is None:
        spec = obj["spec"] = {}
    if not isinstance(spec, dict):
        return
    # SetDefaults_Pod: requests default to limits, per resource; enableServiceLinks; host ports
    for k in ("containers", "initContainers"):
        for c in _lst(spec.get(k)):
            _default_requests_from_limits(c)
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = True
    if spec.get("hostNetwork"):
        for k in ("containers", "initContainers"):
            for c in _lst(spec.get(k)):
                for p in _lst(_dct(c).get("ports")):
                    if isinstance(p, dict) and not p.get("hostPort") and \
                            is_int(p.get("containerPort")):
                        p["hostPort"] = p["containerPort"]
    default_pod_spec(spec)
    # ServiceAccount admission
    if not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = "default"
    spec["serviceAccount"] = spec["serviceAccountName"]
    # Priority admission (no global default PriorityClass)
    if spec.get("priority") is None:
        spec["priority"] = SYSTEM_PRIORITIES.get(spec.get("priorityClassName") or "", 0)
    if not spec.get("preemptionPolicy"):
        spec["preemptionPolicy"] = "PreemptLowerPriority"
    # DefaultTolerationSeconds admission
    tols = spec.get("tolerations")
    if not isinstance(tols, list):
        tols = []
    not_ready = unreachable = False
    for t in tols:
        t = _dct(t)
        key, effect = t.get("key") or "", t.get("effect") or ""
        if key in ("node.kubernetes.io/not-ready", "") and effect in ("NoExecute", ""):
            not_ready = True
        if key in ("node.kubernetes.io/unreachable", "") and effect in ("NoExecute", ""):
            unreachable = True
    if not not_ready:
        tols.append(dict(NOT_READY_TOLERATION))
    if not unreachable:
        tols.append(dict(UNREACHABLE_TOLERATION))
    spec["tolerations"] = tols
    # PrepareForCreate: status {phase: Pending, qosClass}
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    if not status.get("phase"):
        status["phase"] = "Pending"
    status["qosClass"] = pod_qos_class(spec)


# ====================================================================== pod spec: validation

VOLUME_SOURCES = (
    "emptyDir", "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "secret",
    "nfs", "iscsi", "glusterfs", "flocker", "persistentVolumeClaim", "rbd", "cinder", "cephfs",
    "downwardAPI", "fc", "flexVolume", "configMap", "azureFile", "vsphereVolume", "quobyte",
    "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO", "projected", "storageos",
    "csi", "ephemeral", "image")
HOST_PATH_TYPES = ["", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File",
                   "FileOrCreate", "Socket"]
ENV_FIELD_PATHS = ["metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
                   "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
                   "status.podIPs"]
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                  "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation "
                  "is '[-._a-zA-Z0-9]+')")


def _name_ref(field: str, v: Any, required_: bool = True) -> list[Cause]:
    """A reference to a ConfigMap/Secret/PVC by name (DNS subdomain)."""
    if not v:
        return [_req(field)] if required_ else []
    return dns1123_subdomain(field, v)


def _key_to_path(items: Any, path: str) -> list[Cause]:
    out = []
    for i, it in enumerate(_lst(items)):
        it = _dct(it)
        p = f"{path}[{i}]"
        if not it.get("key"):
            out.append(_req(f"{p}.key"))
        if not it.get("path"):
            out.append(_req(f"{p}.path"))
        else:
            out += _local_path(f"{p}.path", it["path"])
        m = it.get("mode")
        if m is not None and (not is_int(m) or not 0 <= m <= 0o777):
            out.append(invalid(f"{p}.mode", m, FILE_MODE_MSG))
    return out


def _local_path(field: str, v: Any) -> list[Cause]:
    if not isinstance(v, str):
        return [type_error(field, v, "a string")]
    out = []
    if v.startswith("/"):
        out.append(invalid(field, v, "must be a relative path"))
    if ".." in v.split("/"):
        out.append(invalid(field, v, "must not contain '..'"))
    return out


def _default_mode(field: str, m: Any) -> list[Cause]:
    if m is not None and (not is_int(m) or not 0 <= m <= 0o777):
        return [invalid(field, m, FILE_MODE_MSG)]
    return []


def _validate_volume_source(vol: dict, path: str) -> list[Cause]:
    out: list[Cause] = []
    n = 0
    for k in VOLUME_SOURCES:
        src = vol.get(k)
        if src is None:
            continue
        if n > 0:
            out.append(forbidden(f"{path}.{k}", "may not specify more than 1 volume type"))
            continue
        n += 1
        sp = f"{path}.{k}"
        src = _dct(src)
        if k == "hostPath":
            if not src.get("path"):
                out.append(_req(f"{sp}.path"))
            t = src.get("type")
            if t is not None and t not in HOST_PATH_TYPES:
                out.append(unsupported(f"{sp}.type", t, HOST_PATH_TYPES))
        elif k == "secret":
            if not src.get("secretName"):
                out.append(_req(f"{sp}.secretName"))
            out += _default_mode(f"{sp}.defaultMode", src.get("defaultMode"))
            out += _key_to_path(src.get("items"), f"{sp}.items")
        elif k == "configMap":
            if not src.get("name"):
                out.append(_req(f"{sp}.name"))
            out += _default_mode(f"{sp}.defaultMode", src.get("defaultMode"))
            out += _key_to_path(src.get("items"), f"{sp}.items")
        elif k == "persistentVolumeClaim":
            if not src.get("claimName"):
                out.append(_req(f"{sp}.claimName"))
        elif k == "nfs":
            if not src.get("server"):
                out.append(_req(f"{sp}.server"))
            if not src.get("path"):
                out.append(_req(f"{sp}.path"))
            elif not str(src["path"]).startswith("/"):
                out.append(invalid(f"{sp}.path", src["path"], "must be an absolute path"))
        elif k == "downwardAPI" or k == "projected":
            out += _default_mode(f"{sp}.defaultMode", src.get("defaultMode"))
        elif k == "emptyDir":
            med = src.get("medium")
            if med not in (None, "", "Memory", "HugePages"):
                out.append(unsupported(f"{sp}.medium", med, ["", "Memory", "HugePages"]))
            if src.get("sizeLimit") is not None:
                try:
                    if parse_quantity(src["sizeLimit"]) < 0:
                        out.append(forbidden(f"{sp}.sizeLimit",
                                             "SizeLimit field must be a valid resource quantity"))
                except ValueError as e:
                    out.append(invalid(f"{sp}.sizeLimit", src["sizeLimit"], str(e)))
    if n == 0:
        out.append(_req(path, "must specify a volume type"))
    return out


def _validate_volumes(volumes: Any, path: str) -> tuple[dict[str, dict], list[Cause]]:
    out: list[Cause] = []
    vols: dict[str, dict] = {}
    if volumes is not None and not isinstance(volumes, list):
        return vols, [type_error(path, volumes, "a list")]
    names: set[str] = set()
    for i, vol in enumerate(_lst(volumes)):
        p = f"{path}[{i}]"
        if not isinstance(vol, dict):
            out.append(type_error(p, vol, "an object"))
            continue
        el = _validate_volume_source(vol, p)
        name = vol.get("name")
        if not name:
            el.append(_req(f"{p}.name"))
        else:
            el += dns1123_label(f"{p}.name", name)
        if name in names:
            el.append(duplicate(f"{p}.name", name))
        if not el:
            names.add(name)
            vols[name] = vol
        else:
            out += el
    return vols, out


def _validate_container_ports(ports: Any, path: str) -> list[Cause]:
    out: list[Cause] = []
    names: set[str] = set()
    for i, p in enumerate(_lst(ports)):
        ip = f"{path}[{i}]"
        p = _dct(p)
        name = p.get("name")
        if name:
            errs = _port_name_errors(str(name))
            if errs:
                out += [invalid(f"{ip}.name", name, m) for m in errs]
            elif name in names:
                out.append(duplicate(f"{ip}.name", name))
            else:
                names.add(name)
        cp = p.get("containerPort")
        if not cp:
            out.append(_req(f"{ip}.containerPort"))
        else:
            out += _port_num(f"{ip}.containerPort", cp)
        if p.get("hostPort"):
            out += _port_num(f"{ip}.hostPort", p["hostPort"])
        proto = p.get("protocol")
        if not proto:
            out.append(_req(f"{ip}.protocol"))
        elif proto not in PROTOCOLS:
            out.append(unsupported(f"{ip}.protocol", proto, PROTOCOLS))
    return out


def _env_name_errors(name: str) -> list[str]:
    """validation.IsRelaxedEnvVarName (RelaxedEnvironmentVariableValidation is on in 1.32)."""
    errs = []
    if not name:
        errs.append("environment variable name must be non-empty")
    for ch in name:
        if ord(ch) > 127 or not ch.isprintable() or ch == "=":
            errs.append("a valid environment variable name must consist only of printable "
                        "ASCII characters other than '='")
            break
    return errs


def _validate_env(env: Any, path: str) -> list[Cause]:
    out: list[Cause] = []
    for i, e in enumerate(_lst(env)):
        ip = f"{path}[{i}]"
        e = _dct(e)
        name = e.get("name")
        if not name:
            out.append(_req(f"{ip}.name"))
        if not isinstance(name, str):
            name = ""
        out += [invalid(f"{ip}.name", name, m) for m in _env_name_errors(name)]
        vf = e.get("valueFrom")
        if vf is None:
            continue
        vp = f"{ip}.valueFrom"
        vf = _dct(vf)
        n = 0
        if vf.get("fieldRef") is not None:
            n += 1
            fr = _dct(vf["fieldRef"])
            fp = fr.get("fieldPath")
            if not fp:
                out.append(_req(f"{vp}.fieldRef.fieldPath"))
            elif not (fp in ENV_FIELD_PATHS or re.match(
                    r"^metadata\.(labels|annotations)\['[^']+'\]$", str(fp))):
                out.append(unsupported(f"{vp}.fieldRef.fieldPath", fp, ENV_FIELD_PATHS))
        if vf.get("resourceFieldRef") is not None:
            n += 1
            if not _dct(vf["resourceFieldRef"]).get("resource"):
                out.append(_req(f"{vp}.resourceFieldRef.resource"))
        for ref in ("configMapKeyRef", "secretKeyRef"):
            if vf.get(ref) is not None:
                n += 1
                r = _dct(vf[ref])
                if r.get("name"):
                    out += dns1123_subdomain(f"{vp}.{ref}.name", r["name"])
                key = r.get("key")
                if not key:
                    out.append(_req(f"{vp}.{ref}.key"))
                elif not CONFIG_KEY.match(str(key)) or len(str(key)) > 253:
                    out.append(invalid(f"{vp}.{ref}.key", key, CONFIG_KEY_MSG))
        if n == 0:
            out.append(invalid(vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                                       "`configMapKeyRef` or `secretKeyRef`"))
        elif e.get("value"):
            out.append(invalid(vp, "", "may not be specified when `value` is not empty"))
        elif n > 1:
            out.append(invalid(vp, "", "may not have more than one field specified at a time"))
    return out


def _validate_env_from(env_from: Any, path: str) -> list[Cause]:
    out: list[Cause] = []
    for i, e in enumerate(_lst(env_from)):
        ip = f"{path}[{i}]"
        e = _dct(e)
        n = 0
        for ref in ("configMapRef", "secretRef"):
            if e.get(ref) is not None:
                n += 1
                out += _name_ref(f"{ip}.{ref}.name", _dct(e[ref]).get("name"))
        if n == 0:
            out.append(invalid(path, "", "must specify one of: `configMapRef` or `secretRef`"))
        elif n > 1:
            out.append(invalid(path, "", "may not have more than one field specified at a time"))
    return out


def _validate_volume_mounts(mounts: Any, volumes: dict, path: str) -> list[Cause]:
    out: list[Cause] = []
    seen: set[str] = set()
    for i, m in enumerate(_lst(mounts)):
        ip = f"{path}[{i}]"
        m = _dct(m)
        name = m.get("name")
        if not name:
            out.append(_req(f"{ip}.name"))
        if name not in volumes:
            out.append(_not_found(f"{ip}.name", name or ""))
        mp = m.get("mountPath")
        if not mp:
            out.append(_req(f"{ip}.mountPath"))
        if mp in seen:
            out.append(invalid(f"{ip}.mountPath", mp, "must be unique"))
        seen.add(mp)
        if m.get("subPath"):
            out += _local_path(f"{path}.subPath", m["subPath"])
    return out


STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
INTEGER_RESOURCES = ("pods", "services", "replicationcontrollers", "resourcequotas", "secrets",
                     "configmaps", "persistentvolumeclaims", "services.nodeports",
                     "services.loadbalancers")


def _overcommit_allowed(name: str) -> bool:
    native = "/" not in name or "kubernetes.io/" in name
    return native and not name.startswith("hugepages-")


def _resource_value(name: str, v: Any, field: str) -> tuple[float | None, list[Cause]]:
    """ValidateResourceQuantityValue: parses, non-negative, integer for integer resources."""
    try:
        val = parse_quantity(v)
    except ValueError as e:
        return None, [invalid(field, v, str(e))]
    if val < 0:
        return val, [invalid(field, str(v), "must be greater than or equal to 0")]
    if (name in INTEGER_RESOURCES or ("/" in name and "kubernetes.io/" not in name)) and \
            abs(val - round(val)) > 1e-9:
        return val, [invalid(field, str(v), "must be an integer")]
    return val, []


def _validate_resources(res: Any, path: str) -> list[Cause]:
    out: list[Cause] = []
    res = _dct(res)
    limits = _dct(res.get("limits"))
    requests = _dct(res.get("requests"))

    def name_ok(name: str, field: str) -> list[Cause]:
        if "/" not in name:
            if name not in STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
                return [invalid(field, name, "must be a standard resource for containers")]
            return []
        return _qualified_name(field, name)

    lim_vals = {}
    for name, v in limits.items():
        fp = f"{path}.limits[{name}]"
        out += name_ok(name, fp)
        val, errs = _resource_value(name, v, fp)
        out += errs
        lim_vals[name] = val
    for name, v in requests.items():
        fp = f"{path}.requests[{name}]"
        out += name_ok(name, fp)
        val, errs = _resource_value(name, v, fp)
        out += errs
        if name in limits:
            lv = lim_vals.get(name)
            if val is None or lv is None:
                continue
            if abs(val - lv) > 1e-12 * max(1.0, lv) and not _overcommit_allowed(name):
                out.append(invalid(f"{path}.requests", str(v),
                                   f"must be equal to {name} limit of {limits[name]}"))
            elif val > lv + 1e-12 * max(1.0, lv):
                out.append(invalid(f"{path}.requests", str(v),
                                   f"must be less than or equal to {name} limit of "
                                   f"{limits[name]}"))
        elif not _overcommit_allowed(name):
            out.append(_req(f"{path}.limits",
                            "Limit must be set for non overcommitable resources"))
    return out


def _validate_handler(h: dict, path: str, *, probe: bool) -> list[Cause]:
    out: list[Cause] = []
    n = 0
    kinds = ("exec", "httpGet", "tcpSocket", "grpc") if probe else \
        ("exec", "httpGet", "tcpSocket", "sleep")
    for k in kinds:
        if h.get(k) is None:
            continue
        if n > 0:
            out.append(forbidden(f"{path}.{k}", "may not specify more than 1 handler type"))
            continue
        n += 1
        a = _dct(h[k])
        if k == "exec":
            if not _lst(a.get("command")):
                out.append(_req(f"{path}.exec.command"))
        elif k == "httpGet":
            if not a.get("path"):
                out.append(_req(f"{path}.httpGet.path"))
            out += _port_num_or_name(f"{path}.httpGet.port", a.get("port"))
            sch = a.get("scheme")
            if sch not in ("HTTP", "HTTPS"):
                out.append(unsupported(f"{path}.httpGet.scheme", sch or "", ["HTTP", "HTTPS"]))
        elif k == "tcpSocket":
            out += _port_num_or_name(f"{path}.tcpSocket.port", a.get("port"))
        elif k == "grpc":
            out += _port_num(f"{path}.grpc.port", a.get("port"))
        elif k == "sleep":
            s = a.get("seconds")
            if not is_int(s) or s <= 0:
                out.append(invalid(f"{path}.sleep.seconds", s, "must be greater than 0"))
    if n == 0:
        out.append(_req(path, "must specify a handler type"))
    return out


def _validate_probe(p: Any, path: str, *, one_success: bool) -> list[Cause]:
    if p is None:
        return []
    if not isinstance(p, dict):
        return [type_error(path, p, "an object")]
    out = _validate_handler(p, path, probe=True)
    for k in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
              "failureThreshold"):
        out += _nonneg(f"{path}.{k}", p.get(k))
    tg = p.get("terminationGracePeriodSeconds")
    if tg is not None and (not is_int(tg) or tg <= 0):
        out.append(invalid(f"{path}.terminationGracePeriodSeconds", tg,
                           "must be greater than 0"))
    if one_success and p.get("successThreshold", 1) != 1:
        out.append(invalid(f"{path}.successThreshold", p.get("successThreshold"), "must be 1"))
    return out


def _validate_lifecycle(lc: Any, path: str) -> list[Cause]:
    out: list[Cause] = []
    for k in ("postStart", "preStop"):
        h = _dct(lc).get(k)
        if h is not None:
            out += _validate_handler(_dct(h), f"{path}.{k}", probe=False)
    return out


def _validate_container_common(c: dict, volumes: dict, path: str) -> list[Cause]:
    out: list[Cause] = []
    name = c.get("name")
    if not name:
        out.append(_req(f"{path}.name"))
    else:
        out += dns1123_label(f"{path}.name", name)
    if not c.get("image"):
        out.append(_req(f"{path}.image"))
    tmp = c.get("terminationMessagePolicy")
    if not tmp:
        out.append(_req(f"{path}.terminationMessagePolicy"))
    elif tmp not in ("File", "FallbackToLogsOnError"):
        out.append(unsupported(f"{path}.terminationMessagePolicy", tmp,
                               ["File", "FallbackToLogsOnError"]))
    out += _validate_container_ports(c.get("ports"), f"{path}.ports")
    out += _validate_env(c.get("env"), f"{path}.env")
    out += _validate_env_from(c.get("envFrom"), f"{path}.envFrom")
    out += _validate_volume_mounts(c.get("volumeMounts"), volumes, f"{path}.volumeMounts")
    pp = c.get("imagePullPolicy")
    if not pp:
        out.append(_req(f"{path}.imagePullPolicy"))
    elif pp not in ("Always", "IfNotPresent", "Never"):
        out.append(unsupported(f"{path}.imagePullPolicy", pp,
                               ["Always", "IfNotPresent", "Never"]))
    out += _validate_resources(c.get("resources"), f"{path}.resources")
    return out


def _host_port_conflicts(containers: list, path: str, seen: set[str]) -> list[Cause]:
    """AccumulateUniqueHostPorts."""
    out: list[Cause] = []
    for ci, c in enumerate(containers):
        for pi, p in enumerate(_lst(_dct(c).get("ports"))):
            p = _dct(p)
            hp = p.get("hostPort")
            if not hp:
                continue
            key = f"{p.get('hostIP', '')}/{p.get('protocol', '')}/{hp}"
            if key in seen:
                out.append(duplicate(f"{path}[{ci}].ports[{pi}].hostPort", key))
            else:
                seen.add(key)
    return out


def _validate_containers(containers: Any, volumes: dict, path: str) -> list[Cause]:
    if containers is not None and not isinstance(containers, list):
        return [type_error(path, containers, "a list")]
    containers = _lst(containers)
    out: list[Cause] = []
    if not containers:
        out.append(_req(path))
    names: set[str] = set()
    for i, c in enumerate(containers):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            out.append(type_error(p, c, "an object"))
            continue
        out += _validate_container_common(c, volumes, p)
        name = c.get("name")
        if name in names:
            out.append(duplicate(f"{p}.name", name))
        else:
            names.add(name)
        if c.get("lifecycle") is not None:
            out += _validate_lifecycle(c["lifecycle"], f"{p}.lifecycle")
        out += _validate_probe(c.get("livenessProbe"), f"{p}.livenessProbe", one_success=True)
        out += _validate_probe(c.get("readinessProbe"), f"{p}.readinessProbe",
                               one_success=False)
        out += _validate_probe(c.get("startupProbe"), f"{p}.startupProbe", one_success=True)
        if c.get("restartPolicy") is not None:
            out.append(forbidden(f"{p}.restartPolicy", "may not be set for non-init containers"))
    out += _host_port_conflicts([c for c in containers if isinstance(c, dict)], path, set())
    return out


def _validate_init_containers(inits: Any, others: Any, volumes: dict, path: str) -> list[Cause]:
    if inits is not None and not isinstance(inits, list):
        return [type_error(path, inits, "a list")]
    out: list[Cause] = []
    names = {_dct(c).get("name") for c in _lst(others)}
    for i, c in enumerate(_lst(inits)):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            out.append(type_error(p, c, "an object"))
            continue
        out += _validate_container_common(c, volumes, p)
        always = False
        rp = c.get("restartPolicy")
        if rp is not None:
            if rp != "Always":
                out.append(unsupported(f"{p}.restartPolicy", rp, ["Always"]))
            always = rp == "Always"
        name = c.get("name")
        if name in names:
            out.append(duplicate(f"{p}.name", name))
        elif name:
            names.add(name)
        out += _host_port_conflicts([c], path, set())
        if always:
            if c.get("lifecycle") is not None:
                out += _validate_lifecycle(c["lifecycle"], f"{p}.lifecycle")
            out += _validate_probe(c.get("livenessProbe"), f"{p}.livenessProbe",
                                   one_success=True)
            out += _validate_probe(c.get("readinessProbe"), f"{p}.readinessProbe",
                                   one_success=False)
            out += _validate_probe(c.get("startupProbe"), f"{p}.startupProbe",
                                   one_success=True)
        else:
            msg = "may not be set for init containers without restartPolicy=Always"
            if c.get("lifecycle") is not None:
                out.append(forbidden(f"{p}.lifecycle", msg))
            if c.get("livenessProbe") is not None:
                out.append(forbidden(f"{p}.livenessProbe", msg))
            if c.get("readinessProbe") is not None:
                out.append(forbidden(f"{p}.readinessProbe", "may not be set for init containers"))
            if c.get("startupProbe") is not None:
                out.append(forbidden(f"{p}.startupProbe", msg))
    return out


def _validate_ephemeral_containers(ecs: Any, spec: dict, volumes: dict,
                                   path: str) -> list[Cause]:
    out: list[Cause] = []
    names = {_dct(c).get("name") for c in _lst(spec.get("containers")) +
             _lst(spec.get("initContainers"))}
    for i, c in enumerate(_lst(ecs)):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            out.append(type_error(p, c, "an object"))
            continue
        out += _validate_container_common(c, volumes, p)
        name = c.get("name")
        if name in names:
            out.append(duplicate(f"{p}.name", name))
        else:
            names.add(name)
        for k in ("ports", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle"):
            if c.get(k):
                out.append(forbidden(f"{p}.{k}", "cannot be set for an Ephemeral Container"))
    return out


TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]


def _validate_tolerations(tols: Any, path: str) -> list[Cause]:
    from kubelab.selectors import label_value_errors
    out: list[Cause] = []
    for i, t in enumerate(_lst(tols)):
        p = f"{path}[{i}]"
        t = _dct(t)
        key, op = t.get("key") or "", t.get("operator") or ""
        if key:
            out += _qualified_name(f"{p}.key", key)
        if not key and op != "Exists":
            out.append(invalid(f"{p}.operator", op, "operator must be Exists when `key` is "
                                                    "empty, which means \"match all values "
                                                    "and all keys\""))
        if t.get("tolerationSeconds") is not None and t.get("effect") != "NoExecute":
            out.append(invalid(f"{p}.effect", t.get("effect") or "",
                               "effect must be 'NoExecute' when `tolerationSeconds` is set"))
        if op in ("Equal", ""):
            out += [invalid(f"{p}.operator", t.get("value") or "", m)
                    for m in label_value_errors(str(t.get("value") or ""))]
        elif op == "Exists":
            if t.get("value"):
                out.append(_inv(f"{p}.operator", json.dumps(t, sort_keys=True),
                                "value must be empty when `operator` is 'Exists'"))
        else:
            out.append(unsupported(f"{p}.operator", op, ["Equal", "Exists"]))
        eff = t.get("effect")
        if eff and eff not in TAINT_EFFECTS:
            out.append(unsupported(f"{p}.effect", eff, TAINT_EFFECTS))
    return out


def validate_pod_spec(spec: dict, field_path: str = "spec") -> list[Cause]:
    """ValidatePodSpec, with Kubernetes' field paths under field_path ("spec",
    "spec.template.spec", ...). The spec is expected to be defaulted already."""
    path = field_path
    if not isinstance(spec, dict):
        return [_req(path)] if spec is None else [type_error(path, spec, "an object")]
    out: list[Cause] = []
    volumes, errs = _validate_volumes(spec.get("volumes"), f"{path}.volumes")
    out += errs
    out += _validate_containers(spec.get("containers"), volumes, f"{path}.containers")
    out += _validate_init_containers(spec.get("initContainers"), spec.get("containers"), volumes,
                                     f"{path}.initContainers")
    if spec.get("ephemeralContainers"):
        out += _validate_ephemeral_containers(spec["ephemeralContainers"], spec, volumes,
                                              f"{path}.ephemeralContainers")
    if spec.get("hostNetwork"):
        for k in ("containers", "initContainers"):
            for ci, c in enumerate(_lst(spec.get(k))):
                for pi, p in enumerate(_lst(_dct(c).get("ports"))):
                    p = _dct(p)
                    if p.get("hostPort") and p.get("hostPort") != p.get("containerPort"):
                        out.append(invalid(f"{path}.{k}[{ci}].ports[{pi}].containerPort",
                                           p.get("containerPort"),
                                           "must match `hostPort` when `hostNetwork` is true"))
    rp = spec.get("restartPolicy")
    if not rp:
        out.append(_req(f"{path}.restartPolicy"))
    elif rp not in ("Always", "OnFailure", "Never"):
        out.append(unsupported(f"{path}.restartPolicy", rp, ["Always", "OnFailure", "Never"]))
    dp = spec.get("dnsPolicy")
    if not dp:
        out.append(_req(f"{path}.dnsPolicy"))
    elif dp not in ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"):
        out.append(unsupported(f"{path}.dnsPolicy", dp,
                               ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]))
    out += labels(f"{path}.nodeSelector", spec.get("nodeSelector"))
    for i, s in enumerate(_lst(spec.get("imagePullSecrets"))):
        if not _dct(s).get("name"):
            out.append(_req(f"{path}.imagePullSecrets[{i}].name"))
    if dp == "None" and not isinstance(spec.get("dnsConfig"), dict):
        out.append(_req(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None"))
    dc = spec.get("dnsConfig")
    if isinstance(dc, dict):
        ns = _lst(dc.get("nameservers"))
        if dp == "None" and not ns:
            out.append(_req(f"{path}.dnsConfig.nameservers",
                            "must provide at least one DNS nameserver when `dnsPolicy` is None"))
        if len(ns) > 3:
            out.append(invalid(f"{path}.dnsConfig.nameservers", ns and str(ns),
                               "must not have more than 3 nameservers"))
        for i, n in enumerate(ns):
            if not _valid_ip(n):
                out.append(invalid(f"{path}.dnsConfig.nameservers[{i}]", n, IP_MSG))
    san = spec.get("serviceAccountName")
    if san:
        out += dns1123_subdomain(f"{path}.serviceAccountName", san)
    nn = spec.get("nodeName")
    if nn:
        out += dns1123_subdomain(f"{path}.nodeName", nn)
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and (not is_int(ads) or not 1 <= ads <= 2 ** 31 - 1):
        out.append(invalid(f"{path}.activeDeadlineSeconds", ads,
                           "must be between 1 and 2147483647, inclusive"))
    for k in ("hostname", "subdomain"):
        if spec.get(k):
            out += dns1123_label(f"{path}.{k}", spec[k])
    if spec.get("tolerations"):
        out += _validate_tolerations(spec["tolerations"], f"{path}.tolerations")
    pcn = spec.get("priorityClassName")
    if pcn:
        out += dns1123_subdomain(f"{path}.priorityClassName", pcn)
    pp = spec.get("preemptionPolicy")
    if pp is not None and pp not in ("PreemptLowerPriority", "Never"):
        out.append(unsupported(f"{path}.preemptionPolicy", pp,
                               ["Never", "PreemptLowerPriority"]))
    tg = spec.get("terminationGracePeriodSeconds")
    if tg is not None and not is_int(tg):
        out.append(type_error(f"{path}.terminationGracePeriodSeconds", tg, "an integer"))
    return out


def validate_pod_template(tpl: dict, path: str) -> list[Cause]:
    """ValidatePodTemplateSpec at path ("spec.template", "template"). Label and annotation
    errors are reported at `<path>.labels` / `<path>.annotations`, as Kubernetes does."""
    if not isinstance(tpl, dict):
        return [_req(path)] if tpl is None else [type_error(path, tpl, "an object")]
    md = _dct(tpl.get("metadata"))
    out = labels(f"{path}.labels", md.get("labels"))
    out += annotations(f"{path}.annotations", md.get("annotations"))
    out += validate_pod_spec(tpl.get("spec"), f"{path}.spec")
    if _lst(_dct(tpl.get("spec")).get("ephemeralContainers")):
        out.append(forbidden(f"{path}.spec.ephemeralContainers",
                             "ephemeral containers not allowed in pod template"))
    return out


# ---------------------------------------------------------------------------- pod updates

POD_UPDATABLE = ("`spec.containers[*].image`,`spec.initContainers[*].image`,"
                 "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
                 "tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if "
                 "it was previously negative)")


def _semantic(v: Any) -> Any:
    """Drop what apimachinery's semantic equality treats as unset (nil/empty maps and lists)."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            x = _semantic(x)
            if x is None or x == {} or x == [] or x == "" or x is False or \
                    (is_int(x) and x == 0 and k not in ("terminationGracePeriodSeconds",
                                                         "priority")):
                continue
            out[k] = x
        return out
    if isinstance(v, list):
        return [_semantic(x) for x in v]
    return v


def _spec_diff(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for k in list(old) + [k for k in new if k not in old]:
            lines += _spec_diff(old.get(k), new.get(k), f"{path}.{k}" if path else k)
        return lines
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        lines = []
        for i, (a, b) in enumerate(zip(old, new)):
            lines += _spec_diff(a, b, f"{path}[{i}]")
        return lines
    if old == new:
        return []
    lines = []
    if old is not None:
        lines.append(f"- \t{path}: {json.dumps(old, sort_keys=True)}")
    if new is not None:
        lines.append(f"+ \t{path}: {json.dumps(new, sort_keys=True)}")
    return lines


def _toleration_added_only(new: list, old: list, path: str) -> list[Cause]:
    for o in old:
        o = _dct(o)
        found = False
        for n in new:
            n = _dct(n)
            clone = dict(o)
            if n.get("tolerationSeconds") is not None:
                clone["tolerationSeconds"] = n["tolerationSeconds"]
            else:
                clone.pop("tolerationSeconds", None)
            if _semantic(clone) == _semantic(n):
                found = True
                break
        if not found:
            return [forbidden(path, "existing toleration can not be modified except its "
                                    "tolerationSeconds")]
    return []


def _container_updates(new: list, old: list, path: str) -> tuple[list[Cause], bool]:
    if len(new) != len(old):
        return [forbidden(path, "pod updates may not add or remove containers")], True
    out = []
    for i, c in enumerate(new):
        img = _dct(c).get("image") or ""
        if not img:
            out.append(_req(f"{path}[{i}].image"))
        if img.strip() != img:
            out.append(invalid(f"{path}[{i}].image", img,
                               "must not have leading or trailing whitespace"))
    return out, False


def validate_pod_update(new: dict, old: dict) -> list[Cause]:
    """The spec part of ValidatePodUpdate: only images, activeDeadlineSeconds, added
    tolerations (and a negative grace period set to 1) may change."""
    ns, os_ = _dct(new.get("spec")), _dct(old.get("spec"))
    out: list[Cause] = []
    for k in ("containers", "initContainers"):
        errs, stop = _container_updates(_lst(ns.get(k)), _lst(os_.get(k)), f"spec.{k}")
        out += errs
        if stop:
            return out
    nads, oads = ns.get("activeDeadlineSeconds"), os_.get("activeDeadlineSeconds")
    if nads is not None:
        if not is_int(nads) or not 0 <= nads <= 2 ** 31 - 1:
            out.append(invalid("spec.activeDeadlineSeconds", nads,
                               "must be between 0 and 2147483647, inclusive"))
            return out
        if is_int(oads) and oads < nads:
            out.append(invalid("spec.activeDeadlineSeconds", nads,
                               "must be less than or equal to previous value"))
            return out
    elif oads is not None:
        out.append(invalid("spec.activeDeadlineSeconds", "null",
                           "must not update from a positive integer to nil value"))
    out += _toleration_added_only(_lst(ns.get("tolerations")), _lst(os_.get("tolerations")),
                                  "spec.tolerations")
    if ns == os_:  # status updates, the common case: no need for semantic equality
        return out
    if pod_qos_class(os_) != pod_qos_class(ns):
        out.append(invalid("metadata", _dct(new.get("status")).get("qosClass", ""),
                           "Pod QOS is immutable"))
    munged = json_copy(ns)
    for k in ("containers", "initContainers"):
        for c, oc in zip(_lst(munged.get(k)), _lst(os_.get(k))):
            if isinstance(c, dict) and isinstance(oc, dict):
                if "image" in oc:
                    c["image"] = oc["image"]
                else:
                    c.pop("image", None)
    # pods/binding goes through the ordinary update path here: setting nodeName once is allowed
    if not os_.get("nodeName") and ns.get("nodeName"):
        munged.pop("nodeName", None)
    # ephemeral containers are only ever appended (the ephemeralcontainers subresource)
    oec, nec = _lst(os_.get("ephemeralContainers")), _lst(ns.get("ephemeralContainers"))
    if nec[:len(oec)] == oec:
        munged.pop("ephemeralContainers", None)
        if oec:
            munged["ephemeralContainers"] = json_copy(oec)
    for k in ("activeDeadlineSeconds", "schedulingGates", "tolerations"):
        if k in os_:
            munged[k] = json_copy(os_[k])
        else:
            munged.pop(k, None)
    otg = os_.get("terminationGracePeriodSeconds")
    if is_int(otg) and otg < 0 and munged.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = otg
    if munged != os_ and _semantic(munged) != _semantic(os_):  # (bindings: equal)
        diff = "\n".join(_spec_diff(_semantic(os_), _semantic(munged)))
        out.append(forbidden("spec", f"pod updates may not change fields other than "
                                     f"{POD_UPDATABLE}\n  core.PodSpec{{\n{diff}\n  }}\n"))
    return out


def _pod_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    spec = obj.get("spec")
    out += validate_pod_spec(spec, "spec")
    if not isinstance(spec, dict):
        return out
    if old is None:
        if spec.get("ephemeralContainers"):
            out.append(forbidden("spec.ephemeralContainers", "cannot be set on create"))
    else:
        out += validate_pod_update(obj, old)
    return out


# ---------------------------------------------------------------------------- pod printing

def _restartable_init(c: Any) -> bool:
    return _dct(c).get("restartPolicy") == "Always"


def _cond_true(status: dict, ctype: str) -> bool:
    return any(_dct(c).get("type") == ctype and _dct(c).get("status") == "True"
               for c in _lst(status.get("conditions")))


def pod_summary(pod: dict) -> tuple[str, str, str]:
    """READY, STATUS and RESTARTS cells exactly as kubectl's printPod computes them."""
    spec, status = _dct(pod.get("spec")), _dct(pod.get("status"))
    md = _dct(pod.get("metadata"))
    restarts = 0
    sidecar_restarts = 0
    total = len(_lst(spec.get("containers")))
    ready = 0
    last_restart = ""
    last_sidecar_restart = ""
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for c in _lst(status.get("conditions")):
        if _dct(c).get("type") == "PodScheduled" and _dct(c).get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    inits = {}
    for c in _lst(spec.get("initContainers")):
        inits[_dct(c).get("name")] = c
        if _restartable_init(c):
            total += 1
    n_inits = len(_lst(spec.get("initContainers")))

    def finished(cs: dict) -> str:
        return _dct(_dct(cs.get("lastState")).get("terminated")).get("finishedAt") or ""

    initializing = False
    for i, cs in enumerate(_lst(status.get("initContainerStatuses"))):
        cs = _dct(cs)
        restarts += _int(cs.get("restartCount"))
        f = finished(cs)
        last_restart = max(last_restart, f)
        sidecar = _restartable_init(inits.get(cs.get("name")))
        if sidecar:
            sidecar_restarts += _int(cs.get("restartCount"))
            last_sidecar_restart = max(last_sidecar_restart, f)
        state = _dct(cs.get("state"))
        term, wait = state.get("terminated"), state.get("waiting")
        if isinstance(term, dict) and _int(term.get("exitCode")) == 0:
            continue
        if sidecar and cs.get("started"):
            if cs.get("ready"):
                ready += 1
            continue
        if isinstance(term, dict):
            if not term.get("reason"):
                if _int(term.get("signal")):
                    reason = f"Init:Signal:{term['signal']}"
                else:
                    reason = f"Init:ExitCode:{_int(term.get('exitCode'))}"
            else:
                reason = "Init:" + term["reason"]
        elif isinstance(wait, dict) and wait.get("reason") and \
                wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{n_inits}"
        initializing = True
        break
    if not initializing or _cond_true(status, "Initialized"):
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for cs in reversed(_lst(status.get("containerStatuses"))):
            cs = _dct(cs)
            restarts += _int(cs.get("restartCount"))
            f = finished(cs)
            last_restart = max(last_restart, f)
            state = _dct(cs.get("state"))
            term, wait = state.get("terminated"), state.get("waiting")
            if isinstance(wait, dict) and wait.get("reason"):
                reason = wait["reason"]
            elif isinstance(term, dict) and term.get("reason"):
                reason = term["reason"]
            elif isinstance(term, dict):
                if _int(term.get("signal")):
                    reason = f"Signal:{term['signal']}"
                else:
                    reason = f"ExitCode:{_int(term.get('exitCode'))}"
            elif cs.get("ready") and isinstance(state.get("running"), dict):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _cond_true(status, "Ready") else "NotReady"
    if md.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif md.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"
    restarts_s = str(restarts)
    if restarts and last_restart:
        restarts_s = f"{restarts} ({human_age(last_restart)} ago)"
    return f"{ready}/{total}", reason, restarts_s


def _pod_ip(pod: dict) -> str:
    st = _dct(pod.get("status"))
    ips = _lst(st.get("podIPs"))
    if ips and _dct(ips[0]).get("ip"):
        return _dct(ips[0])["ip"]
    return st.get("podIP") or ""


def _pod_readiness_gates(pod: dict) -> str:
    gates = _lst(_dct(pod.get("spec")).get("readinessGates"))
    if not gates:
        return "<none>"
    conds = _lst(_dct(pod.get("status")).get("conditions"))
    n = 0
    for g in gates:
        for c in conds:
            if _dct(c).get("type") == _dct(g).get("conditionType"):
                if _dct(c).get("status") == "True":
                    n += 1
                break
    return f"{n}/{len(gates)}"


def _pod_fields(pod: dict) -> dict[str, str]:
    spec, status = _dct(pod.get("spec")), _dct(pod.get("status"))
    return {
        "spec.nodeName": spec.get("nodeName") or "",
        "spec.restartPolicy": spec.get("restartPolicy") or "",
        "spec.schedulerName": spec.get("schedulerName") or "",
        "spec.serviceAccountName": spec.get("serviceAccountName") or "",
        "spec.hostNetwork": "true" if spec.get("hostNetwork") else "false",
        "status.phase": status.get("phase") or "",
        "status.podIP": _pod_ip(pod),
        "status.nominatedNodeName": status.get("nominatedNodeName") or "",
    }


POD_COLUMNS = [
    NAME_COLUMN,
    Column("Ready", lambda o: pod_summary(o)[0],
           description="The aggregate readiness state of this pod for accepting traffic."),
    Column("Status", lambda o: pod_summary(o)[1],
           description="The aggregate status of the containers in this pod."),
    Column("Restarts", lambda o: pod_summary(o)[2],
           description="The number of times the containers in this pod have been restarted "
                       "and when the last container in this pod has restarted."),
    AGE_COLUMN,
    Column("IP", lambda o: _pod_ip(o) or "<none>", priority=1,
           description="podIP address allocated to the pod."),
    Column("Node", lambda o: _dct(o.get("spec")).get("nodeName") or "<none>", priority=1,
           description="NodeName indicates in which node this pod is scheduled."),
    Column("Nominated Node",
           lambda o: _dct(o.get("status")).get("nominatedNodeName") or "<none>", priority=1,
           description="nominatedNodeName is set only when this pod preempts other pods on "
                       "the node."),
    Column("Readiness Gates", _pod_readiness_gates, priority=1,
           description="If specified, all readiness gates will be evaluated for pod "
                       "readiness."),
]

KINDS.add(Kind(
    "Pod", "pods", short_names=("po",), categories=("all",),
    subresources=("status", "binding", "eviction", "log", "exec", "attach", "portforward",
                  "ephemeralcontainers"),
    default=_pod_default, validate=_pod_validate, columns=POD_COLUMNS,
    field_labels=_pod_fields, graceful_delete=True, proto="k8s.io.api.core.v1.Pod",
    description="Pod is a collection of containers that can run on a host."))


# ====================================================================== ReplicationController

def _rc_default(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    tpl = spec.get("template")
    tlabels = _dct(tpl).get("metadata", {}).get("labels") if isinstance(tpl, dict) else None
    if isinstance(tlabels, dict):
        if not spec.get("selector"):
            spec["selector"] = dict(tlabels)
        md = obj.setdefault("metadata", {})
        if not md.get("labels"):
            md["labels"] = dict(tlabels)
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    if isinstance(tpl, dict):
        default_pod_template(tpl)
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    status.setdefault("replicas", 0)


def _rc_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return out + [_req("spec")]
    out += _nonneg("spec.minReadySeconds", spec.get("minReadySeconds"))
    sel = spec.get("selector")
    if not sel:
        out.append(_req("spec.selector"))
    out += _nonneg("spec.replicas", spec.get("replicas"))
    tpl = spec.get("template")
    if tpl is None:
        out.append(_req("spec.template"))
    else:
        tlabels = _dct(_dct(tpl).get("metadata")).get("labels")
        if isinstance(sel, dict) and sel and \
                not all(_dct(tlabels).get(k) == v for k, v in sel.items()):
            out.append(selector_mismatch("spec.template", tlabels))
        out += validate_pod_template(tpl, "spec.template")
        tspec = _dct(_dct(tpl).get("spec"))
        rp = tspec.get("restartPolicy")
        if rp and rp != "Always":
            out.append(unsupported("spec.template.spec.restartPolicy", rp, ["Always"]))
        if tspec.get("activeDeadlineSeconds") is not None:
            out.append(forbidden("spec.template.spec.activeDeadlineSeconds",
                                 "activeDeadlineSeconds in ReplicationController is not "
                                 "Supported"))
    return out


def _tpl_containers(o: dict, key: str) -> str:
    cs = _lst(_dct(_dct(_dct(o.get("spec")).get("template")).get("spec")).get("containers"))
    return ",".join(str(_dct(c).get(key, "")) for c in cs)


KINDS.add(Kind(
    "ReplicationController", "replicationcontrollers", short_names=("rc",), categories=("all",),
    subresources=("status", "scale"), default=_rc_default, validate=_rc_validate,
    has_generation=True, proto="k8s.io.api.core.v1.ReplicationController",
    scale=ScaleSpec(selector=lambda o: selector_string(_dct(o.get("spec")).get("selector"))),
    columns=[
        NAME_COLUMN,
        Column("Desired", lambda o: _int(_dct(o.get("spec")).get("replicas")), type="integer",
               description="Replicas is the number of desired replicas."),
        Column("Current", lambda o: _int(_dct(o.get("status")).get("replicas")), type="integer",
               description="Replicas is the most recently observed number of replicas."),
        Column("Ready", lambda o: _int(_dct(o.get("status")).get("readyReplicas")),
               type="integer",
               description="The number of ready replicas for this replication controller."),
        AGE_COLUMN,
        Column("Containers", lambda o: _tpl_containers(o, "name"), priority=1,
               description="Names of each container in the template."),
        Column("Images", lambda o: _tpl_containers(o, "image"), priority=1,
               description="Images referenced by each container in the template."),
        Column("Selector", lambda o: format_labels(_dct(o.get("spec")).get("selector")),
               priority=1, description="Selector is a label query over pods that should "
                                       "match the Replicas count."),
    ],
    field_labels=lambda o: {"status.replicas": str(_int(_dct(o.get("status")).get("replicas")))},
    description="ReplicationController represents the configuration of a replication "
                "controller."))


# ====================================================================== PodTemplate

def _podtemplate_default(obj: dict) -> None:
    tpl = obj.get("template")
    if isinstance(tpl, dict):
        default_pod_template(tpl)


def _podtemplate_validate(obj: dict, old: dict | None) -> list[Cause]:
    return object_meta(obj, namespaced=True) + validate_pod_template(obj.get("template"),
                                                                     "template")


def _podtemplate_containers(o: dict, key: str) -> str:
    cs = _lst(_dct(_dct(o.get("template")).get("spec")).get("containers"))
    return ",".join(str(_dct(c).get(key, "")) for c in cs)


KINDS.add(Kind(
    "PodTemplate", "podtemplates", default=_podtemplate_default,
    validate=_podtemplate_validate, proto="k8s.io.api.core.v1.PodTemplate",
    columns=[
        NAME_COLUMN,
        Column("Containers", lambda o: _podtemplate_containers(o, "name"),
               description="Names of each container in the template."),
        Column("Images", lambda o: _podtemplate_containers(o, "image"),
               description="Images referenced by each container in the template."),
        Column("Pod Labels", lambda o: format_labels(
            _dct(_dct(o.get("template")).get("metadata")).get("labels")),
            description="The labels for the pod template."),
    ]))


# ====================================================================== Service

SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
NODE_PORT_RANGE = (30000, 32767)


def _externally_accessible(spec: dict) -> bool:
    t = spec.get("type")
    return t in ("LoadBalancer", "NodePort") or (t == "ClusterIP" and
                                                 bool(_lst(spec.get("externalIPs"))))


def _needs_node_port(spec: dict) -> bool:
    t = spec.get("type")
    if t == "NodePort":
        return True
    return t == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False


def _is_headless(spec: dict) -> bool:
    ips = _lst(spec.get("clusterIPs"))
    return len(ips) == 1 and ips[0] == "None"


def _service_default(obj: dict) -> None:
    """SetDefaults_Service plus what the Service REST storage fills on create (clusterIPs from
    clusterIP, ipFamilies/ipFamilyPolicy on a single-stack IPv4 cluster). Allocating clusterIP
    and nodePorts is not done here."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    if not spec.get("sessionAffinity"):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        cfg = _dct(spec.get("sessionAffinityConfig"))
        if _dct(cfg.get("clientIP")).get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
    if not spec.get("type"):
        spec["type"] = "ClusterIP"
    for p in _lst(spec.get("ports")):
        if not isinstance(p, dict):
            continue
        if not p.get("protocol"):
            p["protocol"] = "TCP"
        if p.get("targetPort") in (None, 0, ""):
            p["targetPort"] = p.get("port")
    if _externally_accessible(spec) and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if spec.get("internalTrafficPolicy") is None and \
            spec["type"] in ("NodePort", "LoadBalancer", "ClusterIP"):
        spec["internalTrafficPolicy"] = "Cluster"
    if spec["type"] == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    # clusterIPs mirrors clusterIP (strategy NormalizeClusterIPs)
    if spec.get("clusterIP") and not spec.get("clusterIPs"):
        spec["clusterIPs"] = [spec["clusterIP"]]
    if spec["type"] != "ExternalName":
        if not spec.get("ipFamilies"):
            spec["ipFamilies"] = ["IPv4"]
        if not spec.get("ipFamilyPolicy"):
            spec["ipFamilyPolicy"] = "RequireDualStack" if _is_headless(spec) and \
                not spec.get("selector") else "SingleStack"
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    if not isinstance(status.get("loadBalancer"), dict):
        status["loadBalancer"] = {}


def prepare_service_update(new: dict, old: dict) -> None:
    """The Service update strategy (PrepareForUpdate): keep allocated values the client left
    out (patchAllocatedValues), re-sync clusterIPs with a changed clusterIP, and wipe fields a
    type change made meaningless (dropTypeDependentFields: clusterIP(s)/ipFamilies when moving
    to ExternalName, nodePorts when moving to ClusterIP, externalTrafficPolicy, LB status).
    Call before validate, with `new` defaulted; `old` is the stored object."""
    ns, os_ = new.setdefault("spec", {}), _dct(old.get("spec"))
    nt, ot = ns.get("type") or "ClusterIP", os_.get("type") or "ClusterIP"
    # patchAllocatedValues
    if ot != "ExternalName" and nt != "ExternalName":
        if not ns.get("clusterIP") and os_.get("clusterIP"):
            ns["clusterIP"] = os_["clusterIP"]
        if not ns.get("clusterIPs") and os_.get("clusterIPs"):
            ns["clusterIPs"] = list(os_["clusterIPs"])
    if _needs_node_port(os_) and _needs_node_port(ns):
        old_used = {_int(_dct(p).get("nodePort")) for p in _lst(os_.get("ports"))}
        new_used = {_int(_dct(p).get("nodePort")) for p in _lst(ns.get("ports"))}
        used = old_used & new_used
        by_name = {_dct(p).get("name") or "": _int(_dct(p).get("nodePort"))
                   for p in _lst(os_.get("ports"))}
        for p in _lst(ns.get("ports")):
            if isinstance(p, dict) and not p.get("nodePort"):
                v = by_name.get(p.get("name") or "", 0)
                if v and v not in used:
                    p["nodePort"] = v
    if ot == "LoadBalancer" and nt == "LoadBalancer" and os_.get("healthCheckNodePort") and \
            not ns.get("healthCheckNodePort"):
        ns["healthCheckNodePort"] = os_["healthCheckNodePort"]
    # NormalizeClusterIPs on update
    if ot == "ExternalName" and nt != "ExternalName" and ns.get("clusterIP") and \
            not ns.get("clusterIPs"):
        ns["clusterIPs"] = [ns["clusterIP"]]
    if _lst(ns.get("clusterIPs")) == _lst(os_.get("clusterIPs")) and \
            (ns.get("clusterIP") or "") != (os_.get("clusterIP") or ""):
        if ns.get("clusterIP"):
            ns["clusterIPs"] = [ns["clusterIP"]]
        else:
            ns.pop("clusterIPs", None)
    # dropTypeDependentFields
    if ot != "ExternalName" and nt == "ExternalName":
        if _lst(ns.get("clusterIPs")) == _lst(os_.get("clusterIPs")) and \
                (ns.get("clusterIP") or "") == (os_.get("clusterIP") or ""):
            ns.pop("clusterIP", None)
            ns.pop("clusterIPs", None)
        if ns.get("ipFamilies") == os_.get("ipFamilies"):
            ns.pop("ipFamilies", None)
        if ns.get("ipFamilyPolicy") == os_.get("ipFamilyPolicy"):
            ns.pop("ipFamilyPolicy", None)
    if _needs_node_port(os_) and not _needs_node_port(ns) and \
            [_int(_dct(p).get("nodePort")) for p in _lst(os_.get("ports"))] == \
            [_int(_dct(p).get("nodePort")) for p in _lst(ns.get("ports"))]:
        for p in _lst(ns.get("ports")):
            if isinstance(p, dict):
                p.pop("nodePort", None)
    if ot == "LoadBalancer" and nt != "LoadBalancer":
        if ns.get("healthCheckNodePort") == os_.get("healthCheckNodePort"):
            ns.pop("healthCheckNodePort", None)
        if ns.get("allocateLoadBalancerNodePorts") == os_.get("allocateLoadBalancerNodePorts"):
            ns.pop("allocateLoadBalancerNodePorts", None)
        if ns.get("loadBalancerClass") == os_.get("loadBalancerClass"):
            ns.pop("loadBalancerClass", None)
    if _externally_accessible(os_) and not _externally_accessible(ns) and \
            ns.get("externalTrafficPolicy") == os_.get("externalTrafficPolicy"):
        ns.pop("externalTrafficPolicy", None)
    if nt != "LoadBalancer":
        new.setdefault("status", {})["loadBalancer"] = {}
    if nt == "ExternalName" and ot != "ExternalName" and \
            ns.get("internalTrafficPolicy") == os_.get("internalTrafficPolicy"):
        ns.pop("internalTrafficPolicy", None)


def _service_port_key(p: dict) -> str:
    return (f'core.ServicePort{{Name:"", Protocol:{q(p.get("protocol") or "")}, '
            f'AppProtocol:(*string)(nil), Port:{_int(p.get("port"))}, '
            f'TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:""}}, NodePort:0}}')


def _validate_service_spec(spec: dict) -> list[Cause]:
    out: list[Cause] = []
    stype = spec.get("type")
    ports = _lst(spec.get("ports"))
    headless = _is_headless(spec)
    if spec.get("ports") is not None and not isinstance(spec.get("ports"), list):
        out.append(type_error("spec.ports", spec.get("ports"), "a list"))
    if not ports and not headless and stype != "ExternalName":
        out.append(_req("spec.ports"))
    ips = _lst(spec.get("clusterIPs"))
    if stype == "LoadBalancer":
        for i, p in enumerate(ports):
            if _dct(p).get("port") == 10250:
                out.append(invalid(f"spec.ports[{i}]", 10250, "may not expose port 10250 "
                                   "externally since it is used by kubelet"))
        if headless:
            out.append(invalid("spec.clusterIPs[0]", ips[0],
                               "may not be set to 'None' for LoadBalancer services"))
    elif stype == "NodePort":
        if headless:
            out.append(invalid("spec.clusterIPs[0]", ips[0],
                               "may not be set to 'None' for NodePort services"))
    elif stype == "ExternalName":
        if ips:
            out.append(forbidden("spec.clusterIPs", "may not be set for ExternalName services"))
        if spec.get("ipFamilies"):
            out.append(forbidden("spec.ipFamilies", "may not be set for ExternalName services"))
        if spec.get("ipFamilyPolicy") is not None:
            out.append(forbidden("spec.ipFamilyPolicy",
                                 "may not be set for ExternalName services"))
        cname = str(spec.get("externalName") or "")
        cname = cname.removesuffix(".")
        if cname:
            out += dns1123_subdomain("spec.externalName", cname)
        else:
            out.append(_req("spec.externalName"))
    names: set[str] = set()
    for i, p in enumerate(ports):
        pp = f"spec.ports[{i}]"
        if not isinstance(p, dict):
            out.append(type_error(pp, p, "an object"))
            continue
        name = p.get("name")
        if len(ports) > 1 and not name:
            out.append(_req(f"{pp}.name"))
        elif name:
            out += dns1123_label(f"{pp}.name", name)
            if name in names:
                out.append(duplicate(f"{pp}.name", name))
            else:
                names.add(name)
        out += _port_num(f"{pp}.port", p.get("port"))
        proto = p.get("protocol")
        if not proto:
            out.append(_req(f"{pp}.protocol"))
        elif proto not in PROTOCOLS:
            out.append(unsupported(f"{pp}.protocol", proto, PROTOCOLS))
        out += _port_num_or_name(f"{pp}.targetPort", p.get("targetPort"))
        if p.get("appProtocol") is not None:
            out += _qualified_name(f"{pp}.appProtocol", str(p["appProtocol"]))
    if spec.get("selector") is not None:
        out += labels("spec.selector", spec.get("selector"))
    sa = spec.get("sessionAffinity")
    if not sa:
        out.append(_req("spec.sessionAffinity"))
    elif sa not in ("ClientIP", "None"):
        out.append(unsupported("spec.sessionAffinity", sa, ["ClientIP", "None"]))
    if sa == "ClientIP":
        cfg = spec.get("sessionAffinityConfig")
        why = "when session affinity type is ClientIP"
        if not isinstance(cfg, dict):
            out.append(_req("spec.sessionAffinityConfig", why))
        elif not isinstance(cfg.get("clientIP"), dict):
            out.append(_req("spec.sessionAffinityConfig.clientIP", why))
        elif cfg["clientIP"].get("timeoutSeconds") is None:
            out.append(_req("spec.sessionAffinityConfig.clientIP.timeoutSeconds", why))
        else:
            t = cfg["clientIP"]["timeoutSeconds"]
            if not is_int(t) or not 0 < t <= 86400:
                out.append(invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds", t,
                                   "must be greater than 0 and less than 86400"))
    elif sa == "None" and spec.get("sessionAffinityConfig") is not None:
        out.append(forbidden("spec.sessionAffinityConfig",
                             "must not be set when session affinity is None"))
    if stype != "ExternalName":
        out += _validate_cluster_ips(spec)
    for i, ip in enumerate(_lst(spec.get("externalIPs"))):
        if not _valid_ip(ip):
            out.append(invalid(f"spec.externalIPs[{i}]", ip, IP_MSG))
        elif ipaddress.ip_address(ip).is_unspecified:
            out.append(invalid(f"spec.externalIPs[{i}]", ip, f"may not be unspecified ({ip})"))
    if not stype:
        out.append(_req("spec.type"))
    elif stype not in SERVICE_TYPES:
        out.append(unsupported("spec.type", stype, SERVICE_TYPES))
    if stype == "ClusterIP":
        for i, p in enumerate(ports):
            if _dct(p).get("nodePort"):
                out.append(forbidden(f"spec.ports[{i}].nodePort",
                                     "may not be used when `type` is 'ClusterIP'"))
    seen_np: set[tuple] = set()
    for i, p in enumerate(ports):
        p = _dct(p)
        if not p.get("nodePort"):
            continue
        key = (p.get("protocol"), p.get("nodePort"))
        if key in seen_np:
            out.append(duplicate(f"spec.ports[{i}].nodePort", p.get("nodePort")))
        seen_np.add(key)
    seen_p: set[tuple] = set()
    for i, p in enumerate(ports):
        p = _dct(p)
        key = (p.get("protocol"), p.get("port"))
        if key in seen_p:
            out.append(Cause(f"spec.ports[{i}]", f"Duplicate value: {_service_port_key(p)}",
                             "FieldValueDuplicate"))
        seen_p.add(key)
    # externalTrafficPolicy / healthCheckNodePort
    etp = spec.get("externalTrafficPolicy")
    if not _externally_accessible(spec):
        if etp:
            out.append(invalid("spec.externalTrafficPolicy", etp,
                               "may only be set for externally-accessible services"))
    elif not etp:
        out.append(_req("spec.externalTrafficPolicy"))
    elif etp not in ("Cluster", "Local"):
        out.append(unsupported("spec.externalTrafficPolicy", etp, ["Cluster", "Local"]))
    if spec.get("healthCheckNodePort") and not (stype == "LoadBalancer" and etp == "Local"):
        out.append(invalid("spec.healthCheckNodePort", spec["healthCheckNodePort"],
                           "may only be set when `type` is 'LoadBalancer' and "
                           "`externalTrafficPolicy` is 'Local'"))
    itp = spec.get("internalTrafficPolicy")
    if itp is None:
        if stype in ("NodePort", "LoadBalancer", "ClusterIP"):
            out.append(_req("spec.internalTrafficPolicy"))
    elif itp not in ("Cluster", "Local"):
        out.append(unsupported("spec.internalTrafficPolicy", itp, ["Cluster", "Local"]))
    # what the node port allocator refuses (the allocation itself is a registry hook)
    if stype in ("NodePort", "LoadBalancer"):
        lo, hi = NODE_PORT_RANGE
        for i, p in enumerate(ports):
            np_ = _dct(p).get("nodePort")
            if np_ and (not is_int(np_) or not lo <= np_ <= hi):
                out.append(invalid(f"spec.ports[{i}].nodePort", np_,
                                   "provided port is not in the valid range. The range of "
                                   f"valid ports is {lo}-{hi}"))
    return out


def _validate_cluster_ips(spec: dict) -> list[Cause]:
    out: list[Cause] = []
    cip = spec.get("clusterIP") or ""
    ips = _lst(spec.get("clusterIPs"))
    if cip:
        if not ips:
            out.append(_req("spec.clusterIPs"))
        elif ips[0] != cip:
            out.append(_inv("spec.clusterIPs", go_repr(ips), "first value must match "
                                                              "`clusterIP`"))
    elif ips:
        out.append(_inv("spec.clusterIPs", go_repr(ips),
                        "must be empty when `clusterIP` is not specified"))
    seen = set()
    for i, fam in enumerate(_lst(spec.get("ipFamilies"))):
        if fam not in ("IPv4", "IPv6"):
            out.append(unsupported(f"spec.ipFamilies[{i}]", fam, ["IPv4", "IPv6"]))
        if fam in seen:
            out.append(duplicate(f"spec.ipFamilies[{i}]", fam))
        seen.add(fam)
    pol = spec.get("ipFamilyPolicy")
    if pol is not None and pol not in ("PreferDualStack", "RequireDualStack", "SingleStack"):
        out.append(unsupported("spec.ipFamilyPolicy", pol,
                               ["PreferDualStack", "RequireDualStack", "SingleStack"]))
    for i, ip in enumerate(ips):
        if i == 0 and ip == "None":
            if len(ips) > 1:
                out.append(_inv("spec.clusterIPs", go_repr(ips),
                                "'None' must be the first and only value"))
            continue
        if not _valid_ip(ip):
            out.append(invalid(f"spec.clusterIPs[{i}]", ip, IP_MSG))
    if pol == "SingleStack" and len(ips) > 1:
        out.append(_inv("spec.clusterIPs", go_repr(ips),
                        "must have exactly one IP address when `ipFamilyPolicy` is "
                        "'SingleStack'"))
    if len(ips) > 2:
        out.append(_inv("spec.clusterIPs", go_repr(ips),
                        "may only hold up to 2 values"))
    return out


def _validate_service_update(spec: dict, ospec: dict) -> list[Cause]:
    """validateUpgradeDowngradeClusterIPs: clusterIPs may not change once set, except to/from
    ExternalName."""
    out: list[Cause] = []
    if spec.get("type") == "ExternalName" or ospec.get("type") == "ExternalName":
        return out
    if _is_headless(spec) and _is_headless(ospec):
        return out
    new, old = _lst(spec.get("clusterIPs")), _lst(ospec.get("clusterIPs"))
    if len(old) == len(new):
        for i, ip in enumerate(old):
            if ip != new[i]:
                out.append(_inv(f"spec.clusterIPs[{i}]", go_repr(new), "may not change once set"))
    elif len(old) > len(new):
        if not new:
            out.append(_inv("spec.clusterIPs[0]", go_repr(new, "[]string(nil)"),
                            "primary clusterIP can not be unset"))
        if old and new and new[0] != old[0]:
            out.append(_inv("spec.clusterIPs[0]", go_repr(new), "may not change once set"))
        if len(new) == 1 and spec.get("ipFamilyPolicy") != "SingleStack":
            out.append(_inv("spec.clusterIPs[0]", go_repr(new),
                            "`ipFamilyPolicy` must be set to 'SingleStack' when releasing the "
                            "secondary clusterIP"))
    elif old and new[0] != old[0]:
        out.append(_inv("spec.clusterIPs[0]", go_repr(new), "may not change once set"))
    return out


def _service_validate(obj: dict, old: dict | None) -> list[Cause]:
    """ValidateService / ValidateServiceUpdate. On update this first applies the Service update
    strategy (prepare_service_update) to obj in place: Kubernetes runs PrepareForUpdate before
    validation, and the registry has no other hook between defaulting and validation. It is
    idempotent, so calling prepare_service_update beforehand as well is harmless."""
    out = object_meta(obj, namespaced=True, name_fn=dns1035_label)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return out + [_req("spec")]
    if old is not None:
        prepare_service_update(obj, old)
        spec = obj["spec"]
        out += _validate_service_update(spec, _dct(old.get("spec")))
    return out + _validate_service_spec(spec)


def service_ports(o: dict) -> str:
    """makePortString: "80:30080/TCP,443/TCP"."""
    out = []
    for p in _lst(_dct(o.get("spec")).get("ports")):
        p = _dct(p)
        if p.get("nodePort"):
            out.append(f"{_int(p.get('port'))}:{p['nodePort']}/{p.get('protocol', '')}")
        else:
            out.append(f"{_int(p.get('port'))}/{p.get('protocol', '')}")
    return ",".join(out) or "<none>"


def service_external_ip(o: dict) -> str:
    """getServiceExternalIP (wide: no truncation, as the server prints)."""
    spec = _dct(o.get("spec"))
    ext = [str(x) for x in _lst(spec.get("externalIPs"))]
    t = spec.get("type")
    if t in ("ClusterIP", "NodePort"):
        return ",".join(ext) if ext else "<none>"
    if t == "LoadBalancer":
        lb = set()
        for ing in _lst(_dct(_dct(o.get("status")).get("loadBalancer")).get("ingress")):
            ing = _dct(ing)
            if ing.get("ip"):
                lb.add(ing["ip"])
            elif ing.get("hostname"):
                lb.add(ing["hostname"])
        lbs = sorted(lb)
        if ext:
            return ",".join(lbs + ext)
        return ",".join(lbs) if lbs else "<pending>"
    if t == "ExternalName":
        return spec.get("externalName") or ""
    return "<unknown>"


def _service_cluster_ip(o: dict) -> str:
    ips = _lst(_dct(o.get("spec")).get("clusterIPs"))
    return ips[0] if ips else "<none>"


KINDS.add(Kind(
    "Service", "services", short_names=("svc",), categories=("all",), subresources=("status",),
    default=_service_default, validate=_service_validate, proto="k8s.io.api.core.v1.Service",
    columns=[
        NAME_COLUMN,
        Column("Type", lambda o: _dct(o.get("spec")).get("type", ""),
               description="type determines how the Service is exposed."),
        Column("Cluster-IP", _service_cluster_ip,
               description="clusterIP is the IP address of the service."),
        Column("External-IP", service_external_ip,
               description="externalIPs is a list of IP addresses for which nodes in the "
                           "cluster will also accept traffic for this service."),
        Column("Port(s)", service_ports,
               description="The list of ports that are exposed by this service."),
        AGE_COLUMN,
        Column("Selector", lambda o: format_labels(_dct(o.get("spec")).get("selector")),
               priority=1, description="Route service traffic to pods with label keys and "
                                       "values matching this selector."),
    ],
    field_labels=lambda o: {"spec.clusterIP": _dct(o.get("spec")).get("clusterIP") or "",
                            "spec.type": _dct(o.get("spec")).get("type") or ""},
    description="Service is a named abstraction of software service."))


# ====================================================================== Endpoints

def _endpoints_default(obj: dict) -> None:
    for ss in _lst(obj.get("subsets")):
        for p in _lst(_dct(ss).get("ports")):
            if isinstance(p, dict) and not p.get("protocol"):
                p["protocol"] = "TCP"


def _endpoints_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    for i, ss in enumerate(_lst(obj.get("subsets"))):
        p = f"subsets[{i}]"
        ss = _dct(ss)
        if not _lst(ss.get("addresses")) and not _lst(ss.get("notReadyAddresses")):
            out.append(_req(p, "must specify `addresses` or `notReadyAddresses`"))
        for key in ("addresses", "notReadyAddresses"):
            for j, a in enumerate(_lst(ss.get(key))):
                ap = f"{p}.{key}[{j}]"
                a = _dct(a)
                ip = a.get("ip")
                if not _valid_ip(ip):
                    out.append(invalid(f"{ap}.ip", ip or "", IP_MSG))
                elif ipaddress.ip_address(ip).is_unspecified:
                    out.append(invalid(f"{ap}.ip", ip, f"may not be unspecified ({ip})"))
                # (loopback addresses are accepted: kubelab's unprivileged pod network is 127/8)
                if a.get("hostname"):
                    out += dns1123_label(f"{ap}.hostname", a["hostname"])
                if a.get("nodeName"):
                    out += dns1123_subdomain(f"{ap}.nodeName", a["nodeName"])
        ports = _lst(ss.get("ports"))
        for j, port in enumerate(ports):
            pp = f"{p}.ports[{j}]"
            port = _dct(port)
            if len(ports) > 1 and not port.get("name"):
                out.append(_req(f"{pp}.name"))
            elif port.get("name"):
                out += dns1123_label(f"{pp}.name", port["name"])
            out += _port_num(f"{pp}.port", port.get("port"))
            proto = port.get("protocol")
            if not proto:
                out.append(_req(f"{pp}.protocol"))
            elif proto not in PROTOCOLS:
                out.append(unsupported(f"{pp}.protocol", proto, PROTOCOLS))
    return out


def format_endpoints(o: dict) -> str:
    """formatEndpoints: first 3 host:port pairs, then " + N more..."."""
    subsets = _lst(o.get("subsets"))
    if not subsets:
        return "<none>"
    out: list[str] = []
    mx, more, count = 3, False, 0
    for ss in subsets:
        ss = _dct(ss)
        addrs = _lst(ss.get("addresses"))
        ports = _lst(ss.get("ports"))
        if not ports:
            count += len(addrs)
            for a in addrs:
                if len(out) == mx:
                    more = True
                    break
                out.append(str(_dct(a).get("ip", "")))
            continue
        for port in ports:
            count += len(addrs)
            for a in addrs:
                if len(out) == mx:
                    more = True
                    break
                ip = str(_dct(a).get("ip", ""))
                host = f"[{ip}]" if ":" in ip else ip
                out.append(f"{host}:{_int(_dct(port).get('port'))}")
    s = ",".join(out)
    if more:
        return f"{s} + {count - mx} more..."
    return s


KINDS.add(Kind(
    "Endpoints", "endpoints", singular="endpoints", short_names=("ep",),
    default=_endpoints_default, validate=_endpoints_validate,
    proto="k8s.io.api.core.v1.Endpoints",
    columns=[NAME_COLUMN,
             Column("Endpoints", format_endpoints,
                    description="The set of all endpoints is the union of all subsets."),
             AGE_COLUMN]))


# ====================================================================== Node

def _node_default(obj: dict) -> None:
    status = obj.get("status")
    if isinstance(status, dict) and status.get("allocatable") is None and \
            isinstance(status.get("capacity"), dict):
        status["allocatable"] = dict(status["capacity"])


def _node_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=False)
    spec = _dct(obj.get("spec"))
    for i, t in enumerate(_lst(spec.get("taints"))):
        p = f"spec.taints[{i}]"
        t = _dct(t)
        if not t.get("key"):
            out.append(_req(f"{p}.key"))
        else:
            out += _qualified_name(f"{p}.key", t["key"])
        if t.get("value"):
            from kubelab.selectors import label_value_errors
            out += [invalid(f"{p}.value", t["value"], m)
                    for m in label_value_errors(str(t["value"]))]
        eff = t.get("effect")
        if not eff:
            out.append(_req(f"{p}.effect"))
        elif eff not in TAINT_EFFECTS:
            out.append(unsupported(f"{p}.effect", eff, TAINT_EFFECTS))
    for i, cidr in enumerate(_lst(spec.get("podCIDRs"))):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except (ValueError, TypeError):
            out.append(invalid(f"spec.podCIDRs[{i}]", cidr,
                               "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"))
    if old is not None:
        ospec = _dct(old.get("spec"))
        if ospec.get("podCIDRs") and _lst(ospec.get("podCIDRs")) != _lst(spec.get("podCIDRs")):
            out.append(forbidden("spec.podCIDRs",
                                 'node updates may not change podCIDR except from "" to valid'))
        if ospec.get("providerID") and ospec.get("providerID") != spec.get("providerID"):
            out.append(forbidden("spec.providerID",
                                 'node updates may not change providerID except from "" to '
                                 'valid'))
    return out


def node_status(o: dict) -> str:
    st = []
    for c in _lst(_dct(o.get("status")).get("conditions")):
        c = _dct(c)
        if c.get("type") == "Ready":
            st = ["Ready" if c.get("status") == "True" else "NotReady"]
    if not st:
        st = ["Unknown"]
    if _dct(o.get("spec")).get("unschedulable"):
        st.append("SchedulingDisabled")
    return ",".join(st)


def node_roles(o: dict) -> str:
    roles = set()
    for k, v in _dct(_dct(o.get("metadata")).get("labels")).items():
        if k.startswith("node-role.kubernetes.io/"):
            r = k[len("node-role.kubernetes.io/"):]
            if r:
                roles.add(r)
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    return ",".join(sorted(roles)) or "<none>"


def _node_address(o: dict, kind: str) -> str:
    for a in _lst(_dct(o.get("status")).get("addresses")):
        if _dct(a).get("type") == kind:
            return _dct(a).get("address", "")
    return "<none>"


def _node_info(o: dict, key: str, unknown: str = "<unknown>") -> str:
    return _dct(_dct(o.get("status")).get("nodeInfo")).get(key) or unknown


KINDS.add(Kind(
    "Node", "nodes", namespaced=False, short_names=("no",), subresources=("status", "proxy"),
    default=_node_default, validate=_node_validate, proto="k8s.io.api.core.v1.Node",
    columns=[
        NAME_COLUMN,
        Column("Status", node_status, description="The status of the node"),
        Column("Roles", node_roles, description="The roles of the node"),
        AGE_COLUMN,
        Column("Version", lambda o: _node_info(o, "kubeletVersion", ""),
               description="Kubelet Version reported by the node."),
        Column("Internal-IP", lambda o: _node_address(o, "InternalIP"), priority=1,
               description="List of addresses reachable to the node."),
        Column("External-IP", lambda o: _node_address(o, "ExternalIP"), priority=1,
               description="List of addresses reachable to the node."),
        Column("OS-Image", lambda o: _node_info(o, "osImage"), priority=1,
               description="OS Image reported by the node from /etc/os-release (e.g. Debian "
                           "GNU/Linux 7 (wheezy))."),
        Column("Kernel-Version", lambda o: _node_info(o, "kernelVersion"), priority=1,
               description="Kernel Version reported by the node from 'uname -r' (e.g. "
                           "3.16.0-0.bpo.4-amd64)."),
        Column("Container-Runtime", lambda o: _node_info(o, "containerRuntimeVersion"),
               priority=1, description="ContainerRuntime Version reported by the node through "
                                       "runtime remote API (e.g. containerd://1.4.2)."),
    ],
    field_labels=lambda o: {"spec.unschedulable":
                            "true" if _dct(o.get("spec")).get("unschedulable") else "false"},
    description="Node is a worker node in Kubernetes."))


# ====================================================================== ServiceAccount

def _sa_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    for i, s in enumerate(_lst(obj.get("secrets"))):
        if isinstance(s, dict) and s.get("name"):
            out += dns1123_subdomain(f"secrets[{i}].name", s["name"])
    return out


KINDS.add(Kind(
    "ServiceAccount", "serviceaccounts", short_names=("sa",), subresources=("token",),
    validate=_sa_validate, proto="k8s.io.api.core.v1.ServiceAccount",
    columns=[NAME_COLUMN,
             Column("Secrets", lambda o: len(_lst(o.get("secrets"))), type="integer",
                    description="Secrets is a list of the secrets in the same namespace that "
                                "pods running using this ServiceAccount are allowed to use."),
             AGE_COLUMN]))


# ====================================================================== Event

def _event_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    md = _dct(obj.get("metadata"))
    ns = md.get("namespace") or ""
    io = obj.get("involvedObject")
    if not isinstance(io, dict):
        io = {}
    ions = io.get("namespace") or ""
    if not obj.get("eventTime"):
        if not ions:
            if ns not in ("", "default"):
                out.append(invalid("involvedObject.namespace", ions,
                                   "does not match event.namespace"))
        elif ns != ions:
            out.append(invalid("involvedObject.namespace", ions, "does not match event.namespace"))
    else:
        if not ions and ns not in ("default", "kube-system"):
            out.append(invalid("involvedObject.namespace", ions, "does not match event.namespace"))
        rc = obj.get("reportingComponent") or ""
        if not rc:
            out.append(_req("reportingComponent"))
        out += _qualified_name("reportingComponent", rc) if rc else []
        ri = obj.get("reportingInstance") or ""
        if not ri:
            out.append(_req("reportingInstance"))
        if len(ri) > 128:
            out.append(invalid("reportingInstance", "", "can have at most 128 characters"))
        act = obj.get("action") or ""
        if not act:
            out.append(_req("action"))
        if len(act) > 128:
            out.append(invalid("action", "", "can have at most 128 characters"))
        rsn = obj.get("reason") or ""
        if not rsn:
            out.append(_req("reason"))
        if len(rsn) > 128:
            out.append(invalid("reason", "", "can have at most 128 characters"))
        if len(obj.get("message") or "") > 1024:
            out.append(invalid("message", "", "can have at most 1024 characters"))
    return out


def _event_times(o: dict) -> tuple[str, str, int]:
    first = _ts_since(o.get("firstTimestamp")) if o.get("firstTimestamp") else \
        _ts_since(o.get("eventTime"))
    last = _ts_since(o.get("lastTimestamp")) if o.get("lastTimestamp") else first
    count = _int(o.get("count"))
    series = o.get("series")
    if isinstance(series, dict):
        last = _ts_since(series.get("lastObservedTime"))
        count = _int(series.get("count"))
    elif count == 0:
        count = 1
    return last, first, count


def event_object(o: dict) -> str:
    io = _dct(o.get("involvedObject"))
    kind = str(io.get("kind") or "").lower()
    return f"{kind}/{io['name']}" if io.get("name") else kind


def _event_source(o: dict) -> str:
    src = _dct(o.get("source"))
    comp = src.get("component") or o.get("reportingComponent") or ""
    inst = src.get("host") or o.get("reportingInstance") or ""
    return f"{comp}, {inst}" if inst else comp


def _event_fields(o: dict) -> dict[str, str]:
    io = _dct(o.get("involvedObject"))
    src = _dct(o.get("source")).get("component") or o.get("reportingComponent") or ""
    return {
        "involvedObject.kind": io.get("kind") or "",
        "involvedObject.namespace": io.get("namespace") or "",
        "involvedObject.name": io.get("name") or "",
        "involvedObject.uid": io.get("uid") or "",
        "involvedObject.apiVersion": io.get("apiVersion") or "",
        "involvedObject.resourceVersion": io.get("resourceVersion") or "",
        "involvedObject.fieldPath": io.get("fieldPath") or "",
        "reason": o.get("reason") or "",
        "reportingComponent": o.get("reportingComponent") or "",
        "source": src,
        "type": o.get("type") or "",
    }


KINDS.add(Kind(
    "Event", "events", short_names=("ev",), validate=_event_validate,
    proto="k8s.io.api.core.v1.Event",
    columns=[
        Column("Last Seen", lambda o: _event_times(o)[0],
               description="The time at which the most recent occurrence of this event was "
                           "recorded."),
        Column("Type", lambda o: o.get("type") or "",
               description="Type of this event (Normal, Warning), new types could be added in "
                           "the future"),
        Column("Reason", lambda o: o.get("reason") or "",
               description="This should be a short, machine understandable string that gives "
                           "the reason for the transition into the object's current status."),
        Column("Object", event_object, description="The object that this event is about."),
        Column("Subobject", lambda o: _dct(o.get("involvedObject")).get("fieldPath") or "",
               priority=1, description="If referring to a piece of an object instead of an "
                                       "entire object, this string should contain a valid "
                                       "JSON/Go field access statement."),
        Column("Source", _event_source, priority=1,
               description="The component reporting this event. Should be a short machine "
                           "understandable string."),
        Column("Message", lambda o: str(o.get("message") or "").strip(),
               description="A human-readable description of the status of this operation."),
        Column("First Seen", lambda o: _event_times(o)[1], priority=1,
               description="The time at which the event was first recorded."),
        Column("Count", lambda o: _event_times(o)[2], priority=1,
               description="The number of times this event has occurred."),
        Column("Name", lambda o: _dct(o.get("metadata")).get("name", ""), format="name",
               priority=1, description="Name must be unique within a namespace."),
    ],
    field_labels=_event_fields,
    description="Event is a report of an event somewhere in the cluster."))


# ====================================================================== PersistentVolume(Claim)

ACCESS_MODES = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]
PV_SOURCES = ("gcePersistentDisk", "awsElasticBlockStore", "hostPath", "glusterfs", "nfs", "rbd",
              "quobyte", "cinder", "cephfs", "fc", "flocker", "flexVolume", "azureFile",
              "vsphereVolume", "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO",
              "local", "storageos", "csi", "iscsi")


def _validate_access_modes(modes: Any, path: str, *, required_msg: str = "") -> list[Cause]:
    out: list[Cause] = []
    modes = _lst(modes)
    if not modes:
        out.append(_req(path, required_msg))
    for m in modes:
        if m not in ACCESS_MODES:
            out.append(unsupported(path, m, ACCESS_MODES))
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        out.append(forbidden(path, "may not use ReadWriteOncePod with other access modes"))
    return out


def _pv_default(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    if not spec.get("persistentVolumeReclaimPolicy"):
        spec["persistentVolumeReclaimPolicy"] = "Retain"
    if not spec.get("volumeMode"):
        spec["volumeMode"] = "Filesystem"
    hp = spec.get("hostPath")
    if isinstance(hp, dict) and hp.get("type") is None:
        hp["type"] = ""
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    if not status.get("phase"):
        status["phase"] = "Pending"


def _pv_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=False)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return out + [_req("spec")]
    out += _validate_access_modes(spec.get("accessModes"), "spec.accessModes")
    cap = spec.get("capacity")
    if not cap:
        out.append(_req("spec.capacity"))
    elif not isinstance(cap, dict) or "storage" not in cap or len(cap) > 1:
        out.append(Cause("spec.capacity", f"Unsupported value: {json.dumps(cap, sort_keys=True)}"
                                          ': supported values: "storage"',
                         "FieldValueNotSupported"))
    else:
        try:
            if parse_quantity(cap["storage"]) <= 0:
                out.append(invalid("spec.capacity[storage]", str(cap["storage"]),
                                   "must be greater than zero"))
        except ValueError as e:
            out.append(invalid("spec.capacity[storage]", cap["storage"], str(e)))
    rp = spec.get("persistentVolumeReclaimPolicy")
    if rp and rp not in ("Delete", "Recycle", "Retain"):
        out.append(unsupported("spec.persistentVolumeReclaimPolicy", rp,
                               ["Delete", "Recycle", "Retain"]))
    vm = spec.get("volumeMode")
    if vm and vm not in ("Block", "Filesystem"):
        out.append(unsupported("spec.volumeMode", vm, ["Block", "Filesystem"]))
    n = 0
    for k in PV_SOURCES:
        if spec.get(k) is None:
            continue
        if n > 0:
            out.append(forbidden(f"spec.{k}", "may not specify more than 1 volume type"))
            continue
        n += 1
        src = _dct(spec[k])
        if k in ("hostPath", "local"):
            if not src.get("path"):
                out.append(_req(f"spec.{k}.path"))
        elif k == "nfs":
            if not src.get("server"):
                out.append(_req("spec.nfs.server"))
            if not src.get("path"):
                out.append(_req("spec.nfs.path"))
        elif k == "csi":
            if not src.get("driver"):
                out.append(_req("spec.csi.driver"))
            if not src.get("volumeHandle"):
                out.append(_req("spec.csi.volumeHandle"))
    if n == 0:
        out.append(_req("spec", "must specify a volume type"))
    if spec.get("storageClassName"):
        out += dns1123_subdomain("spec.storageClassName", spec["storageClassName"])
    if old is not None:
        ospec = _dct(old.get("spec"))
        if ospec.get("volumeMode") != spec.get("volumeMode"):
            out.append(immutable("spec.volumeMode", spec.get("volumeMode")))
        for k in PV_SOURCES:
            if ospec.get(k) != spec.get(k):
                out.append(forbidden("spec.persistentvolumesource",
                                     "spec.persistentvolumesource is immutable after "
                                     "creation"))
                break
    return out


def _storage_class(o: dict) -> str:
    ann = _dct(_dct(o.get("metadata")).get("annotations"))
    if "volume.beta.kubernetes.io/storage-class" in ann:
        return ann["volume.beta.kubernetes.io/storage-class"]
    return _dct(o.get("spec")).get("storageClassName") or ""


def _phase_or_terminating(o: dict) -> str:
    if _dct(o.get("metadata")).get("deletionTimestamp"):
        return "Terminating"
    return _dct(o.get("status")).get("phase") or ""


def _pv_claim(o: dict) -> str:
    ref = _dct(o.get("spec")).get("claimRef")
    if not isinstance(ref, dict):
        return ""
    return f"{ref.get('namespace', '')}/{ref.get('name', '')}"


def _vac(o: dict) -> str:
    v = _dct(o.get("spec")).get("volumeAttributesClassName")
    return v if v is not None else "<unset>"


KINDS.add(Kind(
    "PersistentVolume", "persistentvolumes", namespaced=False, short_names=("pv",),
    subresources=("status",), default=_pv_default, validate=_pv_validate,
    proto="k8s.io.api.core.v1.PersistentVolume",
    columns=[
        NAME_COLUMN,
        Column("Capacity", lambda o: str(_dct(_dct(o.get("spec")).get("capacity"))
                                         .get("storage", "0")),
               description="capacity is the description of the persistent volume's resources "
                           "and capacity."),
        Column("Access Modes", lambda o: _access_modes(_dct(o.get("spec")).get("accessModes")),
               description="accessModes contains all ways the volume can be mounted."),
        Column("Reclaim Policy",
               lambda o: _dct(o.get("spec")).get("persistentVolumeReclaimPolicy", ""),
               description="persistentVolumeReclaimPolicy defines what happens to a persistent "
                           "volume when released from its claim."),
        Column("Status", _phase_or_terminating,
               description="phase indicates if a volume is available, bound to a claim, or "
                           "released by a claim."),
        Column("Claim", _pv_claim,
               description="claimRef is part of a bi-directional binding between "
                           "PersistentVolume and PersistentVolumeClaim."),
        Column("StorageClass", _storage_class, description="StorageClass of the pv"),
        Column("VolumeAttributesClass", _vac, description="VolumeAttributesClass of the pv"),
        Column("Reason", lambda o: _dct(o.get("status")).get("reason") or "",
               description="reason is a brief CamelCase string that describes any failure and "
                           "is meant for machine parsing and tidy display in the CLI."),
        AGE_COLUMN,
        Column("VolumeMode", lambda o: _dct(o.get("spec")).get("volumeMode") or "<unset>",
               priority=1, description="volumeMode defines if a volume is intended to be used "
                                       "with a formatted filesystem or to remain in raw block "
                                       "state."),
    ],
    description="PersistentVolume (PV) is a storage resource provisioned by an administrator."))


def _pvc_default(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    if not spec.get("volumeMode"):
        spec["volumeMode"] = "Filesystem"
    if not isinstance(spec.get("resources"), dict):
        spec["resources"] = {}
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    if not status.get("phase"):
        status["phase"] = "Pending"


def _pvc_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return out + [_req("spec")]
    out += _validate_access_modes(spec.get("accessModes"), "spec.accessModes",
                                  required_msg="at least 1 access mode is required")
    reqs = _dct(_dct(spec.get("resources")).get("requests"))
    if "storage" not in reqs:
        out.append(_req("spec.resources[storage]"))
    else:
        try:
            if parse_quantity(reqs["storage"]) <= 0:
                out.append(invalid("spec.resources[storage]", str(reqs["storage"]),
                                   "must be greater than zero"))
        except ValueError as e:
            out.append(invalid("spec.resources[storage]", reqs["storage"], str(e)))
    vm = spec.get("volumeMode")
    if vm and vm not in ("Block", "Filesystem"):
        out.append(unsupported("spec.volumeMode", vm, ["Block", "Filesystem"]))
    if spec.get("storageClassName"):
        out += dns1123_subdomain("spec.storageClassName", spec["storageClassName"])
    if spec.get("selector") is not None and not isinstance(spec.get("selector"), dict):
        out.append(type_error("spec.selector", spec["selector"], "an object"))
    if old is not None:
        ospec = json_copy(_dct(old.get("spec")))
        nspec = json_copy(spec)
        if not ospec.get("volumeName"):
            ospec["volumeName"] = nspec.get("volumeName")
        bound = _dct(old.get("status")).get("phase") == "Bound"
        if bound:
            ospec.setdefault("resources", {})["requests"] = \
                _dct(nspec.get("resources")).get("requests")
        ospec["volumeAttributesClassName"] = nspec.get("volumeAttributesClassName")
        if _semantic(ospec) != _semantic(nspec):
            diff = "\n".join(_spec_diff(_semantic(ospec), _semantic(nspec)))
            out.append(forbidden("spec", "spec is immutable after creation except "
                                         "resources.requests and volumeAttributesClassName for "
                                         f"bound claims\n  core.PersistentVolumeClaimSpec{{\n"
                                         f"{diff}\n  }}\n"))
    return out


def _pvc_capacity(o: dict) -> str:
    if not _dct(o.get("spec")).get("volumeName"):
        return ""
    return str(_dct(_dct(o.get("status")).get("capacity")).get("storage", "0"))


def _pvc_modes(o: dict) -> str:
    if not _dct(o.get("spec")).get("volumeName"):
        return ""
    return _access_modes(_dct(o.get("status")).get("accessModes"))


async def _pvc_default_class(storage, obj: dict) -> None:
    """The DefaultStorageClass admission plugin: a claim without storageClassName gets the
    default class (annotation storageclass.kubernetes.io/is-default-class=true; newest wins)."""
    spec = obj.setdefault("spec", {})
    if "storageClassName" in spec:
        return
    sc_kind = storage.kinds.by_kind("storage.k8s.io", "v1", "StorageClass")
    if sc_kind is None:
        return
    classes = (await storage.list(sc_kind, None)).items
    defaults = [c for c in classes if (c["metadata"].get("annotations") or {}).get(
        "storageclass.kubernetes.io/is-default-class") == "true"]
    if defaults:
        newest = max(defaults, key=lambda c: (c["metadata"].get("creationTimestamp", ""),
                                              c["metadata"]["name"]))
        spec["storageClassName"] = newest["metadata"]["name"]


KINDS.add(Kind(
    "PersistentVolumeClaim", "persistentvolumeclaims", short_names=("pvc",),
    subresources=("status",), default=_pvc_default, validate=_pvc_validate,
    before_create=_pvc_default_class,
    proto="k8s.io.api.core.v1.PersistentVolumeClaim",
    columns=[
        NAME_COLUMN,
        Column("Status", _phase_or_terminating,
               description="phase represents the current phase of PersistentVolumeClaim."),
        Column("Volume", lambda o: _dct(o.get("spec")).get("volumeName") or "",
               description="volumeName is the binding reference to the PersistentVolume "
                           "backing this claim."),
        Column("Capacity", _pvc_capacity,
               description="capacity represents the actual resources of the underlying "
                           "volume."),
        Column("Access Modes", _pvc_modes,
               description="accessModes contains the actual access modes the volume backing "
                           "the PVC has."),
        Column("StorageClass", _storage_class, description="StorageClass of the pvc"),
        Column("VolumeAttributesClass", _vac, description="VolumeAttributesClass of the pvc"),
        AGE_COLUMN,
        Column("VolumeMode", lambda o: _dct(o.get("spec")).get("volumeMode") or "<unset>",
               priority=1, description="volumeMode defines what type of volume is required "
                                       "by the claim."),
    ],
    description="PersistentVolumeClaim is a user's request for and claim to a persistent "
                "volume."))


# ====================================================================== LimitRange, ResourceQuota

def _limitrange_default(obj: dict) -> None:
    for item in _lst(_dct(obj.get("spec")).get("limits")):
        if not isinstance(item, dict) or item.get("type") != "Container":
            continue
        default = dict(_dct(item.get("default")))
        default_req = dict(_dct(item.get("defaultRequest")))
        for k, v in _dct(item.get("max")).items():
            default.setdefault(k, v)
        for k, v in default.items():
            default_req.setdefault(k, v)
        for k, v in _dct(item.get("min")).items():
            default_req.setdefault(k, v)
        if default:
            item["default"] = default
        if default_req:
            item["defaultRequest"] = default_req


def _limitrange_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    for i, item in enumerate(_lst(_dct(obj.get("spec")).get("limits"))):
        p = f"spec.limits[{i}]"
        item = _dct(item)
        t = item.get("type")
        if not t:
            out.append(_req(f"{p}.type"))
        for key in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
            for name, v in _dct(item.get(key)).items():
                _, errs = _resource_value(name, v, f"{p}.{key}[{name}]")
                out += errs
        if t == "Pod" and item.get("default"):
            out.append(forbidden(f"{p}.default", "may not be specified when `type` is 'Pod'"))
        if t == "Pod" and item.get("defaultRequest"):
            out.append(forbidden(f"{p}.defaultRequest",
                                 "may not be specified when `type` is 'Pod'"))
        mn, mx = _dct(item.get("min")), _dct(item.get("max"))
        for name in set(mn) & set(mx):
            try:
                if parse_quantity(mn[name]) > parse_quantity(mx[name]):
                    out.append(invalid(f"{p}.min[{name}]", str(mn[name]),
                                       f"min value {mn[name]} is greater than max value "
                                       f"{mx[name]}"))
            except ValueError:
                pass
    return out


KINDS.add(Kind(
    "LimitRange", "limitranges", short_names=("limits",), default=_limitrange_default,
    validate=_limitrange_validate, proto="k8s.io.api.core.v1.LimitRange",
    columns=[NAME_COLUMN,
             Column("Created At", lambda o: _dct(o.get("metadata")).get("creationTimestamp")
                    or "", type="date",
                    description="CreationTimestamp is a timestamp representing the server time "
                                "when this object was created.")]))


def _quota_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    for name, v in _dct(_dct(obj.get("spec")).get("hard")).items():
        _, errs = _resource_value(name, v, f"spec.hard[{name}]")
        out += errs
    for i, s in enumerate(_lst(_dct(obj.get("spec")).get("scopes"))):
        allowed = ["BestEffort", "CrossNamespacePodAffinity", "NotBestEffort",
                   "NotTerminating", "PriorityClass", "Terminating"]
        if s not in allowed:
            out.append(unsupported(f"spec.scopes[{i}]", s, allowed))
    return out


def _quota_cells(o: dict) -> tuple[str, str]:
    st = _dct(o.get("status"))
    hard, used = _dct(st.get("hard")), _dct(st.get("used"))
    req, lim = [], []
    for name in sorted(hard):
        s = f"{name}: {used.get(name, '0')}/{hard[name]}"
        (lim if name.split(".")[0] == "limits" and "." in name else req).append(s)
    return ", ".join(req), ", ".join(lim)


KINDS.add(Kind(
    "ResourceQuota", "resourcequotas", short_names=("quota",), subresources=("status",),
    validate=_quota_validate, proto="k8s.io.api.core.v1.ResourceQuota",
    columns=[
        NAME_COLUMN, AGE_COLUMN,
        Column("Request", lambda o: _quota_cells(o)[0],
               description="Request represents a minimum amount of cpu/memory that a container "
                           "may consume."),
        Column("Limit", lambda o: _quota_cells(o)[1],
               description="Limits control the maximum amount of cpu/memory that a container "
                           "may use independent of contention on the node."),
    ]))
