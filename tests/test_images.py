"""The image catalog: reference normalisation, and every catalog app's real behaviour, run as
a process on its own 127.x address the way the runtime runs a container."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nodeagent import images
from nodeagent.apps import nginx as nginx_app
from nodeagent.apps import redis as redis_app
from nodeagent.apps._common import volume_path
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
_next_ip = [2]


def fresh_ip() -> str:
    """A 127.x address no other test (or concurrent test run) is using."""
    _next_ip[0] += 1
    return f"127.77.{os.getpid() % 250}.{_next_ip[0]}"


# ---------------------------------------------------------------------------------------------
# resolve()


@pytest.mark.parametrize("ref,canonical", [
    ("nginx", "docker.io/library/nginx:latest"),
    ("nginx:1.27", "docker.io/library/nginx:1.27"),
    ("library/nginx:alpine", "docker.io/library/nginx:alpine"),
    ("docker.io/nginx", "docker.io/library/nginx:latest"),
    ("docker.io/library/nginx:1.25.3", "docker.io/library/nginx:1.25.3"),
    ("index.docker.io/library/redis", "docker.io/library/redis:latest"),
    ("busybox@sha256:" + "ab" * 32, "docker.io/library/busybox:latest@sha256:" + "ab" * 32),
    ("busybox:1.36@sha256:" + "cd" * 32, "docker.io/library/busybox:1.36@sha256:" + "cd" * 32),
    ("luksa/kubia", "docker.io/luksa/kubia:latest"),
    ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
    ("k8s.gcr.io/pause", "k8s.gcr.io/pause:latest"),
    ("ghcr.io/subicura/echo:v1", "ghcr.io/subicura/echo:v1"),
    ("hashicorp/http-echo:1.0", "docker.io/hashicorp/http-echo:1.0"),
])
def test_resolve_normalises_names(ref, canonical):
    assert images.resolve(ref).name == canonical


@pytest.mark.parametrize("ref", [
    "nosuchimage", "library/nosuchimage:1.0", "quay.io/nginx", "ghcr.io/library/redis",
    "localhost:5000/nginx", "myregistry.example.com/luksa/kubia", "luksa/kubia2",
])
def test_unknown_images_are_not_found(ref):
    with pytest.raises(images.ImageNotFound) as e:
        images.resolve(ref)
    assert e.value.reason == "ErrImagePull"
    assert "not found" in str(e.value)


@pytest.mark.parametrize("ref", ["", "Nginx", "nginx:", "nginx:bad tag", "nginx@sha256:zz",
                                 "-nginx", "a//b"])
def test_invalid_references(ref):
    with pytest.raises(images.InvalidImageName) as e:
        images.resolve(ref)
    assert e.value.reason == "InvalidImageName"
    assert "invalid reference format" in str(e.value)


def test_entrypoint_and_cmd_follow_the_images():
    assert images.resolve("busybox").entrypoint == []
    assert images.resolve("busybox").cmd == ["sh"]
    assert images.resolve("alpine:3.19").cmd == ["sh"]
    assert images.resolve("python:3.12-slim").cmd == ["python3"]
    nginx = images.resolve("nginx")
    assert nginx.cmd == ["nginx", "-g", "daemon off;"]
    assert nginx.entrypoint[1:] == ["-m", "nodeagent.apps.nginx"]
    assert images.resolve("redis:7").cmd == ["redis-server"]
    assert images.resolve("registry.k8s.io/pause:3.9").entrypoint[-1] == "nodeagent.apps.pause"
    assert images.resolve("hashicorp/http-echo").cmd == []
    for name in images.catalog_names():
        cfg = images.resolve(name)
        assert cfg.env["PATH"]
        assert cfg.entrypoint or cfg.cmd, name


# ---------------------------------------------------------------------------------------------
# running containers of the catalog


class App:
    def __init__(self, proc: subprocess.Popen, ip: str, out: Path):
        self.proc, self.ip, self.out = proc, ip, out

    def output(self) -> str:
        return self.out.read_text(errors="replace")


@pytest.fixture
def start(tmp_path):
    started: list[subprocess.Popen] = []

    def run(image: str, args: list[str] | None = None, command: list[str] | None = None,
            env: dict | None = None, port: int | None = None, ip: str | None = None) -> App:
        cfg = images.resolve(image)
        argv = (command or cfg.entrypoint) + (args if args is not None else
                                              ([] if command else cfg.cmd))
        ip = ip or fresh_ip()
        full_env = {**os.environ, **cfg.env, "KUBELAB_BIND_IP": ip, "HOSTNAME": "pod-" +
                    ip.replace(".", "-"), "PYTHONPATH": str(ROOT)}
        full_env["PATH"] = ":".join(cfg.path_dirs + [cfg.env["PATH"],
                                                     os.environ.get("PATH", "")])
        full_env.update(env or {})
        out = tmp_path / f"out-{len(started)}.log"
        with open(out, "wb") as f:
            exe = shutil.which(argv[0], path=full_env["PATH"]) or argv[0]
            proc = subprocess.Popen([exe, *argv[1:]], env=full_env, stdout=f,
                                    stderr=subprocess.STDOUT, cwd=str(tmp_path),
                                    start_new_session=True)
        started.append(proc)
        app = App(proc, ip, out)
        if port:
            wait_for(lambda: proc.poll() is None and _connectable(ip, port), timeout=10,
                     what=f"{image} listening on {ip}:{port}: {app.output()[-500:]}")
        return app

    yield run
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the process this test started
            proc.wait(5)


def _connectable(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def http_get(ip: str, port: int, path: str = "/", method: str = "GET", body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, \
            resp.read().decode(errors="replace")
    finally:
        conn.close()


class RedisConn:
    def __init__(self, ip: str, port: int = 6379):
        self.sock = socket.create_connection((ip, port), timeout=5)
        self.f = self.sock.makefile("rb")

    def raw(self, data: bytes):
        self.sock.sendall(data)
        return self.reply()

    def cmd(self, *args):
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        return self.raw(b"*%d\r\n" % len(parts) +
                        b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))

    def reply(self):
        line = self.f.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return (kind + rest).decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise AssertionError(f"bad reply {line!r}")

    def close(self):
        self.f.close()
        self.sock.close()


def stop(app: App, expect: int, timeout: float = 10) -> None:
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(timeout) == expect, app.output()[-800:]


def test_pause_sleeps_and_exits_zero_on_sigterm(start):
    app = start("registry.k8s.io/pause:3.10")
    def handles_sigterm():
        # SigCgt: the signals the process catches; SIGTERM is 15 -> bit 14
        for line in Path(f"/proc/{app.proc.pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1))
    wait_for(handles_sigterm, 15, 0.02, "pause catching SIGTERM")
    assert app.proc.poll() is None
    stop(app, 0)


def test_kubia_answers_with_its_hostname(start):
    app = start("luksa/kubia", port=8080)
    status, _, body = http_get(app.ip, 8080)
    assert status == 200
    assert body == f"You've hit pod-{app.ip.replace('.', '-')}\n"
    wait_for(lambda: "Received request from ::ffff:" in app.output(), what="request log")
    assert app.output().startswith("Kubia server starting...")
    stop(app, -signal.SIGTERM)


def test_kubia_unhealthy_fails_after_five_requests(start):
    app = start("luksa/kubia-unhealthy", port=8080)
    codes = [http_get(app.ip, 8080)[0] for _ in range(7)]
    assert codes == [200] * 5 + [500, 500]
    assert http_get(app.ip, 8080)[2] == "I'm not well. Please restart me!"


def test_http_echo(start):
    app = start("hashicorp/http-echo", args=["-text=hello world", "-status-code", "202"],
                port=5678)
    status, headers, body = http_get(app.ip, 5678, "/any/path")
    assert (status, body) == (202, "hello world\n")
    assert headers["x-app-name"] == "http-echo"
    assert http_get(app.ip, 5678, "/health")[2] == '{"status":"ok"}'
    wait_for(lambda: '"GET /any/path HTTP/1.1" 202' in app.output(), what="access log")
    stop(app, 0)
    other = start("hashicorp/http-echo", args=["-listen=:9000", "-text", "apple"], port=9000)
    assert http_get(other.ip, 9000)[2] == "apple\n"


def test_http_echo_without_text_fails(start):
    app = start("hashicorp/http-echo", args=[])
    assert app.proc.wait(10) == 127
    assert "Missing -text option" in app.output()


@pytest.mark.skipif(not shutil.which("nginx"), reason="Debian nginx-light not installed")
def test_nginx_serves_the_welcome_page_and_stops_cleanly(start):
    app = start("nginx:1.27", port=80)
    status, headers, body = http_get(app.ip, 80)
    assert status == 200 and "<title>Welcome to nginx!</title>" in body
    assert headers["server"].startswith("nginx/")
    assert http_get(app.ip, 80, "/missing")[0] == 404
    wait_for(lambda: '"GET /missing HTTP/1.1" 404' in app.output(), what="access log")
    stop(app, 0)


@pytest.mark.skipif(not shutil.which("nginx"), reason="Debian nginx-light not installed")
def test_nginx_honours_mounted_config_and_html(start, tmp_path):
    conf, html = tmp_path / "conf", tmp_path / "html"
    conf.mkdir()
    html.mkdir()
    (html / "index.html").write_text("from the volume\n")
    (conf / "app.conf").write_text(
        "server {\n  listen 8080;\n  listen [::]:8080;\n  root /usr/share/nginx/html;\n"
        "  location /healthz { return 200 'ok\\n'; }\n}\n")
    mounts = {"/etc/nginx/conf.d": str(conf), "/usr/share/nginx/html": str(html)}
    app = start("nginx", env={"KUBELAB_VOLUME_MOUNTS": json.dumps(mounts)}, port=8080)
    assert http_get(app.ip, 8080)[2] == "from the volume\n"
    assert http_get(app.ip, 8080, "/healthz")[2] == "ok\n"
    assert not _connectable(app.ip, 80)  # the default server is replaced by the mount
    # edit the "configMap" and reload through the image's own nginx command
    (conf / "app.conf").write_text(
        "server {\n  listen 8080;\n  location /healthz { return 200 'reloaded\\n'; }\n}\n")
    cfg = images.resolve("nginx")
    env = {**os.environ, **cfg.env, "KUBELAB_BIND_IP": app.ip, "PYTHONPATH": str(ROOT),
           "HOSTNAME": "pod-" + app.ip.replace(".", "-"),
           "KUBELAB_VOLUME_MOUNTS": json.dumps(mounts),
           "PATH": ":".join(cfg.path_dirs + [os.environ["PATH"]])}
    subprocess.run(["nginx", "-s", "reload"], env=env, check=True, timeout=10)
    wait_for(lambda: http_get(app.ip, 8080, "/healthz")[2] == "reloaded\n", what="reload")
    stop(app, 0)


@pytest.mark.skipif(not shutil.which("nginx"), reason="Debian nginx-light not installed")
def test_nginx_subpath_file_mount_replaces_default_conf(start, tmp_path):
    """A configMap key mounted with subPath over conf.d/default.conf (KUBELAB_MOUNTS, the
    runtime's spelling of the variable)."""
    conf = tmp_path / "default.conf"
    conf.write_text("server {\n  listen 80;\n  location / { return 200 'custom\\n'; }\n}\n")
    app = start("nginx", env={"KUBELAB_MOUNTS": json.dumps(
        {"/etc/nginx/conf.d/default.conf": str(conf)})}, port=80)
    assert http_get(app.ip, 80, "/anything")[2] == "custom\n"


def test_builtin_nginx_fallback(start, tmp_path):
    app = start("nginx", env={"KUBELAB_BUILTIN_NGINX": "1"}, port=80)
    status, headers, body = http_get(app.ip, 80)
    assert status == 200 and "Welcome to nginx!" in body
    assert headers["server"].startswith("nginx/")
    status, _, body = http_get(app.ip, 80, "/nope")
    assert status == 404 and "<h1>404 Not Found</h1>" in body
    wait_for(lambda: '"GET /nope HTTP/1.1" 404' in app.output(), what="access log")
    stop(app, 0)
    html = tmp_path / "site"
    html.mkdir()
    (html / "index.html").write_text("mounted\n")
    app = start("nginx", env={"KUBELAB_BUILTIN_NGINX": "1", "KUBELAB_VOLUME_MOUNTS":
                              json.dumps({"/usr/share/nginx/html": str(html)})}, port=80)
    assert http_get(app.ip, 80)[2] == "mounted\n"


def test_kiamol_hello_is_nginx_with_the_chapter_page(start):
    app = start("kiamol/ch02-hello-kiamol", port=80)
    status, _, body = http_get(app.ip, 80)
    assert status == 200 and "Hello from Chapter 2!" in body


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_real_redis_server(start, tmp_path):
    conf = tmp_path / "redis-conf"
    conf.mkdir()
    (conf / "redis.conf").write_text("maxmemory 2mb\nmaxmemory-policy allkeys-lru\n")
    mounts = {"/redis-master": str(conf), "/data": str(tmp_path / "data")}
    # the Kubernetes tutorial "Configuring Redis using a ConfigMap"
    app = start("redis:7", command=["redis-server", "/redis-master/redis.conf"],
                env={"KUBELAB_VOLUME_MOUNTS": json.dumps(mounts)}, port=6379)
    r = RedisConn(app.ip)
    assert r.cmd("PING") == "+PONG"
    assert r.cmd("CONFIG", "GET", "maxmemory") == [b"maxmemory", b"2097152"]
    assert r.cmd("SET", "k", "v") == "+OK"
    assert r.cmd("GET", "k") == b"v"
    r.close()
    assert "Ready to accept connections" in app.output()
    stop(app, 0)
    assert (tmp_path / "data" / "dump.rdb").exists()  # saved on shutdown into /data


def test_builtin_redis(start):
    app = start("redis", env={"KUBELAB_BUILTIN_REDIS": "1"}, port=6379)
    r = RedisConn(app.ip)
    assert r.cmd("PING") == "+PONG"
    assert r.cmd("SET", "count", "41") == "+OK"
    assert r.cmd("INCR", "count") == 42
    assert r.cmd("GET", "count") == b"42"
    assert r.cmd("INCR", "nope") == 1
    assert r.cmd("EXISTS", "count", "nope", "missing") == 2
    assert sorted(r.cmd("KEYS", "*")) == [b"count", b"nope"]
    assert r.cmd("EXPIRE", "nope", "100") == 1
    assert r.cmd("TTL", "nope") == 100
    assert r.cmd("TTL", "count") == -1
    assert r.cmd("DEL", "nope") == 1
    assert r.cmd("TTL", "nope") == -2
    assert r.cmd("SELECT", "1") == "+OK"
    assert r.cmd("GET", "count") is None
    assert r.cmd("SELECT", "0") == "+OK"
    assert b"redis_version:" in r.cmd("INFO")
    assert r.cmd("SET", "s", "x") == "+OK"
    assert r.cmd("INCR", "s") == "-ERR value is not an integer or out of range"
    assert r.cmd("FOO").startswith("-ERR unknown command 'FOO'")
    # inline commands, as typed into telnet in the tutorials
    assert r.raw(b"dbsize\r\n") == 2
    assert r.raw(b"GET count\r\n") == b"42"
    assert r.cmd("QUIT") == "+OK"
    assert r.f.read() == b""  # the server closed the connection
    r.close()
    stop(app, 0)
    assert "Received SIGTERM" in app.output()


def test_subicura_counter_counts_in_redis_on_localhost(start):
    """The guide's two-container pod: counter reaches redis at REDIS_HOST=localhost."""
    ip = fresh_ip()
    start("redis", ip=ip, env={"KUBELAB_BUILTIN_REDIS": "1"}, port=6379)
    app = start("ghcr.io/subicura/counter:latest", ip=ip, env={"REDIS_HOST": "localhost"},
                port=3000)
    assert [http_get(ip, 3000)[2] for _ in range(3)] == ["1", "2", "3"]
    r = RedisConn(ip)
    assert r.cmd("GET", "count") == b"3"
    r.close()
    wait_for(lambda: "GET / 200" in app.output(), what="access log")


def test_counter_without_redis_answers_500(start):
    app = start("subicura/counter", env={"REDIS_HOST": "127.77.255.254"}, port=3000)
    assert http_get(app.ip, 3000)[0] == 500


def test_echo_servers(start):
    app = start("ghcr.io/subicura/echo:v1", port=3000)
    status, _, body = http_get(app.ip, 3000, "/hello?x=1", headers={"X-Test": "yes"})
    assert status == 200
    assert body.startswith(f"Request served by pod-{app.ip.replace('.', '-')}\n\n"
                           "HTTP/1.1 GET /hello?x=1\n")
    assert "X-Test: yes" in body
    app = start("registry.k8s.io/echoserver:1.10", port=8080)
    body = http_get(app.ip, 8080, "/p?q=2", method="POST", body=b"payload")[2]
    assert f"Hostname: pod-{app.ip.replace('.', '-')}" in body
    assert "\tmethod=POST" in body and "\treal path=/p" in body and "\tquery=q=2" in body
    assert "Request Body:\n\tpayload" in body
    app = start("k8s.gcr.io/echoserver:1.4", port=8080)
    body = http_get(app.ip, 8080)[2]
    assert body.startswith("CLIENT VALUES:\nclient_address=")
    assert "-no body in request-" in body


def test_hello_apps(start):
    app = start("gcr.io/google-samples/hello-app:2.0", port=8080)
    assert http_get(app.ip, 8080)[2] == \
        f"Hello, world!\nVersion: 2.0.0\nHostname: pod-{app.ip.replace('.', '-')}\n"
    app = start("paulbouwer/hello-kubernetes:1.10", env={"MESSAGE": "Hi <there>"}, port=8080)
    assert "Hi &lt;there&gt;" in http_get(app.ip, 8080)[2]
    app = start("nginxdemos/hello:plain-text", port=80)
    body = http_get(app.ip, 80)[2]
    assert body.startswith(f"Server address: {app.ip}:80\nServer name: pod-")
    app = start("nginxdemos/hello", port=80)
    assert "<title>Hello World</title>" in http_get(app.ip, 80)[2]
    app = start("kiamol/ch02-whoami", port=80)
    assert http_get(app.ip, 80)[2].startswith(f"I'm pod-{app.ip.replace('.', '-')} running on")
    app = start("registry.k8s.io/hpa-example", port=80)
    assert http_get(app.ip, 80)[2] == "OK!"
    app = start("gcr.io/google-samples/kubernetes-bootcamp:v1", port=8080)
    assert http_get(app.ip, 8080)[2] == \
        f"Hello Kubernetes bootcamp! | Running on: pod-{app.ip.replace('.', '-')} | v=1\n"


@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox not installed")
def test_busybox_has_the_usual_tools(start, tmp_path):
    cfg = images.resolve("busybox:1.36")
    assert cfg.path_dirs
    for tool in ("sh", "wget", "nc", "nslookup", "sleep", "cat", "ls", "echo", "env",
                 "hostname", "ping", "top", "ps"):
        assert any((Path(d) / tool).exists() for d in cfg.path_dirs), tool
    # nslookup is busybox 1.28's (search list applied), ahead of the host's busybox applet
    assert "busybox-nslookup" in cfg.path_dirs[0]
    web = start("luksa/kubia", port=8080)
    app = start("busybox", args=["sh", "-c",
                                 f"wget -q -O - http://{web.ip}:8080/ && echo done"])
    assert app.proc.wait(10) == 0
    assert app.output() == f"You've hit pod-{web.ip.replace('.', '-')}\ndone\n"
    # wget -T / --timeout, as the official image has them (the NetworkPolicy tutorial's
    # `wget --spider --timeout=1 nginx`): a success passes, a silent server times out
    with socket.socket() as silent:
        silent.bind((web.ip, 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        app = start("busybox", args=["sh", "-c", (
            f"wget -q -T 2 -O - http://{web.ip}:8080/; echo rc=$?; "
            f"wget --spider --timeout=1 http://{web.ip}:8080/ 2>/dev/null; echo rc=$?; "
            f"wget -q -T 1 -O - http://{web.ip}:{port}/; echo rc=$?")])
        assert app.proc.wait(15) == 0
    out = app.output()
    assert out.startswith("You've hit ") and out.count("rc=0") == 2, out
    assert "download timed out" in out and out.rstrip().endswith("rc=1"), out
    # debian/ubuntu keep the host's tools and add only what it lacks
    deb = images.resolve("ubuntu:22.04")
    for d in deb.path_dirs:
        for entry in Path(d).iterdir():
            if entry.name != ".complete":
                assert not shutil.which(entry.name, path="/usr/bin:/bin"), entry.name


def test_python_image_runs_plain_python(start):
    app = start("python:3.11", args=["python3", "-c", "import sys; print('py', sys.prefix)"])
    assert app.proc.wait(10) == 0
    assert app.output().startswith("py ")
    assert "/.venv" not in app.output()  # not the node agent's virtualenv


def test_redis_server_command_override_uses_the_image_wrapper(start):
    """`command: ["redis-server", "--port", "6390"]` finds the image's redis-server."""
    app = start("redis", command=["redis-server", "--port", "6390"],
                env={"KUBELAB_BUILTIN_REDIS": "1", "PYTHONPATH": ""}, port=6390)
    r = RedisConn(app.ip, 6390)
    assert r.cmd("PING") == "+PONG"
    r.close()


def test_unknown_command_in_app_images_runs_as_is(start):
    """`command: ["sh", "-c", ...]` in an nginx/redis pod runs the command (exec "$@")."""
    app = start("redis", args=["sh", "-c", "echo hello-from-sh"])
    assert app.proc.wait(10) == 0
    assert app.output() == "hello-from-sh\n"


# ---------------------------------------------------------------------------------------------
# pure cores


def test_resp_parser_handles_partial_and_inline_input():
    p = redis_app.RespParser()
    assert p.feed(b"*2\r\n$3\r\nGET\r\n$1") == []
    assert p.feed(b"\r\nk\r\n*1\r\n$4\r\nPING\r\n") == [[b"GET", b"k"], [b"PING"]]
    assert p.feed(b"set 'a b' \"c\\nd\"\r\n\r\n") == [[b"set", b"a b", b"c\nd"]]
    assert redis_app.encode([b"a", None, 3, redis_app.Status("OK")]) == \
        b"*4\r\n$1\r\na\r\n$-1\r\n:3\r\n+OK\r\n"


def test_store_expiry_uses_the_clock():
    s, sess = redis_app.Store(), {}
    assert s.execute(sess, [b"SET", b"k", b"v", b"EX", b"10"], now=100.0) == "OK"
    assert s.execute(sess, [b"TTL", b"k"], now=105.0) == 5
    assert s.execute(sess, [b"GET", b"k"], now=109.9) == b"v"
    assert s.execute(sess, [b"GET", b"k"], now=110.0) is None
    assert s.execute(sess, [b"SET", b"n", b"1", b"NX"], now=0) == "OK"
    assert s.execute(sess, [b"SET", b"n", b"2", b"NX"], now=0) is None
    assert s.execute(sess, [b"GET"], now=0).startswith("ERR wrong number of arguments")


def test_nginx_rewrite_binds_the_pod_ip_and_maps_volumes():
    ctx = nginx_app.Context(bind="127.244.1.7", run_dir="/run/x",
                            mounts={"/usr/share/nginx/html": "/vol/html",
                                    "/etc/nginx/certs": "/vol/certs"},
                            html_root="/img/html")
    out = nginx_app.rewrite(
        "user nginx;\npid /var/run/nginx.pid;\nhttp {\n"
        "  access_log /var/log/nginx/access.log main;\n"
        "  include /etc/nginx/conf.d/*.conf;\n"
        "  server {\n    listen 80 default_server;\n    listen [::]:80 default_server;\n"
        "    listen 443 ssl;\n    ssl_certificate /etc/nginx/certs/tls.crt;\n"
        "    root /usr/share/nginx/html;\n    location /img { alias /usr/share/nginx/html/i; }\n"
        "  }\n  server { listen [::]:8080; root /srv; }\n}\n", ctx)
    assert "user nginx" not in out
    assert "pid /run/x/nginx.pid;" in out
    assert "access_log /dev/stdout main;" in out
    assert "include /run/x/conf.d/*.conf;" in out
    assert "listen 127.244.1.7:80 default_server;" in out
    assert out.count("listen 127.244.1.7:80 ") == 1
    assert "listen 127.244.1.7:443 ssl;" in out
    assert "listen 127.244.1.7:8080;" in out
    assert "ssl_certificate /vol/certs/tls.crt;" in out
    assert "root /vol/html;" in out and "alias /vol/html/i;" in out
    assert "root /srv;" in out
    ctx.mounts = {}
    assert "root /img/html;" in nginx_app.rewrite("server { root /usr/share/nginx/html; }", ctx)


def test_volume_path_uses_the_longest_mount():
    mounts = {"/data": "/h/data", "/data/sub": "/h/sub", "/etc/cfg/app.conf": "/h/app.conf"}
    assert volume_path("/data/x/y", mounts) == "/h/data/x/y"
    assert volume_path("/data/sub/z", mounts) == "/h/sub/z"
    assert volume_path("/data", mounts) == "/h/data"
    assert volume_path("/etc/cfg/app.conf", mounts) == "/h/app.conf"
    assert volume_path("/database", mounts) == "/database"
    assert volume_path("/other", mounts) == "/other"


def test_volume_mounts_sources(monkeypatch):
    from nodeagent.apps import _common
    monkeypatch.delenv("KUBELAB_VOLUME_MOUNTS", raising=False)
    monkeypatch.delenv("KUBELAB_MOUNTS", raising=False)
    monkeypatch.setenv("KUBELAB_BIND_IP", "127.244.1.9")
    assert _common.volume_mounts() == {}  # loopback without volumes
    monkeypatch.setenv("KUBELAB_MOUNTS", '{"/data/": "/h/d"}')
    assert _common.volume_mounts() == {"/data": "/h/d"}
    monkeypatch.delenv("KUBELAB_MOUNTS")
    monkeypatch.setenv("KUBELAB_BIND_IP", "0.0.0.0")  # a pod namespace: real mount points
    assert _common.volume_mounts()["/proc"] == "/proc"
    assert _common.is_mounted("/proc/self/status")
    assert not _common.is_mounted("/usr/share/nginx/html", {"/usr/share/nginx/html/x": "/x"})


def test_apps_import_fast():
    """Built-in apps are on the pod start-up path: stdlib only, no heavy imports."""
    code = ("import time; t=time.perf_counter(); import nodeagent.apps.nginx, "
            "nodeagent.apps.redis, nodeagent.apps.echo, nodeagent.apps.hello, "
            "nodeagent.apps.kubia, nodeagent.apps.http_echo, nodeagent.apps.counter; "
            "print(time.perf_counter()-t)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    took = min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    env=env, check=True, timeout=30).stdout) for _ in range(3))
    assert took < 0.5  # ~0.1 s on an idle machine, most of it asyncio itself
    probe = ("import sys, nodeagent.apps.nginx, nodeagent.apps.redis; "
             "print(' '.join(sys.modules))")
    mods = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=30, env=env).stdout.split()
    assert "aiohttp" not in mods and "grpc" not in mods and "kubelab" not in mods
