"""scripts/gpu-check without a GPU: the rehearsal passes, needs nothing heavy, and stays read only.

On a machine with an NVIDIA driver the same script runs for real (see
docs/nodeagent.md). Here it runs its no-GPU rehearsal (NvmlBackend over a
stand-in pynvml, a real child process as the "CUDA process", the real cgroup
reader and attribution), once with the project's interpreter and once with a
bare system Python that has nothing but the standard library. The CUDA child
is exercised against a fake libcuda compiled here (when a C compiler exists),
which checks the arguments the ctypes calls pass.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check"
STEPS = [
    "environment",
    "nvidia-ml-py",
    "cuda-process",
    "nvml-backend",
    "telemetry",
    "processes",
    "mig",
    "attribution",
    "energy",
    "cleanup",
]


def _driver_present() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def _run(*args: str, python: str = sys.executable, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**os.environ, "PYTHON": python, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _bare_python() -> str | None:
    """A system interpreter (3.11+) without the project's dependencies, if there is one."""
    for exe in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(exe) or Path(exe).resolve() == Path(sys.executable).resolve():
            continue
        probe = subprocess.run(
            [
                exe,
                "-c",
                "import sys; assert sys.version_info >= (3, 11)\ntry:\n import pynvml\n"
                "except ImportError: pass\nelse: sys.exit(1)",
            ],
            capture_output=True,
            timeout=30,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
        if probe.returncode == 0:
            return exe
    return None


def test_the_no_gpu_rehearsal_passes_every_step_timed_in_seconds(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    started = time.monotonic()
    out = _run("--no-gpu", "--json", str(report))
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stdout + out.stderr
    assert elapsed < 30
    for step in STEPS:
        assert re.search(rf"^\[\s*\d+\.\d{{3}} s\] {re.escape(step)}\s+PASS", out.stdout, re.M), (
            step,
            out.stdout,
        )
    assert "10 passed, 0 failed" in out.stdout and "no-gpu rehearsal" in out.stdout
    doc = json.loads(report.read_text())
    assert doc["ok"] is True and doc["mode"] == "no-gpu rehearsal"
    assert [s["name"] for s in doc["steps"]] == STEPS
    assert doc["heavyModules"] == [], "the check must not need the daemon's dependencies"
    pid = doc["cudaProcess"]["pid"]
    # the stand-in GPU lists the real child; the attribution read its real cgroup file
    listed = [p["pid"] for g in doc["snapshot"]["gpus"] for p in g["processes"]]
    assert listed == [pid]
    assert doc["attribution"]["pid"] == pid and doc["attribution"]["attributed"] is False
    assert doc["attribution"]["tenant"] == ""
    mig = doc["snapshot"]["gpus"][1]
    assert mig["mig_enabled"] is True and [m["profile"] for m in mig["mig"]] == [
        "3g.40gb",
        "1g.10gb",
    ]
    assert doc["energy"]["joules"]["unattributed"] > 0
    for line in (
        "power 120.0 W",
        "energy counter",
        "temperature 34 C",
        "MIG enabled",
        "3/7 slices",
    ):
        assert line in out.stdout, line
    assert "GPU-00000000-0000-4000-8000-000000000000" in out.stdout


@pytest.mark.skipif(_driver_present(), reason="an NVIDIA driver is present")
def test_without_a_driver_it_rehearses_by_itself_and_require_gpu_fails() -> None:
    out = _run("--no-install")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no-gpu rehearsal" in out.stdout
    assert "NVML could not start" in out.stdout or "nvidia-ml-py" in out.stdout
    strict = _run("--require-gpu")
    assert strict.returncode == 1 and "--require-gpu, but no NVIDIA driver" in strict.stdout


def test_a_bare_python_with_only_the_standard_library_runs_the_rehearsal(tmp_path: Path) -> None:
    bare = _bare_python()
    if bare is None:
        pytest.skip("no system Python 3.11+ without the project's dependencies")
    out = _run("--no-gpu", "--no-install", python=bare)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"nvidia-ml-py\s+SKIP", out.stdout)
    # A carried wheelhouse: the pure-Python wheel is imported as it is, no pip needed.
    import pynvml

    wheelhouse = tmp_path / "whl"
    wheelhouse.mkdir()
    with zipfile.ZipFile(wheelhouse / "nvidia_ml_py-0.0.0-py3-none-any.whl", "w") as z:
        z.write(pynvml.__file__, "pynvml.py")
    out = _run("--no-gpu", "--no-install", python=bare, PALISADE_WHEELHOUSE=str(wheelhouse))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "from wheelhouse" in out.stdout
    if not _driver_present():
        assert "NVML could not start" in out.stdout


def test_without_python_311_it_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "gpu-check")  # a checkout without a .venv
    old = tmp_path / "python-old"
    old.write_text("#!/bin/sh\nexit 1\n")  # fails the version probe
    old.chmod(0o755)
    out = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(tmp_path / "scripts" / "gpu-check")],
        env={"PATH": str(tmp_path / "empty"), "PYTHON": str(old)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "no Python 3.11 or later found" in out.stderr


FAKE_LIBCUDA = r"""
#include <stdlib.h>
#include <string.h>
typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef unsigned long long CUdeviceptr;
static int fails(const char *name) {
    const char *f = getenv("FAKE_CUDA_FAIL");
    return f && strcmp(f, name) == 0;
}
static int token, inited;
static size_t held;
CUresult cuInit(unsigned flags) {
    if (flags != 0 || fails("cuInit")) return 100;
    inited = 1; return 0;
}
CUresult cuDriverGetVersion(int *v) { *v = 13000; return 0; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return inited ? 0 : 3; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) { *d = ordinal; return ordinal == 0 ? 0 : 101; }
CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
    strncpy(name, "Fake H200", len); return d == 0 ? 0 : 101;
}
CUresult cuCtxCreate_v2(CUcontext *c, unsigned flags, CUdevice d) {
    if (fails("cuCtxCreate_v2") || flags != 0 || d != 0) return 201;
    *c = &token; return 0;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) {
    *c = &token; return d == 0 ? 0 : 101;
}
CUresult cuCtxSetCurrent(CUcontext c) { return c == &token ? 0 : 201; }
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    if (fails("cuMemAlloc_v2")) return 2;
    void *m = malloc(n); if (!m) return 2;
    *p = (CUdeviceptr)m; held = n; return 0;
}
CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) {
    if (v != 0x5a || n != held) return 1;
    memset((void *)p, v, n); return 0;
}
CUresult cuCtxSynchronize(void) { return 0; }
CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total) { *free_b = 1000; *total = 2000; return 0; }
CUresult cuMemFree_v2(CUdeviceptr p) { free((void *)p); return 0; }
CUresult cuCtxDestroy_v2(CUcontext c) { return c == &token ? 0 : 201; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { return d == 0 ? 0 : 101; }
CUresult cuGetErrorName(CUresult e, const char **s) {
    *s = e == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : e == 201 ? "CUDA_ERROR_INVALID_CONTEXT"
       : e == 100 ? "CUDA_ERROR_NO_DEVICE" : "CUDA_ERROR_UNKNOWN";
    return 0;
}
"""


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the fake libcuda")
    d = tmp_path_factory.mktemp("fakecuda")
    (d / "fake.c").write_text(FAKE_LIBCUDA)
    subprocess.run(
        [cc, "-shared", "-fPIC", "-o", str(d / "libcuda.so.1"), str(d / "fake.c")],
        check=True,
        timeout=60,
    )
    return d


@pytest.mark.parametrize(
    ("fail", "ready", "needle"),
    [
        ("", True, "cuCtxCreate_v2"),
        ("cuCtxCreate_v2", True, "cuDevicePrimaryCtxRetain"),
        ("cuMemAlloc_v2", False, "cuMemAlloc_v2 returned 2 (CUDA_ERROR_OUT_OF_MEMORY)"),
        ("cuInit", False, "cuInit returned 100 (CUDA_ERROR_NO_DEVICE)"),
    ],
)
def test_the_cuda_child_drives_the_driver_api_through_ctypes(
    fake_libcuda: Path, fail: str, ready: bool, needle: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "nodeagent.gpucheck", "--cuda-child", "--mib", "3", "--hold", "20"],
        cwd=ROOT,
        env={**os.environ, "LD_LIBRARY_PATH": str(fake_libcuda), "FAKE_CUDA_FAIL": fail},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    info = json.loads(child.stdout.readline())
    assert info["ready"] is ready, info
    if ready:
        assert info["pid"] == child.pid and info["allocatedBytes"] == 3 << 20
        assert info["name"] == "Fake H200" and info["driverVersion"] == 13000
        assert needle in info["context"]
        assert child.poll() is None, "it holds the memory until told to stop"
        child.stdin.close()  # the parent's signal to free and exit
        assert child.wait(10) == 0
    else:
        assert needle in info["error"]
        assert child.wait(10) == 1


_READ_ONLY_NVML = re.compile(
    r"nvml(?:Device|GpuInstance|ComputeInstance|Unit|System|Vgpu)\w*"
    r"(?:Set|Reset|Clear|Create|Destroy|Modify|Remove|Discover|Enable|Disable)\w*"
)
_CUDA_ALLOWED = {
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetName",
    "cuCtxCreate_v2",
    "cuDevicePrimaryCtxRetain",
    "cuCtxSetCurrent",
    "cuMemAlloc_v2",
    "cuMemsetD8_v2",
    "cuCtxSynchronize",
    "cuMemGetInfo_v2",
    "cuMemFree_v2",
    "cuCtxDestroy_v2",
    "cuDevicePrimaryCtxRelease_v2",
    "cuGetErrorName",
}


def test_nothing_in_the_gpu_path_can_change_a_gpu_setting() -> None:
    for name in ("nvml.py", "gpucheck.py"):
        code = (ROOT / "nodeagent" / name).read_text()
        assert not _READ_ONLY_NVML.findall(code), name
        assert "nvmlDeviceSet" not in code and "MigMode(" not in code.replace(
            "nvmlDeviceGetMigMode(", ""
        ), name
    code = (ROOT / "nodeagent" / "gpucheck.py").read_text()
    used = set(re.findall(r'(?:_cuda_call\(lib, "|lib\.)(cu[A-Z]\w+)', code))
    assert {"cuInit", "cuMemAlloc_v2", "cuCtxCreate_v2"} <= used
    assert used <= _CUDA_ALLOWED, used - _CUDA_ALLOWED


FAKE_PYNVML = '''
"""A pynvml for the GPU path's rehearsal on a CPU: the stand-in GPUs, listing live CUDA children."""
import os

from nodeagent.gpucheck import StandInNvml, StandInNvmlError as NVMLError


def _children():
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"--cuda-child" in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


class _Live(StandInNvml):
    def nvmlDeviceGetComputeRunningProcesses(self, h):
        if h is self.gpus[0]:
            return [type("P", (), {"pid": p, "usedGpuMemory": 5 << 20})() for p in _children()]
        return super().nvmlDeviceGetComputeRunningProcesses(h)


_nv = _Live(0, 0)
for _name in dir(_nv):
    if _name.startswith(("nvml", "NVML_")):
        globals()[_name] = getattr(_nv, _name)
'''


def test_the_gpu_path_end_to_end_against_a_fake_driver(fake_libcuda: Path, tmp_path: Path) -> None:
    """The GPU branch (not the rehearsal) on a CPU: fake libcuda, fake libnvidia-ml, fake pynvml."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc is not None
    (tmp_path / "empty.c").write_text("int palisade_fake_nvml;\n")
    subprocess.run(
        [
            cc,
            "-shared",
            "-fPIC",
            "-o",
            str(fake_libcuda / "libnvidia-ml.so.1"),
            str(tmp_path / "empty.c"),
        ],
        check=True,
        timeout=60,
    )
    (tmp_path / "pynvml.py").write_text(FAKE_PYNVML)
    report = tmp_path / "report.json"
    out = _run(
        "--require-gpu",
        "--mib",
        "3",
        "--json",
        str(report),
        LD_LIBRARY_PATH=str(fake_libcuda),
        PYTHONPATH=str(tmp_path),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "\nmode: gpu\n" in out.stdout
    doc = json.loads(report.read_text())
    pid = doc["cudaProcess"]["pid"]
    assert doc["cudaProcess"]["name"] == "Fake H200"
    assert re.search(rf"processes\s+PASS\s+pid {pid} listed on GPU 0, using 5 MiB", out.stdout)
    assert "<- the CUDA process" in out.stdout
    assert doc["attribution"]["pid"] == pid and doc["attribution"]["attributed"] is False
    assert "CUDA process exited with 0" in out.stdout
