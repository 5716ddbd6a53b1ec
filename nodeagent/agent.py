"""The node agent (kubelet): registers the Node, renews its Lease, reports NodeStatus, runs a
pod worker per pod bound to it, serves 10250 and keeps its proxy child running.

Restart safety: containers run under shims that outlive the agent; on start the agent re-adopts
what `<root-dir>` records (nodeagent/runtime.py) before it lists pods, hands each bound pod's
records to its worker, and reaps the records (processes, sandboxes, cgroups) of pods that no
longer exist — e.g. deleted while the node was down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from kubelab import timescale
from kubelab.client import APIError, ClusterClient, Informer
from kubelab.events import EventRecorder

from . import cgroups
from .podworker import (
    IMAGE_BACKOFF_INITIAL,
    IMAGE_BACKOFF_MAX,
    Backoff,
    PodWorker,
    container_backoff,
)
from .runtime import Runtime
from .sandbox import make_sandbox_driver
from .status import NodeSpec, lease_object, node_object, node_status

log = logging.getLogger(__name__)

LEASE_DURATION = 40
LEASE_RENEW = 10.0
STATUS_REPORT = 300.0
EVENT_BURST = 25
EVENT_REFILL = 300.0


@dataclasses.dataclass
class AgentConfig:
    node_name: str
    node_ip: str
    pod_cidr: str
    root_dir: str
    network: str = "loopback"
    bind_address: str = ""
    port: int = 10250
    cluster_dns: str = ""
    cluster_domain: str = "cluster.local"
    auth_token: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    cpu: str = ""
    memory: str = ""
    max_pods: str = "110"
    labels: dict = dataclasses.field(default_factory=dict)
    proxy_argv: list[str] | None = None   # full argv of the proxy child, None: no proxy


def keep_transitions(new: dict, old: dict) -> dict:
    """A condition keeps its lastTransitionTime while its status does not change."""
    prev = {c.get("type"): c for c in old.get("conditions") or []}
    for c in new.get("conditions") or []:
        p = prev.get(c["type"])
        if p and p.get("status") == c.get("status") and p.get("lastTransitionTime"):
            c["lastTransitionTime"] = p["lastTransitionTime"]
    return new


def machine_share() -> tuple[str, str]:
    """Default capacity: every CPU and half of the machine's memory (several workers share
    one machine; the scheduler only needs consistent numbers)."""
    cpu = str(os.cpu_count() or 1)
    mem_kib = 8 * 1024 * 1024
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return cpu, f"{mem_kib // 2 // 1024}Mi"


class _Lookup:
    """What env and volume set-up read from the informer caches."""

    def __init__(self, cms: Informer, secrets: Informer, pvcs: Informer, pvs: Informer,
                 sas: Informer):
        self.cms = cms
        self.secret_inf = secrets
        self.pvcs = pvcs
        self.pvs = pvs
        self.sas = sas

    def configmap(self, namespace: str, name: str) -> dict | None:
        return self.cms.get(namespace, name)

    def secret(self, namespace: str, name: str) -> dict | None:
        return self.secret_inf.get(namespace, name)

    def secrets(self, namespace: str) -> list[dict]:
        return self.secret_inf.list(namespace)

    def pvc(self, namespace: str, name: str) -> dict | None:
        return self.pvcs.get(namespace, name)

    def pv(self, name: str) -> dict | None:
        return self.pvs.get(None, name)

    def service_account(self, namespace: str, name: str) -> dict | None:
        return self.sas.get(namespace, name)


class NodeAgent:
    def __init__(self, cfg: AgentConfig, client: ClusterClient):
        self.cfg = cfg
        self.client = client
        self.node_name = cfg.node_name
        self.node_ip = cfg.node_ip
        cpu, mem = machine_share()
        self.spec = NodeSpec(
            name=cfg.node_name, internal_ip=cfg.node_ip, pod_cidr=cfg.pod_cidr,
            cpu=cfg.cpu or cpu, memory=cfg.memory or mem, pods=str(cfg.max_pods),
            labels={"node-role.kubernetes.io/worker": "", "kubelab.io/network": cfg.network,
                    **cfg.labels},
            os_image="kubelab", runtime="kubelab://1.0", kubelet_port=cfg.port)
        self.memory_capacity = cgroups.parse_quantity(self.spec.memory)
        self.root = Path(cfg.root_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.driver = make_sandbox_driver(cfg.network, cfg.node_ip, cfg.pod_cidr,
                                          cfg.cluster_dns, cfg.cluster_domain, cfg.root_dir)
        self.runtime = Runtime(self.root, cfg.node_name, self.driver)
        self.recorder = EventRecorder(client, "kubelet", host=cfg.node_name)
        self.backoff = container_backoff()
        self.image_backoff = Backoff(timescale.scaled(IMAGE_BACKOFF_INITIAL),
                                     timescale.scaled(IMAGE_BACKOFF_MAX))
        self.workers: dict[str, PodWorker] = {}
        self.pods = Informer(client, "Pod", field_selector=f"spec.nodeName={cfg.node_name}")
        self.configmaps = Informer(client, "ConfigMap")
        self.secrets = Informer(client, "Secret")
        self.service_inf = Informer(client, "Service")
        self.node_inf = Informer(client, "Node", field_selector=f"metadata.name={cfg.node_name}")
        self.pvcs = Informer(client, "PersistentVolumeClaim")
        self.pvs = Informer(client, "PersistentVolume")
        self.sas = Informer(client, "ServiceAccount")
        self.lookup = _Lookup(self.configmaps, self.secrets, self.pvcs, self.pvs, self.sas)
        self._tokens: dict[tuple, tuple[str, float]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.volumes = self._volume_manager()
        # bridge network: every Node (podCIDR, InternalIP) for the routes between workers
        self.all_nodes = Informer(client, "Node") if hasattr(self.driver, "sync_routes") \
            else None
        self._routes_pending = False
        self.ready = False
        self._events: asyncio.Queue = asyncio.Queue()
        self._event_tokens: dict[str, tuple[float, float]] = {}
        self._tasks: list[asyncio.Task] = []
        self._proxy: subprocess.Popen | None = None
        self._stopping = False
        self._server = None

    def _volume_manager(self):
        try:
            from .volumes import VolumeManager
        except ImportError:
            log.warning("nodeagent.volumes is not available: pods get no volumes")
            return None
        return VolumeManager(str(self.root), self.lookup, self.client,
                             node_info=self.node_info(), token_source=self._token_source)

    def _token_source(self, ns: str, sa: str, audience: str, expiration: int,
                      pod: dict) -> str | None:
        """A service-account token bound to `pod` through the TokenRequest API, reused until
        80% of its lifetime has passed (as the kubelet's token manager). Called from the
        volume manager's worker thread."""
        uid = pod["metadata"].get("uid", "")
        key = (uid, ns, sa, audience, int(expiration))
        now = time.time()
        cached = self._tokens.get(key)
        if cached and now < cached[1]:
            return cached[0]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "metadata": {"name": sa, "namespace": ns},
                "spec": {"audiences": [audience] if audience else [],
                         "expirationSeconds": int(expiration),
                         "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                            "name": pod["metadata"]["name"], "uid": uid}}}
        try:
            fut = asyncio.run_coroutine_threadsafe(
                self.client.create("ServiceAccount", body, ns, subresource="token"), self._loop)
            token = fut.result(15)["status"]["token"]
        except Exception as e:  # noqa: BLE001 - the volume manager reports a missing token
            log.warning("token for %s/%s (pod %s): %s", ns, sa, pod["metadata"]["name"], e)
            return None
        self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
        self._tokens[key] = (token, now + 0.8 * int(expiration))
        return token

    def _on_node(self, event: str, node: dict, old: dict | None) -> None:
        """bridge network: routes to every other worker's pod range through its node IP."""
        if self._routes_pending:
            return
        self._routes_pending = True

        async def sync():
            self._routes_pending = False
            try:
                await asyncio.to_thread(self.driver.sync_routes, self.all_nodes.list(),
                                        self.node_name)
            except Exception as e:  # noqa: BLE001 - retried on the next Node event
                log.warning("pod network routes: %s", e)
        asyncio.get_running_loop().call_later(0.1, lambda: asyncio.ensure_future(sync()))

    # ------------------------------------------------------------------ helpers for workers
    def record(self, pod: dict, type_: str, reason: str, message: str) -> None:
        """Queue an Event (never blocks a pod worker). Like client-go's EventCorrelator spam
        filter, each pod gets a burst of 25 events, then one per 5 minutes (time-scaled)."""
        uid = pod["metadata"].get("uid", "")
        now = time.monotonic()
        tokens, last = self._event_tokens.get(uid, (EVENT_BURST, now))
        tokens = min(EVENT_BURST, tokens + (now - last) / max(timescale.scaled(EVENT_REFILL),
                                                              1e-3))
        if tokens < 1:
            self._event_tokens[uid] = (tokens, now)
            return
        self._event_tokens[uid] = (tokens - 1, now)
        if len(self._event_tokens) > 10000:
            self._event_tokens.clear()
        obj = {"kind": "Pod", "apiVersion": "v1", "metadata": pod["metadata"]}
        self._events.put_nowait((obj, type_, reason, message))

    async def _event_loop(self) -> None:
        while True:
            obj, type_, reason, message = await self._events.get()
            await self.recorder.event(obj, type_, reason, message)

    def services(self) -> list[dict]:
        return self.service_inf.list()

    def node_info(self) -> dict:
        alloc = {"cpu": self.spec.cpu, "memory": self.spec.memory, "pods": self.spec.pods,
                 "ephemeral-storage": "100Gi"}
        return {"allocatable": alloc, "host_ips": [self.node_ip]}

    # ------------------------------------------------------------------ node
    def _write_node_json(self) -> None:
        data = {"nodeName": self.node_name, "nodeIP": self.node_ip,
                "podCIDR": self.cfg.pod_cidr, "network": self.cfg.network,
                "clusterDNS": self.cfg.cluster_dns, "clusterDomain": self.cfg.cluster_domain,
                "agentPid": os.getpid()}
        tmp = self.root / "node.json.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.root / "node.json")

    async def register(self) -> None:
        while True:
            try:
                obj = node_object(self.spec)
                try:
                    await self.client.create("Node", obj)
                    log.info("registered node %s", self.node_name)
                except APIError as e:
                    if not e.conflict:
                        raise
                    cur = await self.client.get("Node", None, self.node_name)
                    changed = False
                    labels = cur["metadata"].setdefault("labels", {})
                    for k, v in obj["metadata"]["labels"].items():
                        if labels.get(k) != v:
                            labels[k] = v
                            changed = True
                    if not cur.get("spec", {}).get("podCIDR"):
                        cur.setdefault("spec", {}).update(obj["spec"])
                        changed = True
                    if changed:
                        cur = await self.client.update("Node", cur)
                    cur["status"] = keep_transitions(node_status(self.spec),
                                                     cur.get("status") or {})
                    await self.client.update_status("Node", cur)
                return
            except APIError as e:
                log.warning("registering node %s: %s; retrying", self.node_name, e)
                await asyncio.sleep(1.0)

    async def _renew_lease(self) -> None:
        now = time.time()
        lease = await self.client.get_or_none("Lease", "kube-node-lease", self.node_name)
        if lease is None:
            await self.client.create("Lease", lease_object(self.node_name, LEASE_DURATION, now),
                                     "kube-node-lease")
        else:
            lease["spec"] = lease_object(self.node_name, LEASE_DURATION, now)["spec"]
            await self.client.update("Lease", lease)

    async def _lease_loop(self) -> None:
        while True:
            try:
                await self._renew_lease()
            except APIError as e:
                log.debug("lease: %s", e)
            await asyncio.sleep(timescale.scaled(LEASE_RENEW))

    async def _post_status(self) -> None:
        try:
            cur = await self.client.get("Node", None, self.node_name)
        except APIError as e:
            if e.not_found:
                await self.register()
            return
        cur["status"] = keep_transitions(node_status(self.spec), cur.get("status") or {})
        try:
            await self.client.update_status("Node", cur)
        except APIError as e:
            log.debug("node status: %s", e)

    async def _status_loop(self) -> None:
        """NodeStatus every nodeStatusReportFrequency (5 min, scaled), and at once when the
        node lost its Ready condition (the node lifecycle controller marked it Unknown)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(timescale.scaled(STATUS_REPORT), 30.0, max(
                0.2, timescale.scaled(LEASE_RENEW))))
            node = self.node_inf.get(None, self.node_name)
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in ((node or {}).get("status") or {}).get("conditions") or [])
            if not ready or time.monotonic() - last >= min(timescale.scaled(STATUS_REPORT),
                                                          30.0):
                await self._post_status()
                last = time.monotonic()

    # ------------------------------------------------------------------ pods
    def _on_pod(self, event: str, pod: dict, old: dict | None) -> None:
        if pod.get("spec", {}).get("nodeName") != self.node_name:
            return
        uid = pod["metadata"]["uid"]
        w = self.workers.get(uid)
        if event == "DELETED":
            if w is not None:
                w.update(pod)
                w.delete()
            elif uid in self.runtime.pods or uid in self.driver.known_pods():
                asyncio.ensure_future(self._reap(uid))
            return
        if w is None:
            self.workers[uid] = PodWorker(self, pod)
        else:
            w.update(pod)

    async def _reap(self, uid: str) -> None:
        log.info("removing the leftovers of pod %s", uid)
        if self.volumes is not None:
            stub = {"metadata": {"uid": uid, "namespace": "", "name": ""}, "spec": {}}
            try:
                r = self.volumes.teardown(stub)
                if asyncio.iscoroutine(r):
                    await r
            except Exception as e:  # noqa: BLE001
                log.debug("volumes of %s: %s", uid, e)
        await asyncio.to_thread(self.runtime.remove_pod, uid)
        try:
            await asyncio.to_thread(self.driver.teardown, uid)
        except Exception as e:  # noqa: BLE001
            log.warning("sandbox of %s: %s", uid, e)
        cgroups.remove(self.node_name, uid)

    async def _reap_orphans(self) -> None:
        bound = {p["metadata"]["uid"] for p in self.pods.list()}
        known = set(self.runtime.recorded_uids()) | set(self.driver.known_pods())
        if self.volumes is not None and hasattr(self.volumes, "orphaned_pod_uids"):
            known |= set(self.volumes.orphaned_pod_uids(bound))
        for uid in known - bound:
            if uid not in self.workers:
                await self._reap(uid)
        swept = await asyncio.to_thread(cgroups.sweep_empty, self.node_name, bound)
        if swept:
            log.info("removed %d empty cgroups of pods that are gone", swept)

    # ------------------------------------------------------------------ server and proxy
    async def _serve(self) -> None:
        host = self.cfg.bind_address or self.node_ip
        try:
            from .server import make_app
        except ImportError:
            make_app = None
        from aiohttp import web
        if make_app is None:
            from kubelab.health import serve_health
            log.warning("nodeagent.server is not available: serving /healthz only")
            self._server = await serve_health(host, self.cfg.port, lambda: self.ready)
            return
        app = make_app(self.runtime, self.cfg.auth_token)
        import ssl
        crt, key = self.cfg.tls_cert_file, self.cfg.tls_key_file
        if not (crt and key):
            crt, key = await asyncio.to_thread(self_signed_cert, str(self.root / "pki"),
                                               [self.node_ip, self.node_name])
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(crt, key)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, self.cfg.port, ssl_context=ctx).start()
        self._server = runner

    async def _proxy_loop(self) -> None:
        argv = self.cfg.proxy_argv
        if not argv:
            return
        if importlib.util.find_spec("proxy") is None:
            log.info("the proxy package is not installed yet: no proxy for %s", self.node_name)
            return
        delay = 1.0
        while not self._stopping:
            t0 = time.monotonic()
            self._proxy = subprocess.Popen(argv, stdin=subprocess.DEVNULL)  # noqa: ASYNC220
            log.info("started the proxy (pid %d)", self._proxy.pid)
            while self._proxy.poll() is None:
                await asyncio.sleep(0.5)
            if self._stopping:
                return
            log.warning("the proxy exited with %s; restarting", self._proxy.returncode)
            delay = 1.0 if time.monotonic() - t0 > 30 else min(delay * 2, 30.0)
            await asyncio.sleep(delay)

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._write_node_json()
        adopted = self.runtime.adopt()
        if adopted:
            log.info("re-adopting %d pods recorded under %s", len(adopted), self.root)
        self._tasks.append(asyncio.create_task(self._event_loop()))
        await self._serve()
        self._tasks.append(asyncio.create_task(self._proxy_loop()))
        await self.register()
        caches = (self.configmaps, self.secrets, self.service_inf, self.node_inf, self.pvcs,
                  self.pvs, self.sas)
        if self.all_nodes is not None:
            self.all_nodes.add_handler(self._on_node)
            self.all_nodes.start()
        for inf in caches:
            inf.start()
        await asyncio.gather(*(i.synced.wait() for i in caches))
        self.pods.add_handler(self._on_pod)
        self.pods.start()
        await self.pods.synced.wait()
        await self._reap_orphans()
        self.ready = True
        log.info("node %s ready (%s network, pods %s)", self.node_name, self.cfg.network,
                  self.cfg.pod_cidr)
        self._tasks.append(asyncio.create_task(self._lease_loop()))
        self._tasks.append(asyncio.create_task(self._status_loop()))
        await asyncio.gather(*self._tasks)

    async def shutdown(self) -> None:
        """Stop the agent; pods keep running under their shims (as with a kubelet restart).
        Every step is bounded: a stopping worker must not hang its launcher."""
        self._stopping = True
        t0 = time.monotonic()
        for t in self._tasks:
            t.cancel()
        for w in list(self.workers.values()):
            w.task.cancel()
        if self._proxy is not None and self._proxy.poll() is None:
            self._proxy.send_signal(signal.SIGTERM)

        async def bounded(aw, what: str, timeout: float = 2.0) -> None:
            try:
                await asyncio.wait_for(aw, timeout)
            except Exception as e:  # noqa: BLE001
                log.debug("shutdown: %s: %r", what, e)

        steps = [bounded(inf.stop(), "informer") for inf in (
            self.pods, self.configmaps, self.secrets, self.service_inf, self.node_inf,
            self.pvcs, self.pvs, self.sas) + ((self.all_nodes,) if self.all_nodes else ())]
        if self._server is not None:
            steps.append(bounded(self._server.cleanup(), "server"))
        if self._proxy is not None:
            steps.append(bounded(asyncio.to_thread(self._proxy.wait), "proxy", 3.0))
        await asyncio.gather(*steps)
        if self._proxy is not None and self._proxy.poll() is None:
            self._proxy.kill()
        log.info("node agent stopped in %.1fs (pods keep running)", time.monotonic() - t0)


def self_signed_cert(cert_dir: str, hosts: list[str]) -> tuple[str, str]:
    """A self-signed serving certificate for 10250 when none was given (the API server, which
    checks node certificates against the cluster CA, then refuses it: give --tls-cert-file)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    crt, key = os.path.join(cert_dir, "kubelet.crt"), os.path.join(cert_dir, "kubelet.key")
    if os.path.exists(crt) and os.path.exists(key):
        return crt, key
    os.makedirs(cert_dir, exist_ok=True)
    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[-1])])
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(k.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(k, hashes.SHA256()))
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return crt, key


def proxy_argv(args) -> list[str]:
    argv = [sys.executable, "-m", "proxy", "--node-name", args.node_name,
            "--node-ip", args.node_ip, "--network", args.network,
            "--time-scale", str(args.time_scale), "--server", args.server,
            "--token-file", args.token_file]
    if args.cluster_dns:
        argv += ["--cluster-dns", args.cluster_dns]
    return argv + shlex.split(args.proxy_args or "")
