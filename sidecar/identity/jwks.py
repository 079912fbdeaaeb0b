"""Signing keys of a trusted issuer: discovery, JWKS fetch, cache, rotation.

For each issuer the keys come from its metadata (RFC 8414
``/.well-known/oauth-authorization-server`` or OpenID Connect discovery
``/.well-known/openid-configuration``), whose ``issuer`` must equal the configured
one (RFC 8414 section 3.3), then from its ``jwks_uri``. Keys are cached for
``ttl_s``; a token signed with an unknown ``kid`` triggers a refresh (key
rotation), but at most once per ``min_refresh_s`` so forged kids cannot make us
hammer the issuer. When a refresh fails the last good keys stay in use for up to
``max_stale_s``; with no keys at all the verifier fails closed.

The cluster's own issuer need not be known in advance (``discover_from``): it is
read from the API server's ``/.well-known/openid-configuration``, fetched over TLS
verified with the pod's CA and authenticated with the pod's own token (every
ServiceAccount may read it: the default ClusterRoleBinding
``system:service-account-issuer-discovery``). That document is trusted for its
``issuer`` only because of where it came from; the keys still come from the
configured ``jwks_uri`` (the API server's ``/openid/v1/jwks``), never from a URL
the document names, which in managed clusters is often outside the cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import jwt

from sidecar.identity.verified import VerifierUnavailable

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One trusted token issuer."""

    #: The exact ``iss`` value of its tokens.
    issuer: str
    #: Skip discovery and take keys from here (e.g. a cluster's ``/openid/v1/jwks``).
    jwks_uri: str = ""
    #: The issuer is the Kubernetes cluster itself: its ServiceAccount subjects map
    #: to ``serviceAccount`` identities of the bundle.
    cluster: bool = False
    #: CA bundle for the issuer's TLS certificate (default: system trust store).
    ca_file: str = ""
    #: A file holding a bearer token for fetching metadata and keys (some API
    #: servers do not serve discovery anonymously). Re-read at every fetch.
    fetch_token_file: str = ""
    #: The issuer is not known in advance: read it from this OpenID configuration
    #: document (the API server's ``/.well-known/openid-configuration``) and trust
    #: the ``issuer`` it names. ``issuer`` stays empty; ``jwks_uri`` is required.
    discover_from: str = ""

    def __post_init__(self) -> None:
        if self.discover_from and (self.issuer or not self.jwks_uri):
            raise ValueError("a discovered issuer needs a jwks_uri and no fixed issuer")
        if not self.discover_from and not self.issuer:
            raise ValueError("an issuer needs its iss value or a discovery document")


def issuer_from_configuration(doc: Mapping[str, Any]) -> str:
    """The ``issuer`` an OpenID configuration document names (checked, not trusted blindly:
    only a document fetched from the authenticated API server is given to this)."""
    issuer = doc.get("issuer")
    if not isinstance(issuer, str) or not issuer or len(issuer) > 2048:
        raise ValueError("the OpenID configuration names no issuer")
    if any(c.isspace() for c in issuer) or not issuer.isprintable():
        raise ValueError("the OpenID configuration names a malformed issuer")
    return issuer


def discovery_urls(issuer: str) -> list[str]:
    """Metadata URLs to try, in the order the MCP authorization spec (2025-11-25) gives."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")

    def at(p: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, p, "", ""))

    if not path:
        return [
            at("/.well-known/oauth-authorization-server"),
            at("/.well-known/openid-configuration"),
        ]
    return [
        at("/.well-known/oauth-authorization-server" + path),
        at("/.well-known/openid-configuration" + path),
        at(path + "/.well-known/openid-configuration"),
    ]


class JwksCache:
    """The keys of one issuer, fetched lazily and refreshed on rotation."""

    def __init__(
        self,
        config: IssuerConfig,
        session: aiohttp.ClientSession,
        *,
        ttl_s: float = 300.0,
        min_refresh_s: float = 10.0,
        max_stale_s: float = 86400.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._session = session
        self._ttl = ttl_s
        self._min_refresh = min_refresh_s
        self._max_stale = max_stale_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._unnamed: list[jwt.PyJWK] = []
        self._jwks_uri = config.jwks_uri
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._last_discovery: float | None = None
        #: The ``iss`` this cache verifies: configured, or discovered (empty until then).
        self.issuer = config.issuer
        self._lock = asyncio.Lock()
        self._ssl: ssl.SSLContext | bool = True
        if config.ca_file:
            self._ssl = ssl.create_default_context(cafile=config.ca_file)
        #: Number of successful JWKS fetches (for tests and metrics).
        self.fetches = 0

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """The key for ``kid``; raises VerifierUnavailable when none can be found."""
        if self._fetched_at is None or self._clock() - self._fetched_at > self._ttl:
            await self._refresh()
        found = self._find(kid)
        if found is None:
            await self._refresh()  # perhaps the issuer rotated its keys
            found = self._find(kid)
        if found is None:
            if self._fetched_at is None:
                raise VerifierUnavailable("the issuer's signing keys are unavailable")
            raise VerifierUnavailable("the token's signing key is not one of the issuer's keys")
        return found

    async def resolve_issuer(self) -> str:
        """The issuer, discovering it first when needed; "" while it cannot be read.

        At most one discovery per ``min_refresh_s``, like key fetches, so tokens of
        unknown issuers cannot make the sidecar hammer the API server.
        """
        if self.issuer or not self.config.discover_from:
            return self.issuer
        async with self._lock:
            now = self._clock()
            if self.issuer or (
                self._last_discovery is not None and now - self._last_discovery < self._min_refresh
            ):
                return self.issuer
            self._last_discovery = now
            url = self.config.discover_from
            try:
                self.issuer = issuer_from_configuration(await self._get_json(url))
            except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
                status = getattr(exc, "status", None)
                log.warning(
                    "cannot discover the cluster's token issuer from %s (%s%s); retrying later",
                    url,
                    type(exc).__name__,
                    f" {status}" if status else "",
                    extra={"url": url, "error": str(exc), "status": status},
                )
                return ""
        log.info("cluster token issuer discovered", extra={"issuer": self.issuer, "url": url})
        return self.issuer

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if self._fetched_at is None or self._clock() - self._fetched_at > self._max_stale:
            return None
        if kid is not None:
            return self._keys.get(kid)
        candidates = [*self._keys.values(), *self._unnamed]
        return candidates[0] if len(candidates) == 1 else None

    async def _refresh(self) -> None:
        async with self._lock:
            # At most one fetch per min_refresh_s, whatever asks for it (TTL, unknown
            # kid, many tasks at once): forged kids cannot make us hammer the issuer.
            now = self._clock()
            if self._last_attempt is not None and now - self._last_attempt < self._min_refresh:
                return
            self._last_attempt = now
            try:
                if not self._jwks_uri:
                    self._jwks_uri = await self._discover()
                document = await self._get_json(self._jwks_uri)
                self._install(document)
            except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
                log.warning(
                    "jwks refresh for %s failed (%s); keeping the last good keys while fresh",
                    self.issuer,
                    exc,
                    extra={"issuer": self.issuer, "error": str(exc)},
                )

    def _install(self, document: Mapping[str, Any]) -> None:
        raw_keys = document.get("keys")
        if not isinstance(raw_keys, list):
            raise ValueError("JWKS document has no keys list")
        keys: dict[str, jwt.PyJWK] = {}
        unnamed: list[jwt.PyJWK] = []
        for raw in raw_keys:
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(raw)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue  # an algorithm we do not support; other keys may still serve
            kid = raw.get("kid")
            if isinstance(kid, str) and kid:
                keys[kid] = key
            else:
                unnamed.append(key)
        if not keys and not unnamed:
            raise ValueError("JWKS document has no usable signing keys")
        self._keys, self._unnamed = keys, unnamed
        self._fetched_at = self._clock()
        self.fetches += 1
        log.info(
            "jwks loaded",
            extra={"issuer": self.issuer, "kids": sorted(keys), "count": len(keys)},
        )

    async def _discover(self) -> str:
        last: Exception | None = None
        for url in discovery_urls(self.config.issuer):
            try:
                meta = await self._get_json(url)
            except (aiohttp.ClientResponseError, ValueError) as exc:
                last = exc
                continue
            if meta.get("issuer") != self.config.issuer:
                raise ValueError(f"metadata at {url} names another issuer")
            uri = meta.get("jwks_uri")
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                raise ValueError(f"metadata at {url} has no jwks_uri")
            return uri
        raise ValueError(f"no authorization server metadata for {self.config.issuer}: {last}")

    async def _get_json(self, url: str) -> dict[str, Any]:
        headers = {"Accept": "application/json, application/jwk-set+json"}
        if self.config.fetch_token_file:
            token = await asyncio.to_thread(_read_text, self.config.fetch_token_file)
            headers["Authorization"] = "Bearer " + token.strip()
        async with self._session.get(
            url, headers=headers, timeout=self._timeout, ssl=self._ssl, allow_redirects=False
        ) as resp:
            resp.raise_for_status()
            body = await resp.content.read(MAX_DOCUMENT_BYTES + 1)
            if len(body) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"document at {url} is larger than {MAX_DOCUMENT_BYTES} bytes")
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ValueError(f"document at {url} is not a JSON object")
        return doc


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()
