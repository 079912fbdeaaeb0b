"""The upstream credential the sidecar sends in place of the client's token.

The client's ``Authorization`` (and ``Proxy-Authorization``) header is *always*
removed before a request goes upstream: the agent's token is for the sidecar
(audience = this server) and must never reach the MCP server. When the upstream
needs a credential of its own, a :class:`CredentialSource` supplies it.

:class:`FileCredential` reads it from a file, typically a key of a mounted
Kubernetes Secret. The kubelet updates such mounts by swapping a symlink, so the
file's identity (inode, size, mtime) is checked at most every ``check_interval_s``
and the value re-read when it changed; the hot path is a clock read. A missing,
empty or oversized file fails closed with :class:`CredentialUnavailable`: the
proxy must answer an error rather than forward without the credential.

Vault / OpenBao (KV v2 via hvac) is the other source, in
:mod:`sidecar.credentials_vault`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

#: Headers that carry the client's own credentials; never forwarded upstream.
CLIENT_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})

MAX_CREDENTIAL_BYTES = 64 * 1024


class CredentialUnavailable(Exception):
    """The upstream credential cannot be read; the call must not be forwarded."""


class CredentialSource(Protocol):
    """Gives the header to add to upstream requests, or None for no credential."""

    async def header(self) -> tuple[str, str] | None: ...


class NoCredential:
    """The upstream needs no credential (the client's is still stripped)."""

    async def header(self) -> tuple[str, str] | None:
        return None

    async def __call__(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True, slots=True)
class _Stamp:
    inode: int
    size: int
    mtime_ns: int


class FileCredential:
    """A credential read from a file and re-read when the file changes."""

    def __init__(
        self,
        path: str,
        *,
        header: str = "Authorization",
        scheme: str = "Bearer",
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not header or any(c in header for c in " :\r\n"):
            raise ValueError(f"not a valid header name: {header!r}")
        self.path = path
        self._header = header
        self._scheme = scheme
        self._interval = check_interval_s
        self._clock = clock
        self._stamp: _Stamp | None = None
        self._value: str | None = None
        self._checked_at: float | None = None
        #: How many times the file was (re-)read, for tests and metrics.
        self.loads = 0

    async def header(self) -> tuple[str, str]:
        return self._header, self.current()

    async def __call__(self) -> dict[str, str]:
        """The headers to add, as :class:`sidecar.upstream.Upstream` takes them."""
        return {self._header: self.current()}

    def current(self) -> str:
        """The header value; re-reads the file when its identity changed."""
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self._interval:
            self._checked_at = now
            self._reload_if_changed()
        if self._value is None:
            raise CredentialUnavailable(f"the upstream credential file {self.path} is unusable")
        return self._value

    def _reload_if_changed(self) -> None:
        try:
            st = os.stat(self.path)  # follows the Secret mount's ..data symlink
        except OSError as exc:
            self._fail(f"cannot stat: {exc.strerror}")
            return
        stamp = _Stamp(st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp and self._value is not None:
            return
        if st.st_size > MAX_CREDENTIAL_BYTES:
            self._fail(f"larger than {MAX_CREDENTIAL_BYTES} bytes")
            return
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(MAX_CREDENTIAL_BYTES + 1)
        except OSError as exc:
            self._fail(f"cannot read: {exc.strerror}")
            return
        try:
            secret = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            secret = ""
        if not secret or any(c in secret for c in "\r\n\0"):
            self._fail("empty or not a single line")
            return
        self._stamp = stamp
        self._value = f"{self._scheme} {secret}" if self._scheme else secret
        self.loads += 1
        log.info("upstream credential loaded", extra={"path": self.path, "loads": self.loads})

    def _fail(self, why: str) -> None:
        if self._value is not None or self._stamp is None:
            log.error("upstream credential unusable", extra={"path": self.path, "why": why})
        self._value = None
        self._stamp = None


def strip_client_credentials(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's headers without any that carry its own credentials."""
    return [(k, v) for k, v in headers if k.lower() not in CLIENT_CREDENTIAL_HEADERS]


async def upstream_headers(
    client_headers: Mapping[str, str] | Iterable[tuple[str, str]],
    source: CredentialSource,
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
