"""Fleet views: who is live, stale or gone, and how far each revision has rolled out.

Pure functions over rows from the store and a ``now``; liveness is judged the
way node leases are: a client whose last heartbeat is older than the grace
period is *stale*, and older than ``gone_after`` is *gone*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

LIVE = "live"
STALE = "stale"
GONE = "gone"

KIND_NAMES = {"sidecar": "CLIENT_KIND_SIDECAR", "node": "CLIENT_KIND_NODE_AGENT"}


def liveness(last_seen: float, now: float, grace_s: float, gone_after_s: float) -> str:
    age = now - last_seen
    if age > gone_after_s:
        return GONE
    if age > grace_s:
        return STALE
    return LIVE


def fleet_view(
    rows: Iterable[Mapping[str, Any]],
    *,
    now: float,
    grace_s: float,
    gone_after_s: float,
    kind: str = "",
    include_gone: bool = False,
) -> list[dict[str, Any]]:
    """Client rows with ``state`` and ``age_s`` added, filtered by kind ("sidecar"/"node")."""
    want = KIND_NAMES.get(kind, kind)
    out = []
    for row in rows:
        if want and row["kind"] != want:
            continue
        state = liveness(row["last_seen"], now, grace_s, gone_after_s)
        if state == GONE and not include_gone:
            continue
        out.append({**row, "state": state, "age_s": round(now - row["last_seen"], 3)})
    return out


def rollout(
    revisions: Iterable[Mapping[str, Any]], clients: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Per revision: how many non-gone clients run it and how many NACKed it."""
    clients = [c for c in clients if c.get("state") != GONE]
    total = len(clients)
    out = []
    for rev in revisions:
        n = rev["revision"]
        running = sum(1 for c in clients if c["revision"] == n)
        nacked = sum(1 for c in clients if c["nack_revision"] == n and c["revision"] != n)
        out.append({**rev, "subscribers": running, "nacked": nacked, "fleet": total})
    return out
