"""Loading a bundle file into the fail-closed guard for the check server.

:func:`load_policy` reads and validates a bundle and activates it in a
:class:`~palisade.policy.guard.Guard` (which compiles it, swaps engines
atomically, keeps budgets across reloads, and turns engine errors and slow
decisions into the bundle's ``failureMode``). It raises
:class:`PolicyLoadError` with a message that says what is wrong; the guard
passed in then keeps its last good engine, and a caller with none denies
every call (rule ``no-bundle``, that message as the reason).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from palisade.bundle.errors import BundleError
from palisade.bundle.load import load_file
from palisade.bundle.schema import Bundle
from palisade.policy.guard import Guard


class PolicyLoadError(RuntimeError):
    """The bundle cannot be loaded or compiled; ``str()`` says why."""


@dataclass(frozen=True)
class LoadedPolicy:
    engine: Guard
    name: str
    revision: int
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


def load_policy(path: Path | str, *, revision: int = 1, guard: Guard | None = None) -> LoadedPolicy:
    """Load the bundle at ``path`` (a file or a directory) and activate it in ``guard``
    (a new one when None). On error ``guard`` is left as it was."""
    guard = guard if guard is not None else Guard()
    try:
        bundle = load_file(path)
        guard.load(bundle, revision=revision)
    except BundleError as exc:
        raise PolicyLoadError(f"bundle {path} is invalid: {exc}") from exc
    except Exception as exc:
        raise PolicyLoadError(f"bundle {path} cannot be compiled: {exc}") from exc
    return LoadedPolicy(guard, bundle.name, revision, secret_table(bundle))
