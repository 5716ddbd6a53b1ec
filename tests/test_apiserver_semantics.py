"""API semantics through the real API server process: optimistic concurrency, watch resume
and expiry, quorum loss and recovery, Service IP/port allocation under concurrency."""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import aiohttp
import pytest

from kubelab.client import APIError

from .conftest import KubeCluster, wait_for

pytestmark = pytest.mark.slow


def cm(name: str, **data) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}, "data": data}


def test_fifty_concurrent_updates_one_winner_per_version(kube: KubeCluster):
    async def scenario():
        async with kube.client() as c:
            await c.create("ConfigMap", cm("counter", n="0"))
            wins: list[tuple[str, int]] = []
            conflicts = 0

            async def worker():
                nonlocal conflicts
                for _ in range(200):
                    cur = await c.get("ConfigMap", "default", "counter")
                    rv = cur["metadata"]["resourceVersion"]
                    n = int(cur["data"]["n"])
                    cur["data"]["n"] = str(n + 1)
                    try:
                        await c.update("ConfigMap", cur)
                        wins.append((rv, n + 1))
                        return
                    except APIError as e:
                        assert e.conflict, e
                        assert "the object has been modified" in e.message
                        conflicts += 1
                raise AssertionError("worker never won")

            await asyncio.gather(*(worker() for _ in range(50)))
            final = await c.get("ConfigMap", "default", "counter")
            return wins, conflicts, int(final["data"]["n"])

    wins, conflicts, final = asyncio.run(scenario())
    rvs = [rv for rv, _ in wins]
    assert len(set(rvs)) == len(rvs) == 50, "two updates won from the same resourceVersion"
    assert final == 50, f"lost update: counter is {final} after 50 successful increments"
    assert conflicts > 0


def _ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _watch_lines(kube: KubeCluster, query: str, n: int, timeout: float = 10.0):
    headers = {"Authorization": f"Bearer {kube.token}"}
    out = []
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{kube.server}/api/v1/namespaces/default/configmaps?{query}",
                         headers=headers, ssl=_ssl(),
                         timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            assert r.status == 200
            async for line in r.content:
                if line.strip():
                    out.append(json.loads(line))
                if len(out) >= n:
                    break
    return out


def test_watch_resumes_from_resource_version_and_expires_when_too_old(kube: KubeCluster):
    async def scenario():
        async with kube.client() as c:
            a = await c.create("ConfigMap", cm("w-a", v="1"))
            rv = a["metadata"]["resourceVersion"]
            await c.create("ConfigMap", cm("w-b", v="1"))
            await c.delete("ConfigMap", "default", "w-a")
        # from rv: exactly the changes after it, in order
        evs = await _watch_lines(kube, f"watch=1&resourceVersion={rv}&fieldSelector="
                                       "metadata.name%21%3Dcounter", 2)
        got = [(e["type"], e["object"]["metadata"]["name"]) for e in evs]
        assert got == [("ADDED", "w-b"), ("DELETED", "w-a")]
        # a restarted API server's watch cache starts at the current revision: an older
        # resourceVersion is gone, 410 Expired as an ERROR event
        await asyncio.to_thread(kube.cluster.stop, "apiserver")
        await asyncio.to_thread(kube.cluster.start, "apiserver")
        await asyncio.to_thread(kube.wait_ready)
        evs = await _watch_lines(kube, f"watch=1&resourceVersion={rv}", 1)
        assert evs[0]["type"] == "ERROR"
        assert evs[0]["object"]["code"] == 410 and evs[0]["object"]["reason"] == "Expired"
        assert "too old resource version" in evs[0]["object"]["message"]
    asyncio.run(scenario())


def test_quorum_loss_gives_503_and_recovers_without_restart(fresh_kube: KubeCluster):
    k = fresh_kube
    k.kubectl("create", "configmap", "before", "--from-literal=a=b", check=False)
    api_pid = k.cluster.pid("apiserver")
    leader = k.leader()
    others = [n for n in ("store-1", "store-2", "store-3") if n != leader]
    k.kill(leader)
    k.kill(others[0])
    t0 = time.monotonic()
    p = k.kubectl("get", "configmaps", "-o", "name", check=False, timeout=60)
    took = time.monotonic() - t0
    assert p.returncode != 0
    assert "ServiceUnavailable" in p.stderr and "store" in p.stderr, p.stderr
    assert took < 20, f"kubectl took {took:.1f}s to fail"
    p = k.kubectl("create", "configmap", "during", "--from-literal=a=b", check=False)
    assert p.returncode != 0
    assert k.cluster.pid("apiserver") == api_pid, "the API server must stay up"
    k.start(leader)
    k.start(others[0])
    k.wait_ready()
    wait_for(lambda: k.kubectl("create", "configmap", "after", "--from-literal=a=b",
                               check=False).returncode == 0, 30, 0.5, "writes after recovery")
    names = k.kubectl("get", "configmaps", "-o", "name").stdout.split()
    assert "configmap/after" in names
    assert k.cluster.pid("apiserver") == api_pid


def test_concurrent_service_creates_never_share_ip_or_port(kube: KubeCluster):
    def svc(i: int) -> dict:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": f"s{i}", "namespace": "default"},
                "spec": {"type": "NodePort", "selector": {"app": f"a{i}"},
                         "ports": [{"port": 80}]}}

    async def scenario():
        async with kube.client() as c:
            made = await asyncio.gather(*(c.create("Service", svc(i)) for i in range(40)))
            # a requested port that is taken is refused with Kubernetes' message
            taken = made[0]["spec"]["ports"][0]["nodePort"]
            dup = svc(99)
            dup["spec"]["ports"][0]["nodePort"] = taken
            with pytest.raises(APIError) as ei:
                await c.create("Service", dup)
            assert ei.value.code == 422
            assert "provided port is already allocated" in ei.value.message
            ip = made[0]["spec"]["clusterIP"]
            dup2 = svc(98)
            dup2["spec"]["clusterIP"] = ip
            with pytest.raises(APIError) as ei:
                await c.create("Service", dup2)
            assert ei.value.code == 422 and "already allocated" in ei.value.message
            for i in range(40):
                await c.delete("Service", "default", f"s{i}")
            return made

    made = asyncio.run(scenario())
    ips = [s["spec"]["clusterIP"] for s in made]
    ports = [s["spec"]["ports"][0]["nodePort"] for s in made]
    assert len(set(ips)) == 40 and len(set(ports)) == 40
    assert all(30000 <= p <= 32767 for p in ports)
