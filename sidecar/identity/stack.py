"""Wiring: settings in, a ready :class:`Authenticator` out, with its HTTP client owned.

The sidecar's entry point builds :class:`IdentitySettings` from flags and env and
enters :class:`IdentityStack`; nothing here reads the environment.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp

from sidecar.identity.dev import DevAgent, DevAuthenticator
from sidecar.identity.jwks import IssuerConfig, JwksCache
from sidecar.identity.jwt_verifier import DEFAULT_ALGORITHMS, JwtVerifier
from sidecar.identity.mapping import IdentityMap
from sidecar.identity.principal import Authenticator
from sidecar.identity.resource_server import ResourceServer
from sidecar.identity.tokenreview import TokenReviewer, file_credential

log = logging.getLogger(__name__)

SA_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 (a path)
SA_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
#: The API server as every pod reaches it.
IN_CLUSTER_API = "https://kubernetes.default.svc"


def in_cluster_issuer(issuer: str, jwks_uri: str = "") -> IssuerConfig:
    """The cluster's own ServiceAccount issuer, read from inside a pod.

    Its keys are fetched from the API server (default
    ``https://kubernetes.default.svc/openid/v1/jwks``) with the pod's CA bundle and
    its own token, since API servers rarely serve discovery anonymously.
    """
    return IssuerConfig(
        issuer=issuer,
        jwks_uri=jwks_uri or "https://kubernetes.default.svc/openid/v1/jwks",
        cluster=True,
        ca_file=SA_CA_FILE,
        fetch_token_file=SA_TOKEN_FILE,
    )


def discovered_cluster_issuer(
    api_server: str = IN_CLUSTER_API,
    *,
    token_file: str = SA_TOKEN_FILE,
    ca_file: str = SA_CA_FILE,
) -> IssuerConfig:
    """The cluster's own ServiceAccount issuer, whatever its ``iss`` is.

    The issuer is read at run time from ``<api>/.well-known/openid-configuration``
    and the keys from ``<api>/openid/v1/jwks``, both with the pod's CA and token:
    the default ClusterRoleBinding ``system:service-account-issuer-discovery``
    grants every ServiceAccount ``get`` on exactly those URLs, so no RBAC is added.
    """
    base = api_server.rstrip("/")
    return IssuerConfig(
        issuer="",
        jwks_uri=base + "/openid/v1/jwks",
        cluster=True,
        ca_file=ca_file,
        fetch_token_file=token_file,
        discover_from=base + "/.well-known/openid-configuration",
    )


@dataclass(frozen=True, slots=True)
class TokenReviewSettings:
    """Verify ServiceAccount tokens with the cluster's TokenReview API."""

    #: API server base URL, e.g. ``https://kubernetes.default.svc``.
    api_server: str
    #: The sidecar's own token, allowed to create TokenReviews (re-read on every call).
    token_file: str = SA_TOKEN_FILE
    #: CA bundle of the API server.
    ca_file: str = SA_CA_FILE
    #: How long a successful review is trusted without asking again.
    cache_ttl_s: float = 10.0


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """Everything identity needs; one frozen object built by the entry point."""

    #: This server's resource URI: the audience tokens must carry, and RFC 9728 ``resource``.
    resource: str
    #: Other URIs this same server is reached by (e.g. its in-cluster Service URL as
    #: well as its public one); a token for any of them is accepted.
    extra_audiences: tuple[str, ...] = ()
    #: When set, the audiences accepted instead of ``resource`` (with ``extra_audiences``):
    #: in a pod the injector gives a per-server value such as
    #: ``palisade.dev/mcp/<namespace>/<server>``, which no other server accepts.
    audiences: tuple[str, ...] = ()
    #: Trusted issuers whose JWTs are verified with their published keys.
    issuers: tuple[IssuerConfig, ...] = ()
    #: ServiceAccount tokens verified by TokenReview, or None.
    token_review: TokenReviewSettings | None = None
    #: Accepted JWS algorithms (asymmetric only).
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    #: Clock skew tolerated on exp/nbf/iat, seconds.
    leeway_s: float = 30.0
    #: Scopes every token must carry (also advertised in metadata and challenges).
    required_scopes: tuple[str, ...] = ()
    #: Required JWT ``typ`` header (e.g. ``at+jwt`` for RFC 9068 tokens); empty: any.
    required_typ: str = ""
    #: Keys are re-fetched after this many seconds.
    jwks_ttl_s: float = 300.0
    #: At most one key fetch per issuer per this many seconds (unknown kids, outages).
    jwks_min_refresh_s: float = 10.0
    #: Timeout of every call to an issuer or the API server.
    http_timeout_s: float = 5.0
    #: Authorization servers to advertise; default: the trusted issuers.
    authorization_servers: tuple[str, ...] = ()
    #: Browser origins allowed besides this server's own and loopback ("*": any).
    allowed_origins: tuple[str, ...] = ()
    #: Development mode: static tokens, NOT verified. Must be set explicitly.
    dev_mode: bool = False
    dev_tokens: Mapping[str, DevAgent] = field(default_factory=dict)


def accepted_audiences(s: IdentitySettings) -> tuple[str, ...]:
    """The ``aud`` values a token may carry for this server."""
    return (*(s.audiences or (s.resource,)), *s.extra_audiences)


class IdentityStack:
    """Owns the HTTP client of the verifiers; ``async with`` it for the daemon's lifetime."""

    def __init__(self, settings: IdentitySettings, identities: IdentityMap) -> None:
        self.settings = settings
        self._identities = identities
        self._session: aiohttp.ClientSession | None = None
        self.authenticator: Authenticator | None = None

    async def __aenter__(self) -> IdentityStack:
        s = self.settings
        if s.dev_mode:
            self.authenticator = DevAuthenticator(
                s.dev_tokens, resource=s.resource, enabled=True, allowed_origins=s.allowed_origins
            )
            return self
        if not s.issuers and s.token_review is None:
            raise ValueError(
                "identity needs at least one trusted issuer or TokenReview "
                "(or development mode, explicitly enabled)"
            )
        self._session = aiohttp.ClientSession()
        jwt_verifier = None
        if s.issuers:
            caches = [
                JwksCache(
                    cfg,
                    self._session,
                    ttl_s=s.jwks_ttl_s,
                    min_refresh_s=s.jwks_min_refresh_s,
                    timeout_s=s.http_timeout_s,
                )
                for cfg in s.issuers
            ]
            jwt_verifier = JwtVerifier(
                caches,
                audience=accepted_audiences(s),
                algorithms=s.algorithms,
                leeway_s=s.leeway_s,
                required_typ=s.required_typ,
            )
        reviewer = None
        if s.token_review is not None:
            tr = s.token_review
            reviewer = TokenReviewer(
                self._session,
                api_server=tr.api_server,
                audience=accepted_audiences(s),
                credential=file_credential(tr.token_file),
                ca_file=tr.ca_file,
                timeout_s=s.http_timeout_s,
                cache_ttl_s=tr.cache_ttl_s,
            )
        self.authenticator = ResourceServer(
            resource=s.resource,
            identities=self._identities,
            jwt=jwt_verifier,
            token_review=reviewer,
            authorization_servers=s.authorization_servers,
            required_scopes=s.required_scopes,
            allowed_origins=s.allowed_origins,
        )
        if jwt_verifier is not None:
            # Best effort, so the log shows the cluster's issuer at start; a failure is
            # retried on the first token that names an unknown issuer.
            await jwt_verifier.discover()
        return self

    def update_identities(self, identities: IdentityMap) -> None:
        """Call on every bundle activation."""
        self._identities = identities
        if isinstance(self.authenticator, ResourceServer):
            self.authenticator.update_identities(identities)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
