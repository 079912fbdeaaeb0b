"""The control plane the harness starts is a real one: auth, tokens, webhooks, controllers."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.harness import ApiError, ControlPlane, ControlPlaneConfig, HarnessError, pki

pytestmark = pytest.mark.e2e

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "labels": {"app": "x"}},
    "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]},
}


class TestApiServer:
    def test_the_api_server_is_ready_and_kubectl_reaches_it(self, kube: ControlPlane) -> None:
        assert kube.request("GET", "/version")["major"] == "1"
        out = kube.kubectl("get", "namespaces", "-o", "name").stdout.split()
        assert {"namespace/default", "namespace/kube-system"} <= set(out)

    def test_the_admin_client_certificate_is_accepted(self, kube: ControlPlane) -> None:
        ctx = ssl.create_default_context(cafile=str(kube.ca_file))
        ctx.load_cert_chain(str(kube.admin_cert_file), str(kube.admin_key_file))
        import urllib.request

        with urllib.request.urlopen(f"{kube.server}/api/v1/namespaces", context=ctx) as r:
            assert r.status == 200

    def test_an_unknown_token_is_refused(self, kube: ControlPlane) -> None:
        import urllib.error
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(kube.ca_file))
        req = urllib.request.Request(
            f"{kube.server}/api/v1/namespaces", headers={"Authorization": "Bearer nope"}
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, context=ctx)
        assert e.value.code == 401

    def test_errors_come_back_as_api_errors_with_the_status(self, kube: ControlPlane) -> None:
        with pytest.raises(ApiError) as e:
            kube.request("GET", "/api/v1/namespaces/does-not-exist")
        assert e.value.status == 404

    def test_namespaces_are_created_with_labels_and_a_default_service_account(
        self, kube: ControlPlane
    ) -> None:
        kube.create_namespace("harness-ns", labels={"palisade.dev/inject": "enabled"})
        kube.create_namespace("harness-ns", labels={"palisade.dev/inject": "required"})
        ns = kube.request("GET", "/api/v1/namespaces/harness-ns")
        assert ns["metadata"]["labels"]["palisade.dev/inject"] == "required"
        pod = kube.request("POST", "/api/v1/namespaces/harness-ns/pods", POD)
        assert pod["spec"]["serviceAccountName"] == "default"

    async def test_the_asyncio_client_factory_talks_to_the_server(self, kube: ControlPlane) -> None:
        from kubernetes_asyncio import client

        async with kube.api_client() as api:
            namespaces = await client.CoreV1Api(api).list_namespace()
        assert "kube-system" in {n.metadata.name for n in namespaces.items}


class TestServiceAccountTokens:
    def test_a_requested_token_passes_token_review_for_its_audience(
        self, kube: ControlPlane
    ) -> None:
        kube.create_namespace("harness-tokens")
        kube.request(
            "POST",
            "/api/v1/namespaces/harness-tokens/serviceaccounts",
            {"metadata": {"name": "agent"}},
        )
        token = kube.request(
            "POST",
            "/api/v1/namespaces/harness-tokens/serviceaccounts/agent/token",
            {"spec": {"audiences": ["palisade"], "expirationSeconds": 600}},
        )["status"]["token"]
        review = kube.request(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {"spec": {"token": token, "audiences": ["palisade"]}},
        )["status"]
        assert review["authenticated"] is True
        assert review["user"]["username"] == "system:serviceaccount:harness-tokens:agent"
        wrong = kube.request(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {"spec": {"token": token, "audiences": ["someone-else"]}},
        )["status"]
        assert not wrong.get("authenticated")


@pytest.fixture
async def labelling_webhook(tmp_path: Path, kube: ControlPlane) -> AsyncIterator[tuple[int, bytes]]:
    """An aiohttp TLS server that adds a label to every pod it is asked about."""
    ca = pki.make_ca("webhook-ca")
    serving = pki.issue(ca, "webhook", ip_addresses=("127.0.0.1",))
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))

    async def mutate(request: web.Request) -> web.Response:
        review: dict[str, Any] = await request.json()
        patch = [{"op": "add", "path": "/metadata/labels/mutated-by", "value": "harness-test"}]
        import base64

        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": review["request"]["uid"],
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                },
            }
        )

    app = web.Application()
    app.router.add_post("/mutate", mutate)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, ca.cert_pem
    finally:
        await runner.cleanup()


class TestAdmissionWebhooks:
    async def test_a_mutating_webhook_on_loopback_mutates_stored_pods(
        self, kube: ControlPlane, labelling_webhook: tuple[int, bytes]
    ) -> None:
        import base64

        port, ca_pem = labelling_webhook
        await asyncio.to_thread(kube.create_namespace, "harness-hook", {"hook": "on"})
        config = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "harness-test"},
            "webhooks": [
                {
                    "name": "label.harness.palisade.dev",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/mutate",
                        "caBundle": base64.b64encode(ca_pem).decode(),
                    },
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["pods"],
                        }
                    ],
                    "namespaceSelector": {"matchLabels": {"hook": "on"}},
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "timeoutSeconds": 5,
                }
            ],
        }
        await asyncio.to_thread(
            kube.request,
            "POST",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            config,
        )
        try:
            # The API server picks up new webhook configurations asynchronously.
            deadline = time.monotonic() + 30
            while True:
                name = f"p{int(time.monotonic() * 1000)}"
                pod = {**POD, "metadata": {"name": name, "labels": {"app": "x"}}}
                stored = await asyncio.to_thread(
                    kube.request, "POST", "/api/v1/namespaces/harness-hook/pods", pod
                )
                if stored["metadata"]["labels"].get("mutated-by") == "harness-test":
                    break
                assert time.monotonic() < deadline, "webhook never called"
                await asyncio.sleep(0.5)
        finally:
            await asyncio.to_thread(
                kube.request,
                "DELETE",
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/harness-test",
            )


class TestControllers:
    def test_a_deployment_gets_replica_sets_and_pods(
        self, kube_with_controllers: ControlPlane
    ) -> None:
        kube = kube_with_controllers
        kube.create_namespace("harness-deploy")
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "registry.invalid/web:1"}]},
                },
            },
        }
        kube.request("POST", "/apis/apps/v1/namespaces/harness-deploy/deployments", deployment)
        deadline = time.monotonic() + 90
        while True:
            pods = kube.request(
                "GET", "/api/v1/namespaces/harness-deploy/pods?labelSelector=app%3Dweb"
            )
            if len(pods["items"]) == 2:
                break
            assert time.monotonic() < deadline, "controller manager never made the pods"
            time.sleep(0.5)
        owner = pods["items"][0]["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "ReplicaSet"


class TestLifecycle:
    def test_stop_leaves_no_process_and_no_directory(self) -> None:
        plane = ControlPlane(ControlPlaneConfig(controllers=None))
        with plane:
            procs = plane.processes()
            assert {p.name for p in procs} == {"etcd", "kube-apiserver"}
            assert all(p.running() for p in procs)
            workdir = plane.workdir
        assert not any(p.running() for p in procs)
        assert not workdir.exists()

    def test_a_run_killed_outright_leaves_no_process_and_its_directory_is_swept(self) -> None:
        import os
        import signal
        import subprocess
        import sys

        code = (
            "from tests.harness import ControlPlane, ControlPlaneConfig\n"
            "cp = ControlPlane(ControlPlaneConfig(controllers=None)); cp.start()\n"
            "print(cp.workdir, *[p.pid for p in cp.processes()], flush=True)\n"
            "import time; time.sleep(600)\n"
        )
        repo = Path(__file__).resolve().parents[2]
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            text=True,
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)},
        )
        try:
            assert proc.stdout is not None
            workdir, *pids = proc.stdout.readline().split()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert len(pids) == 2
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{p}").exists() for p in pids):
            assert time.monotonic() < deadline, "a child outlived its killed parent"
            time.sleep(0.1)
        assert Path(workdir).exists()
        ControlPlane(ControlPlaneConfig(controllers=None)).stop()  # construction sweeps
        assert not Path(workdir).exists()

    def test_a_bad_flag_fails_start_with_the_server_log_and_cleans_up(self) -> None:
        plane = ControlPlane(
            ControlPlaneConfig(controllers=None, extra_apiserver_args=("--no-such-flag=1",))
        )
        with pytest.raises(HarnessError, match="no-such-flag"):
            plane.start()
        assert plane.processes() == []
        assert not plane.workdir.exists()
