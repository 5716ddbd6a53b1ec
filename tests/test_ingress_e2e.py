"""The ingress controller against a real API server: IngressClass, Ingress, Service,
EndpointSlices and a TLS Secret created with kubectl; backends are aiohttp servers on loopback
addresses the EndpointSlices point at; status.loadBalancer follows the controllers."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from kubelab.client import InformerFactory
from proxy.endpoints import EndpointIndex
from proxy.ingress import DEFAULT_BACKEND_404, IngressController, self_signed_cert

from .conftest import KubeCluster
from .test_ingress import Backend, _subject, curl

pytestmark = pytest.mark.slow


async def until(cond, timeout: float = 15.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while True:
        try:
            v = await cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last: {last!r})" if last else ""))
        await asyncio.sleep(0.05)


def manifests(ns: str, b1, b2, secret_crt: str, secret_key: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": "kubelab",
                      "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
         "spec": {"controller": "kubelab.io/ingress"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": "other"}, "spec": {"controller": "example.com/other"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty", "namespace": ns},
         "spec": {"ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-abcde", "namespace": ns,
                      "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4",
         "ports": [{"name": "http", "port": b1.port, "protocol": "TCP"}],
         "endpoints": [{"addresses": [b1.ip], "conditions": {"ready": True}},
                       {"addresses": [b2.ip], "conditions": {"ready": True}}]},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "web-tls", "namespace": ns},
         "data": {"tls.crt": secret_crt, "tls.key": secret_key}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "web", "namespace": ns},
         "spec": {"tls": [{"hosts": ["web.example.com"], "secretName": "web-tls"}],
                  "rules": [{"host": "web.example.com", "http": {"paths": [
                      {"path": "/", "pathType": "Prefix",
                       "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
                      {"path": "/empty", "pathType": "Exact",
                       "backend": {"service": {"name": "empty", "port": {"number": 80}}}}]}}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "foreign", "namespace": ns},
         "spec": {"ingressClassName": "other",
                  "rules": [{"host": "foreign.example.com", "http": {"paths": [
                      {"path": "/", "pathType": "Prefix",
                       "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}},
    ]})


def test_ingress_against_the_api_server(kube: KubeCluster):
    import base64
    block = random.randrange(1, 250)
    node_ip, node2_ip = f"127.63.{block}.1", f"127.63.{block}.2"
    ns = f"ing{block}"

    async def kubectl(*args, input=None, check=True):
        return await asyncio.to_thread(kube.kubectl, *args, input=input, check=check)

    async def lb_ips(name: str) -> list[str]:
        p = await kubectl("get", "ingress", name, "-n", ns, "-o", "json")
        lb = json.loads(p.stdout).get("status", {}).get("loadBalancer", {})
        return [x.get("ip") for x in lb.get("ingress", [])]

    async def scenario():
        client = kube.client()
        informers = InformerFactory(client)
        index = EndpointIndex(informers)
        ctl = IngressController(client, informers, index, node_name="worker-1",
                                node_ip=node_ip, http_port=0, https_port=0)
        ctl2 = None
        b1 = await Backend("b1", f"127.64.{block}.1").start()
        b2 = await Backend("b2", f"127.64.{block}.2").start(b1.port)
        try:
            informers.start()
            await informers.wait_synced(30)
            await ctl.start()
            await kubectl("create", "namespace", ns)
            crt, key = self_signed_cert("web.example.com", ("web.example.com",))
            await kubectl("apply", "-f", "-",
                          input=manifests(ns, b1, b2, base64.b64encode(crt).decode(),
                                          base64.b64encode(key).decode()))
            url = f"http://{node_ip}:{ctl.http_port}"

            async def backend_of(path="/", host="web.example.com"):
                rc, out, err = await curl("-H", f"Host: {host}", url + path)
                assert rc == 0, err
                return json.loads(out)["backend"] if out.startswith("{") else out

            # the default IngressClass picks up the class-less Ingress
            await until(lambda: backend_of(), what="routing to the web Service")
            seen = {await backend_of("/x") for _ in range(6)}
            assert seen == {"b1", "b2"}
            assert await backend_of("/empty") != "b1"
            rc, out, _ = await curl("-o", "/dev/null", "-w", "%{http_code}",
                                    "-H", "Host: web.example.com", url + "/empty")
            assert out == "503"
            assert await backend_of("/", "foreign.example.com") == DEFAULT_BACKEND_404.decode()
            # status.loadBalancer lists this worker
            await until(lambda: _eq(lb_ips("web"), [node_ip]), what="status with node IP")
            assert await lb_ips("foreign") == []

            # readiness flip: b2 leaves the rotation
            patch = {"endpoints": [{"addresses": [b1.ip], "conditions": {"ready": True}},
                                   {"addresses": [b2.ip], "conditions": {"ready": False}}]}
            await kubectl("patch", "endpointslice", "web-abcde", "-n", ns, "--type=merge",
                          "-p", json.dumps(patch))
            await until(lambda: _all_b1(backend_of), what="b2 out of rotation")

            # TLS from the Secret
            port = ctl.https_port
            rc, out, err = await curl("-vk", "--resolve", f"web.example.com:{port}:{node_ip}",
                                      f"https://web.example.com:{port}/tls")
            assert rc == 0 and "CN=web.example.com" in _subject(err), err
            assert json.loads(out)["backend"] == "b1"

            # a second worker's controller adds its address; stopping it removes it
            ctl2 = IngressController(client, informers, index, node_name="worker-2",
                                     node_ip=node2_ip, http_port=0, https_port=0)
            await ctl2.start()
            await until(lambda: _eq(lb_ips("web"), [node_ip, node2_ip]), what="two addresses")
            await ctl2.stop()
            ctl2 = None
            assert await lb_ips("web") == [node_ip]
            # an Ingress moved to another class loses our address
            await kubectl("patch", "ingress", "web", "-n", ns, "--type=merge",
                          "-p", '{"spec":{"ingressClassName":"other"}}')
            await until(lambda: _eq(lb_ips("web"), []), what="address removed")
            assert await backend_of("/") == DEFAULT_BACKEND_404.decode()
            await kubectl("patch", "ingress", "web", "-n", ns, "--type=merge",
                          "-p", '{"spec":{"ingressClassName":"kubelab"}}')
            await until(lambda: _eq(lb_ips("web"), [node_ip]), what="address back")
            await ctl.stop()
            assert await lb_ips("web") == []
        finally:
            if ctl2 is not None:
                await ctl2.stop()
            await ctl.stop()
            await b1.stop()
            await b2.stop()
            await informers.stop()
            await client.close()
            await kubectl("delete", "namespace", ns, "--wait=false", check=False)
            await kubectl("delete", "ingressclass", "kubelab", "other", check=False)

    asyncio.run(scenario())


async def _eq(coro, want) -> bool:
    return await coro == want


async def _all_b1(backend_of) -> bool:
    return all([await backend_of("/r") == "b1" for _ in range(4)])
