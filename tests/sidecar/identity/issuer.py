"""A real OAuth/OIDC issuer for tests: an aiohttp app serving discovery and JWKS.

Keys are real (Ed25519 and RSA from ``cryptography``); tokens are signed with
PyJWT. The issuer can rotate keys and counts how often its JWKS is fetched.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        if self.alg == "EdDSA":
            jwk = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
        else:
            jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        return jwk


def new_key(alg: str = "EdDSA") -> SigningKey:
    private: Any
    if alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid=uuid.uuid4().hex[:12], alg=alg, private=private)


@dataclass
class Issuer:
    """State of the running issuer; ``url`` is set once the server listens."""

    url: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    jwks_hits: int = 0
    discovery_hits: int = 0
    #: Which discovery document to serve: "oidc", "oauth" (RFC 8414) or "both".
    discovery: str = "both"
    #: When set, the metadata names another issuer (a mix-up attack).
    lie_about_issuer: bool = False
    down: bool = False

    def rotate(self, alg: str = "EdDSA") -> SigningKey:
        key = new_key(alg)
        self.keys.append(key)
        return key

    def token(
        self,
        *,
        sub: str = "sre-bot",
        aud: str | list[str] | None = None,
        key: SigningKey | None = None,
        lifetime_s: float = 300.0,
        issued_at: float | None = None,
        iss: str | None = None,
        headers: dict[str, Any] | None = None,
        omit: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        signer = key or self.keys[-1]
        now = time.time() if issued_at is None else issued_at
        payload: dict[str, Any] = {
            "iss": iss or self.url,
            "sub": sub,
            "aud": aud,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + lifetime_s),
            "jti": uuid.uuid4().hex,
            **claims,
        }
        for name in omit:
            payload.pop(name, None)
        return jwt.encode(
            payload,
            signer.private,
            algorithm=signer.alg,
            headers={"kid": signer.kid, **(headers or {})},
        )

    def app(self) -> web.Application:
        app = web.Application()

        async def metadata(request: web.Request) -> web.Response:
            if self.down:
                return web.Response(status=503)
            self.discovery_hits += 1
            kind = "oidc" if "openid" in request.path else "oauth"
            if self.discovery not in ("both", kind):
                return web.Response(status=404)
            return web.json_response(
                {
                    "issuer": "https://evil.example" if self.lie_about_issuer else self.url,
                    "jwks_uri": self.url + "/keys",
                    "token_endpoint": self.url + "/token",
                    "authorization_endpoint": self.url + "/authorize",
                }
            )

        async def keys(request: web.Request) -> web.Response:
            if self.down:
                return web.Response(status=503)
            self.jwks_hits += 1
            return web.json_response({"keys": [k.public_jwk() for k in self.keys]})

        app.router.add_get("/.well-known/openid-configuration", metadata)
        app.router.add_get("/.well-known/oauth-authorization-server", metadata)
        app.router.add_get("/keys", keys)
        return app
