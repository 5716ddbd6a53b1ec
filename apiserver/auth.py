"""Authentication and authorization: every request gets a UserInfo from one authenticator
chain, then one authorizer decision. Today: static bearer tokens (kube-apiserver's
--token-auth-file CSV format: token,user,uid,"group1,group2"); the authorizer allows members of
system:masters everything (RBAC comes later and plugs in here)."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import secrets

from . import errors


@dataclasses.dataclass(frozen=True)
class UserInfo:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = {"username": self.username, "groups": list(self.groups)}
        if self.uid:
            d["uid"] = self.uid
        return d


@dataclasses.dataclass(frozen=True)
class Attributes:
    user: UserInfo
    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


class TokenAuthenticator:
    def __init__(self, tokens: dict[str, UserInfo]):
        self.tokens = tokens

    @classmethod
    def from_file(cls, path: str) -> "TokenAuthenticator":
        tokens: dict[str, UserInfo] = {}
        with open(path, newline="") as f:
            for row in csv.reader(f):
                if not row or row[0].startswith("#") or len(row) < 3:
                    continue
                groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
                tokens[row[0]] = UserInfo(row[1], row[2], groups + ("system:authenticated",))
        return cls(tokens)

    def authenticate(self, authorization: str | None) -> UserInfo:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise errors.unauthorized()
        user = self.tokens.get(authorization[7:].strip())
        if user is None:
            raise errors.unauthorized()
        return user


def ensure_token_file(path: str, user: str = "admin") -> str:
    """Create a tokens file with one admin token (system:masters) unless it exists; return
    the admin token."""
    if os.path.exists(path):
        with open(path, newline="") as f:
            for row in csv.reader(f):
                if len(row) >= 2 and row[1] == user:
                    return row[0]
    token = secrets.token_hex(24)
    buf = io.StringIO()
    csv.writer(buf).writerow([token, user, "admin-uid", "system:masters"])
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(buf.getvalue())
    return token


class Authorizer:
    """Allows system:masters everything; others nothing yet (RBAC plugs in here)."""

    def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        if "system:masters" in attrs.user.groups:
            return True, ""
        what = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
        scope = f' in the namespace "{attrs.namespace}"' if attrs.namespace else \
            " at the cluster scope"
        group = f' in API group "{attrs.group}"'
        return False, (f'{attrs.resource} "{attrs.name}" is forbidden: ' if attrs.name else
                       f"{what} is forbidden: ") + \
            f'User "{attrs.user.username}" cannot {attrs.verb} resource "{what}"{group}{scope}'
