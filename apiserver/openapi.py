"""OpenAPI v3 documents, from the schema, as far as kubectl needs them.

kubectl apply/create validate by default: they look in /openapi/v3/<gv> for a PATCH operation
whose x-kubernetes-group-version-kind is the object's and which takes `fieldValidation`; then
they trust the server's validation. The PATCH operations deliberately list no request body
content types, so kubectl computes strategic merge patches from its compiled-in types (exact
merge keys for every built-in kind) instead of from these schemas. `kubectl explain` reads
components.schemas.
"""

from __future__ import annotations

import hashlib
import json

from .kinds import Kind, Registry


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _schema_name(k: Kind) -> str:
    g = k.group or "core"
    g = g.replace(".k8s.io", "")
    return f"io.k8s.api.{g}.{k.version}.{k.kind}"


def gv_document(kinds: Registry, group: str, version: str) -> dict | None:
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {}
    found = False
    for k in kinds.kinds:
        if k.group != group or k.version != version:
            continue
        found = True
        base = "/" + _gv_path(group, version)
        if k.namespaced:
            item = f"{base}/namespaces/{{namespace}}/{k.plural}/{{name}}"
        else:
            item = f"{base}/{k.plural}/{{name}}"
        gvk = {"group": group, "version": version, "kind": k.kind}
        params = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string",
                   "uniqueItems": True}, "description": "fieldValidation instructs the server "
                   "on how to handle objects in the request containing unknown or duplicate "
                   "fields: Ignore, Warn or Strict."},
                  {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                  {"name": "fieldManager", "in": "query", "schema": {"type": "string"}}]
        op = {"operationId": f"patch{k.kind}", "x-kubernetes-group-version-kind": gvk,
              "x-kubernetes-action": "patch", "parameters": params,
              "responses": {"200": {"description": "OK"}}}
        paths[item] = {"patch": op,
                       "put": dict(op, operationId=f"replace{k.kind}",
                                   **{"x-kubernetes-action": "put"}),
                       "get": {"operationId": f"read{k.kind}",
                               "x-kubernetes-group-version-kind": gvk,
                               "responses": {"200": {"description": "OK"}}}}
        schemas[_schema_name(k)] = {
            "description": k.description or f"{k.kind} is a Kubernetes {k.kind} object.",
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string", "description": "APIVersion defines the "
                               "versioned schema of this representation of an object."},
                "kind": {"type": "string", "description": "Kind is a string value representing "
                         "the REST resource this object represents."},
                "metadata": {"type": "object", "description": "Standard object's metadata."},
                "spec": {"type": "object", "description": f"Specification of the desired "
                         f"behavior of the {k.kind}."},
                "status": {"type": "object", "description": f"Most recently observed status "
                           f"of the {k.kind}."},
            },
            "x-kubernetes-group-version-kind": [gvk],
        }
    if not found:
        return None
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": schemas}}


def root_document(kinds: Registry) -> dict:
    paths = {}
    for group, versions in kinds.groups().items():
        for v in versions:
            doc = gv_document(kinds, group, v)
            h = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
            p = _gv_path(group, v)
            paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={h}"}
    return {"paths": paths}


V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def v2_response(accept: str):
    """/openapi/v2: an empty Swagger 2.0 document (see proto/openapi/openapiv2.proto)."""
    from aiohttp import web
    if "protobuf" in accept:
        from proto.openapi import openapiv2_pb2 as oa
        doc = oa.Document(swagger="2.0", info=oa.Info(title="Kubernetes", version="v1.32.0"),
                          paths=oa.Paths(), definitions=oa.Definitions())
        # the @ form kubectl asks for is not a valid media type to answer with
        return web.Response(body=doc.SerializeToString(), headers={
            "Content-Type": "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"})
    return web.json_response({"swagger": "2.0", "info": {"title": "Kubernetes",
                                                         "version": "v1.32.0"},
                              "paths": {}, "definitions": {}})
