"""The chart renders what the injector and the cluster need: `helm lint` / `helm template`."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import pytest

from palisade.bundle.signing import generate_key, public_key_pem
from tests.chart.render import CHART, by_kind, container_env, helm, one, render, values_args

pytestmark = pytest.mark.e2e  # needs the helm binary from scripts/setup.d/40-kube.sh

#: The public half of the distributor's bundle-signing key (any Ed25519 key will do).
PUBLIC_KEY = public_key_pem(generate_key()).decode()

NON_DEFAULT: dict[str, Any] = {
    "fullnameOverride": "gov",
    "image": {"repository": "example.org/palisade", "tag": "9.9.9"},
    "injector": {
        "replicas": 3,
        "failurePolicy": "Fail",
        "timeoutSeconds": 7,
        "excludeNamespaces": ["legacy"],
        "nativeSidecar": "never",
        "portName": "http-mcp",
        "tls": {"extraSANs": ["injector.example.org"]},
        "pdb": {"minAvailable": 2},
    },
    "certManager": {"enabled": True},
    "networkPolicy": {"enabled": True, "namespaces": ["payments", "search"]},
    "distributor": {
        "enabled": False,
        "address": "dist.example.org:9401",
        "publicKeys": [PUBLIC_KEY],
    },
    "nodeAgent": {"enabled": False},
    "starterBundle": {"enabled": False},
    "sidecar": {"port": 9500, "extraArgs": ["--cluster-issuer", "https://kubernetes.default.svc"]},
    "commonLabels": {"team": "platform"},
}


def _lint(values: dict[str, Any] | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        helm("lint", "--strict", str(CHART), *values_args(values, Path(tmp)))


class TestLint:
    def test_the_chart_lints_strictly_with_default_values(self) -> None:
        _lint(None)

    def test_the_chart_lints_strictly_with_every_option_turned(self) -> None:
        _lint(NON_DEFAULT)

    @pytest.mark.parametrize(
        ("values", "complaint"),
        [
            ({"injector": {"replicas": 0}}, "/injector/replicas"),
            ({"injector": {"failurePolicy": "Sometimes"}}, "/injector/failurePolicy"),
            ({"injector": {"timeoutSeconds": 31}}, "/injector/timeoutSeconds"),
            ({"injector": {"nativeSidecar": "maybe"}}, "/injector/nativeSidecar"),
            ({"sidecar": {"port": 70000}}, "/sidecar/port"),
            ({"networkPolicy": {"namespaces": ["Not_A_Name"]}}, "/networkPolicy/namespaces"),
            ({"injectr": {}}, "injectr"),
        ],
    )
    def test_the_schema_refuses_bad_values_with_the_path(
        self, values: dict[str, Any], complaint: str, tmp_path: Path
    ) -> None:
        args = values_args(values, tmp_path)
        result = helm("template", "x", str(CHART), *args, check=False)
        assert result.returncode != 0
        assert complaint in result.stderr


class TestDefaults:
    @pytest.fixture(scope="class")
    @classmethod
    def objects(cls) -> list[dict[str, Any]]:
        return render()

    def test_every_object_is_labelled_and_namespaced_in_the_release(
        self, objects: list[dict[str, Any]]
    ) -> None:
        cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}
        for o in objects:
            assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "palisade"
            if o["kind"] not in cluster_scoped:
                assert o["metadata"]["namespace"] == "palisade", o["kind"]

    def test_the_injector_runs_two_restricted_replicas_with_probes(
        self, objects: list[dict[str, Any]]
    ) -> None:
        dep = one(objects, "Deployment", "palisade-injector")
        assert dep["spec"]["replicas"] == 2
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["httpGet"]["scheme"] == "HTTPS"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["args"] == ["injector"]
        assert c["resources"]["limits"]["memory"]

    def test_a_disruption_budget_keeps_one_injector_up(self, objects: list[dict[str, Any]]) -> None:
        pdb = one(objects, "PodDisruptionBudget")
        dep = one(objects, "Deployment", "palisade-injector")
        assert pdb["spec"]["minAvailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]

    def test_the_webhook_fails_closed_on_mcp_pods_in_labelled_namespaces_only(
        self, objects: list[dict[str, Any]]
    ) -> None:
        (hook,) = one(objects, "MutatingWebhookConfiguration", "palisade-injector")["webhooks"]
        assert hook["failurePolicy"] == "Fail"
        assert hook["sideEffects"] == "None"
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["timeoutSeconds"] == 5
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["rules"] == [
            {
                "operations": ["CREATE", "UPDATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods", "pods/ephemeralcontainers"],
                "scope": "Namespaced",
            }
        ]
        ns_sel = {e["key"]: e for e in hook["namespaceSelector"]["matchExpressions"]}
        assert ns_sel["palisade.dev/inject"] == {
            "key": "palisade.dev/inject",
            "operator": "In",
            "values": ["enabled", "required"],
        }
        excluded = ns_sel["kubernetes.io/metadata.name"]
        assert excluded["operator"] == "NotIn"
        assert set(excluded["values"]) == {
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "palisade",
        }
        assert hook["objectSelector"]["matchExpressions"] == [
            {"key": "palisade.dev/mcp-server", "operator": "Exists"}
        ]
        svc = hook["clientConfig"]["service"]
        assert svc == {
            "name": "palisade-injector",
            "namespace": "palisade",
            "path": "/mutate",
            "port": 443,
        }
        # Self-signed mode: the injector fills caBundle at run time.
        assert "caBundle" not in hook["clientConfig"]

    def test_the_service_reaches_the_webhook_port(self, objects: list[dict[str, Any]]) -> None:
        svc = one(objects, "Service", "palisade-injector")
        dep = one(objects, "Deployment", "palisade-injector")
        assert svc["spec"]["ports"] == [
            {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}
        ]
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
        assert dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"] == "https"

    def test_rbac_grants_only_what_the_injector_uses(self, objects: list[dict[str, Any]]) -> None:
        for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], role
        cluster = one(objects, "ClusterRole", "palisade-injector")["rules"]
        assert {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]} in cluster
        (mwc,) = [r for r in cluster if r["resources"] == ["mutatingwebhookconfigurations"]]
        assert mwc["resourceNames"] == ["palisade-injector"]
        rules = one(objects, "Role", "palisade-injector")["rules"]
        named = [r for r in rules if "resourceNames" in r]
        unnamed = [r for r in rules if "resourceNames" not in r]
        assert unnamed == []  # the chart makes the TLS Secret empty: no create on Secrets
        tls = one(objects, "Secret", "palisade-injector-tls")
        assert "data" not in tls and tls["type"] == "Opaque"
        assert {(r["resources"][0], *r["resourceNames"], *r["verbs"]) for r in named} == {
            ("secrets", "palisade-injector-tls", "get", "update"),
            # the trust ConfigMap it watches by name (field selector metadata.name)
            ("configmaps", "palisade-trust", "get", "list", "watch"),
        }
        binding = one(objects, "RoleBinding", "palisade-injector")
        assert binding["subjects"][0]["name"] == "palisade-injector"

    def test_no_network_policy_or_cert_manager_objects_by_default(
        self, objects: list[dict[str, Any]]
    ) -> None:
        kinds = {o["kind"] for o in objects}
        assert "Certificate" not in kinds and "Issuer" not in kinds
        assert "NetworkPolicy" not in kinds

    def test_the_injector_accepts_every_setting_the_chart_gives_it(
        self, objects: list[dict[str, Any]]
    ) -> None:
        from injector.main import register, settings_from

        env = {
            k: v
            for k, v in container_env(one(objects, "Deployment", "palisade-injector")).items()
            if isinstance(v, str)
        }
        env["POD_NAMESPACE"] = "palisade"
        parser = argparse.ArgumentParser()
        register(parser, env)
        settings = settings_from(parser.parse_args([]))
        assert settings.server.port == 8443
        assert settings.tls.mode == "self-signed"
        assert settings.tls.webhook_config == "palisade-injector"
        assert settings.tls.service_name == "palisade-injector"
        assert settings.tls.secret_name == "palisade-injector-tls"
        assert settings.injection.own_namespace == "palisade"
        assert settings.injection.sidecar.image == "palisade:0.1.0"
        assert settings.injection.sidecar.port == 9400
        assert settings.injection.sidecar.distributor == "palisade-distributor.palisade.svc:9401"
        assert settings.keys.configmap == "palisade-trust"
        assert settings.keys.key == "keys.pem"
        assert settings.injection.sidecar.pod_firewall is True
        assert settings.injection.sidecar.extra_args == ()
        known = {a.dest for a in parser._actions}
        assert {"listen", "tls_mode", "sidecar_image"} <= known


class TestNonDefaults:
    @pytest.fixture(scope="class")
    @classmethod
    def objects(cls) -> list[dict[str, Any]]:
        return render(NON_DEFAULT, release="gov", namespace="governance")

    def test_cert_manager_issues_the_certificate_and_fills_the_ca_bundle(
        self, objects: list[dict[str, Any]]
    ) -> None:
        cert = one(objects, "Certificate", "gov-injector")
        assert cert["spec"]["secretName"] == "gov-injector-tls"
        assert "gov-injector.governance.svc" in cert["spec"]["dnsNames"]
        assert "injector.example.org" in cert["spec"]["dnsNames"]
        assert cert["spec"]["issuerRef"]["name"] == one(objects, "Issuer")["metadata"]["name"]
        mwc = one(objects, "MutatingWebhookConfiguration")
        assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            "governance/gov-injector"
        )
        dep = one(objects, "Deployment", "gov-injector")
        env = container_env(dep)
        assert env["PALISADE_INJECTOR_TLS_MODE"] == "mounted"
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == "gov-injector-tls"
        # No Secret write access and no caBundle patching in cert-manager mode.
        assert by_kind(objects, "Role") == []
        (mwc_rule,) = [r for r in one(objects, "ClusterRole")["rules"] if "resourceNames" in r]
        assert "patch" not in mwc_rule["verbs"]

    def test_an_existing_issuer_is_used_instead_of_a_self_signed_one(self) -> None:
        values = {
            "certManager": {"enabled": True, "issuerRef": {"name": "corp", "kind": "ClusterIssuer"}}
        }
        objects = render(values)
        assert by_kind(objects, "Issuer") == []
        assert one(objects, "Certificate")["spec"]["issuerRef"] == {
            "name": "corp",
            "kind": "ClusterIssuer",
            "group": "cert-manager.io",
        }

    def test_network_policies_admit_only_the_sidecar_port_in_each_namespace(
        self, objects: list[dict[str, Any]]
    ) -> None:
        policies = {
            (p["metadata"]["namespace"], p["metadata"]["name"]): p
            for p in by_kind(objects, "NetworkPolicy")
        }
        for ns in ("payments", "search"):
            p = policies[(ns, "gov-mcp-via-sidecar")]
            assert p["spec"]["podSelector"]["matchExpressions"] == [
                {"key": "palisade.dev/mcp-server", "operator": "Exists"}
            ]
            assert p["spec"]["policyTypes"] == ["Ingress"]
            assert p["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9500}]}]
        injector = policies[("governance", "gov-injector")]
        assert injector["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8443}]}]

    def test_values_reach_the_injector_and_the_webhook(self, objects: list[dict[str, Any]]) -> None:
        dep = one(objects, "Deployment", "gov-injector")
        assert dep["spec"]["replicas"] == 3
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert c["image"] == "example.org/palisade:9.9.9"
        env = container_env(dep)
        assert env["PALISADE_SIDECAR_IMAGE"] == "example.org/palisade:9.9.9"
        assert env["PALISADE_NATIVE_SIDECAR"] == "never"
        assert env["PALISADE_PORT_NAME"] == "http-mcp"
        assert env["PALISADE_SIDECAR_PORT"] == "9500"
        assert env["PALISADE_DISTRIBUTOR"] == "dist.example.org:9401"
        assert env["PALISADE_INJECTOR_EXTRA_SANS"] == "injector.example.org"
        (hook,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
        assert hook["timeoutSeconds"] == 7
        excluded = hook["namespaceSelector"]["matchExpressions"][1]["values"]
        assert {"legacy", "governance", "kube-system"} <= set(excluded)
        assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
        assert dep["metadata"]["labels"]["team"] == "platform"

    def test_an_enabled_distributor_is_found_through_its_service_name(self) -> None:
        values = {
            "distributor": {
                "enabled": True,
                "signingKeySecret": "palisade-keys",
                "publicKeys": [PUBLIC_KEY],
            }
        }
        env = container_env(one(render(values), "Deployment", "palisade-injector"))
        assert env["PALISADE_DISTRIBUTOR"] == "palisade-distributor.palisade.svc:9401"

    def test_the_injector_can_be_left_out(self) -> None:
        objects = render({"injector": {"enabled": False}})
        assert not [o for o in objects if o["metadata"]["name"].endswith("-injector")]

    def test_notes_tell_the_next_step(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = helm(
                "install",
                "palisade",
                str(CHART),
                "-n",
                "palisade",
                "--dry-run=client",
                *values_args(
                    {"networkPolicy": {"enabled": True, "namespaces": ["payments"]}}, Path(tmp)
                ),
            ).stdout
        assert "kubectl label namespace <your-namespace> palisade.dev/inject=enabled" in out
        assert "palisade.dev/mcp-server: <registry-name>" in out
        assert "payments" in out

    def test_notes_point_at_the_distributor_and_node_agent_when_enabled(self) -> None:
        values = {
            "distributor": {
                "enabled": True,
                "signingKeySecret": "palisade-keys",
                "publicKeys": [PUBLIC_KEY],
            },
            "nodeAgent": {"enabled": True},
        }
        with tempfile.TemporaryDirectory() as tmp:
            out = helm(
                "install",
                "palisade",
                str(CHART),
                "-n",
                "palisade",
                "--dry-run=client",
                *values_args(values, Path(tmp)),
            ).stdout
        objects = render(values)
        assert one(objects, "Deployment", "palisade-distributor")
        assert one(objects, "DaemonSet", "palisade-nodeagent")
        assert "rollout status deploy/palisade-distributor" in out
        assert "palisade-distributor.palisade.svc:9401" in out
        assert "get ds palisade-nodeagent" in out
        assert "No distributor" not in out
