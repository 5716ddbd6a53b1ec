"""Pure Ingress routing: which Ingresses are ours, and the merged host/path table.

No sockets here. The controller (proxy/ingress.py) rebuilds a `RouteTable` from its informer
caches whenever an Ingress or IngressClass changes and asks it `match(host, path)` per request.

Semantics follow the Ingress API (networking.k8s.io/v1) and ingress-nginx:
- hosts: exact names, or `*.example.com`, which matches exactly one extra DNS label
  (`a.example.com`, not `example.com`, not `a.b.example.com`); exact hosts win over wildcards;
  rules without a host serve every host that no host rule claims;
- paths: `Exact` matches the path only; `Prefix` matches element-wise on `/`-separated path
  elements (`/foo` matches `/foo`, `/foo/`, `/foo/bar`, never `/foobar`; trailing slashes are
  ignored); `ImplementationSpecific` is treated as `Prefix`; the longest matching path wins and
  `Exact` beats `Prefix` at equal length;
- every one of our Ingresses is merged by host; on a conflict (same host, path and type) the
  oldest Ingress wins (creationTimestamp, then namespace/name), as in ingress-nginx;
- `spec.defaultBackend` serves requests of that Ingress's hosts that match no path, and the
  oldest Ingress's defaultBackend serves requests that match no host at all;
- with no match at all, `match` returns None (the controller answers 404 "default backend - 404").
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONTROLLER_NAME = "kubelab.io/ingress"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"

PATH_EXACT = "Exact"
PATH_PREFIX = "Prefix"
PATH_IMPL = "ImplementationSpecific"


@dataclass(frozen=True)
class Backend:
    """A Service backend of an Ingress: port by number (port) or by name (port_name)."""
    namespace: str
    service: str
    port: int | None = None
    port_name: str | None = None
    ingress: str = ""          # "<ns>/<name>" of the Ingress it came from (for logs)


@dataclass(frozen=True)
class Route:
    path: str
    path_type: str             # Exact | Prefix (ImplementationSpecific is stored as Prefix)
    backend: Backend | None    # None: a resource backend we cannot serve (→ 503)
    order: tuple               # (creationTimestamp, ns, name) of the Ingress


@dataclass
class HostRoutes:
    routes: list[Route] = field(default_factory=list)
    fallback: Backend | None = None   # spec.defaultBackend of the Ingress(es) defining the host
    fallback_order: tuple | None = None

    def sort(self) -> None:
        # longest path first; Exact before Prefix at equal length; oldest Ingress first
        self.routes.sort(key=lambda r: (-len(r.path), r.path_type != PATH_EXACT, r.order))


@dataclass
class Match:
    backend: Backend | None
    host: str            # the rule host that matched ("" for the catch-all)
    path: str            # the rule path that matched ("" for a defaultBackend)


# ---- IngressClass selection -------------------------------------------------------------------

def our_classes(ingress_classes: list[dict], controller: str = CONTROLLER_NAME
                ) -> tuple[set[str], bool]:
    """(names of the IngressClasses served by `controller`, whether one of them is the
    cluster's default class)."""
    names: set[str] = set()
    default = False
    for ic in ingress_classes:
        if (ic.get("spec") or {}).get("controller") != controller:
            continue
        md = ic.get("metadata") or {}
        names.add(md.get("name", ""))
        if (md.get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
            default = True
    return names, default


def is_ours(ingress: dict, class_names: set[str], default_is_ours: bool) -> bool:
    """Whether this controller serves the Ingress: spec.ingressClassName names one of our
    classes; or (no class name) the deprecated kubernetes.io/ingress.class annotation names
    one; or it names no class at all and our class is the default IngressClass."""
    spec = ingress.get("spec") or {}
    cls = spec.get("ingressClassName")
    if cls:
        return cls in class_names
    ann = ((ingress.get("metadata") or {}).get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
    if ann:
        return ann in class_names
    return default_is_ours


# ---- host and path matching -------------------------------------------------------------------

def normalize_host(host: str) -> str:
    """The Host header (or SNI name) as a lower-case name without port or trailing dot."""
    h = host.strip().lower()
    if h.startswith("["):                      # [v6]:port
        end = h.find("]")
        return h[: end + 1] if end >= 0 else h
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def host_matches(pattern: str, host: str) -> bool:
    """Ingress host matching: exact, or `*.suffix` matching exactly one more label."""
    if pattern.startswith("*."):
        suffix = pattern[1:]                     # ".example.com"
        if not host.endswith(suffix):
            return False
        label = host[: -len(suffix)]
        return bool(label) and "." not in label
    return pattern == host


def path_matches(rule_path: str, path_type: str, req_path: str) -> bool:
    """Exact: equal paths. Prefix / ImplementationSpecific: the rule's path elements are a
    prefix of the request's path elements (split on "/", ignoring a trailing slash)."""
    if path_type == PATH_EXACT:
        return req_path == rule_path
    if rule_path in ("", "/"):
        return True
    p = rule_path.rstrip("/")
    if not req_path.startswith(p):
        return False
    rest = req_path[len(p):]
    return rest == "" or rest.startswith("/")


def _backend(ns: str, b: dict | None, ing_key: str) -> Backend | None:
    svc = (b or {}).get("service")
    if not svc or not svc.get("name"):
        return None
    port = svc.get("port") or {}
    num = port.get("number")
    return Backend(namespace=ns, service=svc["name"],
                   port=int(num) if num else None,
                   port_name=port.get("name") or None, ingress=ing_key)


def ingress_order(ing: dict) -> tuple:
    md = ing.get("metadata") or {}
    return (md.get("creationTimestamp") or "", md.get("namespace") or "", md.get("name") or "")


class RouteTable:
    """Every one of our Ingresses merged by host."""

    def __init__(self) -> None:
        self.exact: dict[str, HostRoutes] = {}
        self.wildcard: dict[str, HostRoutes] = {}   # "*.example.com" → routes
        self.catch_all = HostRoutes()                # rules without host
        self.default: Backend | None = None          # oldest spec.defaultBackend
        self._default_order: tuple | None = None

    @classmethod
    def build(cls, ingresses: list[dict]) -> RouteTable:
        t = cls()
        for ing in sorted(ingresses, key=ingress_order):
            t._add(ing)
        for hr in (*t.exact.values(), *t.wildcard.values(), t.catch_all):
            hr.sort()
        return t

    def _group(self, host: str) -> HostRoutes:
        if not host:
            return self.catch_all
        d = self.wildcard if host.startswith("*.") else self.exact
        return d.setdefault(host, HostRoutes())

    def _add(self, ing: dict) -> None:
        md = ing.get("metadata") or {}
        ns = md.get("namespace") or "default"
        key = f"{ns}/{md.get('name', '')}"
        order = ingress_order(ing)
        spec = ing.get("spec") or {}
        default = _backend(ns, spec.get("defaultBackend"), key) \
            if spec.get("defaultBackend") else None
        if spec.get("defaultBackend") and self._default_order is None:
            self.default, self._default_order = default, order
        seen: set[tuple] = set()
        for rule in spec.get("rules") or []:
            host = (rule.get("host") or "").lower()
            group = self._group(host)
            if spec.get("defaultBackend") and host and group.fallback_order is None:
                group.fallback, group.fallback_order = default, order
            for p in ((rule.get("http") or {}).get("paths") or []):
                ptype = p.get("pathType") or PATH_IMPL
                if ptype == PATH_IMPL:
                    ptype = PATH_PREFIX
                path = p.get("path") or "/"
                k = (host, path, ptype)
                if k in seen or any(r.path == path and r.path_type == ptype
                                    for r in group.routes):
                    continue  # an older Ingress (or an earlier rule) already owns it
                seen.add(k)
                group.routes.append(Route(path=path, path_type=ptype,
                                          backend=_backend(ns, p.get("backend"), key),
                                          order=order))

    def host_group(self, host: str) -> tuple[str, HostRoutes] | None:
        """The rule group serving `host`: exact host, else the one-label wildcard."""
        hr = self.exact.get(host)
        if hr is not None:
            return host, hr
        dot = host.find(".")
        if dot > 0:
            pattern = "*" + host[dot:]
            hr = self.wildcard.get(pattern)
            if hr is not None:
                return pattern, hr
        return None

    def match(self, host: str, path: str) -> Match | None:
        """The backend for a request (host already normalized, path without query)."""
        hg = self.host_group(host)
        if hg is not None:
            name, group = hg
            for r in group.routes:
                if path_matches(r.path, r.path_type, path):
                    return Match(r.backend, name, r.path)
            if group.fallback is not None:
                return Match(group.fallback, name, "")
            if self.default is not None:
                return Match(self.default, name, "")
            return None
        for r in self.catch_all.routes:
            if path_matches(r.path, r.path_type, path):
                return Match(r.backend, "", r.path)
        if self.default is not None:
            return Match(self.default, "", "")
        return None

    def hosts(self) -> list[str]:
        return sorted({*self.exact, *self.wildcard})


@dataclass(frozen=True)
class TLSEntry:
    host: str              # exact or "*.suffix"
    secret_namespace: str
    secret_name: str
    order: tuple


def tls_entries(ingresses: list[dict]) -> list[TLSEntry]:
    """spec.tls of our Ingresses as (host → Secret), oldest Ingress first. A tls entry without
    hosts covers the hosts of that Ingress's rules."""
    out: list[TLSEntry] = []
    for ing in sorted(ingresses, key=ingress_order):
        md = ing.get("metadata") or {}
        ns = md.get("namespace") or "default"
        spec = ing.get("spec") or {}
        rule_hosts = [(r.get("host") or "").lower() for r in spec.get("rules") or []
                      if r.get("host")]
        for t in spec.get("tls") or []:
            secret = t.get("secretName")
            if not secret:
                continue
            for h in (t.get("hosts") or rule_hosts):
                out.append(TLSEntry(h.lower(), ns, secret, ingress_order(ing)))
    return out


def select_tls(entries: dict[str, object], server_name: str) -> object | None:
    """The certificate for an SNI name from {host pattern: cert}: exact first, then the
    one-label wildcard."""
    name = normalize_host(server_name)
    if name in entries:
        return entries[name]
    dot = name.find(".")
    if dot > 0:
        return entries.get("*" + name[dot:])
    return None
