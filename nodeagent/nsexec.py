"""Enter a pod sandbox and exec a container command (the bridge driver's tiny "runc").

Run as a script, stdlib only, so it starts fast and needs nothing on sys.path:

    python -I -S nodeagent/nsexec.py '<spec json>' -- argv...

spec keys (all optional):
  net       path of a network namespace file to join (e.g. /run/netns/klp-…)
  hostname  when set: a new UTS namespace with this hostname
  overlays  [[lower, upper, work], ...] private copy-on-write views of node directories
  binds     [[host_path, mount_path, read_only], ...] bind-mounted, in order, inside a new
            private mount namespace (read_only → remounted ro); missing mount points are
            created (directories, or empty files for file sources); a missing source is
            created as a directory (kubelet's subPath behaviour)
  cwd       working directory to change to after the mounts
  record    file to which every mount point this helper had to create is appended

The process then execs argv in place (same pid), so signals and exit codes are the container's.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


class NsError(Exception):
    pass


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise NsError(f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount(src: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    _check(_libc.mount(_b(src), _b(target), _b(fstype), flags, _b(data)),
           f"mount {src or ''} on {target}")


def _hides_needed_mounts(path: str, needed: list[str]) -> bool:
    """Whether an overlay of `path` would hide a mount below it that this container needs (its
    sandbox files or volumes: e.g. the worker's own state volume at /var/lib/kubelab/data in a
    compose worker). Mounts it does not need (the node's /var/lib/docker) may be hidden."""
    prefix = path.rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo") as f:
            subs = [line.split()[4] for line in f]
    except (OSError, IndexError):
        return True
    subs = [m.rstrip("/") + "/" for m in subs if m.startswith(prefix)]
    return any((p.rstrip("/") + "/").startswith(m) for m in subs for p in needed)


def overlay(lower: str, upper: str, work: str) -> None:
    """A private copy-on-write view of the node's `lower` directory: the pod's writes (e.g.
    `touch /var/ready`) stay in `upper`, as they would in its image's writable layer."""
    os.makedirs(upper, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    mount("overlay", lower, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")


def setns(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, nstype), f"setns {path}")
    finally:
        os.close(fd)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, len(b)), f"sethostname {name}")


def _ensure_mountpoint(src: str, dst: str, created: list[str]) -> None:
    if not os.path.exists(src) and not os.path.islink(src):
        os.makedirs(src, exist_ok=True)
    src_is_dir = stat.S_ISDIR(os.stat(src).st_mode)
    if os.path.lexists(dst):
        return
    parent = os.path.dirname(dst.rstrip("/")) or "/"
    missing = []
    p = parent
    while p and p != "/" and not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    os.makedirs(parent, exist_ok=True)
    created.extend(reversed(missing))
    if src_is_dir:
        os.mkdir(dst)
    else:
        with open(dst, "a"):
            pass
    created.append(dst)


def bind(src: str, dst: str, read_only: bool, created: list[str]) -> None:
    _ensure_mountpoint(src, dst, created)
    mount(src, dst, None, MS_BIND | MS_REC)
    if read_only:
        keep = 0
        try:
            f = os.statvfs(dst).f_flag
            keep = f & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            pass
        mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep)


def enter(spec: dict) -> None:
    """Apply spec to the current process (must be single-threaded)."""
    if spec.get("net"):
        setns(spec["net"], CLONE_NEWNET)
    flags = 0
    binds = spec.get("binds") or []
    if binds:
        flags |= CLONE_NEWNS
    if spec.get("hostname"):
        flags |= CLONE_NEWUTS
    if flags:
        unshare(flags)
    if spec.get("hostname"):
        sethostname(spec["hostname"])
    if binds:
        # never let our bind mounts propagate back to the node's mount namespace
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        needed = [src for src, _, _ in binds] + ([spec["cwd"]] if spec.get("cwd") else [])
        for lower, upper, work in spec.get("overlays") or []:
            if _hides_needed_mounts(lower, needed):
                continue  # keep the node's directory (and what is mounted in it) as it is
            try:
                overlay(lower, upper, work)
            except NsError as e:  # e.g. an upper dir on overlayfs: share the node's dir
                sys.stderr.write(f"nsexec: no private {lower}: {e}\n")
        created: list[str] = []
        try:
            for src, dst, ro in binds:
                bind(src, dst, bool(ro), created)
        finally:
            if created and spec.get("record"):
                try:
                    with open(spec["record"], "a") as f:
                        f.writelines(p + "\n" for p in created)
                except OSError:
                    pass
    if spec.get("cwd"):
        os.chdir(spec["cwd"])


def main(args: list[str]) -> int:
    if len(args) < 2:
        sys.stderr.write("usage: nsexec.py SPEC_JSON -- ARGV...\n")
        return 125
    spec = json.loads(args[0])
    argv = args[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        sys.stderr.write("nsexec: no command\n")
        return 125
    try:
        enter(spec)
    except (NsError, OSError) as e:
        sys.stderr.write(f"nsexec: failed to set up the container's namespaces: {e}\n")
        return 125
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        sys.stderr.write(f'exec: "{argv[0]}": executable file not found in $PATH\n')
        return 127
    except PermissionError:
        sys.stderr.write(f'exec: "{argv[0]}": permission denied\n')
        return 126
    except OSError as e:
        sys.stderr.write(f'exec: "{argv[0]}": {e.strerror}\n')
        return 126
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
