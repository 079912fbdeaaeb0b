"""Per-agent cluster credentials minted by the real kube-apiserver's TokenRequest API.

:class:`KubeTokenCredential` with its real minter, authenticated as the sidecar's
own ServiceAccount (``palisade-sidecar``, allowed to mint for ``sre-agent-payments``
only), against the session's control plane (tests/harness/controlplane.py). The
clock is injected where a test needs time to pass.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from palisade.bundle.schema import ClusterCredential
from sidecar.credentials import CredentialUnavailable
from sidecar.credentials.caller import calling_as
from sidecar.credentials.kube_token import KubeTokenCredential, TokenRequestSettings
from sidecar.identity import Principal
from tests.harness import ControlPlane
from tests.kube_mcp.cluster import (
    AGENT_ACCOUNT,
    AGENT_USERNAME,
    NAMESPACE,
    OTHER_ACCOUNT,
    PaymentsCluster,
    set_up,
    username_of,
)

pytestmark = pytest.mark.e2e

AGENT = "sre-agent-payments"
ACCOUNTS = {
    AGENT: ClusterCredential(f"{NAMESPACE}/{AGENT_ACCOUNT}"),
    "sre-agent-payments-2": ClusterCredential(f"{NAMESPACE}/{AGENT_ACCOUNT}"),
    # configured in the bundle, but the sidecar's Role does not name this account
    "rogue-agent": ClusterCredential(f"{NAMESPACE}/{OTHER_ACCOUNT}"),
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def principal(agent: str) -> Principal:
    return Principal(agent=agent, tenant="payments", on_behalf_of="", subject="bot", issuer="t")


@pytest.fixture(scope="module")
def cluster(kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> PaymentsCluster:
    return set_up(kube, tmp_path_factory.mktemp("payments"))


def settings(cluster: PaymentsCluster, token_file: Path | None = None) -> TokenRequestSettings:
    return TokenRequestSettings(
        api_server=cluster.kube.server,
        ca_file=str(cluster.kube.ca_file),
        token_file=str(token_file or cluster.sidecar_token_file),
    )


@pytest.fixture
async def credential(cluster: PaymentsCluster) -> AsyncIterator[KubeTokenCredential]:
    source = KubeTokenCredential(settings(cluster), ACCOUNTS.get)
    yield source
    await source.aclose()


async def token_as(source: KubeTokenCredential, agent: str) -> str:
    with calling_as(principal(agent)):
        name, value = await source.header()
    assert name == "Authorization" and value.startswith("Bearer ")
    return value.removeprefix("Bearer ")


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    doc: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return doc


def api_status(kube: ControlPlane, token: str, method: str, path: str, body: Any) -> int:
    """The API server's status for one request made with ``token`` (not the admin's)."""
    request = urllib.request.Request(
        kube.server + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=str(kube.ca_file))
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_the_token_is_minted_for_the_calling_agents_own_service_account(
    credential: KubeTokenCredential, cluster: PaymentsCluster
) -> None:
    token = await token_as(credential, AGENT)
    assert username_of(cluster.kube, token) == AGENT_USERNAME
    assert credential.identity_of(AGENT) == AGENT_USERNAME
    c = claims(token)
    assert c["exp"] - c["iat"] == 600  # minutes, not a standing credential
    assert c["kubernetes.io"]["serviceaccount"]["name"] == AGENT_ACCOUNT


async def test_the_sidecar_may_mint_only_for_the_accounts_its_role_names(
    credential: KubeTokenCredential,
) -> None:
    with calling_as(principal("rogue-agent")), pytest.raises(CredentialUnavailable) as err:
        await credential.header()
    assert "refused to mint a token for ServiceAccount payments/other-agent" in str(err.value)
    assert not err.value.public  # the reason goes to the sidecar's log, not to the agent
    assert credential.stats.failures == 1 and credential.stats.mints == 0


async def test_an_agent_without_a_cluster_credential_gets_none_and_nothing_is_minted(
    credential: KubeTokenCredential,
) -> None:
    with calling_as(principal("search-indexer")), pytest.raises(CredentialUnavailable) as err:
        await credential.header()
    assert "agent 'search-indexer' has no cluster credential" in str(err.value)
    assert err.value.public
    with pytest.raises(CredentialUnavailable, match="no authenticated caller"):
        await credential.header()  # nobody bound: nothing for anybody
    assert credential.identity_of("search-indexer") is None
    assert credential.stats.mints == 0 and credential.stats.failures == 0


async def test_tokens_are_cached_per_agent_and_refreshed_before_they_expire(
    cluster: PaymentsCluster,
) -> None:
    clock = FakeClock()
    source = KubeTokenCredential(settings(cluster), ACCOUNTS.get, clock=clock)
    try:
        first = await token_as(source, AGENT)
        clock.now += 300
        assert await token_as(source, AGENT) == first  # cached: no second TokenRequest
        assert source.stats.mints == 1
        other = await token_as(source, "sre-agent-payments-2")  # another agent: its own
        assert other != first and source.stats.by_agent == {AGENT: 1, "sre-agent-payments-2": 1}

        clock.now += 200  # 500 s of 600: past the refresh point (0.8), far from the end
        assert await token_as(source, AGENT) == first  # still served, while ...
        for _ in range(100):  # ... one background TokenRequest mints the next
            if source.stats.by_agent[AGENT] == 2:
                break
            await asyncio.sleep(0.05)
        assert source.stats.by_agent[AGENT] == 2
        second = await token_as(source, AGENT)
        assert second != first
        assert claims(second)["iat"] >= claims(first)["iat"]
        assert username_of(cluster.kube, second) == AGENT_USERNAME
        assert await token_as(source, AGENT) == second and source.stats.by_agent[AGENT] == 2
    finally:
        await source.aclose()


async def test_a_token_near_its_end_is_not_sent_when_no_new_one_can_be_minted(
    cluster: PaymentsCluster, tmp_path: Path
) -> None:
    own = tmp_path / "sidecar-token"
    shutil.copyfile(cluster.sidecar_token_file, own)
    clock = FakeClock()
    source = KubeTokenCredential(settings(cluster, own), ACCOUNTS.get, clock=clock)
    try:
        first = await token_as(source, AGENT)
        own.unlink()  # the sidecar's own token is gone: nothing more can be minted
        clock.now += 500
        assert await token_as(source, AGENT) == first  # the refresh fails in the background
        for _ in range(100):
            if source.stats.failures:
                break
            await asyncio.sleep(0.05)
        assert source.stats.failures == 1
        clock.now += 80  # 580 of 600 s: within the 30 s margin
        with pytest.raises(CredentialUnavailable, match="own ServiceAccount token"):
            await token_as(source, AGENT)
    finally:
        await source.aclose()


async def test_the_cluster_lets_the_agents_token_write_in_payments_and_refuses_kube_system(
    credential: KubeTokenCredential, cluster: PaymentsCluster
) -> None:
    token = await token_as(credential, AGENT)

    def configmap(namespace: str) -> tuple[str, dict[str, Any]]:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "written-by-the-agent"}, "data": {"k": "v"}}  # fmt: skip
        return f"/api/v1/namespaces/{namespace}/configmaps", body

    path, body = configmap(NAMESPACE)
    assert api_status(cluster.kube, token, "POST", path, body) in (201, 409)
    path, body = configmap("kube-system")
    assert api_status(cluster.kube, token, "POST", path, body) == 403
    # nor may it mint tokens itself (it is not the sidecar)
    mint = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{AGENT_ACCOUNT}/token"
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    assert api_status(cluster.kube, token, "POST", mint, request) == 403
