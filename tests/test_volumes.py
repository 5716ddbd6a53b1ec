"""Pod volumes on the node (nodeagent/volumes.py): every volume type over dicts and a tmp dir."""

from __future__ import annotations

import base64
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from nodeagent.volumes import (
    DATA_DIR,
    FAILED_MOUNT,
    AtomicWriter,
    FileProjection,
    VolumeError,
    VolumeManager,
    resolve_subpath,
)


def b64(s: str | bytes) -> str:
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


class Lookup:
    def __init__(self):
        self.configmaps: dict = {}
        self.secret_objs: dict = {}
        self.pvcs: dict = {}
        self.pvs: dict = {}
        self.accounts: dict = {}

    def configmap(self, ns, name):
        return self.configmaps.get((ns, name))

    def secret(self, ns, name):
        return self.secret_objs.get((ns, name))

    def secrets(self, ns):
        return [s for (n, _), s in self.secret_objs.items() if n == ns]

    def pvc(self, ns, name):
        return self.pvcs.get((ns, name))

    def pv(self, name):
        return self.pvs.get(name)

    def service_account(self, ns, name):
        return self.accounts.get((ns, name))


class CacheOnly:
    """A lookup with only the two required methods."""

    def __init__(self, lk: Lookup):
        self.lk = lk

    def configmap(self, ns, name):
        return self.lk.configmap(ns, name)

    def secret(self, ns, name):
        return self.lk.secret(ns, name)


def make_pod(volumes, uid="uid-1", name="web-0", ns="default", **spec):
    return {"metadata": {"name": name, "namespace": ns, "uid": uid,
                         "labels": {"app": "web", "x": "1"}, "annotations": {"a": "b"}},
            "spec": {"nodeName": "worker-1", "serviceAccountName": "default",
                     "containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}],
                     "volumes": volumes, **spec}}


@pytest.fixture
def lk():
    return Lookup()


@pytest.fixture
def vm(tmp_path, lk):
    return VolumeManager(tmp_path / "root", lk, None,
                         node_info={"cpu": "2", "memory": "4Gi"})


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# -- emptyDir / hostPath -----------------------------------------------------------------------

def test_empty_dir_created_kept_on_resetup_and_removed_on_teardown(vm, tmp_path):
    pod = make_pod([{"name": "cache", "emptyDir": {}},
                    {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}])
    m = vm.setup(pod)
    cache = Path(m["cache"])
    assert cache == tmp_path / "root" / "pods" / "uid-1" / "volumes" / "cache"
    assert cache.is_dir() and mode(cache) == 0o777
    assert Path(m["mem"]).is_dir()
    (cache / "f").write_text("data")
    assert vm.setup(pod) == m                     # idempotent: content kept
    assert (cache / "f").read_text() == "data"
    vm.teardown(pod)
    assert not cache.exists()
    assert not (tmp_path / "root" / "pods" / "uid-1").exists()


def test_host_path_types(vm, tmp_path):
    d = tmp_path / "host"

    def setup(path, typ):
        return vm.setup(make_pod([{"name": "h", "hostPath": {"path": str(path), "type": typ}}]))

    assert setup(d / "new", "DirectoryOrCreate")["h"] == str(d / "new")
    assert (d / "new").is_dir() and mode(d / "new") == 0o755
    setup(d / "new", "Directory")
    with pytest.raises(VolumeError) as ei:
        setup(d / "missing", "Directory")
    assert ei.value.reason == FAILED_MOUNT
    assert ei.value.message == (f'MountVolume.SetUp failed for volume "h" : hostPath type check '
                                f'failed: {d / "missing"} is not a directory')
    setup(d / "file.txt", "FileOrCreate")
    assert (d / "file.txt").is_file()
    setup(d / "file.txt", "File")
    with pytest.raises(VolumeError, match="is not a file"):
        setup(d / "new", "File")
    with pytest.raises(VolumeError, match="is not a directory"):
        setup(d / "file.txt", "DirectoryOrCreate")
    with pytest.raises(VolumeError, match="is not a socket file"):
        setup(d / "file.txt", "Socket")
    sock_path = d / "s.sock"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(sock_path))
        setup(sock_path, "Socket")
    finally:
        s.close()
    setup(d / "whatever", "")                     # no check
    with pytest.raises(VolumeError, match="Bogus is an invalid volume type"):
        setup(d, "Bogus")
    # teardown never touches hostPath data
    pod = make_pod([{"name": "h", "hostPath": {"path": str(d / "new"), "type": ""}}])
    (d / "new" / "keep").write_text("x")
    vm.teardown(pod)
    assert (d / "new" / "keep").exists()


# -- configMap / secret ------------------------------------------------------------------------

def test_configmap_layout_modes_and_binary(vm, lk):
    lk.configmaps[("default", "cfg")] = {
        "data": {"game.properties": "lives=3\n", "ui.properties": "color=red\n"},
        "binaryData": {"logo.bin": b64(b"\x00\x01\xff")}}
    m = vm.setup(make_pod([{"name": "config", "configMap": {"name": "cfg", "defaultMode": 420}}]))
    d = Path(m["config"])
    entries = sorted(os.listdir(d))
    ts = [e for e in entries if e.startswith("..2")]
    assert len(ts) == 1
    assert __import__("re").fullmatch(r"\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+", ts[0])
    assert set(entries) == {"..data", ts[0], "game.properties", "ui.properties", "logo.bin"}
    assert os.readlink(d / DATA_DIR) == ts[0]
    assert os.readlink(d / "game.properties") == "..data/game.properties"
    assert (d / "game.properties").read_text() == "lives=3\n"
    assert (d / "logo.bin").read_bytes() == b"\x00\x01\xff"
    assert mode(d / "game.properties") == 0o644
    assert mode(d / ts[0]) == 0o755


def test_configmap_items_paths_and_modes(vm, lk):
    lk.configmaps[("default", "cfg")] = {"data": {"a": "A", "b": "B", "c": "C"}}
    m = vm.setup(make_pod([{"name": "v", "configMap": {
        "name": "cfg", "defaultMode": 0o400,
        "items": [{"key": "a", "path": "sub/dir/a.txt"},
                  {"key": "b", "path": "b.txt", "mode": 0o755}]}}]))
    d = Path(m["v"])
    assert (d / "sub" / "dir" / "a.txt").read_text() == "A"
    assert os.readlink(d / "sub") == "..data/sub"
    assert mode(d / "sub" / "dir" / "a.txt") == 0o400
    assert mode(d / "b.txt") == 0o755
    assert not (d / "c").exists()


def test_configmap_missing_and_optional(vm, lk):
    with pytest.raises(VolumeError) as ei:
        vm.setup(make_pod([{"name": "config", "configMap": {"name": "my-config"}}]))
    assert ei.value.reason == "FailedMount"
    assert ei.value.message == ('MountVolume.SetUp failed for volume "config" : '
                                'configmap "my-config" not found')
    m = vm.setup(make_pod([{"name": "config", "configMap": {"name": "my-config",
                                                             "optional": True}}]))
    d = Path(m["config"])
    assert (d / DATA_DIR).is_dir()
    assert [e for e in os.listdir(d) if not e.startswith("..")] == []
    # a missing key in items
    lk.configmaps[("default", "cfg")] = {"data": {"a": "1"}}
    with pytest.raises(VolumeError, match="configmap references non-existent config key: zz"):
        vm.setup(make_pod([{"name": "v", "configMap": {"name": "cfg", "items": [
            {"key": "zz", "path": "zz"}]}}], uid="u2"))
    m = vm.setup(make_pod([{"name": "v", "configMap": {"name": "cfg", "optional": True, "items": [
        {"key": "zz", "path": "zz"}, {"key": "a", "path": "a"}]}}], uid="u3"))
    assert sorted(e for e in os.listdir(m["v"]) if not e.startswith("..")) == ["a"]


def test_every_failing_volume_reported(vm):
    pod = make_pod([{"name": "one", "configMap": {"name": "x"}},
                    {"name": "two", "secret": {"secretName": "y"}},
                    {"name": "ok", "emptyDir": {}}])
    with pytest.raises(VolumeError) as ei:
        vm.setup(pod)
    assert [e.message for e in ei.value.errors] == [
        'MountVolume.SetUp failed for volume "one" : configmap "x" not found',
        'MountVolume.SetUp failed for volume "two" : secret "y" not found']
    assert (vm.volume_dir(pod, "ok")).is_dir()


def test_secret_volume(vm, lk):
    lk.secret_objs[("default", "creds")] = {
        "type": "Opaque", "data": {"username": b64("admin"), "password": b64("s3cr3t\n"),
                                   "raw": b64(b"\xde\xad")}}
    m = vm.setup(make_pod([{"name": "s", "secret": {"secretName": "creds", "defaultMode": 0o440,
                                                     "items": [{"key": "username",
                                                                "path": "u"},
                                                               {"key": "raw", "path": "r",
                                                                "mode": 0o600}]}},
                           {"name": "all", "secret": {"secretName": "creds"}}]))
    d = Path(m["s"])
    assert (d / "u").read_text() == "admin" and mode(d / "u") == 0o440
    assert (d / "r").read_bytes() == b"\xde\xad" and mode(d / "r") == 0o600
    a = Path(m["all"])
    assert (a / "password").read_text() == "s3cr3t\n"
    assert mode(a / "password") == 0o644
    with pytest.raises(VolumeError, match="secret references non-existent secret key: nope"):
        vm.setup(make_pod([{"name": "s", "secret": {"secretName": "creds", "items": [
            {"key": "nope", "path": "n"}]}}], uid="u9"))
    m = vm.setup(make_pod([{"name": "s", "secret": {"secretName": "gone", "optional": True}}],
                          uid="u10"))
    assert (Path(m["s"]) / DATA_DIR).is_dir()


def test_refresh_rewrites_only_on_change_and_atomically(vm, lk):
    lk.configmaps[("default", "cfg")] = {"data": {"a": "1", "b": "2"}}
    pod = make_pod([{"name": "v", "configMap": {"name": "cfg"}}])
    d = Path(vm.setup(pod)["v"])
    first = os.readlink(d / DATA_DIR)
    vm.refresh(pod)
    assert os.readlink(d / DATA_DIR) == first       # unchanged: not rewritten
    lk.configmaps[("default", "cfg")] = {"data": {"a": "10", "c": "3"}}
    vm.refresh(pod)
    second = os.readlink(d / DATA_DIR)
    assert second != first
    assert not (d / first).exists()                  # old generation removed
    assert (d / "a").read_text() == "10" and (d / "c").read_text() == "3"
    assert not (d / "b").exists() and not (d / "b").is_symlink()
    # a non-optional source that disappears keeps the last content, and says so
    del lk.configmaps[("default", "cfg")]
    with pytest.raises(VolumeError, match='configmap "cfg" not found'):
        vm.refresh(pod)
    assert (d / "a").read_text() == "10"
    # an optional source that disappears empties the volume
    pod2 = make_pod([{"name": "v", "configMap": {"name": "opt", "optional": True}}], uid="u2")
    lk.configmaps[("default", "opt")] = {"data": {"k": "v"}}
    d2 = Path(vm.setup(pod2)["v"])
    assert (d2 / "k").read_text() == "v"
    del lk.configmaps[("default", "opt")]
    vm.refresh(pod2)
    assert not (d2 / "k").exists()
    lk.configmaps[("default", "opt")] = {"data": {"k": "back"}}
    vm.refresh(pod2)
    assert (d2 / "k").read_text() == "back"


def test_mode_change_alone_rewrites(tmp_path):
    w = AtomicWriter(tmp_path / "v")
    assert w.write({"a": FileProjection(b"x", 0o644)})
    assert not w.write({"a": FileProjection(b"x", 0o644)})
    assert w.write({"a": FileProjection(b"x", 0o600)})
    assert mode(tmp_path / "v" / "a") == 0o600


def test_atomic_writer_rejects_bad_paths(tmp_path):
    w = AtomicWriter(tmp_path / "v")
    for bad in ("/abs", "../up", "a/../../b", "..hidden"):
        with pytest.raises(Exception, match="invalid path"):
            w.write({bad: FileProjection(b"x")})


def test_reader_never_sees_half_written_volume(tmp_path):
    """Two files written together always come from the same generation when read through
    ..data, and a key present in every generation never disappears."""
    target = tmp_path / "v"
    w = AtomicWriter(target)
    big = 32 * 1024

    def payload(i: int) -> dict:
        return {"a": FileProjection(str(i).encode() * (big // len(str(i)))),
                "b": FileProjection(str(i).encode())}

    w.write(payload(0))
    stop = threading.Event()
    problems: list[str] = []

    def read_keys() -> tuple[bytes, bytes]:
        return (target / "a").read_bytes(), (target / "b").read_bytes()

    def reader():
        while not stop.is_set():
            try:
                gen = os.readlink(target / DATA_DIR)
                a = (target / gen / "a").read_bytes()
                b = (target / gen / "b").read_bytes()
                if not b or a != b * (big // len(b)):
                    problems.append(f"torn generation {gen}")
            except FileNotFoundError:
                pass  # that generation was replaced and removed after readlink: fine
            try:
                via_a, via_b = read_keys()
            except FileNotFoundError:
                # a path walk that resolved ..data just before the switch can meet the old
                # generation being removed (the kubelet's writer has the same window); read
                # again: a key present in every generation must be there
                try:
                    via_a, via_b = read_keys()
                except OSError as e:
                    problems.append(f"missing {e.filename}")
                    continue
            if not via_b.isdigit() or len(via_a) < big - 2 or not via_a.isdigit():
                problems.append(f"partial content via key symlink ({len(via_a)} bytes)")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 100):
            w.write(payload(i))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert problems == []
    assert (target / "b").read_text() == "99"
    assert len([e for e in os.listdir(target) if e.startswith("..2")]) == 1


# -- downwardAPI / projected -------------------------------------------------------------------

def test_downward_api_volume(vm):
    pod = make_pod([{"name": "podinfo", "downwardAPI": {"defaultMode": 420, "items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}, "mode": 0o600},
        {"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}},
        {"path": "mem_limit", "resourceFieldRef": {"containerName": "c",
                                                   "resource": "limits.memory",
                                                   "divisor": "1Mi"}},
        {"path": "cpu_limit", "resourceFieldRef": {"containerName": "c",
                                                   "resource": "limits.cpu",
                                                   "divisor": "1m"}}]}}])
    d = Path(vm.setup(pod)["podinfo"])
    assert (d / "labels").read_text() == 'app="web"\nx="1"'
    assert (d / "annotations").read_text() == 'a="b"'
    assert (d / "name").read_text() == "web-0" and mode(d / "name") == 0o600
    assert (d / "app").read_text() == "web"
    assert (d / "mem_limit").read_text() == "64"
    assert (d / "cpu_limit").read_text() == "2000"          # node allocatable
    first = os.readlink(d / DATA_DIR)
    vm.refresh(pod)
    assert os.readlink(d / DATA_DIR) == first
    pod["metadata"]["labels"]["x"] = "2"
    vm.refresh(pod)
    assert (d / "labels").read_text() == 'app="web"\nx="2"'


def sa_volume(name="kube-api-access-abcde"):
    return {"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt",
                                                              "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1",
                                                 "fieldPath": "metadata.namespace"}}]}}]}}


def test_projected_service_account_volume_with_token_secret(vm, lk):
    lk.configmaps[("default", "kube-root-ca.crt")] = {"data": {"ca.crt": "-----CERT-----\n"}}
    lk.secret_objs[("default", "default-token")] = {
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "default-token",
                     "annotations": {"kubernetes.io/service-account.name": "default"}},
        "data": {"token": b64("eyJhbGciOi.token")}}
    m = vm.setup(make_pod([sa_volume()]))
    d = Path(m["kube-api-access-abcde"])
    assert (d / "token").read_text() == "eyJhbGciOi.token"
    assert (d / "ca.crt").read_text() == "-----CERT-----\n"
    assert (d / "namespace").read_text() == "default"
    assert m.warnings == []
    assert all(mode(d / f) == 0o644 for f in ("token", "ca.crt", "namespace"))


def test_projected_token_source_and_missing_token(tmp_path, lk):
    ca = tmp_path / "ca.crt"
    ca.write_text("CLUSTER CA\n")
    calls = []

    def token_source(ns, sa, audience, exp, pod):
        calls.append((ns, sa, audience, exp))
        return "tok-from-api"

    vm = VolumeManager(tmp_path / "r1", lk, None, ca_file=ca, token_source=token_source)
    d = Path(vm.setup(make_pod([sa_volume()]))["kube-api-access-abcde"])
    assert (d / "token").read_text() == "tok-from-api"
    assert calls == [("default", "default", "", 3607)]
    assert (d / "ca.crt").read_text() == "CLUSTER CA\n"      # CA file fallback
    # no TokenRequest and no token Secret: the token file is left out, and reported
    vm = VolumeManager(tmp_path / "r2", lk, None, ca_file=ca)
    m = vm.setup(make_pod([sa_volume()]))
    d = Path(m["kube-api-access-abcde"])
    assert not (d / "token").exists()
    assert (d / "namespace").read_text() == "default"
    assert m.warnings and "token" in m.warnings[0][1]
    # without the CA ConfigMap nor a CA file, the mount fails as the kubelet's does
    vm = VolumeManager(tmp_path / "r3", lk, None)
    with pytest.raises(VolumeError, match='configmap "kube-root-ca.crt" not found'):
        vm.setup(make_pod([sa_volume()]))


def test_projected_mixed_sources_and_errors(vm, lk):
    lk.configmaps[("default", "cfg")] = {"data": {"a": "A"}}
    lk.secret_objs[("default", "sec")] = {"data": {"s": b64("S")}}
    vol = {"name": "all", "projected": {"defaultMode": 0o440, "sources": [
        {"configMap": {"name": "cfg", "items": [{"key": "a", "path": "cfg/a", "mode": 0o600}]}},
        {"secret": {"name": "sec"}},
        {"secret": {"name": "absent", "optional": True}}]}}
    d = Path(vm.setup(make_pod([vol]))["all"])
    assert (d / "cfg" / "a").read_text() == "A" and mode(d / "cfg" / "a") == 0o600
    assert (d / "s").read_text() == "S" and mode(d / "s") == 0o440
    bad = {"name": "bad", "projected": {"sources": [{"secret": {"name": "x"}},
                                                    {"configMap": {"name": "y"}}]}}
    with pytest.raises(VolumeError) as ei:
        vm.setup(make_pod([bad], uid="u5"))
    assert ei.value.message == ('MountVolume.SetUp failed for volume "bad" : '
                                '[secret "x" not found, configmap "y" not found]')


# -- persistentVolumeClaim ---------------------------------------------------------------------

def bound_claim(lk, name, pv, ns="default"):
    lk.pvcs[(ns, name)] = {"metadata": {"name": name, "namespace": ns},
                           "spec": {"volumeName": pv}, "status": {"phase": "Bound"}}
    lk.pvs[pv] = {"metadata": {"name": pv, "annotations": {
        "pv.kubernetes.io/provisioned-by": "kubelab.io/local-path"}},
        "spec": {"hostPath": {"path": f"/var/lib/kubelab/volumes/{pv}"}}}


def test_pvc_survives_teardown_and_is_reused_by_replacement(vm, lk, tmp_path):
    bound_claim(lk, "data-web-0", "pvc-1234")
    vol = [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
           {"name": "scratch", "emptyDir": {}}]
    old = make_pod(vol, uid="old")
    m = vm.setup(old)
    data = Path(m["data"])
    assert data == tmp_path / "root" / "pvs" / "pvc-1234"
    (data / "db.txt").write_text("persisted")
    vm.teardown(old)
    assert (data / "db.txt").read_text() == "persisted"
    assert not Path(m["scratch"]).exists()
    new = make_pod(vol, uid="new")                   # the StatefulSet's replacement pod
    m2 = vm.setup(new)
    assert Path(m2["data"]) == data
    assert (Path(m2["data"]) / "db.txt").read_text() == "persisted"


def test_pvc_errors_and_fallback_paths(tmp_path, lk):
    vm = VolumeManager(tmp_path / "root", lk)
    with pytest.raises(VolumeError) as ei:
        vm.setup(make_pod([{"name": "d", "persistentVolumeClaim": {"claimName": "nope"}}]))
    assert ei.value.message == ("error processing PVC default/nope: failed to fetch PVC from API "
                                'server: persistentvolumeclaims "nope" not found')
    lk.pvcs[("default", "pending")] = {"metadata": {"name": "pending"}, "spec": {},
                                       "status": {"phase": "Pending"}}
    with pytest.raises(VolumeError, match="error processing PVC default/pending: PVC is not bound"):
        vm.setup(make_pod([{"name": "d", "persistentVolumeClaim": {"claimName": "pending"}}]))
    # a user hostPath PersistentVolume is used at its path
    host = tmp_path / "mnt-data"
    lk.pvcs[("default", "task-pv-claim")] = {"metadata": {"name": "task-pv-claim"},
                                             "spec": {"volumeName": "task-pv-volume"},
                                             "status": {"phase": "Bound"}}
    lk.pvs["task-pv-volume"] = {"metadata": {"name": "task-pv-volume"},
                                "spec": {"hostPath": {"path": str(host)}}}
    m = vm.setup(make_pod([{"name": "d", "persistentVolumeClaim": {
        "claimName": "task-pv-claim"}}]))
    assert m["d"] == str(host) and host.is_dir()
    # a lookup that knows nothing about claims: <root>/pvs/<ns>/<claim>
    vm2 = VolumeManager(tmp_path / "root2", CacheOnly(lk))
    m = vm2.setup(make_pod([{"name": "d", "persistentVolumeClaim": {"claimName": "c1"}}],
                           ns="prod"))
    assert m["d"] == str(tmp_path / "root2" / "pvs" / "prod" / "c1")


def test_unsupported_volume_type(vm):
    with pytest.raises(VolumeError, match="volume type nfs is not supported"):
        vm.setup(make_pod([{"name": "n", "nfs": {"server": "x", "path": "/"}}]))


def test_subpath(vm, tmp_path):
    pod = make_pod([{"name": "e", "emptyDir": {}}])
    d = Path(vm.setup(pod)["e"])
    p = resolve_subpath(d, "html")
    assert p.is_dir() and p.parent == d
    with pytest.raises(VolumeError):
        resolve_subpath(d, "../escape")
    os.symlink("/etc", d / "evil")
    with pytest.raises(VolumeError, match="not within volume path"):
        resolve_subpath(d, "evil")


def test_orphaned_pod_uids(vm):
    vm.setup(make_pod([{"name": "e", "emptyDir": {}}], uid="a"))
    vm.setup(make_pod([{"name": "e", "emptyDir": {}}], uid="b"))
    assert vm.orphaned_pod_uids({"a"}) == ["b"]
    vm.teardown("b")
    assert vm.orphaned_pod_uids({"a"}) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="fsGroup ownership needs root")
def test_fs_group_ownership(vm, lk):
    lk.configmaps[("default", "cfg")] = {"data": {"a": "A"}}
    lk.secret_objs[("default", "tok")] = {
        "type": "kubernetes.io/service-account-token",
        "metadata": {"annotations": {"kubernetes.io/service-account.name": "default"}},
        "data": {"token": b64("T")}}
    lk.configmaps[("default", "kube-root-ca.crt")] = {"data": {"ca.crt": "C"}}
    pod = make_pod([{"name": "e", "emptyDir": {}},
                    {"name": "c", "configMap": {"name": "cfg", "defaultMode": 0o600}},
                    sa_volume()], securityContext={"fsGroup": 2000})
    m = vm.setup(pod)
    e = Path(m["e"])
    assert os.stat(e).st_gid == 2000 and os.stat(e).st_mode & stat.S_ISGID
    c = Path(m["c"]) / "a"
    assert os.stat(c).st_gid == 2000 and mode(c) == 0o640
    tok = Path(m["kube-api-access-abcde"]) / "token"
    assert mode(tok) == 0o640 and os.stat(tok).st_gid == 2000
    first = os.readlink(Path(m["c"]) / DATA_DIR)
    vm.refresh(pod)
    assert os.readlink(Path(m["c"]) / DATA_DIR) == first     # masks do not cause rewrites


def test_container_mounts(vm, lk):
    from nodeagent.envvars import EnvError
    from nodeagent.volumes import container_mounts
    lk.configmaps[("default", "cfg")] = {"data": {"nginx.conf": "x"}}
    pod = make_pod([{"name": "html", "emptyDir": {}},
                    {"name": "conf", "configMap": {"name": "cfg"}}])
    m = vm.setup(pod)
    c = {"name": "web", "volumeMounts": [
        {"name": "html", "mountPath": "/usr/share/nginx/html"},
        {"name": "html", "mountPath": "/logs", "subPathExpr": "logs/$(POD_NAME)"},
        {"name": "conf", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf"},
        {"name": "html", "mountPath": "/ro", "readOnly": True}]}
    ms = container_mounts(pod, c, m, {"POD_NAME": "web-0"})
    assert [(x.container_path, x.read_only) for x in ms] == [
        ("/usr/share/nginx/html", False), ("/logs", False), ("/etc/nginx/nginx.conf", True),
        ("/ro", True)]
    assert ms[1].host_path == str(Path(m["html"]) / "logs" / "web-0")
    assert Path(ms[1].host_path).is_dir()
    assert Path(ms[2].host_path).read_text() == "x"
    with pytest.raises(EnvError, match='cannot find volume "nope" to mount into container "web"'):
        container_mounts(pod, {"name": "web", "volumeMounts": [{"name": "nope",
                                                                 "mountPath": "/x"}]}, m)
    with pytest.raises(EnvError, match="must not be an absolute path"):
        container_mounts(pod, {"name": "web", "volumeMounts": [
            {"name": "html", "mountPath": "/x", "subPath": "/etc"}]}, m)
    with pytest.raises(EnvError, match="missing value for POD_NAME"):
        container_mounts(pod, {"name": "web", "volumeMounts": [
            {"name": "html", "mountPath": "/x", "subPathExpr": "$(POD_NAME)"}]}, m, {})


# -- against real API objects ------------------------------------------------------------------

def test_real_objects_through_informers(kube, tmp_path):
    """ConfigMaps, Secrets and Services made by the real kubectl, read through informers:
    env and volumes see what a pod would; a ConfigMap update reaches the files on refresh."""
    import asyncio

    from kubelab.client import Informer
    from nodeagent.envvars import CacheLookup, container_env

    ns = "vol-it"
    logo = tmp_path / "logo.bin"
    logo.write_bytes(b"\x89PNG\x00\xff")
    kube.kubectl("create", "namespace", ns)
    kube.kubectl("-n", ns, "create", "configmap", "game", "--from-literal=lives=3",
                 f"--from-file=logo.bin={logo}")
    kube.kubectl("-n", ns, "create", "secret", "generic", "creds",
                 "--from-literal=password=s3cr3t")
    kube.kubectl("-n", ns, "apply", "-f", "-", input=(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: plain}\n"
        "stringData: {user: admin}\n"))
    kube.kubectl("-n", ns, "create", "service", "clusterip", "redis-master",
                 "--tcp=6379:6379")
    svc_ip = kube.kubectl("-n", ns, "get", "svc", "redis-master",
                          "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
    pod = make_pod([{"name": "cfg", "configMap": {"name": "game", "defaultMode": 420}},
                    {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                    {"name": "plain", "secret": {"secretName": "plain"}}], ns=ns)
    container = {"name": "c", "env": [
        {"name": "LIVES", "valueFrom": {"configMapKeyRef": {"name": "game", "key": "lives"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "URL",
         "value": "redis://$(REDIS_MASTER_SERVICE_HOST):$(REDIS_MASTER_SERVICE_PORT)"},
    ], "envFrom": [{"secretRef": {"name": "plain"}, "prefix": "P_"}]}

    async def scenario():
        async with kube.client() as c:
            infs = [Informer(c, k) for k in ("ConfigMap", "Secret", "Service")]
            for i in infs:
                i.start()
            try:
                for i in infs:
                    await asyncio.wait_for(i.synced.wait(), 10)
                lookup = CacheLookup(infs[0], infs[1])
                env = container_env(pod, container, lookup, infs[2].list(), None)
                vm = VolumeManager(tmp_path / "root", lookup)
                m = vm.setup(pod)
                cfg = Path(m["cfg"])
                first = ((cfg / "lives").read_text(), (cfg / "logo.bin").read_bytes(),
                         (Path(m["sec"]) / "password").read_text(),
                         mode(Path(m["sec"]) / "password"),
                         (Path(m["plain"]) / "user").read_text())
                await asyncio.to_thread(kube.kubectl, "-n", ns, "patch", "configmap", "game",
                                        "-p", '{"data":{"lives":"5"}}')
                deadline = asyncio.get_running_loop().time() + 10
                while (infs[0].get(ns, "game") or {}).get("data", {}).get("lives") != "5":
                    assert asyncio.get_running_loop().time() < deadline, "informer never saw it"
                    await asyncio.sleep(0.05)
                vm.refresh(pod)
                return env, first, (cfg / "lives").read_text()
            finally:
                for i in infs:
                    await i.stop()

    env, first, after = asyncio.run(scenario())
    assert env["LIVES"] == "3" and env["PASSWORD"] == "s3cr3t" and env["P_user"] == "admin"
    assert env["REDIS_MASTER_SERVICE_PORT"] == "6379"
    assert env["URL"] == f"redis://{env['REDIS_MASTER_SERVICE_HOST']}:6379"
    assert svc_ip and env["REDIS_MASTER_SERVICE_HOST"] == svc_ip
    assert first == ("3", b"\x89PNG\x00\xff", "s3cr3t", 0o400, "admin")
    assert after == "5"
