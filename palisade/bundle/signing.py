"""Ed25519 keys, and ``palisade.v1.SignedBundle`` envelopes: make, parse, verify.

The contract (``proto/palisade/v1/bundle.proto``): ``document`` is the canonical
JSON of the bundle, ``digest`` is ``sha256:<hex>`` of it, and every signature is
over ``b"palisade-bundle-v1\\n<revision>\\n<digest>"``. A key id is the first 16
hex characters of SHA-256 over the raw 32-byte public key.

Verification accepts an envelope when at least one signature verifies under a
trusted key; signatures by keys we do not trust are ignored. Trusting old and
new keys at once is how a fleet rotates: trust both, sign with the new, then
drop the old.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError

from palisade.bundle.canonical import canonical_bytes, digest_of, from_document
from palisade.bundle.errors import BundleError, BundleVerificationError
from palisade.bundle.schema import Bundle
from palisade.v1 import bundle_pb2

PAYLOAD_PREFIX = b"palisade-bundle-v1\n"


def signing_payload(revision: int, digest: str) -> bytes:
    return PAYLOAD_PREFIX + f"{revision}\n{digest}".encode()


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(source: str | Path | bytes) -> Ed25519PrivateKey:
    """A PKCS#8 PEM Ed25519 private key, from a path or bytes. The error never shows key bytes."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise BundleError("not a readable unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError("the private key is not an Ed25519 key")
    return key


def load_public_key(source: str | Path | bytes) -> Ed25519PublicKey:
    """A PEM (SubjectPublicKeyInfo) or raw 32-byte Ed25519 public key."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise BundleError("not a readable PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("the public key is not an Ed25519 key")
    return key


class TrustedKeys:
    """The public keys a client accepts signatures from, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {key_id(k): k for k in keys}

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> TrustedKeys:
        return cls(load_public_key(p) for p in paths)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle whose envelope checked out, with what it was checked against."""

    bundle: Bundle
    revision: int
    digest: str
    name: str
    #: Ids of the trusted keys whose signatures verified.
    key_ids: tuple[str, ...]


def sign_document(
    document: bytes,
    keys: Iterable[Ed25519PrivateKey],
    revision: int,
    *,
    name: str = "",
    created: datetime | None = None,
) -> bundle_pb2.SignedBundle:
    """Wrap already-canonical bytes into a signed envelope."""
    if revision < 0:
        raise BundleError("revision must not be negative")
    digest = digest_of(document)
    payload = signing_payload(revision, digest)
    signed = bundle_pb2.SignedBundle(revision=revision, digest=digest, document=document, name=name)
    for key in keys:
        signed.signatures.add(key_id=key_id(key), signature=key.sign(payload))
    if not signed.signatures:
        raise BundleError("at least one signing key is needed")
    signed.created.FromDatetime(created or datetime.now(UTC))
    return signed


def sign_bundle(
    bundle: Bundle,
    keys: Iterable[Ed25519PrivateKey],
    revision: int,
    *,
    created: datetime | None = None,
) -> bundle_pb2.SignedBundle:
    """The signed envelope of ``bundle`` (canonical document, digest, one signature per key)."""
    return sign_document(canonical_bytes(bundle), keys, revision, name=bundle.name, created=created)


def valid_signers(
    signatures: Iterable[bundle_pb2.BundleSignature], payload: bytes, trusted: TrustedKeys
) -> tuple[str, ...]:
    """Ids of the trusted keys whose signature over ``payload`` verifies."""
    good: list[str] = []
    for sig in signatures:
        public = trusted.get(sig.key_id)
        if public is None:
            continue
        try:
            public.verify(sig.signature, payload)
        except InvalidSignature:
            continue
        good.append(sig.key_id)
    return tuple(good)


def verify_envelope(signed: bundle_pb2.SignedBundle, trusted: TrustedKeys) -> tuple[str, ...]:
    """Check digest and signatures; return the ids of trusted keys that signed."""
    if not len(trusted):
        raise BundleVerificationError("no trusted keys configured; refusing every bundle")
    actual = digest_of(signed.document)
    if signed.digest != actual:
        raise BundleVerificationError(
            f"digest mismatch: envelope says {signed.digest or '(empty)'}, document is {actual}"
        )
    payload = signing_payload(signed.revision, signed.digest)
    good = valid_signers(signed.signatures, payload, trusted)
    if not good:
        seen = ", ".join(s.key_id or "(no id)" for s in signed.signatures) or "none"
        raise BundleVerificationError(
            f"no valid signature by a trusted key (signatures by: {seen}; "
            f"trusted: {', '.join(trusted.key_ids)})"
        )
    return good


def verify_bundle(signed: bundle_pb2.SignedBundle, trusted: TrustedKeys) -> VerifiedBundle:
    """Verify the envelope, then decode and validate the document inside."""
    key_ids = verify_envelope(signed, trusted)
    try:
        doc = json.loads(signed.document.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleVerificationError(f"document is not UTF-8 JSON: {exc}") from None
    bundle = from_document(doc, f"<bundle revision {signed.revision}>")
    return VerifiedBundle(
        bundle=bundle,
        revision=signed.revision,
        digest=signed.digest,
        name=signed.name,
        key_ids=key_ids,
    )


def to_bytes(signed: bundle_pb2.SignedBundle) -> bytes:
    data: bytes = signed.SerializeToString(deterministic=True)
    return data


def from_bytes(data: bytes) -> bundle_pb2.SignedBundle:
    """Parse a serialized ``SignedBundle``; a clear error for anything else."""
    signed = bundle_pb2.SignedBundle()
    try:
        signed.ParseFromString(data)
    except DecodeError:
        raise BundleVerificationError(
            "not a palisade.v1.SignedBundle (protobuf decode failed)"
        ) from None
    if not signed.document:
        raise BundleVerificationError("SignedBundle has no document")
    return signed


def trusted_from_mapping(keys: Mapping[str, Ed25519PublicKey]) -> TrustedKeys:
    """Build trust from an id->key mapping, checking each id matches its key."""
    for kid, k in keys.items():
        if key_id(k) != kid:
            raise BundleError(f"key id {kid!r} does not match its key ({key_id(k)})")
    return TrustedKeys(keys.values())
