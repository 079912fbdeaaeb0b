"""The bundle-signing key kept in a Kubernetes Secret, and its public half published
in a ConfigMap: what to do, decided from what was read. Pure: no API calls, no clock.

The chart creates both objects empty (no ``lookup``, no randomness in templates,
so a GitOps controller renders the same objects every time). The distributor,
at start, reads the Secret:

- it holds one or more Ed25519 private keys (data keys ending in ``.pem``, PKCS#8
  PEM, in name order): sign with them; nothing to write;
- it holds none: generate one and write it under :data:`KEY_NAME`, keeping any
  other data; sign with it once the write succeeded (the write carries the
  resourceVersion read, so of two replicas racing, one wins and the other,
  refused with 409, reads again and takes the winner's key);
- a ``.pem`` entry that is no Ed25519 private key: stop with an error, never
  overwrite it (replacing a key nobody can read would rotate the fleet's trust
  silently);
- the Secret is absent: wait (the distributor has no right to create Secrets).

A distributor that already holds keys and finds the Secret emptied (someone
cleared it) writes the keys it signs with back instead of generating new ones.

The ConfigMap gets the public keys of exactly the keys it signs with, as
concatenated PEM blocks under one data key (``keys.pem``), which the injector
watches and hands to every injected sidecar, and the node agent mounts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from palisade.bundle import BundleError, key_id, load_private_key, private_key_pem, public_key_pem

#: The Secret's data key a generated key is written under.
KEY_NAME = "signing.pem"
#: The ConfigMap's data key the public keys are published under.
TRUST_KEY = "keys.pem"


class SigningKeyError(Exception):
    """The Secret holds something that must not be used or overwritten."""


@dataclass(frozen=True)
class Wait:
    """Nothing can be done yet (the object is absent); try again later."""

    reason: str


@dataclass(frozen=True)
class UseKeys:
    """Sign with these keys; the Secret needs no write."""

    keys: tuple[Ed25519PrivateKey, ...]


@dataclass(frozen=True)
class WriteKeys:
    """Write ``data`` (the Secret's whole new data) with the resourceVersion read,
    then sign with ``keys``; on a conflict, read again and decide again."""

    data: Mapping[str, bytes] = field(repr=False)
    keys: tuple[Ed25519PrivateKey, ...]
    generated: bool
    """True: a new key; False: keys already held, written back into an emptied Secret."""


KeyDecision = Wait | UseKeys | WriteKeys


def keys_in(data: Mapping[str, bytes]) -> tuple[Ed25519PrivateKey, ...]:
    """The private keys in a Secret's data: each ``*.pem`` entry, in name order.

    Raises :class:`SigningKeyError` naming the entry (never its bytes) when one is
    not an Ed25519 PEM private key.
    """
    keys: list[Ed25519PrivateKey] = []
    for name in sorted(data):
        if not name.endswith(".pem"):
            continue
        try:
            keys.append(load_private_key(bytes(data[name])))
        except BundleError as exc:
            raise SigningKeyError(
                f"Secret entry {name!r} is not a usable signing key ({exc}); fix or remove "
                "it (the distributor never overwrites a key it cannot read)"
            ) from None
    return tuple(keys)


def decide_signing_keys(
    data: Mapping[str, bytes] | None,
    held: Sequence[Ed25519PrivateKey],
    generate: Callable[[], Ed25519PrivateKey],
    *,
    where: str = "the signing-key Secret",
) -> KeyDecision:
    """What to do with the Secret's ``data`` (None: the Secret does not exist).

    ``held``: the keys this process signs with already (empty at start).
    ``generate`` is called only when a new key is needed.
    """
    if data is None:
        return Wait(f"{where} does not exist yet")
    found = keys_in(data)
    if found:
        return UseKeys(found)
    keys = tuple(held) if held else (generate(),)
    new = dict(data)
    for i, key in enumerate(keys):
        new[KEY_NAME if i == 0 else f"signing-{i}.pem"] = private_key_pem(key)
    return WriteKeys(new, keys, generated=not held)


def trust_text(keys: Sequence[Ed25519PrivateKey]) -> str:
    """The public halves as PEM blocks, in signing order, one after the other."""
    return "".join(public_key_pem(k).decode() for k in keys)


@dataclass(frozen=True)
class Publish:
    """Write ``data`` (the ConfigMap's whole new data) with the resourceVersion read."""

    data: Mapping[str, str]


@dataclass(frozen=True)
class Published:
    """The ConfigMap already holds exactly these public keys."""


TrustDecision = Wait | Publish | Published


def decide_trust(
    data: Mapping[str, str] | None,
    keys: Sequence[Ed25519PrivateKey],
    *,
    key: str = TRUST_KEY,
    where: str = "the trust ConfigMap",
) -> TrustDecision:
    """What to write into the trust ConfigMap's ``data`` (None: it does not exist)."""
    if data is None:
        return Wait(f"{where} does not exist yet")
    text = trust_text(keys)
    if data.get(key) == text:
        return Published()
    return Publish({**data, key: text})


def key_ids(keys: Sequence[Ed25519PrivateKey]) -> list[str]:
    """Key ids for logs (the key bytes never are)."""
    return [key_id(k) for k in keys]
