"""What the chart's defaults inject: verified identity bound to this server, a packet
filter around the MCP port, and no sidecar while bundle keys are missing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from injector import admission
from injector.keysource import KeyState, StaticKeys
from injector.review import decode_patch
from injector.settings import InjectionSettings, SidecarSettings
from injector.webhook import StaticNamespaces, Webhook
from palisade.bundle.signing import generate_key, public_key_pem
from tests.injector.pods import ENABLED, REQUIRED, apply_patch, container, pod, review

REGULAR = InjectionSettings(native_sidecar="never")
KEY = public_key_pem(generate_key()).decode().strip()
DISTRIBUTOR = SidecarSettings(distributor="palisade-distributor.palisade:7070")


def answer(obj: dict[str, Any], labels: dict[str, str] = ENABLED, settings: Any = REGULAR) -> Any:
    return admission.serve(review(obj), labels, settings)["response"]


def patched(obj: dict[str, Any], labels: dict[str, str] = ENABLED, settings: Any = REGULAR) -> Any:
    doc = admission.serve(review(obj), labels, settings)
    assert doc["response"]["allowed"], doc
    return apply_patch(obj, decode_patch(doc))


def named(p: dict[str, Any], name: str) -> dict[str, Any]:
    spec = p["spec"]
    (found,) = [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name]
    return found


def arg(c: dict[str, Any], flag: str) -> str:
    return str(c["args"][c["args"].index(flag) + 1])


def status(p: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(p["metadata"]["annotations"]["palisade.dev/status"]))


# --- identity -------------------------------------------------------------------------------


def test_the_sidecar_verifies_cluster_tokens_for_its_own_audience_never_dev_auth() -> None:
    side = named(patched(pod()), "palisade-sidecar")
    assert arg(side, "--audience") == "palisade.dev/mcp/payments/kubernetes-mcp"
    assert arg(side, "--cluster-issuer") == "discover"
    assert "--dev-auth" not in side["args"]
    assert "--token-review-api" not in side["args"]


def test_the_sidecar_gets_its_own_api_token_even_without_automount() -> None:
    p = patched(pod(automountServiceAccountToken=False))
    volume = {v["name"]: v for v in p["spec"]["volumes"]}["palisade-kube-api"]
    sources = volume["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    app_mounts = [m["name"] for m in p["spec"]["containers"][0]["volumeMounts"]]
    assert "palisade-kube-api" not in app_mounts, "only the sidecar mounts its token"


def test_an_annotation_sets_the_audience() -> None:
    obj = pod(annotations={"palisade.dev/audience": "https://mcp.example.com/k8s"})
    p = patched(obj)
    assert arg(named(p, "palisade-sidecar"), "--audience") == "https://mcp.example.com/k8s"
    assert status(p)["audience"] == "https://mcp.example.com/k8s"


@pytest.mark.parametrize("bad", ["", "two words", "a,b", "x" * 300, "tab\there"])
def test_an_unusable_audience_annotation_is_refused(bad: str) -> None:
    response = answer(pod(annotations={"palisade.dev/audience": bad}))
    assert response["allowed"] is False
    assert "palisade.dev/audience" in response["status"]["message"]


def test_the_chart_can_template_the_audience() -> None:
    settings = InjectionSettings(
        native_sidecar="never",
        sidecar=SidecarSettings(audience_template="https://{server}.{namespace}.mcp.example"),
    )
    side = named(patched(pod(), settings=settings), "palisade-sidecar")
    assert arg(side, "--audience") == "https://kubernetes-mcp.payments.mcp.example"


def test_token_review_and_none_modes() -> None:
    review_mode = InjectionSettings(
        native_sidecar="never", sidecar=SidecarSettings(identity="token-review")
    )
    side = named(patched(pod(), settings=review_mode), "palisade-sidecar")
    assert arg(side, "--token-review-api") == "https://kubernetes.default.svc"
    assert "--cluster-issuer" not in side["args"]
    none = InjectionSettings(native_sidecar="never", sidecar=SidecarSettings(identity="none"))
    p = patched(pod(), settings=none)
    side = named(p, "palisade-sidecar")
    assert "--cluster-issuer" not in side["args"] and "--audience" in side["args"]
    assert "palisade-kube-api" not in {v["name"] for v in p["spec"]["volumes"]}


# --- the packet filter ----------------------------------------------------------------------


def test_the_packet_filter_init_container_protects_the_upstream_port_with_net_admin_only() -> None:
    p = patched(pod(container("app", ("mcp", 3000))))
    init = named(p, "palisade-init")
    assert p["spec"]["initContainers"][0]["name"] == "palisade-init"
    assert init["command"] == ["palisade"]
    assert init["args"] == ["pod-firewall", "--protect-port", "3000"]
    assert init["image"] == named(p, "palisade-sidecar")["image"]
    sc = init["securityContext"]
    assert (sc["runAsUser"], sc["runAsNonRoot"]) == (0, False)
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert init["volumeMounts"] == [{"name": "palisade-init-run", "mountPath": "/run"}]
    assert init["resources"]["limits"] == {"cpu": "500m", "memory": "64Mi"}
    assert "restartPolicy" not in init
    assert status(p)["podFirewall"] == "enabled"


def test_extra_ports_can_be_protected() -> None:
    obj = pod(annotations={"palisade.dev/protect-ports": "9000, 8081"})
    init = named(patched(obj), "palisade-init")
    assert init["args"] == [
        "pod-firewall",
        *("--protect-port", "8080"),
        *("--protect-port", "8081"),
        *("--protect-port", "9000"),
    ]


@pytest.mark.parametrize("value", ["9400", "http", "8080;rm"])
def test_bad_extra_ports_are_refused(value: str) -> None:
    response = answer(pod(annotations={"palisade.dev/protect-ports": value}))
    assert response["allowed"] is False
    assert "palisade.dev/protect-ports" in response["status"]["message"]


def test_opting_out_of_the_filter_is_recorded_and_warned_in_an_enabled_namespace() -> None:
    obj = pod(annotations={"palisade.dev/pod-firewall": "false"})
    doc = admission.serve(review(obj), ENABLED, REGULAR)
    p = apply_patch(obj, decode_patch(doc))
    assert "palisade-init" not in {c["name"] for c in p["spec"].get("initContainers", [])}
    assert status(p)["podFirewall"] == "opted-out"
    assert any("around the sidecar" in w for w in doc["response"]["warnings"])


def test_opting_out_of_the_filter_is_refused_in_a_required_namespace() -> None:
    response = answer(pod(annotations={"palisade.dev/pod-firewall": "false"}), REQUIRED)
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert "palisade.dev/inject=required" in response["status"]["message"]


def test_the_chart_can_switch_the_filter_off_everywhere() -> None:
    settings = InjectionSettings(
        native_sidecar="never", sidecar=SidecarSettings(pod_firewall=False)
    )
    p = patched(pod(), REQUIRED, settings)
    assert "initContainers" not in p["spec"]
    assert status(p)["podFirewall"] == "disabled"


def test_a_foreign_container_named_like_the_filter_is_refused() -> None:
    obj = pod(initContainers=[{"name": "palisade-init", "image": "evil:1"}])
    response = answer(obj)
    assert response["allowed"] is False
    assert "palisade-init" in response["status"]["message"]


def test_a_grpc_probe_of_the_protected_port_is_warned_about() -> None:
    obj = pod(container("app", ("mcp", 8080), livenessProbe={"grpc": {"port": 8080}}))
    response = answer(obj)
    assert response["allowed"] is True
    assert any("grpc probe" in w for w in response["warnings"])


# --- trusted bundle keys --------------------------------------------------------------------


def test_without_a_published_key_mcp_pods_are_refused_with_retry() -> None:
    settings = InjectionSettings(native_sidecar="never", sidecar=DISTRIBUTOR)
    response = answer(pod(), ENABLED, settings)
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert message.startswith(
        "the Palisade distributor has not published its signing key yet; retry in a few seconds"
    )


def test_pods_that_are_not_injected_are_not_held_up_by_missing_keys() -> None:
    settings = InjectionSettings(native_sidecar="never", sidecar=DISTRIBUTOR)
    assert answer(pod(labels={"app": "web"}), ENABLED, settings)["allowed"] is True
    assert answer(pod(annotations={"palisade.dev/inject": "false"}), ENABLED, settings)["allowed"]


async def test_the_webhook_gives_pods_the_keys_of_its_key_source_as_they_change() -> None:
    source = StaticKeys()
    source.state = KeyState((), "ConfigMap palisade/palisade-distributor-keys does not exist yet")
    webhook = Webhook(
        InjectionSettings(native_sidecar="never", sidecar=DISTRIBUTOR),
        StaticNamespaces({"payments": ENABLED}),
        keys=source,
    )
    refused = (await webhook.review(review(pod())))["response"]
    assert refused["allowed"] is False
    assert "does not exist yet" in refused["status"]["message"]
    source.state = KeyState((KEY,))  # the distributor published its key
    doc = await webhook.review(review(pod()))
    assert doc["response"]["allowed"] is True
    side = named(apply_patch(pod(), decode_patch(doc)), "palisade-sidecar")
    env = {e["name"]: e.get("value") for e in side["env"]}
    assert env["PALISADE_TRUSTED_KEY"] == KEY


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_a_namespace_enforcing_baseline_or_restricted_gets_no_packet_filter(level: str) -> None:
    labels = {**REQUIRED, "pod-security.kubernetes.io/enforce": level}
    doc = admission.serve(review(pod()), labels, REGULAR)
    p = apply_patch(pod(), decode_patch(doc))
    assert "initContainers" not in p["spec"]
    assert status(p)["podFirewall"] == f"pod-security-{level}"
    assert any("Pod Security" in w for w in doc["response"]["warnings"])


def test_a_privileged_namespace_keeps_the_packet_filter() -> None:
    labels = {**ENABLED, "pod-security.kubernetes.io/enforce": "privileged"}
    assert named(patched(pod(), labels), "palisade-init")
