"""What every controller shares: informers from the process's factory feed a rate-limited work
queue of object keys; `reconcile(key)` reads the current state from the caches, computes what
should exist, makes the difference through the API, and is safe to run again at any time."""

from __future__ import annotations

import asyncio
import logging

from kubelab.client import ClusterClient, InformerFactory, WorkQueue, object_key, run_workers
from kubelab.events import EventRecorder


class Controller:
    name = "controller"
    workers = 2

    def __init__(self, client: ClusterClient, informers: InformerFactory,
                 recorder: EventRecorder):
        self.client = client
        self.informers = informers
        self.recorder = recorder
        self.queue = WorkQueue()
        self.log = logging.getLogger(f"controllers.{self.name}")
        self.setup()

    def setup(self) -> None:
        """Register informers and event handlers (called from __init__)."""

    def enqueue(self, obj: dict) -> None:
        self.queue.add(object_key(obj))

    def enqueue_after(self, obj: dict, delay: float) -> None:
        self.queue.add_after(object_key(obj), delay)

    def enqueue_owner(self, obj: dict, kind: str) -> None:
        """Enqueue the controller owner of kind `kind` (e.g. a pod's ReplicaSet)."""
        ref = controller_ref(obj)
        if ref and ref.get("kind") == kind:
            ns = obj.get("metadata", {}).get("namespace")
            self.queue.add(f"{ns}/{ref['name']}" if ns else ref["name"])

    def enqueue_for_pod(self, event: str, new: dict, old: dict | None, kind: str,
                        candidates) -> None:
        """A pod event goes to its controller of `kind`; an orphan pod (which may be adopted)
        goes to every candidate owner `candidates(pod)` returns. Both the new and the old
        state count, so a pod that changed owner or labels wakes both sides."""
        for obj in (new, old) if old is not None and old is not new else (new,):
            ref = controller_ref(obj)
            if ref is not None:
                if ref.get("kind") == kind:
                    self.queue.add(f"{obj['metadata'].get('namespace')}/{ref['name']}")
            elif event != "DELETED":
                for owner in candidates(obj):
                    self.enqueue(owner)

    async def reconcile(self, key: str) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        await run_workers(self.queue, self.reconcile, self.workers, self.name)


def controller_ref(obj: dict) -> dict | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def owner_ref(owner: dict, block: bool = True) -> dict:
    md = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": md["name"],
            "uid": md["uid"], "controller": True, "blockOwnerDeletion": block}


def split_key(key: str) -> tuple[str | None, str]:
    if "/" in key:
        ns, name = key.split("/", 1)
        return ns, name
    return None, key


_ = asyncio
