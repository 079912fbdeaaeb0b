"""An injected pod admitted again (a reinvocation after another webhook, or a manifest
copied from an injected pod) is recognised as injected, whatever per-pod choices its
annotations made: each annotation that shapes the sidecar shapes the recheck too."""

from __future__ import annotations

from typing import Any

import pytest

from injector import admission
from injector.review import decode_patch
from injector.settings import InjectionSettings
from tests.injector.pods import ENABLED, apply_patch, container, pod, review

#: Every annotation that changes what is injected, each with a value that changes it.
PER_POD = {
    "palisade.dev/audience": "mcp.example.com/payments",
    "palisade.dev/pod-firewall": "false",
    "palisade.dev/protect-ports": "9090",
    "palisade.dev/upstream-credential": "kube-token-request",
    "palisade.dev/sidecar-port": "7000",
    "palisade.dev/quarantine": "off",
    "palisade.dev/sidecar-cpu-request": "200m",
    "palisade.dev/sidecar-memory-limit": "512Mi",
}
#: Credential sources exclude one another: each is its own case.
SOURCES = {
    "secret": {
        "palisade.dev/upstream-credential-secret": "github-mcp/token",
        "palisade.dev/upstream-credential-header": "X-API-Key",
    },
    "vault": {
        "palisade.dev/vault-secret": "secret/mcp/github#token",
        "palisade.dev/vault-role": "github-mcp",
        "palisade.dev/vault-addr": "https://openbao.vault.svc:8200",
    },
}
WITHOUT_KUBE_TOKEN = {k: v for k, v in PER_POD.items() if k != "palisade.dev/upstream-credential"}


def admit(obj: dict[str, Any], settings: InjectionSettings) -> dict[str, Any]:
    answer = admission.serve(review(obj), dict(ENABLED), settings)
    assert answer["response"]["allowed"] is True, answer["response"].get("status")
    return dict(answer["response"])


@pytest.mark.parametrize("native", ["never", "always"])
@pytest.mark.parametrize(
    "annotations",
    [
        *({k: v} for k, v in PER_POD.items()),
        PER_POD,
        *({**WITHOUT_KUBE_TOKEN, **source} for source in SOURCES.values()),
    ],
    ids=[*PER_POD, "all", *(f"all-with-{name}" for name in SOURCES)],
)
def test_an_injected_pod_admitted_again_is_left_as_it_is(
    annotations: dict[str, str], native: str
) -> None:
    settings = InjectionSettings(native_sidecar=native)
    obj = pod(container("app", ("mcp", 8080), ("metrics", 9090)), annotations=dict(annotations))
    obj["spec"]["automountServiceAccountToken"] = False
    first = admit(obj, settings)
    injected = apply_patch(obj, decode_patch({"response": first}))
    again = admit(injected, settings)
    assert "patch" not in again, "the second admission must add nothing"
