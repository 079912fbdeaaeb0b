"""The sidecar process reaches a distributor that requires mTLS and bound identities."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.pki import issue, make_ca

from .conftest import make_world

pytestmark = pytest.mark.e2e


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


async def test_a_sidecar_with_its_certificate_gets_bundles_over_mtls_and_one_without_does_not(
    tmp_path: Path,
) -> None:
    ca = make_ca()
    server = issue(ca, "distributor", dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    mine = issue(ca, "payments/sc-1", server=False, client=True)
    ca_file = _write(tmp_path / "ca.pem", ca.cert_pem)
    world = make_world(
        tmp_path,
        extra=[
            "--tls-cert",
            _write(tmp_path / "srv.pem", server.cert_pem),
            "--tls-key",
            _write(tmp_path / "srv.key", server.key_pem),
            "--tls-client-ca",
            ca_file,
            "--bind-identity",
        ],
    )
    try:
        good = world.start_sidecar(
            "sc-1",
            "--distributor-ca",
            ca_file,
            "--distributor-cert",
            _write(tmp_path / "cli.pem", mine.cert_pem),
            "--distributor-key",
            _write(tmp_path / "cli.key", mine.key_pem),
        )
        plain = world.start_sidecar("sc-2")
        doc = await world.ready(good, revision=1)
        assert doc["distributor"]["connected"] is True
        status, doc = plain.readyz()
        assert status == 503
        assert doc["distributor"]["state"] == "NotReady"
        assert doc["distributor"]["connected"] is False
    finally:
        world.close()
