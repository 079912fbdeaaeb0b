"""Who is using each GPU: processes -> containers -> pods -> namespaces -> tenants.

Pure: the agent reads ``/proc/<pid>/cgroup`` files, the kubelet's allocations and
the pod index, and this module joins them. A process is *attributed* only when
its cgroup names a pod this node knows; otherwise it is reported unattributed,
with the reason, and nothing downstream (quotas, actions) ever guesses an owner.

:func:`owner_of` is the rule for one PID (also behind ``GET /attribution``);
:func:`attribute` applies it to every GPU process of a sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from nodeagent import cgroup
from nodeagent.gpu import GpuSample, NodeSnapshot
from nodeagent.pods import ContainerDevices, PodIndex


@dataclass(frozen=True, slots=True)
class Attributed:
    """One GPU process with its owner, or the reason it has none."""

    pid: int
    gpu_uuid: str
    gpu_index: int
    #: MIG instance (GPU instance id, profile) or ``None`` for a whole GPU
    gi_id: int | None
    profile: str
    used_memory_bytes: int
    pod_uid: str = ""
    pod: str = ""
    namespace: str = ""
    container: str = ""
    tenant: str = ""
    #: Was this device (GPU or MIG instance) allocated to the pod by the kubelet?
    #: ``None`` when allocations are unknown (kubelet unreachable).
    allocated: bool | None = None
    #: Why the process has no tenant ("" when attributed)
    unattributed_reason: str = ""

    @property
    def attributed(self) -> bool:
        return not self.unattributed_reason

    @property
    def device_key(self) -> str:
        """One name per device: the GPU UUID, or ``<uuid>/gi<id>`` for a MIG instance."""
        return self.gpu_uuid if self.gi_id is None else f"{self.gpu_uuid}/gi{self.gi_id}"


def allocations_by_pod(
    allocations: Sequence[ContainerDevices], pods: PodIndex
) -> dict[str, set[str]]:
    """Pod UID -> every device id (GPU or MIG UUID) the kubelet gave any of its containers."""
    out: dict[str, set[str]] = {}
    for a in allocations:
        if not a.resource.startswith("nvidia.com/"):
            continue
        pod = pods.by_name(a.namespace, a.pod)
        if pod is None:
            continue
        out.setdefault(pod.uid, set()).update(a.device_ids)
    return out


def _device_ids(gpu: GpuSample, gi_id: int | None) -> set[str]:
    """Names the device plugin may use for this device."""
    if gi_id is None:
        return {gpu.uuid}
    ids = {f"{gpu.uuid}/gi{gi_id}"}
    for m in gpu.mig:
        if m.gi_id == gi_id and m.uuid:
            ids.add(m.uuid)
    return ids


def attribute(
    snapshot: NodeSnapshot,
    cgroups: Mapping[int, str | None],
    pods: PodIndex,
    allocations: Mapping[str, set[str]] | None,
    ns: cgroup.Namespace = cgroup.HOST,
) -> list[Attributed]:
    """Join every process in ``snapshot`` with its owner.

    ``cgroups`` holds the text of ``/proc/<pid>/cgroup`` per PID (``None`` when
    the process is gone or unreadable); ``allocations`` is from
    :func:`allocations_by_pod`, or ``None`` when the kubelet could not be asked;
    ``ns`` is the reader's cgroup namespace (:class:`nodeagent.cgroup.Namespace`).
    """
    out: list[Attributed] = []
    for gpu in snapshot.gpus:
        if not gpu.ok:
            continue
        profiles = {m.gi_id: m.profile for m in gpu.mig}
        for p in gpu.processes:
            base = Attributed(
                pid=p.pid,
                gpu_uuid=gpu.uuid,
                gpu_index=gpu.index,
                gi_id=p.gi_id,
                profile=profiles.get(p.gi_id, "") if p.gi_id is not None else "",
                used_memory_bytes=p.used_memory_bytes or 0,
            )
            out.append(_owner(base, gpu, cgroups.get(p.pid), pods, allocations, ns))
    return out


UNREADABLE = "process cgroup unreadable (exited or no access)"
NOT_A_POD = "process is not in a pod cgroup"
OWN_POD_UNNAMED = "process is in this agent's own pod, whose UID it was not given (POD_UID)"
UNKNOWN_POD = "pod is not known on this node"
NOT_SYNCED = "pod list not yet synced"
NO_TENANT = "namespace has no tenant"
UNLISTED_CONTAINER = (
    "container id is not among the pod's containers: the pod sandbox (pause), "
    "or a container that has since been replaced"
)

#: ``pod``: a pod this node knows; ``unknown-pod``: a pod cgroup whose pod is not
#: in the pod list; ``own-pod``: the agent's own pod, UID not given; ``host``: no pod.
OwnerKind = Literal["pod", "unknown-pod", "own-pod", "host"]


@dataclass(frozen=True, slots=True)
class Owner:
    """Who one host PID belongs to, from its cgroup file and this node's pod list."""

    pid: int
    kind: OwnerKind
    pod_uid: str = ""
    namespace: str = ""
    pod: str = ""
    #: The container's name; "" for the sandbox, a pod-level process or an unknown id.
    container: str = ""
    container_id: str = ""
    tenant: str = ""
    runtime: str = ""
    cgroup_version: int | None = None
    cgroup_driver: str = ""
    #: The cgroup path the verdict was read from.
    cgroup_path: str = ""
    #: Why the process has no tenant ("" when it has one).
    reason: str = ""
    #: Anything else worth knowing (e.g. the id is the pod's sandbox's).
    note: str = ""

    @property
    def attributed(self) -> bool:
        return not self.reason

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "kind": self.kind,
            "attributed": self.attributed,
            "namespace": self.namespace,
            "pod": self.pod,
            "container": self.container,
            "tenant": self.tenant,
            "podUID": self.pod_uid,
            "containerID": self.container_id,
            "runtime": self.runtime,
            "cgroupVersion": self.cgroup_version,
            "cgroupDriver": self.cgroup_driver,
            "cgroupPath": self.cgroup_path,
            "reason": self.reason,
            "note": self.note,
        }


def owner_of(
    pid: int, text: str | None, pods: PodIndex, ns: cgroup.Namespace = cgroup.HOST
) -> Owner:
    """Who ``pid`` belongs to, given the text of its ``/proc/<pid>/cgroup``.

    Only a pod UID that the node's pod list knows gives a pod name; a cgroup that
    names no pod is a host process. When a path names several pods (a kubelet
    nested in another cluster's pod), the one this node knows is the owner.
    """
    if text is None:
        return Owner(pid, "host", reason=UNREADABLE)
    where = cgroup.locate(text, ns)
    if where.kind == "host":
        return Owner(pid, "host", cgroup_path=where.path, reason=NOT_A_POD)
    if not where.pods:
        return Owner(pid, "own-pod", cgroup_path=where.path, reason=OWN_POD_UNNAMED)
    known = [(i, pods.get(i.pod_uid)) for i in where.pods]
    ident, pod = next(((i, p) for i, p in known if p is not None), (where.pods[0], None))
    base = Owner(
        pid,
        "unknown-pod",
        pod_uid=ident.pod_uid,
        container_id=ident.container_id,
        runtime=ident.runtime,
        cgroup_version=ident.cgroup_version,
        cgroup_driver=ident.driver,
        cgroup_path=where.path,
    )
    if pod is None:
        return replace(base, reason=UNKNOWN_POD if pods.synced else NOT_SYNCED)
    container = pod.containers.get(ident.container_id, "")
    tenant = pods.tenant_of(pod.namespace)
    return replace(
        base,
        kind="pod",
        namespace=pod.namespace,
        pod=pod.name,
        container=container,
        tenant=tenant,
        reason="" if tenant else NO_TENANT,
        note=UNLISTED_CONTAINER if ident.container_id and not container else "",
    )


def _owner(
    base: Attributed,
    gpu: GpuSample,
    text: str | None,
    pods: PodIndex,
    allocations: Mapping[str, set[str]] | None,
    ns: cgroup.Namespace,
) -> Attributed:
    owner = owner_of(base.pid, text, pods, ns)
    if owner.kind != "pod":
        return replace(base, pod_uid=owner.pod_uid, unattributed_reason=owner.reason)
    allocated: bool | None = None
    if allocations is not None:
        allocated = bool(_device_ids(gpu, base.gi_id) & allocations.get(owner.pod_uid, set()))
    return replace(
        base,
        pod_uid=owner.pod_uid,
        pod=owner.pod,
        namespace=owner.namespace,
        container=owner.container,
        tenant=owner.tenant,
        allocated=allocated,
        unattributed_reason=owner.reason,
    )
