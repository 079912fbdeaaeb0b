"""Ed25519 keys for audit signing: load, generate, and name them.

A key id is ``ed25519:`` followed by the unpadded base64url of the 32-byte raw
public key. Carrying the whole public key in every record lets ``palisade
audit verify`` check signatures with no key at hand; pinning (``--trusted``)
is what stops an attacker who rewrites the whole chain with a key of their
own.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_ID_PREFIX = "ed25519:"


class AuditKeyError(ValueError):
    """A key file or key id cannot be read as an Ed25519 key."""


def _b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_ID_PREFIX + _b64u(raw)


def public_key_from_id(kid: str) -> Ed25519PublicKey:
    if not kid.startswith(KEY_ID_PREFIX):
        raise AuditKeyError(f"key id {kid[:40]!r} is not an ed25519 key id")
    try:
        raw = _unb64u(kid[len(KEY_ID_PREFIX) :])
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise AuditKeyError(f"key id {kid[:40]!r} does not hold a 32-byte public key") from exc


class Signer:
    """Signs chain hashes with one private key and names the key in each record."""

    __slots__ = ("_private", "key_id", "public")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __repr__(self) -> str:  # never show key material
        return f"Signer(key_id={self.key_id!r})"


def load_signer(path: Path) -> Signer:
    """Read a PKCS#8 PEM Ed25519 private key (as ``palisade keys`` or openssl write it)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"cannot read audit key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AuditKeyError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return Signer(key)


def load_public_key(text_or_path: str) -> Ed25519PublicKey:
    """A trusted key given as a key id, raw base64url, or a PEM file (public or private)."""
    if text_or_path.startswith(KEY_ID_PREFIX):
        return public_key_from_id(text_or_path)
    path = Path(text_or_path)
    if path.is_file():
        data = path.read_bytes()
        try:
            pub = serialization.load_pem_public_key(data)
        except ValueError:
            try:
                return load_signer(path).public
            except AuditKeyError as exc:
                raise AuditKeyError(f"{path} holds no Ed25519 key") from exc
        if not isinstance(pub, Ed25519PublicKey):
            raise AuditKeyError(f"{path} holds a {type(pub).__name__}, not an Ed25519 key")
        return pub
    return public_key_from_id(KEY_ID_PREFIX + text_or_path.strip())


#: What a client signs to register an audit key with the distributor (proof that it
#: holds the private half, bound to the source the key signs for).
REGISTRATION_CONTEXT = b"palisade.v1 audit key registration\n"


def registration_payload(source: str, kid: str) -> bytes:
    return REGISTRATION_CONTEXT + source.encode() + b"\n" + kid.encode()


def registration_proof(signer: Signer, source: str) -> bytes:
    """The signature a ``palisade.v1.AuditKey`` carries for ``signer`` and ``source``."""
    return signer.sign(registration_payload(source, signer.key_id))


def verify_registration(kid: str, source: str, proof: bytes) -> bool:
    """Whether ``proof`` was made by the private key of ``kid`` for ``source``."""
    try:
        public = public_key_from_id(kid)
    except AuditKeyError:
        return False
    return verify_signature(public, proof, registration_payload(source, kid))


def verify_signature(public: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        public.verify(signature, data)
    except InvalidSignature:
        return False
    return True
