"""proxy.servicetable / proxy.endpoints: desired listeners and endpoint choice, no sockets."""

from __future__ import annotations

from proxy.endpoints import ServiceEndpoints, from_endpoints, merge_slices, ready_backends
from proxy.servicetable import Balancer, ListenerKey, build_table, cluster_ips

NODE, NODE_IP = "worker-1", "127.30.0.101"


def svc(name="web", ns="default", type_="ClusterIP", cluster_ip="127.96.0.50", ports=None,
        **spec):
    s = {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                      "creationTimestamp": "2026-01-01T00:00:00Z"},
         "spec": {"type": type_, "clusterIP": cluster_ip,
                  "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP",
                                      "targetPort": 8080}], **spec}}
    return s


def eps(*specs, ports=(("http", 8080, "TCP"),), name="web-abc", svc_name="web"):
    """specs: (ip, ready, node[, serving, terminating])"""
    out = []
    for sp in specs:
        ip, ready, node = sp[:3]
        serving = sp[3] if len(sp) > 3 else ready
        term = sp[4] if len(sp) > 4 else False
        out.append({"addresses": [ip], "nodeName": node,
                    "conditions": {"ready": ready, "serving": serving, "terminating": term}})
    return {"metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc_name}},
            "addressType": "IPv4", "endpoints": out,
            "ports": [{"name": n, "port": p, "protocol": pr} for n, p, pr in ports]}


def table(services, slices_by_svc, held=()):
    def lookup(ns, name):
        return merge_slices(slices_by_svc.get(name, []))
    return build_table(services, lookup, node_name=NODE, node_ip=NODE_IP, held_ips=held)


def test_merge_dedups_by_ip_and_keeps_port_groups():
    a = eps(("127.244.1.2", True, NODE), name="a")
    b = eps(("127.244.1.2", False, NODE), ("127.244.2.2", True, "worker-2"),
            ports=(("http", 9090, "TCP"),), name="b")
    se = merge_slices([a, b])
    assert [e.ip for e in se.endpoints] == ["127.244.1.2", "127.244.2.2"]
    assert se.endpoints[0].ready  # ready copy wins
    assert set(ready_backends(se, "http")) == {("127.244.1.2", 8080), ("127.244.2.2", 9090)}


def test_ready_backends_policies():
    se = merge_slices([eps(("10.0.0.1", True, NODE), ("10.0.0.2", False, NODE),
                           ("10.0.0.3", True, "worker-2"))])
    assert ready_backends(se, "http") == [("10.0.0.1", 8080), ("10.0.0.3", 8080)]
    assert ready_backends(se, "http", publish_not_ready=True) == \
        [("10.0.0.1", 8080), ("10.0.0.2", 8080), ("10.0.0.3", 8080)]
    assert ready_backends(se, "http", node_name=NODE) == [("10.0.0.1", 8080)]
    assert ready_backends(se, "other") == []
    term = merge_slices([eps(("10.0.0.9", False, NODE, True, True))])
    assert ready_backends(term, "http") == []
    assert ready_backends(term, "http", fallback_terminating=True) == [("10.0.0.9", 8080)]


def test_from_endpoints_object():
    ep = {"metadata": {"name": "ext", "namespace": "default"},
          "subsets": [{"addresses": [{"ip": "10.1.0.1"}], "notReadyAddresses": [{"ip": "10.1.0.2"}],
                       "ports": [{"port": 5000, "protocol": "TCP"}]}]}
    se = from_endpoints(ep)
    assert ready_backends(se, "") == [("10.1.0.1", 5000)]
    assert len(se.endpoints) == 2


def test_clusterip_listener_and_not_ready_excluded():
    t = table([svc()], {"web": [eps(("127.244.1.2", True, NODE), ("127.244.2.2", False, "w2"))]})
    key = ListenerKey("127.96.0.50", 80, "TCP")
    assert list(t) == [key]
    p = t[key]
    assert p.backends == (("127.244.1.2", 8080),)
    assert ("127.244.2.2", 8080) in p.known and p.shared and p.scope == "clusterIP"
    assert cluster_ips(t) == {"127.96.0.50"}


def test_headless_and_externalname_skipped():
    t = table([svc(cluster_ip="None"), svc("ext", type_="ExternalName", cluster_ip=None,
                                           externalName="example.com")], {})
    assert t == {}


def test_nodeport_lb_and_traffic_policies():
    ports = [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
             {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]
    s = svc(type_="LoadBalancer", ports=ports, externalTrafficPolicy="Local",
            externalIPs=["127.50.0.1"])
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "127.30.0.200"}]}}
    sl = eps(("127.244.1.2", True, NODE), ("127.244.2.2", True, "worker-2"),
             ports=(("http", 8080, "TCP"), ("dns", 5353, "UDP")))
    t = table([s], {"web": [sl]})
    assert ListenerKey("127.30.0.200", 80, "TCP") not in t  # not held by this worker
    t = table([s], {"web": [sl]}, held={"127.30.0.200"})
    both = (("127.244.1.2", 8080), ("127.244.2.2", 8080))
    local = (("127.244.1.2", 8080),)
    assert t[ListenerKey("127.96.0.50", 80)].backends == both
    assert t[ListenerKey(NODE_IP, 30080)].backends == local
    assert not t[ListenerKey(NODE_IP, 30080)].shared
    assert t[ListenerKey("127.30.0.200", 80)].backends == local
    assert t[ListenerKey("127.50.0.1", 80)].backends == local
    assert t[ListenerKey(NODE_IP, 30053, "UDP")].backends == (("127.244.1.2", 5353),)
    s["spec"]["internalTrafficPolicy"] = "Local"
    s["spec"]["externalTrafficPolicy"] = "Cluster"
    t = table([s], {"web": [sl]}, held={"127.30.0.200"})
    assert t[ListenerKey("127.96.0.50", 80)].backends == local
    assert t[ListenerKey(NODE_IP, 30080)].backends == both


def test_affinity_timeout_from_spec():
    s = svc(sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    t = table([s], {})
    assert t[ListenerKey("127.96.0.50", 80)].affinity_timeout == 60.0
    assert t[ListenerKey("127.96.0.50", 80)].backends == ()
    s2 = svc(sessionAffinity="ClientIP")
    assert table([s2], {})[ListenerKey("127.96.0.50", 80)].affinity_timeout == 10800.0


def test_balancer_round_robin_and_refused_skip():
    b = Balancer((("a", 1), ("b", 1), ("c", 1)))
    firsts = [b.candidates("x")[0] for _ in range(6)]
    assert firsts == [("a", 1), ("b", 1), ("c", 1)] * 2
    order = b.candidates("x")
    assert order == [("a", 1), ("b", 1), ("c", 1)]
    b.update((("b", 1), ("c", 1)), None)
    assert b.candidates("x")[0] in (("b", 1), ("c", 1))
    assert Balancer(()).candidates("x") == []


def test_balancer_affinity_with_timeout():
    now = [0.0]
    b = Balancer((("a", 1), ("b", 1), ("c", 1)), affinity_timeout=10, clock=lambda: now[0])
    first = b.candidates("1.1.1.1")[0]
    b.connected("1.1.1.1", first)
    for _ in range(15):
        c = b.candidates("1.1.1.1")[0]
        assert c == first
        b.connected("1.1.1.1", c)
    # different clients spread over the endpoints, the same way on every worker
    picks = {Balancer(b.backends, 10).candidates(f"10.0.0.{i}")[0] for i in range(30)}
    assert len(picks) == 3
    assert Balancer(b.backends, 10).candidates("1.1.1.1")[0] == first
    now[0] += 11  # expired: the record is dropped
    b.candidates("1.1.1.1")
    assert "1.1.1.1" not in b._affinity
    # affinity to a removed endpoint is forgotten
    b.connected("3.3.3.3", ("a", 1))
    b.update((("b", 1), ("c", 1)), 10)
    assert b.candidates("3.3.3.3")[0] != ("a", 1)
    b.update((("b", 1), ("c", 1)), None)
    assert b._affinity == {}


def test_empty_service_endpoints_is_falsy():
    assert not ServiceEndpoints()


def test_lb_holder_wanted_ips_and_lease_names():
    from proxy.lbholder import lease_name, wanted_ips
    lb = svc(type_="LoadBalancer")
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "127.30.0.200"}, {"hostname": "x"}]}}
    other = svc("other", type_="LoadBalancer")
    other["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    plain = svc("plain")
    plain["status"] = {"loadBalancer": {"ingress": [{"ip": "127.30.0.201"}]}}
    assert wanted_ips([lb, other, plain]) == {"127.30.0.200", "192.0.2.1"}
    assert wanted_ips([lb, other], pool={"127.30.0.200"}) == {"127.30.0.200"}
    assert lease_name("127.30.0.200") == "lb-127.30.0.200"
    assert lease_name("FD00::1") == "lb-fd00--1"
