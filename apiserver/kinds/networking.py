"""networking.k8s.io/v1 (Ingress, IngressClass) and discovery.k8s.io/v1 (EndpointSlice).

Sources: pkg/apis/networking/validation/validation.go, pkg/apis/discovery/validation,
pkg/apis/discovery/v1/defaults.go, pkg/printers/internalversion/printers.go (Kubernetes 1.32).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from kubelab.selectors import label_key_errors

from ..errors import Cause
from . import AGE_COLUMN, KINDS, NAME_COLUMN, Column, Kind
from .apps import _ensure, _spec, _status, render
from .common import (
    dns1035_label,
    dns1123_label,
    dns1123_subdomain,
    duplicate,
    invalid,
    is_int,
    object_meta,
    port_number,
    required,
    type_error,
    unsupported,
)

WILDCARD_MSG = ("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS "
                "subdomain, which must consist of lower case alphanumeric characters, '-' or '.' "
                "and end with an alphanumeric character (e.g. '*.example.com', regex used for "
                "validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
                "[a-z0-9])?)*')")
_WILDCARD = re.compile(r"^\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PORT_NAME_CHARS = re.compile(r"^[-a-z0-9]+$")
_HTTP_PATH = re.compile(r"^[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")


def _d(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _lst(v: Any) -> list:
    return v if isinstance(v, list) else []


def wildcard_subdomain(field: str, v: str) -> list[Cause]:
    out = []
    if len(v) > 253:
        out.append(invalid(field, v, "must be no more than 253 characters"))
    if not _WILDCARD.match(v):
        out.append(invalid(field, v, WILDCARD_MSG))
    return out


def port_name_errors(name: str) -> list[str]:
    """validation.IsValidPortName."""
    errs = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not _PORT_NAME_CHARS.match(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    elif not re.search(r"[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name and (name[0] == "-" or name[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


# =========================================================================== Ingress
def _validate_backend(b: Any, path: str) -> list[Cause]:
    b = _d(b)
    has_res, has_svc = b.get("resource") is not None, b.get("service") is not None
    if has_res and has_svc:
        return [invalid(path, "", "cannot set both resource and service backends")]
    out: list[Cause] = []
    if has_res:
        r = _d(b["resource"])
        p = f"{path}.resource"
        grp = r.get("apiGroup")
        if grp is not None:
            out += dns1123_subdomain(f"{p}.apiGroup", grp)
        if not r.get("kind"):
            out.append(Cause(f"{p}.kind", "Required value: kind is required",
                             "FieldValueRequired"))
        if not r.get("name"):
            out.append(Cause(f"{p}.name", "Required value: name is required",
                             "FieldValueRequired"))
        return out
    if has_svc:
        s = _d(b["service"])
        name = s.get("name")
        if not name:
            out.append(required(f"{path}.service.name"))
        else:
            out += dns1035_label(f"{path}.service.name", name)
        port = _d(s.get("port"))
        pname, pnum = port.get("name") or "", port.get("number") or 0
        if pname and pnum:
            out.append(invalid(path, "", "cannot set both port name & port number"))
        elif pname:
            for msg in port_name_errors(str(pname)):
                out.append(invalid(f"{path}.service.port.name", pname, msg))
        elif pnum:
            out += port_number(f"{path}.service.port.number", pnum)
        else:
            out.append(Cause(path, "Required value: port name or number is required",
                             "FieldValueRequired"))
        return out
    return [invalid(path, "", "resource or service backend is required")]


_BAD_SEQS = ("//", "/./", "/../", "%2f", "%2F")
_BAD_SUFFIXES = ("/..", "/.")


def _validate_http_path(hp: Any, path: str) -> list[Cause]:
    hp = _d(hp)
    pt = hp.get("pathType")
    if pt is None:
        return [Cause(f"{path}.pathType", "Required value: pathType must be specified",
                      "FieldValueRequired")]
    p = hp.get("path") or ""
    out: list[Cause] = []
    if pt in ("Exact", "Prefix"):
        if not p.startswith("/"):
            out.append(invalid(f"{path}.path", p, "must be an absolute path"))
        if p:
            for seq in _BAD_SEQS:
                if seq in p:
                    out.append(invalid(f"{path}.path", p, f"must not contain '{seq}'"))
            for suf in _BAD_SUFFIXES:
                if p.endswith(suf):
                    out.append(invalid(f"{path}.path", p, f"cannot end with '{suf}'"))
    elif pt == "ImplementationSpecific":
        if p and not p.startswith("/"):
            out.append(invalid(f"{path}.path", p, "must be an absolute path"))
    else:
        out.append(unsupported(f"{path}.pathType", pt,
                               ["Exact", "ImplementationSpecific", "Prefix"]))
    out += _validate_backend(hp.get("backend"), f"{path}.backend")
    return out


def _validate_ingress_spec(spec: dict) -> list[Cause]:
    out: list[Cause] = []
    rules = spec.get("rules")
    if not rules and spec.get("defaultBackend") is None:
        out.append(Cause("spec", "Invalid value: " + render(rules, "[]networking.IngressRule(nil)"
                                                            if rules is None else
                                                            "[]networking.IngressRule{}")
                         + ": either `defaultBackend` or `rules` must be specified",
                         "FieldValueInvalid"))
    if spec.get("defaultBackend") is not None:
        out += _validate_backend(spec["defaultBackend"], "spec.defaultBackend")
    for i, rule in enumerate(_lst(rules)):
        rule = _d(rule)
        p = f"spec.rules[{i}]"
        host = rule.get("host") or ""
        if host:
            if _is_ip(host):
                out.append(invalid(f"{p}.host", host, "must be a DNS name, not an IP address"))
            if "*" in host:
                out += wildcard_subdomain(f"{p}.host", host)
            else:
                out += dns1123_subdomain(f"{p}.host", host)
        http = rule.get("http")
        if http is not None:
            paths = _lst(_d(http).get("paths"))
            if not paths:
                out.append(required(f"{p}.http.paths"))
            for j, hp in enumerate(paths):
                out += _validate_http_path(hp, f"{p}.http.paths[{j}]")
    for i, tls in enumerate(_lst(spec.get("tls"))):
        tls = _d(tls)
        for j, host in enumerate(_lst(tls.get("hosts"))):
            f = f"spec.tls[{i}].hosts[{j}]"
            if isinstance(host, str) and "*" in host:
                out += wildcard_subdomain(f, host)
            else:
                out += dns1123_subdomain(f, host)
        sn = tls.get("secretName")
        if sn:
            out += dns1123_subdomain(f"spec.tls[{i}].secretName", sn)
    icn = spec.get("ingressClassName")
    if icn is not None:
        out += dns1123_subdomain("spec.ingressClassName", icn)
    return out


def _ingress_default(obj: dict) -> None:
    # networking/v1 has no defaults (pathType is required); status always carries loadBalancer
    _ensure(_ensure(obj, "status"), "loadBalancer")


def _ingress_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    out += _validate_ingress_spec(_spec(obj))
    return out


def ingress_hosts(o: dict) -> str:
    """formatHosts: up to three hosts, `*` when none."""
    rules = _lst(_spec(o).get("rules"))
    hosts: list[str] = []
    more = False
    for r in rules:
        if len(hosts) == 3:
            more = True
        h = _d(r).get("host")
        if not more and h:
            hosts.append(h)
    if not hosts:
        return "*"
    s = ",".join(hosts)
    return f"{s} + {len(rules) - 3} more..." if more else s


def lb_addresses(o: dict) -> str:
    """ingressLoadBalancerStatusStringer (the server prints wide: no truncation)."""
    out = set()
    for ing in _lst(_d(_status(o).get("loadBalancer")).get("ingress")):
        ing = _d(ing)
        if ing.get("ip"):
            out.add(ing["ip"])
        elif ing.get("hostname"):
            out.add(ing["hostname"])
    return ",".join(sorted(out))


KINDS.add(Kind(
    "Ingress", "ingresses", group="networking.k8s.io", version="v1", short_names=("ing",),
    subresources=("status",), has_generation=True, default=_ingress_default,
    validate=_ingress_validate, proto="k8s.io.api.networking.v1.Ingress",
    columns=[
        NAME_COLUMN,
        Column("Class", lambda o: _spec(o).get("ingressClassName")
               if _spec(o).get("ingressClassName") is not None else "<none>",
               description="The name of the IngressClass resource that should be used for this "
                           "Ingress"),
        Column("Hosts", ingress_hosts, description="Hosts that incoming requests are matched "
                                                   "against before the ingress rule"),
        Column("Address", lb_addresses, description="Address is a list containing ingress "
                                                    "points for the load-balancer"),
        Column("Ports", lambda o: "80, 443" if _lst(_spec(o).get("tls")) else "80",
               description="Ports of TLS configurations that open"),
        AGE_COLUMN,
    ]))


# =========================================================================== IngressClass
def _domain_prefixed_path(field: str, v: Any) -> list[Cause]:
    """validation.IsDomainPrefixedPath."""
    if not v:
        return [required(field)]
    if not isinstance(v, str):
        return [type_error(field, v, "a string")]
    parts = v.split("/", 1)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return [invalid(field, v, 'must be a domain-prefixed path (such as "acme.io/foo")')]
    out = dns1123_subdomain(field, parts[0])
    if not _HTTP_PATH.match(parts[1]):
        out.append(invalid(field, parts[1], "Invalid path (regex used for validation is "
                                            "'[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')"))
    return out


def _ingressclass_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=False)
    spec = _spec(obj)
    ctrl = spec.get("controller")
    if isinstance(ctrl, str) and len(ctrl) > 250:
        out.append(Cause("spec.controller", "Too long: must have at most 250 bytes",
                         "FieldValueTooLong"))
    out += _domain_prefixed_path("spec.controller", ctrl)
    params = spec.get("parameters")
    if params is not None:
        p = _d(params)
        f = "spec.parameters"
        if not p.get("kind"):
            out.append(Cause(f"{f}.kind", "Required value: kind is required",
                             "FieldValueRequired"))
        if not p.get("name"):
            out.append(Cause(f"{f}.name", "Required value: name is required",
                             "FieldValueRequired"))
        if p.get("apiGroup") is not None:
            out += dns1123_subdomain(f"{f}.apiGroup", p["apiGroup"])
        scope = p.get("scope")
        if scope is None:
            out.append(required(f"{f}.scope"))
        elif scope not in ("Cluster", "Namespace"):
            out.append(unsupported(f"{f}.scope", scope, ["Cluster", "Namespace"]))
        elif scope == "Namespace" and p.get("namespace") is None:
            out.append(Cause(f"{f}.namespace", "Required value: `parameters.scope` is set to "
                             "'Namespace'", "FieldValueRequired"))
        elif scope == "Namespace":
            out += dns1123_label(f"{f}.namespace", p["namespace"])
        elif scope == "Cluster" and p.get("namespace") is not None:
            out.append(forbidden_cause(f"{f}.namespace",
                                       "`parameters.scope` is set to 'Cluster'"))
    if old is not None and _spec(old).get("controller") != ctrl:
        out.append(invalid("spec.controller", ctrl, "field is immutable"))
    return out


def forbidden_cause(field: str, msg: str) -> Cause:
    return Cause(field, f"Forbidden: {msg}", "FieldValueForbidden")


def _ingressclass_parameters(o: dict) -> str:
    p = _spec(o).get("parameters")
    if not isinstance(p, dict):
        return "<none>"
    s = str(p.get("kind", ""))
    if p.get("apiGroup") is not None:
        s += "." + str(p["apiGroup"])
    return s + "/" + str(p.get("name", ""))


def _ingressclass_default(obj: dict) -> None:
    params = _spec(obj).get("parameters")
    if isinstance(params, dict) and params.get("scope") is None:
        params["scope"] = "Cluster"


KINDS.add(Kind(
    "IngressClass", "ingressclasses", group="networking.k8s.io", version="v1", namespaced=False,
    has_generation=True, default=_ingressclass_default, validate=_ingressclass_validate,
    proto="k8s.io.api.networking.v1.IngressClass",
    columns=[
        NAME_COLUMN,
        Column("Controller", lambda o: _spec(o).get("controller", ""),
               description="Controller that is responsible for handling this class"),
        Column("Parameters", _ingressclass_parameters,
               description="A reference to a resource with additional parameters"),
        AGE_COLUMN,
    ]))


# =========================================================================== EndpointSlice
def _endpointslice_default(obj: dict) -> None:
    for p in _lst(obj.get("ports")):
        if isinstance(p, dict):
            if p.get("name") is None:
                p["name"] = ""
            if p.get("protocol") is None:
                p["protocol"] = "TCP"


def _special_ip(field: str, addr: str) -> list[Cause]:
    """apivalidation.ValidateNonSpecialIP."""
    ip = ipaddress.ip_address(addr)
    if ip.is_unspecified:
        return [invalid(field, addr, "may not be unspecified (0.0.0.0, ::)")]
    # Kubernetes refuses loopback endpoints; kubelab's unprivileged network plan gives pods
    # loopback addresses (127.244.N.x), so they are allowed here as in core Endpoints.
    if ip.is_link_local:
        return [invalid(field, addr, "may not be in the link-local range (169.254.0.0/16, "
                                     "fe80::/10)")]
    if ip.is_multicast and (ip in ipaddress.ip_network("224.0.0.0/24") if ip.version == 4
                            else ip in ipaddress.ip_network("ff02::/16")):
        return [invalid(field, addr, "may not be in the link-local multicast range "
                                     "(224.0.0.0/24, ff02::/10)")]
    return []


def _endpointslice_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    at = obj.get("addressType")
    if not at:
        out.append(required("addressType"))
    elif at not in ("IPv4", "IPv6", "FQDN"):
        out.append(unsupported("addressType", at, ["FQDN", "IPv4", "IPv6"]))
    eps = _lst(obj.get("endpoints"))
    if len(eps) > 1000:
        out.append(Cause("endpoints", f"Too many: {len(eps)}: must have at most 1000 items",
                         "FieldValueTooMany"))
        eps = []
    for i, ep in enumerate(eps):
        ep = _d(ep)
        ap = f"endpoints[{i}].addresses"
        addrs = _lst(ep.get("addresses"))
        if not addrs:
            out.append(Cause(ap, "Required value: must contain at least 1 address",
                             "FieldValueRequired"))
        elif len(addrs) > 100:
            out.append(Cause(ap, f"Too many: {len(addrs)}: must have at most 100 items",
                             "FieldValueTooMany"))
        for j, a in enumerate(addrs):
            f = f"{ap}[{j}]"
            if at in ("IPv4", "IPv6"):
                try:
                    ok = isinstance(a, str) and ipaddress.ip_address(a).version == \
                        (4 if at == "IPv4" else 6)
                except ValueError:
                    ok = False
                if not ok:
                    out.append(invalid(f, a, f"must be a valid {at} address"))
                else:
                    out += _special_ip(f, a)
            elif at == "FQDN":
                if not isinstance(a, str) or not a:
                    out.append(required(f))
                else:
                    out += dns1123_subdomain(f, a)
        nn = ep.get("nodeName")
        if nn is not None:
            out += dns1123_subdomain(f"endpoints[{i}].nodeName", nn)
        hn = ep.get("hostname")
        if hn is not None:
            out += dns1123_label(f"endpoints[{i}].hostname", hn)
    names: set[str] = set()
    for i, p in enumerate(_lst(obj.get("ports"))):
        p = _d(p)
        f = f"ports[{i}]"
        name = p.get("name") or ""
        if name:
            out += dns1123_label(f"{f}.name", name)
        if name in names:
            out.append(duplicate(f"{f}.name", name))
        names.add(name)
        proto = p.get("protocol")
        if proto is None:
            out.append(required(f"{f}.protocol"))
        elif proto not in ("SCTP", "TCP", "UDP"):
            out.append(unsupported(f"{f}.protocol", proto, ["SCTP", "TCP", "UDP"]))
        ap = p.get("appProtocol")
        if ap is not None:
            for msg in label_key_errors(str(ap)):
                out.append(invalid(f"{f}.appProtocol", ap, msg))
    return out


def _list_with_more(items: list[str], count: int) -> str:
    s = ",".join(items[:3])
    if count > 3:
        return f"{s} + {count - 3} more..."
    return s or "<unset>"


def slice_ports(o: dict) -> str:
    """formatDiscoveryPorts."""
    items = []
    for p in _lst(o.get("ports")):
        p = _d(p)
        if is_int(p.get("port")):
            items.append(str(p["port"]))
        elif p.get("name") is not None:
            items.append(str(p["name"]))
        else:
            items.append("*")
    return _list_with_more(items, len(items))


def slice_endpoints(o: dict) -> str:
    """formatDiscoveryEndpoints: addresses across endpoints, up to three."""
    addrs = [str(a) for ep in _lst(o.get("endpoints")) for a in _lst(_d(ep).get("addresses"))]
    return _list_with_more(addrs, len(addrs))


KINDS.add(Kind(
    "EndpointSlice", "endpointslices", group="discovery.k8s.io", version="v1",
    has_generation=True, default=_endpointslice_default, validate=_endpointslice_validate,
    proto="k8s.io.api.discovery.v1.EndpointSlice",
    columns=[
        NAME_COLUMN,
        Column("AddressType", lambda o: o.get("addressType", ""),
               description="addressType specifies the type of address carried by this "
                           "EndpointSlice."),
        Column("Ports", slice_ports, description="ports specifies the list of network ports "
                                                 "exposed by each endpoint in this slice."),
        Column("Endpoints", slice_endpoints, description="endpoints is a list of unique "
                                                         "endpoints in this slice."),
        AGE_COLUMN,
    ]))


__all__ = ["ingress_hosts", "lb_addresses", "port_name_errors", "slice_endpoints", "slice_ports",
           "wildcard_subdomain"]
