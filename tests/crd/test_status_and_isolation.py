"""CRD mode on a real kube-apiserver: status follows the API conventions, and one broken
PolicyBundle is set aside while the others keep reaching subscribers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.crd.apiserver import base_path, install_crd
from tests.distributor.conftest import Fleet
from tests.distributor.helpers import eventually, make_client
from tests.harness import ControlPlane

pytestmark = pytest.mark.e2e

NS = "crd-status"
BASE = base_path(NS)


@pytest.fixture
def kube_crd(kube: ControlPlane) -> Iterator[ControlPlane]:
    install_crd(kube)
    kube.create_namespace(NS)
    try:
        yield kube
    finally:
        kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()


def resource(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "PolicyBundle",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def alpha_spec(reason: str) -> dict[str, Any]:
    return {
        "defaultDecision": "deny",
        "servers": [{"name": "kubernetes-mcp", "tools": [{"name": "pods_log", "risk": "read"}]}],
        "rules": [
            {
                "id": "alpha-reads",
                "match": {"servers": ["kubernetes-mcp"], "risk": ["read"]},
                "decision": "allow",
                "reason": reason,
            }
        ],
    }


def beta_spec(reason: str, server: str = "kubernetes-mcp") -> dict[str, Any]:
    # Relies on alpha's server: bundles merge before they are checked.
    return {
        "rules": [
            {
                "id": "beta-rest",
                "match": {"servers": [server]},
                "decision": "deny",
                "reason": reason,
            }
        ]
    }


def get(kube: ControlPlane, name: str) -> dict[str, Any]:
    return kube.request("GET", f"{BASE}/{name}")  # type: ignore[no-any-return]


def put_spec(kube: ControlPlane, name: str, spec: dict[str, Any]) -> None:
    # A merge patch: the distributor's status writes cannot make it conflict (lists and
    # the keys given are replaced whole; these specs keep the same keys).
    kube.request(
        "PATCH",
        f"{BASE}/{name}",
        {"spec": spec},
        content_type="application/merge-patch+json",
    )


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions", []):
        if c["type"] == ctype:
            return c  # type: ignore[no-any-return]
    return {}


async def wait_status(
    kube: ControlPlane, name: str, pred: Callable[[dict[str, Any]], bool], within: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = await asyncio.to_thread(get, kube, name)
        if pred(obj):
            return obj
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name}: status never matched: {obj.get('status')}")


def reasons(doc: Mapping[str, Any]) -> dict[str, str]:
    return {r["id"]: r.get("reason", "") for r in doc["spec"]["rules"]}


def observed(generation: int) -> Callable[[dict[str, Any]], bool]:
    def pred(o: dict[str, Any]) -> bool:
        s = o.get("status") or {}
        return s.get("observedGeneration") == generation and all(
            c.get("observedGeneration") == generation for c in s.get("conditions", [])
        )

    return pred


async def test_one_broken_bundle_is_set_aside_and_the_others_keep_flowing(
    kube_crd: ControlPlane, fleet: Fleet
) -> None:
    kube = kube_crd
    kube.request("POST", BASE, resource("alpha", alpha_spec("a1")))
    kube.request("POST", BASE, resource("beta", beta_spec("b1")))
    replica = fleet.start(
        "crd-iso",
        policy_dir=None,
        extra=["--crd", "--kubeconfig", str(kube.kubeconfig), "--namespace", NS],
    )
    client, rec = make_client(fleet.tmp, "side", [replica.target], fleet.trusted)
    await client.start()
    try:
        await eventually(lambda: client.status.revision == 1, 20, "revision 1")
        assert reasons(rec.activated[-1].document) == {"alpha-reads": "a1", "beta-rest": "b1"}
        alpha = await wait_status(kube, "alpha", observed(1))
        beta = await wait_status(kube, "beta", observed(1))
        for obj in (alpha, beta):
            assert condition(obj, "Valid")["status"] == "True"
            assert condition(obj, "Valid")["reason"] == "Compiled"
            assert obj["status"]["validGeneration"] == 1
        alpha_valid_since = condition(alpha, "Valid")["lastTransitionTime"]
        beta_valid_since = condition(beta, "Valid")["lastTransitionTime"]
        await asyncio.sleep(1.1)  # lastTransitionTime has whole seconds

        # beta breaks in a way only the validator sees (the server it names does not exist).
        await asyncio.to_thread(put_spec, kube, "beta", beta_spec("b2", server="kubernetes-mpc"))
        beta = await wait_status(
            kube, "beta", lambda o: observed(2)(o) and condition(o, "Valid")["status"] == "False"
        )
        valid = condition(beta, "Valid")
        assert valid["reason"] == "ServingLastValid"
        assert "spec.rules[1].match.servers[0]" in valid["message"]
        assert "unknown server 'kubernetes-mpc'" in valid["message"]
        assert "generation 1" in valid["message"]
        assert valid["lastTransitionTime"] != beta_valid_since, "the status changed"
        assert beta["status"]["validGeneration"] == 1

        # A bundle that never was valid is left out.
        kube.request("POST", BASE, resource("gamma", beta_spec("g1", server="nope")))
        gamma = await wait_status(kube, "gamma", lambda o: bool(condition(o, "Valid")))
        assert condition(gamma, "Valid")["status"] == "False"
        assert condition(gamma, "Valid")["reason"] == "LeftOut"
        assert "validGeneration" not in gamma["status"]

        # alpha's change still reaches the subscriber, with beta's last valid rule.
        before = client.status.revision
        await asyncio.to_thread(put_spec, kube, "alpha", alpha_spec("a2"))
        await eventually(lambda: client.status.revision > before, 20, "alpha's new revision")
        assert reasons(rec.activated[-1].document) == {"alpha-reads": "a2", "beta-rest": "b1"}
        alpha = await wait_status(kube, "alpha", observed(2))
        assert condition(alpha, "Valid")["reason"] == "Compiled"
        assert condition(alpha, "Valid")["lastTransitionTime"] == alpha_valid_since, (
            "Valid stayed True: its lastTransitionTime must not move"
        )
        assert alpha["status"]["validGeneration"] == 2
        assert alpha["status"]["revision"] == client.status.revision

        # beta fixed: it flows again and its condition turns.
        before = client.status.revision
        await asyncio.to_thread(put_spec, kube, "beta", beta_spec("b3"))
        await eventually(lambda: client.status.revision > before, 20, "beta's fix")
        assert reasons(rec.activated[-1].document) == {"alpha-reads": "a2", "beta-rest": "b3"}
        beta = await wait_status(
            kube, "beta", lambda o: observed(3)(o) and condition(o, "Valid")["status"] == "True"
        )
        assert beta["status"]["validGeneration"] == 3
        assert client.nacks == 0
    finally:
        await client.stop()
