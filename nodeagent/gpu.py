"""What a GPU backend reports, and the one interface every backend implements.

A backend takes one :class:`NodeSnapshot` per call to ``sample()``: every GPU,
its MIG instances and the processes running on each. Fields a device cannot
report are ``None`` and named in ``unsupported`` (NVML said "not supported") or
``errors`` (any other failure, with the reason). A device that failed as a
whole (GPU lost, unknown error) is still listed, with ``ok=False``, so one bad
GPU never hides the others.

Backends (the httpx-transport shape: one method plus ``close``):

* :class:`nodeagent.nvml.NvmlBackend` -- the real driver through nvidia-ml-py.
* :class:`nodeagent.sim.SimulatedBackend` -- a YAML scenario with an injected clock.
* :class:`NoGpuBackend` -- no driver on this node: healthy, empty, says why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

#: Wall-clock seconds (``time.time``); injected so scenarios run on a fake clock.
Clock = Callable[[], float]


class BackendMode(StrEnum):
    NVML = "nvml"
    SIMULATED = "simulated"
    NO_GPU = "no-gpu"


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process using a GPU (or a MIG instance of it)."""

    pid: int
    gpu_uuid: str
    #: MIG GPU instance id, ``None`` on a GPU without MIG.
    gi_id: int | None = None
    ci_id: int | None = None
    #: ``None`` when the driver does not say (e.g. under MIG without privileges).
    used_memory_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class MigSample:
    """One MIG GPU instance (with its compute instance) of a GPU."""

    gi_id: int
    ci_id: int
    #: dcgm-exporter's ``GPU_I_PROFILE``, e.g. ``1g.10gb``.
    profile: str
    uuid: str = ""
    #: Compute slices of this instance (1 for ``1g.*``); splits the GPU's energy.
    slices: int = 1
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    #: NVML reports no utilisation for MIG instances (DCGM profiling does); so
    #: this is ``None`` and ``"utilization"`` is listed in ``unsupported``.
    utilization_pct: float | None = None
    unsupported: tuple[str, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One physical GPU at one instant."""

    index: int
    uuid: str
    name: str = ""
    #: False when the device failed as a whole; ``error`` says why.
    ok: bool = True
    error: str = ""
    mig_enabled: bool | None = None
    utilization_pct: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_watts: float | None = None
    #: The driver's total energy counter since it loaded, in joules.
    energy_joules: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    memory_clock_mhz: float | None = None
    ecc_corrected: int | None = None
    ecc_uncorrected: int | None = None
    #: XID error codes seen since the previous sample.
    xid_events: tuple[int, ...] = ()
    processes: tuple[ProcessSample, ...] = ()
    mig: tuple[MigSample, ...] = ()
    unsupported: tuple[str, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)

    #: Compute slices the GPU is cut into under MIG (7 on A100/H100, 4 on A30).
    mig_total_slices: int = 7


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """Everything one sample saw on this node."""

    time: float
    mode: BackendMode
    gpus: tuple[GpuSample, ...] = ()
    driver_version: str = ""
    #: Why the node is in no-GPU mode, or a backend-wide failure.
    detail: str = ""


class GpuBackend(Protocol):
    """One method plus ``close``; tests and benchmarks swap implementations freely."""

    @property
    def mode(self) -> BackendMode: ...

    def sample(self) -> NodeSnapshot:
        """Read every device now. Must not raise for a per-device failure."""
        ...

    def close(self) -> None: ...


class BackendUnavailable(Exception):
    """The backend cannot run on this node at all (no driver, no library)."""


class NoGpuBackend:
    """A node without an NVIDIA driver: reports nothing and says why."""

    def __init__(self, reason: str, clock: Clock | None = None) -> None:
        import time

        self._reason = reason
        self._now = clock or time.time

    @property
    def mode(self) -> BackendMode:
        return BackendMode.NO_GPU

    def sample(self) -> NodeSnapshot:
        return NodeSnapshot(time=self._now(), mode=BackendMode.NO_GPU, detail=self._reason)

    def close(self) -> None:
        return None
