"""The redis image: `docker-entrypoint.sh redis-server` semantics.

Runs the real `redis-server` when installed (exec'd, bound to $KUBELAB_BIND_IP, config files and
/data resolved through the pod's volumes), else a built-in RESP server on :6379 with PING, ECHO,
GET, SET (EX/PX/NX/XX), INCR/INCRBY/DECR/DECRBY, DEL, EXISTS, KEYS, EXPIRE, TTL, PTTL,
PERSIST, DBSIZE, FLUSHDB, FLUSHALL, INFO, SELECT, QUIT (RESP and inline commands, so
`telnet redis 6379` works as in the tutorials).

The protocol core (RespParser, encode, Store.execute) does no I/O."""

from __future__ import annotations

import asyncio
import fnmatch
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

from nodeagent.apps._common import bind_ip, find_real, is_mounted, log, run, volume_path

VERSION = "7.4.1"


class ProtocolError(Exception):
    pass


class Error(str):
    """A RESP error reply."""


class Status(str):
    """A RESP simple-string reply."""


OK = Status("OK")


def encode(value) -> bytes:
    if isinstance(value, Error):
        return f"-{value}\r\n".encode()
    if isinstance(value, Status):
        return f"+{value}\r\n".encode()
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bool):
        return f":{int(value)}\r\n".encode()
    if isinstance(value, int):
        return f":{value}\r\n".encode()
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, (list, tuple)):
        return b"*%d\r\n" % len(value) + b"".join(encode(v) for v in value)
    raise TypeError(type(value))


class RespParser:
    """Incremental parser of client commands: RESP arrays of bulk strings, or inline lines."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[list[bytes]]:
        self.buf += data
        out = []
        while True:
            cmd = self._one()
            if cmd is None:
                return out
            if cmd:
                out.append(cmd)

    def _one(self) -> list[bytes] | None:
        buf = self.buf
        if not buf:
            return None
        if buf[:1] != b"*":
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > 64 * 1024:
                    raise ProtocolError("too big inline request")
                return None
            line, self.buf = buf[:end].rstrip(b"\r"), buf[end + 1:]
            return _split_inline(line)
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        try:
            n = int(buf[1:end])
        except ValueError as e:
            raise ProtocolError("invalid multibulk length") from e
        pos = end + 2
        args = []
        for _ in range(max(n, 0)):
            e2 = buf.find(b"\r\n", pos)
            if e2 < 0:
                return None
            if buf[pos:pos + 1] != b"$":
                raise ProtocolError(f"expected '$', got '{buf[pos:pos + 1].decode()}'")
            ln = int(buf[pos + 1:e2])
            start = e2 + 2
            if len(buf) < start + ln + 2:
                return None
            args.append(buf[start:start + ln])
            pos = start + ln + 2
        self.buf = buf[pos:]
        return args


def _split_inline(line: bytes) -> list[bytes]:
    args, cur, quote, i = [], b"", None, 0
    has = False
    while i < len(line):
        c = line[i:i + 1]
        if quote:
            if c == b"\\" and quote == b'"' and i + 1 < len(line):
                i += 1
                cur += {b"n": b"\n", b"r": b"\r", b"t": b"\t"}.get(line[i:i + 1],
                                                                    line[i:i + 1])
            elif c == quote:
                quote = None
            else:
                cur += c
        elif c in (b'"', b"'"):
            quote, has = c, True
        elif c in (b" ", b"\t"):
            if cur or has:
                args.append(cur)
            cur, has = b"", False
        else:
            cur += c
        i += 1
    if cur or has:
        args.append(cur)
    return args


@dataclass
class Store:
    """Sixteen keyspaces of strings with expiry. `execute` is the command table."""

    dbs: list[dict[bytes, bytes]] = field(default_factory=lambda: [{} for _ in range(16)])
    expires: list[dict[bytes, float]] = field(default_factory=lambda: [{} for _ in range(16)])
    started: float = field(default_factory=time.time)
    commands_processed: int = 0
    connections: int = 0
    port: int = 6379

    def _live(self, db: int, key: bytes, now: float) -> bool:
        exp = self.expires[db].get(key)
        if exp is not None and exp <= now:
            self.dbs[db].pop(key, None)
            self.expires[db].pop(key, None)
        return key in self.dbs[db]

    def execute(self, session: dict, args: list[bytes], now: float | None = None):
        now = time.time() if now is None else now
        self.commands_processed += 1
        name = args[0].decode(errors="replace").lower()
        a = args[1:]
        db = session.setdefault("db", 0)
        data, exp = self.dbs[db], self.expires[db]
        arity = {"ping": (0, 1), "echo": (1, 1), "get": (1, 1), "set": (2, 99),
                 "incr": (1, 1), "decr": (1, 1), "incrby": (2, 2), "decrby": (2, 2),
                 "del": (1, 999), "exists": (1, 999), "keys": (1, 1), "expire": (2, 3),
                 "pexpire": (2, 3), "ttl": (1, 1), "pttl": (1, 1), "persist": (1, 1),
                 "dbsize": (0, 0), "flushdb": (0, 1), "flushall": (0, 1), "info": (0, 9),
                 "select": (1, 1), "quit": (0, 0), "command": (0, 9), "client": (1, 9),
                 "config": (1, 9), "type": (1, 1), "hello": (0, 9), "append": (2, 2),
                 "mget": (1, 999), "strlen": (1, 1), "setnx": (2, 2), "time": (0, 0)}
        if name not in arity:
            shown = " ".join(f"'{x.decode(errors='replace')}'" for x in a)
            return Error(f"ERR unknown command '{args[0].decode(errors='replace')}', "
                         f"with args beginning with: {shown}{' ' if shown else ''}".rstrip())
        lo, hi = arity[name]
        if not lo <= len(a) <= hi:
            return Error(f"ERR wrong number of arguments for '{name}' command")
        if name == "ping":
            return a[0] if a else Status("PONG")
        if name == "echo":
            return a[0]
        if name == "quit":
            session["quit"] = True
            return OK
        if name in ("get", "strlen", "type"):
            live = self._live(db, a[0], now)
            if name == "type":
                return Status("string" if live else "none")
            v = data.get(a[0]) if live else None
            return (len(v) if v else 0) if name == "strlen" else v
        if name == "mget":
            return [data.get(k) if self._live(db, k, now) else None for k in a]
        if name in ("set", "setnx"):
            opts = [o.lower() for o in a[2:]]
            ttl = None
            nx, xx, i = name == "setnx", False, 0
            while i < len(opts):
                o = opts[i]
                if o in (b"ex", b"px") and i + 1 < len(opts):
                    try:
                        n = int(opts[i + 1])
                    except ValueError:
                        return Error("ERR value is not an integer or out of range")
                    if n <= 0:
                        return Error("ERR invalid expire time in 'set' command")
                    ttl = n if o == b"ex" else n / 1000
                    i += 2
                    continue
                if o == b"nx":
                    nx = True
                elif o == b"xx":
                    xx = True
                elif o != b"keepttl":
                    return Error("ERR syntax error")
                i += 1
            live = self._live(db, a[0], now)
            if (nx and live) or (xx and not live):
                return 0 if name == "setnx" else None
            data[a[0]] = a[1]
            if ttl is not None:
                exp[a[0]] = now + ttl
            elif b"keepttl" not in opts:
                exp.pop(a[0], None)
            return 1 if name == "setnx" else OK
        if name in ("incr", "decr", "incrby", "decrby"):
            try:
                delta = int(a[1]) if len(a) > 1 else 1
            except ValueError:
                return Error("ERR value is not an integer or out of range")
            if name.startswith("decr"):
                delta = -delta
            cur = data.get(a[0]) if self._live(db, a[0], now) else b"0"
            try:
                n = int(cur) + delta
            except ValueError:
                return Error("ERR value is not an integer or out of range")
            data[a[0]] = str(n).encode()
            return n
        if name == "append":
            cur = data.get(a[0], b"") if self._live(db, a[0], now) else b""
            data[a[0]] = cur + a[1]
            return len(data[a[0]])
        if name in ("del", "exists"):
            n = 0
            for k in a:
                if self._live(db, k, now):
                    n += 1
                    if name == "del":
                        data.pop(k, None)
                        exp.pop(k, None)
            return n
        if name == "keys":
            pat = a[0].decode(errors="replace")
            return [k for k in list(data) if self._live(db, k, now)
                    and fnmatch.fnmatchcase(k.decode(errors="replace"), pat)]
        if name in ("expire", "pexpire"):
            try:
                n = int(a[1])
            except ValueError:
                return Error("ERR value is not an integer or out of range")
            if not self._live(db, a[0], now):
                return 0
            if n <= 0:
                data.pop(a[0], None)
                exp.pop(a[0], None)
            else:
                exp[a[0]] = now + (n if name == "expire" else n / 1000)
            return 1
        if name in ("ttl", "pttl"):
            if not self._live(db, a[0], now):
                return -2
            if a[0] not in exp:
                return -1
            left = exp[a[0]] - now
            return round(left) if name == "ttl" else int(left * 1000)
        if name == "persist":
            return 1 if self._live(db, a[0], now) and exp.pop(a[0], None) is not None else 0
        if name == "dbsize":
            return sum(1 for k in list(data) if self._live(db, k, now))
        if name == "flushdb":
            data.clear()
            exp.clear()
            return OK
        if name == "flushall":
            for d in self.dbs + self.expires:
                d.clear()
            return OK
        if name == "select":
            try:
                n = int(a[0])
            except ValueError:
                return Error("ERR value is not an integer or out of range")
            if not 0 <= n < len(self.dbs):
                return Error("ERR DB index is out of range")
            session["db"] = n
            return OK
        if name == "info":
            return self.info(now).encode()
        if name == "time":
            return [str(int(now)).encode(), str(int(now % 1 * 1e6)).encode()]
        if name == "config":
            return [] if a[0].lower() == b"get" else OK
        if name == "hello":
            if a and a[0] not in (b"2",):
                return Error("NOPROTO unsupported protocol version")
            return [b"server", b"redis", b"version", VERSION.encode(), b"proto", 2,
                    b"mode", b"standalone", b"role", b"master", b"modules", []]
        if name == "client":
            sub = a[0].lower()
            if sub == b"getname":
                return session.get("name")
            if sub == b"setname" and len(a) > 1:
                session["name"] = a[1]
            return OK
        return []  # command, command docs...

    def info(self, now: float) -> str:
        up = int(now - self.started)
        keyspace = "".join(
            f"db{i}:keys={len(d)},expires={len(self.expires[i])},avg_ttl=0\r\n"
            for i, d in enumerate(self.dbs) if d)
        return ("# Server\r\n"
                f"redis_version:{VERSION}\r\nredis_mode:standalone\r\nos:{sys.platform}\r\n"
                f"process_id:{os.getpid()}\r\ntcp_port:{self.port}\r\n"
                f"uptime_in_seconds:{up}\r\nuptime_in_days:{up // 86400}\r\n\r\n"
                "# Clients\r\n"
                f"connected_clients:{self.connections}\r\n\r\n"
                "# Stats\r\n"
                f"total_commands_processed:{self.commands_processed}\r\n\r\n"
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n"
                f"# Keyspace\r\n{keyspace}")


async def serve_builtin(port: int) -> None:
    store = Store(port=port)

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser, session = RespParser(), {}
        store.connections += 1
        try:
            while not session.get("quit"):
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    cmds = parser.feed(data)
                except ProtocolError as e:
                    writer.write(encode(Error(f"ERR Protocol error: {e}")))
                    break
                for cmd in cmds:
                    writer.write(encode(store.execute(session, cmd)))
                    if session.get("quit"):
                        break
                await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            store.connections -= 1
            writer.close()

    pid = os.getpid()

    def stamp() -> str:
        t = time.time()
        return time.strftime("%d %b %Y %H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}"

    log(f"{pid}:C {stamp()} # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo")
    log(f"{pid}:C {stamp()} # Redis version={VERSION}, bits=64, just started "
        "(kubelab built-in server)")
    server = await asyncio.start_server(on_conn, bind_ip(), port, reuse_address=True)
    log(f"{pid}:M {stamp()} * Running mode=standalone, port={port}.")
    log(f"{pid}:M {stamp()} * Server initialized")
    log(f"{pid}:M {stamp()} * Ready to accept connections tcp")
    await server.serve_forever()


def real_server_argv(binary: str, args: list[str], workdir: str) -> list[str]:
    """argv of the real redis-server: the user's config file/options with paths resolved
    through the volumes, then our overrides (bind address, no daemonizing)."""
    out = [binary]
    i = 0
    has_dir = False
    while i < len(args):
        a = args[i]
        if i == 0 and not a.startswith("-"):
            out.append(volume_path(a))  # the config file
        elif a == "--dir" and i + 1 < len(args):
            out += [a, volume_path(args[i + 1])]
            has_dir = True
            i += 1
        elif a.startswith("--") and i + 1 < len(args) and a[2:] in (
                "include", "logfile", "unixsocket", "pidfile", "aclfile"):
            out += [a, volume_path(args[i + 1])]
            i += 1
        else:
            out.append(a)
        i += 1
    if not has_dir:
        out += ["--dir", workdir]
    out += ["--bind", bind_ip(), "--daemonize", "no", "--protected-mode", "no"]
    return out


def _port(args: list[str]) -> int:
    for i, a in enumerate(args[:-1]):
        if a == "--port":
            return int(args[i + 1])
    return 6379


def main() -> None:
    args = sys.argv[1:] or ["redis-server"]
    # docker-entrypoint.sh: options alone mean redis-server options
    if args[0].startswith("-") or args[0].endswith(".conf"):
        args = ["redis-server", *args]
    if args[0] not in ("redis-server", "/usr/local/bin/redis-server"):
        os.execvp(args[0], args)  # any other command runs as is, like `exec "$@"`
    rest = args[1:]
    binary = None if os.environ.get("KUBELAB_BUILTIN_REDIS") else find_real("redis-server")
    if binary:
        workdir = volume_path("/data") if is_mounted("/data") else \
            os.environ.get("KUBELAB_CONTAINER_DIR") or tempfile.mkdtemp(prefix="kubelab-redis-")
        os.makedirs(workdir, exist_ok=True)
        argv = real_server_argv(binary, rest, workdir)
        os.execv(binary, argv)
    if rest and not rest[0].startswith("-"):
        log(f"kubelab built-in redis: ignoring config file {rest[0]}", sys.stderr)
    port = _port(rest)
    pid = os.getpid()
    run(lambda: serve_builtin(port), on_term="exit0",
        term_message=f"{pid}:signal-handler Received SIGTERM scheduling shutdown...\n"
                     f"{pid}:M * Redis is now ready to exit, bye bye...")


if __name__ == "__main__":
    main()
