"""The node agent's own cost: CPU and RSS while sampling a big simulated GPU node at 1 Hz.

The agent runs as a real process (``palisade nodeagent run --backend sim``) on a
scenario of 8 GPUs cut into 56 MIG instances (7 x ``1g.10gb`` each) with 200
processes in 50 pods of 5 tenants, their memory changing over time, and tenant
quotas in force (so usage, violations and actions are computed every tick).
Prometheus scrapes ``/metrics`` every 15 s as it would in a cluster. CPU is
the process's user+system time over the window; RSS is the highest seen.

The agent reads each process's cgroup from real files laid out like ``/proc``
(``--proc-root``), 200 files a tick, as it would on a node.

Baseline, same run, same window: the same agent in no-GPU mode (the interpreter,
the HTTP server and the loop with nothing to sample).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.common import Report, Target

GPUS, MIG_PER_GPU, PROCS, PODS, TENANTS = 8, 7, 200, 50, 5


def scenario() -> dict[str, Any]:
    gpus = []
    for g in range(GPUS):
        gpus.append(
            {
                "index": g,
                "uuid": f"GPU-{g:08d}-0000-4000-8000-000000000000",
                "powerWatts": [[0, 300 + 10 * g], [30, 450], [45, 320]],
                "utilization": 60,
                "mig": [
                    {
                        "giId": i + 1,
                        "profile": "1g.10gb",
                        "uuid": f"MIG-{g:04d}{i:04d}-0000-4000-8000-000000000000",
                    }
                    for i in range(MIG_PER_GPU)
                ],
            }
        )
    pods, namespaces = [], {}
    for t in range(TENANTS):
        namespaces[f"team-{t}"] = {"palisade.dev/tenant": f"tenant-{t}"}
    for p in range(PODS):
        pods.append(
            {
                "uid": f"{p:08x}-0000-4000-8000-000000000000",
                "name": f"worker-{p}",
                "namespace": f"team-{p % TENANTS}",
                "containers": [{"name": "main", "id": f"containerd://{p:064x}"}],
            }
        )
    processes = []
    for i in range(PROCS):
        slot = i % (GPUS * MIG_PER_GPU)
        processes.append(
            {
                "pid": 3_000_000 + i,
                "gpu": slot // MIG_PER_GPU,
                "gi": slot % MIG_PER_GPU + 1,
                "pod": f"worker-{i % PODS}",
                "memoryBytes": [[0, 2**28 + i * 2**20], [20, 2**29], [40, 2**28]],
            }
        )
    return {
        "node": "bench-node",
        "gpus": gpus,
        "namespaces": namespaces,
        "pods": pods,
        "processes": processes,
    }


def bundle() -> dict[str, Any]:
    return {
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "PolicyBundle",
        "metadata": {"name": "bench"},
        "spec": {
            "tenants": [
                {
                    "name": f"tenant-{t}",
                    "namespaces": [f"team-{t}"],
                    "gpuQuota": {
                        "migInstances": {"1g.10gb": 8},
                        "gpuMemoryBytes": 40 * 2**30,
                        "allocatedDevicesOnly": True,
                        "enforcement": "report",
                        "gracePeriodSeconds": 5,
                    },
                }
                for t in range(TENANTS)
            ]
        },
    }


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return bytes(r.read())


def measure(label: str, args: list[str], window_s: float, tmp: Path) -> dict[str, Any]:
    port = _port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "palisade.cli.main",
        "nodeagent",
        "run",
        "--kube",
        "off",
        "--listen",
        f"127.0.0.1:{port}",
        "--state-dir",
        str(tmp / label),
        "--interval",
        "1",
        "--log-level",
        "WARNING",
        *args,
    ]
    env = {**os.environ, "KUBERNETES_SERVICE_HOST": ""}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(url + "/readyz"):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{label}: agent did not start") from None
                time.sleep(0.2)
        time.sleep(3.0)  # warm-up: imports settled, first ticks done
        ps = psutil.Process(proc.pid)
        samples_before = _samples(url)
        cpu0 = ps.cpu_times()
        t0 = time.monotonic()
        rss = ps.memory_info().rss
        next_scrape = t0
        while (now := time.monotonic()) - t0 < window_s:
            if now >= next_scrape:
                _get(url + "/metrics")
                next_scrape += 15.0
            rss = max(rss, ps.memory_info().rss)
            time.sleep(0.5)
        cpu1 = ps.cpu_times()
        elapsed = time.monotonic() - t0
        ticks = _samples(url) - samples_before
        cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        return {
            "scenario": label,
            "window_s": round(elapsed, 1),
            "ticks": ticks,
            "cpu_pct_of_core": 100.0 * cpu_s / elapsed,
            "cpu_ms_per_tick": 1000.0 * cpu_s / ticks if ticks else float("nan"),
            "rss_mb": rss / 2**20,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _samples(url: str) -> int:
    import json

    return int(json.loads(_get(url + "/status"))["samples"])


def run(quick: bool) -> Report:
    window = 10.0 if quick else 60.0
    report = Report(
        name="nodeagent",
        title=(
            f"Node agent cost at 1 Hz: {GPUS} GPUs, {GPUS * MIG_PER_GPU} MIG instances, "
            f"{PROCS} processes, {PODS} pods, {TENANTS} tenants ({window:.0f} s window)"
        ),
        columns=[
            "scenario",
            "window_s",
            "ticks",
            "cpu_pct_of_core",
            "cpu_ms_per_tick",
            "rss_mb",
            "cpu_vs_baseline",
            "rss_vs_baseline",
        ],
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "node.yaml").write_text(yaml.safe_dump(scenario()))
        (tmp / "bundle.yaml").write_text(yaml.safe_dump(bundle()))
        proc_root = tmp / "proc"  # real files: the agent reads 200 cgroup files a tick
        from nodeagent.sim import Scenario, ScenarioCgroups

        texts = ScenarioCgroups(Scenario(scenario()))
        for i in range(PROCS):
            pid = 3_000_000 + i
            (proc_root / str(pid)).mkdir(parents=True)
            (proc_root / str(pid) / "cgroup").write_text(texts.read(pid) or "")
        base = measure("no-GPU agent (baseline)", ["--backend", "none"], window, tmp)
        big = measure(
            "8 GPUs / 56 MIG / 200 procs",
            [
                "--backend",
                "sim",
                "--scenario",
                str(tmp / "node.yaml"),
                "--bundle",
                str(tmp / "bundle.yaml"),
            ],
            window,
            tmp,
        )
    for row in (base, big):
        row["cpu_vs_baseline"] = row["cpu_pct_of_core"] / max(base["cpu_pct_of_core"], 1e-9)
        row["rss_vs_baseline"] = row["rss_mb"] / base["rss_mb"]
    report.rows = [base, big]
    report.targets = [
        Target("agent CPU", big["scenario"], "cpu_pct_of_core", "<=", 2.0),
        Target("agent RSS (MB)", big["scenario"], "rss_mb", "<=", 80.0),
    ]
    report.notes.append(
        "CPU = user+system time of the agent process / wall time; RSS = the highest seen; "
        "/metrics scraped every 15 s during the window."
    )
    report.notes.append(f"machine: {os.cpu_count()} CPUs shared with other work")
    return report
