"""Who answers an approval request: a person's own Kubernetes token, TokenReview + SAR.

``POST /v1/approvals/{id}`` carries ``Authorization: Bearer <token>``: the
approver's own token (a user's, e.g. from an OIDC login of their kubeconfig, or
a ServiceAccount's). The distributor asks the API server who it is
(TokenReview, with the API server's default audiences unless
``--approver-audience`` names some) and whether that person may answer
(SubjectAccessReview for verb ``approve`` or ``deny`` on resource ``approvals``
in group ``palisade.dev``, in the namespace of the pod that asked, named by the
request's id). The chart's ClusterRole ``palisade-approver`` grants those
verbs; bind it cluster-wide, or with a RoleBinding in one namespace to let a
team answer only its own calls. ``GET /v1/approvals`` takes the admin token or a
person's token allowed to ``list`` approvals.

The record names who the API server said the person is (username, uid,
groups), never what the request body claims. The shared admin token is not a
person: TokenReview refuses it, so it cannot approve.

:class:`DevApprovers` (``--insecure-approvers``) is for a laptop or tests: the
body's ``by`` is believed (behind the admin token when there is one) and every
vote is stored as not authenticated; the replica says so loudly at start.
:class:`NoApprovers` is what a replica with neither a Kubernetes API nor that
flag has: every answer is refused with the reason (fail closed).

Errors::

    ApproverError(status)     401 no/invalid token, 403 not allowed,
                              503 cannot ask the API server now / not configured
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

GROUP = "palisade.dev"
RESOURCE = "approvals"


class ApproverError(Exception):
    """The person may not answer; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Approver:
    """A person who answered, as the API server named them."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    authenticated: bool = True
    extra: dict[str, list[str]] = field(default_factory=dict, compare=False)

    def record(self) -> dict[str, Any]:
        """What the store and the audit record keep."""
        return {
            "username": self.username,
            "uid": self.uid,
            "groups": list(self.groups),
            "authenticated": self.authenticated,
        }


class Approvers(Protocol):
    """Authenticates and authorises one answer (or a listing)."""

    #: Whether the admin token is what the API checks on these routes (dev mode).
    admin_token_gates: bool

    async def authenticate(self, token: str, claimed: str) -> Approver: ...

    async def authorize(
        self, approver: Approver, verb: str, namespace: str, name: str = ""
    ) -> None: ...


class ReviewApi(Protocol):
    """The two API calls :class:`KubernetesApprovers` makes (injectable for tests)."""

    async def token_review(self, token: str, audiences: Sequence[str]) -> dict[str, Any]:
        """The TokenReview's ``status`` as plain data."""
        ...

    async def access_review(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The SubjectAccessReview's ``status`` for ``spec`` (API field names)."""
        ...


class KubernetesAsyncioReviews:
    """``ReviewApi`` over a kubernetes_asyncio ``ApiClient``."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes_asyncio import client

        self._client = client
        self._authn = client.AuthenticationV1Api(api_client)
        self._authz = client.AuthorizationV1Api(api_client)
        self._api = api_client

    async def token_review(self, token: str, audiences: Sequence[str]) -> dict[str, Any]:
        c = self._client
        spec = c.V1TokenReviewSpec(token=token, audiences=list(audiences) or None)
        result = await self._authn.create_token_review(c.V1TokenReview(spec=spec))
        status: dict[str, Any] = self._api.sanitize_for_serialization(result.status) or {}
        return status

    async def access_review(self, spec: dict[str, Any]) -> dict[str, Any]:
        c = self._client
        attrs = spec.get("resourceAttributes") or {}
        body = c.V1SubjectAccessReview(
            spec=c.V1SubjectAccessReviewSpec(
                user=spec.get("user"),
                uid=spec.get("uid"),
                groups=spec.get("groups"),
                extra=spec.get("extra"),
                resource_attributes=c.V1ResourceAttributes(
                    group=attrs.get("group"),
                    resource=attrs.get("resource"),
                    verb=attrs.get("verb"),
                    namespace=attrs.get("namespace"),
                    name=attrs.get("name"),
                ),
            )
        )
        result = await self._authz.create_subject_access_review(body)
        status: dict[str, Any] = self._api.sanitize_for_serialization(result.status) or {}
        return status


class KubernetesApprovers:
    """TokenReview says who the person is; SubjectAccessReview whether they may answer."""

    admin_token_gates = False

    def __init__(self, api: ReviewApi, *, audiences: Sequence[str] = ()) -> None:
        self.api = api
        self.audiences = tuple(audiences)

    async def authenticate(self, token: str, claimed: str) -> Approver:
        if not token:
            raise ApproverError(
                "approvers authenticate with their own Kubernetes token (Authorization:"
                " Bearer ...; the CLI sends --token, PALISADE_TOKEN or the kubeconfig's user)",
                401,
            )
        try:
            status = await self.api.token_review(token, self.audiences)
        except Exception as exc:
            log.warning("approver TokenReview failed", extra={"error": type(exc).__name__})
            raise ApproverError("cannot verify the token now; retry", 503) from None
        if not status.get("authenticated"):
            raise ApproverError(
                "the token is not accepted by the cluster (the shared admin token cannot"
                " approve: use your own)",
                401,
            )
        user = status.get("user") or {}
        username = str(user.get("username") or "")
        if not username:
            raise ApproverError("the cluster named no user for the token", 401)
        extra = {str(k): [str(x) for x in v or ()] for k, v in (user.get("extra") or {}).items()}
        return Approver(
            username,
            str(user.get("uid") or ""),
            tuple(str(g) for g in user.get("groups") or ()),
            True,
            extra,
        )

    async def authorize(
        self, approver: Approver, verb: str, namespace: str, name: str = ""
    ) -> None:
        attributes: dict[str, Any] = {"group": GROUP, "resource": RESOURCE, "verb": verb}
        if namespace:
            attributes["namespace"] = namespace
        if name:
            attributes["name"] = name
        spec: dict[str, Any] = {
            "user": approver.username,
            "groups": list(approver.groups),
            "resourceAttributes": attributes,
        }
        if approver.uid:
            spec["uid"] = approver.uid
        if approver.extra:
            spec["extra"] = approver.extra
        try:
            status = await self.api.access_review(spec)
        except Exception as exc:
            log.warning("approver SubjectAccessReview failed", extra={"error": type(exc).__name__})
            raise ApproverError("cannot check the approver's rights now; retry", 503) from None
        if not status.get("allowed") or status.get("denied"):
            where = f" in namespace {namespace}" if namespace else ""
            raise ApproverError(
                f"{approver.username} may not {verb} {RESOURCE}.{GROUP}{where}"
                " (bind the ClusterRole palisade-approver to them)",
                403,
            )


class DevApprovers:
    """``--insecure-approvers``: the body's ``by`` is believed; nothing is verified."""

    admin_token_gates = True

    async def authenticate(self, token: str, claimed: str) -> Approver:
        if not claimed:
            raise ApproverError("'by' (who decides) is required", 400)
        return Approver(claimed, authenticated=False)

    async def authorize(
        self, approver: Approver, verb: str, namespace: str, name: str = ""
    ) -> None:
        return None


class NoApprovers:
    """Neither a Kubernetes API to ask nor the dev flag: every answer is refused."""

    admin_token_gates = True

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def authenticate(self, token: str, claimed: str) -> Approver:
        raise ApproverError(self.reason, 503)

    async def authorize(
        self, approver: Approver, verb: str, namespace: str, name: str = ""
    ) -> None:
        raise ApproverError(self.reason, 503)
