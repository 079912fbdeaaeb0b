"""Claims map to bundle agents; an ``act`` claim names the agent acting for a human."""

from __future__ import annotations

import pytest

from sidecar.identity import Forbidden, IdentityMap, IdentityStack, MappingError
from sidecar.identity.mapping import service_account_subject
from tests.sidecar.identity.conftest import RESOURCE
from tests.sidecar.identity.issuer import Issuer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_agent_acting_for_a_human_is_the_principal_on_behalf_of_that_human(
    issuer: Issuer, stack: IdentityStack
) -> None:
    token = issuer.token(aud=RESOURCE, sub="alice@example.com", act={"sub": "sre-bot"})
    assert stack.authenticator is not None
    who = await stack.authenticator.authenticate(bearer(token))
    assert (who.agent, who.on_behalf_of, who.subject) == (
        "sre-agent-payments",
        "alice@example.com",
        "sre-bot",
    )


async def test_only_the_outermost_actor_counts_in_a_delegation_chain(
    issuer: Issuer, stack: IdentityStack
) -> None:
    act = {"sub": "billing-bot", "act": {"sub": "sre-bot"}}
    token = issuer.token(aud=RESOURCE, sub="alice@example.com", act=act)
    assert stack.authenticator is not None
    who = await stack.authenticator.authenticate(bearer(token))
    assert who.agent == "billing-agent"


async def test_a_human_token_with_an_unknown_actor_is_forbidden(
    issuer: Issuer, stack: IdentityStack
) -> None:
    token = issuer.token(aud=RESOURCE, sub="alice@example.com", act={"sub": "mallory-bot"})
    assert stack.authenticator is not None
    with pytest.raises(Forbidden):
        await stack.authenticator.authenticate(bearer(token))


async def test_a_malformed_act_claim_is_forbidden(issuer: Issuer, stack: IdentityStack) -> None:
    token = issuer.token(aud=RESOURCE, sub="sre-bot", act="sre-bot")
    assert stack.authenticator is not None
    with pytest.raises(Forbidden):
        await stack.authenticator.authenticate(bearer(token))


async def test_a_new_bundle_changes_who_a_token_maps_to(
    issuer: Issuer, stack: IdentityStack
) -> None:
    assert stack.authenticator is not None
    stack.update_identities(
        IdentityMap.from_agents(
            [{"id": "renamed", "identities": [{"issuer": issuer.url, "subject": "sre-bot"}]}]
        )
    )
    who = await stack.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE)))
    assert (who.agent, who.tenant) == ("renamed", "")


def test_service_account_identities_match_only_cluster_issued_subjects() -> None:
    table = IdentityMap.from_agents(
        [{"id": "sre", "tenant": "payments", "identities": [{"serviceAccount": "payments/sre"}]}]
    )
    sub = service_account_subject("payments", "sre")
    assert table.lookup("kubernetes", sub, cluster=True) is not None
    assert table.lookup("https://any-issuer.example", sub, cluster=False) is None
    with pytest.raises(MappingError):
        table.resolve({"iss": "https://any-issuer.example", "sub": sub})


def test_issuer_urls_match_with_or_without_a_trailing_slash() -> None:
    table = IdentityMap.from_agents(
        [{"id": "a", "identities": [{"issuer": "https://idp.example/", "subject": "x"}]}]
    )
    assert table.resolve({"iss": "https://idp.example", "sub": "x"}).agent.agent == "a"


@pytest.mark.parametrize(
    "agents",
    [
        [{"identities": []}],
        [{"id": "a", "identities": [{"serviceAccount": "no-slash"}]}],
        [{"id": "a", "identities": [{"issuer": "https://i"}]}],
        [
            {"id": "a", "identities": [{"issuer": "https://i", "subject": "s"}]},
            {"id": "b", "identities": [{"issuer": "https://i", "subject": "s"}]},
        ],
    ],
    ids=["no-id", "bad-service-account", "no-subject", "claimed-twice"],
)
def test_an_ambiguous_or_malformed_identity_table_is_refused(
    agents: list[dict[str, object]],
) -> None:
    with pytest.raises(MappingError):
        IdentityMap.from_agents(agents)


def test_the_example_bundle_maps_its_oidc_and_service_account_identities() -> None:
    from pathlib import Path

    from palisade.bundle.canonical import to_document
    from palisade.bundle.load import load_file

    root = Path(__file__).resolve().parents[3]
    doc = to_document(load_file(root / "examples" / "payments-bundle.yaml"))
    table = IdentityMap.from_agents(doc["spec"]["agents"])
    by_oidc = table.resolve({"iss": "https://issuer.example", "sub": "sre-bot"})
    assert (by_oidc.agent.agent, by_oidc.agent.tenant) == ("sre-agent-payments", "payments")
    by_sa = table.resolve(
        {"iss": "kubernetes", "sub": service_account_subject("search", "indexer")}, cluster=True
    )
    assert by_sa.agent.agent == "search-indexer"


@pytest.mark.parametrize(
    "status",
    [
        {"authenticated": True},
        {"authenticated": True, "audiences": "not-a-list"},
        {"authenticated": True, "audiences": ["http://127.0.0.1:9999/mcp"], "user": "x"},
        {
            "authenticated": True,
            "audiences": ["http://127.0.0.1:9999/mcp"],
            "user": {"username": "alice"},
        },
    ],
    ids=["no-audiences", "audiences-not-a-list", "user-not-an-object", "not-a-service-account"],
)
async def test_odd_tokenreview_answers_are_refusals_not_crashes(status: dict[str, object]) -> None:
    import aiohttp

    from sidecar.identity.tokenreview import TokenReviewer
    from sidecar.identity.verified import TokenRejected

    async with aiohttp.ClientSession() as http:
        reviewer = TokenReviewer(
            http, api_server="https://unused", audience="http://127.0.0.1:9999/mcp",
            credential=lambda: "unused",
        )  # fmt: skip
        with pytest.raises(TokenRejected):
            reviewer._judge(status)


async def test_a_service_account_review_names_the_pod() -> None:
    import aiohttp

    from sidecar.identity.tokenreview import TokenReviewer

    async with aiohttp.ClientSession() as http:
        reviewer = TokenReviewer(
            http, api_server="https://unused", audience="aud", credential=lambda: "unused"
        )
        verified = reviewer._judge(
            {
                "authenticated": True,
                "audiences": ["aud"],
                "user": {
                    "username": "system:serviceaccount:payments:sre",
                    "uid": "u1",
                    "extra": {"authentication.kubernetes.io/pod-name": ["sre-0"]},
                },
            }
        )
    assert verified.cluster and verified.reusable_until is None
    assert (verified.claims["sub"], verified.claims["pod"]) == (
        "system:serviceaccount:payments:sre",
        "sre-0",
    )
