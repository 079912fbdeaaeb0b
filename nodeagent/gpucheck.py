"""``scripts/gpu-check``: the node agent's GPU path on a real GPU, in one short run.

Steps, each timed and judged PASS / FAIL / SKIP::

    environment    interpreter, kernel, the driver's libraries, /dev/nvidia*
    nvidia-ml-py   present, else from a wheelhouse (a carried *.whl, imported as is,
                   or pip --no-index), else from the package index when reachable
    cuda-process   a child process takes a CUDA context and a few hundred MiB of
                   GPU memory through the driver's own libcuda (ctypes: cuInit,
                   cuDeviceGet, cuCtxCreate, cuMemAlloc, cuMemsetD8), then sleeps;
                   no CUDA toolkit, no framework
    nvml-backend   nodeagent.nvml.NvmlBackend, the agent's own backend, samples
    telemetry      per GPU: name, UUID, memory, utilisation, power, energy counter,
                   temperature, clocks, ECC; what is unsupported, what failed
    processes      NVML's compute processes with memory: the child must be listed
    mig            MIG mode and instances, read only
    attribution    what nodeagent.attribution makes of the child (a host process:
                   it is in no pod)
    energy         the agent's energy ledger over two samples
    cleanup        the child frees its memory and exits; NVML shut down

Read only: nothing here changes a GPU setting (no MIG mode, clocks, power limit,
persistence or reset call is made; tests/nodeagent/test_gpu_check.py checks the
source for them).

Without an NVIDIA driver (``--no-gpu``, or found absent) it is a rehearsal: it
says why there is no GPU, then runs the same steps with NvmlBackend reading a
stand-in for the pynvml module (one whole GPU listing a real child process, one
GPU in MIG mode) instead of the driver, and exits 0 only when they all pass.

Imports nothing beyond the standard library and the agent's pure modules
(``nodeagent.gpu``, ``nvml``, ``cgroup``, ``pods``, ``attribution``, ``energy``);
``nvidia-ml-py`` is needed on a GPU machine only.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
import glob
import importlib
import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any, Literal

from nodeagent import attribution, energy
from nodeagent.cgroup import Namespace, ProcCgroupReader
from nodeagent.gpu import BackendUnavailable, GpuSample, NodeSnapshot
from nodeagent.nvml import NvmlBackend
from nodeagent.pods import PodIndex

Status = Literal["PASS", "FAIL", "SKIP"]
MIB = 1 << 20
#: Where NVIDIA's user-space driver libraries live when they are not on the
#: loader's path: the container toolkit's mount, distributions, the GPU
#: Operator's driver container, WSL. Never the toolkit's ``stubs`` directory.
DRIVER_DIRS = (
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/run/nvidia/driver/usr/lib/x86_64-linux-gnu",
    "/run/nvidia/driver/usr/lib64",
    "/usr/lib/wsl/lib",
)
#: Modules a check on a bare GPU machine must not need (the agent's daemon stack).
HEAVY = ("aiohttp", "grpc", "kubernetes_asyncio", "prometheus_client", "rich", "yaml", "palisade")


@dataclass
class Step:
    name: str
    status: Status = "PASS"
    seconds: float = 0.0
    summary: str = ""
    lines: list[str] = field(default_factory=list)


@dataclass
class Report:
    mode: str
    steps: list[Step] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    out: IO[str] = sys.stdout

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        s = Step(name)
        started = time.perf_counter()
        try:
            yield s
        except Exception as exc:  # a broken step is reported, the rest still run
            s.status = "FAIL"
            s.summary = f"{s.summary + '; ' if s.summary else ''}{type(exc).__name__}: {exc}"
        finally:
            s.seconds = time.perf_counter() - started
            self.steps.append(s)
            self._print(s)

    def _print(self, s: Step) -> None:
        print(f"[{s.seconds:7.3f} s] {s.name:<13} {s.status}  {s.summary}", file=self.out)
        for line in s.lines:
            print(f"    {line}", file=self.out)
        self.out.flush()

    @property
    def failed(self) -> list[Step]:
        return [s for s in self.steps if s.status == "FAIL"]


# -- driver libraries ------------------------------------------------------------
def find_library(soname: str) -> tuple[str, str]:
    """``(path or soname, "")`` of a loadable driver library, or ``("", why not)``."""
    try:
        ctypes.CDLL(soname)
        return soname, ""
    except OSError as exc:
        first = str(exc)
    for d in DRIVER_DIRS:
        path = os.path.join(d, soname)
        if os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return path, ""
            except OSError as exc:
                first = f"{path}: {exc}"
    return "", first


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def ensure_pynvml(wheelhouse: str, allow_install: bool) -> tuple[Any, str]:
    """The pynvml module and how it was found, or ``(None, why not)``."""
    with contextlib.suppress(ImportError):
        return importlib.import_module(
            "pynvml"
        ), f"present: nvidia-ml-py {_version('nvidia-ml-py')}"
    notes: list[str] = []
    if wheelhouse:
        # nvidia-ml-py is one pure-Python module: its wheel imports as it is (zipimport).
        wheels = sorted(glob.glob(os.path.join(wheelhouse, "nvidia_ml_py-*.whl")))
        if wheels:
            sys.path.insert(0, wheels[-1])
            with contextlib.suppress(ImportError):
                return importlib.import_module("pynvml"), f"from wheelhouse: {wheels[-1]}"
            sys.path.remove(wheels[-1])
        notes.append(f"no usable nvidia_ml_py-*.whl in {wheelhouse}")
    if not allow_install:
        return None, "; ".join([*notes, "nvidia-ml-py is not installed (--no-install)"])
    target = tempfile.mkdtemp(prefix="gpu-check-site-")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    cmd += ["--no-deps", "--target", target]
    if wheelhouse:
        cmd += ["--no-index", "--find-links", wheelhouse]
    else:
        cmd += ["--timeout", "10", "--retries", "0"]
    try:
        run = subprocess.run(
            [*cmd, "nvidia-ml-py"], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, "; ".join([*notes, f"pip could not run: {exc}"])
    if run.returncode != 0:
        tail = (run.stderr.strip().splitlines() or ["?"])[-1]
        where = "the wheelhouse" if wheelhouse else "the package index"
        return None, "; ".join([*notes, f"nvidia-ml-py not installed from {where}: {tail}"])
    sys.path.insert(0, target)
    try:
        module = importlib.import_module("pynvml")
    except ImportError as exc:
        return None, f"installed into {target} but not importable: {exc}"
    src = "wheelhouse" if wheelhouse else "package index"
    return module, f"installed from the {src} into {target}"


# -- the CUDA process (a child) -------------------------------------------------------
class CudaError(Exception):
    pass


def _cuda_call(lib: Any, name: str, *args: Any) -> None:
    fn = getattr(lib, name)
    res = int(fn(*args))
    if res != 0:
        msg = ctypes.c_char_p()
        with contextlib.suppress(Exception):
            lib.cuGetErrorName(res, ctypes.byref(msg))
        label = msg.value.decode() if msg.value else "?"
        raise CudaError(f"{name} returned {res} ({label})")


def cuda_child(device: int, mib: int, hold_s: float, out: IO[str]) -> int:
    """Hold a CUDA context and ``mib`` MiB on ``device`` until stdin closes or ``hold_s``.

    Prints one JSON line: ``{"ready": true, ...}`` once the memory is held, else
    ``{"ready": false, "error": ...}``.
    """
    try:
        return _cuda_child(device, mib, hold_s, out)
    except Exception as exc:  # whatever broke, the parent gets one line saying what
        print(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}), file=out)
        out.flush()
        return 1


def _cuda_child(device: int, mib: int, hold_s: float, out: IO[str]) -> int:
    path, why = find_library("libcuda.so.1")
    if not path:
        print(json.dumps({"ready": False, "error": f"libcuda.so.1 not found: {why}"}), file=out)
        return 1
    lib = ctypes.CDLL(path)
    lib.cuGetErrorName.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
    lib.cuMemsetD8_v2.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t]
    lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]
    lib.cuMemGetInfo_v2.argtypes = [ctypes.POINTER(ctypes.c_size_t)] * 2
    lib.cuDeviceGetName.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    ctx = ctypes.c_void_p()
    dev = ctypes.c_int()
    how = ""
    ptr = ctypes.c_uint64()
    nbytes = mib * MIB
    try:
        started = time.perf_counter()
        _cuda_call(lib, "cuInit", 0)
        version, count = ctypes.c_int(), ctypes.c_int()
        _cuda_call(lib, "cuDriverGetVersion", ctypes.byref(version))
        _cuda_call(lib, "cuDeviceGetCount", ctypes.byref(count))
        _cuda_call(lib, "cuDeviceGet", ctypes.byref(dev), device)
        name = ctypes.create_string_buffer(256)
        _cuda_call(lib, "cuDeviceGetName", name, 256, dev)
        try:
            lib.cuCtxCreate_v2.argtypes = [
                ctypes.POINTER(ctypes.c_void_p),
                ctypes.c_uint,
                ctypes.c_int,
            ]
            _cuda_call(lib, "cuCtxCreate_v2", ctypes.byref(ctx), 0, dev)
            how = "cuCtxCreate_v2"
        except (AttributeError, CudaError) as exc:
            # A driver without the v2 entry point, or one refusing it: the primary
            # context is what the CUDA runtime itself uses.
            lib.cuDevicePrimaryCtxRetain.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
            _cuda_call(lib, "cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
            _cuda_call(lib, "cuCtxSetCurrent", ctx)
            how = f"cuDevicePrimaryCtxRetain (cuCtxCreate_v2: {exc})"
        init_s = time.perf_counter() - started
        _cuda_call(lib, "cuMemAlloc_v2", ctypes.byref(ptr), nbytes)
        _cuda_call(lib, "cuMemsetD8_v2", ptr.value, 0x5A, nbytes)  # touch every page
        _cuda_call(lib, "cuCtxSynchronize")
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        _cuda_call(lib, "cuMemGetInfo_v2", ctypes.byref(free), ctypes.byref(total))
    except CudaError as exc:
        print(json.dumps({"ready": False, "error": str(exc), "context": how}), file=out)
        out.flush()
        return 1
    ready = {
        "ready": True,
        "pid": os.getpid(),
        "library": path,
        "driverVersion": version.value,
        "devices": count.value,
        "device": device,
        "name": name.value.decode(errors="replace"),
        "context": how,
        "allocatedBytes": nbytes,
        "freeBytes": free.value,
        "totalBytes": total.value,
        "initSeconds": round(init_s, 3),
    }
    print(json.dumps(ready), file=out)
    out.flush()
    _hold(hold_s)
    with contextlib.suppress(CudaError):
        _cuda_call(lib, "cuMemFree_v2", ptr.value)
        if how == "cuCtxCreate_v2":
            _cuda_call(lib, "cuCtxDestroy_v2", ctx)
        else:
            _cuda_call(lib, "cuDevicePrimaryCtxRelease_v2", dev)
    return 0


def stand_in_child(hold_s: float, out: IO[str]) -> int:
    """The no-GPU rehearsal's 'CUDA process': a real process that only waits."""
    print(json.dumps({"ready": True, "pid": os.getpid(), "standIn": True}), file=out)
    out.flush()
    _hold(hold_s)
    return 0


def _hold(hold_s: float) -> None:
    """Until the parent closes our stdin (or dies), at most ``hold_s`` seconds."""
    deadline = time.monotonic() + hold_s
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sys.stdin], [], [], left)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            return


class Child:
    """The CUDA process, started as ``python -m nodeagent.gpucheck --child ...``."""

    def __init__(self, args: list[str], timeout_s: float) -> None:
        # stderr to a file: a chatty driver must never block the child on a full pipe
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodeagent.gpucheck", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        self.info: dict[str, Any]
        if not ready:
            self.info = {"ready": False, "error": f"no answer within {timeout_s:.0f} s"}
        elif not line:
            rc = self.proc.wait(5)
            self.info = {"ready": False, "error": f"exited with {rc} before it was ready"}
        else:
            try:
                self.info = dict(json.loads(line))
            except (json.JSONDecodeError, TypeError, ValueError):
                self.info = {"ready": False, "error": f"unexpected output: {line[:200]!r}"}
        if not self.info.get("ready"):
            self.stop()
            self._stderr.seek(0)
            err = self._stderr.read().strip()
            if err:
                self.info["stderr"] = err[-500:]
            self.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def close(self) -> None:
        self._stderr.close()


# -- a stand-in for the pynvml module (the rehearsal's "driver") -----------------------
class StandInNvmlError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"stand-in NVML error {value}")
        self.value = value


class StandInNvml:
    """pynvml's surface as NvmlBackend calls it: a whole GPU running ``pid``, and a
    GPU in MIG mode with two instances. Its energy counter runs at the power drawn."""

    NVMLError = StandInNvmlError
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_NOT_FOUND = 6
    NVML_ERROR_TIMEOUT = 10
    NVML_ERROR_GPU_IS_LOST = 15
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    nvmlEventTypeXidCriticalError = 8

    def __init__(self, pid: int, used_bytes: int) -> None:
        self._t0 = time.monotonic()
        self.gpus: list[dict[str, Any]] = [
            {
                "uuid": "GPU-00000000-0000-4000-8000-000000000000",
                "name": "NVIDIA H200 (stand-in)",
                "mig": 0,
                "total": 143771 * MIB,
                "watts": 120.0,
                "procs": [SimpleNamespace(pid=pid, usedGpuMemory=used_bytes)],
                "instances": [],
            },
            {
                "uuid": "GPU-00000000-0000-4000-8000-000000000001",
                "name": "NVIDIA H100 80GB HBM3 (stand-in)",
                "mig": 1,
                "total": 81559 * MIB,
                "watts": 90.0,
                "procs": [],
                "instances": [
                    {"gi": 1, "slices": 3, "mem_mb": 40448, "profile": "3g.40gb"},
                    {"gi": 5, "slices": 1, "mem_mb": 9984, "profile": "1g.10gb"},
                ],
            },
        ]

    def _h(self, h: Any) -> dict[str, Any]:
        if not isinstance(h, dict):
            raise StandInNvmlError(self.NVML_ERROR_NOT_FOUND)
        return h

    def nvmlInit(self) -> None:
        return None

    def nvmlShutdown(self) -> None:
        return None

    def nvmlSystemGetDriverVersion(self) -> str:
        return "stand-in"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.gpus[i]

    def nvmlEventSetCreate(self) -> str:
        return "events"

    def nvmlEventSetFree(self, _: Any) -> None:
        return None

    def nvmlDeviceRegisterEvents(self, _h: Any, _t: int, _s: Any) -> None:
        return None

    def nvmlEventSetWait_v2(self, _s: Any, _timeout: int) -> Any:
        raise StandInNvmlError(self.NVML_ERROR_TIMEOUT)

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        m = self._h(h)
        return str(m.get("mig_uuid") or m["uuid"])

    def nvmlDeviceGetName(self, h: Any) -> str:
        m = self._h(h)
        if "profile" in m:
            return f"NVIDIA H100 80GB HBM3 MIG {m['profile']}"
        return str(m["name"])

    def nvmlDeviceGetMigMode(self, h: Any) -> list[int]:
        mode = int(self._h(h)["mig"])
        return [mode, mode]

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        return SimpleNamespace(gpu=37 if self._h(h)["procs"] else 0, memory=5)

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:
        m = self._h(h)
        if "profile" in m:
            total = int(m["mem_mb"]) * MIB
            return SimpleNamespace(used=13 * MIB, total=total, free=total - 13 * MIB)
        used = 540 * MIB + sum(p.usedGpuMemory for p in m["procs"])
        return SimpleNamespace(used=used, total=m["total"], free=m["total"] - used)

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        return int(self._h(h)["watts"] * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: Any) -> int:
        m = self._h(h)
        return int(1_000_000_000 + m["watts"] * 1000 * (time.monotonic() - self._t0))

    def nvmlDeviceGetTemperature(self, h: Any, _sensor: int) -> int:
        return 34 if self._h(h)["procs"] else 29

    def nvmlDeviceGetClockInfo(self, h: Any, which: int) -> int:
        self._h(h)
        return 1980 if which == self.NVML_CLOCK_SM else 3201

    def nvmlDeviceGetTotalEccErrors(self, h: Any, _kind: int, _counter: int) -> int:
        self._h(h)
        return 0

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        m = self._h(h)
        if "profile" in m:
            return []
        return list(m["procs"])

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        return 7 if self._h(h)["mig"] else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, i: int) -> dict[str, Any]:
        instances = self._h(h)["instances"]
        if i >= len(instances):
            raise StandInNvmlError(self.NVML_ERROR_NOT_FOUND)
        gi = instances[i]
        return {**gi, "mig_uuid": f"MIG-00000000-0000-4000-8000-00000000000{gi['gi']}"}

    def nvmlDeviceGetGpuInstanceId(self, m: Any) -> int:
        return int(self._h(m)["gi"])

    def nvmlDeviceGetComputeInstanceId(self, m: Any) -> int:
        self._h(m)
        return 0

    def nvmlDeviceGetAttributes(self, m: Any) -> Any:
        mig = self._h(m)
        return SimpleNamespace(gpuInstanceSliceCount=mig["slices"], memorySizeMB=mig["mem_mb"])


# -- formatting -----------------------------------------------------------------------
def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 30):.2f} GiB"


def _num(v: float | None, unit: str, fmt: str = ".1f") -> str:
    return "n/a" if v is None else f"{v:{fmt}} {unit}"


def gpu_lines(g: GpuSample) -> list[str]:
    if not g.ok:
        return [f"GPU {g.index} {g.uuid}: NOT OK: {g.error}"]
    ecc = "n/a" if g.ecc_corrected is None else f"{g.ecc_corrected}/{g.ecc_uncorrected}"
    lines = [
        f"GPU {g.index} {g.name!r} {g.uuid}",
        f"  memory {_gib(g.memory_used_bytes)} / {_gib(g.memory_total_bytes)}, "
        f"utilisation {_num(g.utilization_pct, '%', '.0f')}, power {_num(g.power_watts, 'W')}, "
        f"energy counter {_num(g.energy_joules, 'J', '.3f')}, "
        f"temperature {_num(g.temperature_c, 'C', '.0f')}",
        f"  clocks SM {_num(g.sm_clock_mhz, 'MHz', '.0f')}, memory "
        f"{_num(g.memory_clock_mhz, 'MHz', '.0f')}; ECC corrected/uncorrected {ecc}; "
        f"XID events {list(g.xid_events) or 'none'}",
        f"  unsupported: {', '.join(g.unsupported) or '-'}; "
        f"errors: {json.dumps(dict(g.errors)) if g.errors else '-'}",
    ]
    return lines


def _as_json(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _as_json(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _as_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_as_json(v) for v in obj]
    return obj


# -- the run --------------------------------------------------------------------------
@dataclass
class Settings:
    no_gpu: bool
    require_gpu: bool
    device: int
    mib: int
    hold_s: float
    wait_s: float
    wheelhouse: str
    allow_install: bool
    json_path: str


def _sample_until(
    backend: NvmlBackend, pid: int, wait_s: float
) -> tuple[NodeSnapshot, GpuSample | None, int]:
    """Sample until ``pid`` is on a GPU's process list (NVML lists new contexts late)."""
    deadline = time.monotonic() + wait_s
    tries = 0
    while True:
        tries += 1
        snap = backend.sample()
        on = next((g for g in snap.gpus if any(p.pid == pid for p in g.processes)), None)
        if on is not None or time.monotonic() >= deadline:
            return snap, on, tries
        time.sleep(0.25)


def run(settings: Settings, out: IO[str] = sys.stdout) -> int:
    started = time.perf_counter()
    print("palisade gpu-check (read only: no GPU setting is changed)", file=out)
    report = Report("?", out=out)
    no_gpu = settings.no_gpu
    with report.step("environment") as s:
        nvml_path, nvml_why = find_library("libnvidia-ml.so.1")
        no_gpu = no_gpu or not nvml_path
        cuda_path, cuda_why = ("", "rehearsal") if no_gpu else find_library("libcuda.so.1")
        devs = sorted(glob.glob("/dev/nvidia*"))
        s.summary = f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
        s.lines = [
            f"interpreter {sys.executable}",
            f"libnvidia-ml.so.1: {nvml_path or 'not found: ' + nvml_why}",
            f"libcuda.so.1: {cuda_path or 'not found: ' + cuda_why}",
            f"/dev/nvidia*: {' '.join(devs) or 'none'}",
        ]
        report.data["environment"] = {
            "python": platform.python_version(),
            "executable": sys.executable,
            "kernel": platform.release(),
            "machine": platform.machine(),
            "libnvidia-ml": nvml_path,
            "libcuda": cuda_path,
            "devices": devs,
        }
    report.mode = "no-gpu rehearsal" if no_gpu else "gpu"
    why = "--no-gpu" if settings.no_gpu else f"no NVIDIA driver ({nvml_why})"
    print(f"mode: {report.mode}" + (f": {why}" if no_gpu else ""), file=out)
    if no_gpu and settings.require_gpu:
        print(f"FAIL: --require-gpu, but {why}", file=out)
        return 1

    pynvml: Any = None
    with report.step("nvidia-ml-py") as s:
        if no_gpu:
            pynvml, how = ensure_pynvml(settings.wheelhouse, allow_install=False)
            s.status = "PASS" if pynvml is not None else "SKIP"
            s.summary = how if pynvml is not None else f"{how} (not needed without a GPU)"
        else:
            pynvml, how = ensure_pynvml(settings.wheelhouse, settings.allow_install)
            s.status = "PASS" if pynvml is not None else "FAIL"
            s.summary = how
        report.data["nvidia-ml-py"] = how

    child: Child | None = None
    with report.step("cuda-process") as s:
        if no_gpu:
            child = Child(["--stand-in-child", "--hold", str(settings.hold_s)], 15.0)
            s.summary = f"stand-in (no CUDA without a driver): pid {child.pid}"
        else:
            args = ["--cuda-child", "--device", str(settings.device), "--mib", str(settings.mib)]
            child = Child([*args, "--hold", str(settings.hold_s)], 90.0)
            info = child.info
            s.summary = (
                f"pid {child.pid} holds {settings.mib} MiB on CUDA device {settings.device} "
                f"{info.get('name', '')!r} (CUDA driver API {info.get('driverVersion')}, "
                f"{info.get('context')}, init {info.get('initSeconds')} s)"
            )
        report.data["cudaProcess"] = child.info
        if not child.info.get("ready"):
            s.status = "FAIL"
            s.summary = f"the CUDA process did not start: {child.info.get('error')}"
            s.lines = [str(child.info.get("stderr", ""))] if child.info.get("stderr") else []

    backend: NvmlBackend | None = None
    with report.step("nvml-backend") as s:
        if no_gpu:
            real = "nvidia-ml-py missing"
            if pynvml is not None:
                try:
                    NvmlBackend(nvml=pynvml).close()
                    real = "NVML started (a driver is here; --no-gpu rehearses all the same)"
                except BackendUnavailable as exc:
                    real = f"{exc} -> the agent runs in no-GPU mode"
            s.lines = [f"the real driver: {real}"]
            stand_in = StandInNvml(child.pid if child else 0, settings.mib * MIB)
            backend = NvmlBackend(nvml=stand_in)
            s.summary = "NvmlBackend over a stand-in pynvml (no NVIDIA driver here)"
        elif pynvml is None:
            s.status = "FAIL"
            s.summary = "no nvidia-ml-py"
        else:
            backend = NvmlBackend(nvml=pynvml)
            s.summary = f"NvmlBackend: driver {backend.driver_version}"

    snap: NodeSnapshot | None = None
    on: GpuSample | None = None
    if backend is not None:
        with report.step("telemetry") as s:
            pid = child.pid if child and child.info.get("ready") else -1
            snap, on, tries = _sample_until(backend, pid, settings.wait_s if pid > 0 else 0)
            s.summary = f"{len(snap.gpus)} GPU(s), driver {snap.driver_version or '?'}"
            for g in snap.gpus:
                s.lines += gpu_lines(g)
                if not g.ok or not g.uuid or not g.name or g.memory_total_bytes is None:
                    s.status = "FAIL"
            if not snap.gpus:
                s.status = "FAIL"
                s.summary += ": NVML sees no GPU"
            report.data["snapshot"] = _as_json(snap)
            report.data["samplesUntilListed"] = tries

        with report.step("processes") as s:
            for g in snap.gpus:
                for p in g.processes:
                    mem = (
                        "n/a"
                        if p.used_memory_bytes is None
                        else f"{p.used_memory_bytes / MIB:.0f} MiB"
                    )
                    gi = "" if p.gi_id is None else f" MIG gi {p.gi_id} ci {p.ci_id}"
                    mark = "  <- the CUDA process" if child and p.pid == child.pid else ""
                    s.lines.append(f"pid {p.pid} on GPU {g.index}{gi}: {mem}{mark}")
            if not any(g.processes for g in snap.gpus):
                s.lines.append("no compute process listed")
            if child is None or not child.info.get("ready"):
                s.status = "SKIP"
                s.summary = "no CUDA process to look for"
            elif on is None:
                s.status = "FAIL"
                s.summary = (
                    f"pid {child.pid} is not in NVML's process list (NVML names host PIDs: "
                    "run in the host PID namespace)"
                )
            else:
                mine = next(p for p in on.processes if p.pid == child.pid)
                used = mine.used_memory_bytes
                s.summary = f"pid {child.pid} listed on GPU {on.index}, using " + (
                    "n/a (the driver did not say)" if used is None else f"{used / MIB:.0f} MiB"
                )
                if used is not None and used < settings.mib * MIB:
                    s.lines.append(f"note: less than the {settings.mib} MiB allocated")

        with report.step("mig") as s:
            parts = []
            for g in snap.gpus:
                mode = {True: "enabled", False: "disabled", None: "n/a"}[g.mig_enabled]
                parts.append(f"GPU {g.index} MIG {mode}")
                for m in g.mig:
                    s.lines.append(
                        f"GPU {g.index} instance gi {m.gi_id} ci {m.ci_id} {m.profile} "
                        f"({m.slices}/{g.mig_total_slices} slices) {m.uuid}: memory "
                        f"{_gib(m.memory_used_bytes)} / {_gib(m.memory_total_bytes)}"
                    )
            s.summary = "; ".join(parts) or "no GPU"

        with report.step("attribution") as s:
            if child is None or on is None:
                s.status = "SKIP"
                s.summary = "the CUDA process is not on a GPU's process list"
            else:
                reader = ProcCgroupReader("/proc")
                ns = Namespace.detect("/proc")
                text = reader.read(child.pid)
                pods = PodIndex()
                pods.synced = True  # this check knows no pods: a pod UID stays unknown
                procs = attribution.attribute(snap, {child.pid: text}, pods, None, ns)
                mine_a = next(p for p in procs if p.pid == child.pid)
                owner = attribution.owner_of(child.pid, text, pods, ns)
                report.data["attribution"] = owner.to_json()
                s.summary = f"pid {child.pid}: {owner.kind}, " + (
                    f"tenant {mine_a.tenant}" if mine_a.attributed else mine_a.unattributed_reason
                )
                s.lines = [
                    f"cgroup path read: {owner.cgroup_path or '?'} "
                    f"(cgroup namespace private: {ns.private})"
                ]
                if mine_a.attributed:
                    s.status = "FAIL"
                    s.summary += " (a process in no known pod must never have a tenant)"

        with report.step("energy") as s:
            ledger = energy.Ledger()
            reader, ns = ProcCgroupReader("/proc"), Namespace.detect("/proc")
            texts = {p.pid: reader.read(p.pid) for g in snap.gpus for p in g.processes}
            pods = PodIndex()
            pods.synced = True
            ledger.add(snap, attribution.attribute(snap, texts, pods, None, ns))
            time.sleep(1.0)
            second = backend.sample()
            ledger.add(second, attribution.attribute(second, texts, pods, None, ns))
            joules = {k: round(v, 3) for k, v in sorted(ledger.joules.items())}
            seconds = {k: round(v, 3) for k, v in sorted(ledger.gpu_seconds.items())}
            s.summary = f"over {second.time - snap.time:.2f} s: joules {joules}"
            s.lines = [f"GPU-seconds {seconds}"]
            report.data["energy"] = {"joules": joules, "gpuSeconds": seconds}
            if not joules:
                s.status = "FAIL"

    with report.step("cleanup") as s:
        rc = child.stop() if child is not None else 0
        if child is not None:
            child.close()
        if backend is not None:
            backend.close()
        s.summary = f"CUDA process exited with {rc}"
        if child is not None and child.info.get("ready") and rc != 0:
            s.status = "FAIL"

    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    report.data["heavyModules"] = heavy
    total = time.perf_counter() - started
    counts = {k: sum(1 for s in report.steps if s.status == k) for k in ("PASS", "FAIL", "SKIP")}
    print(
        f"total {total:.2f} s: {counts['PASS']} passed, {counts['FAIL']} failed, "
        f"{counts['SKIP']} skipped ({report.mode})",
        file=out,
    )
    if settings.json_path:
        doc = {
            "mode": report.mode,
            "ok": not report.failed,
            "totalSeconds": round(total, 3),
            "steps": [dataclasses.asdict(s) for s in report.steps],
            **report.data,
        }
        Path(settings.json_path).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 1 if report.failed else 0


def main(argv: list[str] | None = None, out: IO[str] = sys.stdout) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/gpu-check",
        description="Check the node agent's GPU path (NVML telemetry, processes, MIG, "
        "attribution) on this machine's GPU, read only; a rehearsal without one.",
    )
    p.add_argument("--no-gpu", action="store_true", help="rehearse without the driver")
    p.add_argument("--require-gpu", action="store_true", help="fail when no NVIDIA driver is found")
    p.add_argument("--device", type=int, default=0, help="CUDA device ordinal (0)")
    p.add_argument("--mib", type=int, default=256, help="GPU memory the CUDA process takes")
    p.add_argument("--hold", type=float, default=120.0, help="the CUDA process's longest life")
    p.add_argument("--wait", type=float, default=15.0, help="seconds to wait for NVML to list it")
    p.add_argument(
        "--wheelhouse",
        default=os.environ.get("PALISADE_WHEELHOUSE", ""),
        help="directory with nvidia_ml_py-*.whl (env PALISADE_WHEELHOUSE)",
    )
    p.add_argument("--no-install", action="store_true", help="never run pip")
    p.add_argument("--json", default="", help="also write the report as JSON here")
    p.add_argument("--cuda-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stand-in-child", action="store_true", help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.cuda_child:
        return cuda_child(ns.device, ns.mib, ns.hold, out)
    if ns.stand_in_child:
        return stand_in_child(ns.hold, out)
    if not 1 <= ns.mib <= 64 * 1024:
        p.error("--mib must be 1..65536")
    settings = Settings(
        no_gpu=ns.no_gpu,
        require_gpu=ns.require_gpu,
        device=ns.device,
        mib=ns.mib,
        hold_s=ns.hold,
        wait_s=ns.wait,
        wheelhouse=ns.wheelhouse,
        allow_install=not ns.no_install,
        json_path=ns.json,
    )
    return run(settings, out)


if __name__ == "__main__":
    sys.exit(main())
