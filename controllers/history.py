"""ControllerRevision history shared by the StatefulSet and DaemonSet controllers (Kubernetes'
pkg/controller/history and the history parts of pkg/controller/{statefulset,daemonset}).

A revision records the workload's pod template as the strategic merge patch that restores it,
exactly the shape Kubernetes stores and `kubectl rollout undo` sends back:

    {"spec": {"template": {...the template..., "$patch": "replace"}}}

Revisions are named `<owner>-<hash>`, carry the template's labels plus `controller-revision-hash`,
are controlled by the workload (ownerReference with controller: true) and numbered 1, 2, 3...;
going back to an older template re-numbers the matching revision instead of creating a new one.
Old revisions beyond spec.revisionHistoryLimit that no live pod uses are deleted.

The decisions are pure functions over dicts; the few API calls (create with hash-collision
probing, re-numbering, claiming) are small coroutines taking a ClusterClient.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable

from kubelab.client import APIError, ClusterClient
from kubelab.selectors import Selector

CONTROLLER_REVISION_HASH_LABEL = "controller-revision-hash"
MAX_PREFIX = 223  # ControllerRevisionName truncates the owner name to this length

# k8s.io/apimachinery/pkg/util/rand.SafeEncodeString's alphabet (no vowels, no 0/1/3)
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


# ------------------------------------------------------------------------------ hashing, names
def fnv32(data: bytes) -> int:
    """Go's hash/fnv New32 (FNV-1), which HashControllerRevision uses."""
    h = 0x811C9DC5
    for b in data:
        h = (h * 0x01000193) & 0xFFFFFFFF
        h ^= b
    return h


def fnv32a(data: bytes) -> int:
    """Go's hash/fnv New32a (FNV-1a), which controller.ComputeHash uses."""
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(s: str) -> str:
    """rand.SafeEncodeString: map each byte onto an alphabet that cannot spell words."""
    return "".join(_ALPHANUMS[ord(c) % len(_ALPHANUMS)] for c in s)


def canonical(data) -> bytes:
    """The bytes a revision's data is compared and hashed by: Go's json.Marshal of a
    map[string]interface{} (keys sorted, no spaces)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def hash_revision(data: dict, collision_count: int | None = None) -> str:
    """history.HashControllerRevision: FNV-1 of the data, then of the collision count."""
    raw = canonical(data)
    if collision_count is not None:
        raw += str(collision_count).encode()
    return safe_encode(str(fnv32(raw)))


def compute_template_hash(template: dict, collision_count: int | None = None) -> str:
    """controller.ComputeHash (DaemonSet revisions and pod labels): FNV-1a of the template,
    then of the collision count."""
    raw = canonical(template)
    if collision_count is not None:
        raw += str(collision_count).encode()
    return safe_encode(str(fnv32a(raw)))


def revision_name(owner_name: str, hash_: str) -> str:
    """history.ControllerRevisionName."""
    return f"{owner_name[:MAX_PREFIX]}-{hash_}"


# ------------------------------------------------------------------------------ revision data
def template_patch(obj: dict) -> dict:
    """getPatch: the strategic merge patch that puts obj's pod template back."""
    tpl = copy.deepcopy((obj.get("spec") or {}).get("template") or {})
    tpl["$patch"] = "replace"
    return {"spec": {"template": tpl}}


def template_from_data(data: dict | None) -> dict:
    """The pod template recorded in a revision's data (the `$patch` directive removed)."""
    tpl = copy.deepcopy(((data or {}).get("spec") or {}).get("template") or {})
    tpl.pop("$patch", None)
    return tpl


def apply_revision(obj: dict, revision: dict) -> dict:
    """ApplyRevision: a copy of obj with the template the revision recorded (what a strategic
    merge patch of the revision's data does, since it only replaces spec.template)."""
    out = copy.deepcopy(obj)
    out.setdefault("spec", {})["template"] = template_from_data(revision.get("data"))
    return out


def new_revision(owner: dict, revision: int, collision_count: int | None = None, *,
                 data: dict | None = None, hash_: str | None = None) -> dict:
    """history.NewControllerRevision for owner (a StatefulSet or DaemonSet dict): labels from the
    template plus the hash label, the owner's annotations, a controller reference to it."""
    md = owner["metadata"]
    data = template_patch(owner) if data is None else data
    h = hash_ if hash_ is not None else hash_revision(data, collision_count)
    tpl_labels = dict(((owner.get("spec") or {}).get("template") or {})
                      .get("metadata", {}).get("labels") or {})
    tpl_labels[CONTROLLER_REVISION_HASH_LABEL] = h
    meta = {"name": revision_name(md["name"], h), "namespace": md.get("namespace"),
            "labels": tpl_labels,
            "ownerReferences": [{"apiVersion": owner.get("apiVersion", "apps/v1"),
                                 "kind": owner.get("kind"), "name": md["name"],
                                 "uid": md.get("uid"), "controller": True,
                                 "blockOwnerDeletion": True}]}
    if md.get("annotations"):
        meta["annotations"] = dict(md["annotations"])
    return {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": meta,
            "data": data, "revision": revision}


# ------------------------------------------------------------------------------ ordering, equality
def sort_revisions(revisions: Iterable[dict]) -> list[dict]:
    """history.SortControllerRevisions: by revision, then creation time, then name."""
    return sorted(revisions, key=lambda r: (r.get("revision") or 0,
                                            r.get("metadata", {}).get("creationTimestamp") or "",
                                            r.get("metadata", {}).get("name", "")))


def next_revision(revisions: Iterable[dict]) -> int:
    """nextRevision: one more than the highest revision number, 1 for an empty history."""
    return max((r.get("revision") or 0 for r in revisions), default=0) + 1


def equal_revision(a: dict | None, b: dict | None) -> bool:
    """history.EqualRevision: same hash label (when both have one) and the same data."""
    if a is None or b is None:
        return a is b
    la = (a.get("metadata", {}).get("labels") or {}).get(CONTROLLER_REVISION_HASH_LABEL)
    lb = (b.get("metadata", {}).get("labels") or {}).get(CONTROLLER_REVISION_HASH_LABEL)
    if la and lb and la != lb:
        return False
    return canonical(a.get("data")) == canonical(b.get("data"))


def find_equal_revisions(revisions: Iterable[dict], needle: dict) -> list[dict]:
    """history.FindEqualRevisions: the revisions with needle's data, in the given order."""
    want = canonical(needle.get("data"))
    return [r for r in revisions if canonical(r.get("data")) == want]


def data_matches(obj: dict, revision: dict) -> bool:
    """Does the revision record obj's current template? (the DaemonSet's Match)."""
    return canonical(template_patch(obj)) == canonical(revision.get("data"))


def revisions_to_prune(revisions: Iterable[dict], live: set[str], limit: int) -> list[dict]:
    """The revisions to delete to keep at most `limit` revisions that nothing uses any more
    (truncateHistory): the oldest revisions not named in `live` (the current and update
    revisions and every pod's revision) beyond the limit."""
    history = [r for r in sort_revisions(revisions)
               if r.get("metadata", {}).get("name") not in live]
    extra = len(history) - max(0, limit)
    return history[:extra] if extra > 0 else []


# ------------------------------------------------------------------------------ API calls
async def create_revision(client: ClusterClient, owner: dict, revision: dict,
                          collision_count: int) -> tuple[dict, int]:
    """CreateControllerRevision: create the revision under `<owner>-<hash(data, collisions)>`;
    when that name is taken by a revision with other data (a hash collision) bump the collision
    count and try the next name. Returns (the stored revision, the collision count used)."""
    ns = owner["metadata"].get("namespace")
    for _ in range(100):
        clone = copy.deepcopy(revision)
        h = hash_revision(revision["data"], collision_count)
        clone["metadata"]["name"] = revision_name(owner["metadata"]["name"], h)
        try:
            return await client.create("ControllerRevision", clone, ns), collision_count
        except APIError as e:
            if e.code != 409 or e.reason not in ("AlreadyExists", ""):
                raise
            exists = await client.get_or_none("ControllerRevision", ns, clone["metadata"]["name"])
            if exists is None:
                continue
            if canonical(exists.get("data")) == canonical(clone["data"]):
                return exists, collision_count
            collision_count += 1
    raise RuntimeError(f"too many hash collisions creating a revision of "
                       f"{owner['metadata']['name']}")


async def update_revision_number(client: ClusterClient, revision: dict, number: int) -> dict:
    """UpdateControllerRevision: give an existing revision a new number (rolling back to it)."""
    if revision.get("revision") == number:
        return revision
    new = copy.deepcopy(revision)
    new["revision"] = number
    try:
        return await client.update("ControllerRevision", new)
    except APIError as e:
        if not e.conflict:
            raise
    fresh = await client.get("ControllerRevision", revision["metadata"].get("namespace"),
                             revision["metadata"]["name"])
    fresh["revision"] = number
    return await client.update("ControllerRevision", fresh)


# ------------------------------------------------------------------------------ claiming
def controller_of(obj: dict) -> dict | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def claim_decisions(owner: dict, selector: Selector, objects: Iterable[dict],
                    accept: Callable[[dict], bool] | None = None
                    ) -> tuple[list[dict], list[dict], list[dict]]:
    """ControllerRefManager.ClaimObject over many objects: (owned, to_adopt, to_release).
    Objects we control that still match stay owned; those that stopped matching are released
    (unless we are being deleted); matching orphans that are not being deleted are adopted;
    objects another controller owns are left alone."""
    uid = owner["metadata"].get("uid")
    deleting = bool(owner["metadata"].get("deletionTimestamp"))
    owned, adopt, release = [], [], []
    for o in objects:
        labels = o.get("metadata", {}).get("labels") or {}
        match = selector.matches(labels) and (accept is None or accept(o))
        ref = controller_of(o)
        if ref is not None:
            if ref.get("uid") != uid:
                continue
            if match:
                owned.append(o)
            elif not deleting:
                release.append(o)
            continue
        if deleting or not match or o.get("metadata", {}).get("deletionTimestamp"):
            continue
        adopt.append(o)
    return owned, adopt, release


async def claim(client: ClusterClient, kind: str, owner: dict, selector: Selector,
                objects: Iterable[dict], accept: Callable[[dict], bool] | None = None
                ) -> list[dict]:
    """Claim objects for owner (adopt matching orphans, release owned objects that no longer
    match) through strategic merge patches of metadata.ownerReferences, as Kubernetes does.
    Returns the objects owner controls afterwards."""
    owned, adopt, release = claim_decisions(owner, selector, objects, accept)
    md = owner["metadata"]
    if adopt:
        # canAdopt: recheck with a quorum read that the owner still exists and is not deleting
        fresh = await client.get_or_none(owner["kind"], md.get("namespace"), md["name"])
        if fresh is None or fresh["metadata"].get("uid") != md.get("uid") or \
                fresh["metadata"].get("deletionTimestamp"):
            adopt = []
    ref = {"apiVersion": owner.get("apiVersion", "apps/v1"), "kind": owner["kind"],
           "name": md["name"], "uid": md["uid"], "controller": True, "blockOwnerDeletion": True}
    for o in adopt:
        omd = o["metadata"]
        try:
            owned.append(await client.patch(
                kind, omd.get("namespace"), omd["name"],
                {"metadata": {"ownerReferences": [ref], "uid": omd.get("uid")}},
                patch_type="application/strategic-merge-patch+json"))
        except APIError as e:
            if not e.not_found:
                raise
    for o in release:
        omd = o["metadata"]
        try:
            await client.patch(kind, omd.get("namespace"), omd["name"],
                               {"metadata": {"ownerReferences": [{"$patch": "delete",
                                                                  "uid": md["uid"]}],
                                             "uid": omd.get("uid")}},
                               patch_type="application/strategic-merge-patch+json")
        except APIError as e:
            if not (e.not_found or e.code == 422):
                raise
    return owned
