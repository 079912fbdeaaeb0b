"""Secret redaction in tool results, every tool (pure: no I/O).

A ``CallToolResult`` is walked whole (text content, ``structuredContent``,
embedded resources, the upstream's ``_meta``); each credential-looking part of a
string is replaced with ``[REDACTED]`` and counted. The value patterns start from
the audit log's own (:data:`palisade.audit.redact.SECRET_VALUE_PATTERN`: bearer
and basic credentials, JWTs, PEM private keys) and add what tool *output* shows
that arguments rarely do: whole PEM key blocks, AWS access key ids, GitHub and
Slack tokens, and ``key: value`` / ``KEY=value`` pairs whose key names a secret
(``password``, ``token``, ``client-key-data``, ``aws_secret_access_key``...), as
in kubeconfigs, ServiceAccount token files, env dumps and ``.env`` files. In
structured content a string under such a key is replaced whole.

Only the secret is replaced (the key stays), so the agent still sees *that* a
token was there. Two cheap pre-checks (single characters by ``memchr``, then a
few literals in the lower-cased text) skip the regexes for text that cannot
hold any of the patterns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from palisade.audit.redact import REDACTED, SECRET_VALUE_PATTERN

_PEM_BLOCK: Final = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL
)
_TOKENS: Final = re.compile(
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack tokens
)
#: Key names (the end of the key) that mark the value after ``:`` or ``=`` secret.
_KEY_ENDINGS: Final = (
    r"password|passwd|pwd|passphrase|secret|secret[_-]?key|token|api[_-]?key"
    r"|private[_-]?key|access[_-]?key|client[_-]key[_-]data|credentials?"
)
_KEY_VALUE: Final = re.compile(
    r"(?P<key>[\w.-]*(?:" + _KEY_ENDINGS + r")[\"']?\s*[:=]\s*)"
    r"(?P<value>\[REDACTED\]|\"[^\"\n]+\"|'[^'\n]+'|[^\s,;&\"'}\]]+)",
    re.IGNORECASE,
)
_STRUCT_KEY: Final = re.compile(r"(?:" + _KEY_ENDINGS + r")$", re.IGNORECASE)
#: Characters at least one of which every secret above contains: ``:``/``=`` (key-value
#: pairs), ``J`` (``eyJ``), ``-`` (PEM, Slack), ``A`` (AWS ids), ``_`` (GitHub), ``b``/``B``
#: (Bearer, Basic). Each is one ``memchr`` over the text: most text fails fast here.
_TRIGGER_CHARS: Final = (":", "=", "J", "-", "A", "_", "b", "B")
#: Lower-case literals at least one of which every secret above contains (second check).
_MARKERS: Final = tuple(
    re.compile(m)
    for m in (
        "bearer",
        "basic",
        "eyj",
        "akia",
        "asia",
        "gh",
        "xox",
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "credential",
    )
)


def _may_hold_secret(text: str) -> bool:
    if not any(c in text for c in _TRIGGER_CHARS):
        return False
    low = text.lower()
    # a literal pattern's search is faster than ``in`` on long text (CPython 3.11)
    return any(m.search(low) is not None for m in _MARKERS)


def scrub(text: str) -> tuple[str, int]:
    """``text`` with every credential-looking part replaced, and how many were."""
    if not _may_hold_secret(text):
        return text, 0
    total = 0
    text, n = _PEM_BLOCK.subn(REDACTED, text)
    total += n

    def keep_key(m: re.Match[str]) -> str:
        nonlocal total
        if m.group("value").strip("\"'") == REDACTED:
            return m.group(0)
        total += 1
        return m.group("key") + REDACTED

    text = _KEY_VALUE.sub(keep_key, text)
    text, n = SECRET_VALUE_PATTERN.subn(REDACTED, text)
    total += n
    text, n = _TOKENS.subn(REDACTED, text)
    return text, total + n


def secret_key(name: str) -> bool:
    """Whether a structured field named ``name`` holds a secret (``dbPassword``, ``token``)."""
    return _STRUCT_KEY.search(name) is not None


def redact_value(value: Any, _memo: dict[str, tuple[str, int]] | None = None) -> tuple[Any, int]:
    """A copy of ``value`` with secrets replaced, and the count; ``value`` itself when none.

    Equal strings are scanned once (SDK servers send a tool's text twice: as
    content and as ``structuredContent.result``).
    """
    memo = {} if _memo is None else _memo
    if isinstance(value, str):
        if not any(c in value for c in _TRIGGER_CHARS):
            return value, 0
        hit = memo.get(value)
        if hit is None:
            hit = memo[value] = scrub(value)
        return hit
    if isinstance(value, Mapping):
        total = 0
        out: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(v, str) and secret_key(str(k)) and v and v != REDACTED:
                out[k], n = REDACTED, 1
            else:
                out[k], n = redact_value(v, memo)
            total += n
        return (out, total) if total else (value, 0)
    if isinstance(value, list):
        total = 0
        items: list[Any] = []
        for v in value:
            new, n = redact_value(v, memo)
            items.append(new)
            total += n
        return (items, total) if total else (value, 0)
    return value, 0


def redact_result(result: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A ``CallToolResult`` with secrets replaced, and the count (``result`` itself when 0)."""
    new, n = redact_value(result)
    return (new if n else result), n
