"""The root CA certificate publisher: a ConfigMap `kube-root-ca.crt` with the cluster CA
(`ca.crt`, from --root-ca-file) in every namespace, restored when changed or deleted — pods'
projected service-account volumes read the CA from it."""

from __future__ import annotations

from pathlib import Path

from kubelab.client import APIError

from .base import Controller

NAME = "kube-root-ca.crt"
ANNOTATION = "kubernetes.io/description"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using "
               "internal endpoints such as the internal service IP or kubernetes.default.svc. "
               "No other usage is guaranteed across distributions of Kubernetes clusters.")


def wanted(namespace: str, ca: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": namespace,
                         "annotations": {ANNOTATION: DESCRIPTION}},
            "data": {"ca.crt": ca}}


class RootCACertPublisher(Controller):
    name = "root-ca-cert-publisher"
    workers = 2

    def setup(self) -> None:
        self.namespaces = self.informers.informer("Namespace")
        self.configmaps = self.informers.informer("ConfigMap")
        self.namespaces.add_handler(self._on_namespace)
        self.configmaps.add_handler(self._on_configmap)

    def _ca(self) -> str | None:
        path = (getattr(self, "options", None) or {}).get("root_ca_file")
        if not path:
            return None
        try:
            return Path(path).read_text()
        except OSError:
            return None

    def _on_namespace(self, event: str, new: dict, old: dict | None) -> None:
        if event != "DELETED":
            self.queue.add(new["metadata"]["name"])

    def _on_configmap(self, event: str, new: dict, old: dict | None) -> None:
        if new["metadata"]["name"] == NAME:
            self.queue.add(new["metadata"]["namespace"])

    async def reconcile(self, key: str) -> None:
        ca = self._ca()
        ns = self.namespaces.get(None, key)
        if ca is None or ns is None or ns["metadata"].get("deletionTimestamp") or \
                (ns.get("status") or {}).get("phase") == "Terminating":
            return
        cur = self.configmaps.get(key, NAME)
        try:
            if cur is None:
                await self.client.create("ConfigMap", wanted(key, ca), key)
            elif (cur.get("data") or {}).get("ca.crt") != ca or \
                    (cur["metadata"].get("annotations") or {}).get(ANNOTATION) != DESCRIPTION:
                obj = dict(cur)
                obj["data"] = {"ca.crt": ca}
                obj["metadata"] = dict(cur["metadata"])
                obj["metadata"]["annotations"] = {**(cur["metadata"].get("annotations") or {}),
                                                  ANNOTATION: DESCRIPTION}
                await self.client.update("ConfigMap", obj)
        except APIError as e:
            if e.code in (403, 404, 409):
                return  # namespace going away, or the cache was behind: the next event retries
            raise
