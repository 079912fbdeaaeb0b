"""Only what the injector itself added passes as the sidecar: look-alikes are refused.

A pod that already has a container named ``palisade-sidecar`` is admitted only when
that container, the packet filter, their volumes and the status annotation are
exactly what this injector adds (a reinvocation, or a copied manifest).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from injector import admission
from injector.review import decode_patch
from injector.settings import InjectionSettings
from tests.injector.pods import ENABLED, REQUIRED, apply_patch, container, pod, review

REGULAR = InjectionSettings(native_sidecar="never")
NATIVE = InjectionSettings(native_sidecar="always")


def injected(settings: InjectionSettings = REGULAR, obj: dict[str, Any] | None = None) -> Any:
    obj = obj or pod()
    answer = admission.serve(review(obj), REQUIRED, settings)
    assert answer["response"]["allowed"] is True
    return apply_patch(obj, decode_patch(answer))


def sidecar_of(patched: dict[str, Any]) -> dict[str, Any]:
    spec = patched["spec"]
    every = spec["containers"] + spec.get("initContainers", [])
    (found,) = [c for c in every if c["name"] == "palisade-sidecar"]
    return found


def answer_for(obj: dict[str, Any], settings: InjectionSettings = REGULAR) -> Any:
    return admission.serve(review(obj), REQUIRED, settings)["response"]


def test_our_own_output_passes_again_unchanged() -> None:
    for settings in (REGULAR, NATIVE):
        response = answer_for(injected(settings), settings)
        assert response["allowed"] is True
        assert "patch" not in response


def test_a_container_with_our_name_and_image_but_its_own_command_is_refused() -> None:
    obj = pod(
        container("app", ("mcp", 8080)),
        container("palisade-sidecar", image="palisade:0.1.0", command=["sleep", "infinity"]),
    )
    response = answer_for(obj)
    assert response["allowed"] is False
    assert "is not the Palisade sidecar" in response["status"]["message"]


def test_a_forged_status_annotation_does_not_make_a_look_alike_pass() -> None:
    real = injected()
    fake = copy.deepcopy(real)
    sidecar_of(fake)["args"].append("--dev-auth")
    response = answer_for(fake)
    assert response["allowed"] is False
    assert "args" in response["status"]["message"]


#: Changes a look-alike could make to a copy of the real sidecar, one at a time.
TAMPER = {
    "command": ["sh", "-c", "sleep infinity"],
    "args": ["sidecar", "--dev-auth"],
    "image": "evil/palisade:0.1.0",
    "envFrom": [{"configMapRef": {"name": "mine"}}],
    "lifecycle": {"postStart": {"exec": {"command": ["rm", "-rf", "/var/lib/palisade/audit"]}}},
    "securityContext": {"privileged": True},
    "workingDir": "/tmp",
    "livenessProbe": {"exec": {"command": ["true"]}},
    "restartPolicy": "Never",
}


@given(key=st.sampled_from(sorted(TAMPER)), native=st.booleans())
def test_any_change_to_the_sidecar_container_is_refused(key: str, native: bool) -> None:
    settings = NATIVE if native else REGULAR
    fake = injected(settings)
    sidecar_of(fake)[key] = TAMPER[key]
    response = answer_for(fake, settings)
    assert response["allowed"] is False
    assert key in response["status"]["message"]


@given(
    extra=st.fixed_dictionaries(
        {"name": st.sampled_from(["PALISADE_DEV_AUTH", "PALISADE_AUDIT_DIR", "X"])},
        optional={"value": st.text(max_size=5)},
    )
)
def test_an_added_environment_variable_is_refused(extra: dict[str, str]) -> None:
    fake = injected()
    sidecar_of(fake)["env"].append(extra)
    assert answer_for(fake)["allowed"] is False


@given(
    name=st.sampled_from(
        ["palisade-socket", "palisade-bundle-cache", "palisade-audit", "palisade-kube-api"]
    ),
    source=st.sampled_from(
        [{"hostPath": {"path": "/var/log"}}, {"emptyDir": {}}, {"configMap": {"name": "x"}}]
    ),
)
def test_one_of_our_volumes_swapped_for_the_pod_s_own_is_refused(
    name: str, source: dict[str, Any]
) -> None:
    fake = injected()
    fake["spec"]["volumes"] = [
        {"name": name, **source} if v["name"] == name else v for v in fake["spec"]["volumes"]
    ]
    response = answer_for(fake)
    assert response["allowed"] is False
    assert f"volume {name!r}" in response["status"]["message"]


def test_a_missing_packet_filter_is_refused() -> None:
    fake = injected()
    fake["spec"]["initContainers"] = []
    response = answer_for(fake)
    assert response["allowed"] is False
    assert "no packet filter" in response["status"]["message"]


def test_a_packet_filter_with_another_command_is_refused() -> None:
    fake = injected()
    fake["spec"]["initContainers"][0]["args"] = ["--help"]
    response = answer_for(fake)
    assert response["allowed"] is False
    assert "'palisade-init' differs in its args" in response["status"]["message"]


def test_a_status_annotation_that_says_the_filter_was_opted_out_is_refused() -> None:
    fake = injected()
    status = json.loads(fake["metadata"]["annotations"]["palisade.dev/status"])
    status["podFirewall"] = "opted-out"
    fake["metadata"]["annotations"]["palisade.dev/status"] = json.dumps(status)
    assert answer_for(fake)["allowed"] is False


def test_without_a_status_annotation_our_exact_sidecar_is_still_refused() -> None:
    fake = injected()
    del fake["metadata"]["annotations"]["palisade.dev/status"]
    response = answer_for(fake)
    assert response["allowed"] is False
    assert "no palisade.dev/status annotation" in response["status"]["message"]


def test_the_mcp_container_keeping_the_port_name_is_refused() -> None:
    fake = injected()
    fake["spec"]["containers"][0]["ports"][0]["name"] = "mcp"
    assert "still declares the port 'mcp'" in answer_for(fake)["status"]["message"]


def test_the_stored_form_with_api_server_defaults_passes() -> None:
    """What a reinvocation sees: defaults filled in, quantities canonical, the
    ServiceAccount plugin's token mount added to the packet filter."""
    stored = injected()
    side = sidecar_of(stored)
    side["terminationMessagePath"] = "/dev/termination-log"
    side["resources"]["limits"]["cpu"] = "1000m"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        side[probe]["successThreshold"] = 1
    for item in side["env"]:
        if "valueFrom" in item:
            del item["valueFrom"]["fieldRef"]["apiVersion"]
    stored["spec"]["volumes"].append(
        {
            "name": "kube-api-access-abcde",
            "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
        }
    )
    stored["spec"]["initContainers"][0]["volumeMounts"].append(
        {
            "name": "kube-api-access-abcde",
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True,
        }
    )
    response = answer_for(stored)
    assert response["allowed"] is True
    assert "patch" not in response


def test_an_enabled_namespace_refuses_a_look_alike_too() -> None:
    fake = injected()
    sidecar_of(fake)["image"] = "busybox:1"
    response = admission.serve(review(fake), ENABLED, REGULAR)["response"]
    assert response["allowed"] is False


def test_a_copy_of_an_injected_pod_on_the_host_network_is_refused() -> None:
    fake = injected()
    fake["spec"]["hostNetwork"] = True
    response = answer_for(fake)
    assert response["allowed"] is False
    assert "hostNetwork" in response["status"]["message"]
