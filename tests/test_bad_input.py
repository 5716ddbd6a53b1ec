"""Malformed manifests through the real kubectl: each gets a Kubernetes-style error, and none
changes stored state (the store revision does not move)."""

from __future__ import annotations

import pytest

from .conftest import KubeCluster

pytestmark = pytest.mark.slow

POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
{containers}
"""

CASES = [
    # (id, manifest, expected text in kubectl's stderr)
    ("bad-name-uppercase", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: BadName\n",
     'The ConfigMap "BadName" is invalid: metadata.name: Invalid value: "BadName": a lowercase '
     'RFC 1123 subdomain'),
    ("bad-name-underscore", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: my_ns\n",
     'The Namespace "my_ns" is invalid: metadata.name: Invalid value: "my_ns"'),
    ("missing-name", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\ndata: {a: b}\n",
     # kubectl apply refuses client-side; create -f gets the server's 422
     "name or generateName is required|resource name may not be empty"),
    ("bad-label-value", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: l1\n  labels:\n"
     "    app: \"bad value!\"\n", 'metadata.labels: Invalid value: "bad value!"'),
    ("bad-label-key", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: l2\n  labels:\n"
     "    \"-bad\": x\n", "metadata.labels: Invalid value"),
    ("configmap-bad-key", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k1\ndata:\n"
     "  \"bad key\": x\n", "a valid config key must consist of alphanumeric characters"),
    ("pod-no-containers", POD.format(name="p1", containers="    []"),
     "spec.containers: Required value"),
    ("pod-no-image", POD.format(name="p2", containers="  - name: c"),
     "spec.containers[0].image: Required value"),
    ("pod-dup-containers", POD.format(name="p3", containers="  - {name: c, image: nginx}\n"
                                                              "  - {name: c, image: nginx}"),
     'spec.containers[1].name: Duplicate value: "c"'),
    ("pod-bad-port", POD.format(name="p4", containers="  - name: c\n    image: nginx\n"
                                                       "    ports: [{containerPort: 70000}]"),
     "spec.containers[0].ports[0].containerPort: Invalid value: 70000"),
    ("pod-bad-restart", "apiVersion: v1\nkind: Pod\nmetadata: {name: p5}\nspec:\n"
     "  restartPolicy: Sometimes\n  containers: [{name: c, image: nginx}]\n",
     'spec.restartPolicy: Unsupported value: "Sometimes"'),
    ("pod-unknown-volume", POD.format(name="p6", containers="  - name: c\n    image: nginx\n"
                                                             "    volumeMounts: [{name: nope, "
                                                             "mountPath: /x}]"),
     'spec.containers[0].volumeMounts[0].name: Not found: "nope"'),
    ("pod-bad-cpu", POD.format(name="p7", containers="  - name: c\n    image: nginx\n"
                                                      "    resources: {limits: {cpu: lots}}"),
     "quantities must match the regular expression"),
    ("deploy-selector-mismatch", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d1}\n"
     "spec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n"
     "    spec: {containers: [{name: c, image: nginx}]}\n",
     "selector` does not match template `labels`"),
    ("deploy-no-selector", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d2}\n"
     "spec:\n  template:\n    metadata: {labels: {app: b}}\n"
     "    spec: {containers: [{name: c, image: nginx}]}\n", "spec.selector: Required value"),
    ("deploy-negative-replicas", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d3}\n"
     "spec:\n  replicas: -1\n  selector: {matchLabels: {app: a}}\n  template:\n"
     "    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: nginx}]}\n",
     "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
    ("service-bad-type", "apiVersion: v1\nkind: Service\nmetadata: {name: s1}\nspec:\n"
     "  type: Magic\n  ports: [{port: 80}]\n", 'spec.type: Unsupported value: "Magic"'),
    ("service-bad-nodeport", "apiVersion: v1\nkind: Service\nmetadata: {name: s2}\nspec:\n"
     "  type: NodePort\n  ports: [{port: 80, nodePort: 80}]\n",
     "provided port is not in the valid range"),
    ("service-port-zero", "apiVersion: v1\nkind: Service\nmetadata: {name: s3}\nspec:\n"
     "  ports: [{port: 0}]\n", "spec.ports[0].port: Invalid value: 0"),
    ("job-restart-always", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j1}\nspec:\n"
     "  template:\n    spec:\n      restartPolicy: Always\n"
     "      containers: [{name: c, image: busybox}]\n", "spec.template.spec.restartPolicy"),
    ("cronjob-bad-schedule", "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: cj1}\n"
     "spec:\n  schedule: \"not a schedule\"\n  jobTemplate:\n    spec:\n      template:\n"
     "        spec:\n          restartPolicy: Never\n"
     "          containers: [{name: c, image: busybox}]\n", "spec.schedule: Invalid value"),
    ("ingress-no-pathtype", "apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
     "metadata: {name: i1}\nspec:\n  rules:\n  - http:\n      paths:\n      - path: /\n"
     "        backend: {service: {name: s, port: {number: 80}}}\n", "pathType"),
    ("unknown-kind", "apiVersion: v1\nkind: Gizmo\nmetadata: {name: g}\n",
     'no matches for kind "Gizmo" in version "v1"'),
    ("unknown-version", "apiVersion: apps/v9\nkind: Deployment\nmetadata: {name: g}\n",
     'no matches for kind "Deployment" in version "apps/v9"'),
    ("invalid-yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
     "error"),
    ("wrong-type", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wt\ndata:\n  a: {b: c}\n",
     "data"),
    ("missing-namespace", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mn\n"
     "  namespace: does-not-exist\n", 'namespaces "does-not-exist" not found'),
]


def _revision(k: KubeCluster) -> int:
    import json
    out = k.etcdctl("endpoint", "status", "-w", "json", endpoints=[k.endpoints[0]]).stdout
    return json.loads(out)[0]["Status"]["header"]["revision"]


@pytest.mark.parametrize("case_id,manifest,expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_manifest_is_rejected_without_change(kube: KubeCluster, tmp_path, case_id,
                                                       manifest, expected):
    f = tmp_path / f"{case_id}.yaml"
    f.write_text(manifest)
    before = _revision(kube)
    for verb in (("apply", "-f"), ("create", "-f")):
        p = kube.kubectl(*verb, str(f), check=False)
        assert p.returncode != 0, f"{verb} accepted a bad manifest: {p.stdout}"
        assert any(alt in p.stderr for alt in expected.split("|")), \
            f"{verb}: expected {expected!r} in:\n{p.stderr}"
        assert "Traceback" not in p.stderr and "InternalError" not in p.stderr
    assert _revision(kube) == before, "a rejected manifest changed stored state"
