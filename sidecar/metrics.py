"""Prometheus metrics of one sidecar, on their own registry (several apps may share a process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from palisade.runtime.metrics import DecisionMetrics

#: Methods counted by name in ``palisade_sidecar_requests_total``; any other method a
#: client sends is counted as ``other``, so clients cannot grow the series (and the
#: sidecar's memory) without bound.
KNOWN_METHODS = frozenset(
    {
        "initialize", "ping", "server/discover", "tools/list", "tools/call",
        "resources/list", "resources/read", "resources/templates/list",
        "resources/subscribe", "resources/unsubscribe", "prompts/list", "prompts/get",
        "completion/complete", "logging/setLevel", "roots/list", "sampling/createMessage",
        "elicitation/create", "tasks/get", "tasks/result", "tasks/list", "tasks/cancel",
        "notifications/initialized", "notifications/cancelled", "notifications/progress",
        "notifications/message", "notifications/roots/list_changed",
        "notifications/tasks/status", "GET", "DELETE",
    }
)  # fmt: skip


#: Why a request is refused before any decision: no valid identity, or malformed.
REJECT_REASONS = ("auth", "bad_input")


def method_label(method: str | None) -> str:
    """The ``method`` label for a message: its method when known, ``response`` for none."""
    if method is None:
        return "response"
    return method if method in KNOWN_METHODS else "other"


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
        #: The decision metrics every deciding path shares (palisade/runtime/metrics.py).
        self.decisions = DecisionMetrics(r)
        self.upstream_seconds = Histogram(
            "palisade_sidecar_upstream_seconds",
            "Time until the upstream answered (headers)",
            registry=r,
        )
        self.ready = Gauge(
            "palisade_sidecar_ready",
            "1 when /readyz would answer 200 (bundle active, upstream answers), else 0",
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
        for reason in REJECT_REASONS:  # a 0 series from the start, so rate() has a baseline
            self.rejected.labels(reason)
        #: children of ``requests`` by label values (a bounded set, see :func:`method_label`)
        self._request_children: dict[tuple[str, str], Any] = {}

    def count_request(self, method: str | None, outcome: str) -> None:
        """Count one message; the label lookup is done once per (method, outcome)."""
        key = (method_label(method), outcome)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(*key)
        child.inc()

    def decided(
        self, *, decision: str, rule: str, agent: str, server: str, tool: str, seconds: float
    ) -> None:
        """Count one enforced tools/call decision and the time it took."""
        self.decisions.observe(
            decision=decision, rule=rule, agent=agent, server=server, tool=tool, seconds=seconds
        )

    def would_decide(self, *, decision: str, rule: str, agent: str, server: str, tool: str) -> None:
        """Count what a rule in ``mode: audit`` would have decided."""
        self.decisions.would_decide(
            decision=decision, rule=rule, agent=agent, server=server, tool=tool
        )
