"""Reading bundles from a file, a directory of files, or bytes.

Several documents (``---`` in one file, or several files in a directory, read
in name order) merge into one bundle: their ``spec`` lists are concatenated in
order (so rule order stays the order a reader sees), and scalar settings must
agree. Field paths in errors refer to the merged document, positions to the
file and line where the value was written.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

from palisade.bundle.codes import Code
from palisade.bundle.errors import BundleValidationError, Issue, Position
from palisade.bundle.schema import Bundle
from palisade.bundle.validate import build_bundle
from palisade.bundle.yamlpos import Path, Positions, load_yaml, path_str

BUNDLE_SUFFIXES = (".yaml", ".yml", ".json")
_LIST_SECTIONS = ("servers", "tenants", "agents", "rules", "tests")
_BUDGET_LISTS = ("rateLimits", "spendCaps")


def _shift(marks: dict[Path, Position], src: Positions, prefix: Path, offset: int) -> None:
    """Copy ``src``'s marks under ``prefix`` with the list index moved by ``offset``."""
    n = len(prefix)
    for path, pos in src.marks.items():
        if path[:n] == prefix and len(path) > n:
            index = path[n]
            if isinstance(index, int):
                marks[(*prefix, index + offset, *path[n + 1 :])] = pos


def merge_documents(docs: list[tuple[Any, Positions]], source: str) -> tuple[Any, Positions]:
    """Merge several bundle documents into one (see the module docstring)."""
    if len(docs) == 1:
        return docs[0]
    if not docs:
        raise BundleValidationError(
            [Issue(Position(source), "", "no bundle document found", Code.NO_DOCUMENT)]
        )
    issues: list[Issue] = []
    first, first_pos = docs[0]
    if not all(isinstance(d, dict) for d, _ in docs):
        for d, pos in docs:
            if not isinstance(d, dict):
                issues.append(
                    Issue(pos.at(()), "", "each document must be a mapping", Code.WRONG_TYPE)
                )
        raise BundleValidationError(issues)
    merged: dict[str, Any] = {k: v for k, v in first.items() if k != "spec"}
    marks: dict[Path, Position] = {p: m for p, m in first_pos.marks.items() if p[:1] != ("spec",)}
    spec: dict[str, Any] = {}
    budgets: dict[str, Any] = {}
    for doc, pos in docs:
        for key in ("apiVersion", "kind"):
            if key in doc and key in merged and doc[key] != merged[key]:
                issues.append(
                    Issue(
                        pos.at((key,)),
                        key,
                        f"{doc[key]!r} differs from {merged[key]!r}",
                        Code.CONFLICT,
                    )
                )
        raw_spec = doc.get("spec") or {}
        if not isinstance(raw_spec, dict):
            issues.append(Issue(pos.at(("spec",)), "spec", "must be a mapping", Code.WRONG_TYPE))
            continue
        for key, value in raw_spec.items():
            path: Path = ("spec", key)
            if key in _LIST_SECTIONS and isinstance(value, list):
                have = spec.setdefault(key, [])
                _shift(marks, pos, path, len(have))
                marks.setdefault(path, pos.at(path))
                have.extend(value)
            elif key == "budgets" and isinstance(value, dict):
                marks.setdefault(path, pos.at(path))
                for bkey, bval in value.items():
                    bpath: Path = (*path, bkey)
                    if bkey in _BUDGET_LISTS and isinstance(bval, list):
                        have = budgets.setdefault(bkey, [])
                        _shift(marks, pos, bpath, len(have))
                        have.extend(bval)
                    elif bkey in budgets and budgets[bkey] != bval:
                        issues.append(
                            Issue(
                                pos.at(bpath),
                                path_str(bpath),
                                "conflicts with another file",
                                Code.CONFLICT,
                            )
                        )
                    else:
                        budgets[bkey] = bval
                        marks[bpath] = pos.at(bpath)
            elif key in spec and spec[key] != value:
                issues.append(
                    Issue(
                        pos.at(path),
                        path_str(path),
                        f"{value!r} conflicts with {spec[key]!r} set in another file",
                        Code.CONFLICT,
                    )
                )
            else:
                spec[key] = value
                marks[path] = pos.at(path)
    if issues:
        raise BundleValidationError(issues)
    if budgets:
        spec["budgets"] = budgets
    merged["spec"] = spec
    return merged, Positions(source, marks)


def load_bytes(data: bytes | str, source: str = "<bytes>") -> Bundle:
    """Parse and check a bundle given as YAML (or JSON) text."""
    docs = [(d, p) for d, p in load_yaml(data, source) if d is not None]
    doc, positions = merge_documents(docs, source)
    return build_bundle(doc, positions)


def _read(path: FsPath) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleValidationError(
            [Issue(Position(str(path)), "", f"cannot read: {exc}", Code.UNREADABLE)]
        ) from None


def load_file(path: str | FsPath) -> Bundle:
    """Load a bundle file, or every ``*.yaml``/``*.yml``/``*.json`` in a directory."""
    p = FsPath(path)
    if p.is_dir():
        return load_dir(p)
    return load_bytes(_read(p), str(p))


def load_dir(path: str | FsPath) -> Bundle:
    p = FsPath(path)
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in BUNDLE_SUFFIXES)
    docs: list[tuple[Any, Positions]] = []
    for f in files:
        docs.extend((d, pos) for d, pos in load_yaml(_read(f), str(f)) if d is not None)
    if not docs:
        raise BundleValidationError(
            [Issue(Position(str(p)), "", "no bundle files (*.yaml) here", Code.NO_DOCUMENT)]
        )
    doc, positions = merge_documents(docs, str(p))
    return build_bundle(doc, positions)


def load_files(paths: list[str | FsPath]) -> Bundle:
    """Several files given explicitly, merged in the given order."""
    docs: list[tuple[Any, Positions]] = []
    for f in paths:
        fp = FsPath(f)
        docs.extend((d, pos) for d, pos in load_yaml(_read(fp), str(fp)) if d is not None)
    doc, positions = merge_documents(docs, ",".join(str(f) for f in paths))
    return build_bundle(doc, positions)
