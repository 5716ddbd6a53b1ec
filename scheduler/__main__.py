"""`python -m scheduler`: the kubelab scheduler (kube-scheduler)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket

from kubelab import runtime, timescale
from kubelab.client import add_client_flags, client_from_args
from kubelab.health import serve_health

from .scheduler import SchedulerServer


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="scheduler", description="kubelab scheduler")
    add_client_flags(p)
    p.add_argument("--leader-elect", default="true", choices=["true", "false"])
    p.add_argument("--identity", default=None)
    p.add_argument("--bind-address", default="127.0.0.1")
    p.add_argument("--secure-port", type=int, default=10259, help="health and metrics (HTTP)")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s scheduler %(name)s %(levelname)s %(message)s")
    timescale.set_scale(args.time_scale)
    runtime.prepare()

    async def amain():
        client = client_from_args(args, "kube-scheduler")
        server = SchedulerServer(client, args.identity or
                                 f"{socket.gethostname()}-{args.secure_port}",
                                 args.leader_elect == "true")
        health = await serve_health(args.bind_address, args.secure_port, lambda: True,
                                    server.metrics_text)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(server.run())
        await asyncio.wait([runner, asyncio.create_task(stop.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if runner.done() and not runner.cancelled() and runner.exception():
            logging.getLogger("scheduler").error("scheduler failed: %r", runner.exception())
        runner.cancel()
        await health.cleanup()
        await client.close()

    asyncio.run(amain())


if __name__ == "__main__":
    main()
