"""The connection to the upstream MCP server: one pooled aiohttp client, injectable.

:class:`Upstream` is the proxy's only way out. It never forwards the client's
``Authorization``; the headers it adds come from ``credentials`` (a callable the
credentials module provides: Vault, a Kubernetes Secret, or nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import aiohttp

from sidecar.credentials.base import CredentialUnavailable

CredentialSource = Callable[[], Awaitable[Mapping[str, str]]]


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer in time."""

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout


class Upstream:
    """Pooled HTTP client for ``base_url`` (``http://127.0.0.1:PORT``)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        pool_size: int = 256,
        credentials: CredentialSource | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._pool_size = pool_size
        self._credentials = credentials
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, keepalive_timeout=30, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # One client serves every agent: cookies an upstream sets must not be
                # kept and sent with other agents' requests (and none are parsed)
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout_s),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                # Reading from an upstream pauses once 32 KiB wait unread (default 128
                # KiB): under load, answers that arrived before their handler ran
                # stay in the kernel's socket buffers instead of this process's heap
                read_bufsize=2**14,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request; yields the response once its headers arrived (within the timeout)."""
        if self._session is None:
            raise UpstreamError("upstream client is not started")
        out = dict(headers)
        if self._credentials is not None:
            try:
                out.update(await self._credentials())
            except CredentialUnavailable as exc:
                if not exc.public:  # its reason is in the sidecar's log, not for the client
                    raise UpstreamError(
                        "the upstream credential is unavailable (CredentialUnavailable)"
                    ) from None
                raise UpstreamError(f"the upstream credential is unavailable: {exc}") from None
            except Exception as exc:  # fail closed: never forward without the credential
                raise UpstreamError(
                    f"the upstream credential is unavailable ({type(exc).__name__})"
                ) from None
        try:
            async with asyncio.timeout(self._timeout_s):
                resp = await self._session.request(
                    method, self.base_url + path_qs, headers=out, data=body, allow_redirects=False
                )
        except TimeoutError:
            raise UpstreamError(
                f"the upstream did not answer within {self._timeout_s:g}s", timeout=True
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"the upstream is unreachable ({type(exc).__name__})") from None
        try:
            yield resp
        finally:
            resp.release()

    async def answers(self, path: str, timeout_s: float = 1.0) -> bool:
        """True when the upstream answers HTTP at all on ``path`` (any status)."""
        if self._session is None:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.request(
                    "GET", self.base_url + path, headers={"Accept": "text/event-stream"}
                ) as resp:
                    return resp.status < 500
        except (TimeoutError, aiohttp.ClientError):
            return False
