"""gRPC over TLS and mTLS between a real replica and the real client."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from tests.distributor.conftest import Fleet
from tests.distributor.helpers import eventually, make_client
from tests.harness.pki import issue, make_ca


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


async def test_a_client_trusting_the_ca_gets_bundles_over_mtls_and_others_get_nothing(
    fleet: Fleet,
) -> None:
    ca = make_ca()
    server = issue(ca, "distributor", dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    client_cert = issue(ca, "sidecar-1", server=False, client=True)
    t = fleet.tmp
    ca_file = _write(t, "ca.pem", ca.cert_pem)
    replica = fleet.start(
        "tls",
        extra=[
            "--tls-cert",
            str(_write(t, "srv.pem", server.cert_pem)),
            "--tls-key",
            str(_write(t, "srv.key", server.key_pem)),
            "--tls-client-ca",
            str(ca_file),
        ],
    )
    good, _ = make_client(t, "good", [replica.target], fleet.trusted)
    good.settings = replace(
        good.settings,
        tls_ca_file=ca_file,
        tls_cert_file=_write(t, "cli.pem", client_cert.cert_pem),
        tls_key_file=_write(t, "cli.key", client_cert.key_pem),
    )
    no_cert, _ = make_client(t, "no-cert", [replica.target], fleet.trusted)
    no_cert.settings = replace(no_cert.settings, tls_ca_file=ca_file)
    plain, _ = make_client(t, "plain", [replica.target], fleet.trusted)
    for c in (good, no_cert, plain):
        await c.start()
    try:
        await eventually(lambda: good.status.revision == 1, 15, "bundle over mTLS")
        await asyncio.sleep(1.0)
        assert no_cert.status.revision == 0 and not no_cert.status.connected
        assert plain.status.revision == 0 and not plain.status.connected
    finally:
        for c in (good, no_cert, plain):
            await c.stop()


async def test_with_bound_identities_a_client_can_only_name_itself_as_its_certificate_says(
    fleet: Fleet,
) -> None:
    ca = make_ca()
    server = issue(ca, "distributor", dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    cert = issue(ca, "sidecar-1", server=False, client=True)
    t = fleet.tmp
    ca_file = _write(t, "ca.pem", ca.cert_pem)
    replica = fleet.start(
        "tls",
        extra=[
            "--tls-cert",
            str(_write(t, "srv.pem", server.cert_pem)),
            "--tls-key",
            str(_write(t, "srv.key", server.key_pem)),
            "--tls-client-ca",
            str(ca_file),
            "--bind-identity",
        ],
    )
    tls = {
        "tls_ca_file": ca_file,
        "tls_cert_file": _write(t, "cli.pem", cert.cert_pem),
        "tls_key_file": _write(t, "cli.key", cert.key_pem),
    }
    honest, _ = make_client(t, "sidecar-1", [replica.target], fleet.trusted)
    honest.settings = replace(honest.settings, **tls)  # type: ignore[arg-type]
    impostor, _ = make_client(t, "sidecar-2", [replica.target], fleet.trusted)
    impostor.settings = replace(impostor.settings, **tls)  # type: ignore[arg-type]
    for c in (honest, impostor):
        await c.start()
    try:
        await eventually(lambda: honest.status.revision == 1, 15, "the honest client is served")
        await asyncio.sleep(1.0)
        assert impostor.status.revision == 0 and not impostor.status.connected
        assert "does not match the client certificate" in replica.log_path.read_text()
    finally:
        for c in (honest, impostor):
            await c.stop()
