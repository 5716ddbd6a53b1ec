"""/healthz, /readyz, /livez and Prometheus /metrics for a cluster component (every
long-running component serves them)."""

from __future__ import annotations

from typing import Callable

from aiohttp import web


async def serve_health(host: str, port: int, ready: Callable[[], bool],
                       metrics: Callable[[], str] | None = None) -> web.AppRunner:
    async def ok(_req):
        return web.Response(text="ok")

    async def readyz(_req):
        r = ready()
        return web.Response(text="ok" if r else "not ready", status=200 if r else 503)

    async def prom(_req):
        return web.Response(text=metrics() if metrics else "", content_type="text/plain")

    app = web.Application()
    app.add_routes([web.get("/healthz", ok), web.get("/livez", ok), web.get("/readyz", readyz),
                    web.get("/metrics", prom)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
