"""Access to the API server (HTTPS, bearer tokens, 401) and the gRPC cluster API with the
client library's informer."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess

import pytest

from kubelab.client import APIError, ClusterClient, Informer

from .conftest import KubeCluster, wait_for

pytestmark = pytest.mark.slow


def _curl(kube: KubeCluster, path: str, token: str | None = None) -> tuple[int, dict]:
    args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--cacert",
            str(kube.cluster.state_dir / "apiserver" / "ca.crt"), kube.server + path]
    if token:
        args[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=20).stdout
    body, _, code = out.rpartition("\n")
    return int(code), (json.loads(body) if body.strip().startswith("{") else {})


def test_https_with_cluster_ca_and_bearer_tokens(kube: KubeCluster):
    code, body = _curl(kube, "/api/v1/namespaces")
    assert code == 401 and body["reason"] == "Unauthorized"
    code, body = _curl(kube, "/api/v1/namespaces", token="wrong")
    assert code == 401
    code, body = _curl(kube, "/api/v1/namespaces", token=kube.token)
    assert code == 200 and body["kind"] == "NamespaceList"
    # health endpoints answer without a token, like kube-apiserver's
    assert _curl(kube, "/readyz")[0] == 200
    p = kube.kubectl("get", "ns", check=False, env={"KUBECONFIG": "/dev/null"})
    assert p.returncode != 0
    bad = kube.cluster.state_dir / "bad-kubeconfig"
    bad.write_text(open(kube.kubeconfig).read().replace(kube.token, "nope"))
    p = kube.kubectl("get", "ns", check=False, env={"KUBECONFIG": str(bad)})
    assert "You must be logged in to the server" in p.stderr
    _ = ssl  # the CA verifies: curl used --cacert without -k


def test_grpc_api_errors_and_informer_survives_apiserver_restart(kube: KubeCluster):
    async def scenario():
        async with ClusterClient(kube.grpc_target, "bad-token", retry_for=0) as bad:
            with pytest.raises(APIError) as ei:
                await bad.list("ConfigMap", "default")
            assert ei.value.code == 401
        async with kube.client() as c:
            with pytest.raises(APIError) as ei:
                await c.create("ConfigMap", {"apiVersion": "v1", "kind": "ConfigMap",
                                             "metadata": {"name": "Bad_Name"}}, "default")
            assert ei.value.code == 422 and "metadata.name" in ei.value.message
            inf = Informer(c, "ConfigMap", "default").start()
            await asyncio.wait_for(inf.synced.wait(), 10)
            seen = []
            inf.add_handler(lambda ev, new, old: seen.append((ev, new["metadata"]["name"])))
            await c.create("ConfigMap", {"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": "inf-1"}}, "default")
            await asyncio.to_thread(wait_for, lambda: ("ADDED", "inf-1") in seen, 10, 0.05,
                                    "informer ADDED")
            # restart the API server; the informer reconnects and misses nothing
            await asyncio.to_thread(kube.cluster.stop, "apiserver")
            await asyncio.to_thread(kube.cluster.start, "apiserver")
            await asyncio.to_thread(kube.wait_ready)
            await c.create("ConfigMap", {"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": "inf-2"}}, "default")
            await c.delete("ConfigMap", "default", "inf-1")
            await asyncio.to_thread(wait_for, lambda: ("DELETED", "inf-1") in seen and
                                    ("ADDED", "inf-2") in seen, 30, 0.05,
                                    "informer to catch up after the restart")
            assert inf.get("default", "inf-2") is not None
            assert inf.get("default", "inf-1") is None
            await inf.stop()
    asyncio.run(scenario())
