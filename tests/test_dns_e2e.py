"""Cluster DNS end to end: a real API server (`kube` fixture), Services and EndpointSlices
made with kubectl, the DNS server as its own process (`python -m proxy.dns`) watching the
API, and dig over UDP and TCP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from proxy.dns.static import free_port
from tests.conftest import ROOT, wait_for

DNS_IP = "127.53.1.1"




class DNSProcess:
    def __init__(self, kube, tmp_path, ip: str = DNS_IP) -> None:
        self.ip = ip
        self.port = free_port(ip)
        token = tmp_path / "token"
        token.write_text(kube.token)
        self.log = open(tmp_path / "dns.log", "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.dns", "--server", kube.grpc_target, "--token-file",
             str(token), "--listen", ip, "--port", str(self.port), "--upstream",
             "127.53.1.99:9", "--upstream-timeout", "1", "--log-level", "debug"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, start_new_session=True)
        line = self.proc.stdout.readline().decode().strip()
        assert line == "READY", f"dns server did not start: {line!r}\n" + \
            (tmp_path / "dns.log").read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def dig(self, name: str, qtype: str = "A", *opts: str) -> str:
        p = subprocess.run(["dig", f"@{self.ip}", "-p", str(self.port), name, qtype,
                            "+tries=1", "+time=3", *opts], capture_output=True, text=True, check=False,
                           timeout=15)
        return p.stdout

    def short(self, name: str, qtype: str = "A", *opts: str) -> list[str]:
        return sorted(ln for ln in self.dig(name, qtype, "+short", *opts).splitlines()
                      if ln and not ln.startswith(";"))

    def status(self, name: str, qtype: str = "A", *opts: str) -> str:
        out = self.dig(name, qtype, *opts)
        for ln in out.splitlines():
            if "status:" in ln:
                return ln.split("status:")[1].split(",")[0].strip()
        return "?"


@pytest.fixture(scope="module")
def dns(kube, tmp_path_factory):
    d = DNSProcess(kube, tmp_path_factory.mktemp("dns"))
    try:
        yield d
    finally:
        d.stop()


def apply(kube, *objs: dict) -> None:
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                        "items": list(objs)}))


def svc(name: str, ns: str = "default", **spec) -> dict:
    spec.setdefault("ports", [{"name": "http", "port": 80, "protocol": "TCP"}])
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def slice_(svc_name: str, endpoints: list[tuple[str, bool, str | None]], ns: str = "default",
           port_name: str = "web", port: int = 80) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{svc_name}-x1", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc_name}},
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready},
                           **({"hostname": h} if h else {})} for ip, ready, h in endpoints]}


def cluster_ip(kube, name: str, ns: str = "default") -> str:
    out = kube.kubectl("get", "svc", name, "-n", ns, "-o", "jsonpath={.spec.clusterIP}")
    return out.stdout.strip()


def test_service_records_over_udp_and_tcp(kube, dns):
    apply(kube, svc("web", ports=[{"name": "http", "port": 80, "protocol": "TCP"},
                                  {"name": "alt", "port": 8080, "protocol": "TCP"}]))
    ip = cluster_ip(kube, "web")
    assert ip
    for mode in ("+notcp", "+tcp"):
        assert wait_for(lambda m=mode: dns.short("web.default.svc.cluster.local", "A", m)
                        == [ip], 10, 0.1, "web A")
        assert dns.status("web.default.svc.cluster.local", "AAAA", mode) == "NOERROR"
        assert dns.short("web.default.svc.cluster.local", "AAAA", mode) == []
        assert dns.short("_http._tcp.web.default.svc.cluster.local", "SRV", mode) == [
            "0 100 80 web.default.svc.cluster.local."]
        assert dns.short("web.default.svc.cluster.local", "SRV", mode) == [
            "0 50 80 web.default.svc.cluster.local.", "0 50 8080 web.default.svc.cluster.local."]
        assert dns.status("_https._tcp.web.default.svc.cluster.local", "SRV", mode) == "NXDOMAIN"
        assert dns.short("-x", ip, mode) == ["web.default.svc.cluster.local."]
        assert dns.status("nosuch.default.svc.cluster.local", "A", mode) == "NXDOMAIN"
        assert dns.status("default.svc.cluster.local", "A", mode) == "NOERROR"
        assert dns.short("dns-version.cluster.local", "TXT", mode) == ['"1.1.0"']


def test_headless_statefulset_names(kube, dns):
    apply(kube, svc("nginx", clusterIP="None", ports=[{"name": "web", "port": 80}]),
          slice_("nginx", [("127.244.1.5", True, "web-0"), ("127.244.2.6", True, "web-1"),
                           ("127.244.3.7", False, "web-2")]))
    assert wait_for(lambda: dns.short("nginx.default.svc.cluster.local")
                    == ["127.244.1.5", "127.244.2.6"], 10, 0.1, "headless A")
    assert dns.short("web-0.nginx.default.svc.cluster.local") == ["127.244.1.5"]
    assert dns.status("web-2.nginx.default.svc.cluster.local") == "NXDOMAIN"
    assert dns.short("_web._tcp.nginx.default.svc.cluster.local", "SRV", "+tcp") == [
        "0 50 80 web-0.nginx.default.svc.cluster.local.",
        "0 50 80 web-1.nginx.default.svc.cluster.local."]
    assert dns.short("-x", "127.244.1.5") == ["web-0.nginx.default.svc.cluster.local."]
    # web-2 becomes ready: the name appears within a watch event
    apply(kube, slice_("nginx", [("127.244.1.5", True, "web-0"), ("127.244.2.6", True, "web-1"),
                                 ("127.244.3.7", True, "web-2")]))
    assert wait_for(lambda: dns.short("web-2.nginx.default.svc.cluster.local")
                    == ["127.244.3.7"], 10, 0.1, "web-2 ready")
    # no ready endpoint left: NXDOMAIN for the service name
    apply(kube, slice_("nginx", [("127.244.1.5", False, "web-0")]))
    assert wait_for(lambda: dns.status("nginx.default.svc.cluster.local") == "NXDOMAIN",
                    10, 0.1, "headless without ready endpoints")
    apply(kube, svc("empty", clusterIP="None", ports=[{"name": "web", "port": 80}]))
    assert wait_for(lambda: dns.status("empty.default.svc.cluster.local") == "NXDOMAIN"
                    and dns.status("empty.default.svc.cluster.local", "TXT") == "NXDOMAIN",
                    10, 0.1, "empty headless")


def test_many_endpoints_truncate_then_tcp(kube, dns):
    eps = [(f"127.244.{5 + i // 200}.{i % 200 + 2}", True, None) for i in range(120)]
    apply(kube, svc("wide", clusterIP="None", ports=[{"name": "web", "port": 80}]),
          slice_("wide", eps))
    assert wait_for(lambda: len(dns.short("wide.default.svc.cluster.local")) == 120,
                    15, 0.2, "120 endpoints")
    out = dns.dig("wide.default.svc.cluster.local", "A", "+ignore")
    assert " tc " in out.split("flags:")[1].split(";")[0] + " ", out
    out = dns.dig("wide.default.svc.cluster.local", "A")
    assert "Truncated, retrying in TCP mode" in out and "ANSWER: 120" in out


def test_external_name_follows_changes(kube, dns):
    apply(kube, svc("ext", type="ExternalName", externalName="foo.example.com", ports=[]))
    assert wait_for(lambda: dns.short("ext.default.svc.cluster.local", "CNAME")
                    == ["foo.example.com."], 10, 0.1, "ExternalName CNAME")
    out = dns.dig("ext.default.svc.cluster.local", "A")
    assert "CNAME\tfoo.example.com." in out and "status: NOERROR" in out  # upstream dead
    assert dns.status("x.ext.default.svc.cluster.local") == "NXDOMAIN"
    kube.kubectl("patch", "svc", "ext", "--type=merge", "-p",
                 json.dumps({"spec": {"externalName": "bar.example.com"}}))
    assert wait_for(lambda: dns.short("ext.default.svc.cluster.local", "CNAME")
                    == ["bar.example.com."], 10, 0.1, "changed ExternalName")
    # switched to a ClusterIP Service (the conformance test does this)
    kube.kubectl("patch", "svc", "ext", "--type=merge", "-p", json.dumps(
        {"spec": {"type": "ClusterIP", "externalName": None,
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}))
    ip = wait_for(lambda: cluster_ip(kube, "ext"), 10, 0.1, "clusterIP allocated")
    assert wait_for(lambda: dns.short("ext.default.svc.cluster.local") == [ip], 10, 0.1,
                    "ExternalName -> ClusterIP")


def test_namespaces_and_deletion(kube, dns, tmp_path):
    kube.kubectl("create", "namespace", "dns-e2e")
    assert wait_for(lambda: dns.status("dns-e2e.svc.cluster.local") == "NOERROR", 10, 0.1,
                    "new namespace NODATA")
    assert dns.status("nosuchns.svc.cluster.local") == "NXDOMAIN"
    apply(kube, svc("redis", "dns-e2e", ports=[{"name": "redis", "port": 6379}]))
    ip = cluster_ip(kube, "redis", "dns-e2e")
    assert wait_for(lambda: dns.short("redis.dns-e2e.svc.cluster.local") == [ip], 10, 0.1,
                    "redis A")
    assert dns.short("Redis.DNS-E2E.svc.Cluster.Local") == [ip]  # case-insensitive
    assert dns.short("10-244-1-5.dns-e2e.pod.cluster.local") == ["10.244.1.5"]
    # the search list a pod in dns-e2e gets (resolv.conf bind-mounted in a private mount
    # namespace) makes the short names resolve
    if os.geteuid() == 0 and shutil.which("unshare"):
        conf = tmp_path / "resolv.conf"
        conf.write_text(f"nameserver {dns.ip}\nsearch dns-e2e.svc.cluster.local "
                        "svc.cluster.local cluster.local\noptions ndots:5\n")
        for name in ("redis", "redis.dns-e2e", "redis.dns-e2e.svc"):
            out = subprocess.run(
                ["unshare", "-m", "sh", "-c",
                 (f"mount --bind {conf} /etc/resolv.conf && exec dig @{dns.ip} -p {dns.port} "
                  f"+search +short +tries=1 +time=3 {name}")],
                capture_output=True, text=True, timeout=15, check=False).stdout
            assert out.split() == [ip], (name, out)
    t = time.monotonic()
    kube.kubectl("delete", "svc", "redis", "-n", "dns-e2e")
    assert wait_for(lambda: dns.status("redis.dns-e2e.svc.cluster.local") == "NXDOMAIN",
                    10, 0.1, "deleted service")
    assert time.monotonic() - t < 10
    assert dns.short("-x", ip) == [] or dns.status("-x", ip) != "NOERROR"


def test_proxy_process_serves_cluster_dns(kube, tmp_path):
    """`python -m proxy` (the worker's proxy) runs this DNS server on --cluster-dns."""
    apply(kube, svc("viaproxy", ports=[{"name": "http", "port": 80}]))
    ip = cluster_ip(kube, "viaproxy")
    dns_ip = "127.53.2.10"
    port = free_port(dns_ip)
    token = tmp_path / "token"
    token.write_text(kube.token)
    log = open(tmp_path / "proxy.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--node-name", "dns-e2e-worker", "--node-ip",
         "127.53.2.100", "--network", "loopback", "--cluster-dns", dns_ip, "--dns-port",
         str(port), "--no-ingress", "--healthz-port", str(free_port("127.53.2.100")),
         "--lb-pool", "127.53.2.200-127.53.2.201", "--server", kube.grpc_target,
         "--token-file", str(token)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answer():
            p = subprocess.run(["dig", f"@{dns_ip}", "-p", str(port), "+short", "+tries=1",
                                "+time=1", "viaproxy.default.svc.cluster.local"],
                               capture_output=True, text=True, timeout=10, check=False)
            return p.stdout.split() == [ip]
        wait_for(answer, 20, 0.2, "the proxy's cluster DNS to answer")
        out = subprocess.run(["dig", f"@{dns_ip}", "-p", str(port), "+tcp", "+short",
                              "_http._tcp.viaproxy.default.svc.cluster.local", "SRV"],
                             capture_output=True, text=True, timeout=10, check=False).stdout
        assert out.split() == ["0", "100", "80", "viaproxy.default.svc.cluster.local."]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
