"""The strict schema of quarantined facts, and its validator (pure: no I/O, no clock).

Whatever extracted them (the deterministic parser or a quarantined model), facts
reach the privileged agent only through :func:`validate`, which keeps exactly:

- ``errors``: ``{"type", "count"}``, ``type`` a known Kubernetes reason or a
  generic error kind (:data:`ERROR_KINDS`), or an exception class name matching
  :data:`EXCEPTION_CLASS` (``java.lang.NullPointerException``, ``KeyError``);
- ``pods``: ``{"name", "namespace"?, "status"?, "restarts"?}``, names and
  namespaces as Kubernetes DNS names;
- ``images``: container image references (:data:`IMAGE_REF`);
- ``deploys``: ``{"name", "namespace"?, "image"?, "at"?}``;
- ``exitCodes``: integers 0-255;
- ``window``: ``{"first", "last"}`` RFC 3339 timestamps;
- ``lines`` and ``suspectedInjectionLines``: counts.

Nothing else: unknown keys, wrong types, strings that miss their pattern and
items beyond the caps are dropped and counted. No field is free text, so an
instruction hidden in a log has no field to ride in; what is left is a bounded
set of identifiers (see docs/quarantine.md on the residual channel).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

#: Kubernetes reasons and generic error kinds an ``errors[].type`` may name.
ERROR_KINDS: Final = frozenset(
    {
        "CrashLoopBackOff",
        "OOMKilled",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "ContainerCannotRun",
        "Evicted",
        "Preempting",
        "FailedScheduling",
        "FailedMount",
        "FailedAttachVolume",
        "FailedCreatePodSandBox",
        "Unhealthy",
        "BackOff",
        "NodeNotReady",
        "DeadlineExceeded",
        "Error",
        "Panic",
        "Fatal",
        "SegmentationFault",
        "ConnectionRefused",
        "ConnectionReset",
        "Timeout",
        "PermissionDenied",
        "NotFound",
    }
)
#: Pod phases and container states a ``pods[].status`` may name (beside ERROR_KINDS).
POD_STATUSES: Final = frozenset(
    {
        "Pending",
        "Running",
        "Succeeded",
        "Failed",
        "Unknown",
        "Completed",
        "Terminating",
        "ContainerCreating",
        "PodInitializing",
        "Init:Error",
        "Init:CrashLoopBackOff",
    }
)

#: An exception class name, optionally qualified by a package/module path.
EXCEPTION_CLASS: Final = re.compile(
    r"(?:[a-z_][A-Za-z0-9_]{0,30}\.){0,6}[A-Z][A-Za-z0-9]{0,48}(?:Error|Exception|Fault)"
)
#: A DNS-1123 subdomain (pod, deployment and other object names).
OBJECT_NAME: Final = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
#: A DNS-1123 label (namespaces).
NAMESPACE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: A container image reference: [registry[:port]/]path[:tag][@sha256:digest].
IMAGE_REF: Final = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9.-]{0,62}[a-z0-9])?(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+){0,20}(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+){0,20}){0,8}"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)
#: An RFC 3339 timestamp (checked again by ``datetime.fromisoformat``).
TIMESTAMP: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})"
)

#: Most items kept per list; more are dropped (and counted).
MAX_ITEMS: Final = 32
_MAX_COUNT: Final = 10**9
_MAX_IMAGE: Final = 255

#: The same schema for a model's structured output (``response_format``); the
#: validator, not the model, is what enforces it.
FACTS_JSON_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "errors": {
            "type": "array",
            "maxItems": MAX_ITEMS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "count"],
                "properties": {
                    "type": {
                        "anyOf": [
                            {"enum": sorted(ERROR_KINDS)},
                            {"type": "string", "pattern": f"^{EXCEPTION_CLASS.pattern}$"},
                        ]
                    },
                    "count": {"type": "integer", "minimum": 1},
                },
            },
        },
        "pods": {
            "type": "array",
            "maxItems": MAX_ITEMS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": f"^{OBJECT_NAME.pattern}$"},
                    "namespace": {"type": "string", "pattern": f"^{NAMESPACE.pattern}$"},
                    "status": {"enum": sorted(POD_STATUSES | ERROR_KINDS)},
                    "restarts": {"type": "integer", "minimum": 0},
                },
            },
        },
        "images": {
            "type": "array",
            "maxItems": MAX_ITEMS,
            "items": {"type": "string", "pattern": f"^{IMAGE_REF.pattern}$"},
        },
        "deploys": {
            "type": "array",
            "maxItems": MAX_ITEMS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": f"^{OBJECT_NAME.pattern}$"},
                    "namespace": {"type": "string", "pattern": f"^{NAMESPACE.pattern}$"},
                    "image": {"type": "string", "pattern": f"^{IMAGE_REF.pattern}$"},
                    "at": {"type": "string", "format": "date-time"},
                },
            },
        },
        "exitCodes": {
            "type": "array",
            "maxItems": MAX_ITEMS,
            "items": {"type": "integer", "minimum": 0, "maximum": 255},
        },
        "window": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "first": {"type": "string", "format": "date-time"},
                "last": {"type": "string", "format": "date-time"},
            },
        },
        "lines": {"type": "integer", "minimum": 0},
        "suspectedInjectionLines": {"type": "integer", "minimum": 0},
    },
}


@dataclass(frozen=True, slots=True)
class Validated:
    """Facts that passed :func:`validate`, and how many candidate items were dropped."""

    facts: dict[str, Any]
    dropped: int


def _full(pattern: re.Pattern[str], value: Any, max_len: int = 253) -> str | None:
    if isinstance(value, str) and len(value) <= max_len and pattern.fullmatch(value):
        return value
    return None


def _count(value: Any, maximum: int = _MAX_COUNT) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= maximum else None


def timestamp(value: Any) -> str | None:
    """``value`` when it is an RFC 3339 timestamp that really parses, else ``None``."""
    if _full(TIMESTAMP, value, 40) is None:
        return None
    try:
        datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return str(value)


def error_type(value: Any) -> str | None:
    if isinstance(value, str) and value in ERROR_KINDS:
        return value
    return _full(EXCEPTION_CLASS, value, 120)


class _Validator:
    def __init__(self) -> None:
        self.dropped = 0

    def drop(self, n: int = 1) -> None:
        self.dropped += n

    def items(self, value: Any) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.drop()
            return []
        if len(value) > MAX_ITEMS:
            self.drop(len(value) - MAX_ITEMS)
        return value[:MAX_ITEMS]

    def record(self, value: Any, allowed: frozenset[str]) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.drop()
            return None
        extra = [k for k in value if k not in allowed]
        self.drop(len(extra))
        return value

    def optional(self, out: dict[str, Any], key: str, raw: Mapping[str, Any], ok: Any) -> None:
        if key not in raw:
            return
        if ok is None:
            self.drop()
        else:
            out[key] = ok

    def errors(self, value: Any) -> list[dict[str, Any]]:
        merged: dict[str, int] = {}
        for item in self.items(value):
            rec = self.record(item, frozenset({"type", "count"}))
            if rec is None:
                continue
            kind, count = error_type(rec.get("type")), _count(rec.get("count"))
            if kind is None or not count:
                self.drop()
                continue
            merged[kind] = min(_MAX_COUNT, merged.get(kind, 0) + count)
        return [{"type": k, "count": n} for k, n in merged.items()]

    def pods(self, value: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in self.items(value):
            rec = self.record(item, frozenset({"name", "namespace", "status", "restarts"}))
            if rec is None:
                continue
            name = _full(OBJECT_NAME, rec.get("name"))
            if name is None:
                self.drop()
                continue
            pod: dict[str, Any] = {"name": name}
            self.optional(pod, "namespace", rec, _full(NAMESPACE, rec.get("namespace"), 63))
            status = rec.get("status")
            ok = (
                status if isinstance(status, str) and status in POD_STATUSES | ERROR_KINDS else None
            )
            self.optional(pod, "status", rec, ok)
            self.optional(pod, "restarts", rec, _count(rec.get("restarts")))
            out.append(pod)
        return out

    def images(self, value: Any) -> list[str]:
        out: list[str] = []
        for item in self.items(value):
            ref = _full(IMAGE_REF, item, _MAX_IMAGE)
            if ref is None:
                self.drop()
            elif ref not in out:
                out.append(ref)
        return out

    def deploys(self, value: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in self.items(value):
            rec = self.record(item, frozenset({"name", "namespace", "image", "at"}))
            if rec is None:
                continue
            name = _full(OBJECT_NAME, rec.get("name"))
            if name is None:
                self.drop()
                continue
            dep: dict[str, Any] = {"name": name}
            self.optional(dep, "namespace", rec, _full(NAMESPACE, rec.get("namespace"), 63))
            self.optional(dep, "image", rec, _full(IMAGE_REF, rec.get("image"), _MAX_IMAGE))
            self.optional(dep, "at", rec, timestamp(rec.get("at")))
            out.append(dep)
        return out

    def exit_codes(self, value: Any) -> list[int]:
        out: list[int] = []
        for item in self.items(value):
            code = _count(item, 255)
            if code is None:
                self.drop()
            elif code not in out:
                out.append(code)
        return out

    def window(self, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        rec = self.record(value, frozenset({"first", "last"}))
        out: dict[str, Any] = {}
        if rec is not None:
            self.optional(out, "first", rec, timestamp(rec.get("first")))
            self.optional(out, "last", rec, timestamp(rec.get("last")))
        return out


_LISTS: Final = ("errors", "pods", "images", "deploys", "exitCodes")
_COUNTS: Final = ("lines", "suspectedInjectionLines")
KEYS: Final = frozenset((*_LISTS, "window", *_COUNTS))


def validate(candidate: Any) -> Validated:
    """The schema-valid part of ``candidate``; everything else is dropped and counted.

    Never raises: a candidate that is not even an object yields no facts and one
    dropped item. Empty lists and absent values are left out of the result.
    """
    v = _Validator()
    if not isinstance(candidate, Mapping):
        return Validated({}, 1)
    v.drop(sum(1 for k in candidate if k not in KEYS))
    facts: dict[str, Any] = {
        "errors": v.errors(candidate.get("errors")),
        "pods": v.pods(candidate.get("pods")),
        "images": v.images(candidate.get("images")),
        "deploys": v.deploys(candidate.get("deploys")),
        "exitCodes": v.exit_codes(candidate.get("exitCodes")),
        "window": v.window(candidate.get("window")),
    }
    for key in _COUNTS:
        if key in candidate:
            n = _count(candidate[key])
            if n is None:
                v.drop()
            else:
                facts[key] = n
    return Validated({k: x for k, x in facts.items() if x or k in _COUNTS}, v.dropped)


def render(facts: Mapping[str, Any]) -> str:
    """A short text rendering of validated facts (built only from validated values)."""
    parts: list[str] = []
    if facts.get("errors"):
        parts.append("errors: " + ", ".join(f"{e['type']} x{e['count']}" for e in facts["errors"]))
    if facts.get("pods"):
        shown = []
        for p in facts["pods"]:
            name = f"{p['namespace']}/{p['name']}" if "namespace" in p else p["name"]
            extra = [str(p["status"])] if "status" in p else []
            if "restarts" in p:
                extra.append(f"{p['restarts']} restarts")
            shown.append(name + (f" ({', '.join(extra)})" if extra else ""))
        parts.append("pods: " + ", ".join(shown))
    if facts.get("images"):
        parts.append("images: " + ", ".join(facts["images"]))
    if facts.get("deploys"):
        shown = []
        for d in facts["deploys"]:
            name = f"{d['namespace']}/{d['name']}" if "namespace" in d else d["name"]
            if "image" in d:
                name += f" -> {d['image']}"
            if "at" in d:
                name += f" at {d['at']}"
            shown.append(name)
        parts.append("deploys: " + ", ".join(shown))
    if facts.get("exitCodes"):
        parts.append("exit codes: " + ", ".join(str(c) for c in facts["exitCodes"]))
    window = facts.get("window") or {}
    if window:
        parts.append(f"from {window.get('first', '?')} to {window.get('last', '?')}")
    if "lines" in facts:
        parts.append(f"{facts['lines']} lines")
    if facts.get("suspectedInjectionLines"):
        parts.append(
            f"{facts['suspectedInjectionLines']} line(s) looked like prompt injection and were "
            "withheld"
        )
    return "; ".join(parts) if parts else "no facts extracted"
