"""exec and attach over the Kubernetes WebSocket channel protocols (v5.channel.k8s.io,
v4.channel.k8s.io), as the kubelet serves them.

Every message is `channel byte + payload`: 0 stdin, 1 stdout, 2 stderr, 3 error/status (a
metav1.Status JSON), 4 resize (`{"Width":w,"Height":h}`). v5 adds the close signal
`0xFF <channel>` (kubectl sends `0xFF 0x00` at stdin EOF). Clients may send text frames (the
Python client does for str data): the first character is then the channel.

The framing and status messages are pure functions (`frame`, `parse_client_message`,
`status_*`); `run_exec` / `run_attach` do the I/O: a subprocess (on a pty when tty) for exec,
the container shim's attach socket for attach.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import pty
import signal
import struct
import termios
from dataclasses import dataclass

log = logging.getLogger(__name__)

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
PROTOCOLS = (V5, V4)

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 0xFF

# attach socket (shim) framing: channel byte + 4-byte big-endian length + payload
SHIM_STDIN, SHIM_STDOUT, SHIM_STDERR, SHIM_EXIT, SHIM_RESIZE = 0, 1, 2, 3, 4


@dataclass
class StreamOptions:
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False

    @classmethod
    def from_query(cls, q) -> StreamOptions:
        def b(name: str, default: bool) -> bool:
            v = q.get(name)
            if v is None:
                return default
            return v.lower() in ("1", "true", "yes", "")
        o = cls(stdin=b("stdin", False), stdout=b("stdout", False), stderr=b("stderr", False),
                tty=b("tty", False))
        if o.tty:
            o.stderr = False  # with a tty everything comes on stdout
        return o


# ---------------------------------------------------------------- pure framing
def frame(channel: int, data: bytes) -> bytes:
    return bytes((channel,)) + data


@dataclass(frozen=True)
class StdinData:
    data: bytes


@dataclass(frozen=True)
class StdinClose:
    pass


@dataclass(frozen=True)
class Resize:
    width: int
    height: int


def parse_client_message(msg: bytes | str, protocol: str) -> StdinData | StdinClose | Resize \
        | None:
    """One WebSocket message from the client → an event (None for ignored messages)."""
    if isinstance(msg, str):
        msg = msg.encode("utf-8")
    if not msg:
        return None
    ch, payload = msg[0], msg[1:]
    if ch == CLOSE_SIGNAL and protocol == V5:
        return StdinClose() if payload[:1] == bytes((STDIN,)) else None
    if ch == STDIN:
        return StdinData(payload)
    if ch == RESIZE:
        try:
            d = json.loads(payload or b"{}")
            return Resize(int(d.get("Width", 0)), int(d.get("Height", 0)))
        except (ValueError, TypeError, AttributeError):
            return None
    return None


def _status(obj: dict) -> bytes:
    return json.dumps({"metadata": {}, **obj}, separators=(",", ":")).encode()


def status_success() -> bytes:
    return _status({"status": "Success"})


def status_exit_code(code: int, argv: list[str]) -> bytes:
    """The kubelet's NonZeroExitCode status; kubectl prints `command terminated with exit code
    N` and exits N."""
    cmd = "[" + " ".join(argv) + "]"
    return _status({
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command "
                   f"{cmd}, exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}})


def status_internal_error(message: str) -> bytes:
    return _status({"status": "Failure", "message": f"Internal error occurred: {message}",
                    "reason": "InternalError", "details": {"causes": [{"message": message}]},
                    "code": 500})


def shim_frame(channel: int, payload: bytes) -> bytes:
    return bytes((channel,)) + struct.pack(">I", len(payload)) + payload


class ShimDecoder:
    """Attach-socket frames from the shim (sans-IO)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while len(self._buf) >= 5:
            n = int.from_bytes(self._buf[1:5], "big")
            if len(self._buf) < 5 + n:
                break
            out.append((self._buf[0], bytes(self._buf[5:5 + n])))
            del self._buf[:5 + n]
        return out


def exit_code_of(returncode: int) -> int:
    """A signal death (-N from asyncio) is reported as 128+N, as runc does."""
    return 128 - returncode if returncode < 0 else returncode


# ---------------------------------------------------------------- I/O
async def _send(ws, channel: int, data: bytes) -> None:
    if not ws.closed:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_bytes(frame(channel, data))


async def _finish(ws, status: bytes) -> None:
    await _send(ws, ERROR, status)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.close(code=1000)


def _set_winsize(fd: int, width: int, height: int) -> None:
    if width > 0 and height > 0:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def _tty_leader(tty_path: str):
    """preexec_fn: a new session whose controlling terminal is the pty (opening it by name as
    session leader makes it so; uvloop runs preexec_fn before the stdio dup2, so fd 0 cannot
    be used here)."""
    def preexec() -> None:
        os.setsid()
        os.close(os.open(tty_path, os.O_RDWR))
    return preexec


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _ws_messages(ws):
    from aiohttp import WSMsgType
    async for msg in ws:
        if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
            yield msg.data
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                          WSMsgType.ERROR):
            return


async def run_exec(ws, protocol: str, argv: list[str], env: dict[str, str] | None,
                   cwd: str | None, opts: StreamOptions, display_argv: list[str]) -> int | None:
    """Run argv and relay it over ws until it exits; returns its exit code (None if it could
    not start)."""
    loop = asyncio.get_running_loop()
    master = slave = -1
    try:
        if opts.tty:
            master, slave = pty.openpty()
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                preexec_fn=_tty_leader(os.ttyname(slave)))
            os.close(slave)
            slave = -1
        else:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if opts.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if opts.stdout else asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE if opts.stderr else asyncio.subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True)
    except OSError as e:
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
        what = f'exec: "{argv[0] if argv else ""}": '
        if isinstance(e, FileNotFoundError):
            what += "executable file not found in $PATH"
        else:
            what += (e.strerror or str(e)).lower()
        await _finish(ws, status_internal_error(
            f"error executing command in container: failed to exec in container: OCI runtime "
            f"exec failed: exec failed: unable to start container process: {what}: unknown"))
        return None

    pumps: list[asyncio.Task] = []
    if opts.tty:
        out_q: asyncio.Queue[bytes | None] = asyncio.Queue()

        def on_readable() -> None:
            try:
                data = os.read(master, 65536)
            except OSError as e:
                if e.errno not in (errno.EIO, errno.EBADF):
                    log.debug("pty read: %s", e)
                data = b""
            if not data:
                loop.remove_reader(master)
                out_q.put_nowait(None)
            else:
                out_q.put_nowait(data)

        os.set_blocking(master, False)
        loop.add_reader(master, on_readable)

        async def pump_pty() -> None:
            while (data := await out_q.get()) is not None:
                await _send(ws, STDOUT, data)
        pumps.append(asyncio.create_task(pump_pty()))
    else:
        async def pump(stream: asyncio.StreamReader, ch: int) -> None:
            while data := await stream.read(65536):
                await _send(ws, ch, data)
        if proc.stdout is not None:
            pumps.append(asyncio.create_task(pump(proc.stdout, STDOUT)))
        if proc.stderr is not None:
            pumps.append(asyncio.create_task(pump(proc.stderr, STDERR)))

    async def read_client() -> None:
        async for msg in _ws_messages(ws):
            ev = parse_client_message(msg, protocol)
            if isinstance(ev, StdinData) and opts.stdin:
                if opts.tty:
                    with contextlib.suppress(OSError):
                        os.write(master, ev.data)
                elif proc.stdin is not None and not proc.stdin.is_closing():
                    proc.stdin.write(ev.data)
                    with contextlib.suppress(ConnectionError):
                        await proc.stdin.drain()
            elif isinstance(ev, StdinClose):
                if opts.tty:
                    with contextlib.suppress(OSError):
                        os.write(master, b"\x04")
                elif proc.stdin is not None:
                    proc.stdin.close()
            elif isinstance(ev, Resize) and opts.tty:
                _set_winsize(master, ev.width, ev.height)

    reader = asyncio.create_task(read_client())
    waiter = asyncio.create_task(proc.wait())
    try:
        done, _ = await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:  # the client went away: end the process
            _killpg(proc.pid)
            await proc.wait()
            return exit_code_of(proc.returncode or 0)
        # drain what the process wrote before it exited (a pty may be held by a grandchild)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*pumps), 2.0 if opts.tty else 10.0)
        code = exit_code_of(proc.returncode or 0)
        await _finish(ws, status_success() if code == 0 else
                      status_exit_code(code, display_argv))
        return code
    finally:
        reader.cancel()
        for t in pumps:
            t.cancel()
        if proc.returncode is None:
            _killpg(proc.pid)
        if master >= 0:
            loop.remove_reader(master)
            os.close(master)


async def run_attach(ws, protocol: str, socket_path: str, opts: StreamOptions) -> None:
    """Relay ws ⇄ the container shim's attach socket until the container exits or the client
    detaches."""
    try:
        r, w = await asyncio.open_unix_connection(socket_path)
    except OSError as e:
        await _finish(ws, status_internal_error(f"unable to attach to container: {e}"))
        return
    decoder = ShimDecoder()

    async def from_shim() -> None:
        while data := await r.read(65536):
            for ch, payload in decoder.feed(data):
                if ch == SHIM_EXIT:
                    return
                if ch == SHIM_STDOUT and opts.stdout:
                    await _send(ws, STDOUT, payload)
                elif ch == SHIM_STDERR:
                    if opts.stderr:
                        await _send(ws, STDERR, payload)
                    elif opts.tty and opts.stdout:
                        await _send(ws, STDOUT, payload)

    async def from_client() -> None:
        async for msg in _ws_messages(ws):
            ev = parse_client_message(msg, protocol)
            if isinstance(ev, StdinData) and opts.stdin and ev.data:
                w.write(shim_frame(SHIM_STDIN, ev.data))
            elif isinstance(ev, StdinClose) and opts.stdin:
                w.write(shim_frame(SHIM_STDIN, b""))
            elif isinstance(ev, Resize):
                w.write(shim_frame(SHIM_RESIZE, json.dumps(
                    {"Width": ev.width, "Height": ev.height}).encode()))
            else:
                continue
            await w.drain()

    shim_task = asyncio.create_task(from_shim())
    client_task = asyncio.create_task(from_client())
    try:
        done, _ = await asyncio.wait({shim_task, client_task},
                                     return_when=asyncio.FIRST_COMPLETED)
        if shim_task in done:
            await _finish(ws, status_success())
    except (ConnectionError, OSError):
        pass
    finally:
        shim_task.cancel()
        client_task.cancel()
        w.close()
