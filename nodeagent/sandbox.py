"""Pod sandboxes: the network (and, with the bridge driver, mount/UTS) context a pod's containers
share. `make_sandbox_driver(...)` picks the driver for `--network`:

- `loopback` (no privileges): the pod gets its own 127.244.N.x address (`POD_IP`, and
  `KUBELAB_BIND_IP` for the catalog apps); containers run in the node's namespaces. IPs are
  allocated persistently under `<root>/sandboxes/` so they survive an agent restart.
- `bridge`: `nodeagent.netns.BridgeDriver` — a network namespace per pod on the node's bridge.

The resolv.conf and hosts file contents follow the kubelet (pkg/kubelet/network/dns and
kubelet_pods.go managedHostsFileContent); both drivers use the helpers here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import shutil
import threading
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

MAX_NAMESERVERS = 3
MAX_SEARCH = 32


@dataclasses.dataclass
class Sandbox:
    ip: str
    netns_path: str | None
    hostname: str
    resolv_conf_path: str
    hosts_path: str
    bind_ip: str


class SandboxDriver:
    """What the pod worker needs of a network driver. setup() must be idempotent: called again
    for a pod that already has a sandbox (e.g. after an agent restart) it returns that one."""

    network = ""

    def setup(self, pod: dict) -> Sandbox:
        raise NotImplementedError

    def teardown(self, pod_uid: str) -> None:
        raise NotImplementedError

    def wrap(self, argv: list[str], sandbox: Sandbox, mounts: list[dict]) -> list[str]:
        """argv prefixed so that it runs inside the sandbox (netns, mounts); `mounts` are
        {"hostPath", "mountPath", "readOnly", "subPath"} of the container."""
        return argv

    def cleanup_all(self) -> None:
        raise NotImplementedError

    def known_pods(self) -> list[str]:
        """UIDs of the pods that have a sandbox (for reaping after a restart)."""
        return []


# --------------------------------------------------------------------------- file contents


def pod_hostname(pod: dict) -> str:
    spec = pod.get("spec", {})
    if spec.get("hostNetwork"):
        import socket
        return socket.gethostname()
    return (spec.get("hostname") or pod["metadata"]["name"])[:63]


def hosts_file(pod: dict, ip: str, cluster_domain: str = "cluster.local") -> str:
    """The kubelet's managed /etc/hosts."""
    spec = pod.get("spec", {})
    md = pod["metadata"]
    lines = ["# Kubernetes-managed hosts file.",
             "127.0.0.1\tlocalhost",
             "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet",
             "fe00::0\tip6-mcastprefix",
             "fe00::1\tip6-allnodes",
             "fe00::2\tip6-allrouters"]
    hostname = pod_hostname(pod)
    if spec.get("subdomain"):
        fqdn = f"{hostname}.{spec['subdomain']}.{md.get('namespace', 'default')}.svc." \
               f"{cluster_domain}"
        lines.append(f"{ip}\t{fqdn}\t{hostname}")
    else:
        lines.append(f"{ip}\t{hostname}")
    aliases = spec.get("hostAliases") or []
    if aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for a in aliases:
            lines.append(f"{a.get('ip', '')}\t" + "\t".join(a.get("hostnames") or []))
    return "\n".join(lines) + "\n"


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], list[str]]:
    ns, search, opts = [], [], []
    for line in text.splitlines():
        f = line.split("#", 1)[0].split()
        if not f:
            continue
        if f[0] == "nameserver" and len(f) > 1:
            ns.append(f[1])
        elif f[0] in ("search", "domain"):
            search = f[1:]
        elif f[0] == "options":
            opts.extend(f[1:])
    return ns, search, opts


def _merge_options(base: list[str], extra: list[dict]) -> list[str]:
    out: dict[str, str | None] = {}
    for o in base:
        k, _, v = o.partition(":")
        out[k] = v or None
    for o in extra:
        out[o.get("name", "")] = o.get("value")
    return [k if v is None else f"{k}:{v}" for k, v in out.items() if k]


def _dedup(xs: list[str]) -> list[str]:
    seen, out = set(), []
    for x in xs:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def resolv_conf(pod: dict, cluster_dns: str, cluster_domain: str = "cluster.local",
                host_resolv: str | None = None) -> tuple[str, list[str]]:
    """(/etc/resolv.conf content, warnings) for the pod's dnsPolicy, as the kubelet forms it."""
    spec = pod.get("spec", {})
    ns_name = pod["metadata"].get("namespace", "default")
    if host_resolv is None:
        try:
            host_resolv = Path("/etc/resolv.conf").read_text()
        except OSError:
            host_resolv = ""
    h_ns, h_search, h_opts = parse_resolv_conf(host_resolv)
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and cluster_dns:
        nameservers = [cluster_dns]
        search = [f"{ns_name}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain,
                  *h_search]
        opts = ["ndots:5"]
    elif policy == "None":
        nameservers, search, opts = [], [], []
    else:  # Default (or ClusterFirst without a cluster DNS)
        nameservers, search, opts = h_ns, list(h_search), list(h_opts)
    cfg = spec.get("dnsConfig") or {}
    nameservers = _dedup(nameservers + list(cfg.get("nameservers") or []))
    search = _dedup(search + list(cfg.get("searches") or []))
    opts = _merge_options(opts, list(cfg.get("options") or []))
    warnings = []
    if len(nameservers) > MAX_NAMESERVERS:
        warnings.append("Nameserver limits were exceeded, some nameservers have been omitted, "
                        "the applied nameserver line is: " + " ".join(nameservers[:3]))
        nameservers = nameservers[:MAX_NAMESERVERS]
    if len(search) > MAX_SEARCH or len(" ".join(search)) > 2048:
        while search and (len(search) > MAX_SEARCH or len(" ".join(search)) > 2048):
            search.pop()
        warnings.append("Search Line limits were exceeded, some search paths have been "
                        "omitted, the applied search line is: " + " ".join(search))
    lines = [f"nameserver {n}" for n in nameservers]
    if search:
        lines.append("search " + " ".join(search))
    if opts:
        lines.append("options " + " ".join(opts))
    return "\n".join(lines) + "\n", warnings


# --------------------------------------------------------------------------- loopback driver


class LoopbackDriver(SandboxDriver):
    """Every pod its own 127.244.N.x address; no namespaces, no privileges."""

    network = "loopback"

    def __init__(self, node_ip: str, pod_cidr: str, cluster_dns: str,
                 cluster_domain: str, root_dir: str):
        self.node_ip = node_ip
        self.net = ipaddress.ip_network(pod_cidr, strict=False)
        self.cluster_dns = cluster_dns
        self.cluster_domain = cluster_domain
        self.dir = Path(root_dir) / "sandboxes"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.warnings: dict[str, list[str]] = {}
        self._ips: dict[str, str] | None = None   # uid -> ip
        self._lock = threading.Lock()              # setup/teardown run in threads

    def _record(self, uid: str) -> Path:
        return self.dir / uid / "sandbox.json"

    def _used(self) -> set[str]:
        """The IPs of the recorded sandboxes (read from disk once, then kept in memory)."""
        if self._ips is None:
            ips: dict[str, str] = {}
            for p in self.dir.glob("*/sandbox.json"):
                try:
                    ips[p.parent.name] = json.loads(p.read_text())["ip"]
                except (OSError, ValueError, KeyError):
                    continue
            self._ips = ips
        return set(self._ips.values())

    def _allocate(self) -> str:
        """The next free address after the last one handed out (like CNI host-local), from
        a start that depends on the root dir: in loopback mode every cluster on the machine
        shares 127/8, and two test clusters' worker-1 should not hand out the same IPs."""
        used = self._used()
        hosts = [str(h) for h in self.net.hosts()][1:]  # .1 is the gateway in the bridge form
        if not hosts:
            raise RuntimeError(f"pod range {self.net} is too small")
        last_file = self.dir / "last_reserved_ip"
        try:
            start = (hosts.index(last_file.read_text().strip()) + 1) % len(hosts)
        except (OSError, ValueError):
            start = zlib.crc32(str(self.dir.resolve()).encode()) % len(hosts)
        for i in range(len(hosts)):
            ip = hosts[(start + i) % len(hosts)]
            if ip not in used:
                last_file.write_text(ip)
                return ip
        raise RuntimeError(f"pod range {self.net} is full")

    def setup(self, pod: dict) -> Sandbox:
        uid = pod["metadata"]["uid"]
        rec = self._record(uid)
        d = rec.parent
        ip = None
        if rec.exists():
            try:
                ip = json.loads(rec.read_text())["ip"]
            except (OSError, ValueError, KeyError):
                ip = None
        host_net = bool(pod.get("spec", {}).get("hostNetwork"))
        if ip is None:
            with self._lock:
                ip = self.node_ip if host_net else self._allocate()
                d.mkdir(parents=True, exist_ok=True)
                tmp = rec.with_suffix(".tmp")
                tmp.write_text(json.dumps({"ip": ip,
                                           "namespace": pod["metadata"].get("namespace"),
                                           "name": pod["metadata"]["name"]}))
                os.replace(tmp, rec)
                if self._ips is not None:
                    self._ips[uid] = ip
        resolv, warnings = resolv_conf(pod, self.cluster_dns, self.cluster_domain)
        self.warnings[uid] = warnings
        (d / "resolv.conf").write_text(resolv)
        if host_net:
            try:
                shutil.copyfile("/etc/hosts", d / "hosts")
            except OSError:
                (d / "hosts").write_text(hosts_file(pod, ip, self.cluster_domain))
        else:
            (d / "hosts").write_text(hosts_file(pod, ip, self.cluster_domain))
        return Sandbox(ip=ip, netns_path=None, hostname=pod_hostname(pod),
                       resolv_conf_path=str(d / "resolv.conf"), hosts_path=str(d / "hosts"),
                       bind_ip=ip)

    def teardown(self, pod_uid: str) -> None:
        with self._lock:
            shutil.rmtree(self.dir / pod_uid, ignore_errors=True)
            if self._ips is not None:
                self._ips.pop(pod_uid, None)
        self.warnings.pop(pod_uid, None)

    def cleanup_all(self) -> None:
        with self._lock:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir(parents=True, exist_ok=True)
            self._ips = None

    def known_pods(self) -> list[str]:
        return [p.parent.name for p in self.dir.glob("*/sandbox.json")]


def make_sandbox_driver(network: str, node_ip: str, pod_cidr: str, cluster_dns: str,
                        cluster_domain: str, root_dir: str) -> SandboxDriver:
    if network == "loopback":
        return LoopbackDriver(node_ip, pod_cidr, cluster_dns, cluster_domain, root_dir)
    if network in ("bridge", "netns"):
        from .netns import BridgeDriver
        return BridgeDriver(node_ip, pod_cidr, cluster_dns, cluster_domain, root_dir)
    raise ValueError(f"unknown --network {network!r} (loopback or bridge)")
