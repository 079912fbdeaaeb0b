"""The upstream credential read from Vault (or OpenBao): KV v2, cached in memory.

:class:`VaultCredential` is a :class:`sidecar.credentials.CredentialSource` beside
:class:`~sidecar.credentials.FileCredential` (the old import path
``sidecar.credentials_vault`` names this same module). It reads one field of one KV v2
secret with hvac and hands the proxy the cached value; the proxy's hot path never
waits for Vault. A background task re-reads the secret every
``refresh_interval_s`` (so a rotated secret is picked up), renews or re-acquires
its own Vault token before that token's TTL ends, and retries with capped,
jittered backoff when Vault fails.

Authentication, :data:`VaultAuth`:

- :class:`TokenFileAuth`: a token in a file (e.g. written by an agent or a
  mounted Secret), re-read whenever a new token is needed, renewed when renewable;
- :class:`KubernetesAuth`: Vault's Kubernetes auth method with the pod's
  ServiceAccount token (re-read at each login: projected tokens rotate) and a role.

Failing closed. A cached credential is served until ``expires_at``: the time of
the last successful read plus the secret's lease, or ``max_stale_s`` when it has
none (KV v2 secrets have none). Failures are of two kinds:

- *transient* (Vault unreachable, timing out, sealed, 5xx, rate limited, a token
  file that cannot be read): the cached value stays usable until it expires;
- *authoritative* (Vault answered that the secret or field is gone, or refused a
  freshly acquired token): the cached value is dropped at once.

Without a usable value, :meth:`VaultCredential.current` raises
:class:`~sidecar.credentials.CredentialUnavailable` with a short reason; the
proxy refuses the call and nothing is forwarded. Neither the credential nor any
Vault token is ever logged or put in an error: errors are translated from hvac's
exceptions to fixed texts in :func:`classify`, never from their messages.

hvac is synchronous; every Vault request runs in a worker thread
(``asyncio.to_thread``), one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions as hvac_errors

from sidecar.credentials.base import MAX_CREDENTIAL_BYTES, CredentialUnavailable

# the name it logged under before it moved into sidecar/credentials/
log = logging.getLogger("sidecar.credentials_vault")

DEFAULT_SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105


@dataclass(frozen=True, slots=True)
class TokenFileAuth:
    """Authenticate with the Vault token held in ``path``."""

    path: str


@dataclass(frozen=True, slots=True)
class KubernetesAuth:
    """Vault's Kubernetes auth method: the pod's ServiceAccount token and a role."""

    role: str
    #: Where the auth method is mounted in Vault.
    mount: str = "kubernetes"
    #: The ServiceAccount token file (a projected volume rotates it).
    token_path: str = DEFAULT_SA_TOKEN


VaultAuth = TokenFileAuth | KubernetesAuth


@dataclass(frozen=True, slots=True)
class VaultSettings:
    """Where the upstream credential lives in Vault and how it is kept fresh."""

    #: Vault's address, e.g. ``https://vault.vault.svc:8200``.
    addr: str
    #: The secret's path inside the KV v2 mount, e.g. ``mcp/kubernetes``.
    secret_path: str
    #: The field of the secret's data that holds the credential.
    field: str
    auth: VaultAuth
    #: Where the KV v2 engine is mounted.
    mount: str = "secret"
    #: The upstream header and scheme (``Authorization: Bearer <value>``); empty scheme: raw value.
    header: str = "Authorization"
    scheme: str = "Bearer"
    #: CA bundle for Vault's TLS certificate (None: the system's).
    ca_file: str | None = None
    #: Vault Enterprise / OpenBao namespace.
    namespace: str | None = None
    #: How often the secret is re-read while all is well.
    refresh_interval_s: float = 30.0
    #: How long a value read from a secret without a lease stays usable without a fresh read.
    max_stale_s: float = 300.0
    #: Timeout of each HTTP request to Vault.
    request_timeout_s: float = 5.0
    #: Backoff between failed attempts: from ``retry_min_s`` doubling to ``retry_max_s``.
    retry_min_s: float = 0.5
    retry_max_s: float = 15.0

    def __post_init__(self) -> None:
        if not self.addr.startswith(("http://", "https://")):
            raise ValueError(f"the Vault address must be an http(s) URL, not {self.addr!r}")
        if not self.secret_path.strip("/") or not self.field:
            raise ValueError("a Vault secret path and field are required")
        if not self.header or any(c in self.header for c in " :\r\n"):
            raise ValueError(f"not a valid header name: {self.header!r}")
        if isinstance(self.auth, KubernetesAuth) and not self.auth.role:
            raise ValueError("Kubernetes auth needs a Vault role")
        if not 0 < self.refresh_interval_s < self.max_stale_s:
            raise ValueError("refresh_interval_s must be positive and below max_stale_s")
        if not 0 < self.retry_min_s <= self.retry_max_s:
            raise ValueError("need 0 < retry_min_s <= retry_max_s")


class VaultState(enum.Enum):
    """Where the credential stands; readiness and tests read it."""

    STARTING = "starting"  # no answer from Vault yet
    OK = "ok"  # the last read succeeded
    STALE = "stale"  # Vault is failing; a cached value is served until it expires
    FAILED = "failed"  # no usable value: calls are refused


# --- pure decisions -------------------------------------------------------------------


class VaultFailure(Exception):
    """One attempt failed; ``reason`` is safe to show, ``drop`` discards the cached value."""

    def __init__(self, reason: str, *, drop: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.drop = drop


def classify(exc: BaseException) -> VaultFailure:
    """Translate an exception of hvac or requests into a secret-free failure.

    Only the exception's type is used, never its message: messages may carry
    URLs, headers or server text that nobody checked for secrets. A refusal is
    authoritative: :meth:`_VaultIO.read` has already retried with a fresh token.
    """
    if isinstance(exc, VaultFailure):
        return exc
    if isinstance(exc, hvac_errors.Forbidden | hvac_errors.Unauthorized):
        return VaultFailure("Vault refused the sidecar's token (permission denied)", drop=True)
    if isinstance(exc, hvac_errors.InvalidPath):
        return VaultFailure("Vault has no such secret (or it was deleted)", drop=True)
    if isinstance(exc, hvac_errors.InvalidRequest):
        return VaultFailure("Vault rejected the request (check the role and auth mount)", drop=True)
    if isinstance(exc, hvac_errors.VaultDown | hvac_errors.VaultNotInitialized):
        return VaultFailure("Vault is sealed or not initialised", drop=False)
    if isinstance(exc, hvac_errors.RateLimitExceeded):
        return VaultFailure("Vault is rate limiting the sidecar", drop=False)
    if isinstance(exc, hvac_errors.VaultError):
        return VaultFailure(f"Vault answered with an error ({type(exc).__name__})", drop=False)
    if isinstance(exc, TimeoutError):
        return VaultFailure("Vault did not answer in time", drop=False)
    # requests' exceptions are OSErrors (RequestException derives from IOError).
    if isinstance(exc, OSError):
        return VaultFailure("Vault is unreachable", drop=False)
    return VaultFailure(f"unexpected error talking to Vault ({type(exc).__name__})", drop=False)


def extract_credential(response: Any, field_name: str) -> tuple[str, int]:
    """The field's value and the secret's version from a KV v2 read, or a failure."""
    try:
        data = response["data"]["data"]
        version = int((response["data"].get("metadata") or {}).get("version") or 0)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise VaultFailure("Vault's answer is not a KV v2 secret", drop=True) from None
    if not isinstance(data, dict) or field_name not in data:
        raise VaultFailure(f"the Vault secret has no field {field_name!r}", drop=True)
    value = data[field_name]
    if not isinstance(value, str):
        raise VaultFailure(f"the Vault secret's field {field_name!r} is not a string", drop=True)
    value = value.strip()
    if not value or any(c in value for c in "\r\n\0"):
        raise VaultFailure(
            f"the Vault secret's field {field_name!r} is empty or not a single line", drop=True
        )
    if len(value.encode()) > MAX_CREDENTIAL_BYTES:
        raise VaultFailure(
            f"the Vault secret's field {field_name!r} is larger than {MAX_CREDENTIAL_BYTES} bytes",
            drop=True,
        )
    return value, version


def value_expiry(read_at: float, lease_s: float, max_stale_s: float) -> float:
    """Until when a value read at ``read_at`` may be served: its lease, else ``max_stale_s``."""
    return read_at + (lease_s if lease_s > 0 else max_stale_s)


def token_renew_at(obtained_at: float, ttl_s: float) -> float | None:
    """When to renew (or re-acquire) a token of ``ttl_s``: two thirds in; None: never expires."""
    return obtained_at + ttl_s * 2 / 3 if ttl_s > 0 else None


def next_delay(
    *,
    now: float,
    settings: VaultSettings,
    failures: int,
    renew_at: float | None,
    expires_at: float | None,
    jitter: float,
) -> float:
    """Seconds until the next attempt.

    After a success: the refresh interval, earlier if the token is due for renewal
    or the value would expire before. After ``failures`` consecutive failures:
    exponential backoff from ``retry_min_s`` capped at ``retry_max_s``, scaled by
    ``jitter`` (0.5..1.0) so a fleet of sidecars does not retry in step.
    """
    if failures > 0:
        base = min(settings.retry_max_s, settings.retry_min_s * 2.0 ** min(failures - 1, 30))
        return max(0.05, base * jitter)
    delay = settings.refresh_interval_s
    if renew_at is not None:
        delay = min(delay, renew_at - now)
    if expires_at is not None:  # a short lease: re-read two thirds of the way to its end
        delay = min(delay, (expires_at - now) * 2 / 3)
    return max(0.05, delay)


# --- I/O: hvac in a worker thread -------------------------------------------------------


@dataclass(slots=True)
class _Read:
    value: str
    version: int
    lease_s: float


@dataclass(slots=True)
class _Token:
    obtained_at: float
    ttl_s: float
    renewable: bool
    renew_at: float | None = field(default=None)


class _VaultIO:
    """The synchronous Vault conversation; called from one worker thread at a time."""

    def __init__(self, settings: VaultSettings, clock: Callable[[], float]) -> None:
        self.s = settings
        self._clock = clock
        self.client = hvac.Client(
            url=settings.addr,
            verify=settings.ca_file if settings.ca_file else True,
            timeout=settings.request_timeout_s,
            namespace=settings.namespace,
        )
        self.token: _Token | None = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.adapter.close()

    def _read_file(self, path: str, what: str) -> str:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise VaultFailure(f"cannot read the {what} file", drop=False) from None
        if not text:
            raise VaultFailure(f"the {what} file is empty", drop=False)
        return text

    def authenticate(self) -> None:
        """Acquire a Vault token: log in with the SA token, or take the token file's."""
        now = self._clock()
        auth = self.s.auth
        if isinstance(auth, KubernetesAuth):
            jwt = self._read_file(auth.token_path, "ServiceAccount token")
            try:
                resp = self.client.auth.kubernetes.login(
                    role=auth.role, jwt=jwt, use_token=True, mount_point=auth.mount
                )
            except (hvac_errors.Forbidden, hvac_errors.Unauthorized, hvac_errors.InvalidRequest):
                raise VaultFailure(
                    f"Vault refused the Kubernetes login for role {auth.role!r}"
                    " (ServiceAccount, namespace or audience not bound to it)",
                    drop=True,
                ) from None
            info = resp.get("auth") or {}
            ttl = float(info.get("lease_duration") or 0)
            renewable = bool(info.get("renewable"))
        else:
            self.client.token = self._read_file(auth.path, "Vault token")
            data = self.client.auth.token.lookup_self()["data"]
            ttl = float(data.get("ttl") or 0)
            renewable = bool(data.get("renewable"))
        self.token = _Token(now, ttl, renewable, token_renew_at(now, ttl))

    def renew(self) -> None:
        """Extend the token (token-file auth, renewable) or acquire a new one."""
        token = self.token
        if token is not None and token.renewable and isinstance(self.s.auth, TokenFileAuth):
            now = self._clock()
            try:
                info = self.client.auth.token.renew_self()["auth"]
            except hvac_errors.VaultError:
                pass  # not renewable any more: take whatever the token file holds now
            else:
                ttl = float(info.get("lease_duration") or 0)
                self.token = _Token(now, ttl, True, token_renew_at(now, ttl))
                return
        self.authenticate()  # Kubernetes: a fresh login with the (rotated) SA token

    def read(self) -> _Read:
        """Read the secret; re-authenticates once if Vault refuses an old token."""
        fresh = False
        if self.token is None:
            self.authenticate()
            fresh = True
        elif self.token.renew_at is not None and self._clock() >= self.token.renew_at:
            self.renew()
            fresh = True
        try:
            return self._read_once()
        except (hvac_errors.Forbidden, hvac_errors.Unauthorized):
            if fresh:
                raise
        self.token = None  # the token may have been revoked or expired early: try a new one
        self.authenticate()
        return self._read_once()

    def _read_once(self) -> _Read:
        resp = self.client.secrets.kv.v2.read_secret_version(
            path=self.s.secret_path.strip("/"),
            mount_point=self.s.mount,
            raise_on_deleted_version=True,
        )
        value, version = extract_credential(resp, self.s.field)
        return _Read(value, version, float(resp.get("lease_duration") or 0))


# --- the credential source ----------------------------------------------------------------


class VaultCredential:
    """The upstream credential from Vault KV v2, refreshed in the background.

    ``await start()`` makes a first attempt (never raising: a failing Vault only
    means calls are refused until it answers) and starts the refresh task;
    ``await aclose()`` stops it. ``await refresh_now()`` runs one attempt.
    """

    def __init__(
        self,
        settings: VaultSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._rng = rng
        self._io = _VaultIO(settings, clock)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._value: str | None = None
        self._expires_at: float = 0.0
        self._reason = "no answer from Vault yet"
        self._failures = 0
        #: The secret's version last read (0 before the first read), for tests and metrics.
        self.version = 0
        #: Successful reads and failed attempts so far.
        self.reads = 0
        self.errors = 0
        self._state = VaultState.STARTING

    # hot path: memory only ------------------------------------------------------

    def current(self) -> str:
        """The header value, or :class:`CredentialUnavailable` with a secret-free reason."""
        value = self._value
        if value is not None and self._clock() < self._expires_at:
            return value
        why = self._reason
        if value is not None:
            why = f"the cached credential expired and Vault could not be read ({why})"
        raise CredentialUnavailable(f"the upstream credential from Vault is unavailable: {why}")

    async def header(self) -> tuple[str, str]:
        return self.settings.header, self.current()

    async def __call__(self) -> dict[str, str]:
        """The headers to add, as :class:`sidecar.upstream.Upstream` takes them."""
        return {self.settings.header: self.current()}

    @property
    def state(self) -> VaultState:
        """The state of the last attempt; FAILED as soon as a cached value expired."""
        if self._state is not VaultState.STARTING and not self._usable():
            return VaultState.FAILED
        return self._state

    def _usable(self) -> bool:
        return self._value is not None and self._clock() < self._expires_at

    @property
    def reason(self) -> str:
        """Why the last attempt failed (or the state), free of secrets."""
        return self._reason

    # background -----------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.refresh_now()
        self._task = asyncio.create_task(self._loop(), name="vault-credential-refresh")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._io.close()

    async def __aenter__(self) -> VaultCredential:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._next_delay())
            await self.refresh_now()

    def _next_delay(self) -> float:
        token = self._io.token
        return next_delay(
            now=self._clock(),
            settings=self.settings,
            failures=self._failures,
            renew_at=token.renew_at if token is not None else None,
            expires_at=self._expires_at if self._value is not None else None,
            jitter=0.5 + self._rng() / 2,
        )

    async def refresh_now(self) -> bool:
        """One attempt to (re-)read the secret; True on success. Never raises."""
        async with self._lock:
            try:
                read = await asyncio.to_thread(self._io.read)
            except Exception as exc:  # translated; the loop must survive anything
                self._failed(classify(exc))
                return False
            self._succeeded(read)
            return True

    def _succeeded(self, read: _Read) -> None:
        now = self._clock()
        changed = read.version != self.version or self._value != self._render(read.value)
        recovered = self._state is not VaultState.OK
        self._value = self._render(read.value)
        self._expires_at = value_expiry(now, read.lease_s, self.settings.max_stale_s)
        self.version = read.version
        self.reads += 1
        self._failures = 0
        self._reason = "ok"
        self._state = VaultState.OK
        if changed or recovered:
            log.info(
                "upstream credential read from Vault",
                extra={
                    "vault_path": f"{self.settings.mount}/{self.settings.secret_path}",
                    "field": self.settings.field,
                    "version": read.version,
                },
            )

    def _failed(self, failure: VaultFailure) -> None:
        self.errors += 1
        self._failures += 1
        self._reason = failure.reason
        if failure.drop:
            self._value = None
            self._io.token = None  # start over with a fresh token next time
        usable = self._usable()
        state = VaultState.STALE if usable else VaultState.FAILED
        if state is not self._state or self._failures == 1:
            log.error(
                "cannot read the upstream credential from Vault",
                extra={
                    "vault_addr": self.settings.addr,
                    "vault_path": f"{self.settings.mount}/{self.settings.secret_path}",
                    "why": failure.reason,
                    "serving_cached": usable,
                },
            )
        self._state = state

    def _render(self, value: str) -> str:
        return f"{self.settings.scheme} {value}" if self.settings.scheme else value
