"""`python -m etcdlite`: run one store member. Flags are etcd's own names (etcd --help)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="etcdlite", description="An etcd v3-compatible store member "
                                "(MVCC on Raft via pysyncobj).")
    env = os.environ.get
    p.add_argument("--name", default=env("ETCD_NAME", "default"))
    p.add_argument("--data-dir", default=env("ETCD_DATA_DIR"),
                   help="directory for the Raft journal and snapshots (default: <name>.etcd)")
    p.add_argument("--listen-client-urls", default=env("ETCD_LISTEN_CLIENT_URLS",
                                                       "http://localhost:2379"))
    p.add_argument("--advertise-client-urls", default=env("ETCD_ADVERTISE_CLIENT_URLS"))
    p.add_argument("--listen-peer-urls", default=env("ETCD_LISTEN_PEER_URLS",
                                                     "http://localhost:2380"))
    p.add_argument("--initial-advertise-peer-urls", default=env("ETCD_INITIAL_ADVERTISE_PEER_URLS"))
    p.add_argument("--initial-cluster", default=env("ETCD_INITIAL_CLUSTER"),
                   help="name=peerURL,... (default: <name>=<listen-peer-url>)")
    p.add_argument("--initial-cluster-token", default=env("ETCD_INITIAL_CLUSTER_TOKEN",
                                                          "etcd-cluster"))
    p.add_argument("--initial-cluster-state", default="new", choices=["new", "existing"],
                   help="accepted for compatibility; members always rejoin as themselves")
    p.add_argument("--heartbeat-interval", type=int, default=int(env("ETCD_HEARTBEAT_INTERVAL",
                                                                     "100")), help="ms")
    p.add_argument("--election-timeout", type=int, default=int(env("ETCD_ELECTION_TIMEOUT",
                                                                   "1000")), help="ms")
    p.add_argument("--request-timeout", type=float, default=5.0,
                   help="seconds a write or linearizable read may wait for quorum before it "
                        "fails with UNAVAILABLE")
    p.add_argument("--snapshot-count", type=int, default=10000,
                   help="Raft entries between snapshots of the state machine")
    p.add_argument("--max-event-history", type=int, default=100_000,
                   help="events kept for watches; older watch start revisions get "
                        "compact_revision")
    p.add_argument("--experimental-watch-progress-notify-interval", default="10m")
    p.add_argument("--listen-metrics-urls", default=env("ETCD_LISTEN_METRICS_URLS", ""),
                   help="HTTP /health, /readyz, /metrics")
    p.add_argument("--log-level", default=env("ETCD_LOG_LEVEL", "info"))
    p.add_argument("--gil-switch-interval", type=float, default=1.0,
                   help="ms (etcdlite only): how long a Python thread may hold the GIL while "
                        "another waits; shorter makes Raft steps wait less behind gRPC")
    return p.parse_args(argv)


def _duration(s: str) -> float:
    s = s.strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for u in ("ms", "s", "m", "h"):
        if s.endswith(u):
            return float(s[: -len(u)]) * units[u]
    return float(s)


async def amain(args: argparse.Namespace) -> None:
    from .server import EtcdMember
    peer_url = (args.initial_advertise_peer_urls or args.listen_peer_urls).split(",")[0]
    cluster = args.initial_cluster or f"{args.name}={peer_url}"
    peers: dict[str, str] = {}
    for item in cluster.split(","):
        name, _, url = item.partition("=")
        peers[name.strip()] = url.strip()
    if args.name not in peers:
        sys.exit(f"etcdlite: --name {args.name!r} is not in --initial-cluster {cluster!r}")
    data_dir = args.data_dir or f"{args.name}.etcd"
    client_urls = args.listen_client_urls.split(",")
    member = EtcdMember(
        name=args.name, data_dir=data_dir, peers=peers, client_urls=client_urls,
        advertise_client_urls=(args.advertise_client_urls or args.listen_client_urls).split(","),
        cluster_token=args.initial_cluster_token, heartbeat_ms=args.heartbeat_interval,
        election_ms=args.election_timeout, request_timeout=args.request_timeout,
        event_history=args.max_event_history,
        progress_notify_interval=_duration(args.experimental_watch_progress_notify_interval),
        snapshot_count=args.snapshot_count)
    await member.start()
    metrics = None
    if args.listen_metrics_urls:
        from .health import serve_health
        metrics = await serve_health(member, args.listen_metrics_urls.split(","))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if metrics is not None:
        await metrics.cleanup()
    await member.stop()


def main(argv=None) -> None:
    args = parse_args(argv)
    # gRPC's thread and the Raft thread share the GIL: at CPython's default 5 ms switch
    # interval, every Raft step that waits for the GIL (after an fdatasync, a received
    # message) could wait up to 5 ms. 1 ms gave ~15% more put throughput at 64 clients.
    sys.setswitchinterval(args.gil_switch_interval / 1000.0)
    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s {args.name} %(name)s %(levelname)s %(message)s")
    from kubelab import runtime
    runtime.prepare()
    asyncio.run(amain(args))
    os._exit(0)  # pysyncobj's tick thread is not a daemon


if __name__ == "__main__":
    main()
