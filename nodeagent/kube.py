"""The Kubernetes adapter: watch this node's pods and namespaces; Events and evictions.

All API access of the agent goes through here (kubernetes_asyncio):

* :class:`PodWatcher` lists, then watches, pods with ``spec.nodeName=<node>`` and all
  namespaces (for the ``palisade.dev/tenant`` label) into a :class:`PodIndex`;
  on any error it waits and starts again with a fresh list.
* :class:`KubeActions` creates a ``v1`` Event on a pod and evicts a pod through
  the Eviction API, so PodDisruptionBudgets are respected (the API answers 429
  when a budget forbids it, reported as ``refused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from nodeagent.pods import PodIndex, pod_from_object

log = logging.getLogger(__name__)


class PodWatcher:
    def __init__(self, api: client.ApiClient, node: str, index: PodIndex) -> None:
        self._core = client.CoreV1Api(api)
        self._api = api
        self._node = node
        self._index = index
        self._tasks: list[asyncio.Task[None]] = []
        self.last_error = ""

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(self._pods_once), name="watch-pods"),
            asyncio.create_task(self._loop(self._namespaces_once), name="watch-namespaces"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def _loop(self, once: Any) -> None:
        while True:
            try:
                await once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("kubernetes watch failed, retrying", extra={"error": self.last_error})
            await asyncio.sleep(1.0)

    def _dict(self, obj: Any) -> Mapping[str, Any]:
        out = self._api.sanitize_for_serialization(obj)
        return out if isinstance(out, Mapping) else {}

    async def _pods_once(self) -> None:
        selector = f"spec.nodeName={self._node}"
        listing = await self._core.list_pod_for_all_namespaces(field_selector=selector)
        pods = [pod_from_object(self._dict(p)) for p in listing.items]
        self._index.replace_all(p for p in pods if p is not None)
        self._index.synced = True
        async with watch.Watch() as w:
            async for event in w.stream(
                self._core.list_pod_for_all_namespaces,
                field_selector=selector,
                resource_version=listing.metadata.resource_version,
                timeout_seconds=300,
            ):
                pod = pod_from_object(self._dict(event["object"]))
                if pod is None:
                    continue
                if event["type"] == "DELETED":
                    self._index.delete(pod.uid)
                else:
                    self._index.upsert(pod)

    async def _namespaces_once(self) -> None:
        listing = await self._core.list_namespace()
        for ns in listing.items:
            self._index.set_namespace(ns.metadata.name, ns.metadata.labels or {})
        async with watch.Watch() as w:
            async for event in w.stream(
                self._core.list_namespace,
                resource_version=listing.metadata.resource_version,
                timeout_seconds=300,
            ):
                ns = event["object"]
                if event["type"] == "DELETED":
                    self._index.delete_namespace(ns.metadata.name)
                else:
                    self._index.set_namespace(ns.metadata.name, ns.metadata.labels or {})


class KubeActions:
    """Events and evictions. Methods return an outcome string; they never raise."""

    def __init__(self, api: client.ApiClient, node: str, component: str = "palisade-nodeagent"):
        self._core = client.CoreV1Api(api)
        self._node = node
        self._component = component

    async def event(
        self, namespace: str, pod: str, uid: str, reason: str, message: str, warning: bool = True
    ) -> str:
        now = dt.datetime.now(dt.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{pod}.", namespace=namespace),
            involved_object=client.V1ObjectReference(
                kind="Pod", name=pod, namespace=namespace, uid=uid, api_version="v1"
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            source=client.V1EventSource(component=self._component, host=self._node),
            reporting_component=self._component,
            reporting_instance=self._node,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            await self._core.create_namespaced_event(namespace, body)
        except ApiException as exc:
            log.warning("event not created", extra={"pod": pod, "status": exc.status})
            return f"event failed: HTTP {exc.status}"
        except Exception as exc:
            return f"event failed: {type(exc).__name__}"
        return "event created"

    async def evict(self, namespace: str, pod: str, uid: str) -> str:
        """``evicted``, ``refused`` (a PodDisruptionBudget said no), ``gone`` or ``failed: ...``."""
        body = client.V1Eviction(
            metadata=client.V1ObjectMeta(name=pod, namespace=namespace),
            delete_options=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(uid=uid) if uid else None
            ),
        )
        try:
            await self._core.create_namespaced_pod_eviction(pod, namespace, body)
        except ApiException as exc:
            if exc.status == 429:
                return "refused: disruption budget"
            if exc.status == 404:
                return "gone"
            if exc.status == 409:
                return "gone: uid changed"
            return f"failed: HTTP {exc.status}"
        except Exception as exc:
            return f"failed: {type(exc).__name__}"
        return "evicted"
