"""Container environment, as the kubelet builds it (kubelet_pods.go makeEnvironmentVariables,
pkg/kubelet/envvars, third_party/forked/golang/expansion).

Order and precedence:
1. ``envFrom`` sources in order (configMapRef / secretRef, with ``prefix``; a missing source is
   an error unless ``optional``); keys that are not valid environment variable names are
   skipped and reported as an ``InvalidEnvironmentVariableNames`` warning
   (:attr:`Env.warnings`, for the caller to record as an Event).
2. ``env`` in declaration order, later entries overriding earlier ones and envFrom: ``value``
   with ``$(VAR)`` expanded against the variables defined so far and the Service variables
   (``$$`` escapes ``$``; an undefined reference stays literally ``$(VAR)``), or ``valueFrom``
   (configMapKeyRef / secretKeyRef, optional; fieldRef; resourceFieldRef, whose limits default
   to the node's allocatable like the kubelet's defaultPodLimitsForDownwardAPI).
3. The Service link variables (``<SVC>_SERVICE_HOST`` ...) of the Services of the pod's
   namespace (only when ``enableServiceLinks`` is not false) and the ``kubernetes`` Service of
   the ``default`` namespace (always), for names not already set.

Errors raise :class:`EnvError` with the kubelet's reason ``CreateContainerConfigError`` and
its message (``configmap "x" not found``, ``couldn't find key k in ConfigMap ns/x``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
from collections.abc import Iterable
from fractions import Fraction
from typing import Any, Protocol

CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
INVALID_ENV_NAMES = "InvalidEnvironmentVariableNames"
MASTER_SERVICES = ("kubernetes",)

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def is_env_var_name(name: str) -> bool:
    """validation.IsEnvVarName (the strict, pre-1.30 rule): C-identifier-like with '-' and
    '.', and not '.', '..' or '..'-prefixed."""
    return bool(_ENV_NAME.match(name)) and not name.startswith("..") and name != "."


def is_usable_env_name(name: str) -> bool:
    """What an environment can hold at all: non-empty, no '=' and no NUL."""
    return bool(name) and "=" not in name and "\0" not in name


class EnvError(Exception):
    """A container's environment cannot be built: ``reason`` (CreateContainerConfigError) and
    the kubelet's ``message``, for the container's waiting state and the Failed event."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class Lookup(Protocol):
    def configmap(self, namespace: str, name: str) -> dict | None: ...

    def secret(self, namespace: str, name: str) -> dict | None: ...


class CacheLookup:
    """The ``lookup`` object over informer caches (anything with ``get(ns, name)`` and
    ``list(ns)``, like kubelab.client.Informer): ConfigMaps and Secrets required; claims,
    volumes and ServiceAccounts optional (used by the VolumeManager when given)."""

    def __init__(self, configmaps: Any, secrets: Any, pvcs: Any = None, pvs: Any = None,
                 service_accounts: Any = None):
        self._cm, self._sec, self._pvc, self._pv, self._sa = (configmaps, secrets, pvcs, pvs,
                                                             service_accounts)

    def configmap(self, namespace: str, name: str) -> dict | None:
        return self._cm.get(namespace, name)

    def secret(self, namespace: str, name: str) -> dict | None:
        return self._sec.get(namespace, name)

    def secrets(self, namespace: str) -> list[dict]:
        return list(self._sec.list(namespace))

    def __getattr__(self, attr: str) -> Any:
        # pvc / pv / service_account exist only when their cache was given, so that the
        # VolumeManager can tell "not found" from "not known"
        src = {"pvc": "_pvc", "pv": "_pv", "service_account": "_sa"}.get(attr)
        if src is None or self.__dict__.get(src) is None:
            raise AttributeError(attr)
        cache = self.__dict__[src]
        if attr == "pv":
            return lambda name: cache.get(None, name)
        return lambda namespace, name: cache.get(namespace, name)


class Env(dict):
    """The environment (name -> value, in the kubelet's order) plus ``warnings``: a list of
    ``(reason, message)`` Warning events the caller should record on the pod."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.warnings: list[tuple[str, str]] = []


@dataclasses.dataclass
class NodeInfo:
    """What the downward API needs from the node: allocatable (quantities by resource name)
    and the node's IPs (status.hostIP / hostIPs)."""
    allocatable: dict[str, Any] = dataclasses.field(default_factory=dict)
    host_ips: list[str] = dataclasses.field(default_factory=list)


def node_info_of(node_info: Any) -> NodeInfo:
    """Accept a NodeInfo, a Node object dict, a ``{"allocatable": ..., "host_ips": [...]}``
    dict, a bare allocatable dict, an object with ``.allocatable`` (and optionally
    ``.host_ips``/``.node_ip``), a callable returning one of these, or None."""
    if callable(node_info) and not isinstance(node_info, type):
        node_info = node_info()
    if node_info is None:
        return NodeInfo()
    if isinstance(node_info, NodeInfo):
        return node_info
    if isinstance(node_info, dict):
        if "status" in node_info or node_info.get("kind") == "Node":
            st = node_info.get("status") or {}
            ips = [a.get("address") for a in st.get("addresses") or []
                   if a.get("type") == "InternalIP" and a.get("address")]
            return NodeInfo(dict(st.get("allocatable") or {}), ips)
        if "allocatable" in node_info:
            ips = list(node_info.get("host_ips") or node_info.get("hostIPs") or [])
            if not ips and node_info.get("node_ip"):
                ips = [node_info["node_ip"]]
            return NodeInfo(dict(node_info.get("allocatable") or {}), ips)
        return NodeInfo(dict(node_info), [])
    alloc = getattr(node_info, "allocatable", None) or {}
    ips = list(getattr(node_info, "host_ips", None) or [])
    if not ips and getattr(node_info, "node_ip", None):
        ips = [node_info.node_ip]
    return NodeInfo(dict(alloc), ips)


# ---------------------------------------------------------------------------------------------
# $(VAR) expansion (third_party/forked/golang/expansion)

def _read_var(s: str) -> tuple[str, bool, int]:
    """(text, is_variable, bytes consumed) for the text after a '$'."""
    c = s[0]
    if c == "$":
        return "$", False, 1
    if c == "(":
        end = s.find(")", 1)
        if end >= 0:
            return s[1:end], True, end + 1
        return "$(", False, 1
    return "$" + c, False, 1


def expand_with(s: str, mapping) -> str:
    """Expand ``$(VAR)`` in ``s`` with ``mapping(name) -> str``."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(s)
    while cursor < n:
        if s[cursor] == "$" and cursor + 1 < n:
            out.append(s[checkpoint:cursor])
            text, is_var, advance = _read_var(s[cursor + 1:])
            out.append(mapping(text) if is_var else text)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + s[checkpoint:]


def mapping_for(*contexts: dict) -> Any:
    """The kubelet's MappingFuncFor: the first context holding the name wins; an unknown name
    expands to itself, ``$(NAME)``."""
    def mapping(name: str) -> str:
        for ctx in contexts:
            if name in ctx:
                return ctx[name]
        return f"$({name})"
    return mapping


def expand(s: str, env: dict) -> str:
    """``$(VAR)`` expansion against ``env``; ``$$`` is a literal ``$``; undefined stays."""
    return expand_with(s, mapping_for(env))


def expand_command(command: list[str] | None, args: list[str] | None,
                   env: dict) -> tuple[list[str], list[str]]:
    """ExpandContainerCommandAndArgs: (command, args) with ``$(VAR)`` expanded from env."""
    m = mapping_for(env)
    return ([expand_with(c, m) for c in command or []], [expand_with(a, m) for a in args or []])


def expand_subpath_expr(expr: str, env: dict) -> str:
    """ExpandContainerVolumeMounts: a volumeMount's ``subPathExpr`` expanded from the
    container's env; a variable that is missing or empty is an error."""
    missing: set[str] = set()

    def mapping(name: str) -> str:
        v = env.get(name, "")
        if not v:
            missing.add(name)
        return v

    out = expand_with(expr, mapping)
    if missing:
        raise EnvError(CREATE_CONTAINER_CONFIG_ERROR,
                       f"missing value for {', '.join(sorted(missing))}")
    return out


# ---------------------------------------------------------------------------------------------
# Service environment variables (pkg/kubelet/envvars)

def _env_name(s: str) -> str:
    return s.replace("-", "_").upper()


def service_ip_set(svc: dict) -> bool:
    ip = (svc.get("spec") or {}).get("clusterIP") or ""
    return ip not in ("", "None")


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def service_env_vars(services: Iterable[dict]) -> list[tuple[str, str]]:
    """FromServices: the variables for each Service with a cluster IP, in order."""
    out: list[tuple[str, str]] = []
    for svc in services:
        if not service_ip_set(svc):
            continue
        spec = svc.get("spec") or {}
        ports = spec.get("ports") or []
        if not ports:
            continue
        ip = spec["clusterIP"]
        prefix = _env_name(svc["metadata"]["name"])
        out.append((prefix + "_SERVICE_HOST", ip))
        name = prefix + "_SERVICE_PORT"
        out.append((name, str(int(ports[0].get("port")))))
        for sp in ports:
            if sp.get("name"):
                out.append((name + "_" + _env_name(sp["name"]), str(int(sp["port"]))))
        for i, sp in enumerate(ports):
            proto = sp.get("protocol") or "TCP"
            port = int(sp["port"])
            url = f"{proto.lower()}://{_join_host_port(ip, port)}"
            if i == 0:
                out.append((prefix + "_PORT", url))
            pp = f"{prefix}_PORT_{port}_{proto.upper()}"
            out += [(pp, url), (pp + "_PROTO", proto.lower()), (pp + "_PORT", str(port)),
                    (pp + "_ADDR", ip)]
    return out


def service_env_map(namespace: str, services: Iterable[dict],
                    enable_service_links: bool) -> dict[str, str]:
    """getServiceEnvVarMap: the pod's namespace's Services (when service links are enabled)
    and the master ``kubernetes`` Service of ``default`` (always); a Service of the pod's own
    namespace wins over the default one of the same name."""
    chosen: dict[str, dict] = {}
    for svc in services or []:
        if not service_ip_set(svc):
            continue
        md = svc.get("metadata") or {}
        name, ns = md.get("name"), md.get("namespace") or "default"
        if ns == "default" and name in MASTER_SERVICES:
            chosen.setdefault(name, svc)
        elif ns == namespace and enable_service_links:
            chosen[name] = svc
    out: dict[str, str] = {}
    for k, v in service_env_vars(chosen[n] for n in sorted(chosen)):
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------
# Downward API: field paths and resource values

def go_quote(s: str) -> str:
    """Go's strconv.Quote (fmt %q) for a string."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                        "\t": "\\t", "\v": "\\v"}[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o > 0x7F and not ch.isprintable():
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_map(m: dict | None) -> str:
    """fieldpath.FormatMap: sorted ``key="value"`` lines (Go %q quoting), no final newline."""
    return "\n".join(f"{k}={go_quote(str(v))}" for k, v in sorted((m or {}).items()))


_SUBSCRIPT = re.compile(r"^(metadata\.(?:labels|annotations))\[['\"]?(.*?)['\"]?\]$")


class FieldPathError(ValueError):
    pass


def extract_field_path(pod: dict, path: str) -> str:
    """fieldpath.ExtractFieldPathAsString over the pod's metadata."""
    md = pod.get("metadata") or {}
    m = _SUBSCRIPT.match(path)
    if m:
        which = "labels" if m.group(1).endswith("labels") else "annotations"
        return str((md.get(which) or {}).get(m.group(2), ""))
    if path == "metadata.annotations":
        return format_map(md.get("annotations"))
    if path == "metadata.labels":
        return format_map(md.get("labels"))
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(md.get(path.split(".", 1)[1]) or "")
    raise FieldPathError(f"unsupported fieldPath: {path}")


def pod_field_value(pod: dict, path: str, pod_ips: list[str] | None = None,
                    host_ips: list[str] | None = None) -> str:
    """podFieldSelectorRuntimeValue: spec/status fields the kubelet knows, else metadata."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if path == "spec.nodeName":
        return spec.get("nodeName") or ""
    if path == "spec.serviceAccountName":
        return spec.get("serviceAccountName") or ""
    if path in ("status.hostIP", "status.hostIPs"):
        ips = list(host_ips or [])
        if not ips:
            ips = [i.get("ip") for i in status.get("hostIPs") or [] if i.get("ip")]
        if not ips and status.get("hostIP"):
            ips = [status["hostIP"]]
        return (ips[0] if ips else "") if path == "status.hostIP" else ",".join(ips)
    if path in ("status.podIP", "status.podIPs"):
        ips = list(pod_ips or [])
        if not ips:
            ips = [i.get("ip") for i in status.get("podIPs") or [] if i.get("ip")]
        if not ips and status.get("podIP"):
            ips = [status["podIP"]]
        return (ips[0] if ips else "") if path == "status.podIP" else ",".join(ips)
    return extract_field_path(pod, path)


_QTY = re.compile(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|"
                  r"[eE][+-]?[0-9]+)?$")
_MULT = {None: Fraction(1), "n": Fraction(1, 10 ** 9), "u": Fraction(1, 10 ** 6),
         "m": Fraction(1, 1000), "k": Fraction(10 ** 3), "M": Fraction(10 ** 6),
         "G": Fraction(10 ** 9), "T": Fraction(10 ** 12), "P": Fraction(10 ** 15),
         "E": Fraction(10 ** 18), "Ki": Fraction(2 ** 10), "Mi": Fraction(2 ** 20),
         "Gi": Fraction(2 ** 30), "Ti": Fraction(2 ** 40), "Pi": Fraction(2 ** 50),
         "Ei": Fraction(2 ** 60)}


def parse_quantity(v: Any) -> Fraction:
    """A resource.Quantity as an exact fraction (``"500m"`` -> 1/2, ``"1Gi"`` -> 2**30)."""
    if v is None or v == "":
        return Fraction(0)
    if isinstance(v, (int, float)):
        return Fraction(v)
    m = _QTY.match(str(v).strip())
    if not m:
        raise ValueError(f"quantities must match the regular expression: {v!r}")
    num, suf = m.group(1), m.group(2)
    base = Fraction(num)
    if suf and suf[0] in "eE":
        return base * Fraction(10) ** int(suf[1:])
    return base * _MULT[suf]


def _ceil(f: Fraction) -> int:
    return math.ceil(f)


STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def defaulted_limits(container: dict, allocatable: dict) -> dict:
    """MergeContainerResourceLimits: limits, with the node's allocatable for cpu, memory and
    ephemeral-storage where no limit is set."""
    limits = dict(((container.get("resources") or {}).get("limits")) or {})
    for k in STANDARD_RESOURCES:
        if k not in limits and k in (allocatable or {}):
            limits[k] = allocatable[k]
    return limits


def container_resource_value(ref: dict, container: dict, allocatable: dict | None) -> str:
    """ExtractContainerResourceValue (with defaulted limits): the ceiling of the value in
    units of the divisor (cpu in millicores precision, memory/storage in bytes)."""
    res = ref.get("resource") or ""
    divisor = parse_quantity(ref.get("divisor") or 0) or Fraction(1)
    kind, _, name = res.partition(".")
    if kind == "limits":
        values = defaulted_limits(container, allocatable or {})
    elif kind == "requests":
        values = dict(((container.get("resources") or {}).get("requests")) or {})
    else:
        raise ValueError(f"unsupported container resource : {res}")
    if name == "cpu":
        milli = _ceil(parse_quantity(values.get("cpu")) * 1000)
        dmilli = _ceil(divisor * 1000) or 1
        return str(_ceil(Fraction(milli, dmilli)))
    if name in ("memory", "ephemeral-storage") or name.startswith("hugepages-"):
        val = _ceil(parse_quantity(values.get(name)))
        dval = _ceil(divisor) or 1
        return str(_ceil(Fraction(val, dval)))
    raise ValueError(f"unsupported container resource : {res}")


def resource_value_by_container(ref: dict, pod: dict, default_container: dict | None,
                                allocatable: dict | None) -> str:
    """The value for a resourceFieldRef, naming a container (volumes) or defaulting to the
    current one (env)."""
    cname = ref.get("containerName") or ""
    container = default_container
    if cname:
        spec = pod.get("spec") or {}
        container = next((c for c in (spec.get("containers") or []) +
                          (spec.get("initContainers") or []) if c.get("name") == cname), None)
        if container is None:
            raise ValueError(f"container {cname} not found")
    if container is None:
        raise ValueError("no container given for resourceFieldRef")
    return container_resource_value(ref, container, allocatable)


# ---------------------------------------------------------------------------------------------
# Secret data

def secret_bytes(secret: dict) -> dict[str, bytes]:
    """A Secret's data decoded (base64 in the JSON form) plus any stringData."""
    out: dict[str, bytes] = {}
    for k, v in (secret.get("data") or {}).items():
        if isinstance(v, (bytes, bytearray)):
            out[k] = bytes(v)
            continue
        try:
            out[k] = base64.b64decode(v or "", validate=True)
        except (binascii.Error, ValueError):
            out[k] = str(v).encode()
    for k, v in (secret.get("stringData") or {}).items():
        out[k] = str(v).encode()
    return out


def configmap_binary(cm: dict) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for k, v in (cm.get("binaryData") or {}).items():
        if isinstance(v, (bytes, bytearray)):
            out[k] = bytes(v)
        else:
            try:
                out[k] = base64.b64decode(v or "")
            except (binascii.Error, ValueError):
                out[k] = str(v).encode()
    return out


def _decode(b: bytes) -> str:
    return b.decode("utf-8", errors="surrogateescape")


# ---------------------------------------------------------------------------------------------

def _err(message: str) -> EnvError:
    return EnvError(CREATE_CONTAINER_CONFIG_ERROR, message)


def container_env(pod: dict, container: dict, lookup: Lookup, services: Iterable[dict] | None,
                  node_info: Any = None, *, pod_ips: list[str] | None = None,
                  host_ips: list[str] | None = None, strict_env_names: bool = False) -> Env:
    """The container's environment (see the module docstring), raising :class:`EnvError`.

    ``pod_ips``/``host_ips`` override status.podIP(s)/hostIP(s) (the sandbox's IP is known
    before the pod status says so); host IPs otherwise come from ``node_info``.

    envFrom key names: the kubelet of Kubernetes 1.30+ (KEP-4369, which this cluster's
    kubectl 1.32 era follows) passes every key through; only names no environment can hold
    (empty, with '=' or NUL) are skipped here, with the InvalidEnvironmentVariableNames
    warning. ``strict_env_names=True`` gives the older kubelet's behaviour: keys failing
    IsEnvVarName (e.g. ``1badkey``) are skipped with that warning."""
    valid_name = is_env_var_name if strict_env_names else is_usable_env_name
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ns = md.get("namespace") or "default"
    node = node_info_of(node_info)
    if not host_ips:
        host_ips = node.host_ips or None
    enable_links = spec.get("enableServiceLinks")
    service_env = service_env_map(ns, services or [], enable_links is None or bool(enable_links))

    env = Env()
    tmp: dict[str, str] = {}
    configmaps: dict[str, dict] = {}
    secrets: dict[str, dict] = {}

    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        if src.get("configMapRef") is not None:
            ref = src["configMapRef"]
            name, optional = ref.get("name") or "", bool(ref.get("optional"))
            cm = configmaps.get(name) or lookup.configmap(ns, name)
            if cm is None:
                if optional:
                    continue
                raise _err(f'configmap "{name}" not found')
            configmaps[name] = cm
            invalid = []
            for k, v in (cm.get("data") or {}).items():
                k = prefix + k
                if not valid_name(k):
                    invalid.append(k)
                    continue
                tmp[k] = v
            if invalid:
                env.warnings.append((INVALID_ENV_NAMES, (
                    f"Keys [{', '.join(sorted(invalid))}] from the EnvFrom configMap {ns}/{name} "
                    "were skipped since they are considered invalid environment variable "
                    "names.")))
        elif src.get("secretRef") is not None:
            ref = src["secretRef"]
            name, optional = ref.get("name") or "", bool(ref.get("optional"))
            sec = secrets.get(name) or lookup.secret(ns, name)
            if sec is None:
                if optional:
                    continue
                raise _err(f'secret "{name}" not found')
            secrets[name] = sec
            invalid = []
            for k, b in secret_bytes(sec).items():
                k = prefix + k
                if not valid_name(k):
                    invalid.append(k)
                    continue
                tmp[k] = _decode(b)
            if invalid:
                env.warnings.append((INVALID_ENV_NAMES, (
                    f"Keys [{', '.join(sorted(invalid))}] from the EnvFrom secret {ns}/{name} "
                    "were skipped since they are considered invalid environment variable "
                    "names.")))

    mapping = mapping_for(tmp, service_env)
    for ev in container.get("env") or []:
        name = ev.get("name") or ""
        value = ev.get("value") or ""
        vf = ev.get("valueFrom")
        if value:
            value = expand_with(value, mapping)
        elif vf:
            if vf.get("fieldRef"):
                path = vf["fieldRef"].get("fieldPath") or ""
                try:
                    value = pod_field_value(pod, path, pod_ips, host_ips)
                except FieldPathError as e:
                    raise _err(str(e)) from None
            elif vf.get("resourceFieldRef"):
                try:
                    value = resource_value_by_container(vf["resourceFieldRef"], pod, container,
                                                        node.allocatable)
                except ValueError as e:
                    raise _err(str(e)) from None
            elif vf.get("configMapKeyRef"):
                ref = vf["configMapKeyRef"]
                cname, key = ref.get("name") or "", ref.get("key") or ""
                optional = bool(ref.get("optional"))
                cm = configmaps.get(cname)
                if cm is None:
                    cm = lookup.configmap(ns, cname)
                    if cm is None:
                        if optional:
                            continue
                        raise _err(f'configmap "{cname}" not found')
                    configmaps[cname] = cm
                data = cm.get("data") or {}
                if key not in data:
                    if optional:
                        continue
                    raise _err(f"couldn't find key {key} in ConfigMap {ns}/{cname}")
                value = data[key]
            elif vf.get("secretKeyRef"):
                ref = vf["secretKeyRef"]
                sname, key = ref.get("name") or "", ref.get("key") or ""
                optional = bool(ref.get("optional"))
                sec = secrets.get(sname)
                if sec is None:
                    sec = lookup.secret(ns, sname)
                    if sec is None:
                        if optional:
                            continue
                        raise _err(f'secret "{sname}" not found')
                    secrets[sname] = sec
                data = secret_bytes(sec)
                if key not in data:
                    if optional:
                        continue
                    raise _err(f"couldn't find key {key} in Secret {ns}/{sname}")
                value = _decode(data[key])
        tmp[name] = value

    env.update(tmp)
    for k, v in service_env.items():
        if k not in tmp:
            env[k] = v
    return env
