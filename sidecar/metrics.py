"""Prometheus metrics of one sidecar, on their own registry (several apps may share a process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class SidecarMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "palisade_sidecar_requests_total",
            "MCP messages received, by method and outcome",
            ["method", "outcome"],
            registry=r,
        )
        self.decisions = Counter(
            "palisade_sidecar_decisions_total",
            "tools/call decisions, by decision and rule",
            ["decision", "rule"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "palisade_sidecar_decision_seconds",
            "Time to decide one tools/call",
            buckets=(5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2),
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "palisade_sidecar_upstream_seconds",
            "Time until the upstream answered (headers)",
            registry=r,
        )
        self.in_flight = Gauge(
            "palisade_sidecar_in_flight", "Requests being proxied now", registry=r
        )
        self.bundle_revision = Gauge(
            "palisade_sidecar_bundle_revision", "Revision of the active bundle", registry=r
        )
        self.bundle_errors = Counter(
            "palisade_sidecar_bundle_errors_total",
            "Bundles refused by intake (parse, verify, compile)",
            registry=r,
        )
        self.rejected = Counter(
            "palisade_sidecar_rejected_total",
            "Requests refused before any decision, by reason",
            ["reason"],
            registry=r,
        )
