"""Warnings about bundles that are valid but probably not what the author meant.

Today one check: a rule that can never decide because an earlier rule without
``when`` or ``labels`` matches every call it matches (first match wins). The
check is sound, never a false alarm: it only reports when every field of the
later rule is covered by the earlier one, pattern by pattern, with globs
compared literally (``*`` covers everything).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from palisade.bundle.codes import Code
from palisade.bundle.globs import is_glob
from palisade.bundle.schema import Bundle, Match


@dataclass(frozen=True, slots=True)
class LintWarning:
    field: str
    message: str
    code: str = Code.SHADOWED_RULE

    def __str__(self) -> str:
        return f"{self.field}: warning: {self.message} [{self.code}]"

    def as_dict(self) -> dict[str, str]:
        return {"code": str(self.code), "field": self.field, "message": self.message}


def _covers(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    """Every value ``inner`` can match is matched by ``outer``."""
    if not outer or "*" in outer:
        return True
    if not inner:
        return False
    for pat in inner:
        if is_glob(pat):
            if pat not in outer:
                return False
        elif not any(fnmatchcase(pat, o) for o in outer):
            return False
    return True


def _match_covers(outer: Match, inner: Match) -> bool:
    if outer.labels:
        return False
    if outer.risk and (not inner.risk or not set(inner.risk) <= set(outer.risk)):
        return False
    return (
        _covers(outer.servers, inner.servers)
        and _covers(outer.tools, inner.tools)
        and _covers(outer.agents, inner.agents)
        and _covers(outer.tenants, inner.tenants)
    )


def shadowed_rules(bundle: Bundle) -> list[LintWarning]:
    """Rules that an earlier, unconditional rule always beats."""
    out: list[LintWarning] = []
    unconditional = [
        (i, r) for i, r in enumerate(bundle.rules) if not r.when and not r.match.labels
    ]
    for j, rule in enumerate(bundle.rules):
        for i, earlier in unconditional:
            if i >= j:
                break
            if _match_covers(earlier.match, rule.match):
                out.append(
                    LintWarning(
                        f"spec.rules[{j}]",
                        f"rule {rule.id!r} can never decide: rule {earlier.id!r}"
                        f" (spec.rules[{i}]) matches every call it matches and comes first",
                    )
                )
                break
    return out


def lint_warnings(bundle: Bundle) -> list[LintWarning]:
    return shadowed_rules(bundle)
