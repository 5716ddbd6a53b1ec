"""The `bridge` pod network driver: a network namespace per pod on the node's bridge.

Runs in the worker's node network namespace (the worker container under Docker, the worker's
netns with `kubelab up --network netns`), or — `node_netns=` given, as the tests do — drives a
named node namespace from outside.

Per node: bridge `cbr0` holding the first address of --pod-cidr (10.244.N.1/24), ip_forward on,
and pod traffic leaving the pod range masqueraded behind the node IP (best effort, iptables).
Per pod: netns `klp-<root hash>-<uid>` (root hash: the agent's --root-dir, so workers and clusters
never clash), a veth pair (`kv<hash><uid>` on the bridge, `eth0` in the pod), lo up, the pod IP
from the range (reservations persisted as files under `<root>/networks/cbr0/`, like CNI
host-local, so an agent restart keeps them), default route via the bridge address. The pod's
resolv.conf, hosts and hostname files live in `<root>/sandboxes/<uid>/`; `wrap()` runs each
container through nodeagent/nsexec.py, which joins the netns, makes a private mount namespace
with those files bind-mounted over /etc/resolv.conf, /etc/hosts and /etc/hostname plus the
container's volume mounts, sets the hostname in a UTS namespace, then execs the command.
hostNetwork pods stay in the node's network namespace.

Routes to the other workers' pod ranges come from the Node objects: `sync_routes(nodes, me)`
installs `<podCIDR> via <InternalIP>` (routing protocol 190, so stale ones are found without
state) for every other node.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kubelab import netns as machine_net
from kubelab.netns import NETNS_DIR, netns_exists
from kubelab.netns import short_hash as _hash

from .sandbox import Sandbox, SandboxDriver, hosts_file, pod_hostname, resolv_conf

log = logging.getLogger(__name__)

ROUTE_PROTO = "190"
NSEXEC = str(Path(__file__).resolve().with_name("nsexec.py"))


class SandboxError(RuntimeError):
    """Creating or removing a pod sandbox failed (kubelet: FailedCreatePodSandBox)."""


def _run(argv: list[str], check: bool = True, input: str | None = None
         ) -> subprocess.CompletedProcess:
    return machine_net.run(argv, check, input, error=SandboxError)


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []


def delete_netns(name: str) -> None:
    """`ip netns del`, tolerant of a name whose mount lives in another mount namespace."""
    p = _run(["ip", "netns", "del", name], check=False)
    if p.returncode != 0 and netns_exists(name):
        try:
            os.unlink(os.path.join(NETNS_DIR, name))
        except OSError as e:
            log.warning("cannot remove netns %s: %s", name, e)


def _write_if_changed(path: Path, content: str) -> None:
    """Write in place (same inode) so existing bind mounts of the file see the new content."""
    try:
        if path.read_text() == content:
            return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(content)


def _mount_tuple(m: Any) -> tuple[str, str, bool]:
    """(host_path, mount_path, read_only) from a tuple or a {"hostPath", "mountPath",
    "readOnly", "subPath"} dict (hostPath is the volume's directory; subPath is joined)."""
    if isinstance(m, dict):
        src = m["hostPath"]
        sub = os.path.normpath(m.get("subPath") or ".")
        if sub != "." and not os.path.normpath(src).endswith(os.sep + sub):
            src = os.path.join(src, sub)  # not already resolved by the caller
        return src, m["mountPath"], bool(m.get("readOnly"))
    src, dst, ro = m
    return str(src), str(dst), bool(ro)


class BridgeDriver(SandboxDriver):
    network = "bridge"

    def __init__(self, node_ip: str, pod_cidr: str, cluster_dns: str,
                 cluster_domain: str, root_dir: str, *, bridge: str = "cbr0",
                 node_netns: str | None = None, host_resolv_conf: str = "/etc/resolv.conf",
                 host_hosts: str = "/etc/hosts", masquerade: bool = True,
                 cluster_cidr: str = "10.244.0.0/16"):
        self.node_ip = node_ip
        # an empty pod_cidr still allows teardown/cleanup_all (kill_all without a node.json)
        self.net = ipaddress.ip_network(pod_cidr or "0.0.0.0/32", strict=False)
        self.gateway = str(next(self.net.hosts())) if pod_cidr else ""
        self.cluster_dns = cluster_dns
        self.cluster_domain = cluster_domain
        self.root = Path(root_dir).resolve()
        self.bridge = bridge
        self.node_netns = node_netns
        self.host_resolv_conf = host_resolv_conf
        self.host_hosts = host_hosts
        self.masquerade = masquerade
        self.cluster_cidr = cluster_cidr
        h = _hash(str(self.root), 6)
        self.netns_prefix = f"klp-{h}-"
        self.veth_prefix = f"kv{h[:4]}"
        self.sandboxes = self.root / "sandboxes"
        self.ipam_dir = self.root / "networks" / bridge
        self.warnings: dict[str, list[str]] = {}
        self._node_ready = False
        self._route_failures: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ names and commands

    def netns_name(self, pod_uid: str) -> str:
        return self.netns_prefix + pod_uid.replace("-", "")[:12]

    def veth_name(self, pod_uid: str) -> str:
        return self.veth_prefix + pod_uid.replace("-", "")[:9]  # 15 chars: IFNAMSIZ-1

    def _ip(self, *args: str, check: bool = True, ns: str | None = None
            ) -> subprocess.CompletedProcess:
        """`ip` in the node namespace (or in `ns`)."""
        ns = ns or self.node_netns
        return _run(["ip", *(["-n", ns] if ns else []), *args], check=check)

    def _node_exec(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        if self.node_netns:
            argv = ["ip", "netns", "exec", self.node_netns, *argv]
        return _run(argv, check=check)

    def _link_exists(self, name: str, ns: str | None = None) -> bool:
        return self._ip("link", "show", "dev", name, check=False, ns=ns).returncode == 0

    # ------------------------------------------------------------------ node setup

    def ensure_node(self) -> None:
        """Bridge with the gateway address, ip_forward, masquerade of pod egress (idempotent)."""
        if not self.gateway:
            raise SandboxError("the bridge network driver needs the node's --pod-cidr")
        if self._node_ready and self._link_exists(self.bridge):
            return
        if not self._link_exists(self.bridge):
            p = self._ip("link", "add", self.bridge, "type", "bridge", check=False)
            if p.returncode != 0 and "exists" not in p.stderr:
                raise SandboxError(f"cannot create bridge {self.bridge}: {p.stderr.strip()}")
        self._ip("addr", "replace", f"{self.gateway}/{self.net.prefixlen}", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        if self.node_netns:
            self._node_exec(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], check=False)
        else:
            try:
                Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
            except OSError as e:
                log.warning("cannot enable ip_forward: %s", e)
        if self.masquerade and shutil.which("iptables"):
            rule = ["-t", "nat", "POSTROUTING", "-s", str(self.net), "!", "-d", self.cluster_cidr,
                    "!", "-o", self.bridge, "-j", "MASQUERADE"]
            chk = self._node_exec(["iptables", "-w", rule[0], rule[1], "-C", *rule[2:]],
                                  check=False)
            if chk.returncode != 0:
                add = self._node_exec(["iptables", "-w", rule[0], rule[1], "-A", *rule[2:]],
                                      check=False)
                if add.returncode != 0:
                    log.warning("pod egress masquerade not installed: %s", add.stderr.strip())
        self._node_ready = True

    # ------------------------------------------------------------------ IPAM (host-local style)

    def _reservations(self) -> dict[str, str]:
        """ip -> pod uid."""
        out = {}
        try:
            for p in self.ipam_dir.iterdir():
                if p.name.count(".") == 3:
                    try:
                        out[p.name] = p.read_text().strip()
                    except OSError:
                        continue
        except OSError:
            pass
        return out

    def _allocate(self, uid: str) -> str:
        self.ipam_dir.mkdir(parents=True, exist_ok=True)
        for ip, owner in self._reservations().items():
            if owner == uid:
                return ip
        hosts = [str(h) for h in self.net.hosts() if str(h) != self.gateway]
        last_file = self.ipam_dir / "last_reserved_ip"
        try:
            start = hosts.index(last_file.read_text().strip()) + 1
        except (OSError, ValueError):
            start = 0
        for i in range(len(hosts)):
            ip = hosts[(start + i) % len(hosts)]
            try:
                fd = os.open(self.ipam_dir / ip, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(uid)
            last_file.write_text(ip)
            return ip
        raise SandboxError(f"failed to allocate for range 0: no IP addresses available in "
                           f"range set: {self.net}")

    def _release(self, uid: str) -> None:
        for ip, owner in self._reservations().items():
            if owner == uid:
                try:
                    (self.ipam_dir / ip).unlink()
                except OSError:
                    pass

    # ------------------------------------------------------------------ SandboxDriver

    def setup(self, pod: dict) -> Sandbox:
        md = pod["metadata"]
        uid = md["uid"]
        spec = pod.get("spec") or {}
        host_net = bool(spec.get("hostNetwork"))
        d = self.sandboxes / uid
        d.mkdir(parents=True, exist_ok=True)
        if host_net:
            ip = self.node_ip
            netns_path = os.path.join(NETNS_DIR, self.node_netns) if self.node_netns else None
            ns = None
        else:
            self.ensure_node()
            ip = self._allocate(uid)
            ns = self.netns_name(uid)
            netns_path = os.path.join(NETNS_DIR, ns)
            try:
                self._plumb(uid, ns, ip)
            except SandboxError:
                self.teardown(uid)
                raise
        rec = {"ip": ip, "netns": ns, "namespace": md.get("namespace"), "name": md["name"],
               "hostNetwork": host_net}
        tmp = d / "sandbox.json.tmp"
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, d / "sandbox.json")
        self._write_files(pod, d, ip, host_net)
        return Sandbox(ip=ip, netns_path=netns_path, hostname=pod_hostname(pod),
                       resolv_conf_path=str(d / "resolv.conf"), hosts_path=str(d / "hosts"),
                       bind_ip="0.0.0.0")

    def _plumb(self, uid: str, ns: str, ip: str) -> None:
        if netns_exists(ns) and _run(["ip", "-n", ns, "link", "show", "lo"],
                                     check=False).returncode != 0:
            # a name without its namespace (mounted in a mount namespace gone since): renew
            delete_netns(ns)
        if not netns_exists(ns):
            _run(["ip", "netns", "add", ns])
        veth = self.veth_name(uid)
        host_end, pod_end = self._link_exists(veth), self._link_exists("eth0", ns=ns)
        if not (host_end and pod_end):  # new, half-built, or its netns was renewed
            if host_end:
                self._ip("link", "del", veth, check=False)
            if pod_end:
                self._ip("link", "del", "eth0", ns=ns, check=False)
            self._ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._ip("link", "set", veth, "master", self.bridge, "up")
        cmds = (f"addr replace {ip}/{self.net.prefixlen} dev eth0\n"
                "link set lo up\n"
                "link set eth0 up\n"
                f"route replace default via {self.gateway} dev eth0\n")
        p = _run(["ip", "-n", ns, "-batch", "-"], check=False, input=cmds)
        if p.returncode != 0:
            raise SandboxError(f"configuring {ns}: {p.stderr.strip()}")

    def _write_files(self, pod: dict, d: Path, ip: str, host_net: bool) -> None:
        uid = pod["metadata"]["uid"]
        try:
            host_resolv = Path(self.host_resolv_conf).read_text()
        except OSError:
            host_resolv = ""
        resolv, warnings = resolv_conf(pod, self.cluster_dns, self.cluster_domain, host_resolv)
        self.warnings[uid] = warnings
        for w in warnings:
            log.warning("pod %s/%s: DNSConfigForming: %s", pod["metadata"].get("namespace"),
                        pod["metadata"]["name"], w)
        _write_if_changed(d / "resolv.conf", resolv)
        if host_net:
            hosts = node_hosts_file(pod, self.host_hosts)
        else:
            hosts = hosts_file(pod, ip, self.cluster_domain)
        _write_if_changed(d / "hosts", hosts)
        _write_if_changed(d / "hostname", pod_hostname(pod) + "\n")

    def wrap(self, argv: list[str], sandbox: Sandbox, mounts: Iterable[Any],
             workdir: str | None = None) -> list[str]:
        """argv run through nsexec: netns (unless hostNetwork), a private mount namespace with
        resolv.conf/hosts/hostname and the volume mounts, a UTS namespace with the hostname."""
        vol = [_mount_tuple(m) for m in mounts]
        targets = {os.path.normpath(dst) for _, dst, _ in vol}
        d = Path(sandbox.hosts_path).parent
        binds: list[list[Any]] = []
        for src, dst in ((sandbox.resolv_conf_path, "/etc/resolv.conf"),
                         (sandbox.hosts_path, "/etc/hosts"),
                         (str(d / "hostname"), "/etc/hostname")):
            if dst not in targets and os.path.exists(src):
                binds.append([src, dst, False])
        vol.sort(key=lambda m: os.path.normpath(m[1]).count("/"))
        binds.extend([src, dst, ro] for src, dst, ro in vol)
        host_net = False
        try:
            host_net = bool(json.loads((d / "sandbox.json").read_text()).get("hostNetwork"))
        except (OSError, ValueError):
            pass
        # a private /var per pod (the node's as a read-only base): what containers write there
        # (`touch /var/ready`, databases under /var/lib) is theirs, not every pod's on the
        # node. (/etc and /usr stay the node's: catalog apps read a mount point there as a
        # user-provided volume.)
        overlays = [] if host_net else [["/var", str(d / "overlay" / "var"),
                                         str(d / "overlay" / "var.work")]]
        spec = {"net": sandbox.netns_path, "binds": binds, "overlays": overlays,
                "hostname": None if host_net else sandbox.hostname,
                "cwd": workdir, "record": str(d / "mountpoints")}
        return [sys.executable, "-I", "-S", NSEXEC, json.dumps(spec), "--", *argv]

    def teardown(self, pod_uid: str) -> None:
        ns = self.netns_name(pod_uid)
        veth = self.veth_name(pod_uid)
        if self._link_exists(veth):
            self._ip("link", "del", veth, check=False)
        if netns_exists(ns):
            delete_netns(ns)
        self._release(pod_uid)
        self.warnings.pop(pod_uid, None)
        shutil.rmtree(self.sandboxes / pod_uid, ignore_errors=True)

    def known_pods(self) -> list[str]:
        try:
            return [p.parent.name for p in self.sandboxes.glob("*/sandbox.json")]
        except OSError:
            return []

    def owns_bridge(self) -> bool:
        """Whether this namespace's bridge is this driver's (it holds our gateway address) —
        so cleanup_all run from another namespace (the launcher's kill_all on the host) never
        touches a bridge, routes or rules that are not ours."""
        if not self.gateway:
            return False
        p = self._ip("-o", "addr", "show", "dev", self.bridge, check=False)
        return p.returncode == 0 and f" {self.gateway}/{self.net.prefixlen} " in p.stdout

    def cleanup_all(self) -> None:
        """Remove every sandbox of this driver (by name prefix: netns, veths, reservations,
        files); and, when run in the node's namespace, the pod routes it installed, the
        masquerade rule and the bridge. Safe to run from any namespace."""
        for uid in self.known_pods():
            self.teardown(uid)
        for name in list_netns():
            if name.startswith(self.netns_prefix):
                delete_netns(name)
        shutil.rmtree(self.ipam_dir, ignore_errors=True)
        shutil.rmtree(self.sandboxes, ignore_errors=True)
        self.warnings.clear()
        p = self._ip("-o", "link", "show", check=False)
        for line in p.stdout.splitlines():
            parts = line.split(":", 2)
            if len(parts) > 1:
                name = parts[1].strip().split("@")[0]
                if name.startswith(self.veth_prefix):
                    self._ip("link", "del", name, check=False)
        if not self.owns_bridge():
            return
        self._ip("route", "flush", "proto", ROUTE_PROTO, check=False)
        if self.masquerade and shutil.which("iptables"):
            self._node_exec(["iptables", "-w", "-t", "nat", "-D", "POSTROUTING", "-s",
                             str(self.net), "!", "-d", self.cluster_cidr, "!", "-o", self.bridge,
                             "-j", "MASQUERADE"], check=False)
        self._ip("link", "del", self.bridge, check=False)
        self._node_ready = False

    # ------------------------------------------------------------------ routes between workers

    def sync_routes(self, nodes: list[dict], self_name: str) -> None:
        """`ip route replace <podCIDR> via <InternalIP>` for every other Node; drop stale ones."""
        want: dict[str, str] = {}
        for n in nodes:
            name = (n.get("metadata") or {}).get("name")
            cidr = (n.get("spec") or {}).get("podCIDR")
            if not cidr or name == self_name:
                continue
            addr = next((a.get("address") for a in (n.get("status") or {}).get("addresses") or []
                         if a.get("type") == "InternalIP"), None)
            if not addr:
                continue
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                continue
            if net == self.net:
                continue
            want[str(net)] = addr
        have = current_routes(self._ip("-j", "route", "show", "proto", ROUTE_PROTO,
                                       check=False).stdout)
        for dst, via in want.items():
            if have.get(dst) == via:
                continue
            p = self._ip("route", "replace", dst, "via", via, "proto", ROUTE_PROTO, check=False)
            if p.returncode != 0 and (dst, via) not in self._route_failures:
                self._route_failures.add((dst, via))  # e.g. a hollow node's address: once
                log.warning("route %s via %s: %s", dst, via, p.stderr.strip())
        for dst in have:
            if dst not in want:
                self._ip("route", "del", dst, "proto", ROUTE_PROTO, check=False)


def current_routes(ip_json: str) -> dict[str, str]:
    """{dst: gateway} from `ip -j route show` output."""
    try:
        rows = json.loads(ip_json or "[]")
    except ValueError:
        return {}
    out = {}
    for r in rows:
        dst = r.get("dst")
        if dst and r.get("gateway"):
            if "/" not in dst:
                dst += "/32"
            out[dst] = r["gateway"]
    return out


def node_hosts_file(pod: dict, host_hosts: str = "/etc/hosts") -> str:
    """The kubelet's hosts file for a hostNetwork pod: the node's own file under a header."""
    try:
        content = Path(host_hosts).read_text()
    except OSError:
        content = ""
    if content and not content.endswith("\n"):
        content += "\n"
    out = "# Kubernetes-managed hosts file (host network).\n" + content
    aliases = (pod.get("spec") or {}).get("hostAliases") or []
    if aliases:
        out += "\n# Entries added by HostAliases.\n"
        for a in aliases:
            out += f"{a.get('ip', '')}\t" + "\t".join(a.get("hostnames") or []) + "\n"
    return out
