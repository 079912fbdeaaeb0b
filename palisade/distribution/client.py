"""The bundle client used by the sidecar and the node agent.

One ``DistributionClient`` per process. It

1. loads the last-known-good bundle from disk, verifies it again and activates it
   (so a restarted client enforces before it reaches any distributor);
2. connects to one of the distributor targets (rotating, with backoff and full
   jitter), opens ``DistributionService/Subscribe`` and says ``Hello`` with the
   revision it holds, so a distributor with nothing newer answers ``up_to_date``
   instead of resending;
3. for each pushed bundle: verifies it against the trusted keys, refuses a
   revision older than the active one (no flap on failover), hands it to the
   caller's ``activate`` (which builds its engine and swaps it in, or raises),
   persists it as last-known-good, and ACKs; any failure NACKs with the error and
   the previous bundle stays active;
4. sends heartbeats (revision, counters, health, optional summary);
5. carries approval requests out and approval answers in;
6. registers its audit signing keys (``RegisterAuditKey``, with proof of
   possession) and ships spooled audit records in batches, each ending at a
   signed record when the spool has one; it advances the on-disk cursor only
   over the records the distributor says are stored. A refused record (the
   distributor verifies signatures and the chain) and all after it stay in the
   spool, and the refusal is logged with the distributor's reason.

Errors never escape the background tasks: they are logged, reflected in
``status`` and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from palisade.bundle import Bundle, BundleError, TrustedKeys, verify_bundle
from palisade.distribution import status as st
from palisade.distribution.approvals import ApprovalBook, verify_decision
from palisade.distribution.backoff import Backoff
from palisade.distribution.lkg import LastKnownGood
from palisade.distribution.spool import AuditSpool
from palisade.v1 import (
    audit_pb2,
    bundle_pb2,
    distribution_pb2,
    distribution_pb2_grpc,
    policy_pb2,
)

log = logging.getLogger(__name__)


#: Keepalive pings notice a replica that vanished without closing the connection
#: (node loss, partition) within ~30 s, so the client fails over instead of waiting.
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True, slots=True)
class ActiveBundle:
    """A verified bundle, as handed to ``activate``."""

    revision: int
    digest: str
    name: str
    bundle: Bundle
    """The validated bundle, ready for ``palisade.policy``'s engine."""
    document: Mapping[str, Any]
    """The canonical document as plain data (what the node agent reads its quotas from)."""
    signed: bundle_pb2.SignedBundle


#: Builds the caller's engine from a bundle and swaps it in; raises to refuse it.
Activate = Callable[[ActiveBundle], None]


@dataclass(frozen=True)
class ClientSettings:
    targets: Sequence[str]
    """Distributor gRPC addresses (``host:port``); tried in turn."""
    state_dir: Path
    """Holds ``bundle.pb`` (last-known-good) and ``audit/`` (the spool)."""
    trusted: TrustedKeys
    heartbeat_interval_s: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    audit_batch: int = 500
    audit_interval_s: float = 0.5
    rpc_timeout_s: float = 10.0
    tls_ca_file: Path | None = None
    """Connect over TLS, trusting this CA (PEM); None: plaintext (inside a mesh or tests)."""
    tls_cert_file: Path | None = None
    """Client certificate for mTLS (with ``tls_key_file``)."""
    tls_key_file: Path | None = None
    tls_server_name: str = ""
    """Expected name in the distributor's certificate when it differs from the target host."""
    token_file: Path | None = None
    """Bearer token sent to the distributor (the projected ServiceAccount token the
    kubelet rotates); read again on every connect. None: no token (dev mode)."""
    audit_keys: tuple[distribution_pb2.AuditKey, ...] = ()
    """The audit writer's signing key(s) with proofs (``AuditWriter.key_proof``),
    registered on every connection before records are shipped."""

    def token_metadata(self) -> tuple[tuple[str, str], ...]:
        """``authorization`` metadata with the token as the file holds it now."""
        if self.token_file is None:
            return ()
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            log.warning(
                "distributor token unreadable",
                extra={"file": str(self.token_file), "error": type(exc).__name__},
            )
            return ()
        return (("authorization", f"Bearer {token}"),) if token else ()

    def channel(self, target: str) -> grpc.aio.Channel:
        if self.tls_ca_file is None:
            return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.tls_ca_file.read_bytes(),
            private_key=self.tls_key_file.read_bytes() if self.tls_key_file else None,
            certificate_chain=self.tls_cert_file.read_bytes() if self.tls_cert_file else None,
        )
        options: list[tuple[str, int | str]] = list(_CHANNEL_OPTIONS)
        if self.tls_server_name:
            options.append(("grpc.ssl_target_name_override", self.tls_server_name))
        return grpc.aio.secure_channel(target, creds, options=options)


class DistributionClient:
    def __init__(
        self,
        settings: ClientSettings,
        identity: distribution_pb2.ClientIdentity,
        activate: Activate,
        *,
        counters: Callable[[], Mapping[str, float]] | None = None,
        health: Callable[[], str] | None = None,
        summary: Callable[[], Mapping[str, Any]] | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.targets:
            raise ValueError("at least one distributor target is required")
        self.settings = settings
        self.identity = identity
        self._activate = activate
        self._counters = counters
        self._health = health
        self._summary = summary
        self._rand = rand
        self.status = st.Status()
        self.active: ActiveBundle | None = None
        self.lkg = LastKnownGood(settings.state_dir / "bundle.pb")
        self.spool = AuditSpool(settings.state_dir / "audit")
        self.approvals = ApprovalBook(clock=clock)
        self.target = ""
        self.acks = 0
        self.nacks = 0
        #: approval answers dropped because no trusted key signed them
        self.approvals_refused = 0
        self.connects = 0
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._write_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        #: cuts the reconnect backoff short (stop, or a shutdown that must deliver audit)
        self._reconnect = asyncio.Event()
        self._changed = asyncio.Condition()
        #: ``connects`` when the audit keys were last registered (-1: not yet)
        self._keys_registered_at = -1
        #: the distributor's last refusal of an audit record ("" when none since)
        self.audit_refusal = ""
        self.audit_refused = 0

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        self.load_last_known_good()
        self._tasks = [
            asyncio.create_task(self._run_streams(), name="distribution-stream"),
            asyncio.create_task(self._run_audit(), name="distribution-audit"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        self._reconnect.set()
        if self._call is not None:
            self._call.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self._close_channel()

    async def drain_audit(self, timeout_s: float) -> bool:
        """Ship the spool now, until it is empty or ``timeout_s`` passed (shutdown: the
        pod may be deleted with its volumes). The background shipper is stopped first
        so that one sender moves the cursor. True when nothing is left."""
        deadline = time.monotonic() + timeout_s
        for task in self._tasks:
            if task.get_name() == "distribution-audit":
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks = [t for t in self._tasks if t.get_name() != "distribution-audit"]
        while self.spool.pending_bytes() and time.monotonic() < deadline:
            if not self.status.connected:
                self._reconnect.set()  # no waiting out a long backoff now
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    if self.status.connected and await self._ship_once():
                        continue
            except AuditRefused:
                return False  # refused records cannot be delivered by waiting
            except (TimeoutError, Exception) as exc:
                log.info("audit drain: retrying", extra={"error": str(exc)})
            await asyncio.sleep(0.1)
        left = self.spool.pending_bytes()
        if left:
            log.warning("audit spool not drained at shutdown", extra={"bytes": left})
        return not left

    def load_last_known_good(self) -> bool:
        """Activate the bundle persisted on disk, if it still verifies."""
        try:
            signed = self.lkg.load()
        except Exception as exc:  # a corrupt file must not stop the client
            log.warning("last-known-good unreadable", extra={"error": str(exc)})
            return False
        if signed is None:
            return False
        error = self._apply(signed, persist=False)
        if error:
            log.warning("last-known-good refused", extra={"error": error})
            return False
        return True

    # -- public helpers ----------------------------------------------------
    def record_audit(self, records: list[audit_pb2.AuditRecord]) -> None:
        """Queue records on disk; they are shipped in the background."""
        self.spool.append(records)

    async def request_approval(
        self,
        call: policy_pb2.CheckRequest,
        *,
        call_digest: str,
        tenant: str = "",
        rule_id: str = "",
        reason: str = "",
        approval_id: str = "",
        approvers: int = 0,
    ) -> str:
        """Send an approval request over the stream; returns its id. Raises if offline.

        ``approvers``: how many distinct people must approve (0: one)."""
        approval_id = approval_id or uuid.uuid4().hex
        req = distribution_pb2.ApprovalRequest(
            approval_id=approval_id,
            call=call,
            tenant=tenant,
            rule_id=rule_id,
            reason=reason,
            call_digest=call_digest,
            approvers=approvers,
        )
        await self._send(distribution_pb2.SubscribeRequest(approval_request=req))
        return approval_id

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; re-checked after every stream event."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    # -- bundle handling (sync, pure apart from activate and the disk) ------
    def _apply(self, signed: bundle_pb2.SignedBundle, *, persist: bool) -> str:
        """Verify and activate; returns "" on success or the error to NACK with."""
        try:
            verified = verify_bundle(signed, self.settings.trusted)
        except BundleError as exc:
            return self._reject(f"verification failed: {exc}")
        if self.active is not None:
            if signed.revision < self.active.revision:
                return self._reject(
                    f"revision {signed.revision} is older than active {self.active.revision}"
                )
            if signed.revision == self.active.revision and signed.digest == self.active.digest:
                return ""
        document = json.loads(signed.document)
        bundle = ActiveBundle(
            signed.revision, signed.digest, signed.name, verified.bundle, document, signed
        )
        try:
            self._activate(bundle)
        except Exception as exc:
            return self._reject(f"activation failed: {exc}")
        self.active = bundle
        self.status = st.activated(self.status, bundle.revision, bundle.digest)
        log.info("bundle activated", extra={"revision": bundle.revision, "digest": bundle.digest})
        if persist:
            try:
                self.lkg.save(signed)
            except OSError as exc:
                log.error("cannot persist last-known-good", extra={"error": str(exc)})
        return ""

    def _reject(self, error: str) -> str:
        self.status = st.rejected(self.status, error)
        log.warning("bundle rejected", extra={"error": error})
        return error

    # -- stream ------------------------------------------------------------
    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def _run_streams(self) -> None:
        attempt = 0
        index = 0
        targets = list(self.settings.targets)
        while not self._stopping.is_set():
            self.target = targets[index % len(targets)]
            index += 1
            got_response = False
            try:
                self._channel = self.settings.channel(self.target)
                got_response = await self._session(self._channel)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                refused = exc.code() in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                )
                # A refusal says why (no token, wrong audience, not an MCP server pod).
                log.log(
                    logging.WARNING if refused else logging.INFO,
                    "distributor stream ended",
                    extra={
                        "target": self.target,
                        "code": exc.code().name,
                        "details": exc.details() if refused else "",
                    },
                )
            except Exception:
                log.exception("distributor stream failed", extra={"target": self.target})
            finally:
                self._call = None
                self.status = st.connection(self.status, False)
                await self._close_channel()
                await self._notify()
            attempt = 0 if got_response else attempt + 1
            delay = self.settings.backoff.delay(attempt, self._rand)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._reconnect.wait(), delay)
            self._reconnect.clear()

    async def _session(self, channel: grpc.aio.Channel) -> bool:
        stub = distribution_pb2_grpc.DistributionServiceStub(channel)  # type: ignore[no-untyped-call]
        # Read on every connect: the kubelet replaces the projected token before it expires.
        self._metadata = self.settings.token_metadata()
        call = stub.Subscribe(metadata=self._metadata)
        self._call = call
        hello = distribution_pb2.Hello(identity=self.identity)
        if self.active is not None:
            hello.current_revision = self.active.revision
            hello.current_digest = self.active.digest
        await call.write(distribution_pb2.SubscribeRequest(hello=hello))
        heartbeat = asyncio.create_task(self._heartbeats())
        got_response = False
        try:
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    return got_response
                if not got_response:
                    got_response = True
                    self.connects += 1
                    self.status = st.connection(self.status, True)
                await self._handle(resp)
                await self._notify()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await heartbeat

    async def _handle(self, resp: distribution_pb2.SubscribeResponse) -> None:
        kind = resp.WhichOneof("msg")
        if kind == "bundle":
            signed = resp.bundle
            error = self._apply(signed, persist=True)
            if error:
                self.nacks += 1
                nack = distribution_pb2.Nack(
                    revision=signed.revision, digest=signed.digest, error=error
                )
                await self._send(distribution_pb2.SubscribeRequest(nack=nack))
            else:
                self.acks += 1
                ack = distribution_pb2.Ack(revision=signed.revision, digest=signed.digest)
                await self._send(distribution_pb2.SubscribeRequest(ack=ack))
        elif kind == "up_to_date":
            log.debug("up to date", extra={"revision": resp.up_to_date.revision})
        elif kind == "approval":
            problem = verify_decision(resp.approval, self.settings.trusted)
            if problem:
                # an approval lets a call through: never believe an unsigned one
                self.approvals_refused += 1
                log.warning(
                    "approval answer refused",
                    extra={"approval": resp.approval.approval_id, "error": problem},
                )
            else:
                self.approvals.record(resp.approval)

    async def _send(self, req: distribution_pb2.SubscribeRequest) -> None:
        call = self._call
        if call is None:
            raise ConnectionError("not connected to a distributor")
        async with self._write_lock:
            await call.write(req)

    def heartbeat_message(self) -> distribution_pb2.SubscribeRequest:
        hb = distribution_pb2.Heartbeat(
            revision=self.active.revision if self.active else 0,
            health=self._health() if self._health else self.status.state.value,
        )
        hb.time.GetCurrentTime()
        if self._counters:
            for key, value in self._counters().items():
                hb.counters[key] = float(value)
        if self._summary:
            hb.summary.update(dict(self._summary()))
        return distribution_pb2.SubscribeRequest(heartbeat=hb)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                await self._send(self.heartbeat_message())
            except Exception as exc:
                log.info("heartbeat not sent", extra={"error": str(exc)})
                return

    # -- audit shipping ----------------------------------------------------
    async def _run_audit(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            shipped = False
            try:
                shipped = await self._ship_once()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except AuditRefused:
                attempt += 1  # logged where refused; retried with backoff
            except Exception as exc:
                attempt += 1
                log.info("audit shipping deferred", extra={"error": str(exc)})
            if shipped:
                continue  # more may be waiting
            delay = (
                self.settings.backoff.delay(attempt, self._rand)
                if attempt
                else self.settings.audit_interval_s
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _register_audit_keys(self, stub: Any) -> None:
        """Register the audit keys once per connection (idempotent on the distributor)."""
        if not self.settings.audit_keys or self._keys_registered_at == self.connects:
            return
        req = distribution_pb2.RegisterAuditKeyRequest(
            identity=self.identity, keys=list(self.settings.audit_keys)
        )
        try:
            resp = await stub.RegisterAuditKey(
                req, timeout=self.settings.rpc_timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                # a distributor from before audit keys: it stores records unverified
                log.info("the distributor does not take audit keys; shipping anyway")
                self._keys_registered_at = self.connects
                return
            log.warning(
                "audit key not registered; records stay in the spool",
                extra={"code": exc.code().name, "details": exc.details()},
            )
            raise AuditRefused(f"audit key not registered: {exc.details()}") from None
        self._keys_registered_at = self.connects
        log.info("audit key registered", extra={"source": resp.source, "keys": len(resp.key_ids)})

    def _audit_batch(self) -> tuple[list[audit_pb2.AuditRecord], list[int]]:
        """The next records to ship, ending at a signed record when one is in reach
        (a group commit's unsigned records verify only with the record closing it)."""
        size = self.settings.audit_batch
        records, ends = self.spool.read_entries(size)
        if records and not records[-1].signature:
            more, more_ends = self.spool.read_entries(size + 1024)
            last = max((i for i, r in enumerate(more) if r.signature), default=-1)
            if last >= 0:
                records, ends = more[: last + 1], more_ends[: last + 1]
        return records, ends

    async def _ship_once(self) -> bool:
        records, ends = self._audit_batch()
        if not records:
            return False
        channel = self._channel
        if channel is None or not self.status.connected:
            raise ConnectionError("not connected to a distributor")
        stub = distribution_pb2_grpc.DistributionServiceStub(channel)  # type: ignore[no-untyped-call]
        await self._register_audit_keys(stub)
        batch = distribution_pb2.AuditBatch(identity=self.identity, records=records)
        ack = await stub.SendAudit(
            batch, timeout=self.settings.rpc_timeout_s, metadata=self._metadata
        )
        if ack.stored_count or ack.HasField("refused"):
            stored = min(ack.stored_count, len(records))
        else:  # a distributor from before partial answers: all or nothing
            top = max(r.seq for r in records)
            if ack.stored_through_seq < top:
                raise ConnectionError(
                    f"distributor stored through {ack.stored_through_seq} < {top}"
                )
            stored = len(records)
        if stored:
            self.spool.commit(ends[stored - 1])
        if ack.HasField("refused"):
            refused = ack.refused
            reason = distribution_pb2.AuditRefusalReason.Name(refused.reason)
            self.audit_refused += 1
            self.audit_refusal = f"seq {refused.seq}: {reason}: {refused.message}"
            if refused.reason == distribution_pb2.AUDIT_REFUSAL_UNKNOWN_KEY:
                self._keys_registered_at = -1  # register again before the next try
            log.warning(
                "audit records refused by the distributor; they stay in the spool",
                extra={
                    "seq": refused.seq,
                    "reason": reason,
                    "error": refused.message,
                    "stored": stored,
                    "held_back": len(records) - stored,
                },
            )
            raise AuditRefused(self.audit_refusal)
        self.audit_refusal = ""
        return True


class AuditRefused(Exception):
    """The distributor refused an audit record (or the key): retried with backoff."""
