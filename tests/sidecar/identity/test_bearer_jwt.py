"""The resource server accepts only tokens of trusted issuers, for this server, in date."""

from __future__ import annotations

import contextlib
import logging
import time

import jwt
import pytest

from sidecar.identity import Forbidden, IdentityMap, IdentityStack, Unauthenticated
from tests.sidecar.identity.conftest import RESOURCE, agents_for, settings_for
from tests.sidecar.identity.issuer import Issuer, new_key


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refused(stack: IdentityStack, headers: dict[str, str]) -> Unauthenticated:
    assert stack.authenticator is not None
    with pytest.raises(Unauthenticated) as info:
        await stack.authenticator.authenticate(headers)
    return info.value


async def test_a_valid_token_maps_to_the_bundle_agent_and_tenant(
    issuer: Issuer, stack: IdentityStack
) -> None:
    assert stack.authenticator is not None
    who = await stack.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE)))
    assert (who.agent, who.tenant, who.subject, who.issuer) == (
        "sre-agent-payments",
        "payments",
        "sre-bot",
        issuer.url,
    )
    assert who.on_behalf_of == ""
    assert who.dev_mode is False


async def test_an_rsa_token_from_a_second_key_is_accepted(
    issuer: Issuer, stack: IdentityStack
) -> None:
    rsa_key = issuer.rotate("RS256")
    assert stack.authenticator is not None
    who = await stack.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE, key=rsa_key)))
    assert who.agent == "sre-agent-payments"


async def test_header_names_and_the_bearer_scheme_are_case_insensitive(
    issuer: Issuer, stack: IdentityStack
) -> None:
    assert stack.authenticator is not None
    token = issuer.token(aud=[RESOURCE, "https://other.example"])
    who = await stack.authenticator.authenticate({"authorization": f"bearer {token}"})
    assert who.agent == "sre-agent-payments"


async def test_a_missing_token_gets_a_challenge_without_an_error_code(stack: IdentityStack) -> None:
    err = await refused(stack, {})
    assert err.status == 401
    assert err.www_authenticate == (
        'Bearer resource_metadata="http://127.0.0.1:9999/.well-known/oauth-protected-resource/mcp"'
    )


async def test_a_non_bearer_authorization_header_is_an_invalid_request(
    stack: IdentityStack,
) -> None:
    err = await refused(stack, {"Authorization": "Basic dXNlcjpwYXNz"})
    assert 'error="invalid_request"' in err.www_authenticate
    assert "dXNlcjpwYXNz" not in err.www_authenticate + err.reason


async def test_an_expired_token_is_invalid(issuer: Issuer, stack: IdentityStack) -> None:
    token = issuer.token(aud=RESOURCE, issued_at=time.time() - 3600, lifetime_s=60)
    err = await refused(stack, bearer(token))
    assert err.reason == "the token has expired"
    assert err.www_authenticate.startswith('Bearer resource_metadata="http://127.0.0.1:9999/')
    assert 'error="invalid_token", error_description="the token has expired"' in (
        err.www_authenticate
    )


async def test_a_token_within_the_leeway_of_expiry_is_still_accepted(
    issuer: Issuer, stack: IdentityStack
) -> None:
    token = issuer.token(aud=RESOURCE, issued_at=time.time() - 62, lifetime_s=60)
    assert stack.authenticator is not None
    assert (await stack.authenticator.authenticate(bearer(token))).agent == "sre-agent-payments"


async def test_a_token_not_yet_valid_is_invalid(issuer: Issuer, stack: IdentityStack) -> None:
    token = issuer.token(aud=RESOURCE, issued_at=time.time() + 600)
    err = await refused(stack, bearer(token))
    assert err.reason == "the token is not valid yet"


async def test_a_token_replayed_against_another_servers_audience_is_refused(
    issuer: Issuer, stack: IdentityStack
) -> None:
    token = issuer.token(aud="http://127.0.0.1:9999/other-mcp")
    err = await refused(stack, bearer(token))
    assert err.reason == "the token was not issued for this server (audience)"


async def test_a_token_without_an_audience_is_refused(issuer: Issuer, stack: IdentityStack) -> None:
    err = await refused(stack, bearer(issuer.token(aud=RESOURCE, omit=("aud",))))
    assert err.reason == "the token lacks the aud claim"


async def test_a_token_of_an_untrusted_issuer_is_refused_without_fetching_its_keys(
    issuer: Issuer, stack: IdentityStack
) -> None:
    err = await refused(stack, bearer(issuer.token(aud=RESOURCE, iss="https://evil.example")))
    assert err.reason == "the token's issuer is not trusted by this server"
    assert issuer.jwks_hits == 0


async def test_a_forged_signature_is_refused(issuer: Issuer, stack: IdentityStack) -> None:
    good = issuer.keys[-1]
    forger = new_key("EdDSA")
    forger.kid = good.kid  # same kid, different private key
    err = await refused(stack, bearer(issuer.token(aud=RESOURCE, key=forger)))
    assert err.reason == "the token's signature does not verify"


async def test_a_tampered_payload_is_refused(issuer: Issuer, stack: IdentityStack) -> None:
    header, _, sig = issuer.token(aud=RESOURCE).split(".")
    other = issuer.token(aud=RESOURCE, sub="billing-bot").split(".")[1]
    err = await refused(stack, bearer(f"{header}.{other}.{sig}"))
    assert err.reason == "the token's signature does not verify"


async def test_the_none_and_hmac_algorithms_are_refused(
    issuer: Issuer, stack: IdentityStack
) -> None:
    claims = {"iss": issuer.url, "sub": "sre-bot", "aud": RESOURCE, "exp": time.time() + 60}
    unsigned = jwt.encode(claims, None, algorithm="none")
    hmac = jwt.encode(claims, "a-shared-secret-long-enough-for-hs256!", algorithm="HS256")
    for token in (unsigned, hmac):
        err = await refused(stack, bearer(token))
        assert "algorithm" in err.reason


async def test_garbage_is_not_a_token(stack: IdentityStack) -> None:
    err = await refused(stack, bearer("not-a-jwt"))
    assert err.reason == "the token is not a well-formed JWT"


async def test_a_valid_token_for_an_unknown_subject_is_forbidden(
    issuer: Issuer, stack: IdentityStack
) -> None:
    assert stack.authenticator is not None
    with pytest.raises(Forbidden) as info:
        await stack.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE, sub="stranger")))
    assert info.value.status == 403
    assert 'error="insufficient_scope"' in info.value.www_authenticate
    assert "stranger" in info.value.reason


async def test_a_token_without_a_required_scope_is_forbidden_with_the_scope_named(
    issuer: Issuer,
) -> None:
    settings = settings_for(issuer, required_scopes=("mcp:tools",))
    async with IdentityStack(settings, IdentityMap.from_agents(agents_for(issuer.url))) as s:
        assert s.authenticator is not None
        with pytest.raises(Forbidden) as info:
            await s.authenticator.authenticate(bearer(issuer.token(aud=RESOURCE, scope="other")))
        assert 'error="insufficient_scope"' in info.value.www_authenticate
        assert 'scope="mcp:tools"' in info.value.www_authenticate
        ok = await s.authenticator.authenticate(
            bearer(issuer.token(aud=RESOURCE, scope="openid mcp:tools"))
        )
        assert ok.agent == "sre-agent-payments"


async def test_no_token_ever_appears_in_a_challenge_or_reason(
    issuer: Issuer, stack: IdentityStack
) -> None:
    tokens = [
        issuer.token(aud="http://elsewhere/mcp"),
        issuer.token(aud=RESOURCE, sub="stranger"),
        issuer.token(aud=RESOURCE, issued_at=0),
    ]
    assert stack.authenticator is not None
    for token in tokens:
        with pytest.raises((Unauthenticated, Forbidden)) as info:
            await stack.authenticator.authenticate(bearer(token))
        for part in token.split("."):
            assert part not in info.value.www_authenticate
            assert part not in info.value.reason


async def test_no_token_ever_appears_in_the_logs(
    issuer: Issuer, stack: IdentityStack, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = [
        issuer.token(aud=RESOURCE),
        issuer.token(aud="http://elsewhere/mcp"),
        issuer.token(aud=RESOURCE, sub="stranger"),
        issuer.token(aud=RESOURCE, iss="https://evil.example"),
    ]
    assert stack.authenticator is not None
    with caplog.at_level(logging.DEBUG):
        for token in tokens:
            with contextlib.suppress(Unauthenticated, Forbidden):
                await stack.authenticator.authenticate(bearer(token))
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "token refused" in logged
    for token in tokens:
        for part in token.split("."):
            assert part not in logged


async def test_a_token_for_another_uri_of_this_same_server_is_accepted_when_configured(
    issuer: Issuer,
) -> None:
    internal = "http://mcp.payments.svc:9000/mcp"
    settings = settings_for(issuer, extra_audiences=(internal,))
    async with IdentityStack(settings, IdentityMap.from_agents(agents_for(issuer.url))) as s:
        assert s.authenticator is not None
        who = await s.authenticator.authenticate(bearer(issuer.token(aud=internal)))
        assert who.agent == "sre-agent-payments"
        with pytest.raises(Unauthenticated):
            await s.authenticator.authenticate(bearer(issuer.token(aud="http://other/mcp")))
