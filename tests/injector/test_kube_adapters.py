"""The Kubernetes adapters against the real API server: namespace labels (cached,
errors translated) and the caBundle keeper."""

from __future__ import annotations

import base64

import pytest
from kubernetes_asyncio import client

from injector.kube import KubeNamespaces, server_version
from injector.tls import CABundleKeeper
from injector.webhook import NamespaceLookupError
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.e2e


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_namespace_labels_are_read_cached_and_missing_ones_are_none(
    kube: ControlPlane,
) -> None:
    kube.create_namespace("inj-adapter", labels={"palisade.dev/inject": "enabled"})
    clock = Clock()
    async with kube.api_client() as api:
        lookup = KubeNamespaces(api, ttl=5, clock=clock)
        labels = await lookup.labels("inj-adapter")
        assert labels is not None and labels["palisade.dev/inject"] == "enabled"
        assert await lookup.labels("inj-does-not-exist") is None
        kube.create_namespace("inj-adapter", labels={"palisade.dev/inject": "required"})
        cached = await lookup.labels("inj-adapter")
        assert cached is not None and cached["palisade.dev/inject"] == "enabled"
        clock.now = 6
        fresh = await lookup.labels("inj-adapter")
        assert fresh is not None and fresh["palisade.dev/inject"] == "required"


async def test_an_unauthorised_lookup_becomes_a_lookup_error(kube: ControlPlane) -> None:
    configuration = kube.configuration()
    configuration.api_key = {"BearerToken": "not-a-valid-token"}
    async with client.ApiClient(configuration) as api:
        with pytest.raises(NamespaceLookupError, match="HTTP 401"):
            await KubeNamespaces(api).labels("default")


async def test_an_unreachable_api_server_becomes_a_lookup_error() -> None:
    configuration = client.Configuration(host="https://127.0.0.1:1")
    async with client.ApiClient(configuration) as api:
        with pytest.raises(NamespaceLookupError):
            await KubeNamespaces(api, timeout=1).labels("default")


async def test_the_server_version_is_read(kube: ControlPlane) -> None:
    async with kube.api_client() as api:
        major, minor = await server_version(api)
    assert major == "1" and int(minor.rstrip("+")) >= 29


async def test_the_keeper_patches_every_webhook_once_and_ignores_a_missing_configuration(
    kube: ControlPlane,
) -> None:
    name = "palisade-keeper-test"
    hooks = [
        {
            "name": f"{n}.palisade.dev",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "namespaceSelector": {"matchLabels": {"palisade.dev/e2e": "never-matches"}},
            "rules": [
                {
                    "operations": ["CREATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                }
            ],
        }
        for n in ("one", "two")
    ]
    path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    kube.request(
        "POST",
        path,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": hooks,
        },
    )
    try:
        async with kube.api_client() as api:
            keeper = CABundleKeeper(api, name)
            assert await keeper.ensure("PEM-CA\n") is True
            assert await keeper.ensure("PEM-CA\n") is False, "already right: no patch"
            assert await CABundleKeeper(api, "palisade-absent").ensure("PEM-CA\n") is False
        doc = kube.request("GET", f"{path}/{name}")
        bundles = [base64.b64decode(h["clientConfig"]["caBundle"]) for h in doc["webhooks"]]
        assert bundles == [b"PEM-CA\n", b"PEM-CA\n"]
    finally:
        kube.request("DELETE", f"{path}/{name}")
