"""Service account tokens: the TokenRequest API (POST serviceaccounts/<name>/token) issues
JWTs signed with the cluster's service-account key (RS256, like kube-apiserver's
--service-account-signing-key-file), and the authenticator accepts them as
system:serviceaccount:<namespace>:<name>. Tokens bound to a pod stop working when that pod is
gone (checked by uid), as bound tokens do."""

from __future__ import annotations

import base64
import datetime
import json
import os
import time
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import errors
from .auth import UserInfo

ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_AUDIENCES = [ISSUER]
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def ensure_signing_key(cert_dir: str):
    path = os.path.join(cert_dir, "sa.key")
    if not os.path.exists(path):
        os.makedirs(cert_dir, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(path + ".tmp", path)
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


class ServiceAccountTokens:
    def __init__(self, cert_dir: str):
        self.key = ensure_signing_key(cert_dir)
        pub = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        import hashlib
        self.kid = _b64(hashlib.sha256(pub).digest())

    # ------------------------------------------------------------------ issuing
    def sign(self, claims: dict) -> str:
        header = {"alg": "RS256", "kid": self.kid}
        signing_input = f"{_b64(json.dumps(header, separators=(',', ':')).encode())}." \
                        f"{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(sig)}"

    def issue(self, sa: dict, request: dict, pod: dict | None = None,
              now: float | None = None) -> dict:
        """The TokenRequest answer for ServiceAccount `sa`."""
        spec = request.get("spec") or {}
        exp = int(spec.get("expirationSeconds") or DEFAULT_EXPIRATION)
        if exp < MIN_EXPIRATION:
            raise errors.invalid("TokenRequest", sa["metadata"]["name"], [
                errors.Cause("spec.expirationSeconds",
                             f"Invalid value: {exp}: may not specify a duration less than "
                             "10 minutes")], group="authentication.k8s.io")
        auds = spec.get("audiences") or DEFAULT_AUDIENCES
        t = int(now if now is not None else time.time())
        md = sa["metadata"]
        private = {"namespace": md["namespace"],
                   "serviceaccount": {"name": md["name"], "uid": md.get("uid", "")}}
        if pod is not None:
            private["pod"] = {"name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}
        claims = {"aud": auds, "exp": t + exp, "iat": t, "iss": ISSUER,
                  "jti": str(uuid.uuid4()), "kubernetes.io": private, "nbf": t,
                  "sub": f"system:serviceaccount:{md['namespace']}:{md['name']}"}
        out = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "metadata": {"name": md["name"], "namespace": md["namespace"],
                            "creationTimestamp": None},
               "spec": {"audiences": auds, "expirationSeconds": exp,
                        "boundObjectRef": spec.get("boundObjectRef")},
               "status": {"token": self.sign(claims),
                          "expirationTimestamp": datetime.datetime.fromtimestamp(
                              t + exp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}}
        if out["spec"]["boundObjectRef"] is None:
            del out["spec"]["boundObjectRef"]
        return out

    # ------------------------------------------------------------------ verifying
    def verify(self, token: str, now: float | None = None) -> dict | None:
        """The claims of a token this cluster signed and that is still valid, else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(_unb64(parts[0]))
            if header.get("alg") != "RS256":
                return None
            self.key.public_key().verify(_unb64(parts[2]), f"{parts[0]}.{parts[1]}".encode(),
                                         padding.PKCS1v15(), hashes.SHA256())
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, InvalidSignature):
            return None
        t = now if now is not None else time.time()
        if claims.get("iss") != ISSUER or not (claims.get("nbf", 0) - 60 <= t < claims.get("exp",
                                                                                          0)):
            return None
        return claims


def user_of(claims: dict) -> UserInfo:
    k = claims.get("kubernetes.io") or {}
    ns = k.get("namespace", "")
    name = (k.get("serviceaccount") or {}).get("name", "")
    return UserInfo(f"system:serviceaccount:{ns}:{name}",
                    (k.get("serviceaccount") or {}).get("uid", ""),
                    ("system:serviceaccounts", f"system:serviceaccounts:{ns}",
                     "system:authenticated"))


class ChainAuthenticator:
    """Static tokens first, then service-account JWTs (one authenticator step in the request
    path; what it returns is the request's identity)."""

    def __init__(self, static, tokens: ServiceAccountTokens, storage=None, kinds=None):
        self.static = static
        self.tokens = tokens
        self.storage = storage
        self.pod_kind = kinds.by_kind("", "v1", "Pod") if kinds is not None else None

    def _bound_object_alive(self, claims: dict) -> bool:
        """A token bound to a pod is valid only while that pod (same uid) exists."""
        pod = (claims.get("kubernetes.io") or {}).get("pod")
        if not pod or self.storage is None:
            return True
        ns = claims["kubernetes.io"].get("namespace")
        cur = self.storage.cached(self.pod_kind, ns, pod.get("name", ""))
        return cur is not None and cur["metadata"].get("uid") == pod.get("uid")

    def authenticate(self, authorization: str | None) -> UserInfo:
        try:
            return self.static.authenticate(authorization)
        except errors.StatusError:
            if not authorization or not authorization.lower().startswith("bearer "):
                raise
            claims = self.tokens.verify(authorization[7:].strip())
            if claims is None or not self._bound_object_alive(claims):
                raise
            return user_of(claims)


async def create_token(storage, kinds, tokens: ServiceAccountTokens, namespace: str, name: str,
                       body: dict) -> dict:
    """POST serviceaccounts/<name>/token, shared by the REST and gRPC front ends."""
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request is not a valid TokenRequest")
    sa = await storage.get(kinds.by_kind("", "v1", "ServiceAccount"), namespace, name)
    ref = (body.get("spec") or {}).get("boundObjectRef") or None
    pod = None
    if ref:
        if ref.get("kind") not in ("Pod", "Secret"):
            raise errors.invalid("TokenRequest", name, [errors.Cause(
                "spec.boundObjectRef.kind", f'Unsupported value: "{ref.get("kind")}": '
                'supported values: "Pod", "Secret"', "FieldValueNotSupported")],
                group="authentication.k8s.io")
        if ref["kind"] == "Pod":
            pod = await storage.get(kinds.by_kind("", "v1", "Pod"), namespace,
                                    ref.get("name", ""))
            if ref.get("uid") and ref["uid"] != pod["metadata"]["uid"]:
                raise errors.bad_request(
                    f'the UID in the bound object reference ({ref["uid"]}) does not match the '
                    'UID in record. The object might have been deleted and then recreated')
    return tokens.issue(sa, body, pod)


# ---------------------------------------------------------------------------- admission
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_EXPIRATION = 3607  # what the ServiceAccount admission plugin asks for


def api_access_volume(name: str) -> dict:
    """The projected volume the ServiceAccount admission plugin adds to pods."""
    return {"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt",
                                                               "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}


def service_account_admission(storage, kinds):
    """Mutating admission for pods, as kube-apiserver's ServiceAccount plugin: unless
    automountServiceAccountToken is false on the pod or its ServiceAccount, mount the
    kube-api-access-xxxxx volume at /var/run/secrets/kubernetes.io/serviceaccount in every
    container. (Unlike Kubernetes, a pod whose ServiceAccount does not exist yet is admitted:
    the ServiceAccount controller creates `default` moments after a namespace.)"""
    import secrets
    sa_kind = kinds.by_kind("", "v1", "ServiceAccount")
    alphabet = "bcdfghjklmnpqrstvwxz2456789"

    async def admit(op: str, kind, obj: dict, old: dict | None) -> None:
        if op != "create" or kind.kind != "Pod":
            return
        spec = obj.get("spec")
        if not isinstance(spec, dict) or spec.get("automountServiceAccountToken") is False:
            return
        sa = storage.cached(sa_kind, obj["metadata"].get("namespace"),
                            spec.get("serviceAccountName") or "default")
        if sa is not None and sa.get("automountServiceAccountToken") is False and \
                spec.get("automountServiceAccountToken") is not True:
            return
        containers = [c for f in ("initContainers", "containers")
                      for c in spec.get(f) or [] if isinstance(c, dict)]
        if any(m.get("mountPath") == TOKEN_MOUNT_PATH
               for c in containers for m in c.get("volumeMounts") or [] if isinstance(m, dict)):
            return
        name = "kube-api-access-" + "".join(secrets.choice(alphabet) for _ in range(5))
        spec.setdefault("volumes", []).append(api_access_volume(name))
        for c in containers:
            c.setdefault("volumeMounts", []).append(
                {"name": name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH})

    return admit
