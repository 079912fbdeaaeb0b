"""Certificates: issuance, rotation decisions on a fake clock, the caBundle patch."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
import tempfile
from pathlib import Path

from cryptography import x509

from injector import certs
from injector.tls import ServingContext, ca_bundle_ops

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NAMES = certs.service_names("palisade-injector", "palisade", ("127.0.0.1",))
MONTH = dt.timedelta(days=30)


def test_service_names_cover_every_form_the_api_server_may_use() -> None:
    assert NAMES[:4] == [
        "palisade-injector.palisade.svc",
        "palisade-injector.palisade.svc.cluster.local",
        "palisade-injector.palisade",
        "palisade-injector",
    ]
    assert "127.0.0.1" in NAMES


def test_the_serving_certificate_chains_to_the_ca_and_names_the_service() -> None:
    cert_set = certs.create(NAMES, NOW, 3650, 90)
    cert = x509.load_pem_x509_certificate(cert_set.cert.encode())
    ca = x509.load_pem_x509_certificate(cert_set.ca_cert.encode())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "palisade-injector.palisade.svc" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=90)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_a_fresh_set_is_kept() -> None:
    cert_set = certs.create(NAMES, NOW, 3650, 90)
    assert certs.plan(cert_set, NAMES, NOW + dt.timedelta(days=59), MONTH) == "keep"


def test_the_serving_certificate_is_reissued_before_it_expires() -> None:
    cert_set = certs.create(NAMES, NOW, 3650, 90)
    later = NOW + dt.timedelta(days=61)
    assert certs.plan(cert_set, NAMES, later, MONTH) == "reissue"
    rotated = certs.rotate(cert_set, "reissue", NAMES, later, 3650, 90)
    assert rotated.ca_cert == cert_set.ca_cert
    assert rotated.cert != cert_set.cert
    assert certs.plan(rotated, NAMES, later, MONTH) == "keep"


def test_a_new_name_forces_a_reissue() -> None:
    cert_set = certs.create(NAMES, NOW, 3650, 90)
    assert certs.plan(cert_set, [*NAMES, "injector.example"], NOW, MONTH) == "reissue"


def test_a_ca_near_its_end_is_replaced_and_the_old_one_stays_trusted_until_it_expires() -> None:
    cert_set = certs.create(NAMES, NOW, 40, 30)
    later = NOW + dt.timedelta(days=20)
    assert certs.plan(cert_set, NAMES, later, MONTH) == "new-ca"
    rotated = certs.rotate(cert_set, "new-ca", NAMES, later, 3650, 90)
    assert rotated.ca_cert != cert_set.ca_cert
    assert rotated.previous_ca == cert_set.ca_cert
    assert rotated.ca_bundle == rotated.ca_cert + cert_set.ca_cert
    after_old_expiry = NOW + dt.timedelta(days=41)
    assert certs.rotate(rotated, "keep", NAMES, after_old_expiry, 3650, 90).previous_ca == ""


def test_the_serving_certificate_never_outlives_its_ca() -> None:
    cert_set = certs.create(NAMES, NOW, 10, 90)
    assert certs.not_after(cert_set.cert) == certs.not_after(cert_set.ca_cert)


def test_ca_bundle_ops_patch_only_the_webhooks_that_differ() -> None:
    wanted = base64.b64encode(b"CA").decode()
    config = {
        "webhooks": [
            {"name": "a", "clientConfig": {"caBundle": wanted}},
            {"name": "b", "clientConfig": {"caBundle": "b3RoZXI="}},
            {"name": "c", "clientConfig": {"url": "https://x"}},
        ]
    }
    assert ca_bundle_ops(config, wanted) == [
        {"op": "test", "path": "/webhooks/1/name", "value": "b"},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": wanted},
        {"op": "test", "path": "/webhooks/2/name", "value": "c"},
        {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": wanted},
    ]
    assert ca_bundle_ops({"webhooks": []}, wanted) == []


def test_the_serving_context_swaps_certificates_in_place() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        serving = ServingContext(tmp)
        assert not serving.ready
        first = certs.create(NAMES, dt.datetime.now(dt.UTC), 30, 10)
        assert serving.load_pem(first.cert, first.key, first.ca_cert)
        assert serving.ready
        assert not serving.load_pem(first.cert, first.key), "same certificate: nothing to do"
        assert (Path(tmp) / "tls.key").stat().st_mode & 0o077 == 0
        second = certs.create(NAMES, dt.datetime.now(dt.UTC), 30, 10)
        context_before = serving.context
        assert serving.load_pem(second.cert, second.key, second.ca_cert)
        assert serving.context is context_before
        assert isinstance(serving.context, ssl.SSLContext)


def _write(directory: str, cert_set: certs.CertSet) -> None:
    Path(directory, "tls.crt").write_text(cert_set.cert)
    Path(directory, "tls.key").write_text(cert_set.key)


async def test_mounted_certificates_are_reloaded_when_the_files_change() -> None:
    from injector.settings import TLSSettings
    from injector.tls import MountedTLS

    with tempfile.TemporaryDirectory() as tmp:
        first = certs.create(NAMES, dt.datetime.now(dt.UTC), 30, 10)
        _write(tmp, first)
        serving = ServingContext(tmp)
        mounted = MountedTLS(TLSSettings(mode="mounted", directory=tmp), serving)
        await mounted.reconcile()
        assert serving.loaded_cert == first.cert
        second = certs.create(NAMES, dt.datetime.now(dt.UTC), 30, 10)
        _write(tmp, second)
        await mounted.reconcile()
        assert serving.loaded_cert == second.cert
