"""The nginx image (`/docker-entrypoint.sh nginx -g 'daemon off;'`).

With the real nginx installed (Debian nginx-light) it generates a configuration in a private
directory — the image's stock nginx.conf and conf.d/default.conf, or the ones the pod mounts at
/etc/nginx/nginx.conf and /etc/nginx/conf.d/*.conf — rewritten so that every `listen` binds
$KUBELAB_BIND_IP and every path the pod mounted (root, alias, include, certificates) points at
the volume's host path ($KUBELAB_VOLUME_MOUNTS), then execs nginx. /usr/share/nginx/html is the
mounted volume, or the stock welcome page shipped with kubelab. `nginx -s reload` and `nginx -t`
from `kubectl exec` regenerate the configuration first, as a configMap edit expects.

Without nginx a small built-in static server serves the same root on the same port."""

from __future__ import annotations

import glob
import mimetypes
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.apps._common import (
    Request,
    Response,
    bind_ip,
    find_real,
    hostname,
    is_mounted,
    log,
    run,
    serve_http,
    volume_mounts,
    volume_path,
)

STATIC = Path(__file__).resolve().parent / "static"
HTML_DIR = "/usr/share/nginx/html"
CONF_D = "/etc/nginx/conf.d"
MAIN_CONF = "/etc/nginx/nginx.conf"
SERVER = "nginx/1.27.3"

DEFAULT_CONF = """server {
    listen       %(port)d;
    listen  [::]:%(port)d;
    server_name  localhost;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }

    error_page   500 502 503 504  /50x.html;
    location = /50x.html {
        root   /usr/share/nginx/html;
    }
}
"""

MAIN_TEMPLATE = """%(user)s
worker_processes  1;

error_log  stderr notice;
pid        %(run)s/nginx.pid;

events {
    worker_connections  1024;
}

http {
    include       %(mime)s;
    default_type  application/octet-stream;

    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /dev/stdout  main;

    sendfile        on;
    keepalive_timeout  65;

    client_body_temp_path %(run)s/client_body;
    proxy_temp_path       %(run)s/proxy;
    fastcgi_temp_path     %(run)s/fastcgi;
    uwsgi_temp_path       %(run)s/uwsgi;
    scgi_temp_path        %(run)s/scgi;

    include /etc/nginx/conf.d/*.conf;
}
"""

PATH_DIRECTIVES = {"root", "alias", "include", "ssl_certificate", "ssl_certificate_key",
                   "ssl_trusted_certificate", "ssl_client_certificate", "ssl_dhparam",
                   "auth_basic_user_file", "access_log", "error_log", "pid"}


@dataclass
class Context:
    """What the rewriting needs to know; `mounts` maps container paths to host paths."""

    bind: str
    run_dir: str
    mounts: dict[str, str] = field(default_factory=dict)
    html_root: str = str(STATIC / "nginx")   # the image's own /usr/share/nginx/html
    mime: str = "/etc/nginx/mime.types"

    def path(self, p: str) -> str:
        if p.startswith("/var/log/nginx/"):
            return "stderr" if "error" in p else "/dev/stdout"
        if p == CONF_D or p.startswith(CONF_D + "/"):
            return self.run_dir + "/conf.d" + p[len(CONF_D):]
        if is_mounted(p, self.mounts):
            return volume_path(p, self.mounts)
        if p == HTML_DIR or p.startswith(HTML_DIR + "/"):
            return self.html_root + p[len(HTML_DIR):]
        if p == "/etc/nginx/mime.types":
            return self.mime
        return p


def _listen(args: str, ctx: Context) -> tuple[str, str]:
    """(address:port, rest) for a listen directive's arguments."""
    first, _, rest = args.strip().partition(" ")
    if first.startswith("unix:"):
        return first, rest
    if first.startswith("["):
        port = first.rsplit("]:", 1)[1] if "]:" in first else "80"
    elif ":" in first:
        port = first.rsplit(":", 1)[1]
    elif first.isdigit():
        port = first
    else:  # a host name alone means port 80
        port = "80"
    host = ctx.bind if ctx.bind != "0.0.0.0" else "0.0.0.0"
    rest = re.sub(r"\bipv6only=\w+\s*", "", rest).strip()
    return f"{host}:{port}", rest


_DIRECTIVE = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*)(\s+)([^;{]*?)(\s*;)", re.MULTILINE)


def rewrite(text: str, ctx: Context) -> str:
    """Rewrite an nginx configuration for this pod: listens on the pod address, mounted paths
    to their host paths, logs to stdout/stderr, no `user`/`pid` of the image."""
    out: list[str] = []
    depth_stack: list[set[str] | None] = []  # per block: the listens of a server block
    pos = 0
    for m in re.finditer(r"\{|\}|#[^\n]*|\"(?:\\.|[^\"])*\"|'(?:\\.|[^'])*'|[^{};#\"']+;?|;",
                         text):
        tok = m.group(0)
        pos = m.end()
        if tok == "{":
            prev = "".join(out[-1:]).strip().split()
            depth_stack.append(set() if prev and prev[-1] == "server" else None)
            out.append(tok)
            continue
        if tok == "}":
            if depth_stack:
                depth_stack.pop()
            out.append(tok)
            continue
        if tok.startswith("#") or not tok.endswith(";"):
            out.append(tok)
            continue
        dm = _DIRECTIVE.match(tok)
        if not dm:
            out.append(tok)
            continue
        indent, name, sp, args, semi = dm.groups()
        if name in ("user", "pid") and not depth_stack:
            out.append(f"{indent}# ({name} set by kubelab){semi.strip()}" if name == "user"
                       else f"{indent}pid {ctx.run_dir}/nginx.pid;")
            continue
        if name == "daemon":
            out.append(f"{indent}# daemon set on the command line")
            continue
        if name == "listen":
            addr, rest = _listen(args, ctx)
            server = next((s for s in reversed(depth_stack) if s is not None), None)
            if server is not None:
                if addr in server:
                    out.append(f"{indent}# {name} {args} (same address as above)")
                    continue
                server.add(addr)
            out.append(f"{indent}listen {addr}{' ' + rest if rest else ''};")
            continue
        if name in PATH_DIRECTIVES and args:
            first, _, rest = args.partition(" ")
            quoted = first[:1] in "\"'"
            raw = first.strip("\"'")
            if raw.startswith("/"):
                new = ctx.path(raw)
                if name == "access_log" and new == "stderr":
                    new = "/dev/stderr"
                first = f'"{new}"' if quoted else new
            out.append(f"{indent}{name}{sp}{first}{' ' + rest if rest else ''}{semi}")
            continue
        out.append(tok)
    out.append(text[pos:])
    return "".join(out)


def conf_d_sources(mounts: dict[str, str], port: int) -> dict[str, str]:
    """The conf.d files the container would see: the image's default.conf unless the pod
    mounts /etc/nginx/conf.d, plus any file mounted inside it (subPath)."""
    files: dict[str, str] = {}
    if is_mounted(CONF_D, mounts):
        for p in sorted(glob.glob(os.path.join(volume_path(CONF_D, mounts), "*"))):
            if os.path.isfile(p):
                files[os.path.basename(p)] = Path(p).read_text()
    else:
        files["default.conf"] = DEFAULT_CONF % {"port": port}
    for mount, host in mounts.items():
        if os.path.dirname(mount) == CONF_D and os.path.isfile(host) \
                and not is_mounted(CONF_D, {k: v for k, v in mounts.items() if k != mount}):
            files[os.path.basename(mount)] = Path(host).read_text()
    return files


def generate(ctx: Context, port: int) -> str:
    """Write the rewritten configuration under ctx.run_dir; return the main file's path."""
    run_dir = Path(ctx.run_dir)
    (run_dir / "conf.d").mkdir(parents=True, exist_ok=True)
    for old in (run_dir / "conf.d").glob("*"):
        old.unlink()
    for name, text in conf_d_sources(ctx.mounts, port).items():
        (run_dir / "conf.d" / name).write_text(rewrite(text, ctx))
    main_host = volume_path(MAIN_CONF, ctx.mounts)
    if is_mounted(MAIN_CONF, ctx.mounts) and os.path.isfile(main_host):
        main = Path(main_host).read_text()
    else:
        main = MAIN_TEMPLATE % {"user": "user  root;" if os.geteuid() == 0 else "",
                                "run": ctx.run_dir, "mime": "/etc/nginx/mime.types"}
    main = rewrite(main, ctx)
    if os.geteuid() == 0 and not re.search(r"^\s*user\s", main, re.MULTILINE):
        # pods' volumes live in directories only root may enter
        main = "user root;\n" + main
    path = run_dir / "nginx.conf"
    path.write_text(main)
    return str(path)


def run_dir() -> str:
    base = os.environ.get("KUBELAB_CONTAINER_DIR")
    if base:
        return os.path.join(base, "nginx")
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{hostname()}-{bind_ip()}")
    return os.path.join("/tmp", "kubelab-nginx", tag)


def make_context() -> Context:
    ctx = Context(bind=bind_ip(), run_dir=run_dir(), mounts=volume_mounts())
    default_root = os.environ.get("KUBELAB_NGINX_HTML")
    if default_root:
        ctx.html_root = default_root if os.path.isabs(default_root) \
            else str(STATIC / default_root)
    if not os.path.exists(ctx.mime):
        ctx.mime = str(STATIC / "nginx" / "mime.types")
    return ctx


# ---------------------------------------------------------------------------------------------
# Built-in fallback


def fallback_site(ctx: Context, port: int) -> tuple[int, str]:
    """(port, root) of the first server in the rewritten conf.d — enough for static sites."""
    texts = conf_d_sources(ctx.mounts, port).values()
    found_port, root = port, ctx.path(HTML_DIR)
    for text in texts:
        m = re.search(r"^\s*listen\s+(?:[^;\s]*:)?(\d+)", text, re.MULTILINE)
        if m:
            found_port = int(m.group(1))
        r = re.search(r"^\s*root\s+([^;\s]+)\s*;", text, re.MULTILINE)
        if r:
            root = ctx.path(r.group(1).strip("\"'"))
        break
    return found_port, root


def serve_static(root: str, port: int) -> None:
    async def handle(req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return _error(405)
        rel = os.path.normpath("/" + req.path).lstrip("/")
        path = os.path.join(root, rel)
        if os.path.isdir(path):
            if not req.path.endswith("/"):
                return Response(301, _page(301), content_type="text/html",
                                headers={"Location": req.path + "/"})
            for index in ("index.html", "index.htm"):
                if os.path.isfile(os.path.join(path, index)):
                    path = os.path.join(path, index)
                    break
            else:
                return _error(403)
        if not os.path.isfile(path):
            return _error(404)
        try:
            data = Path(path).read_bytes()
        except PermissionError:
            return _error(403)
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        mtime = os.path.getmtime(path)
        return Response(200, data, content_type=ctype, headers={
            "Last-Modified": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(mtime)),
            "Accept-Ranges": "bytes"})

    def access(req: Request, resp: Response, size: int, dur: float) -> None:
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        log(f"{req.peer[0]} - - [{stamp}] \"{req.method} {req.target} {req.version}\" "
            f"{resp.status} {size} \"{req.header('referer') or '-'}\" "
            f"\"{req.header('user-agent') or '-'}\" \"-\"")

    async def serve() -> None:
        server = await serve_http(handle, port, access_log=access, server_header=SERVER)
        log(f"{time.strftime('%Y/%m/%d %H:%M:%S')} [notice] 1#1: kubelab built-in nginx "
            f"serving {root} on {bind_ip()}:{port}", sys.stderr)
        await server.serve_forever()

    run(serve, on_term="exit0")


def _page(status: int) -> str:
    from nodeagent.apps._common import REASONS
    title = f"{status} {REASONS.get(status, '')}"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>{SERVER}</center>\r\n"
            "</body>\r\n</html>\r\n")


def _error(status: int) -> Response:
    return Response(status, _page(status), content_type="text/html")


# ---------------------------------------------------------------------------------------------


def main() -> None:
    args = sys.argv[1:] or ["nginx", "-g", "daemon off;"]
    if args[0].startswith("-"):
        args = ["nginx", *args]
    if os.path.basename(args[0]) not in ("nginx", "nginx-debug"):
        os.execvp(args[0], args)  # `exec "$@"` of the image's entrypoint
    extra = args[1:]
    port = int(os.environ.get("KUBELAB_NGINX_PORT") or 80)
    ctx = make_context()
    binary = None if os.environ.get("KUBELAB_BUILTIN_NGINX") else find_real("nginx")
    if binary is None:
        if "-s" in extra or "-t" in extra or "-T" in extra:
            log("nginx: kubelab built-in server: signals and config tests are not supported",
                sys.stderr)
            sys.exit(0 if "-t" in extra else 1)
        site_port, root = fallback_site(ctx, port)
        serve_static(root, site_port)
        return
    conf = generate(ctx, port)
    argv = [binary, "-c", conf, "-p", ctx.run_dir + "/", "-e", "stderr"]
    user_g = [extra[i + 1] for i, a in enumerate(extra[:-1]) if a == "-g"]
    passthrough = []
    skip = False
    for i, a in enumerate(extra):
        if skip:
            skip = False
            continue
        if a in ("-c", "-p", "-e") and i + 1 < len(extra):
            skip = True  # our generated files take their place
            continue
        passthrough.append(a)
    control = any(a in ("-s", "-t", "-T", "-v", "-V") for a in extra)
    if not control and not any("daemon" in g for g in user_g):
        argv += ["-g", "daemon off;"]
    os.execv(binary, argv + passthrough)


if __name__ == "__main__":
    main()
