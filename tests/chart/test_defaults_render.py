"""The chart's defaults render a governed install: the distributor with a generated key,
a starter bundle that denies, sidecar identity and firewall wired, the node agent on,
one-replica SQLite unless a shared volume exists, and restricted pods everywhere."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from distributor.compiler import CompileError, compile_bundle, scope_for
from distributor.sources import cr_source_name, cr_to_yaml
from tests.chart.render import CHART, by_kind, container_env, helm, one, render, values_args

pytestmark = pytest.mark.e2e  # needs the helm binary from scripts/setup.d/40-kube.sh

SIGNING = "palisade-distributor-signing"
TRUST = "palisade-trust"


def _template(values: dict[str, Any]) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        return helm(
            "template", "palisade", str(CHART), "-n", "palisade",
            *values_args(values, Path(tmp)), check=False,
        )  # fmt: skip


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _args(obj: dict[str, Any]) -> list[str]:
    args: list[str] = _pod(obj)["containers"][0]["args"]
    return args


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render()


class TestTheDistributorIsOnWithAGeneratedKey:
    def test_it_runs_by_default_and_reads_its_key_from_the_charts_secret(
        self, objects: list[dict[str, Any]]
    ) -> None:
        dep = one(objects, "Deployment", "palisade-distributor")
        args = _args(dep)
        assert f"--signing-key-secret={SIGNING}" in args
        assert f"--trust-configmap={TRUST}" in args
        assert not [a for a in args if a.startswith("--signing-key=")]
        env = container_env(dep)
        assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        assert _pod(dep)["automountServiceAccountToken"] is True

    def test_the_secret_and_the_config_map_are_created_empty(
        self, objects: list[dict[str, Any]]
    ) -> None:
        secret = one(objects, "Secret", SIGNING)
        assert secret["type"] == "Opaque"
        assert "data" not in secret and "stringData" not in secret
        assert "data" not in one(objects, "ConfigMap", TRUST)

    def test_the_whole_chart_renders_the_same_every_time_so_gitops_sees_no_drift(self) -> None:
        # helm template, as Argo CD renders: lookup finds nothing, so nothing may come from
        # it or from randomness; with every optional feature on as well as with defaults.
        everything = {
            "certManager": {"enabled": True},
            "networkPolicy": {"enabled": True, "namespaces": ["team-a"]},
            "distributor": {
                "replicas": 2,
                "persistence": {"enabled": True, "accessMode": "ReadWriteMany"},
            },
            "injector": {"replicas": 3},
            "crds": {"templated": True},
            "global": {"openshift": True},
        }
        assert render() == render()
        assert render(everything) == render(everything)
        for template in (CHART / "templates").glob("*.yaml"):
            text = template.read_text()
            for function in ("lookup ", "randAlphaNum", "genPrivateKey", "genCA", "uuidv4", " now"):
                assert function not in text, f"{template.name} uses {function.strip()}"

    def test_they_render_the_same_every_time_so_gitops_sees_no_drift(self) -> None:
        def keyed(objs: list[dict[str, Any]]) -> list[Any]:
            return [
                o for o in objs if o["metadata"]["name"] in (SIGNING, TRUST, "palisade-starter")
            ]

        assert keyed(render()) == keyed(render())
        text = (CHART / "templates" / "distributor-keys.yaml").read_text()
        for function in ("lookup ", "randAlphaNum", "genPrivateKey", "uuidv4"):
            assert function not in text, function

    def test_its_rbac_is_get_update_patch_on_the_two_names_and_no_create(
        self, objects: list[dict[str, Any]]
    ) -> None:
        role = one(objects, "Role", "palisade-distributor-keys")
        assert role["rules"] == [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [SIGNING],
                "verbs": ["get", "update", "patch"],
            },
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["palisade-distributor-admin"],
                "verbs": ["get", "update", "patch"],
            },
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [TRUST],
                "verbs": ["get", "update", "patch"],
            },
        ]
        binding = one(objects, "RoleBinding", "palisade-distributor-keys")
        assert binding["roleRef"]["name"] == "palisade-distributor-keys"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "palisade-distributor", "namespace": "palisade"}
        ]

    def test_an_operators_own_secrets_are_mounted_and_no_secret_is_created_or_writable(
        self,
    ) -> None:
        objects = render(
            {"distributor": {"signingKeySecret": "corp-signing", "adminTokenSecret": "corp-admin"}}
        )
        dep = one(objects, "Deployment", "palisade-distributor")
        assert "--signing-key=/etc/palisade/signing/signing.pem" in _args(dep)
        volumes = {v["name"]: v for v in _pod(dep)["volumes"]}
        assert volumes["signing"]["secret"]["secretName"] == "corp-signing"
        assert volumes["admin"]["secret"]["secretName"] == "corp-admin"
        assert not [a for a in _args(dep) if a.startswith("--admin-token-secret")]
        assert not [o for o in by_kind(objects, "Secret") if "distributor" in o["metadata"]["name"]]
        rules = one(objects, "Role", "palisade-distributor-keys")["rules"]
        assert [r["resources"] for r in rules] == [["configmaps"]]

    def test_the_distributor_has_a_writable_tmp_and_resources(
        self, objects: list[dict[str, Any]]
    ) -> None:
        dep = one(objects, "Deployment", "palisade-distributor")
        (c,) = _pod(dep)["containers"]
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]


class TestTheStarterBundle:
    def test_a_deny_by_default_bundle_ships_in_the_release_namespace(
        self, objects: list[dict[str, Any]]
    ) -> None:
        pb = one(objects, "PolicyBundle", "palisade-starter")
        assert pb["apiVersion"] == "palisade.dev/v1alpha1"
        assert pb["metadata"]["namespace"] == "palisade"
        assert pb["spec"] == {"defaultDecision": "deny"}

    def test_it_compiles_and_gives_every_client_a_bundle_that_denies(
        self, objects: list[dict[str, Any]]
    ) -> None:
        pb = one(objects, "PolicyBundle", "palisade-starter")
        compiled = compile_bundle([(cr_source_name(pb), cr_to_yaml(pb))])
        sidecar = scope_for(compiled.document, "sidecar:kubernetes-mcp")
        assert sidecar["spec"]["defaultDecision"] == "deny"
        assert sidecar["spec"]["servers"] == [] and sidecar["spec"]["rules"] == []
        assert scope_for(compiled.document, "node")["spec"] == {"tenants": []}

    def test_a_teams_bundle_merges_with_it_and_its_rules_decide(
        self, objects: list[dict[str, Any]]
    ) -> None:
        pb = one(objects, "PolicyBundle", "palisade-starter")
        team = {
            "apiVersion": "palisade.dev/v1alpha1",
            "kind": "PolicyBundle",
            "metadata": {"name": "payments", "namespace": "payments"},
            "spec": {
                "servers": [{"name": "kubernetes-mcp", "tools": [{"name": "pods_log"}]}],
                "rules": [{"id": "logs", "match": {"tools": ["pods_log"]}, "decision": "allow"}],
            },
        }
        compiled = compile_bundle([(cr_source_name(o), cr_to_yaml(o)) for o in (team, pb)])
        spec = scope_for(compiled.document, "sidecar:kubernetes-mcp")["spec"]
        assert spec["defaultDecision"] == "deny"
        assert [r["id"] for r in spec["rules"]] == ["logs"]
        allow = {**team, "spec": {**team["spec"], "defaultDecision": "allow"}}
        with pytest.raises(CompileError, match="conflicts"):
            compile_bundle([(cr_source_name(o), cr_to_yaml(o)) for o in (allow, pb)])

    def test_it_can_be_left_out(self) -> None:
        assert by_kind(render({"starterBundle": {"enabled": False}}), "PolicyBundle") == []

    def test_it_follows_a_watched_namespace(self) -> None:
        pb = one(render({"distributor": {"watchNamespace": "policy"}}), "PolicyBundle")
        assert pb["metadata"]["namespace"] == "policy"

    def test_in_files_mode_the_policy_files_are_the_whole_policy(self) -> None:
        values = {"distributor": {"source": "files", "policyFiles": {"team.yaml": "kind: X"}}}
        objects = render(values)
        assert by_kind(objects, "PolicyBundle") == []
        cm = one(objects, "ConfigMap", "palisade-distributor-policies")
        assert set(cm["data"]) == {"team.yaml"}


class TestSidecarDefaults:
    def test_the_injector_gets_the_distributor_the_trust_config_map_and_no_extra_args(
        self, objects: list[dict[str, Any]]
    ) -> None:
        env = container_env(one(objects, "Deployment", "palisade-injector"))
        assert env["PALISADE_DISTRIBUTOR"] == "palisade-distributor.palisade.svc:9401"
        assert env["PALISADE_SIDECAR_TRUSTED_KEYS_CONFIGMAP"] == TRUST
        assert env["PALISADE_POD_FIREWALL"] == "enabled"
        assert "PALISADE_SIDECAR_EXTRA_ARGS" not in env
        # empty values leave the injector's own defaults in force
        assert "PALISADE_SIDECAR_AUDIENCE_TEMPLATE" not in env
        assert "PALISADE_SIDECAR_IDENTITY" not in env

    def test_identity_and_firewall_values_reach_the_injector(self) -> None:
        values = {
            "sidecar": {
                "identity": {
                    "audience": "https://mcp.example/{namespace}/{server}",
                    "mode": "none",
                },
                "podFirewall": False,
            }
        }
        env = container_env(one(render(values), "Deployment", "palisade-injector"))
        assert (
            env["PALISADE_SIDECAR_AUDIENCE_TEMPLATE"] == "https://mcp.example/{namespace}/{server}"
        )
        assert env["PALISADE_SIDECAR_IDENTITY"] == "none"
        assert env["PALISADE_POD_FIREWALL"] == "disabled"

    def test_the_injector_parses_them_into_its_settings(self) -> None:
        import argparse

        from injector.main import register, settings_from

        values = {"sidecar": {"identity": {"audience": "aud/{server}"}, "podFirewall": False}}
        env = container_env(one(render(values), "Deployment", "palisade-injector"))
        parser = argparse.ArgumentParser()
        register(parser, {k: v for k, v in env.items() if isinstance(v, str)})
        sidecar = settings_from(parser.parse_args([])).injection.sidecar
        assert sidecar.audience_template == "aud/{server}"
        assert sidecar.pod_firewall is False


class TestTheNodeAgent:
    def test_it_runs_by_default_in_auto_mode_trusting_the_optional_trust_config_map(
        self, objects: list[dict[str, Any]]
    ) -> None:
        ds = one(objects, "DaemonSet", "palisade-nodeagent")
        env = container_env(ds)
        assert env["PALISADE_NODEAGENT_BACKEND"] == "auto"
        assert env["PALISADE_NODEAGENT_DISTRIBUTORS"] == "palisade-distributor.palisade.svc:9401"
        assert "--trusted-key=/etc/palisade/trusted" in _args(ds)
        volumes = {v["name"]: v for v in _pod(ds)["volumes"]}
        assert volumes["trusted-keys"]["configMap"] == {
            "name": TRUST,
            "optional": True,
            "items": [{"key": "keys.pem", "path": "keys.pem"}],
        }

    def test_a_trusted_keys_secret_replaces_the_config_map(self) -> None:
        ds = one(render({"nodeAgent": {"trustedKeysSecret": "keys"}}), "DaemonSet")
        volumes = {v["name"]: v for v in _pod(ds)["volumes"]}
        assert volumes["trusted-keys"] == {"name": "trusted-keys", "secret": {"secretName": "keys"}}

    def test_without_a_distributor_it_trusts_nothing_and_dials_nothing(self) -> None:
        ds = one(render({"distributor": {"enabled": False}}), "DaemonSet")
        assert "PALISADE_NODEAGENT_DISTRIBUTORS" not in container_env(ds)
        assert not [a for a in _args(ds) if a.startswith("--trusted-key")]


class TestPersistence:
    def test_one_replica_on_a_default_storage_class_pvc_recreated_on_updates(
        self, objects: list[dict[str, Any]]
    ) -> None:
        pvc = one(objects, "PersistentVolumeClaim", "palisade-distributor-store")
        assert "storageClassName" not in pvc["spec"]
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        dep = one(objects, "Deployment", "palisade-distributor")
        assert dep["spec"]["replicas"] == 1
        assert dep["spec"]["strategy"] == {"type": "Recreate"}

    @pytest.mark.parametrize(
        "persistence",
        [{}, {"enabled": False}, {"accessMode": "ReadWriteOncePod"}],
        ids=["rwo", "emptydir", "rwop"],
    )
    def test_several_replicas_without_a_shared_volume_are_refused_with_the_fix(
        self, persistence: dict[str, Any]
    ) -> None:
        result = _template({"distributor": {"replicas": 2, "persistence": persistence}})
        assert result.returncode != 0
        assert "distributor.replicas=2 needs one store shared by every replica" in result.stderr
        assert "accessMode=ReadWriteMany" in result.stderr

    def test_several_replicas_on_a_shared_volume_roll(self) -> None:
        values = {"distributor": {"replicas": 3, "persistence": {"accessMode": "ReadWriteMany"}}}
        dep = one(render(values), "Deployment", "palisade-distributor")
        assert dep["spec"]["replicas"] == 3
        assert "strategy" not in dep["spec"]


class TestSecurityEverywhere:
    def test_every_pod_is_restricted_and_says_whether_it_needs_a_token(
        self, objects: list[dict[str, Any]]
    ) -> None:
        workloads = by_kind(objects, "Deployment") + by_kind(objects, "DaemonSet")
        assert {w["metadata"]["name"] for w in workloads} == {
            "palisade-injector",
            "palisade-distributor",
            "palisade-nodeagent",
        }
        for w in workloads:
            pod = _pod(w)
            name = w["metadata"]["name"]
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert isinstance(pod["automountServiceAccountToken"], bool), name
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False, name
                assert sc["readOnlyRootFilesystem"] is True, name
                assert sc["capabilities"]["drop"] == ["ALL"], name
                assert c["resources"]["limits"]["memory"], name
            if name != "palisade-nodeagent":  # root for the kubelet's PodResources socket
                assert pod["securityContext"]["runAsNonRoot"] is True, name
                assert pod["containers"][0]["securityContext"]["runAsNonRoot"] is True, name

    def test_no_role_grants_wildcards_or_unnamed_secret_access_beyond_the_injectors_create(
        self, objects: list[dict[str, Any]]
    ) -> None:
        for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], role
                if "secrets" in rule["resources"] and "resourceNames" not in rule:
                    assert role["metadata"]["name"] == "palisade-injector", role
                    assert rule["verbs"] == ["create"]
                if role["kind"] == "ClusterRole":
                    assert "secrets" not in rule["resources"], role
                    assert "configmaps" not in rule["resources"], role


class TestNotes:
    def test_the_notes_tell_every_next_step_and_every_changed_default(self) -> None:
        out = helm("install", "palisade", str(CHART), "-n", "palisade", "--dry-run=client").stdout
        notes = out[out.index("NOTES:") :]
        for text in (
            "kubectl label namespace <your-namespace> palisade.dev/inject=enabled",
            "palisade.dev/mcp-server: <registry-name>",
            "kubectl -n payments create token sre-agent",
            "--audience palisade.dev/mcp/payments/kubernetes-mcp",
            "palisade fleet sidecars",
            "palisade fleet nodes",
            f"generates its Ed25519 signing key into the (empty) Secret\n{SIGNING}",
            "the starter bundle palisade-starter denies every tool call",
            "palisade-init, NET_ADMIN",
            "default StorageClass",
            "no-GPU mode",
        ):
            assert text in notes, text


class TestTheSchema:
    @pytest.mark.parametrize(
        ("values", "complaint"),
        [
            ({"starterBundle": {"enabled": "yes"}}, "/starterBundle/enabled"),
            ({"starterBundle": {"decision": "allow"}}, "decision"),
            ({"distributor": {"source": "git"}}, "/distributor/source"),
            ({"distributor": {"signingKey": "x"}}, "signingKey"),
            ({"distributor": {"persistence": {"accessMode": "Sometimes"}}}, "accessMode"),
            ({"nodeAgent": {"backend": "gpu"}}, "/nodeAgent/backend"),
            ({"nodeAgent": {"trustedKeys": "x"}}, "trustedKeys"),
            ({"sidecar": {"identity": {"mode": "maybe"}}}, "/sidecar/identity/mode"),
            ({"sidecar": {"podFirewall": "on"}}, "/sidecar/podFirewall"),
        ],
    )
    def test_bad_values_are_refused_with_the_path(
        self, values: dict[str, Any], complaint: str
    ) -> None:
        result = _template(values)
        assert result.returncode != 0
        assert complaint in result.stderr

    def test_every_default_value_is_described_by_the_schema(self) -> None:
        import json

        schema = json.loads((CHART / "values.schema.json").read_text())
        values = yaml.safe_load((CHART / "values.yaml").read_text())

        def walk(v: Any, s: dict[str, Any], path: str) -> None:
            if not isinstance(v, dict) or "properties" not in s:
                return
            for key, sub in v.items():
                assert key in s["properties"], f"{path}.{key} is not in values.schema.json"
                walk(sub, s["properties"][key], f"{path}.{key}")

        walk(values, schema, "")


class TestDisruptionBudgetsAndOpenShift:
    @pytest.mark.parametrize("component", ["injector", "distributor"])
    def test_a_budget_only_when_there_is_more_than_one_replica(self, component: str) -> None:
        name = f"palisade-{component}"
        extra: dict[str, Any] = {"persistence": {"enabled": True, "accessMode": "ReadWriteMany"}}
        values: dict[str, Any] = {"distributor": extra} if component == "distributor" else {}

        def budgets(replicas: int) -> list[dict[str, Any]]:
            merged = {**values, component: {**values.get(component, {}), "replicas": replicas}}
            found = by_kind(render(merged), "PodDisruptionBudget")
            return [b for b in found if b["metadata"]["name"] == name]

        assert budgets(1) == [], "a budget over one pod would block every node drain"
        (pdb,) = budgets(3)
        assert pdb["spec"]["minAvailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component

    def test_openshift_mode_fixes_no_uid_and_stays_restricted(self) -> None:
        def contexts(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
            objs = render(values)
            return {
                d["metadata"]["name"]: d["spec"]["template"]["spec"]
                for d in by_kind(objs, "Deployment")
            }

        default = contexts({})
        assert {p["securityContext"]["runAsUser"] for p in default.values()} == {65532}
        for name, pod in contexts({"global": {"openshift": True}}).items():
            ctx = pod["securityContext"]
            assert not {"runAsUser", "runAsGroup", "fsGroup"} & ctx.keys(), name
            assert ctx["runAsNonRoot"] is True and ctx["seccompProfile"]["type"] == "RuntimeDefault"
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == [
                    "ALL"
                ]
                assert "runAsUser" not in sc, f"{name}/{c['name']}"

    def test_a_mistyped_key_is_refused_in_every_section(self) -> None:
        import json

        schema = json.loads((CHART / "values.schema.json").read_text())
        sections = [k for k, v in schema["properties"].items() if v.get("type") == "object"]
        sections = [s for s in sections if s not in ("global", "commonLabels")]
        assert {"distributor", "nodeAgent", "injector", "sidecar"} <= set(sections)
        for section in sections:
            with tempfile.TemporaryDirectory() as tmp:
                args = values_args({section: {"enabeld": True}}, Path(tmp))
                result = helm("template", "palisade", str(CHART), *args, check=False)
            assert result.returncode != 0, section
            assert "enabeld" in result.stderr, (section, result.stderr)


def test_the_templated_crd_is_the_one_in_crds_and_is_kept_on_uninstall() -> None:
    assert not [o for o in render() if o["kind"] == "CustomResourceDefinition"]
    (crd,) = by_kind(render({"crds": {"templated": True}}), "CustomResourceDefinition")
    shipped = yaml.safe_load((CHART / "crds" / "policybundles.palisade.dev.yaml").read_text())
    assert crd["spec"] == shipped["spec"], "one source for both"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["name"] == "policybundles.palisade.dev"


def test_helm_test_asks_each_component_with_no_rights_and_no_secret_but_a_ca() -> None:
    (pod,) = [o for o in render() if o["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    script = spec["containers"][0]["args"][0]
    assert "palisade-injector.palisade.svc:443/readyz" in script
    assert "http://palisade-distributor.palisade.svc:9402/readyz" in script
    (ca,) = spec["volumes"]
    assert ca["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], "never the key"
