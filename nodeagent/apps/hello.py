"""Small "hello" web apps of the classic tutorials.

--style hello-app: gcr.io/google-samples/hello-app (:$PORT, default 8080)
--style hello-kubernetes: paulbouwer/hello-kubernetes (:$PORT 8080, $MESSAGE, pod/node info)
--style nginxdemos: nginxdemos/hello (:80, HTML; --plain for the plain-text tag)
--style whoami: kiamol/ch02-whoami (:80, "I'm <host> running on <os>")
--style hpa-example: k8s.gcr.io/hpa-example (:80, burns some CPU then "OK!")
--style bootcamp: gcr.io/google-samples/kubernetes-bootcamp (:8080, the Kubernetes Basics
  tutorial: "Hello Kubernetes bootcamp! | Running on: <hostname> | v=1")"""

from __future__ import annotations

import argparse
import html
import math
import os
import platform
import secrets
import time

from nodeagent.apps._common import Request, Response, hostname, log, run, serve_http

DEFAULT_PORTS = {"hello-app": 8080, "hello-kubernetes": 8080, "nginxdemos": 80, "whoami": 80,
                 "hpa-example": 80, "bootcamp": 8080}
STARTED = time.time()
REQUESTS = [0]


def hello_app(req: Request) -> Response:
    log(f"Serving request: {req.path}")
    version = os.environ.get("KUBELAB_APP_VERSION", "1.0.0")
    return Response(200, f"Hello, world!\nVersion: {version}\nHostname: {hostname()}\n")


def hello_kubernetes(req: Request) -> Response:
    env = os.environ
    message = env.get("MESSAGE") or "Hello world!"
    pod = env.get("KUBERNETES_POD_NAME") or hostname()
    node = env.get("KUBERNETES_NODE_NAME") or "-"
    ns = env.get("KUBERNETES_NAMESPACE") or "-"
    rows = "".join(f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in (("namespace:", ns), ("pod:", pod), ("node:", node)))
    page = ("<!DOCTYPE html><html><head><title>Hello Kubernetes!</title></head><body>"
            f"<div class=\"main\"><div class=\"content\"><div id=\"message\">"
            f"{html.escape(message)}</div><div id=\"info\"><table>{rows}</table></div>"
            "</div></div></body></html>\n")
    return Response(200, page, content_type="text/html; charset=utf-8")


def nginxdemos(req: Request, plain: bool) -> Response:
    addr = f"{req.local[0]}:{req.local[1]}"
    date = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    rid = secrets.token_hex(16)
    if plain:
        text = (f"Server address: {addr}\nServer name: {hostname()}\nDate: {date}\n"
                f"URI: {req.target}\nRequest ID: {rid}\n")
        return Response(200, text, content_type="text/plain",
                        headers={"Cache-Control": "no-cache"})
    page = ("<!DOCTYPE html>\n<html>\n<head>\n<title>Hello World</title>\n</head>\n<body>\n"
            f"<div class=\"info\">\n<p><span>Server&nbsp;address:</span> <span>{addr}</span></p>\n"
            f"<p><span>Server&nbsp;name:</span> <span>{html.escape(hostname())}</span></p>\n"
            f"<p class=\"smaller\"><span>Date:</span> <span>{date}</span></p>\n"
            f"<p class=\"smaller\"><span>URI:</span> <span>{html.escape(req.target)}</span></p>\n"
            "</div>\n"
            f"<div class=\"check\"><input type=\"checkbox\" id=\"check\"> Auto Refresh</div>\n"
            f"<div id=\"footer\"><div id=\"center\" align=\"center\">Request ID: {rid}<br/>"
            "&copy; NGINX, Inc. 2018</div></div>\n</body>\n</html>\n")
    return Response(200, page, content_type="text/html", headers={"Cache-Control": "no-cache"})


def whoami(req: Request) -> Response:
    os_desc = f"{platform.system()} {platform.release()}"
    return Response(200, f"I'm {hostname()} running on {os_desc}",
                    content_type="text/plain; charset=utf-8")


def hpa_example(req: Request) -> Response:
    x = 0.0001
    for _ in range(1000000):
        x += math.sqrt(x)
    return Response(200, "OK!", content_type="text/html; charset=UTF-8")


def bootcamp(req: Request) -> Response:
    REQUESTS[0] += 1
    log(f"Running On: {hostname()} | Total Requests: {REQUESTS[0]} | App Uptime: "
        f"{time.time() - STARTED:.3f} seconds | Log Time: {time.ctime()}")
    version = os.environ.get("KUBELAB_APP_VERSION", "1")
    return Response(200, f"Hello Kubernetes bootcamp! | Running on: {hostname()} | "
                         f"v={version}\n", content_type="text/plain")


def main() -> None:
    p = argparse.ArgumentParser(prog="hello")
    p.add_argument("--style", choices=sorted(DEFAULT_PORTS), default="hello-app")
    p.add_argument("--plain", action="store_true")
    args, _ = p.parse_known_args()
    port = DEFAULT_PORTS[args.style]
    if args.style in ("hello-app", "hello-kubernetes"):
        port = int(os.environ.get("PORT") or port)

    async def handle(req: Request) -> Response:
        if args.style == "hello-app":
            return hello_app(req)
        if args.style == "hello-kubernetes":
            return hello_kubernetes(req)
        if args.style == "nginxdemos":
            return nginxdemos(req, args.plain)
        if args.style == "whoami":
            return whoami(req)
        if args.style == "bootcamp":
            return bootcamp(req)
        return hpa_example(req)

    def access(req: Request, resp: Response, size: int, dur: float) -> None:
        if args.style in ("nginxdemos", "hpa-example"):
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
            log(f"{req.peer[0]} - - [{stamp}] \"{req.method} {req.target} {req.version}\" "
                f"{resp.status} {size} \"-\" \"{req.header('user-agent')}\" \"-\"")
        elif args.style == "hello-kubernetes":
            log(f"GET {req.path} {resp.status}")

    async def serve() -> None:
        if args.style == "hello-app":
            log(f"{time.strftime('%Y/%m/%d %H:%M:%S')} Server listening on port {port}")
        elif args.style == "hello-kubernetes":
            log(f"Listening on: http://{hostname()}:{port}")
        elif args.style == "bootcamp":
            log(f"Kubernetes Bootcamp App Started At: {time.ctime(STARTED)} | "
                f"Running On:  {hostname()} \n")
        server = await serve_http(handle, port, access_log=access,
                                  server_header="nginx/1.25.3" if args.style == "nginxdemos"
                                  else None)
        await server.serve_forever()

    run(serve, on_term="exit0" if args.style == "nginxdemos" else "signal")


if __name__ == "__main__":
    main()
