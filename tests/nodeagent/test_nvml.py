"""The NVML backend: no-driver mode for real, and per-field / per-device error handling.

No GPU machine was available to this work, so the driver itself is exercised only
through its absence (the real pynvml, no libnvidia-ml). The error handling is
tested against a scripted stand-in for the pynvml module, injected through the
backend's ``nvml`` parameter: it raises pynvml's own exception classes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from nodeagent.app import Options, make_backend
from nodeagent.gpu import BackendMode, BackendUnavailable
from nodeagent.nvml import NvmlBackend, mig_profile


def _driver_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_driver_present(), reason="a real NVIDIA driver is present")
def test_without_a_driver_the_backend_refuses_to_start_with_the_reason() -> None:
    with pytest.raises(BackendUnavailable, match="NVML could not start"):
        NvmlBackend()


@pytest.mark.skipif(_driver_present(), reason="a real NVIDIA driver is present")
def test_auto_mode_falls_back_to_a_healthy_no_gpu_mode_that_says_why() -> None:
    backend, *_ = make_backend(Options(node="n", backend="auto"))
    snap = backend.sample()
    assert backend.mode is BackendMode.NO_GPU and snap.gpus == ()
    assert "no NVIDIA driver" in snap.detail


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


class FakeNvml:
    """pynvml's surface as the backend uses it; each GPU scripted by a dict."""

    NVMLError = pynvml.NVMLError
    NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
    NVML_ERROR_GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST
    NVML_ERROR_NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    nvmlEventTypeXidCriticalError = 8

    def __init__(self, gpus: list[dict[str, Any]]) -> None:
        self.gpus = gpus
        self.xids: list[Any] = []
        self.shutdown = False

    def _v(self, h: dict[str, Any], key: str) -> Any:
        value = h[key]
        if isinstance(value, pynvml.NVMLError):
            raise value
        return value

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.gpus[i]

    def nvmlEventSetCreate(self) -> str:
        return "events"

    def nvmlEventSetFree(self, _: Any) -> None: ...
    def nvmlDeviceRegisterEvents(self, h: dict[str, Any], _t: int, _s: Any) -> None:
        if h.get("xid_unsupported"):
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlEventSetWait_v2(self, _s: Any, _timeout: int) -> Any:
        if not self.xids:
            raise _err(pynvml.NVML_ERROR_TIMEOUT)
        return self.xids.pop(0)

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str:
        return str(self._v(h, "uuid"))

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> str:
        return str(self._v(h, "name"))

    def nvmlDeviceGetMigMode(self, h: dict[str, Any]) -> list[int]:
        return [int(self._v(h, "mig")), int(h["mig"])]

    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> Any:
        return SimpleNamespace(gpu=self._v(h, "util"), memory=0)

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> Any:
        used, total = self._v(h, "memory")
        return SimpleNamespace(used=used, total=total, free=total - used)

    def nvmlDeviceGetPowerUsage(self, h: dict[str, Any]) -> int:
        return int(self._v(h, "power_mw"))

    def nvmlDeviceGetTotalEnergyConsumption(self, h: dict[str, Any]) -> int:
        return int(self._v(h, "energy_mj"))

    def nvmlDeviceGetTemperature(self, h: dict[str, Any], _s: int) -> int:
        return int(self._v(h, "temp"))

    def nvmlDeviceGetClockInfo(self, h: dict[str, Any], which: int) -> int:
        return int(self._v(h, "clocks")[which - 1])

    def nvmlDeviceGetTotalEccErrors(self, h: dict[str, Any], kind: int, _c: int) -> int:
        return int(self._v(h, "ecc")[kind])

    def nvmlDeviceGetComputeRunningProcesses(self, h: dict[str, Any]) -> list[Any]:
        return list(self._v(h, "procs"))

    def nvmlDeviceGetMaxMigDeviceCount(self, h: dict[str, Any]) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: dict[str, Any], i: int) -> dict[str, Any]:
        if i >= len(h["instances"]):
            raise _err(pynvml.NVML_ERROR_NOT_FOUND)
        return dict(h["instances"][i])

    def nvmlDeviceGetGpuInstanceId(self, m: dict[str, Any]) -> int:
        return int(m["gi"])

    def nvmlDeviceGetComputeInstanceId(self, m: dict[str, Any]) -> int:
        return 0

    def nvmlDeviceGetAttributes(self, m: dict[str, Any]) -> Any:
        return SimpleNamespace(gpuInstanceSliceCount=m["slices"], memorySizeMB=m["mem_mb"])


def healthy(i: int, **over: Any) -> dict[str, Any]:
    gpu = {
        "uuid": f"GPU-{i}",
        "name": "NVIDIA A100-SXM4-40GB",
        "mig": 0,
        "util": 42,
        "memory": (10 * 2**30, 40 * 2**30),
        "power_mw": 250_000,
        "energy_mj": 9_000_000,
        "temp": 61,
        "clocks": (1410, 1215),
        "ecc": (3, 0),
        "procs": [SimpleNamespace(pid=100 + i, usedGpuMemory=2**30)],
    }
    gpu.update(over)
    return gpu


def test_all_fields_are_read_and_converted_to_base_units() -> None:
    nv = FakeNvml([healthy(0)])
    (g,) = NvmlBackend(nvml=nv, clock=lambda: 5.0).sample().gpus
    assert g.ok and g.name == "NVIDIA A100-SXM4-40GB" and g.mig_enabled is False
    assert (g.utilization_pct, g.power_watts, g.energy_joules) == (42.0, 250.0, 9000.0)
    assert (g.temperature_c, g.sm_clock_mhz, g.memory_clock_mhz) == (61.0, 1410.0, 1215.0)
    assert (g.ecc_corrected, g.ecc_uncorrected) == (3, 0)
    assert [(p.pid, p.used_memory_bytes, p.gi_id) for p in g.processes] == [(100, 2**30, None)]
    assert g.unsupported == () and g.errors == {}


def test_not_supported_and_no_permission_are_per_field_and_the_rest_is_read() -> None:
    gpu = healthy(
        0,
        power_mw=_err(pynvml.NVML_ERROR_NOT_SUPPORTED),
        energy_mj=_err(pynvml.NVML_ERROR_NOT_SUPPORTED),
        ecc=_err(pynvml.NVML_ERROR_NOT_SUPPORTED),
        procs=_err(pynvml.NVML_ERROR_NO_PERMISSION),
    )
    (g,) = NvmlBackend(nvml=FakeNvml([gpu])).sample().gpus
    assert g.ok and g.power_watts is None and g.energy_joules is None and g.ecc_corrected is None
    assert set(g.unsupported) == {"power", "energy", "ecc"}
    assert g.errors == {"processes": "no permission"}
    assert g.utilization_pct == 42.0 and g.temperature_c == 61.0


def test_one_lost_gpu_is_reported_and_never_stops_the_others() -> None:
    gpus = [healthy(0), healthy(1, memory=_err(pynvml.NVML_ERROR_GPU_IS_LOST)), healthy(2)]
    snap = NvmlBackend(nvml=FakeNvml(gpus)).sample()
    assert [g.ok for g in snap.gpus] == [True, False, True]
    assert "GPU is lost" in snap.gpus[1].error and snap.gpus[1].uuid == "GPU-1"
    assert snap.gpus[2].processes[0].pid == 102


def instance(gi: int, slices: int, mem_mb: int, uuid: str, profile: str, used: int) -> Any:
    name = f"NVIDIA A100-SXM4-40GB MIG {profile}"
    return {
        "gi": gi,
        "slices": slices,
        "mem_mb": mem_mb,
        "uuid": uuid,
        "name": name,
        "memory": (used, mem_mb * 2**20),
    }


def test_mig_instances_profiles_and_per_instance_processes_are_read() -> None:
    gpu = healthy(
        0,
        mig=1,
        util=_err(pynvml.NVML_ERROR_NOT_SUPPORTED),
        instances=[
            instance(1, 3, 20096, "MIG-a", "3g.20gb", used=2**30),
            instance(5, 1, 4864, "MIG-b", "1g.5gb", used=0),
        ],
        procs=[SimpleNamespace(pid=7, usedGpuMemory=None, gpuInstanceId=5, computeInstanceId=0)],
    )
    (g,) = NvmlBackend(nvml=FakeNvml([gpu])).sample().gpus
    assert g.mig_enabled is True and g.utilization_pct is None and "utilization" in g.unsupported
    assert [(m.gi_id, m.profile, m.slices, m.uuid) for m in g.mig] == [
        (1, "3g.20gb", 3, "MIG-a"),
        (5, "1g.5gb", 1, "MIG-b"),
    ]
    assert all("utilization" in m.unsupported for m in g.mig)
    assert [(p.pid, p.gi_id, p.used_memory_bytes) for p in g.processes] == [(7, 5, None)]


def test_xid_events_are_drained_to_their_gpu() -> None:
    nv = FakeNvml([healthy(0), healthy(1)])
    backend = NvmlBackend(nvml=nv)
    nv.xids = [SimpleNamespace(device=nv.gpus[1], eventData=79)]
    snap = backend.sample()
    assert snap.gpus[0].xid_events == () and snap.gpus[1].xid_events == (79,)
    assert backend.sample().gpus[1].xid_events == ()
    backend.close()
    assert nv.shutdown


def test_the_a30_is_cut_into_four_slices_and_the_others_into_seven() -> None:
    from nodeagent.nvml import mig_slices_of

    assert mig_slices_of("NVIDIA A30") == 4
    assert mig_slices_of("NVIDIA H100 80GB HBM3") == 7
    assert mig_slices_of("NVIDIA A100-SXM4-40GB") == 7


def test_mig_profile_names_come_from_the_device_name_or_the_attributes() -> None:
    assert mig_profile("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 1, 9856) == "1g.10gb"
    assert mig_profile("", 2, 20096) == "2g.20gb"
    assert mig_profile("", 0, 0) == "unknown"


def test_no_gpu_mode_runs_when_asked_even_with_a_driver(tmp_path: Path) -> None:
    backend, *_ = make_backend(Options(node="n", backend="none", proc_root=tmp_path))
    assert backend.mode is BackendMode.NO_GPU


def test_when_the_parent_refuses_processes_each_mig_instance_is_asked() -> None:
    gpu = healthy(
        0,
        mig=1,
        instances=[
            {**instance(1, 3, 20096, "MIG-a", "3g.20gb", used=0), "procs": []},
            {
                **instance(2, 1, 4864, "MIG-b", "1g.5gb", used=0),
                "procs": [SimpleNamespace(pid=77, usedGpuMemory=None)],
            },
        ],
        procs=_err(pynvml.NVML_ERROR_NO_PERMISSION),
    )
    (g,) = NvmlBackend(nvml=FakeNvml([gpu])).sample().gpus
    assert [(p.pid, p.gi_id) for p in g.processes] == [(77, 2)]
    assert "processes" not in g.errors
