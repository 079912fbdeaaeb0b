"""Tenant GPU quotas: usage + quotas -> violations -> actions. Pure, no I/O.

::

    attributed processes ──usage()──► TenantUsage per tenant
    TenantUsage + GpuQuota ──evaluate()──► [Violation]
    [Violation] + EnforcementState + now ──plan()──► [Action], new state

Usage counts only attributed processes (a tenant is never charged for, and no
one ever acts on, anything unattributed). What is counted:

* ``gpus``: distinct whole GPUs (not in MIG mode) the tenant's processes run on;
* ``gpuMemoryBytes``: the memory its processes use, on whole GPUs and MIG alike;
* ``migInstances``: distinct MIG instances per profile it runs on;
* ``powerWatts``: its share of GPU power by the rule in :mod:`nodeagent.energy`;
* ``allocatedDevicesOnly``: a process on a device the kubelet did not allocate to
  its pod (known allocations only; when the kubelet cannot be asked, no verdict).

A violation is acted on once it has lasted ``gracePeriodSeconds``, once per
episode (it must clear before it can be acted on again). Targets: the pods
contributing most, largest first, until the rest would fit the limit; for an
unallocated device, the pods with processes on such devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from nodeagent.attribution import Attributed

DEFAULT_SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


class Enforcement(StrEnum):
    REPORT = "report"
    EVICT = "evict"
    KILL = "kill"


class QuotaError(ValueError):
    """A ``gpuQuota`` in a bundle is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class GpuQuota:
    tenant: str
    gpus: int | None = None
    gpu_memory_bytes: int | None = None
    mig_instances: Mapping[str, int] = field(default_factory=dict)
    power_watts: float | None = None
    allocated_devices_only: bool = False
    enforcement: Enforcement = Enforcement.REPORT
    grace_period_s: float = 30.0


def _opt_num(q: Mapping[str, Any], key: str, where: str) -> float | None:
    v = q.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise QuotaError(f"{where}.{key}: expected a non-negative number, got {v!r}")
    return float(v)


def quotas_from_bundle(spec: Mapping[str, Any]) -> tuple[dict[str, GpuQuota], dict[str, str]]:
    """Quotas per tenant and tenant per namespace, from a bundle's ``spec``.

    Accepts the whole document too (``{"spec": {...}}``).
    """
    if "spec" in spec and isinstance(spec["spec"], Mapping):
        spec = spec["spec"]
    quotas: dict[str, GpuQuota] = {}
    namespaces: dict[str, str] = {}
    for i, t in enumerate(spec.get("tenants") or []):
        where = f"spec.tenants[{i}]"
        if not isinstance(t, Mapping) or not isinstance(t.get("name"), str):
            raise QuotaError(f"{where}: needs a name")
        name = t["name"]
        for ns in t.get("namespaces") or []:
            namespaces[str(ns)] = name
        q = t.get("gpuQuota")
        if q is None:
            continue
        if not isinstance(q, Mapping):
            raise QuotaError(f"{where}.gpuQuota: expected a mapping")
        w = f"{where}.gpuQuota"
        mig = q.get("migInstances") or {}
        if not isinstance(mig, Mapping) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in mig.values()
        ):
            raise QuotaError(f"{w}.migInstances: expected profile -> non-negative count")
        try:
            enforcement = Enforcement(q.get("enforcement", "report"))
        except ValueError as exc:
            raise QuotaError(f"{w}.enforcement: must be report, evict or kill") from exc
        gpus = _opt_num(q, "gpus", w)
        mem = _opt_num(q, "gpuMemoryBytes", w)
        grace = _opt_num(q, "gracePeriodSeconds", w)
        quotas[name] = GpuQuota(
            tenant=name,
            gpus=int(gpus) if gpus is not None else None,
            gpu_memory_bytes=int(mem) if mem is not None else None,
            mig_instances={str(k): int(v) for k, v in mig.items()},
            power_watts=_opt_num(q, "powerWatts", w),
            allocated_devices_only=bool(q.get("allocatedDevicesOnly", False)),
            enforcement=enforcement,
            grace_period_s=30.0 if grace is None else grace,
        )
    return quotas, namespaces


@dataclass
class PodUsage:
    uid: str
    name: str
    namespace: str
    gpus: set[str] = field(default_factory=set)
    memory_bytes: int = 0
    mig: dict[str, set[str]] = field(default_factory=dict)
    power_watts: float = 0.0
    pids: set[int] = field(default_factory=set)
    unallocated: set[str] = field(default_factory=set)
    unallocated_pids: set[int] = field(default_factory=set)


@dataclass
class TenantUsage:
    tenant: str
    pods: dict[str, PodUsage] = field(default_factory=dict)
    power_watts: float = 0.0

    @property
    def gpus(self) -> set[str]:
        return set().union(*(p.gpus for p in self.pods.values())) if self.pods else set()

    @property
    def memory_bytes(self) -> int:
        return sum(p.memory_bytes for p in self.pods.values())

    def mig(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for p in self.pods.values():
            for profile, keys in p.mig.items():
                out.setdefault(profile, set()).update(keys)
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "gpus": len(self.gpus),
            "gpuMemoryBytes": self.memory_bytes,
            "migInstances": {k: len(v) for k, v in sorted(self.mig().items())},
            "powerWatts": round(self.power_watts, 3),
            "pods": sorted(f"{p.namespace}/{p.name}" for p in self.pods.values()),
        }


def usage(procs: Iterable[Attributed], power: Mapping[str, float]) -> dict[str, TenantUsage]:
    """Per-tenant usage from attributed processes; ``power`` from the energy split."""
    out: dict[str, TenantUsage] = {}
    for p in procs:
        if not p.attributed:
            continue
        t = out.setdefault(p.tenant, TenantUsage(p.tenant))
        pod = t.pods.setdefault(p.pod_uid, PodUsage(p.pod_uid, p.pod, p.namespace))
        pod.pids.add(p.pid)
        pod.memory_bytes += p.used_memory_bytes
        if p.gi_id is None:
            pod.gpus.add(p.gpu_uuid)
        else:
            pod.mig.setdefault(p.profile, set()).add(p.device_key)
        if p.allocated is False:
            pod.unallocated.add(p.device_key)
            pod.unallocated_pids.add(p.pid)
    for name, t in out.items():
        t.power_watts = power.get(name, 0.0)
        total_mem = t.memory_bytes
        for pod in t.pods.values():  # pods' power by their memory share within the tenant
            share = pod.memory_bytes / total_mem if total_mem else 1 / len(t.pods)
            pod.power_watts = t.power_watts * share
    return out


@dataclass(frozen=True, slots=True)
class Violation:
    tenant: str
    #: ``gpus``, ``gpuMemoryBytes``, ``migInstances/<profile>``, ``powerWatts``,
    #: ``allocatedDevicesOnly``
    kind: str
    measured: float
    limit: float
    #: pod UIDs chosen as targets, in order
    pods: tuple[str, ...]
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.kind}"


def _greedy(
    pods: Sequence[PodUsage], measure: Any, measured: float, limit: float
) -> tuple[str, ...]:
    chosen: list[str] = []
    remaining = measured
    for pod in sorted(pods, key=lambda p: (-measure(p), p.namespace, p.name)):
        if remaining <= limit:
            break
        contribution = float(measure(pod))
        if contribution <= 0:
            continue
        chosen.append(pod.uid)
        remaining -= contribution
    return tuple(chosen)


def _pod_evidence(t: TenantUsage) -> list[dict[str, Any]]:
    return [
        {
            "pod": f"{p.namespace}/{p.name}",
            "uid": p.uid,
            "gpus": sorted(p.gpus),
            "gpuMemoryBytes": p.memory_bytes,
            "migInstances": {k: sorted(v) for k, v in sorted(p.mig.items())},
            "powerWatts": round(p.power_watts, 3),
            "pids": sorted(p.pids),
        }
        for p in sorted(t.pods.values(), key=lambda p: (p.namespace, p.name))
    ]


def evaluate(usages: Mapping[str, TenantUsage], quotas: Mapping[str, GpuQuota]) -> list[Violation]:
    """Every quota exceeded right now, with the pods to act on and the evidence."""
    out: list[Violation] = []
    for name in sorted(usages):
        q = quotas.get(name)
        if q is not None:
            out.extend(_evaluate_tenant(usages[name], q))
    return out


def _evaluate_tenant(t: TenantUsage, q: GpuQuota) -> list[Violation]:
    out: list[Violation] = []
    pods = list(t.pods.values())
    ev = {"pods": _pod_evidence(t)}

    def check(kind: str, measured: float, limit: float | None, measure: Any) -> None:
        if limit is not None and measured > limit:
            targets = _greedy(pods, measure, measured, limit)
            out.append(Violation(t.tenant, kind, measured, limit, targets, ev))

    check("gpus", len(t.gpus), q.gpus, lambda p: len(p.gpus))
    check("gpuMemoryBytes", t.memory_bytes, q.gpu_memory_bytes, lambda p: p.memory_bytes)
    mig = t.mig()
    for profile in sorted(set(mig) | set(q.mig_instances)):
        # A quota that lists MIG profiles allows none of the profiles it omits.
        limit = q.mig_instances.get(profile, 0 if q.mig_instances else None)
        check(
            f"migInstances/{profile}",
            len(mig.get(profile, set())),
            limit,
            lambda p, prof=profile: len(p.mig.get(prof, set())),
        )
    check("powerWatts", t.power_watts, q.power_watts, lambda p: p.power_watts)
    bad = sorted((p for p in pods if p.unallocated), key=lambda p: (p.namespace, p.name))
    if q.allocated_devices_only and bad:
        evidence = {**ev, "unallocated": {p.uid: sorted(p.unallocated) for p in bad}}
        measured = float(sum(len(p.unallocated) for p in bad))
        out.append(
            Violation(
                t.tenant,
                "allocatedDevicesOnly",
                measured,
                0.0,
                tuple(p.uid for p in bad),
                evidence,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Target:
    uid: str
    pod: str
    namespace: str
    #: processes of this pod to signal (kill); only ones attributed to it
    pids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Action:
    violation: Violation
    enforcement: Enforcement
    target: Target
    dry_run: bool
    #: non-empty when the action must not be carried out (system namespace, ...)
    skipped: str = ""


@dataclass(frozen=True, slots=True)
class EnforcementState:
    """Violation key -> when it was first seen, and keys already acted on this episode."""

    first_seen: Mapping[str, float] = field(default_factory=dict)
    acted: frozenset[str] = frozenset()


def plan(
    violations: Sequence[Violation],
    quotas: Mapping[str, GpuQuota],
    usages: Mapping[str, TenantUsage],
    state: EnforcementState,
    now: float,
    *,
    dry_run: bool = False,
    system_namespaces: frozenset[str] = DEFAULT_SYSTEM_NAMESPACES,
) -> tuple[list[Action], EnforcementState]:
    """Actions due now (grace elapsed, not yet taken this episode), and the next state."""
    current = {v.key for v in violations}
    first = {k: t for k, t in state.first_seen.items() if k in current}
    acted = {k for k in state.acted if k in current}
    actions: list[Action] = []
    for v in violations:
        since = first.setdefault(v.key, now)
        q = quotas[v.tenant]
        if v.key in acted or now - since < q.grace_period_s:
            continue
        acted.add(v.key)
        tenant = usages[v.tenant]
        for uid in v.pods:
            pod = tenant.pods[uid]
            pids = pod.unallocated_pids if v.kind == "allocatedDevicesOnly" else pod.pids
            target = Target(uid, pod.name, pod.namespace, tuple(sorted(pids)))
            skipped = "system namespace" if pod.namespace in system_namespaces else ""
            actions.append(Action(v, q.enforcement, target, dry_run, skipped))
    return actions, replace(state, first_seen=first, acted=frozenset(acted))
