"""Bearer JWT verification against trusted issuers (PyJWT + :mod:`jwks`).

Checks, in order: the header's ``alg`` is on the allow-list (never ``none``, never
an HMAC algorithm, so a public key cannot be used as a shared secret); ``iss`` is a
configured issuer (exact match); the signature verifies with one of that issuer's
keys; ``aud`` contains this server's resource URI (RFC 8707 / MCP: a token minted
for another server is refused); ``exp``, ``nbf`` and ``iat`` with a small leeway;
``exp``, ``iss``, ``aud`` and ``sub`` are present.

An issuer discovered at run time (the cluster's, ``IssuerConfig.discover_from``)
joins the trusted set once its discovery document has been read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jwt

from sidecar.identity.jwks import JwksCache
from sidecar.identity.verified import (
    TokenRejected,
    VerifiedToken,
    VerifierUnavailable,
    scopes_of,
)

#: Asymmetric algorithms only; HS* would let anyone holding the public key forge tokens.
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
_FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` a token claims, unverified, only to choose who verifies it."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else None


class JwtVerifier:
    """Verifies JWTs of several issuers for this server's audience(s)."""

    def __init__(
        self,
        caches: Sequence[JwksCache],
        *,
        audience: str | Sequence[str],
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        leeway_s: float = 30.0,
        required_typ: str = "",
    ) -> None:
        bad = _FORBIDDEN_ALGORITHMS.intersection(algorithms)
        if bad:
            raise ValueError(f"algorithms not allowed for bearer tokens: {sorted(bad)}")
        if not algorithms:
            raise ValueError("at least one algorithm must be allowed")
        self._caches = {c.issuer: c for c in caches if c.issuer}
        self._pending = [c for c in caches if not c.issuer]
        self._audience = [audience] if isinstance(audience, str) else list(audience)
        if not self._audience:
            raise ValueError("at least one audience is needed")
        self._algorithms = tuple(algorithms)
        self._leeway = leeway_s
        self._typ = required_typ

    @property
    def issuers(self) -> frozenset[str]:
        """The issuers trusted so far (a discovered one appears once it is discovered)."""
        return frozenset(self._caches)

    async def discover(self) -> None:
        """Try to discover every issuer not yet known (rate-limited by each cache)."""
        for cache in list(self._pending):
            issuer = await cache.resolve_issuer()
            if issuer:
                self._caches.setdefault(issuer, cache)
                self._pending.remove(cache)

    async def trusts(self, issuer: str | None) -> bool:
        """Whether ``issuer`` is trusted, discovering pending issuers when it is not known."""
        return await self._cache_for(issuer) is not None

    async def _cache_for(self, issuer: str | None) -> JwksCache | None:
        if not issuer:
            return None
        found = self._caches.get(issuer)
        if found is None and self._pending:
            await self.discover()
            found = self._caches.get(issuer)
        return found

    @property
    def algorithms(self) -> tuple[str, ...]:
        return self._algorithms

    async def verify(self, token: str) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("the token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise TokenRejected(f"the token's algorithm {alg!s:.20} is not accepted")
        if self._typ and str(header.get("typ", "")).lower() != self._typ.lower():
            raise TokenRejected(f"the token type must be {self._typ}")
        issuer = unverified_issuer(token)
        cache = await self._cache_for(issuer)
        if cache is None:
            if self._pending:
                raise VerifierUnavailable(
                    "the token's issuer is not trusted by this server (the cluster's "
                    "issuer is not discovered yet)"
                )
            raise TokenRejected("the token's issuer is not trusted by this server")
        kid = header.get("kid")
        key = await cache.key(kid if isinstance(kid, str) else None)
        claims = self._decode(token, key, str(alg), cache.issuer)
        exp = claims.get("exp")
        return VerifiedToken(
            claims=claims,
            cluster=cache.config.cluster,
            scopes=scopes_of(claims),
            reusable_until=float(exp) if isinstance(exp, int | float) else None,
        )

    def _decode(self, token: str, key: jwt.PyJWK, alg: str, issuer: str) -> dict[str, Any]:
        # A JWK that names its algorithm binds it (RFC 7517 4.4); one that does not
        # may serve any allowed algorithm of its key type, which the key checks.
        declared = key._jwk_data.get("alg")
        if declared is not None and declared != alg:
            raise TokenRejected("the token's algorithm does not match its signing key")
        try:
            return jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("the token was not issued for this server (audience)") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("the token's issuer is not trusted by this server") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"the token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise TokenRejected("the token is invalid") from None
