"""`python -m proxy`: the per-worker node proxy — userspace kube-proxy (Service VIPs,
NodePorts, external and LoadBalancer IPs), the cluster DNS server and the ingress controller,
sharing one set of informers. Health on node-ip:--healthz-port (/healthz /readyz /metrics)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import logging
import signal
import subprocess
import sys
import time

from kubelab import runtime, timescale
from kubelab.client import InformerFactory, add_client_flags, client_from_args
from kubelab.health import serve_health

from .endpoints import EndpointIndex
from .l4 import Proxier
from .lbholder import LBHolder
from .servicetable import build_table, cluster_ips

log = logging.getLogger("proxy")

DUMMY_IFACE = "kube-ipvs0"
RESYNC = 30.0  # kube-proxy's --sync-period default, scaled


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="proxy", description=__doc__)
    p.add_argument("--node-name", required=True)
    p.add_argument("--node-ip", required=True)
    p.add_argument("--network", choices=("loopback", "bridge", "netns"), default="loopback")
    p.add_argument("--cluster-dns", default="127.96.0.10")
    p.add_argument("--dns-port", type=int, default=53)
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--ingress-http-port", type=int, default=80)
    p.add_argument("--ingress-https-port", type=int, default=443)
    p.add_argument("--healthz-port", type=int, default=10256)
    p.add_argument("--lb-pool", default="127.30.0.200-127.30.0.250")
    p.add_argument("--time-scale", type=float, default=None)
    p.add_argument("--no-dns", action="store_true", help="do not run the cluster DNS server")
    p.add_argument("--no-ingress", action="store_true", help="do not run the ingress controller")
    p.add_argument("-v", "--verbose", action="store_true")
    add_client_flags(p)
    return p.parse_args(argv)


def resolv_upstreams(path: str = "/etc/resolv.conf", exclude: set[str] | None = None) -> list[str]:
    out: list[str] = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] not in (exclude or ()):
                    out.append(parts[1])
    except OSError:
        pass
    return out


def _call_with_supported(factory, *args, **kwargs):
    """Construct factory(*args, **kwargs), dropping keyword arguments it does not take."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return factory(*args, **kwargs)
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return factory(*args, **kwargs)


def _optional(module: str, attr: str):
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        if e.name == module:  # the add-on is not there (a broken one raises)
            log.warning("%s is not available: %s", module, e)
            return None
        raise
    return getattr(mod, attr, None)


class DummyInterface:
    """The Service VIPs as /32 addresses on a dummy interface `kube-ipvs0` (bridge/netns mode),
    as kube-proxy's IPVS mode does. Where the kernel has no dummy driver, the addresses go on
    `lo` under the label `lo:kipvs` instead (local all the same)."""

    def __init__(self, name: str = DUMMY_IFACE) -> None:
        self.name = name
        self.dev = name
        self.label: str | None = None
        self.ready = False

    def _ip(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", *args], check=False, capture_output=True, text=True,
                              timeout=10)

    def ensure(self) -> None:
        if self._ip("link", "show", self.name).returncode != 0:
            r = self._ip("link", "add", self.name, "type", "dummy")
            if r.returncode != 0:
                log.warning("cannot create %s (%s); Service VIPs go on lo", self.name,
                            r.stderr.strip())
                self.dev, self.label = "lo", "lo:kipvs"
        self._ip("link", "set", self.dev, "up")
        self.ready = True

    def addresses(self) -> set[str]:
        args = ["-o", "addr", "show", "dev", self.dev]
        if self.label:
            args += ["label", self.label]
        out = self._ip(*args).stdout
        return {line.split()[3].split("/")[0] for line in out.splitlines()
                if len(line.split()) > 3 and line.split()[2] in ("inet", "inet6")}

    def sync(self, ips: set[str]) -> None:
        if not self.ready:
            self.ensure()
        have = self.addresses()
        extra = ["label", self.label] if self.label else []
        for ip in sorted(ips - have):
            r = self._ip("addr", "add", f"{ip}/{128 if ':' in ip else 32}", "dev", self.dev,
                         *([] if ":" in ip else extra))
            if r.returncode != 0:
                log.warning("cannot add %s to %s: %s", ip, self.dev, r.stderr.strip())
        for ip in sorted(have - ips):
            self._ip("addr", "del", f"{ip}/{128 if ':' in ip else 32}", "dev", self.dev)


class NodeProxy:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = client_from_args(args, user_agent="kube-proxy/kubelab")
        self.informers = InformerFactory(self.client)
        self.services = self.informers.informer("Service")
        self.endpoints = EndpointIndex(self.informers)
        self.bridge = args.network != "loopback"
        self.proxier = Proxier(freebind=self.bridge)
        from controllers.servicelb import parse_pool
        self.holder = LBHolder(self.client, args.node_name, network=args.network,
                               node_ip=args.node_ip, pool=parse_pool(args.lb_pool or ""),
                               on_change=self.kick)
        self.dummy = DummyInterface() if self.bridge else None
        self.dirty = asyncio.Event()
        self.synced_once = False
        self.last_sync = 0.0
        self.sync_count = 0
        self.sync_seconds = 0.0
        self.addons: list = []
        self.stopping = asyncio.Event()
        self.services.add_handler(lambda *_: self.kick())
        self.endpoints.add_listener(lambda *_: self.kick())

    def kick(self) -> None:
        self.dirty.set()

    # ------------------------------------------------------------------ reconcile
    async def sync(self) -> None:
        t0 = time.perf_counter()
        services = self.services.list()
        self.holder.sync(services)
        table = build_table(services, self.endpoints.get, node_name=self.args.node_name,
                            node_ip=self.args.node_ip, held_ips=self.holder.held)
        if self.dummy is not None:
            vips = cluster_ips(table) | {self.args.cluster_dns}
            await asyncio.to_thread(self.dummy.sync, vips)
        await self.proxier.apply(table)
        self.sync_seconds = time.perf_counter() - t0
        self.sync_count += 1
        self.last_sync = time.time()

    async def sync_loop(self) -> None:
        period = timescale.scaled(RESYNC)
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), period)
            self.dirty.clear()
            try:
                await self.sync()
                if self.informers_synced():
                    self.synced_once = True
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("proxy sync failed")
                await asyncio.sleep(0.5)
                self.kick()
            if self.proxier.failed:  # retry binds (e.g. an address not there yet) soon
                asyncio.get_running_loop().call_later(1.0, self.kick)

    def informers_synced(self) -> bool:
        return self.services.synced.is_set() and self.endpoints.synced.is_set()

    def ready(self) -> bool:
        return self.synced_once

    def metrics(self) -> str:
        st = self.proxier.stats
        rows = [
            ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge", self.last_sync),
            ("kubeproxy_sync_proxy_rules_duration_seconds_last", "gauge", self.sync_seconds),
            ("kubeproxy_sync_proxy_rules_total", "counter", self.sync_count),
            ("kubelab_proxy_listeners", "gauge", len(self.proxier.listeners)),
            ("kubelab_proxy_listeners_failed", "gauge", len(self.proxier.failed)),
            ("kubelab_proxy_connections_active", "gauge", self.proxier.connections()),
            ("kubelab_proxy_connections_accepted_total", "counter", st.accepted),
            ("kubelab_proxy_connections_rejected_total", "counter", st.rejected),
            ("kubelab_proxy_endpoint_dial_failures_total", "counter", st.dial_failures),
            ("kubelab_proxy_connections_closed_by_update_total", "counter", st.closed_by_update),
            ("kubelab_proxy_udp_flows_total", "counter", st.udp_flows),
            ("kubelab_proxy_loadbalancer_ips_held", "gauge", len(self.holder.held)),
        ]
        return "".join(f"# TYPE {n} {t}\n{n} {v}\n" for n, t, v in rows)

    # ------------------------------------------------------------------ add-ons
    def make_addons(self) -> None:
        a = self.args
        if not a.no_dns:
            cls = _optional("proxy.dns", "DNSServer")
            if cls is not None:
                upstreams = resolv_upstreams(exclude={a.cluster_dns})
                self.addons.append(("dns", _call_with_supported(
                    cls, self.informers, cluster_domain=a.cluster_domain, listen_ip=a.cluster_dns,
                    port=a.dns_port, upstreams=upstreams, endpoint_index=self.endpoints)))
        if not a.no_ingress:
            cls = _optional("proxy.ingress", "IngressController")
            if cls is not None:
                self.addons.append(("ingress", _call_with_supported(
                    cls, self.client, self.informers, self.endpoints, node_name=a.node_name,
                    node_ip=a.node_ip, http_port=a.ingress_http_port,
                    https_port=a.ingress_https_port)))

    async def run(self) -> None:
        a = self.args
        if self.dummy is not None:
            await asyncio.to_thread(self.dummy.ensure)
        self.make_addons()
        self.informers.start()
        health = await serve_health(a.node_ip, a.healthz_port, self.ready, self.metrics)
        loop_task = asyncio.create_task(self.sync_loop(), name="proxy-sync")
        try:
            while True:
                try:
                    await self.informers.wait_synced(timeout=5)
                    break
                except TimeoutError:
                    log.info("waiting for the informers to sync")
            self.kick()
            for name, addon in self.addons:
                try:
                    await addon.start()
                    log.info("%s started", name)
                except Exception:
                    log.exception("%s failed to start", name)
            self.informers.start()  # informers an add-on asked for in start()
            log.info("proxy on %s (%s) running", a.node_name, a.node_ip)
            await self.stopping.wait()
        finally:
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop_task
            for name, addon in reversed(self.addons):
                try:
                    await addon.stop()
                except Exception:
                    log.exception("%s failed to stop", name)
            await self.holder.stop()
            await self.proxier.close()
            if self.dummy is not None:
                await asyncio.to_thread(self.dummy.sync, set())
            await health.cleanup()
            await self.informers.stop()
            await self.client.close()


async def amain(args: argparse.Namespace) -> None:
    proxy = NodeProxy(args)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, proxy.stopping.set)
    await proxy.run()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=f"%(asctime)s proxy[{args.node_name}] %(levelname)s "
                               "%(name)s: %(message)s", stream=sys.stderr)
    if args.time_scale:
        timescale.set_scale(args.time_scale)
    runtime.prepare()
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
