"""The fleet API over HTTP/JSON (aiohttp): fleet, bundles, rollback, approvals, audit.

Routes (all JSON; a bearer token is required when the replica has one):

- ``GET  /healthz``, ``GET /readyz``, ``GET /metrics`` (Prometheus text; no token: it
  counts the fleet and names no client)
- ``GET  /v1/fleet?kind=sidecar|node&all=1``: clients with live/stale/gone state
- ``GET  /v1/bundles``: history with rollout counts, the last source error and the last
  replay gate result
- ``POST /v1/bundles/rollback`` ``{"to": N, "by": "..."}``: re-publish N as a new revision
- ``GET  /v1/approvals?status=pending``: the admin token, or a person's token allowed to
  ``list`` approvals
- ``POST /v1/approvals/{id}`` ``{"decision": "approve"|"deny", "comment": "..."}``: the
  person's own token (distributor/approvers.py), never the admin token; ``by`` is
  read only by a replica in ``--insecure-approvers`` mode
- ``GET  /v1/audit?agent=&tool=&decision=&source=&since=&until=&limit=&newest=1``
  (``newest``: the last ``limit`` matching records rather than the first)
- ``GET  /v1/audit/keys?source=``: audit keys registered per source (kept forever)
- ``GET  /v1/audit/chains``: the verified chains stored (source, chain, seqs)
- ``GET  /v1/audit/chain?source=&chain=&after=&limit=``: one chain's records as the
  writer wrote them (for ``palisade audit verify --distributor``)
- ``GET  /v1/audit/intake``: records stored, already stored, refused by reason

Domain errors (``StoreError``) become 404/409 here and nowhere else; a
malformed body is a 400 with the reason.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from distributor.approvers import Approver, ApproverError
from distributor.fleet import fleet_view, rollout
from distributor.metrics import fleet_gauges
from distributor.store import AuditRow, StoreError
from palisade.audit.proto import from_proto
from palisade.v1 import audit_pb2

if TYPE_CHECKING:
    from distributor.server import Distributor

log = logging.getLogger(__name__)
#: The fleet gauges of /metrics are read from the store at most this often (seconds).
FLEET_READ_EVERY_S = 1.0

DIST_KEY = web.AppKey("distributor", object)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dist(request: web.Request) -> Distributor:
    return request.app[DIST_KEY]  # type: ignore[return-value]


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _is_admin_token(request: web.Request) -> bool:
    token = _dist(request).settings.admin_token
    return bool(token) and hmac.compare_digest(_bearer(request).encode(), token.encode())


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    dist = _dist(request)
    token = dist.settings.admin_token
    request["admin"] = not token or _is_admin_token(request)
    if token and request.path.startswith("/v1/") and not request["admin"]:
        # The approval routes take a person's own token instead (unless in dev mode).
        person = request.path.startswith("/v1/approvals") and not dist.approvers.admin_token_gates
        if not person:
            return web.json_response({"error": "unauthorized"}, status=401)
    return await handler(request)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body is not JSON: {exc}"}), content_type="application/json"
        ) from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return body


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    dist = _dist(request)
    cur = dist.hub.current
    body = {"ready": dist.ready.is_set(), "revision": cur.revision if cur else 0}
    return web.json_response(body, status=200 if dist.ready.is_set() else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: this replica's tallies and the fleet now (distributor/metrics.py)."""
    dist = _dist(request)
    m = dist.hub.metrics
    async with m.fleet_lock:  # the store is read at most once a second, however many scrape
        if time.monotonic() - m.fleet_read_at >= FLEET_READ_EVERY_S:
            store = dist.store.store
            rows = await dist.store.call(store.clients)
            pending = await dist.store.call(store.approvals, "pending")
            cur = dist.hub.current
            m.fleet = fleet_gauges(
                rows,
                pending,
                now=dist.clock(),
                revision=cur.revision if cur else 0,
                grace_s=dist.settings.heartbeat_grace_s,
                gone_after_s=dist.settings.gone_after_s,
            )
            m.fleet_read_at = time.monotonic()
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def fleet(request: web.Request) -> web.Response:
    dist = _dist(request)
    rows = await dist.store.call(dist.store.store.clients)
    view = fleet_view(
        rows,
        now=dist.clock(),
        grace_s=dist.settings.heartbeat_grace_s,
        gone_after_s=dist.settings.gone_after_s,
        kind=request.query.get("kind", ""),
        include_gone=request.query.get("all", "") in ("1", "true"),
    )
    return web.json_response({"clients": view})


async def bundles(request: web.Request) -> web.Response:
    dist = _dist(request)
    store = dist.store.store
    history = await dist.store.call(store.history, int(request.query.get("limit", "50")))
    rows = await dist.store.call(store.clients)
    clients = fleet_view(
        rows,
        now=dist.clock(),
        grace_s=dist.settings.heartbeat_grace_s,
        gone_after_s=dist.settings.gone_after_s,
    )
    last_error_raw = await dist.store.call(store.get_meta, "last_error")
    last_error = json.loads(last_error_raw) if last_error_raw else None
    last_replay_raw = await dist.store.call(store.get_meta, "last_replay")
    return web.json_response(
        {
            "bundles": rollout([r.summary() for r in history], clients),
            "last_error": last_error,
            "replay": json.loads(last_replay_raw) if last_replay_raw else None,
        }
    )


async def rollback(request: web.Request) -> web.Response:
    dist = _dist(request)
    body = await _body(request)
    to = body.get("to")
    if not isinstance(to, int) or isinstance(to, bool) or to < 1:
        return _error(400, "'to' must be a positive revision number")
    by = str(body.get("by") or "unknown")
    try:
        rev, new = await dist.store.call(dist.store.store.rollback, to, by)
    except StoreError as exc:
        return _error(404 if "no revision" in str(exc) else 409, str(exc))
    dist.hub.set_current(rev)
    await _audit_admin(dist, "rollback", by, {"to": to, "revision": rev.revision})
    log.info("rollback", extra={"to": to, "revision": rev.revision, "by": by})
    return web.json_response({"revision": rev.summary(), "new": new})


async def approvals(request: web.Request) -> web.Response:
    dist = _dist(request)
    if not request["admin"]:
        try:
            person = await _person(request, "")
            await dist.approvers.authorize(person, "list", "")
        except ApproverError as exc:
            return _error(exc.status, str(exc))
    rows = await dist.store.call(dist.store.store.approvals, request.query.get("status"))
    return web.json_response({"approvals": rows})


async def _person(request: web.Request, claimed: str) -> Approver:
    """Who sent the request, from their own bearer token (never the admin token)."""
    dist = _dist(request)
    if not dist.approvers.admin_token_gates and _is_admin_token(request):
        raise ApproverError(
            "the shared admin token cannot answer approvals: send your own Kubernetes token", 401
        )
    return await dist.approvers.authenticate(_bearer(request), claimed)


async def _namespace_of(dist: Distributor, row: dict[str, Any]) -> str:
    """The namespace of the pod that asked (its live stream's, else its fleet row's)."""
    sub = dist.hub.subscribers.get(row["client_id"])
    if sub is not None:
        return str(sub.identity.namespace or "")
    return str(row.get("namespace") or "")


async def decide(request: web.Request) -> web.Response:
    dist = _dist(request)
    body = await _body(request)
    decision = body.get("decision")
    if decision not in ("approve", "deny"):
        return _error(400, "'decision' must be approve or deny")
    comment = str(body.get("comment") or "")
    approval_id = request.match_info["id"]
    store = dist.store.store
    try:
        person = await _person(request, str(body.get("by") or ""))
        found = await dist.store.call(store.approval, approval_id)
        if found is None:
            return _error(404, f"no approval {approval_id!r}")
        namespace = await _namespace_of(dist, found)
        await dist.approvers.authorize(person, str(decision), namespace, approval_id)
    except ApproverError as exc:
        log.info(
            "approval answer refused",
            extra={"approval": approval_id, "status": exc.status, "error": str(exc)},
        )
        return _error(exc.status, str(exc))
    try:
        row = await dist.store.call(
            store.decide_approval,
            approval_id,
            decision == "approve",
            person.record(),
            comment,
            dist.settings.approval_window_s,
        )
    except StoreError as exc:
        status = 404 if "no approval" in str(exc) else 409
        return _error(status, str(exc))
    await _audit_admin(
        dist,
        "approval",
        person.username,
        {
            "approval_id": approval_id,
            "decision": row["status"],
            "vote": decision,
            "comment": comment,
            "approver": person.record(),
            # every person who has approved so far, as the cluster named them
            "approvers": [
                {k: v[k] for k in ("username", "uid", "groups", "authenticated")}
                for v in row["votes"]
                if v["approve"]
            ],
            "required": row["required"],
            "namespace": namespace,
            "agent": row["agent"],
            "tool": row["tool"],
            "call_digest": row["call_digest"],
        },
        agent=row["agent"] or "",
        tool=row["tool"] or "",
        server=row["server"] or "",
    )
    log.info(
        "approval answered",
        extra={
            "approval": approval_id,
            "by": person.username,
            "vote": decision,
            "status": row["status"],
            "approvers": row["approvers"],
            "required": row["required"],
        },
    )
    if row["status"] != "pending":
        await dist.hub.deliver_approvals()
    return web.json_response({"approval": row})


async def _audit_admin(
    dist: Distributor,
    kind: str,
    by: str,
    details: dict[str, Any],
    *,
    agent: str = "",
    tool: str = "",
    server: str = "",
) -> None:
    """Administrative acts (approvals, rollbacks) are audit records too."""
    now = dist.clock()
    doc = {
        "kind": kind,
        "by": by,
        "time": now,
        "source": f"distributor/{dist.hub.replica}",
        "agent": agent,
        "tool": tool,
        "server": server,
        "details": details,
        "decision": details.get("decision", ""),
    }
    seq = int(now * 1e6)
    row = AuditRow(
        source=doc["source"],
        seq=seq,
        hash="",
        time=now,
        kind=kind,
        agent=agent,
        tenant="",
        server=server,
        tool=tool,
        decision=str(doc["decision"]),
        rule_id="",
        record=b"",
        json=json.dumps(doc, sort_keys=True),
    )
    new = await dist.store.call(dist.store.store.add_audit, [row])
    if dist.hub.forwarder is not None:
        await dist.hub.forwarder.forward(new)


async def audit(request: web.Request) -> web.Response:
    dist = _dist(request)
    q = request.query
    try:
        rows = await dist.store.call(
            dist.store.store.query_audit,
            agent=q.get("agent", ""),
            tool=q.get("tool", ""),
            decision=q.get("decision", ""),
            source=q.get("source", ""),
            kind=q.get("kind", ""),
            since=float(q.get("since", "0") or 0),
            until=float(q.get("until", "0") or 0),
            limit=min(int(q.get("limit", "1000")), 100_000),
            newest=q.get("newest", "") in ("1", "true"),
        )
    except ValueError as exc:
        return _error(400, f"bad query: {exc}")
    return web.json_response({"records": rows, "count": len(rows)})


async def audit_keys(request: web.Request) -> web.Response:
    dist = _dist(request)
    rows = await dist.store.call(dist.store.store.audit_keys, request.query.get("source", ""))
    return web.json_response({"keys": rows})


async def audit_chains(request: web.Request) -> web.Response:
    dist = _dist(request)
    return web.json_response({"chains": await dist.store.call(dist.store.store.audit_chains)})


async def audit_chain(request: web.Request) -> web.Response:
    dist = _dist(request)
    q = request.query
    source = q.get("source", "")
    if not source:
        return _error(400, "'source' is required")
    try:
        chain = int(q.get("chain", "1"))
        after = int(q.get("after", "0"))
        limit = max(1, min(int(q.get("limit", "1000")), 10_000))
    except ValueError as exc:
        return _error(400, f"bad query: {exc}")
    blobs = await dist.store.call(dist.store.store.audit_chain, source, chain, after, limit)
    records = [from_proto(audit_pb2.AuditRecord.FromString(b)) for b in blobs]
    return web.json_response({"source": source, "chain": chain, "records": records})


async def audit_intake(request: web.Request) -> web.Response:
    hub = _dist(request).hub
    return web.json_response(
        {
            "stored": hub.audit_stored,
            "already_stored": hub.audit_already_stored,
            "refused": dict(hub.audit_refused),
        }
    )


def make_app(dist: Distributor) -> web.Application:
    app = web.Application(middlewares=[_auth], client_max_size=1 << 20)
    app[DIST_KEY] = dist
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/fleet", fleet)
    app.router.add_get("/v1/bundles", bundles)
    app.router.add_post("/v1/bundles/rollback", rollback)
    app.router.add_get("/v1/approvals", approvals)
    app.router.add_post("/v1/approvals/{id}", decide)
    app.router.add_get("/v1/audit", audit)
    app.router.add_get("/v1/audit/keys", audit_keys)
    app.router.add_get("/v1/audit/chains", audit_chains)
    app.router.add_get("/v1/audit/chain", audit_chain)
    app.router.add_get("/v1/audit/intake", audit_intake)
    return app
