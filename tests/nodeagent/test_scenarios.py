"""Scenarios over time on a simulated node: telemetry, attribution, decision, action, audit, status.

Each test steps a scenario on a fake clock through the real agent loop, with a
real audit chain on disk, real child processes for ``kill``, and (where device
allocations matter) a real PodResources gRPC server. Evictions and Events through
a real API server are in ``test_kube_e2e.py``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nodeagent.metrics import registry_for
from nodeagent.pods import ContainerDevices
from tests.nodeagent.conftest import CHILD_MARK

GIB = 2**30
G0 = "GPU-00000000-0000-0000-0000-000000000000"
G1 = "GPU-11111111-1111-1111-1111-111111111111"


def cid(n: int) -> str:
    return f"{n:064x}"


def pod(name: str, ns: str, n: int, devices: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {
        "uid": f"{n:08x}-0000-4000-8000-000000000000",
        "name": name,
        "namespace": ns,
        "containers": [{"name": "main", "id": f"containerd://{cid(n)}", "devices": devices or {}}],
    }


def bundle(tenant: str, ns: str, **quota: Any) -> dict[str, Any]:
    return {"spec": {"tenants": [{"name": tenant, "namespaces": [ns], "gpuQuota": quota}]}}


def metric_lines(node: Any) -> list[str]:
    from prometheus_client import generate_latest

    text = generate_latest(registry_for(node.agent)).decode()
    return [line for line in text.splitlines() if not line.startswith("#")]


TWO_GPUS = [
    {"index": 0, "uuid": G0, "memoryTotalGiB": 80, "powerWatts": 300, "utilization": 50},
    {"index": 1, "uuid": G1, "memoryTotalGiB": 80, "powerWatts": 200},
]


async def test_a_tenant_within_quota_is_measured_attributed_and_left_alone(make_node: Any) -> None:
    node = await make_node(
        {
            "gpus": TWO_GPUS,
            "namespaces": {"payments": {"palisade.dev/tenant": "payments"}},
            "pods": [pod("api", "payments", 1, {"nvidia.com/gpu": [G0]})],
            "processes": [{"pid": 990000501, "gpu": 0, "pod": "api", "memoryGiB": 20}],
        },
        bundle("payments", "payments", gpus=1, gpuMemoryBytes=40 * GIB, enforcement="kill"),
    )
    assert await node.run_until(10) == []
    g0 = node.gpu(G0)
    assert g0["memoryUsedBytes"] == 20 * GIB and g0["powerWatts"] == 300
    assert g0["utilizationPct"] == 50 and g0["energyJoules"] == pytest.approx(3000)
    (p,) = g0["processes"]
    assert (p["pid"], p["pod"], p["container"], p["tenant"], p["allocated"]) == (
        990000501,
        "payments/api",
        "main",
        "payments",
        True,
    )
    status = node.agent.status()
    assert status["violations"] == [] and status["actions"] == []
    usage = status["tenants"]["payments"]
    assert usage["usage"]["gpus"] == 1 and usage["usage"]["gpuMemoryBytes"] == 20 * GIB
    assert usage["gpuSeconds"] == pytest.approx(10) and usage["energyJoules"] == pytest.approx(3000)
    assert node.audit() == []
    text = node.status_text()
    assert "payments/api" in text and "20.0/40.0" in text
    assert 'palisade_gpu_tenant_energy_joules_total{tenant="payments"} 3000.0' in metric_lines(node)


async def test_over_memory_quota_is_reported_after_the_grace_period_once(make_node: Any) -> None:
    node = await make_node(
        {
            "gpus": TWO_GPUS,
            "namespaces": {"payments": {"palisade.dev/tenant": "payments"}},
            "pods": [
                pod("api", "payments", 1, {"nvidia.com/gpu": [G0]}),
                pod("batch", "payments", 2, {"nvidia.com/gpu": [G1]}),
            ],
            "processes": [
                {"pid": 990000501, "gpu": 0, "pod": "api", "memoryGiB": 20},
                {"pid": 990000502, "gpu": 1, "pod": "batch", "memoryGiB": [[0, 10], [5, 50]]},
            ],
        },
        bundle(
            "payments",
            "payments",
            gpuMemoryBytes=40 * GIB,
            enforcement="report",
            gracePeriodSeconds=3,
        ),
    )
    assert await node.run_until(4) == []
    assert node.agent.violations == []
    assert await node.run_until(7) == [], "violation since t=5, grace 3 s"
    (v,) = node.agent.status()["violations"]
    assert (v["tenant"], v["quota"], v["measured"], v["limit"]) == (
        "payments",
        "gpuMemoryBytes",
        70 * GIB,
        40 * GIB,
    )
    assert v["pods"] == ["payments/batch"]
    (record,) = await node.run_until(8)
    assert (record.enforcement, record.pod, record.namespace) == ("report", "batch", "payments")
    assert await node.run_until(15) == [], "reported once per episode"
    (audit,) = node.audit()
    assert audit["kind"] == "action" and audit["tenant"] == "payments"
    assert audit["decision"] == "report" and audit["rule_id"] == "gpuQuota/gpuMemoryBytes"
    assert audit["bundle_revision"] == 0 or audit["bundle_revision"] >= 0
    details = audit["details"]
    assert details["pod"] == "payments/batch" and details["measured"] == 70 * GIB
    evidence = {p["pod"]: p["gpuMemoryBytes"] for p in details["evidence"]["pods"]}
    assert evidence == {"payments/api": 20 * GIB, "payments/batch": 50 * GIB}
    assert node.audit_verifies()
    assert 'palisade_gpu_quota_violations{quota="gpuMemoryBytes",tenant="payments"} 1.0' in (
        metric_lines(node)
    )
    text = node.status_text()
    assert "Violations" in text and "gpuMemoryBytes" in text and "payments/batch" in text


def _child(ignore_term: bool = False) -> subprocess.Popen[bytes]:
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code, CHILD_MARK], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)
        if p.stdout:
            p.stdout.close()


async def _wait_exit(proc: subprocess.Popen[bytes]) -> int | None:
    for _ in range(100):
        if proc.poll() is not None:
            return proc.returncode
        await asyncio.sleep(0.05)
    return None


MIG_GPU = {
    "index": 0,
    "uuid": G0,
    "powerWatts": 350,
    "mig": [
        {"giId": 1, "profile": "1g.10gb", "uuid": "MIG-0001"},
        {"giId": 2, "profile": "1g.10gb", "uuid": "MIG-0002"},
        {"giId": 3, "profile": "1g.10gb", "uuid": "MIG-0003"},
        {"giId": 4, "profile": "3g.40gb", "memoryTotalGiB": 40, "uuid": "MIG-0004"},
    ],
}


async def test_over_mig_profile_count_kills_only_the_offending_pods_real_processes(
    make_node: Any, children: list[subprocess.Popen[bytes]]
) -> None:
    polite, stubborn, bystander = _child(), _child(ignore_term=True), _child()
    children += [polite, stubborn, bystander]
    node = await make_node(
        {
            "gpus": [MIG_GPU],
            "namespaces": {"research": {"palisade.dev/tenant": "research"}},
            "pods": [
                pod("trainer", "research", 1, {"nvidia.com/mig-1g.10gb": ["MIG-0001", "MIG-0002"]}),
                pod("notebook", "research", 2, {"nvidia.com/mig-1g.10gb": ["MIG-0003"]}),
            ],
            "processes": [
                {"pid": polite.pid, "gpu": 0, "gi": 1, "pod": "trainer", "memoryGiB": 5},
                {"pid": stubborn.pid, "gpu": 0, "gi": 2, "pod": "trainer", "memoryGiB": 5},
                {"pid": bystander.pid, "gpu": 0, "gi": 3, "pod": "notebook", "memoryGiB": 5},
            ],
        },
        bundle(
            "research",
            "research",
            migInstances={"1g.10gb": 2},
            enforcement="kill",
            gracePeriodSeconds=2,
        ),
        kill_grace_s=0.3,
    )
    g = node.gpu(G0)
    assert g["migEnabled"] and [m["profile"] for m in g["mig"]] == ["1g.10gb"] * 3 + ["3g.40gb"]
    assert "utilization" in g["unsupported"] and g["utilizationPct"] is None
    assert node.agent.usages["research"].mig() == {
        "1g.10gb": {f"{G0}/gi1", f"{G0}/gi2", f"{G0}/gi3"}
    }
    assert await node.run_until(1) == []
    (record,) = await node.run_until(2)
    assert record.pod == "trainer" and set(record.pids) == {polite.pid, stubborn.pid}
    assert record.outcome.startswith("no Kubernetes API") and "SIGTERM sent to" in record.outcome
    assert await _wait_exit(polite) == -signal.SIGTERM
    assert await _wait_exit(stubborn) == -signal.SIGKILL, "SIGKILL after the grace period"
    assert bystander.poll() is None, "the other pod's process is never signalled"
    await node.agent.enforcer.settle()
    audit = node.audit()
    assert [(a["decision"], a["details"]["phase"]) for a in audit] == [
        ("kill", "decided"),
        ("kill", "done"),
        ("kill", "followup"),
    ]
    assert "SIGTERM" in audit[1]["details"]["outcome"]
    assert audit[2]["details"]["outcome"].startswith(f"SIGKILL sent to [{stubborn.pid}]")
    assert all(a["rule_id"] == "gpuQuota/migInstances/1g.10gb" for a in audit)
    assert audit[0]["details"]["evidence"]["pods"][0]["pod"] == "research/notebook"
    assert node.audit_verifies()
    assert "SIGKILL" in node.status_text()


class ElsewhereNow:
    """The PID now belongs to a process outside the pod (as after PID reuse)."""

    def read(self, pid: int) -> str:
        return "0::/system.slice/other.service\n"


async def test_a_recycled_pid_in_another_cgroup_is_never_signalled(
    make_node: Any, children: list[subprocess.Popen[bytes]]
) -> None:
    victim = _child()
    children.append(victim)
    node = await make_node(
        {
            "gpus": [MIG_GPU],
            "namespaces": {"research": {"palisade.dev/tenant": "research"}},
            "pods": [pod("trainer", "research", 1)],
            "processes": [{"pid": victim.pid, "gpu": 0, "gi": 1, "pod": "trainer"}],
        },
        bundle(
            "research",
            "research",
            enforcement="kill",
            gracePeriodSeconds=1,
            allocatedDevicesOnly=True,
        ),
        signal_cgroups=ElsewhereNow(),
    )
    (record,) = await node.run_until(1)
    assert record.pids == (victim.pid,), "attributed to the pod when sampled"
    assert "no live process of the pod to signal" in record.outcome
    await asyncio.sleep(0.2)
    assert victim.poll() is None


async def test_a_process_on_a_gpu_not_allocated_to_its_pod_is_caught_via_the_kubelet(
    make_node: Any, kubelet: Any
) -> None:
    kubelet.lister.items = [
        ContainerDevices("payments", "api", "main", "nvidia.com/gpu", (G0,)),
        ContainerDevices("payments", "api", "main", "example.com/fpga", ("fpga-0",)),
    ]
    node = await make_node(
        {
            "gpus": TWO_GPUS,
            "namespaces": {"payments": {"palisade.dev/tenant": "payments"}},
            "pods": [pod("api", "payments", 1)],
            "processes": [
                {"pid": 990000501, "gpu": 0, "pod": "api", "memoryGiB": 10},
                {"pid": 990000502, "gpu": 1, "pod": "api", "memoryGiB": 10, "start": 3},
            ],
        },
        bundle(
            "payments",
            "payments",
            allocatedDevicesOnly=True,
            enforcement="evict",
            gracePeriodSeconds=1,
        ),
        allocations=kubelet.client,
        dry_run=True,
    )
    assert await node.run_until(3) == []
    procs = {p["pid"]: p for g in node.agent.status()["gpus"] for p in g["processes"]}
    assert procs[990000501]["allocated"] is True and procs[990000502]["allocated"] is False
    (v,) = node.agent.status()["violations"]
    assert v["quota"] == "allocatedDevicesOnly" and v["pods"] == ["payments/api"]
    (record,) = await node.run_until(4)
    assert (
        record.dry_run and record.outcome == "dry-run: would evict" and record.pids == (990000502,)
    )
    (audit,) = node.audit()
    assert audit["details"]["dryRun"] is True and audit["details"]["pids"] == [990000502]
    assert audit["details"]["evidence"]["unallocated"] == {
        "00000001-0000-4000-8000-000000000000": [G1]
    }
    assert kubelet.lister.calls >= 4
    assert "no" in node.status_text()


async def test_allocations_unknown_when_the_kubelet_is_down_means_no_verdict(
    make_node: Any, kubelet: Any
) -> None:
    from nodeagent.podresources.client import PodResourcesClient

    down = PodResourcesClient(str(kubelet.socket) + ".missing", timeout_s=0.5)
    node = await make_node(
        {
            "gpus": TWO_GPUS,
            "namespaces": {"payments": {"palisade.dev/tenant": "payments"}},
            "pods": [pod("api", "payments", 1)],
            "processes": [{"pid": 990000502, "gpu": 1, "pod": "api"}],
        },
        bundle("payments", "payments", allocatedDevicesOnly=True, gracePeriodSeconds=0),
        allocations=down,
    )
    await node.run_until(2)
    status = node.agent.status()
    assert "PodResources List failed" in status["allocationsError"]
    assert status["gpus"][1]["processes"][0]["allocated"] is None
    assert status["violations"] == [] and node.audit() == []
    await down.close()


async def test_unattributable_processes_are_reported_and_never_charged_or_acted_on(
    make_node: Any,
) -> None:
    ghost_uid = "deadbeef-0000-4000-8000-000000000000"
    node = await make_node(
        {
            "gpus": TWO_GPUS,
            "namespaces": {
                "payments": {"palisade.dev/tenant": "payments"},
                "sandbox": {},
            },
            "pods": [pod("api", "payments", 1), pod("toy", "sandbox", 3)],
            "processes": [
                {"pid": 990000900, "gpu": 0, "memoryGiB": 70},  # a host process
                {
                    "pid": 990000901,
                    "gpu": 1,
                    "memoryGiB": 60,
                    "cgroup": f"0::/kubepods/besteffort/pod{ghost_uid}/{cid(9)}\n",
                },
                {"pid": 990000902, "gpu": 1, "pod": "toy", "memoryGiB": 5},
            ],
        },
        bundle(
            "payments",
            "payments",
            gpuMemoryBytes=GIB,
            gpus=0,
            enforcement="kill",
            gracePeriodSeconds=0,
        ),
    )
    assert await node.run_until(5) == []
    status = node.agent.status()
    reasons = {u["pid"]: u["reason"] for u in status["unattributed"]}
    assert reasons == {
        990000900: "process is not in a pod cgroup",
        990000901: "pod is not known on this node",
        990000902: "namespace has no tenant",
    }
    assert status["violations"] == [] and node.audit() == []
    assert status["tenants"]["payments"]["usage"]["gpuMemoryBytes"] == 0
    assert status["energy"]["joules"]["unattributed"] == pytest.approx(2500)
    assert "payments" not in status["energy"]["joules"]
    assert "palisade_gpu_unattributed_processes 3.0" in metric_lines(node)
    assert "3 unattributed GPU process(es)" in node.status_text()


async def test_a_gpu_that_disappears_is_reported_lost_and_the_others_go_on(
    make_node: Any,
) -> None:
    node = await make_node(
        {
            "gpus": TWO_GPUS,
            "namespaces": {"payments": {"palisade.dev/tenant": "payments"}},
            "pods": [pod("api", "payments", 1), pod("batch", "payments", 2)],
            "processes": [
                {"pid": 990000501, "gpu": 0, "pod": "api", "memoryGiB": 10},
                {"pid": 990000502, "gpu": 1, "pod": "batch", "memoryGiB": 10},
            ],
            "events": [
                {"at": 3, "gpu": 1, "type": "lost"},
                {"at": 2, "gpu": 0, "type": "xid", "code": 79},
            ],
        },
        bundle("payments", "payments", gpus=1, enforcement="report", gracePeriodSeconds=10),
    )
    await node.run_until(2)
    assert node.gpu(G0)["xidEvents"] == [79]
    assert node.agent.status()["violations"][0]["quota"] == "gpus"
    await node.run_until(6)
    lost = node.gpu(G1)
    assert lost["ok"] is False and lost["error"] == "GPU is lost" and lost["processes"] == []
    assert node.gpu(G0)["ok"] and node.gpu(G0)["memoryUsedBytes"] == 10 * GIB
    status = node.agent.status()
    assert status["health"] == "degraded" and status["samples"] == 7
    assert status["violations"] == [], "the violation ended with the GPU; no action taken"
    assert node.audit() == []
    assert status["tenants"]["payments"]["energyJoules"] == pytest.approx(6 * 300 + 2 * 200)
    lines = metric_lines(node)
    assert any(
        line.startswith("palisade_gpu_up{") and G1 in line and line.endswith(" 0.0")
        for line in lines
    )
    assert any("palisade_gpu_xid_errors_total" in line and 'xid="79"' in line for line in lines)
    assert "GPU is lost" in node.status_text()


async def test_system_namespaces_are_never_acted_on_even_over_quota(make_node: Any) -> None:
    node = await make_node(
        {
            "gpus": TWO_GPUS,
            "namespaces": {"kube-system": {"palisade.dev/tenant": "platform"}},
            "pods": [pod("dcgm", "kube-system", 4)],
            "processes": [{"pid": 999_999_999, "gpu": 0, "pod": "dcgm", "memoryGiB": 30}],
        },
        bundle(
            "platform", "kube-system", gpuMemoryBytes=GIB, enforcement="kill", gracePeriodSeconds=1
        ),
    )
    (record,) = await node.run_until(1)
    assert record.outcome == "skipped: system namespace"
    (audit,) = node.audit()
    assert audit["details"]["outcome"] == "skipped: system namespace"


class BrokenAudit:
    async def append(self, entry: Any, secret_names: Any = ()) -> dict[str, Any]:
        raise OSError("disk full")


async def test_nothing_is_killed_when_the_audit_log_cannot_record_it(
    make_node: Any, children: list[subprocess.Popen[bytes]]
) -> None:
    victim = _child()
    children.append(victim)
    node = await make_node(
        {
            "gpus": [MIG_GPU],
            "namespaces": {"research": {"palisade.dev/tenant": "research"}},
            "pods": [pod("trainer", "research", 1)],
            "processes": [{"pid": victim.pid, "gpu": 0, "gi": 1, "pod": "trainer"}],
        },
        bundle(
            "research",
            "research",
            enforcement="kill",
            gracePeriodSeconds=1,
            allocatedDevicesOnly=True,
        ),
    )
    node.agent.enforcer.set_audit(BrokenAudit())
    (record,) = await node.run_until(1)
    assert record.outcome == "not done: audit log unavailable"
    await asyncio.sleep(0.2)
    assert victim.poll() is None
    assert ("research", "allocatedDevicesOnly", "kill", "failed") in node.agent.action_counts


async def test_a_slow_gpu_read_does_not_stall_the_event_loop(make_node: Any) -> None:
    """NVML calls can take tens of milliseconds on a busy GPU: a tick reads the
    backend in a worker thread, so /status, /metrics and heartbeats keep answering."""
    node = await make_node({"gpus": TWO_GPUS, "processes": []})
    agent = node.agent
    sample = agent.backend.sample

    def slow_sample() -> Any:
        time.sleep(0.3)  # a blocking NVML call
        return sample()

    agent.backend.sample = slow_sample
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            beats += 1

    task = asyncio.create_task(heartbeat())
    try:
        before = agent.samples
        await agent.tick()
    finally:
        task.cancel()
    assert agent.samples == before + 1 and agent.tick_errors == 0
    assert beats >= 10  # the loop ran other work while the read blocked (0 when inline)
