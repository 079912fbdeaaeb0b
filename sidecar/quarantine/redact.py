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
token was there. Cost is kept proportional to what looks secret: single
characters by ``memchr`` rule most text out, each value pattern runs only when a
literal it needs is present, and key names are found with ``str.find`` and
checked one by one instead of by a regex tried at every position.
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
#: The same as a single regex (slow on long text; used when ``lower()`` changes lengths).
_KEY_VALUE: Final = re.compile(
    r"(?P<key>[\w.-]*(?:" + _KEY_ENDINGS + r")[\"']?[ \t]*[:=][ \t]*)"
    r"(?P<value>\[REDACTED\]|\"[^\"\n]+\"|'[^'\n]+'|[^\s,;&\"'}\]]+)",
    re.IGNORECASE,
)
_STRUCT_KEY: Final = re.compile(r"(?:" + _KEY_ENDINGS + r")$", re.IGNORECASE)
#: Characters at least one of which every secret above contains: ``:``/``=`` (key-value
#: pairs), ``J`` (``eyJ``), ``-`` (PEM, Slack), ``A`` (AWS ids), ``_`` (GitHub), ``b``/``B``
#: (Bearer, Basic). Each is one ``memchr`` over the text: most text fails fast here.
_TRIGGER_CHARS: Final = (":", "=", "J", "-", "A", "_", "b", "B")
#: Lower-case roots of the key endings; a literal pattern's ``finditer`` finds them all
#: in C (on CPython 3.11 a literal ``search`` is also faster than ``in`` on long text).
_KEY_ROOTS: Final = tuple(
    re.compile(r) for r in ("pass", "pwd", "secret", "token", "key", "credential")
)
#: Literals that gate the value patterns (lower-cased text / text as is).
_VALUE_GATES: Final = tuple(re.compile(g) for g in ("bearer", "basic", "eyj", "private key"))
_TOKEN_GATES: Final = tuple(re.compile(g) for g in ("AKIA", "ASIA", "gh", "xox"))
#: The key endings, spelled out for ``str.endswith``.
_ENDINGS: Final = tuple(
    {
        "password", "passwd", "pwd", "passphrase", "secret", "token", "credential",
        "credentials", "client-key-data", "client_key_data",
        *(f"{a}{sep}key" for a in ("secret", "api", "private", "access") for sep in ("", "_", "-")),
    }
)  # fmt: skip
_WORD: Final = re.compile(r"[\w.-]*")
_SEP_VALUE: Final = re.compile(
    r"[\"']?[ \t]*[:=][ \t]*(?P<value>\[REDACTED\]|\"[^\"\n]+\"|'[^'\n]+'|[^\s,;&\"'}\]]+)"
)


def key_values_by_regex(text: str) -> tuple[str, int]:
    """:func:`_key_values` as one regex: the reference it is tested against."""
    count = 0

    def keep_key(m: re.Match[str]) -> str:
        nonlocal count
        if m.group("value") == REDACTED:
            return m.group(0)
        count += 1
        return m.group("key") + REDACTED

    return _KEY_VALUE.sub(keep_key, text), count


def _key_values(text: str, low: str) -> tuple[str, int]:
    """Values after secret-named keys replaced: roots found by ``find``, each checked once."""
    if len(low) != len(text):  # lower() changed the length (rare Unicode): the slow way
        return key_values_by_regex(text)
    ends: set[int] = set()
    for root in _KEY_ROOTS:
        skip = 0
        for hit in root.finditer(low):
            if hit.start() < skip:
                continue  # inside a word already checked
            word = _WORD.match(low, hit.start())
            end = word.end() if word else hit.end()
            skip = end
            if low.endswith(_ENDINGS, 0, end):
                ends.add(end)
    spans: list[tuple[int, int]] = []
    for end in sorted(ends):
        if spans:
            # a key inside the previous value was consumed with it (as by the regex)
            ending = min(len(e) for e in _ENDINGS if low.endswith(e, 0, end))
            if end - ending < spans[-1][1]:
                continue
        m = _SEP_VALUE.match(text, end)
        if m is not None and m.group("value") != REDACTED:
            spans.append((m.start("value"), m.end("value")))
    if not spans:
        return text, 0
    out: list[str] = []
    last = 0
    for start, stop in spans:
        out.append(text[last:start])
        out.append(REDACTED)
        last = stop
    out.append(text[last:])
    return "".join(out), len(spans)


def scrub(text: str) -> tuple[str, int]:
    """``text`` with every credential-looking part replaced, and how many were.

    Each pattern runs only when a literal it needs is present, so a long text
    costs a few ``find`` calls unless it holds something that looks secret.
    """
    if not any(c in text for c in _TRIGGER_CHARS):
        return text, 0
    total = 0
    low = text.lower()
    if _VALUE_GATES[3].search(low):
        text, n = _PEM_BLOCK.subn(REDACTED, text)
        if n:
            total += n
            low = text.lower()
    text, n = _key_values(text, low)
    if n:
        total += n
        low = text.lower()
    if any(g.search(low) for g in _VALUE_GATES):
        text, n = SECRET_VALUE_PATTERN.subn(REDACTED, text)
        total += n
    if any(g.search(text) for g in _TOKEN_GATES):
        text, n = _TOKENS.subn(REDACTED, text)
        total += n
    return text, total


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
