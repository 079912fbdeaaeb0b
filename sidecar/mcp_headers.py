"""The 2026-07-28 routing-header rules (SEP-2243), without importing the MCP SDK.

A port of the pure comparison rules of the MCP Python SDK's ``mcp.shared.inbound``
(MIT licensed): which body field ``Mcp-Name`` mirrors, the ``=?base64?...?=``
header-value codec, which schema properties carry ``x-mcp-header``, and when an
``Mcp-Param-*`` header agrees with its argument. Importing the SDK module loads the
whole SDK (pydantic models, HTTP clients: about 50 MB of resident memory), which
the sidecar's memory budget cannot afford for a hundred lines of pure logic.
``tests/sidecar/proxy/test_mcp_headers.py`` checks this port against the SDK's own
functions on generated inputs, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, cast

MCP_PROTOCOL_VERSION_HEADER: Final = "mcp-protocol-version"
MCP_METHOD_HEADER: Final = "mcp-method"
MCP_NAME_HEADER: Final = "mcp-name"
MCP_PARAM_HEADER_PREFIX: Final = "Mcp-Param-"
X_MCP_HEADER_KEY: Final = "x-mcp-header"
#: Revisions with the per-request envelope, where ``Mcp-Method`` is required.
MODERN_PROTOCOL_VERSIONS: Final = ("2026-07-28",)
#: Method -> the params key ``Mcp-Name`` mirrors.
NAME_BEARING_METHODS: Final[Mapping[str, str]] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
}

_ROUTING: Final = frozenset({MCP_PROTOCOL_VERSION_HEADER, MCP_METHOD_HEADER, MCP_NAME_HEADER})
_B64_SENTINEL = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")
_RFC9110_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CANONICAL_DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_PRIMITIVE_TYPES: Final = frozenset({"string", "integer", "boolean"})
_SUBSCHEMA_SINGLE: Final = frozenset(
    {
        "items",
        "contains",
        "unevaluatedItems",
        "additionalProperties",
        "propertyNames",
        "unevaluatedProperties",
        "not",
        "if",
        "then",
        "else",
        "contentSchema",
    }
)
_SUBSCHEMA_LIST: Final = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SUBSCHEMA_MAP: Final = frozenset({"patternProperties", "dependentSchemas", "$defs", "definitions"})


def decode_header_value(value: str | None) -> str | None:
    """The value of a header, unwrapping ``=?base64?...?=``; ``None`` for a malformed wrapper."""
    if value is None:
        return None
    m = _B64_SENTINEL.fullmatch(value)
    if m is None:
        return value
    payload = m.group("payload")
    try:
        decoded = base64.b64decode(payload, validate=True)
    except binascii.Error:
        return None
    if base64.b64encode(decoded).decode("ascii") != payload:
        return None  # non-canonical base64
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None


def find_duplicated_routing_header(headers: Iterable[tuple[str, str]]) -> str | None:
    """A routing header given more than once (first- and last-copy readers would disagree)."""
    seen: set[str] = set()
    for name, _ in headers:
        key = name.lower()
        if key in _ROUTING:
            if key in seen:
                return key
            seen.add(key)
    return None


def _positions(root: Any) -> Iterator[tuple[tuple[str, ...] | None, dict[str, Any]]]:
    """Every schema position, with its chain of ``properties`` keys (None once off that chain)."""
    stack: list[tuple[tuple[str, ...] | None, Any]] = [((), root)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        schema = cast(dict[str, Any], node)
        yield path, schema
        for kw, val in schema.items():
            if kw == "properties" and isinstance(val, dict):
                for name, sub in cast(dict[str, Any], val).items():
                    stack.append(((*path, name) if path is not None else None, sub))
            elif kw in _SUBSCHEMA_SINGLE:
                stack.append((None, val))
            elif kw in _SUBSCHEMA_LIST and isinstance(val, list):
                stack.extend((None, sub) for sub in val)
            elif kw in _SUBSCHEMA_MAP and isinstance(val, dict):
                stack.extend((None, sub) for sub in cast(dict[str, Any], val).values())


def find_invalid_x_mcp_header(input_schema: Any) -> str | None:
    """Why the schema's ``x-mcp-header`` annotations are invalid, or ``None``."""
    seen: dict[str, str] = {}
    for path, schema in _positions(input_schema):
        if X_MCP_HEADER_KEY not in schema:
            continue
        if not path:
            return f"{X_MCP_HEADER_KEY} outside a pure `properties` chain"
        where = ".".join(path)
        header = schema[X_MCP_HEADER_KEY]
        if not isinstance(header, str) or not _RFC9110_TOKEN.fullmatch(header):
            return f"property {where!r}: {X_MCP_HEADER_KEY} is not an RFC 9110 token"
        if schema.get("type") not in _PRIMITIVE_TYPES:
            return f"property {where!r}: {X_MCP_HEADER_KEY} on a non-primitive property"
        lower = header.lower()
        if lower in seen:
            return f"{X_MCP_HEADER_KEY} {header!r} on {where!r} duplicates {seen[lower]!r}"
        seen[lower] = where
    return None


def _annotated(input_schema: Any) -> Iterator[tuple[tuple[str, ...], str, dict[str, Any]]]:
    for path, schema in _positions(input_schema):
        if path and isinstance(token := schema.get(X_MCP_HEADER_KEY), str):
            yield path, token, schema


def _render(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str | int | float):
        return None
    try:
        return str(value)
    except ValueError:  # an int beyond the interpreter's digit limit
        return None


def _value_at(arguments: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = arguments
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = cast("Mapping[str, Any]", node).get(key)
    return node


def _matches(prop_type: Any, value: Any, rendered: str, decoded: str) -> bool:
    if (
        prop_type == "integer"
        and not isinstance(value, bool)
        and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
        and _CANONICAL_DECIMAL.fullmatch(decoded) is not None
    ):
        whole, _, fraction = decoded.partition(".")
        if fraction and set(fraction) != {"0"}:
            return False
        try:
            return int(whole) == int(value)
        except ValueError:
            return False
    return decoded == rendered


def validate_mcp_param_headers(
    input_schema: Any, arguments: Mapping[str, Any], headers: Mapping[str, str]
) -> str | None:
    """Why the ``Mcp-Param-*`` headers disagree with the arguments, or ``None``.

    ``headers.items()`` must list every header line (duplicates included).
    """
    if find_invalid_x_mcp_header(input_schema) is not None:
        return None  # conforming clients drop such a tool and send no headers
    folded: dict[str, str] = {}
    duplicated: set[str] = set()
    for name, value in headers.items():
        key = name.lower()
        if key in folded:
            duplicated.add(key)
        folded[key] = value
    for path, token, schema in _annotated(input_schema):
        header_name = f"{MCP_PARAM_HEADER_PREFIX}{token}"
        key = header_name.lower()
        raw = folded.get(key)
        value = _value_at(arguments, path)
        argument = ".".join(path)
        if raw is not None and key in duplicated:
            return f"{header_name} header appears more than once"
        if value is None:
            if raw is not None:
                return f"{header_name} header is present but the {argument!r} argument is absent"
            continue
        rendered = _render(value)
        if rendered is None:
            if raw is not None:
                return f"{header_name} header does not match the {argument!r} argument"
            continue
        if raw is None:
            return f"{header_name} header is missing but the {argument!r} argument is present"
        decoded = decode_header_value(raw)
        if decoded is None:
            return f"{header_name} header carries a malformed base64 value"
        if not _matches(schema.get("type"), value, rendered, decoded):
            return f"{header_name} header does not match the {argument!r} argument"
    return None
