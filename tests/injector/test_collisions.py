"""A pod's own names are never reused: volumes and containers named like ours are refused."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from injector import admission, patch
from injector.review import decode_patch
from injector.settings import InjectionSettings, SidecarSettings
from tests.injector.pods import ENABLED, REQUIRED, apply_patch, container, pod, review

REGULAR = InjectionSettings(native_sidecar="never")
WITH_BUNDLE = InjectionSettings(
    native_sidecar="never",
    sidecar=SidecarSettings(bundle_configmap="policy", trusted_keys=("k",)),
)
OUR_VOLUMES = sorted({v["name"] for v in patch.volumes(WITH_BUNDLE.sidecar, firewall=True)})


@given(
    name=st.sampled_from(OUR_VOLUMES),
    source=st.sampled_from(
        [{"hostPath": {"path": "/var/log"}}, {"emptyDir": {}}, {"persistentVolumeClaim": {}}]
    ),
    labels=st.sampled_from([ENABLED, REQUIRED]),
)
def test_a_pod_volume_with_a_name_we_add_is_refused_never_reused(
    name: str, source: dict[str, Any], labels: dict[str, str]
) -> None:
    obj = pod(volumes=[{"name": name, **source}])
    response = admission.serve(review(obj), labels, WITH_BUNDLE)["response"]
    assert response["allowed"] is False
    assert repr(name) in response["status"]["message"]
    assert "Rename that volume" in response["status"]["message"]


def test_every_volume_the_sidecar_mounts_is_one_the_patch_adds() -> None:
    obj = pod(volumes=[{"name": "data", "emptyDir": {}}])
    patched = apply_patch(obj, decode_patch(admission.serve(review(obj), ENABLED, WITH_BUNDLE)))
    added = patched["spec"]["volumes"][1:]
    (side,) = [c for c in patched["spec"]["containers"] if c["name"] == "palisade-sidecar"]
    assert {m["name"] for m in side["volumeMounts"]} <= {v["name"] for v in added}
    assert added == patch.volumes(WITH_BUNDLE.sidecar, firewall=True)


@given(where=st.sampled_from(["containers", "initContainers"]))
def test_a_container_named_like_the_packet_filter_is_refused(where: str) -> None:
    obj = pod()
    impostor = {"name": "palisade-init", "image": "palisade:0.1.0", "args": ["--help"]}
    obj["spec"].setdefault(where, []).append(impostor)
    response = admission.serve(review(obj), ENABLED, REGULAR)["response"]
    assert response["allowed"] is False
    assert "the Palisade packet filter" in response["status"]["message"]


def test_the_sidecar_s_environment_names_are_unique_and_none_is_taken_from_the_pod() -> None:
    obj = pod(container("app", ("mcp", 8080), env=[{"name": "PALISADE_TENANT", "value": "x"}]))
    patched = apply_patch(obj, decode_patch(admission.serve(review(obj), ENABLED, REGULAR)))
    app, side = patched["spec"]["containers"]
    names = [e["name"] for e in side["env"]]
    assert len(names) == len(set(names))
    assert {"name": "PALISADE_TENANT", "value": "payments"} in side["env"]
    assert app["env"] == [{"name": "PALISADE_TENANT", "value": "x"}], "the pod's env untouched"
