"""Pod shapes the patch would break: skipped with a reason, refused where required, or
injected so that the pod keeps behaving as it did (QoS, the MCP container chosen)."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from injector import admission, quantity, shapes
from injector.review import decode_patch
from injector.settings import InjectionSettings
from tests.injector.pods import ENABLED, REQUIRED, apply_patch, container, pod, review

REGULAR = InjectionSettings(native_sidecar="never")
NATIVE = InjectionSettings(native_sidecar="always")

UNFIT = {
    "windows by spec.os": ({"os": {"name": "windows"}}, "Windows"),
    "windows by node selector": ({"nodeSelector": {"kubernetes.io/os": "windows"}}, "Windows"),
    "windows by node affinity": (
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/os",
                                        "operator": "In",
                                        "values": ["windows"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            }
        },
        "Windows",
    ),
    "pod-level resources": ({"resources": {"requests": {"cpu": "1"}}}, "spec.resources"),
    "must complete, no native sidecar": ({"restartPolicy": "Never"}, "restartPolicy Never"),
}


@pytest.mark.parametrize("case", sorted(UNFIT))
def test_unfit_pods_are_skipped_with_the_reason_where_enabled(case: str) -> None:
    spec, words = UNFIT[case]
    obj = pod(**spec)
    response = admission.serve(review(obj), ENABLED, REGULAR)["response"]
    assert response["allowed"] is True
    ops = decode_patch({"apiVersion": "", "kind": "", "response": response})
    assert [op["path"] for op in ops] == ["/metadata/annotations"]
    status = json.loads(ops[0]["value"]["palisade.dev/status"])
    assert status["state"] == "skipped"
    assert words in status["reason"]
    assert any(words in w for w in response["warnings"])


@pytest.mark.parametrize("case", sorted(UNFIT))
def test_unfit_pods_are_refused_readably_where_required(case: str) -> None:
    spec, words = UNFIT[case]
    response = admission.serve(review(pod(**spec)), REQUIRED, REGULAR)["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "requires the Palisade sidecar" in message
    assert words in message


def test_a_linux_pod_with_an_os_field_is_injected() -> None:
    assert shapes.unfit({"os": {"name": "linux"}}, native=False) is None


def test_a_job_pod_with_native_sidecars_is_injected() -> None:
    response = admission.serve(review(pod(restartPolicy="Never")), REQUIRED, NATIVE)["response"]
    assert response["allowed"] is True
    assert "patch" in response


def patched(obj: dict[str, Any], settings: InjectionSettings = REGULAR) -> dict[str, Any]:
    answer = admission.serve(review(obj), ENABLED, settings)
    assert answer["response"]["allowed"] is True
    return apply_patch(obj, decode_patch(answer))


quantities = st.sampled_from(["100m", "250m", "1", "2", "0.5", "1500m"])
memories = st.sampled_from(["64Mi", "128Mi", "1Gi", "512M", "268435456"])


@given(
    cpu_request=quantities,
    cpu_limit=quantities,
    memory_request=memories,
    memory_limit=memories,
    native=st.booleans(),
    with_requests=st.booleans(),
)
def test_the_qos_class_guaranteed_is_kept(
    cpu_request: str,
    cpu_limit: str,
    memory_request: str,
    memory_limit: str,
    native: bool,
    with_requests: bool,
) -> None:
    resources: dict[str, Any] = {"limits": {"cpu": cpu_limit, "memory": memory_limit}}
    if with_requests:
        resources["requests"] = {"cpu": cpu_request, "memory": memory_request}
    obj = pod(container("app", ("mcp", 8080), resources=resources))
    before = shapes.guaranteed(obj["spec"]["containers"])
    after_pod = patched(obj, NATIVE if native else REGULAR)
    spec = after_pod["spec"]
    assert shapes.guaranteed(spec["containers"], spec.get("initContainers", [])) == before


def test_a_burstable_pod_keeps_the_sidecar_s_small_requests() -> None:
    spec = patched(pod())["spec"]
    (side,) = [c for c in spec["containers"] if c["name"] == "palisade-sidecar"]
    assert side["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}


PROXIES = sorted(shapes.KNOWN_PROXIES)


@given(
    layout=st.lists(
        st.one_of(st.sampled_from(PROXIES), st.sampled_from(["app", "server", "worker"])),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    default=st.one_of(st.none(), st.sampled_from(["app", "server", "istio-proxy"])),
)
def test_a_known_proxy_is_never_taken_for_the_mcp_container(
    layout: list[str], default: str | None
) -> None:
    annotations = {} if default is None else {shapes.ANNOTATION_DEFAULT_CONTAINER: default}
    obj = pod(*[container(n, (None, 3000 + i)) for i, n in enumerate(layout)])
    choice = shapes.pick(obj["spec"]["containers"], annotations, "mcp")
    if choice.error:
        assert all(n in shapes.KNOWN_PROXIES for n in layout)
        return
    chosen = layout[choice.index]
    assert chosen not in shapes.KNOWN_PROXIES
    if default in layout and default not in shapes.KNOWN_PROXIES:
        assert chosen == default


def test_the_default_container_annotation_chooses_the_mcp_container() -> None:
    obj = pod(
        container("metrics", (None, 9090)),
        container("server", (None, 3000)),
        annotations={"kubectl.kubernetes.io/default-container": "server"},
    )
    spec = patched(obj)["spec"]
    side = spec["containers"][-1]
    assert "http://127.0.0.1:3000" in side["args"]


def test_a_guess_between_containers_is_refused_where_required_and_warned_where_enabled() -> None:
    obj = pod(container("server", (None, 3000)), container("helper", (None, 9000)))
    refused = admission.serve(review(obj), REQUIRED, REGULAR)["response"]
    assert refused["allowed"] is False
    assert "palisade.dev/mcp-container" in refused["status"]["message"]
    allowed = admission.serve(review(obj), ENABLED, REGULAR)["response"]
    assert any("is a guess ('server')" in w for w in allowed["warnings"])


@pytest.mark.parametrize("proxy", ["istio-proxy", "linkerd-proxy", "envoy", "vault-agent"])
def test_a_proxy_named_as_the_mcp_container_is_refused(proxy: str) -> None:
    obj = pod(
        container(proxy, ("mcp", 15001)),
        container("app", (None, 3000)),
    )
    response = admission.serve(review(obj), ENABLED, REGULAR)["response"]
    assert response["allowed"] is False
    assert "known proxy" in response["status"]["message"]


@given(
    number=st.integers(min_value=0, max_value=10**6),
    suffix=st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi"]),
)
def test_quantities_are_read_as_numbers(number: int, suffix: str) -> None:
    scale = {
        "": 1,
        "m": Fraction(1, 1000),
        "k": 1000,
        "M": 10**6,
        "G": 10**9,
        "Ki": 1024,
        "Mi": 1024**2,
        "Gi": 1024**3,
    }[suffix]
    assert quantity.parse(f"{number}{suffix}") == number * scale
    assert quantity.equal(f"{number * 1000}m", str(number))


@pytest.mark.parametrize("text", ["", "1.2.3", "Mi", "1 Mi", "1mi", "abc", None])
def test_what_is_not_a_quantity_is_none(text: str | None) -> None:
    assert quantity.parse(text) is None
