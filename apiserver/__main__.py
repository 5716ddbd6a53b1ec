"""`python -m apiserver`: the kubelab API server (flags follow kube-apiserver's names)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="apiserver", description="kubelab API server")
    p.add_argument("--etcd-servers", "--store-endpoints", dest="etcd_servers",
                   default="http://127.0.0.1:2379", help="comma-separated etcd v3 endpoints")
    p.add_argument("--bind-address", default="127.0.0.1")
    p.add_argument("--secure-port", type=int, default=6443)
    p.add_argument("--grpc-port", type=int, default=6444, help="gRPC cluster API (0 = off)")
    p.add_argument("--advertise-address", default=None)
    p.add_argument("--cert-dir", default="./apiserver-certs")
    p.add_argument("--tls-san", action="append", default=[],
                   help="extra names/IPs for the serving certificate")
    p.add_argument("--token-auth-file", default=None,
                   help="CSV token,user,uid,\"groups\" (created with an admin token if missing)")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/16")
    p.add_argument("--service-node-port-range", default="30000-32767")
    p.add_argument("--storage-timeout", type=float, default=5.0,
                   help="seconds a request waits for the store before 503")
    p.add_argument("--kubelet-client-token-file", default=None,
                   help="bearer token the API server sends to node agents (default: "
                        "<cert-dir>/../kubelet-auth-token, read at each request)")
    p.add_argument("--kubelet-certificate-authority", default=None,
                   help="verify node agent serving certs against this CA (like "
                        "kube-apiserver, node certs are not verified without it)")
    p.add_argument("--endpoint-reconciler-type", default="lease", choices=["lease", "none"],
                   help="lease: keep this API server in the kubernetes Service's endpoints "
                        "through a store lease (several API servers share the Service)")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> None:
    from .nodeproxy import NodeClientConfig
    from .server import APIServer
    srv = APIServer(args)
    srv.rest.subs.configure_node_client(NodeClientConfig(
        token_file=args.kubelet_client_token_file or os.path.join(
            os.path.dirname(os.path.abspath(args.cert_dir)), "kubelet-auth-token"),
        ca_file=args.kubelet_certificate_authority))
    await srv.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await srv.rest.subs.close()
    await srv.stop()


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s apiserver %(name)s %(levelname)s %(message)s")
    from kubelab import runtime
    runtime.prepare()
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
