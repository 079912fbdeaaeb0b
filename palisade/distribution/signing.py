"""Bundle digests and Ed25519 signatures exactly as ``SignedBundle`` defines them.

The wire contract (``proto/palisade/v1/bundle.proto``):

- ``document`` is canonical JSON (sorted keys, no whitespace, UTF-8);
- ``digest`` is ``"sha256:<hex>"`` of ``document``;
- each signature is Ed25519 over ``"palisade-bundle-v1\\n<revision>\\n<digest>"``;
- ``key_id`` is the first 16 hex characters of SHA-256 over the raw 32-byte public key.

Ed25519 signatures are deterministic, so two replicas holding the same key sign
the same (revision, document) to byte-identical bundles. Verification accepts a
bundle when any signature verifies under any trusted key, which is what lets a
fleet rotate keys: trust old and new, sign with new, then drop old.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from palisade.v1 import bundle_pb2

PAYLOAD_PREFIX = b"palisade-bundle-v1\n"


class VerificationError(Exception):
    """A bundle failed its digest or signature check; the message says which."""


def canonical_json(doc: Any) -> bytes:
    """The one byte form of a document that every replica and client agrees on."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(document: bytes) -> str:
    return "sha256:" + hashlib.sha256(document).hexdigest()


def signing_payload(revision: int, digest: str) -> bytes:
    return PAYLOAD_PREFIX + f"{revision}\n{digest}".encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from PEM (PKCS#8) or 32 raw bytes."""
    data = Path(path).read_bytes()
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key from PEM, or derive it from a private key file."""
    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data or len(data) == 32:
        return load_private_key(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign_bundle(
    doc: Mapping[str, Any],
    revision: int,
    keys: Iterable[Ed25519PrivateKey],
    *,
    name: str = "",
    created_unix: float = 0.0,
) -> bundle_pb2.SignedBundle:
    """Canonicalise ``doc`` and sign it at ``revision`` with every key given."""
    document = canonical_json(doc)
    digest = digest_of(document)
    payload = signing_payload(revision, digest)
    bundle = bundle_pb2.SignedBundle(revision=revision, digest=digest, document=document, name=name)
    for key in keys:
        bundle.signatures.add(key_id=key_id(key.public_key()), signature=key.sign(payload))
    if created_unix:
        bundle.created.FromNanoseconds(int(created_unix * 1e9))
    return bundle


@dataclass(frozen=True)
class TrustedKeys:
    """Public keys a client accepts, by key id; several at once during rotation."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def of(cls, keys: Iterable[Ed25519PublicKey]) -> TrustedKeys:
        return cls({key_id(k): k for k in keys})

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> TrustedKeys:
        return cls.of(load_public_key(p) for p in paths)


def verify_bundle(bundle: bundle_pb2.SignedBundle, trusted: TrustedKeys) -> dict[str, Any]:
    """Check digest and signatures; return the parsed document or raise ``VerificationError``."""
    if not trusted.keys:
        raise VerificationError("no trusted keys configured")
    actual = digest_of(bundle.document)
    if actual != bundle.digest:
        raise VerificationError(
            f"digest mismatch: document is {actual}, bundle says {bundle.digest}"
        )
    payload = signing_payload(bundle.revision, bundle.digest)
    seen: list[str] = []
    for sig in bundle.signatures:
        seen.append(sig.key_id)
        key = trusted.keys.get(sig.key_id)
        if key is None:
            continue
        try:
            key.verify(sig.signature, payload)
        except InvalidSignature:
            continue
        try:
            doc = json.loads(bundle.document)
        except ValueError as exc:
            raise VerificationError(f"document is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise VerificationError("document is not a JSON object")
        return doc
    raise VerificationError(
        f"no valid signature from a trusted key (signed by {sorted(seen) or 'nobody'},"
        f" trusted {sorted(trusted.keys)})"
    )
