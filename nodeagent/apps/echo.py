"""Request echo servers.

--style echo-server: jmalloc/echo-server, kicbase/echo-server (minikube's hello-minikube) and
  the subicura guide's echo app (port 3000): "Request served by <hostname>" + the request.
--style echoserver: k8s.gcr.io/echoserver 1.10 (:8080): hostname, server values, request
  information, headers and body; --legacy for the 1.4 layout ("CLIENT VALUES: ...")."""

from __future__ import annotations

import argparse
import os
import time

from nodeagent.apps._common import Request, Response, hostname, log, run, serve_http


def echo_server_body(req: Request) -> str:
    lines = [f"Request served by {hostname()}", "",
             f"{req.version} {req.method} {req.target}", ""]
    lines += [f"{k}: {v}" for k, v in req.headers]
    text = "\n".join(lines) + "\n"
    if req.body:
        text += "\n" + req.body.decode("utf-8", "replace")
    return text


def _host_uri(req: Request) -> str:
    return f"http://{req.header('host') or req.local[0]}{req.target}"


def echoserver_body(req: Request, legacy: bool) -> str:
    headers = sorted((k.lower(), v) for k, v in req.headers)
    body = req.body.decode("utf-8", "replace") if req.body else "-no body in request-"
    version = req.version.split("/")[-1]
    if legacy:
        out = ["CLIENT VALUES:", f"client_address={req.peer[0]}", f"command={req.method}",
               f"real path={req.path}", f"query={req.query or 'nil'}",
               f"request_version={version}", f"request_uri={_host_uri(req)}", "",
               "SERVER VALUES:", "server_version=nginx: 1.10.0 - lua: 10001", "",
               "HEADERS RECEIVED:"]
        out += [f"{k}={v}" for k, v in headers]
        out += ["BODY:", body]
        return "\n".join(out)
    out = ["", "", f"Hostname: {hostname()}", "", "Pod Information:",
           "\t-no pod information available-", "", "Server values:",
           "\tserver_version=nginx: 1.13.3 - lua: 10008", "", "Request Information:",
           f"\tclient_address={req.peer[0]}", f"\tmethod={req.method}",
           f"\treal path={req.path}", f"\tquery={req.query}",
           f"\trequest_version={version}", "\trequest_scheme=http",
           f"\trequest_uri={_host_uri(req)}", "", "Request Headers:"]
    out += [f"\t{k}={v}" for k, v in headers]
    out += ["", "Request Body:", f"\t{body}", "", ""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(prog="echo")
    p.add_argument("--style", choices=["echo-server", "echoserver"], default="echo-server")
    p.add_argument("--legacy", action="store_true")
    p.add_argument("--port", type=int, default=0)
    args, _ = p.parse_known_args()
    port = args.port or int(os.environ.get("PORT") or 8080)

    async def handle(req: Request) -> Response:
        if args.style == "echoserver":
            return Response(200, echoserver_body(req, args.legacy),
                            content_type="text/plain")
        return Response(200, echo_server_body(req), content_type="text/plain")

    def access(req: Request, resp: Response, size: int, dur: float) -> None:
        if args.style == "echoserver":
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
            log(f"{req.peer[0]} - - [{stamp}] \"{req.method} {req.target} {req.version}\" "
                f"{resp.status} {size} \"-\" \"{req.header('user-agent')}\"")
        else:
            log(f"{req.peer[0]}:{req.peer[1]} | {req.method} {req.target}")

    async def serve() -> None:
        if args.style == "echo-server":
            log(f"Echo server listening on port {port}.")
        server = await serve_http(handle, port, access_log=access,
                                  server_header="echoserver" if args.style == "echoserver"
                                  else None)
        await server.serve_forever()

    run(serve)


if __name__ == "__main__":
    main()
