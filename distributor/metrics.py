"""The distributor's Prometheus metrics, served on ``GET /metrics``.

Two kinds: what this replica did since it started (pushes, ACKs and their
latency, NACKs, approval requests, audit intake), counted as it happens; and
what the fleet looks like now (clients by state, clients NACKing or behind the
served revision, approvals waiting), computed from the shared store at scrape
time by :func:`fleet_gauges`, a pure function. Every replica reports the same
fleet, so alerts take ``max`` over replicas rather than ``sum``.

No series carries a client id, an agent or an argument: the fleet is counted,
not listed (``palisade fleet`` lists it).
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from distributor.fleet import GONE, LIVE, STALE, liveness
from palisade.audit import intake

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from distributor.service import Hub

#: ACK latency buckets (push written → ACK read), in seconds.
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: ``kind`` label values by the proto's client kind names.
KINDS = {"CLIENT_KIND_SIDECAR": "sidecar", "CLIENT_KIND_NODE_AGENT": "node"}


@dataclass(frozen=True)
class FleetGauges:
    """The fleet now, as this replica reads it from the store."""

    clients: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(kind, state) → clients; state is live or stale (gone ones are not counted)."""
    nacking: Mapping[str, int] = field(default_factory=dict)
    """kind → live or stale clients whose latest answer to a revision is a NACK."""
    behind: Mapping[str, int] = field(default_factory=dict)
    """kind → live clients not on the served revision."""
    approvals_pending: int = 0
    oldest_pending_s: float = 0.0


def fleet_gauges(
    clients: Iterable[Mapping[str, Any]],
    pending_approvals: Iterable[Mapping[str, Any]],
    *,
    now: float,
    revision: int,
    grace_s: float,
    gone_after_s: float,
) -> FleetGauges:
    counted: Tally[tuple[str, str]] = Tally()
    nacking: Tally[str] = Tally()
    behind: Tally[str] = Tally()
    for row in clients:
        kind = KINDS.get(str(row["kind"]), "other")
        state = liveness(float(row["last_seen"]), now, grace_s, gone_after_s)
        if state == GONE:
            continue
        counted[(kind, state)] += 1
        if row["nack_revision"] and row["nack_revision"] > row["revision"]:
            nacking[kind] += 1
        if state == LIVE and revision and row["revision"] != revision:
            behind[kind] += 1
    for kind in (*KINDS.values(),):  # zero series, so "no client is stale" is a 0, not a gap
        for state in (LIVE, STALE):
            counted.setdefault((kind, state), 0)
        nacking.setdefault(kind, 0)
        behind.setdefault(kind, 0)
    created = [float(a["created"]) for a in pending_approvals]
    return FleetGauges(
        clients=dict(counted),
        nacking=dict(nacking),
        behind=dict(behind),
        approvals_pending=len(created),
        oldest_pending_s=max(0.0, now - min(created)) if created else 0.0,
    )


class HubMetrics:
    """What one replica counts as it happens, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.acks = Counter(
            "palisade_distributor_acks_total", "Bundles clients ACKed", ["kind"], registry=r
        )
        self.nacks = Counter(
            "palisade_distributor_nacks_total",
            "Bundles clients refused (NACK): they keep their last good one",
            ["kind"],
            registry=r,
        )
        for kind in KINDS.values():  # 0 series from the start, so rate() has a baseline
            self.acks.labels(kind)
            self.nacks.labels(kind)
        self.ack_seconds = Histogram(
            "palisade_distributor_ack_seconds",
            "Time from a bundle pushed to its ACK",
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.approvals_requested = Counter(
            "palisade_distributor_approvals_requested_total",
            "Approval requests received from clients",
            registry=r,
        )
        self.replay_gate = Counter(
            "palisade_distributor_replay_gate_total",
            "Changed candidates replayed against recent calls before publishing, by verdict",
            ["verdict"],
            registry=r,
        )
        for verdict in ("passed", "flagged", "refused", "unchecked"):
            self.replay_gate.labels(verdict)
        self.audit_store_errors = Counter(
            "palisade_distributor_audit_store_errors_total",
            "Audit batches the store could not take (the client keeps and resends them)",
            registry=r,
        )
        self.fleet = FleetGauges()
        #: when ``fleet`` was last read from the store (monotonic), and who reads it now
        self.fleet_read_at = float("-inf")
        self.fleet_lock = asyncio.Lock()
        #: Sources refused now, and whether the fleet is held on its last revision
        #: (every source failed to compile together); set by the server.
        self.source_state: Callable[[], tuple[int, bool]] = lambda: (0, False)

    def attach(self, hub: Hub) -> None:
        self.registry.register(_HubCollector(hub, self))


class _HubCollector(Collector):
    """The hub's own tallies and the latest fleet gauges, read at scrape time."""

    def __init__(self, hub: Hub, metrics: HubMetrics) -> None:
        self._hub = hub
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        hub, fleet = self._hub, self._metrics.fleet
        info = GaugeMetricFamily("palisade_distributor_info", "This replica", labels=["replica"])
        info.add_metric([hub.replica], 1)
        yield info
        cur = hub.current
        yield GaugeMetricFamily(
            "palisade_distributor_bundle_revision",
            "Revision this replica serves (0: none yet)",
            value=cur.revision if cur else 0,
        )
        refused_sources, held = self._metrics.source_state()
        yield GaugeMetricFamily(
            "palisade_distributor_source_errors",
            "Policy sources refused now (each is reported in its own status)",
            value=refused_sources,
        )
        yield GaugeMetricFamily(
            "palisade_distributor_publish_held",
            "1 when the sources do not compile and the fleet stays on the last revision",
            value=1 if held else 0,
        )
        yield GaugeMetricFamily(
            "palisade_distributor_subscribers",
            "Streams open on this replica",
            value=len(hub.subscribers),
        )
        yield CounterMetricFamily(
            "palisade_distributor_pushes", "Bundles pushed to clients", value=hub.pushes
        )
        clients = GaugeMetricFamily(
            "palisade_distributor_clients",
            "Clients by kind and state (live: heard from within the grace period)",
            labels=["kind", "state"],
        )
        for (kind, state), n in sorted(fleet.clients.items()):
            clients.add_metric([kind, state], n)
        yield clients
        yield _by_kind(
            "palisade_distributor_clients_nacking",
            "Clients whose latest answer is a NACK (running their last good bundle)",
            fleet.nacking,
        )
        yield _by_kind(
            "palisade_distributor_clients_behind",
            "Live clients not on the served revision",
            fleet.behind,
        )
        yield GaugeMetricFamily(
            "palisade_distributor_approvals_pending",
            "Approval requests waiting for a person",
            value=fleet.approvals_pending,
        )
        yield GaugeMetricFamily(
            "palisade_distributor_approval_oldest_pending_seconds",
            "Age of the oldest approval request still waiting (0: none)",
            value=fleet.oldest_pending_s,
        )
        records = CounterMetricFamily(
            "palisade_distributor_audit_records",
            "Audit records received, by result",
            labels=["result"],
        )
        records.add_metric(["stored"], hub.audit_stored)
        records.add_metric(["already_stored"], hub.audit_already_stored)
        yield records
        refused = CounterMetricFamily(
            "palisade_distributor_audit_refused",
            "Audit batches refused at intake, by reason (chain, signature, key ...)",
            labels=["reason"],
        )
        for reason in sorted(set(hub.audit_refused) | set(intake.REASONS)):
            refused.add_metric([reason], hub.audit_refused.get(reason, 0))
        yield refused


def _by_kind(name: str, documentation: str, counts: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["kind"])
    for kind, n in sorted(counts.items()):
        family.add_metric([kind], n)
    return family
