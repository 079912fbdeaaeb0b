"""Kubernetes adapters: namespace labels (cached), the API server version, the client.

The only module besides tls.py that talks to the API server. Errors from the
client are translated here into ``NamespaceLookupError`` so the webhook can
refuse the pod with a reason (fail closed) instead of crashing.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from injector.webhook import NamespaceLookupError

log = logging.getLogger(__name__)

#: Native sidecars (init containers with restartPolicy Always) are on by default from 1.29.
NATIVE_SIDECAR_MINOR = 29


def native_sidecars_supported(major: str, minor: str) -> bool:
    """True for Kubernetes >= 1.29; ``minor`` may carry a suffix such as ``29+``."""
    match = re.match(r"\d+", minor or "")
    if not (major or "").isdigit() or match is None:
        return False
    return (int(major), int(match.group())) >= (1, NATIVE_SIDECAR_MINOR)


async def api_client(kubeconfig: str | None) -> client.ApiClient:
    """A client from a kubeconfig file, or the in-cluster ServiceAccount."""
    if kubeconfig:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        return client.ApiClient(configuration)
    config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


async def server_version(api: client.ApiClient) -> tuple[str, str]:
    """(major, minor) of the API server."""
    info = await client.VersionApi(api).get_code()
    return str(info.major), str(info.minor)


class KubeNamespaces:
    """Namespace labels read with ``get namespaces``, cached for ``ttl`` seconds.

    Each read is bounded by ``timeout`` seconds, well inside the webhook's own
    timeout, so a slow API server yields a readable refusal, not a timeout.
    """

    def __init__(
        self,
        api: client.ApiClient,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 2.0,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._timeout = timeout
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, Mapping[str, str] | None]] = {}

    async def labels(self, namespace: str) -> Mapping[str, str] | None:
        now = self._clock()
        hit = self._cache.get(namespace)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        try:
            ns: Any = await self._core.read_namespace(namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 404:
                self._cache[namespace] = (now, None)
                return None
            raise NamespaceLookupError(f"HTTP {exc.status} {exc.reason}") from exc
        except Exception as exc:  # connection errors, timeouts: refuse, never crash
            raise NamespaceLookupError(type(exc).__name__) from exc
        labels = dict(ns.metadata.labels or {})
        self._cache[namespace] = (now, labels)
        return labels
