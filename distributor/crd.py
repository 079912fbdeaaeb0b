"""CRD mode: status written back onto each PolicyBundle resource.

``status`` carries ``observedGeneration`` (the ``metadata.generation`` read),
``validGeneration`` (the last generation that was valid), ``revision``,
``digest``, ``subscribers`` (live clients running that revision), ``fleet``
(live clients), ``rollout`` ("12/12") and two conditions in the Kubernetes
convention (``type``, ``status``, ``reason``, ``message``,
``lastTransitionTime``, ``observedGeneration``; the time moves only when
``status`` does):

- ``Valid``: False with the errors of *that* resource, each with field and
  line, when it does not validate. The resource is then set aside and the
  others keep flowing (``distributor.compiler.isolate``): reason
  ``ServingLastValid`` when its last valid spec is still served,
  ``LeftOut`` when it never was valid, ``Invalid`` when the whole fleet is held
  on the previous revision (a bundle that was valid cannot be served without
  it); True with reason ``OtherBundleInvalid`` when it is valid but another
  holds the fleet.
- ``Ready``: whether every live client runs the revision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distributor.compiler import SourceError
from distributor.fleet import LIVE, fleet_view
from distributor.sources import CrdSource, generation_of

if TYPE_CHECKING:
    from distributor.server import Distributor

log = logging.getLogger(__name__)

#: A condition message is at most this long (metav1.Condition allows 32768).
MAX_MESSAGE = 32_000


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True, slots=True)
class BundleState:
    """What the distributor knows about one resource."""

    generation: int = 0
    #: The last generation that was valid (0: none known).
    valid_generation: int = 0
    #: The resource's own errors when it was set aside.
    own_errors: tuple[SourceError, ...] = ()
    #: Set aside and served from its last valid spec.
    substituted: bool = False
    #: Set aside and left out (never valid).
    left_out: bool = False
    #: The errors of a compile that failed as a whole (the fleet is held), all sources.
    held_errors: Sequence[SourceError] = field(default_factory=tuple)


def _listing(errors: Sequence[SourceError]) -> str:
    text = "; ".join(
        f"{e.field or '-'} (line {e.line}): {e.message}" + (f" [{e.code}]" if e.code else "")
        for e in errors
    )
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _valid(name: str, s: BundleState, revision: int) -> dict[str, str]:
    mine_held = [e for e in s.held_errors if e.source == name]
    if s.own_errors and s.substituted:
        reason, tail = (
            "ServingLastValid",
            f"; set aside: the fleet keeps this bundle's last valid spec"
            f" (generation {s.valid_generation}), the other bundles keep flowing",
        )
        errors: Sequence[SourceError] = s.own_errors
    elif s.own_errors:
        reason, tail = (
            "LeftOut",
            "; set aside: this bundle was never valid and is left out until fixed,"
            " the other bundles keep flowing",
        )
        errors = s.own_errors
    elif mine_held:
        reason, tail = (
            "Invalid",
            f"; the fleet stays on revision {revision} until this is fixed"
            " (a bundle that took effect cannot be set aside without its last valid spec)",
        )
        errors = mine_held
    elif s.held_errors:
        return {
            "type": "Valid",
            "status": "True",
            "reason": "OtherBundleInvalid",
            "message": f"this bundle is valid; {len(s.held_errors)} error(s) in other bundles"
            " hold the fleet on the previous revision",
        }
    else:
        return {"type": "Valid", "status": "True", "reason": "Compiled", "message": ""}
    message = _listing(errors)
    return {"type": "Valid", "status": "False", "reason": reason, "message": message + tail}


def status_for(
    name: str, state: BundleState, revision: int, digest: str, running: int, total: int
) -> dict[str, Any]:
    """The status of one resource (pure; lastTransitionTime is added when written)."""
    ready = running == total and total > 0
    conditions = [
        _valid(name, state, revision),
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "RolledOut" if ready else "RollingOut",
            "message": f"{running} of {total} live clients run revision {revision}",
        },
    ]
    status: dict[str, Any] = {
        "observedGeneration": state.generation,
        "revision": revision,
        "digest": digest,
        "subscribers": running,
        "fleet": total,
        "rollout": f"{running}/{total}",
        "conditions": [{**c, "observedGeneration": state.generation} for c in conditions],
    }
    if state.valid_generation:
        status["validGeneration"] = state.valid_generation
    return status


def state_of(source: CrdSource, name: str, held_errors: Sequence[SourceError]) -> BundleState:
    """Read one resource's state off the source (after its last snapshot)."""
    obj = source.objects.get(name) or {}
    recorded = generation_of(obj.get("status") or {}, "validGeneration")
    return BundleState(
        generation=generation_of(obj.get("metadata") or {}, "generation"),
        valid_generation=source.valid_generation.get(name, recorded),
        own_errors=source.rejected.get(name, ()),
        substituted=name in source.substituted,
        left_out=name in source.left_out,
        held_errors=tuple(held_errors),
    )


class CrdStatusReporter:
    def __init__(self, source: CrdSource) -> None:
        self.source = source
        self.errors: list[SourceError] = []
        self.dist: Distributor | None = None

    async def write(self, errors: list[SourceError], revision: int, digest: str) -> None:
        self.errors = list(errors)
        await self.refresh(revision, digest)

    async def refresh(self, revision: int, digest: str) -> None:
        running, total = 0, 0
        if self.dist is not None:
            rows = await self.dist.store.call(self.dist.store.store.clients)
            live = [
                r
                for r in fleet_view(
                    rows,
                    now=self.dist.clock(),
                    grace_s=self.dist.settings.heartbeat_grace_s,
                    gone_after_s=self.dist.settings.gone_after_s,
                )
                if r["state"] == LIVE and r["connected"]
            ]
            total = len(live)
            running = sum(1 for r in live if r["revision"] == revision)
        for name in list(self.source.objects):
            state = state_of(self.source, name, self.errors)
            status = status_for(name, state, revision, digest, running, total)
            try:
                await self.source.write_status(name, status, now=_now)
            except Exception as exc:
                log.warning(
                    "cannot write PolicyBundle status", extra={"bundle": name, "error": str(exc)}
                )

    async def run(self, interval_s: float = 2.0) -> None:
        """Keep rollout progress in status current."""
        while True:
            await asyncio.sleep(interval_s)
            if self.dist is None:
                continue
            cur = self.dist.hub.current
            try:
                await self.refresh(cur.revision if cur else 0, cur.digest if cur else "")
            except Exception:
                log.exception("rollout status refresh failed")
