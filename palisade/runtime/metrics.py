"""Prometheus metric definitions shared by everything that decides tool calls.

One decision metric for every path that decides (the sidecar's MCP proxy and the
gRPC ``Check`` service alike), so a dashboard or an alert needs one query:
``palisade_decisions_total{decision, rule, agent, server, tool}``. Metrics live on
a :class:`DecisionMetrics` object bound to a registry, so a test or a second
server in one process gets its own; daemons use the default registry and expose
it with :func:`serve_metrics`.
"""

from __future__ import annotations

from typing import Any

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


#: Label value standing for every (agent, server, tool) past the series limit.
OTHER = "other"

LABELS = ("decision", "rule", "agent", "server", "tool")


class DecisionMetrics:
    """``palisade_decisions_total``, ``palisade_decision_duration_seconds``,
    ``palisade_audit_mode_decisions_total`` and ``palisade_audit_write_failures_total``.

    Agent, server and tool names come from callers, who could mint a new label value
    on every call; past ``max_tool_series`` distinct (agent, server, tool) triples,
    new ones are counted under ``other`` so the series count stays bounded.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY, max_tool_series: int = 1000) -> None:
        self.registry = registry
        self._max = max_tool_series
        self._seen: set[tuple[str, str, str]] = set()
        self._children: dict[tuple[str, ...], Any] = {}
        self.decisions = Counter(
            "palisade_decisions_total",
            "Tool-call decisions, by outcome, deciding rule, agent, server and tool.",
            LABELS,
            registry=registry,
        )
        self.duration = Histogram(
            "palisade_decision_duration_seconds",
            "Time to decide one tool call (engine, audit and metrics), in seconds.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.would_be = Counter(
            "palisade_audit_mode_decisions_total",
            "What rules in mode: audit would have decided (the call went on by the next rule).",
            LABELS,
            registry=registry,
        )
        self.audit_failures = Counter(
            "palisade_audit_write_failures_total",
            "Decisions whose audit record could not be written (they were denied).",
            registry=registry,
        )

    def _bounded(self, agent: str, server: str, tool: str) -> tuple[str, str, str]:
        key = (agent, server, tool)
        if key in self._seen:
            return key
        if len(self._seen) < self._max:
            self._seen.add(key)
            return key
        return OTHER, OTHER, OTHER

    def _inc(self, counter: Counter, values: tuple[str, ...]) -> None:
        key = (counter._name, *values)  # one label lookup per series, not per call
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*values)
        child.inc()

    def observe(
        self, *, decision: str, rule: str, server: str, tool: str, seconds: float, agent: str = ""
    ) -> None:
        """Count one enforced decision and the time it took."""
        self._inc(self.decisions, (decision, rule, *self._bounded(agent, server, tool)))
        self.duration.observe(seconds)

    def would_decide(self, *, decision: str, rule: str, agent: str, server: str, tool: str) -> None:
        """Count what a rule in ``mode: audit`` would have decided."""
        self._inc(self.would_be, (decision, rule, *self._bounded(agent, server, tool)))


def serve_metrics(
    port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> None:
    """Expose ``registry`` on ``http://host:port/metrics`` from a daemon thread."""
    start_http_server(port, addr=host, registry=registry)
