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


def tool_definition_digest(
    name: str, description: str | None, input_schema: Mapping[str, Any] | None
) -> str:
    """The value to put in a registry tool's ``pinned``: what the server advertises."""
    doc = {"name": name, "description": description or "", "inputSchema": dict(input_schema or {})}
    return "sha256:" + hashlib.sha256(_canonical(doc)).hexdigest()
