"""The API server's watch cache fan-out, without sockets: events are fed to `_emit` as the store
watch would, and subscribers see what Kubernetes' watch semantics say they should."""

from __future__ import annotations

import json

from apiserver.kinds import load_all
from apiserver.storage import WATCH_INDEXES, _matcher
from apiserver.watchcache import Event, WatchCache
from kubelab.selectors import parse_field_selector, parse_label_selector

PODS = load_all().by_resource("", "v1", "pods")


def pod(name: str, node: str = "", rev: int = 1, **labels) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels,
                         "resourceVersion": str(rev)},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}}


def watch(cache: WatchCache, fields: str = "", labels: str = ""):
    reqs = parse_field_selector(fields)
    match = _matcher(PODS, None, parse_label_selector(labels), reqs)
    index_value = next((f.value for f in reqs if f.field == cache.index_field and f.op == "="),
                       None)
    sub, initial = cache.subscribe(match, None, index_value=index_value)
    assert initial == []
    return sub


def drain(sub) -> list[tuple[str, str]]:
    out = []
    while not sub.queue.empty():
        etype, ev = sub.queue.get_nowait()
        out.append((etype, ev.obj["metadata"]["name"]))
    return out


def test_node_watchers_see_only_their_pods_including_moves():
    cache = WatchCache(None, PODS, index_field=WATCH_INDEXES["pods"])
    a, b = watch(cache, "spec.nodeName=node-a"), watch(cache, "spec.nodeName=node-b")
    unscheduled = watch(cache, "spec.nodeName=")
    everything = watch(cache)
    assert set(cache.indexed) == {"node-a", "node-b", ""} and cache.subscribers == {everything}

    p1 = pod("p1", rev=1)
    cache._emit(Event("ADDED", p1, None, 1))
    bound = pod("p1", "node-a", rev=2)
    cache._emit(Event("MODIFIED", bound, p1, 2))
    moved = pod("p1", "node-b", rev=3)  # not something Kubernetes allows, but the index copes
    cache._emit(Event("MODIFIED", moved, bound, 3))
    cache._emit(Event("DELETED", moved, moved, 4))

    assert drain(unscheduled) == [("ADDED", "p1"), ("DELETED", "p1")]
    assert drain(a) == [("ADDED", "p1"), ("DELETED", "p1")]
    assert drain(b) == [("ADDED", "p1"), ("DELETED", "p1")]
    assert [t for t, _ in drain(everything)] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]

    a.unsubscribe()
    assert "node-a" not in cache.indexed
    cache._emit(Event("ADDED", pod("p2", "node-a"), None, 5))
    assert drain(a) == [] and drain(b) == []
    everything.unsubscribe()
    assert cache.subscribers == set()


def test_index_watch_with_other_requirements_still_filters():
    cache = WatchCache(None, PODS, index_field="spec.nodeName")
    web = watch(cache, "spec.nodeName=node-a,metadata.namespace=default", "app=web")
    cache._emit(Event("ADDED", pod("db", "node-a", app="db"), None, 1))
    cache._emit(Event("ADDED", pod("web", "node-a", app="web"), None, 2))
    assert drain(web) == [("ADDED", "web")]
    # a != requirement is not an index lookup: the watcher is offered everything
    not_a = watch(cache, "spec.nodeName!=node-a")
    assert not_a in cache.subscribers
    cache._emit(Event("ADDED", pod("x", "node-b"), None, 3))
    assert drain(not_a) == [("ADDED", "x")]


def test_an_event_is_encoded_once_for_all_its_watchers():
    cache = WatchCache(None, PODS)
    subs = [watch(cache) for _ in range(3)]
    obj = pod("p", "node-a")
    cache._emit(Event("ADDED", obj, None, 1))
    events = [s.queue.get_nowait()[1] for s in subs]
    assert events[0] is events[1] is events[2]
    data = events[0].json()
    assert json.loads(data) == obj and events[2].json() is data
