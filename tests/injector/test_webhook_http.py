"""The aiohttp webhook over real TLS on a loopback port, with namespace labels from a dict."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from injector import certs
from injector.review import decode_patch
from injector.settings import InjectionSettings
from injector.tls import ServingContext
from injector.webhook import NamespaceLookupError, StaticNamespaces, Webhook
from tests.injector.pods import ENABLED, pod, review


class BrokenNamespaces:
    async def labels(self, namespace: str) -> Mapping[str, str] | None:
        raise NamespaceLookupError("HTTP 503 Service Unavailable")


@dataclass
class Server:
    url: str
    client: aiohttp.ClientSession
    webhook: Webhook

    async def post(self, body: bytes) -> tuple[int, dict[str, object]]:
        async with self.client.post(
            f"{self.url}/mutate", data=body, headers={"Content-Type": "application/json"}
        ) as r:
            return r.status, await r.json()


async def start(webhook: Webhook) -> AsyncIterator[Server]:
    with tempfile.TemporaryDirectory() as tmp:
        cert_set = certs.create(["127.0.0.1"], dt.datetime.now(dt.UTC), 1, 1)
        serving = ServingContext(tmp)
        serving.load_pem(cert_set.cert, cert_set.key, cert_set.ca_cert)
        runner = web.AppRunner(webhook.app(), handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=serving.context)
        await site.start()
        port = runner.addresses[0][1]
        client_ctx = ssl.create_default_context(cadata=cert_set.ca_cert)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as client:
            try:
                yield Server(f"https://127.0.0.1:{port}", client, webhook)
            finally:
                await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    hook = Webhook(
        InjectionSettings(native_sidecar="always"),
        StaticNamespaces({"payments": ENABLED}),
        max_body_bytes=64 * 1024,
    )
    async for s in start(hook):
        yield s


async def test_a_pod_review_over_https_gets_a_patch(server: Server) -> None:
    status, answer = await server.post(json.dumps(review(pod())).encode())
    assert status == 200
    assert answer["response"]["uid"] == "0d1e2f3a-uid"  # type: ignore[index]
    assert any(op["path"] == "/spec/initContainers" for op in decode_patch(answer))  # type: ignore[arg-type]


async def test_a_body_that_is_not_json_gets_a_well_formed_refusal(server: Server) -> None:
    status, answer = await server.post(b"{not json")
    assert status == 200
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"] == {  # type: ignore[comparison-overlap]
        "uid": "",
        "allowed": False,
        "status": {
            "code": 400,
            "message": "palisade injector: the body is not JSON",
            "reason": "BadRequest",
        },
    }


async def test_a_review_without_its_pod_is_refused_with_its_uid(server: Server) -> None:
    status, answer = await server.post(json.dumps(review(None)).encode())
    assert status == 200
    response = answer["response"]
    assert response["uid"] == "0d1e2f3a-uid"  # type: ignore[index]
    assert response["allowed"] is False  # type: ignore[index]


async def test_an_oversized_body_gets_a_well_formed_refusal(server: Server) -> None:
    big = review(pod(annotations={"padding": "x" * 100_000}))
    _, answer = await server.post(json.dumps(big).encode())
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["allowed"] is False  # type: ignore[index]
    assert answer["response"]["status"]["code"] == 413  # type: ignore[index]


async def test_an_unknown_namespace_is_not_injected(server: Server) -> None:
    _, answer = await server.post(json.dumps(review(pod(), namespace="elsewhere")).encode())
    assert answer["response"] == {"uid": "0d1e2f3a-uid", "allowed": True}


async def test_health_readiness_and_metrics_answer(server: Server) -> None:
    await server.post(json.dumps(review(pod())).encode())
    for path, fragment in (
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/metrics", 'palisade_injector_reviews_total{result="injected"} 1.0'),
    ):
        async with server.client.get(server.url + path) as r:
            assert r.status == 200
            assert fragment in await r.text()


async def test_when_namespace_labels_cannot_be_read_the_pod_is_refused() -> None:
    async for s in start(Webhook(InjectionSettings(), BrokenNamespaces())):
        _, answer = await s.post(json.dumps(review(pod())).encode())
        response = answer["response"]
        assert response["allowed"] is False  # type: ignore[index]
        assert "cannot read the labels of namespace payments" in response["status"]["message"]  # type: ignore[index]
        _, other = await s.post(json.dumps(review(pod(), namespace="kube-system")).encode())
        assert other["response"]["allowed"] is True  # type: ignore[index]


async def test_not_ready_until_a_certificate_is_loaded() -> None:
    async for s in start(Webhook(InjectionSettings(), StaticNamespaces({}), ready=lambda: False)):
        async with s.client.get(s.url + "/readyz") as r:
            assert r.status == 503
