"""Bundles to hold the generated schemas against the validator.

``accepted_documents()``: every PolicyBundle document in the repository's
examples, docs and tests (YAML files, ```yaml blocks, Python string constants)
that :func:`palisade.bundle.validate.build_bundle` accepts on its own.
``INVALID``: small changes to a valid bundle that the validator refuses, each
of which the schemas must refuse too.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palisade.bundle import BundleError
from palisade.bundle.validate import build_bundle
from palisade.bundle.yamlpos import load_yaml

ROOT = Path(__file__).resolve().parents[2]
_SKIP_DIRS = {".venv", "node_modules", ".git", "templates", "__pycache__", ".mypy_cache"}
_FENCE = re.compile(r"```ya?ml\n(.*?)```", re.S)
_MARK = "kind: PolicyBundle"


def _texts() -> Iterator[tuple[str, str]]:
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if _SKIP_DIRS & set(rel.parts) or not path.is_file():
            continue
        if rel.parts[0] in ("charts", "schemas") or rel.parts[:2] == ("tests", "crd"):
            continue  # generated, or Helm templates
        if path.suffix in (".yaml", ".yml"):
            text = path.read_text(errors="replace")
            if _MARK in text:
                yield str(rel), text
        elif path.suffix == ".md":
            for i, block in enumerate(_FENCE.findall(path.read_text(errors="replace"))):
                if _MARK in block:
                    yield f"{rel}#{i}", block
        elif path.suffix == ".py" and rel.parts[0] in ("tests", "examples"):
            tree = ast.parse(path.read_text(errors="replace"))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and _MARK in node.value
                    and "apiVersion" in node.value
                ):
                    yield f"{rel}:{node.lineno}", node.value


_FIELD = re.compile(r"(?<!\{)\{[a-z_]+\}(?!\})")


def _filled(template: str) -> str:
    """A ``str.format`` template with every field set to 1 (``gpus: {gpus}``)."""
    return _FIELD.sub("1", template).replace("{{", "{").replace("}}", "}")


def _parse(where: str, text: str) -> list[tuple[Any, Any]]:
    for candidate in (text, _filled(text)):
        try:
            return load_yaml(candidate, where)
        except BundleError:
            continue  # a template, or a deliberately broken file
    return []


def accepted_documents() -> list[tuple[str, dict[str, Any]]]:
    """(where, document) for every document the validator accepts alone."""
    out: list[tuple[str, dict[str, Any]]] = []
    for where, text in _texts():
        docs = _parse(where, text)
        for doc, pos in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "PolicyBundle":
                continue
            try:
                build_bundle(doc, pos)
            except BundleError:
                continue
            out.append((where, doc))
    return out


BASE = """\
apiVersion: palisade.dev/v1alpha1
kind: PolicyBundle
metadata:
  name: shop
spec:
  servers:
    - name: kube
      images: ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
      tools:
        - {name: pods_log, risk: read}
        - {name: delete, risk: destructive}
  tenants:
    - name: shop
      namespaces: [shop]
      gpuQuota: {gpus: 1}
  agents:
    - id: bot
      tenant: shop
      identities: [{serviceAccount: shop/bot}]
      clusterCredential: {serviceAccount: shop/bot}
  budgets:
    rateLimits: [{id: r, rate: 1, burst: 2}]
  rules:
    - id: ask
      match: {risk: [destructive]}
      decision: require_approval
      approvers: 2
    - {id: reads, match: {risk: [read]}, decision: allow}
  tests:
    - name: reads
      call: {agent: bot, server: kube, tool: pods_log}
      expect: {decision: allow, rule: reads}
    - name: quota
      gpu: {tenant: shop, gpus: 2}
      expect: {violations: [gpus]}
"""


def base() -> dict[str, Any]:
    doc = load_yaml(BASE, "base.yaml")[0][0]
    assert isinstance(doc, dict)
    return doc


@dataclass(frozen=True)
class Invalid:
    """A broken bundle: what was changed, and the field the validator names."""

    name: str
    change: Callable[[dict[str, Any]], None]
    field: str
    #: The CEL message the API server gives (for cross-field rules), else "".
    cel_message: str = ""
    #: Outside spec (the CRD checks only spec and metadata.name).
    spec_only: bool = True

    def document(self) -> dict[str, Any]:
        doc = copy.deepcopy(base())
        self.change(doc)
        return doc


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        node: Any = doc
        *head, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for p in head:
            node = node[p]
        node[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        node: Any = doc
        *head, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for p in head:
            node = node[p]
        del node[last]

    return change


INVALID = (
    Invalid("unknown field", _set("spec.rules.1.decison", "allow"), "spec.rules[1].decison"),
    Invalid("bad decision", _set("spec.rules.1.decision", "perhaps"), "spec.rules[1].decision"),
    Invalid("missing decision", _drop("spec.rules.1.decision"), "spec.rules[1]"),
    Invalid("reason not a string", _set("spec.rules.1.reason", True), "spec.rules[1].reason"),
    Invalid(
        "approvers on an allow rule",
        _set("spec.rules.1.approvers", 2),
        "spec.rules[1].approvers",
        cel_message="only a require_approval rule has approvers",
    ),
    Invalid("too many approvers", _set("spec.rules.0.approvers", 11), "spec.rules[0].approvers"),
    Invalid(
        "reserved rule id",
        _set("spec.rules.1.id", "default"),
        "spec.rules[1].id",
        cel_message="rule ids default, registry and failure are reserved",
    ),
    Invalid("empty rule id", _set("spec.rules.1.id", ""), "spec.rules[1].id"),
    Invalid("zero rate", _set("spec.budgets.rateLimits.0.rate", 0), "spec.budgets.rateLimits[0]"),
    Invalid("negative cost", _set("spec.servers.0.tools.0.cost", -1), "spec.servers[0].tools[0]"),
    Invalid(
        "bad image digest", _set("spec.servers.0.images.0", "latest"), "spec.servers[0].images"
    ),
    Invalid("bad pin", _set("spec.servers.0.tools.0.pinned", "abc"), "spec.servers[0].tools[0]"),
    Invalid(
        "bad server request kind",
        _set("spec.servers.0.serverRequests", ["telepathy"]),
        "spec.servers[0].serverRequests",
    ),
    Invalid("server without tools", _drop("spec.servers.0.tools"), "spec.servers[0]"),
    Invalid(
        "identity with an issuer only",
        _set("spec.agents.0.identities.0", {"issuer": "https://issuer.example"}),
        "spec.agents[0].identities[0]",
        cel_message="an identity needs either serviceAccount or both issuer and subject",
    ),
    Invalid(
        "credential not namespace/name",
        _set("spec.agents.0.clusterCredential.serviceAccount", "bot"),
        "spec.agents[0].clusterCredential.serviceAccount",
    ),
    Invalid(
        "bad enforcement",
        _set("spec.tenants.0.gpuQuota.enforcement", "shout"),
        "spec.tenants[0].gpuQuota.enforcement",
    ),
    Invalid("fractional gpus", _set("spec.tenants.0.gpuQuota.gpus", 1.5), "spec.tenants[0]"),
    Invalid(
        "test with call and gpu",
        _set("spec.tests.1.call", {"agent": "bot", "server": "kube", "tool": "pods_log"}),
        "spec.tests[1]",
        cel_message="a test needs exactly one of call",
    ),
    Invalid(
        "call test without a decision",
        _set("spec.tests.0.expect", {"rule": "reads"}),
        "spec.tests[0].expect",
        cel_message="a call test expects a decision",
    ),
    Invalid(
        "bad violation",
        _set("spec.tests.1.expect.violations", ["vram"]),
        "spec.tests[1].expect.violations",
    ),
    Invalid("bad default", _set("spec.defaultDecision", "maybe"), "spec.defaultDecision"),
    Invalid(
        "name not a DNS label",
        _set("metadata.name", "Shop_Bundle"),
        "metadata.name",
        cel_message="metadata.name must be a DNS-1123 label",
    ),
    Invalid(
        "wrong apiVersion",
        _set("apiVersion", "palisade.dev/v9"),
        "apiVersion",
        spec_only=False,
    ),
)


EDGE = """\
apiVersion: palisade.dev/v1alpha1
kind: PolicyBundle
metadata: {name: edges, namespace: x, uid: abc, generation: 3, labels: {a: b}}
status: {revision: 4}
spec:
  defaultDecision: allow
  failureMode: open
  servers:
    - name: kube
      versions: ["1.*"]
      serverRequests: [sampling, roots]
      tools:
        - name: t
          cost: 2.5
          pinned: ""
          untrustedOutput: true
          secretArguments: null
  tenants:
    - {name: a, gpuQuota: {gpus: null, migInstances: {"1g.18gb": 2}, powerWatts: 300.5,
       enforcement: kill, gracePeriodSeconds: 0, allocatedDevicesOnly: true}}
    - {name: b, namespaces: null}
  agents:
    - id: bot
      identities: [{issuer: "https://issuer.example", subject: bot}]
  budgets:
    rateLimits: [{id: r, rate: 0.5, burst: 1, per: tool, match: null}]
    spendCaps: [{id: s, limit: 0, windowSeconds: 60, match: {tenants: ["*"]}}]
    mutationsPerSession: null
    mutationsPerAgent: {limit: 3, windowSeconds: 1.5}
  rules:
    - {id: slow, decision: throttle, retryAfterSeconds: 0, match: null, when: "true"}
    - {id: ask, decision: require_approval, approvers: 10, match: {labels: {env: "p*"}}}
  tests:
    - name: mig
      gpu: {tenant: a, migInstances: {"1g.18gb": 3}, powerWatts: 1}
      expect: {violations: ["migInstances/1g.18gb"]}
    - name: slow
      call: {agent: bot, server: kube, tool: t, arguments: {n: [1, {x: null}]}, labels: null}
      expect: {decision: throttle, rule: slow, reasonContains: ""}
      repeat: 2
      everySeconds: 0.5
"""


def edge() -> tuple[str, dict[str, Any]]:
    """A valid bundle using the corners of the format: nulls, every enum, bounds."""
    doc = load_yaml(EDGE, "edge.yaml")[0][0]
    assert isinstance(doc, dict)
    return "tests/crd/corpus.py:EDGE", doc
