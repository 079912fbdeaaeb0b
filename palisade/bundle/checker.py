"""Reading one plain document field by field, collecting every issue with its position.

:class:`Checker` is the toolkit the validator is written in: shape checks
(mapping with known fields), typed getters with defaults, enum values with
suggestions, lists, uniqueness. Each problem becomes an :class:`Issue` with the
file, line and column of the field and its dotted path.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, TypeVar

from palisade.bundle.codes import Code
from palisade.bundle.errors import Issue
from palisade.bundle.globs import glob_problem
from palisade.bundle.yamlpos import Path, Positions, path_str

E = TypeVar("E", bound=StrEnum)
MISSING = object()


def typename(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Checker:
    """Collects issues while reading one document."""

    def __init__(self, positions: Positions) -> None:
        self.positions = positions
        self.issues: list[Issue] = []

    def err(self, path: Path, message: str, *, code: Code) -> None:
        self.issues.append(Issue(self.positions.at(path), path_str(path), message, code))

    # -- shapes -------------------------------------------------------------

    def obj(
        self, value: Any, path: Path, required: Iterable[str], optional: Iterable[str]
    ) -> dict[str, Any] | None:
        req = tuple(required)
        allowed = (*req, *optional)
        if not isinstance(value, dict):
            self.err(path, f"must be a mapping, got {typename(value)}", code=Code.WRONG_TYPE)
            return None
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.err(
                    (*path, key),
                    f"unknown field {key!r}{hint} (allowed here: {', '.join(allowed)})",
                    code=Code.UNKNOWN_FIELD,
                )
        for key in req:
            if key not in value:
                self.err(path, f"missing required field {key!r}", code=Code.MISSING)
        return value

    def string(self, d: Mapping[str, Any], key: str, path: Path, default: str = "") -> str:
        value = d.get(key, MISSING)
        if value is MISSING:
            return default
        if not isinstance(value, str):
            hint = ""
            if isinstance(value, bool):
                hint = " (YAML reads yes/no/on/off/true/false as booleans: quote it)"
            self.err(
                (*path, key), f"must be a string, got {typename(value)}{hint}", code=Code.WRONG_TYPE
            )
            return default
        return value

    def name(self, d: Mapping[str, Any], key: str, path: Path) -> str:
        value = self.string(d, key, path)
        if key in d and isinstance(d[key], str) and not value.strip():
            self.err((*path, key), "must not be empty", code=Code.EMPTY)
        return value

    def number(
        self,
        d: Mapping[str, Any],
        key: str,
        path: Path,
        default: float | None,
        *,
        minimum: float | None = 0.0,
        exclusive: bool = False,
    ) -> float | None:
        value = d.get(key, MISSING)
        if value is MISSING or (value is None and default is None):
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.err((*path, key), f"must be a number, got {typename(value)}", code=Code.WRONG_TYPE)
            return default
        if value != value or value in (float("inf"), float("-inf")):
            self.err((*path, key), "must be a finite number", code=Code.OUT_OF_RANGE)
            return default
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            word = "greater than" if exclusive else "at least"
            self.err(
                (*path, key), f"must be {word} {minimum:g}, got {value:g}", code=Code.OUT_OF_RANGE
            )
            return default
        return float(value)

    def integer(
        self, d: Mapping[str, Any], key: str, path: Path, default: int | None, minimum: int = 0
    ) -> int | None:
        value = d.get(key, MISSING)
        if value is MISSING or (value is None and default is None):
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.err(
                (*path, key), f"must be a whole number, got {typename(value)}", code=Code.WRONG_TYPE
            )
            return default
        if value < minimum:
            self.err(
                (*path, key), f"must be at least {minimum}, got {value}", code=Code.OUT_OF_RANGE
            )
            return default
        return value

    def boolean(self, d: Mapping[str, Any], key: str, path: Path, default: bool) -> bool:
        value = d.get(key, MISSING)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            self.err(
                (*path, key), f"must be true or false, got {typename(value)}", code=Code.WRONG_TYPE
            )
            return default
        return value

    def enum(self, d: Mapping[str, Any], key: str, path: Path, kind: type[E], default: E) -> E:
        value = d.get(key, MISSING)
        if value is MISSING:
            return default
        got = self.enum_value(value, (*path, key), kind)
        return default if got is None else got

    def enum_value(self, value: Any, path: Path, kind: type[E]) -> E | None:
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
        choices = [m.value for m in kind]
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.err(
            path, f"{value!r} is not one of {', '.join(choices)}{hint}", code=Code.NOT_A_CHOICE
        )
        return None

    def items(self, d: Mapping[str, Any], key: str, path: Path) -> list[tuple[Path, Any]]:
        value = d.get(key, MISSING)
        if value is MISSING or value is None:
            return []
        if not isinstance(value, list):
            self.err((*path, key), f"must be a list, got {typename(value)}", code=Code.WRONG_TYPE)
            return []
        return [((*path, key, i), v) for i, v in enumerate(value)]

    def strings(
        self, d: Mapping[str, Any], key: str, path: Path, *, globs: bool = False
    ) -> tuple[str, ...]:
        out: list[str] = []
        for p, v in self.items(d, key, path):
            if not isinstance(v, str):
                self.err(p, f"must be a string, got {typename(v)}", code=Code.WRONG_TYPE)
                continue
            if globs:
                problem = glob_problem(v)
                if problem:
                    self.err(p, f"bad glob {v!r}: {problem}", code=Code.GLOB)
                    continue
            out.append(v)
        return tuple(out)

    def str_map(self, d: Mapping[str, Any], key: str, path: Path) -> dict[str, str]:
        value = d.get(key, MISSING)
        if value is MISSING or value is None:
            return {}
        if not isinstance(value, dict):
            self.err(
                (*path, key),
                f"must be a mapping of strings, got {typename(value)}",
                code=Code.WRONG_TYPE,
            )
            return {}
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str):
                self.err(
                    (*path, key, k), f"must be a string, got {typename(v)}", code=Code.WRONG_TYPE
                )
            else:
                out[k] = v
        return out

    def unique(self, entries: Iterable[tuple[Path, str]], what: str) -> None:
        seen: dict[str, Path] = {}
        for path, name in entries:
            if not name:
                continue
            if name in seen:
                first = self.positions.at(seen[name])
                where = f" (first at line {first.line})" if first.line else ""
                self.err(
                    path,
                    f"duplicate {what} {name!r}{where}; {what}s must be unique",
                    code=Code.DUPLICATE,
                )
            else:
                seen[name] = path
