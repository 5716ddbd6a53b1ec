"""`python -m nodeagent`: the node agent (kubelet) of one worker, or with `--hollow N` N hollow
nodes that run no processes (nodeagent/hollow.py).

    python -m nodeagent --node-name worker-1 --node-ip 127.30.0.101 --pod-cidr 127.244.1.0/24 \\
        --network loopback --root-dir <state>/worker-1 --port 10250 --cluster-dns 127.96.0.10 \\
        --server 127.30.0.20:6444 --token-file <state>/worker-1/token [--proxy-args '...']
"""

from __future__ import annotations

import os

# the agent forks shims and probes while gRPC threads run: gRPC's fork handlers are not needed
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import logging
import signal
import sys

from kubelab import runtime, timescale
from kubelab.client import add_client_flags, client_from_args
from kubelab.health import serve_health


def _labels(s: str) -> dict:
    out = {}
    for part in (s or "").split(","):
        if part.strip():
            k, _, v = part.partition("=")
            out[k.strip()] = v.strip()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="nodeagent", description="kubelab node agent")
    add_client_flags(p)
    p.add_argument("--hollow", type=int, default=0, help="run N hollow nodes")
    p.add_argument("--node-prefix", default="hollow-node")
    p.add_argument("--node-name", default="")
    p.add_argument("--node-ip", default="")
    p.add_argument("--pod-cidr", default="")
    p.add_argument("--network", default="loopback", choices=["loopback", "bridge", "netns"])
    p.add_argument("--root-dir", default="")
    p.add_argument("--cluster-dns", default="")
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--kubelet-auth-token-file", default="")
    p.add_argument("--tls-cert-file", default="")
    p.add_argument("--tls-private-key-file", default="")
    p.add_argument("--proxy-args", default=None,
                   help="extra proxy flags; the proxy child is started when given (or "
                        "--proxy)")
    p.add_argument("--proxy", action="store_true", help="start the proxy child")
    p.add_argument("--node-labels", default="", help="k=v,k2=v2 extra Node labels")
    p.add_argument("--cpu", default=None, help="cpu capacity (default: the machine's CPUs)")
    p.add_argument("--memory", default=None,
                   help="memory capacity (default: half of the machine's memory)")
    p.add_argument("--max-pods", default="110")
    p.add_argument("--bind-address", default="")
    p.add_argument("--port", type=int, default=10250,
                   help="the node agent's port (hollow: health over HTTP)")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s nodeagent %(name)s %(levelname)s %(message)s")
    timescale.set_scale(args.time_scale)
    runtime.prepare()
    if args.hollow:
        asyncio.run(_hollow(args))
    else:
        missing = [f for f in ("node_name", "node_ip", "pod_cidr", "root_dir")
                   if not getattr(args, f)]
        if missing:
            sys.exit("nodeagent: missing " + ", ".join("--" + m.replace("_", "-")
                                                      for m in missing))
        asyncio.run(_agent(args))


async def _agent(args) -> None:
    from .agent import AgentConfig, NodeAgent, proxy_argv
    log = logging.getLogger("nodeagent")
    token = ""
    if args.kubelet_auth_token_file:
        with open(args.kubelet_auth_token_file) as f:  # noqa: ASYNC230 - once, at start
            token = f.read().strip()
    network = "bridge" if args.network == "netns" else args.network
    args.network = network
    cfg = AgentConfig(
        node_name=args.node_name, node_ip=args.node_ip, pod_cidr=args.pod_cidr,
        root_dir=args.root_dir, network=network, bind_address=args.bind_address or args.node_ip,
        port=args.port, cluster_dns=args.cluster_dns, cluster_domain=args.cluster_domain,
        auth_token=token, tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_private_key_file, cpu=args.cpu or "", memory=args.memory or "",
        max_pods=args.max_pods, labels=_labels(args.node_labels),
        proxy_argv=proxy_argv(args) if (args.proxy or args.proxy_args is not None) else None)
    client = client_from_args(args, "kubelet")
    agent = NodeAgent(cfg, client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(agent.run())
    await asyncio.wait([task, asyncio.create_task(stop.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    if task.done() and not task.cancelled() and task.exception():
        log.error("node agent failed: %r", task.exception())
    task.cancel()
    await agent.shutdown()
    try:
        await asyncio.wait_for(client.close(), 1.0)
    except (TimeoutError, Exception) as e:  # noqa: BLE001
        log.debug("closing the client: %r", e)
    log.info("node agent exiting")
    # nothing left worth waiting for (gRPC and executor threads can hold the interpreter for
    # seconds at exit); the pods run on under their shims
    logging.shutdown()
    os._exit(0)


async def _hollow(args) -> None:
    from .hollow import HollowFleet
    client = client_from_args(args, "kubelet")
    fleet = HollowFleet(client, args.hollow, args.node_prefix, args.cpu or "4",
                        args.memory or "8Gi", args.max_pods, args.port)
    health = await serve_health(args.bind_address or "127.0.0.1", args.port, lambda: fleet.ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(fleet.run())
    await asyncio.wait([task, asyncio.create_task(stop.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    if task.done() and task.exception():
        logging.getLogger("nodeagent").error("hollow nodes failed: %r", task.exception())
    task.cancel()
    await health.cleanup()
    await client.close()


if __name__ == "__main__":
    main()
