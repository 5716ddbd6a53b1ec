"""luksa/kubia (Kubernetes in Action): HTTP :8080 answering "You've hit <hostname>\\n".

--unhealthy is luksa/kubia-unhealthy: after the fifth request every answer is a 500
"I'm not well. Please restart me!" (the book's liveness-probe example)."""

from __future__ import annotations

import argparse
import os

from nodeagent.apps._common import Request, Response, hostname, log, run, serve_http


def make_handler(unhealthy: bool):
    count = 0

    async def handle(req: Request) -> Response:
        nonlocal count
        log(f"Received request from ::ffff:{req.peer[0]}")
        count += 1
        if unhealthy and count > 5:
            return Response(500, "I'm not well. Please restart me!")
        return Response(200, f"You've hit {hostname()}\n", content_type="")
    return handle


def main() -> None:
    p = argparse.ArgumentParser(prog="kubia")
    p.add_argument("--unhealthy", action="store_true")
    p.add_argument("--port", type=int, default=int(os.environ.get("KUBELAB_PORT", "8080")))
    args, _ = p.parse_known_args()

    async def serve() -> None:
        log("Kubia server starting...")
        server = await serve_http(make_handler(args.unhealthy), args.port)
        await server.serve_forever()

    run(serve)


if __name__ == "__main__":
    main()
