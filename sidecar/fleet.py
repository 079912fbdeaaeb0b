"""The sidecar in the fleet: bundles pushed by the distributor, audit shipped to it, approvals.

With ``--distributor`` the sidecar opens the shared
:class:`palisade.distribution.DistributionClient` (the one the node agent uses)
and this module wires it in. Four parts, each small:

- :func:`identity_of` (pure): who this sidecar says it is in its ``Hello``
  (kind sidecar, client id, pod, namespace, node, tenant, MCP server);
- bundles: the client verifies a push with the trusted keys and calls
  :meth:`SidecarFleet.activate`, which hands it to the *same*
  :class:`~sidecar.intake.BundleIntake` path a bundle file takes (compile, refuse
  an older revision, atomic swap, last good on disk); an exception there NACKs
  and the previous bundle keeps enforcing;
- audit: :class:`ShippingWriter` is the core's :class:`~palisade.audit.AuditWriter`
  that also hands each written record to :class:`AuditShipper`, which moves
  records, in chain order, into the client's on-disk spool and advances the
  writer's shipping cursor; the client ships the spool and drops it only once the
  distributor stored it. Records the tap missed (written before a restart, or
  while the spool was full) are read back from the audit log itself, so the
  cursor never skips a record;
- approvals: :class:`Approvals` settles ``require_approval`` verdicts (the
  proxy's :class:`~sidecar.core.ApprovalDesk`): an unexpired human approval of
  this exact call (same agent, server, tool, arguments digest, session) lets it
  through once; a human's denial is answered as a denial for
  ``denial_window_s``; otherwise an ``ApprovalRequest`` is queued and sent over
  the stream (again after every reconnect; the distributor stores it once).

Nothing here raises into the proxy: a distributor that is down leaves calls
decided by the active bundle, audited on disk, and delivered on its return.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.metadata
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import Gauge

from palisade.audit import AuditWriter, Entry, to_proto
from palisade.audit.redact import redact
from palisade.bundle.signing import load_public_key
from palisade.distribution import (
    ActiveBundle,
    ApprovalBook,
    AuditSpool,
    ClientSettings,
    DistributionClient,
    State,
    TrustedKeys,
    call_digest,
)
from palisade.policy.types import Call, Decision, Verdict
from palisade.v1 import audit_pb2, distribution_pb2, policy_pb2
from sidecar.intake import BundleIntake
from sidecar.metrics import SidecarMetrics
from sidecar.settings import DistributorSettings

log = logging.getLogger(__name__)

#: Records waiting in memory for the shipper; beyond this the audit log on disk is read instead.
TAP_LIMIT = 100_000
#: How many records one read of the audit log moves into the spool.
DISK_BATCH = 1000
#: Pending approval requests and remembered denials kept per sidecar.
APPROVALS_LIMIT = 4096


# -- who we are ------------------------------------------------------------------------


def default_client_id(d: Mapping[str, str], server: str, port: int) -> str:
    """The pod UID when the injector set it, else namespace/pod, else host:port/server."""
    if d.get("pod_uid"):
        return d["pod_uid"]
    if d.get("pod"):
        return f"{d.get('namespace') or 'default'}/{d['pod']}"
    return f"{socket.gethostname()}:{port}/{server}"


def _version() -> str:
    try:
        return importlib.metadata.version("palisade")
    except importlib.metadata.PackageNotFoundError:
        return ""


def identity_of(settings: DistributorSettings, server: str) -> distribution_pb2.ClientIdentity:
    """The identity this sidecar names in its ``Hello``; the distributor scopes by ``server``."""
    return distribution_pb2.ClientIdentity(
        kind=distribution_pb2.CLIENT_KIND_SIDECAR,
        id=settings.client_id,
        node=settings.node,
        namespace=settings.namespace,
        pod=settings.pod,
        tenant=settings.tenant,
        server=server,
        version=_version(),
    )


def key_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given; a directory (a mounted Secret) stands for its ``*.pem`` files."""
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.glob("*.pem")) if p.is_dir() else [p])
    return out


def load_trusted(specs: Iterable[str]) -> TrustedKeys:
    """The trusted bundle keys from files, directories of ``*.pem``, or inline PEM text
    (a public key is no secret: a pod may carry it in ``PALISADE_TRUSTED_KEY``).

    Raises ``ValueError`` naming the file, never echoing what it holds.
    """
    keys: list[Ed25519PublicKey] = []
    for spec in specs:
        if spec.lstrip().startswith("-----BEGIN"):
            try:
                keys.append(load_public_key(spec.strip().encode() + b"\n"))
            except Exception as exc:
                raise ValueError(
                    f"an inline trusted key is unusable: {type(exc).__name__}"
                ) from None
            continue
        for f in key_files([Path(spec)]):
            try:
                keys.append(load_public_key(f))
            except Exception as exc:
                raise ValueError(f"cannot load trusted key {f}: {type(exc).__name__}") from None
    if not keys:
        raise ValueError("no trusted key: give --trusted-key PEM (a file, a directory of *.pem)")
    return TrustedKeys(keys)


# -- audit -------------------------------------------------------------------------------


class ShippingWriter(AuditWriter):
    """The core's audit writer; every record it wrote is also handed to the shipper.

    Only a record that was written (the call returned) is tapped, so the tap never
    holds a record that is not on disk.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tap: collections.deque[dict[str, Any]] = collections.deque(maxlen=TAP_LIMIT)

    def append_sync(self, entry: Entry, secret_names: Iterable[str] = ()) -> dict[str, Any]:
        record = super().append_sync(entry, secret_names)
        self._tap.append(record)
        return record

    async def append(self, entry: Entry, secret_names: Iterable[str] = ()) -> dict[str, Any]:
        record = await super().append(entry, secret_names)
        self._tap.append(record)
        return record

    def drain(self) -> list[dict[str, Any]]:
        """The records tapped since the last call (any order)."""
        out = list(self._tap)
        self._tap.clear()
        return out


class AuditShipper:
    """Moves audit records, in chain order and without gaps, into the client's spool.

    ``cursor`` is the highest seq handed to the spool, persisted as the writer's
    shipping cursor; it only moves over a contiguous run of records. A gap (a
    record the tap did not see) is filled from the audit log after ``gap_grace_s``.
    While the spool holds ``max_spool_bytes`` or more, nothing new enters it: the
    records wait in the audit log and are read from there once it drains.
    """

    def __init__(
        self,
        writer: ShippingWriter,
        spool: AuditSpool,
        *,
        max_spool_bytes: int = 8 * 2**20,
        gap_grace_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.spool = spool
        self.max_spool_bytes = max_spool_bytes
        self.gap_grace_s = gap_grace_s
        self._clock = clock
        self.cursor = writer.shipped_through
        self._held: dict[int, dict[str, Any]] = {}
        self._gap_since: float | None = None
        self.spooled = 0
        self.skipped = 0

    @property
    def behind(self) -> int:
        """Records written but not yet in the spool."""
        return max(0, self.writer.head[0] - self.cursor)

    async def pump(self, *, from_disk: bool = False) -> int:
        """One step: spool what can go now; returns how many records went."""
        tapped = self.writer.drain()
        if self.spool.pending_bytes() >= self.max_spool_bytes:
            self._held.clear()  # they stay in the audit log; read back from there later
            return 0
        for record in tapped:
            seq = int(record["seq"])
            if seq > self.cursor:
                self._held[seq] = record
        batch: list[dict[str, Any]] = []
        nxt = self.cursor + 1
        while nxt in self._held:
            batch.append(self._held.pop(nxt))
            nxt += 1
        if batch or self.writer.head[0] <= self.cursor:
            self._gap_since = None
        else:
            now = self._clock()
            if self._gap_since is None:
                self._gap_since = now
            if from_disk or now - self._gap_since >= self.gap_grace_s:
                self._gap_since = None
                batch = await asyncio.to_thread(self._read_disk, self.cursor)
                for record in batch:
                    self._held.pop(int(record["seq"]), None)
        if not batch:
            return 0
        self._spool(batch)
        self.cursor = int(batch[-1]["seq"])
        await asyncio.to_thread(self.writer.mark_shipped, self.cursor)
        return len(batch)

    def _read_disk(self, after: int) -> list[dict[str, Any]]:
        """The next contiguous records after ``after`` in the audit log."""
        out: list[dict[str, Any]] = []
        expect = after + 1
        for record in self.writer.read_after(after, DISK_BATCH):
            seq = int(record["seq"])
            if not out and seq > expect:
                # The log itself lacks them (deleted by hand?): say so rather than stall.
                log.error(
                    "audit records missing from the log", extra={"from": expect, "to": seq - 1}
                )
                expect = seq
            if seq != expect:
                break  # the rest comes with the next read
            out.append(record)
            expect += 1
        return out

    def _spool(self, records: Sequence[Mapping[str, Any]]) -> None:
        protos: list[audit_pb2.AuditRecord] = []
        for record in records:
            try:
                protos.append(to_proto(record))
            except Exception as exc:  # a record the proto cannot carry: say so, go on
                self.skipped += 1
                log.error(
                    "audit record cannot be shipped",
                    extra={"seq": record.get("seq"), "error": type(exc).__name__},
                )
        try:
            self.spool.append(protos)
        except ValueError:  # one record over the spool's size limit
            for proto in protos:
                try:
                    self.spool.append([proto])
                except ValueError:
                    self.skipped += 1
                    log.error("audit record too large to ship", extra={"seq": proto.seq})
        self.spooled += len(protos)


# -- approvals ---------------------------------------------------------------------------


@dataclass
class _Asked:
    approval_id: str
    request: distribution_pb2.ApprovalRequest
    sent: bool = False
    answered: bool = False


@dataclass(frozen=True, slots=True)
class _Denied:
    approval_id: str
    by: str
    comment: str
    until: float


def check_request_of(call: Call, secret_names: Iterable[str]) -> policy_pb2.CheckRequest:
    """The call as the approver sees it: arguments with secret-marked fields redacted."""
    req = policy_pb2.CheckRequest(
        agent=call.agent,
        on_behalf_of=call.on_behalf_of,
        server=call.server,
        server_version=call.server_version,
        tool=call.tool,
        session=call.session,
        request_id=call.request_id,
    )
    req.labels.update(dict(call.labels))
    try:
        req.arguments.update(redact(dict(call.arguments), secret_names))
    except (ValueError, TypeError):  # not representable as a Struct: digest still binds it
        req.arguments.Clear()
    return req


class Approvals:
    """Settles ``require_approval`` verdicts with the answers the client received.

    Pure apart from the injected clock and the book the client fills; requests to
    send wait in :meth:`unsent` for :class:`SidecarFleet` to carry out.
    """

    def __init__(
        self,
        book: ApprovalBook,
        *,
        denial_window_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        self.book = book
        self.denial_window_s = denial_window_s
        self._clock = clock
        self._on_request = on_request
        self._asked: collections.OrderedDict[str, _Asked] = collections.OrderedDict()
        self._denied: collections.OrderedDict[str, _Denied] = collections.OrderedDict()
        self.granted = 0
        self.refused = 0

    @property
    def pending(self) -> int:
        return sum(1 for a in self._asked.values() if not a.answered)

    def settle(
        self, call: Call, verdict: Verdict, secret_names: frozenset[str]
    ) -> tuple[Verdict, dict[str, Any]]:
        digest = call_digest(
            agent=call.agent,
            server=call.server,
            tool=call.tool,
            arguments=call.arguments,
            session=call.session,
        )
        self._collect()
        granted = self.book.consume(digest)
        if granted is not None:
            self._asked.pop(digest, None)
            self.granted += 1
            by = f"approved by {granted.by or 'a human'}"
            reason = f"{by}: {granted.comment}" if granted.comment else by
            allowed = replace(
                verdict, decision=Decision.ALLOW, reason=reason, approval_id=granted.approval_id
            )
            return allowed, {"approval": "granted", "approved_by": granted.by}
        denied = self._denied.get(digest)
        if denied is not None and denied.until > self._clock():
            self.refused += 1
            by = f"approval {denied.approval_id} was denied by {denied.by or 'a human'}"
            reason = f"{by}: {denied.comment}" if denied.comment else by
            refused = replace(
                verdict, decision=Decision.DENY, reason=reason, approval_id=denied.approval_id
            )
            return refused, {"approval": "denied", "denied_by": denied.by}
        asked = self._asked.get(digest)
        if asked is None or asked.answered:
            asked = self._ask(call, verdict, secret_names, digest)
        return replace(verdict, approval_id=asked.approval_id), {"approval": "requested"}

    def _ask(
        self, call: Call, verdict: Verdict, secret_names: Iterable[str], digest: str
    ) -> _Asked:
        # Unique per request: an id the distributor decided once is never asked again.
        base = verdict.approval_id or "apr"
        approval_id = f"{base}-{secrets.token_hex(4)}"
        request = distribution_pb2.ApprovalRequest(
            approval_id=approval_id,
            call=check_request_of(call, secret_names),
            tenant=verdict.tenant,
            rule_id=verdict.rule_id,
            reason=verdict.reason,
            call_digest=digest,
        )
        asked = _Asked(approval_id, request)
        self._asked[digest] = asked
        self._asked.move_to_end(digest)
        while len(self._asked) > APPROVALS_LIMIT:
            self._asked.popitem(last=False)
        log.info(
            "approval requested",
            extra={"approval": approval_id, "agent": call.agent, "tool": call.tool},
        )
        if self._on_request is not None:
            self._on_request()
        return asked

    def _collect(self) -> None:
        """Note answers that arrived: denials are remembered, asked calls marked answered."""
        now = self._clock()
        for approval_id, decision in list(self.book.decisions.items()):
            asked = self._asked.get(decision.call_digest)
            if asked is not None and asked.approval_id == approval_id:
                asked.answered = True
            if decision.approved:
                continue
            del self.book.decisions[approval_id]
            decided = decision.expires.ToNanoseconds() / 1e9 if decision.HasField("expires") else 0
            self._denied[decision.call_digest] = _Denied(
                approval_id, decision.by, decision.comment, (decided or now) + self.denial_window_s
            )
            self._denied.move_to_end(decision.call_digest)
        for digest, denied in list(self._denied.items()):
            if denied.until <= now or len(self._denied) > APPROVALS_LIMIT:
                del self._denied[digest]

    # -- what the fleet sends ---------------------------------------------------------
    def unsent(self) -> list[distribution_pb2.ApprovalRequest]:
        return [a.request for a in self._asked.values() if not a.sent and not a.answered]

    def mark_sent(self, approval_id: str) -> None:
        for asked in self._asked.values():
            if asked.approval_id == approval_id:
                asked.sent = True

    def resend_all(self) -> None:
        """After a reconnect: ask again for every unanswered call (the store keeps one)."""
        for asked in self._asked.values():
            asked.sent = False


# -- the whole -----------------------------------------------------------------------------


class SidecarFleet:
    """The distribution client, the audit shipper and the approvals, run together."""

    def __init__(
        self,
        settings: DistributorSettings,
        *,
        server: str,
        trusted: TrustedKeys,
        intake: BundleIntake,
        writer: ShippingWriter | None,
        metrics: SidecarMetrics,
        ship_interval_s: float = 0.2,
    ) -> None:
        self.settings = settings
        self.intake = intake
        self.metrics = metrics
        self.ship_interval_s = ship_interval_s
        self.client = DistributionClient(
            ClientSettings(
                targets=list(settings.targets),
                state_dir=settings.state_dir / "distribution",
                trusted=trusted,
                heartbeat_interval_s=settings.heartbeat_interval_s,
                tls_ca_file=settings.tls_ca_file,
                tls_cert_file=settings.tls_cert_file,
                tls_key_file=settings.tls_key_file,
                tls_server_name=settings.tls_server_name,
            ),
            identity_of(settings, server),
            self.activate,
            counters=self.counters,
            health=self.health,
        )
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.approvals = Approvals(
            self.client.approvals,
            denial_window_s=settings.denial_window_s,
            on_request=self._wake.set,
        )
        self.shipper = (
            AuditShipper(writer, self.client.spool, max_spool_bytes=settings.spool_max_bytes)
            if writer is not None
            else None
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._register_metrics()

    def _register_metrics(self) -> None:
        """Gauges read at scrape time from the link's state (no bookkeeping on any hot path)."""
        r = self.metrics.registry
        for name, doc, fn in (
            (
                "palisade_sidecar_distributor_connected",
                "1 while the stream to a distributor is up",
                lambda: float(self.client.status.connected),
            ),
            (
                "palisade_sidecar_distributor_nacks",
                "Bundles pushed by the distributor and refused (NACKed) since start",
                lambda: float(self.client.nacks),
            ),
            (
                "palisade_sidecar_audit_unspooled_records",
                "Audit records written but not yet in the shipping spool",
                lambda: float(self.shipper.behind if self.shipper else 0),
            ),
            (
                "palisade_sidecar_audit_spool_bytes",
                "Audit bytes waiting on disk for the distributor",
                lambda: float(self.client.spool.pending_bytes()),
            ),
            (
                "palisade_sidecar_approvals_pending",
                "Calls held for a human's approval, not answered yet",
                lambda: float(self.approvals.pending),
            ),
        ):
            Gauge(name, doc, registry=r).set_function(fn)

    # -- bundles ---------------------------------------------------------------------------
    def activate(self, active: ActiveBundle) -> None:
        """The client verified ``active``; the file intake's path activates it (or raises: NACK)."""
        self.intake.activate_verified(
            active.bundle, active.revision, active.digest, active.signed.SerializeToString()
        )

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Last good bundle first, then unshipped audit records, then connect."""
        if self.shipper is not None:
            with contextlib.suppress(Exception):
                while await self.shipper.pump(from_disk=True):
                    pass
        await self.client.start()
        self._tasks = [
            asyncio.create_task(self._ship_loop(), name="fleet-audit"),
            asyncio.create_task(self._approval_loop(), name="fleet-approvals"),
        ]
        log.info(
            "joining the fleet",
            extra={"targets": list(self.settings.targets), "client": self.settings.client_id},
        )

    async def stop(self, drain_s: float = 2.0) -> None:
        """Spool the last records, give the client ``drain_s`` to deliver them, then close."""
        # The shipper finishes its step (a cursor write may be running in a thread).
        self._stopping.set()
        self._wake.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5.0)
        self._tasks = []
        if self.shipper is not None:
            try:
                while await self.shipper.pump(from_disk=True):
                    pass
            except Exception as exc:
                log.warning("audit not spooled at stop", extra={"error": str(exc)})
            deadline = time.monotonic() + drain_s
            while self.client.spool.pending_bytes() and time.monotonic() < deadline:
                if not self.client.status.connected:
                    break  # it waits on disk for the next start
                await asyncio.sleep(0.05)
        await self.client.stop()

    async def _ship_loop(self) -> None:
        while not self._stopping.is_set():
            if self.shipper is not None:
                try:
                    if await self.shipper.pump():
                        continue
                except Exception as exc:
                    log.warning("audit spooling deferred", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.ship_interval_s)

    async def _approval_loop(self) -> None:
        seen = -1
        while not self._stopping.is_set():
            self._wake.clear()
            if self.client.status.connected:
                if self.client.connects != seen:
                    seen = self.client.connects
                    self.approvals.resend_all()
                await self._send_approvals()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)

    async def _send_approvals(self) -> None:
        for req in self.approvals.unsent():
            try:
                await self.client.request_approval(
                    req.call,
                    call_digest=req.call_digest,
                    tenant=req.tenant,
                    rule_id=req.rule_id,
                    reason=req.reason,
                    approval_id=req.approval_id,
                )
            except Exception as exc:
                log.info("approval request not sent yet", extra={"error": str(exc)})
                return
            self.approvals.mark_sent(req.approval_id)

    # -- status ---------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What keeps this sidecar from being ready, as far as the fleet goes (empty: ready)."""
        st = self.client.status
        if st.state is State.OK:
            return []
        where = f"connected to {self.client.target}" if st.connected else "not connected"
        if st.state is State.NOT_READY:
            return [f"no bundle from the distributor yet ({where})"]
        return [f"no usable bundle from the distributor: {st.last_error} ({where})"]

    def status_doc(self) -> dict[str, Any]:
        st = self.client.status
        return {
            "state": st.state.value,
            "connected": st.connected,
            "target": self.client.target,
            "revision": st.revision,
            "last_error": st.last_error,
            "acks": self.client.acks,
            "nacks": self.client.nacks,
            "audit_behind": self.shipper.behind if self.shipper else 0,
            "audit_spool_bytes": self.client.spool.pending_bytes(),
            "approvals_pending": self.approvals.pending,
        }

    def readiness(self) -> tuple[list[str], dict[str, Any]]:
        return self.problems(), self.status_doc()

    def health(self) -> str:
        st = self.client.status
        if st.state is State.OK:
            return "ok" if not st.last_error else f"degraded: {st.last_error}"[:200]
        return f"{st.state.value}: {st.last_error}"[:200]

    def counters(self) -> dict[str, float]:
        """Heartbeat counters: calls and their decisions, revision, audit and approval backlog."""
        by: dict[str, float] = collections.defaultdict(float)
        for metric in self.metrics.decisions.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    by[sample.labels.get("decision", "")] += sample.value
        rejected = sum(
            s.value
            for m in self.metrics.rejected.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
        active = self.client.active
        return {
            "calls": sum(by.values()),
            "allowed": by["allow"],
            "denials": by["deny"],
            "approvals_required": by["require_approval"],
            "throttled": by["throttle"],
            "rejected": rejected,
            "revision": float(active.revision if active else 0),
            "bundle_acks": float(self.client.acks),
            "bundle_nacks": float(self.client.nacks),
            "audit_behind": float(self.shipper.behind if self.shipper else 0),
            "audit_spool_bytes": float(self.client.spool.pending_bytes()),
            "approvals_pending": float(self.approvals.pending),
            "approvals_granted": float(self.approvals.granted),
        }
