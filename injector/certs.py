"""Certificates for the webhook: make a CA, issue a serving certificate, decide rotation.

Pure: the clock is a parameter, nothing touches files or the network. Keys are
ECDSA P-256 (small, fast handshakes). The ``CertSet`` is what replicas share
(through a Secret, see tls.py): the CA, the serving certificate and key, and
the previous CA while a CA rotation is in its overlap, so that ``ca_bundle``
(what the API server trusts) holds both until every replica serves the new one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, replace
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Action = Literal["keep", "reissue", "new-ca"]
_BACKDATE = dt.timedelta(minutes=5)  # tolerate clock skew between API server and us


@dataclass(frozen=True)
class CertSet:
    """PEM text of everything one webhook serves with (``previous_ca`` may be empty)."""

    ca_cert: str
    ca_key: str
    cert: str
    key: str
    previous_ca: str = ""

    @property
    def ca_bundle(self) -> str:
        """What the API server must trust: the CA, plus the previous one during overlap."""
        return self.ca_cert + self.previous_ca


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def new_ca(now: dt.datetime, days: int, name: str = "palisade-injector-ca") -> tuple[str, str]:
    """A self-signed CA: (certificate PEM, key PEM)."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem_cert(cert), _pem_key(key)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(
    ca_cert_pem: str, ca_key_pem: str, names: list[str], now: dt.datetime, days: int
) -> tuple[str, str]:
    """A serving certificate for ``names`` (DNS names or IPs): (certificate PEM, key PEM)."""
    if not names:
        raise ValueError("a serving certificate needs at least one name")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an ECDSA key")
    key = _key()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _pem_cert(cert), _pem_key(key)


def create(names: list[str], now: dt.datetime, ca_days: int, cert_days: int) -> CertSet:
    """A fresh CA and serving certificate."""
    ca_cert, ca_key = new_ca(now, ca_days)
    cert, key = issue(ca_cert, ca_key, names, now, cert_days)
    return CertSet(ca_cert=ca_cert, ca_key=ca_key, cert=cert, key=key)


def service_names(service: str, namespace: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The names the API server may use to reach the webhook's Service, plus extras."""
    base = [
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
        service,
    ]
    return base + [n for n in extra if n not in base]


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = {str(n) for n in ext.get_values_for_type(x509.DNSName)}
    return names | {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


def not_after(pem: str) -> dt.datetime:
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc


def plan(certs: CertSet, names: list[str], now: dt.datetime, rotate_before: dt.timedelta) -> Action:
    """What to do with a shared CertSet: keep it, reissue the serving cert, or make a new CA."""
    ca = x509.load_pem_x509_certificate(certs.ca_cert.encode())
    if ca.not_valid_after_utc - now < rotate_before:
        return "new-ca"
    cert = x509.load_pem_x509_certificate(certs.cert.encode())
    if cert.issuer != ca.subject or cert.not_valid_after_utc - now < rotate_before:
        return "reissue"
    if not set(names) <= _sans(cert):
        return "reissue"
    return "keep"


def rotate(
    certs: CertSet,
    action: Action,
    names: list[str],
    now: dt.datetime,
    ca_days: int,
    cert_days: int,
) -> CertSet:
    """Carry out ``action``. A new CA keeps the old one in ``previous_ca`` for the overlap."""
    if action == "keep":
        return _drop_expired_previous(certs, now)
    if action == "reissue":
        cert, key = issue(certs.ca_cert, certs.ca_key, names, now, cert_days)
        return _drop_expired_previous(replace(certs, cert=cert, key=key), now)
    fresh = create(names, now, ca_days, cert_days)
    return replace(fresh, previous_ca=certs.ca_cert)


def _drop_expired_previous(certs: CertSet, now: dt.datetime) -> CertSet:
    if certs.previous_ca and not_after(certs.previous_ca) <= now:
        return replace(certs, previous_ca="")
    return certs
