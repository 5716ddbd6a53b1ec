"""Lays out and supervises a kubelab cluster's processes under one state directory.

Everything of a cluster lives under its state dir (default ~/.kubelab/<name>):

    cluster.json          topology: every component, its command line and addresses
    kubeconfig            (once the API server exists)
    <component>/          data of that component (store-N/ holds the Raft journal)
    logs/<component>.log  stdout+stderr
    pids/<component>.pid

Components are detached process groups, so the cluster outlives the `kubelab up` that started it
and `kubelab stop|start|kill <component>` act on one of them by PID. Addresses follow DESIGN.md's
plan in one of its two forms:

- `loopback` (any user): store-N listens on 127.30.0.(10+N):2379 (clients) and :2380 (peers),
  the API server on 127.30.0.20, workers on 127.30.0.(100+N), pods 127.244.N.0/24, Services
  127.96.0.0/16 — every 127/8 address is local, all processes share the host's network.
- `netns` (root): every machine (store-N, apiserver, controller-manager[-N], scheduler[-N],
  worker-N) runs in its own network namespace on a host bridge (kubelab/netns.py) with the
  compose addresses: 172.30.0.(10+N), .20, .21, .22, .(100+N); pods 10.244.N.0/24 behind the
  worker's cbr0 (node agent `--network bridge`), Services 10.96.0.0/16, cluster DNS 10.96.0.10
  on port 53, ingress on 80/443, LoadBalancer pool 172.30.0.200-250. The host holds 172.30.0.1
  on the bridge, so kubectl, etcdctl and `kubelab status` reach the machines directly. Names
  (bridge `kl-<id>`, namespaces `klm-<id>-<component>`) come from a short id derived from the
  state dir, so `kubelab down` finds and removes them even after a crash. One netns cluster at a
  time per host: they all use the same address plan.

`port_offset` shifts every port (not DNS and ingress in the netns form) so several clusters
(e.g. tests) can run side by side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

STORE_CLIENT_PORT = 2379
STORE_PEER_PORT = 2380
STORE_METRICS_PORT = 2381
APISERVER_PORT = 6443
APISERVER_GRPC_PORT = 6444
APISERVER_ADDR = "127.30.0.20"
SERVICE_CIDR = "127.96.0.0/16"  # the loopback form of 10.96.0.0/16
CONTROLLER_MANAGER_ADDR = "127.30.0.21"
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_ADDR = "127.30.0.22"
SCHEDULER_PORT = 10259
HOLLOW_ADDR = "127.30.0.99"
HOLLOW_PORT = 10250
KUBELET_PORT = 10250
PROXY_HEALTH_PORT = 10256
CLUSTER_DNS = "127.96.0.10"  # the loopback form of 10.96.0.10
CLUSTER_DOMAIN = "cluster.local"
LB_POOL = "127.30.0.200-127.30.0.250"


def worker_ip(n: int) -> str:
    return f"127.30.0.{100 + n}"


def worker_pod_cidr(n: int) -> str:
    return f"127.244.{n}.0/24"


# the netns form: DESIGN.md's (and docker-compose.yml's) addresses
NETNS_NET = "172.30.0"
NETNS_CIDR = "172.30.0.0/24"
NETNS_HOST_IP = "172.30.0.1"
NETNS_SERVICE_CIDR = "10.96.0.0/16"
NETNS_CLUSTER_DNS = "10.96.0.10"
NETNS_POD_NET = "10.244"
NETNS_LB_POOL = "172.30.0.200-172.30.0.250"
NETNS_MAX_WORKERS = 99  # 172.30.0.101-.199; the LoadBalancer pool starts at .200


@dataclasses.dataclass(frozen=True)
class AddressPlan:
    """DESIGN.md's address plan in one of its forms."""
    net: str            # first three octets of the machine network
    pod_net: str        # first two octets of the pod ranges
    service_cidr: str
    cluster_dns: str
    lb_pool: str
    separate_machines: bool  # every machine has its own network namespace

    def store(self, n: int) -> str:
        return f"{self.net}.{10 + n}"

    def apiserver(self, i: int = 1) -> str:
        # apiserver at .20 (DESIGN.md); more API servers (apiserver-N) at .50+N
        return f"{self.net}.20" if i == 1 else f"{self.net}.{50 + i}"

    def controller_manager(self, i: int = 1) -> str:
        # standbys share the address in the loopback form (their ports differ); with
        # namespaces each is its own machine: controller-manager-N at .30+N
        return f"{self.net}.21" if i == 1 or not self.separate_machines else f"{self.net}.{30 + i}"

    def scheduler(self, i: int = 1) -> str:
        return f"{self.net}.22" if i == 1 or not self.separate_machines else f"{self.net}.{40 + i}"

    @property
    def hollow(self) -> str:
        return f"{self.net}.99"

    def worker(self, n: int) -> str:
        return f"{self.net}.{100 + n}"

    def pod_cidr(self, n: int) -> str:
        return f"{self.pod_net}.{n}.0/24"


LOOPBACK_PLAN = AddressPlan("127.30.0", "127.244", SERVICE_CIDR, CLUSTER_DNS, LB_POOL, False)
NETNS_PLAN = AddressPlan(NETNS_NET, NETNS_POD_NET, NETNS_SERVICE_CIDR, NETNS_CLUSTER_DNS,
                         NETNS_LB_POOL, True)


def netns_available() -> tuple[bool, str]:
    """Whether this process can run the netns form, and why not."""
    if os.geteuid() != 0:
        return False, "needs root"
    if not shutil.which("ip"):
        return False, "needs iproute2 (`ip`)"
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return False, f"`ip netns` does not work here: {p.stderr.strip()}"
    return True, ""


def machine_network_users(own_bridge: str | None = None) -> list[str]:
    """Interfaces other than own_bridge that hold an address of 172.30.0.0/24 (another netns
    cluster, or the docker compose network)."""
    p = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                       check=False)
    net = ipaddress.ip_network(NETNS_CIDR)
    users = []
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[2] != "inet":
            continue
        try:
            addr = ipaddress.ip_interface(parts[3]).ip
        except ValueError:
            continue
        if addr in net and parts[1] != own_bridge:
            users.append(parts[1])
    return users


def cluster_id_for(state_dir: Path) -> str:
    """Short id of a cluster (names of its bridge and namespaces), from its state dir."""
    return hashlib.sha1(str(state_dir).encode()).hexdigest()[:8]


def privileged_ports() -> bool:
    """Ports below 1024 (DNS 53, ingress 80/443) need root or a lowered
    net.ipv4.ip_unprivileged_port_start."""
    if os.geteuid() == 0:
        return True
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 53
    except (OSError, ValueError):
        return False


def default_state_dir(name: str = "default") -> Path:
    return Path(os.path.expanduser("~/.kubelab")) / name


@dataclasses.dataclass
class Component:
    name: str
    kind: str  # "store"
    argv: list[str]
    address: str  # the machine's address in the plan
    client_url: str = ""
    peer_url: str = ""
    grpc_url: str = ""
    netns: str = ""  # the machine's network namespace (netns form)
    env: dict = dataclasses.field(default_factory=dict)  # extra environment

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class ClusterError(Exception):
    pass


def resolve_network(network: str) -> str:
    """`auto` is the netns form when this process can make namespaces and the address plan is
    free on this host, else the loopback form; `netns` insists (with a clear error)."""
    if network not in ("auto", "loopback", "netns"):
        raise ClusterError(f"--network {network}: auto, netns or loopback")
    if network == "loopback":
        return network
    ok, why = netns_available()
    if ok:
        users = machine_network_users()
        if users:
            ok, why = False, (f"{NETNS_CIDR} is already in use on this host (by "
                              f"{', '.join(sorted(set(users)))}: another kubelab netns cluster "
                              "or the docker compose network; take it down first)")
    if network == "netns" and not ok:
        raise ClusterError(f"--network netns: {why}")
    if not ok:
        log.info("--network auto: loopback form (%s)", why)
    return "netns" if ok else "loopback"


class Cluster:
    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.components: dict[str, Component] = {}
        self.settings: dict = {}
        self.plan: AddressPlan = LOOPBACK_PLAN
        if (self.state_dir / "cluster.json").exists():
            self._load()
            if self.network == "netns":
                self.plan = NETNS_PLAN

    @property
    def network(self) -> str:
        return (self.settings or {}).get("network", "loopback")

    @property
    def cluster_id(self) -> str:
        return (self.settings or {}).get("cluster_id") or cluster_id_for(self.state_dir)

    # ------------------------------------------------------------------ layout
    @classmethod
    def create(cls, state_dir: str | os.PathLike, *, stores: int = 3, port_offset: int = 0,
               network: str = "loopback", heartbeat_ms: int = 100,
               election_ms: int = 1000, time_scale: float = 1.0,
               store_args: list[str] | None = None, apiserver: bool = True,
               control_plane: bool = True, hollow_workers: int = 0,
               replicas: int = 1, workers: int = 0, apiservers: int = 1) -> Cluster:
        if stores < 1:
            raise ClusterError("--stores must be at least 1")
        if not 1 <= apiservers <= 9:
            raise ClusterError("--apiservers must be between 1 and 9")
        network = resolve_network(network)
        c = cls(state_dir)
        if c.components:
            raise ClusterError(f"a cluster already exists in {c.state_dir} "
                               "(kubelab down --state-dir ... removes it)")
        plan = LOOPBACK_PLAN
        c.settings = {"stores": stores, "port_offset": port_offset, "network": "loopback",
                      "time_scale": time_scale, "heartbeat_ms": heartbeat_ms,
                      "election_ms": election_ms, "workers": workers}
        if network == "netns":
            if workers > NETNS_MAX_WORKERS:
                raise ClusterError(f"--workers {workers}: at most {NETNS_MAX_WORKERS} with "
                                   "--network netns (172.30.0.101-.199)")
            plan = NETNS_PLAN
            cid = cluster_id_for(c.state_dir)
            from . import netns as kn
            c.settings.update(network="netns", cluster_id=cid, bridge=kn.bridge_name(cid),
                              machine_cidr=NETNS_CIDR, host_ip=NETNS_HOST_IP,
                              service_cidr=NETNS_SERVICE_CIDR, netns={})
        c.plan = plan
        names = [f"store-{i}" for i in range(1, stores + 1)]
        addr = {n: plan.store(i) for i, n in enumerate(names, start=1)}
        peer = {n: f"http://{addr[n]}:{STORE_PEER_PORT + port_offset}" for n in names}
        client = {n: f"http://{addr[n]}:{STORE_CLIENT_PORT + port_offset}" for n in names}
        initial = ",".join(f"{n}={peer[n]}" for n in names)
        for n in names:
            argv = [sys.executable, "-m", "etcdlite", "--name", n,
                    "--data-dir", str(c.state_dir / n / "data"),
                    "--listen-client-urls", client[n], "--advertise-client-urls", client[n],
                    "--listen-peer-urls", peer[n], "--initial-advertise-peer-urls", peer[n],
                    "--initial-cluster", initial, "--initial-cluster-token", "kubelab",
                    "--heartbeat-interval", str(heartbeat_ms),
                    "--election-timeout", str(election_ms),
                    "--listen-metrics-urls", f"http://{addr[n]}:{STORE_METRICS_PORT + port_offset}",
                    *(store_args or [])]
            c._add(Component(n, "store", argv, addr[n], client[n], peer[n]))
        for sub in ("logs", "pids"):
            (c.state_dir / sub).mkdir(parents=True, exist_ok=True)
        if not apiserver:
            c._save()
            return c
        # every API server shares one cert dir (CA, serving certificate naming all of them,
        # service-account key, tokens) like kubeadm's control-plane nodes share their PKI
        api_addrs = [plan.apiserver(i) for i in range(1, apiservers + 1)]
        grpc_targets = []
        for i, api_addr in enumerate(api_addrs, start=1):
            argv = [sys.executable, "-m", "apiserver", "--etcd-servers", ",".join(client.values()),
                    "--bind-address", api_addr, "--advertise-address", api_addr,
                    "--secure-port", str(APISERVER_PORT + port_offset),
                    "--grpc-port", str(APISERVER_GRPC_PORT + port_offset),
                    "--cert-dir", str(c.state_dir / "apiserver"),
                    "--service-cluster-ip-range", plan.service_cidr,
                    *(f"--tls-san={a}" for a in api_addrs)]
            grpc_targets.append(f"{api_addr}:{APISERVER_GRPC_PORT + port_offset}")
            c._add(Component("apiserver" if i == 1 else f"apiserver-{i}", "apiserver", argv,
                             api_addr,
                             client_url=f"https://{api_addr}:{APISERVER_PORT + port_offset}",
                             grpc_url=grpc_targets[-1]))
        grpc = ",".join(grpc_targets)  # components fail over between the API servers
        identities = {"admin": ("admin", "system:masters")}
        if control_plane:
            ts = ["--time-scale", str(time_scale)]
            for kind, module, addr_of, port, user in (
                    ("controller-manager", "controllers", plan.controller_manager,
                     CONTROLLER_MANAGER_PORT, "system:kube-controller-manager"),
                    ("scheduler", "scheduler", plan.scheduler, SCHEDULER_PORT,
                     "system:kube-scheduler")):
                # replicas beyond the first are standbys, named <kind>-N (leader election)
                for i in range(1, replicas + 1):
                    name = kind if i == 1 else f"{kind}-{i}"
                    addr_ = addr_of(i)
                    identities[name] = (user, "system:masters")
                    hport = port + port_offset + 1000 * (i - 1)
                    env = ({"KUBELAB_LB_POOL": plan.lb_pool}
                           if kind == "controller-manager" and plan is NETNS_PLAN else {})
                    c._add(Component(
                        name, kind,
                        [sys.executable, "-m", module, "--server", grpc,
                         "--token-file", str(c.state_dir / name / "token"),
                         "--identity", name, "--bind-address", addr_,
                         "--secure-port", str(hport), *ts,
                         *(["--root-ca-file", str(c.state_dir / "apiserver" / "ca.crt")]
                           if kind == "controller-manager" else [])],
                        addr_, client_url=f"http://{addr_}:{hport}", env=env))
        if hollow_workers:
            identities["hollow-nodes"] = ("system:node:hollow", "system:masters")
            c._add(Component(
                "hollow-nodes", "hollow-nodes",
                [sys.executable, "-m", "nodeagent", "--hollow", str(hollow_workers),
                 "--server", grpc, "--token-file", str(c.state_dir / "hollow-nodes" / "token"),
                 "--bind-address", plan.hollow, "--port", str(HOLLOW_PORT + port_offset),
                 "--time-scale", str(time_scale)],
                plan.hollow, client_url=f"http://{plan.hollow}:{HOLLOW_PORT + port_offset}"))
        if workers:
            c._add_workers(workers, grpc, identities)
        c._write_tokens(identities)
        for sub in ("logs", "pids"):
            (c.state_dir / sub).mkdir(parents=True, exist_ok=True)
        c._save()
        return c

    def _add(self, comp: Component) -> None:
        if self.network == "netns":
            from . import netns as kn
            comp.netns = kn.netns_name(self.cluster_id, comp.name)
            self.settings["netns"][comp.name] = comp.netns
        self.components[comp.name] = comp

    def _add_workers(self, workers: int, grpc: str, identities: dict) -> None:
        """worker-N: a node agent that runs the pods bound to node worker-N and starts that
        worker's proxy (kube-proxy, cluster DNS, ingress) as its child, so that killing the
        worker's process group takes both down (DESIGN.md: a worker is one machine)."""
        off = self.settings["port_offset"]
        ts = str(self.settings["time_scale"])
        plan = self.plan
        if plan is NETNS_PLAN:  # every worker has its own addresses: the well-known ports
            dns_port, http_port, https_port = 53, 80, 443
            pod_network = "bridge"
        else:
            low = privileged_ports()
            dns_port = 53 if low else 10053 + off
            http_port, https_port = (80, 443) if low else (10080 + off, 10443 + off)
            pod_network = "loopback"
        auth = self.state_dir / "kubelet-auth-token"
        import secrets
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(24))
        self.settings.update(cluster_dns=plan.cluster_dns, dns_port=dns_port,
                             ingress_http_port=http_port, ingress_https_port=https_port)
        for n in range(1, workers + 1):
            name, ip = f"worker-{n}", plan.worker(n)
            identities[name] = (f"system:node:{name}", "system:nodes,system:masters")
            root = self.state_dir / name
            port = KUBELET_PORT + off
            self._add(Component(
                name, "worker",
                [sys.executable, "-m", "nodeagent", "--node-name", name, "--node-ip", ip,
                 "--pod-cidr", plan.pod_cidr(n), "--network", pod_network,
                 "--root-dir", str(root), "--bind-address", ip, "--port", str(port),
                 "--cluster-dns", plan.cluster_dns, "--cluster-domain", CLUSTER_DOMAIN,
                 "--kubelet-auth-token-file", str(auth), "--time-scale", ts,
                 "--server", grpc, "--token-file", str(root / "token"),
                 "--proxy-args", " ".join([
                     "--dns-port", str(dns_port), "--ingress-http-port", str(http_port),
                     "--ingress-https-port", str(https_port),
                     "--healthz-port", str(PROXY_HEALTH_PORT + off),
                     "--lb-pool", plan.lb_pool])],
                ip, client_url=f"https://{ip}:{port}"))

    @property
    def workers(self) -> list[Component]:
        return [c for c in self.components.values() if c.kind == "worker"]

    def _write_tokens(self, identities: dict[str, tuple[str, str]]) -> None:
        """One bearer token per component identity (kube-apiserver's token file format), and
        each component's own token file."""
        import secrets
        rows = []
        for comp, (user, groups) in identities.items():
            token = secrets.token_hex(24)
            rows.append(f'{token},{user},{user},"{groups}"')
            if comp != "admin":
                d = self.state_dir / comp
                d.mkdir(parents=True, exist_ok=True)
                fd = os.open(d / "token", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(token)
        d = self.state_dir / "apiserver"
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / "tokens.csv", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(rows) + "\n")

    @property
    def apiserver(self) -> Component | None:
        return self.components.get("apiserver")

    @property
    def apiservers(self) -> list[Component]:
        return [c for c in self.components.values() if c.kind == "apiserver"]

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    def admin_token(self) -> str | None:
        try:
            return (self.state_dir / "apiserver" / "tokens.csv").read_text().split(",")[0]
        except OSError:
            return None

    def write_kubeconfig(self) -> Path | None:
        """The admin kubeconfig; kubectl works with it without extra flags."""
        api = self.apiserver
        token = self.admin_token()
        ca = self.state_dir / "apiserver" / "ca.crt"
        if api is None or token is None or not ca.exists():
            return None
        text = (
            "apiVersion: v1\nkind: Config\n"
            "clusters:\n- name: kubelab\n  cluster:\n"
            f"    server: {api.client_url}\n    certificate-authority: {ca}\n"
            "users:\n- name: admin\n  user:\n"
            f"    token: {token}\n"
            "contexts:\n- name: kubelab\n  context:\n    cluster: kubelab\n    user: admin\n"
            "current-context: kubelab\n")
        tmp = self.kubeconfig_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        tmp.replace(self.kubeconfig_path)
        return self.kubeconfig_path

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {"settings": self.settings,
                "components": [c.to_json() for c in self.components.values()]}
        tmp = self.state_dir / "cluster.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.state_dir / "cluster.json")

    def _load(self) -> None:
        data = json.loads((self.state_dir / "cluster.json").read_text())
        self.settings = data["settings"]
        self.components = {c["name"]: Component(**c) for c in data["components"]}

    @property
    def stores(self) -> list[Component]:
        return [c for c in self.components.values() if c.kind == "store"]

    def store_endpoints(self) -> list[str]:
        return [c.client_url for c in self.stores]

    def component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            raise ClusterError(f"no component {name!r}; components: "
                               f"{', '.join(self.components)}") from None

    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _pid_path(self, name: str) -> Path:
        return self.state_dir / "pids" / f"{name}.pid"

    # ------------------------------------------------------------------ processes
    def pid(self, name: str) -> int | None:
        """The component's PID if it is running (and really is that component)."""
        try:
            pid = int(self._pid_path(name).read_text())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        try:  # guard against PID reuse: the command line must name this component's folder
            # (or be exactly its command: apiserver-N shares the apiserver's cert dir)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() + b"\0"
            folder = f"{self.state_dir}/{name}".encode()
            argv = "\0".join(self.component(name).argv).encode() + b"\0"
            if folder + b"/" not in cmdline and folder + b"\0" not in cmdline and \
                    cmdline[:-1] != argv:
                return None
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return None
        except OSError:
            return None
        return pid

    def start(self, name: str) -> int:
        comp = self.component(name)
        pid = self.pid(name)
        if pid is not None:
            return pid
        (self.state_dir / name).mkdir(parents=True, exist_ok=True)
        self.log_path(name).parent.mkdir(parents=True, exist_ok=True)
        self._pid_path(name).parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        env.update(comp.env or {})
        argv = comp.argv
        if self.network == "netns":
            from . import netns as kn
            self.ensure_machine(name)
            argv = kn.wrap(argv, comp.netns)
        with open(self.log_path(name), "ab") as logf:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, env=env, cwd=str(self.state_dir),
                                    start_new_session=True)
        self._pid_path(name).write_text(str(proc.pid))
        return proc.pid

    def signal(self, name: str, sig: int) -> int | None:
        pid = self.pid(name)
        if pid is not None:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
        return pid

    def wait_exit(self, name: str, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid(name) != pid:
                return True
            try:  # reap if it is our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.02)
        return False

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`. A stopped worker's pods stop with it (the
        machine is switched off); the node agent finds their state again when it starts."""
        pid = self.signal(name, signal.SIGTERM)
        if pid is not None and not self.wait_exit(name, pid, timeout):
            self.signal(name, signal.SIGKILL)
            self.wait_exit(name, pid, 5.0)
        self._kill_machine(name)
        if self.component(name).kind == "worker":
            self._kill_pods(name)

    def kill(self, name: str) -> None:
        pid = self.signal(name, signal.SIGKILL)
        if pid is not None:
            self.wait_exit(name, pid, 5.0)
        self._kill_machine(name)
        if self.component(name).kind == "worker":
            self._kill_pods(name)

    def _kill_machine(self, name: str) -> None:
        """netns form: whatever still runs in the machine's namespace dies with it (a process
        that left the component's process group); its pods have their own namespaces."""
        ns = self.components[name].netns if name in self.components else ""
        if self.network != "netns" or not ns:
            return
        from . import netns as kn
        if not kn.netns_exists(ns):
            return
        p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                           check=False)
        for pid in p.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ValueError, OSError):
                pass

    def _kill_pods(self, name: str) -> None:
        """A worker is a machine: when it dies its pods' processes die with it."""
        root = self.state_dir / name
        if root.exists():
            from nodeagent.runtime import kill_all
            kill_all(str(root))

    def start_all(self) -> None:
        for name in self.components:
            self.start(name)

    def stop_all(self) -> None:
        for name in reversed(list(self.components)):
            self.signal(name, signal.SIGTERM)
        for name in reversed(list(self.components)):
            self.stop(name)

    def down(self) -> None:
        """Stop every component, remove the machine network (netns form) and the state
        directory. Idempotent, and complete after a crash: the network is found by its names."""
        if self.components:
            self.stop_all()
        # pods of workers the state file no longer names (a crash): they have their own
        # namespaces and process groups, recorded under the worker's root dir
        for node_json in self.state_dir.glob("*/node.json"):
            if node_json.parent.name not in self.components:
                from nodeagent.runtime import kill_all
                kill_all(str(node_json.parent))
        self.destroy_network()
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # ------------------------------------------------------------------ machine network
    def ensure_network(self) -> None:
        """netns form: the bridge and every machine's namespace (idempotent; after a host
        reboot or a crashed `kubelab down` they are made again)."""
        if self.network != "netns":
            return
        if not self.components:
            return
        self.ensure_machine(next(iter(self.components)))  # the bridge, once
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=8) as pool:
            for f in [pool.submit(self.ensure_machine, n) for n in self.components]:
                f.result()

    def _bridge_up(self) -> bool:
        bridge = self.settings.get("bridge", "")
        try:
            return bool(bridge) and (int(Path(f"/sys/class/net/{bridge}/flags").read_text(), 16)
                                     & 1) == 1
        except (OSError, ValueError):
            return False

    def ensure_machine(self, name: str) -> str:
        """The component's machine: its namespace with eth0 on the bridge (and, for a worker,
        routes to the other workers' pod ranges). Cheap when everything exists; a partitioned
        machine stays partitioned."""
        from . import netns as kn
        comp = self.component(name)
        cid = self.cluster_id
        if not self._bridge_up():
            users = machine_network_users(self.settings["bridge"])
            if users:
                raise ClusterError(f"{NETNS_CIDR} is already in use on this host (by "
                                   f"{', '.join(sorted(set(users)))}); take that cluster or "
                                   "compose network down first")
            kn.create_network(cid, self.settings["bridge"], NETNS_CIDR, NETNS_HOST_IP)
            self._host_routes()
        veth = kn.host_veth(cid, name)
        if kn.netns_exists(comp.netns) and os.path.exists(f"/sys/class/net/{veth}"):
            return comp.netns
        kn.add_machine(cid, name, comp.address, bridge=self.settings["bridge"],
                       cidr=NETNS_CIDR, host_ip=NETNS_HOST_IP)
        if comp.kind == "worker":
            # static routes to the other workers' pod ranges, so pod-to-pod traffic works from
            # the start (the node agent keeps its own, from the Node objects, on top)
            cmds = "".join(f"route replace {self.plan.pod_cidr(int(w.name.split('-')[1]))} "
                           f"via {w.address} dev eth0\n" for w in self.workers if w is not comp)
            if cmds:
                subprocess.run(["ip", "-n", comp.netns, "-batch", "-"], input=cmds, text=True,
                               capture_output=True, check=False)
            subprocess.run(["ip", "netns", "exec", comp.netns, "sysctl", "-q", "-w",
                            "net.ipv4.ip_forward=1"], capture_output=True, check=False)
            self._service_interface(comp.netns)
        return comp.netns

    @staticmethod
    def _service_interface(ns: str) -> None:
        """kube-ipvs0, where the worker's proxy puts the Service VIPs and the cluster DNS
        address, is a dummy interface; on kernels without the dummy driver a port-less bridge
        does the same job (addresses on it are local, nothing is forwarded) — the proxy uses
        the interface it finds."""
        def ip(*args: str) -> int:
            return subprocess.run(["ip", "-n", ns, "link", *args], capture_output=True,
                                  check=False).returncode
        if ip("show", "kube-ipvs0") != 0 and ip("add", "kube-ipvs0", "type", "dummy") != 0:
            ip("add", "kube-ipvs0", "type", "bridge")
        ip("set", "kube-ipvs0", "up")

    def _host_routes(self) -> None:
        """The host reaches every pod (10.244.N.0/24 via worker-N) and the Service range
        (via worker-1's proxy), so curl/dig from the host work like from a node. Routes on the
        bridge vanish with it."""
        bridge = self.settings["bridge"]
        cmds = [f"route add {self.plan.pod_cidr(int(w.name.split('-')[1]))} via {w.address} "
                f"dev {bridge}" for w in self.workers]
        if self.workers:
            cmds.append(f"route add {NETNS_SERVICE_CIDR} via {self.workers[0].address} "
                        f"dev {bridge}")
        for c in cmds:  # one by one: a prefix the host routes elsewhere already is kept
            subprocess.run(["ip", *c.split()], capture_output=True, check=False)

    def destroy_network(self) -> None:
        """Remove the namespaces, veths and bridge of this cluster (netns form). Harmless
        when there are none; works without cluster.json."""
        if self.network != "netns" and not self.state_dir.exists():
            return
        if os.geteuid() != 0 or not shutil.which("ip"):
            return
        from . import netns as kn
        cid = self.cluster_id
        bridge = self.settings.get("bridge") or kn.bridge_name(cid)
        if (self.network == "netns" or kn.list_machines(cid)
                or os.path.exists(f"/sys/class/net/{bridge}")):
            kn.destroy_network(cid, bridge)
