"""Prometheus metric definitions shared by everything that decides tool calls.

Metrics live on a :class:`DecisionMetrics` object bound to a registry, so a
test or a second server in one process gets its own; daemons use the default
registry and expose it with :func:`serve_metrics`.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

#: Decision latency buckets in seconds: 25 us .. 1 s.
LATENCY_BUCKETS = (
    25e-6,
    50e-6,
    100e-6,
    250e-6,
    500e-6,
    1e-3,
    2.5e-3,
    5e-3,
    10e-3,
    25e-3,
    50e-3,
    100e-3,
    250e-3,
    1.0,
)


#: Label value standing for every (server, tool) pair past the series limit.
OTHER = "other"


class DecisionMetrics:
    """``palisade_decisions_total`` and ``palisade_decision_duration_seconds``.

    Server and tool names come from callers, who could mint a new label value on
    every call; past ``max_tool_series`` distinct (server, tool) pairs, new pairs
    are counted under ``other`` so the series count stays bounded.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY, max_tool_series: int = 1000) -> None:
        self.registry = registry
        self._max_pairs = max_tool_series
        self._pairs: set[tuple[str, str]] = set()
        self.decisions = Counter(
            "palisade_decisions_total",
            "Tool-call decisions, by outcome, deciding rule, server and tool.",
            ["decision", "rule", "server", "tool"],
            registry=registry,
        )
        self.duration = Histogram(
            "palisade_decision_duration_seconds",
            "Time to decide one tool call (engine, audit and metrics), in seconds.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.audit_failures = Counter(
            "palisade_audit_write_failures_total",
            "Decisions whose audit record could not be written (they were denied).",
            registry=registry,
        )

    def observe(self, *, decision: str, rule: str, server: str, tool: str, seconds: float) -> None:
        pair = (server, tool)
        if pair not in self._pairs:
            if len(self._pairs) < self._max_pairs:
                self._pairs.add(pair)
            else:
                server = tool = OTHER
        self.decisions.labels(decision, rule, server, tool).inc()
        self.duration.observe(seconds)


def serve_metrics(
    port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> None:
    """Expose ``registry`` on ``http://host:port/metrics`` from a daemon thread."""
    start_http_server(port, addr=host, registry=registry)
