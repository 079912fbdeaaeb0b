"""Compile policy sources into one bundle document, and scope it per client.

Pure functions: text in, a document or located errors out. No clock, no files.

- ``parse_sources`` reads YAML (one or more documents per source) keeping the
  line of every node, so an error names file, line and field
  (``policies/payments.yaml:14: spec.rules[2].decision: must be one of ...``).
- ``compile_bundle`` validates each PolicyBundle, merges them in name order
  (lists concatenated, scalars must agree, names unique across bundles) and
  returns a ``Compiled`` with the canonical digest. The same sources give the
  same digest on every replica: nothing time- or host-dependent goes in.
- ``scope_for`` cuts the document down to what one client needs: a sidecar
  gets its own server's registry entry, the rules that can match it, agents,
  tenants and budgets; a node agent gets the tenants and their GPU quotas.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from palisade.distribution.signing import canonical_json, digest_of

API_VERSION = "palisade.dev/v1alpha1"
KIND = "PolicyBundle"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SPEC_LISTS = ("servers", "tenants", "agents", "rules", "tests")
_SPEC_KEYS = {*_SPEC_LISTS, "defaultDecision", "failureMode", "budgets"}
_DECISIONS = ("allow", "deny", "require_approval", "throttle")
_RISKS = ("read", "write", "destructive", "admin")
_ENFORCEMENT = ("report", "evict", "kill")


@dataclass(frozen=True, slots=True)
class SourceError:
    """One problem, located: source name, 1-based line (0 if unknown), field path."""

    source: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "line": self.line,
            "field": self.field,
            "message": self.message,
        }


class CompileError(Exception):
    def __init__(self, errors: Sequence[SourceError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


@dataclass(frozen=True, slots=True)
class ParsedDoc:
    source: str
    value: Any
    lines: Mapping[str, int]
    """field path -> line of the node, e.g. ``spec.rules[0].decision`` -> 14."""


@dataclass(frozen=True, slots=True)
class Compiled:
    document: dict[str, Any]
    digest: str
    names: tuple[str, ...]


# -- parsing with positions ----------------------------------------------------
def _construct(node: yaml.Node, path: str, lines: dict[str, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(yaml.safe_load(yaml.serialize(key_node)))
            child = f"{path}.{key}" if path else key
            out[key] = _construct(value_node, child, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, f"{path}[{i}]", lines) for i, v in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def parse_sources(sources: Iterable[tuple[str, str]]) -> tuple[list[ParsedDoc], list[SourceError]]:
    """YAML text per source name -> documents with line maps; syntax errors located."""
    docs: list[ParsedDoc] = []
    errors: list[SourceError] = []
    for name, text in sources:
        try:
            nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line = mark.line + 1 if mark is not None else 0
            errors.append(SourceError(name, line, "", f"invalid YAML: {exc.problem}"))
            continue
        for node in nodes:
            if node is None:
                continue
            lines: dict[str, int] = {}
            try:
                value = _construct(node, "", lines)
            except yaml.YAMLError as exc:
                errors.append(SourceError(name, node.start_mark.line + 1, "", str(exc)))
                continue
            docs.append(ParsedDoc(name, value, lines))
    return docs, errors


# -- validation ----------------------------------------------------------------
class _Checker:
    def __init__(self, doc: ParsedDoc) -> None:
        self.doc = doc
        self.errors: list[SourceError] = []

    def err(self, path: str, message: str) -> None:
        line = self.doc.lines.get(path, 0)
        probe = path
        while not line and probe:
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
            line = self.doc.lines.get(probe, 0)
        self.errors.append(SourceError(self.doc.source, line, path, message))

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.err(path, "must be a mapping")
            return {}
        return value

    def items(self, value: Any, path: str) -> list[dict[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.err(path, "must be a list")
            return []
        out = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                out.append(item)
            else:
                self.err(f"{path}[{i}]", "must be a mapping")
        return out

    def string(self, obj: dict[str, Any], key: str, path: str, *, required: bool = True) -> str:
        value = obj.get(key)
        if value is None:
            if required:
                self.err(f"{path}.{key}", "is required")
            return ""
        if not isinstance(value, str) or (required and not value):
            self.err(f"{path}.{key}", "must be a non-empty string")
            return ""
        return value

    def enum(self, obj: dict[str, Any], key: str, path: str, allowed: Sequence[str]) -> None:
        value = obj.get(key)
        if value is not None and value not in allowed:
            self.err(f"{path}.{key}", f"must be one of {', '.join(allowed)}; got {value!r}")

    def str_list(self, obj: dict[str, Any], key: str, path: str) -> None:
        value = obj.get(key)
        if value is None:
            return
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.err(f"{path}.{key}", "must be a list of strings")

    def number(self, obj: dict[str, Any], key: str, path: str) -> None:
        value = obj.get(key)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            self.err(f"{path}.{key}", f"must be a non-negative number; got {value!r}")


def _check_cel(checker: _Checker, expr: Any, path: str) -> None:
    if not isinstance(expr, str) or not expr.strip():
        checker.err(path, "must be a non-empty CEL expression")
        return
    try:
        import cel

        cel.compile(expr)
    except Exception as exc:
        checker.err(path, f"CEL does not compile: {exc}")


def validate(doc: ParsedDoc) -> list[SourceError]:
    c = _Checker(doc)
    root = c.mapping(doc.value, "")
    if not root:
        return c.errors
    if root.get("apiVersion") != API_VERSION:
        c.err("apiVersion", f"must be {API_VERSION}; got {root.get('apiVersion')!r}")
    if root.get("kind") != KIND:
        c.err("kind", f"must be {KIND}; got {root.get('kind')!r}")
    meta = c.mapping(root.get("metadata"), "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        c.err("metadata.name", f"must be a DNS-1123 label; got {name!r}")
    spec = c.mapping(root.get("spec", {}), "spec")
    for key in spec:
        if key not in _SPEC_KEYS:
            c.err(f"spec.{key}", f"unknown field (known: {', '.join(sorted(_SPEC_KEYS))})")
    c.enum(spec, "defaultDecision", "spec", ("deny", "allow"))
    c.enum(spec, "failureMode", "spec", ("closed", "open"))
    for i, server in enumerate(c.items(spec.get("servers"), "spec.servers")):
        p = f"spec.servers[{i}]"
        c.string(server, "name", p)
        c.str_list(server, "versions", p)
        c.str_list(server, "images", p)
        for j, tool in enumerate(c.items(server.get("tools"), f"{p}.tools")):
            tp = f"{p}.tools[{j}]"
            c.string(tool, "name", tp)
            c.enum(tool, "risk", tp, _RISKS)
            c.number(tool, "cost", tp)
            c.str_list(tool, "secretArguments", tp)
    for i, tenant in enumerate(c.items(spec.get("tenants"), "spec.tenants")):
        p = f"spec.tenants[{i}]"
        c.string(tenant, "name", p)
        c.str_list(tenant, "namespaces", p)
        if "gpuQuota" in tenant:
            quota = c.mapping(tenant["gpuQuota"], f"{p}.gpuQuota")
            for key in ("gpus", "gpuMemoryBytes", "powerWatts", "gracePeriodSeconds"):
                c.number(quota, key, f"{p}.gpuQuota")
            c.enum(quota, "enforcement", f"{p}.gpuQuota", _ENFORCEMENT)
    for i, agent in enumerate(c.items(spec.get("agents"), "spec.agents")):
        p = f"spec.agents[{i}]"
        c.string(agent, "id", p)
        c.string(agent, "tenant", p, required=False)
        c.str_list(agent, "namespaces", p)
        c.str_list(agent, "scopes", p)
    for i, rule in enumerate(c.items(spec.get("rules"), "spec.rules")):
        p = f"spec.rules[{i}]"
        c.string(rule, "id", p)
        if "decision" not in rule:
            c.err(f"{p}.decision", "is required")
        c.enum(rule, "decision", p, _DECISIONS)
        match = c.mapping(rule.get("match", {}), f"{p}.match")
        for key in ("servers", "tools", "agents", "tenants"):
            c.str_list(match, key, f"{p}.match")
        if "risk" in match:
            risks = match["risk"]
            if not isinstance(risks, list) or any(r not in _RISKS for r in risks):
                c.err(f"{p}.match.risk", f"must be a list of {', '.join(_RISKS)}")
        if "when" in rule:
            _check_cel(c, rule["when"], f"{p}.when")
    if "budgets" in spec:
        c.mapping(spec["budgets"], "spec.budgets")
    c.items(spec.get("tests"), "spec.tests")
    return c.errors


# -- merge ---------------------------------------------------------------------
_UNIQUE = {"servers": "name", "tenants": "name", "agents": "id", "rules": "id", "tests": "name"}


def compile_bundle(sources: Iterable[tuple[str, str]]) -> Compiled:
    """Parse, validate and merge; raises ``CompileError`` listing every problem."""
    docs, errors = parse_sources(sources)
    for doc in docs:
        errors.extend(validate(doc))
    if errors:
        raise CompileError(errors)
    if not docs:
        raise CompileError([SourceError("<sources>", 0, "", "no PolicyBundle documents found")])
    by_name: dict[str, ParsedDoc] = {}
    for doc in docs:
        name = doc.value["metadata"]["name"]
        if name in by_name:
            errors.append(
                SourceError(
                    doc.source,
                    doc.lines.get("metadata.name", 0),
                    "metadata.name",
                    f"bundle {name!r} is also defined in {by_name[name].source}",
                )
            )
        by_name[name] = doc
    spec: dict[str, Any] = {}
    seen: dict[tuple[str, str], str] = {}
    scalar_from: dict[str, str] = {}
    for name in sorted(by_name):
        doc = by_name[name]
        src = doc.value.get("spec") or {}
        for key, value in src.items():
            if key in _SPEC_LISTS:
                for i, item in enumerate(value or []):
                    ident = str(item.get(_UNIQUE[key], ""))
                    prior = seen.get((key, ident))
                    if prior is not None:
                        path = f"spec.{key}[{i}].{_UNIQUE[key]}"
                        errors.append(
                            SourceError(
                                doc.source,
                                doc.lines.get(path, 0),
                                path,
                                f"{ident!r} is already defined by bundle {prior}",
                            )
                        )
                    seen[(key, ident)] = name
                spec.setdefault(key, []).extend(value or [])
            elif key == "budgets":
                merged = spec.setdefault("budgets", {})
                for bkey, bval in (value or {}).items():
                    if isinstance(bval, list):
                        merged.setdefault(bkey, []).extend(bval)
                    elif bkey in merged and merged[bkey] != bval:
                        errors.append(
                            SourceError(
                                doc.source,
                                doc.lines.get(f"spec.budgets.{bkey}", 0),
                                f"spec.budgets.{bkey}",
                                f"conflicts with {merged[bkey]!r} from {scalar_from[bkey]}",
                            )
                        )
                    else:
                        merged[bkey] = bval
                        scalar_from[bkey] = name
            elif key in spec and spec[key] != value:
                errors.append(
                    SourceError(
                        doc.source,
                        doc.lines.get(f"spec.{key}", 0),
                        f"spec.{key}",
                        f"{value!r} conflicts with {spec[key]!r} from bundle {scalar_from[key]}",
                    )
                )
            else:
                spec[key] = value
                scalar_from[key] = name
    if errors:
        raise CompileError(errors)
    names = tuple(sorted(by_name))
    document = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": names[0] if len(names) == 1 else "fleet"},
        "spec": spec,
    }
    return Compiled(document, digest_of(canonical_json(document)), names)


# -- scoping -------------------------------------------------------------------
SIDECAR = "sidecar"
NODE_AGENT = "node"
FULL = "full"


def scope_key(kind: str, server: str) -> str:
    if kind == SIDECAR:
        return f"{SIDECAR}:{server}"
    return kind if kind == NODE_AGENT else FULL


def _rule_can_match(rule: Mapping[str, Any], server: str) -> bool:
    globs = (rule.get("match") or {}).get("servers")
    return not globs or any(fnmatch.fnmatchcase(server, g) for g in globs)


def scope_for(document: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The part of ``document`` a client with scope ``key`` needs (a new dict)."""
    spec: Mapping[str, Any] = document.get("spec") or {}
    if key == FULL:
        return dict(document)
    if key == NODE_AGENT:
        tenants = [
            {k: t[k] for k in ("name", "namespaces", "gpuQuota") if k in t}
            for t in spec.get("tenants", [])
        ]
        scoped: dict[str, Any] = {"tenants": tenants}
    elif key.startswith(SIDECAR + ":"):
        server = key.split(":", 1)[1]
        scoped = {k: v for k, v in spec.items() if k not in ("servers", "rules", "tests")}
        scoped["servers"] = [s for s in spec.get("servers", []) if s.get("name") == server]
        scoped["rules"] = [r for r in spec.get("rules", []) if _rule_can_match(r, server)]
        scoped["tenants"] = [
            {k: v for k, v in t.items() if k != "gpuQuota"} for t in spec.get("tenants", [])
        ]
    else:
        raise ValueError(f"unknown scope {key!r}")
    return {**{k: v for k, v in document.items() if k != "spec"}, "spec": scoped}
