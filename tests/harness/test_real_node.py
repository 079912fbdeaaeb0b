"""The real node runs real workloads: pods, Services by DNS and ClusterIP, DaemonSets,
PVCs, the ``kubernetes`` Service from a pod; and it leaves the host as it found it.

One ``real_node`` serves the module (and the session). The two ``node_machine``
tests bring up nodes of their own through the CLI first: one torn down with
``down``, one killed outright and swept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.binaries import find_binaries
from tests.harness.node import RealNode
from tests.harness.node_cleanup import host_leftovers
from tests.harness.node_state import LOCK_PATH, LockTimeout, MachineLock, NodeState

pytestmark = [pytest.mark.node, pytest.mark.e2e]

NS = "node-e2e"
REPO = Path(__file__).resolve().parents[2]
SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def _deployment(name: str, image: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": _pod_spec(image)},
        },
    }


def _pod_spec(image: str) -> dict[str, Any]:
    return {
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "hello",
                "image": image,
                "imagePullPolicy": "Never",
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            }
        ],
    }


def _apply(node: RealNode, *objs: dict[str, Any]) -> None:
    node.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}),
    )


@pytest.fixture(scope="module")
def hello(real_node: RealNode) -> Iterator[RealNode]:
    """A 2-replica ``hello`` Deployment behind a Service, and a ``probe`` pod to call from."""
    real_node.create_namespace(NS)
    image = real_node.images["hello"]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "hello", "namespace": NS},
        "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": NS},
        "spec": _pod_spec(image),
    }
    _apply(real_node, _deployment("hello", image, replicas=2), service, probe)
    real_node.wait_ready("deployment", NS, "hello")
    real_node.wait_ready("pod", NS, "probe")
    real_node.wait_service(NS, "hello", target_port=8080, endpoints=2)
    yield real_node


def _probe(node: RealNode, *argv: str) -> str:
    return node.exec(NS, "probe", "/hello", *argv).stdout


# --- nodes of their own (run first: see plugin.node_machine) ---------------------


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.harness.node", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_cli_brings_a_detached_node_up_and_down_leaving_the_host_clean(
    node_machine: None,
) -> None:
    up = _cli("up")
    assert up.returncode == 0, up.stderr
    state = NodeState.load()
    assert state is not None and state.detached
    try:
        assert f"KUBECONFIG={state.kubeconfig}" in up.stdout
        assert _cli("status").returncode == 0
        # the CLI process is gone; its node runs on
        nodes = subprocess.run(
            [
                str(find_binaries().kubectl),
                f"--kubeconfig={state.kubeconfig}",
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[0].status.conditions[?(@.type=='Ready')].status}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert nodes.stdout == "True"
    finally:
        down = _cli("down")
    assert down.returncode == 0, down.stderr
    assert host_leftovers(state) == []


def test_a_node_whose_owner_was_killed_is_swept_clean(node_machine: None) -> None:
    script = (
        "from tests.harness.node import RealNode\n"
        "n = RealNode(); n.start(); print('UP', flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "UP"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
    state = NodeState.load()
    assert state is not None and not state.owner_alive()
    assert host_leftovers(state), "a killed run leaves something for the sweep"
    down = _cli("down")
    assert down.returncode == 0, down.stderr
    assert host_leftovers(state) == []


# --- the session's node ----------------------------------------------------------


class TestTheNode:
    def test_the_node_is_ready_on_containerd_with_its_pod_cidr(self, real_node: RealNode) -> None:
        node = real_node.request("GET", f"/api/v1/nodes/{real_node.node_name}")
        info = node["status"]["nodeInfo"]
        assert info["containerRuntimeVersion"] == "containerd://2.3.7"
        assert info["kubeletVersion"] == "v1.36.3"
        assert node["spec"]["podCIDR"] == "10.244.0.0/24"
        addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        assert addresses["InternalIP"] == real_node.node_ip
        assert not node["spec"].get("taints")

    def test_the_test_process_reaches_the_api_server_at_the_node_ip(
        self, real_node: RealNode
    ) -> None:
        assert real_node.server == f"https://{real_node.node_ip}:6443"
        assert real_node.kubectl("get", "--raw", "/readyz").stdout == "ok"
        slices = real_node.request(
            "GET",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
            "?labelSelector=kubernetes.io/service-name=kubernetes",
        )
        ips = [a for s in slices["items"] for e in s["endpoints"] for a in e["addresses"]]
        assert ips == [real_node.node_ip]

    def test_coredns_runs_as_a_deployment_behind_kube_dns(self, real_node: RealNode) -> None:
        real_node.wait_ready("deployment", "kube-system", "coredns", timeout=30)
        svc = real_node.request("GET", "/api/v1/namespaces/kube-system/services/kube-dns")
        assert svc["spec"]["clusterIP"] == "10.96.0.10"


class TestWorkloads:
    def test_a_pod_from_a_locally_imported_image_runs_and_logs(self, hello: RealNode) -> None:
        assert "hello: serving on :8080 as probe" in hello.pod_logs(NS, "probe")

    def test_a_service_answers_another_pod_by_its_dns_name(self, hello: RealNode) -> None:
        out = _probe(hello, "get", f"http://hello.{NS}.svc.cluster.local/")
        assert out.startswith("hello from hello-")

    def test_a_service_answers_on_its_cluster_ip(self, hello: RealNode) -> None:
        ip = hello.request("GET", f"/api/v1/namespaces/{NS}/services/hello")["spec"]["clusterIP"]
        assert _probe(hello, "get", f"http://{ip}/").startswith("hello from hello-")

    def test_pods_resolve_the_kubernetes_service(self, hello: RealNode) -> None:
        assert _probe(hello, "lookup", "kubernetes.default.svc.cluster.local").split() == [
            "10.96.0.1"
        ]

    def test_a_pod_reaches_the_api_server_through_the_kubernetes_service(
        self, hello: RealNode
    ) -> None:
        out = _probe(
            hello,
            "get",
            f"-ca={SA}/ca.crt",
            f"-token-file={SA}/token",
            "https://kubernetes.default.svc/api",
        )
        assert json.loads(out)["kind"] == "APIVersions"

    def test_a_pod_ip_answers_inside_the_node_namespace(self, hello: RealNode) -> None:
        pod_ip = hello.request("GET", f"/api/v1/namespaces/{NS}/pods/probe")["status"]["podIP"]
        binary = str(hello.node_binaries.images.hello_binary)
        out = hello.in_netns([binary, "get", f"http://{pod_ip}:8080/"]).stdout
        assert out == "hello from probe\n"

    def test_a_daemonset_runs_a_ready_pod_on_the_node(self, hello: RealNode) -> None:
        ds = _deployment("hello-ds", hello.images["hello"])
        ds["kind"] = "DaemonSet"
        del ds["spec"]["replicas"]
        _apply(hello, ds)
        status = hello.wait_ready("daemonset", NS, "hello-ds")["status"]
        assert status["numberReady"] == 1

    def test_a_claim_binds_to_a_pre_created_volume_of_the_default_class(
        self, real_node: RealNode
    ) -> None:
        real_node.create_namespace(NS)
        pvc = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": NS},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "2Gi"}},
            },
        }
        _apply(real_node, pvc)
        bound = real_node.wait_ready("persistentvolumeclaim", NS, "data", timeout=60)
        assert bound["spec"]["storageClassName"] == "standard"
        assert bound["status"]["capacity"]["storage"] in {"2Gi", "5Gi"}


def test_a_second_node_on_the_machine_waits_then_names_the_holder(
    real_node: RealNode,
) -> None:
    start = time.monotonic()
    with pytest.raises(LockTimeout) as e:
        MachineLock(LOCK_PATH).acquire(timeout=1)
    assert time.monotonic() - start >= 1
    assert f"pid {os.getpid()}" in str(e.value)
