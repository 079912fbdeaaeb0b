"""The agent loop: sample -> attribute -> account -> decide -> act, once a second.

Each tick is one pass over the pure pieces with the I/O at both ends::

    backend.sample()            (NVML, simulated, or no-GPU)
    cgroups.read(pid)           for each GPU process
    allocations.list()          (kubelet PodResources; None when unreachable)
    attribution.attribute()     -> who owns each process
    energy.Ledger.add()         -> GPU-seconds, joules, watts per tenant
    quota.usage/evaluate/plan() -> violations, actions due
    enforcer.execute()          -> Event / eviction / signals + audit

The latest state is kept for ``/status``, ``/metrics`` and heartbeats. A tick
never raises: a failure is logged, counted and shown in the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeagent import attribution, energy, quota
from nodeagent.attribution import Attributed, Owner
from nodeagent.cgroup import HOST, CgroupReader, Namespace
from nodeagent.enforce import ActionRecord, Enforcer
from nodeagent.gpu import BackendMode, GpuBackend, NodeSnapshot
from nodeagent.pods import AllocationSource, PodIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentSettings:
    node: str
    """This node's name (``spec.nodeName`` of the pods it watches)."""
    interval_s: float = 1.0
    """Sampling period."""
    dry_run: bool = False
    """Decide and audit, but never signal, evict or post Events."""
    system_namespaces: frozenset[str] = quota.DEFAULT_SYSTEM_NAMESPACES
    """Namespaces never acted on, whatever their usage."""


@dataclass
class QuotaConfig:
    quotas: Mapping[str, quota.GpuQuota] = field(default_factory=dict)
    namespaces: Mapping[str, str] = field(default_factory=dict)
    revision: int = 0
    digest: str = ""
    source: str = "none"


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        backend: GpuBackend,
        cgroups: CgroupReader,
        pods: PodIndex,
        allocations: AllocationSource | None,
        enforcer: Enforcer,
        *,
        clock: Callable[[], float] = time.time,
        cgroup_ns: Namespace = HOST,
    ) -> None:
        self.settings = settings
        #: the reader's cgroup namespace: shapes the paths read from /proc
        self.cgroup_ns = cgroup_ns
        self.backend = backend
        self.cgroups = cgroups
        self.pods = pods
        self.allocations = allocations
        self.enforcer = enforcer
        self.clock = clock
        self.config = QuotaConfig()
        self.ledger = energy.Ledger()
        self.state = quota.EnforcementState()
        self.snapshot: NodeSnapshot | None = None
        self.attributed: list[Attributed] = []
        self.usages: dict[str, quota.TenantUsage] = {}
        self.violations: list[quota.Violation] = []
        self.power: dict[str, float] = {}
        self.samples = 0
        self.tick_errors = 0
        self.last_error = ""
        self.last_tick_s = 0.0
        self.allocations_error = ""
        self.xid_total: Counter[tuple[str, int]] = Counter()
        self.action_counts: Counter[tuple[str, str, str, str]] = Counter()
        #: heartbeat bookkeeping (``lastSent``, ``sent``), updated as each is built
        self.heartbeat: dict[str, Any] = {"lastSent": None, "sent": 0}
        #: live view of the distributor link, set when a distributor is configured
        self.link: Callable[[], dict[str, Any]] | None = None
        #: the trusted signing keys (``TrustWatcher.document``), with a distributor
        self.trust: Callable[[], dict[str, Any]] | None = None

    # -- configuration --------------------------------------------------------
    def set_quotas(self, config: QuotaConfig) -> None:
        self.config = config
        self.pods.set_bundle_tenants(config.namespaces)

    @property
    def ready(self) -> bool:
        return self.samples > 0

    # -- one tick ---------------------------------------------------------------
    async def tick(self) -> list[ActionRecord]:
        started = time.perf_counter()
        try:
            return await self._tick()
        except Exception as exc:  # the loop must go on
            self.tick_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("tick failed")
            return []
        finally:
            self.last_tick_s = time.perf_counter() - started

    def _read_node(self) -> tuple[NodeSnapshot, dict[int, str | None]]:
        """The blocking reads of a tick: the GPU backend (NVML calls can take tens of
        milliseconds on a busy GPU) and each GPU process's cgroup file."""
        snap = self.backend.sample()
        pids = {p.pid for g in snap.gpus for p in g.processes}
        return snap, {pid: self.cgroups.read(pid) for pid in pids}

    async def _tick(self) -> list[ActionRecord]:
        # In a worker thread: /status, /metrics and heartbeats keep answering meanwhile.
        snap, texts = await asyncio.to_thread(self._read_node)
        allocated: dict[str, set[str]] | None = None
        if self.allocations is not None and texts:
            try:
                allocs = await self.allocations.list()
                allocated = attribution.allocations_by_pod(allocs, self.pods)
                self.allocations_error = ""
            except Exception as exc:
                self.allocations_error = str(exc)
        procs = attribution.attribute(snap, texts, self.pods, allocated, self.cgroup_ns)
        power = self.ledger.add(snap, procs)
        usages = quota.usage(procs, power)
        violations = quota.evaluate(usages, self.config.quotas)
        actions, self.state = quota.plan(
            violations,
            self.config.quotas,
            usages,
            self.state,
            snap.time,
            dry_run=self.settings.dry_run,
            system_namespaces=self.settings.system_namespaces,
        )
        for g in snap.gpus:
            for code in g.xid_events:
                self.xid_total[(g.uuid, code)] += 1
        self.snapshot, self.attributed, self.usages = snap, procs, usages
        self.violations, self.power = violations, power
        self.samples += 1
        records = []
        for action in actions:
            record = await self.enforcer.execute(action)
            key = (record.tenant, record.quota, record.enforcement, _outcome_class(record))
            self.action_counts[key] += 1
            records.append(record)
            log.warning(
                "gpu quota action",
                extra={"tenant": record.tenant, "quota": record.quota, "outcome": record.outcome},
            )
        return records

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every ``interval_s`` (on the monotonic clock) until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            await self.tick()
            next_at += self.settings.interval_s
            delay = next_at - loop.time()
            if delay < 0:  # fell behind: do not try to catch up in a burst
                next_at, delay = loop.time(), 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    # -- views ------------------------------------------------------------------
    def owner_of(self, pid: int, text: str | None) -> Owner:
        """Who ``pid`` belongs to now (its cgroup file's ``text``), from the live pod list."""
        return attribution.owner_of(pid, text, self.pods, self.cgroup_ns)

    def summary(self) -> dict[str, Any]:
        """The node summary carried by heartbeats (small; the full view is /status)."""
        snap = self.snapshot
        return {
            "node": self.settings.node,
            "mode": self.backend.mode.value,
            "gpus": len(snap.gpus) if snap else 0,
            "gpusOk": sum(1 for g in snap.gpus if g.ok) if snap else 0,
            "migInstances": sum(len(g.mig) for g in snap.gpus) if snap else 0,
            "processes": len(self.attributed),
            "unattributed": sum(1 for p in self.attributed if not p.attributed),
            "tenants": {name: u.summary() for name, u in sorted(self.usages.items())},
            "violations": [f"{v.tenant}/{v.kind}" for v in self.violations],
            "energyJoules": {k: round(v, 3) for k, v in sorted(self.ledger.joules.items())},
            "gpuSeconds": {k: round(v, 3) for k, v in sorted(self.ledger.gpu_seconds.items())},
            "bundleRevision": self.config.revision,
        }

    def status(self) -> dict[str, Any]:
        from nodeagent.status import status_document

        return status_document(self)

    def heartbeat_status(self) -> dict[str, Any]:
        live = self.link() if self.link else {"connected": False, "target": ""}
        return {**live, **self.heartbeat}

    def health(self) -> str:
        if self.snapshot is None:
            return "starting"
        if self.backend.mode is BackendMode.NO_GPU:
            return "ok: no GPU"
        if any(not g.ok for g in self.snapshot.gpus) or self.last_error:
            return "degraded"
        return "ok"

    def counters(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        out["samples"] = float(self.samples)
        out["tick_errors"] = float(self.tick_errors)
        for (_t, _q, action, _o), n in self.action_counts.items():
            out[f"actions_{action}"] += n
        return dict(out)


def _outcome_class(record: ActionRecord) -> str:
    """A small fixed set for the metric label: dry_run, skipped, failed, refused, done."""
    if record.dry_run:
        return "dry_run"
    if record.outcome.startswith("skipped"):
        return "skipped"
    if "not done" in record.outcome:
        return "failed"
    for word in ("failed", "refused"):
        if word in record.outcome:
            return word
    return "done"
