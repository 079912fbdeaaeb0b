"""Signed bundles verify only when untouched and signed by a trusted key; rotation works."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from palisade.bundle import (
    BundleError,
    BundleVerificationError,
    TrustedKeys,
    canonical_bytes,
    from_bytes,
    generate_key,
    key_id,
    load_file,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    sign_bundle,
    to_bytes,
    verify_bundle,
)
from palisade.bundle.canonical import canonical_json, digest_of
from palisade.bundle.signing import sign_document, signing_payload

EXAMPLE = Path(__file__).parents[2] / "examples" / "payments-bundle.yaml"


@pytest.fixture(scope="module")
def bundle():  # type: ignore[no-untyped-def]
    return load_file(EXAMPLE)


def test_a_signed_bundle_round_trips_through_bytes_and_verifies(bundle) -> None:  # type: ignore[no-untyped-def]
    key = generate_key()
    signed = sign_bundle(bundle, [key], revision=7)
    verified = verify_bundle(from_bytes(to_bytes(signed)), TrustedKeys([key.public_key()]))
    assert verified.bundle == bundle
    assert verified.revision == 7
    assert verified.digest == digest_of(canonical_bytes(bundle))
    assert verified.key_ids == (key_id(key),)
    assert verified.name == "payments"


def test_the_envelope_follows_the_proto_contract(bundle) -> None:  # type: ignore[no-untyped-def]
    key = generate_key()
    signed = sign_bundle(bundle, [key], revision=3)
    assert signed.document == canonical_json(json.loads(signed.document))
    assert signed.digest.startswith("sha256:") and len(signed.digest) == 71
    sig = signed.signatures[0]
    key.public_key().verify(sig.signature, b"palisade-bundle-v1\n3\n" + signed.digest.encode())
    assert len(sig.key_id) == 16


def test_signing_is_deterministic_for_the_same_key_and_time(bundle) -> None:  # type: ignore[no-untyped-def]
    key = generate_key()
    when = datetime(2026, 1, 1, tzinfo=UTC)
    a = sign_bundle(bundle, [key], 1, created=when)
    b = sign_bundle(bundle, [key], 1, created=when)
    assert to_bytes(a) == to_bytes(b)


def test_an_edited_document_fails_on_its_digest(bundle) -> None:  # type: ignore[no-untyped-def]
    key = generate_key()
    signed = sign_bundle(bundle, [key], 1)
    signed.document = signed.document.replace(b'"deny"', b'"allow"', 1)
    with pytest.raises(BundleVerificationError, match="digest mismatch"):
        verify_bundle(signed, TrustedKeys([key.public_key()]))


def test_an_edited_document_with_a_recomputed_digest_fails_on_the_signature(bundle) -> None:  # type: ignore[no-untyped-def]
    key = generate_key()
    signed = sign_bundle(bundle, [key], 1)
    signed.document = signed.document.replace(b'"deny"', b'"allow"', 1)
    signed.digest = digest_of(signed.document)
    with pytest.raises(BundleVerificationError, match="no valid signature by a trusted key"):
        verify_bundle(signed, TrustedKeys([key.public_key()]))


def test_a_changed_revision_fails_on_the_signature(bundle) -> None:  # type: ignore[no-untyped-def]
    key = generate_key()
    signed = sign_bundle(bundle, [key], 1)
    signed.revision = 2
    with pytest.raises(BundleVerificationError, match="no valid signature"):
        verify_bundle(signed, TrustedKeys([key.public_key()]))


def test_a_bundle_signed_by_an_untrusted_key_is_refused(bundle) -> None:  # type: ignore[no-untyped-def]
    signer, trusted = generate_key(), generate_key()
    signed = sign_bundle(bundle, [signer], 1)
    with pytest.raises(BundleVerificationError) as exc:
        verify_bundle(signed, TrustedKeys([trusted.public_key()]))
    assert key_id(signer) in str(exc.value) and key_id(trusted) in str(exc.value)


def test_a_forged_signature_under_a_trusted_key_id_is_refused(bundle) -> None:  # type: ignore[no-untyped-def]
    trusted, attacker = generate_key(), generate_key()
    signed = sign_bundle(bundle, [attacker], 1)
    signed.signatures[0].key_id = key_id(trusted)
    with pytest.raises(BundleVerificationError):
        verify_bundle(signed, TrustedKeys([trusted.public_key()]))


def test_no_trusted_keys_refuses_everything(bundle) -> None:  # type: ignore[no-untyped-def]
    signed = sign_bundle(bundle, [generate_key()], 1)
    with pytest.raises(BundleVerificationError, match="no trusted keys"):
        verify_bundle(signed, TrustedKeys())


def test_key_rotation_trusting_old_and_new_accepts_either_signer(bundle) -> None:  # type: ignore[no-untyped-def]
    old, new = generate_key(), generate_key()
    both = TrustedKeys([old.public_key(), new.public_key()])
    assert verify_bundle(sign_bundle(bundle, [old], 1), both).key_ids == (key_id(old),)
    assert verify_bundle(sign_bundle(bundle, [new], 2), both).key_ids == (key_id(new),)
    dual = sign_bundle(bundle, [old, new], 3)
    assert verify_bundle(dual, TrustedKeys([new.public_key()])).key_ids == (key_id(new),)
    assert set(verify_bundle(dual, both).key_ids) == {key_id(old), key_id(new)}
    # After the old key is dropped, bundles signed only by it are refused.
    with pytest.raises(BundleVerificationError):
        verify_bundle(sign_bundle(bundle, [old], 4), TrustedKeys([new.public_key()]))


def test_garbage_bytes_are_not_a_signed_bundle() -> None:
    with pytest.raises(BundleVerificationError, match="SignedBundle"):
        from_bytes(b"\xff\xff\xff not protobuf")


def test_a_verified_envelope_with_an_invalid_document_is_still_refused() -> None:
    key = generate_key()
    doc = canonical_json({"apiVersion": "palisade.dev/v1alpha1", "kind": "Nope", "metadata": {}})
    signed = sign_document(doc, [key], 1)
    with pytest.raises(BundleError, match="kind must be 'PolicyBundle'"):
        verify_bundle(signed, TrustedKeys([key.public_key()]))


def test_keys_round_trip_through_pem_and_errors_hide_key_material(tmp_path: Path) -> None:
    key = generate_key()
    (tmp_path / "k.key").write_bytes(private_key_pem(key))
    (tmp_path / "k.pub").write_bytes(public_key_pem(key))
    assert key_id(load_private_key(tmp_path / "k.key")) == key_id(key)
    assert key_id(load_public_key(tmp_path / "k.pub")) == key_id(key)
    secret = b"-----BEGIN PRIVATE KEY-----\nTOPSECRETxyz\n-----END PRIVATE KEY-----\n"
    with pytest.raises(BundleError) as exc:
        load_private_key(secret)
    assert "TOPSECRET" not in str(exc.value)


def test_the_payload_is_exactly_as_the_proto_says() -> None:
    assert signing_payload(12, "sha256:ab") == b"palisade-bundle-v1\n12\nsha256:ab"
