"""YAML to plain Python values, remembering where every value came from.

PyYAML's composer gives nodes with start marks; we walk them ourselves (instead
of ``yaml.safe_load``) so that every mapping key and value keeps its line and
column, and so a key written twice in one mapping is an error rather than a
silent overwrite. Only the safe YAML tags are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from palisade.bundle.codes import Code
from palisade.bundle.errors import BundleValidationError, Issue, Position

#: A field path from the document root: ("spec", "rules", 2, "match").
Path = tuple[str | int, ...]


def path_str(path: Path) -> str:
    """``("spec", "rules", 2, "id")`` -> ``spec.rules[2].id``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True, slots=True)
class Positions:
    """Where each path of a parsed document starts. Missing paths fall back to a parent."""

    source: str
    marks: Mapping[Path, Position]

    def at(self, path: Path) -> Position:
        p = path
        while True:
            mark = self.marks.get(p)
            if mark is not None:
                return mark
            if not p:
                return Position(self.source)
            p = p[:-1]


class _Loader(yaml.SafeLoader):
    """SafeLoader whose constructor we only use for scalars."""


def _scalar(loader: _Loader, node: yaml.ScalarNode) -> Any:
    return loader.construct_object(node, deep=True)


#: Most values one document may expand to; stops alias bombs ("billion laughs").
MAX_VALUES = 200_000


class _TooBig(Exception):
    pass


def _convert(
    loader: _Loader,
    node: yaml.Node,
    path: Path,
    marks: dict[Path, Position],
    issues: list[Issue],
    source: str,
) -> Any:
    if len(marks) > MAX_VALUES:
        raise _TooBig
    marks[path] = Position(source, node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        loader.flatten_mapping(node)
        # After flattening, the first entries come from `<<` merges; written keys may override.
        merged_count = len(node.value) - explicit
        merged_keys: set[str] = set()
        out: dict[str, Any] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            key = _scalar(loader, key_node) if isinstance(key_node, yaml.ScalarNode) else None
            key_pos = Position(source, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key, str):
                issues.append(
                    Issue(
                        key_pos,
                        path_str(path),
                        f"mapping keys must be strings, got {key!r}",
                        Code.WRONG_TYPE,
                    )
                )
                continue
            if index < merged_count:
                merged_keys.add(key)
            elif key in merged_keys:
                merged_keys.discard(key)
                del out[key]
            if key in out:
                first = marks.get((*path, key), Position(source))
                issues.append(
                    Issue(
                        key_pos,
                        path_str((*path, key)),
                        f"key {key!r} appears twice in one mapping (first at line {first.line});"
                        " remove one",
                        Code.DUPLICATE,
                    )
                )
                continue
            out[key] = _convert(loader, value_node, (*path, key), marks, issues, source)
            # Point errors about a field at its key, which is where people look.
            marks[(*path, key)] = key_pos
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(loader, item, (*path, i), marks, issues, source)
            for i, item in enumerate(node.value)
        ]
    return _scalar(loader, node)  # type: ignore[arg-type]


def load_yaml(text: str | bytes, source: str) -> list[tuple[Any, Positions]]:
    """Parse every YAML document in ``text``; raise with positions on syntax errors."""
    docs: list[tuple[Any, Positions]] = []
    issues: list[Issue] = []
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise BundleValidationError(
            [Issue(Position(source), "", f"YAML error: {exc}", Code.YAML)]
        ) from None
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            marks: dict[Path, Position] = {}
            value = _convert(loader, node, (), marks, issues, source)
            docs.append((value, Positions(source, marks)))
    except _TooBig:
        raise BundleValidationError(
            [
                Issue(
                    Position(source),
                    "",
                    f"document expands to more than {MAX_VALUES} values",
                    Code.TOO_LARGE,
                )
            ]
        ) from None
    except RecursionError:
        raise BundleValidationError(
            [Issue(Position(source), "", "nested too deeply", Code.TOO_LARGE)]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Position(source, mark.line + 1, mark.column + 1) if mark else Position(source)
        what = exc.problem or exc.context or "invalid YAML"
        raise BundleValidationError(
            [Issue(pos, "", f"YAML syntax error: {what}", Code.YAML)]
        ) from None
    except yaml.YAMLError as exc:
        raise BundleValidationError(
            [Issue(Position(source), "", f"YAML error: {exc}", Code.YAML)]
        ) from None
    finally:
        loader.dispose()
    if issues:
        raise BundleValidationError(issues)
    return docs
