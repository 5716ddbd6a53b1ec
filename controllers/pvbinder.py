"""The PersistentVolume binder (Kubernetes' persistentvolume-binder controller) with a local
dynamic provisioner.

- A Pending claim binds to the smallest Available volume with its storage class, volume
  mode and access modes and at least the requested capacity (a volume pre-bound to the claim
  by claimRef, or named by the claim's spec.volumeName, comes first). Binding writes
  pv.spec.claimRef, pv.status.phase Bound, pvc.spec.volumeName with the annotation
  pv.kubernetes.io/bind-completed, and pvc.status (phase Bound, capacity, accessModes).
- A default StorageClass `standard` (provisioner kubelab.io/local-path, WaitForFirstConsumer)
  is created when missing. A claim without storageClassName gets the default class.
- A claim of a class with the kubelab.io/local-path provisioner and no matching volume gets
  one provisioned: PV `pvc-<claim uid>`, hostPath /var/lib/kubelab/volumes/pvc-<uid>, with
  node affinity to the node of the first pod using it when the class waits for the first
  consumer (the pod's spec.nodeName, or the claim's volume.kubernetes.io/selected-node).
- A volume whose claim is gone is Released; a provisioned one with reclaim policy Delete is
  deleted."""

from __future__ import annotations

import asyncio
import copy
import re

from kubelab.client import APIError
from kubelab.selectors import selector_from_label_selector

from .base import Controller

PROVISIONER = "kubelab.io/local-path"
DEFAULT_CLASS = "standard"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
BETA_DEFAULT_CLASS_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
VOLUME_ROOT = "/var/lib/kubelab/volumes"

_QTY = re.compile(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))([eE][+-]?[0-9]+|[numkMGTPE]i?|Ki)?$")
_SUFFIX = {None: 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "P": 1e15, "E": 1e18, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40,
           "Pi": 2 ** 50, "Ei": 2 ** 60}


def quantity(v) -> float:
    """A resource.Quantity as a number (bytes for storage); unparsable -> 0."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    m = _QTY.match(str(v or "").strip())
    if not m:
        return 0.0
    num, suf = float(m.group(1)), m.group(2)
    if suf and suf[0] in "eE":
        return num * 10 ** int(suf[1:])
    return num * _SUFFIX.get(suf, 1)


def is_default_class(sc: dict) -> bool:
    ann = sc["metadata"].get("annotations") or {}
    return ann.get(DEFAULT_CLASS_ANNOTATION) == "true" or \
        ann.get(BETA_DEFAULT_CLASS_ANNOTATION) == "true"


def default_class(classes: list[dict]) -> dict | None:
    """The default StorageClass (the newest when several are marked)."""
    defaults = [c for c in classes if is_default_class(c)]
    if not defaults:
        return None
    return max(defaults, key=lambda c: (c["metadata"].get("creationTimestamp", ""),
                                        c["metadata"]["name"]))


def claim_class(pvc: dict, classes: list[dict]) -> str:
    """The claim's storage class: spec.storageClassName when set (even ""), else the beta
    annotation, else the default class (DefaultStorageClass admission), else ""."""
    spec = pvc.get("spec") or {}
    if spec.get("storageClassName") is not None:
        return spec["storageClassName"]
    ann = pvc["metadata"].get("annotations") or {}
    if "volume.beta.kubernetes.io/storage-class" in ann:
        return ann["volume.beta.kubernetes.io/storage-class"]
    d = default_class(classes)
    return d["metadata"]["name"] if d else ""


def pv_class(pv: dict) -> str:
    ann = pv["metadata"].get("annotations") or {}
    if "volume.beta.kubernetes.io/storage-class" in ann:
        return ann["volume.beta.kubernetes.io/storage-class"]
    return (pv.get("spec") or {}).get("storageClassName") or ""


def _match_expr(expr: dict, value_of) -> bool:
    key, op = expr.get("key"), expr.get("operator")
    vals = expr.get("values") or []
    v = value_of(key)
    if op == "In":
        return v is not None and v in vals
    if op == "NotIn":
        return v is None or v not in vals
    if op == "Exists":
        return v is not None
    if op == "DoesNotExist":
        return v is None
    if op in ("Gt", "Lt"):
        try:
            n, ref = int(v), int(vals[0])
        except (TypeError, ValueError, IndexError):
            return False
        return n > ref if op == "Gt" else n < ref
    return False


def pv_fits_node(pv: dict, node: dict | None, node_name: str) -> bool:
    """The volume's required node affinity admits the node (a node not in the cache is
    judged by its hostname label alone)."""
    req = (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {})
    terms = req.get("nodeSelectorTerms") or []
    if not terms:
        return True
    labels = dict((node or {}).get("metadata", {}).get("labels") or {})
    labels.setdefault("kubernetes.io/hostname", node_name)
    fields = {"metadata.name": node_name}
    for term in terms:
        exprs = term.get("matchExpressions") or []
        fexprs = term.get("matchFields") or []
        if not exprs and not fexprs:
            continue
        if all(_match_expr(e, labels.get) for e in exprs) and \
                all(_match_expr(e, fields.get) for e in fexprs):
            return True
    return False


def claim_ref_matches(pv: dict, pvc: dict) -> bool:
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    md = pvc["metadata"]
    return bool(ref) and ref.get("name") == md["name"] and \
        ref.get("namespace") == md.get("namespace") and \
        (not ref.get("uid") or ref.get("uid") == md.get("uid"))


def volume_matches(pv: dict, pvc: dict, cls: str) -> bool:
    """The checks of findMatchingVolume, without capacity ordering and node affinity."""
    spec, cspec = pv.get("spec") or {}, pvc.get("spec") or {}
    if pv["metadata"].get("deletionTimestamp"):
        return False
    if spec.get("claimRef") and not claim_ref_matches(pv, pvc):
        return False
    if not spec.get("claimRef") and (pv.get("status") or {}).get("phase") in ("Released",
                                                                              "Failed"):
        return False
    if pv_class(pv) != cls:
        return False
    if (spec.get("volumeMode") or "Filesystem") != (cspec.get("volumeMode") or "Filesystem"):
        return False
    if not set(cspec.get("accessModes") or []) <= set(spec.get("accessModes") or []):
        return False
    want = quantity(((cspec.get("resources") or {}).get("requests") or {}).get("storage"))
    if quantity((spec.get("capacity") or {}).get("storage")) < want:
        return False
    if cspec.get("selector"):
        try:
            sel = selector_from_label_selector(cspec["selector"])
        except ValueError:
            return False
        if not sel.matches(pv["metadata"].get("labels") or {}):
            return False
    return True


def choose_volume(pvc: dict, pvs: list[dict], cls: str, node_name: str | None = None,
                  nodes: dict[str, dict] | None = None) -> dict | None:
    """The volume to bind the claim to: one pre-bound to it, else the smallest matching
    Available volume (ties by name); on `node_name` only volumes whose node affinity admits
    that node."""
    ok = [pv for pv in pvs if volume_matches(pv, pvc, cls) and
          (node_name is None or pv_fits_node(pv, (nodes or {}).get(node_name), node_name))]
    if not ok:
        return None
    pre = [pv for pv in ok if (pv.get("spec") or {}).get("claimRef")]
    pool = pre or ok
    return min(pool, key=lambda pv: (quantity((pv.get("spec") or {}).get("capacity", {})
                                              .get("storage")), pv["metadata"]["name"]))


def pick_volume(pvc: dict, pvs: list[dict], cls: str, delay_binding: bool,
                node: str | None, nodes: dict[str, dict] | None = None
                ) -> tuple[dict | None, bool]:
    """(volume to bind, still waiting for the first consumer). With delayed binding and no
    consumer node yet only a volume pre-bound to the claim (the scheduler's choice, by
    claimRef) is taken."""
    if delay_binding and node is None:
        pre = [pv for pv in pvs if (pv.get("spec") or {}).get("claimRef") and
               claim_ref_matches(pv, pvc)]
        pv = choose_volume(pvc, pre, cls)
        return pv, pv is None
    return choose_volume(pvc, pvs, cls, node, nodes), False


def consumer_node(pvc: dict, pods: list[dict]) -> str | None:
    """The node chosen for the claim's first consumer: the scheduler's selected-node
    annotation, or the node of a scheduled pod using the claim."""
    ann = pvc["metadata"].get("annotations") or {}
    if ann.get(SELECTED_NODE):
        return ann[SELECTED_NODE]
    name, ns = pvc["metadata"]["name"], pvc["metadata"].get("namespace")
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", "")):
        if pod["metadata"].get("namespace") != ns or pod["metadata"].get("deletionTimestamp"):
            continue
        node = (pod.get("spec") or {}).get("nodeName")
        if node and name in pod_claims(pod):
            return node
    return None


def pod_claims(pod: dict) -> list[str]:
    return [(v.get("persistentVolumeClaim") or {}).get("claimName")
            for v in (pod.get("spec") or {}).get("volumes") or []
            if (v.get("persistentVolumeClaim") or {}).get("claimName")]


def provisioned_volume(pvc: dict, sc: dict, node: str | None) -> dict:
    """The PersistentVolume the local provisioner makes for a claim."""
    md, spec = pvc["metadata"], pvc.get("spec") or {}
    name = f"pvc-{md['uid']}"
    pv: dict = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: sc.get("provisioner")}},
        "spec": {
            "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {})
                         .get("storage")},
            "accessModes": list(spec.get("accessModes") or []),
            "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
            "storageClassName": sc["metadata"]["name"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": f"{VOLUME_ROOT}/{name}", "type": "DirectoryOrCreate"},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                         "namespace": md.get("namespace"), "name": md["name"],
                         "uid": md["uid"], "resourceVersion": md.get("resourceVersion")},
        },
    }
    if node:
        pv["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    if sc.get("mountOptions"):
        pv["spec"]["mountOptions"] = list(sc["mountOptions"])
    return pv


def default_storage_class() -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": DEFAULT_CLASS,
                         "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"}


class PersistentVolumeBinder(Controller):
    name = "persistentvolume-binder"
    workers = 1  # binding decisions are serialized, as one claim must not take another's PV

    def setup(self) -> None:
        self.claims = self.informers.informer("PersistentVolumeClaim")
        self.volumes = self.informers.informer("PersistentVolume")
        self.classes = self.informers.informer("StorageClass")
        self.pods = self.informers.informer("Pod")
        self.nodes = self.informers.informer("Node")
        self._retroactive_class = True  # may spec.storageClassName be set on a claim?
        self.claims.add_handler(self._on_claim)
        self.volumes.add_handler(self._on_volume)
        self.classes.add_handler(lambda ev, new, old: self._enqueue_pending())
        self.pods.add_handler(self._on_pod)

    # ------------------------------------------------------------------ events
    def _on_claim(self, event: str, new: dict, old: dict | None) -> None:
        md = new["metadata"]
        if event == "DELETED":
            for pv in self.volumes.list():
                if ((pv.get("spec") or {}).get("claimRef") or {}).get("uid") == md.get("uid"):
                    self.queue.add(("pv", pv["metadata"]["name"]))
            return
        self.queue.add(("pvc", md.get("namespace"), md["name"]))

    def _on_volume(self, event: str, new: dict, old: dict | None) -> None:
        if event == "DELETED":
            ref = (new.get("spec") or {}).get("claimRef") or {}
            if ref.get("name"):
                self.queue.add(("pvc", ref.get("namespace"), ref["name"]))
            return
        self.queue.add(("pv", new["metadata"]["name"]))
        if not (new.get("spec") or {}).get("claimRef"):
            self._enqueue_pending()

    def _on_pod(self, event: str, new: dict, old: dict | None) -> None:
        if event == "DELETED" or not (new.get("spec") or {}).get("nodeName"):
            return
        if old is not None and (old.get("spec") or {}).get("nodeName"):
            return  # only the moment it is scheduled matters
        for claim in pod_claims(new):
            self.queue.add(("pvc", new["metadata"].get("namespace"), claim))

    def _enqueue_pending(self) -> None:
        for c in self.claims.list():
            if not (c.get("spec") or {}).get("volumeName"):
                self.queue.add(("pvc", c["metadata"].get("namespace"), c["metadata"]["name"]))

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        await self.ensure_default_class()
        await super().run()

    async def ensure_default_class(self) -> None:
        delay = 0.1
        while True:
            try:
                if self.classes.get(None, DEFAULT_CLASS) is None:
                    await self.client.create("StorageClass", default_storage_class())
                    self.log.info("created the default StorageClass %s", DEFAULT_CLASS)
                return
            except APIError as e:
                if e.code == 409:
                    return
                self.log.info("creating StorageClass %s: %s; retrying", DEFAULT_CLASS, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def reconcile(self, key: tuple) -> None:
        if key[0] == "pvc":
            await self.sync_claim(key[1], key[2])
        else:
            await self.sync_volume(key[1])

    # ------------------------------------------------------------------ claims
    async def sync_claim(self, ns: str, name: str) -> None:
        pvc = self.claims.get(ns, name)
        if pvc is None or pvc["metadata"].get("deletionTimestamp"):
            return
        classes = self.classes.list()
        cls = claim_class(pvc, classes)
        if (pvc.get("spec") or {}).get("storageClassName") is None and cls and \
                self._retroactive_class and not pvc["spec"].get("volumeName"):
            pvc = await self._set_class(pvc, cls)
        volume_name = (pvc.get("spec") or {}).get("volumeName")
        if volume_name:
            await self._sync_bound_claim(pvc, volume_name)
            return
        sc = self.classes.get(None, cls) if cls else None
        wait = sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer"
        node = consumer_node(pvc, self.pods.list(ns)) if wait else None
        nodes = {n["metadata"]["name"]: n for n in self.nodes.list()}
        pv, waiting = pick_volume(pvc, self.volumes.list(), cls, wait, node, nodes)
        if pv is not None:
            await self.bind(pv, pvc)
            return
        if waiting:
            await self.recorder.normal(pvc, "WaitForFirstConsumer",
                                       "waiting for first consumer to be created before "
                                       "binding")
            return
        if sc is not None and sc.get("provisioner") == PROVISIONER:
            await self.provision(pvc, sc, node)
            return
        if sc is not None:
            await self.recorder.normal(
                pvc, "ExternalProvisioning",
                f"Waiting for a volume to be created either by the external provisioner "
                f"'{sc.get('provisioner')}' or manually by the system administrator. If volume "
                f"creation is delayed, please verify that the provisioner is running and "
                f"correctly registered.")
            return
        msg = "no persistent volumes available for this claim and no storage class is set" \
            if not cls else f'storageclass.storage.k8s.io "{cls}" not found'
        await self.recorder.warning(pvc, "FailedBinding" if not cls else "ProvisioningFailed",
                                    msg)

    async def _set_class(self, pvc: dict, cls: str) -> dict:
        obj = copy.deepcopy(pvc)
        obj["spec"]["storageClassName"] = cls
        try:
            return await self.client.update("PersistentVolumeClaim", obj)
        except APIError as e:
            if e.code in (400, 422):
                # the API server does not let a claim's class be set after creation: keep
                # treating the claim as of the default class without writing it
                self._retroactive_class = False
                self.log.info("cannot set storageClassName on claims (%s); the default class "
                              "is applied without being written", e.message)
                return pvc
            raise

    async def _sync_bound_claim(self, pvc: dict, volume_name: str) -> None:
        pv = self.volumes.get(None, volume_name)
        if pv is None:
            pv = await self.client.get_or_none("PersistentVolume", None, volume_name)
        if pv is None:
            if (pvc.get("status") or {}).get("phase") == "Bound":
                await self._claim_status(pvc, "Lost", None)
                await self.recorder.warning(pvc, "ClaimLost",
                                            "Bound claim has lost its PersistentVolume. Data on "
                                            "the volume is lost!")
            return
        ref = (pv.get("spec") or {}).get("claimRef")
        if ref and not claim_ref_matches(pv, pvc):
            await self.recorder.warning(pvc, "FailedBinding",
                                        "volume already bound to a different claim.")
            return
        await self.bind(pv, pvc)

    async def provision(self, pvc: dict, sc: dict, node: str | None) -> None:
        pv = provisioned_volume(pvc, sc, node)
        md = pvc["metadata"]
        ann = md.get("annotations") or {}
        if ann.get(STORAGE_PROVISIONER) != sc.get("provisioner"):
            obj = copy.deepcopy(pvc)
            a = obj["metadata"].setdefault("annotations", {})
            a[STORAGE_PROVISIONER] = a[BETA_STORAGE_PROVISIONER] = sc.get("provisioner")
            pvc = await self.client.update("PersistentVolumeClaim", obj)
            await self.recorder.normal(pvc, "Provisioning", f"External provisioner is "
                                       f"provisioning volume for claim \"{md['namespace']}/"
                                       f"{md['name']}\"")
        try:
            created = await self.client.create("PersistentVolume", pv)
        except APIError as e:
            if e.code != 409:
                await self.recorder.warning(pvc, "ProvisioningFailed", e.message)
                raise
            created = await self.client.get("PersistentVolume", None, pv["metadata"]["name"])
        else:
            await self.recorder.normal(pvc, "ProvisioningSucceeded",
                                       f"Successfully provisioned volume {pv['metadata']['name']}")
        await self.bind(created, pvc)

    async def bind(self, pv: dict, pvc: dict) -> None:
        """bindVolumeToClaim, volume phase Bound, bindClaimToVolume, claim status Bound —
        each step skipped when already done, each write a compare-and-swap."""
        cmd = pvc["metadata"]
        if not claim_ref_matches(pv, pvc) or not pv["spec"]["claimRef"].get("uid"):
            obj = copy.deepcopy(pv)
            obj["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                                       "namespace": cmd.get("namespace"), "name": cmd["name"],
                                       "uid": cmd["uid"],
                                       "resourceVersion": cmd.get("resourceVersion")}
            obj["metadata"].setdefault("annotations", {})[BOUND_BY_CONTROLLER] = "yes"
            pv = await self.client.update("PersistentVolume", obj)
        if (pv.get("status") or {}).get("phase") != "Bound":
            obj = copy.deepcopy(pv)
            obj.setdefault("status", {})["phase"] = "Bound"
            obj["status"].pop("reason", None)
            obj["status"].pop("message", None)
            pv = await self.client.update_status("PersistentVolume", obj)
        ann = cmd.get("annotations") or {}
        if pvc["spec"].get("volumeName") != pv["metadata"]["name"] or \
                ann.get(BIND_COMPLETED) != "yes":
            obj = copy.deepcopy(pvc)
            a = obj["metadata"].setdefault("annotations", {})
            if obj["spec"].get("volumeName") != pv["metadata"]["name"]:
                obj["spec"]["volumeName"] = pv["metadata"]["name"]
                a[BOUND_BY_CONTROLLER] = "yes"
            a[BIND_COMPLETED] = "yes"
            pvc = await self.client.update("PersistentVolumeClaim", obj)
        await self._claim_status(pvc, "Bound", pv)

    async def _claim_status(self, pvc: dict, phase: str, pv: dict | None) -> None:
        status = dict(pvc.get("status") or {})
        want = dict(status, phase=phase)
        if pv is not None:
            want["accessModes"] = list(pv["spec"].get("accessModes") or [])
            want["capacity"] = dict(pv["spec"].get("capacity") or {})
        if want == status:
            return
        obj = copy.deepcopy(pvc)
        obj["status"] = want
        await self.client.update_status("PersistentVolumeClaim", obj)

    # ------------------------------------------------------------------ volumes
    async def sync_volume(self, name: str) -> None:
        pv = self.volumes.get(None, name)
        if pv is None or pv["metadata"].get("deletionTimestamp"):
            return
        ref = (pv.get("spec") or {}).get("claimRef")
        phase = (pv.get("status") or {}).get("phase")
        if not ref:
            if phase != "Available":
                await self._volume_phase(pv, "Available")
            return
        pvc = self.claims.get(ref.get("namespace"), ref.get("name", ""))
        if pvc is None:
            pvc = await self.client.get_or_none("PersistentVolumeClaim", ref.get("namespace"),
                                                ref.get("name", ""))
        if pvc is None or (ref.get("uid") and pvc["metadata"].get("uid") != ref["uid"]):
            if not ref.get("uid"):
                if phase != "Available":  # pre-bound to a claim that does not exist yet
                    await self._volume_phase(pv, "Available")
                return
            await self._release(pv)
            return
        bound_to = (pvc.get("spec") or {}).get("volumeName")
        if bound_to == name:
            if phase != "Bound":
                await self._volume_phase(pv, "Bound")
            self.queue.add(("pvc", ref.get("namespace"), ref["name"]))
        elif not bound_to:
            if phase not in ("Available", "Bound"):
                await self._volume_phase(pv, "Available")
            self.queue.add(("pvc", ref.get("namespace"), ref["name"]))
        elif (pv["metadata"].get("annotations") or {}).get(BOUND_BY_CONTROLLER) == "yes":
            # the claim went to another volume: let this one go
            obj = copy.deepcopy(pv)
            obj["spec"].pop("claimRef", None)
            pv = await self.client.update("PersistentVolume", obj)

    async def _release(self, pv: dict) -> None:
        policy = (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
        provisioned = (pv["metadata"].get("annotations") or {}).get(PROVISIONED_BY) == \
            PROVISIONER
        if policy == "Delete" and provisioned:
            try:
                await self.client.delete("PersistentVolume", None, pv["metadata"]["name"],
                                         preconditions={"uid": pv["metadata"].get("uid")})
            except APIError as e:
                if not (e.not_found or e.conflict):
                    raise
            return
        if (pv.get("status") or {}).get("phase") != "Released":
            await self._volume_phase(pv, "Released")

    async def _volume_phase(self, pv: dict, phase: str) -> None:
        obj = copy.deepcopy(pv)
        obj.setdefault("status", {})["phase"] = phase
        await self.client.update_status("PersistentVolume", obj)
