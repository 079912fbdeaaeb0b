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

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.plugins.base import RegexBasedDetector

from palisade.audit.redact import REDACTED, SECRET_VALUE_PATTERN

_PEM_BLOCK: Final = re.compile(
    r"-{4,5} ?BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)? ?-{4,5}.*?"
    r"(?:-{4,5} ?END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)? ?-{4,5}|\Z)",
    re.DOTALL,
)
_PUTTY_KEY: Final = re.compile(r"(?<=Private-Lines: )\d+.*?(?=\n\s*Private-MAC:|\Z)", re.DOTALL)

#: detect-secrets plugins whose rules are token-shaped (run on long token-like words).
#: Left out: IPPublicDetector (an address is not a secret), BasicAuthDetector (run
#: on its own), PrivateKeyDetector (whole blocks are redacted instead), and the
#: keyword forms of AWS, Cloudant, IBM, Softlayer and npm (the key-value rules
#: cover those).
_DS_TOKEN_PLUGINS: Final = frozenset(
    {
        "AWSKeyDetector", "ArtifactoryDetector", "AzureStorageKeyDetector",
        "DiscordBotTokenDetector", "GitHubTokenDetector", "GitLabTokenDetector",
        "JwtTokenDetector", "MailchimpDetector", "OpenAIDetector", "PypiTokenDetector",
        "SendGridDetector", "SlackDetector", "SoftlayerDetector", "SquareOAuthDetector",
        "StripeDetector", "TelegramBotTokenDetector", "TwilioKeyDetector",
    }
)  # fmt: skip
#: Token forms detect-secrets 1.5 does not know (or knows at one length only).
_EXTRA_TOKENS: Final = (
    r"github_pat_[A-Za-z0-9_]{22,}",  # GitHub fine-grained tokens
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens of other lengths
    r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,}|whsec_[0-9A-Za-z]{20,}",  # Stripe
    r"xox[abeprs]-[A-Za-z0-9-]{10,}",  # Slack
    r"AIza[0-9A-Za-z_-]{35}",  # Google API keys
    r"AGE-SECRET-KEY-1[0-9A-Z]{50,}",  # age
    r"sk-(?:ant-|proj-)?[A-Za-z0-9_-]{32,}",  # model providers' API keys
    r"(?:AKIA|ASIA)[A-Z0-9]{16}",  # AWS access key ids
)


def _ds_rules(names: frozenset[str]) -> list[re.Pattern[str]]:
    """The regexes of the named detect-secrets plugins (their ``denylist``)."""
    plugins: list[type[Any]] = list(get_mapping_from_secret_type_to_class().values())
    rules: list[re.Pattern[str]] = []
    for cls in plugins:
        if issubclass(cls, RegexBasedDetector) and cls.__name__ in names:
            rules.extend(cls().denylist)
    return rules


def _token_rule(rule: re.Pattern[str]) -> str | None:
    if rule.pattern.startswith("aws") or rule.pattern.startswith("(?:(?<=\\W)"):
        return None  # keyword forms ("aws ... key = '...'"): the key-value rules
    if "softlayer" in rule.pattern and "softlayer.com" not in rule.pattern:
        return None
    return f"(?i:{rule.pattern})" if rule.flags & re.IGNORECASE else f"(?:{rule.pattern})"


#: Every token rule as one regex, run only on words holding a long token-like run.
_TOKENS: Final = re.compile(
    "|".join(
        [
            *(r for r in map(_token_rule, _ds_rules(_DS_TOKEN_PLUGINS)) if r),
            *(f"(?:{t})" for t in _EXTRA_TOKENS),
        ]
    )
)
#: Credentials in URLs: detect-secrets' basic-auth rule (group 1 is the password).
_URL_CREDENTIALS: Final = _ds_rules(frozenset({"BasicAuthDetector"}))[0]
#: Letters, digits, ``_`` and ``-`` map to ``a``, other bytes to a space: :data:`_RUN`
#: of them in a row mark a word the token rules must read (``/`` ends a run, so
#: paths do not wake the rules; base64 keys still hold runs that long).
_RUN_TABLE: Final = bytes(
    ord("a") if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "_-") else ord(" ")
    for b in range(256)
)
_RUN: Final = b"a" * 20
_SPACES: Final = b" \t\r\n\f\v"
#: Key names (the end of the key) that mark the value after ``:`` or ``=`` secret.
_KEY_ENDINGS: Final = (
    r"password|passwd|pwd|passphrase|passcode|[_.-]pass|secret|secret[_-]?key|token"
    r"|api[_-]?key|private[_-]?key|privatekey|access[_-]?key|account[_-]?key"
    r"|(?:tls|ssh|signing|encryption|master|session|client)[_.-]key"
    r"|client[_-]key[_-]data|credentials?|dockerconfigjson|dockercfg"
)
#: A value after the separator: already redacted, escaped-JSON quoted, quoted (with
#: escapes), or bare (spaces included, up to the next ``key=`` or ``key:``).
_VALUE: Final = (
    r"\[REDACTED\]"
    r"|\\\"(?:[^\"\\\n]|\\\\|\\[^\"\n])*?\\\""
    r"|\"(?:[^\"\\\n]|\\.)+\""
    r"|'(?:[^'\n]|'')+'"
    r"|(?![|>][-+0-9]*[ \t]*(?:\r?\n|$))"  # a YAML block indicator: see _block_scalars
    r"[^\s,;&\"'}\]\\]+(?:[ \t]+(?![\w.-]+[ \t]*[:=])[^\s,;&\"'}\]\\#]+)*"
)
#: The same as a single regex (slow on long text; used when ``lower()`` changes lengths).
_KEY_VALUE: Final = re.compile(
    r"(?P<key>[\w.-]*(?:" + _KEY_ENDINGS + r")(?:\\?[\"'])?[ \t]*[:=][ \t]*)"
    r"(?P<value>" + _VALUE + ")",
    re.IGNORECASE,
)
#: ``--password value`` (the ``=`` form is a key-value pair).
_ARG_VALUE: Final = re.compile(
    r"--[\w.-]*(?:" + _KEY_ENDINGS + r")[ \t]+(?!-)(?!\[REDACTED\])"
    r"(\"(?:[^\"\\\n]|\\.)+\"|'[^'\n]+'|[^\s\"']+)",
    re.IGNORECASE,
)
#: A YAML block scalar under a secret-named key (``password: |``).
_BLOCK_HINT: Final = re.compile(r"[|>][-+0-9]*[ \t]*\r?\n")
_BLOCK_KEY: Final = re.compile(
    r"([ \t]*)(?:- )?[\"']?[\w.-]*(?:" + _KEY_ENDINGS + r")[\"']?[ \t]*:[ \t]*[|>][-+0-9]*"
    r"[ \t]*\r?\n",
    re.IGNORECASE,
)
#: A Kubernetes Secret in YAML or JSON text: every value of ``data``/``stringData``.
_SECRET_KIND: Final = re.compile(r"[\"']?kind[\"']?[ \t]*:[ \t]*[\"']?Secret\b")
_DATA_YAML: Final = re.compile(r"^([ \t]*)(?:data|stringData):[ \t]*\r?\n", re.MULTILINE)
_DATA_LINE: Final = re.compile(r"([ \t]+[^\s:]+:[ \t]*)(\S[^\r\n]*)")
_DATA_JSON: Final = re.compile(r"\"(?:data|stringData)\"[ \t]*:[ \t]*\{([^{}]*)\}")
_JSON_MEMBER: Final = re.compile(r"(\"[^\"\\]*\"[ \t]*:[ \t]*)\"(?:[^\"\\]|\\.)*\"")
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
_VALUE_GATES: Final = tuple(re.compile(g) for g in ("bearer", "basic", "eyj", "private"))
_GATE_URL: Final = re.compile("://")
_GATE_ARG: Final = re.compile("--")
#: The key endings, spelled out for ``str.endswith``.
_ENDINGS: Final = tuple(
    {
        "password", "passwd", "pwd", "passphrase", "passcode", "_pass", ".pass", "-pass",
        "secret", "token", "credential", "credentials", "client-key-data", "client_key_data",
        "privatekey", "dockerconfigjson", "dockercfg",
        *(f"{a}{sep}key" for a in ("secret", "api", "private", "access", "account")
          for sep in ("", "_", "-")),
        *(f"{a}{sep}key" for a in ("tls", "ssh", "signing", "encryption", "master", "session",
                                   "client") for sep in ("_", ".", "-")),
    }
)  # fmt: skip
_WORD: Final = re.compile(r"[\w.-]*")
_SEP_VALUE: Final = re.compile(r"(?:\\?[\"'])?[ \t]*[:=][ \t]*(?P<value>" + _VALUE + ")")


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


def _key_values(text: str, low: str, seen: set[str] | None = None) -> tuple[str, int]:
    """Values after secret-named keys replaced: roots found by ``find``, each checked once.

    ``seen`` collects what the other passes are gated on: ``"key"`` when a
    secret-named key was found, ``"secret"`` when the word ``secret`` was.
    """
    if len(low) != len(text):  # lower() changed the length (rare Unicode): the slow way
        if seen is not None:
            seen.update(("key", "secret"))
        return key_values_by_regex(text)
    ends: set[int] = set()
    for root in _KEY_ROOTS:
        skip = 0
        for hit in root.finditer(low):
            if seen is not None and root is _KEY_ROOTS[2]:
                seen.add("secret")
            if hit.start() < skip:
                continue  # inside a word already checked
            word = _WORD.match(low, hit.start())
            end = word.end() if word else hit.end()
            skip = end
            if low.endswith(_ENDINGS, 0, end):
                ends.add(end)
    if seen is not None and ends:
        seen.add("key")
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


def _replace(text: str, spans: list[tuple[int, int]]) -> tuple[str, int]:
    """``text`` with each span (sorted, non-overlapping after the first) replaced."""
    if not spans:
        return text, 0
    out: list[str] = []
    last = n = 0
    for start, stop in sorted(spans):
        if start < last:
            continue
        out.append(text[last:start])
        out.append(REDACTED)
        last = stop
        n += 1
    out.append(text[last:])
    return "".join(out), n


def _tokens(text: str) -> tuple[str, int]:
    """Provider tokens, looked for only in words that hold a long token-like run."""
    raw = text.encode("ascii", "replace")  # one byte per character: offsets agree
    runs = raw.translate(_RUN_TABLE)
    at = runs.find(_RUN)
    spans: list[tuple[int, int]] = []
    end = len(raw)
    while at >= 0:
        left = at
        while left > 0 and raw[left - 1] not in _SPACES and at - left < 256:
            left -= 1
        right = at + len(_RUN)
        while right < end and raw[right] not in _SPACES and right - at < 8192:
            right += 1
        for m in _TOKENS.finditer(text, left, right):
            stop = m.end()  # a fixed-length rule may match a longer token's start
            while stop < right and runs[stop] == 97:  # b"a": [A-Za-z0-9_-]
                stop += 1
            spans.append((m.start(), stop))
        at = runs.find(_RUN, right)
    return _replace(text, spans)


def _block_scalars(text: str) -> tuple[str, int]:
    """Values of ``password: |`` (YAML block scalars): the indented lines below."""
    spans: list[tuple[int, int]] = []
    for hint in _BLOCK_HINT.finditer(text):
        line = text.rfind("\n", 0, hint.start()) + 1
        key = _BLOCK_KEY.match(text, line)
        if key is None or key.end() != hint.end():
            continue
        indent = len(key.group(1))
        pos = stop = key.end()
        while pos < len(text):
            nl = text.find("\n", pos)
            nxt = len(text) if nl < 0 else nl + 1
            body = text[pos:nxt]
            if body.strip() and len(body) - len(body.lstrip(" \t")) <= indent:
                break
            if body.strip():
                stop = pos + len(body.rstrip("\r\n"))
            pos = nxt
        if stop > key.end():
            spans.append((hint.start(), stop))  # the indicator and the lines below
    return _replace(text, spans)


def _secret_manifests(text: str) -> tuple[str, int]:
    """Every value under ``data``/``stringData`` of a Kubernetes Secret (YAML or JSON)."""
    spans: list[tuple[int, int]] = []
    for block in _DATA_YAML.finditer(text):
        indent = len(block.group(1))
        pos = block.end()
        while pos < len(text):
            m = _DATA_LINE.match(text, pos)
            if m is None or len(m.group(1)) - len(m.group(1).lstrip(" \t")) <= indent:
                break
            if m.group(2) != REDACTED:
                spans.append(m.span(2))
            nl = text.find("\n", m.end())
            pos = len(text) if nl < 0 else nl + 1
    for block in _DATA_JSON.finditer(text):
        for member in _JSON_MEMBER.finditer(text, block.start(1), block.end(1)):
            spans.append((member.end(1), member.end()))
    return _replace(text, spans)


def scrub(text: str) -> tuple[str, int]:
    """``text`` with every credential-looking part replaced, and how many were.

    Each pattern runs only when a literal it needs is present, so a long text
    costs a few ``find`` calls unless it holds something that looks secret.
    """
    if not any(c in text for c in _TRIGGER_CHARS):
        return text, 0
    total = 0
    low = text.lower()

    def apply(fn: Any) -> None:
        nonlocal text, low, total
        text, n = fn(text)
        if n:
            total += n
            low = text.lower()

    if _VALUE_GATES[3].search(low):  # "private": key blocks, PuTTY's Private-Lines
        apply(lambda t: _PEM_BLOCK.subn(REDACTED, t))
        if "putty-user-key-file" in low:
            apply(lambda t: _PUTTY_KEY.subn(REDACTED, t))
    if "@" in text and _GATE_URL.search(text):
        apply(lambda t: _replace(t, [m.span(1) for m in _URL_CREDENTIALS.finditer(t)]))
    seen: set[str] = set()
    text, n = _key_values(text, low, seen)
    if n:
        total += n
        low = text.lower()
    if "key" in seen:  # the forms of a secret-named key the pairs above do not cover
        if ("|" in text or ">" in text) and _BLOCK_HINT.search(text):
            apply(_block_scalars)
        if _GATE_ARG.search(text):
            apply(lambda t: _replace(t, [m.span(1) for m in _ARG_VALUE.finditer(t)]))
    if "secret" in seen and "Secret" in text and _SECRET_KIND.search(text):
        apply(_secret_manifests)
    if any(g.search(low) for g in _VALUE_GATES):
        text, n = SECRET_VALUE_PATTERN.subn(REDACTED, text)
        total += n
    text, n = _tokens(text)
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
        manifest = value.get("kind") == "Secret"
        for k, v in value.items():
            if manifest and k in ("data", "stringData") and isinstance(v, Mapping):
                out[k] = {dk: REDACTED if isinstance(dv, str) else dv for dk, dv in v.items()}
                n = sum(1 for dv in v.values() if isinstance(dv, str) and dv != REDACTED)
            elif isinstance(v, str) and secret_key(str(k)) and v and v != REDACTED:
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
