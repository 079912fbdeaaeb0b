"""What a token verifier returns, and the one error it raises.

Verifiers (JWT via JWKS, Kubernetes TokenReview) only say whether a token holds
and what it claims; the :mod:`resource server <sidecar.identity.resource_server>`
turns that into a Principal or an HTTP challenge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class TokenRejected(Exception):
    """The token does not hold. ``description`` is safe to send back (never the token)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class VerifierUnavailable(TokenRejected):
    """The verifier could not decide (issuer or API server unreachable): fail closed."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """Claims of a token whose signature, issuer, audience and lifetime were checked."""

    claims: Mapping[str, Any]
    #: True when the token was issued by the cluster itself (ServiceAccount tokens).
    cluster: bool = False
    scopes: frozenset[str] = field(default_factory=frozenset)
    #: Wall-clock time until which the resource server may reuse this result without
    #: asking the verifier again (a JWT's ``exp``); None: never (the verifier caches
    #: itself, as TokenReview does, or must be asked every time).
    reusable_until: float | None = None


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """OAuth scopes from ``scope`` (RFC 8693 / RFC 9068, space-separated) or ``scp`` (list)."""
    raw = claims.get("scope")
    if isinstance(raw, str):
        return frozenset(raw.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(str(s) for s in scp)
    if isinstance(scp, str):
        return frozenset(scp.split())
    return frozenset()
