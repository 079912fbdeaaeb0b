"""The signing-key Secret and the trust ConfigMap on the API server: read, decide, write.

The thin Kubernetes adapter of :mod:`distributor.signing_keys` (which decides).
It reads and writes two named objects in one namespace and nothing else, which
is what the chart's Role allows (``get``/``update``/``patch`` on those two
names; no ``create``, no ``list``):

- :meth:`SigningBootstrap.load_keys`: the keys to sign with. Reads the Secret;
  when it holds none, generates one and writes it with the resourceVersion read
  (``PUT``), so of replicas racing exactly one write lands; a 409 re-reads and
  takes the winner's key. While the Secret is absent or the API server cannot be
  reached, waits with capped backoff (logged), never crashes: the pod stays
  unready and says why.
- :meth:`SigningBootstrap.publish`: the public keys into the ConfigMap
  (``keys.pem``), the same way.
- :meth:`SigningBootstrap.keep`: publishes, then every ``interval_s`` makes the
  same two checks again:
  a Secret emptied behind its back gets this replica's keys back, a ConfigMap
  edited gets the right keys again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from distributor.signing_keys import (
    TRUST_KEY,
    Publish,
    Published,
    SigningKeyError,
    UseKeys,
    Wait,
    WriteKeys,
    decide_signing_keys,
    decide_trust,
    key_ids,
)
from palisade.bundle import generate_key

log = logging.getLogger(__name__)

FIELD_MANAGER = "palisade-distributor"


class _Conflict(Exception):
    """Someone else wrote the object since we read it: read again."""


class SigningBootstrap:
    """The signing-key Secret (optional) and the trust ConfigMap (optional) of one namespace."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        *,
        secret: str | None,
        configmap: str | None,
        configmap_key: str = TRUST_KEY,
        generate: Callable[[], Ed25519PrivateKey] = generate_key,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        interval_s: float = 60.0,
    ) -> None:
        self._core: Any = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.secret = secret
        self.configmap = configmap
        self.configmap_key = configmap_key
        self._generate = generate
        self._sleep = sleep
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self.interval_s = interval_s

    # -- the Secret -----------------------------------------------------------
    async def _read_secret(self) -> tuple[Any, dict[str, bytes] | None]:
        assert self.secret is not None
        try:
            obj = await self._core.read_namespaced_secret(self.secret, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise
        raw: Mapping[str, str] = obj.data or {}
        return obj, {k: base64.b64decode(v) for k, v in raw.items()}

    async def _secret_step(self, held: Sequence[Ed25519PrivateKey]) -> UseKeys | WriteKeys | Wait:
        obj, data = await self._read_secret()
        where = f"Secret {self.namespace}/{self.secret}"
        decision = decide_signing_keys(data, held, self._generate, where=where)
        if isinstance(decision, WriteKeys):
            obj.data = {k: base64.b64encode(v).decode() for k, v in decision.data.items()}
            try:
                await self._core.replace_namespaced_secret(
                    self.secret, self.namespace, obj, field_manager=FIELD_MANAGER
                )
            except ApiException as exc:
                if exc.status == 409:
                    raise _Conflict from None
                raise
        return decision

    async def load_keys(self) -> tuple[Ed25519PrivateKey, ...]:
        """The keys in the Secret, after writing a generated one if it held none."""
        if self.secret is None:
            raise ValueError("no signing-key Secret configured")
        delay = self.backoff_s
        while True:
            try:
                decision = await self._secret_step(())
            except _Conflict:
                log.info("signing-key Secret changed while writing; reading it again")
                continue
            except SigningKeyError:
                raise
            except Exception as exc:
                decision = Wait(_api_error(exc))
            if isinstance(decision, UseKeys):
                log.info(
                    "signing with the key(s) in Secret %s: %s",
                    self.secret,
                    ",".join(key_ids(decision.keys)),
                    extra={"secret": self.secret, "key_ids": key_ids(decision.keys)},
                )
                return decision.keys
            if isinstance(decision, WriteKeys):
                log.info(
                    "generated a signing key and stored it in Secret %s: %s",
                    self.secret,
                    ",".join(key_ids(decision.keys)),
                    extra={"secret": self.secret, "key_ids": key_ids(decision.keys)},
                )
                return decision.keys
            log.warning(
                "waiting for the signing-key Secret: %s; retrying in %.0f s",
                decision.reason,
                delay,
                extra={"secret": self.secret, "reason": decision.reason, "retry_s": delay},
            )
            await self._sleep(delay)
            delay = min(delay * 2, self.backoff_cap_s)

    # -- the ConfigMap --------------------------------------------------------
    async def _trust_step(self, keys: Sequence[Ed25519PrivateKey]) -> Publish | Published | Wait:
        assert self.configmap is not None
        try:
            obj = await self._core.read_namespaced_config_map(self.configmap, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            obj = None
        data = None if obj is None else dict(obj.data or {})
        where = f"ConfigMap {self.namespace}/{self.configmap}"
        decision = decide_trust(data, keys, key=self.configmap_key, where=where)
        if isinstance(decision, Publish):
            obj.data = dict(decision.data)
            try:
                await self._core.replace_namespaced_config_map(
                    self.configmap, self.namespace, obj, field_manager=FIELD_MANAGER
                )
            except ApiException as exc:
                if exc.status == 409:
                    raise _Conflict from None
                raise
            log.info(
                "published the public signing key(s) in ConfigMap %s: %s",
                self.configmap,
                ",".join(key_ids(keys)),
                extra={"configmap": self.configmap, "key_ids": key_ids(keys)},
            )
        return decision

    async def publish(self, keys: Sequence[Ed25519PrivateKey]) -> None:
        """Put the public keys into the ConfigMap; wait while it is absent or unreachable."""
        if self.configmap is None:
            return
        delay = self.backoff_s
        while True:
            try:
                decision = await self._trust_step(keys)
            except _Conflict:
                continue
            except Exception as exc:
                decision = Wait(_api_error(exc))
            if not isinstance(decision, Wait):
                return
            log.warning(
                "waiting for the trust ConfigMap: %s; retrying in %.0f s",
                decision.reason,
                delay,
                extra={"configmap": self.configmap, "reason": decision.reason, "retry_s": delay},
            )
            await self._sleep(delay)
            delay = min(delay * 2, self.backoff_cap_s)

    # -- afterwards -----------------------------------------------------------
    async def reconcile(self, keys: Sequence[Ed25519PrivateKey]) -> None:
        """One check of both objects against the keys this replica signs with."""
        if self.secret is not None:
            try:
                decision = await self._secret_step(keys)
                if isinstance(decision, WriteKeys):
                    log.warning(
                        "Secret %s held no signing key; wrote this replica's key(s) back: %s",
                        self.secret,
                        ",".join(key_ids(keys)),
                        extra={"secret": self.secret, "key_ids": key_ids(keys)},
                    )
                elif isinstance(decision, UseKeys) and key_ids(decision.keys) != key_ids(keys):
                    log.warning(
                        "the signing-key Secret holds other keys than this replica signs "
                        "with; restart the distributor to sign with them",
                        extra={
                            "secret": self.secret,
                            "key_ids": key_ids(keys),
                            "secret_key_ids": key_ids(decision.keys),
                        },
                    )
                    return  # publish what the Secret holds only once we sign with it
                elif isinstance(decision, Wait):
                    log.warning("signing-key Secret: %s", decision.reason)
            except (_Conflict, SigningKeyError) as exc:
                log.warning("signing-key Secret check: %s", exc or "changed while writing")
        if self.configmap is not None:
            try:
                decision_t = await self._trust_step(keys)
                if isinstance(decision_t, Wait):
                    log.warning("trust ConfigMap: %s", decision_t.reason)
            except _Conflict:
                pass  # the next round

    async def keep(self, keys: Sequence[Ed25519PrivateKey]) -> None:
        """Publish, then reconcile every ``interval_s`` until cancelled."""
        await self.publish(keys)
        while True:
            await self._sleep(self.interval_s)
            try:
                await self.reconcile(keys)
            except Exception as exc:
                log.warning("signing-key check failed: %s", _api_error(exc))


def _api_error(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"API server answered {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
