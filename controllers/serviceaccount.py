"""The ServiceAccount controller: a `default` ServiceAccount in every namespace that is not
being deleted, recreated when it is deleted."""

from __future__ import annotations

from kubelab.client import APIError

from .base import Controller

MANAGED = ("default",)


def namespace_active(ns: dict | None) -> bool:
    if ns is None:
        return False
    return not ns["metadata"].get("deletionTimestamp") and \
        (ns.get("status") or {}).get("phase") != "Terminating"


def missing_accounts(ns: dict | None, existing: set[str]) -> list[str]:
    """The managed ServiceAccount names to create in namespace `ns`."""
    if not namespace_active(ns):
        return []
    return [n for n in MANAGED if n not in existing]


class ServiceAccountController(Controller):
    name = "serviceaccount"
    workers = 2

    def setup(self) -> None:
        self.namespaces = self.informers.informer("Namespace")
        self.accounts = self.informers.informer("ServiceAccount")
        self.namespaces.add_handler(self._on_namespace)
        self.accounts.add_handler(self._on_account)

    def _on_namespace(self, event: str, new: dict, old: dict | None) -> None:
        if event != "DELETED":
            self.queue.add(new["metadata"]["name"])

    def _on_account(self, event: str, new: dict, old: dict | None) -> None:
        if event == "DELETED" and new["metadata"]["name"] in MANAGED:
            self.queue.add(new["metadata"]["namespace"])

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.get(None, key)
        have = {a["metadata"]["name"] for a in self.accounts.list(key)}
        for name in missing_accounts(ns, have):
            try:
                await self.client.create("ServiceAccount", {
                    "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": key}}, key)
            except APIError as e:
                if e.code == 409:
                    continue  # already there (the cache was behind)
                if e.code in (403, 404):
                    return  # the namespace is going away or gone
                raise
