"""cgroup v1 for containers: /sys/fs/cgroup/<controller>/kubelab/<node>/<pod uid>/<container>.

Memory limit → memory.limit_in_bytes (the kernel OOM-kills inside the group; the shim reads
memory.oom_control's oom_kill counter to report OOMKilled); cpu limit → cpu.cfs_quota_us over a
100 ms period; cpu request → cpu.shares. Usage for stats comes from memory.usage_in_bytes minus
inactive file pages (the working set, as cAdvisor computes it) and cpuacct.usage. When the
hierarchy is not writable (not root, cgroup v2 only, …) `available()` is False and the runtime
falls back to the shim's RSS watchdog for memory and reports cpu limits as not enforced."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

BASE = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
CFS_PERIOD_US = 100_000

_available: bool | None = None


def available() -> bool:
    """True when cgroup v1 memory and cpu hierarchies exist and we can create groups."""
    global _available
    if _available is None:
        ok = False
        probe = BASE / "memory" / "kubelab"
        try:
            if (BASE / "memory" / "memory.limit_in_bytes").exists() and \
                    (BASE / "cpu" / "cpu.cfs_quota_us").exists():
                probe.mkdir(exist_ok=True)
                ok = os.access(probe, os.W_OK)
        except OSError:
            ok = False
        _available = ok
    return _available


def parse_quantity(q) -> float:
    """A Kubernetes resource.Quantity as a number (cpu in cores, memory in bytes)."""
    if q is None or q == "":
        return 0.0
    if isinstance(q, (int, float)):
        return float(q)
    s = str(q).strip()
    suffixes = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50,
                "Ei": 2 ** 60, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6,
                "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
    for suf in sorted(suffixes, key=len, reverse=True):
        if s.endswith(suf):
            try:
                return float(s[:-len(suf)]) * suffixes[suf]
            except ValueError:
                return 0.0
    try:
        return float(s)
    except ValueError:
        return 0.0


def group_path(controller: str, node: str, pod_uid: str, container: str | None = None) -> Path:
    p = BASE / controller / "kubelab" / node / pod_uid
    return p / container if container else p


def create(node: str, pod_uid: str, container: str, *, memory_limit: int = 0,
           cpu_limit: float = 0.0, cpu_request: float = 0.0) -> list[str]:
    """Make the container's groups with its limits; returns the group dirs to join (empty when
    cgroups are not available)."""
    if not available():
        return []
    dirs = []
    for ctl in CONTROLLERS:
        if not (BASE / ctl).is_dir():
            continue
        d = group_path(ctl, node, pod_uid, container)
        try:
            d.mkdir(parents=True, exist_ok=True)
            if ctl == "memory":
                # memory.use_hierarchy must be set before children exist on old kernels
                (d / "memory.limit_in_bytes").write_text(str(memory_limit) if memory_limit
                                                         else "-1")
                try:
                    (d / "memory.memsw.limit_in_bytes").write_text(
                        str(memory_limit) if memory_limit else "-1")
                except OSError:
                    pass
            elif ctl == "cpu":
                (d / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                quota = int(cpu_limit * CFS_PERIOD_US) if cpu_limit else -1
                if 0 < quota < 1000:
                    quota = 1000  # the kernel's minimum quota
                (d / "cpu.cfs_quota_us").write_text(str(quota))
                shares = max(2, int(cpu_request * 1024)) if cpu_request else 2
                (d / "cpu.shares").write_text(str(shares))
            dirs.append(str(d))
        except OSError as e:
            log.warning("cgroup %s for %s/%s: %s", ctl, pod_uid, container, e)
    return dirs


def memory_dir(node: str, pod_uid: str, container: str) -> str:
    return str(group_path("memory", node, pod_uid, container)) if available() else ""


def _read_int(p: Path) -> int | None:
    try:
        return int(p.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stats(node: str, pod_uid: str, container: str) -> tuple[int, int] | None:
    """(cpu ns total, memory working set bytes) of a container's group, None when unknown."""
    if not available():
        return None
    mem_d = group_path("memory", node, pod_uid, container)
    usage = _read_int(mem_d / "memory.usage_in_bytes")
    cpu = _read_int(group_path("cpuacct", node, pod_uid, container) / "cpuacct.usage")
    if usage is None or cpu is None:
        return None
    inactive = 0
    try:
        for line in (mem_d / "memory.stat").read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == "total_inactive_file":
                inactive = int(v)
    except (OSError, ValueError):
        pass
    return cpu, max(0, usage - inactive)


def _kill_and_rmdir(d: Path) -> None:
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _rmdir(sub)
    _rmdir(d)


def _procs(d: Path) -> list[str]:
    try:
        return (d / "cgroup.procs").read_text().split()
    except OSError:
        return []


def _rmdir(d: Path) -> None:
    """Kill what is inside, then remove the group (the kernel refuses while exiting tasks are
    still accounted to it, which takes a moment on a loaded machine)."""
    import time
    for i in range(200):
        if i % 10 == 0:
            for pid in _procs(d):
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    log.warning("cgroup %s could not be removed", d)


def sweep_empty(node: str, keep: set[str], min_age: float = 60.0) -> int:
    """Remove this node's pod groups that hold no process, are not in `keep` and are older
    than `min_age` seconds (left behind by a crash). Never kills anything: a node of the
    same name in another cluster on this machine is left alone while its pods run."""
    import time
    n = 0
    for uid in pod_uids(node):
        if uid in keep:
            continue
        groups = [group_path(ctl, node, uid) for ctl in CONTROLLERS]
        groups = [g for g in groups if g.is_dir()]
        try:
            if any(time.time() - g.stat().st_mtime < min_age for g in groups):
                continue
        except OSError:
            continue
        if any(_procs(sub) for g in groups for sub in [g, *g.iterdir()] if sub.is_dir()):
            continue
        for g in groups:
            for sub in [p for p in g.iterdir() if p.is_dir()]:
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                g.rmdir()
                n += 1
            except OSError:
                pass
    return n


def remove(node: str, pod_uid: str, container: str | None = None) -> None:
    """Remove a container's (or a whole pod's) groups, killing whatever is still inside."""
    if not BASE.is_dir():
        return
    for ctl in CONTROLLERS:
        d = group_path(ctl, node, pod_uid, container)
        if d.is_dir():
            _kill_and_rmdir(d)


def remove_node(node: str) -> None:
    for ctl in CONTROLLERS:
        d = BASE / ctl / "kubelab" / node
        if d.is_dir():
            _kill_and_rmdir(d)


def pod_uids(node: str) -> list[str]:
    d = BASE / "memory" / "kubelab" / node
    try:
        return [p.name for p in d.iterdir() if p.is_dir()]
    except OSError:
        return []

