"""A stand-in for the node agent's runtime (nodeagent/runtime.py's contract) for the streaming
tests: pods whose containers are real subprocesses, run by a small in-process "shim" that
writes CRI-format log files and serves an attach socket with the contract's framing
(1 byte channel + 4 byte big-endian length + payload). `FakeNode` serves
nodeagent.server.make_app over HTTPS from a background thread's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import json
import os
import pty
import signal
import ssl
import struct
import termios
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.remotecommand import ShimDecoder, shim_frame


def cri_timestamp(t: datetime.datetime | None = None) -> str:
    t = t or datetime.datetime.now(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class FakeShim:
    """Runs one container process; logs in the CRI format; serves attach clients."""

    def __init__(self, argv: list[str], log_path: Path, sock_path: Path, tty: bool = False,
                 stdin: bool = False, bind_ip: str = "127.0.0.1"):
        self.argv, self.log_path, self.sock_path = argv, log_path, sock_path
        self.tty, self.stdin = tty, stdin
        self.bind_ip = bind_ip
        self.proc: asyncio.subprocess.Process | None = None
        self.clients: set[asyncio.StreamWriter] = set()
        self.exit_code: int | None = None
        self._master = -1
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, KUBELAB_BIND_IP=self.bind_ip)
        if self.tty:
            self._master, slave = pty.openpty()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                start_new_session=True)
            os.close(slave)
            r = asyncio.StreamReader()
            loop = asyncio.get_running_loop()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(r),
                                         os.fdopen(os.dup(self._master), "rb", 0))
            self._tasks.append(asyncio.create_task(self._pump(r, "stdout", 1)))
        else:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE if self.stdin else
                asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
            self._tasks.append(asyncio.create_task(self._pump(self.proc.stdout, "stdout", 1)))
            self._tasks.append(asyncio.create_task(self._pump(self.proc.stderr, "stderr", 2)))
        self.server = await asyncio.start_unix_server(self._client, path=str(self.sock_path))
        self._tasks.append(asyncio.create_task(self._wait()))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def write_log(self, stream: str, data: bytes) -> None:
        with open(self.log_path, "ab") as f:
            for line in data.splitlines(keepends=True):
                tag = "F" if line.endswith(b"\n") else "P"
                f.write(f"{cri_timestamp()} {stream} {tag} ".encode() + line.rstrip(b"\n")
                        + b"\n")

    async def _pump(self, r: asyncio.StreamReader, stream: str, ch: int) -> None:
        with contextlib.suppress(OSError):
            while data := await r.read(65536):
                self.write_log(stream, data)
                for w in list(self.clients):
                    with contextlib.suppress(Exception):
                        w.write(shim_frame(ch, data))

    async def _wait(self) -> None:
        code = await self.proc.wait()
        await asyncio.gather(*self._tasks[:-1], return_exceptions=True)
        self.exit_code = code
        for w in list(self.clients):
            with contextlib.suppress(Exception):
                w.write(shim_frame(3, json.dumps({"exitCode": code}).encode()))
                await w.drain()
                w.close()

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.clients.add(w)
        dec = ShimDecoder()
        try:
            while data := await r.read(65536):
                for ch, payload in dec.feed(data):
                    if ch == 0 and self.tty:
                        os.write(self._master, payload if payload else b"\x04")
                    elif ch == 0 and self.proc.stdin is not None:
                        if payload:
                            self.proc.stdin.write(payload)
                        else:
                            self.proc.stdin.close()
                    elif ch == 4 and self.tty:
                        d = json.loads(payload)
                        fcntl.ioctl(self._master, termios.TIOCSWINSZ,
                                    struct.pack("HHHH", d["Height"], d["Width"], 0, 0))
        except (ConnectionError, OSError):
            pass
        finally:
            self.clients.discard(w)

    async def stop(self) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        self.server.close()
        for t in self._tasks:
            t.cancel()
        if self._master >= 0:
            os.close(self._master)


@dataclass
class ExecSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None


@dataclass
class FakeContainer:
    name: str
    dir: Path
    shim: FakeShim | None = None
    restart_count: int = 0
    tty: bool = False
    stdin: bool = False

    @property
    def running(self) -> bool:
        return self.shim is not None and self.shim.running

    def log_path(self, previous: bool = False) -> Path | None:
        n = self.restart_count - 1 if previous else self.restart_count
        p = self.dir / f"{n}.log"
        return p if n >= 0 and p.exists() else None

    @property
    def attach_socket(self) -> Path | None:
        return self.shim.sock_path if self.shim is not None else None

    def exec_spec(self, argv: list[str]) -> ExecSpec:
        return ExecSpec(list(argv), dict(os.environ, KUBELAB_EXEC="1"), None)

    def stats(self) -> tuple[int, int]:
        pid = self.shim.proc.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        cpu_ns = (int(fields[11]) + int(fields[12])) * 1_000_000_000 // tick
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        return cpu_ns, rss


@dataclass
class FakePod:
    namespace: str
    name: str
    uid: str
    ip: str
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    netns_path: str | None = None


class FakeRuntime:
    def __init__(self, root: Path, node_name: str = "fake-node"):
        self.root = root
        self.node_name = node_name
        self.pod_map: dict[tuple[str, str], FakePod] = {}

    def find_pod(self, namespace: str, name: str) -> FakePod | None:
        return self.pod_map.get((namespace, name))

    def pods(self):
        for (ns, name), p in self.pod_map.items():
            yield ns, name, p

    def node_stats(self) -> tuple[int, int]:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        tick = os.sysconf("SC_CLK_TCK")
        busy = sum(int(x) for i, x in enumerate(fields[:8]) if i not in (3, 4))
        mem = {ln.split(":")[0]: int(ln.split()[1]) * 1024
               for ln in Path("/proc/meminfo").read_text().splitlines()}
        return busy * 1_000_000_000 // tick, mem["MemTotal"] - mem["MemAvailable"]

    async def add_pod(self, namespace: str, name: str, ip: str = "127.0.0.1",
                      containers: dict[str, dict] | None = None) -> FakePod:
        uid = f"uid-{namespace}-{name}"
        pod = FakePod(namespace, name, uid, ip)
        for cname, spec in (containers or {}).items():
            d = self.root / "pods" / f"{namespace}_{name}_{uid}" / cname
            d.mkdir(parents=True, exist_ok=True)
            c = FakeContainer(cname, d, tty=spec.get("tty", False),
                              stdin=spec.get("stdin", False))
            if spec.get("argv"):
                await self.start_container(c, spec["argv"])
            pod.containers[cname] = c
        self.pod_map[(namespace, name)] = pod
        return pod

    async def start_container(self, c: FakeContainer, argv: list[str],
                              restart: bool = False) -> None:
        if restart:
            c.restart_count += 1
        sock = Path(f"/tmp/kl-attach-{os.getpid()}-{id(c)}-{c.restart_count}.sock")
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        c.shim = FakeShim(argv, c.dir / f"{c.restart_count}.log", sock, tty=c.tty,
                          stdin=c.stdin)
        await c.shim.start()

    async def stop_all(self) -> None:
        for p in self.pod_map.values():
            for c in p.containers.values():
                if c.shim is not None:
                    await c.shim.stop()
                    with contextlib.suppress(FileNotFoundError):
                        c.shim.sock_path.unlink()


class FakeNode:
    """nodeagent.server over HTTPS (or plain HTTP) in a background event loop."""

    def __init__(self, root: Path, host: str, port: int, token: str,
                 cert: tuple[str, str] | None = None):
        self.root, self.host, self.port, self.token, self.cert = root, host, port, token, cert
        self.loop = asyncio.new_event_loop()
        self.runtime = FakeRuntime(root)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner = None

    def call(self, coro, timeout: float = 20.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> FakeNode:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        from aiohttp import web

        from nodeagent.server import make_app
        self._runner = web.AppRunner(make_app(self.runtime, self.token), shutdown_timeout=1)
        await self._runner.setup()
        ctx = None
        if self.cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*self.cert)
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=ctx).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.cert else 'http'}://{self.host}:{self.port}"

    def stop(self) -> None:
        async def _stop():
            await self.runtime.stop_all()
            if self._runner is not None:
                await self._runner.cleanup()
        try:
            self.call(_stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


def issue_node_cert(ca_crt: str, ca_key: str, out_dir: Path, ip: str) -> tuple[str, str]:
    """A serving certificate for a node agent, signed by the cluster CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    ca = x509.load_pem_x509_certificate(Path(ca_crt).read_bytes())
    ca_k = serialization.load_pem_private_key(Path(ca_key).read_bytes(), None)
    k = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubelet")]))
            .issuer_name(ca.subject).public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .sign(ca_k, hashes.SHA256()))
    out_dir.mkdir(parents=True, exist_ok=True)
    crt, key = out_dir / "node.crt", out_dir / "node.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(crt), str(key)
