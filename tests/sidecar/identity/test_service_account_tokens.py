"""Kubernetes ServiceAccount tokens, checked by a real kube-apiserver.

Two ways, both against the harness control plane: TokenReview (the API server
judges the token and its audience) and the cluster's own OIDC keys
(``/openid/v1/jwks``, verified locally like any issuer).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar.identity import (
    Forbidden,
    IdentityMap,
    IdentitySettings,
    IdentityStack,
    IssuerConfig,
    TokenReviewSettings,
    Unauthenticated,
)
from tests.harness.controlplane import ControlPlane
from tests.sidecar.identity.conftest import RESOURCE

pytestmark = pytest.mark.e2e


@dataclass
class Cluster:
    kube: ControlPlane
    namespace: str
    sidecar_token_file: Path

    def token(self, account: str, audience: str | None = RESOURCE, seconds: int = 600) -> str:
        spec: dict[str, object] = {"expirationSeconds": seconds}
        if audience is not None:
            spec["audiences"] = [audience]  # None: the API server's own audience
        body = {"spec": spec}
        path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token"
        answer = self.kube.request("POST", path, body)
        return str(answer["status"]["token"])

    def service_account(self, name: str) -> None:
        self.kube.request(
            "POST",
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts",
            {"metadata": {"name": name}},
        )


@pytest.fixture
def cluster(kube: ControlPlane, tmp_path: Path) -> Cluster:
    ns = "payments-" + secrets.token_hex(3)
    kube.create_namespace(ns)
    c = Cluster(kube, ns, tmp_path / "sidecar-token")
    for name in ("sre-agent", "stranger", "palisade-sidecar"):
        c.service_account(name)
    # The sidecar's own account may create TokenReviews, like the chart's RBAC grants.
    kube.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": f"palisade-sidecar-{ns}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "palisade-sidecar", "namespace": ns}],
        },
    )
    c.sidecar_token_file.write_text(c.token("palisade-sidecar", audience=None))
    return c


def identities(ns: str) -> IdentityMap:
    return IdentityMap.from_agents(
        [
            {
                "id": "sre-agent-payments",
                "tenant": "payments",
                "identities": [{"serviceAccount": f"{ns}/sre-agent"}],
            }
        ]
    )


@pytest.fixture
async def review_stack(cluster: Cluster) -> AsyncIterator[IdentityStack]:
    settings = IdentitySettings(
        resource=RESOURCE,
        token_review=TokenReviewSettings(
            api_server=cluster.kube.server,
            token_file=str(cluster.sidecar_token_file),
            ca_file=str(cluster.kube.ca_file),
        ),
    )
    async with IdentityStack(settings, identities(cluster.namespace)) as s:
        yield s


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_bound_service_account_token_for_this_server_maps_to_its_agent(
    cluster: Cluster, review_stack: IdentityStack
) -> None:
    assert review_stack.authenticator is not None
    who = await review_stack.authenticator.authenticate(bearer(cluster.token("sre-agent")))
    assert (who.agent, who.tenant, who.issuer) == ("sre-agent-payments", "payments", "kubernetes")
    assert who.subject == f"system:serviceaccount:{cluster.namespace}:sre-agent"


async def test_a_service_account_token_for_another_audience_is_refused(
    cluster: Cluster, review_stack: IdentityStack
) -> None:
    assert review_stack.authenticator is not None
    token = cluster.token("sre-agent", audience="http://127.0.0.1:9999/other-mcp")
    with pytest.raises(Unauthenticated) as info:
        await review_stack.authenticator.authenticate(bearer(token))
    assert 'error="invalid_token"' in info.value.www_authenticate


async def test_a_service_account_that_is_no_agent_is_forbidden(
    cluster: Cluster, review_stack: IdentityStack
) -> None:
    assert review_stack.authenticator is not None
    with pytest.raises(Forbidden):
        await review_stack.authenticator.authenticate(bearer(cluster.token("stranger")))


async def test_a_token_of_a_deleted_service_account_is_refused(
    cluster: Cluster, review_stack: IdentityStack
) -> None:
    token = cluster.token("sre-agent")
    cluster.kube.request(
        "DELETE", f"/api/v1/namespaces/{cluster.namespace}/serviceaccounts/sre-agent"
    )
    assert review_stack.authenticator is not None
    with pytest.raises(Unauthenticated) as info:
        await review_stack.authenticator.authenticate(bearer(token))
    assert info.value.reason == "the Kubernetes API server did not accept the token"


async def test_a_forged_token_is_refused_by_the_api_server(review_stack: IdentityStack) -> None:
    assert review_stack.authenticator is not None
    with pytest.raises(Unauthenticated):
        await review_stack.authenticator.authenticate(bearer("eyJhbGciOiJub25lIn0.e30.x"))


async def test_reviews_are_cached_briefly(cluster: Cluster, review_stack: IdentityStack) -> None:
    assert review_stack.authenticator is not None
    token = cluster.token("sre-agent")
    for _ in range(3):
        await review_stack.authenticator.authenticate(bearer(token))
    reviewer = review_stack.authenticator._review  # type: ignore[attr-defined]
    assert reviewer.reviews == 1


async def test_the_clusters_oidc_keys_verify_service_account_tokens_locally(
    cluster: Cluster,
) -> None:
    cfg = IssuerConfig(
        issuer=cluster.kube.service_account_issuer,
        jwks_uri=cluster.kube.server + "/openid/v1/jwks",
        cluster=True,
        ca_file=str(cluster.kube.ca_file),
        fetch_token_file=str(cluster.sidecar_token_file),
    )
    settings = IdentitySettings(resource=RESOURCE, issuers=(cfg,))
    async with IdentityStack(settings, identities(cluster.namespace)) as s:
        assert s.authenticator is not None
        who = await s.authenticator.authenticate(bearer(cluster.token("sre-agent")))
        assert who.agent == "sre-agent-payments"
        with pytest.raises(Unauthenticated) as info:
            await s.authenticator.authenticate(
                bearer(cluster.token("sre-agent", audience="https://elsewhere"))
            )
        assert info.value.reason == "the token was not issued for this server (audience)"
