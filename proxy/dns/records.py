"""Cluster DNS records: the Kubernetes DNS-Based Service Discovery schema (1.1.0) as CoreDNS's
kubernetes plugin serves it, answered from a read-only view of Services, EndpointSlices and
Namespaces. Pure: no sockets, no asyncio. `RecordLookup.lookup(qname, qtype)` returns a
`Result` (rcode, sections, and optionally a CNAME target the caller must chase upstream), or
None when the name is not ours (outside the zone, or a reverse name we have no record for)
and must be forwarded.

Shapes follow CoreDNS (plugin/kubernetes, plugin/backend_lookup.go):
- NXDOMAIN / NODATA carry the zone's SOA in the authority section, `ns.dns.<zone>.
  hostmaster.<zone>. <serial> 7200 1800 86400 <ttl>`, TTL min(ttl, 300);
- every answer in the zone is authoritative, TTL 5 (the dns-version TXT 28800);
- `<endpoint>.<svc>.<ns>.svc` looks at the endpoints of any Service, the bare name of a
  headless Service answers its ready endpoints, of a ClusterIP Service its ClusterIP(s);
- SRV weights are floor(100 / number of records), priority 0, targets' addresses in the
  additional section; ExternalName Services answer a CNAME (chased by the caller).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A, DNSLabel

DNS_SCHEMA_VERSION = "1.1.0"
SCHEMA_TTL = 28800
REVERSE_V4 = "in-addr.arpa"
REVERSE_V6 = "ip6.arpa"


@dataclass(frozen=True)
class EndpointAddr:
    """One endpoint address of a Service with the port group its EndpointSlice carries."""
    ip: str
    ready: bool
    hostname: str | None
    ports: tuple[tuple[str, int, str], ...]  # (name, port, protocol)


class ClusterView(Protocol):
    """What the lookup reads; proxy.dns.source.ClusterCache implements it over informers."""

    def namespace_exists(self, namespace: str) -> bool: ...
    def service(self, namespace: str, name: str) -> dict | None: ...
    def services_by_ip(self, ip: str) -> list[dict]: ...
    def endpoints(self, namespace: str, name: str) -> list[EndpointAddr]: ...
    def endpoints_by_ip(self, ip: str) -> list[tuple[str, str, EndpointAddr]]: ...
    @property
    def serial(self) -> int: ...


@dataclass
class Result:
    rcode: int = RCODE.NOERROR
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    authoritative: bool = True
    # (cname target, qtype): the caller resolves the target through the upstreams and appends
    # the answers (ExternalName Services pointing outside the zone)
    chase: tuple[str, int] | None = None
    refused: bool = False


class _NX(Exception):
    """The name does not exist (CoreDNS's errNoItems / errInvalidRequest)."""


@dataclass(frozen=True)
class _Item:
    """A CoreDNS msg.Service: an address (with port), or a CNAME target."""
    host: str
    port: int = -1
    cname: bool = False
    # the name SRV records point at, relative to the zone (svc.ns.svc or host.svc.ns.svc)
    target: str = ""


@dataclass(frozen=True)
class _Request:
    port: str = ""
    protocol: str = ""
    endpoint: str = ""
    service: str = ""
    namespace: str = ""
    pod_or_svc: str = ""


def endpoint_hostname(ep: EndpointAddr) -> str:
    """The endpoint's DNS label: its hostname, else the dashed IP (CoreDNS endpointHostname)."""
    if ep.hostname:
        return ep.hostname
    if "." in ep.ip:
        return ep.ip.replace(".", "-")
    h = ep.ip.replace(":", "-")
    return h + "0" if h.endswith("-") else h


def ip_from_reverse(name: str) -> str | None:
    """'5.1.244.10.in-addr.arpa' -> '10.244.1.5' (nibble form for ip6.arpa); None if not a
    complete reverse name."""
    n = name.rstrip(".").lower()
    if n.endswith("." + REVERSE_V4):
        parts = n[: -len(REVERSE_V4) - 1].split(".")
        if len(parts) != 4:
            return None
        try:
            return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        except ValueError:
            return None
    if n.endswith("." + REVERSE_V6):
        nib = n[: -len(REVERSE_V6) - 1].split(".")
        if len(nib) != 32 or any(len(x) != 1 for x in nib):
            return None
        h = "".join(reversed(nib))
        try:
            return str(ipaddress.IPv6Address(":".join(h[i:i + 4] for i in range(0, 32, 4))))
        except ValueError:
            return None
    return None


def _ip_version(s: str) -> int:
    try:
        return ipaddress.ip_address(s).version
    except ValueError:
        return 0


def _strip_underscore(s: str) -> str:
    return s.removeprefix("_")


def _is_headless(svc: dict) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def _cluster_ips(svc: dict) -> list[str]:
    spec = svc.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [ip for ip in ips if ip and ip != "None"]


class RecordLookup:
    """Answers for names in the cluster zone and the reverse zones."""

    def __init__(self, view: ClusterView, zone: str = "cluster.local", *, ttl: int = 5,
                 dns_ips: list[str] | None = None) -> None:
        self.view = view
        self.zone = zone.strip(".").lower()
        self.ttl = ttl
        self.dns_ips = list(dns_ips or [])

    # --- entry point -------------------------------------------------------------------------

    def in_zone(self, qname: str) -> bool:
        n = qname.rstrip(".").lower()
        return n == self.zone or n.endswith("." + self.zone)

    def lookup(self, qname: str, qtype: int) -> Result | None:
        """The answer for (qname, qtype), or None when the query must be forwarded."""
        name = qname.rstrip(".")
        lname = name.lower()
        if lname.endswith(("." + REVERSE_V4, "." + REVERSE_V6)):
            return self._reverse(qname, qtype)
        if not self.in_zone(lname):
            return None
        return self._zone_lookup(qname, qtype)

    # --- helpers building records ------------------------------------------------------------

    def soa(self) -> RR:
        z = self.zone + "."
        return RR(z, QTYPE.SOA, ttl=min(self.ttl, 300),
                  rdata=SOA(f"ns.dns.{z}", f"hostmaster.{z}",
                            (self.view.serial, 7200, 1800, 86400, self.ttl)))

    def _negative(self, rcode: int) -> Result:
        return Result(rcode=rcode, authority=[self.soa()])

    def _fqdn(self, rel: str) -> str:
        return f"{rel}.{self.zone}."

    def _addr_rr(self, name: str, ip: str) -> RR | None:
        v = _ip_version(ip)
        if v == 4:
            return RR(name, QTYPE.A, ttl=self.ttl, rdata=A(ip))
        if v == 6:
            return RR(name, QTYPE.AAAA, ttl=self.ttl, rdata=AAAA(ip))
        return None

    # --- the zone ----------------------------------------------------------------------------

    def _zone_lookup(self, qname: str, qtype: int, depth: int = 0) -> Result:
        lname = qname.rstrip(".").lower()
        if qtype in (QTYPE.AXFR, QTYPE.IXFR):
            return Result(rcode=RCODE.REFUSED, refused=True, authoritative=False)
        if lname == self.zone and qtype == QTYPE.SOA:
            return Result(answer=[self.soa()])
        if lname == self.zone and qtype == QTYPE.NS:
            res = Result(answer=[RR(qname, QTYPE.NS, ttl=self.ttl,
                                    rdata=NS(f"ns.dns.{self.zone}."))])
            for ip in self.dns_ips:
                rr = self._addr_rr(f"ns.dns.{self.zone}.", ip)
                if rr is not None:
                    res.additional.append(rr)
            return res
        if lname == f"ns.dns.{self.zone}":
            # CoreDNS answers its own name with the DNS Service address
            want = 4 if qtype == QTYPE.A else 6 if qtype == QTYPE.AAAA else 0
            return Result(answer=[rr for ip in self.dns_ips if _ip_version(ip) == want
                                  and (rr := self._addr_rr(qname, ip)) is not None]) \
                if want else Result(authority=[self.soa()])
        if qtype == QTYPE.TXT:
            rel = lname[: -len(self.zone)].rstrip(".")
            if rel == "dns-version":
                return Result(answer=[RR(qname, QTYPE.TXT, ttl=SCHEMA_TTL,
                                         rdata=TXT(DNS_SCHEMA_VERSION))])
        try:
            items = self._records(lname)
        except _NX:
            return self._negative(RCODE.NXDOMAIN)
        if qtype in (QTYPE.A, QTYPE.AAAA):
            return self._address(qname, qtype, items, depth)
        if qtype == QTYPE.SRV:
            return self._srv(qname, [i for i in items if not i.cname])
        if qtype == QTYPE.CNAME:
            ans = [RR(qname, QTYPE.CNAME, ttl=self.ttl, rdata=CNAME(_fq(i.host)))
                   for i in items if i.cname]
            return Result(answer=ans) if ans else self._negative(RCODE.NOERROR)
        # TXT (other than dns-version), PTR, MX, ... on an existing name: NODATA
        return self._negative(RCODE.NOERROR)

    def _address(self, qname: str, qtype: int, items: list[_Item], depth: int) -> Result:
        want = 4 if qtype == QTYPE.A else 6
        res = Result()
        seen: set[str] = set()
        for it in items:
            if it.cname:
                target = _fq(it.host)
                if target.rstrip(".").lower() == qname.rstrip(".").lower():
                    continue  # x CNAME x
                res.answer.append(RR(qname, QTYPE.CNAME, ttl=self.ttl, rdata=CNAME(target)))
                if self.in_zone(target) and depth < 8:
                    sub = self._zone_lookup(target, qtype, depth + 1)
                    res.answer.extend(sub.answer)
                    res.chase = sub.chase
                elif not self.in_zone(target):
                    res.chase = (target, qtype)
                continue
            if it.host in seen or _ip_version(it.host) != want:
                continue
            seen.add(it.host)
            rr = self._addr_rr(qname, it.host)
            if rr is not None:
                res.answer.append(rr)
        if not res.answer:
            return self._negative(RCODE.NOERROR)
        return res

    def _srv(self, qname: str, items: list[_Item]) -> Result:
        recs: list[tuple[str, int]] = []
        addrs: dict[str, list[str]] = {}
        for it in items:
            if it.port < 0:
                continue
            target = self._fqdn(it.target)
            if (target, it.port) in recs:
                continue
            recs.append((target, it.port))
            lst = addrs.setdefault(target, [])
            if it.host not in lst:
                lst.append(it.host)
        if not recs:
            return self._negative(RCODE.NOERROR)
        weight = max(1, 100 // len(recs))
        res = Result()
        for target, port in recs:
            res.answer.append(RR(qname, QTYPE.SRV, ttl=self.ttl,
                                 rdata=SRV(priority=0, weight=weight, port=port, target=target)))
        for target, ips in addrs.items():
            for ip in ips:
                rr = self._addr_rr(target, ip)
                if rr is not None:
                    res.additional.append(rr)
        return res

    # --- CoreDNS parseRequest + findServices / findPods ---------------------------------------

    def _parse(self, lname: str) -> _Request | None:
        """None: an apex-like name that exists without records (NODATA)."""
        base = lname[: -len(self.zone)].rstrip(".") if lname != self.zone else ""
        if base in ("", "svc", "pod"):
            return None
        segs = base.split(".")
        pod_or_svc = segs.pop()
        if pod_or_svc not in ("svc", "pod"):
            raise _NX
        namespace = segs.pop()
        if not segs:
            return _Request(namespace=namespace, pod_or_svc=pod_or_svc)
        service = segs.pop()
        if not segs:
            return _Request(service=service, namespace=namespace, pod_or_svc=pod_or_svc)
        if len(segs) == 1:
            return _Request(endpoint=segs[0], service=service, namespace=namespace,
                            pod_or_svc=pod_or_svc)
        if len(segs) == 2:
            return _Request(port=_strip_underscore(segs[0]), protocol=_strip_underscore(segs[1]),
                            service=service, namespace=namespace, pod_or_svc=pod_or_svc)
        raise _NX  # too many labels

    def _records(self, lname: str) -> list[_Item]:
        r = self._parse(lname)
        if r is None:
            return []
        if not self.view.namespace_exists(r.namespace):
            raise _NX
        if r.pod_or_svc == "pod":
            return self._pods(r)
        return self._services(r)

    def _pods(self, r: _Request) -> list[_Item]:
        if not r.service:
            return []
        if r.endpoint or r.port or r.protocol:
            raise _NX
        name = r.service
        if name.count("-") == 3 and "--" not in name:
            ip = name.replace("-", ".")
        else:
            ip = name.replace("-", ":")
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise _NX from None
        return [_Item(host=ip)]

    def _services(self, r: _Request) -> list[_Item]:
        if not r.service:
            return []
        svc = self.view.service(r.namespace, r.service)
        if svc is None:
            raise _NX
        spec = svc.get("spec") or {}
        base = f"{r.service}.{r.namespace}.svc"
        items: list[_Item] = []
        if spec.get("type") == "ExternalName":
            ext = (spec.get("externalName") or "").rstrip(".")
            if r.endpoint or r.port or r.protocol or not ext or _ip_version(ext):
                raise _NX
            return [_Item(host=ext, cname=True)]
        if _is_headless(svc) or r.endpoint:
            publish = bool(spec.get("publishNotReadyAddresses"))
            for ep in self.view.endpoints(r.namespace, r.service):
                if not (ep.ready or publish):
                    continue
                host = endpoint_hostname(ep)
                if r.endpoint and r.endpoint != host.lower():
                    continue
                ports = ep.ports or (("", -1, ""),)  # CoreDNS's sentinel for port-less slices
                for pname, port, proto in ports:
                    if _match_port(r, pname, proto):
                        items.append(_Item(host=ep.ip, port=port, target=f"{host}.{base}"))
        else:
            for p in spec.get("ports") or []:
                if not _match_port(r, p.get("name") or "", p.get("protocol") or "TCP"):
                    continue
                for ip in _cluster_ips(svc):
                    items.append(_Item(host=ip, port=int(p.get("port") or 0), target=base))
        if not items:
            raise _NX
        return items

    # --- reverse zones -----------------------------------------------------------------------

    def _reverse(self, qname: str, qtype: int) -> Result | None:
        if qtype != QTYPE.PTR:
            return None
        ip = ip_from_reverse(qname)
        if ip is None:
            return None
        names: list[str] = []
        for svc in self.view.services_by_ip(ip):
            md = svc.get("metadata") or {}
            names = [self._fqdn(f"{md.get('name')}.{md.get('namespace')}.svc")]
            break
        if not names:
            for ns, svc_name, ep in self.view.endpoints_by_ip(ip):
                svc = self.view.service(ns, svc_name)
                publish = bool(((svc or {}).get("spec") or {}).get("publishNotReadyAddresses"))
                if svc is None or not (ep.ready or publish):
                    continue
                n = self._fqdn(f"{endpoint_hostname(ep)}.{svc_name}.{ns}.svc")
                if n not in names:
                    names.append(n)
        if not names:
            return None  # fall through to the upstreams, as CoreDNS's `fallthrough in-addr.arpa`
        return Result(answer=[RR(qname, QTYPE.PTR, ttl=self.ttl, rdata=PTR(n)) for n in names])


def _match_port(r: _Request, name: str, protocol: str) -> bool:
    return ((not r.port or r.port == name.lower())
            and (not r.protocol or r.protocol == protocol.lower()))


def _fq(name: str) -> str:
    return name if name.endswith(".") else name + "."


__all__ = ["ClusterView", "DNSLabel", "EndpointAddr", "RecordLookup", "Result",
           "endpoint_hostname", "ip_from_reverse"]
