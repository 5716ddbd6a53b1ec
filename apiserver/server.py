"""Assembles the API server: store client, schema, storage, REST (HTTPS) and gRPC front ends."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl

from aiohttp import web

from kubelab.etcdclient import EtcdClient, EtcdError

from .admission import default_ingress_class
from .allocators import Allocators
from .auth import Authorizer, TokenAuthenticator, ensure_token_file
from .bootstrap import MasterLeases, ensure_kubernetes_service
from .certs import cert_dir_lock, ensure_serving_cert
from .kinds import load_all
from .rest import RestAPI
from .serviceaccounts import ChainAuthenticator, ServiceAccountTokens, service_account_admission
from .storage import Storage
from .subresources import SubresourceHandlers

log = logging.getLogger("apiserver")


class APIServer:
    def __init__(self, args):
        self.args = args
        self.kinds = load_all()
        self.etcd = EtcdClient(args.etcd_servers.split(","), timeout=args.storage_timeout,
                               call_timeout=min(args.storage_timeout, 3.0))
        self.storage = Storage(self.etcd, self.kinds)
        self.allocators = Allocators(self.etcd, args.service_cluster_ip_range,
                                     args.service_node_port_range)
        svc = self.kinds.by_kind("", "v1", "Service")
        if svc is not None:
            svc.before_create = self.allocators.service_before_create
            svc.before_update = self.allocators.service_before_update
            svc.after_delete = self.allocators.service_after_delete
        token_file = args.token_auth_file or os.path.join(args.cert_dir, "tokens.csv")
        with cert_dir_lock(args.cert_dir):  # shared by every API server of the cluster
            self.admin_token = ensure_token_file(token_file)
            self.sa_tokens = ServiceAccountTokens(args.cert_dir)
        self.authn = ChainAuthenticator(TokenAuthenticator.from_file(token_file), self.sa_tokens,
                                        self.storage, self.kinds)
        self.storage.admission.append(service_account_admission(self.storage, self.kinds))
        self.storage.admission.append(default_ingress_class(self.storage, self.kinds))
        self.authz = Authorizer()
        advertise = args.advertise_address or args.bind_address
        self.rest = RestAPI(self.storage, self.kinds, self.authn, self.authz,
                            f"{advertise}:{args.secure_port}", None)
        self.rest.subs = SubresourceHandlers(self.storage, self.rest.read_body)
        self.rest.subs.tokens = self.sa_tokens
        self._runner: web.AppRunner | None = None
        self._grpc = None
        self.master_leases: MasterLeases | None = None
        self._tasks: list = []
        if args.endpoint_reconciler_type == "lease" and advertise not in ("0.0.0.0", "::"):
            self.master_leases = MasterLeases(self.etcd, self.storage, self.kinds, advertise,
                                              args.secure_port)

    async def start(self) -> None:
        a = self.args
        hosts = ["127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
                 "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                 self.allocators.reserved_ip(1), a.bind_address] + a.tls_san
        if a.advertise_address:
            hosts.append(a.advertise_address)
        # several API servers may share one cert dir (one CA, one service-account key)
        with cert_dir_lock(a.cert_dir):
            _ca, crt, key = ensure_serving_cert(a.cert_dir,
                                                [h for h in hosts if h != "0.0.0.0"])
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(crt, key)
        await self.storage.start()
        self._runner = web.AppRunner(self.rest.app(), access_log=None,
                                     handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, a.bind_address, a.secure_port, ssl_context=ctx).start()
        if a.grpc_port:
            from .grpc_api import serve_grpc
            self._grpc = await serve_grpc(self, a.bind_address, a.grpc_port)
        log.info("serving Kubernetes API on https://%s:%d", a.bind_address, a.secure_port)
        self._tasks.append(asyncio.create_task(self._bootstrap()))

    async def _bootstrap(self) -> None:
        """Create the system namespaces once the store answers; until then /readyz fails."""
        from .errors import StatusError
        while True:
            try:
                await self.storage.ensure_system_namespaces()
                if self.master_leases is not None:
                    await ensure_kubernetes_service(self.storage, self.kinds,
                                                    self.allocators.reserved_ip(1),
                                                    self.args.secure_port)
                    await self.master_leases.reconcile()
                    self._tasks.append(asyncio.create_task(self.master_leases.run()))
                self.rest.ready = True
                return
            except (StatusError, EtcdError) as e:  # the store is not there (yet)
                log.warning("bootstrap: %s; retrying", e.message)
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.master_leases is not None and self.rest.ready:
            try:  # bounded: a store without quorum must not hold up the shutdown
                await asyncio.wait_for(self.master_leases.remove(), 2.0)
            except TimeoutError:
                log.warning("kubernetes endpoints: could not remove this API server in time")
        if self._grpc is not None:
            await self._grpc.stop(0.5)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.storage.stop()
        await self.etcd.close()
