"""Container environment as the kubelet builds it (nodeagent/envvars.py)."""

from __future__ import annotations

import base64

import pytest

from nodeagent.envvars import (
    CREATE_CONTAINER_CONFIG_ERROR,
    INVALID_ENV_NAMES,
    EnvError,
    NodeInfo,
    container_env,
    expand,
    expand_command,
    format_map,
    parse_quantity,
    service_env_map,
)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class Lookup:
    def __init__(self, configmaps=None, secrets=None):
        self.configmaps = configmaps or {}
        self.secrets = secrets or {}

    def configmap(self, ns, name):
        return self.configmaps.get((ns, name))

    def secret(self, ns, name):
        return self.secrets.get((ns, name))


def pod(containers=None, ns="default", **spec):
    return {"metadata": {"name": "web-0", "namespace": ns, "uid": "u-1",
                         "labels": {"app": "web", "tier": "front"},
                         "annotations": {"note": 'say "hi"'}},
            "spec": {"nodeName": "worker-1", "serviceAccountName": "default",
                     "containers": containers or [{"name": "c"}], **spec},
            "status": {"podIP": "127.244.1.5", "podIPs": [{"ip": "127.244.1.5"}],
                       "hostIP": "127.30.0.101", "hostIPs": [{"ip": "127.30.0.101"}]}}


def svc(name, ip, ports, ns="default"):
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": ip, "ports": ports}}


KUBERNETES = svc("kubernetes", "127.96.0.1", [{"name": "https", "port": 443, "protocol": "TCP"}])


# -- expansion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("inp,out", [
    ("$(A)", "a"),
    ("x$(A)y", "xay"),
    ("$(A)$(B)", "ab"),
    ("$$(A)", "$(A)"),            # escaped
    ("$$$(A)", "$a"),
    ("$(UNDEF)", "$(UNDEF)"),     # undefined stays
    ("$(A", "$(A"),               # incomplete
    ("$A", "$A"),
    ("a$", "a$"),
    ("$$", "$"),
    ("$()", "$()"),
    ("$(EMPTY)x", "x"),
])
def test_expand_rules(inp, out):
    assert expand(inp, {"A": "a", "B": "b", "EMPTY": ""}) == out


def test_expand_command_and_args():
    cmd, args = expand_command(["sh", "-c", "echo $(MSG)"], ["$(N)", "$$(N)"],
                               {"MSG": "hi", "N": "3"})
    assert cmd == ["sh", "-c", "echo hi"]
    assert args == ["3", "$(N)"]
    assert expand_command(None, None, {}) == ([], [])


# -- env and envFrom ---------------------------------------------------------------------------

def test_env_values_expand_previous_only():
    c = {"name": "c", "env": [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "$(A)-$(C)"},     # C not defined yet -> literal
        {"name": "C", "value": "3"},
        {"name": "A", "value": "$(A)$(A)"},      # redefinition sees the old A
    ]}
    env = container_env(pod([c]), c, Lookup(), [], None)
    assert env["B"] == "1-$(C)"
    assert env["C"] == "3"
    assert env["A"] == "11"


def test_env_from_configmap_secret_prefix_and_precedence():
    lk = Lookup(configmaps={("default", "cfg"): {"data": {"MODE": "prod", "LEVEL": "3"}}},
                secrets={("default", "sec"): {"data": {"PASSWORD": b64("s3cr3t")}}})
    c = {"name": "c",
         "envFrom": [{"configMapRef": {"name": "cfg"}},
                     {"secretRef": {"name": "sec"}, "prefix": "DB_"}],
         "env": [{"name": "LEVEL", "value": "9"}, {"name": "URL", "value": "x://$(DB_PASSWORD)"}]}
    env = container_env(pod([c]), c, lk, [], None)
    assert env["MODE"] == "prod"
    assert env["LEVEL"] == "9"           # env overrides envFrom
    assert env["DB_PASSWORD"] == "s3cr3t"
    assert env["URL"] == "x://s3cr3t"
    assert env.warnings == []


def test_env_from_invalid_keys_strict_mode_skipped_with_event():
    lk = Lookup(configmaps={("ns1", "cfg"): {"data": {"1BAD": "x", "good": "y", "..x": "z"}}},
                secrets={("ns1", "sec"): {"data": {"2bad": b64("v"), "ok.name": b64("w")}}})
    c = {"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}},
                                  {"secretRef": {"name": "sec"}}]}
    env = container_env(pod([c], ns="ns1"), c, lk, [], None, strict_env_names=True)
    assert env == {"good": "y", "ok.name": "w"}
    assert env.warnings == [
        (INVALID_ENV_NAMES, ("Keys [..x, 1BAD] from the EnvFrom configMap ns1/cfg were skipped "
                            "since they are considered invalid environment variable names.")),
        (INVALID_ENV_NAMES, ("Keys [2bad] from the EnvFrom secret ns1/sec were skipped "
                            "since they are considered invalid environment variable names."))]


def test_env_from_relaxed_names_by_default():
    """Kubernetes 1.30+ (KEP-4369): the kubelet passes every key through."""
    lk = Lookup(configmaps={("ns1", "cfg"): {"data": {"1BAD": "x", "good": "y"}}})
    c = {"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "P_"},
                                  {"configMapRef": {"name": "cfg"}}]}
    env = container_env(pod([c], ns="ns1"), c, lk, [], None)
    assert env == {"P_1BAD": "x", "P_good": "y", "1BAD": "x", "good": "y"}
    assert env.warnings == []


def test_env_from_missing_and_optional():
    c = {"name": "c", "envFrom": [{"configMapRef": {"name": "nope"}}]}
    with pytest.raises(EnvError) as ei:
        container_env(pod([c]), c, Lookup(), [], None)
    assert ei.value.reason == CREATE_CONTAINER_CONFIG_ERROR
    assert ei.value.message == 'configmap "nope" not found'
    c = {"name": "c", "envFrom": [{"secretRef": {"name": "nope"}}]}
    with pytest.raises(EnvError, match='secret "nope" not found'):
        container_env(pod([c]), c, Lookup(), [], None)
    c = {"name": "c", "envFrom": [{"configMapRef": {"name": "nope", "optional": True}},
                                  {"secretRef": {"name": "nope", "optional": True}}]}
    assert container_env(pod([c]), c, Lookup(), [], None) == {}


def test_key_refs_errors_and_optional():
    lk = Lookup(configmaps={("default", "cfg"): {"data": {"k": "v"}}},
                secrets={("default", "sec"): {"data": {"k": b64("sv")}}})

    def env_of(*entries):
        c = {"name": "c", "env": list(entries)}
        return container_env(pod([c]), c, lk, [], None)

    def ref(kind, name, key, optional=None):
        r = {"name": name, "key": key}
        if optional is not None:
            r["optional"] = optional
        return {"name": "X", "valueFrom": {kind: r}}

    assert env_of(ref("configMapKeyRef", "cfg", "k")) == {"X": "v"}
    assert env_of(ref("secretKeyRef", "sec", "k")) == {"X": "sv"}
    with pytest.raises(EnvError, match="^couldn't find key nope in ConfigMap default/cfg$"):
        env_of(ref("configMapKeyRef", "cfg", "nope"))
    with pytest.raises(EnvError, match="^couldn't find key nope in Secret default/sec$"):
        env_of(ref("secretKeyRef", "sec", "nope"))
    with pytest.raises(EnvError, match='^configmap "other" not found$'):
        env_of(ref("configMapKeyRef", "other", "k"))
    with pytest.raises(EnvError, match='^secret "other" not found$'):
        env_of(ref("secretKeyRef", "other", "k"))
    # optional: the variable is simply not set
    assert env_of(ref("configMapKeyRef", "cfg", "nope", True)) == {}
    assert env_of(ref("configMapKeyRef", "other", "k", True)) == {}
    assert env_of(ref("secretKeyRef", "other", "k", True)) == {}
    assert env_of(ref("secretKeyRef", "sec", "nope", True)) == {}


def test_field_refs():
    paths = ["metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels['app']",
             "metadata.annotations['note']", "metadata.labels['missing']", "spec.nodeName",
             "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
             "status.podIPs", "metadata.labels"]
    c = {"name": "c", "env": [{"name": f"V{i}", "valueFrom": {"fieldRef": {"fieldPath": p}}}
                              for i, p in enumerate(paths)]}
    env = container_env(pod([c]), c, Lookup(), [], None)
    assert [env[f"V{i}"] for i in range(len(paths))] == [
        "web-0", "default", "u-1", "web", 'say "hi"', "", "worker-1", "default",
        "127.30.0.101", "127.30.0.101", "127.244.1.5", "127.244.1.5", 'app="web"\ntier="front"']
    # the sandbox's IP, known before the status says so, wins
    env = container_env(pod([c]), c, Lookup(), [], NodeInfo({}, ["10.0.0.1"]),
                        pod_ips=["10.244.1.9"])
    assert env["V10"] == "10.244.1.9" and env["V8"] == "10.0.0.1"
    c = {"name": "c", "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bad"}}}]}
    with pytest.raises(EnvError, match="unsupported fieldPath: spec.bad"):
        container_env(pod([c]), c, Lookup(), [], None)


def test_format_map_go_quoting():
    assert format_map({"b": "x\ny", "a": 'q"\\'}) == 'a="q\\"\\\\"\nb="x\\ny"'
    assert format_map({}) == ""


def test_resource_field_refs_with_divisor_and_allocatable_default():
    c = {"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                                    "requests": {"cpu": "250m", "memory": "64Mi"}},
         "env": [
             {"name": "LC", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
             {"name": "LCm", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu",
                                                                 "divisor": "1m"}}},
             {"name": "LM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
             {"name": "LMi", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                 "divisor": "1Mi"}}},
             {"name": "RC", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu",
                                                                "divisor": "1m"}}},
             {"name": "RM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory",
                                                                "divisor": "1Mi"}}},
             {"name": "LE", "valueFrom": {"resourceFieldRef": {
                 "resource": "limits.ephemeral-storage", "divisor": "1Gi"}}},
         ]}
    node = NodeInfo({"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi"})
    env = container_env(pod([c]), c, Lookup(), [], node)
    assert env["LC"] == "1"          # ceil(0.5)
    assert env["LCm"] == "500"
    assert env["LM"] == str(128 * 2 ** 20)
    assert env["LMi"] == "128"
    assert env["RC"] == "250"
    assert env["RM"] == "64"
    assert env["LE"] == "100"        # no limit: node allocatable
    c2 = {"name": "c", "env": [
        {"name": "LC", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "LM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                           "divisor": "1Mi"}}},
        {"name": "RC", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}}]}
    env = container_env(pod([c2]), c2, Lookup(), [], {"status": {"allocatable": node.allocatable}})
    assert env == {"LC": "4", "LM": "8192", "RC": "0"}


def test_parse_quantity():
    assert parse_quantity("500m") * 2 == 1
    assert parse_quantity("1Gi") == 2 ** 30
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("1.5") * 2 == 3


# -- service links -----------------------------------------------------------------------------

def test_service_link_variables_exact():
    s = svc("redis-master", "127.96.0.11",
            [{"port": 6379, "protocol": "TCP"}, {"name": "metrics", "port": 9121,
                                                  "protocol": "UDP"}])
    env = service_env_map("default", [s], True)
    assert env == {
        "REDIS_MASTER_SERVICE_HOST": "127.96.0.11",
        "REDIS_MASTER_SERVICE_PORT": "6379",
        "REDIS_MASTER_SERVICE_PORT_METRICS": "9121",
        "REDIS_MASTER_PORT": "tcp://127.96.0.11:6379",
        "REDIS_MASTER_PORT_6379_TCP": "tcp://127.96.0.11:6379",
        "REDIS_MASTER_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_MASTER_PORT_6379_TCP_PORT": "6379",
        "REDIS_MASTER_PORT_6379_TCP_ADDR": "127.96.0.11",
        "REDIS_MASTER_PORT_9121_UDP": "udp://127.96.0.11:9121",
        "REDIS_MASTER_PORT_9121_UDP_PROTO": "udp",
        "REDIS_MASTER_PORT_9121_UDP_PORT": "9121",
        "REDIS_MASTER_PORT_9121_UDP_ADDR": "127.96.0.11",
    }


def test_service_links_namespace_headless_and_disabled():
    services = [KUBERNETES,
                svc("foo", "127.96.0.20", [{"port": 8765, "protocol": "TCP"}], ns="app"),
                svc("other", "127.96.0.21", [{"port": 80}], ns="elsewhere"),
                svc("headless", "None", [{"port": 80}], ns="app"),
                {"metadata": {"name": "ext", "namespace": "app"},
                 "spec": {"type": "ExternalName", "externalName": "example.com"}}]
    c = {"name": "c"}
    env = container_env(pod([c], ns="app"), c, Lookup(), services, None)
    assert env["FOO_SERVICE_HOST"] == "127.96.0.20"
    assert env["FOO_PORT_8765_TCP_ADDR"] == "127.96.0.20"
    assert env["KUBERNETES_SERVICE_HOST"] == "127.96.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT"] == "tcp://127.96.0.1:443"
    assert not any(k.startswith(("OTHER_", "HEADLESS_", "EXT_")) for k in env)
    # enableServiceLinks: false keeps only the kubernetes service
    env = container_env(pod([c], ns="app", enableServiceLinks=False), c, Lookup(), services, None)
    assert "FOO_SERVICE_HOST" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "127.96.0.1"


def test_service_vars_usable_in_expansion_and_overridable():
    services = [svc("db", "127.96.0.30", [{"port": 5432, "protocol": "TCP"}])]
    c = {"name": "c", "env": [{"name": "URL", "value": "pg://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)"},
                              {"name": "DB_SERVICE_PORT", "value": "1"}]}
    env = container_env(pod([c]), c, Lookup(), services, None)
    assert env["URL"] == "pg://127.96.0.30:5432"
    assert env["DB_SERVICE_PORT"] == "1"     # the container's own value wins
    # order: container variables first, then the service variables
    keys = list(env)
    assert keys.index("URL") < keys.index("DB_SERVICE_HOST")


def test_subpath_expr():
    from nodeagent.envvars import expand_subpath_expr
    assert expand_subpath_expr("logs/$(POD_NAME)", {"POD_NAME": "web-0"}) == "logs/web-0"
    with pytest.raises(EnvError, match="missing value for A, B"):
        expand_subpath_expr("$(B)/$(A)/$(C)", {"A": "", "C": "c"})


def test_cache_lookup_over_informer_like_caches():
    from nodeagent.envvars import CacheLookup

    class Cache:
        def __init__(self, objs):
            self.objs = objs

        def get(self, ns, name):
            return self.objs.get(f"{ns}/{name}" if ns else name)

        def list(self, ns=None):
            return [o for k, o in self.objs.items() if k.startswith(f"{ns}/")]

    lk = CacheLookup(Cache({"d/c": {"data": {"k": "v"}}}), Cache({"d/s": {"data": {}}}))
    assert lk.configmap("d", "c") == {"data": {"k": "v"}}
    assert lk.configmap("d", "x") is None
    assert lk.secrets("d") == [{"data": {}}]
    assert not hasattr(lk, "pvc")
    lk = CacheLookup(Cache({}), Cache({}), pvcs=Cache({"d/p": {"spec": {}}}), pvs=Cache({"v": {}}))
    assert lk.pvc("d", "p") == {"spec": {}} and lk.pv("v") == {}
    assert not hasattr(lk, "service_account")


def test_node_info_forms():
    from nodeagent.envvars import node_info_of
    want = NodeInfo({"cpu": "2"}, ["10.0.0.1"])
    assert node_info_of({"allocatable": {"cpu": "2"}, "host_ips": ["10.0.0.1"]}) == want
    assert node_info_of(lambda: {"allocatable": {"cpu": "2"}, "host_ips": ["10.0.0.1"]}) == want
    assert node_info_of({"kind": "Node", "status": {
        "allocatable": {"cpu": "2"},
        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                      {"type": "Hostname", "address": "w1"}]}}) == want
    assert node_info_of({"cpu": "2"}) == NodeInfo({"cpu": "2"}, [])
    assert node_info_of(None) == NodeInfo()
