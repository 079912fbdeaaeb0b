"""CRD mode against a real kube-apiserver: PolicyBundle resources in, status back.

Needs the control-plane harness (``make setup`` builds etcd and kube-apiserver).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.distributor.conftest import Fleet
from tests.distributor.helpers import bundle_yaml, eventually, make_client
from tests.harness import ControlPlane

pytestmark = pytest.mark.e2e

CRD = Path(__file__).resolve().parents[2] / "charts/palisade/crds/policybundles.palisade.dev.yaml"
NS = "dist-crd"
BASE = f"/apis/palisade.dev/v1alpha1/namespaces/{NS}/policybundles"


@pytest.fixture
def crd(kube: ControlPlane) -> Iterator[ControlPlane]:
    kube.kubectl("apply", "-f", str(CRD))
    kube.kubectl(
        "wait", "--for=condition=Established", "crd/policybundles.palisade.dev", "--timeout=60s"
    )
    kube.create_namespace(NS)
    try:
        yield kube
    finally:
        kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        kube.kubectl("delete", "-f", str(CRD), "--wait=false", check=False)


def cr(reason: str) -> dict[str, Any]:
    doc = yaml.safe_load(bundle_yaml(reason=reason))
    doc["metadata"]["namespace"] = NS
    return doc


def get(kube: ControlPlane, name: str) -> dict[str, Any]:
    return kube.request("GET", f"{BASE}/{name}")  # type: ignore[no-any-return]


def put_spec(kube: ControlPlane, name: str, spec: dict[str, Any]) -> None:
    kube.request(
        "PATCH", f"{BASE}/{name}", {"spec": spec}, content_type="application/merge-patch+json"
    )


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions", []):
        if c["type"] == ctype:
            return c  # type: ignore[no-any-return]
    return {}


async def wait_status(
    kube: ControlPlane, name: str, pred: Any, within: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = await asyncio.to_thread(get, kube, name)
        if pred(obj):
            return obj
        await asyncio.sleep(0.2)
    raise AssertionError(f"status never matched: {obj.get('status')}")


async def test_policy_bundle_resources_are_compiled_pushed_and_reported_in_their_status(
    crd: ControlPlane, fleet: Fleet
) -> None:
    kube = crd
    kube.request("POST", BASE, cr("from git"))
    replica = fleet.start(
        "crd-0",
        policy_dir=None,
        extra=["--crd", "--kubeconfig", str(kube.kubeconfig), "--namespace", NS],
    )
    client, rec = make_client(fleet.tmp, "side", [replica.target], fleet.trusted)
    await client.start()
    try:
        await eventually(lambda: client.status.revision == 1, 20, "rev 1 from the CR")
        doc = rec.activated[-1].document
        assert doc["spec"]["rules"][0]["reason"] == "from git"
        obj = await wait_status(
            kube,
            "payments",
            lambda o: (
                (o.get("status") or {}).get("rollout") == "1/1"
                and condition(o, "Ready").get("status") == "True"
            ),
        )
        assert obj["status"]["revision"] == 1
        assert obj["status"]["digest"].startswith("sha256:")
        assert condition(obj, "Valid")["status"] == "True"

        spec = copy.deepcopy(cr("changed in git")["spec"])
        await asyncio.to_thread(put_spec, kube, "payments", spec)
        await eventually(lambda: client.status.revision == 2, 20, "rev 2 from the CR")
        await wait_status(kube, "payments", lambda o: o["status"]["revision"] == 2)

        bad = copy.deepcopy(spec)
        bad["rules"][0]["match"]["servers"] = ["kubernetes-mpc"]
        await asyncio.to_thread(put_spec, kube, "payments", bad)
        obj = await wait_status(
            kube, "payments", lambda o: condition(o, "Valid").get("status") == "False"
        )
        message = condition(obj, "Valid")["message"]
        assert "spec.rules[0].match.servers[0]" in message and "kubernetes-mpc" in message
        assert condition(obj, "Valid")["reason"] == "ServingLastValid"
        assert "line" in message
        assert obj["status"]["revision"] == 2, "the fleet stays on the last valid revision"
        await asyncio.sleep(0.5)
        assert client.status.revision == 2 and client.nacks == 0

        await wait_status(kube, "payments", lambda o: o["status"]["rollout"] == "1/1")
        out = kube.kubectl("get", "policybundles", "-n", NS)
        header, row = out.stdout.splitlines()[:2]
        assert header.split()[:4] == ["NAME", "REVISION", "VALID", "ROLLOUT"]
        assert row.split()[:4] == ["payments", "2", "False", "1/1"]
    finally:
        await client.stop()
