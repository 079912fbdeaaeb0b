"""Fixtures: a real issuer on a random port and a resource server trusting it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from sidecar.identity import IdentityMap, IdentitySettings, IdentityStack, IssuerConfig
from tests.sidecar.identity.issuer import Issuer

RESOURCE = "http://127.0.0.1:9999/mcp"

AGENTS = [
    {
        "id": "sre-agent-payments",
        "tenant": "payments",
        "identities": [{"subject": "sre-bot", "issuer": "ISSUER"}],
    },
    {
        "id": "billing-agent",
        "tenant": "billing",
        "identities": [{"subject": "billing-bot", "issuer": "ISSUER"}],
    },
]


def agents_for(issuer_url: str) -> list[dict[str, object]]:
    out = []
    for agent in AGENTS:
        idents = [
            {**i, "issuer": issuer_url} if i.get("issuer") == "ISSUER" else i
            for i in agent["identities"]  # type: ignore[attr-defined]
        ]
        out.append({**agent, "identities": idents})
    return out


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    state = Issuer()
    state.rotate("EdDSA")
    runner = web.AppRunner(state.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


def settings_for(issuer: Issuer, **overrides: object) -> IdentitySettings:
    base: dict[str, object] = {
        "resource": RESOURCE,
        "issuers": (IssuerConfig(issuer=issuer.url),),
        "jwks_min_refresh_s": 0.0,
        "leeway_s": 5.0,
    }
    base.update(overrides)
    return IdentitySettings(**base)  # type: ignore[arg-type]


@pytest.fixture
async def stack(issuer: Issuer) -> AsyncIterator[IdentityStack]:
    async with IdentityStack(
        settings_for(issuer), IdentityMap.from_agents(agents_for(issuer.url))
    ) as s:
        yield s
