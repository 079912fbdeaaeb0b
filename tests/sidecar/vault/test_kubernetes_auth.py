"""Vault's Kubernetes auth against a real kube-apiserver: the pod's ServiceAccount token.

OpenBao's ``kubernetes`` auth method is configured with the harness's API server
URL and CA and verifies the tokens it is given with the TokenReview API. The
tokens are minted by the API server itself (TokenRequest), audience-scoped to
``openbao``, as a projected ServiceAccount token volume would hold them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sidecar.credentials import CredentialUnavailable
from sidecar.credentials_vault import KubernetesAuth, VaultCredential, VaultSettings, VaultState
from tests.harness import ApiError, ControlPlane
from tests.sidecar.vault.conftest import FIELD, FIRST, MOUNT, PATH, Vault

pytestmark = pytest.mark.e2e

NAMESPACE = "vault-auth-payments"
OTHER_NAMESPACE = "vault-auth-billing"
ACCOUNT = "mcp-kubernetes"
AUDIENCE = "openbao"


def service_account_token(kube: ControlPlane, namespace: str, audience: str = AUDIENCE) -> str:
    """A fresh TokenRequest token for ACCOUNT in ``namespace`` (created when missing)."""
    kube.create_namespace(namespace)
    try:
        kube.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}},
        )
    except ApiError as exc:  # already there from an earlier test of this session
        if exc.status != 409:
            raise
    resp: dict[str, Any] = kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{ACCOUNT}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": 600},
        },
    )
    return str(resp["status"]["token"])


@pytest.fixture
def k8s_vault(vault: Vault, kube: ControlPlane) -> Vault:
    """OpenBao trusting the harness's API server; role ``mcp-server`` bound to one SA."""
    vault.admin.sys.enable_auth_method("kubernetes")
    vault.admin.auth.kubernetes.configure(
        kubernetes_host=kube.server,
        kubernetes_ca_cert=kube.ca_pem.decode(),
        token_reviewer_jwt=kube.admin_token,
        disable_local_ca_jwt=True,
    )
    vault.admin.auth.kubernetes.create_role(
        name="mcp-server",
        bound_service_account_names=[ACCOUNT],
        bound_service_account_namespaces=[NAMESPACE],
        policies=["mcp-read"],
        audience=AUDIENCE,
        ttl="3s",  # short, so the test sees the sidecar log in again before it ends
    )
    return vault


def settings(vault: Vault, token_path: Path, **kw: object) -> VaultSettings:
    base: dict[str, object] = {
        "addr": vault.addr,
        "secret_path": PATH,
        "field": FIELD,
        "mount": MOUNT,
        "auth": KubernetesAuth("mcp-server", token_path=str(token_path)),
    }
    base.update(kw)
    return VaultSettings(**base)  # type: ignore[arg-type]


async def test_the_pods_service_account_token_logs_in_and_reads_the_secret(
    k8s_vault: Vault, kube: ControlPlane, tmp_path: Path
) -> None:
    sa_token = tmp_path / "token"
    sa_token.write_text(service_account_token(kube, NAMESPACE))
    s = settings(k8s_vault, sa_token, refresh_interval_s=0.5, max_stale_s=60.0)
    async with VaultCredential(s) as cred:
        assert cred.current() == f"Bearer {FIRST}"
        # the Vault token lives 3 s: past that, reads only work after fresh logins,
        # made with the token file as it is then (the kubelet rotates it)
        await asyncio.to_thread(sa_token.write_text, service_account_token(kube, NAMESPACE))
        await asyncio.sleep(4.5)
        assert await cred.refresh_now(), cred.reason
        assert cred.state is VaultState.OK
        assert cred.errors == 0


async def test_a_service_account_of_another_namespace_is_refused(
    k8s_vault: Vault, kube: ControlPlane, tmp_path: Path
) -> None:
    sa_token = tmp_path / "token"
    jwt = service_account_token(kube, OTHER_NAMESPACE)
    sa_token.write_text(jwt)
    async with VaultCredential(settings(k8s_vault, sa_token)) as cred:
        with pytest.raises(CredentialUnavailable, match="refused the Kubernetes login") as err:
            cred.current()
    assert jwt not in str(err.value)


async def test_a_token_for_another_audience_is_refused(
    k8s_vault: Vault, kube: ControlPlane, tmp_path: Path
) -> None:
    sa_token = tmp_path / "token"
    sa_token.write_text(service_account_token(kube, NAMESPACE, audience="some-other-service"))
    async with VaultCredential(settings(k8s_vault, sa_token)) as cred:
        assert cred.state is VaultState.FAILED
        with pytest.raises(CredentialUnavailable, match="refused the Kubernetes login"):
            cred.current()
