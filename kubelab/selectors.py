"""Label and field selectors as Kubernetes parses and matches them (apimachinery/pkg/labels,
pkg/fields). Shared by the API server (list/watch filtering) and the controllers."""

from __future__ import annotations

import dataclasses
import re

_KEY_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorError(ValueError):
    pass


def label_key_errors(key: str) -> list[str]:
    """Kubernetes' IsQualifiedName messages for a label/annotation key."""
    errs = []
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        errs.append("prefix part must be non-empty")
    elif prefix:
        if len(prefix) > 253:
            errs.append("prefix part must be no more than 253 characters")
        elif not _DNS1123_SUBDOMAIN.match(prefix):
            errs.append("prefix part a lowercase RFC 1123 subdomain must consist of lower case "
                        "alphanumeric characters, '-' or '.', and must start and end with an "
                        "alphanumeric character (e.g. 'example.com', regex used for validation is "
                        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    elif not _KEY_NAME.match(name):
        errs.append("name part must consist of alphanumeric characters, '-', '_' or '.', and "
                    "must start and end with an alphanumeric character (e.g. 'MyName',  or "
                    "'my.name',  or '123-abc', regex used for validation is "
                    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    return errs


def label_value_errors(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _VALUE.match(value):
        errs.append("a valid label must be an empty string or consist of alphanumeric "
                    "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                    "character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
                    "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
    return errs


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        v = labels.get(self.key)
        if self.op == "=":
            return has and v == self.values[0]
        if self.op == "!=":
            return not has or v != self.values[0]
        if self.op == "in":
            return has and v in self.values
        if self.op == "notin":
            return not has or v not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("gt", "lt"):
            try:
                n, ref = int(v), int(self.values[0])
            except (TypeError, ValueError):
                return False
            return n > ref if self.op == "gt" else n < ref
        return False

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return "!" + self.key
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(sorted(self.values))})"


@dataclasses.dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False  # a nil selector in some APIs selects nothing

    def matches(self, labels: dict[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements and not self.nothing

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=,()]+)")


def parse_label_selector(s: str | None) -> Selector:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h` into a Selector."""
    if not s or not s.strip():
        return Selector()
    toks = [t for t in _TOKEN.findall(s) if t.strip()]
    reqs: list[Requirement] = []
    i = 0

    def need(cond: bool, msg: str):
        if not cond:
            raise SelectorError(f"unable to parse requirement: {msg}")

    while i < len(toks):
        t = toks[i]
        if t == "!":
            need(i + 1 < len(toks), "found '', expected: identifier")
            key = toks[i + 1]
            _check_key(key)
            reqs.append(Requirement(key, "!"))
            i += 2
        else:
            key = t
            need(key not in (",", "(", ")", "=", "==", "!="),
                 f"found '{key}', expected: !, identifier, or 'end of string'")
            _check_key(key)
            i += 1
            if i >= len(toks) or toks[i] == ",":
                reqs.append(Requirement(key, "exists"))
            elif toks[i] in ("=", "==", "!="):
                op = "!=" if toks[i] == "!=" else "="
                i += 1
                val = ""
                if i < len(toks) and toks[i] not in (",",):
                    val = toks[i]
                    i += 1
                _check_value(val)
                reqs.append(Requirement(key, op, (val,)))
            elif toks[i].lower() in ("in", "notin"):
                op = toks[i].lower()
                i += 1
                need(i < len(toks) and toks[i] == "(", "found '" + (toks[i] if i < len(toks)
                                                                      else "") + "', expected: '('")
                i += 1
                vals = []
                while i < len(toks) and toks[i] != ")":
                    if toks[i] != ",":
                        _check_value(toks[i])
                        vals.append(toks[i])
                    i += 1
                need(i < len(toks), "found '', expected: ')'")
                i += 1
                reqs.append(Requirement(key, op, tuple(vals)))
            elif toks[i].lower() in ("gt", "lt"):
                op = toks[i].lower()
                reqs.append(Requirement(key, op, (toks[i + 1],)))
                i += 2
            else:
                raise SelectorError(f"unable to parse requirement: found '{toks[i]}', expected: "
                                    "in, notin, =, ==, !=, gt, lt")
        if i < len(toks):
            need(toks[i] == ",", f"found '{toks[i]}', expected: ',' or 'end of string'")
            i += 1
    return Selector(tuple(reqs))


def _check_key(key: str) -> None:
    errs = label_key_errors(key)
    if errs:
        raise SelectorError(f"unable to parse requirement: values[0][{key}]: Invalid value: "
                            f"\"{key}\": {errs[0]}")


def _check_value(v: str) -> None:
    errs = label_value_errors(v)
    if errs:
        raise SelectorError(f"unable to parse requirement: values[0][{v}]: Invalid value: "
                            f"\"{v}\": {errs[0]}")


def selector_from_label_selector(ls: dict | None) -> Selector:
    """metav1.LabelSelector {matchLabels, matchExpressions} → Selector. None selects nothing
    (as LabelSelectorAsSelector does for a nil selector); {} selects everything."""
    if ls is None:
        return Selector(nothing=True)
    reqs = [Requirement(k, "=", (str(v),)) for k, v in sorted((ls.get("matchLabels") or {}).items())]
    for e in ls.get("matchExpressions") or []:
        op = e.get("operator")
        key = e.get("key", "")
        vals = tuple(e.get("values") or ())
        mapped = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!",
                  "Gt": "gt", "Lt": "lt"}.get(op)
        if mapped is None:
            raise SelectorError(f'"{op}" is not a valid label selector operator')
        reqs.append(Requirement(key, mapped, vals))
    return Selector(tuple(reqs))


def selector_from_map(m: dict | None) -> Selector:
    """An equality-based selector map (Service, ReplicationController)."""
    return Selector(tuple(Requirement(k, "=", (str(v),)) for k, v in sorted((m or {}).items())))


# ---------------------------------------------------------------------- field selectors
@dataclasses.dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str


def parse_field_selector(s: str | None) -> list[FieldRequirement]:
    if not s or not s.strip():
        return []
    out = []
    for part in _split_unescaped(s, ","):
        part = part.strip()
        if not part:
            continue
        for op in ("!=", "==", "="):
            if op in part:
                f, _, v = part.partition(op)
                out.append(FieldRequirement(f.strip(), "!=" if op == "!=" else "=",
                                            _unescape(v.strip())))
                break
        else:
            raise SelectorError(f"invalid selector: '{s}'; can't understand '{part}'")
    return out


def _split_unescaped(s: str, sep: str) -> list[str]:
    parts, cur, esc = [], [], False
    for ch in s:
        if esc:
            cur.append("\\" + ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", r"\1", v)


def fields_match(reqs: list[FieldRequirement], fields: dict[str, str]) -> bool:
    for r in reqs:
        v = fields.get(r.field, "")
        if r.op == "=" and v != r.value:
            return False
        if r.op == "!=" and v == r.value:
            return False
    return True
