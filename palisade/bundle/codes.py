"""Stable codes for what ``palisade bundle lint`` reports, so CI and editors can match them.

A code names a kind of problem, never its wording: messages may improve, codes do
not change meaning. ``PB`` codes are errors (the bundle is refused), ``PW`` codes
warnings (``--strict`` fails on them). docs/bundle-format.md lists them.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    # reading
    YAML = "PB001"
    UNREADABLE = "PB002"
    NO_DOCUMENT = "PB003"
    TOO_LARGE = "PB004"
    # shape
    WRONG_TYPE = "PB010"
    MISSING = "PB011"
    EMPTY = "PB012"
    OUT_OF_RANGE = "PB013"
    NOT_A_CHOICE = "PB014"
    UNKNOWN_FIELD = "PB015"
    BAD_FORMAT = "PB016"
    # meaning
    DUPLICATE = "PB020"
    UNKNOWN_REFERENCE = "PB021"
    GLOB = "PB022"
    EXPRESSION = "PB023"
    RESERVED = "PB024"
    COMBINATION = "PB025"
    KIND = "PB026"
    # several files
    CONFLICT = "PB030"
    # warnings
    SHADOWED_RULE = "PW001"


#: One line per code: ``-o wide`` prints it under each problem; docs/bundle-format.md lists them.
DESCRIPTIONS: dict[Code, str] = {
    Code.YAML: "the file is not valid YAML (or JSON)",
    Code.UNREADABLE: "the file or directory cannot be read",
    Code.NO_DOCUMENT: "no bundle document, or a directory without bundle files",
    Code.TOO_LARGE: "the document expands to too many values or nests too deeply",
    Code.WRONG_TYPE: "a field has the wrong type (a string where a list belongs ...)",
    Code.MISSING: "a required field is missing",
    Code.EMPTY: "a field that must not be empty is",
    Code.OUT_OF_RANGE: "a number is out of its range",
    Code.NOT_A_CHOICE: "a value is not one of the allowed ones",
    Code.UNKNOWN_FIELD: "a field the format does not have (a typo?)",
    Code.BAD_FORMAT: "a value does not have its format (digest, name, ServiceAccount ...)",
    Code.DUPLICATE: "two entries share a name or an identity",
    Code.UNKNOWN_REFERENCE: "a reference to a server, tool, tenant or rule not declared",
    Code.GLOB: "a glob is malformed or matches nothing declared",
    Code.EXPRESSION: "a `when` expression does not compile",
    Code.RESERVED: "a name reserved for the engine",
    Code.COMBINATION: "fields that do not go together, or one that needs another",
    Code.KIND: "not a PolicyBundle (apiVersion or kind)",
    Code.CONFLICT: "files of one bundle set the same field differently",
    Code.SHADOWED_RULE: "a rule that can never match: an earlier rule matches every call it would",
}
