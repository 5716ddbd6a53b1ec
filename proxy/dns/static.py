"""In-memory stand-ins for `kubelab.client.InformerFactory`/`Informer` holding a fixed set of
objects (tests, the benchmark, `python -m proxy.dns --objects FILE`). Same surface the DNS
code uses: informer(kind), get, list, add_handler, synced, start; plus apply/delete to
simulate watch events."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable

from kubelab.client import object_key


class StaticInformer:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.cache: dict[str, dict] = {}
        self.handlers: list = []
        self.synced = asyncio.Event()

    def add_handler(self, h) -> None:
        self.handlers.append(h)

    def get(self, namespace: str | None, name: str) -> dict | None:
        return self.cache.get(f"{namespace}/{name}" if namespace else name)

    def list(self, namespace: str | None = None) -> list[dict]:
        return [o for o in self.cache.values()
                if namespace is None or o.get("metadata", {}).get("namespace") == namespace]

    def apply(self, obj: dict) -> None:
        key = object_key(obj)
        prev = self.cache.get(key)
        self.cache[key] = obj
        for h in list(self.handlers):
            h("ADDED" if prev is None else "MODIFIED", obj, prev)

    def delete(self, obj: dict) -> None:
        prev = self.cache.pop(object_key(obj), None)
        for h in list(self.handlers):
            h("DELETED", prev or obj, prev)


class StaticInformers:
    """`InformerFactory` look-alike. `synced` starts set unless synced=False."""

    def __init__(self, objects: Iterable[dict] = (), *, synced: bool = True) -> None:
        self._informers: dict[str, StaticInformer] = {}
        self._synced = synced
        for o in objects:
            self.apply(o)

    def informer(self, kind: str, namespace: str | None = None, **_kw) -> StaticInformer:
        inf = self._informers.get(kind)
        if inf is None:
            inf = self._informers[kind] = StaticInformer(kind)
            if self._synced:
                inf.synced.set()
        return inf

    def start(self) -> None:
        pass

    def set_synced(self) -> None:
        self._synced = True
        for inf in self._informers.values():
            inf.synced.set()

    def apply(self, obj: dict) -> None:
        self.informer(obj["kind"]).apply(obj)

    def delete(self, obj: dict) -> None:
        self.informer(obj["kind"]).delete(obj)


def free_port(ip: str, tries: int = 100) -> int:
    """A port free for both UDP and TCP on `ip` (a DNS server binds both)."""
    for _ in range(tries):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            u.bind((ip, 0))
            port = u.getsockname()[1]
            t.bind((ip, port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free port")
