"""``fleet``/``approvals`` find the distributor through the kubeconfig, on a real API server.

The chart's objects are made as the chart makes them (a Service labelled
``app.kubernetes.io/component=distributor`` with a named ``http`` target port,
a pod mounting the admin Secret for ``--admin-token-file``); the pod is marked
running and ready through its status subresource, since this control plane has
no kubelet. The people are ServiceAccounts with RBAC of their own: what they
may do decides what the CLI finds. The tunnel itself needs a kubelet: here the
CLI must fail with one clear line; the real-node test carries a call through.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from palisade.cli.kube_target import DiscoveryError, KubeAccess, discover
from tests.harness import commands
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.e2e

NS = "palisade-cli"
ADMIN_TOKEN = "adm1n-" + "x" * 40
ROOT = Path(__file__).resolve().parents[2]

SERVICE = {
    "metadata": {
        "name": "palisade-distributor",
        "labels": {
            "app.kubernetes.io/name": "palisade",
            "app.kubernetes.io/component": "distributor",
        },
    },
    "spec": {
        "selector": {"app.kubernetes.io/name": "palisade", "app.kubernetes.io/component": "dist"},
        "ports": [
            {"name": "grpc", "port": 9090, "targetPort": "grpc"},
            {"name": "http", "port": 80, "targetPort": "http"},
        ],
    },
}


def _pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "palisade", "app.kubernetes.io/component": "dist"},
        },
        "spec": {
            "nodeName": "no-such-node",
            "containers": [
                {
                    "name": "distributor",
                    "image": "palisade:test",
                    "args": ["distributor", "--admin-token-file=/etc/palisade/admin/token"],
                    "ports": [
                        {"name": "grpc", "containerPort": 9090},
                        {"name": "http", "containerPort": 8080},
                    ],
                    "volumeMounts": [
                        {"name": "admin", "mountPath": "/etc/palisade/admin", "readOnly": True}
                    ],
                }
            ],
            "volumes": [{"name": "admin", "secret": {"secretName": "palisade-distributor-admin"}}],
        },
    }


def _ready(kube: ControlPlane, name: str) -> None:
    kube.request(
        "PATCH",
        f"/api/v1/namespaces/{NS}/pods/{name}/status",
        {
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
        content_type="application/merge-patch+json",
    )


def _person(kube: ControlPlane, tmp: Path, name: str, rules: list[dict[str, Any]]) -> Path:
    """A ServiceAccount allowed ``rules`` in NS, and a kubeconfig with its token."""
    kube.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts", {"metadata": {"name": name}})
    if rules:
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}"
        kube.request("POST", f"{rbac}/roles", {"metadata": {"name": name}, "rules": rules})
        kube.request(
            "POST",
            f"{rbac}/rolebindings",
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NS}],
            },
        )
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{NS}/serviceaccounts/{name}/token",
        {"spec": {"expirationSeconds": 3600}},
    )["status"]["token"]
    path = tmp / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(commands.kubeconfig(kube.server, kube.ca_pem, token, user=name)))
    return path


FIND = [
    {"apiGroups": [""], "resources": ["services", "pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create", "get"]},
]
READ_SECRET = {
    "apiGroups": [""],
    "resources": ["secrets"],
    "resourceNames": ["palisade-distributor-admin"],
    "verbs": ["get"],
}


@pytest.fixture(scope="module")
def cluster(kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("kube-cli")
    kube.create_namespace(NS)
    kube.request("POST", f"/api/v1/namespaces/{NS}/services", SERVICE)
    kube.request(
        "POST",
        f"/api/v1/namespaces/{NS}/secrets",
        {
            "metadata": {"name": "palisade-distributor-admin"},
            "data": {"token": base64.b64encode(ADMIN_TOKEN.encode()).decode()},
        },
    )
    for name in ("palisade-distributor-b", "palisade-distributor-a"):
        kube.request("POST", f"/api/v1/namespaces/{NS}/pods", _pod(name))
    _ready(kube, "palisade-distributor-b")  # -a stays Pending: never chosen
    return {
        "operator": _person(kube, tmp, "operator", [*FIND, READ_SECRET]),
        "approver": _person(kube, tmp, "approver", FIND),
        "stranger": _person(kube, tmp, "stranger", []),
    }


def test_an_operator_finds_the_ready_pod_its_port_and_the_admin_token(
    cluster: dict[str, Path],
) -> None:
    found = asyncio.run(discover(KubeAccess(str(cluster["operator"]), namespace=NS)))
    t = found.target
    assert (t.namespace, t.service, t.pod, t.port) == (
        NS,
        "palisade-distributor",
        "palisade-distributor-b",
        8080,
    )
    assert t.admin_secret is not None and t.admin_secret.name == "palisade-distributor-admin"
    assert found.admin_token == ADMIN_TOKEN
    assert ADMIN_TOKEN not in repr(found)


def test_without_get_on_the_secret_the_pod_is_found_and_the_refusal_is_said(
    cluster: dict[str, Path],
) -> None:
    found = asyncio.run(discover(KubeAccess(str(cluster["approver"]), namespace=NS)))
    assert found.target.pod == "palisade-distributor-b"
    assert found.admin_token == ""
    assert "403" in found.token_problem and "palisade-distributor-admin" in found.token_problem


def test_a_person_the_cluster_lets_list_nothing_is_told_what_is_missing(
    cluster: dict[str, Path],
) -> None:
    with pytest.raises(DiscoveryError, match="403 Forbidden") as exc:
        asyncio.run(discover(KubeAccess(str(cluster["stranger"]), namespace=NS)))
    assert "list services" in str(exc.value)


def test_another_namespace_has_no_distributor(cluster: dict[str, Path], kube: ControlPlane) -> None:
    with pytest.raises(DiscoveryError, match="no distributor Service in namespace 'default'"):
        asyncio.run(discover(KubeAccess(str(kube.kubeconfig), namespace="default")))


def test_the_context_flag_picks_the_context(cluster: dict[str, Path], tmp_path: Path) -> None:
    doc = yaml.safe_load(cluster["operator"].read_text())
    stranger = yaml.safe_load(cluster["stranger"].read_text())
    doc["users"].append(stranger["users"][0])
    doc["contexts"].append({"name": "as-stranger", "context": {**doc["contexts"][0]["context"]}})
    doc["contexts"][-1]["context"]["user"] = "stranger"
    doc["current-context"] = "as-stranger"
    both = tmp_path / "both.kubeconfig"
    both.write_text(yaml.safe_dump(doc))
    with pytest.raises(DiscoveryError):
        asyncio.run(discover(KubeAccess(str(both), namespace=NS)))
    ok = asyncio.run(discover(KubeAccess(str(both), context="palisade-test", namespace=NS)))
    assert ok.admin_token == ADMIN_TOKEN


def _cli(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palisade.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "KUBECONFIG": str(kubeconfig)},
    )


def test_the_cli_without_url_goes_through_the_kubeconfig_and_fails_in_one_clear_line(
    cluster: dict[str, Path],
) -> None:
    # KUBECONFIG from the environment, the namespace by flag; no kubelet: the tunnel fails
    done = _cli(cluster["operator"], "fleet", "-n", NS)
    assert done.returncode == 1
    assert "port-forward to pod palisade-cli/palisade-distributor-b:8080 failed" in done.stderr
    assert "Traceback" not in done.stderr and ADMIN_TOKEN not in done.stderr
    refused = _cli(cluster["stranger"], "approvals", "list", "-n", NS)
    assert refused.returncode == 1
    assert "403 Forbidden" in refused.stderr and "Traceback" not in refused.stderr
