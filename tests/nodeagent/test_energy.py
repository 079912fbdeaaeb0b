"""Energy and GPU-seconds split among tenants by the documented rule."""

from __future__ import annotations

import pytest

from nodeagent.attribution import Attributed
from nodeagent.energy import IDLE, UNATTRIBUTED, Ledger, split
from nodeagent.gpu import BackendMode, GpuSample, MigSample, NodeSnapshot


def p(pid: int, tenant: str, mem: int, gi: int | None = None, gpu: str = "G") -> Attributed:
    return Attributed(
        pid=pid,
        gpu_uuid=gpu,
        gpu_index=0,
        gi_id=gi,
        profile="",
        used_memory_bytes=mem,
        tenant=tenant,
        unattributed_reason="" if tenant else "not in a pod",
    )


def test_a_whole_gpu_is_split_by_process_memory_share() -> None:
    gpu = GpuSample(index=0, uuid="G")
    shares = split(gpu, [p(1, "a", 30), p(2, "b", 10), p(3, "", 10)])
    assert shares == pytest.approx({"a": 0.6, "b": 0.2, UNATTRIBUTED: 0.2})


def test_processes_without_memory_figures_share_equally_and_an_empty_gpu_is_idle() -> None:
    gpu = GpuSample(index=0, uuid="G")
    assert split(gpu, [p(1, "a", 0), p(2, "b", 0)]) == pytest.approx({"a": 0.5, "b": 0.5})
    assert split(gpu, []) == {IDLE: 1.0}


def test_a_mig_gpu_is_split_by_instance_size_whoever_uses_the_memory() -> None:
    gpu = GpuSample(
        index=0,
        uuid="G",
        mig_enabled=True,
        mig=(
            MigSample(gi_id=1, ci_id=0, profile="3g.40gb", slices=3),
            MigSample(gi_id=2, ci_id=0, profile="1g.10gb", slices=1),
            MigSample(gi_id=3, ci_id=0, profile="1g.10gb", slices=1),
        ),
    )
    shares = split(gpu, [p(1, "a", 1, gi=1), p(2, "b", 9_000, gi=2)])
    assert shares == pytest.approx({"a": 3 / 7, "b": 1 / 7, IDLE: 3 / 7})


def test_the_ledger_uses_the_energy_counter_and_falls_back_to_power_times_time() -> None:
    ledger = Ledger()
    procs = [p(1, "a", 10)]

    def snap(t: float, energy: float | None, power: float) -> NodeSnapshot:
        g = GpuSample(index=0, uuid="G", power_watts=power, energy_joules=energy)
        return NodeSnapshot(time=t, mode=BackendMode.SIMULATED, gpus=(g,))

    ledger.add(snap(0.0, 1000.0, 100.0), procs)
    watts = ledger.add(snap(2.0, 1500.0, 250.0), procs)
    assert ledger.joules["a"] == pytest.approx(500.0)  # counter delta, not 250 W x 2 s
    assert ledger.gpu_seconds["a"] == pytest.approx(2.0)
    assert watts == {"a": 250.0}
    ledger.add(snap(3.0, None, 300.0), procs)  # counter unsupported: power x dt
    assert ledger.joules["a"] == pytest.approx(800.0)
    ledger.add(snap(4.0, 10.0, 300.0), procs)  # counter reset (driver reload): power x dt
    assert ledger.joules["a"] == pytest.approx(1100.0)
