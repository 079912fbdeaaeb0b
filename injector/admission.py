"""One AdmissionReview in, one AdmissionReview out: the engine the server calls.

Pure, like kopf's ``serve_admission_request``: tests call it with plain dicts.
Errors are translated here into well-formed responses carrying the request UID:

    ReviewError (bad envelope)      -> allowed: false, code 400
    ValueError  (bad pod object)    -> allowed: false, code 400
    Refuse      (policy)            -> allowed: false, code 403
    Skip                            -> allowed: true (warnings, maybe a status annotation;
                                       never a patch for an UPDATE)
    Plan                            -> allowed: true with a JSON Patch
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from injector import model, patch, plan
from injector.review import (
    Request,
    Review,
    ReviewError,
    allow,
    allow_with_patch,
    deny,
    parse_review,
)
from injector.settings import InjectionSettings

log = logging.getLogger(__name__)


def request_namespace(request: Mapping[str, object]) -> str:
    """The namespace of the object under review (the request field, else the object's)."""
    namespace = request.get("namespace")
    if isinstance(namespace, str) and namespace:
        return namespace
    obj = request.get("object")
    if isinstance(obj, dict):
        meta = obj.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("namespace"), str):
            return str(meta["namespace"])
    return ""


def respond(
    request: Request,
    namespace_labels: Mapping[str, str] | None,
    settings: InjectionSettings,
) -> Review:
    """Decide and answer one envelope-checked request."""
    uid = request["uid"]
    try:
        decision = model.decide(request, namespace_labels, settings)
    except ValueError as exc:
        return deny(uid, f"palisade injector: {exc}", code=400, reason="BadRequest")
    if isinstance(decision, plan.Refuse):
        log.info("refused pod", extra={"uid": uid, "reason": decision.message})
        return deny(uid, decision.message)
    if isinstance(decision, plan.Skip):
        log.debug("skipped pod", extra={"uid": uid, "reason": decision.reason})
        if decision.status is None or request.get("operation") != "CREATE":
            return allow(uid, list(decision.warnings))
        obj = request.get("object") or {}
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        if (
            isinstance(annotations, dict)
            and annotations.get(plan.ANNOTATION_STATUS) == decision.status
        ):
            return allow(uid, list(decision.warnings))
        op = patch.annotation_op(
            isinstance(annotations, dict), plan.ANNOTATION_STATUS, decision.status
        )
        return allow_with_patch(uid, [op], list(decision.warnings))
    ops = patch.build(decision, settings.sidecar)
    log.info(
        "injected pod",
        extra={
            "uid": uid,
            "pod": decision.pod_label,
            "mode": "native" if decision.native else "container",
        },
    )
    return allow_with_patch(
        uid,
        ops,
        list(decision.warnings),
        audit={"injected": decision.status},
    )


def serve(
    doc: object,
    namespace_labels: Mapping[str, str] | None,
    settings: InjectionSettings,
) -> Review:
    """Check the envelope, then respond; any malformed input still gets a review back."""
    try:
        request = parse_review(doc)
    except ReviewError as exc:
        return deny(exc.uid, f"palisade injector: {exc.message}", code=400, reason="BadRequest")
    return respond(request, namespace_labels, settings)
