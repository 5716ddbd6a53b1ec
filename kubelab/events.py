"""Event recording (client-go's EventRecorder): components report what they did as core/v1
Events with Kubernetes' reason names, which `kubectl describe` shows. Repeats of the same
event on the same object are folded into one Event with a growing count."""

from __future__ import annotations

import datetime
import logging
import uuid

from .client import APIError, ClusterClient

log = logging.getLogger("kubelab.events")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventRecorder:
    def __init__(self, client: ClusterClient, component: str, host: str = ""):
        self.client = client
        self.component = component
        self.host = host
        self._seen: dict[tuple, dict] = {}  # fold key -> event object

    async def event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        """Record an event about obj; errors are logged, never raised (as in client-go)."""
        md = obj.get("metadata", {})
        ns = md.get("namespace") or "default"
        ref = {"kind": obj.get("kind", ""), "namespace": md.get("namespace", ""),
               "name": md.get("name", ""), "uid": md.get("uid", ""),
               "apiVersion": obj.get("apiVersion", ""),
               "resourceVersion": md.get("resourceVersion", "")}
        key = (ref["kind"], ref["namespace"], ref["name"], ref["uid"], type_, reason, message)
        try:
            prev = self._seen.get(key)
            if prev is not None:
                patch = {"count": prev.get("count", 1) + 1, "lastTimestamp": _now()}
                ev = await self.client.patch("Event", ns, prev["metadata"]["name"], patch)
                self._seen[key] = ev
                return
            ev = {"apiVersion": "v1", "kind": "Event",
                  "metadata": {"name": f"{ref['name']}.{uuid.uuid4().hex[:16]}",
                               "namespace": ns},
                  "involvedObject": {k: v for k, v in ref.items() if v},
                  "reason": reason, "message": message, "type": type_,
                  "source": {"component": self.component, **({"host": self.host}
                                                              if self.host else {})},
                  "firstTimestamp": _now(), "lastTimestamp": _now(), "count": 1,
                  "eventTime": None, "reportingComponent": self.component,
                  "reportingInstance": self.host or self.component}
            ev = await self.client.create("Event", ev, ns)
            if len(self._seen) > 4096:
                self._seen.clear()
            self._seen[key] = ev
        except APIError as e:
            if e.not_found and key in self._seen:  # the folded event was removed: start over
                self._seen.pop(key, None)
                return await self.event(obj, type_, reason, message)
            log.debug("event %s/%s not recorded: %s", reason, ref["name"], e)
        except Exception as e:  # noqa: BLE001
            log.debug("event %s not recorded: %r", reason, e)

    async def normal(self, obj: dict, reason: str, message: str) -> None:
        await self.event(obj, "Normal", reason, message)

    async def warning(self, obj: dict, reason: str, message: str) -> None:
        await self.event(obj, "Warning", reason, message)


_ = _micro_now
