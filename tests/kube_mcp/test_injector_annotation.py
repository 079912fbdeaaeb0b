"""``palisade.dev/upstream-credential: kube-token-request``: the injected sidecar mints
per-agent ServiceAccount tokens for the MCP server (the pure admission engine, plain dicts)."""

from __future__ import annotations

from typing import Any

from injector import admission
from injector.patch import KUBE_API_DIR
from injector.review import decode_patch
from injector.settings import InjectionSettings, SidecarSettings
from tests.injector.pods import ENABLED, apply_patch, container, pod, review

SETTINGS = InjectionSettings(native_sidecar="never")
ASK = {"palisade.dev/upstream-credential": "kube-token-request"}


def sidecar_of(doc: dict[str, Any]) -> dict[str, Any]:
    (found,) = [c for c in doc["spec"]["containers"] if c["name"] == "palisade-sidecar"]
    return dict(found)


def answer_for(obj: dict[str, Any], settings: InjectionSettings = SETTINGS) -> Any:
    return admission.serve(review(obj), ENABLED, settings)


def test_the_annotation_makes_the_sidecar_mint_with_its_own_projected_token() -> None:
    asked = pod(
        container("mcp", ("mcp", 8080)), annotations=ASK, automountServiceAccountToken=False
    )
    answer = answer_for(asked)
    assert answer["response"]["allowed"] is True
    assert not answer["response"].get("warnings")
    patched = apply_patch(asked, decode_patch(answer))
    args = sidecar_of(patched)["args"]
    at = args.index("--upstream-credential")
    assert args[at + 1] == "kube-token-request"
    tail = args[at:]
    assert tail[tail.index("--kube-token-file") + 1] == f"{KUBE_API_DIR}/token"
    assert tail[tail.index("--kube-ca-file") + 1] == f"{KUBE_API_DIR}/ca.crt"
    assert tail[tail.index("--kube-api-server") + 1] == "https://kubernetes.default.svc"
    # the token volume is mounted into the sidecar only
    mcp = next(c for c in patched["spec"]["containers"] if c["name"] == "mcp")
    assert all(m["mountPath"] != KUBE_API_DIR for m in mcp.get("volumeMounts", []))
    assert any(m["mountPath"] == KUBE_API_DIR for m in sidecar_of(patched)["volumeMounts"])


def test_without_the_annotation_no_cluster_credential_is_minted() -> None:
    patched = apply_patch(plain := pod(), decode_patch(answer_for(plain)))
    assert "--upstream-credential" not in sidecar_of(patched)["args"]


def test_a_pod_that_mounts_its_token_into_the_mcp_container_is_warned() -> None:
    answer = answer_for(pod(annotations=ASK))
    assert answer["response"]["allowed"] is True
    (warning,) = answer["response"]["warnings"]
    assert "automountServiceAccountToken: false" in warning


def test_an_unknown_credential_kind_is_refused_with_what_is_known() -> None:
    answer = answer_for(pod(annotations={"palisade.dev/upstream-credential": "static"}))
    assert answer["response"]["allowed"] is False
    assert "kube-token-request" in answer["response"]["status"]["message"]


def test_without_the_sidecars_token_volume_the_pod_is_refused() -> None:
    settings = InjectionSettings(native_sidecar="never", sidecar=SidecarSettings(identity="none"))
    answer = answer_for(pod(annotations=ASK, automountServiceAccountToken=False), settings)
    assert answer["response"]["allowed"] is False
    assert "identity mode 'none'" in answer["response"]["status"]["message"]
