"""The quick start on a real node: the chart with its defaults governs a real MCP server.

What a platform team meets, in the order it meets it: the images built without
Docker and imported into containerd, then the README's quick-start commands run
as written (``helm install`` with the chart's defaults, a labelled namespace, the
example's PolicyBundle, an MCP server Deployment and an agent Job). Everything
answers from real processes in real pods: the injector behind its
PodDisruptionBudget, the distributor signing and pushing, the sidecar verifying
ServiceAccount tokens with the cluster's keys, the pod's packet filter, the node
agent reading the pods' cgroups. The tests run in file order on one install; the
last one uninstalls it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.node import RealNode
from tests.harness.quickstart import REPO, Timings, install

# the first test pays for the install: images, chart, MCP server, agent Job
pytestmark = [pytest.mark.node, pytest.mark.e2e, pytest.mark.timeout(1800)]

RELEASE_NS = "palisade"
NS = "payments"
OUTSIDE = "outside"
SIDECAR = "palisade-sidecar"
AUDIT = "/var/lib/palisade/audit"
TIMINGS_FILE = REPO / "build" / "quickstart-timings.json"


def _json(node: RealNode, *args: str) -> Any:
    return json.loads(node.kubectl(*args, "-o", "json").stdout)


def _mcp_pod(node: RealNode) -> dict[str, Any]:
    pods = _json(node, "-n", NS, "get", "pods", "-l", "app=k8s-mcp")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = live[0]
    return pod


def _wait(what: str, check: Any, timeout: float = 120, every: float = 1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def _toolbox(node: RealNode, code: str) -> Any:
    """Run Python in a pod of another namespace; its stdout is one JSON document."""
    out = node.exec(OUTSIDE, "toolbox", "python3", "-c", code).stdout
    return json.loads(out)


def _admin_token(node: RealNode) -> str:
    import base64

    secret = node.request(
        "GET", f"/api/v1/namespaces/{RELEASE_NS}/secrets/palisade-distributor-admin"
    )
    return base64.b64decode(secret["data"]["token"]).decode()


def _distributor(node: RealNode, path: str) -> Any:
    url = f"http://palisade-distributor.{RELEASE_NS}.svc:9402{path}"
    code = (
        "import json, urllib.request\n"
        f"r = urllib.request.Request({url!r}, headers={{'Authorization': 'Bearer ' + "
        f"{_admin_token(node)!r}}})\n"
        "print(json.dumps(json.load(urllib.request.urlopen(r, timeout=10))))\n"
    )
    return _toolbox(node, code)


def _container_id(status: dict[str, Any]) -> str:
    return str(status["containerID"]).split("://", 1)[1]


def _statuses(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    st = pod["status"]
    return {s["name"]: s for s in [*st.get("initContainerStatuses", []), *st["containerStatuses"]]}


@pytest.fixture(scope="module")
def installed(real_node: RealNode) -> Iterator[RealNode]:
    node = real_node
    timings = Timings()
    report = install(node, timings)
    timings.run(
        "MCP server Ready", lambda: node.wait_ready("deployment", NS, "k8s-mcp", timeout=300)
    )
    timings.run(
        "first governed calls (agent Job complete)",
        lambda: node.wait_ready("job", NS, "sre-agent", timeout=300),
    )
    from_install = sum(v for k, v in timings.steps.items() if not k.endswith("images"))
    TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS_FILE.write_text(
        json.dumps(
            {
                "steps_s": timings.steps,
                "helm_install_to_first_governed_call_s": round(from_install, 1),
                "images": [
                    {k: i[k] for k in ("ref", "digest", "compressed_bytes", "uncompressed_bytes")}
                    for i in report["images"]
                ],
                "image_build_s": report["seconds"],
            },
            indent=2,
        )
    )
    node.create_namespace(OUTSIDE)
    image = next(i["ref"] for i in report["images"] if i["ref"].startswith("palisade:"))
    toolbox = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "toolbox", "namespace": OUTSIDE},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "toolbox",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", "import signal; signal.pause()"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    node.kubectl("apply", "-f", "-", input=json.dumps(toolbox))
    node.wait_ready("pod", OUTSIDE, "toolbox")
    yield node


def test_the_chart_with_its_defaults_brings_every_piece_up(installed: RealNode) -> None:
    node = installed
    injector = node.wait_ready("deployment", RELEASE_NS, "palisade-injector")
    assert injector["status"]["readyReplicas"] == 2
    pdb = node.request(
        "GET", f"/apis/policy/v1/namespaces/{RELEASE_NS}/poddisruptionbudgets/palisade-injector"
    )
    assert pdb["status"]["currentHealthy"] == 2
    assert pdb["status"]["disruptionsAllowed"] == 1
    node.wait_ready("deployment", RELEASE_NS, "palisade-distributor")
    node.wait_ready("daemonset", RELEASE_NS, "palisade-nodeagent")
    trust = node.request("GET", f"/api/v1/namespaces/{RELEASE_NS}/configmaps/palisade-trust")
    assert "BEGIN PUBLIC KEY" in trust["data"]["keys.pem"]


def test_the_mcp_server_runs_with_a_native_sidecar_started_first(installed: RealNode) -> None:
    pod = _mcp_pod(installed)
    init = {c["name"]: c for c in pod["spec"]["initContainers"]}
    assert init[SIDECAR]["restartPolicy"] == "Always"
    firewall = init["palisade-init"]
    assert "restartPolicy" not in firewall
    assert firewall["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"], "drop": ["ALL"]}
    assert [c["name"] for c in pod["spec"]["initContainers"]].index("palisade-init") < [
        c["name"] for c in pod["spec"]["initContainers"]
    ].index(SIDECAR)
    statuses = _statuses(pod)
    assert statuses[SIDECAR]["ready"] and statuses["mcp"]["ready"]
    sidecar_started = statuses[SIDECAR]["state"]["running"]["startedAt"]
    app_started = statuses["mcp"]["state"]["running"]["startedAt"]
    assert sidecar_started <= app_started
    assert statuses["palisade-init"]["state"]["terminated"]["exitCode"] == 0
    args = " ".join(init[SIDECAR].get("args", []) + init[SIDECAR].get("command", []))
    assert "--dev-auth" not in args


def test_an_agent_in_its_own_pod_is_allowed_denied_and_sent_for_approval(
    installed: RealNode,
) -> None:
    logs = installed.kubectl("-n", NS, "logs", "job/sre-agent").stdout
    run = json.loads(logs.strip().splitlines()[-1])
    by_intent = {s["intent"]: s for s in run["steps"]}
    assert by_intent["see what is crashing"]["decision"] == "allow"
    assert by_intent["obey the log: delete the deployment"]["decision"] == "deny"
    assert by_intent["apply a manifest to kube-system"]["decision"] == "deny"
    assert by_intent["install a chart outside the catalog"]["decision"] == "deny"
    assert by_intent["fix attempt 1: update payments-api"]["decision"] == "allow"
    # five mutating calls per session (the catalog's helm_install was the first)
    assert by_intent["fix attempt 5: update payments-api"]["decision"] == "require_approval"
    assert "quarantined" in by_intent["read the crashing pod's log"]["detail"]
    # the agent is shown only the tools it may call
    assert "pods_list" in run["tools"] and "resources_delete" not in run["tools"]


def test_a_caller_without_a_token_bound_to_the_server_is_refused(installed: RealNode) -> None:
    code = (
        "import json, urllib.request, urllib.error\n"
        "body = json.dumps({'jsonrpc': '2.0', 'id': 1, 'method': 'tools/list'}).encode()\n"
        "out = {}\n"
        "for name, auth in (('none', None), ('garbage', 'Bearer abc.def.ghi')):\n"
        "    h = {'Content-Type': 'application/json',\n"
        "         'Accept': 'application/json, text/event-stream'}\n"
        "    if auth: h['Authorization'] = auth\n"
        f"    r = urllib.request.Request('http://k8s-mcp.{NS}.svc/mcp', body, h)\n"
        "    try:\n"
        "        out[name] = urllib.request.urlopen(r, timeout=10).status\n"
        "    except urllib.error.HTTPError as e:\n"
        "        out[name] = e.code\n"
        "print(json.dumps(out))\n"
    )
    assert _toolbox(installed, code) == {"none": 401, "garbage": 401}


def test_the_mcp_containers_own_port_is_refused_from_another_pod(installed: RealNode) -> None:
    pod = _mcp_pod(installed)
    ip = pod["status"]["podIP"]
    upstream = json.loads(pod["metadata"]["annotations"]["palisade.dev/status"])["upstream"]
    sidecar_port = json.loads(pod["metadata"]["annotations"]["palisade.dev/status"])["port"]
    code = (
        "import json, socket\n"
        "def probe(port):\n"
        "    try:\n"
        f"        socket.create_connection(({ip!r}, port), timeout=5).close()\n"
        "        return 'open'\n"
        "    except ConnectionRefusedError:\n"
        "        return 'refused'\n"
        "    except OSError as e:\n"
        "        return type(e).__name__\n"
        f"print(json.dumps({{'mcp': probe({upstream}), 'sidecar': probe({sidecar_port})}}))\n"
    )
    assert _toolbox(installed, code) == {"mcp": "refused", "sidecar": "open"}


def test_the_fleet_shows_the_sidecar_acked_at_the_current_revision(installed: RealNode) -> None:
    pod = _mcp_pod(installed)
    name = pod["metadata"]["name"]

    def acked() -> Any:
        bundles = _distributor(installed, "/v1/bundles")
        current = max(r["revision"] for r in bundles["bundles"])
        clients = _distributor(installed, "/v1/fleet?kind=sidecar")["clients"]
        mine = [c for c in clients if c["pod"] == name and c["namespace"] == NS]
        return mine and mine[0]["revision"] == current and mine[0]

    client = _wait("the sidecar's ACK of the current revision", acked, timeout=60, every=2)
    assert client["kind"] == "CLIENT_KIND_SIDECAR"
    assert client["nack_revision"] != client["revision"]
    assert client["server"] == "kubernetes-mcp" and client["tenant"] == "payments"


def test_helm_test_finds_the_injector_and_the_distributor_ready(installed: RealNode) -> None:
    out = installed.helm("test", "palisade", "-n", RELEASE_NS, "--logs", "--timeout", "3m")
    text = out.stdout
    assert "Succeeded" in text, text
    assert "injector: 200" in text and "distributor: 200" in text, text


def test_the_cli_finds_the_distributor_through_the_kubeconfig(installed: RealNode) -> None:
    import os
    import subprocess
    import sys

    env = {
        "PATH": os.environ["PATH"],
        "HOME": "/nonexistent",
        "KUBECONFIG": str(installed.kubeconfig),
    }

    def cli(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "palisade.cli.main", *a],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip

    out = cli("fleet", "sidecars", "-o", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert any(r["namespace"] == NS and r["server"] == "kubernetes-mcp" for r in rows), rows
    listed = cli("approvals", "list", "--all", "-o", "yaml")
    assert listed.returncode == 0, listed.stderr
    assert _admin_token(installed) not in out.stdout + out.stderr + listed.stdout + listed.stderr


def test_a_killed_sidecar_is_restarted_with_its_audit_chain_whole_and_delivered(
    installed: RealNode,
) -> None:
    node = installed
    pod = _mcp_pod(node)
    name = pod["metadata"]["name"]
    before = _statuses(pod)[SIDECAR]
    node.ctr("tasks", "kill", "--signal", "SIGKILL", _container_id(before))

    def restarted() -> Any:
        st = _statuses(_mcp_pod(node))[SIDECAR]
        return st["restartCount"] > before["restartCount"] and st["ready"] and st

    _wait("the kubelet to restart the sidecar", restarted, timeout=120)
    verify = node.exec(
        NS, name, "palisade", "audit", "verify", f"{AUDIT}/audit.jsonl",
        "--trusted", f"{AUDIT}/audit-key.pub.pem", container=SIDECAR, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    local = node.exec(NS, name, "cat", f"{AUDIT}/audit.jsonl", container=SIDECAR).stdout
    hashes = {json.loads(line)["hash"] for line in local.splitlines() if line.strip()}
    assert len(hashes) >= 10  # the agent's calls, each decided and its outcome

    def delivered() -> Any:
        records = _distributor(node, "/v1/audit?limit=100000")["records"]
        have = {r["hash"] for r in records}
        return hashes <= have or sorted(hashes - have)[:3]

    result = _wait("the spool's records at the distributor", lambda: delivered() is True, 90, 3)
    assert result is True


def _host_pid(node: RealNode, container_id: str) -> int:
    tasks = node.ctr("tasks", "ls").stdout.splitlines()
    for line in tasks[1:]:
        fields = line.split()
        if fields and fields[0] == container_id:
            return int(fields[1])
    raise AssertionError(f"container {container_id} has no task: {tasks}")


def test_the_node_agent_attributes_the_pods_real_processes(installed: RealNode) -> None:
    node = installed
    node.wait_ready("daemonset", RELEASE_NS, "palisade-nodeagent")
    pod = _mcp_pod(node)
    statuses = _statuses(pod)
    for container in (SIDECAR, "mcp"):
        pid = _host_pid(node, _container_id(statuses[container]))
        out = node.kubectl(
            "-n", RELEASE_NS, "exec", "ds/palisade-nodeagent", "--",
            "palisade", "nodeagent", "attribute", str(pid), "--json",
        ).stdout  # fmt: skip
        got = json.loads(out)
        assert got["kind"] == "pod", got
        assert (got["namespace"], got["pod"], got["container"]) == (
            NS,
            pod["metadata"]["name"],
            container,
        )
        assert got["tenant"] == "payments"


def test_helm_upgrade_keeps_the_signing_key_and_the_governed_pods(installed: RealNode) -> None:
    node = installed
    path = f"/api/v1/namespaces/{RELEASE_NS}/configmaps/palisade-trust"
    key = node.request("GET", path)["data"]["keys.pem"]
    token = _admin_token(node)
    node.helm(
        "upgrade", "palisade", str(REPO / "charts/palisade"), "-n", RELEASE_NS,
        "--reuse-values", "--set", "injector.logLevel=debug", "--wait", "--timeout", "5m",
    )  # fmt: skip
    assert node.request("GET", path)["data"]["keys.pem"] == key
    assert _admin_token(node) == token, "the admin token the distributor wrote is kept"
    node.kubectl("-n", NS, "rollout", "restart", "deployment/k8s-mcp")
    node.kubectl("-n", NS, "rollout", "status", "deployment/k8s-mcp", "--timeout=300s")
    pod = _mcp_pod(node)
    assert SIDECAR in [c["name"] for c in pod["spec"]["initContainers"]]


def test_helm_uninstall_leaves_nothing_behind(installed: RealNode) -> None:
    node = installed
    node.kubectl("delete", "-f", str(REPO / "examples/cluster/sre-agent.yaml"), "--wait")
    node.kubectl("delete", "-f", str(REPO / "examples/cluster/mcp-server.yaml"), "--wait")
    node.kubectl("-n", RELEASE_NS, "delete", "-f", str(REPO / "examples/payments-bundle.yaml"))
    node.helm("uninstall", "palisade", "-n", RELEASE_NS, "--wait", "--timeout", "5m")
    selector = "app.kubernetes.io/instance=palisade"
    kinds = (
        "all,configmaps,secrets,serviceaccounts,roles,rolebindings,poddisruptionbudgets,"
        "persistentvolumeclaims,networkpolicies,policybundles"
    )

    def gone() -> Any:
        left = _json(node, "get", kinds, "-A", "-l", selector)["items"]
        cluster = _json(
            node, "get", "clusterroles,clusterrolebindings,mutatingwebhookconfigurations",
            "-l", selector,
        )["items"]  # fmt: skip
        names = [f"{o['kind']}/{o['metadata']['name']}" for o in [*left, *cluster]]
        return names or True

    assert _wait("every object of the release to go", lambda: gone() is True, 120) is True
    pods = _json(node, "-n", RELEASE_NS, "get", "pods")["items"]
    assert [p["metadata"]["name"] for p in pods] == []
    written = _json(node, "-n", RELEASE_NS, "get", "configmaps,secrets")["items"]
    assert [o["metadata"]["name"] for o in written] == ["kube-root-ca.crt"]
