"""Splitting each GPU's energy and time among the tenants on it, and counting them.

The rule (documented in docs/nodeagent.md):

* A GPU in MIG mode is split by MIG instance: an instance owns
  ``slices / total_slices`` of the GPU (a ``1g`` instance on an H100 owns 1/7),
  whoever runs on it. Slices with no instance, and instances with no process,
  are ``idle``.
* Within an instance, or on a GPU without MIG, the share is split among the
  processes by their used memory (equally when none reports memory).
* A GPU with no process is wholly ``idle``. A process without a tenant counts
  for ``unattributed``; nothing is guessed.

Energy per interval comes from the driver's total energy counter when it has one
(NVML, Volta and later), else from power x interval. GPU-seconds use the same
shares, so a tenant alone on a whole GPU accrues one GPU-second per second.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nodeagent.attribution import Attributed
from nodeagent.gpu import GpuSample, NodeSnapshot

IDLE = "idle"
UNATTRIBUTED = "unattributed"


def _by_memory(procs: Sequence[Attributed], weight: float, out: dict[str, float]) -> None:
    total = sum(p.used_memory_bytes for p in procs)
    for p in procs:
        part = p.used_memory_bytes / total if total > 0 else 1 / len(procs)
        key = p.tenant if p.attributed else UNATTRIBUTED
        out[key] = out.get(key, 0.0) + weight * part


def split(gpu: GpuSample, procs: Sequence[Attributed]) -> dict[str, float]:
    """Tenant (or ``idle``/``unattributed``) -> share of this GPU; shares sum to 1."""
    out: dict[str, float] = {}
    mine = [p for p in procs if p.gpu_uuid == gpu.uuid]
    if gpu.mig_enabled and gpu.mig:
        total = max(gpu.mig_total_slices, sum(m.slices for m in gpu.mig))
        used = 0.0
        for m in gpu.mig:
            weight = m.slices / total
            on = [p for p in mine if p.gi_id == m.gi_id]
            if on:
                _by_memory(on, weight, out)
                used += weight
        if used < 1.0:
            out[IDLE] = out.get(IDLE, 0.0) + (1.0 - used)
        return out
    if not mine:
        return {IDLE: 1.0}
    _by_memory(mine, 1.0, out)
    return out


@dataclass
class Ledger:
    """Per-tenant GPU-seconds and joules since the agent started (Prometheus counters)."""

    gpu_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    joules: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _last_time: float | None = None
    _last_energy: dict[str, float] = field(default_factory=dict)

    def add(self, snapshot: NodeSnapshot, procs: Iterable[Attributed]) -> dict[str, float]:
        """Account the interval since the previous snapshot; returns watts per tenant now."""
        procs = list(procs)
        dt = 0.0 if self._last_time is None else max(0.0, snapshot.time - self._last_time)
        self._last_time = snapshot.time
        power: dict[str, float] = defaultdict(float)
        seen: set[str] = set()
        for gpu in snapshot.gpus:
            if not gpu.ok:
                continue
            seen.add(gpu.uuid)
            shares = split(gpu, procs)
            joules = self._energy_delta(gpu, dt)
            for owner, share in shares.items():
                if gpu.power_watts is not None:
                    power[owner] += gpu.power_watts * share
                if dt > 0:
                    if owner != IDLE:
                        self.gpu_seconds[owner] += dt * share
                    self.joules[owner] += joules * share
        for gone in set(self._last_energy) - seen:
            del self._last_energy[gone]
        return dict(power)

    def _energy_delta(self, gpu: GpuSample, dt: float) -> float:
        counter = gpu.energy_joules
        previous = self._last_energy.get(gpu.uuid)
        if counter is not None:
            self._last_energy[gpu.uuid] = counter
            if previous is not None and counter >= previous:
                return counter - previous
        if gpu.power_watts is not None:
            return gpu.power_watts * dt
        return 0.0
