"""What the distributor does with its signing-key Secret and trust ConfigMap (pure decisions)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from distributor.signing_keys import (
    KEY_NAME,
    TRUST_KEY,
    Publish,
    Published,
    SigningKeyError,
    UseKeys,
    Wait,
    WriteKeys,
    decide_signing_keys,
    decide_trust,
    key_ids,
    keys_in,
    trust_text,
)
from palisade.bundle import TrustedKeys, key_id, load_public_key, private_key_pem
from palisade.bundle.signing import public_key_pem


class KeyFactory:
    """A ``generate`` that counts its calls."""

    def __init__(self) -> None:
        self.made: list[Ed25519PrivateKey] = []

    def __call__(self) -> Ed25519PrivateKey:
        key = Ed25519PrivateKey.generate()
        self.made.append(key)
        return key


def _pem(key: Ed25519PrivateKey) -> bytes:
    return private_key_pem(key)


class TestTheSigningKeySecret:
    def test_an_absent_secret_is_waited_for_and_no_key_is_generated(self) -> None:
        gen = KeyFactory()
        decision = decide_signing_keys(None, (), gen, where="Secret palisade/x")
        assert isinstance(decision, Wait)
        assert "Secret palisade/x does not exist yet" in decision.reason
        assert gen.made == []

    def test_an_empty_secret_gets_one_generated_key_under_signing_pem(self) -> None:
        gen = KeyFactory()
        decision = decide_signing_keys({}, (), gen)
        assert isinstance(decision, WriteKeys)
        assert decision.generated is True
        assert len(gen.made) == 1
        assert decision.keys == (gen.made[0],)
        assert set(decision.data) == {KEY_NAME}
        assert keys_in(decision.data)[0].public_key() == gen.made[0].public_key()

    def test_a_secret_holding_a_key_is_used_as_it_is_and_nothing_is_written(self) -> None:
        key = Ed25519PrivateKey.generate()
        gen = KeyFactory()
        decision = decide_signing_keys({KEY_NAME: _pem(key)}, (), gen)
        assert isinstance(decision, UseKeys)
        assert key_ids(decision.keys) == [key_id(key)]
        assert gen.made == []

    def test_every_pem_entry_signs_in_name_order_and_other_entries_are_ignored(self) -> None:
        a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        data = {"b-new.pem": _pem(b), "a-old.pem": _pem(a), "README": b"rotation notes"}
        decision = decide_signing_keys(data, (), KeyFactory())
        assert isinstance(decision, UseKeys)
        assert key_ids(decision.keys) == [key_id(a), key_id(b)]

    def test_an_unreadable_key_stops_the_distributor_and_is_never_overwritten(self) -> None:
        gen = KeyFactory()
        with pytest.raises(SigningKeyError) as err:
            decide_signing_keys({KEY_NAME: b"-----BEGIN PRIVATE KEY-----\nrubbish\n"}, (), gen)
        assert "'signing.pem'" in str(err.value)
        assert "rubbish" not in str(err.value)
        assert gen.made == []

    def test_a_non_ed25519_key_is_refused_too(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        ecdsa = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(SigningKeyError, match="not an Ed25519 key"):
            decide_signing_keys({KEY_NAME: ecdsa}, (), KeyFactory())

    def test_an_emptied_secret_gets_the_keys_already_held_back_not_a_new_one(self) -> None:
        held = (Ed25519PrivateKey.generate(),)
        gen = KeyFactory()
        decision = decide_signing_keys({"note": b"x"}, held, gen)
        assert isinstance(decision, WriteKeys)
        assert decision.generated is False
        assert gen.made == []
        assert decision.data["note"] == b"x", "other data is kept"
        assert key_ids(keys_in(decision.data)) == key_ids(held)

    def test_several_held_keys_are_all_written_back(self) -> None:
        held = (Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())
        decision = decide_signing_keys({}, held, KeyFactory())
        assert isinstance(decision, WriteKeys)
        assert sorted(key_ids(keys_in(decision.data))) == sorted(key_ids(held))

    def test_the_loser_of_a_race_takes_the_winners_key(self) -> None:
        """Both read the empty Secret and generate; one write lands; the other re-reads."""
        first = decide_signing_keys({}, (), KeyFactory())
        second = decide_signing_keys({}, (), KeyFactory())
        assert isinstance(first, WriteKeys) and isinstance(second, WriteKeys)
        assert key_ids(first.keys) != key_ids(second.keys)
        reread = decide_signing_keys(first.data, (), KeyFactory())
        assert isinstance(reread, UseKeys)
        assert key_ids(reread.keys) == key_ids(first.keys)

    def test_the_key_bytes_never_show_in_a_decisions_repr(self) -> None:
        decision = decide_signing_keys({}, (), KeyFactory())
        assert isinstance(decision, WriteKeys)
        assert "PRIVATE KEY" not in repr(decision)


class TestTheTrustConfigMap:
    def test_the_public_halves_are_published_as_pem_blocks_in_signing_order(self) -> None:
        a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        text = trust_text([a, b])
        assert text == public_key_pem(a).decode() + public_key_pem(b).decode()
        assert "PRIVATE" not in text
        decision = decide_trust({}, [a, b])
        assert isinstance(decision, Publish)
        assert decision.data == {TRUST_KEY: text}

    def test_an_absent_config_map_is_waited_for(self) -> None:
        decision = decide_trust(None, [Ed25519PrivateKey.generate()], where="ConfigMap p/t")
        assert isinstance(decision, Wait)
        assert "ConfigMap p/t does not exist yet" in decision.reason

    def test_the_right_keys_already_there_need_no_write(self) -> None:
        key = Ed25519PrivateKey.generate()
        assert isinstance(decide_trust({TRUST_KEY: trust_text([key])}, [key]), Published)

    def test_other_keys_are_replaced_and_other_entries_kept(self) -> None:
        old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        data = {TRUST_KEY: trust_text([old]), "README": "hands off"}
        decision = decide_trust(data, [new])
        assert isinstance(decision, Publish)
        assert decision.data == {TRUST_KEY: trust_text([new]), "README": "hands off"}

    def test_another_data_key_can_be_used(self) -> None:
        key = Ed25519PrivateKey.generate()
        decision = decide_trust({}, [key], key="bundle.pub")
        assert isinstance(decision, Publish)
        assert set(decision.data) == {"bundle.pub"}

    def test_what_is_published_verifies_what_is_signed(self) -> None:
        """The published text is what the clients load: a key from it checks a signature."""
        key = Ed25519PrivateKey.generate()
        public = load_public_key(trust_text([key]).encode())
        trusted = TrustedKeys([public])
        assert trusted.key_ids == (key_id(key),)
