"""CRD mode: status written back onto each PolicyBundle resource.

``status`` carries ``revision``, ``digest``, ``subscribers`` (live clients
running that revision), ``fleet`` (live clients), ``rollout`` ("12/12") and a
``Valid`` condition whose message lists the errors of *that* resource, each
with field and line; ``Ready`` says whether the fleet runs the revision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from distributor.compiler import SourceError
from distributor.fleet import LIVE, fleet_view
from distributor.sources import CrdSource

if TYPE_CHECKING:
    from distributor.server import Distributor

log = logging.getLogger(__name__)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def status_for(
    name: str, errors: list[SourceError], revision: int, digest: str, running: int, total: int
) -> dict[str, Any]:
    """The status of one resource (pure)."""
    mine = [e for e in errors if e.source == name]
    others = [e for e in errors if e.source != name]
    if mine:
        valid = {
            "type": "Valid",
            "status": "False",
            "reason": "Invalid",
            "message": "; ".join(f"{e.field or '-'} (line {e.line}): {e.message}" for e in mine),
        }
    elif others:
        valid = {
            "type": "Valid",
            "status": "True",
            "reason": "OtherBundleInvalid",
            "message": f"this bundle is valid; {len(others)} error(s) in other bundles hold the"
            " fleet on the previous revision",
        }
    else:
        valid = {"type": "Valid", "status": "True", "reason": "Compiled", "message": ""}
    ready = running == total and total > 0
    return {
        "revision": revision,
        "digest": digest,
        "subscribers": running,
        "fleet": total,
        "rollout": f"{running}/{total}",
        "conditions": [
            valid,
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "RolledOut" if ready else "RollingOut",
                "message": f"{running} of {total} live clients run revision {revision}",
            },
        ],
    }


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
            status = status_for(name, self.errors, revision, digest, running, total)
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
