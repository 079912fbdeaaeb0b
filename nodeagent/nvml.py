"""The real GPU backend: NVIDIA's NVML through nvidia-ml-py (``pynvml``).

Every field is read on its own and every device on its own. NVML errors map to::

    NVMLError_NotSupported   -> field is None, listed in GpuSample.unsupported
    NVMLError_NoPermission   -> field is None, errors[field] = "no permission"
    NVMLError_GPUIsLost      -> device ok=False, error="GPU is lost"; others go on
    any other NVMLError      -> field is None, errors[field] = the message
    nvmlInit fails           -> BackendUnavailable (the agent runs in no-GPU mode)

MIG: a GPU's MIG mode, its instances (``nvmlDeviceGetMigDeviceHandleByIndex``),
their GPU/compute instance ids, profile (from the MIG device name, e.g.
``... MIG 1g.10gb``), slice count and memory. NVML has no utilisation for MIG
instances (DCGM's profiling fields do); ``"utilization"`` is listed unsupported.
Processes come from ``nvmlDeviceGetComputeRunningProcesses`` on the parent GPU,
which names each one's GPU instance. XID errors come from an NVML event set,
polled without waiting at each sample.

Verified here only without a driver (no GPU machine was available to this work);
see docs/nodeagent.md.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from nodeagent.gpu import (
    BackendMode,
    BackendUnavailable,
    Clock,
    GpuSample,
    MigSample,
    NodeSnapshot,
    ProcessSample,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_NA = 0xFFFFFFFF  # NVML's "not applicable" for instance ids


class _DeviceLost(Exception):
    pass


class _Fields:
    """Collects one device's per-field failures while its fields are read."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.unsupported: list[str] = []
        self.errors: dict[str, str] = {}

    def get(self, name: str, fn: Callable[[], T]) -> T | None:
        nv = self.nvml
        try:
            return fn()
        except nv.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == nv.NVML_ERROR_NOT_SUPPORTED:
                self.unsupported.append(name)
            elif code == nv.NVML_ERROR_GPU_IS_LOST:
                raise _DeviceLost(str(exc)) from exc
            elif code == nv.NVML_ERROR_NO_PERMISSION:
                self.errors[name] = "no permission"
            else:
                self.errors[name] = str(exc)
            return None


class NvmlBackend:
    """A :class:`nodeagent.gpu.GpuBackend` over NVML. ``nvml`` is injectable for tests."""

    def __init__(self, nvml: Any = None, clock: Clock | None = None) -> None:
        if nvml is None:
            try:
                import pynvml
            except ImportError as exc:  # pragma: no cover - dependency is declared
                raise BackendUnavailable(f"nvidia-ml-py is not installed: {exc}") from exc
            nvml = pynvml
        self._nv = nvml
        self._now = clock or time.time
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise BackendUnavailable(f"NVML could not start: {exc}") from exc
        self.driver_version = self._str(lambda: nvml.nvmlSystemGetDriverVersion()) or ""
        self._events: Any = None
        #: sample() runs in a worker thread; close() must not shut NVML down under it
        self._lock = threading.Lock()
        self._init_xid_events()

    @property
    def mode(self) -> BackendMode:
        return BackendMode.NVML

    @staticmethod
    def _str(fn: Callable[[], Any]) -> str | None:
        try:
            v = fn()
        except Exception:
            return None
        return v.decode() if isinstance(v, bytes) else str(v)

    def _init_xid_events(self) -> None:
        nv = self._nv
        try:
            self._events = nv.nvmlEventSetCreate()
        except nv.NVMLError as exc:
            log.info("XID events unavailable: %s", exc)
            return
        for i in range(self._count()):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                nv.nvmlDeviceRegisterEvents(handle, nv.nvmlEventTypeXidCriticalError, self._events)
            except nv.NVMLError as exc:
                log.info("XID events not registered for GPU %d: %s", i, exc)

    def _count(self) -> int:
        try:
            return int(self._nv.nvmlDeviceGetCount())
        except self._nv.NVMLError:
            return 0

    def _drain_xids(self) -> dict[str, list[int]]:
        """XID codes per GPU UUID since the last sample (non-blocking)."""
        nv = self._nv
        out: dict[str, list[int]] = {}
        if self._events is None:
            return out
        for _ in range(64):
            try:
                data = nv.nvmlEventSetWait_v2(self._events, 0)
            except nv.NVMLError:
                break  # NVML_ERROR_TIMEOUT: nothing pending
            uuid = self._str(functools.partial(nv.nvmlDeviceGetUUID, data.device)) or "?"
            out.setdefault(uuid, []).append(int(data.eventData))
        return out

    def sample(self) -> NodeSnapshot:
        with self._lock:
            return self._sample()

    def _sample(self) -> NodeSnapshot:
        count = self._count()
        xids = self._drain_xids()
        gpus = tuple(self._device(i, xids) for i in range(count))
        return NodeSnapshot(
            time=self._now(), mode=BackendMode.NVML, gpus=gpus, driver_version=self.driver_version
        )

    def _device(self, index: int, xids: dict[str, list[int]]) -> GpuSample:
        nv = self._nv
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = self._str(lambda: nv.nvmlDeviceGetUUID(handle)) or f"index-{index}"
        except nv.NVMLError as exc:
            return GpuSample(index=index, uuid=f"index-{index}", ok=False, error=str(exc))
        f = _Fields(nv)
        try:
            return self._read(index, handle, uuid, f, xids.get(uuid, []))
        except _DeviceLost as exc:
            return GpuSample(index=index, uuid=uuid, ok=False, error=f"GPU is lost: {exc}")
        except Exception as exc:  # one bad GPU never stops the others
            log.warning("GPU %d (%s) could not be read: %s", index, uuid, exc)
            return GpuSample(index=index, uuid=uuid, ok=False, error=str(exc))

    def _read(self, index: int, h: Any, uuid: str, f: _Fields, xids: list[int]) -> GpuSample:
        nv = self._nv
        name = f.get("name", lambda: nv.nvmlDeviceGetName(h))
        mig_mode = f.get("mig_mode", lambda: nv.nvmlDeviceGetMigMode(h))
        mig_enabled = bool(mig_mode[0]) if mig_mode is not None else None
        util = None
        if mig_enabled:  # NVML reports no GPU utilisation in MIG mode
            f.unsupported.append("utilization")
        else:
            util = f.get("utilization", lambda: nv.nvmlDeviceGetUtilizationRates(h))
        mem = f.get("memory", lambda: nv.nvmlDeviceGetMemoryInfo(h))
        power_mw = f.get("power", lambda: nv.nvmlDeviceGetPowerUsage(h))
        energy_mj = f.get("energy", lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h))
        temp = f.get("temperature", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
        sm = f.get("sm_clock", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
        memclk = f.get("memory_clock", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM))
        ecc_c = f.get(
            "ecc",
            lambda: nv.nvmlDeviceGetTotalEccErrors(
                h, nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_VOLATILE_ECC
            ),
        )
        ecc_u = (
            None
            if "ecc" in f.unsupported
            else f.get(
                "ecc_uncorrected",
                lambda: nv.nvmlDeviceGetTotalEccErrors(
                    h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC
                ),
            )
        )
        procs = f.get("processes", lambda: nv.nvmlDeviceGetComputeRunningProcesses(h)) or []
        processes = tuple(self._process(p, uuid) for p in procs)
        instances = self._mig(h, f) if mig_enabled else []
        mig = tuple(sample for sample, _ in instances)
        if instances and "processes" in f.errors:
            # The parent GPU refused the process list; each MIG instance may still answer.
            processes = self._mig_processes(uuid, instances, f)
        if self._events is None:
            f.unsupported.append("xid")
        return GpuSample(
            index=index,
            uuid=uuid,
            name=(name.decode() if isinstance(name, bytes) else str(name or "")),
            mig_enabled=mig_enabled,
            utilization_pct=float(util.gpu) if util is not None else None,
            memory_used_bytes=int(mem.used) if mem is not None else None,
            memory_total_bytes=int(mem.total) if mem is not None else None,
            power_watts=power_mw / 1000.0 if power_mw is not None else None,
            energy_joules=energy_mj / 1000.0 if energy_mj is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            sm_clock_mhz=float(sm) if sm is not None else None,
            memory_clock_mhz=float(memclk) if memclk is not None else None,
            ecc_corrected=int(ecc_c) if ecc_c is not None else None,
            ecc_uncorrected=int(ecc_u) if ecc_u is not None else None,
            xid_events=tuple(xids),
            processes=processes,
            mig=mig,
            mig_total_slices=mig_slices_of(str(name or "")),
            unsupported=tuple(dict.fromkeys(f.unsupported)),
            errors=dict(f.errors),
        )

    @staticmethod
    def _process(p: Any, uuid: str) -> ProcessSample:
        gi = getattr(p, "gpuInstanceId", _NA)
        ci = getattr(p, "computeInstanceId", _NA)
        used = getattr(p, "usedGpuMemory", None)
        return ProcessSample(
            pid=int(p.pid),
            gpu_uuid=uuid,
            gi_id=None if gi in (None, _NA) else int(gi),
            ci_id=None if ci in (None, _NA) else int(ci),
            used_memory_bytes=int(used) if used is not None else None,
        )

    def _mig_processes(
        self, uuid: str, instances: list[tuple[MigSample, Any]], f: _Fields
    ) -> tuple[ProcessSample, ...]:
        nv = self._nv
        out: list[ProcessSample] = []
        answered = False
        for sample, handle in instances:
            pf = _Fields(nv)
            query = functools.partial(nv.nvmlDeviceGetComputeRunningProcesses, handle)
            procs = pf.get("processes", query)
            if procs is None:
                f.errors[f"processes/gi{sample.gi_id}"] = pf.errors.get("processes", "unsupported")
                continue
            answered = True
            for p in procs:
                used = getattr(p, "usedGpuMemory", None)
                out.append(
                    ProcessSample(
                        pid=int(p.pid),
                        gpu_uuid=uuid,
                        gi_id=sample.gi_id,
                        ci_id=sample.ci_id,
                        used_memory_bytes=int(used) if used is not None else None,
                    )
                )
        if answered:
            f.errors.pop("processes", None)
        return tuple(out)

    def _mig(self, h: Any, f: _Fields) -> list[tuple[MigSample, Any]]:
        nv = self._nv
        count = f.get("mig_count", lambda: nv.nvmlDeviceGetMaxMigDeviceCount(h)) or 0
        out: list[tuple[MigSample, Any]] = []
        for i in range(int(count)):
            try:
                m = nv.nvmlDeviceGetMigDeviceHandleByIndex(h, i)
            except nv.NVMLError as exc:
                if getattr(exc, "value", None) == nv.NVML_ERROR_GPU_IS_LOST:
                    raise _DeviceLost(str(exc)) from exc
                continue  # NOT_FOUND: no instance in this slot
            out.append((self._mig_instance(m), m))
        return out

    def _mig_instance(self, m: Any) -> MigSample:
        nv = self._nv
        mf = _Fields(nv)
        gi = mf.get("gi_id", lambda: nv.nvmlDeviceGetGpuInstanceId(m))
        ci = mf.get("ci_id", lambda: nv.nvmlDeviceGetComputeInstanceId(m))
        name = self._str(lambda: nv.nvmlDeviceGetName(m)) or ""
        attrs = mf.get("attributes", lambda: nv.nvmlDeviceGetAttributes(m))
        mem = mf.get("memory", lambda: nv.nvmlDeviceGetMemoryInfo(m))
        mig_uuid = self._str(lambda: nv.nvmlDeviceGetUUID(m)) or ""
        slices = int(getattr(attrs, "gpuInstanceSliceCount", 0) or 0) if attrs else 0
        profile = mig_profile(name, slices, getattr(attrs, "memorySizeMB", 0) if attrs else 0)
        return MigSample(
            gi_id=int(gi) if gi is not None else -1,
            ci_id=int(ci) if ci is not None else -1,
            profile=profile,
            uuid=mig_uuid,
            slices=slices or int(profile.split("g", 1)[0] or 1),
            memory_used_bytes=int(mem.used) if mem is not None else None,
            memory_total_bytes=int(mem.total) if mem is not None else None,
            unsupported=("utilization", *mf.unsupported),
            errors=dict(mf.errors),
        )

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        nv = self._nv
        try:
            if self._events is not None:
                nv.nvmlEventSetFree(self._events)
            nv.nvmlShutdown()
        except nv.NVMLError as exc:
            log.debug("NVML shutdown: %s", exc)


def mig_profile(device_name: str, slices: int, memory_mb: int) -> str:
    """dcgm-exporter's ``GPU_I_PROFILE`` for a MIG device.

    The MIG device's name ends with the profile (``NVIDIA H100 80GB HBM3 MIG 1g.10gb``);
    failing that it is rebuilt from the slice count and memory size.
    """
    marker = " MIG "
    if marker in device_name:
        return device_name.rsplit(marker, 1)[1].strip()
    if slices:
        return f"{slices}g.{round(memory_mb / 1024)}gb"
    return "unknown"


def mig_slices_of(device_name: str) -> int:
    """Compute slices a MIG-capable GPU is cut into: 4 on the A30, 7 on the others."""
    return 4 if " A30" in f" {device_name}" else 7


def open_backend(clock: Clock | None = None) -> NvmlBackend:
    """The NVML backend, or :class:`BackendUnavailable` with the reason."""
    return NvmlBackend(clock=clock)
