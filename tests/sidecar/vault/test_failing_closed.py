"""Vault failing: cached values carry on until they expire, then calls are refused.

Expiry is driven by an injected clock (no sleeping); the outages are real: the
OpenBao process is stopped and started again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.credentials import CredentialUnavailable
from sidecar.credentials_vault import TokenFileAuth, VaultCredential, VaultSettings, VaultState
from tests.harness.process import free_port
from tests.sidecar.vault.bao import BaoServer
from tests.sidecar.vault.conftest import FIELD, FIRST, MOUNT, PATH, Vault

pytestmark = pytest.mark.e2e


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(addr: str, token_file: Path, **kw: object) -> VaultSettings:
    base: dict[str, object] = {
        "addr": addr,
        "secret_path": PATH,
        "field": FIELD,
        "mount": MOUNT,
        "auth": TokenFileAuth(str(token_file)),
        "request_timeout_s": 2.0,
    }
    base.update(kw)
    return VaultSettings(**base)  # type: ignore[arg-type]


async def eventually(cond: Callable[[], bool], within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_with_vault_down_the_cached_credential_is_served_until_it_expires(
    vault: Vault, bao: BaoServer, token_file: Path
) -> None:
    clock = FakeClock()
    cred = VaultCredential(settings(vault.addr, token_file, max_stale_s=120.0), clock=clock)
    try:
        assert await cred.refresh_now()
        bao.stop()
        clock.now += 60
        assert not await cred.refresh_now()
        states = [cred.state]
        assert cred.reason == "Vault is unreachable"
        assert cred.current() == f"Bearer {FIRST}"  # still within max_stale_s of the last read
        clock.now += 61
        states.append(cred.state)
        assert states == [VaultState.STALE, VaultState.FAILED]
        with pytest.raises(CredentialUnavailable, match="expired") as err:
            cred.current()
        assert "Vault is unreachable" in str(err.value)
        assert FIRST not in str(err.value)
    finally:
        await cred.aclose()


async def test_the_background_refresh_rides_out_an_outage_and_recovers(
    vault: Vault, bao: BaoServer, token_file: Path
) -> None:
    s = settings(vault.addr, token_file, refresh_interval_s=0.3, retry_min_s=0.1, retry_max_s=0.4)
    async with VaultCredential(s) as cred:
        assert cred.current() == f"Bearer {FIRST}"
        bao.stop()
        await eventually(lambda: cred.state is VaultState.STALE)
        errors = cred.errors
        await eventually(lambda: cred.errors >= errors + 2)  # it keeps trying
        assert cred.current() == f"Bearer {FIRST}"
        # Vault is back (in-memory dev server: same address and root token, data gone)
        bao.start()
        vault.prepare()
        vault.write("after-the-outage")
        await asyncio.to_thread(token_file.write_text, vault.token())
        await eventually(lambda: cred.current() == "Bearer after-the-outage")
        assert cred.state is VaultState.OK


async def test_no_vault_at_start_refuses_calls_with_a_clear_reason(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s.never-used")
    cred = VaultCredential(settings(f"http://127.0.0.1:{free_port()}", token_file))
    async with cred:  # starting never raises: the sidecar serves, calls fail closed
        assert cred.state is VaultState.FAILED
        with pytest.raises(CredentialUnavailable, match="Vault is unreachable"):
            await cred()


async def test_a_wrong_token_is_a_clear_error_that_does_not_contain_it(
    vault: Vault, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "s.WrongTokenValue0123456789"
    token_file = tmp_path / "token"
    token_file.write_text(wrong)
    async with VaultCredential(settings(vault.addr, token_file)) as cred:
        with pytest.raises(CredentialUnavailable) as err:
            cred.current()
    assert "permission denied" in str(err.value)
    assert wrong not in str(err.value)
    assert cred.state is VaultState.FAILED
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "permission denied" in logged
    assert wrong not in logged


async def test_a_revoked_token_drops_the_cached_credential_at_once(
    vault: Vault, tmp_path: Path
) -> None:
    token = vault.token()
    token_file = tmp_path / "token"
    token_file.write_text(token)
    async with VaultCredential(settings(vault.addr, token_file)) as cred:
        assert cred.current() == f"Bearer {FIRST}"
        vault.admin.auth.token.revoke(token)
        assert not await cred.refresh_now()
        with pytest.raises(CredentialUnavailable, match="permission denied"):
            cred.current()


async def test_neither_the_credential_nor_the_token_is_ever_logged(
    vault: Vault, bao: BaoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = vault.token()
    token_file = tmp_path / "token"
    token_file.write_text(token)
    s = settings(vault.addr, token_file, refresh_interval_s=0.2, retry_min_s=0.1)
    async with VaultCredential(s) as cred:
        vault.write("rotated-secret-value")
        await eventually(lambda: cred.version == 2)
        bao.stop()
        await eventually(lambda: cred.state is VaultState.STALE)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "upstream credential read from Vault" in logged
    assert "cannot read the upstream credential from Vault" in logged
    for secret in (token, FIRST, "rotated-secret-value"):
        assert secret not in logged
