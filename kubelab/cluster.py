"""Lays out and supervises a kubelab cluster's processes under one state directory.

Everything of a cluster lives under its state dir (default ~/.kubelab/<name>):

    cluster.json          topology: every component, its command line and addresses
    kubeconfig            (once the API server exists)
    <component>/          data of that component (store-N/ holds the Raft journal)
    logs/<component>.log  stdout+stderr
    pids/<component>.pid

Components are detached process groups, so the cluster outlives the `kubelab up` that started it
and `kubelab stop|start|kill <component>` act on one of them by PID. Addresses follow DESIGN.md's
plan in its unprivileged loopback form: store-N listens on 127.30.0.(10+N):2379 (clients) and :2380
(peers); `port_offset` shifts every port so several clusters (e.g. tests) can run side by side.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class ClusterError(Exception):
    pass


class Cluster:
    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.components: dict[str, Component] = {}
        self.settings: dict = {}
        if (self.state_dir / "cluster.json").exists():
            self._load()

    # ------------------------------------------------------------------ layout
    @classmethod
    def create(cls, state_dir: str | os.PathLike, *, stores: int = 3, port_offset: int = 0,
               network: str = "loopback", heartbeat_ms: int = 100,
               election_ms: int = 1000, time_scale: float = 1.0,
               store_args: list[str] | None = None, apiserver: bool = True,
               control_plane: bool = True, hollow_workers: int = 0,
               replicas: int = 1, workers: int = 0) -> "Cluster":
        if stores < 1:
            raise ClusterError("--stores must be at least 1")
        if network not in ("auto", "loopback"):
            raise ClusterError(f"--network {network}: only the loopback network is wired into "
                               "the launcher so far")
        c = cls(state_dir)
        if c.components:
            raise ClusterError(f"a cluster already exists in {c.state_dir} "
                               "(kubelab down --state-dir ... removes it)")
        c.settings = {"stores": stores, "port_offset": port_offset, "network": "loopback",
                      "time_scale": time_scale, "heartbeat_ms": heartbeat_ms,
                      "election_ms": election_ms, "workers": workers}
        names = [f"store-{i}" for i in range(1, stores + 1)]
        addr = {n: f"127.30.0.{10 + i}" for i, n in enumerate(names, start=1)}
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
            c.components[n] = Component(n, "store", argv, addr[n], client[n], peer[n])
        for sub in ("logs", "pids"):
            (c.state_dir / sub).mkdir(parents=True, exist_ok=True)
        if not apiserver:
            c._save()
            return c
        api_url = f"https://{APISERVER_ADDR}:{APISERVER_PORT + port_offset}"
        argv = [sys.executable, "-m", "apiserver", "--etcd-servers", ",".join(client.values()),
                "--bind-address", APISERVER_ADDR, "--advertise-address", APISERVER_ADDR,
                "--secure-port", str(APISERVER_PORT + port_offset),
                "--grpc-port", str(APISERVER_GRPC_PORT + port_offset),
                "--cert-dir", str(c.state_dir / "apiserver"),
                "--service-cluster-ip-range", SERVICE_CIDR]
        grpc = f"{APISERVER_ADDR}:{APISERVER_GRPC_PORT + port_offset}"
        c.components["apiserver"] = Component(
            "apiserver", "apiserver", argv, APISERVER_ADDR, client_url=api_url, grpc_url=grpc)
        identities = {"admin": ("admin", "system:masters")}
        if control_plane:
            ts = ["--time-scale", str(time_scale)]
            for kind, module, addr_, port, user in (
                    ("controller-manager", "controllers", CONTROLLER_MANAGER_ADDR,
                     CONTROLLER_MANAGER_PORT, "system:kube-controller-manager"),
                    ("scheduler", "scheduler", SCHEDULER_ADDR, SCHEDULER_PORT,
                     "system:kube-scheduler")):
                # replicas beyond the first are standbys, named <kind>-N (leader election)
                for i in range(1, replicas + 1):
                    name = kind if i == 1 else f"{kind}-{i}"
                    identities[name] = (user, "system:masters")
                    hport = port + port_offset + 1000 * (i - 1)
                    c.components[name] = Component(
                        name, kind,
                        [sys.executable, "-m", module, "--server", grpc,
                         "--token-file", str(c.state_dir / name / "token"),
                         "--identity", name, "--bind-address", addr_,
                         "--secure-port", str(hport), *ts],
                        addr_, client_url=f"http://{addr_}:{hport}")
        if hollow_workers:
            identities["hollow-nodes"] = ("system:node:hollow", "system:masters")
            c.components["hollow-nodes"] = Component(
                "hollow-nodes", "hollow-nodes",
                [sys.executable, "-m", "nodeagent", "--hollow", str(hollow_workers),
                 "--server", grpc, "--token-file", str(c.state_dir / "hollow-nodes" / "token"),
                 "--bind-address", HOLLOW_ADDR, "--port", str(HOLLOW_PORT + port_offset),
                 "--time-scale", str(time_scale)],
                HOLLOW_ADDR, client_url=f"http://{HOLLOW_ADDR}:{HOLLOW_PORT + port_offset}")
        if workers:
            c._add_workers(workers, grpc, identities)
        c._write_tokens(identities)
        for sub in ("logs", "pids"):
            (c.state_dir / sub).mkdir(parents=True, exist_ok=True)
        c._save()
        return c

    def _add_workers(self, workers: int, grpc: str, identities: dict) -> None:
        """worker-N: a node agent that runs the pods bound to node worker-N and starts that
        worker's proxy (kube-proxy, cluster DNS, ingress) as its child, so that killing the
        worker's process group takes both down (DESIGN.md: a worker is one machine)."""
        off = self.settings["port_offset"]
        ts = str(self.settings["time_scale"])
        low = privileged_ports()
        dns_port = 53 if low else 10053 + off
        http_port, https_port = (80, 443) if low else (10080 + off, 10443 + off)
        auth = self.state_dir / "kubelet-auth-token"
        import secrets
        fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(24))
        self.settings.update(cluster_dns=CLUSTER_DNS, dns_port=dns_port,
                             ingress_http_port=http_port, ingress_https_port=https_port)
        for n in range(1, workers + 1):
            name, ip = f"worker-{n}", worker_ip(n)
            identities[name] = (f"system:node:{name}", "system:nodes,system:masters")
            root = self.state_dir / name
            port = KUBELET_PORT + off
            self.components[name] = Component(
                name, "worker",
                [sys.executable, "-m", "nodeagent", "--node-name", name, "--node-ip", ip,
                 "--pod-cidr", worker_pod_cidr(n), "--network", "loopback",
                 "--root-dir", str(root), "--bind-address", ip, "--port", str(port),
                 "--cluster-dns", CLUSTER_DNS, "--cluster-domain", CLUSTER_DOMAIN,
                 "--kubelet-auth-token-file", str(auth), "--time-scale", ts,
                 "--server", grpc, "--token-file", str(root / "token"),
                 "--proxy-args", " ".join([
                     "--dns-port", str(dns_port), "--ingress-http-port", str(http_port),
                     "--ingress-https-port", str(https_port),
                     "--healthz-port", str(PROXY_HEALTH_PORT + off), "--lb-pool", LB_POOL])],
                ip, client_url=f"https://{ip}:{port}")

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
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() + b"\0"
            folder = f"{self.state_dir}/{name}".encode()
            if folder + b"/" not in cmdline and folder + b"\0" not in cmdline:
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
        with open(self.log_path(name), "ab") as logf:
            proc = subprocess.Popen(comp.argv, stdin=subprocess.DEVNULL, stdout=logf,
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
        if self.component(name).kind == "worker":
            self._kill_pods(name)

    def kill(self, name: str) -> None:
        pid = self.signal(name, signal.SIGKILL)
        if pid is not None:
            self.wait_exit(name, pid, 5.0)
        if self.component(name).kind == "worker":
            self._kill_pods(name)

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
        """Stop every component and remove the state directory. Idempotent."""
        if self.components:
            self.stop_all()
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
