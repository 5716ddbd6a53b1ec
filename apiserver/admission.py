"""Mutating admission plugins that are not tied to one subsystem (kube-apiserver's plugins of the
same names). Each is `async admit(op, kind, obj, old)`, run after defaulting."""

from __future__ import annotations

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"


def default_ingress_class(storage, kinds):
    """DefaultIngressClass: an Ingress created without spec.ingressClassName (and without the
    deprecated kubernetes.io/ingress.class annotation) gets the default IngressClass — the
    newest one marked is-default-class, as Kubernetes picks when several are."""
    ic_kind = kinds.by_kind("networking.k8s.io", "v1", "IngressClass")

    async def admit(op: str, kind, obj: dict, old: dict | None) -> None:
        if op != "create" or kind.kind != "Ingress" or ic_kind is None:
            return
        spec = obj.get("spec")
        if not isinstance(spec, dict) or spec.get("ingressClassName"):
            return
        if ((obj.get("metadata") or {}).get("annotations") or {}).get(
                "kubernetes.io/ingress.class"):
            return
        cache = storage.caches.get(ic_kind.plural)
        if cache is None or not cache.ready.is_set():
            return
        defaults = [ic for ic in cache.objects.values()
                    if ((ic.get("metadata") or {}).get("annotations") or {}).get(
                        DEFAULT_CLASS_ANNOTATION) == "true"]
        if defaults:
            newest = max(defaults, key=lambda ic: (ic["metadata"].get("creationTimestamp", ""),
                                                   ic["metadata"]["name"]))
            spec["ingressClassName"] = newest["metadata"]["name"]

    return admit
