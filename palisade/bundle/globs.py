"""Shell-style globs (``*``, ``?``, ``[abc]``), case-sensitive, checked before use.

``fnmatch`` quietly treats a malformed pattern as literal text; a policy author
who writes ``pods_[log`` almost certainly meant something else, so such
patterns are refused at lint time instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fnmatch import translate

_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in pattern)


def glob_problem(pattern: str) -> str:
    """Why ``pattern`` is not a usable glob, or "" when it is."""
    if not pattern:
        return "empty pattern; use '*' to match anything"
    if pattern != pattern.strip():
        return "leading or trailing whitespace"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                return f"'[' at position {i} is never closed with ']'"
            i = end
        elif ch == "]" and "[" not in pattern[:i]:
            return f"']' at position {i} has no opening '['"
        i += 1
    return ""


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A predicate for one pattern; exact names compare with ``==`` (the fast path)."""
    if not is_glob(pattern):
        return pattern.__eq__
    regex = re.compile(translate(pattern))

    def match(value: str) -> bool:
        return regex.match(value) is not None

    return match


def compile_globs(patterns: tuple[str, ...]) -> Callable[[str], bool] | None:
    """One predicate for an ORed list; ``None`` means "matches anything"."""
    if not patterns or "*" in patterns:
        return None
    exact = frozenset(p for p in patterns if not is_glob(p))
    wild = [p for p in patterns if is_glob(p)]
    if not wild:
        return exact.__contains__
    regex = re.compile("|".join(f"(?:{translate(p)})" for p in wild))

    def match(value: str) -> bool:
        return value in exact or regex.match(value) is not None

    return match
