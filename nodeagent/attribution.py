"""Who is using each GPU: processes -> containers -> pods -> namespaces -> tenants.

Pure: the agent reads ``/proc/<pid>/cgroup`` files, the kubelet's allocations and
the pod index, and this module joins them. A process is *attributed* only when
its cgroup names a pod this node knows; otherwise it is reported unattributed,
with the reason, and nothing downstream (quotas, actions) ever guesses an owner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
) -> list[Attributed]:
    """Join every process in ``snapshot`` with its owner.

    ``cgroups`` holds the text of ``/proc/<pid>/cgroup`` per PID (``None`` when
    the process is gone or unreadable); ``allocations`` is from
    :func:`allocations_by_pod`, or ``None`` when the kubelet could not be asked.
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
            out.append(_owner(base, gpu, cgroups.get(p.pid), pods, allocations))
    return out


def _owner(
    base: Attributed,
    gpu: GpuSample,
    text: str | None,
    pods: PodIndex,
    allocations: Mapping[str, set[str]] | None,
) -> Attributed:
    from dataclasses import replace

    if text is None:
        return replace(base, unattributed_reason="process cgroup unreadable (exited or no access)")
    ident = cgroup.parse(text)
    if ident is None:
        return replace(base, unattributed_reason="process is not in a pod cgroup")
    pod = pods.get(ident.pod_uid)
    if pod is None:
        reason = "pod is not known on this node" if pods.synced else "pod list not yet synced"
        return replace(base, pod_uid=ident.pod_uid, unattributed_reason=reason)
    allocated: bool | None = None
    if allocations is not None:
        allocated = bool(_device_ids(gpu, base.gi_id) & allocations.get(pod.uid, set()))
    tenant = pods.tenant_of(pod.namespace)
    return replace(
        base,
        pod_uid=pod.uid,
        pod=pod.name,
        namespace=pod.namespace,
        container=pod.containers.get(ident.container_id, ""),
        tenant=tenant,
        allocated=allocated,
        unattributed_reason="" if tenant else "namespace has no tenant",
    )
