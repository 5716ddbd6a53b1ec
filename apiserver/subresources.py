"""Subresources other than status: scale (autoscaling/v1 Scale), pods/binding, pods/eviction,
namespaces/finalize, and the streaming ones (log, exec, attach, portforward) that are proxied to
the node agent running the pod (apiserver/nodeproxy.py)."""

from __future__ import annotations

import json

from aiohttp import web

from . import errors, verbs
from .kinds import Kind, get_path, set_path
from .nodeproxy import NodeClientConfig, NodeProxy
from .storage import Storage


def _json(obj, status=200) -> web.Response:
    return web.Response(body=json.dumps(obj).encode(), status=status,
                        content_type="application/json")


class SubresourceHandlers:
    def __init__(self, storage: Storage, rest_body_reader,
                 node_config: NodeClientConfig | None = None):
        self.storage = storage
        self.read_body = rest_body_reader
        self.nodes = NodeProxy(storage, node_config or NodeClientConfig())
        self.tokens = None  # ServiceAccountTokens, for serviceaccounts/<name>/token

    def configure_node_client(self, config: NodeClientConfig) -> None:
        self.nodes.config = config

    async def handle(self, request: web.Request, kind: Kind, namespace: str | None, name: str,
                     sub: str, verb: str) -> web.StreamResponse:
        if sub == "scale":
            return await self.scale(request, kind, namespace, name)
        if sub == "binding" and request.method == "POST":
            return await self.binding(request, kind, namespace, name)
        if sub == "eviction" and request.method == "POST":
            return await self.eviction(request, kind, namespace, name)
        if sub == "finalize" and request.method == "PUT":
            return await self.finalize(request, kind, name)
        if sub == "token" and request.method == "POST" and self.tokens is not None:
            from .serviceaccounts import create_token
            body = await self.read_body(request)
            return _json(await create_token(self.storage, self.storage.kinds, self.tokens,
                                            namespace, name, body), 201)
        if sub in ("log", "exec", "attach", "portforward", "proxy"):
            return await self.node_stream(request, kind, namespace, name, sub)
        raise errors.method_not_allowed(f"{request.method} is not supported on {kind.plural}/"
                                        f"{sub}")

    # ------------------------------------------------------------------ scale
    def to_scale(self, kind: Kind, obj: dict) -> dict:
        sc = kind.scale
        md = obj["metadata"]
        status = {"replicas": get_path(obj, sc.status_replicas_path, 0) or 0}
        if sc.selector:
            status["selector"] = sc.selector(obj)
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": md["name"], "namespace": md.get("namespace"),
                             "uid": md.get("uid"), "resourceVersion": md.get("resourceVersion"),
                             "creationTimestamp": md.get("creationTimestamp")},
                "spec": {"replicas": get_path(obj, sc.replicas_path, 0) or 0},
                "status": status}

    async def scale(self, request, kind: Kind, namespace, name) -> web.Response:
        if kind.scale is None:
            raise errors.method_not_allowed(f"{kind.plural} has no scale subresource")
        if request.method == "GET":
            return _json(self.to_scale(kind, await self.storage.get(kind, namespace, name)))
        if request.method == "PUT":
            body = await self.read_body(request)
            if not isinstance(body, dict):
                raise errors.bad_request("invalid Scale object")
            replicas = get_path(body, ("spec", "replicas"))
            want_rv = get_path(body, ("metadata", "resourceVersion"))
        elif request.method == "PATCH":
            from .patch import PatchError, apply_patch
            ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
            raw = await request.read()
            current = self.to_scale(kind, await self.storage.get(kind, namespace, name))
            try:
                patched = apply_patch(current, raw, ctype, "Scale")
            except PatchError as e:
                raise errors.bad_request(e.message) from None
            replicas = get_path(patched, ("spec", "replicas"))
            want_rv = None
        else:
            raise errors.method_not_allowed(f"{request.method} is not supported on scale")
        return _json(await self.update_scale(kind, namespace, name, replicas, want_rv))

    async def update_scale(self, kind: Kind, namespace, name, replicas, want_rv) -> dict:
        """Set the replicas through the scale subresource (REST PUT/PATCH and gRPC Update)."""
        if kind.scale is None:
            raise errors.method_not_allowed(f"{kind.plural} has no scale subresource")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid("Scale", name, [errors.Cause(
                "spec.replicas", f"Invalid value: {replicas}: must be greater than or equal "
                                 f"to 0")], "autoscaling")

        def mutate(obj: dict) -> dict:
            if want_rv and str(want_rv) != obj["metadata"]["resourceVersion"]:
                raise errors.conflict(kind.plural, name, kind.group)
            set_path(obj, kind.scale.replicas_path, replicas)
            obj["metadata"].pop("resourceVersion", None)
            return obj

        obj = await self.storage.guaranteed_update(kind, namespace, name, mutate)
        return self.to_scale(kind, obj)

    # ------------------------------------------------------------------ pods
    async def binding(self, request, kind: Kind, namespace, name) -> web.Response:
        await verbs.bind(self.storage, kind, namespace, name, await self.read_body(request))
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "code": 201}, 201)

    async def eviction(self, request, kind: Kind, namespace, name) -> web.Response:
        body = await self.read_body(request) or {}
        opts = body.get("deleteOptions") or {}
        await self.storage.delete(kind, namespace, name,
                                  grace_period=opts.get("gracePeriodSeconds"),
                                  propagation=opts.get("propagationPolicy"))
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "code": 201}, 201)

    async def finalize(self, request, kind: Kind, name) -> web.Response:
        body = await self.read_body(request) or {}
        fins = get_path(body, ("spec", "finalizers"), []) or []

        def mutate(ns: dict) -> dict:
            ns.setdefault("spec", {})["finalizers"] = fins
            return ns

        obj = await self.storage.guaranteed_update(kind, None, name, mutate)
        return _json(obj)

    async def node_stream(self, request, kind, namespace, name, sub) -> web.StreamResponse:
        if sub == "proxy":
            raise errors.StatusError(503, "ServiceUnavailable",
                                     "pods/proxy is not supported by kubelab")
        return await self.nodes.handle(request, namespace, name, sub)

    async def close(self) -> None:
        await self.nodes.close()
