"""HTTP health and metrics for a store member (etcd's --listen-metrics-urls): /health as etcd
answers it, /healthz /readyz /livez as every kubelab component does, and Prometheus /metrics
with etcd's metric names."""

from __future__ import annotations

import json

from aiohttp import web


def _metrics_text(member) -> str:
    raft = member.raft
    leader = member.leader_id()
    with raft.lock:
        rev = raft.store.revision
        compact = raft.store.compact_revision
        keys = len(raft.store._history)
        size = raft.store.size_bytes()
    lines = [
        ("etcd_server_has_leader", "gauge", "Whether or not a leader exists.", int(bool(leader))),
        ("etcd_server_is_leader", "gauge", "Whether or not this member is a leader.",
         int(leader == member.member_id)),
        ("etcd_server_proposals_committed_total", "gauge",
         "The total number of consensus proposals committed.", raft.raft.raftCommitIndex),
        ("etcd_server_proposals_applied_total", "gauge",
         "The total number of consensus proposals applied.", raft.raft.raftLastApplied),
        ("etcd_debugging_mvcc_current_revision", "gauge", "The current revision of the store.",
         rev),
        ("etcd_debugging_mvcc_compact_revision", "gauge",
         "The revision of the last compaction in store.", compact),
        ("etcd_debugging_mvcc_keys_total", "gauge", "Total number of keys.", keys),
        ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge",
         "Total size of the underlying database logically in use in bytes.", size),
    ]
    out = []
    for name, kind, help_, value in lines:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(out) + "\n"


async def serve_health(member, urls: list[str]) -> web.AppRunner:
    async def health(_req):
        ok = member.leader_id() != 0
        body = {"health": "true" if ok else "false"}
        if not ok:
            body["reason"] = "RAFT NO LEADER"
        return web.Response(text=json.dumps(body), content_type="application/json",
                            status=200 if ok else 503)

    async def healthz(_req):
        ok = member.leader_id() != 0
        return web.Response(text="ok" if ok else "etcdserver: no leader",
                            status=200 if ok else 503)

    async def livez(_req):
        return web.Response(text="ok")

    async def metrics(_req):
        return web.Response(text=_metrics_text(member), content_type="text/plain")

    app = web.Application()
    app.add_routes([web.get("/health", health), web.get("/healthz", healthz),
                    web.get("/readyz", healthz), web.get("/livez", livez),
                    web.get("/metrics", metrics)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for url in urls:
        hostport = url.split("://", 1)[-1].rstrip("/")
        host, _, port = hostport.rpartition(":")
        await web.TCPSite(runner, host, int(port)).start()
    return runner
