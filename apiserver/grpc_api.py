"""The gRPC cluster API (proto/kubelab/cluster.proto): generic verbs on any kind, JSON objects,
the same Storage and verbs as the REST API. Errors are gRPC codes with the Kubernetes Status in
the trailing metadata key `k8s-status-bin`."""

from __future__ import annotations

import asyncio
import logging

import grpc

from kubelab import fastjson
from proto.kubelab import cluster_pb2 as cpb
from proto.kubelab import cluster_pb2_grpc as cgrpc

from . import errors, verbs
from .auth import Attributes
from .errors import StatusError
from .kinds import Kind

log = logging.getLogger("apiserver.grpc")

CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
         403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
         405: grpc.StatusCode.UNIMPLEMENTED, 410: grpc.StatusCode.OUT_OF_RANGE,
         415: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
         429: grpc.StatusCode.RESOURCE_EXHAUSTED, 500: grpc.StatusCode.INTERNAL,
         503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}


def grpc_code(e: StatusError) -> grpc.StatusCode:
    if e.code == 409:
        return grpc.StatusCode.ALREADY_EXISTS if e.reason == "AlreadyExists" else \
            grpc.StatusCode.ABORTED
    return CODES.get(e.code, grpc.StatusCode.UNKNOWN)


class ClusterService(cgrpc.ClusterServicer):
    def __init__(self, server):
        self.s = server  # APIServer

    # ------------------------------------------------------------------ plumbing
    async def _run(self, context, verb: str, ref: cpb.ObjectRef, fn):
        try:
            md = dict(context.invocation_metadata() or ())
            user = self.s.authn.authenticate(md.get("authorization"))
            kind = self._kind(ref)
            ok, why = self.s.authz.authorize(Attributes(
                user, verb, kind.group, kind.plural, ref.subresource, ref.namespace, ref.name))
            if not ok:
                raise errors.forbidden(why)
            return await fn(kind, ref.namespace or None, user)
        except StatusError as e:
            await self._abort(context, e)

    @staticmethod
    async def _abort(context, e: StatusError):
        """A Kubernetes Status as a gRPC error: the code, and the Status in trailing metadata."""
        context.set_trailing_metadata((("k8s-status-bin", fastjson.dumps(e.status())),))
        await context.abort(grpc_code(e), e.message)

    def _kind(self, ref: cpb.ObjectRef) -> Kind:
        k = self.s.kinds.by_resource(ref.group, ref.version or "v1", ref.resource)
        if k is None:
            raise StatusError(404, "NotFound", f"the server could not find the requested "
                                               f"resource ({ref.group}/{ref.version}, "
                                               f"{ref.resource})")
        if ref.namespace and not k.namespaced:
            raise StatusError(404, "NotFound", f"{ref.resource} is not namespaced")
        return k

    @staticmethod
    def _obj(raw: bytes) -> dict:
        try:
            return fastjson.loads(raw)
        except ValueError as e:
            raise errors.bad_request(f"invalid JSON object: {e}") from None

    # ------------------------------------------------------------------ verbs
    async def Resources(self, request, context):
        out = [{"group": k.group, "version": k.version, "resource": k.plural, "kind": k.kind,
                "namespaced": k.namespaced, "subresources": list(k.subresources)}
               for k in self.s.kinds.kinds]
        return cpb.ResourcesResponse(resources=fastjson.dumps(out))

    async def Get(self, request, context):
        async def fn(kind, ns, user):
            if request.ref.subresource == "scale":
                obj = await self.s.storage.get(kind, ns, request.ref.name)
                return cpb.ObjectResponse(object=fastjson.dumps(
                    self.s.rest.subs.to_scale(kind, obj)))
            obj = await self.s.storage.get(kind, ns, request.ref.name)
            return cpb.ObjectResponse(object=fastjson.dumps(obj))
        return await self._run(context, "get", request.ref, fn)

    async def List(self, request, context):
        if request.ref.group == "metrics.k8s.io":
            return await self._metrics_list(request, context)

        async def fn(kind, ns, user):
            res = await self.s.storage.list(
                kind, ns, label_selector=request.label_selector,
                field_selector=request.field_selector, limit=request.limit,
                cont=request.__getattribute__("continue") or None,
                resource_version=request.resource_version or None)
            md = {"resourceVersion": str(res.rev)}
            if res.cont:
                md["continue"] = res.cont
            lst = {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": md,
                   "items": res.items}
            return cpb.ListResponse(list=fastjson.dumps(lst))
        return await self._run(context, "list", request.ref, fn)

    async def _metrics_list(self, request, context):
        """The resource metrics API (what the HPA controller reads), as over REST."""
        ref = request.ref
        try:
            md = dict(context.invocation_metadata() or ())
            user = self.s.authn.authenticate(md.get("authorization"))
            if ref.resource not in ("pods", "nodes"):
                raise StatusError(404, "NotFound", "the server could not find the requested "
                                                   f"resource (metrics.k8s.io, {ref.resource})")
            ok, why = self.s.authz.authorize(Attributes(user, "list", ref.group, ref.resource,
                                                        "", ref.namespace, ""))
            if not ok:
                raise errors.forbidden(why)
            lst = await self.s.rest.subs.nodes.metrics_object(
                ref.resource, ref.namespace or None, None, request.label_selector or None,
                request.field_selector or None)
            return cpb.ListResponse(list=fastjson.dumps(lst))
        except StatusError as e:
            await self._abort(context, e)

    async def Create(self, request, context):
        async def fn(kind, ns, user):
            if request.ref.subresource == "binding":
                return await self._binding(kind, ns, request)
            if request.ref.subresource == "token":
                from .serviceaccounts import create_token
                obj = await create_token(self.s.storage, self.s.kinds, self.s.sa_tokens, ns,
                                         request.ref.name, self._obj(request.object))
                return cpb.ObjectResponse(object=fastjson.dumps(obj))
            obj = await verbs.create(self.s.storage, kind, ns, self._obj(request.object),
                                     manager=request.field_manager or user.username,
                                     dry_run=request.dry_run, validation="Strict")
            return cpb.ObjectResponse(object=fastjson.dumps(obj))
        return await self._run(context, "create", request.ref, fn)

    async def _binding(self, kind, ns, request):
        obj = await verbs.bind(self.s.storage, kind, ns, request.ref.name,
                               self._obj(request.object))
        return cpb.ObjectResponse(object=fastjson.dumps(obj))

    async def _update(self, request, context, sub: str | None):
        async def fn(kind, ns, user):
            if sub == "scale":
                body = self._obj(request.object)
                md = body.get("metadata") if isinstance(body, dict) else None
                obj = await self.s.rest.subs.update_scale(
                    kind, ns, request.ref.name,
                    (body.get("spec") or {}).get("replicas") if isinstance(body, dict) else None,
                    md.get("resourceVersion") if isinstance(md, dict) else None)
                return cpb.ObjectResponse(object=fastjson.dumps(obj))
            obj, _ = await verbs.update(self.s.storage, kind, ns, request.ref.name,
                                        self._obj(request.object),
                                        manager=request.field_manager or user.username,
                                        subresource=sub, dry_run=request.dry_run,
                                        validation="Strict")
            return cpb.ObjectResponse(object=fastjson.dumps(obj))
        return await self._run(context, "update", request.ref, fn)

    async def Update(self, request, context):
        return await self._update(request, context, request.ref.subresource or None)

    async def UpdateStatus(self, request, context):
        return await self._update(request, context, "status")

    async def Patch(self, request, context):
        async def fn(kind, ns, user):
            obj = await verbs.patch(self.s.storage, kind, ns, request.ref.name,
                                    request.patch_type, request.patch,
                                    manager=request.field_manager or user.username,
                                    subresource=request.ref.subresource or None,
                                    dry_run=request.dry_run, validation="Strict")
            return cpb.ObjectResponse(object=fastjson.dumps(obj))
        return await self._run(context, "patch", request.ref, fn)

    async def Delete(self, request, context):
        async def fn(kind, ns, user):
            opts = self._obj(request.options) if request.options else {}
            obj, gone = await verbs.delete(self.s.storage, kind, ns, request.ref.name,
                                           opts if isinstance(opts, dict) else {})
            return cpb.DeleteResponse(object=fastjson.dumps(obj), deleted=gone)
        return await self._run(context, "delete", request.ref, fn)

    async def Watch(self, request, context):
        try:
            md = dict(context.invocation_metadata() or ())
            user = self.s.authn.authenticate(md.get("authorization"))
            kind = self._kind(request.ref)
            ok, why = self.s.authz.authorize(Attributes(user, "watch", kind.group, kind.plural,
                                                        "", request.ref.namespace))
            if not ok:
                raise errors.forbidden(why)
            sub, initial = await self.s.storage.watch(
                kind, request.ref.namespace or None, label_selector=request.label_selector,
                field_selector=request.field_selector,
                resource_version=request.resource_version or None)
        except StatusError as e:
            if e.code == 410:
                yield cpb.WatchEvent(type="ERROR", object=fastjson.dumps(e.status()))
                return
            await self._abort(context, e)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (request.timeout_seconds or 1e9)
        last_rev = 0
        try:
            for etype, ev in initial:
                last_rev = ev.rev
                yield cpb.WatchEvent(type=etype, object=ev.json())
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    return
                try:
                    item = sub.queue.get_nowait() if not sub.queue.empty() else \
                        await asyncio.wait_for(sub.queue.get(), min(left, 10.0))
                except asyncio.TimeoutError:
                    if request.allow_bookmarks:
                        rev = max(self.s.storage.caches[kind.plural].rev, last_rev)
                        yield cpb.WatchEvent(type="BOOKMARK", object=fastjson.dumps({
                            "kind": kind.kind, "apiVersion": kind.api_version,
                            "metadata": {"resourceVersion": str(rev)}}))
                    continue
                if item is None:
                    reason = sub.closed_reason or "watch closed"
                    if reason.startswith("too old"):
                        yield cpb.WatchEvent(type="ERROR", object=fastjson.dumps(
                            errors.gone(reason).status()))
                    return
                etype, ev = item
                last_rev = ev.rev
                yield cpb.WatchEvent(type=etype, object=ev.json())
        finally:
            sub.unsubscribe()


async def serve_grpc(server, host: str, port: int) -> grpc.aio.Server:
    g = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024),
                                 ("grpc.max_send_message_length", 256 * 1024 * 1024),
                                 ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                                 ("grpc.http2.max_ping_strikes", 0),
                                 ("grpc.keepalive_permit_without_calls", 1)])
    cgrpc.add_ClusterServicer_to_server(ClusterService(server), g)
    g.add_insecure_port(f"{host}:{port}")
    await g.start()
    log.info("serving gRPC cluster API on %s:%d", host, port)
    return g
