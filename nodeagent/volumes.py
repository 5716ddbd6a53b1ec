"""Pod volumes on the node: the kubelet's volume plugins, materialized as directories.

Layout (``root`` is the node agent's ``--root-dir``):

- ``<root>/pods/<pod uid>/volumes/<volume name>``: emptyDir, configMap, secret, downwardAPI and
  projected volumes; removed by :meth:`VolumeManager.teardown`.
- ``<root>/pvs/<pv name>`` for a persistentVolumeClaim bound to a volume (``<root>/pvs/<ns>/<claim>``
  while the claim is unknown or not bound): node-local data that survives the pod and is reused
  by the replacement pod (a StatefulSet's pod gets its claim back). A PersistentVolume with a
  ``hostPath`` that the kubelab local provisioner did not make is used at its path, as the real
  kubelet does.
- hostPath volumes are the host's path itself (type checks as the hostPath plugin).

configMap, secret, downwardAPI and projected volumes are written with the kubelet's atomic
writer layout: the files live in a timestamped directory ``..2026_11_23_05_00_00.123456789``,
``..data`` is a symlink to it that is replaced atomically (``rename``) on every change, and each
top-level key is a symlink ``key -> ..data/key``. A reader going through ``key`` sees either the
old or the new content, never a half-written directory. :meth:`VolumeManager.refresh` rewrites a
volume only when its content (or modes) changed.

Limitations (documented): emptyDir ``medium: Memory`` is a plain directory and ``sizeLimit`` is
not enforced; the service account token comes from a ``kubernetes.io/service-account-token``
Secret of the pod's ServiceAccount (the API server has no TokenRequest yet) or from
``token_source`` when given; without either the ``token`` file is left out (reported in
:attr:`Mounts.warnings`), never faked.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .envvars import (
    EnvError,
    FieldPathError,
    configmap_binary,
    expand_subpath_expr,
    extract_field_path,
    node_info_of,
    resource_value_by_container,
    secret_bytes,
)

log = logging.getLogger(__name__)

FAILED_MOUNT = "FailedMount"
DEFAULT_MODE = 0o644  # 420 decimal, the API default for defaultMode
DATA_DIR = "..data"
DATA_DIR_TMP = "..data_tmp"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
LOCAL_PROVISIONER = "kubelab.io/local-path"
CONTENT_TYPES = ("configMap", "secret", "downwardAPI", "projected")
SUPPORTED = ("emptyDir", "hostPath", "persistentVolumeClaim", "ephemeral") + CONTENT_TYPES


class VolumeError(Exception):
    """A volume cannot be set up: ``reason`` (FailedMount) and the kubelet's event message
    (``MountVolume.SetUp failed for volume "x" : configmap "y" not found``). ``errors`` holds
    every volume's error when several failed (the first is this one)."""

    def __init__(self, reason: str, message: str, volume: str = ""):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.volume = volume
        self.errors: list[VolumeError] = [self]


class Mounts(dict):
    """volume name -> host path, plus ``warnings`` ``(reason, message)`` worth an Event."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.warnings: list[tuple[str, str]] = []


class _SetupError(Exception):
    """An error inside one volume's set-up, before it is worded as MountVolume.SetUp."""


@dataclasses.dataclass
class FileProjection:
    data: bytes
    mode: int = DEFAULT_MODE


# ---------------------------------------------------------------------------------------------
# Atomic writer (pkg/volume/util/atomic_writer.go)

def validate_payload_path(p: str) -> str:
    if not p:
        raise _SetupError("invalid path: must not be empty")
    if os.path.isabs(p):
        raise _SetupError(f"invalid path: must be relative path: {p}")
    parts = p.split("/")
    if ".." in parts:
        raise _SetupError(f"invalid path: must not contain '..': {p}")
    if p.startswith(".."):
        raise _SetupError(f"invalid path: must not start with '..': {p}")
    return os.path.normpath(p)


def _ts_dir_name() -> str:
    t = time.time()
    return time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime(t)) + str(random.getrandbits(32))


class AtomicWriter:
    """Writes a payload {relative path: FileProjection} into ``target`` atomically."""

    def __init__(self, target: str | Path):
        self.target = Path(target)

    def current(self) -> Path | None:
        try:
            link = os.readlink(self.target / DATA_DIR)
        except OSError:
            return None
        p = self.target / link
        return p if p.is_dir() else None

    @staticmethod
    def _files_of(d: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for dirpath, _dirs, files in os.walk(d):
            for f in files:
                full = Path(dirpath) / f
                out[str(full.relative_to(d))] = full
        return out

    def _unchanged(self, old: Path, payload: dict[str, FileProjection]) -> bool:
        files = self._files_of(old)
        if set(files) != set(payload):
            return False
        for k, fp in payload.items():
            try:
                st = files[k].lstat()
                if stat.S_IMODE(st.st_mode) != fp.mode or files[k].read_bytes() != fp.data:
                    return False
            except OSError:
                return False
        return True

    def write(self, payload: dict[str, FileProjection], *, gid: int | None = None) -> bool:
        """Make ``target`` show ``payload``; True when something was written."""
        clean = {validate_payload_path(k): v for k, v in payload.items()}
        if gid is not None:  # SetVolumeOwnership of a read-only volume: group-readable
            clean = {k: FileProjection(v.data, v.mode | 0o440) for k, v in clean.items()}
        self.target.mkdir(parents=True, exist_ok=True)
        old = self.current()
        if old is not None and self._unchanged(old, clean):
            self._link_user_paths(clean)
            return False
        old_paths = set(self._files_of(old)) if old is not None else set()
        while True:
            ts = self.target / _ts_dir_name()
            try:
                ts.mkdir()
                break
            except FileExistsError:
                continue
        os.chmod(ts, 0o755)
        for rel, fp in clean.items():
            path = ts / rel
            if path.parent != ts:
                path.parent.mkdir(parents=True, exist_ok=True)
                d = path.parent
                while d != ts:
                    os.chmod(d, 0o755)
                    d = d.parent
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, fp.mode)
            with os.fdopen(fd, "wb") as f:
                f.write(fp.data)
            os.chmod(path, fp.mode)
            if gid is not None:
                os.chown(path, -1, gid)
        if gid is not None:
            os.chown(ts, -1, gid)
        tmp = self.target / DATA_DIR_TMP
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        os.symlink(ts.name, tmp)
        os.rename(tmp, self.target / DATA_DIR)  # the atomic switch
        self._link_user_paths(clean)
        # user-visible paths no longer in the payload
        new_top = {p.split("/")[0] for p in clean}
        for p in {p.split("/")[0] for p in old_paths} - new_top:
            up = self.target / p
            if up.is_symlink():
                up.unlink()
        if old is not None and old != ts:
            shutil.rmtree(old, ignore_errors=True)
        return True

    def _link_user_paths(self, payload: dict[str, FileProjection]) -> None:
        for top in sorted({p.split("/")[0] for p in payload}):
            up = self.target / top
            want = f"{DATA_DIR}/{top}"
            if up.is_symlink():
                if os.readlink(up) == want:
                    continue
                up.unlink()
            elif up.exists():
                if up.is_dir():
                    shutil.rmtree(up)
                else:
                    up.unlink()
            os.symlink(want, up)


# ---------------------------------------------------------------------------------------------
# Payloads (configmap.MakePayload, secret.MakePayload, downwardapi.CollectData)

def _mode(item: dict, default_mode: int) -> int:
    m = item.get("mode")
    return int(m) if m is not None else default_mode


def configmap_payload(items: list[dict] | None, cm: dict, default_mode: int,
                      optional: bool) -> dict[str, FileProjection]:
    data = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
    binary = configmap_binary(cm)
    out: dict[str, FileProjection] = {}
    if not items:
        for k, v in data.items():
            out[k] = FileProjection(v, default_mode)
        for k, v in binary.items():
            out[k] = FileProjection(v, default_mode)
        return out
    for it in items:
        key = it.get("key") or ""
        if key in data:
            b = data[key]
        elif key in binary:
            b = binary[key]
        else:
            if optional:
                continue
            raise _SetupError(f"configmap references non-existent config key: {key}")
        out[it.get("path") or key] = FileProjection(b, _mode(it, default_mode))
    return out


def secret_payload(items: list[dict] | None, secret: dict, default_mode: int,
                   optional: bool) -> dict[str, FileProjection]:
    data = secret_bytes(secret)
    out: dict[str, FileProjection] = {}
    if not items:
        for k, v in data.items():
            out[k] = FileProjection(v, default_mode)
        return out
    for it in items:
        key = it.get("key") or ""
        if key not in data:
            if optional:
                continue
            raise _SetupError(f"secret references non-existent secret key: {key}")
        out[it.get("path") or key] = FileProjection(data[key], _mode(it, default_mode))
    return out


def downward_payload(items: list[dict] | None, pod: dict, default_mode: int,
                     allocatable: dict | None) -> dict[str, FileProjection]:
    out: dict[str, FileProjection] = {}
    errs: list[str] = []
    for it in items or []:
        path = it.get("path") or ""
        mode = _mode(it, default_mode)
        if it.get("fieldRef"):
            try:
                value = extract_field_path(pod, it["fieldRef"].get("fieldPath") or "")
            except FieldPathError as e:
                errs.append(str(e))
                continue
        elif it.get("resourceFieldRef"):
            try:
                value = resource_value_by_container(it["resourceFieldRef"], pod, None,
                                                    allocatable)
            except ValueError as e:
                errs.append(str(e))
                continue
        else:
            continue
        out[path] = FileProjection(value.encode(), mode)
    if errs:
        raise _SetupError(_aggregate(errs))
    return out


def _aggregate(errs: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error()."""
    if len(errs) == 1:
        return errs[0]
    return "[" + ", ".join(errs) + "]"


def resolve_subpath(volume_path: str | Path, sub_path: str) -> Path:
    """The host path for a mount's ``subPath`` inside a volume (created as a directory when
    missing, as the kubelet does); refuses paths escaping the volume."""
    base = Path(volume_path).resolve()
    if os.path.isabs(sub_path) or ".." in Path(sub_path).parts:
        raise VolumeError("Failed", f"subPath {sub_path!r} must be a relative path without '..'")
    p = (Path(volume_path) / sub_path)
    if not p.exists() and not p.is_symlink():
        p.mkdir(parents=True, exist_ok=True)
    real = p.resolve()
    if real != base and base not in real.parents:
        raise VolumeError("Failed", f"subpath {str(real)!r} not within volume path {str(base)!r}")
    return p


@dataclasses.dataclass
class Mount:
    """One volumeMount of a container, resolved on the host (the kubelet's makeMounts)."""
    name: str
    host_path: str
    container_path: str
    read_only: bool
    sub_path: str = ""


def volume_read_only(vol: dict) -> bool:
    """Volumes the kubelet always mounts read-only (their plugin's ReadOnly attribute)."""
    if any(vol.get(t) is not None for t in CONTENT_TYPES):
        return True
    pvc = vol.get("persistentVolumeClaim")
    return bool(isinstance(pvc, dict) and pvc.get("readOnly"))


def container_mounts(pod: dict, container: dict, mounts: dict[str, str],
                     env: dict | None = None) -> list[Mount]:
    """The container's volumeMounts against the pod's set-up volumes (``mounts``, from
    :meth:`VolumeManager.setup`): subPath / subPathExpr resolved (created when missing, never
    escaping the volume), read-only where the mount or the volume type says so. Errors raise
    EnvError (CreateContainerConfigError), as makeMounts' errors do."""
    vols = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    out: list[Mount] = []
    cname = container.get("name") or ""
    for vm in container.get("volumeMounts") or []:
        name = vm.get("name") or ""
        if name not in mounts or name not in vols:
            raise EnvError("CreateContainerConfigError",
                           f'cannot find volume "{name}" to mount into container "{cname}"')
        sub = vm.get("subPath") or ""
        if vm.get("subPathExpr"):
            sub = expand_subpath_expr(vm["subPathExpr"], env or {})
        host = mounts[name]
        if sub:
            if os.path.isabs(sub):
                raise EnvError("CreateContainerConfigError",
                               f"error SubPath `{sub}` must not be an absolute path")
            if ".." in Path(sub).parts:
                raise EnvError("CreateContainerConfigError",
                               f"unable to provision SubPath `{sub}`: must not contain '..'")
            try:
                host = str(resolve_subpath(host, sub))
            except (VolumeError, OSError):
                raise EnvError("CreateContainerConfigError", (
                    f'failed to create subPath directory for volumeMount "{name}" of container '
                    f'"{cname}"')) from None
        out.append(Mount(name, host, vm.get("mountPath") or "",
                         bool(vm.get("readOnly")) or volume_read_only(vols[name]), sub))
    return out


# ---------------------------------------------------------------------------------------------

def _hostpath_check(path: Path, typ: str) -> None:
    """The hostPath plugin's checkType."""
    if typ == "":
        return
    if typ == "DirectoryOrCreate":
        if not path.exists():
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
            return
        typ = "Directory"
    if typ == "FileOrCreate":
        if not path.exists():
            try:
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
                os.close(fd)
            except OSError as e:
                raise _SetupError(str(e)) from None
            return
        typ = "File"
    checks = {
        "Directory": (path.is_dir, "is not a directory"),
        "File": (path.is_file, "is not a file"),
        "Socket": (path.is_socket, "is not a socket file"),
        "CharDevice": (path.is_char_device, "is not a character device"),
        "BlockDevice": (path.is_block_device, "is not a block device"),
    }
    if typ not in checks:
        raise _SetupError(f"{typ} is an invalid volume type")
    fn, what = checks[typ]
    if not fn():
        raise _SetupError(f"hostPath type check failed: {path} {what}")


def _call(obj: Any, name: str, *args: Any) -> Any:
    fn = getattr(obj, name, None)
    return fn(*args) if callable(fn) else None


class VolumeManager:
    """Sets up, refreshes and tears down a pod's volumes on this node.

    ``lookup`` answers ``configmap(ns, name)`` and ``secret(ns, name)`` (dict or None, from
    informer caches); when it also has ``pvc(ns, name)``, ``pv(name)``,
    ``service_account(ns, name)`` and ``secrets(ns)`` they are used for claims and service
    account tokens. ``client`` is kept for callers that want it (the manager itself does only
    file I/O and cache reads, so its methods are synchronous). ``node_info`` (allocatable) feeds
    resourceFieldRef defaults; ``ca_file`` is the cluster CA used for ``ca.crt`` when the
    kube-root-ca.crt ConfigMap does not exist; ``token_source(ns, sa, audience,
    expiration_seconds, pod) -> str | None`` supplies service account tokens (TokenRequest)."""

    def __init__(self, root_dir: str | Path, lookup: Any, client: Any = None, *,
                 node_info: Any = None, ca_file: str | Path | None = None,
                 token_source: Callable[..., str | None] | None = None):
        self.root = Path(root_dir)
        self.lookup = lookup
        self.client = client
        self.node_info = node_info
        self.ca_file = Path(ca_file) if ca_file else None
        self.token_source = token_source

    # -- paths --------------------------------------------------------------------------------
    def pod_volumes_dir(self, pod: dict) -> Path:
        return self.root / "pods" / pod["metadata"]["uid"] / "volumes"

    def volume_dir(self, pod: dict, name: str) -> Path:
        return self.pod_volumes_dir(pod) / name

    def claim_path(self, namespace: str, claim: str) -> Path:
        """The node-local directory holding a claim's data (see the module docstring)."""
        pvc = _call(self.lookup, "pvc", namespace, claim)
        pv_name = ((pvc or {}).get("spec") or {}).get("volumeName") or ""
        if pv_name:
            pv = _call(self.lookup, "pv", pv_name)
            if pv:
                ann = (pv.get("metadata") or {}).get("annotations") or {}
                hp = ((pv.get("spec") or {}).get("hostPath") or {}).get("path")
                if hp and ann.get("pv.kubernetes.io/provisioned-by") != LOCAL_PROVISIONER:
                    return Path(hp)
            return self.root / "pvs" / pv_name
        return self.root / "pvs" / namespace / claim

    # -- public API ---------------------------------------------------------------------------
    def setup(self, pod: dict) -> Mounts:
        """Materialize every volume of the pod; volume name -> host path. Idempotent (an
        existing emptyDir keeps its content). Raises VolumeError (the first failing volume;
        ``.errors`` has all) after trying every volume."""
        return self._sync(pod, create=True)

    def refresh(self, pod: dict) -> Mounts:
        """Re-sync configMap/secret/downwardAPI/projected contents (atomically, only when
        changed). A source that disappeared keeps the old files unless it is optional."""
        return self._sync(pod, create=False)

    def teardown(self, pod: dict | str) -> None:
        """Remove the pod's volumes (PVC data and hostPath directories stay)."""
        uid = pod if isinstance(pod, str) else pod["metadata"]["uid"]
        d = self.root / "pods" / uid / "volumes"
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
        try:
            (self.root / "pods" / uid).rmdir()
        except OSError:
            pass

    def orphaned_pod_uids(self, live_uids: set[str]) -> list[str]:
        """Pod UIDs with volume directories on disk that are not in ``live_uids`` (for the
        kubelet's orphaned-pod cleanup after a restart)."""
        base = self.root / "pods"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir()
                      if p.is_dir() and (p / "volumes").is_dir() and p.name not in live_uids)

    # -- internals ----------------------------------------------------------------------------
    def _sync(self, pod: dict, create: bool) -> Mounts:
        mounts = Mounts()
        errors: list[VolumeError] = []
        spec = pod.get("spec") or {}
        gid = (spec.get("securityContext") or {}).get("fsGroup")
        gid = int(gid) if gid is not None and os.geteuid() == 0 else None
        for vol in spec.get("volumes") or []:
            name = vol.get("name") or ""
            try:
                if not create and not any(vol.get(t) is not None for t in CONTENT_TYPES):
                    mounts[name] = str(self._path_only(pod, vol))
                    continue
                mounts[name] = str(self._setup_one(pod, vol, gid, mounts.warnings))
            except _SetupError as e:
                errors.append(VolumeError(
                    FAILED_MOUNT, f'MountVolume.SetUp failed for volume "{name}" : {e}', name))
            except VolumeError as e:
                errors.append(e)
            except OSError as e:
                errors.append(VolumeError(
                    FAILED_MOUNT, f'MountVolume.SetUp failed for volume "{name}" : {e}', name))
        if errors:
            first = errors[0]
            first.errors = errors
            raise first
        return mounts

    def _path_only(self, pod: dict, vol: dict) -> Path:
        if vol.get("hostPath") is not None:
            return Path(vol["hostPath"].get("path") or "")
        if vol.get("persistentVolumeClaim") is not None:
            return self.claim_path(pod["metadata"].get("namespace") or "default",
                                   vol["persistentVolumeClaim"].get("claimName") or "")
        if vol.get("ephemeral") is not None:
            return self.claim_path(pod["metadata"].get("namespace") or "default",
                                   f"{pod['metadata']['name']}-{vol.get('name')}")
        return self.volume_dir(pod, vol.get("name") or "")

    def _setup_one(self, pod: dict, vol: dict, gid: int | None,
                   warnings: list[tuple[str, str]]) -> Path:
        name = vol.get("name") or ""
        ns = pod["metadata"].get("namespace") or "default"
        if vol.get("hostPath") is not None:
            hp = vol["hostPath"]
            path = Path(hp.get("path") or "")
            _hostpath_check(path, hp.get("type") or "")
            return path
        if vol.get("persistentVolumeClaim") is not None or vol.get("ephemeral") is not None:
            if vol.get("persistentVolumeClaim") is not None:
                claim = vol["persistentVolumeClaim"].get("claimName") or ""
            else:  # generic ephemeral volume: the claim <pod>-<volume>
                claim = f"{pod['metadata']['name']}-{name}"
            self._check_claim(ns, claim)
            path = self.claim_path(ns, claim)
            path.mkdir(parents=True, exist_ok=True)
            return path
        target = self.volume_dir(pod, name)
        if vol.get("emptyDir") is not None:
            if not target.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                os.chmod(target, 0o777)
                if gid is not None:
                    os.chown(target, -1, gid)
                    os.chmod(target, 0o777 | stat.S_ISGID)
            return target
        payload = self._payload(pod, vol, warnings)
        if payload is None:
            return target
        fresh = not target.exists()
        AtomicWriter(target).write(payload, gid=gid)
        if fresh:
            os.chmod(target, 0o777)
        return target

    def _check_claim(self, ns: str, claim: str) -> None:
        if not callable(getattr(self.lookup, "pvc", None)):
            return
        pvc = self.lookup.pvc(ns, claim)
        if pvc is None:
            raise VolumeError(FAILED_MOUNT, (
                f"error processing PVC {ns}/{claim}: failed to fetch PVC from API server: "
                f'persistentvolumeclaims "{claim}" not found'))
        if (pvc.get("status") or {}).get("phase") != "Bound" or \
                not (pvc.get("spec") or {}).get("volumeName"):
            raise VolumeError(FAILED_MOUNT, f"error processing PVC {ns}/{claim}: PVC is not bound")

    def _payload(self, pod: dict, vol: dict,
                 warnings: list[tuple[str, str]]) -> dict[str, FileProjection] | None:
        ns = pod["metadata"].get("namespace") or "default"
        allocatable = node_info_of(self.node_info).allocatable
        if vol.get("configMap") is not None:
            src = vol["configMap"]
            dm = src.get("defaultMode")
            dm = DEFAULT_MODE if dm is None else int(dm)
            optional = bool(src.get("optional"))
            cm = self.lookup.configmap(ns, src.get("name") or "")
            if cm is None:
                if not optional:
                    raise _SetupError(f'configmap "{src.get("name") or ""}" not found')
                cm = {}
            return configmap_payload(src.get("items"), cm, dm, optional)
        if vol.get("secret") is not None:
            src = vol["secret"]
            dm = src.get("defaultMode")
            dm = DEFAULT_MODE if dm is None else int(dm)
            optional = bool(src.get("optional"))
            sec = self.lookup.secret(ns, src.get("secretName") or "")
            if sec is None:
                if not optional:
                    raise _SetupError(f'secret "{src.get("secretName") or ""}" not found')
                sec = {}
            return secret_payload(src.get("items"), sec, dm, optional)
        if vol.get("downwardAPI") is not None:
            src = vol["downwardAPI"]
            dm = src.get("defaultMode")
            dm = DEFAULT_MODE if dm is None else int(dm)
            return downward_payload(src.get("items"), pod, dm, allocatable)
        if vol.get("projected") is not None:
            return self._projected(pod, vol["projected"], allocatable, warnings)
        kind = next((k for k in vol if k != "name"), "unknown")
        raise _SetupError(f"volume type {kind} is not supported by kubelab")

    def _projected(self, pod: dict, src: dict, allocatable: dict,
                   warnings: list[tuple[str, str]]) -> dict[str, FileProjection]:
        ns = pod["metadata"].get("namespace") or "default"
        dm = src.get("defaultMode")
        dm = DEFAULT_MODE if dm is None else int(dm)
        sc = (pod.get("spec") or {}).get("securityContext") or {}
        out: dict[str, FileProjection] = {}
        errs: list[str] = []
        for s in src.get("sources") or []:
            try:
                if s.get("secret") is not None:
                    ref = s["secret"]
                    optional = bool(ref.get("optional"))
                    sec = self.lookup.secret(ns, ref.get("name") or "")
                    if sec is None:
                        if not optional:
                            errs.append(f'secret "{ref.get("name") or ""}" not found')
                            continue
                        sec = {}
                    out.update(secret_payload(ref.get("items"), sec, dm, optional))
                elif s.get("configMap") is not None:
                    ref = s["configMap"]
                    optional = bool(ref.get("optional"))
                    cname = ref.get("name") or ""
                    cm = self.lookup.configmap(ns, cname)
                    if cm is None and cname == ROOT_CA_CONFIGMAP and self.ca_file and \
                            self.ca_file.is_file():
                        cm = {"data": {"ca.crt": self.ca_file.read_text()}}
                    if cm is None:
                        if not optional:
                            errs.append(f'configmap "{cname}" not found')
                            continue
                        cm = {}
                    out.update(configmap_payload(ref.get("items"), cm, dm, optional))
                elif s.get("downwardAPI") is not None:
                    out.update(downward_payload(s["downwardAPI"].get("items"), pod, dm,
                                                allocatable))
                elif s.get("serviceAccountToken") is not None:
                    tp = s["serviceAccountToken"]
                    # with an fsGroup the token is 0600, made 0640 by the volume ownership
                    mode = 0o600 if sc.get("fsGroup") is not None else dm
                    token = self._sa_token(pod, tp)
                    if token is None and self.token_source is not None:
                        # e.g. the namespace's ServiceAccount is not made yet: the kubelet
                        # fails the mount and retries it
                        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
                        raise _SetupError(f'failed to fetch token: serviceaccounts "{sa}" '
                                          f"token could not be requested for {ns}/{sa}")
                    if token is None:
                        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
                        msg = (f"no token for service account {ns}/{sa}: no TokenRequest "
                               f"source and no {SA_TOKEN_TYPE} Secret exists; "
                               f"{tp.get('path')} left out")
                        log.warning("%s", msg)
                        warnings.append(("FailedMount", msg))
                        continue
                    out[tp.get("path") or "token"] = FileProjection(token.encode(), mode)
            except _SetupError as e:
                errs.append(str(e))
        if errs:
            raise _SetupError(_aggregate(errs))
        return out

    def _sa_token(self, pod: dict, tp: dict) -> str | None:
        ns = pod["metadata"].get("namespace") or "default"
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        if self.token_source is not None:
            tok = self.token_source(ns, sa, tp.get("audience") or "",
                                    tp.get("expirationSeconds") or 3600, pod)
            if tok:
                return tok
        candidates: list[dict] = []
        acct = _call(self.lookup, "service_account", ns, sa)
        for ref in (acct or {}).get("secrets") or []:
            s = self.lookup.secret(ns, ref.get("name") or "")
            if s:
                candidates.append(s)
        candidates += _call(self.lookup, "secrets", ns) or []
        for s in candidates:
            ann = (s.get("metadata") or {}).get("annotations") or {}
            if s.get("type") == SA_TOKEN_TYPE and ann.get(SA_NAME_ANNOTATION) == sa:
                tok = secret_bytes(s).get("token")
                if tok:
                    return tok.decode()
        return None
