"""The container runtime: containers are process groups supervised by per-container shims
(nodeagent/shim.py) that outlive the node agent. Everything is recorded under the root dir:

  <root>/pods/<namespace>_<pod>_<uid>/pod.json                       pod identity, IP, netns
  <root>/pods/<namespace>_<pod>_<uid>/<container>/<restartCount>.log  CRI-format log (rotated .1..)
  <root>/pods/<namespace>_<pod>_<uid>/<container>/<restartCount>/     spec.json, state.json,
                                                                      attach.sock

so a restarted agent re-adopts what runs (`Runtime.adopt`), and `kill_all(root_dir)` (for the
launcher's `kubelab kill worker-N`) can kill every container of a worker without the agent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

from . import cgroups

NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"

log = logging.getLogger(__name__)

SHIM = str(Path(__file__).resolve().with_name("shim.py"))


@dataclasses.dataclass
class ExecSpec:
    argv: list[str]
    env: dict
    cwd: str


def _read_json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
        return st[st.rindex(b")") + 2:st.rindex(b")") + 3] != b"Z"
    except (OSError, ValueError):
        return False


def _is_shim(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"shim.py" in f.read() or False
    except OSError:
        return False


def _proc_usage(pgid: int) -> tuple[int, int]:
    """(cpu ns, rss bytes) of the processes of a process group, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    cpu = rss = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                st = f.read()
            fields = st[st.rindex(b")") + 2:].split()
            if int(fields[2]) != pgid:
                continue
            cpu += (int(fields[11]) + int(fields[12])) * 1_000_000_000 // tick
            rss += int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    return cpu, rss


async def spawn_and_wait(argv: list[str], env: dict) -> int:
    """Run argv in a new session with /dev/null for stdio and wait for its exit, cheaply:
    posix_spawn (vfork, no copy of the agent's page tables) and a pidfd in the event loop
    instead of a waiting thread. Returns the exit status."""
    devnull = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
               (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)]
    pid = os.posix_spawn(argv[0], argv, env, file_actions=devnull,  # noqa: ASYNC221
                         setsid=True)
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        return os.waitstatus_to_exitcode(status)
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    _, status = os.waitpid(pid, 0)  # noqa: ASYNC222 - it has exited: does not block
    return os.waitstatus_to_exitcode(status)


class ContainerHandle:
    """One container instance (a restartCount) as the runtime knows it."""

    def __init__(self, runtime: Runtime, pod: PodHandle, name: str, restart_count: int):
        self.runtime = runtime
        self.pod = pod
        self.name = name
        self.restart_count = restart_count
        self.dir = pod.dir / name / str(restart_count)
        self.state: dict = _read_json(self.dir / "state.json") or {}
        self.spec: dict = _read_json(self.dir / "spec.json") or {}
        self._exited: asyncio.Future | None = None
        self._pidfd: int | None = None

    # ---------------------------------------------------------------- the server's contract
    @property
    def id(self) -> str:
        return self.state.get("id") or self.spec.get("id", "")

    @property
    def container_id(self) -> str:
        return f"kubelab://{self.id}" if self.id else ""

    @property
    def running(self) -> bool:
        return bool(self.state.get("pid")) and self.state.get("exitCode") is None and \
            _alive(self.state.get("shimPid", 0))

    @property
    def tty(self) -> bool:
        return bool(self.spec.get("tty"))

    @property
    def stdin(self) -> bool:
        return bool(self.spec.get("stdin"))

    @property
    def attach_socket(self) -> Path | None:
        p = self.state.get("attachSocket")
        return Path(p) if p and self.running else None

    def log_path(self, previous: bool = False) -> Path | None:
        n = self.restart_count - 1 if previous else self.restart_count
        if n < 0:
            return None
        p = self.pod.dir / self.name / f"{n}.log"
        return p if p.exists() else None

    def exec_spec(self, argv: list[str]) -> ExecSpec:
        env = dict(self.spec.get("env") or {})
        cwd = self.spec.get("workdir") or self.spec.get("cwd") or "/"
        pid = self.state.get("pid")
        if self.pod.netns_path and pid and _alive(pid):
            # join the container's namespaces (net, mount, uts) through its main process
            # the node's util-linux nsenter by absolute path: the container's PATH may
            # lead to busybox's applet of the same name, which lacks these options
            argv = [NSENTER, f"--target={pid}", "--net", "--mount", "--uts",
                    f"--wdns={cwd}", "--", *argv]
            cwd = "/"
        elif not os.path.isdir(cwd):
            cwd = "/"
        return ExecSpec(argv=list(argv), env=env, cwd=cwd)

    def stats(self) -> tuple[int, int]:
        s = cgroups.stats(self.runtime.node_name, self.pod.uid, self.name) \
            if self.running else None
        if s is not None:
            return s
        pgid = self.state.get("pgid") or 0
        return _proc_usage(pgid) if pgid and self.running else (0, 0)

    # ---------------------------------------------------------------- lifecycle
    def reload(self) -> dict:
        self.state = _read_json(self.dir / "state.json") or self.state
        return self.state

    def exited(self) -> asyncio.Future:
        """A future resolved with the final state once the shim has recorded the exit."""
        if self._exited is not None:
            return self._exited
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._exited = fut
        shim = self.state.get("shimPid", 0)
        if self.state.get("exitCode") is not None:
            fut.set_result(self.state)
            return fut
        try:
            fd = os.pidfd_open(shim) if shim and _is_shim(shim) else None
        except OSError:
            fd = None
        if fd is None:
            self._finish_lost()
            fut.set_result(self.state)
            return fut
        self._pidfd = fd

        def on_exit():
            loop.remove_reader(fd)
            os.close(fd)
            self._pidfd = None
            self.reload()
            if self.state.get("exitCode") is None:
                self._finish_lost()
            if not fut.done():
                fut.set_result(self.state)
        loop.add_reader(fd, on_exit)
        return fut

    def _finish_lost(self) -> None:
        """The shim is gone without recording an exit (killed): kill what may remain and
        record the container as unknown, as the kubelet does."""
        pgid = self.state.get("pgid") or 0
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        self.state.update(exitCode=137, reason="ContainerStatusUnknown",
                          message="The container could not be located when the pod was "
                                  "terminated", finishedAt=self.state.get("finishedAt")
                          or time.time())
        self.state.setdefault("startedAt", time.time())
        try:
            tmp = self.dir / "state.json.tmp"
            tmp.write_text(json.dumps(self.state))
            os.replace(tmp, self.dir / "state.json")
        except OSError:
            pass

    def signal(self, sig: int) -> None:
        pgid = self.state.get("pgid") or 0
        if pgid and self.running:
            try:
                os.killpg(pgid, sig)
            except OSError:
                pass

    async def stop(self, grace: float) -> dict:
        """SIGTERM to the container's process group, SIGKILL after `grace` seconds."""
        fut = self.exited()
        if fut.done():
            return fut.result()
        self.signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(0.0, grace))
        except TimeoutError:
            self.signal(signal.SIGKILL)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), 10)
            except TimeoutError:
                self._finish_lost()
                return self.state

    def close(self) -> None:
        if self._pidfd is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._pidfd)
            except RuntimeError:
                pass
            os.close(self._pidfd)
            self._pidfd = None


class PodHandle:
    def __init__(self, runtime: Runtime, namespace: str, name: str, uid: str):
        self.runtime = runtime
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.dir = runtime.root / "pods" / f"{namespace}_{name}_{uid}"
        self.ip = ""
        self.netns_path: str | None = None
        self.containers: dict[str, ContainerHandle] = {}  # name -> latest instance

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "pod.json.tmp"
        tmp.write_text(json.dumps({"namespace": self.namespace, "name": self.name,
                                   "uid": self.uid, "ip": self.ip,
                                   "netnsPath": self.netns_path}))
        os.replace(tmp, self.dir / "pod.json")


class Runtime:
    def __init__(self, root_dir: str | os.PathLike, node_name: str, driver=None):
        self.root = Path(root_dir)
        self.node_name = node_name
        self.driver = driver
        self.pods: dict[str, PodHandle] = {}
        (self.root / "pods").mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- the server's contract
    def find_pod(self, namespace: str, name: str) -> PodHandle | None:
        for p in self.pods.values():
            if p.namespace == namespace and p.name == name:
                return p
        return None

    def node_stats(self) -> tuple[int, int]:
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()[1:]
            tick = os.sysconf("SC_CLK_TCK")
            cpu = sum(int(x) for x in fields[:3]) * 1_000_000_000 // tick
        except (OSError, ValueError):
            cpu = 0
        mem = 0
        try:
            info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text()
                        .splitlines() if ":" in line)
            mem = (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) * 1024
        except (OSError, KeyError, ValueError):
            pass
        return cpu, mem

    # ---------------------------------------------------------------- pods
    def pod(self, namespace: str, name: str, uid: str) -> PodHandle:
        p = self.pods.get(uid)
        if p is None:
            p = self.pods[uid] = PodHandle(self, namespace, name, uid)
        return p

    def adopt(self) -> list[PodHandle]:
        """Rebuild the handles of every pod and container recorded under the root dir."""
        found = []
        for d in sorted((self.root / "pods").glob("*/pod.json")):
            meta = _read_json(d)
            if not meta or not meta.get("uid"):
                continue
            p = self.pod(meta["namespace"], meta["name"], meta["uid"])
            p.ip = meta.get("ip") or ""
            p.netns_path = meta.get("netnsPath")
            for cdir in p.dir.iterdir():
                if not cdir.is_dir():
                    continue
                counts = [int(x.name) for x in cdir.iterdir() if x.is_dir() and x.name.isdigit()
                          and (x / "state.json").exists()]
                if counts:
                    p.containers[cdir.name] = ContainerHandle(self, p, cdir.name, max(counts))
            found.append(p)
        return found

    async def start_container(self, pod: PodHandle, name: str, restart_count: int, *,
                              argv: list[str], env: dict, cwd: str, workdir: str = "",
                              tty: bool = False, stdin: bool = False,
                              stdin_once: bool = False, memory_limit: int = 0,
                              cpu_limit: float = 0.0, cpu_request: float = 0.0,
                              oom_score_adj: int | None = None) -> ContainerHandle:
        """Start one container instance through a shim; returns once it runs (or failed to
        start: the handle's state then says StartError)."""
        h = ContainerHandle(self, pod, name, restart_count)
        if h.dir.exists():
            shutil.rmtree(h.dir, ignore_errors=True)
        h.dir.mkdir(parents=True)
        cid = uuid.uuid4().hex + uuid.uuid4().hex
        groups = cgroups.create(self.node_name, pod.uid, name, memory_limit=memory_limit,
                                cpu_limit=cpu_limit, cpu_request=cpu_request)
        spec = {"id": cid, "argv": argv, "env": env, "cwd": cwd, "workdir": workdir or cwd,
                "log_path": str(pod.dir / name / f"{restart_count}.log"),
                "tty": tty, "stdin": stdin, "stdin_once": stdin_once,
                "cgroups": groups,
                "memory_cgroup": cgroups.memory_dir(self.node_name, pod.uid, name)
                if groups else "",
                "memory_limit_watchdog": 0 if groups else memory_limit,
                "oom_score_adj": oom_score_adj}
        (h.dir / "spec.json").write_text(json.dumps(spec))
        h.spec = spec
        await spawn_and_wait([sys.executable, "-S", SHIM, str(h.dir)],
                             {"PATH": os.environ.get("PATH", os.defpath)})
        h.reload()
        if not h.state:
            h.state = {"id": cid, "pid": 0, "startedAt": time.time(),
                       "finishedAt": time.time(), "exitCode": 128, "reason": "StartError",
                       "message": "the container shim failed to start"}
        pod.containers[name] = h
        return h

    def remove_pod(self, uid: str, keep_logs: bool = False) -> None:
        """Kill everything of the pod that may still run and remove its records."""
        p = self.pods.pop(uid, None)
        dirs = [p.dir] if p else list((self.root / "pods").glob(f"*_{uid}"))
        for d in dirs:
            _kill_recorded(d)
            if not keep_logs:
                shutil.rmtree(d, ignore_errors=True)
        if p:
            for h in p.containers.values():
                h.close()
        cgroups.remove(self.node_name, uid)

    def recorded_uids(self) -> set[str]:
        out = set()
        for d in (self.root / "pods").glob("*/pod.json"):
            meta = _read_json(d)
            if meta and meta.get("uid"):
                out.add(meta["uid"])
        return out


def _kill_recorded(pod_dir: Path) -> int:
    n = 0
    for st in pod_dir.glob("*/*/state.json"):
        s = _read_json(st) or {}
        shim = s.get("shimPid") or 0
        if shim and _is_shim(shim):
            try:
                os.kill(shim, signal.SIGKILL)
            except OSError:
                pass
        pgid = s.get("pgid") or 0
        if pgid and s.get("exitCode") is None:
            try:
                os.killpg(pgid, signal.SIGKILL)
                n += 1
            except OSError:
                pass
        sock = s.get("attachSocket")
        if sock and sock.startswith("/tmp/kubelab-attach/"):
            try:
                os.unlink(sock)
            except OSError:
                pass
    return n


def kill_all(root_dir: str | os.PathLike) -> int:
    """Kill every recorded container process (and shim) of a worker, remove its cgroups and,
    as root, its pod network namespaces. For the launcher's `kubelab kill worker-N`; works
    without the node agent running. Returns the number of container process groups killed."""
    root = Path(root_dir)
    n = 0
    for d in (root / "pods").glob("*"):
        if d.is_dir():
            n += _kill_recorded(d)
    node = _read_json(root / "node.json") or {}
    if node.get("nodeName"):
        # only this worker's pods: several clusters may each have a node of that name
        for meta in (root / "pods").glob("*/pod.json"):
            uid = (_read_json(meta) or {}).get("uid")
            if uid:
                try:
                    cgroups.remove(node["nodeName"], uid)
                except OSError:
                    pass
    if node.get("network") and node["network"] != "loopback" and os.geteuid() == 0:
        try:
            from .sandbox import make_sandbox_driver
            make_sandbox_driver(node["network"], node.get("nodeIP", ""), node.get("podCIDR", ""),
                                node.get("clusterDNS", ""), node.get("clusterDomain", ""),
                                str(root)).cleanup_all()
        except Exception as e:  # noqa: BLE001
            log.warning("cleaning the sandboxes of %s: %s", root, e)
    return n
