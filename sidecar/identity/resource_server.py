"""The sidecar as an OAuth 2.1 resource server (MCP authorization specification).

:class:`ResourceServer` is the production :class:`~sidecar.identity.Authenticator`:
it takes the bearer token from the ``Authorization`` header (header only; query
and body tokens are not accepted), picks the verifier by the token's claimed
issuer (a trusted OIDC/OAuth issuer -> JWKS, otherwise Kubernetes TokenReview when
configured), checks required scopes, maps the claims to a bundle agent and
returns a :class:`Principal`. Every failure becomes an :class:`AuthError` with the
RFC 6750 / RFC 9728 challenge; the token itself never appears in a log line, an
error or a challenge.

Verified JWTs are cached (by SHA-256 digest, never the token itself) until the
earlier of their ``exp`` and ``cache_ttl_s`` (a verifier says what may be reused
through ``VerifiedToken.reusable_until``; TokenReview keeps its own shorter
cache), so a session's repeated calls cost a hash and a lookup rather than a
signature check (about 190 us with Ed25519).
The claim -> agent mapping and the scope check still run on every request, so a
new bundle takes effect at once. The price: a token whose signing key the
issuer withdraws stays accepted for at most ``cache_ttl_s``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sidecar.identity.challenge import ChallengeBuilder, metadata_url, protected_resource_metadata
from sidecar.identity.jwt_verifier import JwtVerifier, unverified_issuer
from sidecar.identity.mapping import IdentityMap, MappingError
from sidecar.identity.origin import OriginPolicy
from sidecar.identity.principal import Forbidden, Principal, Unauthenticated, bearer_token, header
from sidecar.identity.verified import TokenRejected, VerifiedToken

log = logging.getLogger(__name__)

#: Tokens longer than this are refused before any parsing (headers are bounded anyway).
MAX_TOKEN_BYTES = 16 * 1024


class Verifier(Protocol):
    async def verify(self, token: str) -> VerifiedToken: ...


class ResourceServer:
    """Verifies bearer tokens for one MCP server (one resource URI, one audience)."""

    def __init__(
        self,
        *,
        resource: str,
        identities: IdentityMap,
        jwt: JwtVerifier | None = None,
        token_review: Verifier | None = None,
        authorization_servers: Sequence[str] = (),
        required_scopes: Sequence[str] = (),
        resource_name: str = "",
        allowed_origins: Sequence[str] = (),
        cache_ttl_s: float = 60.0,
        cache_size: int = 4096,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if jwt is None and token_review is None:
            raise ValueError("a resource server needs a JWT verifier or TokenReview, or both")
        self.resource = resource
        self._identities = identities
        self._jwt = jwt
        self._review = token_review
        self._required = tuple(required_scopes)
        self._metadata_url = metadata_url(resource)
        self._origins = OriginPolicy(resource, allowed_origins)
        self._cache: OrderedDict[bytes, tuple[float, VerifiedToken]] = OrderedDict()
        self._cache_ttl = cache_ttl_s
        self._cache_size = cache_size
        self._wall = wall_clock
        self._challenge = ChallengeBuilder(self._metadata_url, scopes=self._required)
        self._servers = tuple(authorization_servers)
        self._resource_name = resource_name

    @property
    def metadata_url(self) -> str:
        return self._metadata_url

    def update_identities(self, identities: IdentityMap) -> None:
        """Swap the claim -> agent table when a new bundle is activated (atomic)."""
        self._identities = identities

    def protected_resource_metadata(self) -> dict[str, Any]:
        # Built per request: a discovered cluster issuer joins the trusted set later.
        jwt = self._jwt
        return protected_resource_metadata(
            self.resource,
            list(self._servers) or sorted(jwt.issuers if jwt else ()),
            scopes=self._required,
            algorithms=jwt.algorithms if jwt else (),
            resource_name=self._resource_name,
        )

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        origin = header(headers, "Origin")
        if not self._origins.allows(origin):
            reason = "the request's Origin is not allowed (DNS rebinding protection)"
            log.info("request refused", extra={"reason": reason, "origin": origin})
            raise Forbidden(reason, self._challenge.missing())
        try:
            token = bearer_token(headers)
        except ValueError as exc:
            # RFC 6750 3.1 would allow 400 here; the MCP spec answers 401 for any
            # request without a usable token, so clients start their OAuth flow.
            raise Unauthenticated(str(exc), self._challenge.invalid_request(str(exc))) from None
        if token is None:
            raise Unauthenticated("no bearer token", self._challenge.missing())
        if len(token) > MAX_TOKEN_BYTES:
            raise self._invalid("the token is too large")
        verified = await self._verify(token)
        missing = [s for s in self._required if s not in verified.scopes]
        if missing:
            reason = "the token lacks the scope(s) " + " ".join(missing)
            log.info("token refused", extra={"reason": reason})
            raise Forbidden(reason, self._challenge.insufficient_scope(reason, self._required))
        try:
            match = self._identities.resolve(verified.claims, cluster=verified.cluster)
        except MappingError as exc:
            reason = f"the token names no agent of this server: {exc}"
            log.info("token refused", extra={"reason": reason})
            details = {"delegation": [dict(h) for h in exc.delegation]} if exc.delegation else {}
            raise Forbidden(reason, self._challenge.insufficient_scope(reason), details) from None
        return Principal(
            agent=match.agent.agent,
            tenant=match.agent.tenant,
            on_behalf_of=match.on_behalf_of,
            subject=match.subject,
            issuer=match.issuer,
            dev_mode=False,
            delegation=match.delegation,
        )

    async def _verify(self, token: str) -> VerifiedToken:
        key = hashlib.sha256(token.encode()).digest()
        now = self._wall()
        hit = self._cache.get(key)
        if hit is not None:
            if now < hit[0]:
                return hit[1]
            del self._cache[key]
        verified = await self._verify_uncached(token)
        if verified.reusable_until is None:
            return verified
        until = min(now + self._cache_ttl, verified.reusable_until)
        if self._cache_ttl > 0 and until > now:
            self._cache[key] = (until, verified)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return verified

    async def _verify_uncached(self, token: str) -> VerifiedToken:
        verifier: Verifier | None
        if self._jwt is not None and await self._jwt.trusts(unverified_issuer(token)):
            verifier = self._jwt
        else:
            verifier = self._review or self._jwt
        assert verifier is not None
        try:
            return await verifier.verify(token)
        except TokenRejected as exc:
            raise self._invalid(exc.description) from None

    def _invalid(self, reason: str) -> Unauthenticated:
        log.info("token refused", extra={"reason": reason})
        return Unauthenticated(reason, self._challenge.invalid_token(reason))
