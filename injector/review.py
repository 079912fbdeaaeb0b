"""The AdmissionReview v1 wire format, as TypedDicts, and its response builders.

Only the fields the injector reads or writes are spelled out; the API server
sends more (``userInfo``, ``options``...), which pass through untouched.
Responses are built here and nowhere else, so every path out of the webhook,
failures included, carries ``apiVersion``, ``kind`` and the request ``uid``.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal, NotRequired, TypedDict

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class Request(TypedDict):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: Operation
    namespace: NotRequired[str]
    name: NotRequired[str]
    subResource: NotRequired[str]
    dryRun: NotRequired[bool]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]


class Status(TypedDict):
    code: int
    message: str
    reason: NotRequired[str]


class Response(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[Status]
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    warnings: NotRequired[list[str]]
    auditAnnotations: NotRequired[dict[str, str]]


class Review(TypedDict):
    apiVersion: str
    kind: str
    request: NotRequired[Request]
    response: NotRequired[Response]


class PatchOp(TypedDict):
    """One RFC 6902 operation; ``value`` is absent for ``remove``."""

    op: Literal["add", "replace", "remove", "test"]
    path: str
    value: NotRequired[Any]


class ReviewError(Exception):
    """The review itself is malformed: answered with ``allowed: false`` and code 400.

    ``uid`` is whatever could be read from the request (empty when nothing could).
    """

    def __init__(self, message: str, uid: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.uid = uid


def _wrap(response: Response) -> Review:
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def allow(uid: str, warnings: list[str] | None = None) -> Review:
    response: Response = {"uid": uid, "allowed": True}
    if warnings:
        response["warnings"] = list(warnings)
    return _wrap(response)


def allow_with_patch(
    uid: str,
    ops: list[PatchOp],
    warnings: list[str] | None = None,
    audit: dict[str, str] | None = None,
) -> Review:
    if not ops:
        return allow(uid, warnings)
    encoded = base64.b64encode(json.dumps(ops, separators=(",", ":")).encode()).decode()
    response: Response = {"uid": uid, "allowed": True, "patchType": "JSONPatch", "patch": encoded}
    if warnings:
        response["warnings"] = list(warnings)
    if audit:
        response["auditAnnotations"] = dict(audit)
    return _wrap(response)


def deny(uid: str, message: str, code: int = 403, reason: str = "Forbidden") -> Review:
    return _wrap(
        {
            "uid": uid,
            "allowed": False,
            "status": {"code": code, "message": message, "reason": reason},
        }
    )


def _uid_of(doc: object) -> str:
    if isinstance(doc, dict):
        request = doc.get("request")
        if isinstance(request, dict):
            uid = request.get("uid")
            if isinstance(uid, str):
                return uid
    return ""


def parse_review(doc: object) -> Request:
    """Check the envelope and return the request; raise ReviewError when malformed."""
    uid = _uid_of(doc)
    if not isinstance(doc, dict):
        raise ReviewError("the body is not a JSON object", uid)
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise ReviewError(
            f"expected {KIND} {API_VERSION}, got {doc.get('kind')!r} {doc.get('apiVersion')!r}",
            uid,
        )
    request = doc.get("request")
    if not isinstance(request, dict):
        raise ReviewError("the review has no request", uid)
    if not uid:
        raise ReviewError("the request has no uid", uid)
    for key in ("kind", "resource"):
        if not isinstance(request.get(key), dict):
            raise ReviewError(f"the request has no {key}", uid)
    if request.get("operation") not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        raise ReviewError(f"unknown operation {request.get('operation')!r}", uid)
    obj = request.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise ReviewError("the request object is not a JSON object", uid)
    return request  # type: ignore[return-value]


def decode_patch(review: Review) -> list[PatchOp]:
    """The patch of a response, decoded (tests, benchmarks and logs)."""
    response = review.get("response")
    if not response or "patch" not in response:
        return []
    ops: list[PatchOp] = json.loads(base64.b64decode(response["patch"]))
    return ops
