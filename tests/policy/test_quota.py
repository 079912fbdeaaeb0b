"""Which GPU quota limits a usage exceeds: strictly above the limit, MIG profiles closed."""

from __future__ import annotations

from palisade.bundle.schema import Enforcement, GpuQuota, GpuUsage
from palisade.policy.quota import quota_violations

QUOTA = GpuQuota(
    gpus=2,
    gpu_memory_bytes=100,
    mig_instances={"1g.18gb": 2},
    power_watts=500.0,
    allocated_devices_only=True,
    enforcement=Enforcement.EVICT,
)


def test_usage_at_every_limit_is_within_quota() -> None:
    usage = GpuUsage(
        "t", gpus=2, gpu_memory_bytes=100, mig_instances={"1g.18gb": 2}, power_watts=500.0
    )
    assert quota_violations(QUOTA, usage) == ()


def test_each_limit_is_reported_by_name_when_exceeded() -> None:
    usage = GpuUsage(
        "t",
        gpus=3,
        gpu_memory_bytes=101,
        mig_instances={"1g.18gb": 3},
        power_watts=500.5,
        unallocated_devices=1,
    )
    assert quota_violations(QUOTA, usage) == (
        "allocatedDevicesOnly",
        "gpuMemoryBytes",
        "gpus",
        "migInstances/1g.18gb",
        "powerWatts",
    )


def test_a_quota_listing_mig_profiles_allows_no_other_profile() -> None:
    assert quota_violations(QUOTA, GpuUsage("t", mig_instances={"7g.80gb": 1})) == (
        "migInstances/7g.80gb",
    )


def test_unset_limits_limit_nothing() -> None:
    usage = GpuUsage(
        "t",
        gpus=64,
        gpu_memory_bytes=10**15,
        mig_instances={"1g.10gb": 9},
        power_watts=1e6,
        unallocated_devices=3,
    )
    assert quota_violations(GpuQuota(), usage) == ()
