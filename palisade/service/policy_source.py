"""Loading a bundle file into an engine for the check server; failures fail closed.

:func:`load_policy` returns a :class:`LoadedPolicy` (the engine and the
registry's secret argument names) or raises :class:`PolicyLoadError` with a
message that says what is wrong; the caller keeps the last good engine, or
none (every call denied, rule ``no-bundle``, with that message as reason).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from palisade.bundle.errors import BundleError
from palisade.bundle.load import load_file
from palisade.bundle.schema import Bundle
from palisade.policy.engine import compile_bundle
from palisade.policy.types import DecisionEngine


class PolicyLoadError(RuntimeError):
    """The bundle cannot be loaded or compiled; ``str()`` says why."""


@dataclass(frozen=True)
class LoadedPolicy:
    engine: DecisionEngine
    name: str
    #: (server, tool) -> secret argument names from the registry
    secrets: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def secret_names(self, server: str, tool: str) -> Iterable[str]:
        return self.secrets.get((server, tool), ())


def secret_table(bundle: Bundle) -> dict[tuple[str, str], tuple[str, ...]]:
    return {
        (s.name, t.name): t.secret_arguments
        for s in bundle.servers
        for t in s.tools
        if t.secret_arguments
    }


def load_policy(path: Path | str, *, revision: int = 1) -> LoadedPolicy:
    """Load and compile the bundle at ``path`` (a file or a directory of files)."""
    try:
        bundle = load_file(path)
        engine = compile_bundle(bundle, revision=revision)
    except BundleError as exc:
        raise PolicyLoadError(f"bundle {path} is invalid: {exc}") from exc
    except Exception as exc:
        raise PolicyLoadError(f"bundle {path} cannot be compiled: {exc}") from exc
    return LoadedPolicy(engine=engine, name=bundle.name, secrets=secret_table(bundle))
