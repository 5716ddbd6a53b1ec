"""Discovery documents, from the schema: aggregated (apidiscovery.k8s.io v2 and v2beta1, what
kubectl 1.32 asks for first) and the legacy /api, /apis, /api/v1, /apis/<g>/<v> lists."""

from __future__ import annotations

from .kinds import Kind, Registry

# Virtual resources served beside the stored kinds (create-only reviews).
VIRTUAL = [
    ("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", ("create",)),
    ("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", ("create",)),
    ("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview",
     ("create",)),
    ("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview",
     ("create",)),
    # the resource metrics API (what metrics-server serves), read from the node agents
    ("metrics.k8s.io", "v1beta1", "nodes", "NodeMetrics", ("get", "list")),
    ("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", ("get", "list")),
    # deprecated since 1.19 but still served, and still in tutorials (apiserver/componentstatus.py)
    ("", "v1", "componentstatuses", "ComponentStatus", ("get", "list")),
]
NAMESPACED_VIRTUAL = {("metrics.k8s.io", "pods")}
VIRTUAL_SHORT_NAMES = {("", "componentstatuses"): ["cs"]}

SUBRESOURCE_VERBS = {
    "status": ("get", "patch", "update"),
    "scale": ("get", "patch", "update"),
    "binding": ("create",),
    "eviction": ("create",),
    "log": ("get",),
    "exec": ("create", "get"),
    "attach": ("create", "get"),
    "portforward": ("create", "get"),
    "proxy": ("create", "delete", "get", "patch", "update"),
    "finalize": ("update",),
    "ephemeralcontainers": ("get", "patch", "update"),
    "token": ("create",),
}


def _sub_kind(k: Kind, sub: str) -> dict:
    if sub == "scale":
        return {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    if sub == "binding":
        return {"group": "", "version": "v1", "kind": "Binding"}
    if sub == "eviction":
        return {"group": "policy", "version": "v1", "kind": "Eviction"}
    if sub == "token":
        return {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}
    if sub in ("exec", "attach", "portforward"):
        return {"group": "", "version": "v1", "kind": {"exec": "PodExecOptions",
                                                         "attach": "PodAttachOptions",
                                                         "portforward": "PodPortForwardOptions"}[sub]}
    if sub == "log":
        return {"group": "", "version": "v1", "kind": "Pod"}
    return {"group": k.group, "version": k.version, "kind": k.kind}


def _resources(kinds: Registry, group: str, version: str) -> list[tuple]:
    out = [(k.plural, k) for k in kinds.kinds if k.group == group and k.version == version]
    return sorted(out, key=lambda t: t[0])


def aggregated(kinds: Registry, core: bool, version_tag: str) -> dict:
    """APIGroupDiscoveryList for /api (core=True) or /apis."""
    groups: dict[str, dict[str, list]] = {}
    for k in kinds.kinds:
        if (k.group == "") != core:
            continue
        groups.setdefault(k.group, {}).setdefault(k.version, []).append(k)
    for g, v, plural, kind, verbs in VIRTUAL:
        if (g == "") == core:
            groups.setdefault(g, {}).setdefault(v, []).append((plural, kind, verbs))
    items = []
    for g, versions in groups.items():
        vs = []
        for v, entries in versions.items():
            res = []
            for e in sorted(entries, key=lambda x: x[0] if isinstance(x, tuple) else x.plural):
                if isinstance(e, tuple):
                    plural, kind, verbs = e
                    entry = {"resource": plural, "singularResource": kind.lower(),
                             "scope": "Namespaced" if (g, plural) in NAMESPACED_VIRTUAL
                             else "Cluster",
                             "responseKind": {"group": g, "version": v, "kind": kind},
                             "verbs": list(verbs)}
                    if (g, plural) in VIRTUAL_SHORT_NAMES:
                        entry["shortNames"] = VIRTUAL_SHORT_NAMES[g, plural]
                    res.append(entry)
                    continue
                entry = {"resource": e.plural, "singularResource": e.singular,
                         "scope": "Namespaced" if e.namespaced else "Cluster",
                         "responseKind": {"group": e.group, "version": e.version,
                                          "kind": e.kind},
                         "verbs": list(e.verbs)}
                if e.short_names:
                    entry["shortNames"] = list(e.short_names)
                if e.categories:
                    entry["categories"] = list(e.categories)
                subs = [{"subresource": s, "responseKind": _sub_kind(e, s),
                         "verbs": list(SUBRESOURCE_VERBS.get(s, ("get",)))}
                        for s in e.subresources]
                if subs:
                    entry["subresources"] = subs
                res.append(entry)
            vs.append({"version": v, "resources": res, "freshness": "Current"})
        items.append({"metadata": {"name": g, "creationTimestamp": None}, "versions": vs})
    # apps before batch etc. is not required, but keep core groups first like kube does
    order = ["", "apps", "batch", "autoscaling"]
    items.sort(key=lambda i: (order.index(i["metadata"]["name"])
                              if i["metadata"]["name"] in order else len(order),
                              i["metadata"]["name"]))
    return {"kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{version_tag}",
            "metadata": {}, "items": items}


def legacy_api_versions(server_address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def legacy_group_list(kinds: Registry) -> dict:
    groups: dict[str, list[str]] = {}
    for k in kinds.kinds:
        if k.group:
            vs = groups.setdefault(k.group, [])
            if k.version not in vs:
                vs.append(k.version)
    for g, v, *_ in VIRTUAL:
        if not g:
            continue  # the core group is /api, not an APIGroup
        vs = groups.setdefault(g, [])
        if v not in vs:
            vs.append(v)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [legacy_group(g, vs)
                                                                    for g, vs in groups.items()]}


def legacy_group(group: str, versions: list[str]) -> dict:
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs,
            "preferredVersion": vs[0]}


def legacy_resource_list(kinds: Registry, group: str, version: str) -> dict | None:
    res = []
    found = False
    for plural, k in _resources(kinds, group, version):
        found = True
        entry = {"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                 "kind": k.kind, "verbs": list(k.verbs)}
        if k.short_names:
            entry["shortNames"] = list(k.short_names)
        if k.categories:
            entry["categories"] = list(k.categories)
        res.append(entry)
        for s in k.subresources:
            sk = _sub_kind(k, s)
            sub = {"name": f"{k.plural}/{s}", "singularName": "", "namespaced": k.namespaced,
                   "kind": sk["kind"], "verbs": list(SUBRESOURCE_VERBS.get(s, ("get",)))}
            if sk["group"] != k.group:
                sub["group"] = sk["group"]
                sub["version"] = sk["version"]
            res.append(sub)
    for g, v, plural, kind, verbs in VIRTUAL:
        if g == group and v == version:
            found = True
            entry = {"name": plural, "singularName": kind.lower(),
                     "namespaced": (g, plural) in NAMESPACED_VIRTUAL,
                     "kind": kind, "verbs": list(verbs)}
            if (g, plural) in VIRTUAL_SHORT_NAMES:
                entry["shortNames"] = VIRTUAL_SHORT_NAMES[g, plural]
            res.append(entry)
    if not found:
        return None
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": res}
