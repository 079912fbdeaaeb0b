"""``palisade.v1.DistributionService`` over grpc.aio: the push hub.

One ``Hub`` per replica holds the current revision, a cache of signed,
serialized bundles per (revision, scope), and one ``Subscriber`` per open
stream. A new revision wakes every subscriber's writer; each sends the
pre-serialized bytes for its scope (serialized once per scope, not once per
client), or ``up_to_date`` when the client's Hello already named that revision
and digest. A replica never sends a revision older than the one a client holds,
so failing over to a replica that is a poll behind causes no flap.

ACKs, NACKs and heartbeats update the subscriber in memory; the server flushes
changed subscribers to the store in batches. Approval requests go to the store;
approval answers are delivered to the subscriber's stream by whichever replica
holds it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from distributor.compiler import FULL, NODE_AGENT, SIDECAR, scope_for, scope_key
from distributor.forward import JsonLinesForwarder
from distributor.metrics import KINDS, HubMetrics
from distributor.store import AsyncStore, AuditRow, Revision, StoreError
from distributor.subscriber_auth import Authenticator, AuthError, Peer, bearer
from palisade.audit import intake
from palisade.audit.keys import verify_registration
from palisade.audit.proto import from_proto
from palisade.bundle import canonical_json, sign_document
from palisade.distribution.approvals import sign_decision
from palisade.v1 import distribution_pb2, policy_pb2

log = logging.getLogger(__name__)

SERVICE = "palisade.v1.DistributionService"


@dataclass(eq=False, slots=True)
class Subscriber:
    """One open stream. Kept small: a fleet of thousands is held by one replica."""

    identity: distribution_pb2.ClientIdentity
    key: str
    connected_at: float
    last_seen: float
    client_revision: int = 0
    client_digest: str = ""
    sent_revision: int = 0
    revision: int = 0
    digest: str = ""
    nack_revision: int = 0
    nack_error: str = ""
    health: str = ""
    counters: dict[str, float] | None = None
    summary: dict[str, Any] | None = None
    connected: bool = True
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    outbox: collections.deque[bytes] | None = None
    #: When the last bundle was written to this client (0: none awaits its ACK).
    pushed_at: float = 0.0

    def row(self, replica: str) -> dict[str, Any]:
        i = self.identity
        return {
            "id": i.id,
            "kind": distribution_pb2.ClientKind.Name(i.kind),
            "node": i.node,
            "namespace": i.namespace,
            "pod": i.pod,
            "tenant": i.tenant,
            "server": i.server,
            "version": i.version,
            "replica": replica,
            "connected": int(self.connected),
            "revision": self.revision,
            "digest": self.digest,
            "nack_revision": self.nack_revision,
            "nack_error": self.nack_error,
            "health": self.health,
            "counters": self.counters,
            "summary": self.summary,
            "connected_at": self.connected_at,
            "last_seen": self.last_seen,
        }


MAX_FIELD = 253


def identity_problem(identity: distribution_pb2.ClientIdentity) -> str:
    """Why a Hello's identity is unacceptable ("" when it is fine)."""
    for name in ("id", "node", "namespace", "pod", "tenant", "server", "version"):
        value = getattr(identity, name)
        if len(value) > MAX_FIELD:
            return f"identity.{name} is longer than {MAX_FIELD} characters"
        if any(ord(ch) < 32 for ch in value):
            return f"identity.{name} contains control characters"
    return ""


def certificate_names(auth: Mapping[str, Iterable[bytes]]) -> set[str]:
    """Common name and subject alternative names of the peer's verified certificate."""
    names: set[str] = set()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth.get(key, ()):
            names.add(value.decode(errors="replace"))
    return names


def key_for(identity: distribution_pb2.ClientIdentity) -> str:
    if identity.kind == distribution_pb2.CLIENT_KIND_SIDECAR:
        return scope_key(SIDECAR, identity.server)
    if identity.kind == distribution_pb2.CLIENT_KIND_NODE_AGENT:
        return scope_key(NODE_AGENT, "")
    return scope_key(FULL, "")


class Hub:
    def __init__(
        self,
        replica: str,
        store: AsyncStore,
        keys: Iterable[Ed25519PrivateKey],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.replica = replica
        self.store = store
        self.keys = list(keys)
        self.clock = clock
        self.current: Revision | None = None
        self._document: dict[str, Any] = {}
        self._cache: dict[tuple[int, str], tuple[bytes, str]] = {}
        self.subscribers: dict[str, Subscriber] = {}
        self.dirty: set[str] = set()
        self._detached: dict[str, Subscriber] = {}
        self.pushes = 0
        self.forwarder: JsonLinesForwarder | None = None
        #: With mTLS: a client may only call itself what its certificate names.
        self.bind_identity = False
        #: Verifies each caller's bearer token; None only in the dev mode
        #: (``--insecure-subscribers``), where the Hello is believed.
        self.authenticator: Authenticator | None = None
        #: Audit intake since start: records stored, already stored, refused by reason.
        self.audit_stored = 0
        self.audit_already_stored = 0
        self.audit_refused: collections.Counter[str] = collections.Counter()
        self.metrics = HubMetrics()
        self.metrics.attach(self)

    # -- revisions ---------------------------------------------------------
    def set_current(self, rev: Revision) -> None:
        if self.current is not None and rev.revision <= self.current.revision:
            return
        problem = rev.damage()
        if problem:
            # The store skips damaged revisions; this guards any other path: the
            # number and the content change together or not at all.
            log.error("revision %d not served: %s", rev.revision, problem)
            return
        document = json.loads(rev.document)
        self.current = rev
        self._document = document
        self._cache = {k: v for k, v in self._cache.items() if k[0] == rev.revision}
        log.info("serving revision", extra={"revision": rev.revision, "digest": rev.digest})
        for sub in self.subscribers.values():
            sub.wake.set()

    def scoped(self, key: str) -> tuple[bytes, str]:
        """Serialized ``SubscribeResponse{bundle}`` for ``key`` at the current revision."""
        rev = self.current
        assert rev is not None
        cached = self._cache.get((rev.revision, key))
        if cached is None:
            # Ed25519 is deterministic and ``created`` comes from the store, so
            # every replica produces byte-identical envelopes for a revision.
            signed = sign_document(
                canonical_json(scope_for(self._document, key)),
                self.keys,
                rev.revision,
                name=rev.name,
                created=datetime.fromtimestamp(rev.created, UTC),
            )
            msg = distribution_pb2.SubscribeResponse(bundle=signed)
            cached = (msg.SerializeToString(), signed.digest)
            self._cache[(rev.revision, key)] = cached
        return cached

    # -- streams -----------------------------------------------------------
    async def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Peer | None:
        """The caller's verified identity; None in the dev mode. Aborts the call when refused."""
        if self.authenticator is None:
            return None
        try:
            return await self.authenticator.authenticate(bearer(context.invocation_metadata()))
        except AuthError as exc:
            log.warning("subscriber refused", extra={"error": str(exc), "peer": context.peer()})
            code = (
                grpc.StatusCode.UNAUTHENTICATED
                if exc.unauthenticated
                else grpc.StatusCode.PERMISSION_DENIED
            )
            await context.abort(code, str(exc))
            raise  # abort raises; this keeps the types honest

    async def subscribe(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        # After the first read: a call refused before the client's first message is
        # in can end in a reset (INTERNAL) instead of the status.
        peer = await self._authenticate(context)
        req = _parse(distribution_pb2.SubscribeRequest, first)
        if req is None or req.WhichOneof("msg") != "hello" or not req.hello.identity.id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello with an id"
            )
            return  # abort raises; this keeps the types honest
        problem = identity_problem(req.hello.identity)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            return
        if self.bind_identity:
            names = certificate_names(context.auth_context())
            if req.hello.identity.id not in names:
                log.warning(
                    "Hello id does not match the client certificate",
                    extra={"client": req.hello.identity.id, "names": sorted(names)},
                )
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "identity.id must be a name in the client certificate",
                )
                return
        hello = req.hello
        identity = hello.identity
        if peer is not None:
            # The token says who this is; the Hello only what it holds.
            identity = peer.identity(hello.identity)
            if (hello.identity.id, hello.identity.server) != (identity.id, identity.server):
                log.info(
                    "Hello names another identity than the token; the token's is used",
                    extra={"client": identity.id, "claimed": hello.identity.id},
                )
        now = self.clock()
        sub = Subscriber(
            identity=identity,
            key=key_for(identity),
            connected_at=now,
            last_seen=now,
            client_revision=hello.current_revision,
            client_digest=hello.current_digest,
            revision=hello.current_revision,
            digest=hello.current_digest,
        )
        cid = identity.id
        previous = self.subscribers.get(cid)
        if previous is not None:
            previous.connected = False
            previous.wake.set()
        self.subscribers[cid] = sub
        self.dirty.add(cid)
        sub.wake.set()
        writer = asyncio.create_task(self._writer(sub, context))
        malformed = False
        try:
            while True:
                raw = await context.read()
                if raw is grpc.aio.EOF:
                    break
                msg = _parse(distribution_pb2.SubscribeRequest, raw)
                if msg is None:
                    malformed = True
                    break
                self._on_message(sub, msg)
                if writer.done():
                    break
        finally:
            await self._stop_writer(sub, writer)
            if self.subscribers.get(cid) is sub:
                sub.connected = False
                sub.last_seen = self.clock()
                self.dirty.add(cid)
                del self.subscribers[cid]
                self._detached[cid] = sub
        if malformed:
            # Only now, with the writer stopped: aborting while a write is in
            # flight can leave the call hanging.
            log.warning("malformed message; closing stream", extra={"client": cid})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed message")

    @staticmethod
    async def _stop_writer(sub: Subscriber, writer: asyncio.Task[None]) -> None:
        """Let the writer finish the write in flight, then stop it.

        Cancelling a task inside ``context.write`` leaves gRPC core's batch (with
        the initial metadata) outstanding; the call can then never send its status
        ("too many operations") and hangs. So the writer is asked to stop and
        given a few seconds; only a client that stopped reading is cut off.
        """
        sub.connected = False
        sub.wake.set()
        done, _ = await asyncio.wait({writer}, timeout=5.0)
        if not done:
            writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer

    async def _writer(self, sub: Subscriber, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        while sub.connected:
            await sub.wake.wait()
            sub.wake.clear()
            if not sub.connected:
                return
            while sub.outbox:
                await context.write(sub.outbox.popleft())
            sub.outbox = None
            rev = self.current
            if rev is None:
                if sub.sent_revision == 0:
                    sub.sent_revision = -1  # answer the Hello once, so the client sees a reply
                    await context.write(self._up_to_date(sub))
                continue
            if rev.revision <= sub.sent_revision:
                continue
            if rev.revision < sub.client_revision:
                # This replica is behind the client (it polled the store a moment
                # later than another): never offer an older revision.
                sub.sent_revision = sub.client_revision
                await context.write(self._up_to_date(sub))
                continue
            data, digest = self.scoped(sub.key)
            sub.sent_revision = rev.revision
            if rev.revision == sub.client_revision and digest == sub.client_digest:
                await context.write(self._up_to_date(sub))  # resume without a resend
                continue
            self.pushes += 1
            sub.pushed_at = self.clock()
            await context.write(data)

    @staticmethod
    def _up_to_date(sub: Subscriber) -> bytes:
        up = distribution_pb2.Ack(revision=sub.client_revision, digest=sub.client_digest)
        return bytes(distribution_pb2.SubscribeResponse(up_to_date=up).SerializeToString())

    def _on_message(self, sub: Subscriber, req: distribution_pb2.SubscribeRequest) -> None:
        kind = req.WhichOneof("msg")
        sub.last_seen = self.clock()
        cid = sub.identity.id
        self.dirty.add(cid)
        kind_label = KINDS.get(distribution_pb2.ClientKind.Name(sub.identity.kind), "other")
        if kind == "ack":
            self.metrics.acks.labels(kind_label).inc()
            if sub.pushed_at and req.ack.revision >= sub.sent_revision:
                self.metrics.ack_seconds.observe(max(0.0, sub.last_seen - sub.pushed_at))
                sub.pushed_at = 0.0
            sub.revision, sub.digest = req.ack.revision, req.ack.digest
            if sub.nack_revision and sub.nack_revision <= sub.revision:
                sub.nack_revision, sub.nack_error = 0, ""
        elif kind == "nack":
            self.metrics.nacks.labels(kind_label).inc()
            sub.pushed_at = 0.0
            sub.nack_revision, sub.nack_error = req.nack.revision, req.nack.error[:2000]
            log.warning(
                "bundle NACKed",
                extra={"client": cid, "revision": req.nack.revision, "error": sub.nack_error},
            )
        elif kind == "heartbeat":
            hb = req.heartbeat
            sub.health = hb.health[:200]
            sub.counters = dict(hb.counters)
            if hb.HasField("summary"):
                sub.summary = json_format.MessageToDict(hb.summary)
        elif kind == "approval_request":
            asyncio.get_running_loop().create_task(self._store_approval(sub, req.approval_request))

    async def _store_approval(self, sub: Subscriber, ar: distribution_pb2.ApprovalRequest) -> None:
        if not ar.approval_id or not ar.call_digest:
            log.warning("approval request without id or digest", extra={"client": sub.identity.id})
            return
        row = {
            "id": ar.approval_id,
            "client_id": sub.identity.id,
            "agent": ar.call.agent,
            "server": ar.call.server,
            "tool": ar.call.tool,
            "tenant": ar.tenant,
            "rule_id": ar.rule_id,
            "reason": ar.reason,
            "call_digest": ar.call_digest,
            "request": ar.SerializeToString(),
            "arguments": json_format.MessageToDict(ar.call.arguments),
            "required": ar.approvers or 1,
        }
        try:
            await self.store.call(self.store.store.add_approval, row)
            self.metrics.approvals_requested.inc()
            log.info(
                "approval requested",
                extra={"approval": ar.approval_id, "agent": ar.call.agent, "tool": ar.call.tool},
            )
        except Exception:
            log.exception("cannot store approval request", extra={"approval": ar.approval_id})

    # -- periodic work, called by the server -------------------------------
    async def flush(self) -> None:
        ids, self.dirty = self.dirty, set()
        rows = []
        for cid in ids:
            sub = self.subscribers.get(cid) or self._detached.pop(cid, None)
            if sub is not None:
                rows.append(sub.row(self.replica))
        if rows:
            try:
                await self.store.call(self.store.store.upsert_clients, rows)
            except Exception:
                log.exception("cannot flush fleet state")
                self.dirty |= ids

    async def deliver_approvals(self) -> None:
        if not self.subscribers:
            return
        decided = await self.store.call(self.store.store.undelivered_decisions)
        for d in decided:
            sub = self.subscribers.get(d["client_id"])
            if sub is None:
                continue
            dec = distribution_pb2.ApprovalDecision(
                approval_id=d["id"],
                approved=d["status"] == "approved",
                by=d["by"],
                comment=d["comment"],
                call_digest=d["call_digest"],
                approvers=d["approvers"] if d["status"] == "approved" else [d["by"]],
            )
            if d["expires"]:
                dec.expires.FromNanoseconds(int(d["expires"] * 1e9))
            sign_decision(dec, self.keys)
            if sub.outbox is None:
                sub.outbox = collections.deque()
            sub.outbox.append(distribution_pb2.SubscribeResponse(approval=dec).SerializeToString())
            sub.wake.set()
            await self.store.call(self.store.store.mark_delivered, d["id"])

    # -- audit intake --------------------------------------------------------
    def _audit_source(
        self,
        peer: Peer | None,
        identity: distribution_pb2.ClientIdentity,
        claimed: Iterable[str],
    ) -> tuple[str, str]:
        """(source, problem): the caller's audit source, and why ``claimed`` sources are
        not its own ("" when they are). Without authentication the claim is believed."""
        wanted = {c for c in claimed if c}
        if peer is not None:
            source = peer.audit_source
            foreign = wanted - {source}
            if foreign:
                return source, f"records must have source {source!r}, not {sorted(foreign)[0]!r}"
            return source, ""
        if len(wanted) > 1:
            return "", "one source per call"
        return (next(iter(wanted)) if wanted else identity.id), ""

    async def register_audit_key(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        peer = await self._authenticate(context)
        req = _parse(distribution_pb2.RegisterAuditKeyRequest, request)
        if req is None or not req.keys:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no audit key to register")
            return b""
        source, problem = self._audit_source(peer, req.identity, (k.source for k in req.keys))
        client = peer.id if peer is not None else req.identity.id
        if problem or not source:
            log.warning(
                "audit key for another source refused", extra={"client": client, "error": problem}
            )
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem or "no source")
            return b""
        for k in req.keys:
            if not verify_registration(k.key_id, k.source or source, k.proof):
                log.warning(
                    "audit key without proof refused", extra={"client": client, "key": k.key_id}
                )
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"key {k.key_id[:60]}: the proof is not a signature by that key for"
                    f" source {source!r}",
                )
                return b""
        try:
            kids = await self.store.call(
                self.store.store.register_audit_keys, source, [k.key_id for k in req.keys], client
            )
        except StoreError as exc:
            log.warning("audit key refused", extra={"client": client, "error": str(exc)})
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            return b""
        except Exception:
            log.exception("cannot store audit key", extra={"client": client})
            await context.abort(grpc.StatusCode.UNAVAILABLE, "audit store unavailable; retry")
            return b""
        log.info("audit key registered", extra={"source": source, "keys": len(kids)})
        resp = distribution_pb2.RegisterAuditKeyResponse(source=source, key_ids=kids)
        return bytes(resp.SerializeToString())

    async def send_audit(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        peer = await self._authenticate(context)
        batch = _parse(distribution_pb2.AuditBatch, request)
        if batch is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed AuditBatch")
            return b""
        # Records are stored under the authenticated source, never a claimed one.
        source, problem = self._audit_source(
            peer, batch.identity, (r.source for r in batch.records)
        )
        if problem:
            log.warning(
                "audit records for another source refused",
                extra={"client": peer.id if peer else batch.identity.id, "error": problem},
            )
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
            return b""
        candidates = []
        for r in batch.records:
            written = from_proto(r)  # the record as its writer wrote it (decision "allow" ...)
            doc = {k: v for k, v in written.items() if k != "signature"}
            row = AuditRow(
                source=source,
                seq=r.seq,
                hash=r.hash,
                time=r.time.ToNanoseconds() / 1e9 if r.HasField("time") else self.clock(),
                kind=r.kind or "decision",
                agent=r.agent,
                tenant=r.tenant,
                server=r.server,
                tool=r.tool,
                decision=_decision_name(r.decision),
                rule_id=r.rule_id,
                record=r.SerializeToString(),
                json=json.dumps(doc, sort_keys=True),
            )
            candidates.append((written, row))
        try:
            result = await self.store.call(self.store.store.admit_audit, source, candidates)
        except Exception:
            log.exception("cannot store audit batch", extra={"client": source})
            self.metrics.audit_store_errors.inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "audit store unavailable; retry")
            return b""
        verdict = result.verdict
        self.audit_stored += len(result.new)
        self.audit_already_stored += len(verdict.duplicates)
        ack = distribution_pb2.AuditBatchAck(
            stored_count=verdict.stored_count, already_stored=len(verdict.duplicates)
        )
        if verdict.stored_count:
            ack.stored_through_seq = batch.records[verdict.stored_count - 1].seq
        if verdict.duplicates:
            log.info(
                "audit records already stored, not stored again",
                extra={"source": source, "records": len(verdict.duplicates)},
            )
        refused = verdict.refused
        if refused is not None:
            self.audit_refused[refused.reason] += 1
            ack.refused.seq = refused.seq
            ack.refused.hash = refused.hash
            ack.refused.reason = _REFUSAL_CODES[refused.reason]
            ack.refused.message = refused.message
            log.warning(
                "audit record refused",
                extra={
                    "source": source,
                    "seq": refused.seq,
                    "reason": refused.reason,
                    "error": refused.message,
                    "held_back": len(batch.records) - verdict.stored_count,
                },
            )
        if self.forwarder is not None and result.new:
            try:
                await self.forwarder.forward(result.new)
            except Exception:  # stored already: forwarding trouble must not fail the client
                log.exception("cannot forward audit records", extra={"client": source})
        return bytes(ack.SerializeToString())


_REFUSAL_CODES = {
    reason: distribution_pb2.AuditRefusalReason.Value("AUDIT_REFUSAL_" + reason.upper())
    for reason in intake.REASONS
}


M = TypeVar("M", bound=Message)


def _parse(cls: type[M], data: bytes) -> M | None:
    """Decode a client's bytes; None when they are not a valid message (never raises)."""
    try:
        message: M = cls.FromString(data)
    except DecodeError:
        return None
    return message


def _decision_name(value: int) -> str:
    """``DECISION_REQUIRE_APPROVAL`` -> ``require_approval``, as the CLI filters by."""
    if not value:
        return ""
    return str(policy_pb2.Decision.Name(value)).removeprefix("DECISION_").lower()


def _identity(x: bytes) -> bytes:
    return x


def generic_handler(hub: Hub) -> grpc.GenericRpcHandler:
    """Register the service with byte pass-through so a push is serialized once per scope."""

    async def subscribe(request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await hub.subscribe(context)

    handlers: Mapping[str, grpc.RpcMethodHandler] = {
        "Subscribe": grpc.stream_stream_rpc_method_handler(
            subscribe, request_deserializer=_identity, response_serializer=_identity
        ),
        "SendAudit": grpc.unary_unary_rpc_method_handler(
            hub.send_audit, request_deserializer=_identity, response_serializer=_identity
        ),
        "RegisterAuditKey": grpc.unary_unary_rpc_method_handler(
            hub.register_audit_key, request_deserializer=_identity, response_serializer=_identity
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE, dict(handlers))
