"""Cluster DNS: record lookup against fixture Services/EndpointSlices (every worked example of
dns-spec.md), the query handler on bytes, and the wire server with dig over UDP and TCP
(truncation, forwarding to a fake upstream, SERVFAIL on dead upstreams)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import time

import pytest
import uvloop
from dnslib import CNAME, EDNS0, QTYPE, RCODE, RR, TXT, A, DNSRecord

from proxy.dns.forward import parse_upstream
from proxy.dns.records import RecordLookup, ip_from_reverse
from proxy.dns.server import DNSServer, QueryHandler
from proxy.dns.source import ClusterCache
from proxy.dns.static import StaticInformers, free_port
from proxy.endpoints import EndpointIndex

Z = "cluster.local"


# --- fixture objects: the worked-example world of dns-spec.md -------------------------------

def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(name: str, ns: str = "default", *, cluster_ip: str | None = None,
            ports: list[tuple[str, int, str]] = (), type_: str = "ClusterIP",
            external_name: str | None = None, publish_not_ready: bool = False) -> dict:
    spec: dict = {"type": type_,
                  "ports": [{"name": n, "port": p, "protocol": proto, "targetPort": p}
                            if n else {"port": p, "protocol": proto, "targetPort": p}
                            for n, p, proto in ports]}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
        spec["clusterIPs"] = [cluster_ip]
    if external_name is not None:
        spec["externalName"] = external_name
    if publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"}, "spec": spec}


def endpoint_slice(svc: str, ns: str = "default", *, ports: list[tuple[str, int, str]] = (),
                   endpoints: list[tuple[str, bool, str | None]] = (),
                   name: str | None = None) -> dict:
    eps = []
    for ip, ready, hostname in endpoints:
        e: dict = {"addresses": [ip], "conditions": {"ready": ready, "serving": ready,
                                                     "terminating": False}}
        if hostname:
            e["hostname"] = hostname
        eps.append(e)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name or f"{svc}-abcde", "namespace": ns, "resourceVersion": "1",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
            "endpoints": eps}


def worked_example() -> list[dict]:
    """dns-spec.md's setup: web (ClusterIP, http 80 + unnamed 8080), nginx (headless, web-0/1
    ready, web-2 not), ext (ExternalName www.example.com), empty (headless, no endpoints)."""
    return [
        namespace("default"), namespace("kube-system"), namespace("other"),
        service("web", cluster_ip="10.96.0.20", ports=[("http", 80, "TCP"), ("", 8080, "TCP")]),
        endpoint_slice("web", ports=[("http", 8080, "TCP"), ("", 8080, "TCP")],
                       endpoints=[("10.244.1.9", True, None)]),
        service("nginx", cluster_ip="None", ports=[("web", 80, "TCP")]),
        endpoint_slice("nginx", ports=[("web", 80, "TCP")],
                       endpoints=[("10.244.1.5", True, "web-0"), ("10.244.2.6", True, "web-1"),
                                  ("10.244.3.7", False, "web-2")]),
        service("ext", type_="ExternalName", external_name="www.example.com"),
        service("empty", cluster_ip="None", ports=[("web", 80, "TCP")]),
        service("kube-dns", "kube-system", cluster_ip="10.96.0.10",
                ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]),
    ]


def run(coro, timeout: float = 20.0):
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return uvloop.run(main())


def make_lookup(objs=None) -> tuple[RecordLookup, StaticInformers, ClusterCache]:
    inf = StaticInformers(worked_example() if objs is None else objs)
    cache = ClusterCache(inf, EndpointIndex(inf))
    return RecordLookup(cache, Z, dns_ips=["10.96.0.10"]), inf, cache


def rdatas(res, rtype=None) -> list[str]:
    return [str(rr.rdata) for rr in res.answer if rtype is None or rr.rtype == rtype]


@pytest.fixture
def lk():
    return make_lookup()[0]


def assert_nx(res):
    assert res.rcode == RCODE.NXDOMAIN and not res.answer
    assert [rr.rtype for rr in res.authority] == [QTYPE.SOA]


def assert_nodata(res):
    assert res.rcode == RCODE.NOERROR and not res.answer, res
    assert [rr.rtype for rr in res.authority] == [QTYPE.SOA]


# --- records: the worked examples ---------------------------------------------------------------

def test_clusterip_a(lk):
    res = lk.lookup("web.default.svc.cluster.local.", QTYPE.A)
    assert res.rcode == RCODE.NOERROR and res.authoritative
    assert rdatas(res) == ["10.96.0.20"]
    assert res.answer[0].ttl == 5
    assert str(res.answer[0].rname) == "web.default.svc.cluster.local."


def test_clusterip_without_endpoints_still_answers():
    lk, *_ = make_lookup([namespace("default"),
                          service("lonely", cluster_ip="10.96.0.33", ports=[("", 80, "TCP")])])
    assert rdatas(lk.lookup("lonely.default.svc.cluster.local", QTYPE.A)) == ["10.96.0.33"]


def test_aaaa_on_ipv4_service_is_nodata(lk):
    assert_nodata(lk.lookup("web.default.svc.cluster.local", QTYPE.AAAA))


def test_srv_named_port(lk):
    res = lk.lookup("_http._tcp.web.default.svc.cluster.local", QTYPE.SRV)
    assert rdatas(res) == ["0 100 80 web.default.svc.cluster.local."]
    assert [(str(rr.rname), str(rr.rdata)) for rr in res.additional] == [
        ("web.default.svc.cluster.local.", "10.96.0.20")]


def test_srv_unknown_port_is_nxdomain(lk):
    assert_nx(lk.lookup("_https._tcp.web.default.svc.cluster.local", QTYPE.SRV))
    assert_nx(lk.lookup("_http._udp.web.default.svc.cluster.local", QTYPE.SRV))


def test_srv_on_service_name_one_per_port(lk):
    res = lk.lookup("web.default.svc.cluster.local", QTYPE.SRV)
    assert sorted(rdatas(res)) == ["0 50 80 web.default.svc.cluster.local.",
                                   "0 50 8080 web.default.svc.cluster.local."]


def test_ptr_cluster_ip(lk):
    res = lk.lookup("20.0.96.10.in-addr.arpa.", QTYPE.PTR)
    assert rdatas(res) == ["web.default.svc.cluster.local."] and res.authoritative


def test_headless_a_ready_endpoints_only(lk):
    res = lk.lookup("nginx.default.svc.cluster.local", QTYPE.A)
    assert sorted(rdatas(res)) == ["10.244.1.5", "10.244.2.6"]


def test_headless_endpoint_hostname(lk):
    assert rdatas(lk.lookup("web-0.nginx.default.svc.cluster.local", QTYPE.A)) == ["10.244.1.5"]
    assert rdatas(lk.lookup("web-1.nginx.default.svc.cluster.local", QTYPE.A)) == ["10.244.2.6"]


def test_not_ready_endpoint_is_nxdomain(lk):
    assert_nx(lk.lookup("web-2.nginx.default.svc.cluster.local", QTYPE.A))
    assert_nx(lk.lookup("web-9.nginx.default.svc.cluster.local", QTYPE.A))


def test_publish_not_ready_addresses():
    objs = worked_example()
    objs[5] = service("nginx", cluster_ip="None", ports=[("web", 80, "TCP")],
                      publish_not_ready=True)
    lk, *_ = make_lookup(objs)
    assert rdatas(lk.lookup("web-2.nginx.default.svc.cluster.local", QTYPE.A)) == ["10.244.3.7"]
    assert sorted(rdatas(lk.lookup("nginx.default.svc.cluster.local", QTYPE.A))) == [
        "10.244.1.5", "10.244.2.6", "10.244.3.7"]


def test_headless_srv(lk):
    res = lk.lookup("_web._tcp.nginx.default.svc.cluster.local", QTYPE.SRV)
    assert sorted(rdatas(res)) == ["0 50 80 web-0.nginx.default.svc.cluster.local.",
                                   "0 50 80 web-1.nginx.default.svc.cluster.local."]
    assert sorted((str(rr.rname), str(rr.rdata)) for rr in res.additional) == [
        ("web-0.nginx.default.svc.cluster.local.", "10.244.1.5"),
        ("web-1.nginx.default.svc.cluster.local.", "10.244.2.6")]


def test_srv_weight_floor_at_least_one():
    eps = [(f"10.244.9.{i}", True, None) for i in range(1, 151)]
    lk, *_ = make_lookup([namespace("default"),
                          service("big", cluster_ip="None", ports=[("web", 80, "TCP")]),
                          endpoint_slice("big", ports=[("web", 80, "TCP")], endpoints=eps)])
    res = lk.lookup("_web._tcp.big.default.svc.cluster.local", QTYPE.SRV)
    assert len(res.answer) == 150 and {rr.rdata.weight for rr in res.answer} == {1}
    res = make_lookup()[0].lookup("_web._tcp.nginx.default.svc.cluster.local", QTYPE.SRV)
    assert {rr.rdata.weight for rr in res.answer} == {50}


def test_headless_ptr(lk):
    res = lk.lookup("5.1.244.10.in-addr.arpa", QTYPE.PTR)
    assert rdatas(res) == ["web-0.nginx.default.svc.cluster.local."]


def test_ptr_endpoint_without_hostname_uses_dashed_ip(lk):
    # CoreDNS answers endpoint IPs of every Service (dashed IP when there is no hostname)
    res = lk.lookup("9.1.244.10.in-addr.arpa", QTYPE.PTR)
    assert rdatas(res) == ["10-244-1-9.web.default.svc.cluster.local."]


def test_endpoint_name_under_clusterip_service(lk):
    # CoreDNS looks up <endpoint>.<svc> in the endpoints of any Service
    assert rdatas(lk.lookup("10-244-1-9.web.default.svc.cluster.local", QTYPE.A)) == [
        "10.244.1.9"]
    assert_nx(lk.lookup("10-244-1-8.web.default.svc.cluster.local", QTYPE.A))


def test_ptr_unknown_ip_falls_through(lk):
    assert lk.lookup("7.3.244.10.in-addr.arpa", QTYPE.PTR) is None  # not-ready endpoint
    assert lk.lookup("1.1.168.192.in-addr.arpa", QTYPE.PTR) is None
    assert lk.lookup("in-addr.arpa", QTYPE.SOA) is None


def test_empty_headless_is_nxdomain(lk):
    assert_nx(lk.lookup("empty.default.svc.cluster.local", QTYPE.A))


def test_external_name_cname(lk):
    res = lk.lookup("ext.default.svc.cluster.local", QTYPE.CNAME)
    assert rdatas(res) == ["www.example.com."]
    res = lk.lookup("ext.default.svc.cluster.local", QTYPE.A)
    assert rdatas(res, QTYPE.CNAME) == ["www.example.com."]
    assert res.chase == ("www.example.com.", QTYPE.A)


def test_below_external_name_is_nxdomain(lk):
    assert_nx(lk.lookup("x.ext.default.svc.cluster.local", QTYPE.A))
    assert_nx(lk.lookup("_http._tcp.ext.default.svc.cluster.local", QTYPE.SRV))


def test_external_name_into_the_zone_is_followed():
    objs = worked_example() + [service("alias", type_="ExternalName",
                                       external_name="web.default.svc.cluster.local")]
    lk, *_ = make_lookup(objs)
    res = lk.lookup("alias.default.svc.cluster.local", QTYPE.A)
    assert rdatas(res) == ["web.default.svc.cluster.local.", "10.96.0.20"]
    assert res.chase is None


def test_pod_a_record(lk):
    assert rdatas(lk.lookup("10-244-1-5.default.pod.cluster.local", QTYPE.A)) == ["10.244.1.5"]
    assert_nx(lk.lookup("not-an-ip.default.pod.cluster.local", QTYPE.A))
    assert_nx(lk.lookup("10-244-1-5.nosuchns.pod.cluster.local", QTYPE.A))


def test_intermediate_names_are_nodata(lk):
    for n in ("default.svc.cluster.local", "svc.cluster.local", "pod.cluster.local",
              "default.pod.cluster.local", "cluster.local"):
        assert_nodata(lk.lookup(n, QTYPE.A))


def test_nxdomain_names(lk):
    for n in ("nosuch.default.svc.cluster.local", "web.nosuchns.svc.cluster.local",
              "foo.cluster.local", "a.b.c.d.web.default.svc.cluster.local",
              "nosuchns.svc.cluster.local"):
        assert_nx(lk.lookup(n, QTYPE.A))


def test_txt(lk):
    res = lk.lookup("dns-version.cluster.local", QTYPE.TXT)
    assert rdatas(res) == ['"1.1.0"'] and res.answer[0].ttl == 28800
    assert_nodata(lk.lookup("web.default.svc.cluster.local", QTYPE.TXT))
    assert_nx(lk.lookup("nope.default.svc.cluster.local", QTYPE.TXT))


def test_other_types_nodata_or_nxdomain(lk):
    assert_nodata(lk.lookup("web.default.svc.cluster.local", QTYPE.MX))
    assert_nodata(lk.lookup("web.default.svc.cluster.local", QTYPE.CNAME))
    assert_nodata(lk.lookup("web.default.svc.cluster.local", QTYPE.PTR))
    assert_nx(lk.lookup("nope.default.svc.cluster.local", QTYPE.MX))


def test_case_insensitive_and_owner_case_kept(lk):
    res = lk.lookup("WEB.Default.SVC.Cluster.Local.", QTYPE.A)
    assert rdatas(res) == ["10.96.0.20"]
    assert str(res.answer[0].rname) == "WEB.Default.SVC.Cluster.Local."
    assert rdatas(lk.lookup("Web-0.NGINX.default.svc.cluster.local", QTYPE.A)) == ["10.244.1.5"]
    assert rdatas(lk.lookup("_HTTP._TCP.web.default.svc.cluster.local", QTYPE.SRV))


def test_soa_shape(lk):
    res = lk.lookup("nope.default.svc.cluster.local", QTYPE.A)
    soa = res.authority[0]
    assert str(soa.rname) == "cluster.local." and soa.ttl == 5
    d = soa.rdata
    assert (str(d.mname), str(d.rname)) == ("ns.dns.cluster.local.", "hostmaster.cluster.local.")
    assert tuple(d.times[1:]) == (7200, 1800, 86400, 5) and d.times[0] > 1_600_000_000
    res = lk.lookup("cluster.local", QTYPE.SOA)
    assert [rr.rtype for rr in res.answer] == [QTYPE.SOA]
    res = lk.lookup("cluster.local", QTYPE.NS)
    assert rdatas(res) == ["ns.dns.cluster.local."]
    assert [str(rr.rdata) for rr in res.additional] == ["10.96.0.10"]
    assert rdatas(lk.lookup("ns.dns.cluster.local", QTYPE.A)) == ["10.96.0.10"]


def test_outside_zone_is_not_ours(lk):
    assert lk.lookup("www.example.com.", QTYPE.A) is None
    assert lk.lookup("cluster.local.example.com.", QTYPE.A) is None
    assert lk.lookup("notcluster.local.", QTYPE.A) is None


def test_reverse_name_parsing():
    assert ip_from_reverse("5.1.244.10.in-addr.arpa.") == "10.244.1.5"
    assert ip_from_reverse("1.244.10.in-addr.arpa.") is None
    v6 = ".".join(reversed("fd000000000000000000000000000001")) + ".ip6.arpa."
    assert ip_from_reverse(v6) == "fd00::1"


def test_changes_apply_immediately():
    lk, inf, cache = make_lookup()
    g = cache.generation
    inf.apply(service("late", cluster_ip="10.96.0.77", ports=[("", 80, "TCP")]))
    assert rdatas(lk.lookup("late.default.svc.cluster.local", QTYPE.A)) == ["10.96.0.77"]
    assert rdatas(lk.lookup("77.0.96.10.in-addr.arpa", QTYPE.PTR)) == [
        "late.default.svc.cluster.local."]
    # ExternalName switched to ClusterIP (a conformance test does this)
    inf.apply(service("ext", cluster_ip="10.96.0.78", ports=[("", 80, "TCP")]))
    assert rdatas(lk.lookup("ext.default.svc.cluster.local", QTYPE.A)) == ["10.96.0.78"]
    # a readiness flip
    inf.apply(endpoint_slice("nginx", ports=[("web", 80, "TCP")],
                             endpoints=[("10.244.1.5", False, "web-0"),
                                        ("10.244.2.6", True, "web-1")]))
    assert rdatas(lk.lookup("nginx.default.svc.cluster.local", QTYPE.A)) == ["10.244.2.6"]
    assert lk.lookup("5.1.244.10.in-addr.arpa", QTYPE.PTR) is None
    inf.delete(service("late"))
    assert_nx(lk.lookup("late.default.svc.cluster.local", QTYPE.A))
    assert lk.lookup("77.0.96.10.in-addr.arpa", QTYPE.PTR) is None
    assert cache.generation > g


def test_endpoints_in_several_slices():
    objs = [namespace("default"), service("h", cluster_ip="None", ports=[("p", 80, "TCP")]),
            endpoint_slice("h", ports=[("p", 80, "TCP")], endpoints=[("10.1.0.1", True, None)],
                           name="h-1"),
            endpoint_slice("h", ports=[("p", 81, "TCP")], endpoints=[("10.1.0.2", True, None)],
                           name="h-2")]
    lk, *_ = make_lookup(objs)
    assert sorted(rdatas(lk.lookup("h.default.svc.cluster.local", QTYPE.A))) == [
        "10.1.0.1", "10.1.0.2"]
    assert sorted(rdatas(lk.lookup("_p._tcp.h.default.svc.cluster.local", QTYPE.SRV))) == [
        "0 50 80 10-1-0-1.h.default.svc.cluster.local.",
        "0 50 81 10-1-0-2.h.default.svc.cluster.local."]


# --- query handler on bytes -----------------------------------------------------------------

class NoUpstream:
    upstreams: tuple = ()

    async def query(self, data, tcp=False):
        return None


def handler(objs=None, ready=True) -> tuple[QueryHandler, StaticInformers, ClusterCache]:
    lk, inf, cache = make_lookup(objs)
    h = QueryHandler(lk, NoUpstream(), lambda: ready, lambda: cache.generation)
    cache.add_listener(h.clear_cache)
    return h, inf, cache


def ask(h: QueryHandler, name: str, qtype: str = "A", *, udp=True, edns: int | None = None,
        qid: int = 4242) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    if edns:
        q.add_ar(EDNS0(udp_len=edns))
    out = h.handle(q.pack(), udp=udp)
    if not isinstance(out, bytes):
        out = run(out)
    return DNSRecord.parse(out)


def test_handler_answer_bytes():
    h, *_ = handler()
    r = ask(h, "web.default.svc.cluster.local")
    assert r.header.id == 4242 and r.header.qr and r.header.aa and r.header.rd
    assert [str(rr.rdata) for rr in r.rr] == ["10.96.0.20"]
    # from the packed-answer cache: same bytes with the new id
    r2 = ask(h, "web.default.svc.cluster.local", qid=7)
    assert r2.header.id == 7 and [str(rr.rdata) for rr in r2.rr] == ["10.96.0.20"]
    r3 = ask(h, "nope.default.svc.cluster.local")
    assert r3.header.rcode == RCODE.NXDOMAIN and r3.header.aa
    assert [rr.rtype for rr in r3.auth] == [QTYPE.SOA]


def test_handler_cache_dropped_on_change():
    h, inf, _ = handler()
    assert [str(rr.rdata) for rr in ask(h, "web.default.svc.cluster.local").rr] == ["10.96.0.20"]
    inf.apply(service("web", cluster_ip="10.96.0.21", ports=[("http", 80, "TCP")]))
    assert [str(rr.rdata) for rr in ask(h, "web.default.svc.cluster.local").rr] == ["10.96.0.21"]


def test_handler_servfail_until_synced():
    lk, _inf, cache = make_lookup()
    state = {"ready": False}
    h = QueryHandler(lk, NoUpstream(), lambda: state["ready"], lambda: cache.generation)
    assert ask(h, "web.default.svc.cluster.local").header.rcode == RCODE.SERVFAIL
    state["ready"] = True
    assert ask(h, "web.default.svc.cluster.local").header.rcode == RCODE.NOERROR


def test_cache_synced_needs_informers():
    inf = StaticInformers(worked_example(), synced=False)
    cache = ClusterCache(inf, EndpointIndex(inf))
    assert not cache.synced
    inf.set_synced()
    assert cache.synced


def test_handler_truncates_udp_and_answers_tcp_in_full():
    eps = [(f"10.244.9.{i}", True, None) for i in range(1, 101)]
    h, *_ = handler([namespace("default"),
                     service("big", cluster_ip="None", ports=[("web", 80, "TCP")]),
                     endpoint_slice("big", ports=[("web", 80, "TCP")], endpoints=eps)])
    r = ask(h, "big.default.svc.cluster.local")
    assert r.header.tc and 0 < len(r.rr) < 100
    assert len(r.pack()) <= 512
    r = ask(h, "big.default.svc.cluster.local", edns=4096)
    assert not r.header.tc and len(r.rr) == 100
    assert any(rr.rtype == QTYPE.OPT for rr in r.ar)
    r = ask(h, "big.default.svc.cluster.local", edns=1232)
    assert r.header.tc and len(r.pack()) <= 1232
    r = ask(h, "big.default.svc.cluster.local", udp=False)
    assert not r.header.tc and len(r.rr) == 100


def test_handler_bad_input():
    h, *_ = handler()
    assert h.handle(b"\x00\x01", udp=True) is None
    junk = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff"
    r = DNSRecord.parse(h.handle(junk, udp=True))
    assert r.header.id == 0x1234 and r.header.rcode == RCODE.FORMERR
    # a response is never answered (no reflection loops)
    resp = DNSRecord.question("web.default.svc.cluster.local").reply().pack()
    assert h.handle(resp, udp=True) is None
    q = DNSRecord.question("web.default.svc.cluster.local")
    q.header.opcode = 2  # STATUS
    assert DNSRecord.parse(h.handle(q.pack(), udp=True)).header.rcode == RCODE.NOTIMP
    q = DNSRecord.question("cluster.local", "AXFR")
    assert DNSRecord.parse(h.handle(q.pack(), udp=False)).header.rcode == RCODE.REFUSED


def test_upstream_parsing():
    assert (parse_upstream("1.1.1.1").host, parse_upstream("1.1.1.1").port) == ("1.1.1.1", 53)
    assert parse_upstream("127.0.0.1:5353").port == 5353
    assert (parse_upstream("[::1]:54").host, parse_upstream("[::1]:54").port) == ("::1", 54)
    assert parse_upstream("fd00::53").host == "fd00::53"


# --- wire: dig against a DNSServer ------------------------------------------------------------

class FakeUpstream:
    """A tiny authoritative server for example.com on UDP and TCP (records it was asked)."""

    def __init__(self, ip: str, port: int, *, big_txt: int = 0) -> None:
        self.ip, self.port, self.big_txt = ip, port, big_txt
        self.asked: list[tuple[str, str]] = []
        self.udp = None
        self.tcp = None

    def answer(self, data: bytes) -> bytes:
        q = DNSRecord.parse(data)
        name, qt = str(q.q.qname).lower(), QTYPE[q.q.qtype]
        self.asked.append((name, qt))
        r = q.reply(aa=1)
        if name == "www.example.com." and qt == "A":
            r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("93.184.216.34"), ttl=60))
        elif name == "alias.example.com." and qt == "A":
            r.add_answer(RR(q.q.qname, QTYPE.CNAME, rdata=CNAME("www.example.com."), ttl=60))
            r.add_answer(RR("www.example.com.", QTYPE.A, rdata=A("93.184.216.34"), ttl=60))
        elif name == "big.example.com." and qt == "TXT":
            for i in range(self.big_txt):
                r.add_answer(RR(q.q.qname, QTYPE.TXT, rdata=TXT(f"record-{i:03d}-" + "x" * 40),
                                ttl=60))
        else:
            r.header.rcode = RCODE.NXDOMAIN
        return r.pack()

    async def start(self):
        loop = asyncio.get_running_loop()
        up = self

        class P(asyncio.DatagramProtocol):
            def connection_made(self, t):
                self.t = t

            def datagram_received(self, data, addr):
                out = up.answer(data)
                if len(out) > 512:  # plain DNS over UDP: truncate
                    r = DNSRecord.parse(out)
                    r.rr = []
                    r.header.tc = 1
                    out = r.pack()
                self.t.sendto(out, addr)

        self.udp, _ = await loop.create_datagram_endpoint(P, local_addr=(self.ip, self.port))

        async def serve(reader, writer):
            try:
                while True:
                    (n,) = struct.unpack("!H", await reader.readexactly(2))
                    out = up.answer(await reader.readexactly(n))
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.tcp = await asyncio.start_server(serve, self.ip, self.port)

    async def stop(self):
        self.udp.close()
        self.tcp.close()
        await self.tcp.wait_closed()




async def dig(server: str, port: int, name: str, qtype: str = "A", *opts: str) -> str:
    p = await asyncio.create_subprocess_exec(
        "dig", f"@{server}", "-p", str(port), name, qtype, "+tries=1", "+time=5", *opts,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await p.communicate()
    return out.decode()


def short(out_: str) -> list[str]:
    return sorted(line for line in out_.splitlines() if line and not line.startswith(";"))


async def with_server(objs, fn, *, upstreams=(), ip="127.53.0.1", **kw):
    inf = StaticInformers(worked_example() if objs is None else objs)
    port = free_port(ip)
    srv = DNSServer(inf, listen_ip=ip, port=port, upstreams=list(upstreams), **kw)
    await srv.start()
    try:
        return await fn(srv, ip, port, inf)
    finally:
        await srv.stop()


def test_dig_udp_and_tcp():
    async def fn(srv, ip, port, inf):
        for tcp in ("+notcp", "+tcp"):
            out = await dig(ip, port, "web.default.svc.cluster.local", "A", tcp, "+short")
            assert short(out) == ["10.96.0.20"], out
            out = await dig(ip, port, "_web._tcp.nginx.default.svc.cluster.local", "SRV", tcp,
                            "+short")
            assert short(out) == ["0 50 80 web-0.nginx.default.svc.cluster.local.",
                                  "0 50 80 web-1.nginx.default.svc.cluster.local."], out
            out = await dig(ip, port, "-x", "10.96.0.20", tcp, "+short")
            assert short(out) == ["web.default.svc.cluster.local."], out
            out = await dig(ip, port, "nope.default.svc.cluster.local", "A", tcp)
            assert "status: NXDOMAIN" in out and "flags: qr aa rd ra" in out, out
            assert "ns.dns.cluster.local. hostmaster.cluster.local." in out, out
            out = await dig(ip, port, "web.default.svc.cluster.local", "AAAA", tcp)
            assert "status: NOERROR" in out and "ANSWER: 0" in out, out
            out = await dig(ip, port, "dns-version.cluster.local", "TXT", tcp, "+short")
            assert short(out) == ['"1.1.0"'], out
    run(with_server(None, fn))


def test_dig_tc_then_tcp_for_many_endpoints():
    eps = [(f"10.244.{i // 200}.{i % 200 + 1}", True, None) for i in range(300)]
    objs = [namespace("default"),
            service("many", cluster_ip="None", ports=[("web", 80, "TCP")]),
            endpoint_slice("many", ports=[("web", 80, "TCP")], endpoints=eps)]

    async def fn(srv, ip, port, inf):
        out = await dig(ip, port, "many.default.svc.cluster.local", "A", "+ignore")
        assert "flags: qr aa tc rd ra" in out, out
        out = await dig(ip, port, "many.default.svc.cluster.local", "A", "+ignore", "+noedns")
        assert "flags: qr aa tc rd ra" in out, out
        # dig (like every resolver) retries over TCP on TC and gets all 300
        out = await dig(ip, port, "many.default.svc.cluster.local", "A")
        assert "Truncated, retrying in TCP mode" in out and "ANSWER: 300" in out, out
        assert len(short(await dig(ip, port, "many.default.svc.cluster.local", "A",
                                   "+short"))) == 300
    run(with_server(objs, fn))


def test_forwarding_to_upstream_and_external_name_target():
    async def fn_outer():
        up = FakeUpstream("127.53.0.2", free_port("127.53.0.2"), big_txt=40)
        await up.start()
        try:
            async def fn(srv, ip, port, inf):
                out = await dig(ip, port, "www.example.com", "A", "+short")
                assert short(out) == ["93.184.216.34"], out
                out = await dig(ip, port, "nothere.example.com", "A")
                assert "status: NXDOMAIN" in out, out
                # ExternalName: the CNAME, then the target's A from the upstream
                out = await dig(ip, port, "ext.default.svc.cluster.local", "A")
                ans = [ln.split() for ln in out.split("ANSWER SECTION:")[1].split("\n\n")[0]
                       .strip().splitlines()]
                assert [(a[0], a[3], a[4]) for a in ans] == [
                    ("ext.default.svc.cluster.local.", "CNAME", "www.example.com."),
                    ("www.example.com.", "A", "93.184.216.34")], out
                # upstream answer truncated over UDP: fetched again over TCP, then truncated
                # for our UDP client as needed, complete over TCP
                out = await dig(ip, port, "big.example.com", "TXT", "+tcp")
                assert "ANSWER: 40" in out, out
                out = await dig(ip, port, "big.example.com", "TXT", "+ignore", "+noedns")
                assert "flags: qr tc" in out or " tc " in out, out
                out = await dig(ip, port, "big.example.com", "TXT")
                assert "ANSWER: 40" in out, out
                assert ("big.example.com.", "TXT") in up.asked
                # cached: asked once more does not reach the upstream (the cache key is the
                # query after its ID: no random EDNS cookie, as stub resolvers send)
                await dig(ip, port, "www.example.com", "A", "+short", "+nocookie")
                n = len(up.asked)
                out = await dig(ip, port, "www.example.com", "A", "+short", "+nocookie")
                assert short(out) == ["93.184.216.34"] and len(up.asked) == n
            await with_server(None, fn, upstreams=["127.53.0.99:9", f"127.53.0.2:{up.port}"])
        finally:
            await up.stop()
    run(fn_outer())


def test_servfail_quickly_when_upstreams_are_dead():
    async def fn_outer():
        # one upstream refusing (nothing bound), one black hole (bound, never answers)
        hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        hole.bind(("127.53.0.3", 0))
        try:
            async def fn(srv, ip, port, inf):
                t = time.monotonic()
                out = await dig(ip, port, "www.example.com", "A")
                took = time.monotonic() - t
                assert "status: SERVFAIL" in out, out
                assert took < 3.0, took
                # the cluster zone does not depend on the upstreams
                out = await dig(ip, port, "web.default.svc.cluster.local", "A", "+short")
                assert short(out) == ["10.96.0.20"]
            await with_server(None, fn, upstreams=["127.53.0.98:9",
                                                   f"127.53.0.3:{hole.getsockname()[1]}"])
            # no upstream at all
            async def fn2(srv, ip, port, inf):
                out = await dig(ip, port, "www.example.com", "A")
                assert "status: SERVFAIL" in out, out
            await with_server(None, fn2)
        finally:
            hole.close()
    run(fn_outer())


def test_two_servers_share_the_address():
    """Several workers' proxies bind the same DNS IP:port (SO_REUSEPORT)."""
    async def fn():
        ip = "127.53.0.4"
        port = free_port(ip)
        a = DNSServer(StaticInformers(worked_example()), listen_ip=ip, port=port, upstreams=[])
        b = DNSServer(StaticInformers(worked_example()), listen_ip=ip, port=port, upstreams=[])
        await a.start()
        await b.start()
        try:
            for _ in range(3):
                out = await dig(ip, port, "web.default.svc.cluster.local", "A", "+short")
                assert short(out) == ["10.96.0.20"]
        finally:
            await a.stop()
            await b.stop()
    run(fn())


def test_servfail_before_sync_then_answers():
    async def fn():
        inf = StaticInformers(worked_example(), synced=False)
        ip = "127.53.0.5"
        port = free_port(ip)
        srv = DNSServer(inf, listen_ip=ip, port=port, upstreams=[])
        await srv.start()
        try:
            assert not srv.ready
            out = await dig(ip, port, "web.default.svc.cluster.local", "A")
            assert "status: SERVFAIL" in out, out
            inf.set_synced()
            assert srv.ready
            out = await dig(ip, port, "web.default.svc.cluster.local", "A", "+short")
            assert short(out) == ["10.96.0.20"]
        finally:
            await srv.stop()
    run(fn())


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root for a private mount namespace")
def test_search_list_short_names(tmp_path):
    """dns-spec.md: `web` from a pod in default, `web.default` from any pod (the pod's
    resolv.conf search list, ndots:5), resolved by dig +search with that resolv.conf."""
    async def fn(srv, ip, port, inf):
        for ns, name in (("default", "web"), ("default", "web.default"),
                         ("other", "web.default"), ("other", "web.default.svc")):
            conf = tmp_path / f"resolv-{ns}.conf"
            conf.write_text(f"nameserver {ip}\nsearch {ns}.svc.cluster.local svc.cluster.local "
                            "cluster.local\noptions ndots:5\n")
            p = await asyncio.create_subprocess_exec(
                "unshare", "-m", "sh", "-c",
                f"mount --bind {conf} /etc/resolv.conf && exec dig @{ip} -p {port} +search "
                f"+short +tries=1 +time=3 {name}", stdout=subprocess.PIPE)
            out, _ = await p.communicate()
            assert out.decode().split() == ["10.96.0.20"], (ns, name, out)
    run(with_server(None, fn))


def test_forwarder_alone():
    from proxy.dns.forward import Forwarder

    async def fn():
        up = FakeUpstream("127.53.0.6", free_port("127.53.0.6"), big_txt=30)
        await up.start()
        try:
            fw = Forwarder(["127.53.0.97:9", f"127.53.0.6:{up.port}"], timeout=2.0)
            q = bytes(DNSRecord.question("www.example.com").pack())
            r = DNSRecord.parse(await fw.query(q))
            assert r.header.id == DNSRecord.parse(q).header.id
            assert [str(rr.rdata) for rr in r.rr] == ["93.184.216.34"]
            # truncated over UDP -> the same upstream over TCP
            r = DNSRecord.parse(await fw.query(bytes(DNSRecord.question("big.example.com",
                                                                        "TXT").pack())))
            assert not r.header.tc and len(r.rr) == 30
            # never to ourselves
            assert Forwarder(["127.53.0.6:53"], exclude={("127.53.0.6", 53)}).upstreams == []
            t = time.monotonic()
            assert await Forwarder(["127.53.0.97:9"], timeout=1.0).query(q) is None
            assert time.monotonic() - t < 1.5
        finally:
            await up.stop()
    run(fn())
