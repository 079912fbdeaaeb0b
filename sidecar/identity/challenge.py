"""``WWW-Authenticate`` challenges and RFC 9728 protected-resource metadata (pure).

- RFC 6750 section 3: ``Bearer`` challenges; no ``error`` when the request had no
  credentials, ``invalid_request`` / ``invalid_token`` (401) and
  ``insufficient_scope`` (403, with ``scope``).
- RFC 9728 section 5.1: ``resource_metadata`` names the metadata document; section
  3.1: that document lives at ``/.well-known/oauth-protected-resource`` inserted
  between the host and the path of the resource identifier.
- MCP authorization (2025-06-18 onwards): 401 answers MUST carry
  ``resource_metadata``; 2025-11-25 adds ``scope`` as a hint to clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_url(resource: str) -> str:
    """The RFC 9728 metadata URL for a resource identifier (path-inserted form)."""
    parts = urlsplit(resource)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"resource must be an absolute http(s) URL, got {resource!r}")
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN + path, "", ""))


def metadata_paths(resource: str) -> tuple[str, ...]:
    """Paths a server should answer metadata on: the path-inserted one and the root one."""
    inserted = urlsplit(metadata_url(resource)).path
    return (inserted,) if inserted == WELL_KNOWN else (inserted, WELL_KNOWN)


def _quoted(value: str) -> str:
    # RFC 6750 3: error_description and scope use %x20-21 / %x23-5B / %x5D-7E only.
    cleaned = "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "'" for c in value)
    return f'"{cleaned}"'


@dataclass(frozen=True, slots=True)
class ChallengeBuilder:
    """Builds the ``WWW-Authenticate`` values for one protected resource."""

    resource_metadata: str
    scopes: Sequence[str] = field(default_factory=tuple)
    realm: str = ""

    def _build(self, error: str, description: str, scope: Sequence[str]) -> str:
        params: list[tuple[str, str]] = []
        if self.realm:
            params.append(("realm", self.realm))
        params.append(("resource_metadata", self.resource_metadata))
        if error:
            params.append(("error", error))
        if description:
            params.append(("error_description", description))
        if scope:
            params.append(("scope", " ".join(scope)))
        return "Bearer " + ", ".join(f"{k}={_quoted(v)}" for k, v in params)

    def missing(self) -> str:
        """No credentials at all: no error code (RFC 6750 3.1)."""
        return self._build("", "", self.scopes)

    def invalid_request(self, description: str) -> str:
        return self._build("invalid_request", description, ())

    def invalid_token(self, description: str) -> str:
        return self._build("invalid_token", description, ())

    def insufficient_scope(self, description: str, scope: Sequence[str] = ()) -> str:
        return self._build("insufficient_scope", description, scope or self.scopes)


def protected_resource_metadata(
    resource: str,
    authorization_servers: Sequence[str],
    *,
    scopes: Sequence[str] = (),
    algorithms: Sequence[str] = (),
    resource_name: str = "",
    documentation: str = "",
) -> dict[str, Any]:
    """The RFC 9728 section 2 document; ``resource`` must equal the URL clients dial."""
    doc: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": list(authorization_servers),
        "bearer_methods_supported": ["header"],
    }
    if scopes:
        doc["scopes_supported"] = list(scopes)
    if algorithms:
        doc["resource_signing_alg_values_supported"] = list(algorithms)
    if resource_name:
        doc["resource_name"] = resource_name
    if documentation:
        doc["resource_documentation"] = documentation
    return doc
