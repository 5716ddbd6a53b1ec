"""The API client library every cluster component uses (controllers, scheduler, node agent,
proxy): a gRPC client for the cluster API, informers (list + watch into a local cache, with
resync and reconnect from the last resourceVersion) and a rate-limited work queue — client-go's
shapes, in asyncio.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import random
import time
from typing import Any, Awaitable, Callable

import grpc

from kubelab import fastjson
from proto.kubelab import cluster_pb2 as cpb
from proto.kubelab import cluster_pb2_grpc as cgrpc

log = logging.getLogger("kubelab.client")

# kind -> (group, version, resource, namespaced) for the built-in kinds; Resources() can
# refresh it from the server.
BUILTIN = {
    "Namespace": ("", "v1", "namespaces", False), "Node": ("", "v1", "nodes", False),
    "Pod": ("", "v1", "pods", True), "Service": ("", "v1", "services", True),
    "Endpoints": ("", "v1", "endpoints", True), "ConfigMap": ("", "v1", "configmaps", True),
    "Secret": ("", "v1", "secrets", True), "ServiceAccount": ("", "v1", "serviceaccounts", True),
    "Event": ("", "v1", "events", True),
    "ReplicationController": ("", "v1", "replicationcontrollers", True),
    "PersistentVolume": ("", "v1", "persistentvolumes", False),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims", True),
    "Deployment": ("apps", "v1", "deployments", True),
    "ReplicaSet": ("apps", "v1", "replicasets", True),
    "StatefulSet": ("apps", "v1", "statefulsets", True),
    "DaemonSet": ("apps", "v1", "daemonsets", True),
    "ControllerRevision": ("apps", "v1", "controllerrevisions", True),
    "Job": ("batch", "v1", "jobs", True), "CronJob": ("batch", "v1", "cronjobs", True),
    "Ingress": ("networking.k8s.io", "v1", "ingresses", True),
    "IngressClass": ("networking.k8s.io", "v1", "ingressclasses", False),
    "EndpointSlice": ("discovery.k8s.io", "v1", "endpointslices", True),
    "Lease": ("coordination.k8s.io", "v1", "leases", True),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers", True),
    "StorageClass": ("storage.k8s.io", "v1", "storageclasses", False),
}


class APIError(Exception):
    """A Kubernetes Status error returned by the API server."""

    def __init__(self, code: int, reason: str, message: str, status: dict | None = None):
        super().__init__(f"{reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.status = status or {}

    @property
    def not_found(self) -> bool:
        return self.code == 404

    @property
    def conflict(self) -> bool:
        return self.code == 409

    @property
    def gone(self) -> bool:
        return self.code == 410


_GRPC_HTTP = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
              grpc.StatusCode.ABORTED: 409, grpc.StatusCode.INVALID_ARGUMENT: 400,
              grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
              grpc.StatusCode.OUT_OF_RANGE: 410, grpc.StatusCode.UNAVAILABLE: 503,
              grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.INTERNAL: 500,
              grpc.StatusCode.UNIMPLEMENTED: 405}


def _error(e: grpc.aio.AioRpcError) -> APIError:
    status = None
    for k, v in e.trailing_metadata() or ():
        if k == "k8s-status-bin":
            try:
                status = fastjson.loads(v)
            except ValueError:
                pass
    if status:
        return APIError(status.get("code", 500), status.get("reason", ""),
                        status.get("message", e.details() or ""), status)
    code = _GRPC_HTTP.get(e.code(), 500)
    return APIError(code, e.code().name, e.details() or "", None)


@dataclasses.dataclass(frozen=True)
class Resource:
    group: str
    version: str
    resource: str
    namespaced: bool
    kind: str

    @classmethod
    def of(cls, kind: str) -> "Resource":
        g, v, r, ns = BUILTIN[kind]
        return cls(g, v, r, ns, kind)


def _res(r: "Resource | str") -> Resource:
    return Resource.of(r) if isinstance(r, str) else r


def grpc_target(servers: str) -> str:
    """A gRPC channel target for "host:port[,host:port...]": several API servers become one
    channel with gRPC's pick_first policy, which fails over to the next address when the
    connected one goes away (in-flight calls fail UNAVAILABLE and are retried)."""
    parts = [p.strip() for p in servers.split(",") if p.strip()]
    if len(parts) < 2:
        return servers
    family = set()
    for p in parts:
        host = p.rsplit(":", 1)[0].strip("[]")
        try:
            family.add(ipaddress.ip_address(host).version)
        except ValueError:
            raise ValueError(f"--server {servers}: several API servers must be IP addresses "
                             "(one name may resolve to several)") from None
    if len(family) > 1:
        raise ValueError(f"--server {servers}: mixes IPv4 and IPv6 addresses")
    return ("ipv4:" if family == {4} else "ipv6:") + ",".join(parts)


class ClusterClient:
    """Async client of the gRPC cluster API. Retries UNAVAILABLE (API server restarting or the
    store without quorum) with back-off up to `retry_for` seconds for reads; writes are
    retried only when idempotent (update with resourceVersion, delete, patch)."""

    def __init__(self, target: str, token: str, *, retry_for: float = 10.0,
                 user_agent: str = "kubelab"):
        self.target = target
        self.token = token
        self.retry_for = retry_for
        self._channel = grpc.aio.insecure_channel(grpc_target(target), options=[
            ("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ("grpc.primary_user_agent", user_agent),
            # components start together with the API server: retry the connection quickly
            # (gRPC's default backoff starts at 1 s and grows to 2 minutes)
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000)])
        self._stub = cgrpc.ClusterStub(self._channel)
        self._md = (("authorization", f"Bearer {token}"),)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def _ref(self, r: Resource, namespace: str | None = None, name: str = "",
             subresource: str = "") -> cpb.ObjectRef:
        return cpb.ObjectRef(group=r.group, version=r.version, resource=r.resource,
                             namespace=(namespace or "") if r.namespaced else "", name=name,
                             subresource=subresource)

    async def _call(self, method: str, req, retry: bool = True, timeout: float = 30.0):
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        while True:
            try:
                return await getattr(self._stub, method)(req, metadata=self._md, timeout=timeout)
            except grpc.aio.AioRpcError as e:
                # a request that never reached the server is safe to retry even when it is
                # not idempotent
                unsent = "failed to connect" in (e.details() or "").lower()
                if (retry or unsent) and e.code() == grpc.StatusCode.UNAVAILABLE and \
                        time.monotonic() < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise _error(e) from None

    async def resources(self) -> list[dict]:
        """Every kind the API server serves: [{group, version, resource, kind, namespaced}]."""
        resp = await self._call("Resources", cpb.ResourcesRequest())
        return fastjson.loads(resp.resources)

    async def get(self, r: Resource | str, namespace: str | None, name: str,
                  subresource: str = "") -> dict:
        resp = await self._call("Get", cpb.GetRequest(ref=self._ref(_res(r), namespace, name,
                                                                     subresource)))
        return fastjson.loads(resp.object)

    async def get_or_none(self, r: Resource | str, namespace: str | None, name: str) -> dict | None:
        try:
            return await self.get(r, namespace, name)
        except APIError as e:
            if e.not_found:
                return None
            raise

    async def list(self, r: Resource | str, namespace: str | None = None, *,
                   label_selector: str = "", field_selector: str = "", limit: int = 0,
                   resource_version: str = "") -> dict:
        req = cpb.ListRequest(ref=self._ref(_res(r), namespace), label_selector=label_selector,
                              field_selector=field_selector, limit=limit,
                              resource_version=resource_version)
        resp = await self._call("List", req)
        return fastjson.loads(resp.list)

    async def create(self, r: Resource | str, obj: dict, namespace: str | None = None, *,
                     field_manager: str = "", subresource: str = "") -> dict:
        ns = namespace or obj.get("metadata", {}).get("namespace")
        name = obj.get("metadata", {}).get("name", "") if subresource else ""
        req = cpb.CreateRequest(ref=self._ref(_res(r), ns, name, subresource),
                                object=fastjson.dumps(obj), field_manager=field_manager)
        resp = await self._call("Create", req, retry=False)
        return fastjson.loads(resp.object)

    async def update(self, r: Resource | str, obj: dict, *, field_manager: str = "",
                     subresource: str = "") -> dict:
        md = obj["metadata"]
        req = cpb.UpdateRequest(ref=self._ref(_res(r), md.get("namespace"), md["name"],
                                              subresource),
                                object=fastjson.dumps(obj), field_manager=field_manager)
        resp = await self._call("Update", req, retry=bool(md.get("resourceVersion")))
        return fastjson.loads(resp.object)

    async def update_status(self, r: Resource | str, obj: dict) -> dict:
        md = obj["metadata"]
        req = cpb.UpdateRequest(ref=self._ref(_res(r), md.get("namespace"), md["name"]),
                                object=fastjson.dumps(obj))
        resp = await self._call("UpdateStatus", req, retry=bool(md.get("resourceVersion")))
        return fastjson.loads(resp.object)

    async def patch(self, r: Resource | str, namespace: str | None, name: str, patch: Any, *,
                    patch_type: str = "application/merge-patch+json", subresource: str = "",
                    field_manager: str = "") -> dict:
        body = patch if isinstance(patch, bytes) else fastjson.dumps(patch)
        req = cpb.PatchRequest(ref=self._ref(_res(r), namespace, name, subresource),
                               patch_type=patch_type, patch=body, field_manager=field_manager)
        resp = await self._call("Patch", req)
        return fastjson.loads(resp.object)

    async def delete(self, r: Resource | str, namespace: str | None, name: str, *,
                     grace_period: int | None = None, propagation: str | None = None,
                     preconditions: dict | None = None) -> tuple[dict, bool]:
        opts: dict = {}
        if grace_period is not None:
            opts["gracePeriodSeconds"] = grace_period
        if propagation:
            opts["propagationPolicy"] = propagation
        if preconditions:
            opts["preconditions"] = preconditions
        req = cpb.DeleteRequest(ref=self._ref(_res(r), namespace, name),
                                options=fastjson.dumps(opts))
        resp = await self._call("Delete", req)
        return fastjson.loads(resp.object), resp.deleted

    async def watch(self, r: Resource | str, namespace: str | None = None, *,
                    resource_version: str = "", label_selector: str = "",
                    field_selector: str = "", timeout_seconds: int = 0,
                    allow_bookmarks: bool = True):
        """Yield (type, object) until the server ends the stream. ERROR events carry a Status
        (410 Expired → relist)."""
        req = cpb.WatchRequest(ref=self._ref(_res(r), namespace),
                               label_selector=label_selector, field_selector=field_selector,
                               resource_version=resource_version,
                               allow_bookmarks=allow_bookmarks, timeout_seconds=timeout_seconds)
        call = self._stub.Watch(req, metadata=self._md)
        try:
            async for ev in call:
                yield ev.type, fastjson.loads(ev.object)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                return
            raise _error(e) from None
        finally:
            call.cancel()


def object_key(obj: dict) -> str:
    md = obj.get("metadata", {})
    ns = md.get("namespace")
    return f"{ns}/{md.get('name')}" if ns else md.get("name", "")


Handler = Callable[[str, dict, dict | None], Any]


class Informer:
    """List + watch into a local cache. Handlers get (event, new, old) for ADDED/MODIFIED/
    DELETED; a resync periodically replays every object as MODIFIED (level-triggered
    controllers rely on it). A broken watch resumes from the last resourceVersion; 410 Gone
    relists and reports the differences."""

    def __init__(self, client: ClusterClient, r: Resource | str, namespace: str | None = None, *,
                 label_selector: str = "", field_selector: str = "", resync: float = 0.0):
        self.client = client
        self.resource = _res(r)
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync = resync
        self.cache: dict[str, dict] = {}
        self.handlers: list[Handler] = []
        self.synced = asyncio.Event()
        self.rv = ""
        self._task: asyncio.Task | None = None
        self._resync_task: asyncio.Task | None = None

    def add_handler(self, h: Handler) -> None:
        self.handlers.append(h)

    def start(self) -> "Informer":
        self._task = asyncio.create_task(self._run(), name=f"informer-{self.resource.resource}")
        if self.resync:
            self._resync_task = asyncio.create_task(self._resync_loop())
        return self

    async def stop(self) -> None:
        for t in (self._task, self._resync_task):
            if t is not None:
                t.cancel()
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass

    def get(self, namespace: str | None, name: str) -> dict | None:
        return self.cache.get(f"{namespace}/{name}" if namespace else name)

    def list(self, namespace: str | None = None) -> list[dict]:
        if namespace is None:
            return list(self.cache.values())
        return [o for o in self.cache.values()
                if o.get("metadata", {}).get("namespace") == namespace]

    def _dispatch(self, event: str, new: dict, old: dict | None) -> None:
        for h in self.handlers:
            try:
                res = h(event, new, old)
                if asyncio.iscoroutine(res):
                    asyncio.ensure_future(res)
            except Exception:  # noqa: BLE001 - a handler bug must not stop the informer
                log.exception("informer handler failed")

    async def _relist(self) -> None:
        lst = await self.client.list(self.resource, self.namespace,
                                     label_selector=self.label_selector,
                                     field_selector=self.field_selector)
        fresh = {object_key(o): o for o in lst.get("items", [])}
        old = self.cache
        self.cache = fresh
        for k, o in fresh.items():
            prev = old.get(k)
            if prev is None:
                self._dispatch("ADDED", o, None)
            elif prev["metadata"].get("resourceVersion") != o["metadata"].get("resourceVersion"):
                self._dispatch("MODIFIED", o, prev)
        for k, o in old.items():
            if k not in fresh:
                self._dispatch("DELETED", o, o)
        self.rv = lst.get("metadata", {}).get("resourceVersion", "")
        self.synced.set()

    async def _run(self) -> None:
        backoff = 0.1
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                async for etype, obj in self.client.watch(
                        self.resource, self.namespace, resource_version=self.rv,
                        label_selector=self.label_selector, field_selector=self.field_selector,
                        timeout_seconds=random.randint(300, 600)):
                    backoff = 0.1
                    if etype == "ERROR":
                        need_list = True
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion")
                    if rv:
                        self.rv = rv
                    if etype == "BOOKMARK":
                        continue
                    key = object_key(obj)
                    prev = self.cache.get(key)
                    if etype == "DELETED":
                        self.cache.pop(key, None)
                        self._dispatch("DELETED", obj, prev)
                    else:
                        self.cache[key] = obj
                        self._dispatch("ADDED" if prev is None else "MODIFIED", obj, prev)
            except asyncio.CancelledError:
                raise
            except APIError as e:
                if e.gone:
                    need_list = True
                    continue
                log.debug("informer %s: %s; retrying", self.resource.resource, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as e:  # noqa: BLE001
                log.debug("informer %s: %r; retrying", self.resource.resource, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            for o in list(self.cache.values()):
                self._dispatch("MODIFIED", o, o)


class WorkQueue:
    """client-go's rate-limited work queue: a key is processed by one worker at a time, keys
    added while processing are processed again afterwards, failures are retried with
    per-key exponential back-off."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 30.0):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._dirty: set = set()
        self._processing: set = set()
        self._failures: dict = {}
        self.base_delay = base_delay
        self.max_delay = max_delay

    def add(self, key) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    def add_after(self, key, delay: float) -> None:
        asyncio.get_running_loop().call_later(max(0.0, delay), self.add, key)

    def add_rate_limited(self, key) -> None:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        self.add_after(key, min(self.base_delay * (2 ** n), self.max_delay))

    def forget(self, key) -> None:
        self._failures.pop(key, None)

    async def get(self):
        key = await self._queue.get()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.put_nowait(key)

    def __len__(self) -> int:
        return self._queue.qsize()


async def run_workers(queue: WorkQueue, reconcile: Callable[[Any], Awaitable[None]],
                      workers: int = 1, name: str = "controller") -> None:
    """Run `workers` loops handing keys to reconcile(key); errors requeue with back-off."""
    async def worker():
        while True:
            key = await queue.get()
            try:
                await reconcile(key)
                queue.forget(key)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                log.info("%s: reconcile %s failed: %s; requeued", name, key, e)
                queue.add_rate_limited(key)
            finally:
                queue.done(key)
    await asyncio.gather(*(worker() for _ in range(workers)))


def load_kubeconfig_token(path: str) -> tuple[str, str]:
    """(server, token) from a kubeconfig written by kubelab."""
    import yaml
    with open(path) as f:
        cfg = yaml.safe_load(f)
    ctx_name = cfg.get("current-context")
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    return cluster["server"], user.get("token", "")





class InformerFactory:
    """Shared informers: every controller in a process that watches the same resource shares
    one informer (one list + watch, one cache)."""

    def __init__(self, client: ClusterClient, resync: float = 0.0):
        self.client = client
        self.resync = resync
        self._informers: dict[tuple, Informer] = {}

    def informer(self, r: Resource | str, namespace: str | None = None, *,
                 label_selector: str = "", field_selector: str = "") -> Informer:
        res = _res(r)
        key = (res, namespace, label_selector, field_selector)
        inf = self._informers.get(key)
        if inf is None:
            inf = Informer(self.client, res, namespace, label_selector=label_selector,
                           field_selector=field_selector, resync=self.resync)
            self._informers[key] = inf
        return inf

    def start(self) -> None:
        for inf in self._informers.values():
            if inf._task is None:
                inf.start()

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait()
                                                for i in self._informers.values())), timeout)

    async def stop(self) -> None:
        for inf in self._informers.values():
            await inf.stop()


def add_client_flags(parser) -> None:
    """The flags every cluster component uses to reach the API server's gRPC cluster API."""
    parser.add_argument("--server", required=True,
                        help="gRPC cluster API address host:port (comma-separated for several "
                             "API servers: the client fails over between them)")
    parser.add_argument("--token-file", required=True,
                        help="file holding this component's bearer token")


def client_from_args(args, user_agent: str = "kubelab") -> ClusterClient:
    with open(args.token_file) as f:
        token = f.read().strip()
    return ClusterClient(args.server, token, user_agent=user_agent)
