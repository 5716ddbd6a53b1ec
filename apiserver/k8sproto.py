"""Kubernetes protobuf request bodies <-> the JSON dict form of the same object.

kubectl 1.32's typed-client commands (`create configmap|secret|deployment|...`, `create token`,
`auth whoami`, `auth can-i`) POST `Content-Type: application/vnd.kubernetes.protobuf` bodies:

    b"k8s\\x00" + runtime.Unknown{typeMeta{apiVersion, kind}, raw, contentEncoding, contentType}

where `raw` is the typed object's protobuf (k8s.io/api/<group>/<version>/generated.proto).
`decode()` turns such a body into exactly the dict that Kubernetes' JSON for the object
parses to; `encode()` is the reverse (used by tests and any protobuf client).

The message classes come from the .proto files under proto/k8s/, which carry Kubernetes' own
package names, message names and field numbers. The JSON mapping follows Go's encoding/json over
the k8s.io/api structs, which is not the generic proto3 JSON mapping:

* JSON names are the Go `json:` tags (the proto field names, or `json_name` where upstream's
  proto name differs: IngressClassParametersReference.apiGroup, BoundObjectReference.uid);
  fields Go embeds with `json:",inline"` (Volume.volumeSource, Probe.handler, ...) are merged
  into their parent.
* Special types: IntOrString -> int or str; Quantity -> its string; Time -> RFC 3339 in whole
  seconds, with the zero time (an empty message) -> None, as Go writes `null`; MicroTime -> RFC
  3339 with 6-digit microseconds; Duration -> Go duration string ("1h2m3s"); RawExtension and
  FieldsV1 -> the embedded JSON, parsed; authentication/authorization ExtraValue -> list of
  strings; `bytes` (Secret data, ConfigMap binaryData) -> base64.
* Presence: proto2 keeps it. A field absent from the body is absent from the dict; a scalar
  that is present is kept even when zero (`replicas: 0`), except for the scalars Go declares as
  non-pointer `omitempty` (ObjectMeta.generateName, ServicePort.nodePort, ...): Go's protobuf
  encoder always writes those, and Go's JSON encoder drops them when zero, so decode drops them
  too (table _OMITEMPTY below). Empty lists and maps are left out. Message fields that are present
  (Go always writes non-pointer structs) come out as dicts, possibly empty (`status: {}`).
* Objects embedded in others (StatefulSet volumeClaimTemplates) lose their apiVersion/kind in
  protobuf, as in Go; encode() accepts and drops them there.
* Unknown fields in the body (newer Kubernetes fields this copy of the .proto files lacks) are
  dropped.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import json
import re
from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message

from proto.k8s.api.apps.v1 import generated_pb2 as _apps_v1
from proto.k8s.api.authentication.v1 import generated_pb2 as _authentication_v1
from proto.k8s.api.authorization.v1 import generated_pb2 as _authorization_v1
from proto.k8s.api.autoscaling.v1 import generated_pb2 as _autoscaling_v1
from proto.k8s.api.autoscaling.v2 import generated_pb2 as _autoscaling_v2
from proto.k8s.api.batch.v1 import generated_pb2 as _batch_v1
from proto.k8s.api.coordination.v1 import generated_pb2 as _coordination_v1
from proto.k8s.api.core.v1 import generated_pb2 as _core_v1
from proto.k8s.api.discovery.v1 import generated_pb2 as _discovery_v1
from proto.k8s.api.networking.v1 import generated_pb2 as _networking_v1
from proto.k8s.api.policy.v1 import generated_pb2 as _policy_v1
from proto.k8s.api.rbac.v1 import generated_pb2 as _rbac_v1
from proto.k8s.api.scheduling.v1 import generated_pb2 as _scheduling_v1
from proto.k8s.api.storage.v1 import generated_pb2 as _storage_v1
from proto.k8s.apimachinery.pkg.apis.meta.v1 import generated_pb2 as _meta_v1
from proto.k8s.apimachinery.pkg.runtime import generated_pb2 as _runtime

__all__ = ["MAGIC", "MEDIA_TYPE", "ProtobufError", "decode", "dict_to_message", "encode",
           "message_class", "message_to_dict", "supported_kinds"]


class ProtobufError(ValueError):
    """A body or object that cannot be decoded or encoded (unknown kind, malformed bytes, a
    value of the wrong type); its message says what and where."""


MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

# apiVersion -> (generated module, kinds served from it)
_KINDS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "v1": (_core_v1, (
        "Binding", "ConfigMap", "Endpoints", "Event", "LimitRange", "Namespace", "Node",
        "PersistentVolume", "PersistentVolumeClaim", "Pod", "PodTemplate",
        "ReplicationController", "ResourceQuota", "Secret", "Service", "ServiceAccount")),
    "apps/v1": (_apps_v1, (
        "ControllerRevision", "DaemonSet", "Deployment", "ReplicaSet", "StatefulSet")),
    "batch/v1": (_batch_v1, ("CronJob", "Job")),
    "networking.k8s.io/v1": (_networking_v1, ("Ingress", "IngressClass")),
    "coordination.k8s.io/v1": (_coordination_v1, ("Lease",)),
    "discovery.k8s.io/v1": (_discovery_v1, ("EndpointSlice",)),
    "autoscaling/v1": (_autoscaling_v1, ("HorizontalPodAutoscaler", "Scale")),
    "autoscaling/v2": (_autoscaling_v2, ("HorizontalPodAutoscaler",)),
    "storage.k8s.io/v1": (_storage_v1, ("StorageClass",)),
    "rbac.authorization.k8s.io/v1": (_rbac_v1, (
        "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")),
    "policy/v1": (_policy_v1, ("Eviction", "PodDisruptionBudget")),
    "scheduling.k8s.io/v1": (_scheduling_v1, ("PriorityClass",)),
    "authentication.k8s.io/v1": (_authentication_v1, (
        "SelfSubjectReview", "TokenRequest", "TokenReview")),
    "authorization.k8s.io/v1": (_authorization_v1, (
        "SelfSubjectAccessReview", "SelfSubjectRulesReview", "SubjectAccessReview")),
    "meta.k8s.io/v1": (_meta_v1, ("DeleteOptions", "Status")),
}
# Kinds every group version carries (apimachinery registers them into each one).
_SHARED_KINDS = {"DeleteOptions": _meta_v1.DeleteOptions}
_KIND_MESSAGES = frozenset(
    [getattr(module, k).DESCRIPTOR.full_name for module, kinds in _KINDS.values() for k in kinds]
    + [cls.DESCRIPTOR.full_name for cls in _SHARED_KINDS.values()])

# Fields Go embeds with `json:",inline"`: their members appear in the parent's JSON object.
_INLINE = frozenset({
    "k8s.io.api.core.v1.ConfigMapEnvSource.localObjectReference",
    "k8s.io.api.core.v1.ConfigMapKeySelector.localObjectReference",
    "k8s.io.api.core.v1.ConfigMapProjection.localObjectReference",
    "k8s.io.api.core.v1.ConfigMapVolumeSource.localObjectReference",
    "k8s.io.api.core.v1.SecretEnvSource.localObjectReference",
    "k8s.io.api.core.v1.SecretKeySelector.localObjectReference",
    "k8s.io.api.core.v1.SecretProjection.localObjectReference",
    "k8s.io.api.core.v1.EphemeralContainer.ephemeralContainerCommon",
    "k8s.io.api.core.v1.PersistentVolumeSpec.persistentVolumeSource",
    "k8s.io.api.core.v1.Probe.handler",
    "k8s.io.api.core.v1.Volume.volumeSource",
    "k8s.io.api.networking.v1.IngressRule.ingressRuleValue",
})

# Scalar fields Go declares as non-pointer with `json:",omitempty"` (k8s.io/api 1.32 types.go),
# by message (prefix "k8s.io.api." or "k8s.io.apimachinery.pkg.apis." left off) and proto field
# name. Go's protobuf encoder always writes them, even when zero; its JSON encoder leaves them
# out when zero, and so does decode(). Every other present scalar is kept, zero or not: pointers
# (written only when set) and fields without omitempty (always in Go's JSON).
_OMITEMPTY_SRC: dict[str, str] = {
    "apps.v1.DaemonSetCondition": "reason message",
    "apps.v1.DaemonSetSpec": "minReadySeconds",
    "apps.v1.DaemonSetStatus": (
        "observedGeneration updatedNumberScheduled numberAvailable numberUnavailable"),
    "apps.v1.DaemonSetUpdateStrategy": "type",
    "apps.v1.DeploymentCondition": "reason message",
    "apps.v1.DeploymentSpec": "minReadySeconds paused",
    "apps.v1.DeploymentStatus": (
        "observedGeneration replicas updatedReplicas readyReplicas availableReplicas "
        "unavailableReplicas"),
    "apps.v1.DeploymentStrategy": "type",
    "apps.v1.ReplicaSetCondition": "reason message",
    "apps.v1.ReplicaSetSpec": "minReadySeconds",
    "apps.v1.ReplicaSetStatus": (
        "fullyLabeledReplicas readyReplicas availableReplicas observedGeneration"),
    "apps.v1.StatefulSetCondition": "reason message",
    "apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicy": "whenDeleted whenScaled",
    "apps.v1.StatefulSetSpec": "podManagementPolicy minReadySeconds",
    "apps.v1.StatefulSetStatus": (
        "observedGeneration readyReplicas currentReplicas updatedReplicas currentRevision "
        "updateRevision"),
    "apps.v1.StatefulSetUpdateStrategy": "type",
    "authentication.v1.BoundObjectReference": "kind apiVersion name uID",
    "authentication.v1.TokenReviewSpec": "token",
    "authentication.v1.TokenReviewStatus": "authenticated error",
    "authentication.v1.UserInfo": "username uid",
    "authorization.v1.FieldSelectorAttributes": "rawSelector",
    "authorization.v1.LabelSelectorAttributes": "rawSelector",
    "authorization.v1.NonResourceAttributes": "path verb",
    "authorization.v1.ResourceAttributes": "namespace verb group version resource subresource name",
    "authorization.v1.SelfSubjectRulesReviewSpec": "namespace",
    "authorization.v1.SubjectAccessReviewSpec": "user uid",
    "authorization.v1.SubjectAccessReviewStatus": "denied reason evaluationError",
    "authorization.v1.SubjectRulesReviewStatus": "evaluationError",
    "autoscaling.v1.CrossVersionObjectReference": "apiVersion",
    "autoscaling.v1.ScaleSpec": "replicas",
    "autoscaling.v1.ScaleStatus": "selector",
    "autoscaling.v2.CrossVersionObjectReference": "apiVersion",
    "autoscaling.v2.HorizontalPodAutoscalerCondition": "reason message",
    "autoscaling.v2.HorizontalPodAutoscalerStatus": "currentReplicas",
    "batch.v1.CronJobSpec": "concurrencyPolicy",
    "batch.v1.JobCondition": "reason message",
    "batch.v1.JobStatus": "active succeeded failed completedIndexes",
    "core.v1.AWSElasticBlockStoreVolumeSource": "fsType partition readOnly",
    "core.v1.AzureFilePersistentVolumeSource": "readOnly",
    "core.v1.AzureFileVolumeSource": "readOnly",
    "core.v1.CSIPersistentVolumeSource": "readOnly fsType",
    "core.v1.CephFSPersistentVolumeSource": "path user secretFile readOnly",
    "core.v1.CephFSVolumeSource": "path user secretFile readOnly",
    "core.v1.CinderPersistentVolumeSource": "fsType readOnly",
    "core.v1.CinderVolumeSource": "fsType readOnly",
    "core.v1.ConfigMapNodeConfigSource": "uid resourceVersion",
    "core.v1.Container": (
        "image workingDir terminationMessagePath terminationMessagePolicy imagePullPolicy "
        "stdin stdinOnce tty"),
    "core.v1.ContainerImage": "sizeBytes",
    "core.v1.ContainerPort": "name hostPort protocol hostIP",
    "core.v1.ContainerStateTerminated": "signal reason message containerID",
    "core.v1.ContainerStateWaiting": "reason message",
    "core.v1.ContainerStatus": "containerID",
    "core.v1.EmptyDirVolumeSource": "medium",
    "core.v1.EndpointAddress": "hostname",
    "core.v1.EndpointPort": "name protocol",
    "core.v1.EnvFromSource": "prefix",
    "core.v1.EnvVar": "value",
    "core.v1.EphemeralContainer": "targetContainerName",
    "core.v1.EphemeralContainerCommon": (
        "image workingDir terminationMessagePath terminationMessagePolicy imagePullPolicy "
        "stdin stdinOnce tty"),
    "core.v1.Event": "reason message count type action",
    "core.v1.EventSeries": "count",
    "core.v1.EventSource": "component host",
    "core.v1.FCVolumeSource": "fsType readOnly",
    "core.v1.FlexPersistentVolumeSource": "fsType readOnly",
    "core.v1.FlexVolumeSource": "fsType readOnly",
    "core.v1.FlockerVolumeSource": "datasetName datasetUUID",
    "core.v1.GCEPersistentDiskVolumeSource": "fsType partition readOnly",
    "core.v1.GitRepoVolumeSource": "revision directory",
    "core.v1.GlusterfsPersistentVolumeSource": "readOnly",
    "core.v1.GlusterfsVolumeSource": "readOnly",
    "core.v1.HTTPGetAction": "path host scheme",
    "core.v1.ISCSIPersistentVolumeSource": (
        "iscsiInterface fsType readOnly chapAuthDiscovery chapAuthSession"),
    "core.v1.ISCSIVolumeSource": "iscsiInterface fsType readOnly chapAuthDiscovery chapAuthSession",
    "core.v1.ImageVolumeSource": "reference pullPolicy",
    "core.v1.LoadBalancerIngress": "ip hostname",
    "core.v1.LocalObjectReference": "name",
    "core.v1.ModifyVolumeStatus": "targetVolumeAttributesClassName",
    "core.v1.NFSVolumeSource": "readOnly",
    "core.v1.NamespaceCondition": "reason message",
    "core.v1.NamespaceStatus": "phase",
    "core.v1.NodeCondition": "reason message",
    "core.v1.NodeConfigStatus": "error",
    "core.v1.NodeSpec": "podCIDR providerID unschedulable externalID",
    "core.v1.NodeStatus": "phase",
    "core.v1.ObjectFieldSelector": "apiVersion",
    "core.v1.ObjectReference": "kind namespace name uid apiVersion resourceVersion fieldPath",
    "core.v1.PersistentVolumeClaimCondition": "reason message",
    "core.v1.PersistentVolumeClaimSpec": "volumeName",
    "core.v1.PersistentVolumeClaimStatus": "phase",
    "core.v1.PersistentVolumeClaimVolumeSource": "readOnly",
    "core.v1.PersistentVolumeSpec": "persistentVolumeReclaimPolicy storageClassName",
    "core.v1.PersistentVolumeStatus": "phase message reason",
    "core.v1.PhotonPersistentDiskVolumeSource": "fsType",
    "core.v1.PodCondition": "reason message",
    "core.v1.PodDNSConfigOption": "name",
    "core.v1.PodSpec": (
        "restartPolicy dnsPolicy serviceAccountName serviceAccount nodeName hostNetwork "
        "hostPID hostIPC hostname subdomain schedulerName priorityClassName"),
    "core.v1.PodStatus": "phase message reason nominatedNodeName hostIP podIP qosClass resize",
    "core.v1.PortworxVolumeSource": "fsType readOnly",
    "core.v1.Probe": (
        "initialDelaySeconds timeoutSeconds periodSeconds successThreshold failureThreshold"),
    "core.v1.QuobyteVolumeSource": "readOnly user group tenant",
    "core.v1.RBDPersistentVolumeSource": "fsType pool user keyring readOnly",
    "core.v1.RBDVolumeSource": "fsType pool user keyring readOnly",
    "core.v1.ReplicationControllerCondition": "reason message",
    "core.v1.ReplicationControllerSpec": "minReadySeconds",
    "core.v1.ReplicationControllerStatus": (
        "fullyLabeledReplicas readyReplicas availableReplicas observedGeneration"),
    "core.v1.ResourceClaim": "request",
    "core.v1.ResourceFieldSelector": "containerName",
    "core.v1.ResourceHealth": "health",
    "core.v1.SELinuxOptions": "user role type level",
    "core.v1.ScaleIOPersistentVolumeSource": (
        "sslEnabled protectionDomain storagePool storageMode volumeName fsType readOnly"),
    "core.v1.ScaleIOVolumeSource": (
        "sslEnabled protectionDomain storagePool storageMode volumeName fsType readOnly"),
    "core.v1.Secret": "type",
    "core.v1.SecretReference": "name namespace",
    "core.v1.SecretVolumeSource": "secretName",
    "core.v1.ServiceAccountTokenProjection": "audience",
    "core.v1.ServicePort": "name protocol nodePort",
    "core.v1.ServiceSpec": (
        "clusterIP type sessionAffinity loadBalancerIP externalName externalTrafficPolicy "
        "healthCheckNodePort publishNotReadyAddresses"),
    "core.v1.StorageOSPersistentVolumeSource": "volumeName volumeNamespace fsType readOnly",
    "core.v1.StorageOSVolumeSource": "volumeName volumeNamespace fsType readOnly",
    "core.v1.TCPSocketAction": "host",
    "core.v1.Taint": "value",
    "core.v1.Toleration": "key operator value effect",
    "core.v1.VolumeMount": "readOnly subPath subPathExpr",
    "core.v1.VolumeMountStatus": "readOnly",
    "core.v1.VsphereVirtualDiskVolumeSource": "fsType storagePolicyName storagePolicyID",
    "k8s.io.apimachinery.pkg.runtime.TypeMeta": "apiVersion kind",
    "meta.v1.Condition": "observedGeneration",
    "meta.v1.CreateOptions": "fieldManager fieldValidation",
    "meta.v1.ListMeta": "selfLink resourceVersion continue",
    "meta.v1.ManagedFieldsEntry": "manager operation apiVersion fieldsType subresource",
    "meta.v1.ObjectMeta": "name generateName namespace selfLink uid resourceVersion generation",
    "meta.v1.Status": "status message reason code",
    "meta.v1.StatusCause": "reason message field",
    "meta.v1.StatusDetails": "name group kind uid retryAfterSeconds",
    "meta.v1.TypeMeta": "kind apiVersion",
    "networking.v1.HTTPIngressPath": "path",
    "networking.v1.IngressClassSpec": "controller",
    "networking.v1.IngressLoadBalancerIngress": "ip hostname",
    "networking.v1.IngressRule": "host",
    "networking.v1.IngressTLS": "secretName",
    "networking.v1.ServiceBackendPort": "name number",
    "policy.v1.PodDisruptionBudgetStatus": "observedGeneration",
    "rbac.v1.Subject": "apiGroup namespace",
    "scheduling.v1.PriorityClass": "globalDefault description",
}


def _full_name(short: str) -> str:
    if short.startswith("meta."):
        return "k8s.io.apimachinery.pkg.apis." + short
    return "k8s.io.api." + short


_OMITEMPTY = frozenset(f"{_full_name(m)}.{f}" for m, fs in _OMITEMPTY_SRC.items()
                       for f in fs.split())

_TIME = "k8s.io.apimachinery.pkg.apis.meta.v1.Time"
_MICROTIME = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime"
_DURATION = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration"
_FIELDSV1 = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1"
_QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
_INTORSTRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_RAWEXTENSION = "k8s.io.apimachinery.pkg.runtime.RawExtension"
_EXTRAVALUES = ("k8s.io.api.authentication.v1.ExtraValue",
                "k8s.io.api.authorization.v1.ExtraValue")

_FD = _descriptor.FieldDescriptor


# ---------------------------------------------------------------------------- lookup
def message_class(api_version: str, kind: str) -> type[_message.Message]:
    """The generated message class for a served apiVersion/kind; ProtobufError if unknown."""
    entry = _KINDS.get(api_version)
    if entry is None:
        raise ProtobufError(f"no protobuf kinds are registered for apiVersion {api_version!r}")
    module, kinds = entry
    if kind in kinds:
        return getattr(module, kind)
    if kind in _SHARED_KINDS:
        return _SHARED_KINDS[kind]
    raise ProtobufError(f"no protobuf message is registered for kind {kind!r} "
                        f"in apiVersion {api_version!r}")


def supported_kinds() -> list[tuple[str, str]]:
    """Every (apiVersion, kind) decode() and encode() accept (shared kinds excluded)."""
    return [(av, k) for av, (_, kinds) in _KINDS.items() for k in kinds]


# ---------------------------------------------------------------------------- envelope
def decode(body: bytes) -> dict:
    """A `k8s\\x00` + runtime.Unknown protobuf body -> the object's Kubernetes JSON dict."""
    body = bytes(body)
    if not body.startswith(MAGIC):
        raise ProtobufError(f"protobuf body does not start with the magic {MAGIC!r} "
                            f"(got {body[:4]!r})")
    unknown = _runtime.Unknown()
    try:
        unknown.ParseFromString(body[len(MAGIC):])
    except _message.DecodeError as e:
        raise ProtobufError(f"malformed runtime.Unknown envelope: {e}") from None
    if unknown.contentEncoding:
        raise ProtobufError(f"unsupported contentEncoding {unknown.contentEncoding!r} "
                            "in the protobuf envelope")
    if unknown.contentType and unknown.contentType.split(";")[0].strip() != MEDIA_TYPE:
        raise ProtobufError(f"unsupported contentType {unknown.contentType!r} "
                            "in the protobuf envelope")
    api_version = unknown.typeMeta.apiVersion
    kind = unknown.typeMeta.kind
    if not api_version or not kind:
        raise ProtobufError("the protobuf envelope carries no apiVersion/kind (typeMeta is "
                            f"{api_version!r}/{kind!r})")
    msg = message_class(api_version, kind)()
    try:
        msg.ParseFromString(unknown.raw)
    except _message.DecodeError as e:
        raise ProtobufError(f"malformed {api_version} {kind} in the protobuf body: {e}") from None
    out = {"kind": kind, "apiVersion": api_version}
    try:
        out.update(message_to_dict(msg))
    except UnicodeDecodeError as e:
        raise ProtobufError(f"a string in the {api_version} {kind} is not UTF-8: {e}") from None
    return out


def encode(obj: dict) -> bytes:
    """A Kubernetes JSON dict (with apiVersion and kind) -> `k8s\\x00` + runtime.Unknown body."""
    if not isinstance(obj, dict):
        raise ProtobufError(f"expected an object, got {type(obj).__name__}")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version \
            or not kind:
        raise ProtobufError("the object needs string apiVersion and kind to be encoded")
    msg = message_class(api_version, kind)()
    dict_to_message({k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}, msg)
    unknown = _runtime.Unknown(raw=msg.SerializeToString(), contentType="")
    unknown.typeMeta.apiVersion = api_version
    unknown.typeMeta.kind = kind
    return MAGIC + unknown.SerializeToString()


# ---------------------------------------------------------------------------- proto -> dict
class _Plan:
    """Per message type: (field, JSON name, inline?, drop-zero?) in declaration order, and the
    JSON-name index (inline members reached through their chain of inline fields)."""

    __slots__ = ("fields", "index", "typed")

    def __init__(self, desc: _descriptor.Descriptor):
        # a kind (Go embeds TypeMeta): its JSON may carry apiVersion/kind
        self.typed = desc.full_name in _KIND_MESSAGES
        self.fields = []
        for f in desc.fields:
            key = f"{desc.full_name}.{f.name}"
            self.fields.append((f, f.json_name, key in _INLINE, key in _OMITEMPTY))
        self.index: dict[str, tuple[_descriptor.FieldDescriptor, ...]] = {}
        for f, json_name, inline, _ in self.fields:
            if inline:
                for name, chain in _plan(f.message_type).index.items():
                    self.index.setdefault(name, (f, *chain))
            else:
                self.index[json_name] = (f,)


_PLANS: dict[str, _Plan] = {}


def _plan(desc: _descriptor.Descriptor) -> _Plan:
    plan = _PLANS.get(desc.full_name)
    if plan is None:
        plan = _PLANS[desc.full_name] = _Plan(desc)
    return plan


def _is_map(f: _descriptor.FieldDescriptor) -> bool:
    return (f.type == _FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry
            and f.is_repeated)


def message_to_dict(msg: _message.Message) -> Any:
    """A message (of any of the proto/k8s types) -> its Kubernetes JSON value."""
    name = msg.DESCRIPTOR.full_name
    special = _TO_JSON.get(name)
    if special is not None:
        return special(msg)
    out: dict[str, Any] = {}
    for f, json_name, inline, omitempty in _plan(msg.DESCRIPTOR).fields:
        if f.is_repeated:
            values = getattr(msg, f.name)
            if not values:
                continue
            if _is_map(f):
                vf = f.message_type.fields_by_name["value"]
                out[json_name] = {_text(k): _value_to_json(vf, v) for k, v in values.items()}
            else:
                out[json_name] = [_value_to_json(f, v) for v in values]
            continue
        if not msg.HasField(f.name):
            continue
        value = getattr(msg, f.name)
        if inline:
            out.update(message_to_dict(value))
        elif f.type == _FD.TYPE_MESSAGE:
            out[json_name] = message_to_dict(value)
        elif omitempty and not value:
            continue
        else:
            out[json_name] = _value_to_json(f, value)
    return out


def _value_to_json(f: _descriptor.FieldDescriptor, value: Any) -> Any:
    if f.type == _FD.TYPE_MESSAGE:
        return message_to_dict(value)
    if f.type == _FD.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    if f.type == _FD.TYPE_STRING:
        return _text(value)
    return value


def _text(value: str | bytes) -> str:
    # proto2 does not check UTF-8: a string field holding invalid UTF-8 comes back as bytes
    # (and a map key holding it raises UnicodeDecodeError, caught in decode()).
    if isinstance(value, bytes):
        raise ProtobufError(f"a string field holds invalid UTF-8: {value[:40]!r}")
    return value


def _time_to_json(msg) -> str | None:
    # Go: an empty message is the zero time (JSON null); the nanos are dropped on decode.
    if not msg.HasField("seconds") and not msg.HasField("nanos"):
        return None
    return _format_time(msg.seconds, None)


def _microtime_to_json(msg) -> str | None:
    if not msg.HasField("seconds") and not msg.HasField("nanos"):
        return None
    return _format_time(msg.seconds, msg.nanos // 1000)


def _raw_to_json(raw: bytes, what: str) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtobufError(f"{what} does not hold JSON: {e}") from None


def _intorstr_to_json(msg) -> int | str:
    return _text(msg.strVal) if msg.type == 1 else msg.intVal


_TO_JSON = {
    _TIME: _time_to_json,
    _MICROTIME: _microtime_to_json,
    _DURATION: lambda m: _format_duration(m.duration),
    _QUANTITY: lambda m: _text(m.string) if m.string else "0",
    _INTORSTRING: _intorstr_to_json,
    _RAWEXTENSION: lambda m: _raw_to_json(m.raw, "RawExtension"),
    _FIELDSV1: lambda m: _raw_to_json(m.Raw, "FieldsV1"),
    **{name: (lambda m: [_text(v) for v in m.items]) for name in _EXTRAVALUES},
}


# ---------------------------------------------------------------------------- dict -> proto
def dict_to_message(obj: Any, msg: _message.Message, path: str = "",
                    unknown: list[str] | None = None) -> None:
    """Fill `msg` (marking it present) from its Kubernetes JSON value `obj`."""
    name = msg.DESCRIPTOR.full_name
    special = _FROM_JSON.get(name)
    msg.SetInParent()
    if special is not None:
        special(msg, obj, path or name)
        return
    if obj is None:
        return
    if not isinstance(obj, dict):
        raise ProtobufError(f"{path or name}: expected an object for {name}, "
                            f"got {type(obj).__name__}")
    plan = _plan(msg.DESCRIPTOR)
    for key, value in obj.items():
        chain = plan.index.get(key)
        if chain is None:
            if plan.typed and key in ("apiVersion", "kind"):
                continue  # embedded TypeMeta: Go's protobuf encoding leaves it out too
            if unknown is not None:  # collect instead of failing (field validation)
                unknown.append(_join(path, key))
                continue
            raise ProtobufError(f"{_join(path, key)}: unknown field {key!r} for {name}")
        target = msg
        for f in chain[:-1]:
            target = getattr(target, f.name)
            target.SetInParent()
        _set_field(target, chain[-1], value, _join(path, key), unknown)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _set_field(msg, f: _descriptor.FieldDescriptor, value: Any, path: str,
               unknown: list[str] | None = None) -> None:
    if f.is_repeated:
        if value is None:
            return
        container = getattr(msg, f.name)
        if _is_map(f):
            if not isinstance(value, dict):
                raise ProtobufError(f"{path}: expected an object, got {type(value).__name__}")
            vf = f.message_type.fields_by_name["value"]
            for k, v in value.items():
                if vf.type == _FD.TYPE_MESSAGE:
                    dict_to_message(v, container[k], f"{path}[{k!r}]", unknown)
                else:
                    container[k] = _scalar_from_json(vf, v, f"{path}[{k!r}]")
            return
        if not isinstance(value, list):
            raise ProtobufError(f"{path}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            if f.type == _FD.TYPE_MESSAGE:
                dict_to_message(item, container.add(), f"{path}[{i}]", unknown)
            else:
                container.append(_scalar_from_json(f, item, f"{path}[{i}]"))
        return
    if f.type == _FD.TYPE_MESSAGE:
        dict_to_message(value, getattr(msg, f.name), path, unknown)
    elif value is not None:
        setattr(msg, f.name, _scalar_from_json(f, value, path))


def _scalar_from_json(f: _descriptor.FieldDescriptor, value: Any, path: str) -> Any:
    t = f.type
    if t == _FD.TYPE_STRING:
        if isinstance(value, str):
            return value
    elif t == _FD.TYPE_BOOL:
        if isinstance(value, bool):
            return value
    elif t == _FD.TYPE_BYTES:
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except ValueError as e:
                raise ProtobufError(f"{path}: invalid base64: {e}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    raise ProtobufError(f"{path}: invalid value {value!r} for a {_TYPE_NAMES.get(t, t)} field")


_TYPE_NAMES = {_FD.TYPE_STRING: "string", _FD.TYPE_BOOL: "boolean", _FD.TYPE_BYTES: "bytes",
               _FD.TYPE_INT32: "int32", _FD.TYPE_INT64: "int64"}


def _time_from_json(msg, value, path) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ProtobufError(f"{path}: expected an RFC 3339 time string, got {value!r}")
    msg.seconds, nanos = _parse_time(value, path)
    if nanos:
        msg.nanos = nanos


def _duration_from_json(msg, value, path) -> None:
    if not isinstance(value, str):
        raise ProtobufError(f"{path}: expected a duration string, got {value!r}")
    msg.duration = _parse_duration(value, path)


def _quantity_from_json(msg, value, path) -> None:
    if isinstance(value, str):
        msg.string = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        msg.string = str(int(value)) if float(value).is_integer() else repr(value)
    else:
        raise ProtobufError(f"{path}: expected a quantity, got {value!r}")


def _intorstr_from_json(msg, value, path) -> None:
    if isinstance(value, str):
        msg.type, msg.strVal = 1, value
    elif isinstance(value, int) and not isinstance(value, bool):
        msg.type, msg.intVal = 0, value
    else:
        raise ProtobufError(f"{path}: expected an integer or a string, got {value!r}")


def _rawjson_from_json(field: str):
    def fill(msg, value, path) -> None:
        if value is not None:
            setattr(msg, field, json.dumps(value, separators=(",", ":"),
                                           ensure_ascii=False).encode("utf-8"))
    return fill


def _extravalue_from_json(msg, value, path) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtobufError(f"{path}: expected a list of strings, got {value!r}")
    msg.items.extend(value)


_FROM_JSON = {
    _TIME: _time_from_json,
    _MICROTIME: _time_from_json,
    _DURATION: _duration_from_json,
    _QUANTITY: _quantity_from_json,
    _INTORSTRING: _intorstr_from_json,
    _RAWEXTENSION: _rawjson_from_json("raw"),
    _FIELDSV1: _rawjson_from_json("Raw"),
    **{name: _extravalue_from_json for name in _EXTRAVALUES},
}


# ---------------------------------------------------------------------------- time formats
_EPOCH = datetime.datetime(1970, 1, 1)
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
                      r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$")


def _format_time(seconds: int, micros: int | None) -> str:
    """Go's time.RFC3339 ("2006-01-02T15:04:05Z") or, with micros, MicroTime's
    "2006-01-02T15:04:05.000000Z07:00", both in UTC."""
    try:
        t = _EPOCH + datetime.timedelta(seconds=seconds)
    except OverflowError:
        raise ProtobufError(f"time {seconds}s since the epoch is out of range") from None
    s = (f"{t.year:04d}-{t.month:02d}-{t.day:02d}T"
         f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}")
    if micros is not None:
        s += f".{micros:06d}"
    return s + "Z"


def _parse_time(s: str, path: str) -> tuple[int, int]:
    m = _RFC3339.match(s)
    if not m:
        raise ProtobufError(f"{path}: {s!r} is not an RFC 3339 time")
    year, month, day, hour, minute, sec = (int(x) for x in m.group(1, 2, 3, 4, 5, 6))
    try:
        datetime.datetime(year, month, day, hour, minute, sec)
    except ValueError as e:
        raise ProtobufError(f"{path}: {s!r} is not an RFC 3339 time: {e}") from None
    seconds = calendar.timegm((year, month, day, hour, minute, sec))
    if m.group(9):
        offset = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    nanos = int((m.group(7) or "").ljust(9, "0"))
    return seconds, nanos


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                   "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)")


def _format_duration(ns: int) -> str:
    """Go's time.Duration.String()."""
    if ns == 0:
        return "0s"
    neg, u = ns < 0, abs(ns)

    def frac(v: int, prec: int) -> str:
        whole, part = divmod(v, 10 ** prec)
        return str(whole) + (("." + f"{part:0{prec}d}".rstrip("0")) if part else "")

    if u < 1_000:
        s = f"{u}ns"
    elif u < 1_000_000:
        s = frac(u, 3) + "µs"
    elif u < 1_000_000_000:
        s = frac(u, 6) + "ms"
    else:
        secs, part = divmod(u, 1_000_000_000)
        s = str(secs % 60) + (("." + f"{part:09d}".rstrip("0")) if part else "") + "s"
        minutes = secs // 60
        if minutes:
            s = f"{minutes % 60}m" + s
            if minutes // 60:
                s = f"{minutes // 60}h" + s
    return "-" + s if neg else s


def _parse_duration(s: str, path: str) -> int:
    """Go's time.ParseDuration."""
    rest, sign = s, 1
    if rest[:1] in ("+", "-"):
        sign, rest = (-1 if rest[0] == "-" else 1), rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ProtobufError(f"{path}: invalid duration {s!r}")
    total, pos = 0, 0
    while pos < len(rest):
        m = _DURATION_PART.match(rest, pos)
        if not m or not (m.group(1) or m.group(2)):
            raise ProtobufError(f"{path}: invalid duration {s!r}")
        unit = _DURATION_UNITS[m.group(3)]
        total += int(m.group(1) or 0) * unit
        if m.group(2):
            total += int(m.group(2)) * unit // 10 ** len(m.group(2))
        pos = m.end()
    return sign * total


def check_fields(obj: dict) -> list[str]:
    """Type-check a JSON object against its Kubernetes type (one schema source: these message
    definitions) and return the paths of fields the type does not have. Raises ProtobufError
    for a value of the wrong type, as Kubernetes' JSON decoding rejects it."""
    cls = message_class(obj.get("apiVersion", ""), obj.get("kind", ""))
    unknown: list[str] = []
    dict_to_message({k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}, cls(),
                    unknown=unknown)
    return unknown
