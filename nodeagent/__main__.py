"""`python -m nodeagent`: the node agent. `--hollow N` runs N hollow nodes (no processes); the
real node agent that runs pods comes with its own issue."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from kubelab import timescale
from kubelab.client import add_client_flags, client_from_args
from kubelab.health import serve_health


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="nodeagent", description="kubelab node agent")
    add_client_flags(p)
    p.add_argument("--hollow", type=int, default=0, help="run N hollow nodes")
    p.add_argument("--node-prefix", default="hollow-node")
    p.add_argument("--cpu", default="4")
    p.add_argument("--memory", default="8Gi")
    p.add_argument("--max-pods", default="110")
    p.add_argument("--bind-address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=10250, help="health (HTTP)")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s nodeagent %(name)s %(levelname)s %(message)s")
    timescale.set_scale(args.time_scale)
    if not args.hollow:
        sys.exit("nodeagent: only --hollow N is implemented so far (the real node agent "
                 "comes with the nodeagent issue)")
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover
        pass

    async def amain():
        from .hollow import HollowFleet
        client = client_from_args(args, "kubelet")
        fleet = HollowFleet(client, args.hollow, args.node_prefix, args.cpu, args.memory,
                            args.max_pods, args.port)
        health = await serve_health(args.bind_address, args.port, lambda: fleet.ready)
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

    asyncio.run(amain())


if __name__ == "__main__":
    main()
