"""The chart and the real injector together: the chart's webhook configuration, Service,
ServiceAccount and RBAC drive `palisade injector` on a real API server.

The injector runs as a process on this machine (no kubelet here) with the environment
the chart gives its container and a token of the chart's ServiceAccount, so RBAC is
the chart's. The API server reaches it through the chart's Service: aggregator
routing makes it dial the Service's endpoints, which point at this machine.
"""

from __future__ import annotations

import base64
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from palisade.bundle.signing import generate_key, public_key_pem
from tests.chart.render import CHART, container_env, one, render
from tests.harness import (
    BASIC_CONTROLLERS,
    ApiError,
    ControlPlane,
    ControlPlaneConfig,
    kubeconfig,
)
from tests.harness.process import ManagedProcess, free_port

pytestmark = pytest.mark.e2e

NS = "palisade"
NAME = "palisade-injector"
MWC_PATH = f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{NAME}"


def _host_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
        except OSError:
            pytest.skip("no non-loopback IPv4 address (endpoints may not be loopback)")
        ip: str = s.getsockname()[0]
    if ip.startswith("127."):
        pytest.skip("no non-loopback IPv4 address (endpoints may not be loopback)")
    return ip


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    # Its own control plane: no endpoints controller to undo the hand-made endpoints.
    config = ControlPlaneConfig(
        controllers=BASIC_CONTROLLERS, extra_apiserver_args=("--enable-aggregator-routing=true",)
    )
    with ControlPlane(config) as cp:
        yield cp


def _service_account_kubeconfig(kube: ControlPlane, path: Path) -> None:
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{NS}/serviceaccounts/{NAME}/token",
        {"spec": {"expirationSeconds": 3600}},
    )["status"]["token"]
    doc = kubeconfig(kube.server, kube.ca_pem, token, user="injector")
    path.write_text(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def injector(
    plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    kube = plane
    tmp = tmp_path_factory.mktemp("injector")
    kube.create_namespace(NS)
    kube.helm("install", "palisade", str(CHART), "-n", NS)
    ip, port = _host_ip(), free_port()
    kube.request(
        "POST",
        f"/api/v1/namespaces/{NS}/endpoints",
        {
            "metadata": {"name": NAME},
            "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port}]}],
        },
    )
    kube.request(
        "POST",
        f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
        {
            "metadata": {"name": f"{NAME}-local", "labels": {"kubernetes.io/service-name": NAME}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
    )
    kubeconfig = tmp / "kubeconfig"
    _service_account_kubeconfig(kube, kubeconfig)
    env = {
        k: v
        for k, v in container_env(one(render(), "Deployment", NAME)).items()
        if isinstance(v, str)
    }
    env.update(
        PATH="/usr/bin:/bin",
        HOME=str(tmp),
        POD_NAMESPACE=NS,
        KUBECONFIG=str(kubeconfig),
        PALISADE_INJECTOR_LISTEN=f"0.0.0.0:{port}",
        PALISADE_INJECTOR_TLS_DIR=str(tmp / "tls"),
    )
    palisade = Path(sys.executable).parent / "palisade"
    proc = ManagedProcess("injector", [str(palisade), "injector"], tmp / "injector.log", env)
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while not kube.request("GET", MWC_PATH)["webhooks"][0]["clientConfig"].get("caBundle"):
            assert proc.running(), proc.log_tail()
            assert time.monotonic() < deadline, f"caBundle never written:\n{proc.log_tail()}"
            time.sleep(0.3)
        yield kube
    finally:
        proc.stop()
        kube.helm("uninstall", "palisade", "-n", NS, check=False)  # no --wait: the PVC stays


def _mcp_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"palisade.dev/mcp-server": "kubernetes"}},
        "spec": {
            "containers": [
                {
                    "name": "mcp",
                    "image": "registry.invalid/mcp:1",
                    "ports": [{"name": "mcp", "containerPort": 8081}],
                }
            ]
        },
    }


def _container_names(pod: dict[str, Any]) -> list[str]:
    spec = pod["spec"]
    return [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]


class TestChartWithTheInjector:
    def test_the_injector_keeps_the_ca_bundle_with_the_charts_rbac(
        self, injector: ControlPlane
    ) -> None:
        secret = injector.request("GET", f"/api/v1/namespaces/{NS}/secrets/{NAME}-tls")
        assert secret["type"]
        ca = injector.request("GET", MWC_PATH)["webhooks"][0]["clientConfig"]["caBundle"]
        assert base64.b64decode(ca).startswith(b"-----BEGIN CERTIFICATE-----")

    def test_mcp_pods_wait_for_the_published_key_then_get_the_sidecar_that_trusts_it(
        self, injector: ControlPlane
    ) -> None:
        """The chart's trust ConfigMap starts empty: the injector (watching it with the
        chart's RBAC) refuses MCP pods until the distributor publishes its key there."""
        kube = injector
        kube.create_namespace("chart-inj", labels={"palisade.dev/inject": "enabled"})

        def create() -> dict[str, Any]:
            pod: dict[str, Any] = kube.request(
                "POST",
                "/api/v1/namespaces/chart-inj/pods",
                _mcp_pod(f"mcp-{int(time.monotonic() * 1000)}"),
            )
            return pod

        deadline = time.monotonic() + 30
        while True:
            try:
                create()
                raise AssertionError("an MCP pod was admitted before any key was published")
            except ApiError as e:  # the API server may still hold the old caBundle
                if "signing key yet" in str(e):
                    break
                assert time.monotonic() < deadline, str(e)
                time.sleep(0.5)
        public = public_key_pem(generate_key()).decode()
        kube.request(  # what the distributor does at first start
            "PATCH",
            f"/api/v1/namespaces/{NS}/configmaps/palisade-trust",
            {"data": {"keys.pem": public}},
            content_type="application/merge-patch+json",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                pod = create()
                break
            except ApiError as e:
                assert time.monotonic() < deadline, str(e)
                time.sleep(0.5)
        assert "palisade-sidecar" in _container_names(pod)
        assert pod["metadata"]["annotations"].get("palisade.dev/status")
        containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
        (sidecar,) = [c for c in containers if c["name"] == "palisade-sidecar"]
        env = {e["name"]: e.get("value") for e in sidecar["env"]}
        assert env["PALISADE_TRUSTED_KEY"] == public.strip()
        assert env["PALISADE_DISTRIBUTOR"] == f"palisade-distributor.{NS}.svc:9401"

    def test_pods_outside_labelled_namespaces_are_left_alone(self, injector: ControlPlane) -> None:
        kube = injector
        kube.create_namespace("chart-plain-inj")
        pod = kube.request("POST", "/api/v1/namespaces/chart-plain-inj/pods", _mcp_pod("mcp"))
        assert _container_names(pod) == ["mcp"]

    def test_an_overwritten_ca_bundle_is_restored_through_the_charts_watch_rights(
        self, injector: ControlPlane
    ) -> None:
        kube = injector
        good = kube.request("GET", MWC_PATH)["webhooks"][0]["clientConfig"]["caBundle"]
        bad = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nbogus\n").decode()
        kube.request(
            "PATCH",
            MWC_PATH,
            [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": bad}],
            content_type="application/json-patch+json",
        )
        # Well inside the 60 s resync: only the watch (list/watch by name) can be this quick.
        deadline = time.monotonic() + 20
        while kube.request("GET", MWC_PATH)["webhooks"][0]["clientConfig"]["caBundle"] != good:
            assert time.monotonic() < deadline, "caBundle not restored"
            time.sleep(0.3)
