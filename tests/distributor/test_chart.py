"""The chart's distributor objects render and are accepted by a real API server (dry run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import ensure_crds
from tests.harness import ControlPlane

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "charts/palisade"


@pytest.mark.parametrize(
    "values",
    [
        ["--set", "distributor.source=crd"],
        ["--set", "distributor.source=crd", "--set", "distributor.watchNamespace=team-a"],
        [
            "--set",
            "distributor.tls.secretName=dist-tls",
            "--set",
            "distributor.tls.requireClientCerts=true",
        ],
        [
            "--set",
            "distributor.source=files",
            "--set",
            "distributor.persistence.enabled=false",
            "--set-string",
            "distributor.policyFiles.payments\\.yaml=kind: PolicyBundle",
        ],
    ],
)
def test_the_distributor_objects_are_accepted_by_the_api_server(
    kube: ControlPlane, values: list[str]
) -> None:
    ensure_crds(kube)  # the starter PolicyBundle needs its kind
    out = kube.helm(
        "template",
        "t",
        str(CHART),
        "--namespace",
        "default",
        "--set",
        "distributor.enabled=true",
        "--set",
        "distributor.signingKeySecret=dist-key",
        "--set",
        "injector.enabled=false",
        *values,
    )
    docs = [
        d
        for d in yaml.safe_load_all(out.stdout)
        if d and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "distributor"
    ]
    kinds = sorted(d["kind"] for d in docs)
    assert "Deployment" in kinds and "Service" in kinds
    if "--set" in values and "distributor.source=crd" in values:
        assert any(k in kinds for k in ("ClusterRole", "Role"))
    ns_needed = {d["metadata"].get("namespace") for d in docs} - {None, "default"}
    for ns in ns_needed:
        kube.create_namespace(ns)
    applied = kube.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs), check=False
    )
    assert applied.returncode == 0, applied.stderr


def test_without_a_signing_key_secret_the_distributor_fills_the_charts_empty_one(
    kube: ControlPlane,
) -> None:
    out = kube.helm(
        "template", "t", str(CHART), "--namespace", "default",
        "--set", "injector.enabled=false",
    )  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--signing-key-secret=t-palisade-distributor-signing" in args
    assert not [a for a in args if a.startswith("--signing-key=")]
    (secret,) = [d for d in docs if d["metadata"]["name"] == "t-palisade-distributor-signing"]
    assert "data" not in secret and "stringData" not in secret, "the distributor writes it"
    (trust,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "t-palisade-trust"
    ]
    assert "data" not in trust
    volumes = [v["name"] for v in deploy["spec"]["template"]["spec"]["volumes"]]
    assert "signing" not in volumes, "read through the API, not mounted"


def _rendered(kube: ControlPlane, *values: str) -> list[dict[str, Any]]:
    out = kube.helm(
        "template", "t", str(CHART), "--namespace", "default",
        "--set", "distributor.enabled=true", "--set", "distributor.signingKeySecret=dist-key",
        "--set", "injector.enabled=false", *values,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _admin_volume(docs: list[dict[str, Any]]) -> str:
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = deploy["spec"]["template"]["spec"]
    assert "--admin-token-file=/etc/palisade/admin/token" in spec["containers"][0]["args"]
    (admin,) = [v for v in spec["volumes"] if v["name"] == "admin"]
    return str(admin["secret"]["secretName"])


def test_the_http_api_always_needs_a_token(kube: ControlPlane) -> None:
    """Approving a held call or rolling back is a bearer-token call, by default too."""
    docs = _rendered(kube)
    secrets = [d for d in docs if d["kind"] == "Secret"]
    (generated,) = [s for s in secrets if s["metadata"]["name"] == "t-palisade-distributor-admin"]
    # Created empty (the same on every render); the distributor writes the token.
    assert "data" not in generated and "stringData" not in generated
    (deploy,) = [
        d for d in docs if d["kind"] == "Deployment" and "distributor" in d["metadata"]["name"]
    ]
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--admin-token-secret=t-palisade-distributor-admin" in args
    assert _admin_volume(docs) == "t-palisade-distributor-admin"
    # an operator's own Secret replaces the generated one
    docs = _rendered(kube, "--set", "distributor.adminTokenSecret=ops-token")
    assert _admin_volume(docs) == "ops-token"
    assert not [d for d in docs if d["kind"] == "Secret" and "admin" in d["metadata"]["name"]]
