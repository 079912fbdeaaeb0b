"""DNS-rebinding protection: which browser origins may call this server (pure).

The MCP Streamable HTTP transport requires servers to validate the ``Origin``
header of incoming requests. Agents that are not browsers send no ``Origin``
and are unaffected; a request that carries one must come from an allowed
origin: by default this server's own origin (from its resource URI) and the
loopback origins, plus any configured ones. ``*`` allows every origin.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


class OriginPolicy:
    """Decides whether a request's ``Origin`` header is acceptable."""

    def __init__(self, resource: str, extra: Iterable[str] = ()) -> None:
        own = urlsplit(resource)
        self._exact = {f"{own.scheme}://{own.netloc}".lower()}
        self._any = False
        for origin in extra:
            if origin.strip() == "*":
                self._any = True
            elif origin.strip():
                self._exact.add(origin.strip().rstrip("/").lower())

    def allows(self, origin: str | None) -> bool:
        if origin is None or self._any:
            return True
        value = origin.strip().rstrip("/").lower()
        if value in self._exact:
            return True
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and (parts.hostname or "") in {
            h.strip("[]") for h in LOOPBACK_HOSTS
        }
