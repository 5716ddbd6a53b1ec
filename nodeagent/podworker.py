"""The pod worker: one asyncio task per pod serializing everything done to it (the kubelet's
pod worker + SyncPod). Each pass is level-triggered: observe the runtime (the shims' state files),
compute what should run (init containers in order, app containers, restarts with
CrashLoopBackOff, liveness kills), act, and write the status computed from the observation —
only when it changed.

Pure pieces, unit-tested without processes: `Backoff` (flowcontrol.Backoff), `qos_class`,
`container_argv`, `restart_wanted`, `observed_state`.

Time scale (--time-scale): the kubelet's own timers are scaled — container restart back-off
(10 s doubling to 300 s, reset after 10 min), image pull back-off, the sync period (volume
refresh), and the probes' initialDelaySeconds and periodSeconds (so a probe keeps its Kubernetes
default of 10 s, just faster in a scaled cluster). Durations that bound real work are not:
probe timeoutSeconds and terminationGracePeriodSeconds (a SIGTERM handler gets the time the pod
asked for). The CrashLoopBackOff message shows the Kubernetes (unscaled) back-off value.

Loopback network: containers share the node's namespaces, so volumes cannot appear at their
mountPath; each container gets `KUBELAB_MOUNTS` = JSON {mountPath: host path} (and
`KUBELAB_BIND_IP`, `KUBELAB_POD_IP`, `KUBELAB_RESOLV_CONF`, `KUBELAB_HOSTS`). With the bridge
driver the mounts are real (nodeagent/netns.py wraps the command).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import inspect
import json
import logging
import os
import time
from collections.abc import Callable

from kubelab import timescale
from kubelab.client import APIError

from . import cgroups, probes
from .runtime import ContainerHandle, PodHandle
from .status import ContainerState, pod_status, rfc3339

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 10.0      # kubelet's container restart back-off
BACKOFF_MAX = 300.0
IMAGE_BACKOFF_INITIAL = 10.0
IMAGE_BACKOFF_MAX = 300.0
DEFAULT_GRACE = 30
# a scaled probe period never goes below this: at --time-scale 0.1 a 1 s period would mean
# ten probes a second per container, which costs more CPU than the pods themselves
MIN_PROBE_PERIOD = 0.25


# --------------------------------------------------------------------------- pure logic


class Backoff:
    """client-go's flowcontrol.Backoff per key: the first restart is immediate; then a container
    that exits again within `backoff` of its exit waits until exit + backoff; the back-off
    doubles up to `maximum` and is reset once an event comes more than 2 x maximum after the
    last one (a container that ran ten minutes without trouble, at the default 300 s)."""

    def __init__(self, initial: float, maximum: float, clock: Callable[[], float] = time.time):
        self.initial = initial
        self.maximum = maximum
        self.clock = clock
        self.entries: dict[str, tuple[float, float]] = {}  # key -> (backoff, last update)

    def _expired(self, event_time: float, last: float) -> bool:
        return event_time - last > 2 * self.maximum

    def in_backoff_since(self, key: str, event_time: float) -> bool:
        e = self.entries.get(key)
        if e is None or self._expired(event_time, e[1]):
            return False
        return self.clock() - event_time < e[0]

    def remaining(self, key: str, event_time: float) -> float:
        e = self.entries.get(key)
        if e is None or self._expired(event_time, e[1]):
            return 0.0
        return max(0.0, e[0] - (self.clock() - event_time))

    def current(self, key: str) -> float:
        e = self.entries.get(key)
        return e[0] if e else 0.0

    def next(self, key: str, event_time: float) -> float:
        e = self.entries.get(key)
        if e is None or self._expired(event_time, e[1]):
            b = self.initial
        else:
            b = min(e[0] * 2, self.maximum)
        self.entries[key] = (b, event_time)
        return b

    def reset(self, key: str) -> None:
        self.entries.pop(key, None)


def container_backoff() -> Backoff:
    return Backoff(timescale.scaled(BACKOFF_INITIAL), timescale.scaled(BACKOFF_MAX))


def fmt_duration(seconds: float) -> str:
    """Go's time.Duration String() for whole-ish seconds (10s, 1m20s, 5m0s)."""
    s = round(seconds, 3)
    if s < 1:
        return f"{int(s * 1000)}ms"
    if s < 60:
        return f"{s:g}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec}s"
    h, m = divmod(m, 60)
    return f"{h}h{m}m{sec}s"


def _requests_limits(c: dict) -> tuple[dict, dict]:
    r = c.get("resources") or {}
    limits = dict(r.get("limits") or {})
    requests = dict(r.get("requests") or {})
    for k, v in limits.items():
        requests.setdefault(k, v)  # the API server defaults requests to limits
    return requests, limits


def qos_class(pod: dict) -> str:
    """Guaranteed / Burstable / BestEffort (pkg/apis/core/helper/qos)."""
    spec = pod.get("spec", {})
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    requests: dict[str, float] = {}
    limits: dict[str, float] = {}
    guaranteed = True
    for c in containers:
        req, lim = _requests_limits(c)
        for k, v in req.items():
            if k in ("cpu", "memory") and cgroups.parse_quantity(v) > 0:
                requests[k] = requests.get(k, 0) + cgroups.parse_quantity(v)
        got = set()
        for k, v in lim.items():
            if k in ("cpu", "memory") and cgroups.parse_quantity(v) > 0:
                limits[k] = limits.get(k, 0) + cgroups.parse_quantity(v)
                got.add(k)
        if got != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(abs(requests.get(k, 0) - limits.get(k, 0)) < 1e-9
                          for k in ("cpu", "memory")):
        return "Guaranteed"
    return "Burstable"


def oom_score_adj(pod: dict, container: dict, memory_capacity: float) -> int:
    qos = qos_class(pod)
    if qos == "Guaranteed":
        return -997
    if qos == "BestEffort":
        return 1000
    req, _ = _requests_limits(container)
    mem = cgroups.parse_quantity(req.get("memory"))
    if not memory_capacity:
        return 999
    adj = 1000 - int(1000 * mem / memory_capacity)
    return max(3, min(999, adj))


def container_argv(container: dict, entrypoint: list[str], cmd: list[str],
                   expand: Callable[[list[str], list[str]], tuple[list[str], list[str]]]
                   ) -> list[str]:
    """The kubelet's command line: command replaces ENTRYPOINT (and drops CMD), args replace
    CMD; $(VAR) expanded in command and args."""
    command = container.get("command")
    args = container.get("args")
    if command:
        c, a = expand(list(command), list(args or []))
        return c + a
    if args:
        _, a = expand([], list(args))
        return list(entrypoint) + a
    return list(entrypoint) + list(cmd)


def restart_wanted(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def terminated_dict(state: dict, container_id: str) -> dict:
    d = {"exitCode": int(state.get("exitCode") or 0),
         "reason": state.get("reason") or ("Completed" if not state.get("exitCode")
                                           else "Error"),
         "startedAt": rfc3339(state.get("startedAt") or time.time()),
         "finishedAt": rfc3339(state.get("finishedAt") or time.time()),
         "containerID": container_id}
    if state.get("message"):
        d["message"] = state["message"]
    return d


def observed_state(name: str, image: str, handle: ContainerHandle | None,
                   previous: dict | None, *, waiting_reason: str = "",
                   waiting_message: str = "", ready: bool = False, started: bool = False,
                   image_id: str = "") -> ContainerState:
    """A container's status fields from what the runtime observed (handle: the latest
    instance; previous: the state.json of the instance before it)."""
    cs = ContainerState(name=name, image=image, image_id=image_id)
    if handle is not None:
        cs.restart_count = handle.restart_count
        cs.container_id = handle.container_id
    if previous is not None:
        cs.last_terminated = terminated_dict(previous, previous.get("_cid", ""))
    st = handle.state if handle is not None else None
    if waiting_reason or st is None:
        cs.state = "waiting"
        cs.reason = waiting_reason or "ContainerCreating"
        cs.message = waiting_message
        if handle is not None and st and st.get("exitCode") is not None:
            # waiting to be restarted: the instance that ended is the last state
            cs.last_terminated = terminated_dict(st, handle.container_id)
            cs.container_id = ""
        return cs
    if st.get("exitCode") is None:
        cs.state = "running"
        cs.reason = ""
        cs.started_at = st.get("startedAt")
        cs.ready = ready
        cs.started = started
        return cs
    cs.state = "terminated"
    cs.exit_code = int(st["exitCode"])
    cs.reason = st.get("reason") or ("Completed" if cs.exit_code == 0 else "Error")
    cs.message = st.get("message") or ""
    cs.started_at = st.get("startedAt")
    cs.finished_at = st.get("finishedAt")
    return cs


# --------------------------------------------------------------------------- per container


@dataclasses.dataclass
class CState:
    spec: dict
    init: bool
    handle: ContainerHandle | None = None
    waiting_reason: str = ""
    waiting_message: str = ""
    retry_at: float = 0.0          # monotonic: next attempt after a config/start error
    probe_states: dict = dataclasses.field(default_factory=dict)
    probe_tasks: list = dataclasses.field(default_factory=list)
    kill_reason: str = ""          # "Liveness" / "Startup" / "PostStartHook" / "SpecChanged"
    force_restart: bool = False    # restart without back-off (definition changed)
    image_id: str = ""
    events_for: str = ""           # container id the BackOff event was last sent for

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def sidecar(self) -> bool:
        return self.init and self.spec.get("restartPolicy") == "Always"

    def exited(self) -> bool:
        return self.handle is not None and self.handle.state.get("exitCode") is not None

    def running(self) -> bool:
        return self.handle is not None and self.handle.state.get("exitCode") is None

    def started(self) -> bool:
        if not self.running():
            return False
        st = self.probe_states.get(probes.STARTUP)
        return st is None or st.result is True

    def ready(self) -> bool:
        if not self.started():
            return False
        rd = self.probe_states.get(probes.READINESS)
        return rd is None or rd.result is True


def _parse_time(s: str | None) -> float | None:
    if not s:
        return None
    try:
        return datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return None


class PodWorker:
    def __init__(self, agent, pod: dict):
        self.agent = agent
        self.pod = pod
        md = pod["metadata"]
        self.uid, self.ns, self.name = md["uid"], md["namespace"], md["name"]
        self.wake = asyncio.Event()
        self.gone = False
        self.sandbox = None
        self.volumes: dict[str, str] | None = None
        self.handle: PodHandle | None = None
        spec = pod.get("spec", {})
        self.containers: list[CState] = \
            [CState(c, True) for c in spec.get("initContainers") or []] + \
            [CState(c, False) for c in spec.get("containers") or []]
        self.start_time = _parse_time((pod.get("status") or {}).get("startTime"))
        self.terminal = False
        self.failed_init = False
        self.passive = False
        self.next_wake: float | None = None
        self.last_volume_sync = 0.0
        self.task = asyncio.create_task(self._run(), name=f"pod-{self.ns}-{self.name}")

    # ------------------------------------------------------------------ inputs
    def update(self, pod: dict) -> None:
        old = self.pod
        self.pod = pod
        if _without_status(old) == _without_status(pod):
            return  # our own status write coming back: nothing to do (as the kubelet)
        # the only mutable container field of a pod is the image: a changed definition
        # restarts the container (the kubelet's "definition changed")
        specs = {c["name"]: c for c in (pod.get("spec", {}).get("initContainers") or []) +
                 (pod.get("spec", {}).get("containers") or [])}
        for c in self.containers:
            new = specs.get(c.name)
            if new is not None and new.get("image") != c.spec.get("image"):
                c.spec = new
                if c.running() and not c.init:
                    c.kill_reason = "SpecChanged"
        self.wake.set()

    def delete(self) -> None:
        self.gone = True
        self.wake.set()

    def _deleting(self) -> bool:
        return bool(self.pod["metadata"].get("deletionTimestamp"))

    def _event(self, type_: str, reason: str, message: str) -> None:
        self.agent.record(self.pod, type_, reason, message)

    def _at(self, delay: float) -> None:
        t = time.monotonic() + delay
        if self.next_wake is None or t < self.next_wake:
            self.next_wake = t

    # ------------------------------------------------------------------ main loop
    async def _run(self) -> None:
        try:
            await self._lifecycle()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("pod worker %s/%s failed", self.ns, self.name)
        finally:
            self._stop_probes()
            if self.agent.workers.get(self.uid) is self:
                self.agent.workers.pop(self.uid, None)

    async def _lifecycle(self) -> None:
        rt = self.agent.runtime
        self.handle = rt.pods.get(self.uid)
        if self.handle is not None:
            self._adopt()
        elif (self.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            # finished before (its records are gone): nothing to run, wait for deletion
            self.terminal = True
            self.passive = True
        while True:
            if self.gone:
                await self._terminate(deleted=True)
                return
            if self._deleting():
                await self._terminate(deleted=False)
                return
            self.next_wake = None
            try:
                await self._sync()
            except APIError as e:
                if e.not_found:
                    self.gone = True
                    continue
                log.warning("pod %s/%s: %s", self.ns, self.name, e)
                self._at(1.0)
            except Exception:
                log.exception("syncing pod %s/%s", self.ns, self.name)
                self._at(2.0)
            if self.gone or self._deleting():
                continue
            timeout = None
            if self.next_wake is not None:
                timeout = max(0.0, self.next_wake - time.monotonic())
            # configMap/secret volumes are refreshed every sync period (1 min, scaled)
            sync_period = max(0.2, timescale.scaled(60.0))
            timeout = sync_period if timeout is None else min(timeout, sync_period)
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass
            self.wake.clear()

    def _adopt(self) -> None:
        """An agent restart: take over the containers the shims still run (or recorded)."""
        h = self.handle
        for c in self.containers:
            ch = h.containers.get(c.name)
            if ch is None:
                continue
            c.handle = ch
            self._watch(c)
            if ch.running:
                self._start_probes(c)
        if self.start_time is None:
            self.start_time = time.time()

    # ------------------------------------------------------------------ sync
    async def _ensure_sandbox(self) -> bool:
        if self.sandbox is not None:
            return True
        driver = self.agent.driver
        sb = await asyncio.to_thread(driver.setup, self.pod)
        if inspect.isawaitable(sb):
            sb = await sb
        self.sandbox = sb
        for w in (getattr(driver, "warnings", {}) or {}).get(self.uid, []):
            self._event("Warning", "DNSConfigForming", w)
        rt = self.agent.runtime
        self.handle = rt.pod(self.ns, self.name, self.uid)
        self.handle.ip = sb.ip
        self.handle.netns_path = sb.netns_path
        self.handle.save()
        if self.start_time is None:
            self.start_time = time.time()
        return True

    async def _ensure_volumes(self) -> bool:
        vm = self.agent.volumes
        if vm is None:
            self.volumes = {}
            return True
        if self.volumes is not None:
            now = time.monotonic()
            if now - self.last_volume_sync >= max(0.2, timescale.scaled(60.0)) and \
                    hasattr(vm, "refresh"):
                self.last_volume_sync = now
                try:
                    r = await asyncio.to_thread(vm.refresh, self.pod)
                    if inspect.isawaitable(r):
                        await r
                except Exception as e:  # noqa: BLE001
                    log.debug("refreshing volumes of %s/%s: %s", self.ns, self.name, e)
            return True
        try:
            # file work (atomic writes of configMap/secret/token files): off the event loop
            r = await asyncio.to_thread(vm.setup, self.pod)
            if inspect.isawaitable(r):
                r = await r
            for reason, message in getattr(r, "warnings", []) or []:
                self._event("Warning", reason, message)
            self.volumes = dict(r or {})
            self.last_volume_sync = time.monotonic()
            return True
        except Exception as e:  # noqa: BLE001
            reason = getattr(e, "reason", "FailedMount")
            message = getattr(e, "message", str(e))
            self._event("Warning", reason if reason else "FailedMount", message)
            self._at(max(0.5, timescale.scaled(2.0)))
            return False

    async def _sync(self) -> None:
        if self.passive:
            return
        if self.terminal:
            await self._write_status()
            return
        await self._ensure_sandbox()
        if not await self._ensure_volumes():
            await self._write_status()
            return
        policy = self.pod.get("spec", {}).get("restartPolicy", "Always")
        # liveness/startup/postStart kills first
        for c in self.containers:
            if c.kill_reason and c.running():
                await self._kill_for_restart(c)
        inits = [c for c in self.containers if c.init]
        apps = [c for c in self.containers if not c.init]
        # once app containers ran, finished init containers are not run again
        apps_started = any(a.handle is not None for a in apps)
        inits_done = True
        for c in inits:
            if c.sidecar:
                if not c.running():
                    await self._start_or_backoff(c, restart=c.handle is not None)
                if not c.started() and not apps_started:
                    inits_done = False
                    break
                continue
            if apps_started:
                continue
            if c.handle is None:
                await self._start_or_backoff(c, restart=False)
                inits_done = False
                break
            if c.running():
                inits_done = False
                break
            code = c.handle.state.get("exitCode")
            if code == 0:
                continue
            inits_done = False
            if policy == "Never":
                self.failed_init = True
                self.terminal = True
            else:
                await self._start_or_backoff(c, restart=True)
            break
        if inits_done and not self.terminal:
            for c in apps:
                if c.handle is None:
                    await self._start_or_backoff(c, restart=False)
                elif c.exited():
                    code = int(c.handle.state.get("exitCode") or 0)
                    if c.force_restart:
                        await self._start_or_backoff(c, restart=False)
                    elif restart_wanted(policy, code):
                        await self._start_or_backoff(c, restart=True)
            if policy != "Always" and apps and all(
                    c.exited() and not c.force_restart and
                    not restart_wanted(policy, int(c.handle.state["exitCode"])) for c in apps):
                self.terminal = True
        if self.terminal:
            # a finished pod: stop what may still run (sidecars), no more probes
            self._stop_probes()
            for c in self.containers:
                if c.running():
                    await c.handle.stop(self._grace())
        await self._write_status()

    def _grace(self) -> float:
        g = self.pod.get("spec", {}).get("terminationGracePeriodSeconds")
        return float(DEFAULT_GRACE if g is None else g)

    def _backoff_key(self, c: CState) -> str:
        return f"{self.name}_{self.ns}_{self.uid}_{c.name}"

    async def _start_or_backoff(self, c: CState, restart: bool) -> None:
        if time.monotonic() < c.retry_at:
            self._at(c.retry_at - time.monotonic())
            return
        if restart and c.handle is not None:
            key = self._backoff_key(c)
            bo = self.agent.backoff
            finished = float(c.handle.state.get("finishedAt") or time.time())
            if bo.in_backoff_since(key, finished):
                left = bo.remaining(key, finished)
                c.waiting_reason = "CrashLoopBackOff"
                shown = bo.current(key) / max(timescale.scale(), 1e-9)
                c.waiting_message = (f"back-off {fmt_duration(shown)} restarting "
                                     f"failed container={c.name} pod={self.name}_{self.ns}"
                                     f"({self.uid})")
                if c.events_for != c.handle.id:
                    c.events_for = c.handle.id
                    self._event("Warning", "BackOff",
                                f"Back-off restarting failed container {c.name} in pod "
                                f"{self.name}_{self.ns}({self.uid})")
                self._at(left + 0.01)
                return
            bo.next(key, finished)
        await self._start(c)

    async def _start(self, c: CState) -> None:
        agent = self.agent
        spec = c.spec
        image = spec.get("image", "")
        restart_count = c.handle.restart_count + 1 if c.handle is not None else 0
        # ---- image
        cfg = await self._pull(c, image)
        if cfg is None:
            return
        # ---- environment
        from . import envvars
        try:
            env = envvars.container_env(
                self.pod, spec, agent.lookup, agent.services(), agent.node_info(),
                pod_ips=[self.sandbox.ip] if self.sandbox.ip else None,
                host_ips=[agent.node_ip])
        except envvars.EnvError as e:
            c.waiting_reason = getattr(e, "reason", "CreateContainerConfigError")
            c.waiting_message = getattr(e, "message", str(e))
            self._event("Warning", "Failed", f"Error: {c.waiting_message}")
            c.retry_at = time.monotonic() + max(0.5, timescale.scaled(10.0))
            self._at(c.retry_at - time.monotonic())
            return
        for reason, message in getattr(env, "warnings", []) or []:
            self._event("Warning", reason, message)
        try:
            mounts = self._mounts(spec, dict(env))
        except envvars.EnvError as e:
            c.waiting_reason = getattr(e, "reason", "CreateContainerConfigError")
            c.waiting_message = getattr(e, "message", str(e))
            self._event("Warning", "Failed", f"Error: {c.waiting_message}")
            c.retry_at = time.monotonic() + max(0.5, timescale.scaled(10.0))
            self._at(c.retry_at - time.monotonic())
            return
        full_env = self._container_env(cfg, dict(env), mounts)
        argv = container_argv(spec, cfg.entrypoint, cfg.cmd,
                              lambda cmd, args: envvars.expand_command(cmd, args, full_env))
        if not argv:
            c.waiting_reason = "CreateContainerError"
            c.waiting_message = "failed to generate container spec: no command specified"
            self._event("Warning", "Failed", f"Error: {c.waiting_message}")
            c.retry_at = time.monotonic() + max(0.5, timescale.scaled(10.0))
            self._at(c.retry_at - time.monotonic())
            return
        workdir = spec.get("workingDir") or cfg.workdir or ""
        if self.sandbox.netns_path is None and agent.driver.network == "loopback":
            wrapped = agent.driver.wrap(argv, self.sandbox, mounts)
            cwd = workdir if workdir and os.path.isdir(workdir) else "/"
        else:
            wrapped = agent.driver.wrap(argv, self.sandbox, mounts, workdir=workdir or None)
            cwd = "/"
        _, limits = _requests_limits(spec)
        requests, _ = _requests_limits(spec)
        mem_limit = int(cgroups.parse_quantity(limits.get("memory")))
        h = await agent.runtime.start_container(
            self.handle, c.name, restart_count, argv=wrapped, env=full_env, cwd=cwd,
            workdir=workdir, tty=bool(spec.get("tty")), stdin=bool(spec.get("stdin")),
            stdin_once=bool(spec.get("stdinOnce")), memory_limit=mem_limit,
            cpu_limit=cgroups.parse_quantity(limits.get("cpu")),
            cpu_request=cgroups.parse_quantity(requests.get("cpu")),
            oom_score_adj=oom_score_adj(self.pod, spec, agent.memory_capacity))
        c.handle = h
        c.waiting_reason = c.waiting_message = ""
        c.kill_reason = ""
        c.force_restart = False
        c.image_id = f"{cfg.name}@sha256:{_digest(cfg.name)}" if cfg.name else ""
        self._event("Normal", "Created", f"Created container {c.name}")
        if h.state.get("reason") == "StartError":
            self._event("Warning", "Failed", f"Error: {h.state.get('message', '')}")
            self._watch(c)
            return
        self._event("Normal", "Started", f"Started container {c.name}")
        self._watch(c)
        post = (spec.get("lifecycle") or {}).get("postStart")
        if post:
            ok, msg = await self._run_hook(c, post)
            if not ok:
                self._event("Warning", "FailedPostStartHook", msg)
                c.kill_reason = "PostStartHook"
                await self._kill_for_restart(c)
                return
        self._start_probes(c)

    def _container_env(self, cfg, env: dict, mounts: list[dict]) -> dict:
        sb = self.sandbox
        base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        base.update(cfg.env or {})
        base["HOSTNAME"] = sb.hostname
        base.update(env)
        path = base.get("PATH", "")
        if cfg.path_dirs:
            base["PATH"] = ":".join(list(cfg.path_dirs) + ([path] if path else []))
        base["KUBELAB_BIND_IP"] = sb.bind_ip
        base["KUBELAB_POD_IP"] = sb.ip
        base["KUBELAB_RESOLV_CONF"] = sb.resolv_conf_path
        base["KUBELAB_HOSTS"] = sb.hosts_path
        if mounts and self.sandbox.netns_path is None and \
                self.agent.driver.network == "loopback":
            # no mount namespace in loopback mode: the volumes' host paths, by mount path
            base["KUBELAB_MOUNTS"] = json.dumps({m["mountPath"]: m["hostPath"] for m in mounts})
        return {str(k): str(v) for k, v in base.items()}

    def _mounts(self, spec: dict, env: dict | None = None) -> list[dict]:
        """The container's mounts on the host: {"hostPath" (subPath resolved), "mountPath",
        "readOnly"}; raises EnvError (CreateContainerConfigError) like the kubelet's
        makeMounts."""
        if not spec.get("volumeMounts"):
            return []
        from . import volumes
        return [{"hostPath": m.host_path, "mountPath": m.container_path,
                 "readOnly": m.read_only}
                for m in volumes.container_mounts(self.pod, spec, self.volumes or {}, env)]

    async def _pull(self, c: CState, image: str):
        from . import images
        key = f"{self.uid}_{image}"
        bo = self.agent.image_backoff
        policy = c.spec.get("imagePullPolicy") or (
            "Always" if image.split("/")[-1].find(":") < 0 or image.endswith(":latest")
            else "IfNotPresent")
        if bo.in_backoff_since(key, bo.entries.get(key, (0, 0))[1]):
            c.waiting_reason = "ImagePullBackOff"
            c.waiting_message = f"Back-off pulling image \"{image}\""
            mark = f"imgbo:{bo.entries[key][1]}"
            if c.events_for != mark:
                c.events_for = mark
                self._event("Normal", "BackOff", f"Back-off pulling image \"{image}\"")
                self._event("Warning", "Failed", "Error: ImagePullBackOff")
            self._at(bo.remaining(key, bo.entries[key][1]) + 0.01)
            return None
        t0 = time.monotonic()
        if policy == "Always":
            self._event("Normal", "Pulling", f"Pulling image \"{image}\"")
        try:
            cfg = images.resolve(image)
        except images.ImageNotFound as e:
            reason = getattr(e, "reason", "ErrImagePull")
            c.waiting_reason = reason
            c.waiting_message = str(e)
            if reason == "InvalidImageName":
                self._event("Warning", "InspectFailed", str(e))
                self._event("Warning", "Failed", "Error: InvalidImageName")
                c.retry_at = time.monotonic() + max(0.5, timescale.scaled(10.0))
                self._at(c.retry_at - time.monotonic())
                return None
            if policy == "Never":
                c.waiting_reason = "ErrImageNeverPull"
                c.waiting_message = (f"Container image \"{image}\" is not present with pull "
                                     f"policy of Never")
                self._event("Warning", "ErrImageNeverPull", c.waiting_message)
                c.retry_at = time.monotonic() + max(0.5, timescale.scaled(10.0))
                self._at(c.retry_at - time.monotonic())
                return None
            if policy != "Always":
                self._event("Normal", "Pulling", f"Pulling image \"{image}\"")
            self._event("Warning", "Failed", f"Failed to pull image \"{image}\": {e}")
            self._event("Warning", "Failed", "Error: ErrImagePull")
            bo.next(key, time.time())
            # the next sync soon shows ImagePullBackOff; the pull is retried after the back-off
            self._at(min(0.5, bo.remaining(key, bo.entries[key][1])) + 0.01)
            return None
        bo.reset(key)
        if policy == "Always":
            took = time.monotonic() - t0
            d = fmt_duration(took)
            self._event("Normal", "Pulled",
                        f"Successfully pulled image \"{image}\" in {d} ({d} including "
                        f"waiting). Image size: 0 bytes.")
        else:
            self._event("Normal", "Pulled",
                        f"Container image \"{image}\" already present on machine")
        return cfg

    def _watch(self, c: CState) -> None:
        h = c.handle
        if h is None:
            return
        fut = h.exited()

        def done(_f, c=c, h=h):
            if c.handle is h:
                self._stop_probes(c)
                self.wake.set()
        fut.add_done_callback(done)

    async def _kill_for_restart(self, c: CState) -> None:
        reason = c.kill_reason
        c.kill_reason = ""
        if not c.running():
            return
        if reason == probes.LIVENESS:
            msg = f"Container {c.name} failed liveness probe, will be restarted"
        elif reason == probes.STARTUP:
            msg = f"Container {c.name} failed startup probe, will be restarted"
        elif reason == "SpecChanged":
            msg = f"Container {c.name} definition changed, will be restarted"
            c.force_restart = True
        else:
            msg = "FailedPostStartHook"
        self._event("Normal", "Killing", msg)
        self._stop_probes(c)
        grace = self._grace()
        sp = c.probe_states.get(reason)
        if sp is not None and sp.spec.termination_grace is not None:
            grace = sp.spec.termination_grace
        pre = (c.spec.get("lifecycle") or {}).get("preStop")
        t0 = time.monotonic()
        if pre and reason != "PostStartHook":
            try:
                ok, m = await asyncio.wait_for(self._run_hook(c, pre), grace)
                if not ok:
                    self._event("Warning", "FailedPreStopHook", m)
            except TimeoutError:
                pass
        await c.handle.stop(max(0.0, grace - (time.monotonic() - t0)))

    # ------------------------------------------------------------------ probes and hooks
    async def _exec_in(self, c: CState, argv: list[str], timeout: float
                       ) -> tuple[int | None, str]:
        h = c.handle
        if h is None:
            return 1, "container not running"
        es = h.exec_spec(argv)
        try:
            proc = await asyncio.create_subprocess_exec(
                *es.argv, env=es.env, cwd=es.cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)
        except OSError as e:
            return 1, str(e)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            try:
                os.killpg(proc.pid, 9)
            except OSError:
                pass
            await proc.wait()
            return None, ""
        return proc.returncode, out.decode(errors="replace")[:10240]

    def _exec_fn(self, c: CState):
        async def fn(argv: list[str], timeout: float):
            return await self._exec_in(c, argv, timeout)
        return fn

    async def _run_hook(self, c: CState, hook: dict) -> tuple[bool, str]:
        pod_ref = f"{self.name}_{self.ns}({self.uid})"
        if "exec" in hook:
            cmd = list((hook["exec"] or {}).get("command") or [])
            code, out = await self._exec_in(c, cmd, 30.0 * max(timescale.scale(), 0.1))
            if code == 0:
                return True, ""
            return False, (f"Exec lifecycle hook ({cmd}) for Container \"{c.name}\" in Pod "
                           f"\"{pod_ref}\" failed - error: command '{' '.join(cmd)}' exited "
                           f"with {code if code is not None else 137}: {out}, message: "
                           f"\"{out}\"")
        if "httpGet" in hook:
            ok, msg = await probes.http_get(hook["httpGet"], self.sandbox.ip, c.spec, 10.0)
            if ok:
                return True, ""
            return False, (f"HTTP lifecycle hook ({(hook['httpGet'] or {}).get('path', '')}) "
                           f"for Container \"{c.name}\" in Pod \"{pod_ref}\" failed - error: "
                           f"{msg}")
        if "sleep" in hook:
            await asyncio.sleep(float((hook["sleep"] or {}).get("seconds") or 0))
            return True, ""
        return True, ""

    def _start_probes(self, c: CState) -> None:
        self._stop_probes(c)
        c.probe_states = {}
        for kind, field in ((probes.STARTUP, "startupProbe"), (probes.LIVENESS, "livenessProbe"),
                            (probes.READINESS, "readinessProbe")):
            p = c.spec.get(field)
            if p:
                c.probe_states[kind] = probes.ProbeState(probes.ProbeSpec.from_dict(kind, p))
        for kind in c.probe_states:
            c.probe_tasks.append(asyncio.create_task(self._probe_loop(c, kind, c.handle)))

    def _stop_probes(self, c: CState | None = None) -> None:
        for cs in [c] if c is not None else self.containers:
            for t in cs.probe_tasks:
                t.cancel()
            cs.probe_tasks = []

    async def _probe_loop(self, c: CState, kind: str, handle: ContainerHandle) -> None:
        state = c.probe_states[kind]
        spec = state.spec
        started_at = float(handle.state.get("startedAt") or time.time())
        delay = timescale.scaled(spec.initial_delay) - (time.time() - started_at)
        if delay > 0:
            await asyncio.sleep(delay)
        period = max(MIN_PROBE_PERIOD, timescale.scaled(spec.period))
        label = {"Liveness": "Liveness", "Readiness": "Readiness", "Startup": "Startup"}[kind]
        while c.handle is handle and handle.state.get("exitCode") is None:
            if kind != probes.STARTUP and probes.STARTUP in c.probe_states and \
                    c.probe_states[probes.STARTUP].result is not True:
                await asyncio.sleep(period)
                continue
            if kind == probes.STARTUP and state.result is True:
                return
            try:
                ok, msg = await probes.run_handler(spec.handler, self.sandbox.ip, c.spec,
                                                   spec.timeout, self._exec_fn(c))
            except Exception as e:  # noqa: BLE001
                ok, msg = False, str(e)
            if c.handle is not handle or handle.state.get("exitCode") is not None:
                return
            if not ok:
                self._event("Warning", "Unhealthy", f"{label} probe failed: {msg.strip()}")
            changed = state.observe(ok)
            if changed:
                if kind in (probes.LIVENESS, probes.STARTUP) and not ok:
                    c.kill_reason = kind
                    self.wake.set()
                    return
                self.wake.set()
            await asyncio.sleep(period)

    # ------------------------------------------------------------------ status
    def _observe(self) -> tuple[list[ContainerState], list[ContainerState]]:
        init, app = [], []
        for c in self.containers:
            image = c.spec.get("image", "")
            prev = None
            h = c.handle
            if h is not None and h.restart_count > 0:
                prev = self._previous_state(c.name, h.restart_count - 1)
            waiting_reason, waiting_message = c.waiting_reason, c.waiting_message
            if h is not None and h.state.get("exitCode") is not None and not waiting_reason:
                # exited: terminated, unless it is to be restarted (then waiting)
                policy = self.pod.get("spec", {}).get("restartPolicy", "Always")
                code = int(h.state["exitCode"])
                again = (c.sidecar or c.force_restart or restart_wanted(policy, code)) and \
                    not self.terminal \
                    and not (c.init and code == 0 and not c.sidecar)
                if again:
                    waiting_reason = "CrashLoopBackOff"
            elif h is None and not waiting_reason:
                inits_pending = any(
                    i.init and not i.sidecar and not (i.exited() and
                                                      i.handle.state.get("exitCode") == 0)
                    for i in self.containers)
                if c.init or inits_pending:
                    waiting_reason = "PodInitializing"
            cs = observed_state(c.name, image, h, prev, waiting_reason=waiting_reason,
                                waiting_message=waiting_message, ready=c.ready(),
                                started=c.started(), image_id=c.image_id)
            (init if c.init else app).append(cs)
        return init, app

    def _previous_state(self, name: str, n: int) -> dict | None:
        from .runtime import _read_json
        d = self.handle.dir / name / str(n) if self.handle else None
        if d is None:
            return None
        st = _read_json(d / "state.json")
        if st is None:
            return None
        st["_cid"] = f"kubelab://{st.get('id', '')}" if st.get("id") else ""
        return st

    def compute_status(self, terminal: bool = False) -> dict:
        init, app = self._observe()
        return pod_status(self.pod, init, app, pod_ip=self.sandbox.ip if self.sandbox else "",
                          host_ip=self.agent.node_ip, start_time=self.start_time or time.time(),
                          sandbox_ready=self.sandbox is not None and not terminal,
                          qos_class=qos_class(self.pod), terminal=terminal)

    async def _write_status(self, terminal: bool = False) -> None:
        if self.passive:
            return
        client = self.agent.client
        for _ in range(10):
            pod = self.pod
            status = self.compute_status(terminal or (self.terminal and self.failed_init))
            if status == pod.get("status"):
                return
            new = dict(pod)
            new["status"] = status
            try:
                self.pod = await client.update_status("Pod", new)
                return
            except APIError as e:
                if e.not_found:
                    self.gone = True
                    return
                if not e.conflict:
                    raise
                fresh = await client.get_or_none("Pod", self.ns, self.name)
                if fresh is None or fresh["metadata"]["uid"] != self.uid:
                    self.gone = True
                    return
                self.pod = fresh

    # ------------------------------------------------------------------ termination
    async def _terminate(self, deleted: bool) -> None:
        """Graceful deletion: preStop, SIGTERM, SIGKILL after the grace period, then the
        pod object is removed (grace 0); `deleted`: the object is already gone."""
        md = self.pod["metadata"]
        grace = md.get("deletionGracePeriodSeconds")
        grace = self._grace() if grace is None else float(grace)
        self._stop_probes()
        running = [c for c in self.containers if c.running()]
        deadline = time.monotonic() + grace

        async def stop(c: CState) -> None:
            self._event("Normal", "Killing", f"Stopping container {c.name}")
            pre = (c.spec.get("lifecycle") or {}).get("preStop")
            if pre:
                try:
                    ok, m = await asyncio.wait_for(self._run_hook(c, pre),
                                                   max(0.0, deadline - time.monotonic()))
                    if not ok:
                        self._event("Warning", "FailedPreStopHook", m)
                except TimeoutError:
                    pass
            await c.handle.stop(max(0.0, deadline - time.monotonic()))

        # app containers first, then sidecars (as the kubelet orders them)
        apps = [c for c in running if not c.init]
        await asyncio.gather(*(stop(c) for c in apps))
        await asyncio.gather(*(stop(c) for c in running if c.init))
        if not deleted:
            try:
                await self._write_status(terminal=True)
            except APIError as e:
                log.debug("final status of %s/%s: %s", self.ns, self.name, e)
        await self._cleanup()
        if not deleted and not self.gone:
            try:
                await self.agent.client.delete("Pod", self.ns, self.name, grace_period=0,
                                               preconditions={"uid": self.uid})
            except APIError as e:
                if not (e.not_found or e.conflict):
                    log.warning("deleting pod %s/%s: %s", self.ns, self.name, e)

    async def _cleanup(self) -> None:
        vm = self.agent.volumes
        if vm is not None:
            try:
                r = vm.teardown(self.pod)
                if inspect.isawaitable(r):
                    await r
            except Exception as e:  # noqa: BLE001
                log.warning("volumes of %s/%s: %s", self.ns, self.name, e)
        await asyncio.to_thread(self.agent.runtime.remove_pod, self.uid)
        try:
            await asyncio.to_thread(self.agent.driver.teardown, self.uid)
        except Exception as e:  # noqa: BLE001
            log.warning("sandbox of %s/%s: %s", self.ns, self.name, e)


def _without_status(pod: dict) -> tuple:
    md = {k: v for k, v in (pod.get("metadata") or {}).items()
          if k not in ("resourceVersion", "managedFields", "generation")}
    return md, pod.get("spec")


def _digest(name: str) -> str:
    import hashlib
    return hashlib.sha256(name.encode()).hexdigest()
