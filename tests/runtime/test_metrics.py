"""Decision metrics are labelled by decision, rule, server and tool, and served over HTTP."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry

from palisade.runtime.metrics import DecisionMetrics, serve_metrics
from tests.harness.process import free_port


def test_observations_count_by_labels_and_fill_the_histogram() -> None:
    m = DecisionMetrics(CollectorRegistry())
    m.observe(decision="allow", rule="r1", server="k8s", tool="pods_log", seconds=0.0001)
    m.observe(decision="allow", rule="r1", server="k8s", tool="pods_log", seconds=0.002)
    m.observe(decision="deny", rule="r2", server="k8s", tool="delete", seconds=0.5)
    get = m.registry.get_sample_value
    labels = {"decision": "allow", "rule": "r1", "agent": "", "server": "k8s", "tool": "pods_log"}
    assert get("palisade_decisions_total", labels) == 2
    assert get("palisade_decision_duration_seconds_count") == 3
    assert get("palisade_decision_duration_seconds_bucket", {"le": "0.00025"}) == 1


def test_metrics_are_served_over_http() -> None:
    registry = CollectorRegistry()
    m = DecisionMetrics(registry)
    m.observe(decision="deny", rule="default", server="s", tool="t", seconds=0.001)
    port = free_port()
    serve_metrics(port, registry=registry)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert (
        'palisade_decisions_total{agent="",decision="deny",rule="default",server="s",tool="t"} 1.0'
        in body
    )


def test_caller_minted_server_and_tool_names_cannot_grow_series_without_bound() -> None:
    m = DecisionMetrics(CollectorRegistry(), max_tool_series=3)
    for i in range(10):
        m.observe(decision="deny", rule="registry", server="s", tool=f"t{i}", seconds=0.001)
    get = m.registry.get_sample_value
    assert (
        get(
            "palisade_decisions_total",
            {"decision": "deny", "rule": "registry", "agent": "", "server": "s", "tool": "t2"},
        )
        == 1
    )
    other = {
        "decision": "deny",
        "rule": "registry",
        "agent": "other",
        "server": "other",
        "tool": "other",
    }
    assert get("palisade_decisions_total", other) == 7
