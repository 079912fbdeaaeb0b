"""Per-component overrides: security contexts, probe timings, topology spread, node
placement and extra env, merged over the chart's defaults and checked by the schema."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.render import helm, one, render, values_args

CHART_VALUES = {
    "podSecurityContext": {"fsGroupChangePolicy": "OnRootMismatch"},
    "securityContext": {"runAsUser": 1000710000},
    "probes": {"readiness": {"periodSeconds": 7}, "startup": {"failureThreshold": 90}},
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
         "whenUnsatisfiable": "ScheduleAnyway"}
    ],
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
}  # fmt: skip


def pod_of(objects: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    (obj,) = [
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize(
    ("key", "kind", "component"),
    [
        ("injector", "Deployment", "injector"),
        ("distributor", "Deployment", "distributor"),
        ("nodeAgent", "DaemonSet", "nodeagent"),
    ],
)
def test_overrides_merge_over_each_components_defaults(key: str, kind: str, component: str) -> None:
    default = pod_of(render(), kind, component)
    pod = pod_of(render({key: CHART_VALUES}), kind, component)
    c, c0 = pod["containers"][0], default["containers"][0]
    assert pod["securityContext"] == {
        **default["securityContext"],
        "fsGroupChangePolicy": "OnRootMismatch",
    }
    assert c["securityContext"] == {**c0["securityContext"], "runAsUser": 1000710000}
    assert c["readinessProbe"] == {**c0["readinessProbe"], "periodSeconds": 7}
    assert c["startupProbe"]["failureThreshold"] == 90
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["livenessProbe"] == c0["livenessProbe"]
    assert pod["topologySpreadConstraints"] == CHART_VALUES["topologySpreadConstraints"]
    assert c["env"][-1] == {"name": "HTTPS_PROXY", "value": "http://proxy:3128"}
    assert c["env"][:-1] == c0["env"]
    assert "topologySpreadConstraints" not in default


def test_the_distributor_can_be_placed_like_the_other_components() -> None:
    pod = pod_of(
        render(
            {
                "distributor": {
                    "nodeSelector": {"pool": "system"},
                    "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                    "priorityClassName": "system-cluster-critical",
                }
            }
        ),
        "Deployment",
        "distributor",
    )
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["priorityClassName"] == "system-cluster-critical"


@pytest.mark.parametrize(
    "values",
    [
        {"injector": {"probes": {"readiness": {"exec": {"command": ["true"]}}}}},
        {"distributor": {"probes": {"ready": {}}}},
        {"nodeAgent": {"extraEnv": [{"value": "no name"}]}},
    ],
)
def test_the_schema_refuses_what_the_overrides_do_not_take(
    values: dict[str, Any], tmp_path: Any
) -> None:
    from tests.chart.render import CHART

    done = helm("template", "p", str(CHART), *values_args(values, tmp_path), check=False)
    assert done.returncode != 0 and "values don't meet the specifications" in done.stderr


def test_the_node_agents_defaults_keep_only_kill() -> None:
    c = one(render(), "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["KILL"]}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_audit_store_url_comes_from_a_secret_and_never_from_values() -> None:
    plain = pod_of(render(), "Deployment", "distributor")
    assert all(e["name"] != "PALISADE_AUDIT_STORE" for e in plain["containers"][0]["env"])
    pod = pod_of(
        render({"distributor": {"auditStore": {"secretName": "audit-pg"}}}),
        "Deployment",
        "distributor",
    )
    (env,) = [e for e in pod["containers"][0]["env"] if e["name"] == "PALISADE_AUDIT_STORE"]
    assert env == {
        "name": "PALISADE_AUDIT_STORE",
        "valueFrom": {"secretKeyRef": {"name": "audit-pg", "key": "url"}},
    }
