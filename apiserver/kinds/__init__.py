"""The schema: one `Kind` entry per resource kind.

Each entry says everything the API server needs about a kind — group/version, plural and short
names, scope, subresources, defaults, validation, printer columns, field selectors, strategic
merge keys, create/update/delete hooks — and drives discovery, OpenAPI, validation, Table output
and storage. Kinds are defined in the modules of this package (one module per API group); nothing
kind-specific lives elsewhere in the API server.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Awaitable, Callable

from ..errors import Cause

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> datetime.datetime | None:
    if not s:
        return None
    try:
        return datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def human_age(ts: str | None) -> str:
    """kubectl's duration.HumanDuration for the AGE column."""
    t = parse_time(ts)
    if t is None:
        return "<unknown>"
    secs = int((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())
    return human_duration(secs)


def human_duration(secs: int) -> str:
    if secs < 0:
        secs = 0
    if secs < 120:
        return f"{secs}s"
    mins = secs // 60
    if mins < 10:
        s = secs % 60
        return f"{mins}m{s}s" if s else f"{mins}m"
    if mins < 180:
        return f"{mins}m"
    hours = secs // 3600
    if hours < 8:
        m = mins % 60
        return f"{hours}h{m}m" if m else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        h = hours % 24
        return f"{days}d{h}h" if h else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if years < 8:
        d = days % 365
        return f"{years}y{d}d" if d else f"{years}y"
    return f"{years}y"


@dataclasses.dataclass
class Column:
    name: str
    get: Callable[[dict], Any]
    type: str = "string"
    format: str = ""
    priority: int = 0
    description: str = ""

    def definition(self) -> dict:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description or self.name, "priority": self.priority}


NAME_COLUMN = Column("Name", lambda o: o["metadata"]["name"], format="name",
                     description="Name must be unique within a namespace.")
AGE_COLUMN = Column("Age", lambda o: human_age(o["metadata"].get("creationTimestamp")),
                    description="CreationTimestamp is a timestamp representing the server time "
                                "when this object was created.")


@dataclasses.dataclass
class ScaleSpec:
    """Where a kind keeps what autoscaling/v1 Scale shows."""
    replicas_path: tuple[str, ...] = ("spec", "replicas")
    status_replicas_path: tuple[str, ...] = ("status", "replicas")
    selector: Callable[[dict], str] | None = None


Hook = Callable[..., Awaitable[None]]


@dataclasses.dataclass
class Kind:
    kind: str
    plural: str
    group: str = ""
    version: str = "v1"
    singular: str = ""
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    # fill Kubernetes' defaults into obj, in place (on create and on every update)
    default: Callable[[dict], None] | None = None
    # return field causes; old is None on create
    validate: Callable[[dict, dict | None], list[Cause]] | None = None
    columns: list[Column] = dataclasses.field(default_factory=list)
    # extra field-selector fields beyond metadata.name / metadata.namespace
    field_labels: Callable[[dict], dict[str, str]] | None = None
    # does a change outside metadata/status bump metadata.generation?
    has_generation: bool = False
    scale: ScaleSpec | None = None
    # async hooks with access to the registry: before_create(reg, obj), before_update(reg,
    # new, old), after_delete(reg, obj)
    before_create: Hook | None = None
    before_update: Hook | None = None
    after_delete: Hook | None = None
    # protobuf message name (Kubernetes' own) for decoding protobuf request bodies
    proto: str = ""
    # the object keeps data outside spec (ConfigMap data etc.): fields compared for generation
    graceful_delete: bool = False
    # deletion held by something other than metadata.finalizers (Namespace: spec.finalizers);
    # marks obj as terminating in place and returns True while it must be kept
    hold_on_delete: Callable[[dict], bool] | None = None
    description: str = ""

    def __post_init__(self):
        if not self.singular:
            self.singular = self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`deployments.apps` style, as messages name resources."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def table_columns(self) -> list[Column]:
        cols = self.columns or [NAME_COLUMN, AGE_COLUMN]
        return cols

    def key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"/registry/{self.plural}/{namespace}/{name}"
        return f"/registry/{self.plural}/{name}"

    def prefix(self, namespace: str | None = None) -> str:
        if self.namespaced and namespace:
            return f"/registry/{self.plural}/{namespace}/"
        return f"/registry/{self.plural}/"

    def fields(self, obj: dict) -> dict[str, str]:
        md = obj.get("metadata", {})
        f = {"metadata.name": md.get("name", "")}
        if self.namespaced:
            f["metadata.namespace"] = md.get("namespace", "")
        if self.field_labels:
            f.update(self.field_labels(obj))
        return f


class Registry:
    """All kinds, looked up the ways clients name them."""

    def __init__(self):
        self.kinds: list[Kind] = []
        self._by_gvr: dict[tuple[str, str, str], Kind] = {}
        self._by_gvk: dict[tuple[str, str, str], Kind] = {}

    def add(self, k: Kind) -> Kind:
        self.kinds.append(k)
        self._by_gvr[(k.group, k.version, k.plural)] = k
        self._by_gvk[(k.group, k.version, k.kind)] = k
        return k

    def by_resource(self, group: str, version: str, plural: str) -> Kind | None:
        return self._by_gvr.get((group, version, plural))

    def by_kind(self, group: str, version: str, kind: str) -> Kind | None:
        return self._by_gvk.get((group, version, kind))

    def by_api_version(self, api_version: str, kind: str) -> Kind | None:
        group, _, version = api_version.rpartition("/")
        return self.by_kind(group, version, kind)

    def groups(self) -> dict[str, list[str]]:
        """group -> versions (preferred first), core group as ''."""
        out: dict[str, list[str]] = {}
        for k in self.kinds:
            vs = out.setdefault(k.group, [])
            if k.version not in vs:
                vs.append(k.version)
        return out


KINDS = Registry()


def get_path(obj: dict, path: tuple[str, ...], default=None):
    cur: Any = obj
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return default
        cur = cur[p]
    return cur


def set_path(obj: dict, path: tuple[str, ...], value) -> None:
    cur = obj
    for p in path[:-1]:
        cur = cur.setdefault(p, {})
    cur[path[-1]] = value


def load_all() -> Registry:
    """Import every kind module (each registers its kinds)."""
    from . import apps, batch, cluster, core, networking  # noqa: F401
    return KINDS
