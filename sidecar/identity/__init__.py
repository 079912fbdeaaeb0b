"""Identity for the sidecar: who is calling, verified, mapped to a bundle agent.

Public surface (the proxy uses only these names):

- :class:`Principal`: the caller (agent, tenant, on_behalf_of, subject, issuer, dev_mode).
- :class:`Authenticator`: ``await authenticate(headers) -> Principal`` and
  ``protected_resource_metadata() -> dict`` (RFC 9728).
- :class:`AuthError` -> :class:`Unauthenticated` (HTTP 401) and :class:`Forbidden`
  (HTTP 403), each with ``reason``, ``www_authenticate`` and ``status``.
- :class:`DevAuthenticator`: static token table, only when explicitly enabled.
"""

from sidecar.identity.dev import DevAgent, DevAuthenticator
from sidecar.identity.principal import (
    Authenticator,
    AuthError,
    Forbidden,
    Principal,
    Unauthenticated,
    bearer_token,
)

__all__ = [
    "AuthError",
    "Authenticator",
    "DevAgent",
    "DevAuthenticator",
    "Forbidden",
    "Principal",
    "Unauthenticated",
    "bearer_token",
]
