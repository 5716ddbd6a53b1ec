"""`python -m kubelab.container <role>`: one cluster machine per container (docker compose,
Docker Swarm). The role names the machine — store-N, apiserver, controller-manager, scheduler,
worker-N — and fixes its address in DESIGN.md's plan (172.30.0.0/24, pods 10.244.N.0/24,
Services 10.96.0.0/16). `python -m kubelab.container health <role>` is the healthcheck.

Addressing: with docker compose every machine has its static address. Docker Swarm (`docker
stack deploy`, see docker-stack.yml) has no static addresses on overlay networks, so there
KUBELAB_ADDRESSING=names: machines find each other by name (store-N, apiserver) through the
shared volume (see start_hosts_sync), store members advertise their names to each other, and
the API server and workers advertise whatever address they got.

State: /var/lib/kubelab/shared (one volume for every machine) holds the bearer tokens, made once
by whichever machine starts first (under a file lock); /var/lib/kubelab/data (one volume per
machine) holds that machine's own data, so `docker compose stop/start/restart` and an engine
restart bring the same cluster back: store members rejoin as themselves with their journals.
The API server writes a kubeconfig for the host into /kubeconfig (bind-mounted).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sys
from pathlib import Path

SHARED = Path(os.environ.get("KUBELAB_SHARED_DIR", "/var/lib/kubelab/shared"))
DATA = Path(os.environ.get("KUBELAB_DATA_DIR", "/var/lib/kubelab/data"))
KUBECONFIG_DIR = Path(os.environ.get("KUBELAB_KUBECONFIG_DIR", "/kubeconfig"))
NET = os.environ.get("KUBELAB_NODE_NET", "172.30.0")
STORES = int(os.environ.get("KUBELAB_STORES", "3"))
MAX_WORKERS = 32  # tokens are made for this many workers so scaled-out ones can join
TIME_SCALE = os.environ.get("KUBELAB_TIME_SCALE", "1.0")
PUBLISHED_API = os.environ.get("KUBELAB_PUBLISHED_API", "https://127.0.0.1:6443")
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_DNS = "10.96.0.10"
LB_POOL = f"{NET}.200-{NET}.250"
BY_NAME = os.environ.get("KUBELAB_ADDRESSING", "static") == "names"
APISERVER = "apiserver" if BY_NAME else f"{NET}.20"
GRPC = f"{APISERVER}:6444"

IDENTITIES = {"admin": ("admin", "system:masters"),
              "controller-manager": ("system:kube-controller-manager", "system:masters"),
              "scheduler": ("system:kube-scheduler", "system:masters"),
              **{f"worker-{n}": (f"system:node:worker-{n}", "system:nodes,system:masters")
                 for n in range(1, MAX_WORKERS + 1)}}


def store_host(n: int) -> str:
    return f"store-{n}" if BY_NAME else f"{NET}.{10 + n}"


HOSTS_DIR = SHARED / "hosts"
HOSTS_BEGIN, HOSTS_END = "# kubelab machines (begin)", "# kubelab machines (end)"


def own_address() -> str:
    """This machine's address on the cluster network (a swarm container also has one on
    docker_gwbridge)."""
    import subprocess
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
        addr = line.split()[3].split("/")[0]
        if addr.startswith(NET + "."):
            return addr
    raise SystemExit(f"kubelab.container: no address in {NET}.0/24 on this machine")


def register(role: str) -> None:
    """Publish this machine's address under its role name in the shared volume."""
    HOSTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = HOSTS_DIR / f".{role}.tmp"
    tmp.write_text(own_address())
    tmp.replace(HOSTS_DIR / role)


def hosts_block() -> str:
    lines = []
    for f in sorted(HOSTS_DIR.glob("[!.]*")):
        try:
            lines.append(f"{f.read_text().strip()}\t{f.name}")
        except OSError:
            continue
    return "\n".join([HOSTS_BEGIN, *lines, HOSTS_END])


def sync_hosts_file(path: Path = Path("/etc/hosts")) -> bool:
    """Keep the machines' names in /etc/hosts (rewritten in place: Docker bind-mounts it).
    Returns whether it changed."""
    text = path.read_text()
    block = hosts_block()
    if HOSTS_BEGIN in text and HOSTS_END in text:
        head, rest = text.split(HOSTS_BEGIN, 1)
        tail = rest.split(HOSTS_END, 1)[1]
        new = head + block + tail
    else:
        new = text.rstrip("\n") + "\n" + block + "\n"
    if new == text:
        return False
    with open(path, "r+") as f:
        f.write(new)
        f.truncate()
    return True


def start_hosts_sync(role: str) -> None:
    """Name-based addressing without Docker's DNS: every machine registers its address in the
    shared volume and a small process keeps every machine's /etc/hosts in step (a restarted
    task comes back with a new address; its peers resolve the name again when they reconnect).
    Swarm's service DNS is not used: it is not there on every engine (on overlay networks of an
    engine started with `--iptables=false`, as on the machines kubelab is tested on, Docker's
    embedded DNS does not answer), and this works on any shared volume."""
    import time
    register(role)  # once: a task that swarm is replacing must not take its name back
    sync_hosts_file()
    if os.fork() == 0:
        os.setsid()
        while True:
            try:
                sync_hosts_file()
            except OSError as e:
                print(f"kubelab.container: hosts sync: {e}", file=sys.stderr)
            time.sleep(0.5)


def worker_ip(n: int) -> str:
    return f"{NET}.{100 + n}"


def ensure_tokens() -> None:
    """tokens.csv for the API server, a token file per identity and the kubelet auth token —
    made once, by the first machine to start (the others wait on the lock)."""
    SHARED.mkdir(parents=True, exist_ok=True)
    with open(SHARED / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (SHARED / "tokens.csv").exists():
            return
        rows = []
        for ident, (user, groups) in IDENTITIES.items():
            tok = secrets.token_hex(24)
            rows.append(f'{tok},{user},{user},"{groups}"')
            (SHARED / f"{ident}.token").write_text(tok)
        (SHARED / "kubelet-auth-token").write_text(secrets.token_hex(24))
        tmp = SHARED / "tokens.csv.tmp"
        tmp.write_text("\n".join(rows) + "\n")
        tmp.replace(SHARED / "tokens.csv")


def write_host_kubeconfig(cert_dir: Path) -> None:
    """The admin kubeconfig for the host: the published API port, the CA inlined."""
    import base64

    from apiserver.certs import ensure_ca
    ca, _ = ensure_ca(str(cert_dir))
    # the controller manager publishes the CA (kube-root-ca.crt): share it
    shared_ca = SHARED / "ca.crt"
    if not shared_ca.exists() or shared_ca.read_bytes() != Path(ca).read_bytes():
        (SHARED / "ca.crt.tmp").write_bytes(Path(ca).read_bytes())
        (SHARED / "ca.crt.tmp").replace(shared_ca)
    token = (SHARED / "admin.token").read_text().strip()
    ca_b64 = base64.b64encode(Path(ca).read_bytes()).decode()
    text = ("apiVersion: v1\nkind: Config\n"
            "clusters:\n- name: kubelab\n  cluster:\n"
            f"    server: {PUBLISHED_API}\n    certificate-authority-data: {ca_b64}\n"
            "users:\n- name: admin\n  user:\n"
            f"    token: {token}\n"
            "contexts:\n- name: kubelab\n  context:\n    cluster: kubelab\n    user: admin\n"
            "current-context: kubelab\n")
    KUBECONFIG_DIR.mkdir(parents=True, exist_ok=True)
    tmp = KUBECONFIG_DIR / ".config.tmp"
    tmp.write_text(text)
    os.chmod(tmp, 0o644)  # the host user runs kubectl with it
    tmp.replace(KUBECONFIG_DIR / "config")


def argv_for(role: str) -> list[str]:
    py = sys.executable
    if role.startswith("store-"):
        n = int(role.split("-", 1)[1])
        ip = store_host(n)
        initial = ",".join(f"store-{i}=http://{store_host(i)}:2380" for i in range(1, STORES + 1))
        return [py, "-m", "etcdlite", "--name", role, "--data-dir", str(DATA / "store"),
                "--listen-client-urls", f"http://{ip}:2379",
                "--advertise-client-urls", f"http://{ip}:2379",
                "--listen-peer-urls", f"http://{ip}:2380",
                "--initial-advertise-peer-urls", f"http://{ip}:2380",
                "--initial-cluster", initial, "--initial-cluster-token", "kubelab",
                "--listen-metrics-urls", f"http://{ip}:2381"]
    if role == "apiserver":
        cert_dir = DATA / "apiserver"
        write_host_kubeconfig(cert_dir)
        advertise = own_address() if BY_NAME else APISERVER
        return [py, "-m", "apiserver",
                "--etcd-servers", ",".join(f"http://{store_host(i)}:2379"
                                           for i in range(1, STORES + 1)),
                "--bind-address", "0.0.0.0", "--advertise-address", advertise,
                "--secure-port", "6443", "--grpc-port", "6444", "--cert-dir", str(cert_dir),
                "--tls-san", "127.0.0.1", "--tls-san", "localhost", "--tls-san", APISERVER,
                "--token-auth-file", str(SHARED / "tokens.csv"),
                "--kubelet-client-token-file", str(SHARED / "kubelet-auth-token"),
                "--service-cluster-ip-range", SERVICE_CIDR]
    if role in ("controller-manager", "scheduler"):
        module, ip, port = {"controller-manager": ("controllers", f"{NET}.21", "10257"),
                            "scheduler": ("scheduler", f"{NET}.22", "10259")}[role]
        extra = ["--root-ca-file", str(SHARED / "ca.crt")] if role == "controller-manager" else []
        return [py, "-m", module, "--server", GRPC, "--token-file",
                str(SHARED / f"{role}.token"), "--identity", os.environ.get("HOSTNAME", role),
                "--bind-address", "0.0.0.0", "--secure-port", port, "--time-scale", TIME_SCALE,
                *extra]
    if role.startswith("worker-"):
        n = int(role.split("-", 1)[1])
        ip = own_address() if BY_NAME else worker_ip(n)
        return [py, "-m", "nodeagent", "--node-name", role, "--node-ip", ip,
                "--pod-cidr", f"10.244.{n}.0/24", "--network", "bridge",
                "--root-dir", str(DATA / "node"), "--bind-address", "0.0.0.0",
                "--port", "10250", "--cluster-dns", CLUSTER_DNS,
                "--cluster-domain", "cluster.local",
                "--kubelet-auth-token-file", str(SHARED / "kubelet-auth-token"),
                "--time-scale", TIME_SCALE, "--server", GRPC,
                "--token-file", str(SHARED / f"{role}.token"),
                "--proxy-args", (f"--dns-port 53 --ingress-http-port 80 --ingress-https-port 443 "
                                 f"--healthz-port 10256 --lb-pool {LB_POOL}")]
    raise SystemExit(f"kubelab.container: unknown role {role!r} (store-N, apiserver, "
                     "controller-manager, scheduler, worker-N)")


def health(role: str) -> int:
    """Exit 0 when the machine serves: the store's /health, the API server's /readyz, the
    components' /healthz, a worker's Node Ready."""
    import ssl
    import urllib.request
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if role.startswith("store-"):
        url = f"http://{store_host(int(role.split('-', 1)[1]))}:2381/health"
    elif role == "apiserver":
        url = "https://127.0.0.1:6443/readyz"
    elif role == "controller-manager":
        url = "http://127.0.0.1:10257/healthz"
    elif role == "scheduler":
        url = "http://127.0.0.1:10259/healthz"
    elif role.startswith("worker-"):
        url = f"https://{APISERVER}:6443/api/v1/nodes/{role}"
    else:
        return 2
    req = urllib.request.Request(url)
    if role.startswith("worker-"):
        req.add_header("Authorization",
                       f"Bearer {(SHARED / 'admin.token').read_text().strip()}")
    try:
        with urllib.request.urlopen(req, timeout=3, context=ctx) as r:
            body = r.read()
    except Exception as e:  # noqa: BLE001 - any failure is "not healthy"
        print(f"{role}: {e}")
        return 1
    if role.startswith("worker-"):
        import json
        conds = (json.loads(body).get("status") or {}).get("conditions") or []
        ok = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
        print(f"{role}: node {'Ready' if ok else 'not Ready'}")
        return 0 if ok else 1
    return 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit(__doc__)
    if args[0] == "health":
        raise SystemExit(health(args[1] if len(args) > 1 else os.environ.get("KUBELAB_ROLE", "")))
    role = args[0]
    ensure_tokens()
    if BY_NAME:
        start_hosts_sync(role)
    DATA.mkdir(parents=True, exist_ok=True)
    argv_ = argv_for(role) + args[1:]
    if role == "controller-manager":
        os.environ.setdefault("KUBELAB_LB_POOL", LB_POOL)
    sys.stdout.flush()
    os.execv(argv_[0], argv_)


if __name__ == "__main__":
    main()
