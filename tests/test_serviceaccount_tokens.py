"""Service account tokens: `kubectl create token` (TokenRequest), the token authenticates as the
service account, bound tokens die with their pod, and pods get the kube-api-access volume."""

from __future__ import annotations

import base64
import json
import subprocess

from apiserver.serviceaccounts import ServiceAccountTokens
from tests.conftest import wait_for


def claims_of(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_tokens_sign_and_verify(tmp_path):
    t = ServiceAccountTokens(str(tmp_path))
    sa = {"metadata": {"name": "robot", "namespace": "ns1", "uid": "u1"}}
    out = t.issue(sa, {"spec": {"expirationSeconds": 3600}}, now=1000)
    tok = out["status"]["token"]
    assert t.verify(tok, now=1500)["sub"] == "system:serviceaccount:ns1:robot"
    assert t.verify(tok, now=1000 + 3600) is None           # expired
    assert t.verify(tok[:-4] + "AAAA", now=1500) is None     # bad signature
    other = ServiceAccountTokens(str(tmp_path / "other"))
    assert other.verify(tok, now=1500) is None              # another cluster's key


def test_create_token_and_whoami(control_plane):
    cp = control_plane
    wait_for(lambda: cp.kubectl("get", "sa", "default", check=False).returncode == 0, 20, 0.2,
             "the default ServiceAccount")
    tok = cp.kubectl("create", "token", "default", "--duration", "20m").stdout.strip()
    c = claims_of(tok)
    assert c["sub"] == "system:serviceaccount:default:default"
    assert c["exp"] - c["iat"] == 1200
    out = subprocess.run(["kubectl", "--kubeconfig", cp.kubeconfig, "--token", tok, "auth",
                          "whoami", "-o", "json"], text=True, capture_output=True)
    assert json.loads(out.stdout)["status"]["userInfo"]["username"] == \
        "system:serviceaccount:default:default"
    short = cp.kubectl("create", "token", "default", "--duration", "1m", check=False)
    assert short.returncode != 0 and "may not specify a duration less than 10 minutes" in \
        short.stderr
    missing = cp.kubectl("create", "token", "nobody", check=False)
    assert 'serviceaccounts "nobody" not found' in missing.stderr


def test_pods_get_the_api_access_volume(control_plane):
    cp = control_plane
    cp.kubectl("run", "sa-pod", "--image=registry.k8s.io/pause", "--restart=Never")
    pod = cp.get_json("pod", "sa-pod")
    vols = [v for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
    assert len(vols) == 1
    srcs = vols[0]["projected"]["sources"]
    assert srcs[0]["serviceAccountToken"]["path"] == "token"
    assert srcs[1]["configMap"]["name"] == "kube-root-ca.crt"
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert {"name": vols[0]["name"], "readOnly": True,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"} in mounts
    cp.kubectl("run", "no-sa-pod", "--image=registry.k8s.io/pause", "--restart=Never",
               "--overrides", json.dumps({"spec": {"automountServiceAccountToken": False}}))
    pod = cp.get_json("pod", "no-sa-pod")
    assert not pod["spec"].get("volumes")
    # a token bound to the pod works while the pod exists, and not after
    bound = cp.kubectl("create", "token", "default", "--bound-object-kind", "Pod",
                       "--bound-object-name", "sa-pod").stdout.strip()
    assert claims_of(bound)["kubernetes.io"]["pod"]["name"] == "sa-pod"

    def whoami(token: str) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", "--kubeconfig", cp.kubeconfig, "--token", token,
                               "auth", "whoami"], text=True, capture_output=True)
    assert whoami(bound).returncode == 0
    cp.kubectl("delete", "pod", "sa-pod", "--grace-period=0", "--force")
    wait_for(lambda: whoami(bound).returncode != 0, 20, 0.2, "the bound token to stop working")
    assert "Unauthorized" in whoami(bound).stderr
    cp.kubectl("delete", "pod", "no-sa-pod", "--wait=false")
