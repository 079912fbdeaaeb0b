"""A real Prometheus scrapes the real daemons: the injector (over HTTPS, checking its
serving certificate as the chart's ServiceMonitor does), the distributor, a sidecar in
front of an MCP server with a distributor, and a node agent on a simulated GPU node (GPUs
are the one stand-in here; honor_labels as in the chart's PodMonitor). Prometheus also
loads the chart's alert rules. Then every dashboard query and every alert expression is
run through Prometheus' own query API and must return series.

Alert expressions are judged by what they compare: an alert on ``x > 0`` must find the
series ``x`` (a dashboard or alert on a metric nobody exports would silently never
fire). The quota alert's whole expression must return series too: the simulated tenant
really is over its quota.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp.shared.exceptions import MCPError

from tests.harness.controlplane import ControlPlane
from tests.harness.peers import free_port, stop
from tests.injector.test_e2e import Injector, mcp_pod, running_injector
from tests.monitoring.promtool import ALERTS, DASHBOARDS, binary
from tests.sidecar.fleet.conftest import World, make_world, mcp_client, policy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HERE = Path(__file__).parent
CONFIG = "palisade-monitoring-e2e"
SECRET = "palisade-monitoring-e2e-tls"
#: Grafana's variables, as a dashboard would fill them with "All" and a 5-minute range.
GRAFANA = {"$__rate_interval": "15s", "$__range": "5m", "$agent": ".*", "$server": ".*",
           "$tool": ".*", "$tenant": ".*"}  # fmt: skip
STAGED = """\
    - id: staged-no-pod-listing
      mode: audit
      match: {tools: [pods_list]}
      decision: deny
      reason: pod listing will be refused next week
"""
COMPARISON = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.e+]+\s*$")


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for var, value in GRAFANA.items():
                    expr = expr.replace(var, value)
                out.append((f"{path.stem}: {panel['title']}", expr))
    return out


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


class Prometheus:
    def __init__(self, tmp: Path, jobs: list[dict[str, Any]]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": jobs,
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        checked = subprocess.run(
            [binary("promtool"), "check", "config", str(tmp / "prometheus.yml")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self.log = tmp / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while True:
            assert self.proc.poll() is None, "prometheus exited:\n" + self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("prometheus never ready:\n" + self.log.read_text()[-3000:])
            time.sleep(0.2)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def stop(self) -> None:
        stop(self.proc)


class NodeAgent:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        with (tmp / "nodeagent.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "palisade.cli.main", "nodeagent", "run",
                 "--listen", f"127.0.0.1:{self.port}", "--kube", "off",
                 "--state-dir", str(tmp / "nodeagent"), "--node", "monitoring-node",
                 "--backend", "sim", "--scenario", str(HERE / "gpu-node.yaml"),
                 "--bundle", str(HERE / "gpu-bundle.yaml"), "--interval", "0.5", "--dry-run"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBERNETES_SERVICE_HOST": ""},
            )  # fmt: skip


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    (tmp_path / "fleet").mkdir()
    w = make_world(tmp_path / "fleet", extra=["--insecure-approvers"])
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def injector(kube: ControlPlane) -> Iterator[Injector]:
    with running_injector(kube, CONFIG, "monitoring", SECRET) as proc:
        yield proc


async def until_all(check: Any, within: float, what: str) -> Any:
    """Poll ``check()`` (in a thread) until it returns no missing items; fail naming them."""
    deadline = time.monotonic() + within
    while True:
        missing = await asyncio.to_thread(check)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {json.dumps(missing, indent=1)}")
        await asyncio.sleep(1.0)


async def test_prometheus_scrapes_every_daemon_and_every_dashboard_query_and_alert_has_series(
    tmp_path: Path, world: World, injector: Injector, kube: ControlPlane
) -> None:
    # Traffic of every kind: an injected pod, allowed, denied and held calls, a GPU tenant.
    ns = f"mon-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(
        ns, labels={"palisade.dev/e2e": "monitoring", "palisade.dev/inject": "enabled"}
    )
    kube.request("POST", f"/api/v1/namespaces/{ns}/pods", mcp_pod())
    world.distributor.write_policy(policy(STAGED))  # revision 2, with a rule in mode: audit
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, 2)
    anonymous = urllib.request.Request(
        sc.url, data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:  # no identity: refused before deciding
        await asyncio.to_thread(urllib.request.urlopen, anonymous, timeout=10)
    assert refused.value.code == 401
    async with mcp_client(sc.url) as c:
        await c.call_tool("pods_list", {"namespace": "payments"})
        with pytest.raises(MCPError, match="denied"):
            await c.call_tool("resources_delete", {"kind": "Pod", "name": "x"})
        with pytest.raises(MCPError):  # held for a human: an approval now waits
            await c.call_tool(
                "resources_create_or_update",
                {"kind": "Deployment", "name": "payments-api", "namespace": "payments"},
            )
    agent = NodeAgent(tmp_path)
    ca = tmp_path / "injector-ca.pem"
    ca.write_bytes(injector.ca_bundle())
    prom = Prometheus(
        tmp_path,
        [
            {"job_name": "injector", "scheme": "https",
             "tls_config": {"ca_file": str(ca), "server_name": "127.0.0.1"},
             "static_configs": [{"targets": [f"127.0.0.1:{injector.port}"]}]},
            {"job_name": "distributor",
             "static_configs": [{"targets": [f"127.0.0.1:{world.distributor.http_port}"]}]},
            {"job_name": "sidecar",
             "static_configs": [{"targets": [f"127.0.0.1:{sc.port}"],
                                 "labels": {"namespace": "payments", "pod": "sc-1"}}]},
            {"job_name": "nodeagent", "honor_labels": True,
             "static_configs": [{"targets": [f"127.0.0.1:{agent.port}"],
                                 "labels": {"node": "monitoring-node"}}]},
        ],
    )  # fmt: skip
    try:
        await asyncio.to_thread(prom.wait_ready)

        def targets_down() -> list[Any]:
            active = prom.api("targets", state="active")["activeTargets"]
            jobs = {t["labels"]["job"]: t for t in active}
            want = {"injector", "distributor", "sidecar", "nodeagent"}
            return [
                {"job": j, "health": jobs[j]["health"] if j in jobs else "absent",
                 "error": jobs[j].get("lastError", "") if j in jobs else ""}
                for j in sorted(want)
                if j not in jobs or jobs[j]["health"] != "up"
            ]  # fmt: skip

        await until_all(targets_down, 60, "targets not up")

        def empty_dashboard_queries() -> list[str]:
            return [
                f"{where}: {expr}" for where, expr in dashboard_queries() if not prom.query(expr)
            ]

        await until_all(empty_dashboard_queries, 60, "dashboard queries without series")

        def alerts_without_series() -> list[str]:
            out = []
            for name, expr in alert_expressions():
                prom.query(expr)  # the whole expression is valid PromQL
                compared = COMPARISON.sub("", expr)
                assert compared != expr, f"{name}: the expression ends in a comparison"
                if not prom.query(compared):
                    out.append(f"{name}: {compared}")
            return out

        await until_all(alerts_without_series, 60, "alert expressions comparing absent series")
        quota = dict(alert_expressions())["PalisadeGpuQuotaViolation"]
        (violation,) = prom.query(quota)
        assert violation["metric"] == {"tenant": "payments", "quota": "gpuMemoryBytes"}

        # The node agent's pod/namespace/container labels survived the scrape (honor_labels):
        (proc,) = prom.query("palisade_gpu_process_memory_used_bytes")
        assert proc["metric"]["pod"] == "inference-0" and proc["metric"]["namespace"] == "payments"
        assert "exported_pod" not in proc["metric"]
        # One decision metric, counted with the agent, for the calls made above.
        by = {
            r["metric"]["decision"]: float(r["value"][1])
            for r in prom.query('sum by (decision) (palisade_decisions_total{agent="sre-agent"})')
        }
        assert by.get("allow") == 1 and by.get("deny") == 1 and by.get("require_approval") == 1
        assert prom.query("palisade_sidecar_decisions_total") == []
        (waiting,) = prom.query("palisade_distributor_approvals_pending")
        assert float(waiting["value"][1]) == 1
        injected = prom.query('palisade_injector_reviews_total{result="injected"}')
        assert injected and float(injected[0]["value"][1]) >= 1

        def rules_unhealthy() -> list[Any]:
            groups = prom.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            bad: list[Any] = [
                {"rule": r["name"], "health": r["health"], "error": r.get("lastError", "")}
                for r in rules
                if r["health"] != "ok"
            ]
            if len(rules) != len(alert_expressions()):
                bad.append(f"{len(rules)} rules loaded")
            return bad

        await until_all(rules_unhealthy, 30, "alert rules Prometheus cannot evaluate")
    finally:
        prom.stop()
        stop(agent.proc)
