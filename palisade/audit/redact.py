"""Redaction of secret-marked argument fields before they reach an audit record.

A field is secret-marked when its name (case-insensitive, ``-`` read as ``_``)
is one the registry lists in ``secretArguments``, or contains one of the
built-in fragments below (``db_password``, ``github_token``, ``X-Api-Key``...),
at any depth. Independently of names, string values that look like
credentials (``Bearer ...``, JWTs, PEM private keys) are redacted too. The
whole value of a marked field is replaced, whatever its type. Over-redaction
is the safe side: the digest in the record still covers the original values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[REDACTED]"
#: A secret name that marks every field secret (used when the registry lookup fails).
ALL_FIELDS = "*"

#: Name fragments that mark a field secret wherever they appear in its name.
BUILTIN_SECRET_FRAGMENTS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
    "access_key",
    "cookie",
    "session_key",
)

_SECRET_VALUE = re.compile(
    r"\b(?:bearer|basic)\s+[\w.~+/=-]{6,}"  # HTTP authorization values
    r"|eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"  # JWTs
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----",  # PEM private keys
    re.IGNORECASE,
)


#: The credential-value pattern, shared with the sidecar's output redaction.
SECRET_VALUE_PATTERN = _SECRET_VALUE


def scrub_text(text: str) -> str:
    """``text`` with each credential-looking part replaced (for free text such as logs)."""
    return _SECRET_VALUE.sub(REDACTED, text)


def _norm(name: str) -> str:
    return name.lower().replace("-", "_")


_FRAGMENTS = re.compile("|".join(re.escape(f) for f in BUILTIN_SECRET_FRAGMENTS))
_CACHE_LIMIT = 4096


class Redactor:
    """Redacts one registry's secret names plus the built-in ones; reusable, thread-safe."""

    __slots__ = ("_all", "_cache", "_exact")

    def __init__(self, secret_names: Iterable[str] = ()) -> None:
        self._exact = frozenset(_norm(n) for n in secret_names)
        self._all = ALL_FIELDS in self._exact
        # name -> verdict; argument names repeat, so most lookups are one dict hit
        self._cache: dict[str, bool] = {}

    def is_secret_name(self, name: str) -> bool:
        if self._all:
            return True
        hit = self._cache.get(name)
        if hit is None:
            key = _norm(name)
            hit = key in self._exact or _FRAGMENTS.search(key) is not None
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[name] = hit
        return hit

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` with secret-marked fields and secret-looking strings replaced."""
        if isinstance(value, Mapping):
            return {
                k: REDACTED if self.is_secret_name(str(k)) else self.redact(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        if isinstance(value, str) and _SECRET_VALUE.search(value):
            return REDACTED
        return value


def redact(value: Any, secret_names: Iterable[str] = ()) -> Any:
    """Convenience: :meth:`Redactor.redact` with a one-off redactor."""
    return Redactor(secret_names).redact(value)
