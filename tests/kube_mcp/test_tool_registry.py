"""The example bundle registers exactly the tools the real kubernetes-mcp-server lists.

The server is the pinned binary (scripts/setup.d/52-kubernetes-mcp-server.sh), run as
its image runs it (config, toolsets) with a kubeconfig that names no credential and an
unreachable cluster: ``tools/list`` needs no cluster. A new server version that adds,
renames or drops a tool fails here until the bundle's registry follows it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from images import definition
from palisade.bundle.globs import compile_globs
from palisade.bundle.load import load_file
from palisade.policy.types import Risk
from tests.kube_mcp.server import (
    REPO,
    SETUP_STEP,
    KubeMcpServer,
    binary,
    kubeconfig_without_credentials,
    messages,
    post,
    session,
    tools_list,
)

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples/payments-bundle.yaml"
SERVER = "kubernetes-mcp"


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """The real server's tools/list, by name (any bearer token: nothing is checked)."""
    work = tmp_path_factory.mktemp("kube-mcp")
    kubeconfig = kubeconfig_without_credentials(work / "kubeconfig", "https://127.0.0.1:1")
    with KubeMcpServer(work, kubeconfig) as server:
        headers = session(server.url, {"Authorization": "Bearer not-checked-for-tools-list"})
        return {t["name"]: t for t in tools_list(server.url, headers)}


def registered() -> dict[str, object]:
    server = load_file(EXAMPLE).server(SERVER)
    assert server is not None
    return {t.name: t for t in server.tools}


def test_every_listed_tool_is_registered_in_the_example_bundle(
    listed: dict[str, dict[str, object]],
) -> None:
    missing = sorted(set(listed) - set(registered()))
    assert missing == [], f"register these in {EXAMPLE.name} (with a risk class): {missing}"


def test_every_registered_tool_is_one_the_server_lists(
    listed: dict[str, dict[str, object]],
) -> None:
    unknown = sorted(set(registered()) - set(listed))
    assert unknown == [], f"the server no longer lists (renamed or dropped?): {unknown}"


def test_every_tool_returning_cluster_data_is_quarantined() -> None:
    # every tool of this server returns what workloads wrote (logs, events,
    # manifests, annotations, command output): all of it is untrusted output
    assert all(t.untrusted_output for t in registered().values())  # type: ignore[attr-defined]


def test_no_tool_the_server_says_writes_is_registered_as_a_read(
    listed: dict[str, dict[str, object]],
) -> None:
    # the bundle may rank a tool higher than the server's hints (resources_scale and
    # resources_create_or_update, hinted destructive, are writes limited to the
    # agent's namespace), never lower: a read is allowed everywhere
    tools = registered()
    for name, tool in listed.items():
        hints = tool.get("annotations") or {}
        assert isinstance(hints, dict)
        if hints.get("readOnlyHint") is not True or hints.get("destructiveHint") is True:
            assert tools[name].risk is not Risk.READ, name  # type: ignore[attr-defined]


def test_the_server_reports_the_version_the_bundle_approves(tmp_path: Path) -> None:
    kubeconfig = kubeconfig_without_credentials(tmp_path / "kubeconfig", "https://127.0.0.1:1")
    with KubeMcpServer(tmp_path, kubeconfig) as server:
        status, _, text = post(
            server.url,
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "0"},
                },
            },
            {"Authorization": "Bearer x"},
        )
    assert status == 200
    (answer,) = messages(text)
    version = answer["result"]["serverInfo"]["version"]
    assert version == f"v{definition.KUBE_MCP_VERSION}"
    engine_server = load_file(EXAMPLE).server(SERVER)
    assert engine_server is not None
    approved = compile_globs(engine_server.versions)
    assert approved is not None and approved(version)


def test_without_a_bearer_token_the_server_refuses_and_uses_no_credential_of_its_own(
    tmp_path: Path,
) -> None:
    kubeconfig = kubeconfig_without_credentials(tmp_path / "kubeconfig", "https://127.0.0.1:1")
    with KubeMcpServer(tmp_path, kubeconfig) as server:
        status, headers, text = post(server.url, {"jsonrpc": "2.0", "id": 1, "method": "ping"})
        # a token in kubernetes-authorization does not count: require_oauth reads only
        # Authorization (so the sidecar sends it there)
        other, _, _ = post(
            server.url,
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"kubernetes-authorization": "Bearer x"},
        )
    assert status == 401 and "Bearer token required" in text
    assert headers.get("Www-Authenticate", headers.get("WWW-Authenticate", "")).startswith("Bearer")
    assert other == 401


def test_the_pins_of_the_setup_step_the_image_and_the_dockerfile_agree() -> None:
    step = SETUP_STEP.read_text()
    version = re.search(r'^VERSION="([^"]+)"', step, re.M)
    assert version is not None and version.group(1) == definition.KUBE_MCP_VERSION
    assert re.search(r'^INTEGRITY="sha512-[A-Za-z0-9+/=]{88}"', step, re.M)
    dockerfile = (REPO / "kind/Dockerfile").read_text()
    assert f"kubernetes-mcp-server-linux-amd64-{definition.KUBE_MCP_VERSION}.tgz" in dockerfile
    assert binary().parent.name == f"kubernetes-mcp-server-{definition.KUBE_MCP_VERSION}"
