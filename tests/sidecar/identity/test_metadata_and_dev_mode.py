"""RFC 9728 metadata and challenges; development mode is explicit and marked."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.identity import (
    DevAgent,
    DevAuthenticator,
    IdentityStack,
    Unauthenticated,
    metadata_paths,
    metadata_url,
)
from sidecar.identity.challenge import ChallengeBuilder
from tests.sidecar.identity.conftest import RESOURCE
from tests.sidecar.identity.issuer import Issuer


def test_the_metadata_url_inserts_the_well_known_path_before_the_resource_path() -> None:
    assert metadata_url("https://mcp.example/api/mcp") == (
        "https://mcp.example/.well-known/oauth-protected-resource/api/mcp"
    )
    assert metadata_url("https://mcp.example/") == (
        "https://mcp.example/.well-known/oauth-protected-resource"
    )
    assert metadata_paths("https://mcp.example/mcp") == (
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    )
    with pytest.raises(ValueError):
        metadata_url("mcp.example/mcp")


async def test_the_metadata_names_this_resource_and_its_issuers(
    issuer: Issuer, stack: IdentityStack
) -> None:
    assert stack.authenticator is not None
    doc = stack.authenticator.protected_resource_metadata()
    assert doc["resource"] == RESOURCE
    assert doc["authorization_servers"] == [issuer.url]
    assert doc["bearer_methods_supported"] == ["header"]
    assert "EdDSA" in doc["resource_signing_alg_values_supported"]


def test_challenge_descriptions_cannot_break_out_of_their_quotes() -> None:
    built = ChallengeBuilder("https://m/.well-known/x").invalid_token('bad "quote" \\ \n')
    assert built == (
        'Bearer resource_metadata="https://m/.well-known/x", error="invalid_token", '
        "error_description=\"bad 'quote' ' '\""
    )


def test_development_mode_must_be_enabled_explicitly() -> None:
    with pytest.raises(ValueError, match="explicitly"):
        DevAuthenticator({"t": DevAgent("a")}, resource=RESOURCE)


async def test_development_mode_warns_loudly_and_marks_every_principal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        auth = DevAuthenticator(
            {"dev-token-1": DevAgent("sre-agent-payments", "payments", "alice")},
            resource=RESOURCE,
            enabled=True,
        )
    assert "DEVELOPMENT MODE" in caplog.text
    assert "dev-token-1" not in caplog.text
    who = await auth.authenticate({"Authorization": "Bearer dev-token-1"})
    assert (who.agent, who.tenant, who.on_behalf_of, who.dev_mode) == (
        "sre-agent-payments",
        "payments",
        "alice",
        True,
    )
    with pytest.raises(Unauthenticated) as info:
        await auth.authenticate({"Authorization": "Bearer guessed"})
    assert 'error="invalid_token"' in info.value.www_authenticate
    with pytest.raises(Unauthenticated):
        await auth.authenticate({})


async def test_identity_without_any_verifier_refuses_to_start() -> None:
    from sidecar.identity import IdentityMap, IdentitySettings

    with pytest.raises(ValueError, match="trusted issuer or TokenReview"):
        async with IdentityStack(IdentitySettings(resource=RESOURCE), IdentityMap()):
            pass


async def test_a_request_from_a_foreign_browser_origin_is_refused(
    issuer: Issuer, stack: IdentityStack
) -> None:
    from sidecar.identity import Forbidden

    assert stack.authenticator is not None
    token = issuer.token(aud=RESOURCE)
    for allowed in (None, "http://127.0.0.1:9999", "http://localhost:3000", "https://[::1]"):
        headers = {"Authorization": f"Bearer {token}"}
        if allowed:
            headers["Origin"] = allowed
        assert (await stack.authenticator.authenticate(headers)).agent == "sre-agent-payments"
    with pytest.raises(Forbidden) as info:
        await stack.authenticator.authenticate(
            {"Authorization": f"Bearer {token}", "Origin": "http://evil.example"}
        )
    assert "DNS rebinding" in info.value.reason


def test_configured_origins_and_the_wildcard_are_allowed() -> None:
    from sidecar.identity.origin import OriginPolicy

    policy = OriginPolicy("https://mcp.example/mcp", ["https://console.example/"])
    assert policy.allows("https://mcp.example")
    assert policy.allows("https://console.example")
    assert not policy.allows("https://mcp.example.evil.example")
    assert not policy.allows("null")
    assert OriginPolicy("https://mcp.example/mcp", ["*"]).allows("https://anything.example")


CHALLENGE = re.compile(r'^Bearer (?:[a-z_]+="[\x20\x21\x23-\x5b\x5d-\x7e]*"(?:, |$))+$')


@given(st.text(max_size=200), st.lists(st.text(max_size=20), max_size=3))
def test_every_challenge_is_a_well_formed_rfc6750_header(
    description: str, scopes: list[str]
) -> None:
    builder = ChallengeBuilder("https://m.example/.well-known/oauth-protected-resource/mcp")
    for value in (
        builder.missing(),
        builder.invalid_request(description),
        builder.invalid_token(description),
        builder.insufficient_scope(description, scopes),
    ):
        assert CHALLENGE.match(value), value
