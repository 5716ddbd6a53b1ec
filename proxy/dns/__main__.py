"""`python -m proxy.dns`: the cluster DNS alone (the proxy process normally runs it).

Records come from the API (`--server`, `--token-file`) or, for tests and benchmarks, from a
JSON/YAML file of Service/EndpointSlice/Namespace objects (`--objects`). Prints `READY` on
stdout once it listens."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from .forward import upstreams_from_resolv_conf
from .server import DNSServer


def _load_objects(path: str) -> list[dict]:
    with open(path) as f:
        text = f.read()
    if path.endswith(".json"):
        data = json.loads(text)
    else:
        import yaml
        data = [d for d in yaml.safe_load_all(text) if d]
        if len(data) == 1:
            data = data[0]
    if isinstance(data, dict):
        data = data.get("items", [data])
    return data


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="proxy.dns", description="kubelab cluster DNS")
    p.add_argument("--server", help="gRPC cluster API address host:port")
    p.add_argument("--token-file")
    p.add_argument("--objects", help="serve these objects instead of the API's (JSON/YAML)")
    p.add_argument("--listen", default="127.96.0.10")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--upstream", action="append", default=None,
                   help="upstream resolver ip[:port] (repeatable); default: /etc/resolv.conf")
    p.add_argument("--upstream-timeout", type=float, default=2.0)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s dns %(name)s %(levelname)s %(message)s")
    if not args.objects and not (args.server and args.token_file):
        p.error("--objects or --server and --token-file are required")
    from kubelab import runtime
    runtime.prepare()
    token = ""
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    upstreams = args.upstream if args.upstream is not None else upstreams_from_resolv_conf()

    async def amain() -> None:
        client = None
        if args.objects:
            from .static import StaticInformers
            informers = StaticInformers(_load_objects(args.objects))
        else:
            from kubelab.client import ClusterClient, InformerFactory
            client = ClusterClient(args.server, token, user_agent="kubelab-dns")
            informers = InformerFactory(client)
        server = DNSServer(informers, cluster_domain=args.cluster_domain, listen_ip=args.listen,
                           port=args.port, upstreams=[u for u in upstreams if u],
                           upstream_timeout=args.upstream_timeout)
        await server.start()
        print("READY", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()
        if hasattr(informers, "stop"):
            await informers.stop()
        if client is not None:
            await client.close()

    asyncio.run(amain())
    sys.exit(0)


if __name__ == "__main__":
    main()
