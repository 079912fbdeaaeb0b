"""The cluster's token issuer, discovered at run time (``--cluster-issuer discover``).

Unit part: against the test issuer (an aiohttp server), discovery is lazy, retried
and rate-limited, and a token is bound to the configured audience only. E2e part:
against the harness's real kube-apiserver, with the token of a ServiceAccount that
has **no** RoleBinding at all: the default ClusterRoleBinding
``system:service-account-issuer-discovery`` is what lets it read the issuer and keys.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from sidecar.identity import (
    IdentityMap,
    IdentitySettings,
    IdentityStack,
    IssuerConfig,
    Unauthenticated,
    discovered_cluster_issuer,
)
from sidecar.identity.jwks import issuer_from_configuration
from tests.harness.controlplane import ControlPlane
from tests.sidecar.identity.conftest import RESOURCE
from tests.sidecar.identity.issuer import Issuer

AUDIENCE = "palisade.dev/mcp/payments/kubernetes-mcp"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("doc", "ok"),
    [
        ({"issuer": "https://kubernetes.default.svc.cluster.local"}, True),
        ({"issuer": "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC"}, True),
        ({}, False),
        ({"issuer": ""}, False),
        ({"issuer": 7}, False),
        ({"issuer": "https://a b"}, False),
        ({"issuer": "https://x\n"}, False),
    ],
)
def test_the_issuer_is_read_from_the_configuration_document(
    doc: dict[str, object], ok: bool
) -> None:
    if ok:
        assert issuer_from_configuration(doc) == doc["issuer"]
    else:
        with pytest.raises(ValueError):
            issuer_from_configuration(doc)


def test_a_discovered_issuer_needs_keys_and_no_fixed_iss() -> None:
    with pytest.raises(ValueError):
        IssuerConfig(issuer="", discover_from="https://k/.well-known/openid-configuration")
    with pytest.raises(ValueError):
        IssuerConfig(issuer="x", jwks_uri="https://k/keys", discover_from="https://k/.w")
    with pytest.raises(ValueError):
        IssuerConfig(issuer="")


def discovering(issuer: Issuer) -> IdentitySettings:
    cfg = IssuerConfig(
        issuer="",
        jwks_uri=issuer.url + "/keys",
        cluster=True,
        discover_from=issuer.url + "/.well-known/openid-configuration",
    )
    return IdentitySettings(
        resource=RESOURCE, audiences=(AUDIENCE,), issuers=(cfg,), jwks_min_refresh_s=0.0
    )


AGENTS = [{"id": "sre", "tenant": "payments", "identities": [{"serviceAccount": "payments/sre"}]}]


async def test_discovery_is_retried_until_the_api_server_answers(issuer: Issuer) -> None:
    issuer.down = True
    async with IdentityStack(discovering(issuer), IdentityMap.from_agents(AGENTS)) as stack:
        assert stack.authenticator is not None
        token = issuer.token(sub="system:serviceaccount:payments:sre", aud=AUDIENCE)
        with pytest.raises(Unauthenticated) as info:
            await stack.authenticator.authenticate(bearer(token))
        assert "not discovered yet" in info.value.reason
        issuer.down = False
        who = await stack.authenticator.authenticate(bearer(token))
        assert (who.agent, who.issuer) == ("sre", issuer.url)
        meta = stack.authenticator.protected_resource_metadata()
        assert meta["authorization_servers"] == [issuer.url]


async def test_only_the_per_server_audience_is_accepted(issuer: Issuer) -> None:
    async with IdentityStack(discovering(issuer), IdentityMap.from_agents(AGENTS)) as stack:
        assert stack.authenticator is not None
        sub = "system:serviceaccount:payments:sre"
        for aud in ("palisade.dev/mcp/payments/other-mcp", RESOURCE, "https://kubernetes.default"):
            with pytest.raises(Unauthenticated) as info:
                await stack.authenticator.authenticate(bearer(issuer.token(sub=sub, aud=aud)))
            assert info.value.reason == "the token was not issued for this server (audience)"


async def test_the_issuer_named_by_the_document_is_the_only_one_trusted(issuer: Issuer) -> None:
    issuer.lie_about_issuer = True  # the document names https://evil.example
    async with IdentityStack(discovering(issuer), IdentityMap.from_agents(AGENTS)) as stack:
        assert stack.authenticator is not None
        token = issuer.token(sub="system:serviceaccount:payments:sre", aud=AUDIENCE)
        with pytest.raises(Unauthenticated):
            await stack.authenticator.authenticate(bearer(token))


# --- against the real API server ------------------------------------------------------------


@pytest.mark.e2e
async def test_a_service_account_without_any_binding_discovers_the_issuer_and_its_keys(
    kube: ControlPlane, tmp_path: Path
) -> None:
    ns = "payments-" + secrets.token_hex(3)
    kube.create_namespace(ns)
    for name in ("palisade-sidecar", "sre-agent"):
        kube.request(
            "POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": name}}
        )

    def token(account: str, audience: str | None) -> str:
        spec: dict[str, object] = {"expirationSeconds": 600}
        if audience is not None:
            spec["audiences"] = [audience]
        path = f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token"
        return str(kube.request("POST", path, {"spec": spec})["status"]["token"])

    # The sidecar's own token (the API server's audience, as the projected volume gives it).
    own = tmp_path / "token"
    own.write_text(token("palisade-sidecar", None))
    audience = f"palisade.dev/mcp/{ns}/kubernetes-mcp"
    settings = IdentitySettings(
        resource=RESOURCE,
        audiences=(audience,),
        issuers=(
            discovered_cluster_issuer(kube.server, token_file=str(own), ca_file=str(kube.ca_file)),
        ),
    )
    agents = IdentityMap.from_agents(
        [{"id": "sre-agent-payments", "tenant": "payments",
          "identities": [{"serviceAccount": f"{ns}/sre-agent"}]}]
    )  # fmt: skip
    async with IdentityStack(settings, agents) as stack:
        assert stack.authenticator is not None
        who = await stack.authenticator.authenticate(bearer(token("sre-agent", audience)))
        assert who.agent == "sre-agent-payments"
        assert who.issuer == kube.service_account_issuer  # discovered, never configured
        assert who.subject == f"system:serviceaccount:{ns}:sre-agent"
        for other in (f"palisade.dev/mcp/{ns}/other-mcp", None):
            with pytest.raises(Unauthenticated) as info:
                await stack.authenticator.authenticate(bearer(token("sre-agent", other)))
            assert info.value.reason == "the token was not issued for this server (audience)"

    # What made it work is the default ClusterRoleBinding, not a grant of ours.
    binding = kube.request(
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:service-account-issuer-discovery",
    )
    assert binding["roleRef"]["name"] == "system:service-account-issuer-discovery"
    assert {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
            "name": "system:serviceaccounts"} in binding["subjects"]  # fmt: skip
    review = kube.request(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "spec": {
                "user": f"system:serviceaccount:{ns}:palisade-sidecar",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}"],
                "resourceAttributes": {"verb": "list", "resource": "pods", "namespace": ns},
            }
        },
    )
    assert review["status"]["allowed"] is False  # and nothing more
