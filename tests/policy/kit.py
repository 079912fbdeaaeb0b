"""Small helpers for bundle and engine tests: a minimal bundle in YAML, a fake clock."""

from __future__ import annotations

import textwrap
from typing import Any

from palisade.bundle import Bundle, load_bytes
from palisade.policy import Call
from palisade.policy.bundletests import FakeClock

__all__ = ["BASE", "FakeClock", "bundle", "call", "spec_yaml"]

BASE = """\
apiVersion: palisade.dev/v1alpha1
kind: PolicyBundle
metadata:
  name: t
spec:
  servers:
    - name: k8s
      tools:
        - {name: pods_log, risk: read, cost: 1}
        - {name: pods_list, risk: read}
        - {name: apply, risk: write, cost: 5}
        - {name: delete, risk: destructive}
        - {name: mystery}
  tenants:
    - {name: payments, namespaces: [payments]}
    - {name: search, namespaces: [search]}
  agents:
    - {id: sre, tenant: payments, namespaces: [payments], scopes: ["k8s:write"]}
    - {id: other, tenant: search, namespaces: [search]}
"""


def spec_yaml(extra: str) -> str:
    """BASE plus more ``spec`` entries, given at spec indentation (two spaces stripped)."""
    return BASE + textwrap.indent(textwrap.dedent(extra), "  ")


def bundle(extra: str = "", source: str = "t.yaml") -> Bundle:
    return load_bytes(spec_yaml(extra), source)


def call(tool: str = "pods_log", agent: str = "sre", **kw: Any) -> Call:
    kw.setdefault("server", "k8s")
    kw.setdefault("session", "s1")
    return Call(agent=agent, tool=tool, **kw)
