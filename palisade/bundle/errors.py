"""What goes wrong with a bundle, said so that a person can fix it.

Exception tree::

    BundleError                  any problem with a bundle (base; carries issues)
    ├── BundleValidationError    parse or schema errors, each with file:line:col and field
    └── BundleVerificationError  digest mismatch, bad or untrusted signature, bad envelope

Every :class:`Issue` renders as ``file:line:col: field.path: message [CODE]``; the
position is left out where none is known (a JSON document from the wire); the
code is stable (:mod:`palisade.bundle.codes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a source file; line and column count from 1."""

    source: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.source}:{self.line}:{self.column}"
        return self.source


@dataclass(frozen=True, slots=True)
class Issue:
    """One thing wrong with a bundle: where, which field, and what to do about it."""

    position: Position
    field: str
    message: str
    #: what kind of problem (palisade/bundle/codes.py): stable, unlike the wording
    code: str = ""

    def __str__(self) -> str:
        parts = [p for p in (str(self.position), self.field, self.message) if p]
        text = ": ".join(parts)
        return f"{text} [{self.code}]" if self.code else text

    def as_dict(self) -> dict[str, Any]:
        pos = self.position
        return {
            "code": str(self.code),
            "file": pos.source,
            "line": pos.line,
            "column": pos.column,
            "field": self.field,
            "message": self.message,
        }


class BundleError(Exception):
    """A bundle could not be used. ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[Issue] | str) -> None:
        if isinstance(issues, str):
            issues = [Issue(Position(""), "", issues)]
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class BundleValidationError(BundleError):
    """The bundle does not parse or does not follow the schema."""


class BundleVerificationError(BundleError):
    """A signed bundle's digest or signatures do not check out."""
