"""Which of a tenant's GPU quota limits a given usage exceeds. Pure.

The same rule the node agent enforces (``nodeagent/quota.py``), at the level a
bundle test can state: a limit is exceeded when the usage is strictly above it;
a quota that lists MIG profiles allows none of the profiles it omits; with
``allocatedDevicesOnly`` any device used without a kubelet allocation is a
violation. Grace periods and actions are the node agent's business.
"""

from __future__ import annotations

from palisade.bundle.schema import GpuQuota, GpuUsage


def quota_violations(quota: GpuQuota, usage: GpuUsage) -> tuple[str, ...]:
    """The names of the limits ``usage`` exceeds, sorted (``migInstances/<profile>``...)."""
    out: list[str] = []
    if quota.gpus is not None and usage.gpus > quota.gpus:
        out.append("gpus")
    if quota.gpu_memory_bytes is not None and usage.gpu_memory_bytes > quota.gpu_memory_bytes:
        out.append("gpuMemoryBytes")
    for profile in sorted(set(usage.mig_instances) | set(quota.mig_instances)):
        limit = quota.mig_instances.get(profile, 0 if quota.mig_instances else None)
        if limit is not None and usage.mig_instances.get(profile, 0) > limit:
            out.append(f"migInstances/{profile}")
    if quota.power_watts is not None and usage.power_watts > quota.power_watts:
        out.append("powerWatts")
    if quota.allocated_devices_only and usage.unallocated_devices > 0:
        out.append("allocatedDevicesOnly")
    return tuple(sorted(out))
