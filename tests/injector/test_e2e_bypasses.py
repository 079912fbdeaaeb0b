"""Bypasses closed, against a real kube-apiserver: look-alike sidecars, colliding names,
pod updates, and pod shapes the patch would break. The stored pod (or the API server's
refusal) is what is asserted.

A ``palisade injector`` process of its own, registered like the chart registers it
(CREATE and UPDATE of pods and of pods/ephemeralcontainers), for namespaces labelled
``palisade.dev/e2e=bypass``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.controlplane import ApiError, ControlPlane
from tests.injector.test_e2e import (
    SIDECAR,
    Injector,
    create,
    mcp_pod,
    namespace,
    running_injector,
    sidecars,
    status,
)

pytestmark = pytest.mark.e2e

GROUP = "bypass"
CONFIG = "palisade-injector-e2e-bypass"
PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


@pytest.fixture(scope="module")
def guard(kube: ControlPlane) -> Iterator[Injector]:
    with running_injector(kube, CONFIG, GROUP, f"{CONFIG}-tls") as proc:
        yield proc


def ns(kube: ControlPlane, mode: str) -> str:
    return namespace(kube, mode, GROUP)


def refused(kube: ControlPlane, ns_name: str, pod: dict[str, Any]) -> str:
    with pytest.raises(ApiError) as caught:
        create(kube, ns_name, pod)
    assert caught.value.status == 403, caught.value
    return str(caught.value)


def pod_path(ns_name: str, name: str) -> str:
    return f"/api/v1/namespaces/{ns_name}/pods/{name}"


def copied(stored: dict[str, Any], name: str) -> dict[str, Any]:
    """An injected pod as `kubectl get -o yaml` shows it, made creatable again."""
    body = copy.deepcopy(stored)
    body.pop("status", None)
    meta = body["metadata"]
    body["metadata"] = {
        "name": name,
        "labels": meta["labels"],
        "annotations": meta["annotations"],
    }
    body["spec"].pop("nodeName", None)
    return body


# --- 9: look-alikes and updates -------------------------------------------------------


def test_a_look_alike_sidecar_with_palisade_s_image_is_refused_in_a_required_namespace(
    kube: ControlPlane, guard: Injector
) -> None:
    body = mcp_pod("lookalike")
    body["spec"]["containers"].append(
        {"name": SIDECAR, "image": "palisade:e2e", "command": ["sleep", "infinity"]}
    )
    message = refused(kube, ns(kube, "required"), body)
    assert "is not the Palisade sidecar" in message


def test_a_look_alike_with_a_copied_status_annotation_is_refused(
    kube: ControlPlane, guard: Injector
) -> None:
    ns_name = ns(kube, "required")
    real = create(kube, ns_name, mcp_pod("real"))
    fake = copied(real, "fake")
    (side,) = sidecars(fake)
    side["args"] = [a for a in side["args"] if a != "--audit-dir"]  # one flag less
    fake["spec"]["volumes"] = [
        {"name": "palisade-audit", "hostPath": {"path": "/tmp"}}
        if v["name"] == "palisade-audit"
        else v
        for v in fake["spec"]["volumes"]
    ]
    message = refused(kube, ns_name, fake)
    assert "args" in message
    assert "'palisade-audit'" in message


def test_a_copied_injected_pod_is_admitted_as_it_is(kube: ControlPlane, guard: Injector) -> None:
    ns_name = ns(kube, "required")
    real = create(kube, ns_name, mcp_pod("original"))
    again = create(kube, ns_name, copied(real, "copy"))
    assert sidecars(again) == sidecars(real)
    assert status(again) == status(real)


def test_changing_the_sidecar_image_of_a_running_pod_is_refused(
    kube: ControlPlane, guard: Injector
) -> None:
    ns_name = ns(kube, "enabled")
    stored = create(kube, ns_name, mcp_pod("swap"))
    index = [c["name"] for c in stored["spec"]["initContainers"]].index(SIDECAR)
    with pytest.raises(ApiError) as caught:
        kube.request(
            "PATCH",
            pod_path(ns_name, "swap"),
            [
                {
                    "op": "replace",
                    "path": f"/spec/initContainers/{index}/image",
                    "value": "busybox:1",
                }
            ],
            content_type="application/json-patch+json",
        )
    assert caught.value.status == 403
    assert "cannot change after the Palisade sidecar was injected" in str(caught.value)


def test_changing_the_mcp_image_is_refused_where_required_and_other_updates_pass(
    kube: ControlPlane, guard: Injector
) -> None:
    ns_name = ns(kube, "required")
    create(kube, ns_name, mcp_pod("app-swap"))
    with pytest.raises(ApiError) as caught:
        kube.request(
            "PATCH",
            pod_path(ns_name, "app-swap"),
            [{"op": "replace", "path": "/spec/containers/0/image", "value": "evil/mcp:2"}],
            content_type="application/json-patch+json",
        )
    assert caught.value.status == 403
    assert "Recreate the pod" in str(caught.value)
    kube.request(
        "PATCH",
        pod_path(ns_name, "app-swap"),
        {"metadata": {"labels": {"team": "sre"}}},
        content_type="application/merge-patch+json",
    )
    assert kube.request("GET", pod_path(ns_name, "app-swap"))["metadata"]["labels"]["team"] == "sre"


def test_an_ephemeral_container_is_refused_on_a_governed_pod_where_required(
    kube: ControlPlane, guard: Injector
) -> None:
    ns_name = ns(kube, "required")
    stored = create(kube, ns_name, mcp_pod("debug-me"))
    stored["spec"]["ephemeralContainers"] = [
        {"name": "debugger", "image": "busybox:1", "command": ["sh"]}
    ]
    with pytest.raises(ApiError) as caught:
        kube.request("PUT", pod_path(ns_name, "debug-me") + "/ephemeralcontainers", stored)
    assert caught.value.status == 403
    assert "reach the MCP server without passing the sidecar" in str(caught.value)


def test_a_pod_labelled_an_mcp_server_after_creation_is_refused_where_required(
    kube: ControlPlane, guard: Injector
) -> None:
    ns_name = ns(kube, "required")
    body = mcp_pod("late")
    body["metadata"]["labels"] = {"app": "late"}
    assert sidecars(create(kube, ns_name, body)) == []
    with pytest.raises(ApiError) as caught:
        kube.request(
            "PATCH",
            pod_path(ns_name, "late"),
            {"metadata": {"labels": {"palisade.dev/mcp-server": "kubernetes-mcp"}}},
            content_type="application/merge-patch+json",
        )
    assert caught.value.status == 403
    assert "gains the label palisade.dev/mcp-server" in str(caught.value)


# --- 10: colliding names --------------------------------------------------------------


def test_a_pod_volume_named_like_the_audit_spool_is_refused(
    kube: ControlPlane, guard: Injector
) -> None:
    body = mcp_pod("spool", volumes=[{"name": "palisade-audit", "hostPath": {"path": "/tmp"}}])
    message = refused(kube, ns(kube, "enabled"), body)
    assert "'palisade-audit'" in message
    assert "Rename that volume" in message


def test_a_container_named_like_the_packet_filter_is_refused(
    kube: ControlPlane, guard: Injector
) -> None:
    body = mcp_pod("filter", initContainers=[{"name": "palisade-init", "image": "palisade:e2e"}])
    assert "the Palisade packet filter" in refused(kube, ns(kube, "enabled"), body)


# --- 11: pod shapes -------------------------------------------------------------------


def test_a_guaranteed_pod_stays_guaranteed(kube: ControlPlane, guard: Injector) -> None:
    body = mcp_pod("qos")
    body["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1", "memory": "256Mi"}}
    stored = create(kube, ns(kube, "enabled"), body)
    assert len(sidecars(stored)) == 1
    assert stored["status"]["qosClass"] == "Guaranteed"


def test_a_windows_pod_is_skipped_with_a_reason_or_refused_where_required(
    kube: ControlPlane, guard: Injector
) -> None:
    body = mcp_pod("win", os={"name": "windows"})
    stored = create(kube, ns(kube, "enabled"), body)
    assert sidecars(stored) == []
    assert "Windows" in status(stored)["reason"]
    assert "Windows" in refused(kube, ns(kube, "required"), body)


def test_istio_s_classic_layout_gets_the_sidecar_in_front_of_the_app(
    kube: ControlPlane, guard: Injector
) -> None:
    body = mcp_pod("mesh")
    body["spec"]["containers"] = [
        {"name": "istio-proxy", "image": "istio/proxyv2:1", "ports": [{"containerPort": 15090}]},
        {"name": "app", "image": "example/mcp:1", "ports": [{"containerPort": 3000}]},
    ]
    stored = create(kube, ns(kube, "enabled"), body)
    (side,) = sidecars(stored)
    assert "http://127.0.0.1:3000" in side["args"]
    assert status(stored)["app"] == "app"
