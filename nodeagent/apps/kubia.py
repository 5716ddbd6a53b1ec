"""luksa/kubia (Kubernetes in Action): HTTP :8080 answering "You've hit <hostname>\\n" (tags
v1/v2: "This is vN running in pod <hostname>"; v3 fails after the fifth request).

--unhealthy is luksa/kubia-unhealthy: after the fifth request every answer is a 500
"I'm not well. Please restart me!" (the book's liveness-probe example)."""

from __future__ import annotations

import argparse
import os

from nodeagent.apps._common import Request, Response, hostname, log, run, serve_http


def make_handler(unhealthy: bool, version: str = ""):
    count = 0

    async def handle(req: Request) -> Response:
        nonlocal count
        log(f"Received request from ::ffff:{req.peer[0]}")
        count += 1
        if unhealthy and count > 5:
            return Response(500, "I'm not well. Please restart me!")
        if version == "v3" and count > 5:
            return Response(500, f"Some internal error has occurred! This is pod {hostname()}\n",
                            content_type="")
        if version:
            return Response(200, f"This is {version} running in pod {hostname()}\n",
                            content_type="")
        return Response(200, f"You've hit {hostname()}\n", content_type="")
    return handle


def main() -> None:
    p = argparse.ArgumentParser(prog="kubia")
    p.add_argument("--unhealthy", action="store_true")
    p.add_argument("--version", default="")
    p.add_argument("--ignore-sigterm", action="store_true",
                   help="like node.js as PID 1: only SIGKILL ends it")
    p.add_argument("--port", type=int, default=int(os.environ.get("KUBELAB_PORT", "8080")))
    args, _ = p.parse_known_args()

    async def serve() -> None:
        log("Kubia server starting...")
        server = await serve_http(make_handler(args.unhealthy, args.version), args.port)
        await server.serve_forever()

    run(serve, on_term="ignore" if args.ignore_sigterm else "signal")


if __name__ == "__main__":
    main()
