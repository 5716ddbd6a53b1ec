"""Kubernetes API errors as metav1.Status objects, with the codes, reasons and messages that
kubectl and client-go print (apimachinery/pkg/api/errors)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Cause:
    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_dict(self) -> dict:
        return {"reason": self.reason, "message": self.message, "field": self.field}


class StatusError(Exception):
    """Raised anywhere in the API server; the front ends turn it into a Status response."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            s["details"] = self.details
        return s


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def _details(name: str, resource: str, group: str) -> dict:
    d = {"name": name, "kind": resource}
    if group:
        d["group"] = group
    return d


def not_found(resource: str, name: str, group: str = "") -> StatusError:
    return StatusError(404, "NotFound", f'{_qualified(resource, group)} "{name}" not found',
                       _details(name, resource, group))


def already_exists(resource: str, name: str, group: str = "") -> StatusError:
    return StatusError(409, "AlreadyExists",
                       f'{_qualified(resource, group)} "{name}" already exists',
                       _details(name, resource, group))


def conflict(resource: str, name: str, group: str = "",
             why: str = "the object has been modified; please apply your changes to the latest "
                        "version and try again") -> StatusError:
    return StatusError(409, "Conflict", f'Operation cannot be fulfilled on '
                       f'{_qualified(resource, group)} "{name}": {why}',
                       _details(name, resource, group))


def invalid(kind: str, name: str, causes: list[Cause], group: str = "") -> StatusError:
    """422 with field causes; kubectl prints `The <Kind> "<name>" is invalid: <field>: <msg>`."""
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    if len(parts) == 1:
        msg = f'{kind}{("." + group) if group else ""} "{name}" is invalid: {parts[0]}'
    else:
        msg = f'{kind}{("." + group) if group else ""} "{name}" is invalid: [' + \
              ", ".join(parts) + "]"
    details = {"name": name, "kind": kind, "causes": [c.to_dict() for c in causes]}
    if group:
        details["group"] = group
    return StatusError(422, "Invalid", msg, details)


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def unauthorized(message: str = "Unauthorized") -> StatusError:
    return StatusError(401, "Unauthorized", message)


def forbidden(message: str) -> StatusError:
    return StatusError(403, "Forbidden", message)


def method_not_allowed(message: str) -> StatusError:
    return StatusError(405, "MethodNotAllowed", message)


def gone(message: str) -> StatusError:
    return StatusError(410, "Expired", message)


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(415, "UnsupportedMediaType",
                       f'the body of the request was in an unknown format - accepted media types '
                       f'include: application/json, application/yaml, '
                       f'application/vnd.kubernetes.protobuf (got "{content_type}")')


def internal(message: str) -> StatusError:
    return StatusError(500, "InternalError", f"Internal error occurred: {message}")


def store_unavailable(detail: str) -> StatusError:
    return StatusError(503, "ServiceUnavailable",
                       f"the cluster store (etcd) is unavailable: {detail}")


def timeout(message: str) -> StatusError:
    return StatusError(504, "Timeout", message)
