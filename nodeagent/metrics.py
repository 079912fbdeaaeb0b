"""Prometheus metrics of the agent, read from its latest state at scrape time.

A custom collector (not long-lived gauges): a GPU that disappears or a pod that
ends simply stops being exported, with no stale series to clean up. GPU series
carry dcgm-exporter's label names (``gpu``, ``UUID``, ``modelName``,
``GPU_I_PROFILE``, ``GPU_I_ID``, ``pod``, ``namespace``, ``container``) so
dashboards built for dcgm-exporter join them; values use base units
(bytes, watts, joules, hertz, ratios).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from nodeagent.agent import Agent

GPU = ["gpu", "UUID", "modelName"]
MIG = [*GPU, "GPU_I_PROFILE", "GPU_I_ID"]
PROC = [*MIG, "pod", "namespace", "container", "tenant"]


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def collect(self) -> Iterator[Metric]:
        a = self._agent
        snap = a.snapshot
        info = GaugeMetricFamily(
            "palisade_nodeagent_info",
            "The agent's node, backend and driver",
            labels=["node", "mode", "driver"],
        )
        driver = snap.driver_version if snap else ""
        info.add_metric([a.settings.node, a.backend.mode.value, driver], 1)
        yield info
        yield CounterMetricFamily("palisade_nodeagent_samples", "Samples taken", value=a.samples)
        yield CounterMetricFamily(
            "palisade_nodeagent_tick_errors", "Ticks that failed", value=a.tick_errors
        )
        yield GaugeMetricFamily(
            "palisade_nodeagent_tick_seconds", "Duration of the last tick", value=a.last_tick_s
        )
        up = GaugeMetricFamily("palisade_gpu_up", "1 when the GPU answers, 0 when lost", labels=GPU)
        util = GaugeMetricFamily("palisade_gpu_utilization_ratio", "GPU utilisation", labels=GPU)
        used = GaugeMetricFamily("palisade_gpu_memory_used_bytes", "Memory used", labels=MIG)
        total = GaugeMetricFamily("palisade_gpu_memory_total_bytes", "Memory total", labels=MIG)
        power = GaugeMetricFamily("palisade_gpu_power_watts", "Power draw", labels=GPU)
        energy = CounterMetricFamily(
            "palisade_gpu_energy_joules", "Driver's energy counter since it loaded", labels=GPU
        )
        temp = GaugeMetricFamily("palisade_gpu_temperature_celsius", "GPU temperature", labels=GPU)
        clock = GaugeMetricFamily("palisade_gpu_clock_hertz", "Clocks", labels=[*GPU, "clock"])
        ecc = CounterMetricFamily(
            "palisade_gpu_ecc_errors", "Volatile ECC errors", labels=[*GPU, "type"]
        )
        xid = CounterMetricFamily(
            "palisade_gpu_xid_errors", "XID errors seen by this agent", labels=[*GPU, "xid"]
        )
        pmem = GaugeMetricFamily(
            "palisade_gpu_process_memory_used_bytes",
            "GPU memory used by a pod's container on a GPU or MIG instance",
            labels=PROC,
        )
        names: dict[str, tuple[str, str]] = {}
        for g in snap.gpus if snap else ():
            lab = [str(g.index), g.uuid, g.name]
            names[g.uuid] = (str(g.index), g.name)
            up.add_metric(lab, 1.0 if g.ok else 0.0)
            if not g.ok:
                continue
            if g.utilization_pct is not None:
                util.add_metric(lab, g.utilization_pct / 100.0)
            if g.memory_used_bytes is not None:
                used.add_metric([*lab, "", ""], g.memory_used_bytes)
            if g.memory_total_bytes is not None:
                total.add_metric([*lab, "", ""], g.memory_total_bytes)
            for m in g.mig:
                mlab = [*lab, m.profile, str(m.gi_id)]
                if m.memory_used_bytes is not None:
                    used.add_metric(mlab, m.memory_used_bytes)
                if m.memory_total_bytes is not None:
                    total.add_metric(mlab, m.memory_total_bytes)
            if g.power_watts is not None:
                power.add_metric(lab, g.power_watts)
            if g.energy_joules is not None:
                energy.add_metric(lab, g.energy_joules)
            if g.temperature_c is not None:
                temp.add_metric(lab, g.temperature_c)
            if g.sm_clock_mhz is not None:
                clock.add_metric([*lab, "sm"], g.sm_clock_mhz * 1e6)
            if g.memory_clock_mhz is not None:
                clock.add_metric([*lab, "memory"], g.memory_clock_mhz * 1e6)
            if g.ecc_corrected is not None:
                ecc.add_metric([*lab, "corrected"], g.ecc_corrected)
            if g.ecc_uncorrected is not None:
                ecc.add_metric([*lab, "uncorrected"], g.ecc_uncorrected)
        for (uuid, code), n in sorted(a.xid_total.items()):
            idx, model = names.get(uuid, ("", ""))
            xid.add_metric([idx, uuid, model, str(code)], n)
        per_container: dict[tuple[str, ...], float] = defaultdict(float)
        for p in a.attributed:
            idx, model = names.get(p.gpu_uuid, ("", ""))
            key: tuple[str, ...] = (
                idx,
                p.gpu_uuid,
                model,
                p.profile,
                "" if p.gi_id is None else str(p.gi_id),
                p.pod,
                p.namespace,
                p.container,
                p.tenant if p.attributed else "unattributed",
            )
            per_container[key] += p.used_memory_bytes
        for key, value in sorted(per_container.items()):
            pmem.add_metric(list(key), value)
        yield from (up, util, used, total, power, energy, temp, clock, ecc, xid, pmem)
        yield from self._tenants()

    def _tenants(self) -> Iterator[Metric]:
        a = self._agent
        secs = CounterMetricFamily(
            "palisade_gpu_tenant_seconds",
            "GPU-seconds per tenant (shares by MIG instance, else by process memory)",
            labels=["tenant"],
        )
        for k, v in sorted(a.ledger.gpu_seconds.items()):
            secs.add_metric([k], v)
        joules = CounterMetricFamily(
            "palisade_gpu_tenant_energy_joules", "GPU energy per tenant", labels=["tenant"]
        )
        for k, j in sorted(a.ledger.joules.items()):
            joules.add_metric([k], j)
        watts = GaugeMetricFamily(
            "palisade_gpu_tenant_power_watts", "GPU power per tenant now", labels=["tenant"]
        )
        for k, w in sorted(a.power.items()):
            watts.add_metric([k], w)
        mem = GaugeMetricFamily(
            "palisade_gpu_tenant_memory_used_bytes", "GPU memory per tenant", labels=["tenant"]
        )
        for k, u in sorted(a.usages.items()):
            mem.add_metric([k], u.memory_bytes)
        unattributed = GaugeMetricFamily(
            "palisade_gpu_unattributed_processes", "GPU processes with no tenant"
        )
        unattributed.add_metric([], sum(1 for p in a.attributed if not p.attributed))
        viol = GaugeMetricFamily(
            "palisade_gpu_quota_violations",
            "1 per quota a tenant exceeds now",
            labels=["tenant", "quota"],
        )
        for violation in a.violations:
            viol.add_metric([violation.tenant, violation.kind], 1)
        actions = CounterMetricFamily(
            "palisade_gpu_quota_actions",
            "Quota actions taken",
            labels=["tenant", "quota", "action", "outcome"],
        )
        for key, n in sorted(a.action_counts.items()):
            actions.add_metric(list(key), n)
        yield from (secs, joules, watts, mem, unattributed, viol, actions)


def registry_for(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry
