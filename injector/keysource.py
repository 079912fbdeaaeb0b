"""The sidecars' trusted bundle keys as they are now: flags plus a watched ConfigMap.

The distributor may generate its signing key at first start and publish the
public half into a ConfigMap in the release namespace (``keys.pem``), after the
injector started. So the injector watches that one ConfigMap (list+watch with a
field selector on its name; RBAC ``get``/``list``/``watch`` on that name) and
keeps its keys in memory: an admission review costs no API call, and a key that
appears or rotates reaches the very next pod.

Why a watch and not a TTL cache: a TTL either delays a new key by the TTL or
puts an API call on the admission path at every expiry. The watch lags by
milliseconds; for the one window where that matters (no key known yet, the pod
would be refused) a review reads the ConfigMap directly, at most once per
``min_refresh_seconds``, before refusing.

:func:`keys_from_data` is the pure part: ConfigMap data -> keys or a problem.
A ConfigMap whose text holds no usable key keeps the last good keys (logged);
a deleted or absent one has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.rest import ApiException

from injector import trust

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyState:
    """The keys to give sidecars now, and why there are none when there are none."""

    keys: tuple[str, ...] = ()
    problem: str = ""


class KeySource(Protocol):
    """Where the webhook gets the current trusted keys."""

    async def current(self) -> KeyState: ...


class StaticKeys:
    """Keys from flags only (tests, and installs with ``distributor.publicKeys``)."""

    def __init__(self, keys: tuple[str, ...] = ()) -> None:
        self.state = KeyState(keys)

    async def current(self) -> KeyState:
        return self.state


def keys_from_data(data: Mapping[str, str] | None, key: str, where: str) -> KeyState:
    """Canonical keys from a ConfigMap's ``data`` (None: it does not exist)."""
    if data is None:
        return KeyState((), f"ConfigMap {where} does not exist yet")
    text = data.get(key, "")
    if not text.strip():
        return KeyState((), f"ConfigMap {where} has no key {key!r} yet")
    try:
        keys = trust.normalize([text])
    except trust.TrustError as exc:
        return KeyState((), f"ConfigMap {where} key {key!r}: {exc}")
    return KeyState(keys) if keys else KeyState((), f"ConfigMap {where} holds no key")


def merge(static: tuple[str, ...], found: KeyState) -> KeyState:
    """Flag keys first, then the ConfigMap's, each once."""
    keys = static + tuple(k for k in found.keys if k not in static)
    return KeyState(keys, "" if keys else found.problem)


class ConfigMapKeys:
    """Keys from one ConfigMap, kept current by a watch; plus the flags' keys."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        key: str = "keys.pem",
        static: tuple[str, ...] = (),
        min_refresh_seconds: float = 1.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace, self.name, self.key = namespace, name, key
        self._where = f"{namespace}/{name}"
        self._static = static
        self._min_refresh = min_refresh_seconds
        self._timeout = timeout
        self._clock = clock
        self._found = KeyState((), f"ConfigMap {self._where} not read yet")
        self._last_read: float | None = None
        self._lock = asyncio.Lock()
        #: Successful reads and watch events applied (tests, logs).
        self.updates = 0

    async def current(self) -> KeyState:
        state = merge(self._static, self._found)
        if state.keys:
            return state
        now = self._clock()
        if self._last_read is None or now - self._last_read >= self._min_refresh:
            await self.refresh()
        return merge(self._static, self._found)

    async def refresh(self) -> None:
        """Read the ConfigMap now (bounded by ``timeout``); errors become the problem."""
        async with self._lock:
            self._last_read = self._clock()
            try:
                cm: Any = await self._core.read_namespaced_config_map(
                    self.name, self.namespace, _request_timeout=self._timeout
                )
            except ApiException as exc:
                if exc.status == 404:
                    self.apply(None)
                    return
                self._trouble(f"cannot read ConfigMap {self._where}: HTTP {exc.status}")
                return
            except Exception as exc:  # connection errors, timeouts: refuse, never crash
                self._trouble(f"cannot read ConfigMap {self._where}: {type(exc).__name__}")
                return
            self.apply(dict(cm.data or {}))

    def apply(self, data: Mapping[str, str] | None) -> None:
        """Take a ConfigMap's data (None: deleted or absent)."""
        found = keys_from_data(data, self.key, self._where)
        self.updates += 1
        if found.keys:
            if found.keys != self._found.keys:
                log.info(
                    "trusted bundle keys loaded",
                    extra={"configmap": self._where, "key_ids": trust.key_ids(found.keys)},
                )
            self._found = found
        elif data is not None and self._found.keys:
            log.error(
                "trusted key ConfigMap holds no usable key; keeping the last good keys",
                extra={"configmap": self._where, "problem": found.problem},
            )
        else:
            self._found = found

    def _trouble(self, problem: str) -> None:
        log.warning("trusted key ConfigMap unreadable", extra={"problem": problem})
        if not self._found.keys:
            self._found = KeyState((), problem)

    async def run(self, stop: asyncio.Event) -> None:
        """Watch the ConfigMap until ``stop``; read it afresh at every (re)connect."""
        delay = 1.0
        while not stop.is_set():
            try:
                await self.refresh()
                async with watch.Watch() as w:
                    stream = w.stream(
                        self._core.list_namespaced_config_map,
                        self.namespace,
                        field_selector=f"metadata.name={self.name}",
                        timeout_seconds=300,
                    )
                    async for event in stream:
                        delay = 1.0
                        obj = event["raw_object"]
                        if event["type"] == "DELETED":
                            self.apply(None)
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            self.apply(dict(obj.get("data") or {}))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "trusted key ConfigMap watch failed", extra={"error": type(exc).__name__}
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay + random.uniform(0, delay))  # noqa: S311
                delay = min(delay * 2, 30.0)
