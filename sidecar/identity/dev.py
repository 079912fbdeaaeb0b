"""Development-mode authentication: a static token -> agent table.

Only for a laptop without an issuer. It must be enabled explicitly, logs a loud
warning when built, and marks every :class:`Principal` with ``dev_mode=True`` so
every audit record says the caller was not really verified.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.identity.origin import OriginPolicy
from sidecar.identity.principal import Forbidden, Principal, Unauthenticated, bearer_token, header

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DevAgent:
    """Who a development token stands for."""

    agent: str
    tenant: str = ""
    on_behalf_of: str = ""


class DevAuthenticator:
    """Trusts a static mapping of bearer tokens to agents. Never use in production."""

    def __init__(
        self,
        tokens: Mapping[str, DevAgent],
        *,
        resource: str,
        enabled: bool = False,
        metadata_url: str = "",
        allowed_origins: Sequence[str] = (),
    ) -> None:
        if not enabled:
            raise ValueError("development authentication must be enabled explicitly (enabled=True)")
        if not tokens:
            raise ValueError("development authentication needs at least one token")
        self._tokens = dict(tokens)
        self._resource = resource
        self._metadata_url = metadata_url
        self._origins = OriginPolicy(resource, allowed_origins)
        log.warning(
            "DEVELOPMENT MODE: identity is NOT verified; %d static token(s) are trusted "
            "and every audit record is marked dev_mode=true. Never run this in production.",
            len(self._tokens),
            extra={"dev_mode": True, "agents": sorted({a.agent for a in tokens.values()})},
        )

    def _challenge(self, error: str = "", description: str = "") -> str:
        parts = ['Bearer realm="palisade-dev"']
        if self._metadata_url:
            parts.append(f'resource_metadata="{self._metadata_url}"')
        if error:
            parts.append(f'error="{error}"')
        if description:
            parts.append(f'error_description="{description}"')
        return ", ".join(parts)

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        if not self._origins.allows(header(headers, "Origin")):
            reason = "the request's Origin is not allowed (DNS rebinding protection)"
            raise Forbidden(reason, self._challenge())
        try:
            token = bearer_token(headers)
        except ValueError as exc:
            raise Unauthenticated(str(exc), self._challenge("invalid_request", str(exc))) from None
        if token is None:
            raise Unauthenticated("no bearer token", self._challenge())
        for known, who in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return Principal(
                    agent=who.agent,
                    tenant=who.tenant,
                    on_behalf_of=who.on_behalf_of,
                    subject=who.agent,
                    issuer="dev",
                    dev_mode=True,
                )
        reason = "unknown development token"
        raise Unauthenticated(reason, self._challenge("invalid_token", reason))

    def protected_resource_metadata(self) -> dict[str, Any]:
        return {
            "resource": self._resource,
            "authorization_servers": [],
            "bearer_methods_supported": ["header"],
            "resource_name": "palisade sidecar (development mode)",
        }
