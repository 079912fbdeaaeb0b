"""What the injected pod looks like: sidecar, ports, probes, volumes, env, security."""

from __future__ import annotations

import json
from typing import Any

import pytest

from injector import admission
from injector.review import decode_patch
from injector.settings import InjectionSettings, SidecarSettings
from palisade.bundle.signing import generate_key, public_key_pem
from tests.injector.pods import ENABLED, apply_patch, container, pod, review

PUBLIC_KEY = public_key_pem(generate_key()).decode().strip()


def inject(obj: dict[str, Any], settings: InjectionSettings | None = None) -> dict[str, Any]:
    settings = settings or InjectionSettings(native_sidecar="never")
    answer = admission.serve(review(obj), {**ENABLED, "palisade.dev/tenant": "acme"}, settings)
    assert answer["response"]["allowed"] is True
    return apply_patch(obj, decode_patch(answer))


def sidecar_of(patched: dict[str, Any]) -> dict[str, Any]:
    spec = patched["spec"]
    found = [
        c
        for c in spec["containers"] + spec.get("initContainers", [])
        if c["name"] == "palisade-sidecar"
    ]
    assert len(found) == 1
    return found[0]


def test_the_sidecar_takes_over_the_named_port_and_forwards_to_the_original_on_loopback() -> None:
    patched = inject(pod(container("app", ("mcp", 8080))))
    app, side = patched["spec"]["containers"][0], sidecar_of(patched)
    assert app["ports"] == [{"containerPort": 8080}]
    assert side["ports"] == [{"name": "mcp", "containerPort": 9400, "protocol": "TCP"}]
    args = side["args"]
    assert args[0] == "sidecar"
    assert args[args.index("--listen") + 1] == "0.0.0.0:9400"
    assert args[args.index("--upstream") + 1] == "http://127.0.0.1:8080"
    assert args[args.index("--server-name") + 1] == "kubernetes-mcp"
    assert side["command"] == ["palisade"]


def test_the_sidecar_port_moves_up_when_the_pod_already_uses_it() -> None:
    patched = inject(pod(container("app", ("mcp", 9400), ("admin", 9401))))
    side = sidecar_of(patched)
    assert side["ports"][0]["containerPort"] == 9402
    assert "http://127.0.0.1:9400" in side["args"]


def test_a_pod_annotation_chooses_the_sidecar_port() -> None:
    patched = inject(pod(annotations={"palisade.dev/sidecar-port": "7000"}))
    assert sidecar_of(patched)["ports"][0]["containerPort"] == 7000


def test_without_a_named_port_the_single_declared_port_is_the_upstream() -> None:
    obj = pod(container("app", (None, 3000)))
    answer = admission.serve(review(obj), ENABLED, InjectionSettings(native_sidecar="never"))
    assert any("no port named 'mcp'" in w for w in answer["response"]["warnings"])
    side = sidecar_of(apply_patch(obj, decode_patch(answer)))
    assert "http://127.0.0.1:3000" in side["args"]


def test_without_any_port_the_default_upstream_is_used() -> None:
    settings = InjectionSettings(
        native_sidecar="never", sidecar=SidecarSettings(default_upstream_port=8765)
    )
    side = sidecar_of(inject(pod(container("app")), settings))
    assert "http://127.0.0.1:8765" in side["args"]


def test_native_mode_adds_an_init_container_with_restart_policy_always() -> None:
    patched = inject(
        pod(initContainers=[{"name": "migrate", "image": "m:1"}]),
        InjectionSettings(native_sidecar="always"),
    )
    inits = patched["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["palisade-init", "palisade-sidecar", "migrate"]
    assert inits[1]["restartPolicy"] == "Always"
    assert "restartPolicy" not in inits[0], "the packet filter runs once, before the sidecar"
    assert [c["name"] for c in patched["spec"]["containers"]] == ["app"]


def test_regular_mode_adds_a_container_without_restart_policy() -> None:
    patched = inject(pod())
    side = patched["spec"]["containers"][-1]
    assert side["name"] == "palisade-sidecar"
    assert "restartPolicy" not in side


@pytest.mark.parametrize(
    ("mode", "supported", "native"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("always", False, True),
        ("never", True, False),
    ],
)
def test_native_sidecar_mode_follows_the_cluster_unless_overridden(
    mode: str, supported: bool, native: bool
) -> None:
    settings = InjectionSettings(native_sidecar=mode, cluster_supports_native=supported)  # type: ignore[arg-type]
    patched = inject(pod(), settings)
    in_init = any(
        c["name"] == "palisade-sidecar" for c in patched["spec"].get("initContainers", [])
    )
    assert in_init is native


def test_the_sidecar_runs_restricted() -> None:
    sc = sidecar_of(inject(pod()))["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_sidecar_has_probes_resources_and_downward_api_env() -> None:
    side = sidecar_of(inject(pod()))
    assert side["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9400, "scheme": "HTTP"}
    assert side["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert side["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert side["resources"]["limits"]["memory"] == "256Mi"
    env = {e["name"]: e for e in side["env"]}
    fields = {
        name: e["valueFrom"]["fieldRef"]["fieldPath"] for name, e in env.items() if "valueFrom" in e
    }
    assert fields["PALISADE_POD_NAME"] == "metadata.name"
    assert fields["PALISADE_POD_NAMESPACE"] == "metadata.namespace"
    assert fields["PALISADE_POD_UID"] == "metadata.uid"
    assert fields["PALISADE_NODE_NAME"] == "spec.nodeName"
    assert fields["PALISADE_SERVICE_ACCOUNT"] == "spec.serviceAccountName"
    assert env["PALISADE_TENANT"]["value"] == "acme"
    assert env["PALISADE_MCP_SERVER"]["value"] == "kubernetes-mcp"


def test_socket_and_bundle_cache_volumes_are_added_and_shared_with_the_mcp_container() -> None:
    patched = inject(pod())
    volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
    assert volumes["palisade-socket"]["emptyDir"]["medium"] == "Memory"
    assert "palisade-bundle-cache" in volumes
    side_mounts = {m["name"]: m["mountPath"] for m in sidecar_of(patched)["volumeMounts"]}
    assert side_mounts["palisade-socket"] == "/var/run/palisade"
    assert side_mounts["palisade-bundle-cache"] == "/var/lib/palisade/bundles"
    app_mounts = patched["spec"]["containers"][0]["volumeMounts"]
    assert app_mounts == [
        {"name": "palisade-socket", "mountPath": "/var/run/palisade", "readOnly": True}
    ]


def test_the_service_account_token_mount_of_the_mcp_container_is_reused() -> None:
    token = {
        "name": "kube-api-access-x7",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": True,
    }
    volume = {
        "name": "kube-api-access-x7",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace"}]}},
            ]
        },
    }
    app = container("app", ("mcp", 8080), volumeMounts=[token])
    side = sidecar_of(inject(pod(app, volumes=[volume])))
    assert token in side["volumeMounts"]


def test_a_volume_of_the_mcp_container_at_the_token_path_is_not_shared_with_the_sidecar() -> None:
    # The MCP container can write an emptyDir: it would hand the sidecar its own CA and token.
    token = {"name": "fake", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    obj = pod(
        container("app", ("mcp", 8080), volumeMounts=[token]),
        volumes=[{"name": "fake", "emptyDir": {}}],
    )
    answer = admission.serve(review(obj), ENABLED, InjectionSettings(native_sidecar="never"))
    side = sidecar_of(apply_patch(obj, decode_patch(answer)))
    assert all(m["name"] != "fake" for m in side["volumeMounts"])
    assert any("not a ServiceAccount token volume" in w for w in answer["response"]["warnings"])


def test_the_status_annotation_says_what_was_injected() -> None:
    patched = inject(pod(annotations={"team": "sre"}))
    annotations = patched["metadata"]["annotations"]
    assert annotations["team"] == "sre"
    status = json.loads(annotations["palisade.dev/status"])
    assert status == {
        "state": "injected",
        "version": 1,
        "app": "app",
        "container": "palisade-sidecar",
        "mode": "container",
        "port": 9400,
        "portName": "mcp",
        "upstream": 8080,
        "audience": "palisade.dev/mcp/payments/kubernetes-mcp",
        "podFirewall": "enabled",
    }


def test_a_distributor_and_extra_arguments_are_passed_to_the_sidecar() -> None:
    settings = InjectionSettings(
        native_sidecar="never",
        sidecar=SidecarSettings(
            distributor="palisade-distributor.palisade:7070",
            trusted_keys=(PUBLIC_KEY,),
            extra_args=("--log-level", "debug"),
        ),
    )
    side = sidecar_of(inject(pod(), settings))
    env = {e["name"]: e.get("value") for e in side["env"]}
    assert env["PALISADE_DISTRIBUTOR"] == "palisade-distributor.palisade:7070"
    assert side["args"][-2:] == ["--log-level", "debug"]


def test_a_generated_pod_name_is_fine() -> None:
    obj = pod(name="")
    del obj["metadata"]["name"]
    obj["metadata"]["generateName"] = "mcp-7f9c-"
    sidecar_of(inject(obj))
