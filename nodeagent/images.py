"""The node agent's image catalog: image references → a local program with the image's behaviour.

No image can be pulled. `resolve(image)` normalises an image reference the way the container
runtime does (optional registry, `docker.io` / `docker.io/library/` for Docker Hub, `:latest` when
no tag, digests accepted) and returns the image's configuration (ENTRYPOINT, CMD, ENV, WORKDIR)
pointing at a real binary from the OS packages when installed, else at a built-in app
(`python -m nodeagent.apps.<app>`). An image not in the catalog raises `ImageNotFound`; the pod
worker turns that into ErrImagePull / ImagePullBackOff exactly as the kubelet does.

See docs/images.md for the catalog and how to add an image.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

# Kubernetes' default PATH of the Debian/Alpine based images.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageNotFound(Exception):
    """The image cannot be "pulled": not in the catalog (reason ErrImagePull)."""

    reason = "ErrImagePull"

    def __init__(self, image: str, detail: str = "", canonical: str | None = None):
        self.image = image
        ref = canonical or image
        self.detail = detail or (
            f"rpc error: code = NotFound desc = failed to pull and unpack image "
            f"\"{ref}\": failed to resolve reference \"{ref}\": {ref}: not found")
        super().__init__(self.detail)


class InvalidImageName(ImageNotFound):
    """The reference does not parse (the kubelet's waiting reason InvalidImageName)."""

    reason = "InvalidImageName"

    def __init__(self, image: str):
        super().__init__(image, f"Failed to apply default image tag \"{image}\": couldn't parse "
                                f"image name \"{image}\": invalid reference format")


@dataclass
class ImageConfig:
    """What the runtime needs of an image (the OCI image config, in short)."""

    name: str                          # canonical reference, e.g. docker.io/library/nginx:latest
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    path_dirs: list[str] = field(default_factory=list)   # prepended to PATH
    ports: list[int] = field(default_factory=list)       # EXPOSE, informational


@dataclass(frozen=True)
class ImageRef:
    registry: str      # docker.io, registry.k8s.io, ...
    repository: str    # library/nginx, luksa/kubia, pause, ...
    tag: str           # latest when absent
    digest: str | None

    @property
    def name(self) -> str:
        """The canonical, fully-qualified reference (as the kubelet reports `imageID`-less)."""
        ref = f"{self.registry}/{self.repository}:{self.tag}"
        return f"{ref}@{self.digest}" if self.digest else ref

    @property
    def key(self) -> str:
        return f"{self.registry}/{self.repository}"


_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


def parse_reference(image: str) -> ImageRef:
    """Normalise an image reference like the container runtime (docker/distribution rules)."""
    if not image or image != image.strip() or len(image) > 255 + 128 + 80:
        raise InvalidImageName(image)
    rest, digest = image, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidImageName(image)
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.match(tag):
            raise InvalidImageName(image)
    parts = rest.split("/")
    registry = DOCKER_HUB
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry = parts.pop(0)
        if not _HOST.match(registry):
            raise InvalidImageName(image)
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
    if not parts or not all(_COMPONENT.match(p) for p in parts):
        raise InvalidImageName(image)
    repository = "/".join(parts)
    if registry == DOCKER_HUB and len(parts) == 1:
        repository = f"library/{repository}"
    return ImageRef(registry, repository, tag or "latest", digest)


# ---------------------------------------------------------------------------------------------
# Helpers the catalog entries use


def cache_dir() -> Path:
    """Where generated helper directories (busybox applet links, wrappers) live."""
    return Path(os.environ.get("KUBELAB_IMAGE_CACHE")
                or os.path.join(tempfile.gettempdir(), "kubelab-images"))


def app(name: str) -> list[str]:
    """argv of a built-in app."""
    return [sys.executable, "-m", f"nodeagent.apps.{name}"]


def app_env() -> dict[str, str]:
    """Env the built-in apps need: PYTHONPATH to this source tree, but only when the package
    is not installed for sys.executable (checked once, from a neutral directory)."""
    if "app_env" not in _memo:
        root = str(Path(__file__).resolve().parent.parent)
        try:
            ok = subprocess.run([sys.executable, "-c", "import nodeagent.apps"], cwd="/", check=False,
                                capture_output=True, timeout=20,
                                env={k: v for k, v in os.environ.items()
                                     if k != "PYTHONPATH"}).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        _memo["app_env"] = [] if ok else [root]
    dirs = _memo["app_env"]
    return {"PYTHONPATH": dirs[0]} if dirs else {}


def _write_dir(name: str, entries: dict[str, str | tuple[str, str]]) -> str:
    """Create (once, atomically) cache_dir()/name with symlinks (str target) or scripts
    (("script", text)); return its path. Safe to call concurrently from several agents."""
    content = repr(sorted(entries.items())).encode()
    target = cache_dir() / f"{name}-{hashlib.sha256(content).hexdigest()[:10]}"
    stamp = target / ".complete"
    if stamp.exists():
        return str(target)
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))
    for entry, what in entries.items():
        p = tmp / entry
        if isinstance(what, tuple):
            p.write_text(what[1])
            p.chmod(0o755)
        else:
            p.symlink_to(what)
    (tmp / ".complete").write_text("")
    tmp.chmod(0o755)
    try:
        os.rename(tmp, target)
    except OSError:  # somebody else won the race, or a stale incomplete dir exists
        if not stamp.exists():
            shutil.rmtree(target, ignore_errors=True)
            try:
                os.rename(tmp, target)
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _busybox_applets(busybox: str) -> list[str]:
    try:
        out = subprocess.run([busybox, "--list"], capture_output=True, text=True, timeout=5,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [a for a in out.split() if a and "/" not in a]


_memo: dict[str, list[str]] = {}


def busybox_dirs(only_missing: bool = False) -> list[str]:
    """A directory of busybox applet symlinks (sh, wget, nc, nslookup, ...) when busybox is
    installed. only_missing: link only applets the host lacks (for debian/ubuntu, whose own
    tools are the host's)."""
    key = f"busybox-missing-{os.getuid()}" if only_missing else "busybox"
    if key in _memo:
        return _memo[key]
    busybox = shutil.which("busybox")
    dirs: list[str] = []
    if busybox:
        applets = _busybox_applets(busybox)
        if only_missing:
            host_path = os.environ.get("PATH", DEFAULT_PATH) + ":" + DEFAULT_PATH
            applets = [a for a in applets if not shutil.which(a, path=host_path)]
        if applets:
            dirs = [_write_dir(key, {a: busybox for a in applets})]
    _memo[key] = dirs
    return dirs


def _wrapper(app_name: str, *prefix: str) -> tuple[str, str]:
    argv = " ".join(_shquote(a) for a in [*app(app_name), *prefix])
    pp = app_env().get("PYTHONPATH")
    setenv = f"PYTHONPATH={_shquote(pp)}${{PYTHONPATH:+:$PYTHONPATH}}\nexport PYTHONPATH\n" \
        if pp else ""
    return ("script", f"#!/bin/sh\n{setenv}exec {argv} \"$@\"\n")


def _shquote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def wrapper_dirs(name: str, wrappers: dict[str, tuple[str, ...]],
                 links: dict[str, str] | None = None) -> list[str]:
    """A cache directory of small `#!/bin/sh exec python -m nodeagent.apps.<app>` scripts (so
    `command: ["redis-server", ...]` works) plus symlinks to real host tools."""
    if name in _memo:
        return _memo[name]
    entries: dict[str, str | tuple[str, str]] = {
        cmd: _wrapper(spec[0], *spec[1:]) for cmd, spec in wrappers.items()}
    for cmd, target in (links or {}).items():
        found = shutil.which(target)
        if found:
            entries[cmd] = found
    _memo[name] = [_write_dir(name, entries)]
    return _memo[name]


def _base_python() -> str:
    """A plain interpreter (not our virtualenv) for the python image."""
    for cand in (getattr(sys, "_base_executable", None), shutil.which("python3"), sys.executable):
        if cand and os.path.exists(cand):
            return os.path.realpath(cand)
    return sys.executable


# ---------------------------------------------------------------------------------------------
# The catalog: registry/repository → builder(ref) → ImageConfig

Builder = Callable[[ImageRef], ImageConfig]
CATALOG: dict[str, Builder] = {}


def image(*keys: str) -> Callable[[Builder], Builder]:
    """Register a builder under one or more `registry/repository` keys (short names are
    normalised, so "nginx" means docker.io/library/nginx)."""
    def deco(fn: Builder) -> Builder:
        for k in keys:
            ref = parse_reference(k)
            CATALOG[ref.key] = fn
        return fn
    return deco


def _cfg(ref: ImageRef, **kw) -> ImageConfig:
    env = {"PATH": DEFAULT_PATH}
    if any("nodeagent.apps." in a for a in kw.get("entrypoint", [])):
        env.update(app_env())
    env.update(kw.pop("env", {}))
    return ImageConfig(name=ref.name, env=env, **kw)


# `wget -T SEC` / `--timeout=SEC` for a busybox built without them (Debian's: `-T` crashes it,
# `--timeout` is refused), as the official busybox image has them and tutorials use them
# (`wget --spider --timeout=1 nginx` in the NetworkPolicy one). A timeout ends like busybox's
# (SIGINT: the shell reports no "Terminated" for it).
_WGET_TIMEOUT = """#!/bin/sh
secs=
want=
for a do
  shift
  if [ -n "$want" ]; then secs=$a; want=; continue; fi
  case $a in
    -T|--timeout) want=1; continue ;;
    -T*) secs=${a#-T}; continue ;;
    --timeout=*) secs=${a#--timeout=}; continue ;;
  esac
  set -- "$@" "$a"
done
[ -z "$secs" ] && exec BUSYBOX wget "$@"
BUSYBOX timeout -s INT "$secs" BUSYBOX wget "$@"
rc=$?
if [ "$rc" = 130 ]; then echo "wget: download timed out" >&2; exit 1; fi
exit "$rc"
"""


def busybox_wget_dirs() -> list[str]:
    """The wget wrapper above, when the host's busybox lacks -T (else its own wget serves)."""
    if "busybox-wget" in _memo:
        return _memo["busybox-wget"]
    busybox = shutil.which("busybox")
    dirs: list[str] = []
    if busybox:
        usage = subprocess.run([busybox, "wget", "--help"], capture_output=True, text=True,
                               check=False)
        if "-T SEC" not in usage.stdout + usage.stderr:
            dirs = [_write_dir("busybox-wget", {
                "wget": ("script", _WGET_TIMEOUT.replace("BUSYBOX", _shquote(busybox)))})]
    _memo["busybox-wget"] = dirs
    return dirs


@image("busybox", "alpine", "k8s.gcr.io/busybox", "registry.k8s.io/busybox",
       "gcr.io/google-containers/busybox", "radial/busyboxplus")
def _busybox(ref: ImageRef) -> ImageConfig:
    # nslookup as busybox 1.28 (the version the DNS tutorials pin): it applies the search list
    nslookup = wrapper_dirs("busybox-nslookup", {"nslookup": ("nslookup",)})
    return _cfg(ref, cmd=["sh"], path_dirs=nslookup + busybox_wget_dirs() + busybox_dirs())


@image("debian", "ubuntu")
def _debian(ref: ImageRef) -> ImageConfig:
    return _cfg(ref, cmd=["bash"] if shutil.which("bash") else ["sh"],
                path_dirs=busybox_dirs(only_missing=True))


@image("python")
def _python(ref: ImageRef) -> ImageConfig:
    py = _base_python()
    ver = ".".join(map(str, sys.version_info[:3]))
    key = "python"
    if key not in _memo:
        pip = shutil.which("pip3")
        links = {"python3": py, "python": py}
        if pip:
            links.update({"pip3": pip, "pip": pip})
        _memo[key] = [_write_dir(key, links)] + busybox_dirs(only_missing=True)
    return _cfg(ref, cmd=["python3"], path_dirs=_memo[key],
                env={"LANG": "C.UTF-8", "PYTHON_VERSION": ver})


@image("registry.k8s.io/pause", "k8s.gcr.io/pause", "gcr.io/google_containers/pause",
       "gcr.io/google-containers/pause", "rancher/mirrored-pause")
def _pause(ref: ImageRef) -> ImageConfig:
    return _cfg(ref, entrypoint=app("pause"))


@image("nginx", "nginxinc/nginx-unprivileged", "bitnami/nginx",
       "registry.k8s.io/nginx-slim", "k8s.gcr.io/nginx-slim")  # the StatefulSet tutorial's
def _nginx(ref: ImageRef) -> ImageConfig:
    port = 8080 if ref.repository in ("nginxinc/nginx-unprivileged", "bitnami/nginx") else 80
    dirs = wrapper_dirs("nginx", {"nginx": ("nginx", "nginx"),
                                  "nginx-debug": ("nginx", "nginx")})
    return _cfg(ref, entrypoint=app("nginx"), cmd=["nginx", "-g", "daemon off;"],
                env={"NGINX_VERSION": "1.27.3", "KUBELAB_NGINX_PORT": str(port)},
                path_dirs=dirs + busybox_dirs(only_missing=True), ports=[port])


@image("redis", "bitnami/redis")
def _redis(ref: ImageRef) -> ImageConfig:
    dirs = wrapper_dirs("redis", {"redis-server": ("redis", "redis-server")},
                        links={"redis-cli": "redis-cli"})
    return _cfg(ref, entrypoint=app("redis"), cmd=["redis-server"],
                env={"REDIS_VERSION": "7.4.1"}, workdir=None,
                path_dirs=dirs + busybox_dirs(only_missing=True), ports=[6379])


def _web_app(name: str, *args: str, port: int, **kw) -> Builder:
    def build(ref: ImageRef) -> ImageConfig:
        return _cfg(ref, entrypoint=[*app(name), *args], ports=[port], **kw)
    return build


@image("luksa/kubia")
def _kubia(ref: ImageRef) -> ImageConfig:
    """The book's tags: v1/v2 say "This is vN running in pod <name>", v3 fails after the fifth
    request (chapter 9's rollout examples); other tags say "You've hit <name>"."""
    args = [f"--version={ref.tag}"] if ref.tag in ("v1", "v2", "v3") else []
    return _cfg(ref, entrypoint=[*app("kubia"), *args], ports=[8080])


# node.js as PID 1 ignores SIGTERM: the liveness example shows exit code 137 after the grace period
image("luksa/kubia-unhealthy")(_web_app("kubia", "--unhealthy", "--ignore-sigterm", port=8080))
image("subicura/echo", "ghcr.io/subicura/echo")(
    _web_app("echo", "--style", "echo-server", "--port", "3000", port=3000))
image("subicura/counter", "ghcr.io/subicura/counter")(_web_app("counter", port=3000))
image("hashicorp/http-echo")(_web_app("http_echo", port=5678))
image("kicbase/echo-server", "jmalloc/echo-server")(
    _web_app("echo", "--style", "echo-server", port=8080))
image("gcr.io/google-samples/hello-app",
      "us-docker.pkg.dev/google-samples/containers/gke/hello-app")(
    lambda ref: _cfg(ref, entrypoint=[*app("hello"), "--style", "hello-app"], ports=[8080],
                     env={"KUBELAB_APP_VERSION": "2.0.0" if ref.tag.startswith("2")
                          else "1.0.0"}))
image("k8s.gcr.io/echoserver", "registry.k8s.io/echoserver",
      "gcr.io/google_containers/echoserver")(
    lambda ref: _cfg(ref, entrypoint=[*app("echo"), "--style", "echoserver", "--port", "8080",
                                      *(["--legacy"] if ref.tag in ("1.4", "1.5", "1.6")
                                        else [])], ports=[8080]))
image("paulbouwer/hello-kubernetes")(_web_app("hello", "--style", "hello-kubernetes",
                                              port=8080))
image("nginxdemos/hello")(lambda ref: _cfg(
    ref, entrypoint=[*app("hello"), "--style", "nginxdemos",
                     *(["--plain"] if ref.tag.startswith("plain-text") else [])], ports=[80]))
image("kiamol/ch02-whoami")(_web_app("hello", "--style", "whoami", port=80))
image("k8s.gcr.io/hpa-example", "registry.k8s.io/hpa-example")(
    _web_app("hello", "--style", "hpa-example", port=80))
image("gcr.io/google-samples/kubernetes-bootcamp", "jocatalin/kubernetes-bootcamp")(
    lambda ref: _cfg(ref, entrypoint=[*app("hello"), "--style", "bootcamp"], ports=[8080],
                     env={"KUBELAB_APP_VERSION": "2" if ref.tag.startswith("v2") else "1"}))


@image("kiamol/ch02-hello-kiamol", "kiamol/ch02-hello-kiamol-2", "kiamol/ch02-hello-kiamol-3")
def _kiamol(ref: ImageRef) -> ImageConfig:
    """nginx:1.21-alpine serving the chapter 2 page."""
    cfg = _nginx(ref)
    cfg.env["KUBELAB_NGINX_HTML"] = "kiamol-ch02"
    cfg.env["KUBELAB_NGINX_PORT"] = "80"
    cfg.path_dirs = cfg.path_dirs[:1] + busybox_dirs()
    return cfg


@image("kiamol/ch03-sleep")
def _kiamol_sleep(ref: ImageRef) -> ImageConfig:
    return _cfg(ref, cmd=["/bin/sh", "-c",
                          "trap : TERM INT; (while true; do sleep 1000; done) & wait"],
                path_dirs=busybox_dirs())


def resolve(image_ref: str) -> ImageConfig:
    """The configuration of `image_ref`, or ImageNotFound (InvalidImageName for bad syntax)."""
    ref = parse_reference(image_ref)
    builder = CATALOG.get(ref.key)
    if builder is None:
        raise ImageNotFound(image_ref, canonical=ref.name)
    cfg = builder(ref)
    # callers own what they get: never hand out the cached lists themselves
    return replace(cfg, entrypoint=list(cfg.entrypoint), cmd=list(cfg.cmd), env=dict(cfg.env),
                   path_dirs=list(cfg.path_dirs), ports=list(cfg.ports))


def catalog_names() -> list[str]:
    """Every image the catalog knows, as registry/repository."""
    return sorted(CATALOG)
