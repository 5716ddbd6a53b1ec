"""The subicura guide's counter app (:3000): every request INCRs the key `count` in redis at
$REDIS_HOST:$REDIS_PORT (default localhost:6379) and answers the new count."""

from __future__ import annotations

import asyncio
import os

from nodeagent.apps._common import Request, Response, local_host, log, run, serve_http


class RedisClient:
    """A minimal RESP client with one connection, reconnecting on failure."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.lock = asyncio.Lock()

    async def command(self, *args: str):
        async with self.lock:
            for attempt in range(2):
                try:
                    if self.conn is None:
                        self.conn = await asyncio.wait_for(
                            asyncio.open_connection(local_host(self.host), self.port), 2)
                    reader, writer = self.conn
                    payload = f"*{len(args)}\r\n" + "".join(
                        f"${len(a.encode())}\r\n{a}\r\n" for a in args)
                    writer.write(payload.encode())
                    await writer.drain()
                    return await asyncio.wait_for(read_reply(reader), 5)
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    if self.conn:
                        self.conn[1].close()
                    self.conn = None
                    if attempt:
                        raise
        return None


async def read_reply(reader: asyncio.StreamReader):
    line = (await reader.readuntil(b"\r\n"))[:-2]
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else (await reader.readexactly(n + 2))[:-2]
    if kind == b"*":
        return [await read_reply(reader) for _ in range(int(rest))]
    raise RuntimeError(f"bad reply {line!r}")


def main() -> None:
    host = os.environ.get("REDIS_HOST") or "localhost"
    port = int(os.environ.get("REDIS_PORT") or 6379)
    client = RedisClient(host, port)

    async def handle(req: Request) -> Response:
        if req.path == "/favicon.ico":
            return Response(404, "Not Found")
        try:
            n = await client.command("INCR", "count")
        except (OSError, RuntimeError, asyncio.IncompleteReadError, TimeoutError) as e:
            log(f"redis error: {e!r}")
            return Response(500, f"Redis connection error: {host}:{port}\n")
        return Response(200, f"{n}", content_type="text/html; charset=utf-8")

    def access(req: Request, resp: Response, size: int, dur: float) -> None:
        log(f"{req.method} {req.target} {resp.status} {dur * 1000:.3f} ms - {size}")

    async def serve() -> None:
        server = await serve_http(handle, int(os.environ.get("PORT") or 3000),
                                  access_log=access)
        log(f"Listening on port {server.sockets[0].getsockname()[1]}")
        await server.serve_forever()

    run(serve)


if __name__ == "__main__":
    main()
