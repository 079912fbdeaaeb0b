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
}


def admit(obj: dict[str, Any], settings: InjectionSettings) -> dict[str, Any]:
    answer = admission.serve(review(obj), dict(ENABLED), settings)
    assert answer["response"]["allowed"] is True, answer["response"].get("status")
    return dict(answer["response"])


@pytest.mark.parametrize("native", ["never", "always"])
@pytest.mark.parametrize(
    "annotations",
    [*({k: v} for k, v in PER_POD.items()), PER_POD],
    ids=[*PER_POD, "all"],
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
