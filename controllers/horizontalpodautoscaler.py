"""The horizontal pod autoscaler (Kubernetes' pkg/controller/podautoscaler): every sync period
(15 s) each HPA reads its target's scale subresource and the resource metrics of the target's
pods (metrics.k8s.io, served by the API server from the node agents), computes the replica count
that brings the metric to its target, limits it with the behaviour (stabilization windows and
scaling policies) and minReplicas/maxReplicas, writes the target's scale and reports status,
conditions and events as Kubernetes does.

Resource metrics (cpu, memory; Utilization and AverageValue targets) are supported; Pods,
Object, External and ContainerResource metrics need a custom or external metrics API, which
kubelab does not serve: such an HPA reports ScalingActive=False.

The arithmetic is in pure functions (replica_count, normalize) so it is testable without a
cluster."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import math
import time

from apiserver.kinds.cluster import SCALE_DOWN_DEFAULT, SCALE_UP_DEFAULT
from apiserver.kinds.common import parse_quantity
from kubelab import timescale
from kubelab.client import BUILTIN, APIError, Resource
from kubelab.selectors import SelectorError, parse_label_selector

from .base import Controller, split_key
from .replicaset import is_pod_ready

SYNC_PERIOD = 15.0
TOLERANCE = 0.1
CPU_INITIALIZATION_PERIOD = 300.0
POD_METRICS = Resource("metrics.k8s.io", "v1beta1", "pods", True, "PodMetrics")
# the API's defaults for spec.behavior (applied when a behavior is given), and for a scale-down
# without a stabilization window kube-controller-manager's --horizontal-pod-autoscaler-
# downscale-stabilization (5 minutes)
UP_DEFAULT = SCALE_UP_DEFAULT
DOWN_DEFAULT = {**SCALE_DOWN_DEFAULT, "stabilizationWindowSeconds": 300}


class MetricError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


# ------------------------------------------------------------------------------ arithmetic
def _ratio(usage: dict[str, float], denom: dict[str, float]) -> float:
    total = sum(denom[p] for p in usage)
    if total <= 0:
        raise MetricError("FailedGetResourceMetric", "no metrics returned matched known pods")
    return sum(usage.values()) / total


def replica_count(current: int, usage: dict[str, float], denom: dict[str, float],
                  fill_down: dict[str, float], unready: set[str], missing: set[str]) -> int:
    """Kubernetes' replica calculator. usage: the metric of the ready pods that have one;
    denom: per pod, the usage that would be exactly on target (request × utilization target,
    or the target average value); fill_down: what a pod without metrics is assumed to use when
    scaling down (its request, or the target value); unready pods count as using nothing when
    scaling up, missing ones as using nothing when scaling up."""
    if not usage:
        raise MetricError("FailedGetResourceMetric",
                          "did not receive metrics for targeted pods (pods might be unready)")
    ratio = _ratio(usage, denom)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if abs(1.0 - ratio) <= TOLERANCE:
            return current
        return math.ceil(ratio * len(usage))
    usage = dict(usage)
    for p in missing:
        usage[p] = fill_down[p] if ratio < 1.0 else 0.0
    if scale_up_with_unready:
        for p in unready:
            usage[p] = 0.0
    new_ratio = _ratio(usage, denom)
    if abs(1.0 - new_ratio) <= TOLERANCE or (ratio < 1.0 < new_ratio) or \
            (ratio > 1.0 > new_ratio):
        return current
    replicas = math.ceil(new_ratio * len(usage))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current
    return replicas


@dataclasses.dataclass
class Decision:
    replicas: int
    able_reason: str = "ReadyForNewScale"
    able_message: str = "recommended size matches current size"
    limited: bool = False
    limited_reason: str = "DesiredWithinRange"
    limited_message: str = "the desired count is within the acceptable range"


def _rules(behavior: dict | None, key: str, default: dict) -> dict:
    got = (behavior or {}).get(key) or {}
    out = dict(default)
    out.update({k: v for k, v in got.items() if v is not None})
    return out


def _period_change(events: list[tuple[float, int]], period: float, now: float, up: bool) -> int:
    return sum(d for t, d in events if now - t <= period and (d > 0) == up)


def _limit(current: int, events: list[tuple[float, int]], rules: dict, now: float,
           up: bool) -> int:
    """The scaling policies' limit for this period (calculateScale{Up,Down}LimitWithScalingRules)."""
    if rules.get("selectPolicy") == "Disabled":
        return current
    proposals = []
    for p in rules.get("policies") or []:
        period = timescale.scaled(float(p.get("periodSeconds") or 15))
        changed = _period_change(events, period, now, up)
        start = current - changed  # the replicas at the period's start (changed < 0 down)
        v = int(p.get("value") or 0)
        if p.get("type") == "Pods":
            proposals.append(start + v if up else start - v)
        elif up:
            proposals.append(math.ceil(start * (1 + v / 100)))
        else:
            proposals.append(int(start * (1 - v / 100)))
    if not proposals:
        return current
    pick_most = rules.get("selectPolicy", "Max") == "Max"
    if up:
        return max(proposals) if pick_most else min(proposals)
    return min(proposals) if pick_most else max(proposals)


def normalize(hpa: dict, current: int, proposed: int, recommendations: list[tuple[float, int]],
              events: list[tuple[float, int]], now: float) -> Decision:
    """Stabilization windows, scaling policies and min/max (normalizeDesiredReplicasWithBehaviors).
    `recommendations` is this HPA's history of proposals (this one is appended)."""
    spec = hpa.get("spec") or {}
    behavior = spec.get("behavior")
    up, down = _rules(behavior, "scaleUp", UP_DEFAULT), _rules(behavior, "scaleDown",
                                                                DOWN_DEFAULT)
    up_window = timescale.scaled(float(up.get("stabilizationWindowSeconds") or 0))
    down_window = timescale.scaled(float(down.get("stabilizationWindowSeconds") or 0))
    up_rec = down_rec = proposed
    for t, r in recommendations:
        if now - t <= up_window:
            up_rec = min(up_rec, r)
        if now - t <= down_window:
            down_rec = max(down_rec, r)
    recommendations.append((now, proposed))
    keep = max(up_window, down_window)
    recommendations[:] = [(t, r) for t, r in recommendations if now - t <= keep]
    d = Decision(current)
    d.replicas = min(max(current, up_rec), down_rec)
    if d.replicas != proposed:
        d.able_reason = "ScaleDownStabilized" if proposed < current else "ScaleUpStabilized"
        d.able_message = ("recent recommendations were higher than current one, applying the "
                          "highest recent recommendation" if proposed < current else
                          "recent recommendations were lower than current one, applying the "
                          "lowest recent recommendation")
    lo = spec.get("minReplicas") if spec.get("minReplicas") is not None else 1
    hi = spec.get("maxReplicas") or 1
    if d.replicas > current:
        limit = max(current, _limit(current, events, up, now, True))
        if hi < limit:
            limit, reason, msg = hi, "TooManyReplicas", ("the desired replica count is more "
                                                         "than the maximum replica count")
        else:
            reason, msg = "ScaleUpLimit", ("the desired replica count is increasing faster "
                                           "than the maximum scale rate")
        if d.replicas > limit:
            d.replicas, d.limited, d.limited_reason, d.limited_message = limit, True, reason, msg
    elif d.replicas < current:
        limit = min(current, _limit(current, events, down, now, False))
        if lo > limit:
            limit, reason, msg = lo, "TooFewReplicas", ("the desired replica count is less "
                                                        "than the minimum replica count")
        else:
            reason, msg = "ScaleDownLimit", ("the desired replica count is decreasing faster "
                                             "than the maximum scale rate")
        if d.replicas < limit:
            d.replicas, d.limited, d.limited_reason, d.limited_message = limit, True, reason, msg
    return d


# ------------------------------------------------------------------------------ the controller
def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _started_at(pod: dict) -> float | None:
    st = (pod.get("status") or {}).get("startTime")
    if not st:
        return None
    try:
        return datetime.datetime.fromisoformat(st.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _quantity(resource: str, value: float) -> str:
    return f"{round(value * 1000)}m" if resource == "cpu" else str(round(value))


class HorizontalPodAutoscalerController(Controller):
    name = "horizontal-pod-autoscaler"
    workers = 2

    def setup(self) -> None:
        self.hpas = self.informers.informer("HorizontalPodAutoscaler")
        self.pods = self.informers.informer("Pod")
        self.hpas.add_handler(self._on_hpa)
        self.recommendations: dict[str, list[tuple[float, int]]] = {}
        self.scale_events: dict[str, list[tuple[float, int]]] = {}
        self._next_sync: dict[str, asyncio.TimerHandle] = {}

    def _on_hpa(self, event: str, new: dict, old: dict | None) -> None:
        # a new HPA or a changed spec syncs now; its own status writes do not (they would
        # make a loop): otherwise one sync per period, as kube-controller-manager does
        if event == "ADDED" or (event == "MODIFIED" and old is not None and
                                new.get("spec") != old.get("spec")):
            self.enqueue(new)

    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        hpa = self.hpas.get(ns, name)
        timer = self._next_sync.pop(key, None)
        if timer is not None:
            timer.cancel()  # one periodic sync per HPA, however often it was enqueued
        if hpa is None:
            self.recommendations.pop(key, None)
            self.scale_events.pop(key, None)
            return
        try:
            await self._sync(key, hpa)
        finally:
            self._next_sync[key] = asyncio.get_running_loop().call_later(
                timescale.scaled(SYNC_PERIOD), self.queue.add, key)

    def _target(self, hpa: dict) -> Resource | None:
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        kind, api = ref.get("kind", ""), ref.get("apiVersion", "")
        if kind not in BUILTIN:
            return None
        g, v, plural, namespaced = BUILTIN[kind]
        if (api.split("/")[0] if "/" in api else "") != g:
            return None
        return Resource(g, api.split("/")[-1] or v, plural, namespaced, kind)

    async def _sync(self, key: str, hpa: dict) -> None:
        ns = hpa["metadata"]["namespace"]
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        conditions: dict[str, tuple[str, str, str]] = {}
        status = dict(hpa.get("status") or {})
        target = self._target(hpa)
        try:
            if target is None:
                raise APIError(404, "NotFound", f"no scale subresource for {ref.get('kind')} "
                                                f"({ref.get('apiVersion')})")
            scale = await self.client.get(target, ns, ref.get("name", ""), subresource="scale")
        except APIError as e:
            msg = f"the HPA controller was unable to get the target's current scale: {e.message}"
            await self.recorder.warning(hpa, "FailedGetScale", e.message)
            conditions["AbleToScale"] = ("False", "FailedGetScale", msg)
            await self._write_status(hpa, status, conditions)
            return
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        status["currentReplicas"] = int((scale.get("status") or {}).get("replicas") or 0)
        lo = spec.get("minReplicas") if spec.get("minReplicas") is not None else 1
        hi = spec.get("maxReplicas") or 1
        now = time.monotonic()
        rescale_reason = ""
        if current == 0 and lo != 0:
            desired = 0
            conditions["ScalingActive"] = ("False", "ScalingDisabled", "scaling is disabled "
                                           "since the replica count of the target is zero")
            conditions["AbleToScale"] = ("True", "SucceededGetScale",
                                         "the HPA controller was able to get the target's "
                                         "current scale")
        elif current > hi:
            desired, rescale_reason = hi, "Current number of replicas above Spec.MaxReplicas"
        elif current < lo:
            desired, rescale_reason = lo, "Current number of replicas below Spec.MinReplicas"
        else:
            selector = (scale.get("status") or {}).get("selector") or ""
            try:
                proposed, metric_name, current_metrics = await self._compute(
                    hpa, ns, selector, current)
            except MetricError as e:
                conditions["AbleToScale"] = ("True", "SucceededGetScale",
                                             "the HPA controller was able to get the target's "
                                             "current scale")
                conditions["ScalingActive"] = ("False", e.reason, e.message)
                await self.recorder.warning(hpa, e.reason, e.message)
                await self.recorder.warning(
                    hpa, "FailedComputeMetricsReplicas",
                    f"invalid metrics (1 invalid out of {len(spec.get('metrics') or [])}), "
                    f"first error is: {e.message}")
                await self._write_status(hpa, status, conditions)
                return
            status["currentMetrics"] = current_metrics
            conditions["ScalingActive"] = ("True", "ValidMetricFound",
                                           f"the HPA was able to successfully calculate a "
                                           f"replica count from {metric_name}")
            d = normalize(hpa, current, proposed, self.recommendations.setdefault(key, []),
                          self.scale_events.setdefault(key, []), now)
            desired = d.replicas
            conditions["AbleToScale"] = ("True", d.able_reason, d.able_message)
            conditions["ScalingLimited"] = ("True" if d.limited else "False", d.limited_reason,
                                            d.limited_message)
            if desired > current:
                rescale_reason = f"{metric_name} above target"
            elif desired < current:
                rescale_reason = "All metrics below target"
        if desired != current:
            try:
                body = dict(scale)
                body["spec"] = {**(scale.get("spec") or {}), "replicas": desired}
                await self.client.update(target, body, subresource="scale")
            except APIError as e:
                conditions["AbleToScale"] = ("False", "FailedUpdateScale",
                                             f"the HPA controller was unable to update the "
                                             f"target scale: {e.message}")
                await self.recorder.warning(hpa, "FailedRescale",
                                            f"New size: {desired}; reason: {rescale_reason}; "
                                            f"error: {e.message}")
                await self._write_status(hpa, status, conditions)
                return
            self.scale_events.setdefault(key, []).append((now, desired - current))
            self.scale_events[key] = [(t, c) for t, c in self.scale_events[key]
                                      if now - t <= timescale.scaled(1800)]
            status["lastScaleTime"] = _now_rfc3339()
            conditions["AbleToScale"] = ("True", "SucceededRescale",
                                         f"the HPA controller was able to update the target "
                                         f"scale to {desired}")
            await self.recorder.normal(hpa, "SuccessfulRescale",
                                       f"New size: {desired}; reason: {rescale_reason}")
        status["desiredReplicas"] = desired
        await self._write_status(hpa, status, conditions)

    async def _compute(self, hpa: dict, ns: str, selector: str,
                       current: int) -> tuple[int, str, list[dict]]:
        """The largest proposal over the HPA's metrics, the name of the metric that gave it, and
        status.currentMetrics."""
        if not selector:
            raise MetricError("InvalidSelector", "selector is required")
        try:
            sel = parse_label_selector(selector)
        except SelectorError as e:
            raise MetricError("InvalidSelector", f"couldn't convert selector into a "
                                                 f"corresponding internal selector object: {e}")
        pods = [p for p in self.pods.list(ns) if sel.matches(p["metadata"].get("labels") or {})]
        metrics = None
        best, best_name, out = -1, "", []
        for m in (hpa.get("spec") or {}).get("metrics") or []:
            if m.get("type") != "Resource":
                raise MetricError(f"FailedGet{m.get('type', '')}Metric",
                                  f"unable to get {m.get('type')} metric: kubelab serves only "
                                  f"the resource metrics API (metrics.k8s.io), not the custom "
                                  f"or external metrics APIs")
            if metrics is None:
                try:
                    lst = await self.client.list(POD_METRICS, ns, label_selector=selector)
                except APIError as e:
                    raise MetricError("FailedGetResourceMetric",
                                      f"unable to get metrics for resource "
                                      f"{m['resource'].get('name')}: unable to fetch metrics "
                                      f"from resource metrics API: {e.message}") from None
                metrics = {i["metadata"]["name"]: i for i in lst.get("items") or []}
            replicas, name, cur = self._resource_proposal(m["resource"], pods, metrics, current)
            out.append({"type": "Resource", "resource": {"name": m["resource"]["name"],
                                                         "current": cur}})
            if replicas > best:
                best, best_name = replicas, name
        if best < 0:
            raise MetricError("FailedGetResourceMetric", "the HPA has no metrics")
        return best, best_name, out

    def _resource_proposal(self, res: dict, pods: list[dict], metrics: dict[str, dict],
                           current: int) -> tuple[int, str, dict]:
        resource, target = res.get("name", ""), res.get("target") or {}
        utilization = target.get("type") == "Utilization"
        usage, requests, unready, missing = {}, {}, set(), set()
        wall = time.time()
        for p in pods:
            name = p["metadata"]["name"]
            phase = (p.get("status") or {}).get("phase")
            if p["metadata"].get("deletionTimestamp") or phase in ("Failed", "Succeeded"):
                continue
            if utilization:
                total = 0.0
                for c in (p.get("spec") or {}).get("containers") or []:
                    req = ((c.get("resources") or {}).get("requests") or {}).get(resource)
                    if req is None:
                        raise MetricError("FailedGetResourceMetric",
                                          f"failed to get {resource} utilization: missing "
                                          f"request for {resource} in container {c.get('name')} "
                                          f"of Pod {name}")
                    total += parse_quantity(req)
                requests[name] = total
            if phase == "Pending":
                unready.add(name)
                continue
            if name not in metrics:
                missing.add(name)
                continue
            started = _started_at(p)
            if resource == "cpu" and not is_pod_ready(p) and started is not None and \
                    wall - started < timescale.scaled(CPU_INITIALIZATION_PERIOD):
                unready.add(name)  # a starting pod's CPU burst would mislead the average
                continue
            usage[name] = sum(parse_quantity(c["usage"].get(resource, "0"))
                              for c in metrics[name].get("containers") or [])
        if utilization:
            pct = float(target.get("averageUtilization") or 0)
            denom = {p: requests[p] * pct / 100 for p in requests}
            fill = requests
            metric_name = f"{resource} resource utilization (percentage of request)"
        else:
            value = parse_quantity(target.get("averageValue") or "0")
            denom = {p: value for p in set(usage) | missing | unready}
            fill = denom
            metric_name = f"{resource} resource"
        replicas = replica_count(current, usage, denom, fill, unready, missing)
        avg = sum(usage.values()) / len(usage)
        cur = {"averageValue": _quantity(resource, avg)}
        if utilization:
            req_total = sum(requests[p] for p in usage)
            cur["averageUtilization"] = int(sum(usage.values()) * 100 / req_total) \
                if req_total else 0
        return replicas, metric_name, cur

    async def _write_status(self, hpa: dict, status: dict,
                            conditions: dict[str, tuple[str, str, str]]) -> None:
        old = {c.get("type"): c for c in (hpa.get("status") or {}).get("conditions") or []}
        now = _now_rfc3339()
        out = []
        for t in ("AbleToScale", "ScalingActive", "ScalingLimited"):
            if t not in conditions:
                if t in old:
                    out.append(old[t])
                continue
            st, reason, msg = conditions[t]
            prev = old.get(t)
            ltt = prev["lastTransitionTime"] if prev and prev.get("status") == st and \
                prev.get("lastTransitionTime") else now
            out.append({"type": t, "status": st, "lastTransitionTime": ltt, "reason": reason,
                        "message": msg})
        status["conditions"] = out
        status.setdefault("desiredReplicas", 0)
        if hpa["metadata"].get("generation") is not None:
            status["observedGeneration"] = hpa["metadata"]["generation"]
        if status == (hpa.get("status") or {}):
            return
        body = dict(hpa)
        body["status"] = status
        try:
            await self.client.update_status("HorizontalPodAutoscaler", body)
        except APIError as e:
            if e.code not in (404, 409):  # gone, or changed meanwhile: the next sync writes it
                raise
