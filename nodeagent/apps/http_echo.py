"""hashicorp/http-echo: serves -text on every path (-listen default :5678, -status-code)."""

from __future__ import annotations

import sys
import time

from nodeagent.apps._common import Request, Response, bind_ip, log, run, serve_http

VERSION = "1.0.0"


def parse_args(argv: list[str]) -> dict[str, str]:
    """Go flag syntax: -name=value, -name value, --name=value."""
    opts = {"listen": ":5678", "text": "", "status-code": "200"}
    flags = {"listen", "text", "status-code", "version"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("-"):
            i += 1
            continue
        name, eq, val = a.lstrip("-").partition("=")
        if name not in flags:
            raise SystemExit(f"flag provided but not defined: -{name}")
        if name == "version":
            opts["version"] = "1"
        elif eq:
            opts[name] = val
        else:
            if i + 1 >= len(argv):
                raise SystemExit(f"flag needs an argument: -{name}")
            opts[name] = argv[i + 1]
            i += 1
        i += 1
    return opts


def main() -> None:
    try:
        opts = parse_args(sys.argv[1:])
    except SystemExit as e:
        sys.stderr.write(f"{e}\n")
        sys.exit(2)
    if opts.get("version"):
        print(f"http-echo v{VERSION}")
        return
    if not opts["text"]:
        sys.stderr.write("[ERR] Missing -text option!\n")
        sys.exit(127)
    host, _, port = opts["listen"].rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::", "localhost", "127.0.0.1"):
        host = bind_ip()
    status = int(opts["status-code"])
    text = opts["text"] + "\n"

    async def handle(req: Request) -> Response:
        if req.path == "/health":
            return Response(200, '{"status":"ok"}', content_type="application/json")
        return Response(status, text, headers={"X-App-Name": "http-echo",
                                                "X-App-Version": VERSION})

    def access(req: Request, resp: Response, size: int, dur: float) -> None:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        log(f"{stamp} {opts['listen']} {req.peer[0]}:{req.peer[1]} "
            f"\"{req.method} {req.target} {req.version}\" {resp.status} {size} "
            f"\"{req.header('user-agent')}\" {dur * 1e6:.3f}µs")

    async def serve() -> None:
        log(f"{time.strftime('%Y/%m/%d %H:%M:%S')} [INFO] server is listening on "
            f"{opts['listen']}")
        server = await serve_http(handle, int(port), host=host, access_log=access)
        await server.serve_forever()

    run(serve, on_term="exit0",
        term_message=f"{time.strftime('%Y/%m/%d %H:%M:%S')} [INFO] server is shutting down")


if __name__ == "__main__":
    main()
