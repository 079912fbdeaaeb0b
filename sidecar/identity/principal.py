"""Who is calling: the :class:`Principal`, the :class:`Authenticator` protocol and its errors.

This is the interface between the MCP proxy and identity. The proxy hands the
request headers to an :class:`Authenticator`; it gets a :class:`Principal` back or
an :class:`AuthError`, which it turns into an HTTP answer at its edge::

    AuthError                  reason, www_authenticate, status
    ├── Unauthenticated        401: no token, bad token, wrong audience, expired, ...
    └── Forbidden              403: a valid token that may not use this server

The ``www_authenticate`` value is the whole ``WWW-Authenticate`` header (RFC 6750
section 3, MCP authorization spec) and never contains the token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Actor:
    """One hop of an RFC 8693 ``act`` chain, mapped to the bundle agent it stands for."""

    issuer: str
    subject: str
    agent: str
    tenant: str = ""

    def as_record(self) -> dict[str, str]:
        """The hop as audit records carry it (``details.delegation``)."""
        return {
            "issuer": self.issuer,
            "subject": self.subject,
            "agent": self.agent,
            "tenant": self.tenant,
        }


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, as policy and audit see it."""

    #: Agent id from the bundle (``spec.agents[].id``).
    agent: str
    #: The agent's tenant from the bundle (may be empty when the agent has none).
    tenant: str
    #: The human (or upstream principal) the agent acts for: RFC 8693 ``act`` chain
    #: or the token's subject when it is a user token presented by an agent.
    on_behalf_of: str
    #: The token's subject (``sub``) or ServiceAccount name (``system:serviceaccount:ns:name``).
    subject: str
    #: The token's issuer, or ``"kubernetes"`` for TokenReview, or ``"dev"``.
    issuer: str
    #: True only for :class:`~sidecar.identity.dev.DevAuthenticator`; audit records say so.
    dev_mode: bool = False
    #: The RFC 8693 ``act`` chain the agent was found through, outermost actor (this
    #: agent) first, then the earlier actors; every hop is of ``issuer``. Empty
    #: when the token names no actor.
    delegation: tuple[Actor, ...] = ()
    #: Who the upstream acts as for this caller: the identity of the credential the
    #: sidecar hands it (``system:serviceaccount:payments:sre-agent-payments``), set
    #: by :mod:`sidecar.credentials.caller`; empty when the upstream gets none.
    upstream_identity: str = ""

    def audit_details(self) -> dict[str, Any]:
        """What audit records add to ``details`` about this caller (the whole chain,
        and the identity the upstream acts as)."""
        out: dict[str, Any] = {}
        if self.delegation:
            out["delegation"] = [hop.as_record() for hop in self.delegation]
        if self.upstream_identity:
            out["upstream_identity"] = self.upstream_identity
        return out


class AuthError(Exception):
    """Authentication or authorization failed; carries what the HTTP answer needs."""

    status: int = 401

    def __init__(
        self,
        reason: str,
        www_authenticate: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(reason)
        #: Human-readable reason; safe to log and return (never contains a token).
        self.reason = reason
        #: The full ``WWW-Authenticate`` header value to send with the answer.
        self.www_authenticate = www_authenticate
        #: Evidence for the refusal's audit record (e.g. the ``act`` chain refused).
        self.details: Mapping[str, Any] = dict(details or {})


class Unauthenticated(AuthError):
    """No usable credentials: answer HTTP 401."""

    status = 401


class Forbidden(AuthError):
    """Valid credentials without the right to use this server: answer HTTP 403."""

    status = 403


class Authenticator(Protocol):
    """What the proxy calls for every request that needs an identity."""

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """Verify the request's credentials; raise :class:`AuthError` when they do not hold."""
        ...

    def protected_resource_metadata(self) -> dict[str, Any]:
        """The RFC 9728 document served at ``/.well-known/oauth-protected-resource``."""
        ...


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts and aiohttp's CIMultiDict."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when absent.

    Raises ValueError when an Authorization header is present but not a Bearer token
    (RFC 6750 section 2.1: the scheme is case-insensitive, one token, no spaces).
    """
    value = header(headers, "Authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise ValueError("the Authorization header is not a Bearer token")
    return token
