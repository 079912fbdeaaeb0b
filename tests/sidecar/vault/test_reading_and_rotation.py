"""The upstream credential is read from a real OpenBao KV v2 secret and kept fresh."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.credentials import CredentialUnavailable, upstream_headers
from sidecar.credentials_vault import TokenFileAuth, VaultCredential, VaultSettings, VaultState
from tests.sidecar.vault.conftest import FIELD, FIRST, MOUNT, PATH, Vault

pytestmark = pytest.mark.e2e


def settings(vault: Vault, token_file: Path, **kw: object) -> VaultSettings:
    base: dict[str, object] = {
        "addr": vault.addr,
        "secret_path": PATH,
        "field": FIELD,
        "mount": MOUNT,
        "auth": TokenFileAuth(str(token_file)),
    }
    base.update(kw)
    return VaultSettings(**base)  # type: ignore[arg-type]


async def eventually(cond: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_the_credential_is_read_from_kv_v2_and_sent_as_a_bearer_header(
    vault: Vault, token_file: Path
) -> None:
    async with VaultCredential(settings(vault, token_file)) as cred:
        assert cred.state is VaultState.OK
        assert cred.version == 1
        assert await cred() == {"Authorization": f"Bearer {FIRST}"}
        out = await upstream_headers(
            {"Authorization": "Bearer client-token", "Accept": "application/json"}, cred
        )
    assert ("Authorization", f"Bearer {FIRST}") in out
    assert all("client-token" not in v for _, v in out)


async def test_a_custom_header_without_a_scheme_carries_the_raw_value(
    vault: Vault, token_file: Path
) -> None:
    cred = VaultCredential(settings(vault, token_file, header="X-Api-Key", scheme=""))
    async with cred:
        assert await cred.header() == ("X-Api-Key", FIRST)


async def test_a_rotated_secret_is_picked_up_by_the_background_refresh(
    vault: Vault, token_file: Path
) -> None:
    cred = VaultCredential(settings(vault, token_file, refresh_interval_s=0.2))
    async with cred:
        assert cred.current() == f"Bearer {FIRST}"
        assert vault.write("upstream-from-vault-2") == 2
        await eventually(lambda: cred.version == 2)
        assert cred.current() == "Bearer upstream-from-vault-2"
        assert cred.state is VaultState.OK


async def test_the_hot_path_does_not_wait_for_vault(vault: Vault, token_file: Path) -> None:
    cred = VaultCredential(settings(vault, token_file))
    async with cred:
        reads = cred.reads
        for _ in range(1000):
            await cred()
        assert cred.reads == reads  # served from memory, not one more request


async def test_a_deleted_secret_is_refused_at_once_not_served_from_cache(
    vault: Vault, token_file: Path
) -> None:
    cred = VaultCredential(settings(vault, token_file))
    async with cred:
        vault.admin.secrets.kv.v2.delete_latest_version_of_secret(path=PATH, mount_point=MOUNT)
        assert not await cred.refresh_now()
        assert cred.state is VaultState.FAILED
        with pytest.raises(CredentialUnavailable, match="no such secret"):
            cred.current()
        # written again: served again
        vault.write("upstream-from-vault-3")
        assert await cred.refresh_now()
        assert cred.current() == "Bearer upstream-from-vault-3"


async def test_a_secret_without_the_field_is_a_clear_error_naming_the_field(
    vault: Vault, token_file: Path
) -> None:
    vault.admin.secrets.kv.v2.create_or_update_secret(
        path=PATH, secret={"other": "value-that-must-not-leak"}, mount_point=MOUNT
    )
    async with VaultCredential(settings(vault, token_file)) as cred:
        with pytest.raises(CredentialUnavailable) as err:
            cred.current()
    assert f"no field '{FIELD}'" in str(err.value)
    assert "value-that-must-not-leak" not in str(err.value)


async def test_a_multi_line_value_is_refused(vault: Vault, token_file: Path) -> None:
    vault.write("line-one\nX-Injected: yes")
    async with VaultCredential(settings(vault, token_file)) as cred:
        with pytest.raises(CredentialUnavailable, match="not a single line"):
            cred.current()


async def test_a_short_lived_token_is_renewed_before_it_expires(
    vault: Vault, tmp_path: Path
) -> None:
    token = vault.token(ttl="6s", explicit_max_ttl="1h", renewable=True)
    path = tmp_path / "short-token"
    path.write_text(token)
    cred = VaultCredential(settings(vault, path, refresh_interval_s=0.5, max_stale_s=60.0))
    async with cred:
        # well past the token's first TTL: only renewals keep it alive
        await asyncio.sleep(7.5)
        assert await cred.refresh_now(), cred.reason
        # an expired token is revoked and its lookup refused: this one is alive
        assert vault.admin.auth.token.lookup(token)["data"]["ttl"] <= 6
    assert cred.errors == 0
