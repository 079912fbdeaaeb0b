"""The node's view of pods: who runs here, in which namespace, for which tenant.

:class:`PodIndex` is plain in-memory state that the Kubernetes watcher
(:mod:`nodeagent.kube`) or a simulated scenario fills; attribution reads it.
:class:`ContainerDevices` is one container's device allocation as the kubelet's
PodResources API reports it (:mod:`nodeagent.podresources`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

TENANT_LABEL = "palisade.dev/tenant"


@dataclass(frozen=True, slots=True)
class PodInfo:
    uid: str
    name: str
    namespace: str
    #: bare container id -> container name
    containers: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerDevices:
    """Devices the kubelet allocated to one container (PodResources ``List``)."""

    namespace: str
    pod: str
    container: str
    #: e.g. ``nvidia.com/gpu`` or ``nvidia.com/mig-1g.10gb``
    resource: str
    #: GPU UUIDs (``GPU-...``) or MIG UUIDs (``MIG-...``) as the device plugin names them
    device_ids: tuple[str, ...]


class AllocationSource(Protocol):
    """Where device allocations come from (the kubelet, or a scenario)."""

    async def list(self) -> list[ContainerDevices]: ...


class StaticAllocations:
    """A fixed list, for simulated nodes without a kubelet."""

    def __init__(self, items: Iterable[ContainerDevices]) -> None:
        self._items = list(items)

    async def list(self) -> list[ContainerDevices]:
        return list(self._items)


def strip_runtime(container_id: str) -> str:
    """``containerd://abc`` -> ``abc`` (the form cgroup paths carry)."""
    return container_id.split("://", 1)[-1]


def pod_from_object(obj: Mapping[str, object]) -> PodInfo | None:
    """A :class:`PodInfo` from a pod as the API server returns it (a JSON dict)."""
    meta = obj.get("metadata")
    status = obj.get("status")
    if not isinstance(meta, Mapping):
        return None
    uid, name, ns = meta.get("uid"), meta.get("name"), meta.get("namespace")
    if not (isinstance(uid, str) and isinstance(name, str) and isinstance(ns, str)):
        return None
    containers: dict[str, str] = {}
    if isinstance(status, Mapping):
        # Native sidecars (restartPolicy: Always) are init containers; debug
        # containers are ephemeral ones: their processes are the pod's too.
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for cs in status.get(key) or []:
                if isinstance(cs, Mapping) and isinstance(cs.get("containerID"), str):
                    containers[strip_runtime(str(cs["containerID"]))] = str(cs.get("name", ""))
    labels = meta.get("labels")
    return PodInfo(
        uid=uid,
        name=name,
        namespace=ns,
        containers=containers,
        labels=dict(labels) if isinstance(labels, Mapping) else {},
    )


class PodIndex:
    """Pods on this node by UID, and namespace labels; updated by watch events."""

    def __init__(self) -> None:
        self._pods: dict[str, PodInfo] = {}
        self._ns_labels: dict[str, dict[str, str]] = {}
        #: namespace -> tenant named by the policy bundle (tenants[].namespaces)
        self._bundle_tenants: dict[str, str] = {}
        self.synced = False

    def upsert(self, pod: PodInfo) -> None:
        self._pods[pod.uid] = pod

    def delete(self, uid: str) -> None:
        self._pods.pop(uid, None)

    def replace_all(self, pods: Iterable[PodInfo]) -> None:
        self._pods = {p.uid: p for p in pods}

    def set_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        self._ns_labels[name] = dict(labels)

    def delete_namespace(self, name: str) -> None:
        self._ns_labels.pop(name, None)

    def set_bundle_tenants(self, by_namespace: Mapping[str, str]) -> None:
        self._bundle_tenants = dict(by_namespace)

    def get(self, uid: str) -> PodInfo | None:
        return self._pods.get(uid)

    def by_name(self, namespace: str, name: str) -> PodInfo | None:
        for pod in self._pods.values():
            if pod.namespace == namespace and pod.name == name:
                return pod
        return None

    def pods(self) -> list[PodInfo]:
        return list(self._pods.values())

    def namespaces(self) -> set[str]:
        return {p.namespace for p in self._pods.values()}

    def tenant_of(self, namespace: str) -> str:
        """The namespace's ``palisade.dev/tenant`` label, else the bundle's mapping, else ""."""
        label = self._ns_labels.get(namespace, {}).get(TENANT_LABEL, "")
        return label or self._bundle_tenants.get(namespace, "")
