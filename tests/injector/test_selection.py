"""Which pods are refused or skipped, and what people are told."""

from __future__ import annotations

import pytest

from injector import admission
from injector.review import decode_patch
from injector.settings import InjectionSettings
from tests.injector.pods import ENABLED, REQUIRED, container, pod, review

SETTINGS = InjectionSettings(native_sidecar="never")


def test_an_opt_out_is_refused_in_a_required_namespace_with_a_readable_message() -> None:
    answer = admission.serve(
        review(pod(annotations={"palisade.dev/inject": "false"})), REQUIRED, SETTINGS
    )
    response = answer["response"]
    assert response["uid"] == "0d1e2f3a-uid"
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert "requires the Palisade sidecar" in message
    assert "payments/mcp-0" in message
    assert "Remove the annotation" in message


def test_an_opt_out_in_an_enabled_namespace_is_allowed_with_a_warning() -> None:
    answer = admission.serve(
        review(pod(annotations={"palisade.dev/inject": "false"})), ENABLED, SETTINGS
    )
    assert answer["response"]["allowed"] is True
    assert "patch" not in answer["response"]
    assert "opted out" in answer["response"]["warnings"][0]


def test_a_required_namespace_injects_pods_that_do_not_opt_out() -> None:
    answer = admission.serve(review(pod()), REQUIRED, SETTINGS)
    assert answer["response"]["allowed"] is True
    assert decode_patch(answer)


def test_host_network_pods_are_skipped_with_a_reason_in_the_annotation_and_a_warning() -> None:
    answer = admission.serve(review(pod(hostNetwork=True)), ENABLED, SETTINGS)
    response = answer["response"]
    assert response["allowed"] is True
    assert "hostNetwork" in response["warnings"][0]
    (op,) = decode_patch(answer)
    assert '"state":"skipped"' in op["value"]["palisade.dev/status"]
    assert "hostNetwork" in op["value"]["palisade.dev/status"]


def test_host_network_pods_are_refused_in_a_required_namespace() -> None:
    answer = admission.serve(review(pod(hostNetwork=True)), REQUIRED, SETTINGS)
    assert answer["response"]["allowed"] is False
    assert "hostNetwork" in answer["response"]["status"]["message"]


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (pod(annotations={"palisade.dev/mcp-container": "nope"}), "which the pod does not have"),
        (
            pod(
                container("a", ("mcp", 80)),
                container("b"),
                annotations={"palisade.dev/mcp-container": "b"},
            ),
            "belongs to container 'a'",
        ),
        (
            pod(container("app"), annotations={"palisade.dev/upstream-port": "http"}),
            "is not a port number",
        ),
        (pod(annotations={"palisade.dev/sidecar-port": "8080"}), "is not a free port"),
        (pod(labels={"palisade.dev/mcp-server": ""}), "must name the MCP server"),
        (pod(annotations={"palisade.dev/sidecar-port": "99999"}), "is not a free port"),
    ],
)
def test_misconfigured_pods_are_refused_with_the_reason(
    obj: dict[str, object], fragment: str
) -> None:
    answer = admission.serve(review(obj), ENABLED, SETTINGS)
    assert answer["response"]["allowed"] is False
    assert fragment in answer["response"]["status"]["message"]


def test_a_udp_mcp_port_is_refused() -> None:
    obj = pod(container("app"))
    obj["spec"]["containers"][0]["ports"] = [
        {"name": "mcp", "containerPort": 53, "protocol": "UDP"}
    ]
    answer = admission.serve(review(obj), ENABLED, SETTINGS)
    assert answer["response"]["allowed"] is False
    assert "not TCP" in answer["response"]["status"]["message"]


def test_updates_that_change_nothing_injected_and_deletes_are_allowed_untouched() -> None:
    update = review(pod(), operation="UPDATE")
    update["request"]["oldObject"] = pod()
    for doc in (update, review(None, operation="DELETE")):
        answer = admission.serve(doc, ENABLED, SETTINGS)
        assert answer["response"] == {"uid": "0d1e2f3a-uid", "allowed": True}


def test_namespace_labels_unknown_means_not_injected() -> None:
    answer = admission.serve(review(pod()), None, SETTINGS)
    assert answer["response"] == {"uid": "0d1e2f3a-uid", "allowed": True}


def test_a_container_posing_as_the_sidecar_is_refused() -> None:
    obj = pod(container("app", ("mcp", 8080)), container("palisade-sidecar", image="busybox:1"))
    answer = admission.serve(review(obj), REQUIRED, SETTINGS)
    assert answer["response"]["allowed"] is False
    assert "not the Palisade sidecar" in answer["response"]["status"]["message"]


def test_a_forged_status_annotation_does_not_dodge_a_required_namespace() -> None:
    obj = pod(annotations={"palisade.dev/status": '{"state":"injected"}'})
    answer = admission.serve(review(obj), REQUIRED, SETTINGS)
    assert answer["response"]["allowed"] is True
    assert any(op["path"] == "/spec/containers/-" for op in decode_patch(answer))
    assert "has no sidecar" in answer["response"]["warnings"][0]
