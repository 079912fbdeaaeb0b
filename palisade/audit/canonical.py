"""Canonical JSON: one byte string per value, so hashes and digests are stable.

Keys are sorted, separators carry no spaces, text stays UTF-8, and numbers are
normalised the way RFC 8785 (JCS) sees them: a float with an integral value
within the exactly representable range is written as an integer, so ``5`` from
an MCP JSON-RPC body and ``5.0`` from a ``google.protobuf.Struct`` (which only
has doubles) give the same digest. NaN and infinities are refused.

Text that has no UTF-8 form: a JSON string may carry a lone surrogate
(``"\\ud800"``), which Python decodes into a ``str`` that cannot be encoded.
A record must be storable whatever a client sent, so :func:`normalize` (what
records store) replaces every lone surrogate with U+FFFD (:func:`text`), and
:func:`digest` (what records cite) hashes the exact input instead, its lone
surrogates encoded as themselves (``surrogatepass``): distinct inputs keep
distinct digests, and text that is valid UTF-8, i.e. all ordinary text, hashes
exactly as before. :func:`dumps` stays strict: what it writes is valid UTF-8,
which verification reads back and re-serialises to the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_MAX_EXACT = 2**53


class CanonicalError(ValueError):
    """A value cannot be written as canonical JSON (NaN, infinity, a non-JSON type)."""


def text(value: str) -> str:
    """``value`` itself when it has a UTF-8 form; else with each lone surrogate
    replaced by U+FFFD (a well-formed surrogate pair becomes its character)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def storable(value: str) -> bool:
    """Whether ``value`` can be stored as it is (it has a UTF-8 form)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def normalize(value: Any, *, exact: bool = False) -> Any:
    """Return ``value`` with integral floats turned into ints, recursively.

    Strings and keys pass through :func:`text` (lone surrogates become U+FFFD),
    unless ``exact``: then they are kept as given, for :func:`digest`. Only JSON
    types are accepted (dict with str keys, list/tuple, str, int, float, bool,
    None); anything else raises :class:`CanonicalError`.
    """
    if isinstance(value, str):
        return value if exact else text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise CanonicalError("NaN and infinity have no JSON form")
        if value.is_integer() and -_MAX_EXACT <= value <= _MAX_EXACT:
            return int(value)
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError(f"object key {key!r} is not a string")
            out[key if exact else text(key)] = normalize(item, exact=exact)
        return out
    if isinstance(value, list | tuple):
        return [normalize(item, exact=exact) for item in value]
    raise CanonicalError(f"{type(value).__name__} is not a JSON type")


def dumps(value: Any) -> bytes:
    """Canonical JSON bytes of an already normalised value."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise CanonicalError(str(exc)) from exc


def exact_bytes(value: Any) -> bytes:
    """Canonical JSON of an ``exact`` normalised value, lone surrogates included as
    themselves: the same bytes as :func:`dumps` for any value :func:`dumps` accepts."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError) as exc:
        raise CanonicalError(str(exc)) from exc


def digest(value: Any) -> str:
    """``sha256:<hex>`` over the canonical JSON of ``value`` exactly as given."""
    return "sha256:" + hashlib.sha256(exact_bytes(normalize(value, exact=True))).hexdigest()
