"""Pod updates: what was injected stays as it was injected."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from injector import admission
from injector.review import decode_patch
from injector.settings import InjectionSettings
from tests.injector.pods import ENABLED, REQUIRED, apply_patch, pod, review

NATIVE = InjectionSettings(native_sidecar="always")


def injected() -> dict[str, Any]:
    obj = pod()
    return apply_patch(obj, decode_patch(admission.serve(review(obj), REQUIRED, NATIVE)))


def update(
    old: dict[str, Any], new: dict[str, Any], labels: dict[str, str], sub: str = ""
) -> dict[str, Any]:
    doc = review(new, operation="UPDATE")
    doc["request"]["oldObject"] = copy.deepcopy(old)
    if sub:
        doc["request"]["subResource"] = sub
    response: dict[str, Any] = admission.serve(doc, labels, NATIVE)["response"]
    assert "patch" not in response, "an update is never mutated"
    return response


def init(p: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in p["spec"]["initContainers"] if c["name"] == name]
    return found


CHANGES = {
    "sidecar image": lambda p: init(p, "palisade-sidecar").update(image="busybox:1"),
    "sidecar args": lambda p: init(p, "palisade-sidecar")["args"].append("--dev-auth"),
    "packet filter image": lambda p: init(p, "palisade-init").update(image="busybox:1"),
    "audit volume": lambda p: p["spec"]["volumes"].__setitem__(
        2, {"name": "palisade-audit", "hostPath": {"path": "/tmp"}}
    ),
    "status annotation": lambda p: p["metadata"]["annotations"].pop("palisade.dev/status"),
    "server label": lambda p: p["metadata"]["labels"].update(
        {"palisade.dev/mcp-server": "another"}
    ),
}


@given(change=st.sampled_from(sorted(CHANGES)), labels=st.sampled_from([ENABLED, REQUIRED]))
def test_changing_what_was_injected_is_refused(change: str, labels: dict[str, str]) -> None:
    old = injected()
    new = copy.deepcopy(old)
    CHANGES[change](new)
    response = update(old, new, labels)
    assert response["allowed"] is False
    assert "cannot change after the Palisade sidecar was injected" in response["status"]["message"]


def test_other_updates_pass() -> None:
    old = injected()
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["team"] = "sre"
    new["metadata"]["finalizers"] = ["example.com/keep"]
    new["spec"]["activeDeadlineSeconds"] = 60
    assert update(old, new, REQUIRED) == {"uid": "0d1e2f3a-uid", "allowed": True}


def test_a_new_mcp_image_is_refused_where_required_and_warned_where_enabled() -> None:
    old = injected()
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "example/app:2"
    refused = update(old, new, REQUIRED)
    assert refused["allowed"] is False
    assert "image of MCP container 'app'" in refused["status"]["message"]
    allowed = update(old, new, ENABLED)
    assert allowed["allowed"] is True
    assert "recreate the pod" in allowed["warnings"][0]


def test_an_ephemeral_container_on_a_governed_pod() -> None:
    old = injected()
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox:1"}]
    refused = update(old, new, REQUIRED, "ephemeralcontainers")
    assert refused["allowed"] is False
    assert "'debug'" in refused["status"]["message"]
    warned = update(old, new, ENABLED, "ephemeralcontainers")
    assert warned["allowed"] is True
    assert "without passing the sidecar" in warned["warnings"][0]


def test_an_mcp_server_label_added_after_creation() -> None:
    old = pod(labels={"app": "x"})
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["palisade.dev/mcp-server"] = "kubernetes-mcp"
    assert update(old, new, REQUIRED)["allowed"] is False
    warned = update(old, new, ENABLED)
    assert warned["allowed"] is True
    assert "not governed" in warned["warnings"][0]


@pytest.mark.parametrize("sub", ["status", "binding", "resize"])
def test_other_subresources_pass(sub: str) -> None:
    old = injected()
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "example/app:2"
    assert update(old, new, REQUIRED, sub)["allowed"] is True


def test_an_update_without_the_old_pod_is_a_bad_request() -> None:
    response = admission.serve(review(injected(), operation="UPDATE"), REQUIRED, NATIVE)
    assert response["response"]["status"]["code"] == 400


def test_status_records_the_mcp_container() -> None:
    status = json.loads(injected()["metadata"]["annotations"]["palisade.dev/status"])
    assert status["app"] == "app"
