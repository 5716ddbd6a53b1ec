"""The Kubernetes REST front end (HTTPS, what kubectl and client-go speak).

Request path: authenticate → authorize → route (discovery, OpenAPI, or a resource verb) →
Storage. Errors anywhere become metav1.Status responses with the right code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import yaml
from aiohttp import web

from kubelab import fastjson

from . import componentstatus, discovery, errors, openapi, verbs
from .auth import Attributes, Authorizer, TokenAuthenticator, UserInfo
from .errors import StatusError
from .kinds import Kind, Registry
from .storage import Storage
from .watchcache import Event

log = logging.getLogger("apiserver.rest")

VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "kubelab",
           "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23",
           "compiler": "gc", "platform": "linux/amd64"}

AGG_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGG_V2B1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"


def _json(obj: Any, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(body=fastjson.dumps(obj), status=status,
                        headers={"Content-Type": content_type})


def status_response(e: StatusError) -> web.Response:
    return _json(e.status(), e.code)


def _bool(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "yes")


class DuplicateField(Exception):
    pass


def _no_dups(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise DuplicateField(k)
        d[k] = v
    return d


class RestAPI:
    def __init__(self, storage: Storage, kinds: Registry, authn: TokenAuthenticator,
                 authz: Authorizer, advertise: str, subresources):
        self.storage = storage
        self.kinds = kinds
        self.authn = authn
        self.authz = authz
        self.advertise = advertise
        self.subs = subresources
        self.ready = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024,
                              middlewares=[self._errors_middleware])
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    @web.middleware
    async def _errors_middleware(self, request: web.Request, handler):
        try:
            return await handler(request)
        except StatusError as e:
            return status_response(e)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # noqa: BLE001 - never a traceback to the client
            log.exception("internal error on %s %s", request.method, request.path)
            return status_response(errors.internal(repr(e)))

    # ------------------------------------------------------------------ entry
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(
                ("/healthz/", "/livez/", "/readyz/")):
            if path.startswith("/readyz") and not self.ready:
                return web.Response(text="[-]etcd failed: not ready\nreadyz check failed",
                                    status=500)
            return web.Response(text="ok")
        user = self.authn.authenticate(request.headers.get("Authorization"))
        request["user"] = user
        if path in ("/version", "/version/"):
            return _json(VERSION)
        if path == "/api" or path == "/apis":
            return self._discovery_root(request, core=(path == "/api"))
        if path.startswith("/openapi/"):
            return self._openapi(request)
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            raise StatusError(404, "NotFound", "the server could not find the requested "
                                               "resource")
        if parts[0] == "api":
            if len(parts) < 2 or parts[1] != "v1":
                raise StatusError(404, "NotFound", "the server could not find the requested "
                                                   "resource")
            group, version, rest = "", "v1", parts[2:]
        else:
            if len(parts) == 2:
                versions = self.kinds.groups().get(parts[1]) or [
                    v for g, v, *_ in discovery.VIRTUAL if g == parts[1]]
                if not versions:
                    raise StatusError(404, "NotFound", "the server could not find the "
                                                       "requested resource")
                return _json(discovery.legacy_group(parts[1], list(dict.fromkeys(versions))))
            if len(parts) < 3:
                raise StatusError(404, "NotFound", "the server could not find the requested "
                                                   "resource")
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            doc = discovery.legacy_resource_list(self.kinds, group, version)
            if doc is None:
                raise StatusError(404, "NotFound", "the server could not find the requested "
                                                   "resource")
            return _json(doc)
        return await self._resource(request, group, version, rest)

    def _discovery_root(self, request: web.Request, core: bool) -> web.Response:
        accept = request.headers.get("Accept", "")
        for tag, media in (("v2", AGG_V2), ("v2beta1", AGG_V2B1)):
            if f"v={tag};as=APIGroupDiscoveryList" in accept.replace(" ", ""):
                return _json(discovery.aggregated(self.kinds, core, tag), content_type=media)
        if core:
            return _json(discovery.legacy_api_versions(self.advertise))
        return _json(discovery.legacy_group_list(self.kinds))

    def _openapi(self, request: web.Request) -> web.Response:
        path = request.path
        if path.rstrip("/") == "/openapi/v3":
            return _json(openapi.root_document(self.kinds))
        if path.startswith("/openapi/v3/"):
            gv = path[len("/openapi/v3/"):].strip("/").split("/")
            doc = None
            if len(gv) == 2 and gv[0] == "api":
                doc = openapi.gv_document(self.kinds, "", gv[1])
            elif len(gv) == 3 and gv[0] == "apis":
                doc = openapi.gv_document(self.kinds, gv[1], gv[2])
            if doc is not None:
                return _json(doc)
        if path.rstrip("/") == "/openapi/v2":
            return openapi.v2_response(request.headers.get("Accept", ""))
        raise StatusError(404, "NotFound", "the server could not find the requested resource")

    # ------------------------------------------------------------------ resources
    async def _resource(self, request: web.Request, group: str, version: str,
                        rest: list[str]) -> web.StreamResponse:
        namespace = None
        # /namespaces/<name>/{status,finalize} are subresources of the Namespace itself
        is_ns_sub = group == "" and len(rest) == 3 and rest[0] == "namespaces" and \
            rest[2] in ("status", "finalize")
        if rest[0] == "namespaces" and len(rest) >= 3 and not is_ns_sub:
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3 and sub != "proxy":
            raise StatusError(404, "NotFound", "the server could not find the requested "
                                               "resource")
        # /api/v1/namespaces/<name>[/status|/finalize] is the Namespace object itself
        if rest and rest[0] == "namespaces" and namespace is None:
            kind = self.kinds.by_resource("", "v1", "namespaces") if group == "" else None
        else:
            kind = self.kinds.by_resource(group, version, plural)
        if kind is None:
            virtual = [v for v in discovery.VIRTUAL if v[0] == group and v[1] == version and
                       v[2] == plural]
            if virtual and request.method == "POST":
                return await self._review(request, virtual[0])
            if virtual and group == "metrics.k8s.io" and request.method == "GET" and not sub:
                ok, why = self.authz.authorize(Attributes(
                    request["user"], "get" if name else "list", group, plural, "",
                    namespace or "", name or "", request.path))
                if not ok:
                    raise errors.forbidden(why)
                return await self.subs.nodes.metrics(request, plural, namespace, name)
            if virtual and plural == "componentstatuses" and request.method == "GET" and \
                    not sub and namespace is None:
                return await self._component_statuses(request, name)
            raise StatusError(404, "NotFound", "the server could not find the requested "
                                               "resource")
        if namespace is not None and not kind.namespaced:
            raise StatusError(404, "NotFound", "the server could not find the requested "
                                               "resource")
        if kind.namespaced and namespace is None and name is not None:
            raise StatusError(404, "NotFound", "the server could not find the requested "
                                               "resource")
        q = request.query
        method = request.method
        verb = {"GET": "get" if name else ("watch" if _bool(q.get("watch")) else "list"),
                "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}.get(method)
        if verb is None:
            raise errors.method_not_allowed(f"method {method} is not allowed")
        if sub and sub not in kind.subresources:
            raise StatusError(404, "NotFound", "the server could not find the requested "
                                               "resource")
        user: UserInfo = request["user"]
        ok, why = self.authz.authorize(Attributes(user, verb, kind.group, kind.plural, sub or "",
                                                  namespace or "", name or "", request.path))
        if not ok:
            raise errors.forbidden(why)
        if sub and sub not in ("status",):
            return await self.subs.handle(request, kind, namespace, name, sub, verb)
        if name is None:
            if method == "GET":
                if _bool(q.get("watch")):
                    return await self.watch(request, kind, namespace)
                return await self.list(request, kind, namespace)
            if method == "POST":
                return await self.create(request, kind, namespace)
            if method == "DELETE":
                return await self.delete_collection(request, kind, namespace)
            raise errors.method_not_allowed(f"{method} is not supported on a collection")
        if method == "GET":
            obj = await self.storage.get(kind, namespace, name)
            return self.respond(request, kind, obj)
        if method == "PUT":
            return await self.update(request, kind, namespace, name, sub)
        if method == "PATCH":
            return await self.patch(request, kind, namespace, name, sub)
        if method == "DELETE":
            if sub:
                raise errors.method_not_allowed("DELETE is not supported on a subresource")
            return await self.delete(request, kind, namespace, name)
        raise errors.method_not_allowed(f"method {method} is not allowed")

    # ------------------------------------------------------------------ bodies
    async def read_body(self, request: web.Request, kind: Kind | None = None) -> Any:
        raw = await request.read()
        ctype = (request.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        strict = (request.query.get("fieldValidation") or "").lower() == "strict"
        if ctype == "application/vnd.kubernetes.protobuf":
            from . import k8sproto
            try:
                return k8sproto.decode(raw)
            except ValueError as e:
                raise errors.bad_request(f"unable to decode protobuf body: {e}") from None
        if ctype in ("application/yaml", "application/apply-patch+yaml", "text/yaml"):
            try:
                return yaml.safe_load(raw.decode("utf-8")) if raw else None
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise errors.bad_request(f"error converting YAML to JSON: {e}") from None
        if ctype.endswith("json") or ctype == "":
            try:
                return json.loads(raw or b"null",
                                  object_pairs_hook=_no_dups if strict else None)
            except DuplicateField as e:
                raise errors.bad_request(
                    f'strict decoding error: json: duplicate field "{e.args[0]}"') from None
            except (ValueError, UnicodeDecodeError) as e:
                raise errors.bad_request(
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: application/json, application/yaml, "
                    f"application/vnd.kubernetes.protobuf ({e})") from None
        raise errors.unsupported_media_type(ctype)

    # ------------------------------------------------------------------ output
    def wants_table(self, request: web.Request) -> bool:
        return "as=Table" in request.headers.get("Accept", "").replace(" ", "")

    def table(self, request: web.Request, kind: Kind, objs: list[dict], rev: str,
              cont: str = "", header: bool = True) -> dict:
        include = request.query.get("includeObject", "Metadata")
        cols = kind.table_columns()
        rows = []
        for o in objs:
            cells = []
            for c in cols:
                try:
                    v = c.get(o)
                except Exception:  # noqa: BLE001 - a bad object must not break the listing
                    v = "<unknown>"
                cells.append("<none>" if v is None or v == "" and c.name != "Name" else v)
            if include == "Object":
                ro = o
            elif include == "None":
                ro = None
            else:
                ro = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                      "metadata": o.get("metadata", {})}
            row = {"cells": cells}
            if ro is not None:
                row["object"] = ro
            rows.append(row)
        md = {"resourceVersion": rev}
        if cont:
            md["continue"] = cont
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md,
                "columnDefinitions": [c.definition() for c in cols] if header else [],
                "rows": rows}

    def respond(self, request: web.Request, kind: Kind, obj: dict, status: int = 200):
        if self.wants_table(request):
            return _json(self.table(request, kind, [obj],
                                    obj.get("metadata", {}).get("resourceVersion", "")), status)
        return _json(obj, status)

    # ------------------------------------------------------------------ verbs
    async def list(self, request: web.Request, kind: Kind, namespace: str | None):
        q = request.query
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise errors.bad_request("limit must be an integer") from None
        res = await self.storage.list(kind, namespace, label_selector=q.get("labelSelector"),
                                      field_selector=q.get("fieldSelector"), limit=limit,
                                      cont=q.get("continue"),
                                      resource_version=q.get("resourceVersion"))
        if self.wants_table(request):
            return _json(self.table(request, kind, res.items, str(res.rev), res.cont))
        md: dict = {"resourceVersion": str(res.rev)}
        if res.cont:
            md["continue"] = res.cont
        return _json({"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                      "metadata": md, "items": res.items})

    async def create(self, request: web.Request, kind: Kind, namespace: str | None):
        obj = await verbs.create(self.storage, kind, namespace, await self.read_body(request),
                                 manager=_manager(request),
                                 dry_run=request.query.get("dryRun") == "All",
                                 validation=request.query.get("fieldValidation"))
        return self.respond(request, kind, obj, 201)

    async def update(self, request: web.Request, kind: Kind, namespace: str | None, name: str,
                     sub: str | None):
        obj, created = await verbs.update(self.storage, kind, namespace, name,
                                          await self.read_body(request),
                                          manager=_manager(request), subresource=sub,
                                          dry_run=request.query.get("dryRun") == "All",
                                          validation=request.query.get("fieldValidation"))
        return self.respond(request, kind, obj, 201 if created else 200)

    async def patch(self, request: web.Request, kind: Kind, namespace: str | None, name: str,
                    sub: str | None):
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        obj = await verbs.patch(self.storage, kind, namespace, name, ctype, await request.read(),
                                manager=request.query.get("fieldManager") or (
                                    None if ctype == "application/apply-patch+yaml"
                                    else _manager(request)),
                                subresource=sub, dry_run=request.query.get("dryRun") == "All",
                                validation=request.query.get("fieldValidation"))
        return self.respond(request, kind, obj)

    async def delete(self, request: web.Request, kind: Kind, namespace: str | None, name: str):
        obj, gone = await verbs.delete(self.storage, kind, namespace, name,
                                       await self._delete_options(request))
        return self.respond(request, kind, obj, 200 if gone or kind.graceful_delete else 202)

    async def _delete_options(self, request: web.Request) -> dict:
        opts: dict = {}
        raw = await request.read()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                try:
                    body = yaml.safe_load(raw)
                except yaml.YAMLError as e:
                    raise errors.bad_request(f"invalid DeleteOptions: {e}") from None
            if isinstance(body, dict):
                opts.update(body)
        q = request.query
        if q.get("gracePeriodSeconds") is not None:
            try:
                opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError:
                raise errors.bad_request("gracePeriodSeconds must be an integer") from None
        if q.get("propagationPolicy"):
            opts["propagationPolicy"] = q["propagationPolicy"]
        if q.get("dryRun"):
            opts["dryRun"] = q.getall("dryRun")
        return verbs.parse_delete_options(opts)

    async def delete_collection(self, request: web.Request, kind: Kind, namespace: str | None):
        opts = await self._delete_options(request)
        q = request.query
        res = await self.storage.list(kind, namespace, label_selector=q.get("labelSelector"),
                                      field_selector=q.get("fieldSelector"))
        deleted = []
        for obj in res.items:
            md = obj["metadata"]
            try:
                o, _ = await verbs.delete(self.storage, kind, md.get("namespace"), md["name"],
                                          dict(opts))
                deleted.append(o)
            except StatusError as e:
                if e.code != 404:
                    raise
        return _json({"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                      "metadata": {"resourceVersion": str(res.rev)}, "items": deleted})

    async def watch(self, request: web.Request, kind: Kind, namespace: str | None):
        q = request.query
        try:
            sub, initial = await self.storage.watch(
                kind, namespace, label_selector=q.get("labelSelector"),
                field_selector=q.get("fieldSelector"), resource_version=q.get("resourceVersion"))
        except StatusError as e:
            if e.code != 410:
                raise
            # too old: like kube-apiserver, answer 200 with one ERROR event carrying the Status
            return web.Response(body=json.dumps({"type": "ERROR", "object": e.status()}).encode()
                                + b"\n", headers={"Content-Type": "application/json"})
        table = self.wants_table(request)
        bookmarks = _bool(q.get("allowWatchBookmarks"))
        try:
            timeout = float(q.get("timeoutSeconds") or 1800)
        except ValueError:
            timeout = 1800.0
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                       "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        deadline = time.monotonic() + timeout
        first = [True]
        last_rev = [0]

        def encode(etype: str, obj: dict, ev: Event | None = None) -> bytes:
            if table and etype != "BOOKMARK" and etype != "ERROR":
                obj = self.table(request, kind, [obj], obj["metadata"].get("resourceVersion", ""),
                                 header=first[0])
                first[0] = False
            elif ev is not None:  # the object's JSON is shared by every watcher of the event
                return b'{"type":"%s","object":%s}\n' % (etype.encode(), ev.json())
            return fastjson.dumps({"type": etype, "object": obj}) + b"\n"

        try:
            for etype, ev in initial:
                await resp.write(encode(etype, ev.obj, ev))
                last_rev[0] = ev.rev
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    # no timer per event when events are waiting (wait_for makes a task each)
                    item = sub.queue.get_nowait() if not sub.queue.empty() else \
                        await asyncio.wait_for(sub.queue.get(), min(left, 15.0))
                except asyncio.TimeoutError:
                    if bookmarks:
                        cache = self.storage.caches[kind.plural]
                        await resp.write(encode("BOOKMARK", {
                            "kind": kind.kind, "apiVersion": kind.api_version,
                            "metadata": {"resourceVersion": str(max(cache.rev, last_rev[0]))}}))
                    continue
                if item is None:
                    reason = sub.closed_reason or "watch closed"
                    if reason.startswith("too old"):
                        await resp.write(encode("ERROR", errors.gone(reason).status()))
                    break
                etype, ev = item
                last_rev[0] = ev.rev
                await resp.write(encode(etype, ev.obj, ev))
        except ConnectionResetError:
            pass
        finally:
            sub.unsubscribe()
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    async def _component_statuses(self, request: web.Request, name: str | None) -> web.Response:
        ok, why = self.authz.authorize(Attributes(request["user"], "get" if name else "list", "",
                                                  "componentstatuses", "", "", name or "",
                                                  request.path))
        if not ok:
            raise errors.forbidden(why)
        items = await componentstatus.statuses(self.storage, self.kinds)
        if name is not None:
            items = [o for o in items if o["metadata"]["name"] == name]
            if not items:
                raise errors.not_found("componentstatuses", name)
        if self.wants_table(request):
            out = componentstatus.table(items)
        elif name is not None:
            out = items[0]
        else:
            out = {"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {},
                   "items": items}
        resp = _json(out)
        resp.headers["Warning"] = componentstatus.WARNING
        return resp

    async def _review(self, request: web.Request, virtual: tuple) -> web.Response:
        group, version, plural, kind, _ = virtual
        user: UserInfo = request["user"]
        try:
            body = await self.read_body(request)
        except StatusError:
            body = {}
        body = body if isinstance(body, dict) else {}
        out = {"kind": kind, "apiVersion": f"{group}/{version}", "metadata": {}}
        if kind == "SelfSubjectReview":
            out["status"] = {"userInfo": user.to_dict()}
        elif kind == "SelfSubjectAccessReview":
            spec = body.get("spec") or {}
            ra = spec.get("resourceAttributes") or {}
            ok, why = self.authz.authorize(Attributes(
                user, ra.get("verb", ""), ra.get("group", ""), ra.get("resource", ""),
                ra.get("subresource", ""), ra.get("namespace", ""), ra.get("name", "")))
            out["spec"] = spec
            out["status"] = {"allowed": ok} if ok else {"allowed": False, "reason": why}
        elif kind == "SelfSubjectRulesReview":
            out["spec"] = body.get("spec") or {}
            allowed = "system:masters" in user.groups
            out["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"],
                                                "resources": ["*"]}] if allowed else [],
                             "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
                             if allowed else [], "incomplete": False}
        elif kind == "TokenReview":
            token = (body.get("spec") or {}).get("token", "")
            try:
                u = self.authn.authenticate(f"Bearer {token}")
                out["status"] = {"authenticated": True, "user": u.to_dict()}
            except StatusError:
                out["status"] = {"authenticated": False}
        return _json(out, 201)




def _manager(request: web.Request) -> str:
    """fieldManager, or the client's name from its User-Agent, as kube-apiserver defaults it."""
    m = request.query.get("fieldManager")
    if m:
        return m
    ua = request.headers.get("User-Agent", "unknown")
    return ua.split("/")[0] or "unknown"
