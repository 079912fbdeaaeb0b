"""The per-agent token source's pure parts and its caching, with a fake minter and clock."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest

from palisade.bundle.schema import ClusterCredential
from sidecar.credentials import CredentialSource, CredentialUnavailable, NoCredential
from sidecar.credentials.caller import CallerBinding, calling_as, current
from sidecar.credentials.file import FileCredential
from sidecar.credentials.kube_token import (
    BundleAccounts,
    KubeTokenCredential,
    TokenRequestSettings,
    parse_token_response,
    refusal_reason,
)
from sidecar.identity import Principal

SA = ClusterCredential("payments/sre-agent-payments")


def principal(agent: str) -> Principal:
    return Principal(agent=agent, tenant="", on_behalf_of="", subject="s", issuer="i")


@dataclass
class FakeMinter:
    lifetime: float = 600.0
    fail: bool = False
    minted: list[str] = field(default_factory=list)

    async def mint(self, account: ClusterCredential) -> tuple[str, float]:
        if self.fail:
            raise CredentialUnavailable("the API server cannot be reached")
        self.minted.append(account.service_account)
        return f"token-{len(self.minted)}", self.lifetime

    async def aclose(self) -> None:
        return None


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def source(minter: FakeMinter, clock: Clock) -> KubeTokenCredential:
    settings = TokenRequestSettings(api_server="https://api", ca_file=None)
    return KubeTokenCredential(settings, {"a": SA}.get, minter=minter, clock=clock)


def test_every_source_has_the_one_interface() -> None:
    settings = TokenRequestSettings(api_server="https://api", ca_file=None)
    none: dict[str, ClusterCredential] = {}
    for s in (NoCredential(), FileCredential("/x"), KubeTokenCredential(settings, none.get)):
        assert isinstance(s, CredentialSource)


def test_a_token_request_answer_gives_the_token_and_its_lifetime() -> None:
    body = json.dumps(
        {"status": {"token": "eyJ.a-b_c.d", "expirationTimestamp": "2026-12-02T18:10:00Z"}}
    ).encode()
    wall = 1_796_234_400.0  # 2026-12-02T18:00:00Z
    assert parse_token_response(body, wall) == ("eyJ.a-b_c.d", 600.0)
    for bad in (b"{}", b"[]", b"not json", json.dumps({"status": {"token": "a\nb",
                "expirationTimestamp": "2026-12-02T18:10:00Z"}}).encode()):  # fmt: skip
        with pytest.raises(CredentialUnavailable, match="malformed"):
            parse_token_response(bad, wall)
    with pytest.raises(CredentialUnavailable, match="already expired"):
        parse_token_response(body, wall + 601)


def test_refusals_are_named_from_the_status_alone() -> None:
    assert "needs 'create' on serviceaccounts/token" in refusal_reason(403, SA)
    assert "no ServiceAccount payments/sre-agent-payments" in refusal_reason(404, SA)
    assert "own ServiceAccount token" in refusal_reason(401, SA)
    assert "answered 500" in refusal_reason(500, SA)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"expiration_s": 300},
        {"refresh_fraction": 1.0},
        {"expiry_margin_s": 200.0},
        {"header": "Bad Header"},
    ],
)
def test_settings_that_cannot_work_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TokenRequestSettings(api_server="https://api", **kwargs)  # type: ignore[arg-type]


async def test_concurrent_first_calls_share_one_token_request() -> None:
    minter, clock = FakeMinter(), Clock()
    s = source(minter, clock)
    with calling_as(principal("a")):
        values = await asyncio.gather(*(s.header() for _ in range(20)))
    assert {v for _, v in values} == {"Bearer token-1"} and minter.minted == [SA.service_account]


async def test_a_failed_refresh_keeps_the_token_until_its_margin_then_fails_closed() -> None:
    minter, clock = FakeMinter(), Clock()
    s = source(minter, clock)
    with calling_as(principal("a")):
        assert await s.header() == ("Authorization", "Bearer token-1")
        minter.fail = True
        clock.now = 500.0
        assert (await s.header())[1] == "Bearer token-1"
        await asyncio.sleep(0)  # the background refresh runs, and fails
        await asyncio.sleep(0)
        assert s.stats.failures == 1
        clock.now = 571.0  # 29 s left: under the 30 s margin
        with pytest.raises(CredentialUnavailable, match="cannot be reached"):
            await s.header()
        assert s.stats.failures == 2
        minter.fail = False
        clock.now = 572.0  # within retry_after_s of that failure: refused, not asked again
        with pytest.raises(CredentialUnavailable, match="cannot be reached"):
            await s.header()
        assert s.stats.failures == 2 and minter.minted == [SA.service_account]
        clock.now = 574.0
        assert (await s.header())[1] == "Bearer token-2"


class _Holder:
    def __init__(self) -> None:
        self.snapshot: object = None


@dataclass
class _Snap:
    digest: str
    compiled: object


@dataclass
class _Engine:
    bundle: object


@dataclass
class _Bundle:
    agents: tuple[object, ...]


@dataclass
class _Agent:
    id: str
    cluster_credential: ClusterCredential | None


def test_the_accounts_follow_the_active_bundle() -> None:
    holder = _Holder()
    accounts = BundleAccounts(holder)
    assert accounts("a") is None  # no bundle yet
    holder.snapshot = _Snap("d1", _Engine(_Bundle((_Agent("a", SA), _Agent("b", None)))))
    assert accounts("a") == SA and accounts("b") is None
    other = ClusterCredential("payments/other")
    holder.snapshot = _Snap("d2", _Engine(_Bundle((_Agent("a", other),))))
    assert accounts("a") == other


async def test_the_binding_names_the_identity_and_clears_a_failed_caller() -> None:
    class Inner:
        def __init__(self) -> None:
            self.fail = False

        async def authenticate(self, headers: object) -> Principal:
            if self.fail:
                raise PermissionError("no")
            return principal("a")

        def protected_resource_metadata(self) -> dict[str, object]:
            return {"resource": "r"}

    inner = Inner()
    binding = CallerBinding(inner, {"a": SA.username}.get)
    got = await binding.authenticate({})
    assert got.upstream_identity == "system:serviceaccount:payments:sre-agent-payments"
    assert got.audit_details() == {"upstream_identity": got.upstream_identity}
    assert current() == got
    inner.fail = True
    with pytest.raises(PermissionError):
        await binding.authenticate({})
    assert current() is None
    assert binding.protected_resource_metadata() == {"resource": "r"}
