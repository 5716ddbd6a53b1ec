"""The container shim (like conmon): `python -m nodeagent.shim <state-dir>`.

One shim per container instance. It reads `<state-dir>/spec.json`, starts the container process in
its own session/process group (joining the given cgroups before exec), and then lives on its own —
it survives node-agent restarts — writing the container's output to the log file in the CRI log
format (`<RFC3339Nano> stdout|stderr F|P <line>`, rotated at 10 MiB keeping 5 files), serving the
attach socket, enforcing the memory limit with an RSS watchdog when no memory cgroup is available,
and finally recording the exit in `<state-dir>/state.json` (exitCode, finishedAt, reason
Completed/Error/OOMKilled/StartError).

The process started by the node agent forks the long-lived shim and exits once the container
process has been exec'd (status 0) or failed to start (status 1), so the agent knows the container
is running when its child returns.

Stdlib only and few imports: its start-up time is part of every container's start-up time.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

MAX_LOG = 10 * 1024 * 1024
LOG_FILES = 5
CH_STDIN, CH_STDOUT, CH_STDERR, CH_EXIT, CH_RESIZE = 0, 1, 2, 3, 4


def rfc3339nano(t: float) -> str:
    tm = time.gmtime(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", tm) + f".{int((t % 1) * 1e9):09d}Z"


def write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class LogWriter:
    """CRI log format with size-based rotation: <path>, <path>.1 .. <path>.4."""

    def __init__(self, path: str):
        self.path = path
        self.f = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the shim
        self.size = self.f.tell()
        self.partial = {"stdout": b"", "stderr": b""}

    def _rotate(self) -> None:
        self.f.close()
        for i in range(LOG_FILES - 1, 0, -1):
            src = self.path if i == 1 else f"{self.path}.{i - 1}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i}")
        self.f = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self.size = 0

    def _line(self, stream: str, tag: str, data: bytes) -> None:
        rec = f"{rfc3339nano(time.time())} {stream} {tag} ".encode() + data + b"\n"
        if self.size + len(rec) > MAX_LOG and self.size:
            self._rotate()
        self.f.write(rec)
        self.size += len(rec)

    def write(self, stream: str, data: bytes) -> None:
        buf = self.partial[stream] + data
        lines = buf.split(b"\n")
        self.partial[stream] = lines.pop()
        for ln in lines:
            self._line(stream, "F", ln.rstrip(b"\r") if stream == "tty" else ln)
        if len(self.partial[stream]) >= 16384:
            self._line(stream, "P", self.partial[stream])
            self.partial[stream] = b""

    def flush(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self._line(stream, "F", rest)
        self.partial = {"stdout": b"", "stderr": b""}


def frame(ch: int, payload: bytes) -> bytes:
    return bytes([ch]) + struct.pack(">I", len(payload)) + payload


def cgroup_oom_kills(memcg: str) -> int:
    try:
        with open(os.path.join(memcg, "memory.oom_control")) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
    except OSError:
        pass
    return 0


def group_rss(pgid: int) -> int:
    """Resident memory of every process in the process group (the watchdog's measure)."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                st = f.read()
            fields = st[st.rindex(b")") + 2:].split()
            if int(fields[2]) != pgid:
                continue
            total += int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


def _child(spec: dict, fds: dict, err_w: int) -> None:
    """In the forked container process: own session, cgroups, std fds, exec."""
    try:
        os.setsid()
        pid = os.getpid()
        for cg in spec.get("cgroups") or []:
            try:
                with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                    f.write(str(pid))
            except OSError:
                pass
        if spec.get("tty"):
            import fcntl
            import termios
            fcntl.ioctl(fds["slave"], termios.TIOCSCTTY, 0)
            for i in (0, 1, 2):
                os.dup2(fds["slave"], i)
        else:
            os.dup2(fds["stdin"], 0)
            os.dup2(fds["stdout"], 1)
            os.dup2(fds["stderr"], 2)
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 65536)
        if spec.get("oom_score_adj") is not None:
            try:
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write(str(spec["oom_score_adj"]))
            except OSError:
                pass
        for s in (signal.SIGPIPE, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        cwd = spec.get("cwd") or "/"
        try:
            os.chdir(cwd)
        except OSError as e:
            raise OSError(f"chdir to cwd (\"{cwd}\") set in config.json failed: "
                          f"{e.strerror.lower() if e.strerror else e}") from None
        argv = spec["argv"]
        env = spec.get("env") or {}
        prog = argv[0]
        if "/" not in prog:
            for d in env.get("PATH", os.defpath).split(":"):
                cand = os.path.join(d or ".", prog)
                if os.path.isfile(cand) and os.access(cand, os.X_OK):
                    prog = cand
                    break
            else:
                raise OSError(f"exec: \"{argv[0]}\": executable file not found in $PATH")
        os.execve(prog, argv, env)
    except BaseException as e:  # noqa: BLE001
        msg = str(e) if not isinstance(e, FileNotFoundError) else \
            f"exec: \"{spec['argv'][0]}\": stat {spec['argv'][0]}: no such file or directory"
        try:
            os.write(err_w, msg.encode()[:4000])
        finally:
            os._exit(127)


class Shim:
    def __init__(self, state_dir: str):
        self.dir = state_dir
        with open(os.path.join(state_dir, "spec.json")) as f:
            self.spec = json.load(f)
        self.state_path = os.path.join(state_dir, "state.json")
        self.sel = selectors.DefaultSelector()
        self.clients: dict[socket.socket, bytearray] = {}
        self.stdin_fd: int | None = None
        self.out_fds: dict[int, str] = {}
        self.attached_once = False
        self.oom_watchdog = False
        self.pid = 0

    def start(self, notify_w: int) -> None:
        spec = self.spec
        tty = bool(spec.get("tty"))
        fds: dict = {}
        if tty:
            import pty
            master, slave = pty.openpty()
            fds["slave"] = slave
            self.out_fds[master] = "stdout"
            self.master = master
            if spec.get("stdin"):
                self.stdin_fd = master
        else:
            o_r, o_w = os.pipe()
            e_r, e_w = os.pipe()
            if spec.get("stdin"):
                i_r, i_w = os.pipe()
                self.stdin_fd = i_w
            else:
                i_r = os.open(os.devnull, os.O_RDONLY)
                i_w = None
            fds.update(stdin=i_r, stdout=o_w, stderr=e_w)
            self.out_fds[o_r] = "stdout"
            self.out_fds[e_r] = "stderr"
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.log = LogWriter(spec["log_path"])
        started = time.time()
        pid = os.fork()
        if pid == 0:
            os.close(err_r)
            _child(spec, fds, err_w)
        os.close(err_w)
        for fd in fds.values():
            os.close(fd)
        err = b""
        while True:
            chunk = os.read(err_r, 4096)
            if not chunk:
                break
            err += chunk
        os.close(err_r)
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        state = {"id": spec.get("id", ""), "pid": pid, "pgid": pid, "shimPid": os.getpid(),
                 "argv": spec["argv"], "startedAt": started, "finishedAt": None,
                 "exitCode": None, "reason": "", "message": "",
                 "attachSocket": "", "tty": tty, "stdin": bool(spec.get("stdin"))}
        if err:
            os.waitpid(pid, 0)
            state.update(exitCode=128, reason="StartError", finishedAt=time.time(),
                         message=f"failed to create containerd task: failed to create shim "
                                 f"task: OCI runtime create failed: runc create failed: unable "
                                 f"to start container process: {err.decode(errors='replace')}: "
                                 f"unknown")
            write_json(self.state_path, state)
            os.write(notify_w, b"E")
            os._exit(0)
        self.state = state
        self._listen()
        write_json(self.state_path, state)
        os.write(notify_w, b"S")
        os.close(notify_w)

    def _listen(self) -> None:
        path = os.path.join(self.dir, "attach.sock")
        if len(path) > 100:
            d = "/tmp/kubelab-attach"
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, f"{self.spec.get('id', os.getpid())}.sock")
        try:
            os.unlink(path)
        except OSError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(16)
        srv.setblocking(False)
        self.srv = srv
        self.state["attachSocket"] = path
        self.sel.register(srv, selectors.EVENT_READ, "accept")

    def _broadcast(self, ch: int, data: bytes) -> None:
        fr = frame(ch, data)
        for c in list(self.clients):
            try:
                c.setblocking(True)
                c.settimeout(1.0)
                c.sendall(fr)
                c.setblocking(False)
            except OSError:
                self._drop(c)

    def _drop(self, c: socket.socket) -> None:
        try:
            self.sel.unregister(c)
        except (KeyError, ValueError):
            pass
        self.clients.pop(c, None)
        c.close()
        if self.spec.get("stdin_once") and self.attached_once and self.stdin_fd is not None \
                and not self.spec.get("tty"):
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.stdin_fd is not None and not self.spec.get("tty"):
            try:
                os.close(self.stdin_fd)
            except OSError:
                pass
        self.stdin_fd = None

    def _client_input(self, c: socket.socket) -> None:
        try:
            data = c.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(c)
            return
        buf = self.clients[c]
        buf += data
        while len(buf) >= 5:
            n = struct.unpack(">I", bytes(buf[1:5]))[0]
            if len(buf) < 5 + n:
                break
            ch, payload = buf[0], bytes(buf[5:5 + n])
            del buf[:5 + n]
            if ch == CH_STDIN:
                if self.stdin_fd is None:
                    continue
                if not payload:
                    if self.spec.get("tty"):
                        os.write(self.stdin_fd, b"\x04")
                    else:
                        self._close_stdin()
                    continue
                try:
                    os.write(self.stdin_fd, payload)
                except OSError:
                    pass
            elif ch == CH_RESIZE and self.spec.get("tty"):
                try:
                    import fcntl
                    import termios
                    sz = json.loads(payload)
                    fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                                struct.pack("HHHH", int(sz.get("Height", 24)),
                                            int(sz.get("Width", 80)), 0, 0))
                except (OSError, ValueError):
                    pass

    def _read_out(self, fd: int) -> bool:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            try:
                self.sel.unregister(fd)
            except (KeyError, ValueError):
                pass
            self.out_fds.pop(fd, None)
            return False
        stream = self.out_fds[fd]
        self.log.write(stream, data)
        if self.clients:
            self._broadcast(CH_STDERR if stream == "stderr" else CH_STDOUT, data)
        return True

    def run(self) -> None:
        for fd in self.out_fds:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, "out")
        self.sel.register(self.pidfd, selectors.EVENT_READ, "exit")
        limit = int(self.spec.get("memory_limit_watchdog") or 0)
        next_check = time.monotonic() + 0.25
        status = None
        while status is None:
            timeout = max(0.0, next_check - time.monotonic()) if limit else None
            for key, _ in self.sel.select(timeout):
                if key.data == "accept":
                    try:
                        c, _ = self.srv.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    self.clients[c] = bytearray()
                    self.attached_once = True
                    self.sel.register(c, selectors.EVENT_READ, "client")
                elif key.data == "client":
                    self._client_input(key.fileobj)
                elif key.data == "out":
                    self._read_out(key.fd)
                elif key.data == "exit":
                    _, status = os.waitpid(self.pid, 0)
            if limit and time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.25
                if group_rss(self.pid) > limit:
                    self.oom_watchdog = True
                    try:
                        os.killpg(self.pid, signal.SIGKILL)
                    except OSError:
                        pass
        finished = time.time()
        # the container is its process group: what is left of it goes with its main process
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        deadline = time.monotonic() + 0.5
        while self.out_fds and time.monotonic() < deadline:
            for key, _ in self.sel.select(max(0.0, deadline - time.monotonic())):
                if key.data == "out":
                    self._read_out(key.fd)
        self.log.flush()
        if os.WIFSIGNALED(status):
            code = 128 + os.WTERMSIG(status)
        else:
            code = os.WEXITSTATUS(status)
        reason = "Completed" if code == 0 else "Error"
        memcg = self.spec.get("memory_cgroup") or ""
        if code == 137 and (self.oom_watchdog or (memcg and cgroup_oom_kills(memcg) > 0)):
            reason = "OOMKilled"
        self.state.update(exitCode=code, reason=reason, finishedAt=finished)
        write_json(self.state_path, self.state)
        self._broadcast(CH_EXIT, json.dumps({"exitCode": code}).encode())
        for c in list(self.clients):
            self._drop(c)
        try:
            os.unlink(self.state["attachSocket"])
        except OSError:
            pass


def main() -> None:
    state_dir = sys.argv[1]
    notify_r, notify_w = os.pipe()
    pid = os.fork()
    if pid:
        # the process the agent started: report once the container runs (or failed to)
        os.close(notify_w)
        r = os.read(notify_r, 1)
        os._exit(0 if r == b"S" else 1 if r == b"E" else 2)
    os.close(notify_r)
    os.setsid()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    shim = Shim(state_dir)
    try:
        shim.start(notify_w)
    except BaseException as e:  # noqa: BLE001
        try:
            write_json(os.path.join(state_dir, "state.json"),
                       {"id": shim.spec.get("id", ""), "pid": 0, "pgid": 0,
                        "shimPid": os.getpid(), "startedAt": time.time(),
                        "finishedAt": time.time(), "exitCode": 128, "reason": "StartError",
                        "message": str(e)})
        finally:
            os.write(notify_w, b"E")
            os._exit(0)
    for i in (0, 1, 2):
        os.dup2(devnull, i)
    shim.run()


if __name__ == "__main__":
    main()
