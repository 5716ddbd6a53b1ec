"""batch/v1 kinds: Job and CronJob, plus the cron schedule parser CronJobs use.

Sources: pkg/apis/batch/v1/defaults.go, pkg/apis/batch/validation/validation.go,
pkg/registry/batch/job/strategy.go, pkg/printers/internalversion/printers.go (Kubernetes 1.32)
and github.com/robfig/cron/v3 (ParseStandard, SpecSchedule.Next), whose error texts the API
server returns verbatim for a bad `spec.schedule`.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Any

from ..errors import Cause
from . import AGE_COLUMN, KINDS, NAME_COLUMN, Column, Kind, human_age, human_duration, parse_time
from .apps import (
    _ensure,
    _ensure_spec,
    _int,
    _spec,
    _status,
    containers_column,
    default_template,
    images_column,
    immutable_selector,
    invalid_raw,
    labels_value,
    selector_column,
    selector_convertible,
    selector_matches,
    selector_value,
    semantic_equal,
    template_labels,
    template_spec,
    validate_label_selector,
    validate_template,
)
from .common import (
    DNS1123_LABEL,
    annotations,
    invalid,
    is_int,
    labels,
    non_negative,
    object_meta,
    q,
    required,
    unsupported,
)

# ============================================================================ cron schedules


class CronError(ValueError):
    """A schedule robfig/cron's ParseStandard rejects; str() is its error text."""


_STAR = 1 << 63
_MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul",
                                           "aug", "sep", "oct", "nov", "dec"))}
_DOWS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_MINUTES, _HOURS, _DOM, _MONTH, _DOW = (0, 59, None), (0, 23, None), (1, 31, None), \
    (1, 12, _MONTHS), (0, 6, _DOWS)


def _go_list(fields: list[str]) -> str:
    return "[" + " ".join(fields) + "]"


def _atoi(expr: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", expr):
        raise CronError(f"failed to parse int from {expr}: strconv.Atoi: parsing {q(expr)}: "
                        "invalid syntax")
    n = int(expr)
    if not -(1 << 63) <= n < (1 << 63):
        raise CronError(f"failed to parse int from {expr}: strconv.Atoi: parsing {q(expr)}: "
                        "value out of range")
    if n < 0:
        raise CronError(f"negative number ({n}) not allowed: {expr}")
    return n


def _int_or_name(expr: str, names: dict | None) -> int:
    if names and expr.lower() in names:
        return names[expr.lower()]
    return _atoi(expr)


def _bits(lo: int, hi: int, step: int) -> int:
    if step == 1:
        return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1)
    b = 0
    for i in range(lo, hi + 1, step):
        b |= 1 << i
    return b


def _range(expr: str, bounds) -> int:
    lo_b, hi_b, names = bounds
    range_and_step = expr.split("/")
    low_high = range_and_step[0].split("-")
    single = len(low_high) == 1
    extra = 0
    if low_high[0] in ("*", "?"):
        start, end, extra = lo_b, hi_b, _STAR
    else:
        start = _int_or_name(low_high[0], names)
        if len(low_high) == 1:
            end = start
        elif len(low_high) == 2:
            end = _int_or_name(low_high[1], names)
        else:
            raise CronError(f"too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _atoi(range_and_step[1])
        if single:
            end = hi_b
        if step > 1:
            extra = 0
    else:
        raise CronError(f"too many slashes: {expr}")
    if start < lo_b:
        raise CronError(f"beginning of range ({start}) below minimum ({lo_b}): {expr}")
    if end > hi_b:
        raise CronError(f"end of range ({end}) above maximum ({hi_b}): {expr}")
    if start > end:
        raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise CronError(f"step of range should be a positive number: {expr}")
    return _bits(start, end, step) | extra


def _field(field: str, bounds) -> int:
    b = 0
    for expr in (p for p in field.split(",") if p):
        b |= _range(expr, bounds)
    return b


def _all(bounds) -> int:
    return _bits(bounds[0], bounds[1], 1) | _STAR


def _zone(name: str):
    """time.LoadLocation: None for UTC/"" (Go's UTC), a ZoneInfo, or ValueError(Go's text)."""
    if name in ("", "UTC"):
        return datetime.UTC
    if name == "Local":
        return None
    from zoneinfo import ZoneInfo
    try:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError
        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError, OSError
        raise ValueError(f"unknown time zone {name}") from None


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}


def go_parse_duration(s: str) -> float:
    """time.ParseDuration, in seconds; ValueError with Go's message."""
    orig, neg = s, False
    if s[:1] in ("+", "-"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {q(orig)}")
    total = 0.0
    while s:
        m = re.match(r"([0-9]*)(\.([0-9]*))?", s)
        if not m.group(1) and not (m.group(3) or ""):
            raise ValueError(f"time: invalid duration {q(orig)}")
        s = s[m.end():]
        u = re.match(r"[^0-9.]*", s).group(0)
        if not u:
            raise ValueError(f"time: missing unit in duration {q(orig)}")
        if u not in _UNITS:
            raise ValueError(f"time: unknown unit {q(u)} in duration {q(orig)}")
        total += float(m.group(0) if m.group(0) != "." else "0") * _UNITS[u]
        s = s[len(u):]
    return -total if neg else total


@dataclasses.dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule. `every` is set for `@every <duration>`; otherwise bit sets per field
    (bit 63 = the field was `*`/`?`, which makes day-of-month/day-of-week an AND)."""
    minute: int = 0
    hour: int = 0
    dom: int = 0
    month: int = 0
    dow: int = 0
    every: float | None = None
    tz: Any = None  # tzinfo from TZ=/CRON_TZ= in the schedule or the timeZone field

    def _day_matches(self, t: datetime.datetime) -> bool:
        dom_ok = bool((1 << t.day) & self.dom)
        dow_ok = bool((1 << ((t.weekday() + 1) % 7)) & self.dow)
        if self.dom & _STAR or self.dow & _STAR:
            return dom_ok and dow_ok
        return dom_ok or dow_ok

    def next(self, after: datetime.datetime) -> datetime.datetime | None:
        """The first activation strictly after `after` (SpecSchedule.Next), in after's zone;
        None when nothing matches within five years (e.g. `0 0 30 2 *`). Naive datetimes are
        taken as UTC."""
        if after.tzinfo is None:
            after = after.replace(tzinfo=datetime.UTC)
        if self.every is not None:
            delay = max(1, int(self.every))
            return after + datetime.timedelta(seconds=delay, microseconds=-after.microsecond)
        orig_tz = after.tzinfo
        tz = self.tz or orig_tz
        t = after.astimezone(tz).replace(tzinfo=None)
        t = t.replace(microsecond=0) + datetime.timedelta(seconds=1)
        year_limit = t.year + 5
        added = False
        while True:
            if t.year > year_limit:
                return None
            wrapped = False
            while not (1 << t.month) & self.month:
                if not added:
                    added = True
                    t = t.replace(day=1, hour=0, minute=0, second=0)
                t = (t.replace(year=t.year + 1, month=1) if t.month == 12
                     else t.replace(month=t.month + 1))
                if t.month == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not self._day_matches(t):
                if not added:
                    added = True
                    t = t.replace(hour=0, minute=0, second=0)
                t += datetime.timedelta(days=1)
                if t.day == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not (1 << t.hour) & self.hour:
                if not added:
                    added = True
                    t = t.replace(minute=0, second=0)
                t += datetime.timedelta(hours=1)
                if t.hour == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not (1 << t.minute) & self.minute:
                if not added:
                    added = True
                    t = t.replace(second=0)
                t += datetime.timedelta(minutes=1)
                if t.minute == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            if t.second != 0:
                if not added:
                    added = True
                t = t.replace(second=0) + datetime.timedelta(minutes=1)
                continue
            return t.replace(tzinfo=tz).astimezone(orig_tz)


def parse_cron(spec: str, time_zone: str | None = None) -> CronSchedule:
    """cron.ParseStandard (5 fields or a descriptor, optional `TZ=`/`CRON_TZ=` prefix).
    `time_zone` is CronJob spec.timeZone (the controller prefixes `TZ=` with it). Raises
    CronError with robfig/cron's message."""
    if not spec:
        raise CronError("empty spec string")
    tz = None
    if time_zone is not None:
        try:
            tz = _zone(time_zone)
        except ValueError as e:
            raise CronError(f"provided bad location {time_zone}: {e}") from None
    if spec.startswith(("TZ=", "CRON_TZ=")):
        i = spec.find(" ")
        eq = spec.find("=")
        name = spec[eq + 1:i] if i >= 0 else spec[eq + 1:]
        try:
            tz = _zone(name)
        except ValueError as e:
            raise CronError(f"provided bad location {name}: {e}") from None
        spec = spec[i:].strip() if i >= 0 else ""
    if spec.startswith("@"):
        return _descriptor(spec, tz)
    fields = spec.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: {_go_list(fields)}")
    return CronSchedule(minute=_field(fields[0], _MINUTES), hour=_field(fields[1], _HOURS),
                        dom=_field(fields[2], _DOM), month=_field(fields[3], _MONTH),
                        dow=_field(fields[4], _DOW), tz=tz)


def _descriptor(spec: str, tz) -> CronSchedule:
    one = lambda b: 1 << b[0]
    if spec in ("@yearly", "@annually"):
        return CronSchedule(one(_MINUTES), one(_HOURS), one(_DOM), one(_MONTH), _all(_DOW), tz=tz)
    if spec == "@monthly":
        return CronSchedule(one(_MINUTES), one(_HOURS), one(_DOM), _all(_MONTH), _all(_DOW), tz=tz)
    if spec == "@weekly":
        return CronSchedule(one(_MINUTES), one(_HOURS), _all(_DOM), _all(_MONTH), one(_DOW), tz=tz)
    if spec in ("@daily", "@midnight"):
        return CronSchedule(one(_MINUTES), one(_HOURS), _all(_DOM), _all(_MONTH), _all(_DOW),
                            tz=tz)
    if spec == "@hourly":
        return CronSchedule(one(_MINUTES), _all(_HOURS), _all(_DOM), _all(_MONTH), _all(_DOW),
                            tz=tz)
    if spec.startswith("@every "):
        try:
            d = go_parse_duration(spec[len("@every "):])
        except ValueError as e:
            raise CronError(f"failed to parse duration {spec}: {e}") from None
        return CronSchedule(every=max(d, 1.0), tz=tz)
    raise CronError(f"unrecognized descriptor: {spec}")


_TZ_PART = re.compile(r"^[A-Za-z.\-_0-9+]{1,14}$")


def validate_time_zone(tz: Any, path: str) -> list[Cause]:
    """validateTimeZone (CronJob spec.timeZone)."""
    if tz is None:
        return []
    if not isinstance(tz, str):
        return [invalid(path, tz, "must be a string")]
    if tz == "":
        return [invalid(path, tz, "timeZone must be nil or non-empty string")]
    for part in tz.split("/"):
        if part in (".", "..") or part.startswith("-") or not _TZ_PART.match(part):
            return [invalid(path, tz, f"unknown time zone {tz}")]
    out = []
    if tz.lower() == "local":
        out.append(invalid(path, tz, "timeZone must be an explicit time zone as defined in "
                                     "https://www.iana.org/time-zones"))
    try:
        _zone(tz) if tz != "Local" else None
    except ValueError as e:
        out.append(invalid(path, tz, str(e)))
    return out


# ============================================================================ Job
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"
_MAX_PARALLELISM_INDEXED = 100000


def _default_job_spec(spec: dict) -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6
    if not spec.get("completionMode"):
        spec["completionMode"] = "NonIndexed"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    pfp = spec.get("podFailurePolicy")
    if isinstance(pfp, dict):
        for rule in pfp.get("rules") or []:
            for pat in (rule or {}).get("onPodConditions") or []:
                if isinstance(pat, dict) and not pat.get("status"):
                    pat["status"] = "True"
    if spec.get("podReplacementPolicy") is None:
        spec["podReplacementPolicy"] = "Failed" if pfp is not None else "TerminatingOrFailed"


def _job_default(obj: dict) -> None:
    md = _ensure(obj, "metadata")
    spec = _ensure_spec(obj)
    _default_job_spec(spec)
    if spec.get("manualSelector") is None:
        spec["manualSelector"] = False
    tpl = spec.get("template")
    if not isinstance(tpl, dict):
        tpl = spec["template"] = {}
    default_template(tpl)
    uid = md.get("uid")
    if uid and not spec.get("manualSelector"):
        # generateSelector (job strategy PrepareForCreate)
        tmd = _ensure(tpl, "metadata")
        tl = tmd.get("labels")
        if not isinstance(tl, dict):
            tl = tmd["labels"] = {}
        for k in (LEGACY_JOB_NAME, JOB_NAME):
            tl.setdefault(k, md.get("name", ""))
        for k in (LEGACY_CONTROLLER_UID, CONTROLLER_UID):
            tl.setdefault(k, uid)
        sel = spec.get("selector")
        if not isinstance(sel, dict):
            sel = spec["selector"] = {}
        ml = sel.get("matchLabels")
        if not isinstance(ml, dict):
            ml = sel["matchLabels"] = {}
        ml.setdefault(CONTROLLER_UID, uid)
    # SetDefaults_Job: a Job without labels takes its pod template's
    tl = template_labels(tpl)
    if isinstance(tl, dict) and tl and not md.get("labels"):
        md["labels"] = dict(tl)


def _has_label(tpl: Any, key: str, want: str) -> list[Cause]:
    """apivalidation.ValidateHasLabel on spec.template.metadata."""
    lbls = template_labels(tpl)
    f = f"spec.template.metadata.labels[{key}]"
    if not isinstance(lbls, dict) or key not in lbls:
        return [Cause(f, f"Required value: {want}" if want else "Required value",
                      "FieldValueRequired")]
    if lbls[key] != want:
        return [invalid_raw(f, labels_value(lbls), f"must be '{want}'")]
    return []


def _validate_generated_selector(obj: dict, prefixed: bool) -> list[Cause]:
    spec = _spec(obj)
    if spec.get("manualSelector") is True or spec.get("selector") is None:
        return []
    md = obj.get("metadata") or {}
    uid, name = md.get("uid") or "", md.get("name") or ""
    tpl = spec.get("template")
    out = []
    if not uid:
        out.append(required("metadata.uid"))
    out += _has_label(tpl, LEGACY_CONTROLLER_UID, uid)
    out += _has_label(tpl, LEGACY_JOB_NAME, name)
    expected = {}
    if prefixed:
        out += _has_label(tpl, CONTROLLER_UID, uid)
        out += _has_label(tpl, JOB_NAME, name)
        expected = {CONTROLLER_UID: uid, JOB_NAME: name}
    expected.update({LEGACY_CONTROLLER_UID: uid, LEGACY_JOB_NAME: name})
    sel = spec.get("selector")
    if selector_convertible(sel) and not selector_matches(sel, expected):
        out.append(invalid_raw("spec.selector", selector_value(sel), "`selector` not auto-generated"))
    return out


def _validate_job_spec_body(spec: dict, path: str) -> list[Cause]:
    """validateJobSpec: everything but the selector."""
    out: list[Cause] = []
    for k in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit",
              "ttlSecondsAfterFinished"):
        out += non_negative(f"{path}.{k}", spec.get(k))
    blpi, mfi = spec.get("backoffLimitPerIndex"), spec.get("maxFailedIndexes")
    out += non_negative(f"{path}.backoffLimitPerIndex", blpi)
    out += non_negative(f"{path}.maxFailedIndexes", mfi)
    mode = spec.get("completionMode")
    if mode is not None:
        if mode not in ("NonIndexed", "Indexed"):
            out.append(unsupported(f"{path}.completionMode", mode, ["NonIndexed", "Indexed"]))
        if mode == "Indexed":
            if spec.get("completions") is None:
                out.append(Cause(f"{path}.completions",
                                 "Required value: when completion mode is Indexed",
                                 "FieldValueRequired"))
            par = spec.get("parallelism")
            if is_int(par) and par > _MAX_PARALLELISM_INDEXED:
                out.append(invalid(f"{path}.parallelism", par,
                                   f"must be less than or equal to {_MAX_PARALLELISM_INDEXED} "
                                   "when completion mode is Indexed"))
    if mode in (None, "NonIndexed"):
        if blpi is not None:
            out.append(invalid(f"{path}.backoffLimitPerIndex", blpi,
                               "requires indexed completion mode"))
        if mfi is not None:
            out.append(invalid(f"{path}.maxFailedIndexes", mfi,
                               "requires indexed completion mode"))
    pfp = spec.get("podFailurePolicy")
    prp = spec.get("podReplacementPolicy")
    if prp is not None:
        if pfp is not None:
            if prp != "Failed":
                out.append(unsupported(f"{path}.podReplacementPolicy", prp, ["Failed"]))
        elif prp not in ("Failed", "TerminatingOrFailed"):
            out.append(unsupported(f"{path}.podReplacementPolicy", prp,
                                   ["Failed", "TerminatingOrFailed"]))
    tpl = spec.get("template")
    out += validate_template(tpl if tpl is not None else {}, f"{path}.template")
    rp = template_spec(tpl).get("restartPolicy") or "Always"
    rpf = f"{path}.template.spec.restartPolicy"
    if rp == "Always":
        out.append(Cause(rpf, 'Required value: valid values: "OnFailure", "Never"',
                         "FieldValueRequired"))
    elif rp not in ("OnFailure", "Never"):
        out.append(unsupported(rpf, rp, ["OnFailure", "Never"]))
    elif pfp is not None and rp != "Never":
        out.append(invalid(rpf, rp, 'only "Never" is supported when podFailurePolicy is '
                                    'specified'))
    return out


def _validate_job_spec(spec: dict) -> list[Cause]:
    """ValidateJobSpec: the body plus selector required/valid/matching."""
    out = _validate_job_spec_body(spec, "spec")
    sel = spec.get("selector")
    if sel is None:
        out.append(required("spec.selector"))
    else:
        out += validate_label_selector(sel, "spec.selector")
    if selector_convertible(sel):
        if isinstance(sel, dict) and not sel.get("matchLabels") and not sel.get("matchExpressions"):
            out.append(required("spec.selector"))
        lbls = template_labels(spec.get("template"))
        if not selector_matches(sel, lbls):
            out.append(invalid_raw("spec.template.metadata.labels", labels_value(lbls),
                                   "`selector` does not match template `labels`"))
    return out


_SCHEDULING_DIRECTIVES = ("nodeSelector", "tolerations", "affinity", "schedulingGates")


def _template_for_compare(tpl: Any, mutable_scheduling: bool) -> Any:
    if not isinstance(tpl, dict) or not mutable_scheduling:
        return tpl
    t = dict(tpl)
    md = dict(t.get("metadata") or {})
    md.pop("labels", None)
    md.pop("annotations", None)
    t["metadata"] = md
    t["spec"] = {k: v for k, v in (t.get("spec") or {}).items()
                 if k not in _SCHEDULING_DIRECTIVES}
    return t


def _job_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    spec = _spec(obj)
    md = obj.get("metadata") or {}
    if old is None:
        prefixed = True
    else:
        ol = template_labels(_spec(old).get("template")) or {}
        prefixed = CONTROLLER_UID in ol
    # without a uid (not yet assigned) the generated selector cannot be checked
    if md.get("uid") or old is not None:
        out += _validate_generated_selector(obj, prefixed)
    if md.get("uid") or spec.get("manualSelector") is True or spec.get("selector") is not None:
        out += _validate_job_spec(spec)
    else:
        out += _validate_job_spec_body(spec, "spec")
    comp = spec.get("completions")
    if old is None and spec.get("completionMode") == "Indexed" and is_int(comp) and comp > 0:
        host = f"{md.get('name', '')}-{comp - 1}"
        if len(host) > 63 or not DNS1123_LABEL.match(host):
            out.append(invalid("metadata.name", md.get("name", ""),
                               f"will not able to create pod with invalid DNS label: {host}"))
    if old is not None:
        ospec = _spec(old)
        # completions: immutable, except Indexed jobs scaling completions with parallelism
        ocomp = ospec.get("completions")
        if comp != ocomp:
            if spec.get("completionMode") != "Indexed":
                out.append(invalid_raw("spec.completions",
                                       str(comp) if comp is not None else "null",
                                       "field is immutable"))
            elif comp is not None and comp != spec.get("parallelism"):
                out.append(invalid("spec.completions", comp,
                                   "can only be modified in tandem with spec.parallelism"))
        out += immutable_selector(spec.get("selector"), ospec.get("selector"))
        mutable = bool(ospec.get("suspend")) and not _status(old).get("startTime")
        a = _template_for_compare(spec.get("template"), mutable)
        b = _template_for_compare(ospec.get("template"), mutable)
        if not semantic_equal(a, b):
            out.append(invalid_raw("spec.template", _compact(spec.get("template")),
                                   "field is immutable"))
        for k in ("completionMode", "podFailurePolicy", "backoffLimitPerIndex", "managedBy",
                  "successPolicy"):
            if not semantic_equal(spec.get(k), ospec.get(k)):
                v = spec.get(k)
                out.append(invalid_raw(f"spec.{k}", q(v) if isinstance(v, (str, int)) and
                                       not isinstance(v, bool) else _compact(v),
                                       "field is immutable"))
    return out


def _compact(v: Any) -> str:
    import json
    return "null" if v is None else json.dumps(v, separators=(",", ":"), sort_keys=True)


def _has_condition(o: dict, ctype: str) -> bool:
    for c in _status(o).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c.get("status") == "True"
    return False


def job_status_cell(o: dict) -> str:
    if _has_condition(o, "Complete"):
        return "Complete"
    if _has_condition(o, "Failed"):
        return "Failed"
    if (o.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    if _has_condition(o, "Suspended"):
        return "Suspended"
    if _has_condition(o, "FailureTarget"):
        return "FailureTarget"
    if _has_condition(o, "SuccessCriteriaMet"):
        return "SuccessCriteriaMet"
    return "Running"


def job_completions_cell(o: dict) -> str:
    spec, succeeded = _spec(o), _int(_status(o).get("succeeded"))
    comp = spec.get("completions")
    if is_int(comp):
        return f"{succeeded}/{comp}"
    par = _int(spec.get("parallelism"))
    if par > 1:
        return f"{succeeded}/1 of {par}"
    return f"{succeeded}/1"


def job_duration_cell(o: dict) -> str:
    st = _status(o)
    start = parse_time(st.get("startTime"))
    if start is None:
        return ""
    end = parse_time(st.get("completionTime"))
    if end is None:
        end = datetime.datetime.now(datetime.UTC)
    return human_duration(int((end - start).total_seconds()))


KINDS.add(Kind(
    "Job", "jobs", group="batch", version="v1", categories=("all",), subresources=("status",),
    has_generation=True, default=_job_default, validate=_job_validate,
    proto="k8s.io.api.batch.v1.Job",
    field_labels=lambda o: {"status.successful": str(_int(_status(o).get("succeeded")))},
    columns=[
        NAME_COLUMN,
        Column("Status", job_status_cell, description="Status of the job."),
        Column("Completions", job_completions_cell,
               description="The number of pods which reached phase Succeeded."),
        Column("Duration", job_duration_cell, description="Time required to complete the job."),
        AGE_COLUMN,
        containers_column(lambda o: _spec(o).get("template")),
        images_column(lambda o: _spec(o).get("template")),
        selector_column(lambda o: _spec(o).get("selector"),
                        "A label query over pods that should match the pod count."),
    ]))


# ============================================================================ CronJob
def _jt_spec(o: dict) -> dict:
    jt = _spec(o).get("jobTemplate")
    s = jt.get("spec") if isinstance(jt, dict) else None
    return s if isinstance(s, dict) else {}


def _cronjob_default(obj: dict) -> None:
    spec = _ensure_spec(obj)
    if not spec.get("concurrencyPolicy"):
        spec["concurrencyPolicy"] = "Allow"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if spec.get("successfulJobsHistoryLimit") is None:
        spec["successfulJobsHistoryLimit"] = 3
    if spec.get("failedJobsHistoryLimit") is None:
        spec["failedJobsHistoryLimit"] = 1
    # the job template gets pod defaults only; Job defaults apply when the Job is created
    jt = _ensure(spec, "jobTemplate")
    jts = _ensure(jt, "spec")
    tpl = jts.get("template")
    if not isinstance(tpl, dict):
        tpl = jts["template"] = {}
    default_template(tpl)


def _cronjob_validate(obj: dict, old: dict | None) -> list[Cause]:
    out = object_meta(obj, namespaced=True)
    spec = _spec(obj)
    ospec = _spec(old) if old is not None else None
    sched = spec.get("schedule")
    if not sched:
        out.append(required("spec.schedule"))
    elif not isinstance(sched, str):
        out.append(invalid("spec.schedule", sched, "must be a string"))
    else:
        try:
            parse_cron(sched)
        except CronError as e:
            out.append(invalid("spec.schedule", sched, str(e)))
        allow_tz = ospec is not None and "TZ" in str(ospec.get("schedule") or "")
        if allow_tz and "TZ" in sched and spec.get("timeZone") is not None:
            out.append(invalid("spec.schedule", sched,
                               "cannot use both timeZone field and TZ or CRON_TZ in schedule"))
        elif not allow_tz and "TZ" in sched:
            out.append(invalid("spec.schedule", sched,
                               "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"))
    out += non_negative("spec.startingDeadlineSeconds", spec.get("startingDeadlineSeconds"))
    if ospec is None or ospec.get("timeZone") != spec.get("timeZone"):
        out += validate_time_zone(spec.get("timeZone"), "spec.timeZone")
    cp = spec.get("concurrencyPolicy")
    if not cp:
        out.append(required("spec.concurrencyPolicy"))
    elif cp not in ("Allow", "Forbid", "Replace"):
        out.append(unsupported("spec.concurrencyPolicy", cp, ["Allow", "Forbid", "Replace"]))
    jt = spec.get("jobTemplate") if isinstance(spec.get("jobTemplate"), dict) else {}
    jmd = jt.get("metadata") if isinstance(jt.get("metadata"), dict) else {}
    out += labels("spec.jobTemplate.metadata.labels", jmd.get("labels"))
    out += annotations("spec.jobTemplate.metadata.annotations", jmd.get("annotations"))
    jts = _jt_spec(obj)
    out += _validate_job_spec_body(jts, "spec.jobTemplate.spec")
    if jts.get("selector") is not None:
        out.append(invalid_raw("spec.jobTemplate.spec.selector", selector_value(jts["selector"]),
                               "`selector` will be auto-generated"))
    if jts.get("manualSelector") is True:
        out.append(unsupported("spec.jobTemplate.spec.manualSelector", True, ["nil", "false"]))
    out += non_negative("spec.successfulJobsHistoryLimit", spec.get("successfulJobsHistoryLimit"))
    out += non_negative("spec.failedJobsHistoryLimit", spec.get("failedJobsHistoryLimit"))
    name = (obj.get("metadata") or {}).get("name") or ""
    if old is None and len(name) > 52:
        # the controller names Jobs <cronjob>-<11 characters>; Job names are DNS labels
        out.append(invalid("metadata.name", name, "must be no more than 52 characters"))
    return out


def _bool_ptr(v: Any) -> str:
    if v is None:
        return "<unset>"
    return "True" if v else "False"


KINDS.add(Kind(
    "CronJob", "cronjobs", group="batch", version="v1", short_names=("cj",),
    categories=("all",), subresources=("status",), has_generation=True,
    default=_cronjob_default, validate=_cronjob_validate, proto="k8s.io.api.batch.v1.CronJob",
    columns=[
        NAME_COLUMN,
        Column("Schedule", lambda o: _spec(o).get("schedule", ""),
               description="The schedule in Cron format, see "
                           "https://en.wikipedia.org/wiki/Cron."),
        Column("Timezone", lambda o: _spec(o).get("timeZone")
               if _spec(o).get("timeZone") is not None else "<none>",
               description="The time zone name for the given schedule, see "
                           "https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
        Column("Suspend", lambda o: _bool_ptr(_spec(o).get("suspend")), type="boolean",
               description="This flag tells the controller to suspend subsequent executions, it "
                           "does not apply to already started executions."),
        Column("Active", lambda o: len(_status(o).get("active") or []), type="integer",
               description="A list of pointers to currently running jobs."),
        Column("Last Schedule", lambda o: human_age(_status(o).get("lastScheduleTime"))
               if _status(o).get("lastScheduleTime") else "<none>",
               description="Information when was the last time the job was successfully "
                           "scheduled."),
        AGE_COLUMN,
        containers_column(lambda o: _jt_spec(o).get("template")),
        images_column(lambda o: _jt_spec(o).get("template")),
        selector_column(lambda o: _jt_spec(o).get("selector"),
                        "A label query over pods that should match the pod count."),
    ]))
