"""Compile policy sources into one bundle document, and scope it per client.

Pure functions: text in, a document or located errors out. No clock, no files.

- ``compile_bundle`` parses, validates and merges the sources with the core's
  bundle loader (``palisade.bundle``), so an error names file, line and field
  (``payments.yaml:14: spec.rules[2].decision: ...``), and returns the
  canonical document and its digest. The same sources give the same digest on
  every replica: nothing time- or host-dependent goes in.
- ``scope_for`` cuts the document down to what one client needs: a sidecar
  gets its own server's registry entry, the rules that can match it, agents,
  tenants and budgets; a node agent gets the tenants and their GPU quotas.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from palisade.bundle import BundleError, Issue, canonical_json, digest_of, to_document
from palisade.bundle.load import merge_documents
from palisade.bundle.validate import build_bundle
from palisade.bundle.yamlpos import Positions, load_yaml


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
class Compiled:
    document: dict[str, Any]
    digest: str
    names: tuple[str, ...]


# -- compile (parsing, validation and merge are palisade.bundle's) --------------
def _errors(issues: Sequence[Issue]) -> list[SourceError]:
    return [SourceError(i.position.source, i.position.line, i.field, i.message) for i in issues]


def compile_bundle(sources: Iterable[tuple[str, str]]) -> Compiled:
    """Parse, validate and merge with ``palisade.bundle``; raise ``CompileError`` listing all.

    Sources are merged in name order (what ``palisade bundle lint DIR`` does), and
    the document shipped is the bundle's canonical form, so what the distributor
    accepts is exactly what the clients' engine will accept.
    """
    docs: list[tuple[Any, Positions]] = []
    errors: list[SourceError] = []
    for name, text in sorted(sources):
        try:
            docs.extend((d, p) for d, p in load_yaml(text, name) if d is not None)
        except BundleError as exc:
            errors.extend(_errors(exc.issues))
    if errors:
        raise CompileError(errors)
    if not docs:
        raise CompileError([SourceError("<sources>", 0, "", "no PolicyBundle documents found")])
    try:
        doc, positions = merge_documents(docs, "<sources>")
        bundle = build_bundle(doc, positions)
    except BundleError as exc:
        raise CompileError(_errors(exc.issues)) from None
    document = to_document(bundle)
    names = sorted(
        {str((d.get("metadata") or {}).get("name", "")) for d, _ in docs if isinstance(d, dict)}
    )
    return Compiled(document, digest_of(canonical_json(document)), tuple(names))


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
        if isinstance(spec.get("budgets"), Mapping):
            budgets = dict(spec["budgets"])
            for key in ("rateLimits", "spendCaps"):
                if key in budgets:
                    budgets[key] = [b for b in budgets[key] if _rule_can_match(b, server)]
            scoped["budgets"] = budgets
        scoped["tenants"] = [
            {k: v for k, v in t.items() if k != "gpuQuota"} for t in spec.get("tenants", [])
        ]
    else:
        raise ValueError(f"unknown scope {key!r}")
    return {**{k: v for k, v in document.items() if k != "spec"}, "spec": scoped}
