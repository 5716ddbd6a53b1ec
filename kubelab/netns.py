"""Machine network namespaces for `kubelab up --network netns` (root only).

Each "machine" (store node, control-plane component, worker) gets its own network namespace
`klm-<cluster>-<name>` with an `eth0` veth whose other end sits on the cluster's host bridge
(`kl-<cluster>`, at most 15 characters). The host holds the first address of the machine
network (172.30.0.1/24) on the bridge, so kubectl on the host reaches the API server at
172.30.0.20:6443 and every machine's default route goes through the host.

Faults for the chaos scripts: `partition()` sets the machine's host-side veth down (the machine
keeps its addresses and routes but nothing gets in or out), `heal()` sets it up again;
`add_delay()` adds delay/loss on the machine's eth0 — tc netem where the kernel has it, else an
NFQUEUE userspace delayer and an iptables statistic DROP rule — and `clear_delay()` removes it.

`destroy_network()` is idempotent and needs no state: it removes every netns with the cluster's
prefix (killing what still runs inside), every link on the bridge and the bridge itself.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

NETNS_DIR = "/run/netns"
IFNAMSIZ = 15


class NetnsError(RuntimeError):
    pass


def run(argv: list[str], check: bool = True, input: str | None = None,
        error: type[Exception] = NetnsError) -> subprocess.CompletedProcess:
    """Run an `ip`/`iptables`-style command; with check, a failure raises `error` with its
    message (shared with the pod sandbox driver, which raises its own error type)."""
    p = subprocess.run(argv, check=False, capture_output=True, text=True, input=input)
    if check and p.returncode != 0:
        raise error(f"{' '.join(argv)}: {(p.stderr or p.stdout).strip()}")
    return p


def short_hash(s: str, n: int) -> str:
    """n hex digits of s's SHA-1: short, stable parts of interface and namespace names."""
    return hashlib.sha1(s.encode()).hexdigest()[:n]


def cluster_tag(cluster_id: str) -> str:
    """A short, interface-name-safe form of the cluster id (≤ 12 characters)."""
    if re.fullmatch(r"[A-Za-z0-9_]{1,12}", cluster_id):
        return cluster_id
    return short_hash(cluster_id, 8)


def bridge_name(cluster_id: str) -> str:
    return f"kl-{cluster_tag(cluster_id)}"


def netns_prefix(cluster_id: str) -> str:
    return f"klm-{cluster_tag(cluster_id)}-"


def netns_name(cluster_id: str, name: str) -> str:
    return netns_prefix(cluster_id) + name


def host_veth(cluster_id: str, name: str) -> str:
    return "km" + short_hash(f"{cluster_id}/{name}", 10)


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def _link_exists(name: str, ns: str | None = None) -> bool:
    argv = ["ip", *(["-n", ns] if ns else []), "link", "show", "dev", name]
    return run(argv, check=False).returncode == 0


def create_network(cluster_id: str, bridge: str | None = None, cidr: str = "172.30.0.0/24",
                   host_ip: str = "172.30.0.1") -> str:
    """The host bridge of the cluster's machine network with host_ip on it; returns its name."""
    bridge = bridge or bridge_name(cluster_id)
    if len(bridge) > IFNAMSIZ:
        raise NetnsError(f"bridge name {bridge!r} longer than {IFNAMSIZ} characters")
    net = ipaddress.ip_network(cidr, strict=False)
    if not _link_exists(bridge):
        run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "addr", "replace", f"{host_ip}/{net.prefixlen}", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    # with br_netfilter loaded, bridged frames pass the host's FORWARD chain, which Docker
    # (and many firewalls) set to DROP: let the machines talk to each other
    if shutil.which("iptables"):
        rule = _forward_rule(bridge)
        if run(["iptables", "-w", "-C", *rule], check=False).returncode != 0:
            p = run(["iptables", "-w", "-I", *rule], check=False)
            if p.returncode != 0:
                log.warning("FORWARD accept rule for %s not installed: %s", bridge,
                            p.stderr.strip())
        # traffic from the machines to the outside (the host's DNS resolvers, which the
        # cluster DNS forwards to) leaves with the host's address, as from Docker's bridge
        nat = _nat_rule(bridge, str(net))
        if run(["iptables", "-w", "-t", "nat", "-C", *nat], check=False).returncode != 0:
            p = run(["iptables", "-w", "-t", "nat", "-A", *nat], check=False)
            if p.returncode != 0:
                log.warning("MASQUERADE rule for %s not installed: %s", bridge,
                            p.stderr.strip())
    return bridge


def _nat_rule(bridge: str, cidr: str) -> list[str]:
    return ["POSTROUTING", "-s", cidr, "!", "-o", bridge, "-m", "comment", "--comment",
            f"kubelab machine network {bridge}", "-j", "MASQUERADE"]


def _forward_rule(bridge: str) -> list[str]:
    return ["FORWARD", "-i", bridge, "-o", bridge, "-m", "comment", "--comment",
            f"kubelab machine network {bridge}", "-j", "ACCEPT"]


def add_machine(cluster_id: str, name: str, ip: str, *, bridge: str | None = None,
                cidr: str = "172.30.0.0/24", host_ip: str = "172.30.0.1") -> str:
    """A machine's netns (eth0 with ip on the bridge, lo up, default via host_ip); idempotent.
    Returns the netns name."""
    bridge = bridge or bridge_name(cluster_id)
    ns = netns_name(cluster_id, name)
    veth = host_veth(cluster_id, name)
    prefix = ipaddress.ip_network(cidr, strict=False).prefixlen
    if not netns_exists(ns):
        run(["ip", "netns", "add", ns])
    if not _link_exists(veth):
        if _link_exists("eth0", ns):
            run(["ip", "-n", ns, "link", "del", "eth0"], check=False)
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", veth, "master", bridge, "up"])
    cmds = (f"addr replace {ip}/{prefix} dev eth0\n"
            "link set lo up\n"
            "link set eth0 up\n"
            f"route replace default via {host_ip} dev eth0\n")
    run(["ip", "-n", ns, "-batch", "-"], input=cmds)
    return ns


def remove_machine(cluster_id: str, name: str) -> None:
    ns = netns_name(cluster_id, name)
    veth = host_veth(cluster_id, name)
    if _link_exists(veth):
        run(["ip", "link", "del", veth], check=False)
    _delete_netns(ns, kill=True)


def wrap(argv: list[str], netns_name: str) -> list[str]:
    """argv run inside the machine's network namespace (same pid: nsenter execs).

    nsenter joins only the network namespace, so the process stays in the host's mount
    namespace: the pod namespaces a worker's node agent creates under /run/netns are then
    visible to the host (kill_all, `kubelab down`) and to the agent after a restart — with
    `ip netns exec` they would live in a private mount namespace of that one agent process."""
    if shutil.which("nsenter"):
        return ["nsenter", f"--net={os.path.join(NETNS_DIR, netns_name)}", "--", *argv]
    return ["ip", "netns", "exec", netns_name, *argv]


def _peer_of(netns_name: str) -> str | None:
    """The host-side interface of the machine's eth0 (from eth0's peer ifindex)."""
    p = run(["ip", "-n", netns_name, "-o", "link", "show", "dev", "eth0"], check=False)
    m = re.search(r"eth0@if(\d+)", p.stdout)
    if not m:
        return None
    q = run(["ip", "-o", "link", "show"], check=False)
    for line in q.stdout.splitlines():
        idx, _, rest = line.partition(":")
        if idx.strip() == m.group(1):
            return rest.strip().split(":")[0].split("@")[0]
    return None


def partition(netns_name: str) -> None:
    """Cut the machine off the network (its bridge port goes down)."""
    veth = _peer_of(netns_name)
    if veth is None:
        raise NetnsError(f"no machine network interface found for {netns_name}")
    run(["ip", "link", "set", veth, "down"])


def heal(netns_name: str) -> None:
    veth = _peer_of(netns_name)
    if veth is None:
        raise NetnsError(f"no machine network interface found for {netns_name}")
    run(["ip", "link", "set", veth, "up"])


def is_partitioned(netns_name: str) -> bool:
    veth = _peer_of(netns_name)
    if veth is None:
        return True
    p = run(["ip", "-o", "link", "show", "dev", veth], check=False)
    flags = re.search(r"<([^>]*)>", p.stdout)
    return not flags or "UP" not in flags.group(1).split(",")


_LOSS_RULE = ["INPUT", "-i", "eth0", "-m", "statistic", "--mode", "random", "--probability"]
_DELAY_QUEUE = 7
_DELAY_RULE = ["OUTPUT", "-o", "eth0", "-j", "NFQUEUE", "--queue-num", str(_DELAY_QUEUE),
               "--queue-bypass"]
DELAYER_DIR = "/run/kubelab-netdelay"


def add_delay(netns_name: str, ms: float, loss_pct: float = 0.0) -> str:
    """Delay (and loss) on everything the machine sends on eth0: tc netem where the kernel has
    it; otherwise the packets wait in a userspace delayer (kubelab/netdelay.py, iptables
    NFQUEUE) and the loss is an iptables statistic DROP on input. Returns how: "netem" or
    "nfqueue"."""
    clear_delay(netns_name)
    args = ["delay", f"{ms}ms"]
    if loss_pct:
        args += ["loss", f"{loss_pct}%"]
    p = run(["ip", "netns", "exec", netns_name, "tc", "qdisc", "replace", "dev", "eth0",
              "root", "netem", *args], check=False)
    if p.returncode == 0:
        return "netem"
    log.info("tc netem unavailable in %s (%s): delaying through NFQUEUE", netns_name,
             p.stderr.strip())
    if loss_pct:
        run(["ip", "netns", "exec", netns_name, "iptables", "-w", "-A", *_LOSS_RULE,
              f"{loss_pct / 100:.4f}", "-j", "DROP"])
    if ms:
        import sys
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.Popen(
            wrap([sys.executable, "-m", "kubelab.netdelay", "--queue", str(_DELAY_QUEUE),
                  "--delay-ms", str(ms)], netns_name),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=root, text=True)  # -m finds kubelab from cwd
        first = proc.stdout.readline()  # bound to its queue (or failed) before the rule goes in
        if not first.startswith("netdelay: delaying"):
            proc.wait(5)
            raise NetnsError(f"network delayer in {netns_name} failed: {first.strip()}")
        proc.stdout.close()
        os.makedirs(DELAYER_DIR, exist_ok=True)
        with open(os.path.join(DELAYER_DIR, netns_name), "w") as f:
            f.write(str(proc.pid))
        run(["ip", "netns", "exec", netns_name, "iptables", "-w", "-A", *_DELAY_RULE])
    return "nfqueue"


def clear_delay(netns_name: str) -> None:
    run(["ip", "netns", "exec", netns_name, "tc", "qdisc", "del", "dev", "eth0", "root"],
         check=False)
    for chain in ("INPUT", "OUTPUT"):
        _delete_rules(chain, lambda rule: "statistic" in rule or "NFQUEUE" in rule,
                      netns_name=netns_name)
    pid_file = os.path.join(DELAYER_DIR, netns_name)
    try:
        with open(pid_file) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        if b"kubelab.netdelay" in cmdline:  # not a reused PID
            os.kill(pid, signal.SIGTERM)
            _wait_exited(pid)
    except (OSError, ValueError):
        pass
    try:
        os.unlink(pid_file)
    except OSError:
        pass


def _exited(pid: int) -> bool:
    """Gone or a zombie: either way its files, the netlink socket among them, are closed."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _wait_exited(pid: int, timeout: float = 5.0) -> None:
    """The kernel refuses (EPERM) to bind a queue number another socket still holds, so a
    replacement delayer may start only once the old one has closed its socket."""
    for sig in (None, signal.SIGKILL):
        if sig:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _exited(pid):
                return
            time.sleep(0.01)


def _delete_rules(chain: str, match: Callable[[str], bool], *, table: str = "filter",
                  netns_name: str | None = None) -> None:
    """Delete every rule of an iptables chain (on the host, or in a machine's namespace)
    whose `iptables -S` line matches."""
    pre = wrap([], netns_name) if netns_name else []
    p = run([*pre, "iptables", "-w", "-t", table, "-S", chain], check=False)
    for line in p.stdout.splitlines():
        if line.startswith(f"-A {chain} ") and match(line):
            run([*pre, "iptables", "-w", "-t", table, "-D", *shlex.split(line)[1:]],
                check=False)


def _delete_netns(ns: str, kill: bool) -> None:
    try:  # its network delayer (if any) dies with the namespace's processes
        os.unlink(os.path.join(DELAYER_DIR, ns))
    except OSError:
        pass
    if not netns_exists(ns):
        return
    if kill:
        p = run(["ip", "netns", "pids", ns], check=False)
        for pid in p.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ValueError, OSError):
                pass
    p = run(["ip", "netns", "del", ns], check=False)
    if p.returncode != 0 and netns_exists(ns):
        try:
            os.unlink(os.path.join(NETNS_DIR, ns))
        except OSError as e:
            log.warning("cannot remove netns %s: %s", ns, e)


def list_machines(cluster_id: str) -> list[str]:
    prefix = netns_prefix(cluster_id)
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except OSError:
        return []


def destroy_network(cluster_id: str, bridge: str | None = None, kill: bool = True) -> None:
    """Remove every machine netns (killing processes left inside when kill), every link on
    the bridge and the bridge. Idempotent; works from names alone, after a crash too."""
    bridge = bridge or bridge_name(cluster_id)
    for ns in list_machines(cluster_id):
        _delete_netns(ns, kill)
    if _link_exists(bridge):
        p = run(["ip", "-o", "link", "show", "master", bridge], check=False)
        for line in p.stdout.splitlines():
            parts = line.split(":", 2)
            if len(parts) > 1:
                run(["ip", "link", "del", parts[1].strip().split("@")[0]], check=False)
        run(["ip", "link", "del", bridge], check=False)
    if shutil.which("iptables"):
        while run(["iptables", "-w", "-D", *_forward_rule(bridge)], check=False).returncode == 0:
            pass
        # the NAT rule names the bridge; its source range is whatever create_network was given
        _delete_rules("POSTROUTING", lambda rule: f"kubelab machine network {bridge}" in rule,
                      table="nat")
