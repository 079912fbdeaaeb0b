"""``palisade sidecar`` flags and PALISADE_VAULT_* variables select the credential source."""

from __future__ import annotations

import argparse

import pytest

from sidecar.credentials import FileCredential
from sidecar.credentials_vault import KubernetesAuth, TokenFileAuth, VaultCredential
from sidecar.main import credentials_from, register

BASE = ["--upstream", "http://127.0.0.1:1", "--server-name", "s"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser)
    return parser.parse_args([*BASE, *argv])


async def test_kubernetes_auth_is_chosen_by_a_role() -> None:
    source = credentials_from(
        parse(
            "--vault-addr",
            "https://vault:8200",
            "--vault-secret-path",
            "mcp/k8s",
            "--vault-role",
            "mcp-server",
        )
    )
    assert isinstance(source, VaultCredential)
    s = source.settings
    assert s.auth == KubernetesAuth(
        "mcp-server", token_path="/var/run/secrets/kubernetes.io/serviceaccount/token"
    )
    assert (s.mount, s.secret_path, s.field, s.header, s.scheme) == (
        "secret", "mcp/k8s", "token", "Authorization", "Bearer",
    )  # fmt: skip
    await source.aclose()


async def test_the_environment_gives_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALISADE_VAULT_ADDR", "http://127.0.0.1:8200")
    monkeypatch.setenv("PALISADE_VAULT_SECRET_PATH", "mcp/github")
    monkeypatch.setenv("PALISADE_VAULT_SECRET_FIELD", "pat")
    monkeypatch.setenv("PALISADE_VAULT_TOKEN_FILE", "/run/vault/token")
    monkeypatch.setenv("PALISADE_VAULT_MAX_STALE", "120")
    source = credentials_from(parse("--upstream-credential-header", "X-Api-Key"))
    assert isinstance(source, VaultCredential)
    s = source.settings
    assert s.auth == TokenFileAuth("/run/vault/token")
    assert (s.addr, s.secret_path, s.field, s.max_stale_s, s.header) == (
        "http://127.0.0.1:8200", "mcp/github", "pat", 120.0, "X-Api-Key",
    )  # fmt: skip
    await source.aclose()


def test_a_secret_file_still_works_and_nothing_means_no_credential() -> None:
    assert isinstance(credentials_from(parse("--upstream-credential-file", "/x")), FileCredential)
    assert credentials_from(parse()) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--vault-addr", "http://v:8200", "--upstream-credential-file", "/x"], "or --upstream"),
        (["--vault-addr", "http://v:8200", "--vault-secret-path", "p"], "--vault-role or"),
        (
            ["--vault-addr", "http://v:8200", "--vault-secret-path", "p", "--vault-role", "r",
             "--vault-token-file", "/t"],
            "--vault-role or",
        ),
        (["--vault-addr", "http://v:8200", "--vault-role", "r"], "path and field"),
        (["--vault-addr", "v:8200", "--vault-secret-path", "p", "--vault-role", "r"], "http"),
    ],
)  # fmt: skip
def test_inconsistent_flags_stop_the_sidecar_with_a_clear_message(
    argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit, match=message):
        credentials_from(parse(*argv))
