"""Per-agent, short-lived cluster credentials: TokenRequest tokens of each agent's account.

The MCP server behind the sidecar holds no standing credential with write
access. For each upstream request the sidecar hands it a bearer token of the
*calling agent's* ServiceAccount, named in the bundle
(``agents[].clusterCredential.serviceAccount``), minted by the API server's
TokenRequest API (``POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token``)
with the sidecar's own ServiceAccount token. The cluster's RBAC on that
ServiceAccount is then the second line of defence: whatever policy let through,
the API server refuses what the agent's account may not do.

- **Per agent, cached, refreshed early**: one token per agent, kept in memory for
  ``refresh_fraction`` of its lifetime (default 0.8 of 600 s); past that point the
  cached token is still served while one background request mints the next, and
  a token closer than ``expiry_margin_s`` to its end is never sent. The hot path
  is a dictionary lookup and a clock read; only an agent's first call (or a call
  after a failed refresh let the token run out) waits for the API server.
- **Fail closed, gently**: a caller that is not authenticated, an agent without a
  ``clusterCredential``, an API server that refuses (the sidecar may create
  tokens only for the ServiceAccounts its Role names) or cannot be reached:
  :class:`~sidecar.credentials.base.CredentialUnavailable` with a fixed,
  secret-free reason; the proxy answers an error and forwards nothing. After a
  failed TokenRequest an agent's next one waits ``retry_after_s``.
- **Never shown**: tokens live in memory only, are never logged, and go only into
  the upstream request's header (``Authorization: Bearer`` by default; the client's
  own ``Authorization`` is always stripped first).

``accounts(agent)`` is read on every request, so a new bundle that adds, changes
or removes an agent's ServiceAccount takes effect at once (the cache is keyed by
agent *and* account).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import aiohttp

from palisade.bundle.schema import ClusterCredential
from sidecar.credentials import caller
from sidecar.credentials.base import MAX_CREDENTIAL_BYTES, CredentialUnavailable, check_header_name

log = logging.getLogger(__name__)

DEFAULT_SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 (a path)
DEFAULT_SA_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
MIN_EXPIRATION_S = 600
"""The API server refuses TokenRequests for less than ten minutes."""

AccountLookup = Callable[[str], ClusterCredential | None]
"""agent id -> the ServiceAccount its calls act as (None: no cluster credential)."""

_JSON_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")


@dataclass(frozen=True, slots=True)
class TokenRequestSettings:
    """How tokens are minted and sent."""

    api_server: str
    """The API server's URL (in a pod: ``https://kubernetes.default.svc``)."""
    ca_file: str | None = DEFAULT_SA_CA
    """CA bundle for the API server's TLS; None: the system's CAs."""
    token_file: str = DEFAULT_SA_TOKEN
    """The sidecar's own ServiceAccount token, re-read for every TokenRequest
    (projected tokens rotate). It needs ``create`` on ``serviceaccounts/token``
    for exactly the agents' ServiceAccounts (a Role with ``resourceNames``)."""
    expiration_s: int = MIN_EXPIRATION_S
    """Lifetime asked for (the API server may shorten it; the answer is what counts)."""
    audiences: tuple[str, ...] = ()
    """Token audiences; empty: the API server's own (what it accepts as a bearer)."""
    refresh_fraction: float = 0.8
    """Mint the next token once this fraction of the current one's lifetime has passed."""
    expiry_margin_s: float = 30.0
    """A token with less than this left is not sent (a request may take that long)."""
    header: str = "Authorization"
    scheme: str = "Bearer"
    timeout_s: float = 5.0
    retry_after_s: float = 2.0
    """After a failed TokenRequest, the next one for that agent waits this long (calls
    in between fail at once, or keep the cached token): an outage is not hammered."""

    def __post_init__(self) -> None:
        check_header_name(self.header)
        if self.expiration_s < MIN_EXPIRATION_S:
            raise ValueError(f"expiration_s must be at least {MIN_EXPIRATION_S}")
        if not 0 < self.refresh_fraction < 1:
            raise ValueError("refresh_fraction must be between 0 and 1")
        if self.expiry_margin_s >= self.expiration_s * (1 - self.refresh_fraction):
            raise ValueError("expiry_margin_s must be shorter than the time left at refresh")


class Minter(Protocol):
    """Mints one token; returns it and its lifetime in seconds. Raises
    :class:`CredentialUnavailable` with a fixed reason when it cannot."""

    async def mint(self, account: ClusterCredential) -> tuple[str, float]: ...

    async def aclose(self) -> None: ...


def refusal_reason(status: int, account: ClusterCredential) -> str:
    """What an API server's refusal of a TokenRequest means (from the status only)."""
    sa = account.service_account
    if status == 403:
        return (
            f"the API server refused to mint a token for ServiceAccount {sa} "
            "(the sidecar's ServiceAccount needs 'create' on serviceaccounts/token for it)"
        )
    if status == 404:
        return f"the API server has no ServiceAccount {sa}"
    if status == 401:
        return "the API server did not accept the sidecar's own ServiceAccount token"
    return f"the API server answered {status} to the TokenRequest for {sa}"


def parse_token_response(body: bytes, received_at_wall: float) -> tuple[str, float]:
    """The token and its lifetime (seconds from ``received_at_wall``) from a TokenRequest answer."""
    try:
        doc = json.loads(body)
        token = doc["status"]["token"]
        stamp = doc["status"]["expirationTimestamp"]
        expires = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CredentialUnavailable("the API server's TokenRequest answer is malformed") from None
    if not isinstance(token, str) or not _JSON_TOKEN.fullmatch(token):
        raise CredentialUnavailable("the API server's TokenRequest answer is malformed")
    lifetime = expires.timestamp() - received_at_wall
    if lifetime <= 0:
        raise CredentialUnavailable("the API server minted a token that has already expired")
    return token, lifetime


class ApiServerMinter:
    """TokenRequest against the API server, authenticated as the sidecar."""

    def __init__(self, settings: TokenRequestSettings, *, wall: Callable[[], float] = time.time):
        self._s = settings
        self._wall = wall
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=settings.ca_file) if settings.ca_file else True
        )

    def _own_token(self) -> str:
        try:
            raw = Path(self._s.token_file).read_bytes()[: MAX_CREDENTIAL_BYTES + 1]
        except OSError:
            raise CredentialUnavailable(
                "the sidecar's own ServiceAccount token cannot be read"
            ) from None
        token = raw.decode("utf-8", "replace").strip()
        if not token or len(raw) > MAX_CREDENTIAL_BYTES or any(c in token for c in "\r\n\0"):
            raise CredentialUnavailable("the sidecar's own ServiceAccount token is unusable")
        return token

    async def mint(self, account: ClusterCredential) -> tuple[str, float]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._s.timeout_s),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        url = (
            f"{self._s.api_server.rstrip('/')}/api/v1/namespaces/{account.namespace}"
            f"/serviceaccounts/{account.name}/token"
        )
        spec: dict[str, object] = {"expirationSeconds": self._s.expiration_s}
        if self._s.audiences:
            spec["audiences"] = list(self._s.audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        headers = {
            "Authorization": f"Bearer {self._own_token()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        try:
            async with self._session.post(url, json=body, headers=headers, ssl=self._ssl) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            raise CredentialUnavailable(
                "the API server cannot be reached to mint a cluster credential"
            ) from None
        if status != 201 and status != 200:
            raise CredentialUnavailable(refusal_reason(status, account))
        return parse_token_response(data, self._wall())

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(slots=True)
class _Cached:
    account: ClusterCredential
    value: str
    refresh_at: float
    expires_at: float


@dataclass
class _Stats:
    """Counters for tests and metrics."""

    mints: int = 0
    failures: int = 0
    by_agent: dict[str, int] = field(default_factory=dict)


class KubeTokenCredential:
    """A :class:`~sidecar.credentials.base.CredentialSource` whose value depends on the caller."""

    def __init__(
        self,
        settings: TokenRequestSettings,
        accounts: AccountLookup,
        *,
        minter: Minter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._accounts = accounts
        self._minter: Minter = minter or ApiServerMinter(settings)
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        #: agent -> (no TokenRequest before this time, why the last one failed)
        self._failed: dict[str, tuple[float, CredentialUnavailable]] = {}
        self.stats = _Stats()

    # -- the source's interface ----------------------------------------------------

    async def header(self) -> tuple[str, str]:
        principal = caller.current()
        if principal is None:
            raise CredentialUnavailable(
                "no authenticated caller: no cluster credential is sent", public=True
            )
        token = await self.token_for(principal.agent)
        s = self.settings
        return s.header, f"{s.scheme} {token}" if s.scheme else token

    async def __call__(self) -> dict[str, str]:
        name, value = await self.header()
        return {name: value}

    async def start(self) -> None:
        """Nothing to start: tokens are minted on an agent's first call."""

    async def aclose(self) -> None:
        for task in list(self._refreshing.values()):
            task.cancel()
        await asyncio.gather(*self._refreshing.values(), return_exceptions=True)
        self._refreshing.clear()
        self._cache.clear()
        await self._minter.aclose()

    # -- per agent ---------------------------------------------------------------------

    def identity_of(self, agent: str) -> str | None:
        """Who the API server sees for ``agent``'s calls (None: the agent gets no credential)."""
        account = self._accounts(agent)
        return account.username if account is not None else None

    async def token_for(self, agent: str) -> str:
        account = self._accounts(agent)
        if account is None:
            raise CredentialUnavailable(
                f"agent {agent!r} has no cluster credential "
                "(agents[].clusterCredential in the bundle); the call is not forwarded",
                public=True,
            )
        now = self._clock()
        cached = self._cache.get(agent)
        if cached is not None and cached.account == account:
            if now < cached.refresh_at:
                return cached.value
            if now < cached.expires_at - self.settings.expiry_margin_s:
                self._refresh_soon(agent, account)
                return cached.value
        lock = self._locks.setdefault(agent, asyncio.Lock())
        async with lock:  # concurrent first calls share one TokenRequest
            cached = self._cache.get(agent)
            fresh = cached is not None and self._clock() < cached.refresh_at
            if cached is not None and fresh and cached.account == account:
                return cached.value
            return await self._mint(agent, account)

    def _refresh_soon(self, agent: str, account: ClusterCredential) -> None:
        failed = self._failed.get(agent)
        if agent in self._refreshing or (failed is not None and self._clock() < failed[0]):
            return

        async def refresh() -> None:
            try:
                async with self._locks.setdefault(agent, asyncio.Lock()):
                    cached = self._cache.get(agent)
                    if cached is None or self._clock() >= cached.refresh_at:
                        await self._mint(agent, account)
            except CredentialUnavailable:
                pass  # logged in _mint; the cached token serves until its margin
            finally:
                self._refreshing.pop(agent, None)

        self._refreshing[agent] = asyncio.get_running_loop().create_task(refresh())

    async def _mint(self, agent: str, account: ClusterCredential) -> str:
        started = self._clock()
        failed = self._failed.get(agent)
        if failed is not None and started < failed[0]:
            raise failed[1]  # failed a moment ago: not asked again yet
        try:
            token, lifetime = await self._minter.mint(account)
        except CredentialUnavailable as exc:
            self._failed[agent] = (self._clock() + self.settings.retry_after_s, exc)
            self.stats.failures += 1
            log.error(
                "cannot mint the cluster credential",
                extra={"agent": agent, "service_account": account.service_account, "why": str(exc)},
            )
            stale = self._cache.get(agent)
            margin = self.settings.expiry_margin_s
            if stale is not None and self._clock() >= stale.expires_at - margin:
                del self._cache[agent]
            raise
        self._failed.pop(agent, None)
        self._cache[agent] = _Cached(
            account=account,
            value=token,
            refresh_at=started + lifetime * self.settings.refresh_fraction,
            expires_at=started + lifetime,
        )
        self.stats.mints += 1
        self.stats.by_agent[agent] = self.stats.by_agent.get(agent, 0) + 1
        log.info(
            "cluster credential minted",
            extra={
                "agent": agent,
                "service_account": account.service_account,
                "lifetime_s": round(lifetime),
            },
        )
        return token


class BundleAccounts:
    """:data:`AccountLookup` over the active bundle (``holder.snapshot.compiled.bundle``):
    each agent's ``clusterCredential``, re-indexed when a new bundle is activated."""

    def __init__(self, holder: object) -> None:
        self._holder = holder
        self._digest: str | None = None
        self._index: dict[str, ClusterCredential] = {}

    def __call__(self, agent: str) -> ClusterCredential | None:
        snap = getattr(self._holder, "snapshot", None)
        if snap is None:
            return None  # no bundle: nothing is configured, nothing is minted
        digest = getattr(snap, "digest", None)
        if digest != self._digest or digest is None:
            bundle = getattr(getattr(snap, "compiled", None), "bundle", None)
            agents = getattr(bundle, "agents", ())
            self._index = {a.id: a.cluster_credential for a in agents if a.cluster_credential}
            self._digest = digest
        return self._index.get(agent)
