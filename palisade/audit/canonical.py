"""Canonical JSON: one byte string per value, so hashes and digests are stable.

Keys are sorted, separators carry no spaces, text stays UTF-8, and numbers are
normalised the way RFC 8785 (JCS) sees them: a float with an integral value
within the exactly representable range is written as an integer, so ``5`` from
an MCP JSON-RPC body and ``5.0`` from a ``google.protobuf.Struct`` (which only
has doubles) give the same digest. NaN and infinities are refused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_MAX_EXACT = 2**53


class CanonicalError(ValueError):
    """A value cannot be written as canonical JSON (NaN, infinity, a non-JSON type)."""


def normalize(value: Any) -> Any:
    """Return ``value`` with integral floats turned into ints, recursively.

    Only JSON types are accepted (dict with str keys, list/tuple, str, int,
    float, bool, None); anything else raises :class:`CanonicalError`.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
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
            out[key] = normalize(item)
        return out
    if isinstance(value, list | tuple):
        return [normalize(item) for item in value]
    raise CanonicalError(f"{type(value).__name__} is not a JSON type")


def dumps(value: Any) -> bytes:
    """Canonical JSON bytes of an already normalised value."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise CanonicalError(str(exc)) from exc


def digest(value: Any) -> str:
    """``sha256:<hex>`` over the canonical JSON of ``value`` (normalised first)."""
    return "sha256:" + hashlib.sha256(dumps(normalize(value))).hexdigest()
