"""Signing keys come from the issuer's metadata, are cached, and follow rotation."""

from __future__ import annotations

import pytest

from sidecar.identity import IdentityMap, IdentityStack, IssuerConfig, Unauthenticated
from sidecar.identity.jwks import discovery_urls
from tests.sidecar.identity.conftest import RESOURCE, agents_for, settings_for
from tests.sidecar.identity.issuer import Issuer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stack_for(issuer: Issuer, **overrides: object) -> IdentityStack:
    return IdentityStack(
        settings_for(issuer, **overrides), IdentityMap.from_agents(agents_for(issuer.url))
    )


def test_discovery_tries_rfc8414_then_openid_connect_as_the_mcp_spec_orders() -> None:
    assert discovery_urls("https://auth.example") == [
        "https://auth.example/.well-known/oauth-authorization-server",
        "https://auth.example/.well-known/openid-configuration",
    ]
    assert discovery_urls("https://auth.example/tenant1") == [
        "https://auth.example/.well-known/oauth-authorization-server/tenant1",
        "https://auth.example/.well-known/openid-configuration/tenant1",
        "https://auth.example/tenant1/.well-known/openid-configuration",
    ]


@pytest.mark.parametrize("kind", ["oidc", "oauth"])
async def test_keys_are_found_through_either_kind_of_metadata(issuer: Issuer, kind: str) -> None:
    issuer.discovery = kind
    async with stack_for(issuer) as s:
        assert s.authenticator is not None
        who = await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE)))
        assert who.agent == "sre-agent-payments"


async def test_keys_are_fetched_once_and_served_from_the_cache(issuer: Issuer) -> None:
    async with stack_for(issuer, jwks_min_refresh_s=60.0) as s:
        assert s.authenticator is not None
        for _ in range(5):
            await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE)))
        assert issuer.jwks_hits == 1


async def test_a_rotated_key_is_picked_up_on_its_first_unknown_kid(issuer: Issuer) -> None:
    async with stack_for(issuer, jwks_min_refresh_s=0.0) as s:
        assert s.authenticator is not None
        await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE)))
        new = issuer.rotate("EdDSA")
        who = await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE, key=new)))
        assert who.agent == "sre-agent-payments"
        assert issuer.jwks_hits == 2


async def test_unknown_kids_cannot_make_the_sidecar_hammer_the_issuer(issuer: Issuer) -> None:
    async with stack_for(issuer, jwks_min_refresh_s=60.0) as s:
        assert s.authenticator is not None
        await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE)))
        stranger = issuer.rotate("EdDSA")
        issuer.keys.remove(stranger)  # the issuer never publishes it
        for _ in range(10):
            with pytest.raises(Unauthenticated) as info:
                await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE, key=stranger)))
            assert info.value.reason == "the token's signing key is not one of the issuer's keys"
        assert issuer.jwks_hits == 1


async def test_an_unreachable_issuer_fails_closed(issuer: Issuer) -> None:
    issuer.down = True
    async with stack_for(issuer) as s:
        assert s.authenticator is not None
        with pytest.raises(Unauthenticated) as info:
            await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE)))
        assert info.value.reason == "the issuer's signing keys are unavailable"


async def test_last_good_keys_survive_an_issuer_outage(issuer: Issuer) -> None:
    async with stack_for(issuer, jwks_ttl_s=0.0, jwks_min_refresh_s=0.0) as s:
        assert s.authenticator is not None
        await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE)))
        issuer.down = True
        who = await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE)))
        assert who.agent == "sre-agent-payments"


async def test_metadata_naming_another_issuer_is_not_trusted(issuer: Issuer) -> None:
    issuer.lie_about_issuer = True
    async with stack_for(issuer) as s:
        assert s.authenticator is not None
        with pytest.raises(Unauthenticated):
            await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE)))
        assert issuer.jwks_hits == 0


async def test_a_configured_jwks_uri_skips_discovery(issuer: Issuer) -> None:
    cfg = IssuerConfig(issuer=issuer.url, jwks_uri=issuer.url + "/keys")
    async with stack_for(issuer, issuers=(cfg,)) as s:
        assert s.authenticator is not None
        await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE)))
        assert issuer.discovery_hits == 0
        assert issuer.jwks_hits == 1


async def test_a_verified_token_is_not_verified_again_until_it_expires() -> None:
    from sidecar.identity.resource_server import ResourceServer
    from sidecar.identity.verified import TokenRejected, VerifiedToken

    class CountingVerifier:
        issuers = frozenset({"https://idp.example"})
        algorithms = ("EdDSA",)

        def __init__(self) -> None:
            self.calls = 0

        async def verify(self, token: str) -> VerifiedToken:
            self.calls += 1
            if token != "good":
                raise TokenRejected("bad token")
            claims = {"iss": "https://idp.example", "sub": "s", "exp": 100.0}
            return VerifiedToken(claims=claims, reusable_until=100.0)

    clock = [0.0]
    verifier = CountingVerifier()
    server = ResourceServer(
        resource=RESOURCE,
        identities=IdentityMap.from_agents(
            [{"id": "a", "identities": [{"issuer": "https://idp.example", "subject": "s"}]}]
        ),
        token_review=verifier,
        cache_ttl_s=60.0,
        wall_clock=lambda: clock[0],
    )
    for _ in range(3):
        assert (await server.authenticate(bearer("good"))).agent == "a"
    assert verifier.calls == 1
    clock[0] = 61.0  # the cache TTL passed: verify again
    await server.authenticate(bearer("good"))
    assert verifier.calls == 2
    clock[0] = 100.5  # past exp: the cached entry is not used
    await server.authenticate(bearer("good"))
    assert verifier.calls == 3
    for _ in range(2):  # refusals are never cached
        with pytest.raises(Unauthenticated):
            await server.authenticate(bearer("bad"))
    assert verifier.calls == 5
