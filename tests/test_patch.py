"""apiserver.patch: JSON patch, JSON merge patch and strategic merge patch as kube-apiserver
applies them (the patches kubectl apply / patch / set / rollout send)."""

from __future__ import annotations

import copy
import json

import pytest

from apiserver.patch import (
    PATCH_META,
    PatchError,
    apply_patch,
    json_merge_patch,
    json_patch,
    strategic_merge_patch,
)

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"


def deployment() -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default",
                     "labels": {"app": "web", "tier": "front"},
                     "annotations": {"deployment.kubernetes.io/revision": "1"},
                     "finalizers": ["a.example.com/one", "b.example.com/two"]},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "nginx:1.25",
                         "ports": [{"containerPort": 80, "protocol": "TCP"},
                                   {"containerPort": 443, "protocol": "TCP"}],
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                         "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                        {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "1d"]},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [{"key": "k1", "operator": "Exists"},
                                    {"key": "k2", "operator": "Exists"}],
                },
            },
        },
    }


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def names(items: list[dict], key: str = "name") -> list:
    return [i[key] for i in items]


def pod_patch(spec: dict) -> dict:
    return {"spec": {"template": {"spec": spec}}}


# ------------------------------------------------------------------ strategic merge patch

def test_apply_three_way_updates_one_container_image_other_stays():
    d = deployment()
    before = copy.deepcopy(d)
    patch = pod_patch({"$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                       "containers": [{"name": "app", "image": "nginx:1.26"}]})
    out = strategic_merge_patch(d, patch, "Deployment")
    assert names(containers(out)) == ["app", "sidecar"]
    assert containers(out)[0]["image"] == "nginx:1.26"
    assert containers(out)[0]["env"] == before["spec"]["template"]["spec"]["containers"][0]["env"]
    assert containers(out)[1] == before["spec"]["template"]["spec"]["containers"][1]
    assert d == before  # input untouched


def test_inputs_are_not_mutated_and_result_shares_nothing():
    d = deployment()
    patch = pod_patch({"containers": [{"name": "app", "env": [{"name": "A", "value": "x"}]},
                                      {"$patch": "delete", "name": "sidecar"}]})
    d0, p0 = copy.deepcopy(d), copy.deepcopy(patch)
    out = strategic_merge_patch(d, patch, "Deployment")
    assert d == d0 and patch == p0
    out["metadata"]["labels"]["new"] = "x"
    containers(out)[0]["ports"].append({"containerPort": 1})
    assert d == d0


def test_apply_adds_env_var_with_set_element_order():
    patch = pod_patch({
        "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
        "containers": [{"name": "app",
                        "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
                        "env": [{"name": "C", "value": "3"}]}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert containers(out)[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"},
                                         {"name": "C", "value": "3"}]


def test_patch_without_order_puts_new_item_before_server_only_items():
    # apimachinery's mergeSortedSlice: a new patch item is not in the live list, so it goes
    # ahead of the server-only items (kubectl patch adding an env var puts it first)
    patch = pod_patch({"containers": [{"name": "app", "env": [{"name": "C", "value": "3"}]}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert names(containers(out)[0]["env"]) == ["C", "A", "B"]
    assert names(containers(out)) == ["app", "sidecar"]


def test_env_value_updated_in_place_keeps_order():
    patch = pod_patch({"containers": [{"name": "app", "env": [{"name": "B", "value": "22"}]}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert containers(out)[0]["env"] == [{"name": "A", "value": "1"},
                                         {"name": "B", "value": "22"}]


def test_env_value_to_value_from_via_null():
    patch = pod_patch({"containers": [{"name": "app", "env": [
        {"name": "A", "value": None,
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert containers(out)[0]["env"][0] == {
        "name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def test_delete_container_with_patch_delete():
    patch = pod_patch({"$setElementOrder/containers": [{"name": "app"}],
                       "containers": [{"$patch": "delete", "name": "sidecar"}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert names(containers(out)) == ["app"]


def test_delete_directive_without_merge_key_is_an_error():
    patch = pod_patch({"containers": [{"$patch": "delete", "image": "x"}]})
    with pytest.raises(PatchError) as e:
        strategic_merge_patch(deployment(), patch, "Deployment")
    assert e.value.message == "map: map[$patch:delete image:x] does not contain declared " \
                              "merge key: name"


def test_set_element_order_reorders_containers():
    patch = pod_patch({"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert names(containers(out)) == ["sidecar", "app"]


def test_set_element_order_interleaves_server_only_items():
    d = deployment()
    containers(d).append({"name": "injected", "image": "proxy"})
    patch = pod_patch({"$setElementOrder/containers": [{"name": "app"}, {"name": "new"},
                                                       {"name": "sidecar"}],
                       "containers": [{"name": "new", "image": "n"}]})
    out = strategic_merge_patch(d, patch, "Deployment")
    assert names(containers(out)) == ["app", "new", "sidecar", "injected"]


def test_set_element_order_mismatch_is_an_error():
    patch = pod_patch({"$setElementOrder/containers": [{"name": "app"}],
                       "containers": [{"name": "other", "image": "x"}]})
    with pytest.raises(PatchError) as e:
        strategic_merge_patch(deployment(), patch, "Deployment")
    assert "doesn't match $setElementOrder list" in e.value.message


def test_new_container_appended_keeps_fields_and_drops_nulls():
    patch = pod_patch({"$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"},
                                                       {"name": "extra"}],
                       "containers": [{"name": "extra", "image": "redis", "resources": None,
                                       "env": [{"name": "X", "value": None}]}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert names(containers(out)) == ["app", "sidecar", "extra"]
    assert containers(out)[2] == {"name": "extra", "image": "redis", "env": [{"name": "X"}]}


def test_delete_label_with_null():
    out = strategic_merge_patch(deployment(), {"metadata": {"labels": {"tier": None}}},
                                "Deployment")
    assert out["metadata"]["labels"] == {"app": "web"}


def test_null_for_missing_field_is_ignored():
    out = strategic_merge_patch(deployment(), {"spec": {"paused": None}}, "Deployment")
    assert out == deployment()


def test_rollout_restart_annotation_on_deployment():
    patch = {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2025-01-02T03:04:05Z"}}}}}
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    tmpl = out["spec"]["template"]
    assert tmpl["metadata"] == {"labels": {"app": "web"}, "annotations": {
        "kubectl.kubernetes.io/restartedAt": "2025-01-02T03:04:05Z"}}
    assert tmpl["spec"] == deployment()["spec"]["template"]["spec"]


def test_rollout_undo_template_replace_daemonset_style():
    # DaemonSet/StatefulSet rollout undo sends the ControllerRevision's patch: the template
    # with "$patch": "replace" (and the null creationTimestamp the controller serialised)
    ds = deployment()
    ds["kind"] = "DaemonSet"
    revision = {"spec": {"template": {
        "$patch": "replace",
        "metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.24"}]}}}}
    out = strategic_merge_patch(ds, revision, "DaemonSet")
    assert out["spec"]["template"] == {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.24"}]}}
    assert out["spec"]["replicas"] == 2


def test_ports_merged_by_container_port():
    patch = pod_patch({"containers": [{"name": "app", "ports": [
        {"containerPort": 443, "name": "https"}, {"containerPort": 8080}]}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    ports = containers(out)[0]["ports"]
    assert sorted(p["containerPort"] for p in ports) == [80, 443, 8080]
    assert {"containerPort": 443, "protocol": "TCP", "name": "https"} in ports
    assert ports[0] == {"containerPort": 80, "protocol": "TCP"}


def test_volume_mounts_merged_by_mount_path():
    patch = pod_patch({"containers": [{"name": "app", "volumeMounts": [
        {"mountPath": "/data", "readOnly": True}]}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert containers(out)[0]["volumeMounts"] == [
        {"name": "data", "mountPath": "/data", "readOnly": True}]


def test_service_ports_merged_by_port():
    svc = {"kind": "Service", "metadata": {"name": "s"},
           "spec": {"selector": {"app": "web"}, "ports": [
               {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
               {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]}}
    patch = {"spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 443}],
                      "ports": [{"port": 443, "targetPort": 9443}]}}
    out = strategic_merge_patch(svc, patch, "Service")
    assert out["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
        {"name": "https", "port": 443, "targetPort": 9443, "protocol": "TCP"}]


def test_tolerations_are_replaced():
    patch = pod_patch({"tolerations": [{"key": "k3", "operator": "Exists"}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert out["spec"]["template"]["spec"]["tolerations"] == [{"key": "k3", "operator": "Exists"}]


def test_node_taints_are_replaced_and_conditions_merge_by_type():
    node = {"kind": "Node", "metadata": {"name": "n1"},
            "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"},
                                      {"type": "MemoryPressure", "status": "False"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                     {"type": "Hostname", "address": "n1"}]}}
    patch = {"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
             "status": {"conditions": [{"type": "Ready", "status": "False"}],
                        "addresses": [{"type": "Hostname", "address": "node-1"}]}}
    out = strategic_merge_patch(node, patch, "Node")
    assert out["spec"]["taints"] == [{"key": "b", "effect": "NoExecute"}]
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "False"},
                                           {"type": "MemoryPressure", "status": "False"}]
    assert out["status"]["addresses"][1] == {"type": "Hostname", "address": "node-1"}


def test_pod_status_conditions_merge_by_type():
    pod = {"kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "i"}]},
           "status": {"phase": "Pending",
                      "conditions": [{"type": "PodScheduled", "status": "True"}]}}
    patch = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    out = strategic_merge_patch(pod, patch, "Pod")
    assert out["status"]["phase"] == "Running"
    assert sorted(names(out["status"]["conditions"], "type")) == ["PodScheduled", "Ready"]


def test_list_replace_directive_replaces_whole_list():
    patch = pod_patch({"containers": [{"$patch": "replace"},
                                      {"name": "only", "image": "x"}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert containers(out) == [{"name": "only", "image": "x"}]


def test_map_replace_directive_replaces_map():
    patch = {"metadata": {"labels": {"$patch": "replace", "new": "yes"}}}
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert out["metadata"]["labels"] == {"new": "yes"}


def test_map_delete_directive_empties_map():
    patch = {"spec": {"selector": {"$patch": "delete"}}}
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert out["spec"]["selector"] == {}


def test_unknown_patch_directive_is_an_error():
    with pytest.raises(PatchError) as e:
        strategic_merge_patch(deployment(), {"metadata": {"$patch": "bogus"}}, "Deployment")
    assert e.value.message.startswith("unknown patch type: bogus in map:")


def test_retain_keys_on_deployment_strategy():
    # kubectl apply switching RollingUpdate -> Recreate
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate",
                                   "rollingUpdate": None}}}
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_on_volume_source_keeps_only_listed_and_patched_keys():
    patch = pod_patch({"volumes": [{"name": "data", "$retainKeys": ["configMap", "name"],
                                    "configMap": {"name": "cm"}}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert out["spec"]["template"]["spec"]["volumes"] == [
        {"name": "data", "configMap": {"name": "cm"}}]


def test_delete_from_primitive_list_on_finalizers():
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example.com/one"]}}
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert out["metadata"]["finalizers"] == ["b.example.com/two"]


def test_finalizers_merge_as_a_set():
    patch = {"metadata": {"finalizers": ["b.example.com/two", "c.example.com/three"]}}
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert sorted(out["metadata"]["finalizers"]) == [
        "a.example.com/one", "b.example.com/two", "c.example.com/three"]
    assert len(out["metadata"]["finalizers"]) == 3


def test_finalizers_apply_patch_with_order_and_deletion():
    patch = {"metadata": {
        "$setElementOrder/finalizers": ["b.example.com/two", "c.example.com/three"],
        "$deleteFromPrimitiveList/finalizers": ["a.example.com/one"],
        "finalizers": ["c.example.com/three"]}}
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert out["metadata"]["finalizers"] == ["b.example.com/two", "c.example.com/three"]


def test_args_are_atomic():
    patch = pod_patch({"containers": [{"name": "sidecar", "args": ["sleep", "2d"]}]})
    out = strategic_merge_patch(deployment(), patch, "Deployment")
    assert containers(out)[1]["args"] == ["sleep", "2d"]


def test_empty_patch_list_for_merge_list_changes_nothing():
    out = strategic_merge_patch(deployment(), pod_patch({"containers": []}), "Deployment")
    assert containers(out) == containers(deployment())


def test_owner_references_merge_by_uid():
    cm = {"kind": "ConfigMap", "metadata": {"name": "c", "ownerReferences": [
        {"uid": "u1", "kind": "Deployment", "name": "a"}]}, "data": {"k": "v"}}
    patch = {"metadata": {"ownerReferences": [{"uid": "u2", "kind": "Deployment", "name": "b"},
                                              {"uid": "u1", "controller": True}]}}
    out = strategic_merge_patch(cm, patch, "ConfigMap")
    refs = {r["uid"]: r for r in out["metadata"]["ownerReferences"]}
    assert refs["u1"] == {"uid": "u1", "kind": "Deployment", "name": "a", "controller": True}
    assert refs["u2"]["name"] == "b"


def test_cronjob_nested_pod_template_merges_containers():
    cj = {"kind": "CronJob", "metadata": {"name": "cj"}, "spec": {
        "schedule": "* * * * *",
        "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}}}}
    patch = {"spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "b", "image": "b:2"}]}}}}}}
    out = strategic_merge_patch(cj, patch, "CronJob")
    cs = out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert cs == [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]


def test_unknown_kind_replaces_lists():
    obj = {"kind": "Widget", "spec": {"items": [{"name": "a", "v": 1}], "m": {"x": 1}}}
    patch = {"spec": {"items": [{"name": "b", "v": 2}], "m": {"y": 2}}}
    out = strategic_merge_patch(obj, patch, "Widget")
    assert out["spec"] == {"items": [{"name": "b", "v": 2}], "m": {"x": 1, "y": 2}}


def test_type_change_replaces_value():
    out = strategic_merge_patch(deployment(), {"spec": {"replicas": "3"}}, "Deployment")
    assert out["spec"]["replicas"] == "3"
    out = strategic_merge_patch(deployment(), {"metadata": {"labels": ["x"]}}, "Deployment")
    assert out["metadata"]["labels"] == ["x"]


def test_table_follows_struct_tags():
    d = PATCH_META["Deployment"]
    tmpl = ("spec", "template", "spec")
    assert d[tmpl + ("containers",)] == ("name", "merge")
    assert d[tmpl + ("containers", "env")] == ("name", "merge")
    assert d[tmpl + ("containers", "ports")] == ("containerPort", "merge")
    assert d[tmpl + ("initContainers", "volumeMounts")] == ("mountPath", "merge")
    assert d[tmpl + ("volumes",)] == ("name", "merge,retainKeys")
    assert d[("metadata", "finalizers")] == (None, "merge")
    assert d[("spec", "template", "metadata", "ownerReferences")] == ("uid", "merge")
    assert tmpl + ("tolerations",) not in d
    assert PATCH_META["Pod"][("spec", "hostAliases")] == ("ip", "merge")
    assert PATCH_META["Pod"][("spec", "topologySpreadConstraints")] == ("topologyKey", "merge")
    assert ("spec", "volumeClaimTemplates") not in PATCH_META["StatefulSet"]
    assert ("spec", "taints") not in PATCH_META["Node"]
    assert ("spec", "rules") not in PATCH_META["Ingress"]
    assert PATCH_META["CronJob"][("spec", "jobTemplate", "spec", "template", "spec",
                                  "containers")] == ("name", "merge")


# ------------------------------------------------------------------ JSON patch

def test_json_patch_replace_add_remove():
    d = deployment()
    out = json_patch(d, [
        {"op": "replace", "path": "/spec/replicas", "value": 5},
        {"op": "add", "path": "/metadata/labels/new", "value": "v"},
        {"op": "remove", "path": "/metadata/labels/tier"},
        {"op": "add", "path": "/spec/template/spec/containers/-",
         "value": {"name": "third", "image": "x"}},
        {"op": "remove", "path": "/spec/template/spec/containers/0/env/0"},
    ])
    assert out["spec"]["replicas"] == 5
    assert out["metadata"]["labels"] == {"app": "web", "new": "v"}
    assert names(containers(out)) == ["app", "sidecar", "third"]
    assert names(containers(out)[0]["env"]) == ["B"]
    assert d == deployment()


def test_json_patch_path_escaping_and_move_copy():
    obj = {"metadata": {"annotations": {"a/b": "1"}}, "spec": {"x": [1, 2, 3]}}
    out = json_patch(obj, [
        {"op": "copy", "from": "/metadata/annotations/a~1b", "path": "/spec/copied"},
        {"op": "move", "from": "/spec/x/0", "path": "/spec/x/-"},
    ])
    assert out["spec"] == {"x": [2, 3, 1], "copied": "1"}


def test_json_patch_test_failure():
    with pytest.raises(PatchError) as e:
        json_patch(deployment(), [{"op": "test", "path": "/spec/replicas", "value": 3},
                                  {"op": "replace", "path": "/spec/replicas", "value": 4}])
    assert e.value.message == "testing value /spec/replicas failed: test failed"
    assert e.value.code == 422


def test_json_patch_test_success_is_strict_about_types():
    d = deployment()
    assert json_patch(d, [{"op": "test", "path": "/spec/replicas", "value": 2}]) == d
    with pytest.raises(PatchError):
        json_patch({"a": True}, [{"op": "test", "path": "/a", "value": 1}])


def test_json_patch_missing_paths():
    with pytest.raises(PatchError) as e:
        json_patch(deployment(), [{"op": "add", "path": "/spec/nope/x", "value": 1}])
    assert e.value.message == \
        'add operation does not apply: doc is missing path: "/spec/nope/x": missing value'
    with pytest.raises(PatchError) as e:
        json_patch(deployment(), [{"op": "remove", "path": "/metadata/labels/missing"}])
    assert e.value.message == ("error in remove for path: '/metadata/labels/missing': "
                               "Unable to remove nonexistent key: missing: missing value")
    with pytest.raises(PatchError) as e:
        json_patch(deployment(), [{"op": "replace", "path": "/spec/foo/bar", "value": 1}])
    assert e.value.message == \
        "replace operation does not apply: doc is missing path: /spec/foo/bar: missing value"
    with pytest.raises(PatchError) as e:
        json_patch(deployment(), [{"op": "replace", "path": "/spec/template/spec/containers/7",
                                   "value": {}}])
    assert "doc is missing key: /spec/template/spec/containers/7" in e.value.message


def test_json_patch_replace_of_missing_member_sets_it_like_json_patch_v4():
    out = json_patch({"spec": {}}, [{"op": "replace", "path": "/spec/foo", "value": 1}])
    assert out == {"spec": {"foo": 1}}


def test_json_patch_bad_bodies():
    with pytest.raises(PatchError) as e:
        json_patch(deployment(), {"op": "add"})
    assert e.value.message == \
        "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
    assert e.value.code == 400
    with pytest.raises(PatchError) as e:
        json_patch(deployment(), [{"op": "frobnicate", "path": "/x"}])
    assert e.value.message == "Unexpected kind: frobnicate"
    with pytest.raises(PatchError) as e:
        json_patch(deployment(), [{"op": "add", "value": 1}])
    assert e.value.message == "add operation failed to decode path: missing value"


def test_json_patch_array_index_out_of_range():
    with pytest.raises(PatchError) as e:
        json_patch({"a": [1]}, [{"op": "add", "path": "/a/5", "value": 2}])
    assert e.value.message == ("error in add for path: '/a/5': Unable to access invalid "
                               "index: 5: invalid index referenced")


# ------------------------------------------------------------------ JSON merge patch

def test_merge_patch_null_deletes_and_lists_replace():
    d = deployment()
    out = json_merge_patch(d, {"metadata": {"labels": {"tier": None, "x": "y"},
                                            "annotations": None},
                               "spec": {"template": {"spec": {"containers": [
                                   {"name": "only", "image": "i"}]}}}})
    assert out["metadata"]["labels"] == {"app": "web", "x": "y"}
    assert "annotations" not in out["metadata"]
    assert containers(out) == [{"name": "only", "image": "i"}]
    assert d == deployment()


def test_merge_patch_rfc7386_examples():
    assert json_merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert json_merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert json_merge_patch({"a": "b"}, {"a": None}) == {}
    assert json_merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert json_merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert json_merge_patch({"a": "foo"}, {"a": {"b": None, "c": 1}}) == {"a": {"c": 1}}
    with pytest.raises(PatchError):
        json_merge_patch({"a": 1}, ["not", "an", "object"])


# ------------------------------------------------------------------ apply_patch dispatch

def test_apply_patch_dispatches_on_content_type():
    d = deployment()
    body = json.dumps({"spec": {"replicas": 7}}).encode()
    assert apply_patch(d, body, SMP, "Deployment")["spec"]["replicas"] == 7
    assert apply_patch(d, body, MERGE + "; charset=utf-8", "Deployment")["spec"]["replicas"] == 7
    ops = json.dumps([{"op": "replace", "path": "/spec/replicas", "value": 9}]).encode()
    assert apply_patch(d, ops, JSONP, "Deployment")["spec"]["replicas"] == 9
    # strategic vs merge differ on merge-keyed lists
    c = json.dumps(pod_patch({"containers": [{"name": "app", "image": "z"}]})).encode()
    assert len(containers(apply_patch(d, c, SMP, "Deployment"))) == 2
    assert len(containers(apply_patch(d, c, MERGE, "Deployment"))) == 1


def test_apply_patch_malformed_json_and_unknown_type():
    with pytest.raises(PatchError) as e:
        apply_patch(deployment(), b'{"spec": ', SMP, "Deployment")
    assert e.value.message == "unexpected end of JSON input"
    with pytest.raises(PatchError) as e:
        apply_patch(deployment(), b"{x}", MERGE, "Deployment")
    assert e.value.message == \
        "error decoding patch: invalid character 'x' looking for beginning of object key string"
    with pytest.raises(PatchError) as e:
        apply_patch(deployment(), b"[1,2}", JSONP, "Deployment")
    assert e.value.message == "error decoding patch: invalid character '}' after array element"
    with pytest.raises(PatchError) as e:
        apply_patch(deployment(), b"[]", SMP, "Deployment")
    assert e.value.message == \
        "json: cannot unmarshal array into Go value of type map[string]interface {}"
    with pytest.raises(PatchError) as e:
        apply_patch(deployment(), b"{}", "text/plain", "Deployment")
    assert e.value.code == 415
