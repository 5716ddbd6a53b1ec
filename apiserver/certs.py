"""A cluster CA and the API server's serving certificate, made at first start."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _write(path: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@contextlib.contextmanager
def cert_dir_lock(cert_dir: str):
    """Serialises key and certificate creation between API servers sharing a cert dir."""
    os.makedirs(cert_dir, exist_ok=True)
    with open(os.path.join(cert_dir, ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_ca(cert_dir: str) -> tuple[str, str]:
    crt, key = os.path.join(cert_dir, "ca.crt"), os.path.join(cert_dir, "ca.key")
    if os.path.exists(crt) and os.path.exists(key):
        return crt, key
    os.makedirs(cert_dir, exist_ok=True)
    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubelab-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(k.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(k, hashes.SHA256()))
    _write(key, _key_pem(k), 0o600)
    _write(crt, cert.public_bytes(serialization.Encoding.PEM))
    return crt, key


def ensure_serving_cert(cert_dir: str, hosts: list[str]) -> tuple[str, str, str]:
    """Returns (ca.crt, apiserver.crt, apiserver.key); reissued when the host list changes."""
    ca_crt, ca_key = ensure_ca(cert_dir)
    crt, key = os.path.join(cert_dir, "apiserver.crt"), os.path.join(cert_dir, "apiserver.key")
    hosts_file = os.path.join(cert_dir, "apiserver.hosts")
    want = ",".join(sorted(set(hosts)))
    if os.path.exists(crt) and os.path.exists(key) and os.path.exists(hosts_file) and \
            open(hosts_file).read() == want:
        return ca_crt, crt, key
    ca_cert = x509.load_pem_x509_certificate(open(ca_crt, "rb").read())
    ca_k = serialization.load_pem_private_key(open(ca_key, "rb").read(), None)
    k = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for h in sorted(set(hosts)):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_cert.subject).public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_k, hashes.SHA256()))
    _write(key, _key_pem(k), 0o600)
    _write(crt, cert.public_bytes(serialization.Encoding.PEM))
    _write(hosts_file, want.encode())
    return ca_crt, crt, key
