"""On a real node: the real kubernetes-mcp-server image, injected, lists pods for an
agent with that agent's own short-lived ServiceAccount token.

The quick start first (README, as written: images built daemonless and imported,
the chart with its defaults, the labelled namespace, the example bundle), then
examples/cluster/kubernetes-mcp-server.yaml: the server's pod carries the annotation
``palisade.dev/upstream-credential: kube-token-request`` and mounts no token; its
kubeconfig holds no credential. An agent Job (ServiceAccount payments/sre-agent, an
identity of sre-agent-payments) calls ``pods_list_in_namespace`` through the sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.node import RealNode
from tests.harness.quickstart import REPO, Timings, install, uninstall

pytestmark = [pytest.mark.node, pytest.mark.e2e, pytest.mark.timeout(1800)]

NS = "payments"
SIDECAR = "palisade-sidecar"
AUDIT = "/var/lib/palisade/audit/audit.jsonl"
MANIFEST = REPO / "examples/cluster/kubernetes-mcp-server.yaml"
AGENT_USERNAME = "system:serviceaccount:payments:sre-agent-payments"

CLIENT = r"""
import json, urllib.request
URL = "http://kubernetes-mcp.payments.svc/mcp"
token = open("/var/run/secrets/palisade/token").read().strip()
sid = ""
def post(body):
    global sid
    h = {"Authorization": "Bearer " + token, "Content-Type": "application/json",
         "Accept": "application/json, text/event-stream"}
    if sid:
        h["Mcp-Session-Id"] = sid
        h["MCP-Protocol-Version"] = "2025-06-18"
    req = urllib.request.Request(URL, json.dumps(body).encode(), h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            sid = r.headers.get("Mcp-Session-Id") or sid
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
out = []
out.append(post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "sre-agent", "version": "1"}}}))
post({"jsonrpc": "2.0", "method": "notifications/initialized"})
out.append(post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
    "name": "pods_list_in_namespace", "arguments": {"namespace": "payments"}}}))
print(json.dumps(out))
"""


def agent_job(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "kube-mcp-agent", "namespace": NS},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "serviceAccountName": "sre-agent",
                    "automountServiceAccountToken": False,
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "agent",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python3", "-c", CLIENT],
                            "volumeMounts": [
                                {"name": "t", "mountPath": "/var/run/secrets/palisade"}
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "t",
                            "projected": {
                                "sources": [
                                    {
                                        "serviceAccountToken": {
                                            "audience": "palisade.dev/mcp/payments/kubernetes-mcp",
                                            "expirationSeconds": 600,
                                            "path": "token",
                                        }
                                    }
                                ]
                            },
                        }
                    ],
                }
            },
        },
    }


def messages(text: str) -> list[dict[str, Any]]:
    text = text.strip()
    if text.startswith("{"):
        return [json.loads(text)]
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


@pytest.fixture(scope="module")
def deployed(real_node: RealNode) -> Iterator[tuple[RealNode, dict[str, Any]]]:
    node = real_node
    report = install(node, Timings())
    try:
        node.kubectl("apply", "-f", str(MANIFEST))
        node.wait_ready("deployment", NS, "kubernetes-mcp", timeout=300)
        yield node, report
    finally:
        # the node serves the whole session: leave it as the quick start found it
        node.kubectl("delete", "-f", str(MANIFEST), "--ignore-not-found", "--wait", timeout=300)
        uninstall(node)


def test_the_injected_real_server_lists_pods_with_the_agents_own_token(
    deployed: tuple[RealNode, dict[str, Any]],
) -> None:
    node, report = deployed
    pods = json.loads(
        node.kubectl("-n", NS, "get", "pods", "-l", "app=kubernetes-mcp", "-o", "json").stdout
    )["items"]
    (pod,) = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    name = pod["metadata"]["name"]
    spec = pod["spec"]
    containers = {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}
    args = containers[SIDECAR]["args"]
    assert args[args.index("--upstream-credential") + 1] == "kube-token-request"
    # nothing of the pod's ServiceAccount is mounted into the MCP server
    assert not any("serviceaccount" in m["mountPath"] for m in containers["mcp"]["volumeMounts"])

    image = next(i["ref"] for i in report["images"] if i["ref"].startswith("palisade-example-mcp"))
    node.kubectl("apply", "-f", "-", input=json.dumps(agent_job(image)))
    node.wait_ready("job", NS, "kube-mcp-agent", timeout=300)
    logs = node.kubectl("-n", NS, "logs", "job/kube-mcp-agent").stdout
    (init_status, init_body), (call_status, call_body) = json.loads(logs.strip().splitlines()[-1])
    assert init_status == 200, init_body
    (init,) = messages(init_body)
    assert init["result"]["serverInfo"]["name"] == "kubernetes-mcp-server"
    assert call_status == 200, call_body
    (call,) = messages(call_body)
    assert not call["result"].get("isError"), call  # the API server let the agent's token list

    audit = node.exec(NS, name, "cat", AUDIT, container=SIDECAR).stdout
    records = [json.loads(line) for line in audit.splitlines() if line.strip()]
    (decision,) = [
        r for r in records
        if r.get("tool") == "pods_list_in_namespace" and r.get("decision") == "allow"
    ]  # fmt: skip
    assert decision["agent"] == "sre-agent-payments"
    assert decision["details"]["upstream_identity"] == AGENT_USERNAME
    sidecar_log = node.pod_logs(NS, name, SIDECAR)
    assert "cluster credential minted" in sidecar_log
