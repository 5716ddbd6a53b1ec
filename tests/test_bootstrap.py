"""What the cluster keeps by itself: the `kubernetes` Service (with its endpoints at the API
server) and the `kube-root-ca.crt` ConfigMap in every namespace."""

from __future__ import annotations

from tests.conftest import wait_for


def test_kubernetes_service_points_at_the_api_server(control_plane):
    cp = control_plane
    svc = cp.get_json("service", "kubernetes", "-n", "default")
    assert svc["spec"]["clusterIP"] == "127.96.0.1"
    assert svc["spec"]["ports"][0]["name"] == "https"
    assert svc["spec"]["ports"][0]["port"] == 443
    assert "selector" not in svc["spec"]
    api = cp.cluster.apiserver
    port = int(api.client_url.rsplit(":", 1)[1])
    ep = cp.get_json("endpoints", "kubernetes", "-n", "default")
    assert ep["subsets"][0]["addresses"][0]["ip"] == api.address
    assert ep["subsets"][0]["ports"][0]["port"] == port
    sl = cp.get_json("endpointslice", "kubernetes", "-n", "default")
    assert sl["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    assert sl["endpoints"][0]["addresses"] == [api.address]
    # the endpoint controllers leave a Service without a selector alone
    cp.kubectl("get", "endpoints", "kubernetes")


def test_root_ca_published_in_every_namespace(control_plane):
    cp = control_plane
    ca = (cp.cluster.state_dir / "apiserver" / "ca.crt").read_text()
    cp.kubectl("create", "namespace", "ca-test")

    def published():
        out = cp.kubectl("get", "configmap", "kube-root-ca.crt", "-n", "ca-test", "-o",
                         "jsonpath={.data.ca\\.crt}", check=False)
        return out.returncode == 0 and out.stdout.strip() == ca.strip()
    wait_for(published, 20, 0.2, "kube-root-ca.crt in a new namespace")
    cp.kubectl("delete", "configmap", "kube-root-ca.crt", "-n", "ca-test")
    wait_for(published, 20, 0.2, "kube-root-ca.crt restored after deletion")
    cp.kubectl("delete", "namespace", "ca-test", "--wait=false")


def test_default_ingress_class_is_set_on_create(control_plane):
    cp = control_plane
    cp.kubectl("apply", "-f", "-", input="""
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: lab
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: kubelab.io/ingress}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: no-class}
spec:
  defaultBackend: {service: {name: web, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other-class}
spec:
  ingressClassName: other
  defaultBackend: {service: {name: web, port: {number: 80}}}
""")
    assert cp.get_json("ingress", "no-class")["spec"]["ingressClassName"] == "lab"
    assert cp.get_json("ingress", "other-class")["spec"]["ingressClassName"] == "other"
    cp.kubectl("delete", "ingress", "no-class", "other-class")
    cp.kubectl("delete", "ingressclass", "lab")
