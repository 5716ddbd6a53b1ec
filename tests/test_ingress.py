"""The ingress controller: the pure routing table and HTTP/1.1 pieces, then the proxy itself on
loopback sockets with real backends (aiohttp), fake informers and a fake EndpointIndex."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
from typing import Self

import aiohttp
import pytest
from aiohttp import web

from proxy.endpoints import merge_slices
from proxy.ingress import (
    DEFAULT_BACKEND_404,
    FAKE_CERT_CN,
    ChunkedScanner,
    IngressController,
    ProtocolError,
    ResponseHead,
    downstream_response_head,
    node_ip_states,
    parse_request_head,
    parse_response_head,
    request_framing,
    response_framing,
    self_signed_cert,
    status_addresses,
    upstream_request_head,
)
from proxy.ingress_routes import (
    RouteTable,
    host_matches,
    is_ours,
    normalize_host,
    our_classes,
    path_matches,
    select_tls,
    tls_entries,
)

# ---- helpers building API objects -------------------------------------------------------------


def ingress(name, rules=(), *, ns="default", cls="kubelab", default=None, tls=None,
            created="2026-01-01T00:00:00Z", annotations=None):
    spec: dict = {"rules": [
        {**({"host": h} if h else {}),
         "http": {"paths": [
             {"path": p, "pathType": t, "backend": _svc_backend(svc, port)}
             for (p, t, svc, port) in paths]}}
        for (h, paths) in rules]}
    if cls:
        spec["ingressClassName"] = cls
    if default:
        spec["defaultBackend"] = _svc_backend(*default)
    if tls:
        spec["tls"] = tls
    md = {"name": name, "namespace": ns, "creationTimestamp": created, "resourceVersion": "1"}
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": md,
            "spec": spec}


def _svc_backend(svc, port):
    p = {"number": port} if isinstance(port, int) else {"name": port}
    return {"service": {"name": svc, "port": p}}


def ingress_class(name="kubelab", controller="kubelab.io/ingress", default=False):
    md: dict = {"name": name, "resourceVersion": "1"}
    if default:
        md["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": md,
            "spec": {"controller": controller}}


def service(name, ports, ns="default"):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "ports": [
                {"name": n, "port": p, "targetPort": tp, "protocol": "TCP"}
                for (n, p, tp) in ports]}}


def backend_of(t: RouteTable, host: str, path: str):
    m = t.match(host, path)
    return None if m is None or m.backend is None else m.backend.service


# ---- routing table ----------------------------------------------------------------------------


def test_host_matching_exact_and_one_label_wildcard():
    assert host_matches("foo.bar.com", "foo.bar.com")
    assert not host_matches("foo.bar.com", "bar.com")
    assert host_matches("*.foo.com", "bar.foo.com")
    assert not host_matches("*.foo.com", "baz.bar.foo.com")   # exactly one label
    assert not host_matches("*.foo.com", "foo.com")
    assert normalize_host("Foo.Example.COM:8080") == "foo.example.com"
    assert normalize_host("example.com.") == "example.com"
    assert normalize_host("[::1]:80") == "[::1]"


@pytest.mark.parametrize("rule,ptype,req,ok", [
    # the examples table of the Kubernetes Ingress documentation
    ("/", "Prefix", "/anything", True),
    ("/foo", "Exact", "/foo", True),
    ("/foo", "Exact", "/bar", False),
    ("/foo", "Exact", "/foo/", False),
    ("/foo/", "Exact", "/foo", False),
    ("/foo", "Prefix", "/foo", True),
    ("/foo", "Prefix", "/foo/", True),
    ("/foo/", "Prefix", "/foo", True),
    ("/foo/", "Prefix", "/foo/", True),
    ("/aaa/bb", "Prefix", "/aaa/bbb", False),
    ("/aaa/bbb", "Prefix", "/aaa/bbb", True),
    ("/aaa/bbb/", "Prefix", "/aaa/bbb", True),
    ("/aaa/bbb", "Prefix", "/aaa/bbb/", True),
    ("/aaa/bbb", "Prefix", "/aaa/bbb/ccc", True),
    ("/aaa/bbb", "Prefix", "/aaa/bbbxyz", False),
    ("/foo", "Prefix", "/foobar", False),
])
def test_path_matching_table(rule, ptype, req, ok):
    assert path_matches(rule, ptype, req) is ok


def test_longest_path_first_and_exact_beats_prefix():
    t = RouteTable.build([ingress("a", [("foo.com", [
        ("/", "Prefix", "root", 80),
        ("/api", "Prefix", "api", 80),
        ("/api/v2", "ImplementationSpecific", "v2", 80),
        ("/api", "Exact", "api-exact", 80)])])])
    assert backend_of(t, "foo.com", "/") == "root"
    assert backend_of(t, "foo.com", "/apix") == "root"
    assert backend_of(t, "foo.com", "/api") == "api-exact"
    assert backend_of(t, "foo.com", "/api/") == "api"
    assert backend_of(t, "foo.com", "/api/v2/x") == "v2"   # ImplementationSpecific = Prefix
    assert backend_of(t, "foo.com", "/api/v1") == "api"


def test_hosts_merge_across_ingresses_exact_beats_wildcard_and_catch_all():
    t = RouteTable.build([
        ingress("one", [("foo.com", [("/a", "Prefix", "a", 80)])], created="2026-01-01T00:00:00Z"),
        ingress("two", [("foo.com", [("/b", "Prefix", "b", 80)])], ns="other",
                created="2026-01-02T00:00:00Z"),
        ingress("wild", [("*.foo.com", [("/", "Prefix", "wild", 80)])]),
        ingress("any", [("", [("/", "Prefix", "catchall", 80)])]),
    ])
    assert backend_of(t, "foo.com", "/a/x") == "a"
    m = t.match("foo.com", "/b")
    assert m.backend.service == "b" and m.backend.namespace == "other"
    assert t.match("foo.com", "/c") is None             # host claimed, no path: default 404
    assert backend_of(t, "x.foo.com", "/anything") == "wild"
    assert backend_of(t, "y.x.foo.com", "/") == "catchall"
    assert backend_of(t, "other.org", "/") == "catchall"


def test_conflicting_paths_oldest_ingress_wins():
    newer = ingress("newer", [("foo.com", [("/", "Prefix", "new", 80)])],
                    created="2026-02-01T00:00:00Z")
    older = ingress("older", [("foo.com", [("/", "Prefix", "old", 80)])],
                    created="2026-01-01T00:00:00Z")
    assert backend_of(RouteTable.build([newer, older]), "foo.com", "/") == "old"


def test_default_backend():
    t = RouteTable.build([ingress("d", [("foo.com", [("/a", "Exact", "a", 80)])],
                                  default=("fallback", 8080))])
    assert backend_of(t, "foo.com", "/a") == "a"
    m = t.match("foo.com", "/b")
    assert m.backend.service == "fallback" and m.backend.port == 8080
    assert backend_of(t, "nothing.org", "/") == "fallback"
    only_default = RouteTable.build([ingress("d2", [], default=("svc", "http"))])
    assert only_default.match("x", "/y").backend.port_name == "http"
    assert RouteTable.build([]).match("x", "/") is None


def test_ingress_class_selection():
    classes = [ingress_class("kubelab"), ingress_class("nginx", "k8s.io/ingress-nginx")]
    names, default = our_classes(classes)
    assert names == {"kubelab"} and not default
    assert is_ours(ingress("a", cls="kubelab"), names, default)
    assert not is_ours(ingress("b", cls="nginx"), names, default)
    assert not is_ours(ingress("c", cls=None), names, default)      # no default class
    assert not is_ours(ingress("d", cls="missing"), names, default)
    names, default = our_classes([ingress_class("kubelab", default=True)])
    assert default and is_ours(ingress("c", cls=None), names, default)
    legacy = ingress("e", cls=None, annotations={"kubernetes.io/ingress.class": "nginx"})
    assert not is_ours(legacy, names, default)
    legacy["metadata"]["annotations"]["kubernetes.io/ingress.class"] = "kubelab"
    assert is_ours(legacy, names, default)


def test_tls_entries_and_sni_selection():
    ings = [ingress("t", [("a.example.com", []), ("b.example.com", [])],
                    tls=[{"hosts": ["a.example.com", "*.wild.example.com"], "secretName": "s1"},
                         {"secretName": "s2"}])]
    entries = tls_entries(ings)
    hosts = {(e.host, e.secret_name) for e in entries}
    assert hosts == {("a.example.com", "s1"), ("*.wild.example.com", "s1"),
                     ("a.example.com", "s2"), ("b.example.com", "s2")}
    table = {"a.example.com": "A", "*.wild.example.com": "W"}
    assert select_tls(table, "A.example.com") == "A"
    assert select_tls(table, "x.wild.example.com") == "W"
    assert select_tls(table, "y.x.wild.example.com") is None
    assert select_tls(table, "other") is None


# ---- sans-IO HTTP ------------------------------------------------------------------------------


def test_request_head_parsing_and_framing():
    r = parse_request_head(b"\r\nPOST /up?x=1 HTTP/1.1\r\nHost: Foo.com:8080\r\n"
                           b"Transfer-Encoding: chunked\r\nConnection: keep-alive, Upgrade\r\n"
                           b"Upgrade: websocket\r\n\r\n")
    assert (r.method, r.path, r.origin_target) == ("POST", "/up", "/up?x=1")
    assert r.authority == "Foo.com:8080" and r.keep_alive and r.upgrade == "websocket"
    assert request_framing(r) == ("chunked", 0)
    r = parse_request_head(b"GET http://bar.org/x/y?q HTTP/1.0\r\nHost: ignored\r\n\r\n")
    assert r.authority == "bar.org" and r.origin_target == "/x/y?q" and not r.keep_alive
    assert request_framing(r) == ("length", 0)
    r = parse_request_head(b"PUT / HTTP/1.1\r\nContent-Length: 12\r\n\r\n")
    assert request_framing(r) == ("length", 12)
    for bad in (b"GET /\r\n\r\n", b"GET / HTTP/1.1\r\n bad: fold\r\n\r\n",
                b"GET / HTTP/1.1\r\nno colon\r\n\r\n"):
        with pytest.raises(ProtocolError):
            parse_request_head(bad)
    smuggle = parse_request_head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(ProtocolError):
        request_framing(smuggle)
    with pytest.raises(ProtocolError) as e:
        request_framing(parse_request_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"))
    assert e.value.status == 501


def test_response_framing():
    def resp(raw: bytes) -> ResponseHead:
        return parse_response_head(raw)
    assert response_framing("GET", resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")) \
        == ("length", 5)
    assert response_framing("HEAD", resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")) \
        == ("none", 0)
    assert response_framing("GET", resp(b"HTTP/1.1 204 No Content\r\n\r\n")) == ("none", 0)
    assert response_framing("GET", resp(b"HTTP/1.1 304 Not Modified\r\n\r\n")) == ("none", 0)
    assert response_framing("GET", resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")) \
        == ("chunked", 0)
    assert response_framing("GET", resp(b"HTTP/1.0 200 OK\r\n\r\n")) == ("close", 0)
    r = resp(b"HTTP/1.1 200 OK\r\nConnection: close\r\nKeep-Alive: timeout=5\r\n"
             b"Transfer-Encoding: chunked\r\nX-A: b\r\n\r\n")
    assert not r.keep_alive
    out = downstream_response_head(r, keep_alive=True, http10=False, dechunk=False)
    assert out == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
    out = downstream_response_head(r, keep_alive=False, http10=True, dechunk=True)
    assert out == b"HTTP/1.0 200 OK\r\nX-A: b\r\nConnection: close\r\n\r\n"


def test_chunked_scanner_any_split():
    body = b"5;ext=1\r\nhello\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\nTrailer: t\r\n\r\n"
    nxt = b"GET /next HTTP/1.1\r\n\r\n"
    data = body + nxt
    for cut in range(1, len(data)):
        s = ChunkedScanner(decode=True)
        payload = []
        used1, p1 = s.feed(data[:cut])
        payload += p1
        assert used1 == cut or s.done
        if s.done:
            assert used1 == len(body)
            continue
        used2, p2 = s.feed(data[cut:])
        payload += p2
        assert s.done and cut + used2 == len(body)
        assert b"".join(payload) == b"hello" + b"x" * 16
    with pytest.raises(ProtocolError):
        ChunkedScanner().feed(b"zz\r\n")
    with pytest.raises(ProtocolError):
        ChunkedScanner().feed(b"1\r\naXX")


def test_upstream_request_head_forwarding_headers():
    r = parse_request_head(b"GET /p?q=1 HTTP/1.1\r\nHost: foo.com:8443\r\nConnection: close, X-Hop"
                           b"\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 6.6.6.6\r\n"
                           b"X-Keep: yes\r\n\r\n")
    out = upstream_request_head(r, client_ip="127.0.0.9", scheme="https", server_port=8443,
                                request_id="abc").decode()
    lines = out.split("\r\n")
    assert lines[0] == "GET /p?q=1 HTTP/1.1"
    assert "Host: foo.com:8443" in lines and "X-Keep: yes" in lines
    for gone in ("Connection: close, X-Hop", "X-Hop: 1", "Keep-Alive: 5",
                 "X-Forwarded-For: 6.6.6.6"):
        assert gone not in lines
    for h in ("X-Forwarded-For: 127.0.0.9", "X-Real-IP: 127.0.0.9", "X-Forwarded-Proto: https",
              "X-Forwarded-Host: foo.com:8443", "X-Forwarded-Port: 8443", "X-Request-ID: abc"):
        assert h in lines
    up = parse_request_head(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                            b"Upgrade: websocket\r\n\r\n")
    lines = upstream_request_head(up, client_ip="1.2.3.4", scheme="http", server_port=80,
                                  request_id="r").decode().split("\r\n")
    assert "Upgrade: websocket" in lines and "Connection: upgrade" in lines


# ---- the proxy on loopback sockets --------------------------------------------------------------


class FakeInformer:
    def __init__(self):
        self.cache: dict[str, dict] = {}
        self.handlers = []
        self.synced = asyncio.Event()
        self.synced.set()

    def add_handler(self, h):
        self.handlers.append(h)

    @staticmethod
    def _k(obj):
        md = obj["metadata"]
        return f"{md['namespace']}/{md['name']}" if md.get("namespace") else md["name"]

    def get(self, ns, name):
        return self.cache.get(f"{ns}/{name}" if ns else name)

    def list(self, ns=None):
        return [o for o in self.cache.values()
                if ns is None or o["metadata"].get("namespace") == ns]

    def put(self, obj):
        k = self._k(obj)
        prev = self.cache.get(k)
        self.cache[k] = obj
        for h in self.handlers:
            h("ADDED" if prev is None else "MODIFIED", obj, prev)

    def delete(self, obj):
        prev = self.cache.pop(self._k(obj), None)
        for h in self.handlers:
            h("DELETED", obj, prev)


class FakeInformers:
    def __init__(self):
        self.infs: dict[str, FakeInformer] = {}

    def informer(self, kind, *a, **kw):
        return self.infs.setdefault(kind, FakeInformer())

    def start(self):
        pass


class FakeClient:
    """Records status writes and applies them to the informer cache, like a watch would."""

    def __init__(self, informers: FakeInformers):
        self.informers = informers
        self.status_writes: list[dict] = []

    async def update_status(self, kind, obj):
        self.status_writes.append(obj)
        self.informers.informer(kind).put(obj)
        return obj

    async def get_or_none(self, kind, ns, name):
        return self.informers.informer(kind).get(ns, name)


class FakeEndpoints:
    """proxy.endpoints.EndpointIndex's get() over slices set by the test."""

    def __init__(self):
        self.slices: dict[tuple[str, str], list[dict]] = {}

    def set(self, ns, svc, port_name, port, ips, not_ready=()):
        eps = [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]
        eps += [{"addresses": [ip], "conditions": {"ready": False}} for ip in not_ready]
        self.slices[(ns, svc)] = [{"metadata": {"name": f"{svc}-x"}, "addressType": "IPv4",
                                   "ports": [{"name": port_name, "port": port,
                                              "protocol": "TCP"}],
                                   "endpoints": eps}]

    def get(self, ns, svc):
        return merge_slices(self.slices.get((ns, svc), []))

    def add_listener(self, fn):
        pass


def _addr_block() -> int:
    return random.randrange(1, 250)


class Backend:
    """An aiohttp app on ip:port answering with what it saw, a WebSocket echo at /ws and
    bulk endpoints."""

    def __init__(self, name: str, ip: str):
        self.name, self.ip = name, ip
        self.peers: list[tuple[str, int]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int = 0) -> Backend:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_get("/ws", self.ws)
        app.router.add_post("/upload", self.upload)
        app.router.add_get("/download/{n}", self.download)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.ip, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def echo(self, req: web.Request):
        self.peers.append(req.transport.get_extra_info("peername"))
        return web.json_response({"backend": self.name, "method": req.method,
                                  "path": req.path_qs, "headers": dict(req.headers)})

    async def upload(self, req: web.Request):
        h = hashlib.sha256()
        n = 0
        async for chunk in req.content.iter_any():
            h.update(chunk)
            n += len(chunk)
        return web.json_response({"backend": self.name, "bytes": n, "sha256": h.hexdigest()})

    async def download(self, req: web.Request):
        n = int(req.match_info["n"])
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        block = b"z" * 65536
        while n > 0:
            await resp.write(block[:n])
            n -= 65536
        await resp.write_eof()
        return resp

    async def ws(self, req: web.Request):
        ws = web.WebSocketResponse()
        await ws.prepare(req)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"{self.name}:{msg.data}")
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws


class Rig:
    """Controller + fake informers + backends, all on a fresh 127.x block."""

    def __init__(self):
        b = _addr_block()
        self.node_ip = f"127.61.{b}.1"
        self.backend_ip = [f"127.62.{b}.{i}" for i in range(1, 5)]
        self.informers = FakeInformers()
        self.client = FakeClient(self.informers)
        self.endpoints = FakeEndpoints()
        self.backends: list[Backend] = []
        self.ctl: IngressController | None = None

    def inf(self, kind) -> FakeInformer:
        return self.informers.informer(kind)

    async def __aenter__(self) -> Self:
        self.ctl = IngressController(self.client, self.informers, self.endpoints,
                                     node_name="worker-1", node_ip=self.node_ip,
                                     http_port=0, https_port=0)
        self.inf("IngressClass").put(ingress_class())
        await self.ctl.start()
        return self

    async def __aexit__(self, *exc):
        await self.ctl.stop()
        for b in self.backends:
            await b.stop()

    async def backend(self, name: str, ip_index: int, port: int = 0) -> Backend:
        b = await Backend(name, self.backend_ip[ip_index]).start(port)
        self.backends.append(b)
        return b

    def url(self, path: str = "/", tls: bool = False) -> str:
        if tls:
            return f"https://{self.node_ip}:{self.ctl.https_port}{path}"
        return f"http://{self.node_ip}:{self.ctl.http_port}{path}"


async def curl(*args: str) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec("curl", "-sS", "--max-time", "10", *args,
                                             stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def get(session: aiohttp.ClientSession, url: str, host: str, **kw):
    async with session.get(url, headers={"Host": host}, **kw) as r:
        return r.status, await r.read()


def test_routing_headers_404_503_round_robin_and_retry():
    async def scenario():
        async with Rig() as rig:
            a1 = await rig.backend("a1", 0)
            a2 = await rig.backend("a2", 1, port=a1.port)
            b = await rig.backend("b", 2)
            svcs = rig.inf("Service")
            svcs.put(service("svc-a", [("http", 80, "http")]))
            svcs.put(service("svc-b", [("web", 8080, b.port)]))
            svcs.put(service("svc-empty", [("", 80, 80)]))
            # svc-a's endpoints: two live ones and one refusing connections
            rig.endpoints.set("default", "svc-a", "http", a1.port,
                              [a1.ip, a2.ip, rig.backend_ip[3]], not_ready=["127.0.0.99"])
            rig.endpoints.set("default", "svc-b", "web", b.port, [b.ip])
            rig.endpoints.set("default", "svc-empty", "", 80, [], not_ready=[a1.ip])
            rig.inf("Ingress").put(ingress("web", [
                ("foo.example.com", [("/", "Prefix", "svc-a", "http"),
                                     ("/b", "Prefix", "svc-b", 8080),
                                     ("/empty", "Exact", "svc-empty", 80)]),
                ("*.wild.example.com", [("/", "Prefix", "svc-b", "web")])]))
            await asyncio.sleep(0)   # the coalesced rebuild runs
            async with aiohttp.ClientSession(auto_decompress=False) as s:
                seen = []
                for _ in range(6):
                    st, body = await get(s, rig.url("/x?y=1"), "foo.example.com")
                    assert st == 200
                    j = json.loads(body)
                    seen.append(j["backend"])
                    assert j["path"] == "/x?y=1"
                # round robin over the two live endpoints; the refusing one is skipped
                assert set(seen) == {"a1", "a2"} and seen.count("a1") >= 2
                st, body = await get(s, rig.url("/b/c"), "foo.example.com:80")
                j = json.loads(body)
                assert j["backend"] == "b"
                h = {k.lower(): v for k, v in j["headers"].items()}
                assert h["x-forwarded-for"] == "127.0.0.1" or h["x-forwarded-for"].startswith(
                    "127.")
                assert h["x-real-ip"] == h["x-forwarded-for"]
                assert h["x-forwarded-proto"] == "http"
                assert h["x-forwarded-host"] == "foo.example.com:80"
                assert h["x-forwarded-port"] == str(rig.ctl.http_port)
                assert h["host"] == "foo.example.com:80" and len(h["x-request-id"]) == 32
                st, body = await get(s, rig.url("/q"), "one.wild.example.com")
                assert st == 200 and json.loads(body)["backend"] == "b"
                st, body = await get(s, rig.url("/q"), "two.one.wild.example.com")
                assert (st, body) == (404, DEFAULT_BACKEND_404)
                st, body = await get(s, rig.url("/"), "unknown.org")
                assert (st, body) == (404, DEFAULT_BACKEND_404)
                st, body = await get(s, rig.url("/empty"), "foo.example.com")
                assert st == 503 and b"503 Service Temporarily Unavailable" in body
                # no Service at all → 503 too; then the table follows informer updates
                rig.inf("Ingress").put(ingress("web2", [
                    ("bar.example.com", [("/", "Prefix", "nosuch", 80)])]))
                await asyncio.sleep(0)
                st, _ = await get(s, rig.url("/"), "bar.example.com")
                assert st == 503
                rig.inf("Ingress").delete(rig.inf("Ingress").get("default", "web"))
                await asyncio.sleep(0)
                st, body = await get(s, rig.url("/"), "foo.example.com")
                assert (st, body) == (404, DEFAULT_BACKEND_404)
    asyncio.run(scenario())


def test_other_classes_ignored_and_default_class():
    async def scenario():
        async with Rig() as rig:
            b = await rig.backend("b", 0)
            rig.inf("Service").put(service("s", [("", 80, b.port)]))
            rig.endpoints.set("default", "s", "", b.port, [b.ip])
            rig.inf("IngressClass").put(ingress_class("nginx", "k8s.io/ingress-nginx"))
            rig.inf("Ingress").put(ingress("theirs", [("h", [("/", "Prefix", "s", 80)])],
                                           cls="nginx"))
            rig.inf("Ingress").put(ingress("classless", [("c", [("/", "Prefix", "s", 80)])],
                                           cls=None))
            await asyncio.sleep(0)
            async with aiohttp.ClientSession() as s:
                assert (await get(s, rig.url("/"), "h"))[0] == 404
                assert (await get(s, rig.url("/"), "c"))[0] == 404
                rig.inf("IngressClass").put(ingress_class("kubelab", default=True))
                await asyncio.sleep(0)
                assert (await get(s, rig.url("/"), "c"))[0] == 200
                assert (await get(s, rig.url("/"), "h"))[0] == 404
    asyncio.run(scenario())


def test_keepalive_to_backends_streaming_bodies_and_http10():
    async def scenario():
        async with Rig() as rig:
            b = await rig.backend("b", 0)
            rig.inf("Service").put(service("s", [("", 80, b.port)]))
            rig.endpoints.set("default", "s", "", b.port, [b.ip])
            rig.inf("Ingress").put(ingress("i", [("", [("/", "Prefix", "s", 80)])]))
            await asyncio.sleep(0)
            async with aiohttp.ClientSession() as s:
                for _ in range(5):
                    assert (await get(s, rig.url("/k"), "any"))[0] == 200
                # one client connection, one backend connection re-used for every request
                assert len(set(b.peers)) == 1, b.peers
                # a 20 MiB chunked upload streams through and arrives intact
                data = random.randbytes(20 << 20)

                async def gen():
                    for i in range(0, len(data), 1 << 20):
                        yield data[i:i + (1 << 20)]
                async with s.post(rig.url("/upload"), data=gen()) as r:
                    j = await r.json()
                assert j["bytes"] == len(data)
                assert j["sha256"] == hashlib.sha256(data).hexdigest()
                # a fixed-length upload
                async with s.post(rig.url("/upload"), data=data[:12345]) as r:
                    assert (await r.json())["bytes"] == 12345
                # a 50 MiB chunked download
                async with s.get(rig.url(f"/download/{50 << 20}")) as r:
                    n = 0
                    async for chunk in r.content.iter_any():
                        n += len(chunk)
                assert r.status == 200 and n == 50 << 20
            # HTTP/1.0 client with a chunked response: de-chunked, connection closed
            rc, out, err = await curl("-0", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                      rig.url("/download/100000"))
            assert (rc, out) == (0, "200 100000"), err
            # HEAD on the default backend; Expect: 100-continue upload with curl
            rc, out, _ = await curl("-I", "-H", "Host: nothing", rig.url("/"))
            rig.inf("Ingress").delete(rig.inf("Ingress").get("default", "i"))
            await asyncio.sleep(0)
            rc, out, _ = await curl("-sI", rig.url("/"))
            assert out.startswith("HTTP/1.1 404") and "Content-Length: 21" in out
    asyncio.run(scenario())


def test_expect_continue_and_request_smuggling_rejected():
    async def scenario():
        async with Rig() as rig:
            b = await rig.backend("b", 0)
            rig.inf("Service").put(service("s", [("", 80, b.port)]))
            rig.endpoints.set("default", "s", "", b.port, [b.ip])
            rig.inf("Ingress").put(ingress("i", [("", [("/", "Prefix", "s", 80)])]))
            await asyncio.sleep(0)
            rc, out, err = await curl("-H", "Expect: 100-continue", "--data-binary",
                                      "x" * 5000, rig.url("/upload"))
            assert rc == 0 and json.loads(out)["bytes"] == 5000, err
            r, w = await asyncio.open_connection(rig.node_ip, rig.ctl.http_port)
            w.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            resp = await r.read()
            assert resp.startswith(b"HTTP/1.1 400 ")
            w.close()
            # pipelined requests on one connection are answered in order
            r, w = await asyncio.open_connection(rig.node_ip, rig.ctl.http_port)
            w.write(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n"
                    b"Connection: close\r\n\r\n")
            resp = await r.read()
            w.close()
            assert resp.count(b"HTTP/1.1 200 OK") == 2
            assert resp.index(b'"/one"') < resp.index(b'"/two"')
    asyncio.run(scenario())


def test_websocket_passthrough():
    async def scenario():
        async with Rig() as rig:
            b = await rig.backend("ws-backend", 0)
            rig.inf("Service").put(service("s", [("", 80, b.port)]))
            rig.endpoints.set("default", "s", "", b.port, [b.ip])
            rig.inf("Ingress").put(ingress("i", [("ws.example.com",
                                                  [("/ws", "Exact", "s", 80)])]))
            await asyncio.sleep(0)
            async with aiohttp.ClientSession() as s, \
                    s.ws_connect(rig.url("/ws"), headers={"Host": "ws.example.com"}) as ws:
                for i in range(3):
                    await ws.send_str(f"hello {i}")
                    assert (await ws.receive_str(timeout=5)) == f"ws-backend:hello {i}"
                big = random.randbytes(1 << 20)
                await ws.send_bytes(big)
                assert (await ws.receive_bytes(timeout=5)) == big[::-1]
                await ws.close()
    asyncio.run(scenario())


def _tls_secret(name: str, cn: str, hosts: tuple[str, ...], ns: str = "default") -> dict:
    cert, key = self_signed_cert(cn, hosts)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": ns},
            "data": {"tls.crt": base64.b64encode(cert).decode(),
                     "tls.key": base64.b64encode(key).decode()}}


def _subject(stderr: str) -> str:
    m = re.search(r"subject: (.*)", stderr)
    return m.group(1) if m else ""


def test_tls_sni_certificates_and_forwarded_proto():
    async def scenario():
        async with Rig() as rig:
            b = await rig.backend("b", 0)
            rig.inf("Service").put(service("s", [("", 80, b.port)]))
            rig.endpoints.set("default", "s", "", b.port, [b.ip])
            rig.inf("Secret").put(_tls_secret("a-tls", "a.example.com", ("a.example.com",)))
            rig.inf("Secret").put(_tls_secret("w-tls", "wildcard", ("*.w.example.com",)))
            rig.inf("Ingress").put(ingress("i", [
                ("a.example.com", [("/", "Prefix", "s", 80)]),
                ("x.w.example.com", [("/", "Prefix", "s", 80)])],
                tls=[{"hosts": ["a.example.com"], "secretName": "a-tls"},
                     {"hosts": ["*.w.example.com"], "secretName": "w-tls"}]))
            await asyncio.sleep(0)
            port = rig.ctl.https_port

            async def fetch(host):
                return await curl("-vk", "--resolve", f"{host}:{port}:{rig.node_ip}",
                                  f"https://{host}:{port}/path")
            rc, out, err = await fetch("a.example.com")
            assert rc == 0, err
            assert "CN=a.example.com" in _subject(err)
            j = json.loads(out)
            h = {k.lower(): v for k, v in j["headers"].items()}
            assert h["x-forwarded-proto"] == "https" and h["x-forwarded-port"] == str(port)
            rc, out, err = await fetch("x.w.example.com")
            assert rc == 0 and "CN=wildcard" in _subject(err), err
            rc, out, err = await fetch("nomatch.example.com")
            assert rc == 0 and FAKE_CERT_CN in _subject(err), err
            assert out == DEFAULT_BACKEND_404.decode()
            # a rotated Secret is served from the next handshake on
            rig.inf("Secret").put(_tls_secret("a-tls", "rotated", ("a.example.com",)))
            await asyncio.sleep(0)
            rc, out, err = await fetch("a.example.com")
            assert rc == 0 and "CN=rotated" in _subject(err), err
    asyncio.run(scenario())


def node(name, ip, ready):
    conds = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": conds}}


def test_status_addresses_pure():
    cur = [{"ip": "127.30.0.103"}, {"ip": "127.30.0.102"}, {"hostname": "lb.example.com"}]
    assert status_addresses(cur, "127.30.0.101", serve=True, dead={"127.30.0.103"}) == [
        {"ip": "127.30.0.101"}, {"ip": "127.30.0.102"}, {"hostname": "lb.example.com"}]
    assert status_addresses(cur, "127.30.0.102", serve=False, dead=set()) == [
        {"ip": "127.30.0.103"}, {"hostname": "lb.example.com"}]
    dead, alive = node_ip_states([node("a", "10.0.0.1", "True"), node("b", "10.0.0.2", "Unknown"),
                                  node("c", "10.0.0.3", "False"), node("d", "10.0.0.4", None)])
    assert dead == {"10.0.0.2", "10.0.0.3"} and alive == {"10.0.0.1", "10.0.0.4"}


def test_status_lists_node_ip_prunes_dead_workers_and_is_removed_on_stop():
    async def lb(rig, name, n):
        for _ in range(300):
            cur = rig.inf("Ingress").get("default", name)
            got = [x["ip"] for x in (cur.get("status") or {}).get("loadBalancer", {})
                   .get("ingress", [])]
            if len(got) == n:
                return got
            await asyncio.sleep(0.01)
        raise AssertionError(f"status of {name}: {got}")

    async def scenario():
        rig = Rig()
        async with rig:
            other = "127.30.0.102"
            rig.inf("Node").put(node("worker-2", other, "True"))
            ing = ingress("i", [("h", [("/", "Prefix", "s", 80)])])
            ing["status"] = {"loadBalancer": {"ingress": [{"ip": other}]}}
            rig.inf("Ingress").put(ing)
            rig.inf("Ingress").put(ingress("not-ours", [("h", [])], cls="nginx"))
            assert sorted(await lb(rig, "i", 2)) == sorted([rig.node_ip, other])
            assert "status" not in rig.inf("Ingress").get("default", "not-ours")
            # worker-2 dies: its Node goes Unknown and its address is pruned
            rig.inf("Node").put(node("worker-2", other, "Unknown"))
            assert await lb(rig, "i", 1) == [rig.node_ip]
        ing = rig.inf("Ingress").get("default", "i")
        assert ing["status"]["loadBalancer"] == {}
    asyncio.run(scenario())


def test_backend_failures_stale_keepalive_and_limits():
    async def scenario():
        async with Rig() as rig:
            closes = {"n": 0}

            async def rude(reader, writer):
                # answers one request without "Connection: close", then closes anyway
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                writer.close()
                closes["n"] += 1
            srv = await asyncio.start_server(rude, rig.backend_ip[0], 0)
            port = srv.sockets[0].getsockname()[1]
            try:
                rig.inf("Service").put(service("rude", [("", 80, port)]))
                rig.endpoints.set("default", "rude", "", port, [rig.backend_ip[0]])
                rig.inf("Service").put(service("down", [("", 80, port)]))
                rig.endpoints.set("default", "down", "", port, [rig.backend_ip[1]])
                b = await rig.backend("b", 2)
                rig.inf("Service").put({"apiVersion": "v1", "kind": "Service",
                                        "metadata": {"name": "ext", "namespace": "default"},
                                        "spec": {"type": "ExternalName",
                                                 "externalName": b.ip,
                                                 "ports": [{"port": b.port}]}})
                rig.inf("Ingress").put(ingress("i", [("", [
                    ("/rude", "Prefix", "rude", 80), ("/down", "Prefix", "down", 80),
                    ("/ext", "Prefix", "ext", b.port)])]))
                await asyncio.sleep(0)
                async with aiohttp.ClientSession() as s:
                    for _ in range(5):   # the closed pooled connection is never a failure
                        assert await get(s, rig.url("/rude"), "x") == (200, b"ok")
                    assert closes["n"] == 5
                    st, body = await get(s, rig.url("/down"), "x")   # every endpoint refuses
                    assert st == 502 and b"502 Bad Gateway" in body
                    st, body = await get(s, rig.url("/ext/1"), "x")
                    assert st == 200 and json.loads(body)["backend"] == "b"
                r, w = await asyncio.open_connection(rig.node_ip, rig.ctl.http_port)
                w.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
                assert (await r.read()).startswith(b"HTTP/1.1 431 ")
                w.close()
            finally:
                srv.close()
    asyncio.run(scenario())


def test_concurrent_requests_spread_over_endpoints():
    async def scenario():
        async with Rig() as rig:
            b1 = await rig.backend("b1", 0)
            b2 = await rig.backend("b2", 1, port=b1.port)
            rig.inf("Service").put(service("s", [("", 80, b1.port)]))
            rig.endpoints.set("default", "s", "", b1.port, [b1.ip, b2.ip])
            rig.inf("Ingress").put(ingress("i", [("", [("/", "Prefix", "s", 80)])]))
            await asyncio.sleep(0)
            conn = aiohttp.TCPConnector(limit=100)
            async with aiohttp.ClientSession(connector=conn) as s:
                res = await asyncio.gather(*(get(s, rig.url(f"/c{i}"), "h") for i in range(300)))
            assert all(st == 200 for st, _ in res)
            names = [json.loads(body)["backend"] for _, body in res]
            assert 100 <= names.count("b1") <= 200, names.count("b1")
    asyncio.run(scenario())
