"""Identity for the sidecar: who is calling, verified, mapped to a bundle agent.

Public surface (the proxy uses only these names):

- :class:`Principal`: the caller (agent, tenant, on_behalf_of, subject, issuer, dev_mode,
  delegation: the RFC 8693 act chain, every hop mapped within the signing issuer).
- :class:`Authenticator`: ``await authenticate(headers) -> Principal`` and
  ``protected_resource_metadata() -> dict`` (RFC 9728).
- :class:`AuthError` -> :class:`Unauthenticated` (HTTP 401) and :class:`Forbidden`
  (HTTP 403), each with ``reason``, ``www_authenticate`` and ``status``.
- :class:`ResourceServer`: the OAuth 2.1 resource server (JWT via JWKS, TokenReview).
- :class:`DevAuthenticator`: static token table, only when explicitly enabled.
- :class:`IdentitySettings` + :class:`IdentityStack`: build one from settings.
- :class:`IdentityMap`: bundle ``spec.agents[].identities`` -> agents.
- :func:`metadata_paths`: where to serve ``/.well-known/oauth-protected-resource``.
- :func:`in_cluster_issuer`: the cluster's own ServiceAccount issuer, seen from a pod.
- :func:`discovered_cluster_issuer`: the same, its ``iss`` discovered from the API server.
"""

from sidecar.identity.challenge import metadata_paths, metadata_url
from sidecar.identity.dev import DevAgent, DevAuthenticator
from sidecar.identity.jwks import IssuerConfig
from sidecar.identity.mapping import IdentityMap, MappingError
from sidecar.identity.principal import (
    Authenticator,
    AuthError,
    Forbidden,
    Principal,
    Unauthenticated,
    bearer_token,
)
from sidecar.identity.resource_server import ResourceServer
from sidecar.identity.stack import (
    IdentitySettings,
    IdentityStack,
    TokenReviewSettings,
    discovered_cluster_issuer,
    in_cluster_issuer,
)

__all__ = [
    "AuthError",
    "Authenticator",
    "DevAgent",
    "DevAuthenticator",
    "Forbidden",
    "IdentityMap",
    "IdentitySettings",
    "IdentityStack",
    "IssuerConfig",
    "MappingError",
    "Principal",
    "ResourceServer",
    "TokenReviewSettings",
    "Unauthenticated",
    "bearer_token",
    "discovered_cluster_issuer",
    "in_cluster_issuer",
    "metadata_paths",
    "metadata_url",
]
