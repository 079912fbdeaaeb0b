"""The worked example, cluster side: the real kubernetes-mcp-server behind ``palisade sidecar``,
acting for each agent with that agent's own short-lived ServiceAccount token.

Real peers only: the session's kube-apiserver (RBAC as in tests/kube_mcp/cluster.py),
the pinned kubernetes-mcp-server with the image's config and a kubeconfig that holds
no credential, the sidecar process started with ``--upstream-credential
kube-token-request`` and the example bundle (its agents' identities pointed at the
test issuer), a recorder between the two that keeps what the upstream received, and
a plain HTTP client in the agent's place.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from palisade.audit.files import iter_records
from tests.harness import ControlPlane
from tests.kube_mcp.cluster import (
    AGENT_USERNAME,
    NAMESPACE,
    PaymentsCluster,
    create_workloads,
    replicas,
    set_up,
    username_of,
)
from tests.kube_mcp.recorder import Recorder, Seen
from tests.kube_mcp.server import REPO, KubeMcpServer, kubeconfig_without_credentials, messages
from tests.sidecar.conformance.peers import Sidecar, issuer_thread, sidecar
from tests.sidecar.identity.issuer import Issuer

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples/payments-bundle.yaml"
PROTOCOL = "2025-06-18"


@dataclass
class Peers:
    kube: ControlPlane
    issuer: Issuer
    sidecar: Sidecar
    recorder: Recorder
    workdir: Path


@pytest.fixture(scope="module")
def cluster(kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> PaymentsCluster:
    found = set_up(kube, tmp_path_factory.mktemp("payments"))
    create_workloads(kube)
    return found


def bundle_template(workdir: Path) -> Path:
    """The example bundle, its agents found by subjects of the test issuer (@ISSUER@);
    the second agent (search-indexer) has no clusterCredential."""
    text = EXAMPLE.read_text().replace("https://issuer.example", "@ISSUER@")
    old = '        - {serviceAccount: "search/indexer"}\n'
    assert old in text
    text = text.replace(old, old + '        - {issuer: "@ISSUER@", subject: "indexer-bot"}\n')
    path = workdir / "bundle.yaml.in"
    path.write_text(text)
    return path


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with issuer_thread() as found:
        yield found


@pytest.fixture
async def peers(cluster: PaymentsCluster, issuer: Issuer, tmp_path: Path) -> AsyncIterator[Peers]:
    kube = cluster.kube
    kubeconfig = kubeconfig_without_credentials(tmp_path / "kubeconfig", kube.server, kube.ca_pem)
    with KubeMcpServer(tmp_path, kubeconfig) as server, Recorder(server.url) as recorder:
        args = [
            "--upstream-credential", "kube-token-request",
            "--kube-api-server", kube.server,
            "--kube-ca-file", str(kube.ca_file),
            "--kube-token-file", str(cluster.sidecar_token_file),
        ]  # fmt: skip
        with sidecar(
            tmp_path,
            f"{recorder.url}/mcp",
            issuer,
            template=bundle_template(tmp_path),
            server_name="kubernetes-mcp",
            extra_args=args,
        ) as sc:
            yield Peers(kube, issuer, sc, recorder, tmp_path)


@dataclass
class Agent:
    """An MCP client speaking plain HTTP; keeps every answer it received, raw."""

    http: aiohttp.ClientSession
    url: str
    token: str
    session_id: str = ""
    answers: list[str] = field(default_factory=list)
    next_id: int = 1

    def headers(self) -> dict[str, str]:
        out = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if self.session_id:
            out["Mcp-Session-Id"] = self.session_id
            out["MCP-Protocol-Version"] = PROTOCOL
        return out

    async def post(self, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        async with self.http.post(self.url, data=json.dumps(body), headers=self.headers()) as r:
            text = await r.text()
            self.answers.append(json.dumps(dict(r.headers)) + "\n" + text)
            if r.headers.get("Mcp-Session-Id"):
                self.session_id = r.headers["Mcp-Session-Id"]
            return r.status, messages(text) if text.strip() else []

    async def request(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.next_id += 1
        status, found = await self.post(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        )
        return status, found[-1] if found else {}

    async def start(self) -> tuple[int, dict[str, Any]]:
        status, answer = await self.request(
            "initialize",
            {"protocolVersion": PROTOCOL, "capabilities": {},
             "clientInfo": {"name": "sre-agent", "version": "1"}},
        )  # fmt: skip
        if status == 200:
            await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return status, answer

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        status, answer = await self.request("tools/call", {"name": tool, "arguments": arguments})
        assert status == 200, answer
        return answer


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def is_probe(seen: Seen) -> bool:
    """The sidecar's readiness check of the upstream: a GET without a session."""
    return seen.method == "GET" and "mcp-session-id" not in seen.headers


def bearer_tokens(seen: list[Seen]) -> set[str]:
    return {s.headers.get("authorization", "").removeprefix("Bearer ") for s in seen}


def audit_records(peers: Peers) -> list[dict[str, Any]]:
    return [r for _, r in iter_records(peers.sidecar.audit_dir / "audit.jsonl")]


async def test_the_upstream_acts_with_the_calling_agents_own_token_which_the_agent_never_sees(
    peers: Peers, http: aiohttp.ClientSession
) -> None:
    token = peers.issuer.token(sub="sre-bot", aud=peers.sidecar.resource, lifetime_s=600)
    agent = Agent(http, peers.sidecar.url, token)
    status, answer = await agent.start()
    assert status == 200, answer
    assert answer["result"]["serverInfo"]["version"] == "v0.0.67"
    status, listed = await agent.request("tools/list", {})
    assert status == 200 and "pods_list_in_namespace" in {
        t["name"] for t in listed["result"]["tools"]
    }
    result = await agent.call("pods_list_in_namespace", namespace=NAMESPACE)
    assert not result["result"].get("isError"), result

    # every request made for the agent carried one bearer token: the agent's own
    # ServiceAccount's, minted by the sidecar, cached across the session's requests;
    # the sidecar's readiness probes (no session, made for nobody) carry none
    made_for_agent = [s for s in peers.recorder.seen if not is_probe(s)]
    assert {s.rpc_method for s in made_for_agent} >= {"initialize", "tools/list", "tools/call"}
    assert all(s.headers.get("authorization", "").startswith("Bearer ") for s in made_for_agent)
    assert all("authorization" not in s.headers for s in peers.recorder.seen if is_probe(s))
    (minted,) = bearer_tokens(made_for_agent)
    assert username_of(peers.kube, minted) == AGENT_USERNAME
    assert minted != token  # the agent's own token never reaches the upstream
    assert all(token not in json.dumps(s.headers) for s in peers.recorder.seen)
    # ... and the minted one never reaches the agent (headers or bodies)
    assert all(minted not in answer for answer in agent.answers)
    assert minted not in (peers.workdir / "sidecar.log").read_text()

    # the decision record names who the upstream acted as
    (decision,) = [
        r for r in audit_records(peers)
        if r.get("tool") == "pods_list_in_namespace" and r.get("decision") == "allow"
    ]  # fmt: skip
    assert decision["agent"] == "sre-agent-payments"
    assert decision["details"]["upstream_identity"] == AGENT_USERNAME


async def test_policy_and_the_clusters_rbac_are_two_lines_of_defence(
    peers: Peers, http: aiohttp.ClientSession
) -> None:
    token = peers.issuer.token(sub="sre-bot", aud=peers.sidecar.resource, lifetime_s=600)
    agent = Agent(http, peers.sidecar.url, token)
    assert (await agent.start())[0] == 200

    # allowed by policy (a write in payments) and by RBAC: the Deployment is scaled
    result = await agent.call(
        "resources_scale", apiVersion="apps/v1", kind="Deployment", name="payments-api",
        namespace=NAMESPACE, scale=2,
    )  # fmt: skip
    assert not result["result"].get("isError"), result
    assert replicas(peers.kube, "deployments", "payments-api") == 2

    # allowed by policy (still a write in payments), refused by the API server: the
    # agent's ServiceAccount may not scale StatefulSets
    result = await agent.call(
        "resources_scale", apiVersion="apps/v1", kind="StatefulSet", name="payments-db",
        namespace=NAMESPACE, scale=5,
    )  # fmt: skip
    assert result["result"].get("isError"), result  # (its text quarantined, its facts kept)
    assert replicas(peers.kube, "statefulsets", "payments-db") == 1
    (upstream,) = [s for s in peers.recorder.seen if "StatefulSet" in json.dumps(s.body)]
    assert "forbidden" in upstream.answer and AGENT_USERNAME in upstream.answer

    # refused by policy before anything is forwarded: another namespace
    forwarded = len(peers.recorder.seen)
    _, answer = await agent.request(
        "tools/call",
        {"name": "resources_scale",
         "arguments": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "coredns",
                       "namespace": "kube-system", "scale": 0}},
    )  # fmt: skip
    assert "error" in answer and "deny-writes-elsewhere" in json.dumps(answer)
    assert len(peers.recorder.seen) == forwarded


async def test_an_agent_without_a_cluster_credential_is_refused_before_the_upstream(
    peers: Peers, http: aiohttp.ClientSession
) -> None:
    token = peers.issuer.token(sub="indexer-bot", aud=peers.sidecar.resource, lifetime_s=600)
    agent = Agent(http, peers.sidecar.url, token)
    status, answer = await agent.start()
    assert status == 502
    message = answer["error"]["message"]
    assert "the upstream credential is unavailable" in message
    assert "agent 'search-indexer' has no cluster credential" in message
    # nothing was forwarded for it, with or without a token
    assert [s for s in peers.recorder.seen if not is_probe(s)] == []
