"""Digests that bind things to exact content: arguments, approvals, tool definitions.

All are ``sha256:<hex>`` over canonical JSON (sorted keys, no whitespace), so
the sidecar, the audit log and the distributor compute the same value for the
same call independently.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def _canonical(doc: Any) -> bytes:
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    """Digest of a tool call's (unredacted) arguments, as audit records carry it."""
    return "sha256:" + hashlib.sha256(_canonical(dict(arguments))).hexdigest()


def call_digest(
    agent: str, server: str, tool: str, arguments: Mapping[str, Any], session: str
) -> str:
    """Digest binding an approval to one exact call."""
    doc = {
        "agent": agent,
        "server": server,
        "tool": tool,
        "arguments": arguments_digest(arguments),
        "session": session,
    }
    return "sha256:" + hashlib.sha256(_canonical(doc)).hexdigest()


def approval_id(
    agent: str, server: str, tool: str, arguments: Mapping[str, Any], session: str
) -> str:
    """A short, deterministic id for the approval of one exact call ("apr-" + 24 hex)."""
    return "apr-" + call_digest(agent, server, tool, arguments, session)[7:31]


#: Members of an advertised tool definition a pin does not cover: ``_meta`` is
#: protocol metadata a server may vary from one listing to the next.
UNPINNED_TOOL_FIELDS = frozenset({"_meta"})


def tool_digest(tool: Mapping[str, Any]) -> str:
    """The value to put in a registry tool's ``pinned``: the whole definition a server
    advertises in ``tools/list`` (name, title, description, ``inputSchema``,
    ``outputSchema``, ``annotations``, whatever else it carries), less ``_meta``.

    Everything a decision reads from the definition (the risk its ``annotations``
    declare, the ``inputSchema`` that ``Mcp-Param-*`` headers are checked against)
    and everything the model is shown is covered, so a change to any of it breaks
    the pin. A definition with only a name, description and input schema digests
    as :func:`tool_definition_digest` always did.
    """
    doc = {k: v for k, v in tool.items() if k not in UNPINNED_TOOL_FIELDS}
    doc["description"] = doc.get("description") or ""
    schema = doc.get("inputSchema")
    doc["inputSchema"] = dict(schema) if isinstance(schema, Mapping) else (schema or {})
    return "sha256:" + hashlib.sha256(_canonical(doc)).hexdigest()


def tool_definition_digest(
    name: str,
    description: str | None,
    input_schema: Mapping[str, Any] | None,
    annotations: Mapping[str, Any] | None = None,
) -> str:
    """:func:`tool_digest` of a definition given field by field."""
    tool: dict[str, Any] = {"name": name, "description": description, "inputSchema": input_schema}
    if annotations is not None:
        tool["annotations"] = dict(annotations)
    return tool_digest(tool)
