"""The admin token made at run time into the empty Secret the chart creates, against a
real kube-apiserver: replicas racing end with one token, a token already there is kept,
a Secret that never appears stops the start with a clear error (fail closed)."""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from distributor.admin_token import ensure_admin_token, token_in
from tests.harness import ControlPlane

pytestmark = pytest.mark.e2e

NAME = "palisade-distributor-admin"
_numbers = itertools.count()


async def _api(kube: ControlPlane) -> Any:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kube.kubeconfig), client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


def _namespace_with_empty_secret(kube: ControlPlane) -> str:
    ns = f"admin-token-{next(_numbers)}"
    kube.create_namespace(ns)
    kube.request(
        "POST", f"/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": NAME}, "type": "Opaque"}
    )
    return ns


async def test_racing_replicas_end_with_one_token_and_it_is_kept(kube: ControlPlane) -> None:
    ns = _namespace_with_empty_secret(kube)
    apis = [await _api(kube) for _ in range(4)]
    try:
        tokens = await asyncio.gather(*(ensure_admin_token(a, ns, NAME) for a in apis))
        stored = token_in(kube.request("GET", f"/api/v1/namespaces/{ns}/secrets/{NAME}")["data"])
        assert len(set(tokens)) == 1 and tokens[0] == stored
        assert len(stored) >= 64, "48 random bytes, urlsafe base64"
        again = await ensure_admin_token(apis[0], ns, NAME, generate=lambda: "never-used")
        assert again == stored, "a token already in the Secret is kept across restarts"
    finally:
        for a in apis:
            await a.close()


async def test_an_operators_token_in_the_secret_is_used_as_it_is(kube: ControlPlane) -> None:
    ns = f"admin-token-{next(_numbers)}"
    kube.create_namespace(ns)
    kube.request(
        "POST",
        f"/api/v1/namespaces/{ns}/secrets",
        {"metadata": {"name": NAME}, "data": {"token": base64.b64encode(b"ops-chosen\n").decode()}},
    )
    api = await _api(kube)
    try:
        assert await ensure_admin_token(api, ns, NAME) == "ops-chosen"
    finally:
        await api.close()


async def test_a_secret_that_never_appears_stops_the_start(kube: ControlPlane) -> None:
    ns = f"admin-token-{next(_numbers)}"
    kube.create_namespace(ns)
    api = await _api(kube)

    async def no_wait(_: float) -> None:
        return None

    try:
        with pytest.raises(RuntimeError, match=rf"{ns}/{NAME}: HTTP 404") as err:
            await ensure_admin_token(api, ns, NAME, sleep=no_wait, attempts=3)
        assert "token" not in str(err.value).split(":", 1)[1].replace(NAME, "")
    finally:
        await api.close()
