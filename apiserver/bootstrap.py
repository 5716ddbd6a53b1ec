"""What kube-apiserver keeps in the store by itself (its bootstrap controller): the system
namespaces, and the `kubernetes` Service in `default` whose Endpoints/EndpointSlice point at the
API server — so pods get KUBERNETES_SERVICE_HOST and DNS answers kubernetes.default.svc."""

from __future__ import annotations

from .errors import StatusError

SERVICE = "kubernetes"


def kubernetes_service(cluster_ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": 6443}]}}


def kubernetes_endpoints(address: str, port: int) -> tuple[dict, dict]:
    ep = {"apiVersion": "v1", "kind": "Endpoints",
          "metadata": {"name": SERVICE, "namespace": "default",
                       "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
          "subsets": [{"addresses": [{"ip": address}],
                       "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}
    slice_ = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"name": SERVICE, "namespace": "default",
                           "labels": {"kubernetes.io/service-name": SERVICE}},
              "addressType": "IPv4",
              "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
              "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
    return ep, slice_


async def ensure_kubernetes_service(storage, kinds, cluster_ip: str, address: str,
                                    port: int) -> None:
    """Create the Service once and keep its endpoints at this API server's address."""
    svc_kind = kinds.by_kind("", "v1", "Service")
    if await storage.get_or_none(svc_kind, "default", SERVICE) is None:
        svc = kubernetes_service(cluster_ip)
        svc["spec"]["ports"][0]["targetPort"] = port
        try:
            await storage.create(svc_kind, svc)
        except StatusError as e:
            if e.code not in (409, 422):  # a concurrent API server made it
                raise
    ep, slice_ = kubernetes_endpoints(address, port)
    for kind, obj in ((kinds.by_kind("", "v1", "Endpoints"), ep),
                      (kinds.by_kind("discovery.k8s.io", "v1", "EndpointSlice"), slice_)):
        if kind is None:
            continue
        cur = await storage.get_or_none(kind, "default", SERVICE)
        if cur is None:
            try:
                await storage.create(kind, obj)
            except StatusError as e:
                if e.code != 409:
                    raise
            continue
        if all(cur.get(k) == obj.get(k) for k in ("subsets", "endpoints", "ports")):
            continue
        obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        obj["metadata"]["uid"] = cur["metadata"]["uid"]
        obj["metadata"]["creationTimestamp"] = cur["metadata"]["creationTimestamp"]
        try:
            await storage.update(kind, "default", SERVICE, obj)
        except StatusError as e:
            if e.code != 409:
                raise
