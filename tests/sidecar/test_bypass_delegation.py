"""An RFC 8693 ``act`` chain never gives more than the issuer that signed the token may grant.

Every hop is mapped within the signing issuer only; a hop of another issuer, a
malformed hop or one that maps to no agent is refused (403, audited with the chain
as asserted); an accepted chain is audited whole, every hop, not only the outermost.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.identity import (
    Authenticator,
    IdentityMap,
    IssuerConfig,
    MappingError,
    ResourceServer,
)
from sidecar.identity.jwks import JwksCache
from sidecar.identity.jwt_verifier import JwtVerifier
from tests.sidecar.bypass_harness import (
    JSON_HEADERS,
    Peer,
    call,
    raw_exchange,
    request_bytes,
    serve,
)
from tests.sidecar.identity.issuer import Issuer
from tests.sidecar.proxy.conftest import UpstreamProc, start_example_server, stop_process

pytestmark = pytest.mark.e2e

#: Issuer A, trusted but low: it maps only the search agent.
#: Issuer B maps the payments agents (sre-agent may read payments; search-agent may not).
LOW_AGENTS = {"search-bot": "search-agent"}
HIGH_AGENTS = {"sre-bot": "sre-agent", "busy-bot": "busy-agent"}


def identities(low: str, high: str) -> IdentityMap:
    agents: dict[str, list[dict[str, str]]] = {}
    for issuer, table in ((low, LOW_AGENTS), (high, HIGH_AGENTS)):
        for sub, agent in table.items():
            agents.setdefault(agent, []).append({"issuer": issuer, "subject": sub})
    return IdentityMap.from_agents([{"id": a, "identities": i} for a, i in agents.items()])


# -- the pure mapping, property-based ------------------------------------------------

LOW, HIGH = "https://low.example", "https://high.example"
TABLE = identities(LOW, HIGH)
SUBJECTS = sorted({*LOW_AGENTS, *HIGH_AGENTS, "nobody"})

hops = st.lists(
    st.tuples(
        st.sampled_from([None, LOW, HIGH, LOW + "/", HIGH + "/", "", 7]),
        st.sampled_from([*SUBJECTS, "", None, 3]),
    ),
    min_size=1,
    max_size=10,
)


def nest(chain: list[tuple[Any, Any]]) -> dict[str, Any]:
    act: dict[str, Any] | None = None
    for iss, sub in reversed(chain):
        hop: dict[str, Any] = {}
        if iss is not None:
            hop["iss"] = iss
        if sub is not None:
            hop["sub"] = sub
        if act is not None:
            hop["act"] = act
        act = hop
    assert act is not None
    return act


@settings(max_examples=400, deadline=None)
@given(signer=st.sampled_from([LOW, HIGH]), chain=hops)
def test_an_act_chain_maps_only_within_the_signing_issuer(
    signer: str, chain: list[tuple[Any, Any]]
) -> None:
    own = LOW_AGENTS if signer == LOW else HIGH_AGENTS
    claims = {"iss": signer, "sub": "alice@example.com", "act": nest(chain)}
    acceptable = len(chain) <= 8 and all(
        (iss is None or (isinstance(iss, str) and iss.rstrip("/") == signer))
        and isinstance(sub, str)
        and sub in own
        for iss, sub in chain
    )
    try:
        match = TABLE.resolve(claims)
    except MappingError:
        assert not acceptable
        return
    assert acceptable
    # what is decided is always an agent the signing issuer itself maps
    assert match.agent.agent == own[chain[0][1]]
    assert match.issuer == signer and match.on_behalf_of == "alice@example.com"
    assert [(h.issuer, h.subject, h.agent) for h in match.delegation] == [
        (signer, sub, own[sub]) for _, sub in chain
    ]


@pytest.mark.parametrize(
    "act",
    [
        None,
        {"sub": "busy-bot", "act": "sre-bot"},
        {"sub": "busy-bot", "act": {"sub": ""}},
        {"sub": "busy-bot", "act": {"sub": ["sre-bot"]}},
        {"sub": "busy-bot", "act": None},
    ],
    ids=["null", "hop-not-an-object", "hop-empty-sub", "hop-sub-not-a-string", "hop-null"],
)
def test_an_act_claim_with_a_hop_that_is_not_an_actor_object_is_refused(act: object) -> None:
    # the token's own subject is an agent: a broken act chain must not fall back to it
    with pytest.raises(MappingError):
        TABLE.resolve({"iss": HIGH, "sub": "sre-bot", "act": act})


# -- through a real sidecar, raw HTTP ------------------------------------------------


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProc]:
    up = start_example_server(tmp_path_factory.mktemp("up"))
    yield up
    stop_process(up.proc)


async def running_issuer() -> tuple[Issuer, web.AppRunner]:
    state = Issuer()
    state.rotate("EdDSA")
    runner = web.AppRunner(state.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    return state, runner


@pytest.fixture
async def issuers() -> AsyncIterator[tuple[Issuer, Issuer]]:
    low, low_runner = await running_issuer()
    high, high_runner = await running_issuer()
    try:
        yield low, high
    finally:
        await low_runner.cleanup()
        await high_runner.cleanup()


def resource_server(low: Issuer, high: Issuer, http: Any) -> Callable[[str], Authenticator]:
    def build(resource: str) -> Authenticator:
        caches = [
            JwksCache(IssuerConfig(issuer=i.url), http, ttl_s=300, min_refresh_s=0, timeout_s=5)
            for i in (low, high)
        ]
        return ResourceServer(
            resource=resource,
            identities=identities(low.url, high.url),
            jwt=JwtVerifier(caches, audience=resource),
        )

    return build


@pytest.fixture
async def peer(
    upstream: UpstreamProc, tmp_path: Path, issuers: tuple[Issuer, Issuer]
) -> AsyncIterator[Peer]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        serve(upstream.url, tmp_path, authenticator=resource_server(*issuers, http)) as sc,
    ):
        yield sc


async def post(peer: Peer, token: str, doc: dict[str, Any]) -> tuple[int, Any]:
    body = json.dumps(doc).encode()
    headers = [*JSON_HEADERS, ("Authorization", f"Bearer {token}")]
    answer = await raw_exchange(peer.port, request_bytes("POST", "/mcp", headers, body))
    return answer.status, answer.json()


READ = call("pods_list", {"namespace": "payments"})


async def test_an_actor_of_another_issuer_is_refused_not_mapped_there(
    peer: Peer, issuers: tuple[Issuer, Issuer]
) -> None:
    low, high = issuers
    # the low issuer names the high issuer's payments agent as its actor
    token = low.token(
        aud=peer.url, sub="mallory@example.com", act={"iss": high.url, "sub": "sre-bot"}
    )
    status, doc = await post(peer, token, READ)
    assert status == 403, doc
    records = peer.verified()
    assert not [r for r in records if r["kind"] == "decision"]
    refused = [r for r in records if r["kind"] == "auth"][-1]
    assert refused["decision"] == "deny" and refused["agent"] == ""
    assert "may delegate only to its own agents" in refused["reason"]
    assert refused["details"]["delegation"] == [{"issuer": high.url, "subject": "sre-bot"}]


async def test_an_earlier_actor_of_another_issuer_is_refused_too(
    peer: Peer, issuers: tuple[Issuer, Issuer]
) -> None:
    low, high = issuers
    act = {"sub": "search-bot", "act": {"iss": high.url + "/", "sub": "sre-bot"}}
    token = low.token(aud=peer.url, sub="mallory@example.com", act=act)
    status, _ = await post(peer, token, READ)
    assert status == 403
    refused = peer.verified()[-1]
    assert refused["kind"] == "auth"
    assert refused["details"]["delegation"] == [
        {"issuer": low.url, "subject": "search-bot"},
        {"issuer": high.url + "/", "subject": "sre-bot"},
    ]


async def test_an_earlier_actor_that_maps_to_no_agent_is_refused(
    peer: Peer, issuers: tuple[Issuer, Issuer]
) -> None:
    _, high = issuers
    act = {"sub": "sre-bot", "act": {"sub": "someone-unknown"}}
    token = high.token(aud=peer.url, sub="alice@example.com", act=act)
    status, _ = await post(peer, token, READ)
    assert status == 403
    assert peer.verified()[-1]["kind"] == "auth"


async def test_the_whole_accepted_chain_is_in_the_decision_record(
    peer: Peer, issuers: tuple[Issuer, Issuer]
) -> None:
    _, high = issuers
    act = {"sub": "sre-bot", "act": {"sub": "busy-bot"}}
    token = high.token(aud=peer.url, sub="alice@example.com", act=act)
    await post(peer, token, READ)  # allowed and forwarded (the upstream wants a session)
    decided = [r for r in peer.verified() if r["kind"] == "decision"][-1]
    assert (decided["agent"], decided["on_behalf_of"], decided["decision"]) == (
        "sre-agent",
        "alice@example.com",
        "allow",
    )
    assert decided["details"]["delegation"] == [
        {"issuer": high.url, "subject": "sre-bot", "agent": "sre-agent", "tenant": ""},
        {"issuer": high.url, "subject": "busy-bot", "agent": "busy-agent", "tenant": ""},
    ]


async def test_a_bad_input_record_carries_the_chain_as_well(
    peer: Peer, issuers: tuple[Issuer, Issuer]
) -> None:
    _, high = issuers
    token = high.token(aud=peer.url, sub="alice@example.com", act={"sub": "sre-bot"})
    status, _ = await post(peer, token, {"jsonrpc": "2.0", "id": 1, "method": "Tools/Call"})
    assert status == 400
    record = peer.verified()[-1]
    assert record["kind"] == "bad_input" and record["agent"] == "sre-agent"
    assert [h["subject"] for h in record["details"]["delegation"]] == ["sre-bot"]
