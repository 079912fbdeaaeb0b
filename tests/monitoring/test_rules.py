"""The alerts: promtool checks and unit-tests them, as a file and as the PrometheusRule the
chart renders; the chart's monitors and dashboards render as the Prometheus Operator and
Grafana's sidecar expect."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.chart.render import by_kind, one, render
from tests.monitoring.promtool import ALERT_TESTS, ALERTS, DASHBOARDS, binary

ON = {
    "monitoring": {
        "serviceMonitors": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True},
    }
}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def unit_test(rules_text: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    (tmp / "alerts.yaml").write_text(rules_text)
    shutil.copy(ALERT_TESTS, tmp / "alerts_test.yaml")
    return promtool("test", "rules", "alerts_test.yaml", cwd=tmp)


def test_the_alert_rules_pass_promtool_check_and_every_alert_has_a_unit_test(
    tmp_path: Path,
) -> None:
    checked = promtool("check", "rules", str(ALERTS), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case["alert_rule_test"]}
    assert alerts == tested, f"alerts without a unit test: {sorted(alerts - tested)}"
    for case in tests:  # each case shows the alert both silent and firing
        expected = [bool(t["exp_alerts"]) for t in case["alert_rule_test"]]
        assert False in expected and True in expected, case["name"]
    ran = unit_test(ALERTS.read_text(), tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "SUCCESS" in ran.stdout


def test_the_unit_tests_fail_when_an_alert_loses_its_for_clause(tmp_path: Path) -> None:
    broken = ALERTS.read_text().replace("        for: 5m\n", "", 1)
    ran = unit_test(broken, tmp_path)
    assert ran.returncode != 0, "promtool test rules must notice an alert firing too early"


def test_the_rendered_prometheus_rule_is_the_rules_file_and_passes_the_same_tests(
    tmp_path: Path,
) -> None:
    rule = one(render(ON), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    ran = unit_test(yaml.safe_dump(rule["spec"]), tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_monitors_scrape_every_daemon_and_keep_the_node_agents_pod_labels() -> None:
    objects = render(ON)
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    monitors = {m["metadata"]["name"]: m for m in by_kind(objects, "ServiceMonitor")}
    assert set(monitors) == {"palisade-injector", "palisade-distributor"}
    for name, monitor in monitors.items():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        service = services[name]
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items(), name
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in ports
    tls = monitors["palisade-injector"]["spec"]["endpoints"][0]
    assert tls["scheme"] == "https"
    assert tls["tlsConfig"]["ca"]["secret"] == {"name": "palisade-injector-tls", "key": "ca.crt"}
    assert tls["tlsConfig"]["serverName"] == "palisade-injector.palisade.svc"

    pods = {m["metadata"]["name"]: m for m in by_kind(objects, "PodMonitor")}
    node = pods["palisade-nodeagent"]["spec"]
    daemonset = one(objects, "DaemonSet")
    assert node["selector"]["matchLabels"].items() <= (
        daemonset["spec"]["template"]["metadata"]["labels"].items()
    )
    endpoint = node["podMetricsEndpoints"][0]
    assert endpoint["honorLabels"] is True, "a GPU process's pod/namespace/container must survive"
    ds_ports = {p["name"] for p in daemonset["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert endpoint["port"] in ds_ports
    sidecars = pods["palisade-sidecars"]["spec"]
    assert sidecars["selector"]["matchExpressions"] == [
        {"key": "palisade.dev/mcp-server", "operator": "Exists"}
    ]
    assert sidecars["podMetricsEndpoints"][0]["port"] == "mcp"  # the port the sidecar takes over
    assert sidecars["namespaceSelector"] == {"any": True}


def test_dashboards_become_configmaps_for_grafanas_sidecar_and_nothing_renders_by_default() -> None:
    maps = [c for c in by_kind(render(ON), "ConfigMap") if "dashboard" in c["metadata"]["name"]]
    assert len(maps) == len(DASHBOARDS) == 3
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((file, text),) = cm["data"].items()
        assert json.loads(text) == json.loads(
            next(d for d in DASHBOARDS if d.name == file).read_text()
        )
    plain = render()
    kinds = {o["kind"] for o in plain}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not [c for c in by_kind(plain, "ConfigMap") if "dashboard" in c["metadata"]["name"]]


def test_every_dashboard_panel_has_a_query_on_palisade_metrics_and_the_datasource_variable() -> (
    None
):
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] == path.stem
        names = [v["name"] for v in board["templating"]["list"]]
        assert names[0] == "datasource"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert "palisade_" in target["expr"], (path.name, panel["title"])
