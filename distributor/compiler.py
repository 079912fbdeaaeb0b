"""Compile policy sources into one bundle document, and scope it per client.

Pure functions: text in, a document or located errors out. No clock, no files.

- ``compile_bundle`` parses, validates and merges the sources with the core's
  bundle loader (``palisade.bundle``), so an error names file, line and field
  (``payments.yaml:14: spec.rules[2].decision: ...``), and returns the
  canonical document and its digest. The same sources give the same digest on
  every replica: nothing time- or host-dependent goes in.
- ``isolate`` keeps one broken source from holding the others: it is set aside
  (its last valid text served instead, or left out if it never was valid) and
  the rest compile and flow; see its docstring for when the fleet is held.
- ``scope_for`` cuts the document down to what one client needs: a sidecar
  gets its own server's registry entry, the rules that can match it, agents,
  tenants and budgets; a node agent gets the tenants and their GPU quotas.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
    #: the lint code (palisade/bundle/codes.py); empty for problems that are not a bundle's
    code: str = ""

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        text = (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )
        return f"{text} [{self.code}]" if self.code else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "code": self.code,
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
    return [
        SourceError(i.position.source, i.position.line, i.field, i.message, str(i.code))
        for i in issues
    ]


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


# -- isolation: one broken source does not hold the others ------------------------


@dataclass(frozen=True, slots=True)
class Isolated:
    """What to compile, and what was set aside."""

    #: The sources to compile: the valid ones as they are, a broken one's last valid text.
    sources: tuple[tuple[str, str], ...]
    #: Each source set aside, with its own errors.
    rejected: Mapping[str, tuple[SourceError, ...]] = field(default_factory=dict)
    #: Set aside and served from their last valid text.
    substituted: frozenset[str] = frozenset()
    #: Set aside and left out (never valid).
    left_out: frozenset[str] = frozenset()
    #: Isolation could not help: ``sources`` are the current ones, they do not compile,
    #: and nothing new may be published until they are fixed.
    held: bool = False


def isolate(current: Iterable[tuple[str, str]], last_valid: Mapping[str, str | None]) -> Isolated:
    """Set broken sources aside so that the others still compile (pure).

    ``last_valid`` maps a source name to the last text of it that compiled with the
    others, or to None when it is known to have been valid once but its text is not
    (a restarted distributor). A source whose errors are its own is replaced by its
    last valid text, or left out when it has none: a source that never was valid
    never took effect, so leaving it out loosens nothing. The fleet is *held* (the
    current sources returned as they are, ``held`` set) when setting aside cannot
    help without dropping policy that took effect: an error not located in one
    source, a source that was valid whose last valid text is unknown or fails too
    (another source it depends on changed), or nothing left to compile.
    """
    texts = dict(sorted(current))
    held = Isolated(tuple(texts.items()), held=True)
    try:
        compile_bundle(texts.items())
        return Isolated(tuple(texts.items()))
    except CompileError as exc:
        errors = exc.errors
    serving = dict(texts)
    rejected: dict[str, tuple[SourceError, ...]] = {}
    for _ in range(len(texts)):
        by_source: dict[str, list[SourceError]] = {}
        for e in errors:
            by_source.setdefault(e.source, []).append(e)
        for name, errs in by_source.items():
            if name not in texts or name in rejected:
                return held  # not located in one source, or a last valid text fails too
            rejected[name] = tuple(errs)
            if name not in last_valid:
                serving.pop(name)
                continue
            prior = last_valid[name]
            if prior is None or prior == texts[name]:
                return held  # it was valid, and no valid text of it can be served
            serving[name] = prior
        if not serving:
            return held
        try:
            compile_bundle(serving.items())
        except CompileError as exc:
            errors = exc.errors
            continue
        return Isolated(
            tuple(sorted(serving.items())),
            rejected,
            substituted=frozenset(n for n in rejected if n in serving),
            left_out=frozenset(n for n in rejected if n not in serving),
        )
    return held


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
