"""The bundle-verification public keys handed to every injected sidecar.

Pure. The injector receives PEM text (the chart's ``distributor.publicKeys``, in
``PALISADE_SIDECAR_TRUSTED_KEYS``, or files read by ``main.py``); this module
splits it into blocks, checks that each is an Ed25519 public key and gives the
value of the sidecar's ``PALISADE_TRUSTED_KEY``: the PEM blocks joined by commas,
which is how the sidecar reads a list from its environment. A public key is no
secret, but errors still name only the position of a bad key, never its text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from palisade.bundle.signing import key_id, load_public_key, public_key_pem

_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)


class TrustError(ValueError):
    """A trusted key given to the injector cannot be used."""


def pem_blocks(text: str) -> list[str]:
    """Every ``-----BEGIN ...-----`` block in ``text``, in order.

    Text outside blocks (comments, blank lines) is ignored; text that holds no
    block at all is an error, so a path mistaken for PEM is caught here.
    """
    blocks = [m.group(0) for m in _BLOCK.finditer(text)]
    if text.strip() and not blocks:
        raise TrustError("no PEM block (-----BEGIN PUBLIC KEY-----) in the trusted key text")
    return blocks


def normalize(texts: Iterable[str]) -> tuple[str, ...]:
    """Checked, canonical PEM public keys from PEM texts (each one or more blocks).

    Duplicates (the same key twice) are dropped; order is kept.
    """
    keys: list[str] = []
    seen: set[str] = set()
    n = 0
    for text in texts:
        for block in pem_blocks(text):
            n += 1
            if "PUBLIC KEY" not in block.split("\n", 1)[0]:
                raise TrustError(f"trusted key #{n} is not a public key (a private key was given?)")
            try:
                key = load_public_key(block.encode() + b"\n")
            except Exception as exc:
                raise TrustError(
                    f"trusted key #{n} is not an Ed25519 PEM public key ({type(exc).__name__})"
                ) from None
            kid = key_id(key)
            if kid not in seen:
                seen.add(kid)
                keys.append(public_key_pem(key).decode().strip())
    return tuple(keys)


def sidecar_env_value(keys: Iterable[str]) -> str:
    """The sidecar's ``PALISADE_TRUSTED_KEY``: PEM blocks separated by commas."""
    return ",".join(keys)


def key_ids(keys: Iterable[str]) -> tuple[str, ...]:
    """Key ids (as bundles name their signers) of canonical PEM keys, for logs."""
    return tuple(key_id(load_public_key(k.encode() + b"\n")) for k in keys)
