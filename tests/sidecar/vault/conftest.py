"""Fixtures: a real OpenBao dev server with a KV v2 mount and one secret in it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest

from tests.sidecar.vault.bao import BaoMissing, BaoServer

MOUNT = "mcp-kv"
PATH = "servers/kubernetes"
FIELD = "token"
FIRST = "upstream-from-vault-1"

#: Read-only access to the test secret, nothing else.
READ_POLICY = f"""
path "{MOUNT}/data/{PATH}" {{
  capabilities = ["read"]
}}
"""


@dataclass
class Vault:
    """The running server, an admin (root) client, and helpers for the test secret."""

    server: BaoServer
    admin: Any

    @property
    def addr(self) -> str:
        return self.server.addr

    def write(self, value: str, **extra: str) -> int:
        resp = self.admin.secrets.kv.v2.create_or_update_secret(
            path=PATH, secret={FIELD: value, **extra}, mount_point=MOUNT
        )
        return int(resp["data"]["version"])

    def prepare(self) -> None:
        """Mount KV v2, write the first version, add the read-only policy."""
        self.admin.sys.enable_secrets_engine("kv", path=MOUNT, options={"version": "2"})
        self._wait_upgraded()
        self.write(FIRST)
        self.admin.sys.create_or_update_policy(name="mcp-read", policy=READ_POLICY)

    def _wait_upgraded(self, within_s: float = 15.0) -> None:
        """A new KV v2 mount answers "upgrading from non-versioned" until its own
        setup is done (asynchronously, after the enable returned); wait for that."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                self.admin.secrets.kv.v2.read_configuration(mount_point=MOUNT)
                return
            except hvac.exceptions.InvalidRequest as e:
                if "Upgrading" not in str(e) or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def token(self, **kwargs: Any) -> str:
        """A token limited to the read policy (kwargs: ttl, renewable, ...)."""
        resp = self.admin.auth.token.create(policies=["mcp-read"], **kwargs)
        return str(resp["auth"]["client_token"])


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[BaoServer]:
    try:
        server = BaoServer(tmp_path)
    except BaoMissing as e:
        pytest.fail(str(e), pytrace=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def vault(bao: BaoServer) -> Vault:
    v = Vault(bao, bao.client())
    v.prepare()
    return v


@pytest.fixture
def token_file(vault: Vault, tmp_path: Path) -> Path:
    """A file holding a read-only token without expiry."""
    path = tmp_path / "vault-token"
    path.write_text(vault.token(no_parent=True) + "\n")
    return path
