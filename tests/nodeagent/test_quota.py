"""Quota decisions: bundle parsing, usage, violations, grace, targets, exclusions. Pure."""

from __future__ import annotations

import pytest

from nodeagent.attribution import Attributed
from nodeagent.quota import (
    Enforcement,
    EnforcementState,
    GpuQuota,
    QuotaError,
    evaluate,
    plan,
    quotas_from_bundle,
    usage,
)

GIB = 2**30


def proc(
    pid: int,
    pod: str,
    *,
    tenant: str = "t",
    ns: str = "ns",
    gpu: str = "GPU-a",
    gi: int | None = None,
    profile: str = "",
    mem: int = GIB,
    allocated: bool | None = True,
    reason: str = "",
) -> Attributed:
    return Attributed(
        pid=pid,
        gpu_uuid=gpu,
        gpu_index=0,
        gi_id=gi,
        profile=profile,
        used_memory_bytes=mem,
        pod_uid=f"uid-{pod}",
        pod=pod,
        namespace=ns,
        container="c",
        tenant=tenant,
        allocated=allocated,
        unattributed_reason=reason,
    )


def test_bundle_quotas_are_read_with_their_defaults_and_namespaces() -> None:
    doc = {
        "spec": {
            "tenants": [
                {
                    "name": "payments",
                    "namespaces": ["payments", "payments-batch"],
                    "gpuQuota": {
                        "gpus": 2,
                        "gpuMemoryBytes": 85899345920,
                        "migInstances": {"1g.18gb": 4},
                        "powerWatts": 1400,
                        "allocatedDevicesOnly": True,
                        "enforcement": "evict",
                    },
                },
                {"name": "free", "namespaces": ["free"]},
            ]
        }
    }
    quotas, namespaces = quotas_from_bundle(doc)
    q = quotas["payments"]
    assert (q.gpus, q.gpu_memory_bytes, dict(q.mig_instances)) == (2, 85899345920, {"1g.18gb": 4})
    assert q.power_watts == 1400 and q.allocated_devices_only
    assert q.enforcement is Enforcement.EVICT and q.grace_period_s == 30
    assert "free" not in quotas
    assert namespaces == {"payments": "payments", "payments-batch": "payments", "free": "free"}


@pytest.mark.parametrize(
    ("quota", "field"),
    [
        ({"gpus": -1}, "gpus"),
        ({"gpuMemoryBytes": "lots"}, "gpuMemoryBytes"),
        ({"enforcement": "shoot"}, "enforcement"),
        ({"migInstances": {"1g.10gb": -2}}, "migInstances"),
        ({"gracePeriodSeconds": True}, "gracePeriodSeconds"),
    ],
)
def test_a_malformed_quota_is_refused_naming_the_field(
    quota: dict[str, object], field: str
) -> None:
    with pytest.raises(QuotaError, match=field):
        quotas_from_bundle({"tenants": [{"name": "x", "gpuQuota": quota}]})


def test_usage_counts_whole_gpus_mig_instances_and_memory_per_tenant() -> None:
    procs = [
        proc(1, "a", gpu="GPU-a", mem=10 * GIB),
        proc(2, "a", gpu="GPU-a", mem=5 * GIB),
        proc(3, "b", gpu="GPU-b", gi=1, profile="1g.10gb", mem=GIB),
        proc(4, "b", gpu="GPU-b", gi=2, profile="1g.10gb", mem=GIB),
        proc(5, "x", tenant="", reason="namespace has no tenant"),
    ]
    u = usage(procs, {"t": 300.0})["t"]
    assert u.gpus == {"GPU-a"}
    assert u.memory_bytes == 17 * GIB
    assert {k: len(v) for k, v in u.mig().items()} == {"1g.10gb": 2}
    assert u.power_watts == 300.0
    assert set(usage(procs, {})) == {"t"}, "unattributed processes never count for anyone"


def test_within_quota_there_is_no_violation() -> None:
    procs = [proc(1, "a", mem=10 * GIB)]
    q = {"t": GpuQuota("t", gpus=1, gpu_memory_bytes=20 * GIB)}
    assert evaluate(usage(procs, {}), q) == []


def test_over_memory_targets_the_largest_pods_until_the_rest_fits() -> None:
    procs = [
        proc(1, "small", mem=2 * GIB),
        proc(2, "big", mem=30 * GIB),
        proc(3, "mid", mem=10 * GIB),
    ]
    q = {"t": GpuQuota("t", gpu_memory_bytes=20 * GIB)}
    (v,) = evaluate(usage(procs, {}), q)
    assert v.kind == "gpuMemoryBytes" and v.measured == 42 * GIB and v.limit == 20 * GIB
    assert v.pods == ("uid-big",)  # 42 - 30 = 12 GiB fits
    assert {p["pod"] for p in v.evidence["pods"]} == {"ns/small", "ns/big", "ns/mid"}


def test_mig_profile_count_and_unlisted_profiles_are_violations() -> None:
    procs = [
        proc(1, "a", gpu="G", gi=1, profile="1g.10gb"),
        proc(2, "b", gpu="G", gi=2, profile="1g.10gb"),
        proc(3, "c", gpu="G", gi=3, profile="3g.40gb"),
    ]
    q = {"t": GpuQuota("t", mig_instances={"1g.10gb": 1})}
    kinds = {v.kind: v for v in evaluate(usage(procs, {}), q)}
    assert set(kinds) == {"migInstances/1g.10gb", "migInstances/3g.40gb"}
    assert kinds["migInstances/1g.10gb"].measured == 2 and kinds["migInstances/1g.10gb"].limit == 1
    assert kinds["migInstances/3g.40gb"].limit == 0


def test_a_process_on_an_unallocated_device_is_a_violation_only_when_known() -> None:
    procs = [proc(1, "a", allocated=True), proc(2, "a", gpu="GPU-b", allocated=False)]
    q = {"t": GpuQuota("t", allocated_devices_only=True)}
    (v,) = evaluate(usage(procs, {}), q)
    assert v.kind == "allocatedDevicesOnly" and v.pods == ("uid-a",)
    assert v.evidence["unallocated"] == {"uid-a": ["GPU-b"]}
    unknown = [proc(1, "a", gpu="GPU-b", allocated=None)]
    assert evaluate(usage(unknown, {}), q) == []


def test_actions_wait_for_the_grace_period_and_happen_once_per_episode() -> None:
    procs = [proc(1, "a", mem=30 * GIB)]
    q = {
        "t": GpuQuota(
            "t", gpu_memory_bytes=20 * GIB, enforcement=Enforcement.KILL, grace_period_s=5
        )
    }
    u = usage(procs, {})
    v = evaluate(u, q)
    state = EnforcementState()
    actions, state = plan(v, q, u, state, 100.0)
    assert actions == []
    actions, state = plan(v, q, u, state, 104.9)
    assert actions == []
    actions, state = plan(v, q, u, state, 105.0)
    assert [(a.enforcement, a.target.pod, a.target.pids) for a in actions] == [
        (Enforcement.KILL, "a", (1,))
    ]
    actions, state = plan(v, q, u, state, 200.0)
    assert actions == [], "acted once; not again while the violation lasts"
    _, state = plan([], q, u, state, 201.0)
    assert state.first_seen == {} and state.acted == frozenset()
    actions, state = plan(v, q, u, state, 202.0)
    assert actions == [], "a new episode starts its own grace period"


def test_system_namespaces_are_never_acted_on_and_dry_run_is_carried() -> None:
    procs = [proc(1, "coredns", ns="kube-system", mem=30 * GIB)]
    q = {"t": GpuQuota("t", gpu_memory_bytes=GIB, enforcement=Enforcement.EVICT, grace_period_s=0)}
    u = usage(procs, {})
    (action,), _ = plan(evaluate(u, q), q, u, EnforcementState(), 0.0, dry_run=True)
    assert action.skipped == "system namespace" and action.dry_run


def test_kill_targets_only_the_processes_on_unallocated_devices() -> None:
    procs = [proc(1, "a", allocated=True), proc(2, "a", gpu="GPU-b", allocated=False)]
    q = {
        "t": GpuQuota(
            "t", allocated_devices_only=True, enforcement=Enforcement.KILL, grace_period_s=0
        )
    }
    u = usage(procs, {})
    (action,), _ = plan(evaluate(u, q), q, u, EnforcementState(), 0.0)
    assert action.target.pids == (2,)


def test_power_is_the_tenants_share_and_over_it_is_a_violation() -> None:
    procs = [proc(1, "a", mem=3 * GIB), proc(2, "b", mem=GIB)]
    u = usage(procs, {"t": 800.0})
    assert u["t"].pods["uid-a"].power_watts == 600.0 and u["t"].pods["uid-b"].power_watts == 200.0
    (v,) = evaluate(u, {"t": GpuQuota("t", power_watts=700)})
    assert v.kind == "powerWatts" and v.measured == 800.0 and v.pods == ("uid-a",)


def test_tenants_without_quotas_are_measured_but_never_violate() -> None:
    u = usage([proc(1, "a", mem=100 * GIB)], {})
    assert evaluate(u, {}) == []
