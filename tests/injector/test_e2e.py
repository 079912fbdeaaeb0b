"""The injector against a real kube-apiserver: pods are created through the API and
the stored pod is what is asserted.

A real ``palisade injector`` process (self-signed TLS, shared Secret) is
registered through a real MutatingWebhookConfiguration whose caBundle it fills
itself; the API server calls it over HTTPS on 127.0.0.1. Namespaces used here
also carry ``palisade.dev/e2e=injector`` so that this configuration touches no
other test's namespaces.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import json
import re
import ssl
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from injector import certs
from tests.harness.controlplane import ApiError, ControlPlane
from tests.harness.process import ManagedProcess, free_port

pytestmark = pytest.mark.e2e

OWN_NAMESPACE = "palisade-inj-e2e"
CONFIG = "palisade-injector-e2e"
SECRET = "palisade-injector-e2e-tls"
SIDECAR = "palisade-sidecar"


def webhook_configuration(port: int, name: str = CONFIG, group: str = "injector") -> dict[str, Any]:
    """The same shape as the chart's, pointed at 127.0.0.1 instead of a Service."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "inject.palisade.dev",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate"},
                "rules": [
                    {
                        "operations": ["CREATE", "UPDATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods", "pods/ephemeralcontainers"],
                        "scope": "Namespaced",
                    }
                ],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": 5,
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "palisade.dev/inject",
                            "operator": "In",
                            "values": ["enabled", "required"],
                        },
                        {"key": "palisade.dev/e2e", "operator": "In", "values": [group]},
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": [
                                "kube-system",
                                "kube-public",
                                "kube-node-lease",
                                OWN_NAMESPACE,
                            ],
                        },
                    ]
                },
                "objectSelector": {
                    "matchExpressions": [{"key": "palisade.dev/mcp-server", "operator": "Exists"}]
                },
            }
        ],
    }


class Injector:
    """A ``palisade injector`` process pointed at the test control plane."""

    def __init__(
        self,
        kube: ControlPlane,
        port: int,
        workdir: Path,
        config: str = CONFIG,
        secret: str = SECRET,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.kube = kube
        self.port = port
        self.workdir = workdir
        self.config = config
        self.secret = secret
        self.extra = extra
        self.proc: ManagedProcess | None = None

    def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "palisade.cli.main",
            "injector",
            "--kubeconfig",
            str(self.kube.kubeconfig),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--namespace",
            OWN_NAMESPACE,
            "--webhook-config",
            self.config,
            "--tls-secret",
            self.secret,
            "--tls-dir",
            str(self.workdir / "tls"),
            "--extra-san",
            "127.0.0.1",
            "--resync-seconds",
            "2",
            "--namespace-cache-seconds",
            "0",
            "--sidecar-image",
            "palisade:e2e",
            *self.extra,
        ]
        self.proc = ManagedProcess(
            "injector", argv, self.workdir / "injector.log", env=self.kube.env()
        )
        self.proc.start()
        deadline = time.monotonic() + 30
        while not self.ready():
            if not self.proc.running() or time.monotonic() > deadline:
                raise RuntimeError(f"injector did not become ready:\n{self.proc.log_tail()}")
            time.sleep(0.2)

    def ca_bundle(self) -> bytes:
        doc = self.kube.request(
            "GET",
            f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{self.config}",
        )
        return base64.b64decode(doc["webhooks"][0]["clientConfig"].get("caBundle", ""))

    def ready(self) -> bool:
        bundle = self.ca_bundle()
        if not bundle:
            return False
        context = ssl.create_default_context(cadata=bundle.decode())
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{self.port}/readyz", context=context, timeout=2
            ) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def metric(self, name: str) -> dict[str, float]:
        """One labelled counter from /metrics, by its ``result`` label."""
        context = ssl.create_default_context(cadata=self.ca_bundle().decode())
        with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/metrics", context=context) as r:
            text = r.read().decode()
        values: dict[str, float] = {"injected": 0.0, "allowed": 0.0, "refused": 0.0}
        for line in text.splitlines():
            if line.startswith(name + "{"):
                label = line.split('result="')[1].split('"')[0]
                values[label] = float(line.rsplit(" ", 1)[1])
        return values

    def log(self) -> str:
        return self.proc.log_tail(60) if self.proc else ""


@contextlib.contextmanager
def running_injector(
    kube: ControlPlane, config: str = CONFIG, group: str = "injector", secret: str = SECRET
) -> Iterator[Injector]:
    """An injector process behind its own webhook configuration (for ``group``'s
    namespaces), both removed afterwards."""
    kube.create_namespace(OWN_NAMESPACE)
    port = free_port()
    path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    kube.request("POST", path, webhook_configuration(port, config, group))
    with tempfile.TemporaryDirectory(prefix="palisade-injector-") as tmp:
        proc = Injector(kube, port, Path(tmp), config, secret)
        try:
            proc.start()
            yield proc
        finally:
            proc.stop()
            kube.request("DELETE", f"{path}/{config}")


@pytest.fixture(scope="module")
def injector(kube: ControlPlane) -> Iterator[Injector]:
    with running_injector(kube) as proc:
        yield proc


def namespace(kube: ControlPlane, mode: str | None, group: str = "injector", **extra: str) -> str:
    name = f"inj-{mode or 'plain'}-{uuid.uuid4().hex[:6]}"
    labels = {"palisade.dev/e2e": group, **extra}
    if mode:
        labels["palisade.dev/inject"] = mode
    kube.create_namespace(name, labels=labels)
    return name


def mcp_pod(name: str = "mcp", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "containers": [
            {
                "name": "server",
                "image": "example/mcp:1",
                "ports": [{"name": "mcp", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": "mcp"}},
            }
        ]
    }
    body.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"palisade.dev/mcp-server": "kubernetes-mcp"}},
        "spec": body,
    }


def create(kube: ControlPlane, ns: str, pod: dict[str, Any]) -> dict[str, Any]:
    """Create the pod and return it as stored (read back from the API)."""
    kube.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)
    stored: dict[str, Any] = kube.request(
        "GET", f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}"
    )
    return stored


def sidecars(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == SIDECAR]


def status(pod: dict[str, Any]) -> dict[str, Any]:
    return json.loads(pod["metadata"].get("annotations", {}).get("palisade.dev/status", "{}"))


def normalized(containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Containers with the per-pod ServiceAccount token volume name made generic."""
    text = json.dumps(containers)
    return list(json.loads(re.sub(r"kube-api-access-[a-z0-9]+", "kube-api-access", text)))


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# --- registration -----------------------------------------------------------------


def test_the_webhook_is_registered_with_the_ca_it_generated(
    kube: ControlPlane, injector: Injector
) -> None:
    secret = kube.request("GET", f"/api/v1/namespaces/{OWN_NAMESPACE}/secrets/{SECRET}")
    ca = base64.b64decode(secret["data"]["ca.crt"])
    assert injector.ca_bundle() == ca
    assert b"BEGIN CERTIFICATE" in ca


# --- selection ----------------------------------------------------------------------


def test_an_mcp_pod_in_an_enabled_namespace_gets_a_native_sidecar(
    kube: ControlPlane, injector: Injector
) -> None:
    pod = create(kube, namespace(kube, "enabled"), mcp_pod())
    (side,) = sidecars(pod)
    inits = [c["name"] for c in pod["spec"]["initContainers"]]
    assert inits == ["palisade-init", SIDECAR], "the packet filter first, then the sidecar"
    assert side["restartPolicy"] == "Always"
    assert side["ports"][0]["name"] == "mcp"
    assert "http://127.0.0.1:8080" in side["args"]
    server = pod["spec"]["containers"][0]
    assert server["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    # the kubelet's probe of the protected port now goes through the sidecar
    assert server["readinessProbe"]["httpGet"] == {
        "path": "/palisade/app-health/server/readinessProbe",
        "port": side["ports"][0]["containerPort"],
        "scheme": "HTTP",
    }
    firewall = pod["spec"]["initContainers"][0]
    assert firewall["args"] == ["pod-firewall", "--protect-port", "8080"]
    assert firewall["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert side["securityContext"]["readOnlyRootFilesystem"] is True
    assert side["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"palisade-socket", "palisade-bundle-cache"} <= {
        v["name"] for v in pod["spec"]["volumes"]
    }
    assert status(pod)["state"] == "injected"
    assert status(pod)["mode"] == "native"
    token = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert any(m["mountPath"] == token for m in side["volumeMounts"]), "token mount reused"


def test_a_pod_in_an_unlabelled_namespace_is_untouched(
    kube: ControlPlane, injector: Injector
) -> None:
    pod = create(kube, namespace(kube, None), mcp_pod())
    assert sidecars(pod) == []
    assert pod["spec"]["containers"][0]["ports"][0]["name"] == "mcp"


def test_a_pod_that_is_not_an_mcp_server_is_untouched(
    kube: ControlPlane, injector: Injector
) -> None:
    body = mcp_pod()
    body["metadata"]["labels"] = {"app": "web"}
    assert sidecars(create(kube, namespace(kube, "enabled"), body)) == []


def test_an_opt_out_is_honoured_in_an_enabled_namespace(
    kube: ControlPlane, injector: Injector
) -> None:
    body = mcp_pod()
    body["metadata"]["annotations"] = {"palisade.dev/inject": "false"}
    assert sidecars(create(kube, namespace(kube, "enabled"), body)) == []


def test_an_opt_out_is_refused_in_a_required_namespace(
    kube: ControlPlane, injector: Injector
) -> None:
    ns = namespace(kube, "required")
    body = mcp_pod()
    body["metadata"]["annotations"] = {"palisade.dev/inject": "false"}
    with pytest.raises(ApiError) as refused:
        create(kube, ns, body)
    assert refused.value.status == 403
    assert "requires the Palisade sidecar" in str(refused.value)
    assert len(sidecars(create(kube, ns, mcp_pod("governed")))) == 1


def test_a_host_network_pod_is_skipped_with_a_reason(
    kube: ControlPlane, injector: Injector
) -> None:
    pod = create(kube, namespace(kube, "enabled"), mcp_pod(hostNetwork=True))
    assert sidecars(pod) == []
    assert status(pod)["state"] == "skipped"
    assert "hostNetwork" in status(pod)["reason"]


# --- pod shapes -----------------------------------------------------------------------


def test_an_existing_native_sidecar_and_init_containers_are_kept(
    kube: ControlPlane, injector: Injector
) -> None:
    inits = [
        {"name": "mesh-proxy", "image": "mesh:1", "restartPolicy": "Always"},
        {"name": "migrate", "image": "migrate:1"},
    ]
    pod = create(kube, namespace(kube, "enabled"), mcp_pod(initContainers=inits))
    names = [c["name"] for c in pod["spec"]["initContainers"]]
    assert names == ["palisade-init", SIDECAR, "mesh-proxy", "migrate"]


def test_multiple_containers_and_ports(kube: ControlPlane, injector: Injector) -> None:
    body = mcp_pod()
    body["spec"]["containers"] = [
        {
            "name": "shipper",
            "image": "shipper:1",
            "ports": [{"name": "metrics", "containerPort": 9090}],
        },
        {
            "name": "server",
            "image": "example/mcp:1",
            "ports": [
                {"name": "admin", "containerPort": 8081},
                {"name": "mcp", "containerPort": 3000},
            ],
        },
    ]
    pod = create(kube, namespace(kube, "enabled"), body)
    (side,) = sidecars(pod)
    assert "http://127.0.0.1:3000" in side["args"]
    server = pod["spec"]["containers"][1]
    assert [p.get("name") for p in server["ports"]] == ["admin", None]
    assert pod["spec"]["containers"][0]["ports"][0]["name"] == "metrics"
    assert {
        "name": "palisade-socket",
        "mountPath": "/var/run/palisade",
        "readOnly": True,
    } in server["volumeMounts"]


def test_a_pod_without_ports(kube: ControlPlane, injector: Injector) -> None:
    body = mcp_pod()
    del body["spec"]["containers"][0]["ports"]
    del body["spec"]["containers"][0]["readinessProbe"]
    pod = create(kube, namespace(kube, "enabled"), body)
    (side,) = sidecars(pod)
    assert side["ports"] == [{"name": "mcp", "containerPort": 9400, "protocol": "TCP"}]
    assert "http://127.0.0.1:8080" in side["args"]


def test_the_injected_pod_passes_the_restricted_pod_security_standard(
    kube: ControlPlane, injector: Injector
) -> None:
    restricted = {"pod-security.kubernetes.io/enforce": "restricted"}
    ns = namespace(kube, "enabled", **restricted)
    body = mcp_pod()
    body["spec"]["containers"][0]["securityContext"] = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod = create(kube, ns, body)
    assert len(sidecars(pod)) == 1
    # The packet filter needs NET_ADMIN and root, which the standard forbids: left out,
    # and said so, rather than having the API server refuse the pod.
    assert "palisade-init" not in [c["name"] for c in pod["spec"]["initContainers"]]
    assert status(pod)["podFirewall"] == "pod-security-restricted"


def test_the_packet_filter_is_accepted_where_pod_security_is_privileged(
    kube: ControlPlane, injector: Injector
) -> None:
    ns = namespace(kube, "required", **{"pod-security.kubernetes.io/enforce": "privileged"})
    pod = create(kube, ns, mcp_pod())
    assert pod["spec"]["initContainers"][0]["name"] == "palisade-init"
    assert status(pod)["podFirewall"] == "enabled"


@pytest.fixture(scope="module")
def regular_injector(kube: ControlPlane, injector: Injector) -> Iterator[Injector]:
    """A second injector told never to use native sidecars, for its own namespaces."""
    name = "palisade-injector-e2e-regular"
    port = free_port()
    path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    kube.request("POST", path, webhook_configuration(port, name, "regular"))
    with tempfile.TemporaryDirectory(prefix="palisade-injector-") as tmp:
        proc = Injector(kube, port, Path(tmp), name, f"{name}-tls", ("--native-sidecar", "never"))
        try:
            proc.start()
            yield proc
        finally:
            proc.stop()
            kube.request("DELETE", f"{path}/{name}")


def test_never_native_mode_adds_a_regular_container_the_api_server_accepts(
    kube: ControlPlane, regular_injector: Injector
) -> None:
    inits = [{"name": "migrate", "image": "migrate:1"}]
    pod = create(kube, namespace(kube, "enabled", "regular"), mcp_pod(initContainers=inits))
    assert [c["name"] for c in pod["spec"]["containers"]] == ["server", SIDECAR]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["palisade-init", "migrate"]
    assert "restartPolicy" not in pod["spec"]["containers"][1]
    assert status(pod)["mode"] == "container"


# --- certificates and failure -------------------------------------------------------


def test_an_overwritten_ca_bundle_is_patched_back(kube: ControlPlane, injector: Injector) -> None:
    good = injector.ca_bundle()
    path = f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIG}"
    bogus = base64.b64encode(
        b"-----BEGIN CERTIFICATE-----\nbogus\n-----END CERTIFICATE-----\n"
    ).decode()
    kube.request(
        "PATCH",
        path,
        [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": bogus}],
        content_type="application/json-patch+json",
    )
    wait_for(lambda: injector.ca_bundle() == good, 15, "caBundle to be restored")
    assert len(sidecars(create(kube, namespace(kube, "enabled"), mcp_pod()))) == 1


def served_certificate(port: int) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", port)).encode())


def read_secret(kube: ControlPlane) -> tuple[certs.CertSet, dict[str, Any]]:
    secret = kube.request("GET", f"/api/v1/namespaces/{OWN_NAMESPACE}/secrets/{SECRET}")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    cert_set = certs.CertSet(
        ca_cert=data["ca.crt"],
        ca_key=data["ca.key"],
        cert=data["tls.crt"],
        key=data["tls.key"],
        previous_ca=data.get("previous-ca.crt", ""),
    )
    return cert_set, secret


def write_secret(kube: ControlPlane, secret: dict[str, Any], cert_set: certs.CertSet) -> None:
    secret["data"] = {
        "ca.crt": cert_set.ca_cert,
        "ca.key": cert_set.ca_key,
        "tls.crt": cert_set.cert,
        "tls.key": cert_set.key,
        "previous-ca.crt": cert_set.previous_ca,
    }
    secret["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in secret["data"].items()}
    kube.request("PUT", f"/api/v1/namespaces/{OWN_NAMESPACE}/secrets/{SECRET}", secret)


def test_a_serving_certificate_near_expiry_is_rotated_and_served(
    kube: ControlPlane, injector: Injector
) -> None:
    cert_set, secret = read_secret(kube)
    now = dt.datetime.now(dt.UTC)
    names = certs.service_names("palisade-injector", OWN_NAMESPACE, ("127.0.0.1",))
    short, key = certs.issue(cert_set.ca_cert, cert_set.ca_key, names, now, 5)
    write_secret(kube, secret, dataclasses.replace(cert_set, cert=short, key=key))

    def reissued() -> bool:
        current, _ = read_secret(kube)
        return current.cert != short and certs.not_after(current.cert) > now + dt.timedelta(days=60)

    wait_for(reissued, 20, "the injector to reissue the certificate in the Secret")
    rotated, _ = read_secret(kube)
    assert rotated.ca_cert == cert_set.ca_cert
    wanted = x509.load_pem_x509_certificate(rotated.cert.encode())
    wait_for(lambda: served_certificate(injector.port) == wanted, 20, "the new certificate served")
    assert len(sidecars(create(kube, namespace(kube, "enabled"), mcp_pod()))) == 1


def test_a_ca_near_expiry_is_replaced_with_an_overlap_in_the_ca_bundle(
    kube: ControlPlane, injector: Injector
) -> None:
    names = certs.service_names("palisade-injector", OWN_NAMESPACE, ("127.0.0.1",))
    old = certs.create(names, dt.datetime.now(dt.UTC), 20, 10)
    _, secret = read_secret(kube)
    write_secret(kube, secret, old)

    def rotated() -> bool:
        current, _ = read_secret(kube)
        return current.previous_ca == old.ca_cert

    wait_for(rotated, 20, "a new CA")
    current, _ = read_secret(kube)
    wait_for(
        lambda: injector.ca_bundle().decode() == current.ca_cert + old.ca_cert,
        20,
        "both CAs in caBundle",
    )
    issuer = served_certificate(injector.port).issuer
    assert issuer == x509.load_pem_x509_certificate(current.ca_cert.encode()).subject
    assert len(sidecars(create(kube, namespace(kube, "enabled"), mcp_pod()))) == 1


def test_two_replicas_share_one_ca_and_leave_the_ca_bundle_alone(
    kube: ControlPlane, injector: Injector, tmp_path: Path
) -> None:
    bundle = injector.ca_bundle()
    second = Injector(kube, free_port(), tmp_path)
    second.start()
    try:
        time.sleep(5)  # a few resync periods: no ping-pong on caBundle
        assert injector.ca_bundle() == bundle
        first_ca, _ = read_secret(kube)
        ca = x509.load_pem_x509_certificate(first_ca.ca_cert.encode())
        assert served_certificate(second.port).issuer == ca.subject
        assert served_certificate(injector.port).issuer == ca.subject
    finally:
        second.stop()


def test_with_the_webhook_down_labelled_namespaces_refuse_pods_and_others_do_not(
    kube: ControlPlane, injector: Injector
) -> None:
    enabled, plain = namespace(kube, "enabled"), namespace(kube, None)
    injector.stop()
    assert injector.proc is not None
    assert injector.proc.exit_code() == 0, "SIGTERM is a clean shutdown"
    try:
        with pytest.raises(ApiError) as refused:
            create(kube, enabled, mcp_pod())
        assert "inject.palisade.dev" in str(refused.value)
        assert sidecars(create(kube, plain, mcp_pod())) == []
    finally:
        injector.start()
    assert len(sidecars(create(kube, enabled, mcp_pod("after-restart")))) == 1


# --- controllers and other injectors ------------------------------------------------


def test_a_deployments_pods_are_injected_like_bare_pods(
    kube_with_controllers: ControlPlane, injector: Injector
) -> None:
    kube = kube_with_controllers
    ns = namespace(kube, "enabled")
    template = mcp_pod()
    bare = create(kube, ns, template)
    labels = {"palisade.dev/mcp-server": "kubernetes-mcp", "app": "mcp"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mcp"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "mcp"}},
            "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
        },
    }
    kube.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment)

    def pods() -> list[dict[str, Any]]:
        found = kube.request("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dmcp")
        return list(found["items"])

    wait_for(lambda: len(pods()) == 2, 60, "the Deployment's pods")
    for pod in pods():
        assert pod["metadata"]["generateName"].startswith("mcp-")
        assert normalized(sidecars(pod)) == normalized(sidecars(bare))
        assert normalized(pod["spec"]["containers"]) == normalized(bare["spec"]["containers"])
        assert status(pod) == status(bare)


class OtherInjector:
    """Another team's mutating webhook (stdlib HTTPS server in a thread) that adds a
    container of its own: it runs after ours, so the API server reinvokes ours."""

    def __init__(self) -> None:
        import http.server
        import threading

        from injector import certs

        cert_set = certs.create(["127.0.0.1"], _now(), 1, 1)
        self.ca = cert_set.ca_cert
        self.calls = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.calls += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ops = [
                    {
                        "op": "add",
                        "path": "/spec/containers/-",
                        "value": {
                            "name": "other-agent",
                            "image": "other:1",
                            "ports": [{"name": "other", "containerPort": 7000}],
                        },
                    }
                ]
                review = {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": {
                        "uid": body["request"]["uid"],
                        "allowed": True,
                        "patchType": "JSONPatch",
                        "patch": base64.b64encode(json.dumps(ops).encode()).decode(),
                    },
                }
                data = json.dumps(review).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.dir = tempfile.TemporaryDirectory(prefix="other-injector-")
        cert, key = Path(self.dir.name, "tls.crt"), Path(self.dir.name, "tls.key")
        cert.write_text(cert_set.cert)
        key.write_text(cert_set.key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.dir.cleanup()


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def test_beside_another_injector_the_reinvocation_adds_nothing_twice(
    kube: ControlPlane, injector: Injector
) -> None:
    other = OtherInjector()
    path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    config = webhook_configuration(other.port)
    config["metadata"]["name"] = "zz-other-injector-e2e"  # sorts after ours: runs second
    hook = config["webhooks"][0]
    hook["name"] = "other.example.com"
    hook["clientConfig"] = {
        "url": f"https://127.0.0.1:{other.port}/",
        "caBundle": base64.b64encode(other.ca.encode()).decode(),
    }
    hook["reinvocationPolicy"] = "Never"
    kube.request("POST", path, config)
    try:
        before = injector.metric("palisade_injector_reviews_total")
        pod = create(kube, namespace(kube, "enabled"), mcp_pod())
        after = injector.metric("palisade_injector_reviews_total")
    finally:
        kube.request("DELETE", f"{path}/zz-other-injector-e2e")
        other.close()
    names = [c["name"] for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]]
    assert sorted(names) == sorted(["server", "other-agent", "palisade-init", SIDECAR])
    assert other.calls == 1
    assert after["injected"] - before["injected"] == 1
    assert after["allowed"] - before["allowed"] == 1, "ours was reinvoked and changed nothing"
