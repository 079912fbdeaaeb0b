"""What every upstream credential source is, and how its header replaces the client's.

The client's ``Authorization`` (and ``Proxy-Authorization``) header is *always*
removed before a request goes upstream: the agent's token is for the sidecar
(audience = this server) and must never reach the MCP server. When the upstream
needs a credential of its own, a :class:`CredentialSource` supplies it.

A source fails closed: without a usable value it raises
:class:`CredentialUnavailable` (with a short, secret-free reason) and the proxy
answers an error instead of forwarding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

#: Headers that carry the client's own credentials; never forwarded upstream.
CLIENT_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})

MAX_CREDENTIAL_BYTES = 64 * 1024


class CredentialUnavailable(Exception):
    """The upstream credential cannot be had; the call must not be forwarded.

    The message never holds a value. It is shown to the client only when ``public``
    (it then names what the caller lacks, e.g. an agent without a cluster
    credential); otherwise the client reads the exception's type and the reason is
    in the sidecar's log."""

    def __init__(self, reason: str = "", *, public: bool = False) -> None:
        super().__init__(reason)
        self.public = public


@runtime_checkable
class CredentialSource(Protocol):
    """One interface for every source (file, Vault, Kubernetes TokenRequest).

    ``header()`` gives the header to add to an upstream request, or None for no
    credential; ``__call__`` the same as a mapping (what
    :class:`sidecar.upstream.Upstream` takes). ``start``/``aclose`` run the
    source's background work, if it has any; both are safe to call on any source.
    A source whose value depends on the caller reads it from
    :mod:`sidecar.credentials.caller`.
    """

    async def header(self) -> tuple[str, str] | None: ...

    async def __call__(self) -> dict[str, str]: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def check_header_name(header: str) -> str:
    if not header or any(c in header for c in " :\r\n"):
        raise ValueError(f"not a valid header name: {header!r}")
    return header


class NoCredential:
    """The upstream needs no credential (the client's is still stripped)."""

    async def header(self) -> tuple[str, str] | None:
        return None

    async def __call__(self) -> dict[str, str]:
        return {}

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def strip_client_credentials(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's headers without any that carry its own credentials."""
    return [(k, v) for k, v in headers if k.lower() not in CLIENT_CREDENTIAL_HEADERS]


async def upstream_headers(
    client_headers: Mapping[str, str] | Iterable[tuple[str, str]],
    source: CredentialSource | NoCredential,
) -> list[tuple[str, str]]:
    """Client headers minus its credentials, plus the upstream credential (if any)."""
    pairs = client_headers.items() if isinstance(client_headers, Mapping) else client_headers
    out = strip_client_credentials(pairs)
    added = await source.header()
    if added is not None:
        name = added[0].lower()
        out = [(k, v) for k, v in out if k.lower() != name]
        out.append(added)
    return out
