"""`python -m controllers`: the kubelab controller manager (kube-controller-manager)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket

from kubelab import runtime, timescale
from kubelab.client import add_client_flags, client_from_args
from kubelab.health import serve_health

from .manager import CONTROLLERS, ControllerManager


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="controllers", description="kubelab controller manager")
    add_client_flags(p)
    p.add_argument("--controllers", default="*",
                   help="comma-separated controller names, * for all: " + ",".join(CONTROLLERS))
    p.add_argument("--leader-elect", default="true", choices=["true", "false"])
    p.add_argument("--identity", default=None)
    p.add_argument("--bind-address", default="127.0.0.1")
    p.add_argument("--secure-port", type=int, default=10257, help="health and metrics (HTTP)")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--root-ca-file", default=None,
                   help="the cluster CA, published in every namespace as kube-root-ca.crt")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s controller-manager %(name)s %(levelname)s "
                               "%(message)s")
    timescale.set_scale(args.time_scale)
    names = list(CONTROLLERS) if args.controllers == "*" else args.controllers.split(",")
    runtime.prepare()

    async def amain():
        client = client_from_args(args, "kube-controller-manager")
        mgr = ControllerManager(client, names, args.identity or
                                f"{socket.gethostname()}-{args.secure_port}",
                                args.leader_elect == "true",
                                options={"root_ca_file": args.root_ca_file})
        health = await serve_health(args.bind_address, args.secure_port, lambda: True,
                                    lambda: f"leader_election_master_status{{name="
                                            f"\"kube-controller-manager\"}} "
                                            f"{int(mgr.active)}\n")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(mgr.run())
        await asyncio.wait([runner, asyncio.create_task(stop.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        runner.cancel()
        await health.cleanup()
        await client.close()

    asyncio.run(amain())


if __name__ == "__main__":
    main()
