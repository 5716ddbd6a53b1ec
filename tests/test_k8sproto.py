"""apiserver.k8sproto: Kubernetes protobuf request bodies <-> Kubernetes JSON dicts.

* every served kind round-trips encode -> decode unchanged (realistic objects below), and every
  field of every message does too (fully populated messages);
* a hand-built `k8s\\x00` + runtime.Unknown envelope for a ConfigMap, byte for byte what kubectl
  1.32 sends, decodes to the ConfigMap;
* bodies captured from the real kubectl (`create configmap|secret|deployment|...`, `create token`,
  `auth whoami`, `auth can-i`) against a small recording HTTP listener decode to the object
  kubectl itself prints with `--dry-run=client -o json`.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import subprocess
import threading

import pytest

from apiserver import k8sproto
from proto.k8s.api.apps.v1 import generated_pb2 as apps_v1
from proto.k8s.api.core.v1 import generated_pb2 as core_v1
from proto.k8s.apimachinery.pkg.apis.meta.v1 import generated_pb2 as meta_v1
from proto.k8s.apimachinery.pkg.runtime import generated_pb2 as runtime_pb

# ------------------------------------------------------------------ realistic objects, per kind
UID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
T0 = "2024-01-02T03:04:05Z"
T1 = "2024-01-02T03:05:00Z"


def meta(name, namespace="default", **extra):
    m = {"name": name, "uid": UID, "resourceVersion": "1234", "creationTimestamp": T0}
    if namespace:
        m["namespace"] = namespace
    m.update(extra)
    return m


MANAGED = [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
            "time": T0, "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {".": {}, "f:a": {}},
                         "f:metadata": {"f:annotations": {".": {}}}}}]

CONTAINER = {
    "name": "web", "image": "nginx:1.25", "command": ["nginx"], "args": ["-g", "daemon off;"],
    "workingDir": "/srv",
    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"},
              {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "0.0.0.0"}],
    "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "cfg", "optional": True}},
                {"secretRef": {"name": "creds"}}],
    "env": [{"name": "A", "value": "1"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                            "fieldPath": "metadata.name"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"containerName": "web",
                                                               "resource": "limits.memory",
                                                               "divisor": "1Mi"}}},
            {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw",
                                                          "optional": False}}}],
    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                  "requests": {"cpu": "100m", "memory": "64Mi"}},
    "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}],
    "volumeMounts": [{"name": "data", "mountPath": "/data"},
                     {"name": "cfg", "readOnly": True, "mountPath": "/etc/cfg", "subPath": "x",
                      "mountPropagation": "None"}],
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 80, "scheme": "HTTP",
                                  "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                      "initialDelaySeconds": 5, "timeoutSeconds": 1, "periodSeconds": 10,
                      "successThreshold": 1, "failureThreshold": 3},
    "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
    "startupProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "failureThreshold": 30,
                     "terminationGracePeriodSeconds": 10},
    "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo hi"]}},
                  "preStop": {"sleep": {"seconds": 5}}},
    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
    "imagePullPolicy": "IfNotPresent",
    "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                        "privileged": False, "runAsUser": 1000, "runAsGroup": 1000,
                        "runAsNonRoot": True, "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "seccompProfile": {"type": "RuntimeDefault"}},
    "stdin": True, "tty": True,
}

POD_SPEC = {
    "volumes": [
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "k", "path": "k.txt",
                                                                 "mode": 0o644}],
                                      "defaultMode": 420}},
        {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 256,
                                     "optional": True}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"name": "host", "hostPath": {"path": "/var/log", "type": "Directory"}},
        {"name": "podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}},
            {"path": "cpu", "resourceFieldRef": {"containerName": "web",
                                                 "resource": "limits.cpu", "divisor": "1m"}}]}},
        {"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt",
                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            {"secret": {"name": "extra", "optional": True}}]}},
        {"name": "nfs", "nfs": {"server": "10.0.0.9", "path": "/exports", "readOnly": True}},
        {"name": "csi", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": True,
                                "volumeAttributes": {"secretProviderClass": "vault"}}},
        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
            "metadata": {"labels": {"type": "scratch"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                     "resources": {"requests": {"storage": "1Gi"}}}}}},
        {"name": "img", "image": {"reference": "registry.k8s.io/pause:3.9",
                                  "pullPolicy": "IfNotPresent"}},
    ],
    "initContainers": [{"name": "init", "image": "busybox", "command": ["sh", "-c", "true"],
                        "resources": {}, "restartPolicy": "Always"}],
    "containers": [CONTAINER],
    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "activeDeadlineSeconds": 3600,
    "dnsPolicy": "ClusterFirst", "nodeSelector": {"kubernetes.io/os": "linux"},
    "serviceAccountName": "web", "serviceAccount": "web", "automountServiceAccountToken": False,
    "nodeName": "node-1", "hostNetwork": True, "shareProcessNamespace": True,
    "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "runAsNonRoot": True,
                        "supplementalGroups": [4000, 5000], "fsGroup": 2000,
                        "sysctls": [{"name": "net.ipv4.ip_local_port_range",
                                     "value": "1024 65535"}],
                        "fsGroupChangePolicy": "OnRootMismatch",
                        "seLinuxOptions": {"level": "s0:c123,c456"},
                        "seccompProfile": {"type": "Localhost",
                                           "localhostProfile": "profiles/audit.json"},
                        "appArmorProfile": {"type": "RuntimeDefault"}},
    "imagePullSecrets": [{"name": "regcred"}],
    "hostname": "web-0", "subdomain": "web",
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In",
                                       "values": ["a", "b"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [
                    {"key": "disktype", "operator": "Exists"}]}}]},
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}},
             "topologyKey": "kubernetes.io/hostname", "namespaces": ["default"]}]},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {
                "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                                                        "values": ["web"]}]},
                "topologyKey": "kubernetes.io/hostname",
                "namespaceSelector": {}, "matchLabelKeys": ["pod-template-hash"]}}]}},
    "schedulerName": "default-scheduler",
    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                     "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "dedicated", "operator": "Equal", "value": "web",
                     "effect": "NoSchedule"}],
    "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]}],
    "priorityClassName": "high", "priority": 1000,
    "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["svc.cluster.local"],
                  "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]},
    "readinessGates": [{"conditionType": "example.com/ready"}],
    "runtimeClassName": "runc", "enableServiceLinks": False,
    "preemptionPolicy": "PreemptLowerPriority", "overhead": {"cpu": "250m"},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "DoNotSchedule",
                                   "labelSelector": {"matchLabels": {"app": "web"}},
                                   "minDomains": 2, "nodeTaintsPolicy": "Honor"}],
    "setHostnameAsFQDN": True, "os": {"name": "linux"}, "hostUsers": False,
    "schedulingGates": [{"name": "example.com/gate"}],
    "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "gpu-template"}],
}

POD_STATUS = {
    "phase": "Running",
    "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None,
                    "lastTransitionTime": T1},
                   {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                    "lastTransitionTime": T0}],
    "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}],
    "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}],
    "startTime": T0,
    "initContainerStatuses": [{"name": "init", "state": {"terminated": {
        "exitCode": 0, "reason": "Completed", "startedAt": T0, "finishedAt": T0,
        "containerID": "containerd://abc"}}, "lastState": {}, "ready": True, "restartCount": 0,
        "image": "docker.io/library/busybox:latest", "imageID": "docker.io/library/busybox@sha256:1",
        "containerID": "containerd://abc", "started": False}],
    "containerStatuses": [{"name": "web", "state": {"running": {"startedAt": T1}},
                           "lastState": {"terminated": {"exitCode": 137, "signal": 9,
                                                        "reason": "OOMKilled",
                                                        "message": "killed",
                                                        "startedAt": T0, "finishedAt": T1}},
                           "ready": True, "restartCount": 1, "image": "nginx:1.25",
                           "imageID": "docker.io/library/nginx@sha256:2",
                           "containerID": "containerd://def", "started": True,
                           "allocatedResources": {"cpu": "100m"},
                           "resources": {"requests": {"cpu": "100m"}},
                           "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                           "user": {"linux": {"uid": 1000, "gid": 3000,
                                              "supplementalGroups": [3000, 4000]}}}],
    "qosClass": "Burstable",
}

TEMPLATE = {"metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25",
                                     "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                     "resources": {},
                                     "terminationMessagePath": "/dev/termination-log",
                                     "terminationMessagePolicy": "File",
                                     "imagePullPolicy": "IfNotPresent"}],
                     "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                     "dnsPolicy": "ClusterFirst", "securityContext": {},
                     "schedulerName": "default-scheduler"}}
SELECTOR = {"matchLabels": {"app": "web"}}


def cond(type_, status="True", reason="", **extra):
    c = {"type": type_, "status": status, "lastTransitionTime": T1}
    if reason:
        c["reason"] = reason
        c["message"] = f"{reason} happened"
    c.update(extra)
    return c


OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace",
     "metadata": meta("team-a", None, labels={"kubernetes.io/metadata.name": "team-a"}),
     "spec": {"finalizers": ["kubernetes"]},
     "status": {"phase": "Terminating", "conditions": [
         {"type": "NamespaceDeletionContentFailure", "status": "False",
          "lastTransitionTime": T1, "reason": "ContentDeleted",
          "message": "All content successfully deleted"}]}},
    {"apiVersion": "v1", "kind": "ConfigMap",
     "metadata": meta("cfg", annotations={"note": "x"}, managedFields=MANAGED,
                      finalizers=["example.com/keep"], generateName="cfg-"),
     "data": {"a": "1", "config.yaml": "key: value\n"},
     "binaryData": {"blob": "AAEC/w=="}, "immutable": False},
    {"apiVersion": "v1", "kind": "Secret", "metadata": meta("creds"),
     "data": {"pw": "czNjcjN0", "empty": ""}, "stringData": {"user": "admin"},
     "type": "Opaque", "immutable": True},
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("web"),
     "secrets": [{"name": "web-token"}], "imagePullSecrets": [{"name": "regcred"}],
     "automountServiceAccountToken": False},
    {"apiVersion": "v1", "kind": "Service", "metadata": meta("web", labels={"app": "web"}),
     "spec": {"ports": [{"name": "http", "protocol": "TCP", "appProtocol": "http", "port": 80,
                         "targetPort": "http", "nodePort": 30080},
                        {"name": "metrics", "protocol": "TCP", "port": 9090,
                         "targetPort": 9090}],
              "selector": {"app": "web"}, "clusterIP": "10.96.0.10",
              "clusterIPs": ["10.96.0.10", "fd00::10"], "type": "LoadBalancer",
              "externalIPs": ["192.0.2.1"], "sessionAffinity": "ClientIP",
              "loadBalancerSourceRanges": ["10.0.0.0/8"],
              "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000,
              "publishNotReadyAddresses": True,
              "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
              "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack",
              "allocateLoadBalancerNodePorts": True, "loadBalancerClass": "example.com/lb",
              "internalTrafficPolicy": "Cluster", "trafficDistribution": "PreferClose"},
     "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7", "ipMode": "VIP",
                                              "ports": [{"port": 80, "protocol": "TCP"}]}]},
                "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1,
                                "lastTransitionTime": T1, "reason": "Ok", "message": ""}]}},
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": meta("web-0", labels={"app": "web"}, generation=1,
                      ownerReferences=[{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                        "name": "web", "uid": UID, "controller": True,
                                        "blockOwnerDeletion": True}],
                      deletionTimestamp=T1, deletionGracePeriodSeconds=30),
     "spec": POD_SPEC, "status": POD_STATUS},
    {"apiVersion": "apps/v1", "kind": "Deployment",
     "metadata": meta("web", generation=3, labels={"app": "web"},
                      annotations={"deployment.kubernetes.io/revision": "2"}),
     "spec": {"replicas": 3, "selector": SELECTOR, "template": TEMPLATE,
              "strategy": {"type": "RollingUpdate",
                           "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
              "minReadySeconds": 5, "revisionHistoryLimit": 10, "paused": True,
              "progressDeadlineSeconds": 600},
     "status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3,
                "readyReplicas": 3, "availableReplicas": 3, "unavailableReplicas": 1,
                "collisionCount": 0,
                "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": T1,
                                "lastTransitionTime": T1, "reason": "MinimumReplicasAvailable",
                                "message": "Deployment has minimum availability."}]}},
    {"apiVersion": "apps/v1", "kind": "ReplicaSet",
     "metadata": meta("web-5d4f8c7b9", labels={"app": "web", "pod-template-hash": "5d4f8c7b9"},
                      ownerReferences=[{"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web", "uid": UID, "controller": True,
                                        "blockOwnerDeletion": True}]),
     "spec": {"replicas": 0, "minReadySeconds": 5, "selector": SELECTOR, "template": TEMPLATE},
     "status": {"replicas": 0, "observedGeneration": 2,
                "conditions": [cond("ReplicaFailure", "True", "FailedCreate")]}},
    {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("db"),
     "spec": {"replicas": 2, "selector": SELECTOR, "template": TEMPLATE,
              "volumeClaimTemplates": [
                  {"metadata": {"name": "data", "creationTimestamp": None},
                   "spec": {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "10Gi"}},
                            "volumeMode": "Filesystem"},
                   "status": {"phase": "Pending"}}],
              "serviceName": "db", "podManagementPolicy": "Parallel",
              "updateStrategy": {"type": "RollingUpdate",
                                 "rollingUpdate": {"partition": 0, "maxUnavailable": 1}},
              "revisionHistoryLimit": 10, "minReadySeconds": 3,
              "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain",
                                                       "whenScaled": "Delete"},
              "ordinals": {"start": 1}},
     "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                "currentReplicas": 2, "updatedReplicas": 2, "currentRevision": "db-7b9",
                "updateRevision": "db-7b9", "collisionCount": 0, "availableReplicas": 2,
                "conditions": [cond("Ready")]}},
    {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("agent", "kube-system"),
     "spec": {"selector": SELECTOR, "template": TEMPLATE,
              "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {
                  "maxUnavailable": 1, "maxSurge": 0}},
              "minReadySeconds": 10, "revisionHistoryLimit": 10},
     "status": {"currentNumberScheduled": 3, "numberMisscheduled": 0,
                "desiredNumberScheduled": 3, "numberReady": 2, "observedGeneration": 4,
                "updatedNumberScheduled": 3, "numberAvailable": 2, "numberUnavailable": 1,
                "collisionCount": 1, "conditions": [cond("Healthy", "False", "Broken")]}},
    {"apiVersion": "apps/v1", "kind": "ControllerRevision",
     "metadata": meta("db-7b9", labels={"controller-revision-hash": "7b9"}),
     "data": {"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": "db"}},
                                    "spec": {"containers": [{"name": "db",
                                                             "image": "postgres:16"}]}}}},
     "revision": 3},
    {"apiVersion": "batch/v1", "kind": "Job",
     "metadata": meta("pi", labels={"batch.kubernetes.io/job-name": "pi"}),
     "spec": {"parallelism": 2, "completions": 4, "activeDeadlineSeconds": 600,
              "podFailurePolicy": {"rules": [
                  {"action": "FailJob", "onExitCodes": {"containerName": "pi",
                                                        "operator": "In", "values": [42]}},
                  {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget",
                                                            "status": "True"}]}]},
              "successPolicy": {"rules": [{"succeededIndexes": "0-2", "succeededCount": 2}]},
              "backoffLimit": 0, "backoffLimitPerIndex": 1, "maxFailedIndexes": 2,
              "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": UID}},
              "manualSelector": False, "template": {
                  "metadata": {"creationTimestamp": None},
                  "spec": {"containers": [{"name": "pi", "image": "perl",
                                           "command": ["perl", "-Mbignum=bpi", "-wle",
                                                       "print bpi(2000)"],
                                           "resources": {}}],
                           "restartPolicy": "Never"}},
              "ttlSecondsAfterFinished": 100, "completionMode": "Indexed", "suspend": False,
              "podReplacementPolicy": "Failed", "managedBy": "kubernetes.io/job-controller"},
     "status": {"conditions": [{"type": "Complete", "status": "True", "lastProbeTime": T1,
                                "lastTransitionTime": T1}],
                "startTime": T0, "completionTime": T1, "active": 1, "succeeded": 4,
                "failed": 1, "terminating": 0, "completedIndexes": "0-3", "failedIndexes": "",
                "uncountedTerminatedPods": {"succeeded": [UID], "failed": [UID]}, "ready": 0}},
    {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("hello"),
     "spec": {"schedule": "*/1 * * * *", "timeZone": "Etc/UTC", "startingDeadlineSeconds": 30,
              "concurrencyPolicy": "Forbid", "suspend": False,
              "jobTemplate": {"metadata": {"name": "hello", "creationTimestamp": None},
                              "spec": {"template": {"metadata": {"creationTimestamp": None},
                                                    "spec": {"containers": [{
                                                        "name": "hello", "image": "busybox",
                                                        "resources": {}}],
                                                        "restartPolicy": "OnFailure"}}}},
              "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1},
     "status": {"active": [{"kind": "Job", "namespace": "default", "name": "hello-28400000",
                            "uid": UID, "apiVersion": "batch/v1", "resourceVersion": "99"}],
                "lastScheduleTime": T0, "lastSuccessfulTime": T1}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
     "metadata": meta("web", annotations={"nginx.ingress.kubernetes.io/rewrite-target": "/"}),
     "spec": {"ingressClassName": "nginx",
              "defaultBackend": {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket",
                                              "name": "static"}},
              "tls": [{"hosts": ["foo.com"], "secretName": "tls"}],
              "rules": [{"host": "foo.com", "http": {"paths": [
                  {"path": "/bar", "pathType": "Prefix",
                   "backend": {"service": {"name": "svc1", "port": {"number": 8080}}}},
                  {"path": "/baz", "pathType": "Exact",
                   "backend": {"service": {"name": "svc2", "port": {"name": "http"}}}}]}},
                        {"http": {"paths": [{"path": "/", "pathType": "ImplementationSpecific",
                                             "backend": {"service": {"name": "svc3", "port": {
                                                 "number": 80}}}}]}}]},
     "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9", "hostname": "lb.example",
                                              "ports": [{"port": 443, "protocol": "TCP",
                                                         "error": "Pending"}]}]}}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
     "metadata": meta("nginx", None, annotations={
         "ingressclass.kubernetes.io/is-default-class": "true"}),
     "spec": {"controller": "k8s.io/ingress-nginx",
              "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters",
                             "name": "external-lb", "scope": "Namespace",
                             "namespace": "ingress"}}},
    {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
     "metadata": meta("kube-scheduler", "kube-system"),
     "spec": {"holderIdentity": "node-1_5f2a", "leaseDurationSeconds": 15,
              "acquireTime": "2024-01-02T03:04:05.000000Z",
              "renewTime": "2024-01-02T03:04:20.123456Z", "leaseTransitions": 0,
              "strategy": "OldestEmulationVersion", "preferredHolder": "node-2"}},
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": meta("web-abc12", labels={"kubernetes.io/service-name": "web"}),
     "addressType": "IPv4",
     "endpoints": [{"addresses": ["10.244.1.5"],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                    "hostname": "web-0", "nodeName": "node-1", "zone": "a",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-0",
                                  "uid": UID},
                    "hints": {"forZones": [{"name": "a"}]},
                    "deprecatedTopology": {"kubernetes.io/hostname": "node-1"}}],
     "ports": [{"name": "http", "protocol": "TCP", "port": 80, "appProtocol": "http"},
               {"name": "", "port": 0}]},
    {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta("web"),
     "subsets": [{"addresses": [{"ip": "10.244.1.5", "hostname": "web-0", "nodeName": "node-1",
                                 "targetRef": {"kind": "Pod", "namespace": "default",
                                               "name": "web-0", "uid": UID}}],
                  "notReadyAddresses": [{"ip": "10.244.2.7"}],
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                             "appProtocol": "http"}]}]},
    {"apiVersion": "v1", "kind": "Event", "metadata": meta("web-0.17a8c9d0e1f2"),
     "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-0", "uid": UID,
                        "apiVersion": "v1", "resourceVersion": "1200",
                        "fieldPath": "spec.containers{web}"},
     "reason": "Pulled", "message": "Successfully pulled image \"nginx:1.25\"",
     "source": {"component": "kubelet", "host": "node-1"},
     "firstTimestamp": T0, "lastTimestamp": T1, "count": 2, "type": "Normal",
     "eventTime": None, "reportingComponent": "kubelet", "reportingInstance": "node-1"},
    {"apiVersion": "v1", "kind": "Event", "metadata": meta("web-0.17a8c9d0e1f3"),
     "involvedObject": {"kind": "Pod", "name": "web-0"}, "reason": "Scheduled",
     "message": "assigned", "firstTimestamp": None, "lastTimestamp": None,
     "type": "Normal", "eventTime": "2024-01-02T03:04:05.250000Z",
     "series": {"count": 3, "lastObservedTime": "2024-01-02T03:04:59.000001Z"},
     "action": "Binding", "related": {"kind": "Node", "name": "node-1"},
     "reportingComponent": "default-scheduler", "reportingInstance": "sched-1"},
    {"apiVersion": "v1", "kind": "PersistentVolume",
     "metadata": meta("pv-1", None, finalizers=["kubernetes.io/pv-protection"]),
     "spec": {"capacity": {"storage": "10Gi"},
              "hostPath": {"path": "/mnt/data", "type": "DirectoryOrCreate"},
              "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
              "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default",
                           "name": "data", "uid": UID, "apiVersion": "v1",
                           "resourceVersion": "77"},
              "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "manual",
              "mountOptions": ["hard", "nfsvers=4.1"], "volumeMode": "Filesystem",
              "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                  {"key": "kubernetes.io/hostname", "operator": "In",
                   "values": ["node-1"]}]}]}}},
     "status": {"phase": "Bound", "lastPhaseTransitionTime": T1}},
    {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": meta("pv-csi", None),
     "spec": {"capacity": {"storage": "5Gi"},
              "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-123", "fsType": "ext4",
                      "volumeAttributes": {"type": "gp3"},
                      "nodePublishSecretRef": {"name": "s", "namespace": "kube-system"}},
              "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete"},
     "status": {"phase": "Available"}},
    {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
     "metadata": meta("data", annotations={"pv.kubernetes.io/bind-completed": "yes"}),
     "spec": {"accessModes": ["ReadWriteOnce"],
              "selector": {"matchLabels": {"tier": "gold"}},
              "resources": {"requests": {"storage": "10Gi"}, "limits": {"storage": "20Gi"}},
              "volumeName": "pv-1", "storageClassName": "", "volumeMode": "Filesystem",
              "dataSource": {"kind": "VolumeSnapshot", "name": "snap",
                             "apiGroup": "snapshot.storage.k8s.io"},
              "dataSourceRef": {"kind": "VolumeSnapshot", "name": "snap",
                                "apiGroup": "snapshot.storage.k8s.io", "namespace": "default"}},
     "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "10Gi"},
                "conditions": [{"type": "Resizing", "status": "True", "lastProbeTime": None,
                                "lastTransitionTime": T1}],
                "allocatedResources": {"storage": "10Gi"},
                "allocatedResourceStatuses": {"storage": "ControllerResizeInProgress"}}},
    {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
     "metadata": meta("fast", None, annotations={
         "storageclass.kubernetes.io/is-default-class": "true"}),
     "provisioner": "rancher.io/local-path", "parameters": {"type": "ssd"},
     "reclaimPolicy": "Delete", "mountOptions": ["debug"], "allowVolumeExpansion": False,
     "volumeBindingMode": "WaitForFirstConsumer",
     "allowedTopologies": [{"matchLabelExpressions": [
         {"key": "topology.kubernetes.io/zone", "values": ["a", "b"]}]}]},
    {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta("web"),
     "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
              "minReplicas": 1, "maxReplicas": 10,
              "metrics": [
                  {"type": "Resource", "resource": {"name": "cpu", "target": {
                      "type": "Utilization", "averageUtilization": 50}}},
                  {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {
                      "type": "AverageValue", "averageValue": "1k"}}},
                  {"type": "Object", "object": {
                      "describedObject": {"kind": "Ingress", "name": "web",
                                          "apiVersion": "networking.k8s.io/v1"},
                      "metric": {"name": "requests",
                                 "selector": {"matchLabels": {"verb": "GET"}}},
                      "target": {"type": "Value", "value": "10k"}}},
                  {"type": "ContainerResource", "containerResource": {
                      "name": "memory", "container": "web",
                      "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
                  {"type": "External", "external": {"metric": {"name": "queue"}, "target": {
                      "type": "Value", "value": "30"}}}],
              "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                         "selectPolicy": "Min",
                                         "policies": [{"type": "Percent", "value": 100,
                                                       "periodSeconds": 15}]},
                           "scaleUp": {"stabilizationWindowSeconds": 0,
                                       "selectPolicy": "Max",
                                       "policies": [{"type": "Pods", "value": 4,
                                                     "periodSeconds": 15}]}}},
     "status": {"observedGeneration": 1, "lastScaleTime": T1, "currentReplicas": 2,
                "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {
                        "averageValue": "250m", "averageUtilization": 75}}},
                    {"type": "External", "external": {"metric": {"name": "queue"},
                                                      "current": {"value": "12"}}}],
                "conditions": [cond("AbleToScale", "True", "ReadyForNewScale")]}},
    {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": meta("web"),
     "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
              "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80},
     "status": {"observedGeneration": 2, "lastScaleTime": T1, "currentReplicas": 0,
                "desiredReplicas": 0, "currentCPUUtilizationPercentage": 0}},
    {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta("web"),
     "spec": {"replicas": 5}, "status": {"replicas": 3, "selector": "app=web"}},
    {"apiVersion": "v1", "kind": "Node",
     "metadata": meta("node-1", None, labels={"kubernetes.io/hostname": "node-1"}),
     "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"],
              "providerID": "kind://docker/kind/node-1", "unschedulable": True,
              "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule",
                          "timeAdded": T1}],
              "configSource": {"configMap": {"namespace": "kube-system", "name": "kubelet",
                                             "kubeletConfigKey": "kubelet"}}},
     "status": {"capacity": {"cpu": "4", "memory": "8029364Ki", "pods": "110"},
                "allocatable": {"cpu": "3800m", "memory": "7.5Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": T1,
                                "lastTransitionTime": T0, "reason": "KubeletReady",
                                "message": "kubelet is posting ready status"}],
                "addresses": [{"type": "InternalIP", "address": "172.18.0.2"},
                              {"type": "Hostname", "address": "node-1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b",
                             "kernelVersion": "6.1.0", "osImage": "Debian GNU/Linux 12",
                             "containerRuntimeVersion": "containerd://1.7.13",
                             "kubeletVersion": "v1.32.0", "kubeProxyVersion": "v1.32.0",
                             "operatingSystem": "linux", "architecture": "amd64"},
                "images": [{"names": ["docker.io/library/nginx:1.25"], "sizeBytes": 70000000}],
                "volumesInUse": ["kubernetes.io/csi/ebs^vol-1"],
                "volumesAttached": [{"name": "kubernetes.io/csi/ebs^vol-1",
                                     "devicePath": ""}],
                "runtimeHandlers": [{"name": "runc", "features": {
                    "recursiveReadOnlyMounts": True, "userNamespaces": False}}],
                "features": {"supplementalGroupsPolicy": True}}},
    {"apiVersion": "v1", "kind": "ReplicationController", "metadata": meta("rc"),
     "spec": {"replicas": 2, "minReadySeconds": 1, "selector": {"app": "web"},
              "template": TEMPLATE},
     "status": {"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 2,
                "availableReplicas": 2, "observedGeneration": 1,
                "conditions": [{"type": "ReplicaFailure", "status": "False",
                                "lastTransitionTime": T1}]}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("reader"),
     "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods"],
                "resourceNames": ["web-0"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": meta("read-pods"),
     "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"},
                  {"kind": "ServiceAccount", "name": "web", "namespace": "default"}],
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": meta("monitoring", None),
     "rules": [{"verbs": ["get"], "nonResourceURLs": ["/metrics", "/healthz"]}],
     "aggregationRule": {"clusterRoleSelectors": [
         {"matchLabels": {"rbac.example.com/aggregate-to-monitoring": "true"}}]}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": meta("monitoring", None),
     "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                   "name": "system:monitoring"}],
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "monitoring"}},
    {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("web"),
     "spec": {"minAvailable": "50%", "selector": SELECTOR, "maxUnavailable": 1,
              "unhealthyPodEvictionPolicy": "AlwaysAllow"},
     "status": {"observedGeneration": 1, "disruptedPods": {"web-1": T1},
                "disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2,
                "expectedPods": 3, "conditions": [
                    {"type": "DisruptionAllowed", "status": "False", "observedGeneration": 1,
                     "lastTransitionTime": T1, "reason": "InsufficientPods",
                     "message": ""}]}},
    {"apiVersion": "policy/v1", "kind": "Eviction",
     "metadata": {"name": "web-0", "namespace": "default", "creationTimestamp": None},
     "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": UID},
                       "propagationPolicy": "Background", "dryRun": ["All"]}},
    {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": meta("high", None),
     "value": 1000000, "globalDefault": True, "description": "for important pods",
     "preemptionPolicy": "Never"},
    {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta("compute"),
     "spec": {"hard": {"requests.cpu": "1", "requests.memory": "1Gi", "pods": "10"},
              "scopes": ["NotTerminating"],
              "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass",
                                                      "operator": "In",
                                                      "values": ["high"]}]}},
     "status": {"hard": {"pods": "10"}, "used": {"pods": "0"}}},
    {"apiVersion": "v1", "kind": "LimitRange", "metadata": meta("limits"),
     "spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"cpu": "10m"},
                          "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"},
                          "maxLimitRequestRatio": {"cpu": "10"}}]}},
    {"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta("tmpl"), "template": TEMPLATE},
    {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web-0",
                                                          "creationTimestamp": None},
     "target": {"kind": "Node", "name": "node-1", "apiVersion": "v1"}},
    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
     "metadata": {"name": "web", "namespace": "default", "creationTimestamp": None},
     "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600,
              "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-0",
                                 "uid": UID}},
     "status": {"token": "eyJhbGciOiJSUzI1NiJ9.e30.sig", "expirationTimestamp": T1}},
    {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
     "metadata": {"creationTimestamp": T0},
     "status": {"userInfo": {"username": "kubernetes-admin", "uid": "u-1",
                             "groups": ["kubeadm:cluster-admins", "system:authenticated"],
                             "extra": {"authentication.kubernetes.io/credential-id": ["X509SHA256=ab"],
                                       "scopes": ["a", "b"]}}}},
    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
     "metadata": {"creationTimestamp": None},
     "spec": {"token": "abc", "audiences": ["api"]},
     "status": {"authenticated": True, "user": {"username": "system:serviceaccount:default:web",
                                                "groups": ["system:serviceaccounts"]},
                "audiences": ["api"]}},
    {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
     "metadata": {"creationTimestamp": None},
     "spec": {"resourceAttributes": {"namespace": "default", "verb": "create",
                                     "group": "apps", "version": "v1",
                                     "resource": "deployments", "subresource": "scale",
                                     "name": "web",
                                     "fieldSelector": {"rawSelector": "spec.nodeName=n1"},
                                     "labelSelector": {"requirements": [
                                         {"key": "app", "operator": "In",
                                          "values": ["web"]}]}}},
     "status": {"allowed": False, "denied": True, "reason": "no RBAC policy matched",
                "evaluationError": "x"}},
    {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
     "metadata": {"creationTimestamp": None},
     "spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}},
     "status": {"allowed": True}},
    {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
     "metadata": {"creationTimestamp": None},
     "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}, "user": "jane",
              "groups": ["dev"], "extra": {"scopes": ["x"]}, "uid": "42"},
     "status": {"allowed": True, "reason": "RBAC: allowed"}},
    {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
     "metadata": {"creationTimestamp": None}, "spec": {"namespace": "default"},
     "status": {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/api"]}],
                "incomplete": False}},
    {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
     "propagationPolicy": "Foreground", "orphanDependents": False,
     "preconditions": {"resourceVersion": "12"}},
    {"apiVersion": "meta.k8s.io/v1", "kind": "Status", "metadata": {}, "status": "Failure",
     "message": "pods \"x\" not found", "reason": "NotFound",
     "details": {"name": "x", "kind": "pods", "causes": [{"reason": "FieldValueRequired",
                                                          "message": "Required value",
                                                          "field": "spec.containers"}],
                 "retryAfterSeconds": 1},
     "code": 404},
]


def _obj_id(obj):
    return f"{obj['apiVersion']}/{obj['kind']}/{obj.get('metadata', {}).get('name', '')}"


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("obj", OBJECTS, ids=_obj_id)
def test_round_trip(obj):
    body = k8sproto.encode(obj)
    assert body.startswith(b"k8s\x00")
    decoded = k8sproto.decode(body)
    assert decoded == obj
    assert list(decoded)[:2] == ["kind", "apiVersion"]
    json.dumps(decoded)  # plain JSON types only


def test_every_supported_kind_has_a_round_trip_object():
    covered = {(o["apiVersion"], o["kind"]) for o in OBJECTS}
    assert set(k8sproto.supported_kinds()) <= covered


_SAMPLES = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": lambda m: setattr(m, "seconds", 1704164645),
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime":
        lambda m: (setattr(m, "seconds", 1704164645), setattr(m, "nanos", 123456000)),
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration":
        lambda m: setattr(m, "duration", 3723_500_000_000),
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1":
        lambda m: setattr(m, "Raw", b'{"f:spec":{"f:replicas":{}}}'),
    "k8s.io.apimachinery.pkg.api.resource.Quantity": lambda m: setattr(m, "string", "1500m"),
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString":
        lambda m: (setattr(m, "type", 1), setattr(m, "strVal", "http")),
    "k8s.io.apimachinery.pkg.runtime.RawExtension":
        lambda m: setattr(m, "raw", b'{"a":[1,"b",null,{"c":true}]}'),
    "k8s.io.api.authentication.v1.ExtraValue": lambda m: m.items.extend(["x", "y"]),
    "k8s.io.api.authorization.v1.ExtraValue": lambda m: m.items.extend(["x", "y"]),
}


def _sample_scalar(f, i):
    if f.type == f.TYPE_STRING:
        return f"{f.name}-{i}"
    if f.type == f.TYPE_BOOL:
        return True
    if f.type == f.TYPE_BYTES:
        return bytes([0, 255, i]) + b"data"
    return 7 + i


def _populate(msg, depth=0):
    """Set every field of msg (recursively) to a non-zero value."""
    assert depth < 40, f"runaway recursion at {msg.DESCRIPTOR.full_name}"
    special = _SAMPLES.get(msg.DESCRIPTOR.full_name)
    if special:
        special(msg)
        return
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if f.is_repeated and f.message_type and f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            for i, key in enumerate(("k1", "k2")):
                if vf.type == vf.TYPE_MESSAGE:
                    _populate(value[key], depth + 1)
                else:
                    value[key] = _sample_scalar(vf, i)
        elif f.is_repeated:
            for i in range(2):
                if f.type == f.TYPE_MESSAGE:
                    _populate(value.add(), depth + 1)
                else:
                    value.append(_sample_scalar(f, i))
        elif f.type == f.TYPE_MESSAGE:
            value.SetInParent()
            _populate(value, depth + 1)
        else:
            setattr(msg, f.name, _sample_scalar(f, 1))


@pytest.mark.parametrize("api_version,kind", k8sproto.supported_kinds(),
                         ids=lambda x: x if isinstance(x, str) else None)
def test_every_field_round_trips(api_version, kind):
    cls = k8sproto.message_class(api_version, kind)
    msg = cls()
    _populate(msg)
    as_dict = k8sproto.message_to_dict(msg)
    json.dumps(as_dict)
    again = cls()
    k8sproto.dict_to_message(as_dict, again)
    assert again == msg
    obj = {"kind": kind, "apiVersion": api_version, **as_dict}
    assert k8sproto.decode(k8sproto.encode(obj)) == obj


def test_embedded_objects_drop_type_meta():
    # Go's JSON keeps apiVersion/kind on the PVCs a StatefulSet embeds; protobuf has no room
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
           "spec": {"volumeClaimTemplates": [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                              "metadata": {"name": "data"}}]}}
    assert k8sproto.decode(k8sproto.encode(sts))["spec"] == {
        "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}
    with pytest.raises(ValueError, match="unknown field 'kind'"):
        k8sproto.encode({"apiVersion": "apps/v1", "kind": "Deployment",
                         "spec": {"template": {"kind": "Pod"}}})


def test_json_names_follow_kubernetes():
    d = k8sproto.message_to_dict(_full(core_v1.Probe))
    assert {"httpGet", "exec", "tcpSocket", "grpc", "periodSeconds"} <= set(d)  # inline handler
    assert "handler" not in d
    d = k8sproto.message_to_dict(_full(core_v1.Volume))
    assert {"name", "configMap", "persistentVolumeClaim", "hostPath"} <= set(d)
    d = k8sproto.message_to_dict(_full(core_v1.ConfigMapKeySelector))
    assert set(d) == {"name", "key", "optional"}
    d = k8sproto.message_to_dict(_full(core_v1.EphemeralContainer))
    assert {"name", "image", "targetContainerName"} <= set(d)
    d = k8sproto.message_to_dict(_full(core_v1.PersistentVolumeSpec))
    assert {"capacity", "nfs", "csi", "claimRef"} <= set(d)
    d = k8sproto.message_to_dict(_full(core_v1.NodeDaemonEndpoints))
    assert d == {"kubeletEndpoint": {"Port": 8}}
    from proto.k8s.api.authentication.v1 import generated_pb2 as authn
    from proto.k8s.api.networking.v1 import generated_pb2 as net
    assert "apiGroup" in k8sproto.message_to_dict(_full(net.IngressClassParametersReference))
    assert "uid" in k8sproto.message_to_dict(_full(authn.BoundObjectReference))
    d = k8sproto.message_to_dict(_full(net.IngressRule))
    assert set(d) == {"host", "http"}


def _full(cls):
    msg = cls()
    _populate(msg)
    return msg


# ------------------------------------------------------------------ the envelope, by hand
def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field, payload):  # a length-delimited field: tag (wire type 2), length, payload
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def test_golden_configmap_envelope():
    # What kubectl 1.32 sends for `kubectl create configmap c1 --from-literal=a=b`: Go's
    # encoder writes every non-pointer field of ObjectMeta, even the empty ones.
    object_meta = (_ld(1, b"c1")                          # name
                   + _ld(2, b"") + _ld(3, b"")            # generateName, namespace
                   + _ld(4, b"") + _ld(5, b"")            # selfLink, uid
                   + _ld(6, b"")                          # resourceVersion
                   + bytes([7 << 3 | 0, 0])               # generation = 0 (varint)
                   + _ld(8, b""))                         # creationTimestamp: zero Time
    config_map = (_ld(1, object_meta)                     # metadata
                  + _ld(2, _ld(1, b"a") + _ld(2, b"b")))  # data: map entry {key, value}
    type_meta = _ld(1, b"v1") + _ld(2, b"ConfigMap")      # apiVersion, kind
    unknown = (_ld(1, type_meta) + _ld(2, config_map)     # typeMeta, raw
               + _ld(3, b"") + _ld(4, b""))               # contentEncoding, contentType
    body = b"k8s\x00" + unknown
    # byte for byte the body captured from kubectl 1.32.4
    assert body == (b'k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12\x1c\n\x12\n\x02c1\x12\x00\x1a'
                    b'\x00"\x00*\x002\x008\x00B\x00\x12\x06\n\x01a\x12\x01b\x1a\x00"\x00')
    assert k8sproto.decode(body) == {
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": "c1", "creationTimestamp": None},
        "data": {"a": "b"},
    }


# ------------------------------------------------------------------ zero values, presence
def _decode_msg(api_version, kind, msg):
    unknown = runtime_pb.Unknown(raw=msg.SerializeToString())
    unknown.typeMeta.apiVersion, unknown.typeMeta.kind = api_version, kind
    return k8sproto.decode(b"k8s\x00" + unknown.SerializeToString())


def test_zero_values_follow_go_json():
    d = apps_v1.Deployment()
    d.metadata.name = "web"
    d.metadata.generateName = ""          # non-pointer omitempty: Go's JSON drops it
    d.metadata.generation = 0
    d.metadata.creationTimestamp.SetInParent()  # zero Time: null
    d.spec.replicas = 0                   # *int32: kept
    d.spec.minReadySeconds = 0            # omitempty: dropped
    d.spec.paused = False                 # omitempty: dropped
    d.spec.strategy.SetInParent()         # present struct: {}
    d.status.replicas = 0                 # omitempty: dropped
    d.status.collisionCount = 0           # *int32: kept
    assert _decode_msg("apps/v1", "Deployment", d) == {
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "web", "creationTimestamp": None},
        "spec": {"replicas": 0, "strategy": {}},
        "status": {"collisionCount": 0},
    }
    rs = apps_v1.ReplicaSet()
    rs.status.replicas = 0                # `json:"replicas"` (no omitempty): kept
    rs.status.readyReplicas = 0
    assert _decode_msg("apps/v1", "ReplicaSet", rs)["status"] == {"replicas": 0}
    svc = core_v1.Service()
    port = svc.spec.ports.add()
    port.port, port.nodePort, port.name = 80, 0, ""
    port.targetPort.type, port.targetPort.intVal = 0, 0  # IntOrString struct: always there
    assert _decode_msg("v1", "Service", svc)["spec"] == {"ports": [{"port": 80,
                                                                    "targetPort": 0}]}


def test_special_types():
    ev = core_v1.Event()
    ev.firstTimestamp.seconds = 0         # the Unix epoch, not the zero time
    ev.lastTimestamp.seconds = 1704164645
    ev.lastTimestamp.nanos = 999          # Time keeps whole seconds only
    ev.eventTime.seconds = 1704164645
    ev.eventTime.nanos = 1_500            # MicroTime: microseconds, 6 digits
    ev.series.lastObservedTime.SetInParent()
    d = _decode_msg("v1", "Event", ev)
    assert d["firstTimestamp"] == "1970-01-01T00:00:00Z"
    assert d["lastTimestamp"] == "2024-01-02T03:04:05Z"
    assert d["eventTime"] == "2024-01-02T03:04:05.000001Z"
    assert d["series"] == {"lastObservedTime": None}
    # RFC 3339 with an offset and fractions is accepted on encode
    obj = {"apiVersion": "v1", "kind": "Event", "firstTimestamp": "2024-01-02T04:04:05.5+01:00",
           "eventTime": "2024-01-02T03:04:05.1234567Z"}
    d = k8sproto.decode(k8sproto.encode(obj))
    assert d["firstTimestamp"] == "2024-01-02T03:04:05Z"
    assert d["eventTime"] == "2024-01-02T03:04:05.123456Z"
    s = core_v1.Secret()
    s.data["bin"] = bytes(range(256))
    s.data["empty"] = b""
    got = _decode_msg("v1", "Secret", s)["data"]
    assert got == {"bin": base64.b64encode(bytes(range(256))).decode(), "empty": ""}
    cr = apps_v1.ControllerRevision()
    cr.data.SetInParent()
    assert _decode_msg("apps/v1", "ControllerRevision", cr) == {
        "kind": "ControllerRevision", "apiVersion": "apps/v1", "data": None}
    q = apps_v1.Deployment()
    q.spec.template.spec.containers.add().resources.limits["cpu"].SetInParent()
    got = _decode_msg("apps/v1", "Deployment", q)
    assert got["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "0"}}


@pytest.mark.parametrize("ns,text", [
    (0, "0s"), (1, "1ns"), (1_100, "1.1µs"), (2_200_000, "2.2ms"), (1_000_000_000, "1s"),
    (1_500_000_000, "1.5s"), (60_000_000_000, "1m0s"), (3_723_500_000_000, "1h2m3.5s"),
    (-90_000_000_000, "-1m30s"), (100 * 3_600_000_000_000, "100h0m0s"),
])
def test_duration_strings(ns, text):
    msg = meta_v1.Duration(duration=ns)
    assert k8sproto.message_to_dict(msg) == text
    back = meta_v1.Duration()
    k8sproto.dict_to_message(text, back)
    assert back.duration == ns


def test_duration_parse_variants():
    for text, ns in [("1h30m", 5_400_000_000_000), ("1.5h", 5_400_000_000_000),
                     ("300ms", 300_000_000), ("2us", 2_000), ("+5s", 5_000_000_000), ("0", 0)]:
        back = meta_v1.Duration()
        k8sproto.dict_to_message(text, back)
        assert back.duration == ns, text
    with pytest.raises(ValueError):
        k8sproto.dict_to_message("5 minutes", meta_v1.Duration())


# ------------------------------------------------------------------ errors
def _envelope(api_version="v1", kind="ConfigMap", raw=b"", **kw):
    unknown = runtime_pb.Unknown(raw=raw, **kw)
    if api_version is not None:
        unknown.typeMeta.apiVersion = api_version
    if kind is not None:
        unknown.typeMeta.kind = kind
    return b"k8s\x00" + unknown.SerializeToString()


@pytest.mark.parametrize("body,message", [
    (b"", "magic"),
    (b'{"kind":"ConfigMap"}', "magic"),
    (b"k8s\x00\x0a\xff", "malformed runtime.Unknown"),
    (_envelope(kind="Widget"), "kind 'Widget'"),
    (_envelope(api_version="example.com/v1"), "apiVersion 'example.com/v1'"),
    (_envelope(api_version=None, kind=None), "no apiVersion/kind"),
    (_envelope(raw=b"\x0a\x05\x0a"), "malformed v1 ConfigMap"),
    (_envelope(contentEncoding="gzip"), "contentEncoding"),
    (_envelope(contentType="application/json"), "contentType"),
    (_envelope("apps/v1", "ControllerRevision", raw=b"\x12\x03\x0a\x01{"), "JSON"),
    (_envelope(raw=b"\x0a\x04\x0a\x02\xff\x41"), "UTF-8"),                    # metadata.name
    (_envelope(raw=b"\x12\x06\x0a\x01\xff\x12\x01a"), "UTF-8"),               # a data key
    (_envelope(raw=b"\x12\x06\x0a\x01a\x12\x01\xfe"), "UTF-8"),               # a data value
])
def test_decode_errors(body, message):
    with pytest.raises(ValueError, match=message):
        k8sproto.decode(body)


def test_decode_accepts_shared_kinds_and_protobuf_content_type():
    body = _envelope("apps/v1", "DeleteOptions", raw=meta_v1.DeleteOptions(
        propagationPolicy="Orphan").SerializeToString(),
        contentType="application/vnd.kubernetes.protobuf")
    assert k8sproto.decode(body) == {"kind": "DeleteOptions", "apiVersion": "apps/v1",
                                     "propagationPolicy": "Orphan"}


@pytest.mark.parametrize("obj,message", [
    ({"kind": "ConfigMap"}, "apiVersion and kind"),
    ({"apiVersion": "v1", "kind": "Gizmo"}, "kind 'Gizmo'"),
    ({"apiVersion": "v1", "kind": "ConfigMap", "dat": {}}, "unknown field 'dat'"),
    ({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": 1}}, r"data\['a'\]"),
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": []}, "expected an object"),
    ({"apiVersion": "v1", "kind": "Secret", "data": {"a": "%%%"}}, "base64"),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "3"}},
     "spec.replicas"),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": True}},
     "spec.replicas"),
    ({"apiVersion": "v1", "kind": "Event", "lastTimestamp": "yesterday"}, "RFC 3339"),
    ({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"targetPort": 1.5}]}},
     r"spec.ports\[0\].targetPort"),
])
def test_encode_errors(obj, message):
    with pytest.raises(ValueError, match=message):
        k8sproto.encode(obj)


# ------------------------------------------------------------------ the real kubectl
KUBECTL = shutil.which("kubectl")
DISCOVERY = {
    "": [("configmaps", "ConfigMap", True), ("secrets", "Secret", True),
         ("namespaces", "Namespace", False), ("services", "Service", True),
         ("serviceaccounts", "ServiceAccount", True), ("pods", "Pod", True),
         ("resourcequotas", "ResourceQuota", True)],
    "apps": [("deployments", "Deployment", True)],
    "batch": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "networking.k8s.io": [("ingresses", "Ingress", True)],
    "rbac.authorization.k8s.io": [("roles", "Role", True), ("rolebindings", "RoleBinding", True),
                                  ("clusterroles", "ClusterRole", False),
                                  ("clusterrolebindings", "ClusterRoleBinding", False)],
    "policy": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "scheduling.k8s.io": [("priorityclasses", "PriorityClass", False)],
    "authentication.k8s.io": [("selfsubjectreviews", "SelfSubjectReview", False)],
    "authorization.k8s.io": [("selfsubjectaccessreviews", "SelfSubjectAccessReview", False)],
}
DISCOVERY_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
# what the recording listener adds to a created object so kubectl can print its result
REPLY_STATUS = {
    "TokenRequest": {"token": "fake-token", "expirationTimestamp": "2030-01-01T00:00:00Z"},
    "SelfSubjectReview": {"userInfo": {"username": "admin", "groups": ["system:masters"]}},
    "SelfSubjectAccessReview": {"allowed": True},
}


def _discovery(groups):
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": [
                {"metadata": {"name": group}, "versions": [{
                    "version": "v1", "freshness": "Current", "resources": [
                        {"resource": plural, "singularResource": kind.lower(),
                         "scope": "Namespaced" if namespaced else "Cluster",
                         "responseKind": {"group": group, "version": "v1", "kind": kind},
                         "verbs": ["create", "delete", "get", "list", "patch", "update",
                                   "watch"]}
                        for plural, kind, namespaced in DISCOVERY[group]]}]}
                for group in groups]}


class _Handler(http.server.BaseHTTPRequestHandler):
    """Just enough API server for kubectl's create commands; records every POST body."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, code, obj, ctype="application/json"):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0"})
        if path == "/api":
            return self._send(200, _discovery([""]), DISCOVERY_TYPE)
        if path == "/apis":
            return self._send(200, _discovery([g for g in DISCOVERY if g]), DISCOVERY_TYPE)
        self._send(404, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                         "status": "Failure", "reason": "NotFound", "code": 404,
                         "message": f"{path} not found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.posts.append((self.path, self.headers.get("Content-Type"), body))
        try:
            obj = k8sproto.decode(body)
        except ValueError as e:
            return self._send(400, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Failure", "reason": "BadRequest", "code": 400,
                                    "message": str(e)})
        if obj["kind"] in REPLY_STATUS:
            obj["status"] = REPLY_STATUS[obj["kind"]]
        self._send(201, obj)


@pytest.fixture(scope="module")
def fake_apiserver():
    if not KUBECTL:
        pytest.skip("kubectl is not installed")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.posts = []
    thread = threading.Thread(target=server.serve_forever, name="fake-apiserver", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def run_kubectl(fake_apiserver, tmp_path_factory):
    env = dict(os.environ, KUBECONFIG=os.devnull,
               KUBECACHEDIR=str(tmp_path_factory.mktemp("kubecache")))
    server = f"http://127.0.0.1:{fake_apiserver.server_address[1]}"

    def run(*args):
        return subprocess.run([KUBECTL, "--server", server, "--token", "x", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    return run


TLS_CRT = """-----BEGIN CERTIFICATE-----
MIIBhTCCASugAwIBAgIUSNZcTIZpHf8tRg+uwzzvQzL3jIUwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMa3ViZWxhYi10ZXN0MCAXDTI2MTEyMzAyMDAxNloYDzIxMjYx
MDMwMDIwMDE2WjAXMRUwEwYDVQQDDAxrdWJlbGFiLXRlc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAQN4bakoMqlz0k6g52v2Y4Pgr9Lyi3qOn6UqNR/EoV2C69Z
a7vemsYleBsH8LS6THrbH3xMMvQSGHbdpGIerwAdo1MwUTAdBgNVHQ4EFgQUvaV/
LNbDTbjjJqTTncTktxEksacwHwYDVR0jBBgwFoAUvaV/LNbDTbjjJqTTncTktxEk
sacwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiB0hhdSoo2ytsUs
Oidjo/Y/QlLCuJKoG3YO3EdhxyeTqQIhAOWS4yLATIOmhycfZC9Z3x/wxTCqxdhY
h+++dEi78WBe
-----END CERTIFICATE-----
"""
TLS_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2ybwuM3kZamdQdri
gAfYZUODIzIcwu/O/secjLkDkAihRANCAAQN4bakoMqlz0k6g52v2Y4Pgr9Lyi3q
On6UqNR/EoV2C69Za7vemsYleBsH8LS6THrbH3xMMvQSGHbdpGIerwAd
-----END PRIVATE KEY-----
"""


def _b64(text):
    return base64.b64encode(text.encode()).decode()


NEW = {"creationTimestamp": None}   # kubectl's ObjectMeta for a new object: only the zero time


def _new(name, **extra):
    return {"name": name, **NEW, **extra}


def _pod_spec(name, restart=None):
    spec = {"containers": [{"name": name, "image": "busybox", "resources": {}}]}
    if restart:
        spec["restartPolicy"] = restart
    return {"metadata": dict(NEW), "spec": spec}


# (command line, path POSTed to, expected object, kubectl supports --dry-run=client -o json)
KUBECTL_CASES = {
    "configmap": (
        ["create", "configmap", "c1", "--from-literal=a=b"], "/api/v1/namespaces/default/configmaps",
        {"kind": "ConfigMap", "apiVersion": "v1", "metadata": _new("c1"), "data": {"a": "b"}},
        True),
    "secret-generic": (
        ["create", "secret", "generic", "s1", "--from-literal=user=admin",
         "--from-literal=pw=s3cr3t"], "/api/v1/namespaces/default/secrets",
        {"kind": "Secret", "apiVersion": "v1", "metadata": _new("s1"),
         "data": {"user": _b64("admin"), "pw": _b64("s3cr3t")}}, True),
    "secret-tls": (
        ["create", "secret", "tls", "tls1", "--cert={crt}", "--key={key}"],
        "/api/v1/namespaces/default/secrets",
        {"kind": "Secret", "apiVersion": "v1", "metadata": _new("tls1"),
         "data": {"tls.crt": _b64(TLS_CRT), "tls.key": _b64(TLS_KEY)},
         "type": "kubernetes.io/tls"}, True),
    "namespace": (
        ["create", "namespace", "ns1"], "/api/v1/namespaces",
        {"kind": "Namespace", "apiVersion": "v1", "metadata": _new("ns1"), "spec": {},
         "status": {}}, True),
    "deployment": (
        ["create", "deployment", "web", "--image=nginx", "--replicas=2"],
        "/apis/apps/v1/namespaces/default/deployments",
        {"kind": "Deployment", "apiVersion": "apps/v1",
         "metadata": _new("web", labels={"app": "web"}),
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {**NEW, "labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                                        "resources": {}}]}},
                  "strategy": {}},
         "status": {}}, True),
    "deployment-zero": (
        ["create", "deployment", "idle", "--image=nginx", "--replicas=0", "--port=80"],
        "/apis/apps/v1/namespaces/default/deployments",
        {"kind": "Deployment", "apiVersion": "apps/v1",
         "metadata": _new("idle", labels={"app": "idle"}),
         "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "idle"}},
                  "template": {"metadata": {**NEW, "labels": {"app": "idle"}},
                               "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                                        "ports": [{"containerPort": 80}],
                                                        "resources": {}}]}},
                  "strategy": {}},
         "status": {}}, True),
    "service-nodeport": (
        ["create", "service", "nodeport", "s", "--tcp=80:8080"],
        "/api/v1/namespaces/default/services",
        {"kind": "Service", "apiVersion": "v1", "metadata": _new("s", labels={"app": "s"}),
         "spec": {"ports": [{"name": "80-8080", "protocol": "TCP", "port": 80,
                             "targetPort": 8080}],
                  "selector": {"app": "s"}, "type": "NodePort"},
         "status": {"loadBalancer": {}}}, True),
    "service-clusterip": (
        ["create", "service", "clusterip", "cs", "--tcp=5678:http"],
        "/api/v1/namespaces/default/services",
        {"kind": "Service", "apiVersion": "v1", "metadata": _new("cs", labels={"app": "cs"}),
         "spec": {"ports": [{"name": "5678-http", "protocol": "TCP", "port": 5678,
                             "targetPort": "http"}],
                  "selector": {"app": "cs"}, "type": "ClusterIP"},
         "status": {"loadBalancer": {}}}, True),
    "job": (
        ["create", "job", "j", "--image=busybox"], "/apis/batch/v1/namespaces/default/jobs",
        {"kind": "Job", "apiVersion": "batch/v1", "metadata": _new("j"),
         "spec": {"template": _pod_spec("j", "Never")}, "status": {}}, True),
    "cronjob": (
        ["create", "cronjob", "c", "--image=busybox", "--schedule=*/1 * * * *"],
        "/apis/batch/v1/namespaces/default/cronjobs",
        {"kind": "CronJob", "apiVersion": "batch/v1", "metadata": _new("c"),
         "spec": {"schedule": "*/1 * * * *",
                  "jobTemplate": {"metadata": _new("c"),
                                  "spec": {"template": _pod_spec("c", "OnFailure")}}},
         "status": {}}, True),
    "serviceaccount": (
        ["create", "serviceaccount", "sa"], "/api/v1/namespaces/default/serviceaccounts",
        {"kind": "ServiceAccount", "apiVersion": "v1", "metadata": _new("sa")}, True),
    "ingress": (
        ["create", "ingress", "ig", "--class=nginx", "--rule=foo.com/bar=svc1:8080,tls=my-cert",
         "--rule=/*=svc2:http", "--annotation=a=b"],
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
        {"kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
         "metadata": _new("ig", annotations={"a": "b"}),
         "spec": {"ingressClassName": "nginx",
                  "tls": [{"hosts": ["foo.com"], "secretName": "my-cert"}],
                  "rules": [
                      {"host": "foo.com", "http": {"paths": [
                          {"path": "/bar", "pathType": "Exact", "backend": {
                              "service": {"name": "svc1", "port": {"number": 8080}}}}]}},
                      {"http": {"paths": [
                          {"path": "/", "pathType": "Prefix", "backend": {
                              "service": {"name": "svc2", "port": {"name": "http"}}}}]}}]},
         "status": {"loadBalancer": {}}}, True),
    "quota": (
        ["create", "quota", "q", "--hard=cpu=1,memory=1G,pods=2", "--scopes=NotTerminating"],
        "/api/v1/namespaces/default/resourcequotas",
        {"kind": "ResourceQuota", "apiVersion": "v1", "metadata": _new("q"),
         "spec": {"hard": {"cpu": "1", "memory": "1G", "pods": "2"},
                  "scopes": ["NotTerminating"]},
         "status": {}}, True),
    "role": (
        ["create", "role", "r", "--verb=get,list", "--resource=pods,deployments.apps"],
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
        {"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": _new("r"),
         "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]},
                   {"verbs": ["get", "list"], "apiGroups": ["apps"],
                    "resources": ["deployments"]}]}, True),
    "rolebinding": (
        ["create", "rolebinding", "rb", "--role=r", "--user=u1",
         "--serviceaccount=default:sa"],
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
        {"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
         "metadata": _new("rb"),
         "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "u1"},
                      {"kind": "ServiceAccount", "name": "sa", "namespace": "default"}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}},
        True),
    "clusterrole": (
        ["create", "clusterrole", "cr", "--verb=get", "--non-resource-url=/logs/*"],
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1",
         "metadata": _new("cr"), "rules": [{"verbs": ["get"], "nonResourceURLs": ["/logs/*"]}]},
        True),
    "clusterrolebinding": (
        ["create", "clusterrolebinding", "crb", "--clusterrole=cr", "--group=g1"],
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {"kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
         "metadata": _new("crb"),
         "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "g1"}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "cr"}}, True),
    "poddisruptionbudget": (
        ["create", "poddisruptionbudget", "pdb", "--selector=app=x", "--min-available=50%"],
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        {"kind": "PodDisruptionBudget", "apiVersion": "policy/v1", "metadata": _new("pdb"),
         "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "x"}}},
         "status": {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0,
                    "expectedPods": 0}}, True),
    "priorityclass": (
        ["create", "priorityclass", "pc", "--value=1000", "--description=d"],
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        {"kind": "PriorityClass", "apiVersion": "scheduling.k8s.io/v1", "metadata": _new("pc"),
         "value": 1000, "description": "d", "preemptionPolicy": "PreemptLowerPriority"},
        True),
    "token": (
        ["create", "token", "sa", "--duration=10m", "--audience=a1"],
        "/api/v1/namespaces/default/serviceaccounts/sa/token",
        {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "metadata": NEW,
         "spec": {"audiences": ["a1"], "expirationSeconds": 600},
         "status": {"token": "", "expirationTimestamp": None}}, False),
    "auth-whoami": (
        ["auth", "whoami"], "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
         "metadata": NEW, "status": {"userInfo": {}}}, False),
    "auth-can-i": (
        ["auth", "can-i", "create", "deployments.apps", "-n", "team-a"],
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
         "metadata": NEW,
         "spec": {"resourceAttributes": {"namespace": "team-a", "verb": "create",
                                         "group": "apps", "resource": "deployments"}},
         "status": {"allowed": False}}, False),
}


@pytest.mark.parametrize("case", KUBECTL_CASES)
def test_real_kubectl_body(case, fake_apiserver, run_kubectl, tmp_path):
    args, path, expected, dry_run = KUBECTL_CASES[case]
    (tmp_path / "tls.crt").write_text(TLS_CRT)
    (tmp_path / "tls.key").write_text(TLS_KEY)
    args = [a.format(crt=tmp_path / "tls.crt", key=tmp_path / "tls.key") for a in args]
    fake_apiserver.posts.clear()
    proc = run_kubectl(*args)
    assert proc.returncode == 0, proc.stderr
    assert len(fake_apiserver.posts) == 1, fake_apiserver.posts
    [(url, content_type, body)] = fake_apiserver.posts
    if content_type != k8sproto.MEDIA_TYPE:
        pytest.skip(f"this kubectl sends {content_type} bodies; protobuf needs kubectl >= 1.32")
    assert url.split("?")[0] == path
    assert k8sproto.decode(body) == expected
    if dry_run:  # kubectl's own JSON for the object it sent
        proc = run_kubectl(*args, "--dry-run=client", "-o", "json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == expected
