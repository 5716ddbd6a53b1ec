"""kube-scheduler's decision logic without I/O: pod and node records, the scheduler cache's
per-node aggregates, the default profile's filter and score plugins and the "0/N nodes are
available" diagnosis. Everything here is a plain function or class over Kubernetes-shaped
dicts, so it is tested on dict fixtures; scheduler/scheduler.py wires it to informers and the
API.

Plugins, in kube-scheduler's order and with its default weights:
  filters  NodeUnschedulable, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit,
           VolumeBinding, PodTopologySpread, InterPodAffinity
  scores   TaintToleration ×3, NodeAffinity ×2, NodeResourcesFit (LeastAllocated) ×1,
           PodTopologySpread ×2 (system default constraints spread pods of the same
           Service/ReplicaSet/StatefulSet/ReplicationController), InterPodAffinity ×2,
           NodeResourcesBalancedAllocation ×1
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, Protocol

from kubelab.selectors import Requirement, Selector, SelectorError, selector_from_label_selector

MAX_NODE_SCORE = 100
DEFAULT_MILLI_CPU_REQUEST = 100  # non-zero request used for scoring pods without requests
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
HARD_POD_AFFINITY_WEIGHT = 1
SCHEDULER_NAME = "default-scheduler"

# framework status codes
UNSCHEDULABLE = 1  # preemption might help
UNRESOLVABLE = 2   # UnschedulableAndUnresolvable: preemption cannot help

# kube-scheduler's reason texts (they appear verbatim in FailedScheduling events)
ERR_REASON_UNSCHEDULABLE = "node(s) were unschedulable"
ERR_REASON_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
ERR_REASON_NODE_PORTS = "node(s) didn't have free ports for the requested pod ports"
ERR_REASON_TOO_MANY_PODS = "Too many pods"
ERR_REASON_AFFINITY = "node(s) didn't match pod affinity rules"
ERR_REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
ERR_REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
ERR_REASON_SPREAD = "node(s) didn't match pod topology spread constraints"
ERR_REASON_SPREAD_LABEL = ERR_REASON_SPREAD + " (missing required label)"
ERR_REASON_VOLUME_NODE_CONFLICT = "node(s) had volume node affinity conflict"
ERR_REASON_VOLUME_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
ERR_REASON_PV_NOT_EXIST = "pvc(s) bound to non-existent pv(s)"
ERR_UNBOUND_IMMEDIATE_PVC = "pod has unbound immediate PersistentVolumeClaims"
ERR_NO_NODES_AVAILABLE = "no nodes available to schedule pods"
PREEMPTION_NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_PREEMPTION_VICTIMS = "No preemption victims found for incoming pod"
NOT_ELIGIBLE_NEVER = "not eligible due to preemptionPolicy=Never."

TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_ZONE = "topology.kubernetes.io/zone"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"

WEIGHTS = {"TaintToleration": 3, "NodeAffinity": 2, "NodeResourcesFit": 1,
           "PodTopologySpread": 2, "InterPodAffinity": 2, "NodeResourcesBalancedAllocation": 1}


def untolerated_taint_reason(key: str, value: str) -> str:
    return f"node(s) had untolerated taint {{{key}: {value}}}"


# =========================================================================== quantities
_QTY = re.compile(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE]|)$")
_SUFFIX = {"": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
           "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
           "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
           "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
           "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}


@functools.lru_cache(maxsize=8192)
def _parse_quantity(s: str) -> Decimal:
    m = _QTY.match(s.strip())
    if not m:
        return Decimal(0)
    try:
        num = Decimal(m.group(1))
    except InvalidOperation:
        return Decimal(0)
    suf = m.group(2)
    if suf[:1] in ("e", "E") and len(suf) > 1 and suf[1:].lstrip("+-").isdigit():
        return num * (Decimal(10) ** int(suf[1:]))
    return num * _SUFFIX.get(suf, Decimal(1))


def parse_quantity(v: Any) -> Decimal:
    """A resource.Quantity ("100m", "1.5", "128Mi", "1e3", 2) as an exact Decimal."""
    if isinstance(v, bool) or v is None:
        return Decimal(0)
    if isinstance(v, (int, float)):
        return Decimal(str(v))
    return _parse_quantity(str(v))


def resource_amount(name: str, v: Any) -> int:
    """Kubernetes' integer accounting: millicores for cpu (MilliValue), whole units for the
    rest (Value), both rounded up."""
    q = parse_quantity(v)
    if name == "cpu":
        q = q * 1000
    return int(q.to_integral_value(rounding=ROUND_CEILING))


# =========================================================================== pod records
def _add(into: dict[str, int], other: dict[str, int]) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


def _max_into(into: dict[str, int], other: dict[str, int]) -> None:
    for k, v in other.items():
        if v > into.get(k, 0):
            into[k] = v


def _container_requests(c: dict, nonzero: bool) -> dict[str, int]:
    reqs = ((c.get("resources") or {}).get("requests")) or {}
    if nonzero:
        return {"cpu": resource_amount("cpu", reqs["cpu"]) if "cpu" in reqs
                else DEFAULT_MILLI_CPU_REQUEST,
                "memory": resource_amount("memory", reqs["memory"]) if "memory" in reqs
                else DEFAULT_MEMORY_REQUEST}
    return {k: resource_amount(k, v) for k, v in reqs.items()}


def pod_requests(spec: dict, nonzero: bool = False) -> dict[str, int]:
    """The pod's effective requests (resourcehelper.PodRequests): app containers and sidecars
    (restartable init containers) add up; each ordinary init container runs alone beside the
    sidecars started before it, so the pod needs the max of the sum and every init step; pod
    overhead is added on top. `nonzero` applies the scoring defaults (100m cpu, 200Mi memory)
    to containers that request nothing."""
    reqs: dict[str, int] = {}
    for c in spec.get("containers") or []:
        _add(reqs, _container_requests(c, nonzero))
    sidecars: dict[str, int] = {}
    init_max: dict[str, int] = {}
    for c in spec.get("initContainers") or []:
        r = _container_requests(c, nonzero)
        if c.get("restartPolicy") == "Always":
            _add(reqs, r)
            _add(sidecars, r)
            step = dict(sidecars)
        else:
            step = dict(r)
            _add(step, sidecars)
        _max_into(init_max, step)
    _max_into(reqs, init_max)
    overhead = spec.get("overhead") or {}
    if overhead:
        _add(reqs, {k: resource_amount(k, v) for k, v in overhead.items()
                    if not nonzero or k in ("cpu", "memory")})
    return reqs


Toleration = tuple  # (key, operator, value, effect)


def _tolerations(spec: dict) -> tuple[Toleration, ...]:
    out = []
    for t in spec.get("tolerations") or []:
        if isinstance(t, dict):
            out.append((t.get("key") or "", t.get("operator") or "Equal", t.get("value") or "",
                        t.get("effect") or ""))
    return tuple(out)


def toleration_tolerates(t: Toleration, key: str, value: str, effect: str) -> bool:
    """v1.Toleration.ToleratesTaint: an empty effect matches every effect, an empty key (with
    Exists) every key; Equal compares values, Exists ignores them."""
    tkey, op, tvalue, teffect = t
    if teffect and teffect != effect:
        return False
    if tkey and tkey != key:
        return False
    if op == "Equal":
        return tvalue == value
    return op == "Exists"


def tolerates(tolerations: Iterable[Toleration], key: str, value: str, effect: str) -> bool:
    return any(toleration_tolerates(t, key, value, effect) for t in tolerations)


_NODE_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!",
             "Gt": "gt", "Lt": "lt"}


@dataclasses.dataclass(frozen=True)
class NodeSelectorTerm:
    """One nodeSelectorTerm: its matchExpressions (node labels) and matchFields
    (metadata.name) are ANDed; an empty term matches nothing."""
    exprs: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()
    valid: bool = True

    @classmethod
    def parse(cls, term: dict | None) -> NodeSelectorTerm:
        term = term or {}
        try:
            exprs = tuple(cls._req(e) for e in term.get("matchExpressions") or [])
            fields = tuple(cls._req(e) for e in term.get("matchFields") or [])
        except (SelectorError, KeyError, TypeError, ValueError):
            return cls(valid=False)
        return cls(exprs, fields)

    @staticmethod
    def _req(e: dict) -> Requirement:
        op = _NODE_OPS.get(e.get("operator"))
        if op is None:
            raise SelectorError(f"{e.get('operator')!r} is not a valid node selector operator")
        vals = tuple(str(v) for v in e.get("values") or ())
        if op in ("gt", "lt"):
            if len(vals) != 1:
                raise ValueError("Gt/Lt need exactly one value")
            int(vals[0])
        return Requirement(e.get("key") or "", op, vals)

    def empty(self) -> bool:
        return not self.exprs and not self.fields

    def matches(self, labels: dict, name: str) -> bool:
        if not self.valid or self.empty():
            return False
        for r in self.exprs:
            if not r.matches(labels):
                return False
        if self.fields:
            fields = {"metadata.name": name}
            for r in self.fields:
                if not r.matches(fields):
                    return False
        return True


@dataclasses.dataclass(frozen=True)
class NodeAffinityRequirement:
    """spec.nodeSelector AND spec.affinity.nodeAffinity.required (terms ORed)."""
    node_selector: tuple[tuple[str, str], ...] = ()
    terms: tuple[NodeSelectorTerm, ...] | None = None  # None: no required node affinity

    @classmethod
    def of(cls, spec: dict) -> NodeAffinityRequirement:
        sel = tuple(sorted((str(k), str(v)) for k, v in (spec.get("nodeSelector") or {}).items()))
        na = ((spec.get("affinity") or {}).get("nodeAffinity") or {})
        req = na.get("requiredDuringSchedulingIgnoredDuringExecution")
        terms = None
        if req is not None:
            terms = tuple(NodeSelectorTerm.parse(t) for t in req.get("nodeSelectorTerms") or [])
        return cls(sel, terms)

    def always(self) -> bool:
        return not self.node_selector and self.terms is None

    def matches(self, labels: dict, name: str) -> bool:
        for k, v in self.node_selector:
            if labels.get(k) != v:
                return False
        if self.terms is None:
            return True
        return any(t.matches(labels, name) for t in self.terms)


@dataclasses.dataclass(frozen=True)
class AffinityTerm:
    """A PodAffinityTerm resolved against the pod that carries it: the namespaces it looks in
    (the pod's own when none are given) or a namespace selector, a label selector and the
    topology key."""
    namespaces: frozenset
    ns_selector: Selector | None
    selector: Selector
    topology_key: str
    weight: int = 0

    @classmethod
    def parse(cls, owner_ns: str, owner_labels: dict, term: dict,
              weight: int = 0) -> AffinityTerm:
        try:
            sel = selector_from_label_selector(term.get("labelSelector"))
        except SelectorError:
            sel = Selector(nothing=True)
        extra = []
        for k in term.get("matchLabelKeys") or []:
            if k in owner_labels:
                extra.append(Requirement(k, "in", (str(owner_labels[k]),)))
        for k in term.get("mismatchLabelKeys") or []:
            if k in owner_labels:
                extra.append(Requirement(k, "notin", (str(owner_labels[k]),)))
        if extra and not sel.nothing:
            sel = Selector(sel.requirements + tuple(extra))
        names = term.get("namespaces") or []
        nss = term.get("namespaceSelector")
        ns_sel = None
        if nss is not None:
            try:
                ns_sel = selector_from_label_selector(nss)
            except SelectorError:
                ns_sel = None
        if not names and nss is None:
            names = [owner_ns]
        return cls(frozenset(names), ns_sel, sel, term.get("topologyKey") or "", weight)

    def matches(self, ns: str, labels: dict, ns_labels: Callable[[str], dict]) -> bool:
        if ns in self.namespaces or (self.ns_selector is not None and
                                     self.ns_selector.matches(ns_labels(ns))):
            return self.selector.matches(labels)
        return False


def _affinity_terms(ns: str, labels: dict, block: dict | None
                    ) -> tuple[tuple[AffinityTerm, ...], tuple[AffinityTerm, ...]]:
    block = block or {}
    req = tuple(AffinityTerm.parse(ns, labels, t)
                for t in block.get("requiredDuringSchedulingIgnoredDuringExecution") or []
                if isinstance(t, dict))
    pref = []
    for w in block.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        if isinstance(w, dict) and w.get("weight"):
            pref.append(AffinityTerm.parse(ns, labels, w.get("podAffinityTerm") or {},
                                           int(w["weight"])))
    return req, tuple(pref)


@dataclasses.dataclass(frozen=True)
class SpreadConstraint:
    max_skew: int
    topology_key: str
    hard: bool  # DoNotSchedule
    selector: Selector
    min_domains: int = 1
    honor_node_affinity: bool = True
    honor_taints: bool = False


def _spread_constraints(labels: dict, spec: dict) -> tuple[SpreadConstraint, ...]:
    out = []
    for c in spec.get("topologySpreadConstraints") or []:
        if not isinstance(c, dict):
            continue
        try:
            sel = selector_from_label_selector(c.get("labelSelector"))
        except SelectorError:
            sel = Selector(nothing=True)
        extra = tuple(Requirement(k, "in", (str(labels[k]),))
                      for k in c.get("matchLabelKeys") or [] if k in labels)
        if extra and not sel.nothing:
            sel = Selector(sel.requirements + extra)
        out.append(SpreadConstraint(
            max_skew=int(c.get("maxSkew") or 1), topology_key=c.get("topologyKey") or "",
            hard=(c.get("whenUnsatisfiable") or "DoNotSchedule") == "DoNotSchedule",
            selector=sel, min_domains=int(c.get("minDomains") or 1),
            honor_node_affinity=(c.get("nodeAffinityPolicy") or "Honor") == "Honor",
            honor_taints=(c.get("nodeTaintsPolicy") or "Ignore") == "Honor"))
    return tuple(out)


HostPort = tuple  # (ip, protocol, port)


def _host_ports(spec: dict) -> tuple[HostPort, ...]:
    out = []
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            hp = p.get("hostPort") or 0
            if isinstance(hp, int) and hp > 0:
                out.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", hp))
    return tuple(out)


def pod_key(pod: dict) -> str:
    md = pod.get("metadata", {})
    return f"{md.get('namespace')}/{md.get('name')}"


def is_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class PodInfo:
    """A pod with everything the plugins need parsed once (framework.PodInfo)."""

    __slots__ = (
        "claims",
        "controller",
        "fingerprint",
        "has_pod_affinity",
        "host_ports",
        "key",
        "labels",
        "name",
        "node_affinity",
        "node_name",
        "ns",
        "nz_cpu",
        "nz_mem",
        "pod",
        "preemption_never",
        "preferred_affinity",
        "preferred_anti_affinity",
        "preferred_node_terms",
        "priority",
        "req_cpu",
        "req_mem",
        "requests",
        "required_affinity",
        "required_anti_affinity",
        "spread",
        "terminating",
        "tolerations",
        "uid",
    )

    def __init__(self, pod: dict):
        md = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.ns = md.get("namespace") or "default"
        self.name = md.get("name") or ""
        self.key = f"{self.ns}/{self.name}"
        self.uid = md.get("uid") or ""
        self.labels = md.get("labels") or {}
        self.node_name = spec.get("nodeName") or ""
        self.priority = int(spec.get("priority") or 0)
        self.terminating = bool(md.get("deletionTimestamp"))
        self.requests = pod_requests(spec)
        self.req_cpu = self.requests.get("cpu", 0)
        self.req_mem = self.requests.get("memory", 0)
        nz = pod_requests(spec, nonzero=True)
        self.nz_cpu = nz.get("cpu", 0)
        self.nz_mem = nz.get("memory", 0)
        self.host_ports = _host_ports(spec)
        self.tolerations = _tolerations(spec)
        self.node_affinity = NodeAffinityRequirement.of(spec)
        aff = spec.get("affinity") or {}
        pref = []
        for t in ((aff.get("nodeAffinity") or {})
                  .get("preferredDuringSchedulingIgnoredDuringExecution") or []):
            term = NodeSelectorTerm.parse((t or {}).get("preference"))
            if (t or {}).get("weight") and not term.empty():
                pref.append((int(t["weight"]), term))
        self.preferred_node_terms = tuple(pref)
        self.required_affinity, self.preferred_affinity = _affinity_terms(
            self.ns, self.labels, aff.get("podAffinity"))
        self.required_anti_affinity, self.preferred_anti_affinity = _affinity_terms(
            self.ns, self.labels, aff.get("podAntiAffinity"))
        self.has_pod_affinity = aff.get("podAffinity") is not None or \
            aff.get("podAntiAffinity") is not None
        self.spread = _spread_constraints(self.labels, spec)
        self.claims = tuple(v["persistentVolumeClaim"].get("claimName") or ""
                            for v in spec.get("volumes") or []
                            if isinstance(v, dict) and isinstance(v.get("persistentVolumeClaim"),
                                                                  dict))
        self.controller = next((r for r in md.get("ownerReferences") or []
                                if isinstance(r, dict) and r.get("controller")), None)
        self.preemption_never = spec.get("preemptionPolicy") == "Never"

    def has_requests(self) -> bool:
        return any(v for v in self.requests.values())


# =========================================================================== node records
def _node_taints(node: dict) -> list[tuple[str, str, str]]:
    taints = [(t.get("key") or "", t.get("value") or "", t.get("effect") or "")
              for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict)]
    ready = None
    for c in (node.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            ready = c.get("status")
    if ready != "True":
        # TaintNodesByCondition: the node lifecycle controller taints a node that is not Ready
        # (or has not reported) so nothing new lands there; the scheduler filters on the taint.
        key = TAINT_UNREACHABLE if ready == "Unknown" else TAINT_NOT_READY
        if not any(k == key and e == "NoSchedule" for k, _, e in taints):
            taints.append((key, "", "NoSchedule"))
    return taints


class NodeInfo:
    """A node and the pods on it (bound and assumed), with the aggregates the filters and
    scores read (framework.NodeInfo): requested and non-zero requested resources, used host
    ports, and which pods carry pod (anti-)affinity."""

    __slots__ = (
        "alloc_cpu",
        "alloc_mem",
        "allocatable",
        "allowed_pods",
        "filter_taints",
        "fingerprint",
        "labels",
        "n_affinity",
        "n_required_anti",
        "name",
        "node",
        "nz_cpu",
        "nz_mem",
        "pods",
        "prefer_taints",
        "req_cpu",
        "req_mem",
        "requested",
        "unschedulable",
        "used_ports",
    )

    def __init__(self, name: str, node: dict | None = None):
        self.name = name
        self.node: dict | None = None
        self.labels: dict = {}
        self.allocatable: dict[str, int] = {}
        self.allowed_pods = 0
        self.unschedulable = False
        self.filter_taints: tuple = ()
        self.prefer_taints: tuple = ()
        self.pods: dict[str, PodInfo] = {}
        self.requested: dict[str, int] = {}
        self.alloc_cpu = self.alloc_mem = self.req_cpu = self.req_mem = 0
        self.nz_cpu = 0
        self.nz_mem = 0
        self.used_ports: Counter = Counter()
        self.n_affinity = 0
        self.n_required_anti = 0
        self.fingerprint: tuple = ()
        if node is not None:
            self.set_node(node)

    def set_node(self, node: dict) -> bool:
        """Take a new version of the Node; True when something scheduling depends on
        changed (not just a heartbeat)."""
        self.node = node
        self.labels = (node.get("metadata") or {}).get("labels") or {}
        alloc = (node.get("status") or {}).get("allocatable") or {}
        self.allocatable = {k: resource_amount(k, v) for k, v in alloc.items()}
        self.allowed_pods = self.allocatable.get("pods", 0)
        self.alloc_cpu = self.allocatable.get("cpu", 0)
        self.alloc_mem = self.allocatable.get("memory", 0)
        self.unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
        taints = _node_taints(node)
        self.filter_taints = tuple(t for t in taints if t[2] in ("NoSchedule", "NoExecute"))
        self.prefer_taints = tuple(t for t in taints if t[2] == "PreferNoSchedule")
        fp = (tuple(sorted(self.labels.items())), tuple(sorted(self.allocatable.items())),
              self.unschedulable, tuple(taints))
        changed = fp != self.fingerprint
        self.fingerprint = fp
        return changed

    def add_pod(self, pi: PodInfo) -> None:
        self.pods[pi.key] = pi
        _add(self.requested, pi.requests)
        self.req_cpu += pi.req_cpu
        self.req_mem += pi.req_mem
        self.nz_cpu += pi.nz_cpu
        self.nz_mem += pi.nz_mem
        for hp in pi.host_ports:
            self.used_ports[hp] += 1
        if pi.has_pod_affinity:
            self.n_affinity += 1
        if pi.required_anti_affinity:
            self.n_required_anti += 1

    def remove_pod(self, key: str) -> PodInfo | None:
        pi = self.pods.pop(key, None)
        if pi is None:
            return None
        for k, v in pi.requests.items():
            self.requested[k] = self.requested.get(k, 0) - v
        self.req_cpu -= pi.req_cpu
        self.req_mem -= pi.req_mem
        self.nz_cpu -= pi.nz_cpu
        self.nz_mem -= pi.nz_mem
        for hp in pi.host_ports:
            self.used_ports[hp] -= 1
            if self.used_ports[hp] <= 0:
                del self.used_ports[hp]
        if pi.has_pod_affinity:
            self.n_affinity -= 1
        if pi.required_anti_affinity:
            self.n_required_anti -= 1
        return pi

    def without(self, keys: Iterable[str]) -> NodeInfo:
        """A copy without some pods (preemption's what-if)."""
        out = NodeInfo(self.name)
        for s in ("node", "labels", "allocatable", "allowed_pods", "unschedulable",
                  "alloc_cpu", "alloc_mem",
                  "filter_taints", "prefer_taints", "fingerprint"):
            setattr(out, s, getattr(self, s))
        drop = set(keys)
        for k, pi in self.pods.items():
            if k not in drop:
                out.add_pod(pi)
        return out

    def port_conflict(self, ip: str, proto: str, port: int) -> bool:
        """HostPortInfo.CheckConflict: 0.0.0.0 conflicts with any address on the same
        protocol/port; a specific address with itself and 0.0.0.0."""
        for (uip, uproto, uport) in self.used_ports:
            if uport == port and uproto == proto and \
                    (ip == "0.0.0.0" or uip == "0.0.0.0" or uip == ip):
                return True
        return False


# =========================================================================== cluster state
class SelectorCounts:
    """Per node, how many non-terminating pods of a namespace match a selector; kept up to
    date as pods come and go, so spreading costs O(nodes) per decision rather than
    O(pods)."""

    def __init__(self, limit: int = 256):
        self.limit = limit
        self._by_ns: dict[str, dict[Selector, Counter]] = {}
        self._size = 0

    def get(self, state: ClusterState, ns: str, sel: Selector) -> Counter:
        per_ns = self._by_ns.setdefault(ns, {})
        c = per_ns.get(sel)
        if c is None:
            if self._size >= self.limit:
                self._by_ns = {ns: {}}
                per_ns = self._by_ns[ns]
                self._size = 0
            c = Counter()
            for pi in state.pods.values():
                if pi.ns == ns and not pi.terminating and sel.matches(pi.labels):
                    c[pi.node_name] += 1
            per_ns[sel] = c
            self._size += 1
        return c

    def update(self, pi: PodInfo, delta: int) -> None:
        if pi.terminating:
            return
        per_ns = self._by_ns.get(pi.ns)
        if not per_ns:
            return
        for sel, c in per_ns.items():
            if sel.matches(pi.labels):
                c[pi.node_name] += delta

    def clear(self) -> None:
        self._by_ns = {}
        self._size = 0


class ClusterState:
    """The scheduler cache: nodes, pods bound to them and pods assumed to be bound (decided,
    binding in flight), so back-to-back decisions never overcommit a node."""

    def __init__(self):
        self.nodes: dict[str, NodeInfo] = {}
        self.pods: dict[str, PodInfo] = {}
        self.assumed: set[str] = set()
        self.with_affinity: dict[str, PodInfo] = {}
        self.with_required_anti: dict[str, PodInfo] = {}
        self.counts = SelectorCounts()
        self._node_list: list[NodeInfo] | None = None

    # ----------------------------------------------------------------- nodes
    def node_list(self) -> list[NodeInfo]:
        if self._node_list is None:
            self._node_list = [ni for _, ni in sorted(self.nodes.items())
                               if ni.node is not None]
        return self._node_list

    def set_node(self, node: dict) -> bool:
        name = node["metadata"]["name"]
        ni = self.nodes.get(name)
        if ni is None:
            ni = self.nodes[name] = NodeInfo(name)
            self._node_list = None
        elif ni.node is None:
            self._node_list = None
        return ni.set_node(node)

    def remove_node(self, name: str) -> None:
        ni = self.nodes.get(name)
        if ni is None:
            return
        self._node_list = None
        if ni.pods:
            ni.node = None  # keep the pods' accounting until they go
        else:
            del self.nodes[name]

    # ----------------------------------------------------------------- pods
    def _insert(self, pi: PodInfo) -> None:
        self.pods[pi.key] = pi
        ni = self.nodes.get(pi.node_name)
        if ni is None:
            ni = self.nodes[pi.node_name] = NodeInfo(pi.node_name)
        ni.add_pod(pi)
        if pi.has_pod_affinity:
            self.with_affinity[pi.key] = pi
        if pi.required_anti_affinity:
            self.with_required_anti[pi.key] = pi
        self.counts.update(pi, 1)

    def _drop(self, key: str) -> PodInfo | None:
        pi = self.pods.pop(key, None)
        if pi is None:
            return None
        ni = self.nodes.get(pi.node_name)
        if ni is not None:
            ni.remove_pod(key)
            if ni.node is None and not ni.pods:
                del self.nodes[pi.node_name]
        self.with_affinity.pop(key, None)
        self.with_required_anti.pop(key, None)
        self.counts.update(pi, -1)
        return pi

    def add_pod(self, pod: dict) -> PodInfo | None:
        """A bound pod from the API (added or updated). Terminal pods hold no resources and
        are dropped, as kube-scheduler's informer filters them out."""
        key = pod_key(pod)
        spec = pod.get("spec") or {}
        if is_terminal(pod) or not spec.get("nodeName"):
            self.remove_pod(key)
            return None
        self.assumed.discard(key)
        old = self.pods.get(key)
        md = pod.get("metadata") or {}
        if old is not None and old.node_name == spec["nodeName"] and \
                old.terminating == bool(md.get("deletionTimestamp")) and \
                old.labels == (md.get("labels") or {}) and old.pod.get("spec") == spec:
            old.pod = pod  # a status update: nothing the plugins read has changed
            return old
        self._drop(key)
        pi = PodInfo(pod)
        self._insert(pi)
        return pi

    def remove_pod(self, key: str) -> PodInfo | None:
        self.assumed.discard(key)
        return self._drop(key)

    def assume(self, pod: dict, node_name: str, pi: PodInfo | None = None) -> PodInfo:
        """Count a pod against a node before the API has confirmed the binding (`pi`: the
        decision's PodInfo of this pod, reused)."""
        bound = dict(pod)
        bound["spec"] = dict(pod.get("spec") or {}, nodeName=node_name)
        key = pod_key(pod)
        self._drop(key)
        if pi is None or pi.key != key:
            pi = PodInfo(bound)
        else:
            pi.pod, pi.node_name = bound, node_name
        self._insert(pi)
        self.assumed.add(key)
        return pi

    def forget(self, key: str) -> None:
        """Undo assume() after a failed binding."""
        if key in self.assumed:
            self.assumed.discard(key)
            self._drop(key)

    def is_assumed(self, key: str) -> bool:
        return key in self.assumed


# =========================================================================== listers
class Store(Protocol):
    def get(self, namespace: str | None, name: str) -> dict | None: ...
    def list(self, namespace: str | None = None) -> list[dict]: ...


class DictStore:
    """A Store over a list of objects (tests; the process uses informers)."""

    def __init__(self, objs: Iterable[dict] = ()):
        self.cache: dict[str, dict] = {}
        for o in objs:
            self.put(o)

    @staticmethod
    def _key(ns: str | None, name: str) -> str:
        return f"{ns}/{name}" if ns else name

    def put(self, o: dict) -> None:
        md = o.get("metadata", {})
        self.cache[self._key(md.get("namespace"), md.get("name", ""))] = o

    def get(self, namespace: str | None, name: str) -> dict | None:
        return self.cache.get(self._key(namespace, name))

    def list(self, namespace: str | None = None) -> list[dict]:
        if namespace is None:
            return list(self.cache.values())
        return [o for o in self.cache.values()
                if o.get("metadata", {}).get("namespace") == namespace]


@dataclasses.dataclass
class Listers:
    """Read access to the objects some plugins consult besides pods and nodes."""
    services: Store = dataclasses.field(default_factory=DictStore)
    replicasets: Store = dataclasses.field(default_factory=DictStore)
    statefulsets: Store = dataclasses.field(default_factory=DictStore)
    replicationcontrollers: Store = dataclasses.field(default_factory=DictStore)
    pvcs: Store = dataclasses.field(default_factory=DictStore)
    pvs: Store = dataclasses.field(default_factory=DictStore)
    storageclasses: Store = dataclasses.field(default_factory=DictStore)
    namespaces: Store = dataclasses.field(default_factory=DictStore)
    # bumped when Services or controllers change: cached default spread selectors go stale
    generation: int = 0
    _selectors: dict = dataclasses.field(default_factory=dict, repr=False)

    def changed(self) -> None:
        self.generation += 1

    def spread_selector(self, pi: PodInfo) -> Selector:
        """default_spread_selector, cached per (namespace, labels, controller) until a
        Service or controller changes: pods of one workload share it."""
        ref = pi.controller or {}
        key = (pi.ns, tuple(sorted(pi.labels.items())), ref.get("kind"), ref.get("name"),
               ref.get("apiVersion"))
        hit = self._selectors.get(key)
        if hit is not None and hit[0] == self.generation:
            return hit[1]
        if len(self._selectors) > 4096:
            self._selectors.clear()
        sel = default_spread_selector(pi, self)
        self._selectors[key] = (self.generation, sel)
        return sel

    def namespace_labels(self, ns: str) -> dict:
        o = self.namespaces.get(None, ns)
        return ((o or {}).get("metadata") or {}).get("labels") or {}


def default_spread_selector(pi: PodInfo, listers: Listers) -> Selector:
    """helper.DefaultSelector: the union of the selectors of the Services selecting the pod
    and of its controller (ReplicationController, ReplicaSet or StatefulSet)."""
    label_set: dict[str, str] = {}
    for svc in listers.services.list(pi.ns):
        sel = (svc.get("spec") or {}).get("selector") or {}
        if sel and all(pi.labels.get(k) == str(v) for k, v in sel.items()):
            label_set.update({k: str(v) for k, v in sel.items()})
    reqs = [Requirement(k, "=", (v,)) for k, v in sorted(label_set.items())]
    ref = pi.controller
    if ref:
        kind, group = ref.get("kind"), (ref.get("apiVersion") or "").rpartition("/")[0]
        if kind == "ReplicationController" and group == "":
            rc = listers.replicationcontrollers.get(pi.ns, ref.get("name", ""))
            if rc:
                label_set.update({k: str(v) for k, v in
                                  ((rc.get("spec") or {}).get("selector") or {}).items()})
                reqs = [Requirement(k, "=", (v,)) for k, v in sorted(label_set.items())]
        elif kind in ("ReplicaSet", "StatefulSet") and group == "apps":
            store = listers.replicasets if kind == "ReplicaSet" else listers.statefulsets
            owner = store.get(pi.ns, ref.get("name", ""))
            if owner:
                try:
                    s = selector_from_label_selector((owner.get("spec") or {}).get("selector"))
                    if not s.nothing:
                        reqs.extend(s.requirements)
                except SelectorError:
                    pass
    return Selector(tuple(sorted(set(reqs), key=str)))


DEFAULT_SPREAD = ((LABEL_HOSTNAME, 3), (LABEL_ZONE, 5))  # system default constraints


# =========================================================================== the cycle
@dataclasses.dataclass(frozen=True)
class Status:
    code: int
    reasons: tuple[str, ...]
    plugin: str


@dataclasses.dataclass
class ClaimPlan:
    """What VolumeBinding must do for an unbound WaitForFirstConsumer claim on the chosen
    node: bind it to a matching PersistentVolume, or ask for one to be provisioned there."""
    pvc: dict
    pv: dict | None = None  # static PV to bind; None = provision (selected-node annotation)


class VolumeState:
    """VolumeBinding's PreFilter result: bound claims (their PVs' node affinity) and unbound
    delayed-binding claims (a matching PV or a provisioner for the node)."""

    def __init__(self):
        self.bound_pvs: list[dict | None] = []  # None: PV missing
        self.unbound: list[dict] = []

    @staticmethod
    def pv_fits(pv: dict, ni: NodeInfo) -> bool:
        req = (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required"))
        if not req:
            return True
        terms = [NodeSelectorTerm.parse(t) for t in req.get("nodeSelectorTerms") or []]
        return any(t.matches(ni.labels, ni.name) for t in terms)


BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")


def claim_class(pvc: dict, listers: Listers) -> str:
    """The claim's StorageClass: the beta annotation, spec.storageClassName (even ""), or,
    when neither is set, the default class (as DefaultStorageClass admission and the PV
    controller's retroactive assignment would give it)."""
    ann = ((pvc.get("metadata") or {}).get("annotations") or {})
    if BETA_CLASS_ANNOTATION in ann:
        return ann[BETA_CLASS_ANNOTATION]
    spec = pvc.get("spec") or {}
    if spec.get("storageClassName") is not None:
        return spec["storageClassName"]
    defaults = [sc for sc in listers.storageclasses.list()
                if any(((sc.get("metadata") or {}).get("annotations") or {}).get(a) == "true"
                       for a in DEFAULT_CLASS_ANNOTATIONS)]
    if not defaults:
        return ""
    newest = max(defaults, key=lambda sc: (sc["metadata"].get("creationTimestamp") or "",
                                           sc["metadata"]["name"]))
    return newest["metadata"]["name"]


def pv_class(pv: dict) -> str:
    ann = ((pv.get("metadata") or {}).get("annotations") or {})
    return ann.get(BETA_CLASS_ANNOTATION) or (pv.get("spec") or {}).get("storageClassName") or ""


def _pvc_request(pvc: dict) -> int:
    return resource_amount("storage", ((((pvc.get("spec") or {}).get("resources") or {})
                                        .get("requests") or {}).get("storage")) or 0)


def _pv_matches_claim(pv: dict, pvc: dict, cls: str) -> bool:
    spec, cspec = pv.get("spec") or {}, pvc.get("spec") or {}
    if (pv.get("status") or {}).get("phase", "Available") != "Available":
        return False
    ref = spec.get("claimRef")
    md = pvc.get("metadata") or {}
    if ref and (ref.get("name") != md.get("name") or ref.get("namespace") != md.get("namespace")):
        return False
    if pv_class(pv) != cls:
        return False
    if (spec.get("volumeMode") or "Filesystem") != (cspec.get("volumeMode") or "Filesystem"):
        return False
    if not set(cspec.get("accessModes") or []) <= set(spec.get("accessModes") or []):
        return False
    cap = resource_amount("storage", (spec.get("capacity") or {}).get("storage") or 0)
    if cap < _pvc_request(pvc):
        return False
    sel = cspec.get("selector")
    if sel is not None:
        try:
            if not selector_from_label_selector(sel).matches(
                    (pv.get("metadata") or {}).get("labels") or {}):
                return False
        except SelectorError:
            return False
    return True


class Cycle:
    """One scheduling attempt of one pod: PreFilter state, Filter per node, Score over the
    feasible nodes, and the preemption what-if that words the failure."""

    def __init__(self, pi: PodInfo, state: ClusterState, listers: Listers):
        self.pi = pi
        self.state = state
        self.listers = listers
        self.ns_labels = listers.namespace_labels
        self.tolerates_unschedulable = tolerates(pi.tolerations, TAINT_UNSCHEDULABLE, "",
                                                 "NoSchedule")
        self.volumes: VolumeState | None = None
        self.spread_hard: list[tuple[SpreadConstraint, Counter, int, int]] = []
        self.affinity_counts: Counter = Counter()
        self.anti_affinity_counts: Counter = Counter()
        self.existing_anti_counts: Counter = Counter()
        self.check_pod_affinity = False
        self.only_resources = False
        # ephemeral-storage first, then extended resources, as NodeResourcesFit checks them
        self.other_requests = sorted(((k, v) for k, v in pi.requests.items()
                                      if k not in ("cpu", "memory", "pods") and v > 0),
                                     key=lambda kv: (kv[0] != "ephemeral-storage", kv[0]))

    # ----------------------------------------------------------------- PreFilter
    def prefilter(self) -> Status | None:
        pi = self.pi
        if pi.claims:
            st = self._prefilter_volumes()
            if st is not None:
                return st
        hard = [c for c in pi.spread if c.hard]
        if hard:
            self._prefilter_spread(hard)
        self._prefilter_interpod()
        # nothing but resources to check: Algorithm.schedule tests the common case inline
        self.only_resources = not (pi.host_ports or self.volumes is not None or
                                   self.spread_hard or self.check_pod_affinity or
                                   not pi.node_affinity.always() or self.other_requests)
        return None

    def _prefilter_volumes(self) -> Status | None:
        vs = VolumeState()
        for name in self.pi.claims:
            pvc = self.listers.pvcs.get(self.pi.ns, name)
            if pvc is None:
                return Status(UNRESOLVABLE, (f'persistentvolumeclaim "{name}" not found',),
                              "VolumeBinding")
            if (pvc.get("metadata") or {}).get("deletionTimestamp"):
                return Status(UNRESOLVABLE, (f'persistentvolumeclaim "{name}" is being deleted',),
                              "VolumeBinding")
            vol = (pvc.get("spec") or {}).get("volumeName")
            if vol:
                vs.bound_pvs.append(self.listers.pvs.get(None, vol))
                continue
            cls_name = claim_class(pvc, self.listers)
            sc = self.listers.storageclasses.get(None, cls_name) if cls_name else None
            if not sc or sc.get("volumeBindingMode") != "WaitForFirstConsumer":
                return Status(UNRESOLVABLE, (ERR_UNBOUND_IMMEDIATE_PVC,), "VolumeBinding")
            vs.unbound.append(pvc)
        self.volumes = vs
        return None

    def _prefilter_spread(self, hard: list[SpreadConstraint]) -> None:
        nodes = self.state.node_list()
        for c in hard:
            counts = self.state.counts.get(self.state, self.pi.ns, c.selector)
            per_value: Counter = Counter()
            for ni in nodes:
                if not all(k.topology_key in ni.labels for k in hard):
                    continue
                if c.honor_node_affinity and not self.pi.node_affinity.matches(ni.labels,
                                                                               ni.name):
                    continue
                if c.honor_taints and any(not tolerates(self.pi.tolerations, *t)
                                          for t in ni.filter_taints):
                    continue
                per_value[ni.labels[c.topology_key]] += counts.get(ni.name, 0)
            domains = len(per_value)
            min_match = min(per_value.values()) if per_value else 0
            if c.min_domains > 1 and domains < c.min_domains:
                min_match = 0
            self_match = 1 if c.selector.matches(self.pi.labels) else 0
            self.spread_hard.append((c, per_value, min_match, self_match))

    def _prefilter_interpod(self) -> None:
        pi, nodes = self.pi, self.state.nodes
        for epi in self.state.with_required_anti.values():
            ni = nodes.get(epi.node_name)
            if ni is None or ni.node is None:
                continue
            for t in epi.required_anti_affinity:
                if t.matches(pi.ns, pi.labels, self.ns_labels):
                    tv = ni.labels.get(t.topology_key)
                    if tv is not None:
                        self.existing_anti_counts[(t.topology_key, tv)] += 1
        if pi.required_affinity or pi.required_anti_affinity:
            for epi in self.state.pods.values():
                ni = nodes.get(epi.node_name)
                if ni is None or ni.node is None:
                    continue
                if pi.required_affinity and all(
                        t.matches(epi.ns, epi.labels, self.ns_labels)
                        for t in pi.required_affinity):
                    for t in pi.required_affinity:
                        tv = ni.labels.get(t.topology_key)
                        if tv is not None:
                            self.affinity_counts[(t.topology_key, tv)] += 1
                for t in pi.required_anti_affinity:
                    if t.matches(epi.ns, epi.labels, self.ns_labels):
                        tv = ni.labels.get(t.topology_key)
                        if tv is not None:
                            self.anti_affinity_counts[(t.topology_key, tv)] += 1
        self.check_pod_affinity = bool(self.existing_anti_counts or pi.required_affinity or
                                       self.anti_affinity_counts)

    # ----------------------------------------------------------------- Filter
    def filter(self, ni: NodeInfo) -> Status | None:
        pi = self.pi
        # NodeUnschedulable
        if ni.unschedulable and not self.tolerates_unschedulable:
            return Status(UNRESOLVABLE, (ERR_REASON_UNSCHEDULABLE,), "NodeUnschedulable")
        # TaintToleration: the first NoSchedule/NoExecute taint not tolerated
        for key, value, effect in ni.filter_taints:
            if not tolerates(pi.tolerations, key, value, effect):
                return Status(UNRESOLVABLE, (untolerated_taint_reason(key, value),),
                              "TaintToleration")
        # NodeAffinity (nodeSelector + required node affinity)
        if not pi.node_affinity.always() and not pi.node_affinity.matches(ni.labels, ni.name):
            return Status(UNRESOLVABLE, (ERR_REASON_NODE_AFFINITY,), "NodeAffinity")
        # NodePorts
        if pi.host_ports and ni.used_ports:
            for ip, proto, port in pi.host_ports:
                if ni.port_conflict(ip, proto, port):
                    return Status(UNSCHEDULABLE, (ERR_REASON_NODE_PORTS,), "NodePorts")
        # NodeResourcesFit
        st = self._fit(ni)
        if st is not None:
            return st
        # VolumeBinding
        if self.volumes is not None:
            st = self._volumes_fit(ni)
            if st is not None:
                return st
        # PodTopologySpread
        for c, per_value, min_match, self_match in self.spread_hard:
            tv = ni.labels.get(c.topology_key)
            if tv is None:
                return Status(UNRESOLVABLE, (ERR_REASON_SPREAD_LABEL,), "PodTopologySpread")
            if per_value.get(tv, 0) + self_match - min_match > c.max_skew:
                return Status(UNSCHEDULABLE, (ERR_REASON_SPREAD,), "PodTopologySpread")
        # InterPodAffinity
        if self.check_pod_affinity:
            return self._interpod_fit(ni)
        return None

    def _fit(self, ni: NodeInfo) -> Status | None:
        pi = self.pi
        cpu, mem = pi.req_cpu, pi.req_mem
        if len(ni.pods) < ni.allowed_pods and (cpu <= 0 or cpu <= ni.alloc_cpu - ni.req_cpu) \
                and (mem <= 0 or mem <= ni.alloc_mem - ni.req_mem) and not self.other_requests:
            return None  # the common case, without building a reason list
        reasons = []
        if len(ni.pods) + 1 > ni.allowed_pods:
            reasons.append(ERR_REASON_TOO_MANY_PODS)
        if cpu > 0 and cpu > ni.alloc_cpu - ni.req_cpu:
            reasons.append("Insufficient cpu")
        if mem > 0 and mem > ni.alloc_mem - ni.req_mem:
            reasons.append("Insufficient memory")
        alloc, used = ni.allocatable, ni.requested
        for name, want in self.other_requests:
            if want > alloc.get(name, 0) - used.get(name, 0):
                reasons.append(f"Insufficient {name}")
        if reasons:
            return Status(UNSCHEDULABLE, tuple(reasons), "NodeResourcesFit")
        return None

    def _volumes_fit(self, ni: NodeInfo) -> Status | None:
        vs = self.volumes
        reasons = []
        for pv in vs.bound_pvs:
            if pv is None:
                return Status(UNRESOLVABLE, (ERR_REASON_PV_NOT_EXIST,), "VolumeBinding")
            if not vs.pv_fits(pv, ni) and ERR_REASON_VOLUME_NODE_CONFLICT not in reasons:
                reasons.append(ERR_REASON_VOLUME_NODE_CONFLICT)
        if vs.unbound and self.plan_claims(ni) is None:
            reasons.append(ERR_REASON_VOLUME_BIND_CONFLICT)
        if reasons:
            return Status(UNRESOLVABLE, tuple(reasons), "VolumeBinding")
        return None

    def plan_claims(self, ni: NodeInfo) -> list[ClaimPlan] | None:
        """How the pod's unbound WaitForFirstConsumer claims would be satisfied on this node
        (a matching available PV, else dynamic provisioning); None if they cannot be."""
        if self.volumes is None:
            return []
        plans: list[ClaimPlan] = []
        taken: set[str] = set()
        for pvc in self.volumes.unbound:
            selected = ((pvc.get("metadata") or {}).get("annotations") or {}).get(
                ANN_SELECTED_NODE)
            if selected:
                if selected != ni.name:
                    return None
                plans.append(ClaimPlan(pvc))
                continue
            best = None
            cls = claim_class(pvc, self.listers)
            for pv in self.listers.pvs.list():
                name = pv["metadata"]["name"]
                if name in taken or not _pv_matches_claim(pv, pvc, cls) or \
                        not VolumeState.pv_fits(pv, ni):
                    continue
                cap = resource_amount("storage", ((pv.get("spec") or {}).get("capacity") or {})
                                      .get("storage") or 0)
                if best is None or cap < best[0]:
                    best = (cap, pv)
            if best is not None:
                taken.add(best[1]["metadata"]["name"])
                plans.append(ClaimPlan(pvc, best[1]))
                continue
            sc = self.listers.storageclasses.get(None, cls) or {}
            prov = sc.get("provisioner") or ""
            if not prov or prov == "kubernetes.io/no-provisioner":
                return None
            allowed = sc.get("allowedTopologies") or []
            if allowed and not any(
                    all(ni.labels.get(e.get("key")) in (e.get("values") or [])
                        for e in t.get("matchLabelExpressions") or [])
                    for t in allowed):
                return None
            plans.append(ClaimPlan(pvc))
        return plans

    def _interpod_fit(self, ni: NodeInfo) -> Status | None:
        pi = self.pi
        # the incoming pod's required affinity
        if pi.required_affinity:
            pods_exist = True
            for t in pi.required_affinity:
                tv = ni.labels.get(t.topology_key)
                if tv is None:
                    return Status(UNRESOLVABLE, (ERR_REASON_AFFINITY,), "InterPodAffinity")
                if self.affinity_counts.get((t.topology_key, tv), 0) <= 0:
                    pods_exist = False
            # the first pod of a group with affinity to itself may go anywhere
            if not pods_exist and (self.affinity_counts or not all(
                    t.matches(pi.ns, pi.labels, self.ns_labels) for t in pi.required_affinity)):
                return Status(UNRESOLVABLE, (ERR_REASON_AFFINITY,), "InterPodAffinity")
        # the incoming pod's required anti-affinity
        if self.anti_affinity_counts:
            for t in pi.required_anti_affinity:
                tv = ni.labels.get(t.topology_key)
                if tv is not None and self.anti_affinity_counts.get((t.topology_key, tv), 0) > 0:
                    return Status(UNSCHEDULABLE, (ERR_REASON_ANTI_AFFINITY,), "InterPodAffinity")
        # existing pods' required anti-affinity against the incoming pod
        if self.existing_anti_counts:
            for kv in ni.labels.items():
                if self.existing_anti_counts.get(kv, 0) > 0:
                    return Status(UNSCHEDULABLE, (ERR_REASON_EXISTING_ANTI_AFFINITY,),
                                  "InterPodAffinity")
        return None

    # ----------------------------------------------------------------- Score
    def score(self, feasible: list[NodeInfo]) -> list[int]:
        """Weighted sum of the normalized (0-100) plugin scores for each feasible node."""
        total = resource_scores(self.pi, feasible)  # NodeResourcesFit ×1 + Balanced ×1
        n = len(feasible)
        for plugin, scores in self.plugin_scores(feasible, resources=False).items():
            w = WEIGHTS[plugin]
            for i in range(n):
                total[i] += scores[i] * w
        return total

    def plugin_scores(self, feasible: list[NodeInfo],
                      resources: bool = True) -> dict[str, list[int]]:
        """Each plugin's normalized scores (score() adds them up with the weights)."""
        pi = self.pi
        out: dict[str, list[int]] = {}
        # TaintToleration: fewer untolerated PreferNoSchedule taints is better
        if not resources and not any(ni.prefer_taints for ni in feasible):
            pass  # the same 100 everywhere: no effect on the ranking
        elif any(ni.prefer_taints for ni in feasible):
            tols = [t for t in pi.tolerations if t[3] in ("", "PreferNoSchedule")]
            raw = [sum(1 for t in ni.prefer_taints if not tolerates(tols, *t))
                   for ni in feasible]
            out["TaintToleration"] = default_normalize(raw, reverse=True)
        else:
            out["TaintToleration"] = [MAX_NODE_SCORE] * len(feasible)
        # NodeAffinity: sum of the weights of the matching preferred terms
        if pi.preferred_node_terms:
            raw = [sum(w for w, t in pi.preferred_node_terms if t.matches(ni.labels, ni.name))
                   for ni in feasible]
            out["NodeAffinity"] = default_normalize(raw)
        # NodeResourcesFit (LeastAllocated) and BalancedAllocation
        if resources:
            out["NodeResourcesFit"] = [least_allocated_score(pi, ni) for ni in feasible]
            out["NodeResourcesBalancedAllocation"] = [balanced_allocation_score(pi, ni)
                                                      for ni in feasible]
        spread = self._spread_scores(feasible)
        if spread is not None:
            out["PodTopologySpread"] = spread
        interpod = self._interpod_scores(feasible)
        if interpod is not None:
            out["InterPodAffinity"] = interpod
        return out

    def _spread_scores(self, feasible: list[NodeInfo]) -> list[int] | None:
        pi = self.pi
        if pi.spread:
            constraints = [(c.topology_key, c.max_skew, c.selector, c)
                           for c in pi.spread if not c.hard]
            require_all = True
        else:
            sel = self.listers.spread_selector(pi)
            if not sel.requirements:
                return None
            constraints = [(k, skew, sel, None) for k, skew in DEFAULT_SPREAD]
            require_all = False
        if not constraints:
            return None
        keys = [k for k, _, _, _ in constraints]
        ignored = {ni.name for ni in feasible
                   if require_all and not all(k in ni.labels for k in keys)}
        # per constraint: the matching pods per node (hostname) or per topology value
        active = []
        for key, skew, sel, c in constraints:
            counts = self.state.counts.get(self.state, pi.ns, sel)
            if key == LABEL_HOSTNAME:
                size = len(feasible) - len(ignored)
                active.append((key, skew - 1, math.log(size + 2), True, counts))
                continue
            if not any(key in ni.labels for ni in feasible):
                continue  # no node is scored for this key (the common zone-less cluster)
            values = {ni.labels.get(key, "") for ni in feasible if ni.name not in ignored}
            pc: Counter = Counter()
            for ni in self.state.node_list():
                if require_all and not all(k in ni.labels for k in keys):
                    continue
                v = ni.labels.get(key, "")
                if v not in values:
                    continue
                if (c is None or c.honor_node_affinity) and \
                        not pi.node_affinity.matches(ni.labels, ni.name):
                    continue
                pc[v] += counts.get(ni.name, 0)
            active.append((key, skew - 1, math.log(len(values) + 2), False, pc))
        raw: list[int | None] = []
        for ni in feasible:
            if ni.name in ignored:
                raw.append(None)
                continue
            s = 0.0
            labels = ni.labels
            for key, base, weight, by_node, table in active:
                if by_node:
                    if key in labels:
                        s += table.get(ni.name, 0) * weight + base
                else:
                    tv = labels.get(key)
                    if tv is not None:
                        s += table.get(tv, 0) * weight + base
            raw.append(math.floor(s + 0.5))  # Go's math.Round (s is never negative)
        valid = [r for r in raw if r is not None]
        if not valid:
            return [0] * len(feasible)
        lo, hi = min(valid), max(valid)
        out = []
        for r in raw:
            if r is None:
                out.append(0)
            elif hi == 0:
                out.append(MAX_NODE_SCORE)
            else:
                out.append(MAX_NODE_SCORE * (hi + lo - r) // hi)
        return out

    def _interpod_scores(self, feasible: list[NodeInfo]) -> list[int] | None:
        pi = self.pi
        has_prefs = bool(pi.preferred_affinity or pi.preferred_anti_affinity)
        if has_prefs:
            existing: Iterable[PodInfo] = self.state.pods.values()
        elif self.state.with_affinity:
            existing = self.state.with_affinity.values()
        else:
            return None
        topo: dict[str, Counter] = {}

        def add(t: AffinityTerm, weight: int, ns: str, labels: dict, node_labels: dict):
            if t.matches(ns, labels, self.ns_labels):
                tv = node_labels.get(t.topology_key)
                if tv is not None:
                    topo.setdefault(t.topology_key, Counter())[tv] += weight

        nodes = self.state.nodes
        for epi in existing:
            ni = nodes.get(epi.node_name)
            if ni is None or ni.node is None or not ni.labels:
                continue
            nl = ni.labels
            for t in pi.preferred_affinity:
                add(t, t.weight, epi.ns, epi.labels, nl)
            for t in pi.preferred_anti_affinity:
                add(t, -t.weight, epi.ns, epi.labels, nl)
            for t in epi.required_affinity:
                add(t, HARD_POD_AFFINITY_WEIGHT, pi.ns, pi.labels, nl)
            for t in epi.preferred_affinity:
                add(t, t.weight, pi.ns, pi.labels, nl)
            for t in epi.preferred_anti_affinity:
                add(t, -t.weight, pi.ns, pi.labels, nl)
        if not topo:
            return None
        raw = []
        for ni in feasible:
            s = 0
            for key, values in topo.items():
                tv = ni.labels.get(key)
                if tv is not None:
                    s += values.get(tv, 0)
            raw.append(s)
        lo, hi = min(raw), max(raw)
        if hi - lo <= 0:
            return [0] * len(raw)
        return [int(MAX_NODE_SCORE * ((r - lo) / (hi - lo))) for r in raw]


def default_normalize(raw: list[int], reverse: bool = False) -> list[int]:
    """helper.DefaultNormalizeScore: scale to 0-100 by the maximum (reversed: 100 - that)."""
    hi = max(raw) if raw else 0
    if hi == 0:
        return [MAX_NODE_SCORE if reverse else 0 for _ in raw]
    out = []
    for r in raw:
        s = MAX_NODE_SCORE * r // hi
        out.append(MAX_NODE_SCORE - s if reverse else s)
    return out


def resource_scores(pi: PodInfo, feasible: list[NodeInfo]) -> list[int]:
    """least_allocated_score + balanced_allocation_score for every node, in one pass."""
    out = []
    pc, pm, rc, rm = pi.nz_cpu, pi.nz_mem, pi.req_cpu, pi.req_mem
    for ni in feasible:
        ac, am = ni.alloc_cpu, ni.alloc_mem
        la = w = 0
        fc = fm = -1.0
        if ac:
            u = ni.nz_cpu + pc
            la += 0 if u > ac else (ac - u) * MAX_NODE_SCORE // ac
            w += 1
            fc = min((ni.req_cpu + rc) / ac, 1.0)
        if am:
            u = ni.nz_mem + pm
            la += 0 if u > am else (am - u) * MAX_NODE_SCORE // am
            w += 1
            fm = min((ni.req_mem + rm) / am, 1.0)
        std = abs((fc - fm) / 2) if ac and am else 0.0
        out.append((la // w if w else 0) + int((1 - std) * MAX_NODE_SCORE))
    return out


def least_allocated_score(pi: PodInfo, ni: NodeInfo) -> int:
    """LeastAllocated over cpu and memory (weight 1 each), on non-zero requests: the share
    left free after placing the pod, 0-100."""
    total = weights = 0
    for alloc, used in ((ni.allocatable.get("cpu", 0), ni.nz_cpu + pi.nz_cpu),
                        (ni.allocatable.get("memory", 0), ni.nz_mem + pi.nz_mem)):
        if alloc == 0:
            continue
        total += 0 if used > alloc else (alloc - used) * MAX_NODE_SCORE // alloc
        weights += 1
    return total // weights if weights else 0


def balanced_allocation_score(pi: PodInfo, ni: NodeInfo) -> int:
    """BalancedAllocation: 100 × (1 − std of the cpu and memory fractions) after placing."""
    fractions = []
    for name in ("cpu", "memory"):
        alloc = ni.allocatable.get(name, 0)
        if alloc == 0:
            continue
        f = (ni.requested.get(name, 0) + pi.requests.get(name, 0)) / alloc
        fractions.append(min(f, 1.0))
    std = 0.0
    if len(fractions) == 2:
        std = abs((fractions[0] - fractions[1]) / 2)
    return int((1 - std) * MAX_NODE_SCORE)


# =========================================================================== the algorithm
@dataclasses.dataclass
class FitError:
    """Why no node fits: each evaluated node's first failing filter."""
    num_all_nodes: int
    statuses: dict[str, Status]
    prefilter_msg: str = ""
    postfilter_msg: str = ""
    prefilter_status: Status | None = None

    def plugins(self) -> set[str]:
        out = {s.plugin for s in self.statuses.values()}
        if self.prefilter_status is not None:
            out.add(self.prefilter_status.plugin)
        return out

    def message(self) -> str:
        return fit_error_message(self.num_all_nodes, self.statuses, self.prefilter_msg,
                                 self.postfilter_msg)


def fit_error_message(num_all_nodes: int, statuses: dict[str, Status], prefilter_msg: str = "",
                      postfilter_msg: str = "") -> str:
    """framework.FitError.Error(): "0/N nodes are available: <count> <reason>, ...." with
    the counts sorted as strings, then the PostFilter (preemption) message."""
    msg = f"0/{num_all_nodes} nodes are available:"
    if prefilter_msg:
        msg += f" {prefilter_msg}."
    else:
        hist: Counter = Counter()
        for st in statuses.values():
            for r in st.reasons:
                hist[r] += 1
        parts = sorted(f"{v} {k}" for k, v in hist.items())
        if parts:
            msg += f" {', '.join(parts)}."
    if postfilter_msg:
        msg += f" {postfilter_msg}."
    return msg


@dataclasses.dataclass
class ScheduleResult:
    node: str | None = None
    error: FitError | None = None
    no_nodes: bool = False
    evaluated: int = 0
    feasible: int = 0
    claims: list[ClaimPlan] = dataclasses.field(default_factory=list)
    pod_info: PodInfo | None = None

    def message(self) -> str:
        if self.no_nodes:
            return ERR_NO_NODES_AVAILABLE
        return self.error.message() if self.error else ""


class Algorithm:
    """genericScheduler: filter the nodes (stopping once enough feasible ones are found in
    large clusters), score the feasible ones, pick the best (ties round-robin)."""

    def __init__(self, state: ClusterState, listers: Listers | None = None,
                 percentage_of_nodes_to_score: int = 0):
        self.state = state
        self.listers = listers or Listers()
        self.percentage = percentage_of_nodes_to_score
        self.next_start = 0
        self._rr = 0

    def num_feasible_to_find(self, n: int) -> int:
        if n < MIN_FEASIBLE_NODES_TO_FIND:
            return n
        pct = self.percentage
        if pct <= 0:
            pct = max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND, 50 - n // 125)
        if pct >= 100:
            return n
        return max(n * pct // 100, MIN_FEASIBLE_NODES_TO_FIND)

    def schedule(self, pod: dict) -> ScheduleResult:
        nodes = self.state.node_list()
        if not nodes:
            return ScheduleResult(no_nodes=True)
        pi = PodInfo(pod)
        cycle = Cycle(pi, self.state, self.listers)
        st = cycle.prefilter()
        if st is not None:
            err = FitError(len(nodes), {ni.name: st for ni in nodes},
                           prefilter_msg=", ".join(st.reasons), prefilter_status=st)
            err.postfilter_msg = preemption_message(cycle, err)
            return ScheduleResult(error=err, evaluated=len(nodes))
        want = self.num_feasible_to_find(len(nodes))
        feasible: list[NodeInfo] = []
        statuses: dict[str, Status] = {}
        n = len(nodes)
        start = self.next_start % n
        processed = 0
        fast = cycle.only_resources
        cpu, mem = pi.req_cpu, pi.req_mem
        for i in range(n):
            ni = nodes[(start + i) % n]
            processed += 1
            if fast and not ni.unschedulable and not ni.filter_taints and \
                    len(ni.pods) < ni.allowed_pods and \
                    (cpu <= 0 or cpu <= ni.alloc_cpu - ni.req_cpu) and \
                    (mem <= 0 or mem <= ni.alloc_mem - ni.req_mem):
                feasible.append(ni)  # what Cycle.filter would say, without the calls
                if len(feasible) >= want:
                    break
                continue
            s = cycle.filter(ni)
            if s is None:
                feasible.append(ni)
                if len(feasible) >= want:
                    break
            else:
                statuses[ni.name] = s
        self.next_start = (start + processed) % n
        if not feasible:
            err = FitError(n, statuses)
            err.postfilter_msg = preemption_message(cycle, err)
            return ScheduleResult(error=err, evaluated=processed)
        if len(feasible) == 1:
            best = feasible[0]
        else:
            scores = cycle.score(feasible)
            top = max(scores)
            ties = [ni for ni, s in zip(feasible, scores) if s == top]
            best = ties[self._rr % len(ties)]
            self._rr += 1
        claims = cycle.plan_claims(best) if cycle.volumes and cycle.volumes.unbound else []
        return ScheduleResult(node=best.name, evaluated=processed, feasible=len(feasible),
                              claims=claims or [], pod_info=pi)


def preemption_message(cycle: Cycle, err: FitError) -> str:
    """DefaultPreemption's PostFilter message for a pod that fits nowhere. Nodes rejected
    as unresolvable cannot be helped; on the others, the pod would need lower-priority
    victims whose removal makes it fit. (This scheduler reports the outcome but does not
    evict.)"""
    pi = cycle.pi
    if pi.preemption_never:
        return "preemption: " + NOT_ELIGIBLE_NEVER
    nodes = cycle.state.node_list()
    n = len(nodes)
    results: dict[str, Status] = {}
    for ni in nodes:
        st = err.statuses.get(ni.name)
        if st is None or st.code != UNSCHEDULABLE:
            continue
        victims = [k for k, p in ni.pods.items() if p.priority < pi.priority]
        if not victims:
            results[ni.name] = Status(UNRESOLVABLE, (NO_PREEMPTION_VICTIMS,),
                                      "DefaultPreemption")
            continue
        again = cycle.filter(ni.without(victims))
        if again is None:
            return ""  # a preemption candidate exists
        results[ni.name] = again
    for ni in nodes:
        results.setdefault(ni.name, Status(UNRESOLVABLE, (PREEMPTION_NOT_HELPFUL,),
                                           "DefaultPreemption"))
    return "preemption: " + fit_error_message(n, results)
